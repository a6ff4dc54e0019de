#include "util.h"
#include "cleanup.h"
#include "error.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

int util_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int util_read_exact(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int util_copy_bytes(int src, int dst, uint64_t len)
{
	off_t in = 0, out = 0;
	while ((uint64_t)in < len) {
		uint64_t left = len - (uint64_t)in;
		size_t want = (size_t)(left < (1U << 30) ? left : (1U << 30));
		ssize_t n = copy_file_range(src, &in, dst, &out, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 &&
		    (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
			char buf[65536];
			n = pread(src, buf, want < sizeof(buf) ? want : sizeof(buf), in);
			if (n > 0) {
				ssize_t w = pwrite(dst, buf, (size_t)n, out);
				if (w != n)
					return w < 0 ? -errno : -EIO;
				in += n;
				out += n;
			}
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
	}
	return 0;
}

int util_read_file(const char *path, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;

	size_t cap = 4096, len = 0;
	_cleanup_free_ char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len + 1 >= cap) {
			char *n = realloc(buf, cap * 2);
			if (!n)
				return -ENOMEM;
			buf = n;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	*ret = TAKE_PTR(buf);
	return 0;
}

int util_fsync_dir(const char *dir)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

static int dirname_of(const char *path, char *buf, size_t len)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return snprintf(buf, len, ".") >= (int)len ? -ENAMETOOLONG : 0;
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	if (n >= len)
		return -ENAMETOOLONG;
	memcpy(buf, path, n);
	buf[n] = '\0';
	return 0;
}

int util_write_file_at(int dfd, const char *name, const void *buf, size_t len, mode_t mode,
                       bool durable)
{
	char tmp[NAME_MAX + 1];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	/* Whatever has the temporary name (a file an earlier writer left, or a
	 * link someone planted) goes, and the file is made anew: O_EXCL with
	 * O_NOFOLLOW never opens what is already there. */
	if (unlinkat(dfd, tmp, 0) < 0 && errno != ENOENT)
		return -errno;
	_cleanup_close_ int fd =
	    openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	int r = util_write_all(fd, buf, len);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		return r;
	}
	return durable && fsync(dfd) < 0 ? -errno : 0;
}

int util_write_file_atomic(const char *path, const void *buf, size_t len)
{
	char dir[PATH_MAX];
	int r = dirname_of(path, dir, sizeof(dir));
	if (r < 0)
		return r;
	const char *slash = strrchr(path, '/');
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	return util_write_file_at(dfd, slash ? slash + 1 : path, buf, len, 0600, true);
}

int util_mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	struct stat st;
	if (stat(buf, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* One directory of the chain util_check_trusted_dir() walks. */
static int check_one_dir(const char *path, const struct stat *st, bool last, bool sticky_ok,
                         struct cryo_error *err)
{
	if (S_ISLNK(st->st_mode))
		return error_set(err, -ELOOP,
		                 "'%s' is a symbolic link (give the path it points to)", path);
	if (!S_ISDIR(st->st_mode))
		return error_set(err, -ENOTDIR, "'%s' is not a directory", path);
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return error_set(err, -EPERM,
		                 "'%s' belongs to uid %u, who could replace what cryo keeps there "
		                 "(run: chown root '%s')",
		                 path, (unsigned)st->st_uid, path);
	/* Others who may write a directory may rename and replace its entries,
	 * unless it has the sticky bit (as /tmp has): then only an entry's
	 * owner may. */
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) &&
	    (!(st->st_mode & S_ISVTX) || (last && !sticky_ok)))
		return error_set(err, -EPERM, "'%s' is writable by %s (run: chmod go-w '%s')", path,
		                 st->st_mode & S_IWOTH ? "others" : "its group", path);
	return 0;
}

int util_check_trusted_dir(const char *path, bool sticky_ok, struct cryo_error *err)
{
	if (path[0] != '/')
		return error_set(err, -EINVAL, "'%s' is not an absolute path", path);
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return error_set(err, -ENAMETOOLONG, "'%s' is too long", path);
	size_t n = strlen(buf);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	/* From the root down: every directory on the way must be one that only
	 * root or we can change, or else whoever can could swap what follows. */
	struct stat st;
	for (size_t end = 1; end <= n; end++) {
		/* "/" itself first, then each directory down to path. */
		if (end > 1 && end < n && buf[end] != '/')
			continue;
		char c = buf[end];
		buf[end] = '\0';
		int r = lstat(buf, &st) < 0 ? -errno : 0;
		if (r < 0)
			return error_set(err, r, "cannot read '%s': %s", buf, strerror(-r));
		r = check_one_dir(buf, &st, end == n, sticky_ok, err);
		buf[end] = c;
		if (r < 0)
			return r;
	}
	return 0;
}

static int rm_rf_at(int parent, const char *name)
{
	_cleanup_close_ int fd =
	    openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOTDIR || errno == ELOOP)
			return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
		return errno == ENOENT ? 0 : -errno;
	}
	_cleanup_closedir_ DIR *d = fdopendir(fd);
	if (!d)
		return -errno;
	fd = -1; /* owned by d now */
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int k =
		    de->d_type == DT_DIR || de->d_type == DT_UNKNOWN
		        ? rm_rf_at(dirfd(d), de->d_name)
		        : (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT ? -errno : 0);
		if (k < 0 && r == 0)
			r = k;
	}
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
		r = -errno;
	return r;
}

int util_rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}

int util_parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

/* A unit a number may carry, and what one of it is worth. */
struct unit {
	const char *suffix;
	uint64_t mult;
};

/* Parses digits followed by exactly one of the n suffixes into *ret, the
 * number times its unit: -EINVAL for another form, -ERANGE past 64 bits. */
static int parse_with_unit(const char *s, const struct unit *units, size_t n, uint64_t *ret)
{
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(end, units[i].suffix) != 0)
			continue;
		if (v > UINT64_MAX / units[i].mult)
			return -ERANGE;
		*ret = v * units[i].mult;
		return 0;
	}
	return -EINVAL;
}

int util_parse_duration(const char *s, uint64_t *ret_ns)
{
	static const struct unit units[] = {
	    {"ms", 1000000ULL},      {"s", 1000000000ULL}, {"m", 60000000000ULL},
	    {"h", 3600000000000ULL}, {"", 1000000000ULL},
	};
	int r = parse_with_unit(s, units, ARRAY_SIZE(units), ret_ns);
	return r < 0 ? r : *ret_ns > 0 ? 0 : -EINVAL;
}

int util_parse_size(const char *s, uint64_t *ret)
{
	static const struct unit units[] = {
	    {"", 1},
	    {"K", 1ULL << 10},
	    {"KiB", 1ULL << 10},
	    {"M", 1ULL << 20},
	    {"MiB", 1ULL << 20},
	    {"G", 1ULL << 30},
	    {"GiB", 1ULL << 30},
	};
	return parse_with_unit(s, units, ARRAY_SIZE(units), ret);
}

uint64_t util_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t util_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t util_fd_inode(int fd)
{
	struct stat st;
	return fstat(fd, &st) < 0 ? 0 : (uint64_t)st.st_ino;
}

int util_format_path(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	return (size_t)n < len ? 0 : -ENAMETOOLONG;
}

const char *util_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

bool util_name_is_valid(const char *name)
{
	size_t n = strlen(name);
	/* Not '.' first (hidden, "..") nor '-' (read as an option). */
	if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return false;
	return true;
}

uint64_t util_mem_available(void)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long kb;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			return (uint64_t)kb << 10;
	return 0;
}

int util_proc_tree(pid_t root, pid_t **ret, size_t *ret_n)
{
	pid_t *v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	size_t n = 1;
	v[0] = root;
	for (size_t i = 0; i < n && n < 4096; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task", v[i]);
		_cleanup_closedir_ DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			/* A task's name is its TID: as a number, its path fits. */
			char *tid_end;
			long tid = strtol(de->d_name, &tid_end, 10);
			if (tid <= 0 || *tid_end)
				continue;
			char cpath[128];
			snprintf(cpath, sizeof(cpath), "/proc/%d/task/%ld/children", v[i], tid);
			_cleanup_free_ char *buf = NULL;
			size_t len;
			if (util_read_file(cpath, &buf, &len) < 0)
				continue;
			for (char *p = buf, *end; *p && n < 4096; p = end) {
				long c = strtol(p, &end, 10);
				if (end == p)
					break;
				pid_t *nv = realloc(v, (n + 1) * sizeof(*nv));
				if (!nv) {
					free(v);
					return -ENOMEM;
				}
				v = nv;
				v[n++] = (pid_t)c;
			}
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int util_scratch_dir(uint64_t bytes, const char *tag, const char *fallback, char *dir, size_t len)
{
	struct statvfs shm;
	if (bytes < util_mem_available() / 2 && statvfs("/dev/shm", &shm) == 0 &&
	    bytes + bytes / 8 < (uint64_t)shm.f_bavail * shm.f_frsize) {
		snprintf(dir, len, "/dev/shm/cryo-%s-%d-XXXXXX", tag, (int)getpid());
		if (mkdtemp(dir))
			return 0;
	}
	size_t n = strlen(fallback);
	if (n >= len)
		return -ENAMETOOLONG;
	memcpy(dir, fallback, n + 1);
	util_rm_rf(dir);
	return mkdir(dir, 0700) < 0 ? -errno : 0;
}

void util_scratch_sweep(void)
{
	_cleanup_closedir_ DIR *d = opendir("/dev/shm");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		/* cryo-TAG-PID-XXXXXX */
		const char *name = de->d_name;
		size_t n = strlen(name);
		if (strncmp(name, "cryo-", 5) != 0 || n < 5 + 2 + 2 + 6 || name[n - 7] != '-')
			continue;
		const char *end = name + n - 7, *p = end;
		while (p > name + 5 && isdigit((unsigned char)p[-1]))
			p--;
		if (p == end || p[-1] != '-' || end - p > 9)
			continue;
		pid_t pid = (pid_t)strtol(p, NULL, 10);
		if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		/* Only our own: /dev/shm is everybody's, and a directory of
		 * another user's with our name pattern is theirs to keep (the
		 * sticky bit keeps them from swapping ours for theirs). */
		struct stat st;
		if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "/dev/shm/%s", name);
		util_rm_rf(path);
	}
}

int util_map_file(int dfd, const char *name, void **data, size_t *len)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	return util_map_fd(fd, data, len);
}

int util_map_fd(int fd, void **data, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	*len = (size_t)st.st_size;
	*data = NULL;
	if (*len == 0)
		return 0;
	void *p = mmap(NULL, *len, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*data = p;
	return 0;
}
