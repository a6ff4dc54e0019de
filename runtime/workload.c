#include "workload.h"
#include "cleanup.h"
#include "error.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

const char *workload_state_dir(const char *opt)
{
	if (opt && *opt)
		return opt;
	const char *env = getenv("CRYO_STATE_DIR");
	return env && *env ? env : CRYO_DEFAULT_STATE_DIR;
}

int workload_paths_init(struct workload_paths *p, const char *state_dir, const char *name)
{
	if (!util_name_is_valid(name))
		return -EINVAL;
	int n = snprintf(p->state_dir, sizeof(p->state_dir), "%s", state_dir);
	if (n < 0 || (size_t)n >= sizeof(p->state_dir) - 100)
		return -ENAMETOOLONG;
	/* Lengths are bounded above; the casts tell the compiler so. */
	snprintf(p->dir, sizeof(p->dir), "%.3900s/%s", state_dir, name);
	snprintf(p->lock, sizeof(p->lock), "%.3900s/%s/lock", state_dir, name);
	snprintf(p->socket, sizeof(p->socket), "%.3900s/%s/control.sock", state_dir, name);
	snprintf(p->pid_file, sizeof(p->pid_file), "%.3900s/%s/pid", state_dir, name);
	return 0;
}

static pid_t lock_holder(int fd)
{
	/* The holder writes its PID into the lock file. */
	char buf[32] = {0};
	if (pread(fd, buf, sizeof(buf) - 1, 0) > 0)
		return (pid_t)atoi(buf);
	return 0;
}

int workload_open_dir(const struct workload_paths *p)
{
	int fd = open(p->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int workload_trust(struct workload_paths *p, struct cryo_error *err)
{
	/* The checks are made on the path without links, and the workload is
	 * kept there: a link on the way that someone else owns cannot move it
	 * later. */
	_cleanup_free_ char *real = realpath(p->state_dir, NULL);
	if (!real) {
		int r = -errno;
		return error_set(err, r, "cannot resolve '%s': %s", p->state_dir, strerror(-r));
	}
	char name[PATH_MAX];
	const char *slash = strrchr(p->dir, '/');
	snprintf(name, sizeof(name), "%s", slash ? slash + 1 : p->dir);
	int r = workload_paths_init(p, real, name);
	if (r < 0)
		return error_set(err, r, "'%s' is too long", real);
	return util_check_trusted_dir(p->dir, false, err);
}

int workload_lock(const struct workload_paths *p, pid_t *holder)
{
	_cleanup_close_ int dfd = workload_open_dir(p);
	if (dfd < 0)
		return dfd;
	/* The lock stays from one supervisor to the next, so it may exist;
	 * but never through a link, and only as a file of ours. */
	_cleanup_close_ int fd =
	    openat(dfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1)
		return -EPERM;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		if (holder)
			*holder = lock_holder(fd);
		return r;
	}
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		return -errno;
	return TAKE_FD(fd);
}

bool workload_is_supervised(const struct workload_paths *p, pid_t *holder)
{
	_cleanup_close_ int fd = open(p->lock, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0)
		return false;
	if (holder)
		*holder = lock_holder(fd);
	return true;
}
