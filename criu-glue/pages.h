/* A page server inside cryo: CRIU's dump sends the program's memory pages
 * here over a unix socket pair (CRIU's page-server protocol) instead of writing
 * them into image files. They land in memory faulted in before the program
 * was frozen, so the freeze lasts as long as copying the pages once, and the
 * archive compresses them from there afterwards. */
#pragma once

#include "glue.h"
#include "memfile.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct criu_glue_pages;

/* What the dump of the tree rooted at root will send, from the processes'
 * anonymous, shared and swapped memory; 0 if it cannot tell. */
uint64_t criu_glue_estimate_pages(pid_t root);

/* Memory one dump leaves to the next, kept resident and written (never
 * MADV_FREE'd): on a paravirtualised VM the first touch of a page, from the
 * kernel (recv() inside the freeze) and from user mode (zstd after it), can
 * cost ~5 us each, and MADV_FREE makes a page cold again; memory kept warm
 * takes the pages at the speed of a copy. Its cost: as much memory as the
 * program's last dump, until the next dump or the program's end. */
struct criu_glue_spare {
	void *base;
	size_t size;
};

/* Gives the spare's memory back to the kernel at once; _later in a thread
 * of its own, not waiting for it. */
void criu_glue_spare_drop(struct criu_glue_spare *spare);
void criu_glue_spare_drop_later(struct criu_glue_spare *spare);

/* Makes the socket pair and prepares expect_bytes of memory for the pages
 * (more is allocated, cold, if more arrive): spare's memory as it is if it
 * is enough and not much more, else a new mapping faulted in and written
 * once from the kernel and once from user mode, now (a warm-up of ~0.5 s
 * per GiB on one VM here, up to ~3 s on another; once, as long as the
 * program's size stays about the same). spare may be NULL. Fails with
 * -EOPNOTSUPP and its reason where libcriu cannot be given the socket
 * (libcriu-internals.h): the dump then goes through files. */
int criu_glue_pages_start(uint64_t expect_bytes, struct criu_glue_spare *spare,
                          const struct criu_glue_pages *parent, struct criu_glue_pages **ret,
                          struct cryo_error *err);

/* ---- write tracking ----
 * A dump with criu_glue_dump_opts.track_mem freezes the program only for
 * the pages written since the dump before (its parent), where the CRIU in
 * use carries cryo's patch (criu-glue/criu-patches/: dirty tracking through
 * userfaultfd write-protection, Linux 6.7's UFFD_FEATURE_WP_ASYNC and
 * PAGEMAP_SCAN, on kernels without soft-dirty bits). For each task whose
 * parent dump the page server holds (criu_glue_pages_start()'s parent), it
 * says so, and CRIU sends only the pages written since; the rest it names
 * as the parent's, and the image points at the parent's copy of them
 * (nothing is copied; memory is shared between dumps, and goes when no
 * image points into it), so that each image is whole. CRIU registers
 * the tasks' private anonymous memory with a userfaultfd made in the task
 * and hands it to the page server: the registration lasts as long as we
 * keep that fd, from one dump to the next (criu_glue_track).
 *
 * The parent must be the very dump after which CRIU re-armed the tracking:
 * after any failed dump, and whenever the program is restored or started
 * again, criu_glue_track_drop() ends the tracking, and the next dump is
 * whole. Memory the tracking does not know (new mappings, mremap(), forked
 * children, a new process) is sent whole by CRIU. */
struct criu_glue_track {
	struct criu_glue_pages *parent; /* the last tracked dump's pages */
	int *uffds;                     /* the userfaultfds that keep it going */
	size_t n_uffds;
	uint64_t dumps; /* tracked dumps since it started */
};

/* After a tracked dump whose pages p were received and finished: p becomes
 * the parent of the next dump (the caller no longer frees it), with the
 * userfaultfds it received; the former parent's memory becomes *spare. */
void criu_glue_track_next(struct criu_glue_track *t, struct criu_glue_pages *p,
                          struct criu_glue_spare *spare);

/* Ends the tracking (closing its userfaultfds unregisters the memory) and
 * frees the parent, its memory becoming *spare when spare is given. */
void criu_glue_track_drop(struct criu_glue_track *t, struct criu_glue_spare *spare);

/* The memory to make ready for the next dump's pages, where the whole
 * program would need whole: with the tracking going, about what the last
 * dump received. */
uint64_t criu_glue_track_expect(const struct criu_glue_track *t, uint64_t whole);

/* The pages of the pages image pages_name that are the parent's (their
 * hashes are the parent's too): spans of it, and the parent's pages image
 * they are in (NULL: none). Valid until p is freed. */
const char *criu_glue_pages_shared(const struct criu_glue_pages *p, const char *pages_name,
                                   const struct mem_span **spans, size_t *n);

/* Bytes received from CRIU, and bytes the image shares with the parent. */
void criu_glue_pages_counts(const struct criu_glue_pages *p, uint64_t *received,
                            uint64_t *from_parent);

/* Whether the pages' memory is the spare's. */
bool criu_glue_pages_reused(const struct criu_glue_pages *p);

/* CRIU's end of the socket pair (criu_glue_dump_opts.page_server_fd). */
int criu_glue_pages_fd(const struct criu_glue_pages *p);

/* After a failed dump: whether the page server gave up on the stream first
 * (then CRIU's failure is its consequence), with its reason in err. */
bool criu_glue_pages_broken(struct criu_glue_pages *p, struct cryo_error *err);

/* After the dump: waits for the page stream's end and checks it is complete. */
int criu_glue_pages_finish(struct criu_glue_pages *p, struct cryo_error *err);

/* The page images received: pagemap-*.img and pages-*.img, in memory. Valid
 * until criu_glue_pages_free(). */
void criu_glue_pages_files(const struct criu_glue_pages *p, const struct mem_file **files,
                           size_t *n);

/* Frees p; its prepared memory becomes *spare (NULL: unmapped too). */
void criu_glue_pages_free(struct criu_glue_pages *p, struct criu_glue_spare *spare);
