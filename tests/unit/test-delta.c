/* Delta encoding of memory images: round trip against a base, only changed
 * pages stored, and malformed streams refused. */
#include "delta.h"
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

static void setup(void)
{
	CHECK(mkdtemp(root) != NULL);
}

static void teardown(void)
{
	CHECK(util_rm_rf(root) == 0);
}

TEST_MAIN(setup, test_round_trip, teardown)
