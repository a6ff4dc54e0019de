/* A client of etcd v3 through its JSON gateway (POST /v3/...), for the
 * ownership of a workload: who holds a lease key runs the program, and only
 * the holder may publish (issue 17's rule: a record is written by a
 * transaction that requires the writer's lease to hold the owner key, so a
 * stale owner can never publish).
 *
 * Every request has a connect and an overall deadline. No watch: a waiter
 * polls (etcd_acquire_wait()).
 *
 * Errors: every call returns 0 or a negative errno and puts one line in err:
 *   -ECONNREFUSED, -EHOSTUNREACH  etcd does not answer at its address;
 *   -ETIMEDOUT   it answered too slowly (stopped, overloaded, cut off);
 *   -ENOLCK      our lease has expired or was revoked: this client no longer
 *                owns what it held ("I lost ownership");
 *   -EBUSY       another lease holds the key (etcd_acquire());
 *   -ENOENT      no such key (etcd_get());
 *   -EIO         any other refusal, or a reply that is not etcd's.
 * A client is used by one thread at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cryo_error;

struct etcd_client;

/* endpoint: "http://HOST:PORT" (no trailing '/'); request_ms: the deadline of
 * each request (connecting included, which has at most 5 s). */
int etcd_client_new(struct etcd_client **ret, const char *endpoint, long request_ms,
                    struct cryo_error *err);
void etcd_client_free(struct etcd_client *c);

/* Changes the deadline of the requests to come (above 0), e.g. so that a
 * keep-alive ends before the instant its caller must act without it. */
void etcd_client_set_deadline(struct etcd_client *c, long request_ms);

/* A new lease of ttl_s seconds (etcd grants at least 2): its id, and the TTL
 * granted in *granted_s (may be NULL). */
int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id, int64_t *granted_s,
                     struct cryo_error *err);

/* Renews lease id to its full TTL, the seconds left after it in *ttl_s (may be
 * NULL); -ENOLCK if it has already expired or was revoked. */
int etcd_lease_keepalive(struct etcd_client *c, int64_t id, int64_t *ttl_s, struct cryo_error *err);

/* Ends lease id now, deleting the keys it holds; -ENOLCK if it was gone. */
int etcd_lease_revoke(struct etcd_client *c, int64_t id, struct cryo_error *err);

/* A key's value and the lease that holds it (0: none). */
struct etcd_kv {
	char *value; /* NUL-terminated (a value holding a NUL is cut there) */
	size_t value_len;
	int64_t lease, create_revision, mod_revision;
};
void etcd_kv_clear(struct etcd_kv *kv);

/* Makes key (with value) held by lease, if no one holds it: 0 when it is ours
 * (also when lease held it already), -EBUSY when another lease holds it (its
 * value and lease in *holder, which may be NULL), -ENOLCK when lease is gone. */
int etcd_acquire(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                 struct etcd_kv *holder, struct cryo_error *err);

/* etcd_acquire() every poll_ms until it is ours, keeping lease alive
 * meanwhile, for at most timeout_ms (-ETIMEDOUT, naming the holder). */
int etcd_acquire_wait(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                      long poll_ms, long timeout_ms, struct cryo_error *err);

/* Puts key = value (no lease: it outlives the writer) only if owner_key is
 * held by lease, in one transaction; -ENOLCK, naming who holds owner_key if
 * anyone, when it is not. */
int etcd_put_if_owner(struct etcd_client *c, const char *owner_key, int64_t lease, const char *key,
                      const char *value, struct cryo_error *err);

/* The value of key; -ENOENT when there is none. */
int etcd_get(struct etcd_client *c, const char *key, struct etcd_kv *ret, struct cryo_error *err);

/* ---- The pure parts, for the unit tests -------------------------------- */

/* The request bodies (malloc()ed JSON text; NULL when memory runs out). */
char *etcd_json_acquire(const char *key, const char *value, int64_t lease);
char *etcd_json_put_if_owner(const char *owner_key, int64_t lease, const char *key,
                             const char *value);

/* Reading replies, whose int64 fields are strings and whose fields at their
 * default are left out. Each returns 0, or -EBADMSG for a reply that is not
 * what etcd sends. */
int etcd_parse_grant(const char *json, int64_t *id, int64_t *ttl);
/* -ENOLCK for a lease that is gone (etcd then answers without a TTL). */
int etcd_parse_keepalive(const char *json, int64_t *ttl);
/* *succeeded (false when the field is absent), and the first key of the
 * first range response (a failed transaction's view) in *kv, if any
 * (kv->value NULL when none). */
int etcd_parse_txn(const char *json, bool *succeeded, struct etcd_kv *kv);
/* The first key of a range reply; -ENOENT when there is none. */
int etcd_parse_range(const char *json, struct etcd_kv *kv);
/* An error reply's message ("etcdserver: requested lease not found") and
 * gRPC code; false if json is none. */
bool etcd_parse_error(const char *json, char *msg, size_t len, int *code);
