/* The cryo image archive: one file holding a checkpoint's CRIU image files and
 * a manifest, compressed with zstd and checksummed with XXH3-128. The format
 * is described in images/FORMAT.md. Functions return 0 or a negative errno;
 * on a damaged or foreign archive they return -EBADMSG and, if err is given,
 * put a one-line reason into it. Written by archive-write.c, read by
 * archive-read.c and, lazily, archive-lazy.c; the manifest is manifest.h's. */
#pragma once

#include "error.h"
#include "manifest.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memfile.h"

#define IMAGE_FORMAT_VERSION 3 /* reads 1 and 2 too */

struct image_write_stats {
	/* Sum of the image files' sizes; while image_archive_write() runs, the
	 * bytes read so far (read it with __atomic_load_n from another thread). */
	uint64_t raw_bytes;
	uint64_t archive_bytes; /* size of the archive written */
	uint64_t sync_ns;       /* image_store_commit(): time spent in fsync */
};

/* What image_archive_write() keeps from one archive to the next when it is
 * given one: its compression contexts, and the memory the compressed bytes
 * go through, madvise(MADV_FREE)d in between (the kernel takes it back if it
 * needs it; else the next archive finds it there, where fresh memory costs
 * more, on a VM above all). Used by one archive at a time. */
struct image_writer;
struct image_writer *image_writer_new(void);
void image_writer_free(struct image_writer *w);

/* Writes every regular file of dir (no sub-directories), the n_mem files held
 * in memory, and the manifest m into an archive on fd, an empty file at offset
 * 0 or a pipe (written in one pass; a file's writeback starts as it grows,
 * so that the caller's fsync finds little left to do). Adds the file list with
 * sizes and checksums to m. level is a zstd level; workers the number of zstd threads (0 = none,
 * at most 4); w may be NULL. Does not fsync. */
int image_archive_write(int fd, const char *dir, const struct mem_file *mem, size_t n_mem,
                        struct manifest *m, int level, int workers, struct image_writer *w,
                        struct image_write_stats *stats, struct cryo_error *err);

/* What a manifest says must make sense for the image to be restored: a
 * base that is an earlier generation than gen, a chain of 1 to
 * IMAGE_MAX_CHAIN (delta.h), delta lines and frame tables only for memory
 * images the archive holds, one each, each frame table as many frames as
 * the file's size takes, none empty, all inside the body (which ends at
 * body_end; 0: not known) and in the files' order, no file listed twice.
 * gen is the generation the archive is stored as (0: not known, the
 * manifest's own "generation" stands for it). 0, or -EBADMSG with the
 * reason in err. Every reader below calls it before it calls an image good,
 * the store's with the generation's number as well: one rule for cryo
 * images, cryo inspect and the restore. */
int image_manifest_validate(const struct manifest *m, uint64_t gen, uint64_t body_end,
                            struct cryo_error *err);

/* Reads the manifest only (trailer, then the manifest frame): cheap. Checks
 * the header's, the trailer's and the manifest's checksums, not the body,
 * and validates the manifest (image_manifest_validate()). */
int image_archive_read_manifest(int fd, struct manifest **ret, struct cryo_error *err);

/* Verifies the whole archive: every file's size and checksum, what the
 * manifest says (image_manifest_validate(), the manifest's own generation
 * standing for gen) and each frame table against the frames. If dir is not
 * NULL, extracts the files into it (an existing, empty directory). Returns the
 * manifest in *ret if ret is not NULL. Nothing extracted may be trusted
 * unless this returns 0. */
int image_archive_read(int fd, const char *dir, struct manifest **ret, struct cryo_error *err);

/* The same for an archive arriving on a pipe or socket, read once from start
 * to end: the files are extracted into dir as they come and everything is
 * verified when the stream ends (the manifest is last). Nothing extracted
 * may be trusted unless this returns 0. */
int image_archive_read_stream(int fd, const char *dir, struct manifest **ret,
                              struct cryo_error *err);

/* The same, extracting only the files for which want(name) is true; the
 * others are verified all the same. */
int image_archive_read_some(int fd, const char *dir, bool (*want)(const char *name),
                            struct manifest **ret, struct cryo_error *err);

/* ---- a restore that starts before the memory is in (lazy restore) ---------- */

struct image_lazy;
struct page_index;

/* Starts extracting archive fd in a thread of its own and returns at once:
 * CRIU's memory images (pages-*.img) go into memory, every other file into
 * dir (an existing, empty directory; with NULL they are only checked). Each
 * chunk of memory is checked by
 * its frame's checksum as it is decompressed; the files' and the body's
 * checksums when all is in. A format 1 image cannot be read this way
 * (-EPROTONOSUPPORT). With want_index, the thread also
 * builds the page index of the memory images (for the next incremental
 * checkpoint, as generation gen). fd stays the caller's, open until
 * image_lazy_free(). */
int image_lazy_open(int fd, const char *dir, bool want_index, uint64_t gen, struct image_lazy **ret,
                    struct cryo_error *err);

/* Waits until every file bound for dir is there and verified: 0, or the
 * error that stopped the thread (-EBADMSG: the archive is damaged). */
int image_lazy_wait_files(struct image_lazy *l, struct cryo_error *err);

/* Memory image name: its address (filled in as the thread goes) and size in
 * *size; NULL when the archive has no such memory image. */
const uint8_t *image_lazy_memory(struct image_lazy *l, const char *name, uint64_t *size);

/* Makes sure bytes [off, off + len) of the memory image at data are in:
 * decompresses the chunks that hold them here and now unless the thread has
 * them already. 0, or the error that stopped everything (a chunk that is
 * damaged: -EBADMSG). Only the thread checks whole files and the body. */
int image_lazy_get(struct image_lazy *l, const uint8_t *data, uint64_t off, uint64_t len);

/* The caller is done with bytes [off, off + len) (whole pages) of the
 * memory image at data: each chunk all of whose pages are done with, and
 * that the thread has hashed, goes back to the kernel (image_lazy_get()
 * decompresses it again should it be asked for). */
void image_lazy_release(struct image_lazy *l, const uint8_t *data, uint64_t off, uint64_t len);

/* For a caller that releases what it is done with: the thread decompresses
 * at most chunks chunks (2 MiB each) ahead of it (0: no limit, as at first;
 * image_lazy_finish() lifts it). */
void image_lazy_bound(struct image_lazy *l, unsigned chunks);

/* Waits for the thread's end: 0 once everything is in and verified, with
 * the manifest in *m and the page index (if wanted) in *index; else the
 * error, with its reason in err. */
int image_lazy_finish(struct image_lazy *l, struct manifest **m, struct page_index **index,
                      struct cryo_error *err);

/* Asks the thread to stop soon: waiters then get -ECANCELED. */
void image_lazy_cancel(struct image_lazy *l);

/* Stops the thread if it still runs and frees everything, memory included. */
void image_lazy_free(struct image_lazy *l);
