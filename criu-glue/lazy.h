/* A lazy restore: CRIU restores the program with only the pages it cannot
 * take lazily (stacks, file-backed private memory, shared memory), and
 * CRIU's lazy-pages daemon fills in the rest through userfaultfd, on demand
 * and in the background. The daemon gets those pages from a page server
 * inside cryo (CRIU's page-server protocol, PS_IOV_GET, over a unix socket
 * pair), which hands out the memory images as cryo decompresses them.
 *
 * The pages a restore needs at once are kept apart at checkpoint time: for
 * each pagemap-*.img an eager-*.img holds the extents of its pages image
 * that are not marked lazy (PE_LAZY), so that a restore can start before
 * the pages image itself is in. */
#pragma once

#include "glue.h"
#include "memfile.h"

#include <stdint.h>
#include <sys/uio.h>
#include <sys/types.h>

/* Writes, into dir, the eager-*.img of every pagemap-*.img of the dump in dir
 * (its files, and the n_mem files held in memory, which take precedence). */
int criu_glue_eager_write(const char *dir, const struct mem_file *mem, size_t n_mem,
                          struct criu_glue_error *err);

/* Before a lazy restore from dir: makes each pages image that an eager-*.img
 * describes (a sparse file holding just the eager pages). -ENOENT if a
 * pagemap has no eager-*.img (an image from before cryo kept them). */
int criu_glue_eager_apply(const char *dir, struct criu_glue_error *err);

/* Where the page server finds the memory images. get returns the address
 * of bytes [off, off + len) of memory image name once they are in (it may
 * wait), or NULL if they never will be. */
/* Where the page server finds the pages of a pages image: get() fills at
 * most max_iov pieces with the bytes from off on (in order, each a whole
 * number of pages), as many as fit up to len, and returns how many bytes
 * they cover (> 0), or a negative errno. */
struct criu_glue_lazy_source {
	int64_t (*get)(void *ctx, const char *name, uint64_t off, uint64_t len, struct iovec *iov,
	               int max_iov, int *n_iov);
	void *ctx;
};

struct criu_glue_lazy_opts {
	const char *images_dir; /* as criu_glue_eager_apply() left it */
	const char *log_dir;    /* CRIU's work directory, as for the restore */
	const char *log_name;   /* e.g. "criu-lazy-pages.log" */
	struct criu_glue_lazy_source source;
	int notify_fd; /* written to (8 bytes, an eventfd) when the transfer ends */
};

struct criu_glue_lazy;

/* Starts CRIU's lazy-pages daemon and the page server that feeds it;
 * returns once the daemon waits for the restore (criu_glue_restore() with
 * lazy_pages). */
int criu_glue_lazy_start(const struct criu_glue_lazy_opts *o, struct criu_glue_lazy **ret,
                         struct criu_glue_error *err);

/* Once CRIU's restore returned: the program runs. From then on, pages that
 * cannot be had leave the program waiting for them, and the daemon alive,
 * until the caller has ended the program and calls criu_glue_lazy_free()
 * (before, the daemon is ended at once, which fails the restore). */
void criu_glue_lazy_running(struct criu_glue_lazy *l);

/* After notify_fd fired: 0 if the daemon delivered every page and ended
 * well, else why not (then the program must be ended before
 * criu_glue_lazy_free()). */
int criu_glue_lazy_finish(struct criu_glue_lazy *l, struct criu_glue_error *err);

/* Ends the daemon if it still runs (its program must be gone first: pages
 * not delivered would read as zeros) and frees l. */
void criu_glue_lazy_free(struct criu_glue_lazy *l);
