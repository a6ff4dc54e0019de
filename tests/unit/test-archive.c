/* The image format: round trip, damage anywhere is detected, truncation,
 * a full disk, and the store's commit/prune/set-aside rules. */
#include "archive.h"
#include "delta.h"
#include "store.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[] = "/tmp/cryo-test-archive-XXXXXX";

static void make_images(const char *dir)
{
	CHECK(util_mkdir_p(dir) == 0);
	char path[512];
	/* A compressible file, an incompressible one, and an empty one. */
	size_t n = 3 << 20;
	char *buf = malloc(n);
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)("abcdefgh"[i % 8]);
	snprintf(path, sizeof(path), "%s/pages-1.img", dir);
	CHECK(util_write_file_atomic(path, buf, n) == 0);
	uint64_t x = 88172645463325252ULL;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (char)x;
	}
	snprintf(path, sizeof(path), "%s/core-1.img", dir);
	CHECK(util_write_file_atomic(path, buf, 100000) == 0);
	snprintf(path, sizeof(path), "%s/empty.img", dir);
	CHECK(util_write_file_atomic(path, "", 0) == 0);
	free(buf);
}

static int write_archive(const char *src, const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct manifest *m = manifest_new();
	manifest_add(m, "name", "test");
	manifest_add(m, "arg", "line one\nline two \\ with backslash");
	manifest_add(m, "arg", "");
	struct cryo_error err = {{0}};
	struct image_write_stats st;
	int r = image_archive_write(fd, src, NULL, 0, m, 3, 2, NULL, &st, &err);
	CHECK(r == 0);
	CHECK(st.raw_bytes == (3 << 20) + 100000);
	CHECK(st.archive_bytes > 0 && st.archive_bytes < st.raw_bytes);
	manifest_free(m);
	close(fd);
	return r;
}

/* n bytes that do not compress (xorshift64). */
static uint8_t *random_bytes(size_t n)
{
	uint8_t *b = malloc(n);
	CHECK(b != NULL);
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (size_t i = 0; b && i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		b[i] = (uint8_t)x;
	}
	return b;
}

static bool files_equal(const char *a, const char *b)
{
	char *x = NULL, *y = NULL;
	size_t lx = 0, ly = 0;
	bool eq = util_read_file(a, &x, &lx) == 0 && util_read_file(b, &y, &ly) == 0 && lx == ly &&
	          memcmp(x, y, lx) == 0;
	free(x);
	free(y);
	return eq;
}

static void test_round_trip(void)
{
	char src[512], arc[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(arc, sizeof(arc), "%s/a.cryo", root);
	snprintf(out, sizeof(out), "%s/out", root);
	make_images(src);
	write_archive(src, arc);
	CHECK(util_mkdir_p(out) == 0);
	int fd = open(arc, O_RDONLY);
	struct manifest *m = NULL;
	struct cryo_error err = {{0}};
	CHECK(image_archive_read(fd, out, &m, &err) == 0);
	CHECK(m && !strcmp(manifest_get(m, "name"), "test"));
	CHECK(m && !strcmp(manifest_get(m, "arg"), "line one\nline two \\ with backslash"));
	CHECK(m && m->n_files == 3);
	CHECK(m && !strcmp(m->files[0].name, "core-1.img") && m->files[0].size == 100000);
	manifest_free(m);
	const char *names[] = {"pages-1.img", "core-1.img", "empty.img"};
	for (int i = 0; i < 3; i++) {
		char a[600], b[600];
		snprintf(a, sizeof(a), "%s/%s", src, names[i]);
		snprintf(b, sizeof(b), "%s/%s", out, names[i]);
		CHECK(files_equal(a, b));
	}
	/* The manifest alone. */
	m = NULL;
	CHECK(image_archive_read_manifest(fd, &m, &err) == 0 && m && m->n_files == 3);
	manifest_free(m);
	close(fd);
}

/* Flips one byte at many offsets: each damaged copy must be refused. */
static void test_damage_detected(void)
{
	char arc[512], bad[512];
	snprintf(arc, sizeof(arc), "%s/a.cryo", root);
	snprintf(bad, sizeof(bad), "%s/bad.cryo", root);
	char *buf = NULL;
	size_t len = 0;
	CHECK(util_read_file(arc, &buf, &len) == 0);
	int checked = 0, refused = 0;
	for (size_t off = 0; off < len; off += len / 97 + 1) {
		buf[off] ^= 0x01;
		CHECK(util_write_file_atomic(bad, buf, len) == 0);
		buf[off] ^= 0x01;
		int fd = open(bad, O_RDONLY);
		struct cryo_error err = {{0}};
		int r = image_archive_read(fd, NULL, NULL, &err);
		close(fd);
		checked++;
		if (r == -EBADMSG && err.msg[0])
			refused++;
		else
			fprintf(stderr, "flip at %zu of %zu not detected (r=%d)\n", off, len, r);
	}
	CHECK(checked > 50 && refused == checked);
	/* The last byte too. */
	buf[len - 1] ^= 0x80;
	CHECK(util_write_file_atomic(bad, buf, len) == 0);
	int fd = open(bad, O_RDONLY);
	CHECK(image_archive_read(fd, NULL, NULL, NULL) == -EBADMSG);
	close(fd);
	free(buf);
}

static void test_truncation(void)
{
	char arc[512], cut[512];
	snprintf(arc, sizeof(arc), "%s/a.cryo", root);
	snprintf(cut, sizeof(cut), "%s/cut.cryo", root);
	char *buf = NULL;
	size_t len = 0;
	CHECK(util_read_file(arc, &buf, &len) == 0);
	size_t lengths[] = {0, 7, 16, 100, len / 2, len - 65, len - 64, len - 1};
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		CHECK(util_write_file_atomic(cut, buf, lengths[i]) == 0);
		int fd = open(cut, O_RDONLY);
		struct cryo_error err = {{0}};
		CHECK(image_archive_read(fd, NULL, NULL, &err) == -EBADMSG);
		CHECK(err.msg[0] != '\0');
		close(fd);
	}
	/* Data appended after the trailer is not a valid archive either. */
	char *longer = malloc(len + 10);
	memcpy(longer, buf, len);
	memset(longer + len, 0, 10);
	CHECK(util_write_file_atomic(cut, longer, len + 10) == 0);
	int fd = open(cut, O_RDONLY);
	CHECK(image_archive_read(fd, NULL, NULL, NULL) == -EBADMSG);
	close(fd);
	free(longer);
	free(buf);
}

/* An archive written into a pipe and read back as a stream. */
static void test_stream_round_trip(void)
{
	char src[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(out, sizeof(out), "%s/stream-out", root);
	CHECK(util_mkdir_p(out) == 0);
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		struct manifest *m = manifest_new();
		manifest_add(m, "name", "streamed");
		_exit(image_archive_write(p[1], src, NULL, 0, m, 1, 2, NULL, NULL, NULL) == 0 ? 0
		                                                                              : 1);
	}
	close(p[1]);
	struct manifest *m = NULL;
	struct cryo_error err = {{0}};
	CHECK(image_archive_read_stream(p[0], out, &m, &err) == 0);
	close(p[0]);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(m && !strcmp(manifest_get(m, "name"), "streamed") && m->n_files == 3);
	manifest_free(m);
	const char *names[] = {"pages-1.img", "core-1.img", "empty.img"};
	for (int i = 0; i < 3; i++) {
		char a[600], b[600];
		snprintf(a, sizeof(a), "%s/%s", src, names[i]);
		snprintf(b, sizeof(b), "%s/%s", out, names[i]);
		CHECK(files_equal(a, b));
	}
}

/* A stream with a byte flipped anywhere, cut anywhere, or with bytes after
 * its trailer is refused. */
static void test_stream_damage(void)
{
	char arc[512], bad[512], out[512];
	snprintf(arc, sizeof(arc), "%s/a.cryo", root);
	snprintf(bad, sizeof(bad), "%s/stream-bad.cryo", root);
	snprintf(out, sizeof(out), "%s/stream-bad-out", root);
	char *buf = NULL;
	size_t len = 0;
	CHECK(util_read_file(arc, &buf, &len) == 0);
	int checked = 0, refused = 0;
	for (int kind = 0; kind < 3; kind++) {
		size_t step = kind == 0 ? len / 61 + 1 : len / 13 + 1;
		for (size_t off = 0; off < len; off += step) {
			size_t n = len;
			if (kind == 0)
				buf[off] ^= 0x01;
			else if (kind == 1)
				n = off;
			CHECK(util_write_file_atomic(bad, buf, n) == 0);
			if (kind == 2) {
				int afd = open(bad, O_WRONLY | O_APPEND);
				CHECK(afd >= 0 && write(afd, buf, off % 7 + 1) > 0);
				close(afd);
			}
			if (kind == 0)
				buf[off] ^= 0x01;
			util_rm_rf(out);
			CHECK(util_mkdir_p(out) == 0);
			int fd = open(bad, O_RDONLY);
			struct cryo_error err = {{0}};
			int r = image_archive_read_stream(fd, out, NULL, &err);
			close(fd);
			checked++;
			if (r == -EBADMSG && err.msg[0])
				refused++;
			else
				fprintf(stderr,
				        "stream damage %d at %zu of %zu not detected (r=%d)\n",
				        kind, off, len, r);
		}
	}
	CHECK(checked > 80 && refused == checked);
	free(buf);
}

static void test_disk_full(void)
{
	char src[512];
	snprintf(src, sizeof(src), "%s/src", root);
	int fd = open("/dev/full", O_WRONLY);
	if (fd < 0)
		return;
	struct manifest *m = manifest_new();
	struct cryo_error err = {{0}};
	CHECK(image_archive_write(fd, src, NULL, 0, m, 1, 0, NULL, NULL, &err) == -ENOSPC);
	CHECK(err.msg[0] != '\0');
	manifest_free(m);
	close(fd);
}

static void *read_then_close(void *arg)
{
	int *fd = arg;
	static char buf[1 << 16];
	for (size_t got = 0; got < (3u << 20);) {
		ssize_t n = read(*fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(*fd);
	return NULL;
}

/* A reader that goes away while memory is being compressed: the write fails,
 * and no compressing thread is left reading a mapping the writer has
 * unmapped on its way out. */
static void test_reader_gone(void)
{
	char src[512], path[600];
	snprintf(src, sizeof(src), "%s/cut", root);
	CHECK(util_mkdir_p(src) == 0);
	size_t n = 64u << 20;
	char *buf = malloc(n);
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (size_t i = 0; i + 8 <= n; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(buf + i, &x, 8);
	}
	snprintf(path, sizeof(path), "%s/pages-1.img", src);
	CHECK(util_write_file_atomic(path, buf, n) == 0);
	free(buf);
	signal(SIGPIPE, SIG_IGN);
	for (int round = 0; round < 5; round++) {
		int p[2];
		CHECK(pipe(p) == 0);
		pthread_t t;
		CHECK(pthread_create(&t, NULL, read_then_close, &p[0]) == 0);
		struct manifest *m = manifest_new();
		struct cryo_error err = {{0}};
		CHECK(image_archive_write(p[1], src, NULL, 0, m, 3, 2, NULL, NULL, &err) == -EPIPE);
		manifest_free(m);
		pthread_join(t, NULL);
		close(p[1]);
	}
}

static void test_manifest_text(void)
{
	struct manifest *m = manifest_new();
	CHECK(manifest_add(m, "Bad Key", "x") == -EINVAL);
	CHECK(manifest_add(m, "file", "x") == -EINVAL);
	CHECK(manifest_add(m, "ctl", "\x01\x7f tab\there") == 0);
	CHECK(manifest_addf(m, "n", "%d", 42) == 0);
	char *text = NULL;
	size_t len = 0;
	CHECK(manifest_to_text(m, &text, &len) == 0);
	struct manifest *back = NULL;
	CHECK(manifest_from_text(text, len, &back) == 0);
	CHECK(back && !strcmp(manifest_get(back, "ctl"), "\x01\x7f tab\there"));
	CHECK(back && manifest_get_u64(back, "n", 0) == 42);
	CHECK(back && manifest_get(back, "missing") == NULL);
	manifest_free(back);
	back = NULL;
	CHECK(manifest_from_text("garbage\n", 8, &back) == -EBADMSG);
	CHECK(manifest_from_text("cryo-manifest 1\nfile zz 1 a\n", 28, &back) == -EBADMSG);
	CHECK(manifest_from_text("cryo-manifest 1\nfile 00000000000000000000000000000000 1 ../x\n",
	                         60, &back) == -EBADMSG);
	free(text);
	manifest_free(m);
}

static void test_store(void)
{
	char src[512], store[512], out[512], path[600];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(store, sizeof(store), "%s/store", root);
	CHECK(util_mkdir_p(store) == 0);
	uint64_t next = 0;
	CHECK(image_store_next_generation(store, &next) == 0 && next == 1);
	for (uint64_t g = 1; g <= 4; g++) {
		struct manifest *m = manifest_new();
		struct cryo_error err = {{0}};
		CHECK(image_store_commit(store, g, src, NULL, 0, m, 1, 0, NULL, NULL, &err) == 0);
		manifest_free(m);
		CHECK(image_store_prune(store, 2, 0) == 0);
	}
	uint64_t *gens = NULL;
	size_t n = 0;
	CHECK(image_store_list(store, &gens, &n) == 0 && n == 2 && gens[0] == 3 && gens[1] == 4);
	free(gens);
	/* No temporary file is left behind. */
	snprintf(path, sizeof(path), "%s/gen-000000000004.cryo.tmp", store);
	CHECK(access(path, F_OK) < 0);

	/* A damaged generation is set aside, never reused, and the next
	 * number goes past it. */
	CHECK(image_store_set_aside(store, 4) == 0);
	CHECK(image_store_list(store, &gens, &n) == 0 && n == 1 && gens[0] == 3);
	free(gens);
	CHECK(image_store_next_generation(store, &next) == 0 && next == 5);

	snprintf(out, sizeof(out), "%s/extract", root);
	CHECK(util_mkdir_p(out) == 0);
	struct cryo_error err = {{0}};
	CHECK(image_store_extract(store, 3, out, NULL, &err) == 0);
	CHECK(image_store_extract(store, 9, out, NULL, &err) == -ENOENT);

	/* A commit that fails leaves nothing and keeps what was there. */
	char missing[600];
	snprintf(missing, sizeof(missing), "%s/nope", root);
	struct manifest *m = manifest_new();
	CHECK(image_store_commit(store, 5, missing, NULL, 0, m, 1, 0, NULL, NULL, &err) < 0);
	manifest_free(m);
	CHECK(image_store_list(store, &gens, &n) == 0 && n == 1 && gens[0] == 3);
	free(gens);
	snprintf(path, sizeof(path), "%s/gen-000000000005.cryo.tmp", store);
	CHECK(access(path, F_OK) < 0);

	/* What an interrupted dump, commit or arrival left is swept;
	 * generations stay. */
	char inc[600], dump[600], dumped[700];
	CHECK(util_write_file_atomic(path, "x", 1) == 0);
	CHECK(image_store_incoming_path(store, 6, inc, sizeof(inc)) == 0);
	CHECK(util_write_file_atomic(inc, "x", 1) == 0);
	CHECK(image_store_dump_path(store, 7, dump, sizeof(dump)) == 0);
	snprintf(dumped, sizeof(dumped), "%s/pages-1.img", dump);
	CHECK(util_mkdir_p(dump) == 0 && util_write_file_atomic(dumped, "x", 1) == 0);
	image_store_sweep(store);
	CHECK(access(path, F_OK) < 0 && access(inc, F_OK) < 0 && access(dump, F_OK) < 0);
	CHECK(image_store_list(store, &gens, &n) == 0 && n == 1 && gens[0] == 3);
	free(gens);

	/* A link under the temporary name is replaced, never written through:
	 * its target keeps what it held, and the generation is a file. */
	char target[600], *text = NULL;
	snprintf(target, sizeof(target), "%s/target", root);
	CHECK(util_write_file_atomic(target, "keep", 4) == 0);
	CHECK(symlink(target, path) == 0);
	m = manifest_new();
	CHECK(image_store_commit(store, 5, src, NULL, 0, m, 1, 0, NULL, NULL, &err) == 0);
	manifest_free(m);
	CHECK(util_read_file(target, &text, NULL) == 0 && !strcmp(text, "keep"));
	free(text);
	struct stat st;
	CHECK(image_store_path(store, 5, path, sizeof(path)) == 0);
	CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode));

	/* After cryo run --fresh, an earlier run's generations (3) go with
	 * the first new one (5), however many --keep allows. */
	CHECK(image_store_prune(store, 3, 5) == 0);
	CHECK(image_store_list(store, &gens, &n) == 0 && n == 1 && gens[0] == 5);
	free(gens);
}

/* Files held in memory, in several segments, merge with the directory's in
 * name order and come back byte for byte; also through one writer kept
 * from one archive to the next (other contents, another level). */
static void test_memory_files(void)
{
	char src[512], arc[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(arc, sizeof(arc), "%s/mem.cryo", root);
	snprintf(out, sizeof(out), "%s/mem-out", root);
	static char a[10000], b[3 << 20];
	struct image_writer *w = image_writer_new();
	CHECK(w != NULL);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < sizeof(a); i++)
			a[i] = (char)(i * 7 + round);
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (char)(i % 251 + round * (i % 3));
		struct iovec pages[3] = {
		    {b, 4096}, {b + 4096, sizeof(b) - 8192}, {b + sizeof(b) - 4096, 4096}};
		struct iovec small = {a, sizeof(a)};
		struct mem_file mem[2] = {
		    {"pages-65537.img", pages, 3, sizeof(b)},
		    {"aaa-first.img", &small, 1, sizeof(a)},
		};
		int fd = open(arc, O_RDWR | O_CREAT | O_TRUNC, 0600);
		struct manifest *m = manifest_new();
		struct cryo_error err = {{0}};
		CHECK(image_archive_write(fd, src, mem, 2, m, round == 1 ? 3 : 1, 2,
		                          round ? w : NULL, NULL, &err) == 0);
		manifest_free(m);
		close(fd);
		fd = open(arc, O_RDONLY);
		util_rm_rf(out);
		CHECK(util_mkdir_p(out) == 0);
		m = NULL;
		CHECK(image_archive_read(fd, out, &m, &err) == 0);
		close(fd);
		CHECK(m && m->n_files == 5);
		CHECK(m && !strcmp(m->files[0].name, "aaa-first.img"));
		CHECK(m && !strcmp(m->files[3].name, "pages-1.img"));
		CHECK(m && !strcmp(m->files[4].name, "pages-65537.img") &&
		      m->files[4].size == sizeof(b));
		manifest_free(m);
		char path[600], *buf = NULL;
		size_t len = 0;
		snprintf(path, sizeof(path), "%s/pages-65537.img", out);
		CHECK(util_read_file(path, &buf, &len) == 0 && len == sizeof(b) &&
		      !memcmp(buf, b, len));
		free(buf);
		snprintf(path, sizeof(path), "%s/aaa-first.img", out);
		CHECK(util_read_file(path, &buf, &len) == 0 && len == sizeof(a) &&
		      !memcmp(buf, a, len));
		free(buf);
	}
	image_writer_free(w);
}

/* A lazy restore's reading: small files into the directory, memory images
 * into memory, in whatever order their pieces are asked for; a damaged
 * piece is found when it is asked for. */
static void test_lazy(void)
{
	char src[512], arc[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(arc, sizeof(arc), "%s/lazy.cryo", root);
	snprintf(out, sizeof(out), "%s/lazy-out", root);
	make_images(src);
	size_t n = 5u << 20;
	uint8_t *b = random_bytes(n);
	struct iovec seg = {b, n};
	struct mem_file mem = {"pages-2.img", &seg, 1, n};
	int fd = open(arc, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	struct manifest *m = manifest_new();
	struct cryo_error err = {{0}};
	CHECK(image_archive_write(fd, src, &mem, 1, m, 3, 2, NULL, NULL, &err) == 0);
	manifest_free(m);
	close(fd);
	fd = open(arc, O_RDWR);
	CHECK(fd >= 0);

	for (int damaged = 0; damaged < 2; damaged++) {
		if (damaged) {
			/* A byte in the last piece of pages-2.img (random: stored
			 * as it is). */
			struct stat st;
			CHECK(fstat(fd, &st) == 0);
			uint8_t c;
			off_t at = st.st_size - 64 - 4096 - 100000;
			CHECK(pread(fd, &c, 1, at) == 1);
			c ^= 0x10;
			CHECK(pwrite(fd, &c, 1, at) == 1);
		}
		util_rm_rf(out);
		CHECK(util_mkdir_p(out) == 0);
		struct image_lazy *l = NULL;
		CHECK(image_lazy_open(fd, out, false, 1, &l, &err) == 0);
		CHECK(image_lazy_wait_files(l, &err) == 0);
		char path[600];
		snprintf(path, sizeof(path), "%s/core-1.img", out);
		CHECK(access(path, F_OK) == 0);
		snprintf(path, sizeof(path), "%s/pages-2.img", out);
		CHECK(access(path, F_OK) != 0);
		uint64_t size = 0;
		const uint8_t *p = image_lazy_memory(l, "pages-2.img", &size);
		CHECK(p && size == n);
		CHECK(!image_lazy_memory(l, "core-1.img", &size));
		/* Backwards, a page at a time across the pieces' edges. */
		int r = 0;
		for (uint64_t off = n - 4096; r == 0; off -= (1u << 20) + 4096) {
			r = image_lazy_get(l, p, off, 4096);
			if (r == 0)
				CHECK(memcmp(p + off, b + off, 4096) == 0);
			if (off < (1u << 20) + 4096)
				break;
		}
		CHECK(damaged ? r == -EBADMSG : r == 0);
		CHECK(image_lazy_get(l, p, n - 10, 20) == -EINVAL);
		m = NULL;
		r = image_lazy_finish(l, &m, NULL, &err);
		if (damaged) {
			CHECK(r == -EBADMSG && strstr(err.msg, "pages-2.img"));
		} else {
			CHECK(r == 0 && m && m->n_files == 4);
			CHECK(memcmp(p, b, n) == 0);
		}
		manifest_free(m);
		image_lazy_free(l);
	}
	close(fd);
	free(b);
}

/* A consumer that releases what it put in place, in a scattered order and
 * concurrently with the thread that hashes in order: released chunks leave
 * memory, come back (decompressed again) when asked for again, and the
 * whole file still checks out, page index included. */
static void test_lazy_release(void)
{
	char src[512], arc[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(arc, sizeof(arc), "%s/release.cryo", root);
	snprintf(out, sizeof(out), "%s/release-out", root);
	make_images(src);
	size_t n = (80u << 20) + 3 * 4096; /* 41 chunks, the last one short */
	uint8_t *b = malloc(n);
	uint64_t x = 0x2545F4914F6CDD1DULL;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		b[i] = i % 3 ? (uint8_t)x : 'a'; /* compressible, but not much */
	}
	struct iovec seg = {b, n};
	struct mem_file mem = {"pages-2.img", &seg, 1, n};
	/* Longer than several writeback steps, as the store writes it; read
	 * back through another fd. */
	int fd = open(arc, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	struct manifest *m = manifest_new();
	struct cryo_error err = {{0}};
	CHECK(image_archive_write(fd, src, &mem, 1, m, 3, 2, NULL, NULL, &err) == 0);
	manifest_free(m);
	close(fd);
	fd = open(arc, O_RDONLY);
	for (int round = 0; round < 3; round++) {
		util_rm_rf(out);
		CHECK(util_mkdir_p(out) == 0);
		struct image_lazy *l = NULL;
		CHECK(image_lazy_open(fd, out, true, 7, &l, &err) == 0);
		image_lazy_bound(l, 2);
		uint64_t size = 0;
		const uint8_t *p = image_lazy_memory(l, "pages-2.img", &size);
		CHECK(p && size == n);
		size_t chunks = (n + (2u << 20) - 1) / (2u << 20);
		for (size_t i = 0, k = round; i < chunks; i++, k = (k + 8) % chunks) {
			uint64_t off = (uint64_t)k << 21,
			         len = n - off < (2u << 20) ? n - off : 2u << 20;
			CHECK(image_lazy_get(l, p, off, len) == 0);
			CHECK(memcmp(p + off, b + off, len) == 0);
			/* in two halves, the second one first */
			image_lazy_release(l, p, off + len / 2 / 4096 * 4096,
			                   len - len / 2 / 4096 * 4096);
			image_lazy_release(l, p, off, len / 2 / 4096 * 4096);
		}
		/* Asked for again after its release. */
		CHECK(image_lazy_get(l, p, 4096, 8192) == 0);
		CHECK(memcmp(p + 4096, b + 4096, 8192) == 0);
		struct page_index *idx = NULL;
		m = NULL;
		CHECK(image_lazy_finish(l, &m, &idx, &err) == 0);
		CHECK(idx != NULL);
		/* Its index encodes the same memory as wholly the base's. */
		struct delta_file d;
		if (idx && delta_encode(idx, "pages-2.img", b, n, &d) == 0) {
			CHECK(d.copied_pages == n / 4096);
			delta_file_clear(&d);
		} else {
			CHECK(!"delta_encode");
		}
		/* What was released and not asked for again is out of memory, but
		 * for the pages kept for chunks to come (16 chunks at most) and
		 * the chunk asked for again. */
		size_t pages = (n + 4095) / 4096, in = 0;
		unsigned char *vec = malloc(pages);
		CHECK(vec && mincore((void *)p, n, vec) == 0);
		for (size_t i = 0; vec && i < pages; i++)
			in += vec[i] & 1;
		free(vec);
		CHECK(in <= 17 * 512);
		page_index_free(idx);
		manifest_free(m);
		image_lazy_free(l);
	}
	close(fd);
	free(b);
}

/* A frame table that cannot be read, or one that does not fit the file
 * (a second table for it, here), refuses the image at once. */
static void test_lazy_frame_table(void)
{
	char src[512], arc[512], out[512];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(arc, sizeof(arc), "%s/table.cryo", root);
	snprintf(out, sizeof(out), "%s/table-out", root);
	make_images(src);
	size_t n = 5u << 20;
	uint8_t *b = calloc(1, n);
	struct iovec seg = {b, n};
	struct mem_file mem = {"pages-2.img", &seg, 1, n};
	const char *bad[] = {"x pages-2.img", "99 1,2,3 pages-2.img"};
	for (int i = 0; i < 2; i++) {
		int fd = open(arc, O_RDWR | O_CREAT | O_TRUNC, 0600);
		struct manifest *m = manifest_new();
		/* Before the writer's own: the first is the one read. */
		manifest_add(m, "frames", bad[i]);
		struct cryo_error err = {{0}};
		CHECK(image_archive_write(fd, src, &mem, 1, m, 3, 2, NULL, NULL, &err) == 0);
		manifest_free(m);
		util_rm_rf(out);
		CHECK(util_mkdir_p(out) == 0);
		/* Refused before anything is read by it, as cryo images and a
		 * full restore refuse it (image_manifest_validate()). */
		struct image_lazy *l = NULL;
		int r = image_lazy_open(fd, out, false, 1, &l, &err);
		CHECK(r == -EBADMSG && strstr(err.msg, "frame table"));
		struct manifest *got = NULL;
		CHECK(image_archive_read(fd, NULL, &got, &err) == -EBADMSG);
		CHECK(strstr(err.msg, "frame table") != NULL);
		close(fd);
	}
	free(b);
}

/* Pages of the file at path in the page cache. */
static size_t cached_pages(const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	CHECK(fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0);
	size_t n = ((size_t)st.st_size + 4095) / 4096, cached = 0;
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	unsigned char *vec = malloc(n);
	CHECK(p != MAP_FAILED && vec && mincore(p, (size_t)st.st_size, vec) == 0);
	for (size_t i = 0; i < n; i++)
		cached += vec[i] & 1;
	free(vec);
	munmap(p, (size_t)st.st_size);
	close(fd);
	return cached;
}

/* A committed generation is in the page cache (written through it, its
 * writeback started as it grew) and leaves it when told to. */
static void test_store_uncache(void)
{
	char src[512], store[512], path[600];
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(store, sizeof(store), "%s/uncache", root);
	make_images(src);
	CHECK(util_mkdir_p(store) == 0);
	size_t n = 20u << 20; /* random: 20 MiB of archive, several writeback steps */
	uint8_t *b = random_bytes(n);
	struct iovec seg = {b, n};
	struct mem_file mem = {"pages-2.img", &seg, 1, n};
	struct manifest *m = manifest_new();
	struct cryo_error err = {{0}};
	CHECK(image_store_commit(store, 1, src, &mem, 1, m, 1, 2, NULL, NULL, &err) == 0);
	manifest_free(m);
	CHECK(image_store_path(store, 1, path, sizeof(path)) == 0);
	/* (tmpfs has no page cache to leave) */
	struct statfs sf;
	bool tmpfs = statfs(store, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
	CHECK(cached_pages(path) > 0);
	image_store_uncache(store, 1);
	CHECK(tmpfs || cached_pages(path) == 0);
	/* Still whole. */
	int fd = open(path, O_RDONLY);
	m = NULL;
	CHECK(fd >= 0 && image_archive_read_manifest(fd, &m, &err) == 0);
	manifest_free(m);
	close(fd);
	image_store_uncache(store, 99); /* no such generation: nothing happens */
	free(b);
}

static void setup(void)
{
	CHECK(mkdtemp(root) != NULL);
}

static void teardown(void)
{
	CHECK(util_rm_rf(root) == 0);
}

TEST_MAIN(setup, test_lazy_release, test_round_trip, test_damage_detected, test_truncation,
          test_stream_round_trip, test_stream_damage, test_disk_full, test_reader_gone,
          test_manifest_text, test_store, test_store_uncache, test_memory_files, test_lazy,
          test_lazy_frame_table, teardown)
