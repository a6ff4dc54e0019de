/* The regular files a program holds open for writing without O_APPEND (a
 * database, a state file rewritten in place): CRIU reopens each by its path
 * at a restore and refuses one whose size changed since the dump, so a
 * checkpoint copies them while CRIU holds the program frozen, and a restore
 * puts them back before CRIU runs. Files opened O_APPEND only grow, and CRIU
 * takes them as they are.
 *
 * A file is copied whole the first time; the supervisor keeps the hash of
 * each of its 4 KiB blocks (files_memory), and the next checkpoint, inside
 * the freeze, reads the file through memory kept for it, hashes each block
 * and writes only the blocks whose hash changed, as a delta stream against
 * the copy in the generation before (images/delta.h): the freeze then
 * grows with a pass over the file in memory and with what changed, not
 * with a copy of the whole file. */

#include "internal.h"
#include "cleanup.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The manifest key of each file: "INDEX SIZE MODE UID GID PATH", its copy
 * being file-INDEX.data among the images. */
#define HELD_FILE_KEY "held_file"

void files_capture_clear(struct files_capture *fc)
{
	for (size_t i = 0; i < fc->n; i++) {
		free(fc->files[i].path);
		if (fc->files[i].own_hashes)
			free(fc->files[i].hashes);
	}
	free(fc->files);
	fc->files = NULL;
	fc->n = 0;
	fc->total = 0;
}

/* The open flags of fd fdname of pid, from its fdinfo; -1 if unknown. */
static long fd_flags(int fdinfo_dir, const char *fdname)
{
	_cleanup_close_ int fd = openat(fdinfo_dir, fdname, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char buf[512];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	const char *p = strstr(buf, "flags:");
	return p ? strtol(p + 6, NULL, 8) : -1;
}

static uint64_t blocks_of(uint64_t size)
{
	return (size + DELTA_PAGE_SIZE - 1) / DELTA_PAGE_SIZE;
}

/* Reads len bytes of fd at off into buf; -EIO if the file ends before. */
static int read_full(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* The blocks of the file at path (device dev, inode ino) in the base
 * generation, if fc stores against one and it held that file. */
static struct held_blocks *base_blocks(const struct files_capture *fc, const char *path,
                                       const struct stat *st)
{
	struct files_memory *mem = fc->mem;
	if (!mem || !fc->base || mem->generation != fc->base || !mem->buf || !mem->buf2)
		return NULL;
	for (size_t i = 0; i < mem->n; i++) {
		struct held_blocks *b = &mem->files[i];
		if (b->dev == st->st_dev && b->ino == st->st_ino && !strcmp(b->path, path))
			return b;
	}
	return NULL;
}

/* Hashes blocks [first, end) of the file at src (size bytes) into hashes,
 * reading through buf (FILES_BUF_SIZE bytes). */
struct hash_part {
	int src;
	uint64_t size, first, end;
	uint8_t *buf;
	struct page_hash *hashes;
	int r;
};

static void *hash_part(void *arg)
{
	struct hash_part *p = arg;
	p->r = 0;
	for (uint64_t k = p->first; k < p->end && p->r == 0;) {
		uint64_t off = k * DELTA_PAGE_SIZE, stop = p->end * DELTA_PAGE_SIZE;
		stop = stop < p->size ? stop : p->size;
		size_t len = stop - off < FILES_BUF_SIZE ? (size_t)(stop - off) : FILES_BUF_SIZE;
		p->r = read_full(p->src, p->buf, len, off);
		for (size_t o = 0; o < len && p->r == 0; o += DELTA_PAGE_SIZE, k++)
			p->hashes[k] = delta_block_hash(
			    p->buf + o, len - o < DELTA_PAGE_SIZE ? len - o : DELTA_PAGE_SIZE);
	}
	return NULL;
}

/* Past this size a file's blocks are hashed by two threads, each reading
 * half of it: the copy out of the page cache is most of the time
 * (scripts/bench --held-file, 256 MiB, 1% changed: frozen 49 ms, median of
 * 3, against 68 in one thread hashing without AVX2; 17 with the file not
 * held). */
#define FILES_TWO_THREADS (8u << 20)

/* Writes f (open at src) into dst as the blocks that differ from its copy
 * in the base (b): first each block's hash (kept for the next checkpoint),
 * read through the memory kept for it, then the blocks whose hash changed
 * read again and written. */
static int copy_changed(struct files_memory *mem, struct held_file *f, struct held_blocks *b,
                        int src, int dst)
{
	uint64_t blocks = blocks_of(f->size), base_blocks = blocks_of(b->size);
	if (b->next_cap < blocks) {
		/* Only when the file grew: with room to grow further. */
		size_t cap = (size_t)(blocks + blocks / 4 + 16);
		struct page_hash *n = realloc(b->next, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		b->next = n;
		b->next_cap = cap;
	}
	uint64_t half = f->size >= FILES_TWO_THREADS ? blocks / 2 : blocks;
	struct hash_part parts[2] = {{src, f->size, 0, half, mem->buf, b->next, 0},
	                             {src, f->size, half, blocks, mem->buf2, b->next, 0}};
	pthread_t t;
	bool two = half < blocks && pthread_create(&t, NULL, hash_part, &parts[1]) == 0;
	hash_part(&parts[0]);
	if (two)
		pthread_join(t, NULL);
	else
		hash_part(&parts[1]);
	int r = parts[0].r < 0 ? parts[0].r : parts[1].r;

	char base_name[32];
	snprintf(base_name, sizeof(base_name), "file-%zu.data", b->index);
	struct delta_writer w;
	if (r == 0)
		r = delta_writer_start(&w, dst, mem->out, FILES_BUF_SIZE, f->size, base_name);
	for (uint64_t k = 0; k < blocks && r == 0;) {
		/* The same block: as long, and of the same hash. */
		uint64_t base_len = k < base_blocks ? b->size - k * DELTA_PAGE_SIZE : 0;
		uint64_t len = f->size - k * DELTA_PAGE_SIZE;
		bool same = (base_len < DELTA_PAGE_SIZE ? base_len : DELTA_PAGE_SIZE) ==
		                (len < DELTA_PAGE_SIZE ? len : DELTA_PAGE_SIZE) &&
		            b->hashes[k].low == b->next[k].low &&
		            b->hashes[k].high == b->next[k].high;
		if (same) {
			r = delta_writer_copy(&w, k++);
			continue;
		}
		/* A run of changed blocks, read at once (as much as fits). */
		uint64_t e = k + 1, most = k + FILES_BUF_SIZE / DELTA_PAGE_SIZE;
		while (e < blocks && e < most &&
		       (e >= base_blocks || b->hashes[e].low != b->next[e].low ||
		        b->hashes[e].high != b->next[e].high))
			e++;
		uint64_t off = k * DELTA_PAGE_SIZE, stop = e * DELTA_PAGE_SIZE;
		size_t bytes = (size_t)((stop < f->size ? stop : f->size) - off);
		r = read_full(src, mem->buf, bytes, off);
		for (size_t o = 0; o < bytes && r == 0; o += DELTA_PAGE_SIZE)
			r = delta_writer_literal(&w, mem->buf + o,
			                         bytes - o < DELTA_PAGE_SIZE ? bytes - o
			                                                     : DELTA_PAGE_SIZE);
		k = e;
	}
	if (r == 0)
		r = delta_writer_end(&w);
	if (r < 0)
		return r;
	f->stored = w.stored;
	f->delta = true;
	f->base_index = b->index;
	f->hashes = b->next;
	delta_blocks_digest(b->next, blocks, f->digest);
	return 0;
}

/* Whether path is at or under one of the --files-skip paths of policy. */
static bool skipped(const struct supervisor_config *policy, const char *path)
{
	for (size_t i = 0; policy && i < policy->n_files_skip; i++) {
		const char *skip = policy->files_skip[i];
		size_t len = strlen(skip);
		while (len > 0 && skip[len - 1] == '/')
			len--;
		if (!strncmp(path, skip, len) && (path[len] == '\0' || path[len] == '/'))
			return true;
	}
	return false;
}

/* Adds the file proc (a /proc/PID/fd/N or /proc/PID/map_files/A-B link)
 * names if it is a file to copy and not added yet. */
static int capture_file(struct files_capture *fc, const char *proc, struct cryo_error *err)
{
	char path[PATH_MAX];
	_cleanup_close_ int src = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	/* Deleted files CRIU keeps itself (in its images). */
	if (src < 0 || fstat(src, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0)
		return 0;
	for (size_t i = 0; i < fc->n; i++)
		if (fc->files[i].dev == st.st_dev && fc->files[i].ino == st.st_ino)
			return 0;
	ssize_t n = readlink(proc, path, sizeof(path) - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	/* Unlinked while open but linked elsewhere (its path now names
	 * another file, or none): criu-glue keeps it (remap.c). */
	struct stat now;
	if (stat(path, &now) < 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino)
		return 0;
	if (skipped(fc->policy, path))
		return 0;
	if (path[0] != '/' || strchr(path, '\n'))
		return error_set(err, -EINVAL,
		                 "the program holds a file open for writing whose path cryo "
		                 "cannot record ('%s')",
		                 path);
	uint64_t size = (uint64_t)st.st_size;
	if (fc->total + size > fc->max) {
		char a[32], b[32];
		return error_set(err, -EFBIG,
		                 "the program holds '%s' (%s) open for writing, and the files a "
		                 "checkpoint copies would pass their limit of %s (raise it with "
		                 "--files-max SIZE)",
		                 path, util_format_bytes(size, a, sizeof(a)),
		                 util_format_bytes(fc->max, b, sizeof(b)));
	}
	struct held_file *f = realloc(fc->files, (fc->n + 1) * sizeof(*f));
	if (!f)
		return error_set(err, -ENOMEM, "out of memory");
	fc->files = f;
	f = &fc->files[fc->n];
	*f = (struct held_file){.dev = st.st_dev,
	                        .ino = st.st_ino,
	                        .size = size,
	                        .mode = st.st_mode & 07777,
	                        .uid = st.st_uid,
	                        .gid = st.st_gid,
	                        .path = strdup(path)};
	if (!f->path)
		return error_set(err, -ENOMEM, "out of memory");
	fc->n++;
	fc->total += size;
	if (!fc->images)
		return 0; /* listed only */
	char name[32];
	snprintf(name, sizeof(name), "file-%zu.data", fc->n - 1);
	_cleanup_close_ int dst =
	    openat(fc->images_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	struct held_blocks *b = base_blocks(fc, path, &st);
	int r = dst < 0 ? -errno
	        : b     ? copy_changed(fc->mem, f, b, src, dst)
	                : util_copy_bytes(src, dst, size);
	if (r == 0 && !b)
		f->stored = size;
	if (r < 0)
		return error_set(err, r, "cannot copy '%s' into '%s/%s': %s", path, fc->images,
		                 name, strerror(-r));
	return 0;
}

/* Adds fd fdname of pid if it is open for writing, not O_APPEND. */
static int capture_fd(struct files_capture *fc, pid_t pid, int fdinfo_dir, const char *fdname,
                      struct cryo_error *err)
{
	long flags = fd_flags(fdinfo_dir, fdname);
	if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY || (flags & O_APPEND))
		return 0;
	char proc[32 + NAME_MAX];
	snprintf(proc, sizeof(proc), "/proc/%d/fd/%s", pid, fdname);
	return capture_file(fc, proc, err);
}

/* Adds the files pid maps shared and writable, whether or not it still
 * holds an fd on them: CRIU maps each again by its path at a restore, and
 * the program's memory of it is the file's content (SQLite's -shm, LMDB's
 * data file, a program that mapped a file and closed its fd). */
static int capture_maps(struct files_capture *fc, pid_t pid, struct cryo_error *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return 0; /* gone: it has nothing mapped */
	char line[PATH_MAX + 128];
	int r = 0;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		unsigned long start, end, inode;
		char perms[8];
		int at = -1;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &start, &end, perms, &inode, &at) !=
		        4 ||
		    at < 0 || inode == 0 || line[at] != '/' || strlen(perms) < 4 ||
		    perms[1] != 'w' || perms[3] != 's')
			continue;
		char proc[96];
		snprintf(proc, sizeof(proc), "/proc/%d/map_files/%lx-%lx", pid, start, end);
		r = capture_file(fc, proc, err);
	}
	return r;
}

int files_capture(void *data, struct cryo_error *err)
{
	struct files_capture *fc = data;
	if (fc->policy && fc->policy->files == FILES_NONE)
		return 0;
	_cleanup_free_ pid_t *pids = NULL;
	size_t n_pids = 0;
	int r = util_proc_tree(fc->root, &pids, &n_pids);
	if (r < 0)
		return error_set(err, r, "cannot list the program's processes: %s", strerror(-r));
	_cleanup_close_ int images_fd =
	    fc->images ? open(fc->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (fc->images && images_fd < 0) {
		r = -errno;
		return error_set(err, r, "cannot open '%s': %s", fc->images, strerror(-r));
	}
	fc->images_fd = images_fd;
	for (size_t i = 0; i < n_pids && r == 0; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fdinfo", pids[i]);
		_cleanup_closedir_ DIR *d = opendir(path);
		struct dirent *de;
		while (r == 0 && d && (de = readdir(d)))
			if (de->d_name[0] != '.')
				r = capture_fd(fc, pids[i], dirfd(d), de->d_name, err);
		if (r == 0)
			r = capture_maps(fc, pids[i], err);
	}
	fc->images_fd = -1;
	return r;
}

int files_capture_finish(struct files_capture *fc, bool *deltas, struct cryo_error *err)
{
	*deltas = false;
	struct files_memory *mem = fc->mem;
	if (!mem || fc->n == 0)
		return 0;
	if (!mem->buf) {
		/* Touched now, outside the freeze, and kept. */
		mem->buf = malloc(FILES_BUF_SIZE);
		mem->buf2 = malloc(FILES_BUF_SIZE);
		mem->out = malloc(FILES_BUF_SIZE);
		if (!mem->buf || !mem->buf2 || !mem->out) {
			files_memory_free(mem);
			return error_set(err, -ENOMEM, "out of memory");
		}
		memset(mem->buf, 0, FILES_BUF_SIZE);
		memset(mem->buf2, 0, FILES_BUF_SIZE);
		memset(mem->out, 0, FILES_BUF_SIZE);
	}
	_cleanup_close_ int images_fd = -1;
	for (size_t i = 0; i < fc->n; i++) {
		struct held_file *f = &fc->files[i];
		if (f->delta) {
			*deltas = true;
			continue;
		}
		char name[32];
		snprintf(name, sizeof(name), "file-%zu.data", i);
		if (images_fd < 0 &&
		    (images_fd = open(fc->images, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			return error_set(err, -errno, "cannot open '%s': %m", fc->images);
		_cleanup_close_ int fd = openat(images_fd, name, O_RDONLY | O_CLOEXEC);
		uint64_t blocks = blocks_of(f->size);
		f->hashes = malloc((blocks ? blocks : 1) * sizeof(*f->hashes));
		f->own_hashes = true;
		int r = !f->hashes ? -ENOMEM
		        : fd < 0   ? -errno
		                   : delta_file_digest(fd, f->size, mem->buf, FILES_BUF_SIZE,
		                                       f->hashes, f->digest);
		if (r < 0)
			return error_set(err, r, "cannot read '%s/%s': %s", fc->images, name,
			                 strerror(-r));
	}
	return 0;
}

static void blocks_clear(struct held_blocks *b)
{
	free(b->path);
	free(b->hashes);
	free(b->next);
	*b = (struct held_blocks){0};
}

void files_memory_forget(struct files_memory *mem)
{
	for (size_t i = 0; i < mem->n; i++)
		blocks_clear(&mem->files[i]);
	free(mem->files);
	mem->files = NULL;
	mem->n = 0;
	mem->generation = 0;
}

void files_memory_free(struct files_memory *mem)
{
	files_memory_forget(mem);
	free(mem->buf);
	free(mem->buf2);
	free(mem->out);
	mem->buf = mem->buf2 = mem->out = NULL;
}

void files_memory_take(struct files_memory *mem, struct files_capture *fc, uint64_t gen)
{
	struct held_blocks *files = calloc(fc->n ? fc->n : 1, sizeof(*files));
	size_t n = 0;
	for (size_t i = 0; files && i < fc->n; i++) {
		struct held_file *f = &fc->files[i];
		struct held_blocks *b = NULL;
		for (size_t k = 0; f->delta && k < mem->n && !b; k++)
			if (mem->files[k].path && mem->files[k].index == f->base_index)
				b = &mem->files[k];
		if (b) {
			/* Its blocks now are those filled in by the capture. */
			struct held_blocks nb = *b;
			nb.hashes = b->next;
			nb.cap = b->next_cap;
			nb.next = b->hashes;
			nb.next_cap = b->cap;
			nb.size = f->size;
			nb.index = i;
			*b = (struct held_blocks){0};
			files[n++] = nb;
		} else if (f->own_hashes && f->hashes) {
			char *path = strdup(f->path);
			if (!path)
				continue;
			/* Room for the next capture's hashes, touched now rather
			 * than inside its freeze. */
			size_t cap = (size_t)blocks_of(f->size);
			struct page_hash *next = malloc((cap ? cap : 1) * sizeof(*next));
			if (!next) {
				free(path);
				continue;
			}
			memset(next, 0, (cap ? cap : 1) * sizeof(*next));
			files[n++] = (struct held_blocks){.path = path,
			                                  .dev = f->dev,
			                                  .ino = f->ino,
			                                  .size = f->size,
			                                  .index = i,
			                                  .hashes = TAKE_PTR(f->hashes),
			                                  .cap = cap,
			                                  .next = next,
			                                  .next_cap = cap};
			f->own_hashes = false;
		}
	}
	files_memory_forget(mem);
	if (!files)
		return; /* the next checkpoint copies every file whole */
	mem->files = files;
	mem->n = n;
	mem->generation = gen;
}

int files_describe(const struct files_capture *fc, struct manifest *m)
{
	for (size_t i = 0; i < fc->n; i++) {
		const struct held_file *f = &fc->files[i];
		int r =
		    manifest_addf(m, HELD_FILE_KEY, "%zu %" PRIu64 " %o %u %u %s", i, f->size,
		                  (unsigned)f->mode, (unsigned)f->uid, (unsigned)f->gid, f->path);
		if (r == 0 && f->delta) {
			char hex[33];
			for (int k = 0; k < 16; k++)
				snprintf(hex + 2 * k, 3, "%02x", f->digest[k]);
			r = manifest_addf(m, "file_delta", "file-%zu.data %" PRIu64 " %s", i,
			                  f->size, hex);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int files_parse(const char *value, struct held_file *ret, size_t *index)
{
	unsigned long long idx, size;
	unsigned mode, uid, gid;
	int at = -1;
	if (sscanf(value, "%llu %llu %o %u %u %n", &idx, &size, &mode, &uid, &gid, &at) != 5 ||
	    at < 0 || value[at] != '/')
		return -EBADMSG;
	*index = (size_t)idx;
	*ret = (struct held_file){
	    .size = size, .mode = mode & 07777, .uid = uid, .gid = gid, .path = (char *)value + at};
	return 0;
}

/* SQLite's rollback journal or write-ahead log beside a database put back,
 * which the checkpoint did not hold: written after the checkpoint (the
 * program died in or after a later transaction). Left there, SQLite would
 * roll it onto the database as it was at the checkpoint; it is moved aside
 * (NAME.cryo-stale), not deleted. */
static void set_aside_stale(const struct manifest *m, const char *path)
{
	static const char *const suffixes[] = {"-journal", "-wal"};
	for (size_t k = 0; k < ARRAY_SIZE(suffixes); k++) {
		char side[PATH_MAX], aside[PATH_MAX + 16];
		if (util_format_path(side, sizeof(side), "%s%s", path, suffixes[k]) < 0)
			continue;
		bool held = false;
		for (size_t i = 0; i < m->n_entries && !held; i++) {
			struct held_file f;
			size_t idx;
			held = !strcmp(m->keys[i], HELD_FILE_KEY) &&
			       files_parse(m->values[i], &f, &idx) == 0 && !strcmp(f.path, side);
		}
		struct stat st;
		if (held || lstat(side, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		snprintf(aside, sizeof(aside), "%s.cryo-stale", side);
		rename(side, aside);
	}
}

/* Puts one file back, in place: the same inode where the file is still
 * there, for programs that check that their file was not replaced (SQLite
 * does, and calls a database of another inode read-only). A crash halfway
 * loses nothing: what the file held is from after the checkpoint, and the
 * next restore writes it again. */
static int put_back(const struct held_file *f, int src, struct cryo_error *err)
{
	_cleanup_close_ int dst =
	    open(f->path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, f->mode);
	int r = dst < 0 ? -errno : util_copy_bytes(src, dst, f->size);
	if (r == 0 && (ftruncate(dst, (off_t)f->size) < 0 || fchown(dst, f->uid, f->gid) < 0 ||
	               fchmod(dst, f->mode) < 0 || fsync(dst) < 0))
		r = -errno;
	if (r < 0)
		return error_set(err, r, "cannot put back '%s' as it was at the checkpoint: %s",
		                 f->path, strerror(-r));
	return 0;
}

int files_restore(const struct manifest *m, const char *images, struct cryo_error *err)
{
	_cleanup_close_ int images_fd = -1;
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], HELD_FILE_KEY) != 0)
			continue;
		struct held_file f;
		size_t idx;
		if (files_parse(m->values[i], &f, &idx) < 0)
			return error_set(err, -EBADMSG,
			                 "the image's manifest has a bad line '%s %s'",
			                 HELD_FILE_KEY, m->values[i]);
		if (images_fd < 0 &&
		    (images_fd = open(images, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			int r = -errno;
			return error_set(err, r, "cannot open '%s': %s", images, strerror(-r));
		}
		char name[32];
		snprintf(name, sizeof(name), "file-%zu.data", idx);
		_cleanup_close_ int src = openat(images_fd, name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (src < 0 || fstat(src, &st) < 0 || (uint64_t)st.st_size != f.size)
			return error_set(err, -EBADMSG,
			                 "the image's copy of '%s' (%s) is missing or of the wrong "
			                 "size",
			                 f.path, name);
		int r = put_back(&f, src, err);
		if (r < 0)
			return r;
		set_aside_stale(m, f.path);
	}
	return 0;
}
