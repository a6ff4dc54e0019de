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

/* Parses "s3://BUCKET" or "s3://BUCKET/PREFIX" into sc's url, bucket and
 * prefix (the s3 configuration is left alone). -EINVAL with the reason in
 * err. */
int store_parse_url(const char *url, struct store_config *sc, struct cryo_error *err);

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
};

/* Reads dir's record: 0, -ENOENT when there is none (no --store yet),
 * -EBADMSG when it cannot be read as one, -ENOMEM. */
int store_record_read(const char *dir, struct store_record *rec);
void store_record_clear(struct store_record *rec);

/* Whether rec lists gen; *size (may be NULL) gets its size. */
bool store_record_has(const struct store_record *rec, uint64_t gen, uint64_t *size);
