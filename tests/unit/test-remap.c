/* criu-glue's keeping of files unlinked while open that have another hard
 * link (remap.c), on CRIU images written here by hand (files.img and
 * remap-fpath.img, as CRIU 4.2.1 writes them for --link-remap) and real
 * link_remap.N links in a directory of the test's own: what a dump keeps,
 * the links a restore makes anew, and what is removed after each (only
 * CRIU's links, only on the inodes cryo saw or made). */
#include "cleanup.h"
#include "internal.h"
#include "pb.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_COMMON_MAGIC 0x54564319u

struct buf {
	uint8_t b[4096];
	size_t n;
};

static void put_varint(struct buf *b, uint64_t v)
{
	b->n += pb_put_varint(b->b + b->n, v);
}

static void put_bytes(struct buf *b, uint32_t field, const void *data, size_t len)
{
	put_varint(b, (uint64_t)field << 3 | 2);
	put_varint(b, len);
	memcpy(b->b + b->n, data, len);
	b->n += len;
}

static void put_uint(struct buf *b, uint32_t field, uint64_t v)
{
	put_varint(b, (uint64_t)field << 3);
	put_varint(b, v);
}

/* Appends one entry ([u32 size][message]) to an image's body. */
static void put_entry(struct buf *img, const struct buf *msg)
{
	uint32_t n = (uint32_t)msg->n;
	memcpy(img->b + img->n, &n, 4);
	memcpy(img->b + img->n + 4, msg->b, msg->n);
	img->n += 4 + msg->n;
}

static void image_start(struct buf *img)
{
	uint32_t m[2] = {IMG_COMMON_MAGIC, 0x12345678};
	memcpy(img->b, m, 8);
	img->n = 8;
}

/* A file_entry of a regular file id named name (as CRIU does, from the root
 * with a leading slash). */
static void put_reg_file(struct buf *img, uint32_t id, const char *name)
{
	struct buf reg = {0}, fe = {0};
	put_uint(&reg, 1, id);                  /* reg_file_entry.id */
	put_bytes(&reg, 6, name, strlen(name)); /* reg_file_entry.name */
	put_uint(&fe, 1, 1);                    /* file_entry.type = REG */
	put_uint(&fe, 2, id);                   /* file_entry.id */
	put_bytes(&fe, 3, reg.b, reg.n);        /* file_entry.reg */
	put_entry(img, &fe);
}

static void put_remap(struct buf *img, uint32_t orig, uint32_t remap, uint32_t type)
{
	struct buf e = {0};
	put_uint(&e, 1, orig);
	put_uint(&e, 2, remap);
	put_uint(&e, 3, type);
	put_entry(img, &e);
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	CHECK(util_write_file_atomic(path, data, len) == 0);
}

static char *read_text(const char *dir, const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *text = NULL;
	size_t len;
	return util_read_file(path, &text, &len) == 0 ? text : NULL;
}

static bool exists(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0;
}

static ino_t inode(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0 ? st.st_ino : 0;
}

/* A program's directory (prog) and an images directory (img). */
struct scene {
	char prog[64], img[64];
};

static void scene_start(struct scene *s)
{
	snprintf(s->prog, sizeof(s->prog), "/tmp/cryo-test-remap-XXXXXX");
	snprintf(s->img, sizeof(s->img), "/tmp/cryo-test-remap-img-XXXXXX");
	CHECK(mkdtemp(s->prog) != NULL);
	CHECK(mkdtemp(s->img) != NULL);
}

static void scene_end(struct scene *s)
{
	util_rm_rf(s->prog);
	util_rm_rf(s->img);
}

/* CRIU's images for two fds on one file, unlinked as prog/data with
 * prog/data.link left (links 7 and 9), and one ghost file (not cryo's
 * business); link 7's name is link7 (CRIU's, unless a test forges one). */
static void write_images(const struct scene *s, const char *link7)
{
	char name[PATH_MAX];
	struct buf files, remaps;
	image_start(&files);
	image_start(&remaps);
	snprintf(name, sizeof(name), "%s/data", s->prog);
	put_reg_file(&files, 5, name);
	put_reg_file(&files, 6, name);
	put_reg_file(&files, 8, "/tmp/ghost");
	snprintf(name, sizeof(name), "%s/%s", s->prog, link7);
	put_reg_file(&files, 7, name);
	snprintf(name, sizeof(name), "%s/link_remap.9", s->prog);
	put_reg_file(&files, 9, name);
	put_remap(&remaps, 5, 7, 0);
	put_remap(&remaps, 6, 9, 0);
	put_remap(&remaps, 8, 1, 1);
	write_file(s->img, "files.img", files.b, files.n);
	write_file(s->img, "remap-fpath.img", remaps.b, remaps.n);
}

/* prog/data.link holding "hello world", mode 0640, and CRIU's two links on
 * it, as during a dump. */
static void write_linked_file(const struct scene *s)
{
	char a[PATH_MAX], b[PATH_MAX];
	write_file(s->prog, "data.link", "hello world", 11);
	snprintf(a, sizeof(a), "%s/data.link", s->prog);
	CHECK(chmod(a, 0640) == 0);
	snprintf(b, sizeof(b), "%s/link_remap.7", s->prog);
	CHECK(link(a, b) == 0);
	snprintf(b, sizeof(b), "%s/link_remap.9", s->prog);
	CHECK(link(a, b) == 0);
}

static void test_kept_and_made_anew(void)
{
	struct scene s;
	scene_start(&s);
	write_images(&s, "link_remap.7");
	write_linked_file(&s);
	struct remap_links l = {0};
	struct cryo_error err = {{0}};
	/* The dump: one copy for the two links on one inode. */
	CHECK(remap_capture(s.img, &l, &err) == 0);
	CHECK(l.n == 2);
	_cleanup_free_ char *list = read_text(s.img, "link-remaps");
	char want[128];
	snprintf(want, sizeof(want), "7 11 640 %u %u 7\n9 11 640 %u %u 7\n", getuid(), getgid(),
	         getuid(), getgid());
	CHECK(list && strcmp(list, want) == 0);
	_cleanup_free_ char *copy = read_text(s.img, "link-remap-7.data");
	CHECK(copy && strcmp(copy, "hello world") == 0);
	CHECK(!exists(s.img, "link-remap-9.data"));
	/* After it, CRIU's links go; the file's other name stays. */
	remap_links_drop(&l, false);
	CHECK(l.n == 0 && !l.v);
	CHECK(!exists(s.prog, "link_remap.7") && !exists(s.prog, "link_remap.9"));
	write_file(s.prog, "data.link", "changed after", 13);

	/* The restore: both links made anew, on one inode, with the kept
	 * content and mode. */
	struct remap_links made = {0};
	CHECK(remap_recreate(s.img, &made, &err) == 0);
	CHECK(made.n == 2);
	_cleanup_free_ char *back = read_text(s.prog, "link_remap.7");
	CHECK(back && strcmp(back, "hello world") == 0);
	CHECK(inode(s.prog, "link_remap.7") == inode(s.prog, "link_remap.9"));
	CHECK(inode(s.prog, "link_remap.7") != inode(s.prog, "data.link"));
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/link_remap.7", s.prog);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);
	/* A restore that failed halfway: CRIU linked the file to its former
	 * name and to a stand-in; a file of the program's own is there too. */
	char from[PATH_MAX];
	snprintf(from, sizeof(from), "%s/link_remap.7", s.prog);
	snprintf(path, sizeof(path), "%s/data", s.prog);
	CHECK(link(from, path) == 0);
	snprintf(path, sizeof(path), "%s/data.cr_link", s.prog);
	CHECK(link(from, path) == 0);
	write_file(s.prog, "data2.cr_link", "mine", 4);
	remap_links_drop(&made, true);
	CHECK(!exists(s.prog, "link_remap.7") && !exists(s.prog, "link_remap.9"));
	CHECK(!exists(s.prog, "data") && !exists(s.prog, "data.cr_link"));
	CHECK(exists(s.prog, "data2.cr_link"));
	_cleanup_free_ char *other = read_text(s.prog, "data.link");
	CHECK(other && strcmp(other, "changed after") == 0);
	scene_end(&s);
}

/* Only the inode seen is removed: a file that took a link's name since is
 * left, and so is the file's former name after a dump. */
static void test_drop_only_what_was_seen(void)
{
	struct scene s;
	scene_start(&s);
	write_images(&s, "link_remap.7");
	write_linked_file(&s);
	struct remap_links l = {0};
	struct cryo_error err = {{0}};
	CHECK(remap_capture(s.img, &l, &err) == 0);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/link_remap.7", s.prog);
	CHECK(unlink(path) == 0);
	write_file(s.prog, "link_remap.7", "other", 5);
	snprintf(path, sizeof(path), "%s/data", s.prog);
	char from[PATH_MAX];
	snprintf(from, sizeof(from), "%s/data.link", s.prog);
	CHECK(link(from, path) == 0);
	remap_links_drop(&l, false);
	CHECK(exists(s.prog, "link_remap.7") && !exists(s.prog, "link_remap.9"));
	CHECK(exists(s.prog, "data"));
	scene_end(&s);
}

/* A name in the images that is not CRIU's link_remap.N is never read,
 * made or removed. */
static void test_foreign_name_refused(void)
{
	struct scene s;
	scene_start(&s);
	write_images(&s, "precious");
	write_linked_file(&s);
	write_file(s.prog, "precious", "keep me", 7);
	struct remap_links l = {0};
	struct cryo_error err = {{0}};
	CHECK(remap_capture(s.img, &l, &err) == -EBADMSG);
	CHECK(strstr(err.msg, "which is not a name CRIU makes (link_remap.7)") != NULL);
	remap_links_drop(&l, true);
	write_file(s.img, "link-remaps", "7 7 600 0 0 7\n", 14);
	write_file(s.img, "link-remap-7.data", "evil!!!", 7);
	struct remap_links made = {0};
	CHECK(remap_recreate(s.img, &made, &err) == -EBADMSG);
	CHECK(made.n == 0);
	_cleanup_free_ char *kept = read_text(s.prog, "precious");
	CHECK(kept && strcmp(kept, "keep me") == 0);
	scene_end(&s);
}

/* A kept copy missing, or a bad line: the restore is refused in one line,
 * and nothing it made is left. A stale link of CRIU's is replaced. */
static void test_bad_or_stale(void)
{
	struct scene s;
	scene_start(&s);
	write_images(&s, "link_remap.7");
	struct remap_links made = {0};
	struct cryo_error err = {{0}};
	write_file(s.img, "link-remaps", "7 11 640 0 0 7\n9 11 640 0 0 9\n", 30);
	write_file(s.img, "link-remap-7.data", "hello world", 11);
	CHECK(remap_recreate(s.img, &made, &err) == -EBADMSG);
	CHECK(strstr(err.msg, "(link-remap-9.data) is missing or of the wrong size") != NULL);
	CHECK(made.n == 0 && !exists(s.prog, "link_remap.7") && !exists(s.prog, "link_remap.9"));
	write_file(s.img, "link-remaps", "7 11 640 0 0\n", 13);
	CHECK(remap_recreate(s.img, &made, &err) == -EBADMSG);
	CHECK(strstr(err.msg, "has a bad line") != NULL);
	write_file(s.img, "link-remaps", "7 11 640 0 0 7\n", 15);
	write_file(s.prog, "link_remap.7", "stale", 5);
	CHECK(remap_recreate(s.img, &made, &err) == 0);
	_cleanup_free_ char *back = read_text(s.prog, "link_remap.7");
	CHECK(back && strcmp(back, "hello world") == 0);
	remap_links_drop(&made, false);
	CHECK(!exists(s.prog, "link_remap.7"));
	scene_end(&s);
}

/* Images without link remaps: nothing to keep, nothing to make. */
static void test_none(void)
{
	struct scene s;
	scene_start(&s);
	struct remap_links l = {0};
	struct cryo_error err = {{0}};
	CHECK(remap_capture(s.img, &l, &err) == 0 && l.n == 0);
	CHECK(!exists(s.img, "link-remaps"));
	CHECK(remap_recreate(s.img, &l, &err) == 0 && l.n == 0);
	scene_end(&s);
}

TEST_MAIN(test_kept_and_made_anew, test_drop_only_what_was_seen, test_foreign_name_refused,
          test_bad_or_stale, test_none)
