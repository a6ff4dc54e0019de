/* An image whose manifest makes no sense is refused by every reader alike:
 * manifests crafted with their checksums recomputed (a frame table outside
 * the body or not fitting the file, a base that is not an earlier
 * generation, a chain too long) are refused by image_manifest_validate(), by
 * the reads cryo images and cryo inspect make, and by the full and the lazy
 * restore's; an untouched image passes them all. And every byte of the
 * header is checked. */
#include "archive.h"
#include "chain.h"
#include "delta.h"
#include "store.h"
#include "test.h"
#include "util.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "forge.h"

static char root[] = "/tmp/cryo-test-validate-XXXXXX";
static char store[512], src[512];

#define PAGES 1280u /* 5 MiB: three frames of memory */
#define SIZE  ((size_t)PAGES * DELTA_PAGE_SIZE)

static uint8_t *pages_of(uint64_t seed)
{
	uint8_t *p = malloc(SIZE);
	CHECK(p != NULL);
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (size_t i = 0; i < SIZE; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

static void gen_path(uint64_t gen, char *buf, size_t len)
{
	CHECK(image_store_path(store, gen, buf, len) == 0);
}

/* ---- rewriting an archive's manifest, its checksums made good again ---- */

struct archive_file {
	uint8_t *data;
	size_t len;
	uint64_t body_end; /* the manifest's offset */
};

static void archive_load(uint64_t gen, struct archive_file *a)
{
	char path[700];
	gen_path(gen, path, sizeof(path));
	CHECK(util_read_file(path, (char **)&a->data, &a->len) == 0);
	CHECK(a->len > 16 + 64);
	uint64_t off;
	memcpy(&off, a->data + a->len - 64 + 8, 8);
	a->body_end = le64toh(off);
}

/* The manifest text of archive a (malloc'd, NUL-terminated). */
static char *archive_manifest_text(const struct archive_file *a)
{
	uint64_t len;
	memcpy(&len, a->data + a->len - 64 + 16, 8);
	len = le64toh(len);
	const uint8_t *frame = a->data + a->body_end;
	unsigned long long n = ZSTD_getFrameContentSize(frame, len);
	CHECK(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN);
	char *text = calloc(1, n + 1);
	CHECK(text && ZSTD_decompress(text, n, frame, len) == n);
	return text;
}

/* Writes archive a as generation gen with manifest text in place of its
 * own: the manifest frame, its checksum and the trailer (offsets and its own
 * checksum) made anew, as a forger would. */
static void archive_store(const struct archive_file *a, uint64_t gen, const char *text)
{
	uint8_t t[FORGE_TRAILER];
	memcpy(t, a->data + a->len - FORGE_TRAILER, FORGE_TRAILER);
	size_t clen = 0;
	uint8_t *ctext = forge_manifest(text, strlen(text), t, &clen);
	CHECK(ctext != NULL);
	char path[700];
	gen_path(gen, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK(util_write_all(fd, a->data, a->body_end) == 0);
	CHECK(util_write_all(fd, ctext, clen) == 0);
	CHECK(util_write_all(fd, t, sizeof(t)) == 0);
	close(fd);
	free(ctext);
}

/* text with its first line starting with prefix replaced by line (removed
 * if line is NULL); line appended if there is no such line. */
static char *edit(const char *text, const char *prefix, const char *line)
{
	size_t n = strlen(text) + (line ? strlen(line) : 0) + 2;
	char *out = malloc(n), *o = out;
	bool done = false;
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) + 1 : strlen(p);
		if (!done && prefix && !strncmp(p, prefix, strlen(prefix))) {
			done = true;
			if (line)
				o += sprintf(o, "%s\n", line);
		} else {
			memcpy(o, p, ll);
			o += ll;
		}
		p += ll;
	}
	if (!done && line)
		o += sprintf(o, "%s\n", line);
	*o = '\0';
	return out;
}

/* The value of text's first line starting with key and a space. */
static char *value_of(const char *text, const char *key)
{
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (!strncmp(p, key, strlen(key)) && p[strlen(key)] == ' ') {
			const char *v = p + strlen(key) + 1;
			return strndup(v, (size_t)(strchr(v, '\n') - v));
		}
	}
	return NULL;
}

/* ---- the images ------------------------------------------------------------ */

/* Generation 1: whole, 5 MiB of memory and a small file; generation 2: a
 * delta on it. The originals are kept as gen 101 and 102 to copy from. */
static void make_store(void)
{
	snprintf(store, sizeof(store), "%s/store", root);
	snprintf(src, sizeof(src), "%s/src", root);
	util_rm_rf(store);
	CHECK(util_mkdir_p(store) == 0 && util_mkdir_p(src) == 0);
	char path[700];
	snprintf(path, sizeof(path), "%s/core-1.img", src);
	CHECK(util_write_file_atomic(path, "core", 4) == 0);
	uint8_t *base = pages_of(1), *next = pages_of(1);
	memset(next + 7 * DELTA_PAGE_SIZE, 0x5a, DELTA_PAGE_SIZE);
	struct iovec seg = {base, SIZE};
	struct mem_file whole = {"pages-1.img", &seg, 1, SIZE};
	struct manifest *m = manifest_new();
	manifest_add(m, "generation", "1");
	struct cryo_error err = {{0}};
	CHECK(image_store_commit(store, 1, src, &whole, 1, m, 1, 2, NULL, NULL, &err) == 0);
	manifest_free(m);

	struct page_index *idx = page_index_new(1);
	CHECK(page_index_add(idx, "pages-1.img", base, SIZE) == 0);
	struct delta_file d;
	CHECK(delta_encode(idx, "pages-1.img", next, SIZE, &d) == 0);
	page_index_free(idx);
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(next, SIZE));
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", h.digest[i]);
	m = manifest_new();
	manifest_add(m, "generation", "2");
	manifest_add(m, "base", "1");
	manifest_add(m, "chain", "1");
	manifest_addf(m, "delta", "pages-1.img %zu %s", SIZE, hex);
	CHECK(image_store_commit(store, 2, src, &d.mem, 1, m, 1, 2, NULL, NULL, &err) == 0);
	manifest_free(m);
	delta_file_clear(&d);
	free(base);
	free(next);
	for (uint64_t g = 1; g <= 2; g++) {
		struct archive_file a;
		archive_load(g, &a);
		char *text = archive_manifest_text(&a);
		archive_store(&a, 100 + g, text);
		free(text);
		free(a.data);
	}
}

/* Generation gen of the store with its manifest text changed as edit()
 * does, from original (1 or 2); its body's end in *body_end. */
static void craft(uint64_t gen, uint64_t original, const char *prefix, const char *line,
                  uint64_t *body_end)
{
	struct archive_file a;
	archive_load(100 + original, &a);
	char *text = archive_manifest_text(&a);
	char *crafted = edit(text, prefix, line);
	archive_store(&a, gen, crafted);
	if (body_end)
		*body_end = a.body_end;
	free(crafted);
	free(text);
	free(a.data);
}

/* How each reader takes generation gen: 0 or its error. */
struct verdicts {
	int validate;             /* image_manifest_validate() of the text as it is */
	int manifest;             /* image_archive_read_manifest(): cryo images --no-verify */
	int read;                 /* image_archive_read(): cryo images, cryo inspect */
	int stored;               /* image_store_read_manifest() */
	int extract;              /* image_store_extract(): the full restore */
	int lazy;                 /* image_lazy_open() */
	int chain;                /* image_chain_open(): the lazy restore */
	char why[CRYO_ERROR_MAX]; /* image_archive_read()'s reason, else extract's */
};

static void verdicts(uint64_t gen, struct verdicts *v)
{
	char path[700], out[600];
	gen_path(gen, path, sizeof(path));
	struct archive_file a;
	archive_load(gen, &a);
	char *text = archive_manifest_text(&a);
	struct manifest *m = NULL;
	struct cryo_error err = {{0}};
	v->validate = manifest_from_text(text, strlen(text), &m);
	if (v->validate == 0)
		v->validate = image_manifest_validate(m, gen, a.body_end, &err);
	manifest_free(m);
	free(text);
	free(a.data);

	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	m = NULL;
	v->manifest = image_archive_read_manifest(fd, &m, &err);
	manifest_free(m);
	m = NULL;
	err = (struct cryo_error){{0}};
	v->read = image_archive_read(fd, NULL, &m, &err);
	snprintf(v->why, sizeof(v->why), "%s", err.msg);
	manifest_free(m);
	m = NULL;
	v->stored = image_store_read_manifest(store, gen, &m, &err);
	manifest_free(m);

	snprintf(out, sizeof(out), "%s/out", root);
	util_rm_rf(out);
	CHECK(util_mkdir_p(out) == 0);
	m = NULL;
	err = (struct cryo_error){{0}};
	v->extract = image_store_extract(store, gen, out, &m, &err);
	if (!v->why[0])
		snprintf(v->why, sizeof(v->why), "%s", err.msg);
	manifest_free(m);

	util_rm_rf(out);
	CHECK(util_mkdir_p(out) == 0);
	struct image_lazy *l = NULL;
	v->lazy = image_lazy_open(fd, out, false, gen, &l, &err);
	if (v->lazy == 0) {
		/* A table that passes must hold: the restore reads by it. */
		v->lazy = image_lazy_finish(l, NULL, NULL, &err);
		image_lazy_free(l);
	}
	close(fd);

	util_rm_rf(out);
	CHECK(util_mkdir_p(out) == 0);
	struct image_chain *c = NULL;
	uint64_t bad = 0;
	v->chain = image_chain_open(store, gen, out, false, &c, &bad, &err);
	if (v->chain == 0) {
		unsigned chain;
		struct page_index *idx = NULL;
		v->chain = image_chain_wait_files(c, &err);
		int r = image_chain_finish(c, &idx, &chain, &bad, &err);
		if (v->chain == 0)
			v->chain = r;
		page_index_free(idx);
		image_chain_free(c);
	}
	util_rm_rf(out);
}

static void test_untouched_passes(void)
{
	make_store();
	for (uint64_t gen = 1; gen <= 2; gen++) {
		/* Rewritten by the helper as it is: still good. */
		craft(gen, gen, NULL, NULL, NULL);
		struct verdicts v = {0};
		verdicts(gen, &v);
		CHECK(v.validate == 0 && v.manifest == 0 && v.read == 0 && v.stored == 0);
		CHECK(v.extract == 0 && v.lazy == 0 && v.chain == 0);
		if (v.read || v.extract)
			fprintf(stderr, "# %s\n", v.why);
	}
}

/* A crafted generation gen: every reader refuses it, naming why (what).
 * With static, its manifest alone gives it away; else (a frame table that
 * fits the body but is not where the frames are) the body read does. */
static void check_refused(uint64_t gen, const char *what, bool statically)
{
	struct verdicts v = {0};
	verdicts(gen, &v);
	if (statically) {
		CHECK(v.validate == -EBADMSG);
		CHECK(v.manifest == -EBADMSG);
		CHECK(v.stored == -EBADMSG);
	}
	CHECK(v.read == -EBADMSG);
	CHECK(v.extract == -EBADMSG);
	CHECK(v.lazy == -EBADMSG);
	CHECK(v.chain == -EBADMSG);
	CHECK(strstr(v.why, what) != NULL);
	if (!strstr(v.why, what))
		fprintf(stderr, "# gen %" PRIu64 ": '%s' lacks '%s'\n", gen, v.why, what);
}

static void test_frame_tables(void)
{
	make_store();
	struct archive_file a;
	archive_load(101, &a);
	char *text = archive_manifest_text(&a);
	char *frames = value_of(text, "frames");
	CHECK(frames != NULL);
	free(text);
	free(a.data);
	uint64_t first = strtoull(frames, NULL, 10);
	char *lens = strchr(frames, ' ') + 1;
	*strchr(lens, ' ') = '\0';
	char *second = strchr(lens, ',') + 1;
	char line[512];
	static const char max[] = "18446744073709551615";

	snprintf(line, sizeof(line), "frames 0 %s pages-1.img", lens);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", true);
	snprintf(line, sizeof(line), "frames %s %s pages-1.img", max, lens);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", true);
	snprintf(line, sizeof(line), "frames %" PRIu64 " 0,%s pages-1.img", first, second);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", true);
	snprintf(line, sizeof(line), "frames %" PRIu64 " %s,%s pages-1.img", first, max, second);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", true);
	/* One frame more than 5 MiB takes. */
	snprintf(line, sizeof(line), "frames %" PRIu64 " %s,100 pages-1.img", first, lens);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", true);
	/* A table for a file that is not there, for one that is no memory
	 * image, and a second one. */
	snprintf(line, sizeof(line), "frames %" PRIu64 " %s pages-9.img", first, lens);
	craft(1, 1, NULL, line, NULL);
	check_refused(1, "frame table", true);
	snprintf(line, sizeof(line), "frames %" PRIu64 " 1 core-1.img", first);
	craft(1, 1, NULL, line, NULL);
	check_refused(1, "frame table", true);
	snprintf(line, sizeof(line), "frames %" PRIu64 " %s pages-1.img", first, lens);
	craft(1, 1, NULL, line, NULL);
	check_refused(1, "frame table", true);
	/* Inside the body, the right number of frames, but not where they are:
	 * the body read finds it, as the lazy restore would. */
	snprintf(line, sizeof(line), "frames %" PRIu64 " %s pages-1.img", first + 1, lens);
	craft(1, 1, "frames ", line, NULL);
	check_refused(1, "frame table", false);
	free(frames);
}

static void test_lineage(void)
{
	make_store();
	/* A base that is the generation itself, or a later one: by its own
	 * generation line, and by its number in the store alone. */
	craft(1, 1, NULL, "base 1", NULL);
	check_refused(1, "not an earlier one", true);
	craft(2, 2, "base ", "base 2", NULL);
	check_refused(2, "not an earlier one", true);
	craft(2, 2, "base ", "base 7", NULL);
	check_refused(2, "not an earlier one", true);
	craft(2, 2, "base ", "base 0", NULL);
	check_refused(2, "base", true);
	{
		/* No generation line: the store's number decides. */
		struct archive_file a;
		archive_load(102, &a);
		char *text = archive_manifest_text(&a);
		char *t1 = edit(text, "generation ", NULL);
		char *t2 = edit(t1, "base ", "base 3");
		archive_store(&a, 3, t2);
		free(t1);
		free(t2);
		free(text);
		free(a.data);
		struct verdicts v = {0};
		verdicts(3, &v);
		CHECK(v.manifest == 0); /* alone, it cannot know */
		CHECK(v.validate == -EBADMSG && v.stored == -EBADMSG && v.extract == -EBADMSG);
		CHECK(v.lazy == -EBADMSG && v.chain == -EBADMSG);
		char path[700];
		gen_path(3, path, sizeof(path));
		unlink(path);
	}
	craft(2, 2, "chain ", "chain 18446744073709551615", NULL);
	check_refused(2, "chain", true);
	craft(2, 2, "chain ", "chain 9", NULL);
	check_refused(2, "chain", true);
	craft(2, 2, "chain ", "chain 0", NULL);
	check_refused(2, "chain", true);
	craft(1, 1, NULL, "chain 3", NULL);
	check_refused(1, "chain", true);
	craft(2, 2, NULL, "base 1", NULL);
	check_refused(2, "twice", true);
	craft(1, 1, NULL, "delta pages-1.img 4096 00000000000000000000000000000000", NULL);
	check_refused(1, "delta", true);
	craft(2, 2, NULL, "delta pages-7.img 4096 00000000000000000000000000000000", NULL);
	check_refused(2, "delta", true);
	craft(2, 2, "chain ", "chain 1", NULL);
	craft(1, 1, NULL, NULL, NULL);

	/* Nine incremental generations in a row, each built on the one
	 * before (and each saying it is the first): more than a restore
	 * takes, though each alone verifies. */
	for (uint64_t g = 2; g <= 10; g++) {
		struct archive_file a;
		archive_load(102, &a);
		char *text = archive_manifest_text(&a), *t1, *t2, line[64];
		snprintf(line, sizeof(line), "generation %" PRIu64, g);
		t1 = edit(text, "generation ", line);
		snprintf(line, sizeof(line), "base %" PRIu64, g - 1);
		t2 = edit(t1, "base ", line);
		archive_store(&a, g, t2);
		free(t1);
		free(t2);
		free(text);
		free(a.data);
	}
	struct verdicts v = {0};
	verdicts(10, &v);
	CHECK(v.validate == 0 && v.read == 0); /* alone, it is good */
	CHECK(v.extract == -EBADMSG && v.chain == -EBADMSG);
	CHECK(strstr(v.why, "9th incremental generation in a row") != NULL);
	char out[600];
	snprintf(out, sizeof(out), "%s/out", root);
	CHECK(util_mkdir_p(out) == 0);
	struct cryo_error err = {{0}};
	/* Eight in a row are opened (whether they rebuild is not asked here:
	 * each was encoded against generation 1). */
	struct image_chain *c = NULL;
	uint64_t bad = 0;
	int r = image_chain_open(store, 9, out, false, &c, &bad, &err);
	CHECK(r == 0);
	image_chain_free(c);
	/* Nine are not, and the one restored is blamed. */
	c = NULL;
	CHECK(image_chain_open(store, 10, out, false, &c, &bad, &err) == -EBADMSG);
	CHECK(c == NULL && bad == 10);
	CHECK(strstr(err.msg, "9th incremental generation in a row") != NULL);
	util_rm_rf(out);
}

/* Every byte of the header is checked: each bit of it flipped is found
 * (bytes 12 to 15 are format 3's header checksum); a header of format 2 reads, with
 * zero in those bytes only. */
static void test_header(void)
{
	make_store();
	char path[700];
	gen_path(1, path, sizeof(path));
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	uint8_t h[16];
	CHECK(pread(fd, h, 16, 0) == 16);
	uint32_t ver;
	memcpy(&ver, h + 8, 4);
	CHECK(le32toh(ver) == IMAGE_FORMAT_VERSION && IMAGE_FORMAT_VERSION == 3);
	struct cryo_error err = {{0}};
	struct manifest *m = NULL;
	for (int byte = 0; byte < 16; byte++)
		for (int bit = 0; bit < 8; bit++) {
			uint8_t b = h[byte] ^ (uint8_t)(1u << bit);
			CHECK(pwrite(fd, &b, 1, byte) == 1);
			m = NULL;
			CHECK(image_archive_read_manifest(fd, &m, &err) == -EBADMSG);
			manifest_free(m);
			CHECK(pwrite(fd, &h[byte], 1, byte) == 1);
		}
	m = NULL;
	CHECK(image_archive_read(fd, NULL, &m, &err) == 0);
	manifest_free(m);
	/* Format 2: bytes 12 to 15 zero. */
	uint8_t v2[8] = {2, 0, 0, 0, 0, 0, 0, 0};
	CHECK(pwrite(fd, v2, 8, 8) == 8);
	m = NULL;
	CHECK(image_archive_read(fd, NULL, &m, &err) == 0);
	manifest_free(m);
	v2[6] = 1;
	CHECK(pwrite(fd, v2, 8, 8) == 8);
	m = NULL;
	CHECK(image_archive_read_manifest(fd, &m, &err) == -EBADMSG);
	CHECK(strstr(err.msg, "header") != NULL);
	manifest_free(m);
	close(fd);
}

static void setup(void)
{
	CHECK(mkdtemp(root) != NULL);
}

static void teardown(void)
{
	CHECK(util_rm_rf(root) == 0);
}

TEST_MAIN(setup, test_untouched_passes, test_frame_tables, test_lineage, test_header, teardown)
