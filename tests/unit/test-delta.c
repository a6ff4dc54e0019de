/* Delta encoding of memory images: round trip against a base, only changed
 * pages stored, and malformed streams refused. Held files' deltas likewise,
 * against a small model: any size, blocks changed, cut, grown. */
#include "delta.h"
#include "manifest.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGES 512

static char root[] = "/tmp/cryo-test-delta-XXXXXX";

static void fill(uint8_t *p, size_t pages, uint64_t seed)
{
	for (size_t i = 0; i < pages * DELTA_PAGE_SIZE; i += 8) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		memcpy(p + i, &seed, 8);
	}
}

static int write_stream(const struct delta_file *d, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int r = 0;
	uint64_t total = 0;
	for (size_t i = 0; i < d->n_iov && r == 0; i++) {
		r = util_write_all(fd, d->iov[i].iov_base, d->iov[i].iov_len);
		total += d->iov[i].iov_len;
	}
	close(fd);
	return r == 0 && total == d->mem.size ? 0 : -EIO;
}

static void test_round_trip(void)
{
	static uint8_t base[PAGES * DELTA_PAGE_SIZE], next[(PAGES + 8) * DELTA_PAGE_SIZE];
	char base_dir[512], path[600], stream[600], out[600];
	fill(base, PAGES, 1);
	snprintf(base_dir, sizeof(base_dir), "%s/base", root);
	CHECK(util_mkdir_p(base_dir) == 0);
	snprintf(path, sizeof(path), "%s/pages-1.img", base_dir);
	CHECK(util_write_file_atomic(path, base, sizeof(base)) == 0);

	struct page_index *idx = page_index_new(7);
	CHECK(page_index_add(idx, "pages-1.img", base, sizeof(base)) == 0);
	CHECK(page_index_generation(idx) == 7);

	/* The next dump: the same pages, five changed, some moved, eight new. */
	memcpy(next, base, sizeof(base));
	for (int k = 0; k < 5; k++)
		next[(size_t)(k * 97 + 3) * DELTA_PAGE_SIZE + 11] ^= 0x5a;
	memcpy(next + 10 * DELTA_PAGE_SIZE, base + 400 * DELTA_PAGE_SIZE, 3 * DELTA_PAGE_SIZE);
	fill(next + PAGES * DELTA_PAGE_SIZE, 8, 99);

	struct delta_file d;
	CHECK(delta_encode(idx, "pages-2.img", next, sizeof(next), &d) == 0);
	CHECK(d.pages == PAGES + 8);
	CHECK(d.copied_pages == PAGES - 5);
	CHECK(d.mem.size < 16 * DELTA_PAGE_SIZE);
	snprintf(stream, sizeof(stream), "%s/stream", root);
	snprintf(out, sizeof(out), "%s/rebuilt", root);
	CHECK(write_stream(&d, stream) == 0);
	CHECK(delta_decode(stream, base_dir, out) == 0);
	char *got = NULL;
	size_t len = 0;
	CHECK(util_read_file(out, &got, &len) == 0 && len == sizeof(next) &&
	      memcmp(got, next, len) == 0);
	free(got);

	/* Read in memory, page by page as a lazy restore does, through its map. */
	char *buf = NULL;
	CHECK(util_read_file(stream, &buf, &len) == 0);
	struct delta_map map;
	CHECK(delta_map_parse((const uint8_t *)buf, len, &map) == 0);
	CHECK(map.size == sizeof(next) && map.n_names == 1 && !strcmp(map.names[0], "pages-1.img"));
	for (uint64_t p = 0; p < PAGES + 8; p++) {
		const struct delta_run *run = delta_map_find(&map, p);
		CHECK(run && run->first <= p && p < run->first + run->pages);
		const uint8_t *src =
		    run->base == DELTA_STORED
		        ? (const uint8_t *)buf + run->offset + (p - run->first) * DELTA_PAGE_SIZE
		        : base + (run->offset + p - run->first) * DELTA_PAGE_SIZE;
		CHECK(memcmp(src, next + p * DELTA_PAGE_SIZE, DELTA_PAGE_SIZE) == 0);
	}
	CHECK(delta_map_find(&map, PAGES + 8) == NULL);
	delta_map_clear(&map);
	CHECK(delta_map_parse((const uint8_t *)buf, len - 20, &map) == -EBADMSG);
	CHECK(delta_map_parse((const uint8_t *)"garbage garbage garbage", 23, &map) == -EBADMSG);

	/* A stream cut short, or naming a base file that is not there. */
	CHECK(util_write_file_atomic(stream, buf, len - 20) == 0);
	CHECK(delta_decode(stream, base_dir, out) == -EBADMSG);
	CHECK(util_write_file_atomic(stream, buf, len) == 0);
	unlink(path);
	CHECK(delta_decode(stream, base_dir, out) == -EBADMSG);
	CHECK(util_write_file_atomic(stream, "garbage garbage garbage", 23) == 0);
	CHECK(delta_decode(stream, base_dir, out) == -EBADMSG);
	free(buf);
	delta_file_clear(&d);
	page_index_free(idx);
	idx = page_index_new(1);
	CHECK(delta_encode(idx, "x", next, 100, &d) == -EINVAL);
	page_index_free(idx);
}

/* A held file's next version (size bytes of next) against its copy in the
 * base (base_size bytes of base, base_dir/file-0.data), encoded as the
 * checkpoint does (files.c: blocks compared by position, length and hash)
 * through a writer buffer of 64 KiB, rebuilt through its file_delta line, and
 * compared. The stored bytes go to *stored. */
static void held_round_trip(const uint8_t *base, uint64_t base_size, const uint8_t *next,
                            uint64_t size, uint64_t *stored, bool damage_base)
{
	char base_dir[512], dest[512], path[600];
	snprintf(base_dir, sizeof(base_dir), "%s/held-base", root);
	snprintf(dest, sizeof(dest), "%s/held-dest", root);
	util_rm_rf(base_dir);
	util_rm_rf(dest);
	CHECK(util_mkdir_p(base_dir) == 0 && util_mkdir_p(dest) == 0);
	snprintf(path, sizeof(path), "%s/file-0.data", base_dir);
	CHECK(util_write_file_atomic(path, base, base_size) == 0);
	static uint8_t buf[1 << 16], out[1 << 16];
	uint64_t base_blocks = (base_size + DELTA_PAGE_SIZE - 1) / DELTA_PAGE_SIZE;
	uint64_t blocks = (size + DELTA_PAGE_SIZE - 1) / DELTA_PAGE_SIZE;
	struct page_hash *bh = malloc((base_blocks + 1) * sizeof(*bh));
	struct page_hash *nh = malloc((blocks + 1) * sizeof(*nh));
	uint8_t digest[16], digest2[16];
	int fd = open(path, O_RDONLY);
	CHECK(delta_file_digest(fd, base_size, buf, sizeof(buf), bh, digest) == 0);
	close(fd);

	snprintf(path, sizeof(path), "%s/file-1.data", dest);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	struct delta_writer w;
	CHECK(delta_writer_start(&w, fd, out, sizeof(out), size, "file-0.data") == 0);
	uint64_t changed = 0;
	for (uint64_t k = 0; k < blocks; k++) {
		size_t l = size - k * DELTA_PAGE_SIZE < DELTA_PAGE_SIZE
		               ? (size_t)(size - k * DELTA_PAGE_SIZE)
		               : DELTA_PAGE_SIZE;
		nh[k] = delta_block_hash(next + k * DELTA_PAGE_SIZE, l);
		uint64_t bl = k < base_blocks ? base_size - k * DELTA_PAGE_SIZE : 0;
		bool same = (bl < DELTA_PAGE_SIZE ? bl : DELTA_PAGE_SIZE) == l &&
		            bh[k].low == nh[k].low && bh[k].high == nh[k].high;
		changed += !same;
		CHECK((same ? delta_writer_copy(&w, k)
		            : delta_writer_literal(&w, next + k * DELTA_PAGE_SIZE, l)) == 0);
	}
	CHECK(delta_writer_end(&w) == 0);
	close(fd);
	CHECK(w.blocks == blocks && w.literals == changed);
	*stored = w.stored;
	delta_blocks_digest(nh, blocks, digest);

	struct manifest *m = manifest_new();
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	CHECK(manifest_addf(m, "file_delta", "file-1.data %llu %s", (unsigned long long)size,
	                    hex) == 0);
	const char *bad = "x";
	if (damage_base) {
		/* The base's last byte, which the delta takes, not as it was. */
		char bp[600];
		snprintf(bp, sizeof(bp), "%s/file-0.data", base_dir);
		uint8_t *copy = malloc(base_size);
		memcpy(copy, base, base_size);
		copy[base_size - 1] ^= 1;
		CHECK(util_write_file_atomic(bp, copy, base_size) == 0);
		free(copy);
		CHECK(delta_apply_files(m, dest, base_dir, &bad) == -EBADMSG && bad != NULL);
		manifest_free(m);
		free(bh);
		free(nh);
		return;
	}
	CHECK(delta_apply_files(m, dest, base_dir, &bad) == 0 && bad == NULL);
	char *got = NULL;
	size_t len = 0;
	CHECK(util_read_file(path, &got, &len) == 0 && len == size &&
	      (size == 0 || memcmp(got, next, size) == 0));
	fd = open(path, O_RDONLY);
	CHECK(delta_file_digest(fd, size, buf, sizeof(buf), NULL, digest2) == 0 &&
	      memcmp(digest, digest2, 16) == 0);
	close(fd);
	free(got);
	manifest_free(m);
	free(bh);
	free(nh);
}

static void test_held_files(void)
{
	enum { BASE = 300 * DELTA_PAGE_SIZE + 1000, MAX = 400 * DELTA_PAGE_SIZE };
	static uint8_t base[MAX], next[MAX];
	fill(base, MAX / DELTA_PAGE_SIZE, 3);
	uint64_t stored;

	/* 1% of the blocks changed: about 1% stored. */
	memcpy(next, base, BASE);
	for (int k = 0; k < 3; k++)
		next[(size_t)(k * 89 + 5) * DELTA_PAGE_SIZE + 7] ^= 0x33;
	held_round_trip(base, BASE, next, BASE, &stored, false);
	CHECK(stored >= 3 * DELTA_PAGE_SIZE && stored < 4 * DELTA_PAGE_SIZE);

	/* The partial last block changed, and nothing else. */
	memcpy(next, base, BASE);
	next[BASE - 1] ^= 1;
	held_round_trip(base, BASE, next, BASE, &stored, false);
	CHECK(stored < DELTA_PAGE_SIZE);

	/* Cut within a block (blocks vanish, the last one shorter), cut at
	 * a block's end, cut to nothing. */
	held_round_trip(base, BASE, base, 37 * DELTA_PAGE_SIZE + 5, &stored, false);
	CHECK(stored < DELTA_PAGE_SIZE);
	held_round_trip(base, BASE, base, 37 * DELTA_PAGE_SIZE, &stored, false);
	CHECK(stored < 200);
	held_round_trip(base, BASE, base, 0, &stored, false);

	/* Grown: the old partial block whole now, new ones after it, 30 of
	 * them in a row (a literal run longer than the writer's buffer). */
	memcpy(next, base, MAX);
	fill(next + 300 * DELTA_PAGE_SIZE, 20, 77);
	held_round_trip(base, BASE, next, 330 * DELTA_PAGE_SIZE + 17, &stored, false);
	CHECK(stored > 30 * DELTA_PAGE_SIZE && stored < 32 * DELTA_PAGE_SIZE);

	/* Every block other: all stored. */
	fill(next, MAX / DELTA_PAGE_SIZE, 5);
	held_round_trip(base, BASE, next, BASE, &stored, false);
	CHECK(stored > BASE);

	/* A base that is not the one the delta was made against: the rebuilt
	 * file's digest says so. */
	memcpy(next, base, BASE);
	next[10] ^= 1;
	held_round_trip(base, BASE, next, BASE, &stored, true);
	/* A block's hash is the page's XXH3-128 (through the library's
	 * dispatch where built with it, inline otherwise). */
	struct page_hash a = delta_block_hash(base, DELTA_PAGE_SIZE), b = page_hash_of(base);
	CHECK(a.low == b.low && a.high == b.high);
	struct delta_line line;
	CHECK(delta_file_line_parse("file-1.data 1237 00000000000000000000000000000000", &line) ==
	          0 &&
	      line.size == 1237);
	CHECK(delta_line_parse("file-1.data 1237 00000000000000000000000000000000", &line) ==
	      -EBADMSG);
}

static void setup(void)
{
	CHECK(mkdtemp(root) != NULL);
}

static void teardown(void)
{
	CHECK(util_rm_rf(root) == 0);
}

TEST_MAIN(setup, test_round_trip, test_held_files, teardown)
