/* A lazy restore through an incremental generation: its pages come out as
 * they were dumped, in pieces however few the caller takes at a time, and
 * damage in the base is blamed on the base. */
#include "chain.h"
#include "delta.h"
#include "store.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static char root[] = "/tmp/cryo-test-chain-XXXXXX";

#define PAGES 768u /* 3 MiB: two pieces of 2 MiB in the archive */
#define SIZE  ((size_t)PAGES * DELTA_PAGE_SIZE)

static void fill(uint8_t *p, size_t pages, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (size_t i = 0; i < pages * DELTA_PAGE_SIZE; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static void commit(const char *store, uint64_t gen, const char *src, const struct mem_file *mem,
                   struct manifest *m)
{
	struct cryo_error err = {{0}};
	CHECK(image_store_commit(store, gen, src, mem, mem ? 1 : 0, m, 1, 2, NULL, NULL, &err) ==
	      0);
	manifest_free(m);
}

/* Generation 2: next (size bytes of pages-1.img) as a delta on generation
 * 1, which holds base. */
static void commit_delta(const char *store, const char *src, const uint8_t *base,
                         const uint8_t *next, size_t size)
{
	struct page_index *idx = page_index_new(1);
	CHECK(page_index_add(idx, "pages-1.img", base, size) == 0);
	struct delta_file d;
	CHECK(delta_encode(idx, "pages-1.img", next, size, &d) == 0);
	page_index_free(idx);
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(next, size));
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", h.digest[i]);
	struct manifest *m = manifest_new();
	manifest_add(m, "base", "1");
	manifest_add(m, "chain", "1");
	manifest_addf(m, "delta", "pages-1.img %zu %s", size, hex);
	commit(store, 2, src, &d.mem, m);
	delta_file_clear(&d);
}

/* Reads all of pages-1.img through c, max_iov pieces at a time. */
static int read_all(struct image_chain *c, uint8_t *out, int max_iov)
{
	struct iovec iov[16];
	for (uint64_t off = 0; off < SIZE;) {
		int n = 0;
		int64_t got = image_chain_get(c, "pages-1.img", off, SIZE - off, iov, max_iov, &n);
		if (got < 0)
			return (int)got;
		CHECK(got > 0 && n >= 1 && n <= max_iov);
		for (int k = 0; k < n; k++) {
			memcpy(out + off, iov[k].iov_base, iov[k].iov_len);
			off += iov[k].iov_len;
		}
	}
	return 0;
}

static void test_chain(void)
{
	char store[512], src[512], path[700], out[512];
	snprintf(store, sizeof(store), "%s/store", root);
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(out, sizeof(out), "%s/out", root);
	CHECK(util_mkdir_p(store) == 0 && util_mkdir_p(src) == 0);
	snprintf(path, sizeof(path), "%s/core-1.img", src);
	CHECK(util_write_file_atomic(path, "core", 4) == 0);

	/* Generation 1, whole. */
	static uint8_t base[SIZE], next[SIZE], got[SIZE];
	fill(base, PAGES, 1);
	struct iovec seg = {base, SIZE};
	struct mem_file whole = {"pages-1.img", &seg, 1, SIZE};
	commit(store, 1, src, &whole, manifest_new());

	/* Generation 2: every third page new, the rest the base's (some moved). */
	memcpy(next, base, SIZE);
	for (size_t p = 0; p < PAGES; p += 3)
		fill(next + p * DELTA_PAGE_SIZE, 1, 1000 + p);
	memcpy(next + 10 * DELTA_PAGE_SIZE, base + 500 * DELTA_PAGE_SIZE, DELTA_PAGE_SIZE);
	commit_delta(store, src, base, next, SIZE);

	for (int max_iov = 1; max_iov <= 16; max_iov += 15) {
		util_rm_rf(out);
		CHECK(util_mkdir_p(out) == 0);
		struct image_chain *c = NULL;
		struct cryo_error err = {{0}};
		uint64_t bad = 0;
		CHECK(image_chain_open(store, 2, out, true, &c, &bad, &err) == 0);
		CHECK(image_chain_wait_files(c, &err) == 0);
		snprintf(path, sizeof(path), "%s/core-1.img", out);
		CHECK(access(path, F_OK) == 0);
		memset(got, 0, SIZE);
		CHECK(read_all(c, got, max_iov) == 0);
		CHECK(memcmp(got, next, SIZE) == 0);
		struct page_index *index = NULL;
		unsigned chain = 0;
		CHECK(image_chain_finish(c, &index, &chain, &bad, &err) == 0);
		CHECK(index && page_index_generation(index) == 2 && chain == 1);
		page_index_free(index);
		image_chain_free(c);
	}

	/* A byte of the base's memory flipped: the base is to blame. */
	image_store_path(store, 1, path, sizeof(path));
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	off_t at = lseek(fd, 0, SEEK_END) / 2;
	uint8_t b;
	CHECK(pread(fd, &b, 1, at) == 1);
	b ^= 0x40;
	CHECK(pwrite(fd, &b, 1, at) == 1);
	close(fd);
	util_rm_rf(out);
	CHECK(util_mkdir_p(out) == 0);
	struct image_chain *c = NULL;
	struct cryo_error err = {{0}};
	uint64_t bad = 0;
	CHECK(image_chain_open(store, 2, out, false, &c, &bad, &err) == 0);
	int r = read_all(c, got, 16);
	unsigned chain = 0;
	if (r == 0)
		r = image_chain_finish(c, NULL, &chain, &bad, &err);
	CHECK(r == -EBADMSG && bad == 1);
	image_chain_free(c);
}

/* An incremental generation many of whose pages take one page of the base
 * (as runs of equal pages do), read piece by piece in a scattered order by a
 * caller that gives each piece up once it has it, the way the lazy restore
 * does (the base's memory goes meanwhile): every piece reads as dumped,
 * also one read again after it was given up (a forked child's), and the
 * rebuild checks out. */
static void test_chain_release(void)
{
	enum { BIG = 6144 }; /* 24 MiB, 12 pieces */
	size_t size = (size_t)BIG * DELTA_PAGE_SIZE;
	char store[512], src[512], out[512];
	snprintf(store, sizeof(store), "%s/store-release", root);
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(out, sizeof(out), "%s/out-release", root);
	CHECK(util_mkdir_p(store) == 0);
	uint8_t *base = malloc(size), *next = malloc(size), *got = malloc(size);
	fill(base, BIG, 7);
	struct iovec seg = {base, size};
	struct mem_file whole = {"pages-1.img", &seg, 1, size};
	commit(store, 1, src, &whole, manifest_new());
	memcpy(next, base, size);
	for (size_t p = 0; p < BIG; p++) {
		if (p % 5 == 0) /* the same page as the base's page 3 */
			memcpy(next + p * DELTA_PAGE_SIZE, base + 3 * DELTA_PAGE_SIZE,
			       DELTA_PAGE_SIZE);
		else if (p % 97 == 0)
			fill(next + p * DELTA_PAGE_SIZE, 1, 5000 + p);
	}
	commit_delta(store, src, base, next, size);

	CHECK(util_mkdir_p(out) == 0);
	struct image_chain *c = NULL;
	struct cryo_error err = {{0}};
	uint64_t bad = 0;
	CHECK(image_chain_open(store, 2, out, true, &c, &bad, &err) == 0);
	struct iovec iov[16];
	const size_t piece = 2u << 20, pieces = size / piece;
	for (size_t i = 0, k = 5; i <= pieces; i++, k = (k + 7) % pieces) {
		if (i == pieces)
			k = 5; /* again, after it was given up */
		for (uint64_t off = k * piece; off < (k + 1) * piece;) {
			int n = 0;
			int64_t r = image_chain_get(c, "pages-1.img", off, (k + 1) * piece - off,
			                            iov, 16, &n);
			CHECK(r > 0);
			if (r <= 0)
				break;
			uint64_t at = off;
			for (int j = 0; j < n; j++) {
				memcpy(got + at, iov[j].iov_base, iov[j].iov_len);
				at += iov[j].iov_len;
			}
			image_chain_release(c, "pages-1.img", off, (uint64_t)r);
			off += (uint64_t)r;
		}
		CHECK(memcmp(got + k * piece, next + k * piece, piece) == 0);
	}
	struct page_index *index = NULL;
	unsigned chain = 0;
	CHECK(image_chain_finish(c, &index, &chain, &bad, &err) == 0);
	CHECK(index != NULL);
	/* The index is the rebuilt memory's: it encodes it as all-base. */
	struct delta_file d;
	if (index && delta_encode(index, "pages-1.img", next, size, &d) == 0) {
		CHECK(d.copied_pages == BIG);
		delta_file_clear(&d);
	}
	page_index_free(index);
	image_chain_free(c);
	free(base);
	free(next);
	free(got);
}

static void setup(void)
{
	CHECK(mkdtemp(root) != NULL);
}

static void teardown(void)
{
	CHECK(util_rm_rf(root) == 0);
}

TEST_MAIN(setup, test_chain, test_chain_release, teardown)
