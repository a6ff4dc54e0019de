/* --store s3://BUCKET/PREFIX: where the supervisor copies each generation
 * (runtime/supervisor/upload.c), and what it recorded of the copies
 * (store.json in the workload's directory, read by cryo images and cryo
 * status). */
#pragma once

#include "error.h"
#include "s3.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cryo_error;
struct json_object;

/* The record the supervisor's uploader keeps in the workload's directory. */
#define STORE_RECORD "store.json"

struct store_config {
	char url[600];    /* as given */
	char bucket[64];  /* 3..63 characters */
	char prefix[512]; /* without a trailing '/'; may be empty */
	struct s3_config s3;
};

/* --lease etcd://HOST:PORT: the ownership of a workload's copy in the store
 * (runtime/supervisor/lease.c). */
#define LEASE_TTL_DEFAULT 10
struct lease_config {
	char url[300];      /* as given */
	char endpoint[300]; /* http://HOST:PORT, etcd's JSON gateway */
	int64_t ttl_s;      /* asked for: --lease-ttl */
	bool standby;       /* --standby: wait while another holds it */
};

/* The record the lease keeper keeps in the workload's directory: whether
 * the lease is held, and the generation last published. */
#define LEASE_RECORD "lease.json"

/* Parses "etcd://HOST:PORT" into lc's url and endpoint. -EINVAL with the
 * reason in err. */
int lease_parse_url(const char *url, struct lease_config *lc, struct cryo_error *err);

/* The etcd key of workload name's owner ("owner") or published generation
 * ("published"): cryo/BUCKET/PREFIX/NAME/WHAT. */
int lease_key(const struct store_config *sc, const char *name, const char *what, char *buf,
              size_t len);

/* Parses "s3://BUCKET" or "s3://BUCKET/PREFIX" into sc's url, bucket and
 * prefix (the s3 configuration is left alone). -EINVAL with the reason in
 * err. */
int store_parse_url(const char *url, struct store_config *sc, struct cryo_error *err);

/* The object key PREFIX/NAME/LEAF of workload name (leaf "" for the prefix
 * its objects are listed under); -ENAMETOOLONG if it does not fit. */
int store_object_key(const struct store_config *sc, const char *name, const char *leaf, char *buf,
                     size_t len);

/* The object key of generation gen of workload name: PREFIX/NAME/gen-N.cryo
 * (the local archive's own name). */
int store_key(const struct store_config *sc, const char *name, uint64_t gen, char *buf, size_t len);

/* The generation an object key names (its last component gen-N.cryo), or 0. */
uint64_t store_key_generation(const char *key);

/* The file beside a workload's generations that names the owner mark it put
 * in the store (PREFIX/NAME/owner): "URL ETAG". */
#define STORE_OWNER_FILE "store-owner"

/* The store's PREFIX/NAME/ belongs to one workload directory: the one whose
 * STORE_OWNER_FILE (in dir_fd) names the ETag of the owner mark there.
 * store_owner_check(): 0 when it is this directory's (a prefix without a
 * mark is claimed), -EEXIST when another directory's mark is there.
 * store_owner_claim(): puts a new mark, making the prefix this directory's
 * (another that held it then finds a mark not its own and writes nothing
 * there). */
int store_owner_check(struct s3_client *c, const struct store_config *sc, const char *name,
                      int dir_fd, struct cryo_error *err);
int store_owner_claim(struct s3_client *c, const struct store_config *sc, const char *name,
                      int dir_fd, struct cryo_error *err);

/* What STORE_RECORD in a workload's directory says: the generations the
 * store held at the uploader's last look (ascending), and why its last pass
 * failed. */
struct store_record {
	char url[600];
	int64_t time; /* of its last pass, CLOCK_REALTIME seconds */
	uint64_t *gens, *sizes;
	size_t n;
	char error[CRYO_ERROR_MAX + 128]; /* empty: the last pass succeeded */
	int64_t error_since;
	/* --lease: LEASE_RECORD, if there is one. */
	bool lease;
	char lease_url[300];
	char lease_state[16]; /* "held", "waiting", "lost", "released" */
	int64_t lease_ttl;
	uint64_t published; /* 0: none */
	char lease_error[CRYO_ERROR_MAX + 128];
};

/* Reads dir's record: 0, -ENOENT when there is none (no --store yet),
 * -EBADMSG when it cannot be read as one, -ENOMEM. LEASE_RECORD's part is
 * read whether or not the store's record could be (rec->lease). */
int store_record_read(const char *dir, struct store_record *rec);
void store_record_clear(struct store_record *rec);

/* LEASE_RECORD's part of rec, if dir has one. */
void lease_record_read(const char *dir, struct store_record *rec);

/* Whether rec lists gen; *size (may be NULL) gets its size. */
bool store_record_has(const struct store_record *rec, uint64_t gen, uint64_t *size);
