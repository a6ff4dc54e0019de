/* The manifest: what a generation says about itself (an ordered list of
 * key/value pairs, a key may repeat) and the files its archive holds, with
 * their sizes and checksums. Stored in the archive as text (images/FORMAT.md).
 * A module of its own, below both the archive, which stores it, and the delta
 * encoding, which adds its own keys to it. Functions return 0 or a negative
 * errno. */
#pragma once

#include "cleanup.h"

#include <stddef.h>
#include <stdint.h>

struct manifest_file {
	char *name;
	uint64_t size;
	uint8_t hash[16]; /* XXH3-128, canonical (big-endian) form */
};

/* An ordered list of key/value pairs (a key may repeat) and the files the
 * archive holds. */
struct manifest {
	char **keys;
	char **values;
	size_t n_entries;
	struct manifest_file *files;
	size_t n_files;
};

struct manifest *manifest_new(void);
void manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free)
#define _cleanup_manifest_ _cleanup_(manifest_freep)

/* Appends key=value; keys are [a-z0-9_.]+, values any text. */
int manifest_add(struct manifest *m, const char *key, const char *value);
int manifest_addf(struct manifest *m, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The first value of key, or NULL. */
const char *manifest_get(const struct manifest *m, const char *key);
/* The first value of key as an unsigned number, or def if absent or invalid. */
uint64_t manifest_get_u64(const struct manifest *m, const char *key, uint64_t def);
/* Serializes to text and parses it back (the form stored in the archive). */
int manifest_to_text(const struct manifest *m, char **ret, size_t *ret_len);
int manifest_from_text(const char *text, size_t len, struct manifest **ret);

/* Appends a file (name, its size and XXH3-128) to the file list: the
 * archive's writer and readers keep it, as the text's "file" lines. */
int manifest_add_file(struct manifest *m, const char *name, uint64_t size, const uint8_t hash[16]);
