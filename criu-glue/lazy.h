/* A lazy restore: CRIU restores the program with only the pages it cannot
 * take lazily (stacks, file-backed private memory, shared memory) and hands
 * cryo a userfaultfd per task; cryo fills in the rest through it, on demand
 * and in the background, straight from the memory images as it
 * decompresses them (no CRIU lazy-pages daemon, no page server).
 *
 * The pages a restore needs at once are kept apart at checkpoint time: for
 * each pagemap-*.img an eager-*.img holds the extents of its pages image
 * that are not marked lazy (PE_LAZY), so that a restore can start before
 * the pages image itself is in. */
#pragma once

#include "error.h"
#include "memfile.h"

#include <stdint.h>
#include <sys/uio.h>
#include <sys/types.h>

/* Writes, into dir, the eager-*.img of every pagemap-*.img of the dump in dir
 * (its files, and the n_mem files held in memory, which take precedence). */
int criu_glue_eager_write(const char *dir, const struct mem_file *mem, size_t n_mem,
                          struct cryo_error *err);

/* Before a lazy restore from dir: makes each pages image that an eager-*.img
 * describes (a sparse file holding just the eager pages). -ENOENT if a
 * pagemap has no eager-*.img (an image from before cryo kept them). */
int criu_glue_eager_apply(const char *dir, struct cryo_error *err);

/* Where the pages of a pages image are: get() fills at most max_iov pieces
 * with the bytes from off on (in order, each a whole number of pages), as
 * many as fit up to len, and returns how many bytes they cover (> 0), or a
 * negative errno. It may wait for them. */
struct criu_glue_lazy_source {
	int64_t (*get)(void *ctx, const char *name, uint64_t off, uint64_t len, struct iovec *iov,
	               int max_iov, int *n_iov);
	/* Bytes [off, off + len) are in place (or no longer wanted): what get()
	 * gave for them is not read again unless asked for again. May be NULL. */
	void (*put)(void *ctx, const char *name, uint64_t off, uint64_t len);
	void *ctx;
};

struct criu_glue_lazy_opts {
	const char *images_dir; /* as criu_glue_eager_apply() left it */
	const char *work_dir;   /* CRIU's work directory, as for the restore */
	struct criu_glue_lazy_source source;
	int notify_fd; /* written to (8 bytes, an eventfd) when all is in place, or cannot be */
};

struct criu_glue_lazy_stats {
	uint64_t lazy_pages;       /* the pages to put in place */
	uint64_t faults;           /* faults on them served */
	uint64_t fault_bytes;      /* put in place for faults (a piece of the image each) */
	uint64_t background_bytes; /* put in place in the background */
	uint64_t zero_pages;       /* faults on pages the dump did not have */
	uint64_t events;           /* fork, mremap, munmap, madvise(DONTNEED) seen */
	uint64_t get_ns;           /* in source.get(): decompressing, or waiting */
	uint64_t copy_ns;          /* in UFFDIO_COPY */
	uint64_t ns;               /* from the end of CRIU's restore until all was in place */
};

struct criu_glue_lazy;

/* Listens, in work_dir, for a restore with lazy_pages (criu_glue_restore()),
 * and from then on puts its tasks' memory in place through their
 * userfaultfds: at once where they fault, and in the background, a piece of
 * the image at a time, until all is in place (then the userfaultfds are
 * closed and the program runs on its own). This replaces CRIU's lazy-pages
 * daemon: one copy of each page, from where source has it. */
int criu_glue_lazy_start(const struct criu_glue_lazy_opts *o, struct criu_glue_lazy **ret,
                         struct cryo_error *err);

/* The restore is done (criu_glue_restore() returned): the pages no fault
 * asked for may come now. Until then only faults are served, so that the
 * background copy does not take the CPU from CRIU's restore. */
void criu_glue_lazy_go(struct criu_glue_lazy *l);

/* After notify_fd fired: 0 if every page was put in place, else why not
 * (then the program, whose faults wait, must be ended before
 * criu_glue_lazy_free()). */
int criu_glue_lazy_finish(struct criu_glue_lazy *l, struct cryo_error *err);

/* After notify_fd fired: what it took (zeros if it did not end well). */
void criu_glue_lazy_stats(struct criu_glue_lazy *l, struct criu_glue_lazy_stats *st);

/* Stops and frees l. Its program must be gone first if the pages did not
 * all come (its faults would read zeros). */
void criu_glue_lazy_free(struct criu_glue_lazy *l);
