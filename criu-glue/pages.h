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

/* Memory one dump leaves to the next. It is madvise(MADV_FREE)d: the kernel
 * takes its pages back whenever it needs memory, and the pages it has not
 * taken are still there for the next dump, which then does not fault in
 * fresh memory (costly, above all in a VM: scripts/bench). */
struct criu_glue_spare {
	void *base;
	size_t size;
};

/* Gives the spare's memory back to the kernel at once; _later in a thread
 * of its own, not waiting for it. */
void criu_glue_spare_drop(struct criu_glue_spare *spare);
void criu_glue_spare_drop_later(struct criu_glue_spare *spare);

/* Makes the socket pair and prepares expect_bytes of memory for the pages
 * (more is allocated if more arrive): spare's memory if it is enough and
 * not much more, else a new mapping. spare may be NULL. Fails with
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
