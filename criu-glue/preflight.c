/* Before a dump: fds that CRIU would dump without complaint but that no
 * restore under cryo can bring back. A generation holding one would be
 * reported stored and then fail every restore (the workload lost after its
 * next crash), so the checkpoint is refused instead, while the program runs
 * on. Each rule is a failure seen in criu-restore.log (CRIU 4.2.1):
 *
 * - A file in /proc of one of the workload's own tasks (/proc/self/maps,
 *   /proc/PID/status), when the workload has no /proc of its own (its /proc
 *   is ours: a tree cryo did not start, or one restored from an image made
 *   before cryo gave each program its own /proc): such a path names a host
 *   PID, which the restored task no longer has ("Can't open file
 *   proc/PID/maps on restore: No such file or directory"), or which another
 *   process took meanwhile.
 * - A namespace file (/proc/PID/ns/NAME), in the same case: CRIU reopens it
 *   as /proc/<PID in the restored PID namespace>/ns/NAME through the host's
 *   /proc, that is another process's namespace (/proc/1 is the host's init:
 *   "Can't open file /proc/1/ns/net on restore: Permission denied" here).
 *
 * (A file unlinked while open that still has another hard link is kept by
 * remap.c.)
 *
 * A program cryo starts has a mount namespace and a /proc of its own
 * (runtime/supervisor/program.c), which CRIU dumps and builds again: there a
 * path in /proc names a PID of the program's PID namespace, which the restore
 * gives it again, and CRIU reopens a namespace file through that /proc. The
 * first two kinds restore there, and are not refused.
 *
 * The fds are looked at before the dump, where the process holding one can be
 * named; an fd opened between that look and the freeze (a library reading
 * /proc/self/maps, say) is found after the dump in CRIU's files.img. */
#include "glue.h"
#include "cleanup.h"
#include "criu-proto.h"
#include "internal.h"
#include "pb.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DELETED_SUFFIX " (deleted)"

#define WHY_PROC                                                                                   \
	"a file in /proc of the workload's own processes, which CRIU cannot restore in cryo's "    \
	"PID "                                                                                     \
	"namespace (the restored process has another host PID)"
#define WHY_NS                                                                                     \
	"a namespace file, which CRIU cannot restore in cryo's PID namespace (it would reopen "    \
	"another process's namespace)"

/* The TIDs of every task of the processes in pids (a PID is its main
 * task's TID). */
static int tree_tids(const pid_t *pids, size_t n, pid_t **ret, size_t *ret_n)
{
	pid_t *v = NULL;
	size_t nv = 0;
	for (size_t i = 0; i < n; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task", pids[i]);
		_cleanup_closedir_ DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			char *end;
			long tid = strtol(de->d_name, &end, 10);
			if (tid <= 0 || *end)
				continue;
			pid_t *nvp = realloc(v, (nv + 1) * sizeof(*nvp));
			if (!nvp) {
				free(v);
				return -ENOMEM;
			}
			v = nvp;
			v[nv++] = (pid_t)tid;
		}
	}
	*ret = v;
	*ret_n = nv;
	return 0;
}

static bool has_tid(const pid_t *tids, size_t n, long tid)
{
	for (size_t i = 0; i < n; i++)
		if (tids[i] == tid)
			return true;
	return false;
}

/* Whether pid's /proc is ours: the same mount, as its root sees it (when
 * that cannot be read, it counts as ours: the rules stay). */
static bool shares_our_proc(pid_t pid)
{
	char path[64];
	struct stat ours, its;
	snprintf(path, sizeof(path), "/proc/%d/root/proc", pid);
	if (stat("/proc", &ours) < 0 || stat(path, &its) < 0)
		return true;
	return ours.st_dev == its.st_dev;
}

/* Whether link (an fd's target) is a file in /proc of one of tids: /proc/N
 * itself or anything under it. */
static bool is_own_proc_file(const char *link, const pid_t *tids, size_t n)
{
	if (strncmp(link, "/proc/", 6) != 0)
		return false;
	char *end;
	long pid = strtol(link + 6, &end, 10);
	if (end == link + 6 || link[6] < '0' || link[6] > '9' ||
	    (*end && *end != '/' && strcmp(end, DELETED_SUFFIX) != 0))
		return false;
	return has_tid(tids, n, pid);
}

/* Whether link is a namespace file, as the kernel names one: "net:[INODE]". */
static bool is_ns_file(const char *link)
{
	static const char *const kinds[] = {"cgroup", "ipc",  "mnt",  "net",
	                                    "pid",    "time", "user", "uts"};
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		size_t len = strlen(kinds[i]);
		if (strncmp(link, kinds[i], len) == 0 && strncmp(link + len, ":[", 2) == 0)
			return true;
	}
	return false;
}

static void comm_of(pid_t pid, char *buf, size_t len)
{
	char path[64];
	snprintf(buf, len, "?");
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (f && fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = '\0';
}

/* Looks through the fds of pid; describes the first unrestorable one. */
static bool find_in(pid_t pid, const pid_t *tids, size_t n_tids, struct cryo_error *found)
{
	char path[64], link[PATH_MAX];
	bool host_proc = shares_our_proc(pid);
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		/* The directory read here, when the caller looks at itself. */
		if (pid == getpid() && atoi(de->d_name) == dirfd(d))
			continue;
		ssize_t n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		const char *why;
		if (host_proc && is_own_proc_file(link, tids, n_tids))
			why = WHY_PROC;
		else if (host_proc && is_ns_file(link))
			why = WHY_NS;
		else
			continue;
		char comm[64];
		comm_of(pid, comm, sizeof(comm));
		error_set(found, -EOPNOTSUPP,
		          "%s (PID %d) holds fd %s on %s, %s; close it before "
		          "checkpointing",
		          comm, pid, de->d_name, link, why);
		return true;
	}
	return false;
}

int criu_glue_find_unrestorable(pid_t root, struct cryo_error *err)
{
	_cleanup_free_ pid_t *pids = NULL, *tids = NULL;
	size_t n = 0, n_tids = 0;
	int r = util_proc_tree(root, &pids, &n);
	if (r == 0)
		r = tree_tids(pids, n, &tids, &n_tids);
	if (r < 0)
		return error_set(err, r, "cannot read the processes of PID %d: %s", root,
		                 strerror(-r));
	for (size_t i = 0; i < n; i++)
		if (find_in(pids[i], tids, n_tids, err))
			return -EOPNOTSUPP;
	return 0;
}

/* The tasks of the tree rooted at root as they are now. */
static int tids_now(pid_t root, pid_t **ret, size_t *ret_n)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	int r = util_proc_tree(root, &pids, &n);
	return r < 0 ? r : tree_tids(pids, n, ret, ret_n);
}

/* Whether one file_entry of files.img is unrestorable (err says why): for a
 * tree that shares our /proc (host_proc), an ns_file_entry, or a
 * reg_file_entry named in /proc by one of tids. */
static bool entry_unrestorable(const uint8_t *msg, size_t len, const pid_t *tids, size_t n,
                               bool host_proc, struct cryo_error *err)
{
	const uint8_t *p = msg, *end = msg + len;
	struct pb_field f;
	while (pb_next(&p, end, &f) == 1) {
		if (host_proc && f.number == PB_FILE_ENTRY_NSF && f.wire_type == 2) {
			error_set(err, -EOPNOTSUPP,
			          "the dump holds an fd on %s; close it before checkpointing",
			          WHY_NS);
			return true;
		}
		if (f.number != PB_FILE_ENTRY_REG || f.wire_type != 2)
			continue;
		const uint8_t *q = f.data, *qend = f.data + f.len;
		struct pb_field g;
		while (pb_next(&q, qend, &g) == 1) {
			if (g.number != PB_REG_FILE_ENTRY_NAME || g.wire_type != 2)
				continue;
			/* CRIU names a file from the root, with or without the
			 * leading slash. */
			const char *s = (const char *)g.data;
			size_t slen = g.len;
			if (slen > 0 && s[0] == '/') {
				s++;
				slen--;
			}
			char name[PATH_MAX];
			if (slen + 2 > sizeof(name))
				continue;
			name[0] = '/';
			memcpy(name + 1, s, slen);
			name[slen + 1] = '\0';
			if (host_proc && is_own_proc_file(name, tids, n)) {
				error_set(
				    err, -EOPNOTSUPP,
				    "the dump holds an fd on %s, %s; close it before checkpointing",
				    name, WHY_PROC);
				return true;
			}
		}
	}
	return false;
}

int preflight_check_dumped(const char *images_dir, pid_t root, struct cryo_error *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/files.img", images_dir);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = util_read_file(path, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
	_cleanup_free_ pid_t *tids = NULL;
	size_t n = 0;
	r = tids_now(root, &tids, &n);
	if (r < 0)
		return error_set(err, r, "cannot read the processes of PID %d: %s", root,
		                 strerror(-r));
	bool host_proc = shares_our_proc(root);
	const uint8_t *b = (const uint8_t *)buf, *msg;
	size_t off = pb_entries_start(b, len), msg_len;
	while ((r = pb_next_entry(b, len, &off, &msg, &msg_len)) == 1)
		if (entry_unrestorable(msg, msg_len, tids, n, host_proc, err))
			return -EOPNOTSUPP;
	return r < 0 ? error_set(err, r, "cannot read '%s': %s", path, strerror(-r)) : 0;
}
