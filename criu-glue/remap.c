/* Files the program holds open after unlinking them, while another hard link
 * to them remains (a file linked elsewhere, then unlinked under the name it
 * was opened by). CRIU dumps such a file only with --link-remap: it adds a
 * hard link "link_remap.N" beside the file's former name, names it in its
 * images (files.img, remap-fpath.img), and at restore links it to the former
 * name, opens it there and unlinks both. But after a dump that leaves the
 * tree running (every checkpoint) CRIU removes the link again, so no later
 * restore would find it (files-reg.c, CRIU 4.2.1: delete_link_remaps() in
 * cr_dump_finish()).
 *
 * So while the tree is still frozen (post-dump, the link there), the file's
 * content, owner and mode are kept among the images: link-remap-N.data per
 * file and one line per link in link-remaps ("N SIZE MODE UID GID DATA",
 * DATA the N whose data file holds the content: two links on one inode share
 * one copy). Before a restore the link is made anew from them, and after it
 * no link is left behind: CRIU removes it after a restore that succeeds, cryo
 * after one that fails and after a dump that does not leave the tree running
 * (where CRIU keeps it).
 *
 * What comes back is an fd on an unlinked file holding what the file held at
 * the checkpoint; its other hard links are files the program does not hold
 * open, which a restore leaves as they are. */
#include "cleanup.h"
#include "criu-proto.h"
#include "internal.h"
#include "pb.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REMAP_LIST   "link-remaps"
#define REMAP_GHOST  0x80000000u /* remap_id's flag in images without remap_type */
#define REMAP_PREFIX "link_remap."

static void remap_link_free(struct remap_link *k)
{
	free(k->path);
	free(k->orig_path);
}

static void links_clear(struct remap_links *l)
{
	for (size_t i = 0; i < l->n; i++)
		remap_link_free(&l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Adds a link (id, NULL paths) to l; returns it, or NULL without memory. */
static struct remap_link *links_add(struct remap_links *l, uint32_t id)
{
	struct remap_link *v = realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	l->v = v;
	v[l->n] = (struct remap_link){.id = id};
	return &v[l->n++];
}

static struct remap_link *links_find(struct remap_links *l, uint32_t id)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].id == id)
			return &l->v[i];
	return NULL;
}

/* Reads image name of images_dir whole; *buf NULL (and 0) if it is not
 * there. */
static int read_image(const char *images_dir, const char *name, char **buf, size_t *len,
                      struct cryo_error *err)
{
	char path[PATH_MAX];
	if (util_format_path(path, sizeof(path), "%s/%s", images_dir, name) < 0)
		return error_set(err, -ENAMETOOLONG, "path too long: %s/%s", images_dir, name);
	*buf = NULL;
	*len = 0;
	int r = util_read_file(path, buf, len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
	return 0;
}

/* The linked remaps of remap-fpath.img, as links with only their ids, and
 * the ids of the files they stand for in orig (same order). */
static int read_remaps(const char *images_dir, struct remap_links *l, uint32_t **orig,
                       struct cryo_error *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = read_image(images_dir, "remap-fpath.img", &buf, &len, err);
	if (r < 0 || !buf)
		return r;
	const uint8_t *b = (const uint8_t *)buf, *msg;
	size_t off = pb_entries_start(b, len), msg_len;
	while ((r = pb_next_entry(b, len, &off, &msg, &msg_len)) == 1) {
		const uint8_t *p = msg;
		struct pb_field f;
		uint64_t orig_id = 0, remap_id = 0, type = PB_REMAP_TYPE_LINKED;
		bool has_type = false;
		while ((r = pb_next(&p, msg + msg_len, &f)) == 1) {
			if (f.wire_type != 0)
				continue;
			if (f.number == PB_REMAP_FILE_PATH_ENTRY_ORIG_ID)
				orig_id = f.varint;
			else if (f.number == PB_REMAP_FILE_PATH_ENTRY_REMAP_ID)
				remap_id = f.varint;
			else if (f.number == PB_REMAP_FILE_PATH_ENTRY_REMAP_TYPE) {
				type = f.varint;
				has_type = true;
			}
		}
		if (r < 0)
			break;
		if (!has_type && (remap_id & REMAP_GHOST))
			type = PB_REMAP_TYPE_GHOST;
		if (type != PB_REMAP_TYPE_LINKED)
			continue;
		uint32_t *o = realloc(*orig, (l->n + 1) * sizeof(*o));
		if (!o)
			return error_set(err, -ENOMEM, "out of memory");
		*orig = o;
		o[l->n] = (uint32_t)orig_id;
		if (!links_add(l, (uint32_t)remap_id))
			return error_set(err, -ENOMEM, "out of memory");
	}
	if (r < 0)
		return error_set(err, r, "cannot read '%s/remap-fpath.img': %s", images_dir,
		                 strerror(-r));
	return 0;
}

/* The name of the regular file of id in files.img (buf, len), with a
 * leading slash, into out; -ENOENT if none. */
static int reg_file_name(const char *buf, size_t len, uint32_t id, char *out, size_t out_len)
{
	const uint8_t *b = (const uint8_t *)buf, *msg;
	size_t off = pb_entries_start(b, len), msg_len;
	int r;
	while ((r = pb_next_entry(b, len, &off, &msg, &msg_len)) == 1) {
		const uint8_t *p = msg;
		struct pb_field f;
		while (pb_next(&p, msg + msg_len, &f) == 1) {
			if (f.number != PB_FILE_ENTRY_REG || f.wire_type != 2)
				continue;
			const uint8_t *q = f.data;
			struct pb_field g;
			const uint8_t *name = NULL;
			size_t name_len = 0;
			bool match = false;
			while (pb_next(&q, f.data + f.len, &g) == 1) {
				if (g.number == PB_REG_FILE_ENTRY_ID && g.wire_type == 0)
					match = g.varint == id;
				else if (g.number == PB_REG_FILE_ENTRY_NAME && g.wire_type == 2) {
					name = g.data;
					name_len = g.len;
				}
			}
			if (!match || !name)
				continue;
			/* CRIU names a file from the root, with or without the
			 * leading slash. */
			if (name_len > 0 && name[0] == '/') {
				name++;
				name_len--;
			}
			if (name_len + 2 > out_len || memchr(name, '\0', name_len))
				return -ENAMETOOLONG;
			out[0] = '/';
			memcpy(out + 1, name, name_len);
			out[name_len + 1] = '\0';
			return 0;
		}
	}
	return r < 0 ? r : -ENOENT;
}

/* The links CRIU's images in images_dir name, with their paths and the
 * former names of their files. A link's name must be CRIU's link_remap.N,
 * N its id: cryo makes and removes files of that name only. */
static int read_links(const char *images_dir, struct remap_links *l, struct cryo_error *err)
{
	_cleanup_free_ uint32_t *orig = NULL;
	int r = read_remaps(images_dir, l, &orig, err);
	if (r < 0 || l->n == 0)
		return r;
	_cleanup_free_ char *files = NULL;
	size_t len;
	r = read_image(images_dir, "files.img", &files, &len, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < l->n; i++) {
		struct remap_link *k = &l->v[i];
		char path[PATH_MAX], orig_path[PATH_MAX], want[32];
		r = files ? reg_file_name(files, len, k->id, path, sizeof(path)) : -ENOENT;
		if (r == 0)
			r = reg_file_name(files, len, orig[i], orig_path, sizeof(orig_path));
		if (r < 0)
			return error_set(err, r == -ENOENT ? -EBADMSG : r,
			                 "CRIU's images in '%s' name no file for its link %" PRIu32
			                 " or the file it stands for: %s",
			                 images_dir, k->id, strerror(-r));
		snprintf(want, sizeof(want), REMAP_PREFIX "%" PRIu32, k->id);
		const char *base = strrchr(path, '/') + 1;
		if (strcmp(base, want) != 0)
			return error_set(err, -EBADMSG,
			                 "CRIU's images in '%s' name '%s' as link %" PRIu32
			                 ", which is not a name CRIU makes (%s)",
			                 images_dir, path, k->id, want);
		if (!(k->path = strdup(path)) || !(k->orig_path = strdup(orig_path)))
			return error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

/* Keeps the file behind link k: its copy into images_fd (unless the link
 * is on the inode of an earlier one of l), its line appended to list. */
static int capture_one(int images_fd, struct remap_links *l, size_t i, FILE *list,
                       struct cryo_error *err)
{
	struct remap_link *k = &l->v[i];
	_cleanup_close_ int src = open(k->path, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	struct stat st;
	int r = src < 0 || fstat(src, &st) < 0 ? -errno : 0;
	if (r == 0 && !S_ISREG(st.st_mode))
		r = -EINVAL;
	if (r < 0)
		return error_set(err, r,
		                 "cannot read '%s', CRIU's link to a file the program holds open "
		                 "unlinked: %s",
		                 k->path, strerror(-r));
	k->dev = st.st_dev;
	k->ino = st.st_ino;
	uint32_t data = k->id;
	for (size_t j = 0; j < i; j++)
		if (l->v[j].dev == st.st_dev && l->v[j].ino == st.st_ino)
			data = l->v[j].id;
	if (data == k->id) {
		char name[48];
		snprintf(name, sizeof(name), "link-remap-%" PRIu32 ".data", k->id);
		_cleanup_close_ int dst =
		    openat(images_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		r = dst < 0 ? -errno : util_copy_bytes(src, dst, (uint64_t)st.st_size);
		if (r < 0)
			return error_set(
			    err, r,
			    "cannot copy '%s' (a file the program holds open unlinked, "
			    "as %s) among the images: %s",
			    k->orig_path, k->path, strerror(-r));
	}
	fprintf(list, "%" PRIu32 " %" PRIu64 " %o %u %u %" PRIu32 "\n", k->id, (uint64_t)st.st_size,
	        (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid, data);
	return 0;
}

int remap_capture(const char *images_dir, struct remap_links *l, struct cryo_error *err)
{
	int r = read_links(images_dir, l, err);
	if (r < 0 || l->n == 0)
		return r;
	_cleanup_close_ int images_fd = open(images_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (images_fd < 0) {
		r = -errno;
		return error_set(err, r, "cannot open '%s': %s", images_dir, strerror(-r));
	}
	_cleanup_free_ char *text = NULL;
	size_t text_len = 0;
	_cleanup_fclose_ FILE *list = open_memstream(&text, &text_len);
	if (!list)
		return error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < l->n; i++) {
		r = capture_one(images_fd, l, i, list, err);
		if (r < 0)
			return r;
	}
	if (fflush(list) != 0)
		return error_set(err, -ENOMEM, "out of memory");
	r = util_write_file_at(images_fd, REMAP_LIST, text, text_len, 0600, false);
	if (r < 0)
		return error_set(err, r, "cannot write '%s/%s': %s", images_dir, REMAP_LIST,
		                 strerror(-r));
	return 0;
}

/* One line of link-remaps. */
struct remap_line {
	uint32_t id, data;
	uint64_t size;
	unsigned mode, uid, gid;
};

/* Makes link k anew as described by line, from data file or as a link to
 * an earlier one of l. */
static int recreate_one(int images_fd, const char *images_dir, struct remap_links *l,
                        struct remap_link *k, const struct remap_line *line, struct cryo_error *err)
{
	struct stat st;
	/* A link_remap.N left there (by a dump or a restore that was killed)
	 * is CRIU's, and stale: what was kept replaces it. */
	if (lstat(k->path, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			return error_set(
			    err, -EEXIST,
			    "cannot make '%s' anew (CRIU's link to a file the program "
			    "held open unlinked): something else of that name is there",
			    k->path);
		if (unlink(k->path) < 0 && errno != ENOENT) {
			int r = -errno;
			return error_set(err, r, "cannot remove a stale '%s': %s", k->path,
			                 strerror(-r));
		}
	}
	int r = 0;
	if (line->data != line->id) {
		struct remap_link *first = links_find(l, line->data);
		if (!first || !first->ino)
			return error_set(err, -EBADMSG,
			                 "'%s/%s' names link %" PRIu32
			                 " as holding the content of %" PRIu32
			                 ", which comes later",
			                 images_dir, REMAP_LIST, line->data, line->id);
		if (link(first->path, k->path) < 0 || lstat(k->path, &st) < 0)
			r = -errno;
	} else {
		char name[48];
		snprintf(name, sizeof(name), "link-remap-%" PRIu32 ".data", line->id);
		_cleanup_close_ int src = openat(images_fd, name, O_RDONLY | O_CLOEXEC);
		if (src < 0 || fstat(src, &st) < 0 || (uint64_t)st.st_size != line->size)
			return error_set(err, -EBADMSG,
			                 "the image's copy of '%s' (%s) is missing or of the wrong "
			                 "size",
			                 k->orig_path, name);
		_cleanup_close_ int dst =
		    open(k->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		r = dst < 0 ? -errno : util_copy_bytes(src, dst, line->size);
		if (dst >= 0 && r == 0 &&
		    (fchown(dst, line->uid, line->gid) < 0 || fchmod(dst, line->mode) < 0 ||
		     fstat(dst, &st) < 0))
			r = -errno;
		if (dst >= 0 && r < 0)
			unlink(k->path);
	}
	if (r < 0)
		return error_set(err, r,
		                 "cannot make '%s' anew (CRIU's link to '%s', a file the program "
		                 "held open unlinked): %s",
		                 k->path, k->orig_path, strerror(-r));
	k->dev = st.st_dev;
	k->ino = st.st_ino;
	return 0;
}

static int recreate_all(const char *images_dir, const char *text, struct remap_links *all,
                        struct remap_links *made, struct cryo_error *err)
{
	_cleanup_close_ int images_fd = open(images_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (images_fd < 0) {
		int r = -errno;
		return error_set(err, r, "cannot open '%s': %s", images_dir, strerror(-r));
	}
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		struct remap_line line;
		unsigned long long size;
		int at = -1;
		if (!nl ||
		    sscanf(p, "%" SCNu32 " %llu %o %u %u %" SCNu32 "%n", &line.id, &size,
		           &line.mode, &line.uid, &line.gid, &line.data, &at) != 6 ||
		    p + at != nl || line.mode > 07777)
			return error_set(err, -EBADMSG, "'%s/%s' has a bad line", images_dir,
			                 REMAP_LIST);
		line.size = size;
		p = nl + 1;
		struct remap_link *k = links_find(all, line.id);
		if (!k)
			return error_set(err, -EBADMSG,
			                 "'%s/%s' names link %" PRIu32
			                 ", which CRIU's images do not",
			                 images_dir, REMAP_LIST, line.id);
		int r = recreate_one(images_fd, images_dir, made, k, &line, err);
		if (r < 0)
			return r;
		struct remap_link *m = links_add(made, k->id);
		if (!m) {
			unlink(k->path);
			return error_set(err, -ENOMEM, "out of memory");
		}
		*m = *k;
		k->path = k->orig_path = NULL; /* made's now */
	}
	return 0;
}

int remap_recreate(const char *images_dir, struct remap_links *made, struct cryo_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = read_image(images_dir, REMAP_LIST, &text, &len, err);
	if (r < 0 || !text)
		return r;
	if (strlen(text) != len)
		return error_set(err, -EBADMSG, "'%s/%s' has a bad line", images_dir, REMAP_LIST);
	struct remap_links all = {0};
	r = read_links(images_dir, &all, err);
	if (r == 0)
		r = recreate_all(images_dir, text, &all, made, err);
	links_clear(&all);
	if (r < 0)
		remap_links_drop(made, false);
	return r;
}

/* Removes path if it is the inode of k. */
static void unlink_if_ours(const struct remap_link *k, const char *path)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == k->dev &&
	    st.st_ino == k->ino)
		unlink(path);
}

void remap_links_drop(struct remap_links *l, bool names_too)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct remap_link *k = &l->v[i];
		if (!k->ino || !k->path)
			continue;
		unlink_if_ours(k, k->path);
		if (!names_too)
			continue;
		char stand_in[PATH_MAX];
		unlink_if_ours(k, k->orig_path);
		if (util_format_path(stand_in, sizeof(stand_in), "%s.cr_link", k->orig_path) == 0)
			unlink_if_ours(k, stand_in);
	}
	links_clear(l);
}
