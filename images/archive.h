/* The cryo image archive: one file holding a checkpoint's CRIU image files and
 * a manifest, compressed with zstd and checksummed with XXH3-128. The format
 * is described in images/FORMAT.md. Functions return 0 or a negative errno;
 * on a damaged or foreign archive they return -EBADMSG and, if err is given,
 * put a one-line reason into it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memfile.h"

#define IMAGE_FORMAT_VERSION 1

struct image_error {
	char msg[256];
};

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

struct image_write_stats {
	/* Sum of the image files' sizes; while image_archive_write() runs, the
	 * bytes read so far (read it with __atomic_load_n from another thread). */
	uint64_t raw_bytes;
	uint64_t archive_bytes; /* size of the archive written */
};

/* Writes every regular file of dir (no sub-directories), the n_mem files held
 * in memory, and the manifest m into an archive on fd, an empty file at offset
 * 0 or a pipe (written in one pass). Adds the file list with sizes and checksums to m. level is a
 * zstd level; workers the number of zstd threads (0 = none). Does not fsync. */
int image_archive_write(int fd, const char *dir, const struct mem_file *mem, size_t n_mem,
                        struct manifest *m, int level, int workers, struct image_write_stats *stats,
                        struct image_error *err);

/* Reads the manifest only (trailer, then the manifest frame): cheap. Checks
 * the trailer's and the manifest's checksums, not the body. */
int image_archive_read_manifest(int fd, struct manifest **ret, struct image_error *err);

/* Verifies the whole archive: every file's size and checksum. If dir is not
 * NULL, extracts the files into it (an existing, empty directory). Returns the
 * manifest in *ret if ret is not NULL. Nothing extracted may be trusted
 * unless this returns 0. */
int image_archive_read(int fd, const char *dir, struct manifest **ret, struct image_error *err);

/* The same for an archive arriving on a pipe or socket, read once from start
 * to end: the files are extracted into dir as they come and everything is
 * verified when the stream ends (the manifest is last). Nothing extracted
 * may be trusted unless this returns 0. */
int image_archive_read_stream(int fd, const char *dir, struct manifest **ret,
                              struct image_error *err);

/* The same, extracting only the files for which want(name) is true; the
 * others are verified all the same. */
int image_archive_read_some(int fd, const char *dir, bool (*want)(const char *name),
                            struct manifest **ret, struct image_error *err);
