/* A generation restored lazily together with the generations it is built on.
 * Its memory images come out as the program had them: a whole generation's
 * straight from its archive (image_lazy), an incremental one's rebuilt page
 * run by page run, on demand, from its deltas and from its bases' memory,
 * each of those read lazily in turn. See images/FORMAT.md. */
#pragma once

#include "archive.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct image_chain;

/* Starts reading generation gen of the store in dir_store and every
 * generation it is built on: gen's small files go into dir (an existing,
 * empty directory), the memory stays in memory. With want_index, finishing
 * builds gen's page index. -EBADMSG names a damaged generation in
 * *bad_gen; -EPROTONOSUPPORT for images that cannot be read lazily. */
int image_chain_open(const char *store_dir, uint64_t gen, const char *dir, bool want_index,
                     struct image_chain **ret, uint64_t *bad_gen, struct cryo_error *err);

/* Waits until gen's small files are in dir. */
int image_chain_wait_files(struct image_chain *c, struct cryo_error *err);

/* Pages of memory image name as the program had it, from byte off on (off
 * and len multiples of 4096): fills at
 * most max_iov pieces, in order, waiting for what is not in yet, and
 * returns how many bytes they cover (up to len), or -EBADMSG if a piece
 * turned out damaged, -EINVAL for a range the image lacks. The pieces stay
 * valid until the caller's next image_chain_get() or image_chain_release().
 * Called by one thread at a time. */
int64_t image_chain_get(struct image_chain *c, const char *name, uint64_t off, uint64_t len,
                        struct iovec *iov, int max_iov, int *n_iov);

/* The caller is done with bytes [off, off + len) of memory image name (it
 * asked for them with image_chain_get() and put them in place): the memory
 * they took may go (image_lazy_release(); through an incremental
 * generation, a page of the whole one below goes once every page that
 * takes it was released and checked). Until then, or the next
 * image_chain_get(), what the last image_chain_get() gave stays valid. */
void image_chain_release(struct image_chain *c, const char *name, uint64_t off, uint64_t len);

/* Once the program has everything it asked for: waits until every
 * generation's memory is in, verifies it all (an incremental generation's
 * rebuilt images against their checksums: a thread checks them from
 * image_chain_open() on, as the memory comes), and hands over gen's page index
 * (with want_index) and how many incremental generations lead to it. On
 * -EBADMSG, *bad_gen is the damaged generation. */
int image_chain_finish(struct image_chain *c, struct page_index **index, unsigned *chain,
                       uint64_t *bad_gen, struct cryo_error *err);

/* Stops the reading threads (the program is gone). */
void image_chain_cancel(struct image_chain *c);
void image_chain_free(struct image_chain *c);
