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
                          struct criu_glue_pages **ret, struct cryo_error *err);

/* Whether the pages' memory is the spare's. */
bool criu_glue_pages_reused(const struct criu_glue_pages *p);

/* CRIU's end of the socket pair (criu_glue_dump_opts.page_server_fd). */
int criu_glue_pages_fd(const struct criu_glue_pages *p);

/* After the dump: waits for the page stream's end and checks it is complete. */
int criu_glue_pages_finish(struct criu_glue_pages *p, struct cryo_error *err);

/* The page images received: pagemap-*.img and pages-*.img, in memory. Valid
 * until criu_glue_pages_free(). */
void criu_glue_pages_files(const struct criu_glue_pages *p, const struct mem_file **files,
                           size_t *n);

/* Frees p; its prepared memory becomes *spare (NULL: unmapped too). */
void criu_glue_pages_free(struct criu_glue_pages *p, struct criu_glue_spare *spare);
