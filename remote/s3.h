/* A client of S3-compatible object stores (AWS S3, Ceph RGW, OpenStack
 * Swift's s3api, MinIO) over libcurl, for keeping cryo's images off the
 * machine that runs the program.
 *
 * Requests are path-style (ENDPOINT/BUCKET/KEY) and signed by libcurl's own
 * SigV4 (CURLOPT_AWS_SIGV4). Bodies stream between the store and a file
 * descriptor: nothing is held whole in memory. Every request has a connect
 * deadline; small ones an overall deadline, large transfers a low-speed one.
 *
 * Errors: every call returns 0 or a negative errno and puts one line in err
 * naming the cause and the way out:
 *   -ECONNREFUSED, -EHOSTUNREACH  the store does not answer at its address;
 *   -ETIMEDOUT    it answered too slowly (stopped, overloaded, cut off);
 *   -EACCES       it refused the credentials (or they may not do that);
 *   -ENXIO        no such bucket;
 *   -ENOENT       no such object;
 *   -ESTALE       the object is not the one expected (its ETag changed);
 *   -EBADMSG      the bytes stored or received are not the bytes sent (their
 *                 MD5 differs from the ETag);
 *   -EIO          any other refusal by the store (HTTP status and S3 code in
 *                 err), or a reply that is not S3's.
 * A client is used by one thread at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cryo_error;

/* Where the configuration is read when no other file is named. */
#define S3_CONFIG_FILE "/etc/cryo/s3.conf"
#define S3_MIN_PART    (5ULL << 20)

struct s3_config {
	char endpoint[512]; /* "http://127.0.0.1:8080", no trailing '/' */
	char region[64];
	char access_key[256];
	char secret_key[256];
	long connect_ms;         /* to connect: default 5 s */
	long request_ms;         /* a request without a large body: default 30 s */
	long low_speed_s;        /* a stream under 1 KiB/s this long fails: default 30 s */
	uint64_t multipart_from; /* objects from this size go in parts: default 64 MiB */
	uint64_t part_size;      /* at least S3_MIN_PART: default 16 MiB */
	unsigned list_page;      /* keys per listing request: 0 = the store's (1000) */
};

/* The defaults above, and no endpoint, region or credentials. */
void s3_config_init(struct s3_config *cfg);

/* Reads "name = value" lines (endpoint, region, access_key_id,
 * secret_access_key; '#' starts a comment) from text into cfg; origin names
 * the text in errors ("FILE:LINE: ..."). -EINVAL for an unknown name or a
 * line without '='. */
int s3_config_parse(struct s3_config *cfg, const char *text, const char *origin,
                    struct cryo_error *err);

/* The configuration a user gives: the defaults; then the file path (NULL:
 * S3_CONFIG_FILE, if it exists), which must be a regular file of root's or
 * the effective user's that nobody else may read (-EPERM otherwise, with the
 * chmod that fixes it); then AWS_ENDPOINT_URL, AWS_REGION,
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment, which
 * win. Never from a command line. -EINVAL, naming what to set, when the
 * endpoint or a credential is missing; the region defaults to us-east-1. */
int s3_config_load(struct s3_config *cfg, const char *path, struct cryo_error *err);

struct s3_client;

int s3_client_new(struct s3_client **ret, const struct s3_config *cfg, struct cryo_error *err);
void s3_client_free(struct s3_client *c);

/* What the store says of an object. etag is without its quotes: the hex MD5
 * of the body for an object put whole, "MD5-N" (the MD5 of the N parts'
 * MD5s) for one put in N parts. */
struct s3_object {
	char *key; /* in an s3_list only */
	uint64_t size;
	char etag[80];
};

/* Creates bucket (0 if this account has it already). */
int s3_create_bucket(struct s3_client *c, const char *bucket, struct cryo_error *err);

/* Stores the regular file fd (read with pread from offset 0 to its size at
 * the call) as bucket/key: whole below cfg->multipart_from, else as a
 * multipart upload of cfg->part_size parts (aborted in the store if any part
 * fails). The ETag the store answers is checked against the MD5s of the bytes
 * sent (-EBADMSG). *ret (may be NULL) gets the size and ETag. */
int s3_put(struct s3_client *c, const char *bucket, const char *key, int fd, struct s3_object *ret,
           struct cryo_error *err);

/* Writes object bucket/key into fd at its current position. With expect_etag
 * (unquoted), an object whose ETag is another fails with -ESTALE before a
 * byte is written; an object put whole is also checked against the MD5 of
 * the bytes received (-EBADMSG). After any failure fd may hold part of the
 * object, or bytes that are not its own: write into a temporary file and
 * rename it once this returns 0. *ret (may be NULL) gets the size and ETag. */
int s3_get(struct s3_client *c, const char *bucket, const char *key, int fd,
           const char *expect_etag, struct s3_object *ret, struct cryo_error *err);

/* The size and ETag of bucket/key; -ENOENT if there is none. */
int s3_head(struct s3_client *c, const char *bucket, const char *key, struct s3_object *ret,
            struct cryo_error *err);

/* Removes bucket/key (0 also when there was none: S3 does not tell). */
int s3_delete(struct s3_client *c, const char *bucket, const char *key, struct cryo_error *err);

struct s3_list {
	struct s3_object *items;
	size_t n, cap;
};
void s3_list_clear(struct s3_list *l);

/* Every object of bucket whose key starts with prefix (NULL or "": all),
 * in key order, through as many ListObjectsV2 requests as it takes. */
int s3_list(struct s3_client *c, const char *bucket, const char *prefix, struct s3_list *ret,
            struct cryo_error *err);

/* ---- The pure parts, for the unit tests -------------------------------- */

/* S3's URI encoding of s: every byte but A-Z a-z 0-9 - _ . ~ as %XX
 * (uppercase), and '/' too unless keep_slash (for keys in a path). NULL when
 * memory runs out. */
char *s3_uri_encode(const char *s, bool keep_slash);

struct s3_param {
	const char *name, *value; /* value NULL: sent as "name=" */
};

/* The canonical query string SigV4 signs and curl sends as written: each
 * name and value URI-encoded, sorted by name (then value), each with '='
 * even when its value is empty, joined by '&'. NULL when memory runs out. */
char *s3_query_canonical(const struct s3_param *params, size_t n);

/* From an S3 error reply: its Code and Message (empty when absent). false if
 * xml is no <Error> document. */
bool s3_xml_error(const char *xml, size_t len, char *code, size_t code_len, char *msg,
                  size_t msg_len);

/* The text of the first element called name (below the root, at any depth)
 * of xml, whose root element must be called root; NULL if either is absent
 * or xml is not well formed. free() it. */
char *s3_xml_field(const char *xml, size_t len, const char *root, const char *name);

/* Adds a ListBucketResult's objects to l; *truncated and *next_token (free()
 * it; NULL when there is none) tell whether and where to go on. -EBADMSG
 * for a reply that is no ListBucketResult, -ENOMEM. */
int s3_xml_list(const char *xml, size_t len, struct s3_list *l, bool *truncated, char **next_token);

/* The hex MD5 ETag of a multipart object from its parts' binary MD5s:
 * "HEX-N". out must hold 48 bytes. */
void s3_multipart_etag(const unsigned char (*md5s)[16], size_t n, char *out);
