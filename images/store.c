#include "store.h"
#include "delta.h"
#include "cleanup.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

int image_store_path(const char *dir, uint64_t gen, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/gen-%012" PRIu64 IMAGE_STORE_SUFFIX, dir, gen);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

#define DAMAGED_SUFFIX ".damaged"

/* Parses "gen-N.cryo" (exact), with suffix "gen-N.cryo<suffix>", or with
 * suffix NULL and any_suffix, "gen-N.cryo<anything>". */
static int parse_name(const char *name, bool any_suffix, const char *suffix, uint64_t *gen)
{
	if (strncmp(name, "gen-", 4) != 0)
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(name + 4, &end, 10);
	if (errno || end == name + 4 ||
	    strncmp(end, IMAGE_STORE_SUFFIX, strlen(IMAGE_STORE_SUFFIX)))
		return -EINVAL;
	const char *rest = end + strlen(IMAGE_STORE_SUFFIX);
	if (!any_suffix && strcmp(rest, suffix ? suffix : "") != 0)
		return -EINVAL;
	*gen = v;
	return 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int scan(const char *dir, bool any_suffix, const char *suffix, uint64_t **ret, size_t *ret_n)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT) {
			*ret = NULL;
			*ret_n = 0;
			return 0;
		}
		return -errno;
	}
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t g;
		if (parse_name(de->d_name, any_suffix, suffix, &g) < 0)
			continue;
		uint64_t *ng = realloc(gens, (n + 1) * sizeof(uint64_t));
		if (!ng)
			return -ENOMEM;
		gens = ng;
		gens[n++] = g;
	}
	if (n)
		qsort(gens, n, sizeof(uint64_t), compare_u64);
	*ret = TAKE_PTR(gens);
	*ret_n = n;
	return 0;
}

int image_store_incoming_path(const char *dir, uint64_t gen, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/.gen-%012" PRIu64 IMAGE_STORE_SUFFIX ".incoming", dir, gen);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int image_store_dump_path(const char *dir, uint64_t gen, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/.dump-%" PRIu64, dir, gen);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void image_store_sweep(const char *dir)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		const char *n = de->d_name;
		size_t l = strlen(n);
		bool tmp = !strncmp(n, "gen-", 4) && l > 4 && !strcmp(n + l - 4, ".tmp");
		bool incoming = !strncmp(n, ".gen-", 5) && l > 9 && !strcmp(n + l - 9, ".incoming");
		if (tmp || incoming) {
			unlinkat(dirfd(d), n, 0);
		} else if (!strncmp(n, ".dump-", 6)) {
			char path[PATH_MAX];
			snprintf(path, sizeof(path), "%s/%s", dir, n);
			util_rm_rf(path);
		}
	}
}

int image_store_list(const char *dir, uint64_t **ret, size_t *ret_n)
{
	return scan(dir, false, NULL, ret, ret_n);
}

int image_store_list_damaged(const char *dir, uint64_t **ret, size_t *ret_n)
{
	return scan(dir, false, DAMAGED_SUFFIX, ret, ret_n);
}

int image_store_next_generation(const char *dir, uint64_t *ret)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n;
	int r = scan(dir, true, NULL, &gens, &n);
	if (r < 0)
		return r;
	*ret = n ? gens[n - 1] + 1 : 1;
	return 0;
}

/* Fault injection for tests, in SQLite's manner: CRYO_INJECT_STORE_FAULT=
 * "enospc:N" makes this process's Nth commit fail with ENOSPC after its data
 * was written, as a disk that fills at the last moment would. */
static int injected_fault(void)
{
	static unsigned commits;
	const char *spec = getenv("CRYO_INJECT_STORE_FAULT");
	commits++;
	if (!spec || strncmp(spec, "enospc:", 7) != 0)
		return 0;
	return strtoul(spec + 7, NULL, 10) == commits ? -ENOSPC : 0;
}

int image_store_commit(const char *dir, uint64_t gen, const char *images_dir,
                       const struct mem_file *mem, size_t n_mem, struct manifest *m, int level,
                       int workers, struct image_writer *w, struct image_write_stats *stats,
                       struct cryo_error *err)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	int r = image_store_path(dir, gen, path, sizeof(path));
	if (r < 0)
		return r;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* The archive is made in the directory opened once, under names
	 * relative to it, and never through a link: whatever has the temporary
	 * name goes first, and the file is created anew (O_EXCL). */
	const char *tmp_name = strrchr(tmp, '/') + 1, *name = strrchr(path, '/') + 1;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		r = -errno;
		return error_set(err, r, "cannot open '%s': %s", dir, strerror(-r));
	}
	if (unlinkat(dfd, tmp_name, 0) < 0 && errno != ENOENT) {
		r = -errno;
		return error_set(err, r, "cannot remove '%s': %s", tmp, strerror(-r));
	}

	/* Through the page cache, whose writeback the archive starts as it
	 * grows: durable sooner than writes past the cache (O_DIRECT), which
	 * wait for the disk one at a time (see sink_out() in archive-write.c). */
	_cleanup_close_ int fd =
	    openat(dfd, tmp_name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		return error_set(err, r, "cannot create '%s': %s", tmp, strerror(-r));
	}
	r = image_archive_write(fd, images_dir, mem, n_mem, m, level, workers, w, stats, err);
	if (r == 0 && (r = injected_fault()) < 0)
		error_set(err, r, "cannot write '%s': %s (injected)", tmp, strerror(-r));
	uint64_t t = util_now_ns();
	if (r == 0 && fsync(fd) < 0) {
		r = -errno;
		error_set(err, r, "cannot fsync '%s': %s", tmp, strerror(-r));
	}
	if (stats)
		stats->sync_ns = util_now_ns() - t;
	if (r == 0 && renameat(dfd, tmp_name, dfd, name) < 0) {
		r = -errno;
		error_set(err, r, "cannot rename '%s': %s", tmp, strerror(-r));
	}
	if (r < 0) {
		unlinkat(dfd, tmp_name, 0);
		return r;
	}
	if (fsync(dfd) < 0) {
		r = -errno;
		error_set(err, r, "cannot fsync '%s': %s", dir, strerror(-r));
	}
	return r;
}

void image_store_uncache(const char *dir, uint64_t gen)
{
	char path[PATH_MAX];
	if (image_store_path(dir, gen, path, sizeof(path)) < 0)
		return;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

int image_store_prune(const char *dir, unsigned keep, uint64_t oldest)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n;
	int r = image_store_list(dir, &gens, &n);
	if (r < 0)
		return r;
	if (keep < 1)
		keep = 1;
	/* The newest keep generations stay, and every generation one of them
	 * is built on (incremental generations name their base). */
	_cleanup_free_ bool *needed = calloc(n ? n : 1, sizeof(bool));
	if (!needed)
		return -ENOMEM;
	for (size_t i = n; i-- > 0;) {
		if ((i + keep < n || gens[i] < oldest) && !needed[i])
			continue;
		needed[i] = true;
		struct manifest *m = NULL;
		struct cryo_error err;
		uint64_t base = image_store_read_manifest(dir, gens[i], &m, &err) == 0
		                    ? manifest_get_u64(m, "base", 0)
		                    : 0;
		manifest_free(m);
		for (size_t k = 0; k < i && base; k++)
			if (gens[k] == base)
				needed[k] = true;
	}
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX];
		if (needed[i])
			continue;
		if (image_store_path(dir, gens[i], path, sizeof(path)) == 0 && unlink(path) < 0 &&
		    errno != ENOENT && r == 0)
			r = -errno;
	}
	/* Set-aside damaged generations older than everything kept go too. */
	_cleanup_free_ uint64_t *all = NULL;
	size_t na;
	if (n > keep && scan(dir, true, NULL, &all, &na) == 0) {
		uint64_t oldest_kept = gens[n - keep];
		for (size_t i = 0; i < n; i++)
			if (needed[i] && gens[i] < oldest_kept)
				oldest_kept = gens[i];
		for (size_t i = 0; i < na; i++) {
			if (all[i] >= oldest_kept)
				continue;
			char path[PATH_MAX + 16];
			image_store_path(dir, all[i], path, sizeof(path) - 16);
			strcat(path, DAMAGED_SUFFIX);
			unlink(path);
		}
	}
	return r;
}

int image_store_set_aside(const char *dir, uint64_t gen)
{
	char path[PATH_MAX], aside[PATH_MAX + 16];
	int r = image_store_path(dir, gen, path, sizeof(path));
	if (r < 0)
		return r;
	snprintf(aside, sizeof(aside), "%s" DAMAGED_SUFFIX, path);
	if (rename(path, aside) < 0)
		return -errno;
	return util_fsync_dir(dir);
}

static int open_gen(const char *dir, uint64_t gen, struct cryo_error *err)
{
	char path[PATH_MAX];
	int r = image_store_path(dir, gen, path, sizeof(path));
	if (r < 0)
		return r;
	/* A generation is a file cryo made, never a link to one elsewhere. */
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return error_set(err, r, "cannot open '%s': %s", path, strerror(-r));
	}
	return fd;
}

/* Checks a rebuilt file against the size and XXH3-128 its delta line gives. */
static int check_rebuilt(const char *path, uint64_t size, const uint8_t hash[16])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	XXH3_state_t *h = XXH3_createState();
	_cleanup_free_ uint8_t *buf = malloc(1 << 20);
	if (!h || !buf) {
		XXH3_freeState(h);
		return -ENOMEM;
	}
	XXH3_128bits_reset(h);
	uint64_t total = 0;
	ssize_t n;
	while ((n = read(fd, buf, 1 << 20)) > 0) {
		XXH3_128bits_update(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
	XXH3_freeState(h);
	if (n < 0)
		return -errno;
	return total == size && !memcmp(c.digest, hash, 16) ? 0 : -EBADMSG;
}

int image_store_apply_deltas(const struct manifest *m, const char *dest, const char *base_dir,
                             struct cryo_error *err)
{
	uint64_t base = manifest_get_u64(m, "base", 0);
	int r = 0;
	for (size_t i = 0; i < m->n_entries && r == 0; i++) {
		if (strcmp(m->keys[i], "delta") != 0)
			continue;
		char path[PATH_MAX], tmp[PATH_MAX + 8];
		struct delta_line d;
		if (delta_line_parse(m->values[i], &d) < 0)
			return error_set(err, -EBADMSG, "malformed delta entry in the manifest");
		snprintf(path, sizeof(path), "%s/%s", dest, d.name);
		snprintf(tmp, sizeof(tmp), "%s.delta", path);
		r = rename(path, tmp) < 0 ? -errno : delta_decode(tmp, base_dir, path);
		unlink(tmp);
		if (r == 0)
			r = check_rebuilt(path, d.size, d.hash);
		if (r < 0)
			error_set(err, r, "'%s' cannot be rebuilt from generation %" PRIu64 ": %s",
			          d.name, base, r == -EBADMSG ? "checksum mismatch" : strerror(-r));
	}
	/* The held files stored as the blocks changed since base. */
	const char *bad = NULL;
	if (r == 0 && (r = delta_apply_files(m, dest, base_dir, &bad)) < 0)
		error_set(err, r,
		          "held file '%.*s' cannot be rebuilt from generation %" PRIu64 ": %s",
		          bad ? (int)strcspn(bad, " ") : 1, bad ? bad : "?", base,
		          r == -EBADMSG ? "checksum mismatch" : strerror(-r));
	return r;
}

/* Extracts generation gen, depth incremental generations above it on the
 * way down from the one restored. */
static int extract(const char *dir, uint64_t gen, const char *dest, unsigned depth,
                   struct manifest **ret, struct cryo_error *err)
{
	struct manifest *m = NULL;
	_cleanup_close_ int fd = open_gen(dir, gen, err);
	if (fd < 0)
		return fd;
	int r = image_archive_read(fd, dest, &m, err);
	if (r == 0)
		r = image_manifest_validate(m, gen, 0, err);
	uint64_t base = r == 0 ? manifest_get_u64(m, "base", 0) : 0;
	if (r == 0 && base && depth == IMAGE_MAX_CHAIN)
		r = error_set(err, -EBADMSG,
		              "generation %" PRIu64 " is the %dth incremental generation in a row; "
		              "a restore takes at most %d",
		              gen, IMAGE_MAX_CHAIN + 1, IMAGE_MAX_CHAIN);
	if (r < 0) {
		manifest_free(m);
		return r;
	}
	if (base) {
		/* An incremental generation: its base first, then the deltas. */
		char base_dir[PATH_MAX];
		snprintf(base_dir, sizeof(base_dir), "%s.base-%" PRIu64, dest, base);
		util_rm_rf(base_dir);
		struct cryo_error berr = {{0}};
		r = mkdir(base_dir, 0700) < 0
		        ? -errno
		        : extract(dir, base, base_dir, depth + 1, NULL, &berr);
		if (r < 0)
			error_set(err, r,
			          "generation %" PRIu64
			          " is incremental and its base, generation %" PRIu64
			          ", cannot be read: %s",
			          gen, base, berr.msg[0] ? berr.msg : strerror(-r));
		if (r == 0)
			r = image_store_apply_deltas(m, dest, base_dir, err);
		util_rm_rf(base_dir);
		if (r < 0) {
			manifest_free(m);
			return r == -EBADMSG || base ? -EBADMSG : r;
		}
	}
	if (ret)
		*ret = m;
	else
		manifest_free(m);
	return 0;
}

int image_store_extract(const char *dir, uint64_t gen, const char *dest, struct manifest **ret,
                        struct cryo_error *err)
{
	return extract(dir, gen, dest, 0, ret, err);
}

int image_store_read_manifest(const char *dir, uint64_t gen, struct manifest **ret,
                              struct cryo_error *err)
{
	_cleanup_close_ int fd = open_gen(dir, gen, err);
	if (fd < 0)
		return fd;
	_cleanup_manifest_ struct manifest *m = NULL;
	int r = image_archive_read_manifest(fd, &m, err);
	if (r == 0)
		r = image_manifest_validate(m, gen, 0, err);
	if (r == 0)
		*ret = TAKE_PTR(m);
	return r;
}
