/* The image store: a workload's directory holding one archive per generation,
 * gen-NNNNNNNNNNNN.cryo. A generation becomes visible only once it is
 * complete and durable (written under a temporary name, fsynced, renamed, the
 * directory fsynced), so a crash at any moment leaves earlier ones intact. */
#pragma once

#include "archive.h"

#include <stddef.h>
#include <stdint.h>

#define IMAGE_STORE_SUFFIX ".cryo"

/* The archive path of a generation. */
int image_store_path(const char *dir, uint64_t gen, char *buf, size_t len);

/* Where an archive arriving from elsewhere (a migration) is written before it
 * becomes generation gen. */
int image_store_incoming_path(const char *dir, uint64_t gen, char *buf, size_t len);

/* The directory CRIU dumps generation gen into before it is stored. */
int image_store_dump_path(const char *dir, uint64_t gen, char *buf, size_t len);

/* Removes what an interrupted dump, commit or arrival left in dir (dump
 * directories, temporary archives). Call with the workload's lock held. */
void image_store_sweep(const char *dir);

/* The committed generations in dir, ascending. *ret is NULL when none. */
int image_store_list(const char *dir, uint64_t **ret, size_t *ret_n);

/* The generations set aside as damaged in dir (gen-N.cryo.damaged),
 * ascending. *ret is NULL when none. */
int image_store_list_damaged(const char *dir, uint64_t **ret, size_t *ret_n);

/* The next generation number: one above every generation ever seen in dir,
 * damaged ones included, so a number is never reused. */
int image_store_next_generation(const char *dir, uint64_t *ret);

/* Archives images_dir, the n_mem files in memory and manifest m as generation
 * gen of dir, durably.
 * On failure nothing of gen is left behind and older generations are
 * untouched. */
int image_store_commit(const char *dir, uint64_t gen, const char *images_dir,
                       const struct mem_file *mem, size_t n_mem, struct manifest *m, int level,
                       int workers, struct image_writer *w, struct image_write_stats *stats,
                       struct cryo_error *err);

/* Takes generation gen's archive out of the page cache: commit leaves it
 * there, clean, and it is read again only by a restore. Best effort. */
void image_store_uncache(const char *dir, uint64_t gen);

/* Deletes the oldest generations so that at most keep remain (keep >= 1),
 * and every generation older than oldest (an earlier run's, after cryo run
 * --fresh; 0: none) that no kept generation is built on. Only called after
 * a new generation is durable, so the newest good one is always kept. The deletions are not fsynced
 * (that took a checkpoint of 16 MB 5% longer): after a crash of the machine a pruned generation may
 * come back, and the next prune deletes it again. */
int image_store_prune(const char *dir, unsigned keep, uint64_t oldest);

/* Renames a damaged generation out of the way (gen-N.cryo.damaged), keeping
 * it for inspection. */
int image_store_set_aside(const char *dir, uint64_t gen);

/* Verifies generation gen and extracts it into dest (an empty directory). */
int image_store_extract(const char *dir, uint64_t gen, const char *dest, struct manifest **ret,
                        struct cryo_error *err);

/* Rebuilds, in dest, the files an incremental generation (manifest m) holds
 * as deltas, from its base generation's files extracted in base_dir. */
int image_store_apply_deltas(const struct manifest *m, const char *dest, const char *base_dir,
                             struct cryo_error *err);

/* Reads generation gen's manifest only. */
int image_store_read_manifest(const char *dir, uint64_t gen, struct manifest **ret,
                              struct cryo_error *err);
