/* Which dumps must take turns, and the lock they take.
 *
 * CRIU 4.2.1's parasite, in the root task of the tree it dumps, opens a /proc
 * of that task's PID namespace (criu/pie/parasite.c, get_proc_fd()): for its
 * own /proc fd (PARASITE_CMD_GET_PROC_FD, dump_one_task() for a root in a
 * PID namespace of its own) and to read the root's cgroups
 * (PARASITE_CMD_DUMP_CGROUP, for each thread of the root, with a cgroup
 * namespace). When readlink("/proc/self") in the task names the task itself,
 * it opens that /proc and makes nothing. Otherwise it makes the directory
 * "proc.crtools" in the root task's working directory, mounts proc on it,
 * opens it, detaches the mount and removes the directory: a fixed name, so two
 * such dumps of trees whose roots share a working directory collide ("Can't
 * create a directory (-17)" in the log, and the dump fails). Every other
 * directory CRIU makes during a dump has a name of mkdtemp()'s.
 *
 * A program cryo starts or restores from a current image has a /proc of its
 * PID namespace mounted over the host's (runtime/supervisor/program.c,
 * own_proc()): its dumps make nothing and run side by side with any other.
 * One whose /proc is another (restored from an image made before that, or a
 * program that unmounted its own) takes a lock named after its root's working
 * directory (device and inode), so that only dumps that would make the same
 * directory take turns. The program may change its /proc between the look
 * before the dump and its freeze: the look is made again once CRIU has frozen
 * the tree (dump_lock_recheck(), at CRIU's "query-ext-files" notification,
 * which comes after collect_pstree() and before dump_one_task()).
 *
 * Dumps side by side share the machine's CPUs: each one's CRIU, parasite and
 * page server compete, and with many more dumps at once than CPUs each
 * program would stay frozen the longer. So at most as many dumps run at once
 * as there are CPUs online (two at least, so that a long dump, a migration's
 * say, never holds every other one up): each takes one of
 * that many slots (a lock file each). */

#include "internal.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Whether the /proc that pid sees is one of its own PID namespace, as
 * CRIU's parasite would find it: the namespace of that /proc's PID 1 (looked
 * up from pid's root, as pid would) is pid's. false when it cannot tell. */
bool dump_lock_own_proc(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", pid);
	_cleanup_close_ int root = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return false;
	struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
	                       .resolve = RESOLVE_IN_ROOT};
	_cleanup_close_ int ns = (int)syscall(SYS_openat2, root, "proc/1/ns", &how, sizeof(how));
	if (ns < 0)
		return false;
	char theirs[64], its[64];
	ssize_t a = readlinkat(ns, "pid", theirs, sizeof(theirs));
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", pid);
	ssize_t b = readlink(path, its, sizeof(its));
	return a > 0 && a == b && memcmp(theirs, its, (size_t)a) == 0;
}

/* Takes the lock for dumps of trees whose root has pid's working directory;
 * -1 (and no lock) if it cannot. */
static int lock_cwd(pid_t pid)
{
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d/cwd", pid);
	if (stat(path, &st) < 0)
		return -1;
	static const char *const dirs[] = {"/run/lock", "/tmp"};
	for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
		char name[128];
		snprintf(name, sizeof(name), "%s/cryo-dump-%" PRIu64 "-%" PRIu64 ".lock", dirs[i],
		         (uint64_t)st.st_dev, (uint64_t)st.st_ino);
		int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			continue;
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				close(fd);
				fd = -1;
				break;
			}
		if (fd >= 0)
			return fd;
	}
	return -1;
}

/* Takes one of the machine's dump slots, waiting until one is free (looking
 * every 5 ms: a wait on one slot in particular could outlast a free other);
 * -1 (and none) if it cannot. */
static int take_slot(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		n = 2;
	for (;;) {
		for (long k = 0; k < n; k++) {
			char name[64];
			snprintf(name, sizeof(name), "/run/lock/cryo-dump-slot-%ld.lock", k);
			int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0)
				return -1;
			if (flock(fd, LOCK_EX | LOCK_NB) == 0)
				return fd;
			int e = errno;
			close(fd);
			if (e != EWOULDBLOCK && e != EINTR)
				return -1;
		}
		nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
	}
}

void dump_lock_take(pid_t root, struct dump_lock *l)
{
	/* The directory first: a dump waiting for it holds no slot. */
	l->dir = dump_lock_own_proc(root) ? -1 : lock_cwd(root);
	l->slot = take_slot();
}

void dump_lock_recheck(pid_t root, struct dump_lock *l)
{
	if (l->dir >= 0 || dump_lock_own_proc(root))
		return;
	/* Its slot goes first: the dump holding the directory may be
	 * waiting for a slot. */
	if (l->slot >= 0)
		close(l->slot);
	l->slot = -1;
	l->dir = lock_cwd(root);
}

void dump_lock_release(struct dump_lock *l)
{
	if (l->dir >= 0)
		close(l->dir);
	if (l->slot >= 0)
		close(l->slot);
	l->dir = l->slot = -1;
}
