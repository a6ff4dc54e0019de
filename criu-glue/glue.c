#include "glue.h"
#include "criu-proto.h"
#include "internal.h"
#include "mounts.h"
#include "lazy.h"
#include "libcriu-internals.h"
#include "pb.h"
#include "cleanup.h"
#include "util.h"

#include <criu/criu.h>
#include <criu/rpc.pb-c.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static void criu_optsp(criu_opts **o)
{
	if (*o)
		criu_local_free_opts(*o);
}
#define _cleanup_criu_opts_ _cleanup_(criu_optsp)

static bool is_executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

const char *criu_glue_binary(void)
{
	static char found[PATH_MAX];
	const char *env = getenv("CRYO_CRIU");
	if (env && *env)
		return is_executable(env) ? env : NULL;
	if (found[0])
		return found;
	const char *path = getenv("PATH");
	_cleanup_free_ char *dirs = strdup(path ? path : "");
	if (!dirs)
		return NULL;
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(found, sizeof(found), "%s/criu", d);
		if (is_executable(found))
			return found;
	}
	static const char *const fallback[] = {"/usr/local/sbin/criu", "/usr/sbin/criu"};
	for (size_t i = 0; i < ARRAY_SIZE(fallback); i++)
		if (is_executable(fallback[i]))
			return strcpy(found, fallback[i]);
	found[0] = '\0';
	return NULL;
}

/* CRIU opens its log by name in its work directory with O_CREAT | O_TRUNC,
 * following a link found there: the file is made anew here first (whatever
 * had its name goes, and O_EXCL | O_NOFOLLOW create a plain file), so that
 * CRIU, running as root, writes into that file and nowhere else. */
static int fresh_log(int dfd, const char *dir, const char *name, struct cryo_error *err)
{
	int r = 0;
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		r = -errno;
	int fd =
	    r < 0 ? -1
	          : openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = r < 0 ? r : -errno;
		return error_set(err, r, "cannot create '%s/%s': %s", dir, name, strerror(-r));
	}
	close(fd);
	return 0;
}

/* Options common to every call: the binary, the log in log_dir. */
static int prepare(criu_opts **ret, const char *log_dir, const char *log_name, int *log_dir_fd,
                   struct cryo_error *err)
{
	const char *bin = criu_glue_binary();
	if (!bin)
		return error_set(err, -ENOENT,
		                 "CRIU is not installed (run scripts/setup, or set CRYO_CRIU)");
	_cleanup_criu_opts_ criu_opts *o = NULL;
	if (criu_local_init_opts(&o) < 0)
		return -ENOMEM;
	if (criu_local_set_service_binary(o, bin) < 0)
		return -ENOMEM;
	if (log_dir) {
		*log_dir_fd = open(log_dir, O_RDONLY | O_DIRECTORY); /* inherited by criu */
		if (*log_dir_fd < 0) {
			int r = -errno;
			return error_set(err, r, "cannot open '%s': %s", log_dir, strerror(-r));
		}
		int r = fresh_log(*log_dir_fd, log_dir, log_name, err);
		if (r < 0)
			return r;
		criu_local_set_work_dir_fd(o, *log_dir_fd);
		if (criu_local_set_log_file(o, log_name) < 0)
			return -ENOMEM;
		criu_local_set_log_level(o, 4);
	}
	*ret = TAKE_PTR(o);
	return 0;
}

/* Asks `criu --version` rather than libcriu's RPC, so that a binary too old
 * to speak it, or not CRIU at all, is reported plainly. */
/* The images directory, opened for CRIU (the fd is inherited by it). */
static int set_images_dir(criu_opts *c, const char *dir, int *fd, struct cryo_error *err)
{
	*fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (*fd < 0) {
		int r = -errno;
		return error_set(err, r, "cannot open '%s': %s", dir, strerror(-r));
	}
	criu_local_set_images_dir_fd(c, *fd);
	return 0;
}

static int prepare_with_images(criu_opts **ret, const char *images_dir, int *images_fd,
                               const char *log_dir, const char *log_name, int *log_dir_fd,
                               struct cryo_error *err)
{
	int r = prepare(ret, log_dir, log_name, log_dir_fd, err);
	if (r == 0)
		r = set_images_dir(*ret, images_dir, images_fd, err);
	return r;
}

/* Runs the criu binary with args (NULL-terminated, after "criu") and gathers
 * what it prints (stdout, and stderr with with_stderr) into buf. Returns its
 * exit status, or a negative errno. */
static int run_criu(const char *const *args, bool with_stderr, char *buf, size_t len)
{
	const char *bin = criu_glue_binary();
	if (!bin)
		return -ENOENT;
	const char *argv[16] = {"criu"};
	size_t argc = 1;
	for (; args[argc - 1] && argc < 15; argc++)
		argv[argc] = args[argc - 1];
	argv[argc] = NULL;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int r = -errno;
		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		int null = open("/dev/null", O_RDWR);
		if (with_stderr)
			dup2(p[1], STDERR_FILENO);
		else if (null >= 0)
			dup2(null, STDERR_FILENO);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	size_t got = 0;
	ssize_t n;
	char sink[512];
	for (;;) {
		bool room = got < len - 1;
		n = room ? read(p[0], buf + got, len - 1 - got) : read(p[0], sink, sizeof(sink));
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (room)
			got += (size_t)n;
	}
	buf[got] = '\0';
	close(p[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The feature comes from cryo's patch to CRIU (criu-glue/criu-patches/);
 * `criu check` fails without the patch, or on a kernel without
 * UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN. */
bool criu_glue_track_supported(void)
{
	static int known = -1;
	if (known < 0) {
		char buf[256];
		known = run_criu((const char *const[]){"check", "--feature", "uffd_wp_track", NULL},
		                 true, buf, sizeof(buf)) == 0;
	}
	return known;
}

int criu_glue_version(int *ret)
{
	char buf[512];
	int r = run_criu((const char *const[]){"--version", NULL}, false, buf, sizeof(buf));
	if (r < 0)
		return r;
	const char *v = strstr(buf, "Version: ");
	unsigned major = 0, minor = 0, sub = 0;
	if (!v || sscanf(v + 9, "%u.%u.%u", &major, &minor, &sub) < 2)
		return -EPROTO;
	*ret = (int)(major * 10000 + minor * 100 + sub);
	return 0;
}

/* The last line of CRIU's output that says something, for an error. */
static void last_line(const char *out, char *buf, size_t len)
{
	const char *best = NULL, *p = out;
	while (*p) {
		const char *nl = strchrnul(p, '\n');
		if (nl > p)
			best = p;
		p = *nl ? nl + 1 : nl;
	}
	if (!best) {
		snprintf(buf, len, "no output");
		return;
	}
	snprintf(buf, len, "%.*s", (int)(strchrnul(best, '\n') - best), best);
}

/* Runs a criu command that succeeds or says why not: on failure err gets
 * what, then CRIU's last line, and the result is fail_errno (or the
 * negative errno of not being able to run it). */
static int criu_command(const char *const *args, const char *what, int fail_errno,
                        struct cryo_error *err)
{
	char out[8192], line[256];
	int r = run_criu(args, true, out, sizeof(out));
	if (r == 0)
		return 0;
	last_line(out, line, sizeof(line));
	return error_set(err, r < 0 ? r : fail_errno, "%s: %s", what, r < 0 ? strerror(-r) : line);
}

int criu_glue_check(struct cryo_error *err)
{
	return criu_command((const char *const[]){"check", NULL}, "criu check fails here", -EIO,
	                    err);
}

int criu_glue_cpuinfo_dump(const char *dir, struct cryo_error *err)
{
	return criu_command((const char *const[]){"cpuinfo", "dump", "-D", dir, NULL},
	                    "criu cpuinfo dump failed", -EIO, err);
}

int criu_glue_cpuinfo_check(const char *dir, struct cryo_error *err)
{
	return criu_command((const char *const[]){"cpuinfo", "check", "-D", dir, NULL},
	                    "this CPU cannot run what the source's CPU ran", -EXDEV, err);
}

/* Resources CRIU cannot checkpoint, as /proc/PID/fd shows them. */
static const struct {
	const char *link;
	const char *what;
} unsupported[] = {
    {"anon_inode:[io_uring]", "an io_uring instance"},
    {"anon_inode:[perf_event]", "a perf event"},
    {"anon_inode:bpf-prog", "a BPF program"},
    {"anon_inode:kvm-vm", "a KVM virtual machine"},
    {"anon_inode:[userfaultfd]", "a userfaultfd"},
    {"/dev/nvidia", "an NVIDIA device"},
};

/* Looks through the fds of pid for a resource CRIU cannot dump; describes
 * the first one found in found. */
static bool find_unsupported_in(pid_t pid, struct cryo_error *found)
{
	char path[64], link[PATH_MAX];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		ssize_t n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		for (size_t i = 0; i < ARRAY_SIZE(unsupported); i++) {
			if (strncmp(link, unsupported[i].link, strlen(unsupported[i].link)) != 0)
				continue;
			char comm[64] = "?";
			snprintf(path, sizeof(path), "/proc/%d/comm", pid);
			_cleanup_fclose_ FILE *f = fopen(path, "re");
			if (f && fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			error_set(found, 0,
			          "%s (PID %d) holds %s (fd %s), which CRIU cannot checkpoint",
			          comm, pid, unsupported[i].what, de->d_name);
			return true;
		}
	}
	return false;
}

/* The same for pid and its descendants. */
static bool find_unsupported(pid_t pid, struct cryo_error *found)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	if (util_proc_tree(pid, &pids, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (find_unsupported_in(pids[i], found))
			return true;
	return false;
}

/* Explains a CRIU failure in one line: a resource CRIU cannot handle if the
 * tree holds one, else the first error in CRIU's log (kept at its path).
 * Returns -ENOSPC for a full disk, else -EIO. */
int criu_glue_failed(struct cryo_error *err, pid_t pid, const char *what, const char *log_dir,
                     const char *log_name)
{
	char cause[300] = "";
	char path[PATH_MAX];
	int r = -EIO;
	snprintf(path, sizeof(path), "%s/%s", log_dir, log_name);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f)) {
			if (strstr(line, "No space left on device"))
				r = -ENOSPC;
			if (cause[0] || !strstr(line, "Error") || strstr(line, "RLIMIT_NOFILE"))
				continue;
			line[strcspn(line, "\n")] = '\0';
			const char *p = strstr(line, "): ");
			/* The start of a long line is enough: the reason names the log. */
			snprintf(cause, sizeof(cause), "%.*s", (int)sizeof(cause) - 1,
			         p ? p + 3 : line);
		}
	}
	if (pid > 0) {
		struct cryo_error found = {{0}};
		if (find_unsupported(pid, &found))
			snprintf(cause, sizeof(cause), "%.*s", (int)sizeof(cause) - 1, found.msg);
	}
	struct statvfs vfs;
	if (!cause[0] && statvfs(log_dir, &vfs) == 0 && vfs.f_bavail == 0) {
		snprintf(cause, sizeof(cause), "no space left in '%s'", log_dir);
		r = -ENOSPC;
	}
	if (!cause[0])
		snprintf(cause, sizeof(cause), "%s", f ? "no error in its log" : "it wrote no log");
	return error_set(err, r, "CRIU %s failed: %s (log: '%s')", what, cause, path);
}

static int read_dump_stats(const char *dir, struct criu_glue_dump_stats *ret);
static int fix_timerfds(const char *images_dir);

/* libcriu's notification callback has no argument of the caller's: the dump
 * under way (one per thread at a time, criu_local_dump() blocks) is found
 * here. */
struct frozen_call {
	const struct criu_glue_frozen_hook *hook;
	const char *images_dir;
	struct remap_links links; /* link_remap.N made by CRIU, kept (remap.c) */
	pid_t root;               /* the tree's root */
	struct dump_lock lock;    /* dump-lock.c's */
	struct cryo_error *err;
	int r;
	bool called;
};
static __thread struct frozen_call *frozen_call;

/* CRIU sends "post-dump" after writing the images and before it lets the
 * tasks go (cr_dump_finish(): run_scripts(ACT_POST_DUMP), then
 * pstree_switch_state()). A non-zero answer makes CRIU count the dump as
 * failed and resume the tree. */
static int notified(char *action, criu_notify_arg_t na)
{
	(void)na;
	struct frozen_call *fc = frozen_call;
	/* The tree is frozen now, and CRIU's parasite not yet in it: whether
	 * this dump must take turns, looked at again (dump-lock.c). */
	if (fc && strcmp(action, "query-ext-files") == 0) {
		dump_lock_recheck(fc->root, &fc->lock);
		return 0;
	}
	if (!fc || strcmp(action, "post-dump") != 0 || fc->called)
		return 0;
	fc->called = true;
	/* Files unlinked while open with another hard link first: their
	 * links go when the tree runs on. */
	fc->r = remap_capture(fc->images_dir, &fc->links, fc->err);
	if (fc->r == 0 && fc->hook->frozen)
		fc->r = fc->hook->frozen(fc->hook->data, fc->err);
	return fc->r < 0 ? -1 : 0;
}

int criu_glue_dump(const struct criu_glue_dump_opts *o, struct criu_glue_dump_stats *stats,
                   struct cryo_error *err)
{
	/* What CRIU would dump but no restore could bring back is refused
	 * first (preflight.c). */
	int r = criu_glue_find_unrestorable(o->pid, err);
	if (r < 0)
		return r;
	_cleanup_criu_opts_ criu_opts *c = NULL;
	_cleanup_close_ int log_fd = -1, images_fd = -1;
	r = prepare_with_images(&c, o->images_dir, &images_fd, o->log_dir, o->log_name, &log_fd,
	                        err);
	if (r < 0)
		return r;
	criu_local_set_pid(c, o->pid);
	criu_local_set_leave_running(c, o->leave_running);
	criu_local_set_tcp_established(c, o->tcp_established);
	criu_local_set_tcp_close(c, o->tcp_close);
	criu_local_set_file_locks(c, true);
	/* Files unlinked while open with another hard link, through a link
	 * CRIU makes beside them; remap.c keeps what it holds. */
	criu_local_set_link_remap(c, true);
	/* The workload's mount namespace (runtime/supervisor/program.c): each
	 * of its mounts but its own /proc is a copy of one of ours (a slave of
	 * it where ours is shared), so CRIU records it as external, by its path
	 * here, instead of dumping it (or failing on it: "has unreachable
	 * sharing" without ext_masters). */
	criu_local_set_auto_ext_mnt(c, true);
	criu_local_set_ext_masters(c, true);
	if (o->page_server_fd >= 0) {
		r = criu_glue_set_page_server_fd(c, o->page_server_fd, err);
		if (r < 0)
			return r;
	}
	if (o->network_lock_skip)
		criu_local_set_network_lock(c, CRIU_NETWORK_LOCK_SKIP);
	if (o->track_mem && o->page_server_fd >= 0) {
		/* CRIU counts a page as the parent's only with a parent
		 * directory named; the parent is the page server's, and the
		 * images hold every page: "." is one that exists. CRIU links
		 * it as "parent" in the images, removed after the dump. */
		criu_local_set_track_mem(c, true);
		if (criu_local_set_parent_images(c, ".") < 0)
			return -ENOMEM;
	}
	if (o->external_net) {
		char key[96];
		snprintf(key, sizeof(key), "net[%llu]:%s", (unsigned long long)o->external_net,
		         o->external_net_key);
		if (criu_local_add_external(c, key) < 0)
			return -ENOMEM;
	}
	for (size_t i = 0; i < o->n_external_unix; i++) {
		char key[64];
		snprintf(key, sizeof(key), "unix[%llu]", (unsigned long long)o->external_unix[i]);
		if (criu_local_add_external(c, key) < 0)
			return -ENOMEM;
	}
	/* Dumps run side by side, as many as there are CPUs, but for those
	 * that would make the same directory for a /proc (dump-lock.c). */
	struct frozen_call fc = {
	    .hook = &o->hook, .images_dir = o->images_dir, .root = o->pid, .err = err};
	dump_lock_take(o->pid, &fc.lock);
	criu_local_set_notify_cb(c, notified);
	frozen_call = &fc;
	r = criu_local_dump(c);
	frozen_call = NULL;
	dump_lock_release(&fc.lock);
	if (o->track_mem)
		unlinkat(images_fd, "parent", 0);
	/* Without a hook nothing needs the notification (a stand-in for CRIU
	 * in the tests sends none): the links are looked for now, still there
	 * only if the tree was not left running (remap_capture() fails
	 * otherwise, naming the link). */
	if (r >= 0 && !fc.called && !o->hook.frozen)
		fc.r = remap_capture(o->images_dir, &fc.links, err);
	/* CRIU keeps its links after a dump that ends the tree. */
	remap_links_drop(&fc.links, false);
	if (fc.r < 0)
		return fc.r; /* err says why */
	if (r < 0)
		return criu_glue_failed(err, o->pid, "dump", o->log_dir, o->log_name);
	if (o->hook.frozen && !fc.called)
		return error_set(err, -EPROTO,
		                 "CRIU did not say when the program was frozen (no post-dump "
		                 "notification; see '%s/%s')",
		                 o->log_dir, o->log_name);
	if (stats && read_dump_stats(o->log_dir, stats) < 0)
		memset(stats, 0, sizeof(*stats));
	unlinkat(log_fd, "stats-dump", 0);
	/* The tree's PIDs are still its own only while it runs. */
	if (o->leave_running) {
		r = preflight_check_dumped(o->images_dir, o->pid, err);
		if (r < 0)
			return r;
	}
	r = fix_timerfds(o->images_dir);
	if (r < 0)
		return error_set(err, r, "cannot read the dumped files.img: %s", strerror(-r));
	return 0;
}

/* ---- restores, through CRIU's RPC ------------------------------------------------------------ */

struct criu_glue_restorer {
	pid_t pid; /* 0 once reaped */
	int sk;    /* our end of its SOCK_SEQPACKET socket */
	size_t n_fds;
	int fds[CRIU_GLUE_MAX_INHERIT];
	pid_t guard;  /* its guard (below), or 0 */
	int guard_sk; /* our end of the guard's socket, or -1 */
};

/* A restore whose caller dies (SIGKILL, say) must not leave CRIU or the
 * half-restored tree behind. Neither ends by itself: the tree's root gets the
 * death signal cryo-init asked for only at the end of the restore, and CRIU
 * without its caller either waits for the tree (it traces it) or, killed by
 * a death signal of its own, leaves the tree waiting for CRIU forever (both
 * seen). So a guard goes with each CRIU service process: a shell, our child
 * but in a session of its own (a signal to our process group does not reach
 * it), reading from a socket whose other end is ours alone (O_CLOEXEC, never
 * passed on) the PIDs of CRIU and, once CRIU names it, of the tree's root.
 * When that socket ends (we died), it SIGKILLs them: the root is the init of
 * the tree's PID namespace, so the whole tree goes. Neither can have been
 * reaped and its PID reused meanwhile: both live until then (the root waits
 * for CRIU, CRIU for the root or for us). Once the restore is over, well or
 * not, we kill the guard and reap it. */
static const char guard_script[] = "trap '' HUP INT TERM PIPE; set --; "
                                   "while read -r p; do set -- \"$@\" \"$p\"; done; "
                                   "[ $# -gt 0 ] && kill -KILL \"$@\"; exit 0";

/* Gives the guard a PID to kill. */
static void guard_add(int sk, pid_t pid)
{
	char line[24];
	int n = snprintf(line, sizeof(line), "%d\n", (int)pid);
	while (send(sk, line, (size_t)n, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

/* Starts the guard of CRIU r->pid (r->guard, r->guard_sk), or none if it
 * cannot (then the restore goes on without). */
static void guard_start(struct criu_glue_restorer *r)
{
	r->guard = 0;
	r->guard_sk = -1;
	int p[2]; /* a socket, not a pipe: sent to with MSG_NOSIGNAL */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
		return;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, p[0], STDIN_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	/* Nothing else of ours: an end of the program's pipes held by the
	 * guard would keep them from ending. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	sigset_t none, def;
	sigemptyset(&none);
	sigfillset(&def);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &def);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
	                                    POSIX_SPAWN_SETSID);
	char *const argv[] = {(char *)"sh", (char *)"-c", (char *)guard_script,
	                      (char *)"cryo-restore-guard", NULL};
	int e = posix_spawn(&r->guard, "/bin/sh", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(p[0]);
	if (e != 0) {
		r->guard = 0;
		close(p[1]);
		return;
	}
	r->guard_sk = p[1];
	guard_add(r->guard_sk, r->pid);
}

/* The restore is over (what is left is ours to end, or nothing): the guard
 * goes. */
static void guard_end(struct criu_glue_restorer *r)
{
	if (r->guard > 0) {
		kill(r->guard, SIGKILL);
		while (waitpid(r->guard, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (r->guard_sk >= 0)
		close(r->guard_sk);
}

int criu_glue_restorer_start(const int *fds, size_t n_fds, struct criu_glue_restorer **ret,
                             struct cryo_error *err)
{
	const char *bin = criu_glue_binary();
	if (!bin)
		return error_set(err, -ENOENT,
		                 "CRIU is not installed (run scripts/setup, or set CRYO_CRIU)");
	if (n_fds > CRIU_GLUE_MAX_INHERIT)
		return error_set(err, -E2BIG, "cannot start CRIU: %zu fds to pass, at most %d",
		                 n_fds, CRIU_GLUE_MAX_INHERIT);
	struct criu_glue_restorer *r = calloc(1, sizeof(*r));
	if (!r)
		return error_set(err, -ENOMEM, "cannot start CRIU: %s", strerror(ENOMEM));
	r->n_fds = n_fds;
	memcpy(r->fds, fds, n_fds * sizeof(*fds));
	int sk[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sk) < 0) {
		int e = -errno;
		free(r);
		return error_set(err, e, "cannot start CRIU: %s", strerror(-e));
	}
	/* posix_spawn, not fork: the caller may hold gigabytes of memory whose
	 * page tables a fork would copy. dup2 of an fd onto itself clears its
	 * O_CLOEXEC in the child only. */
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_adddup2(&fa, sk[1], sk[1]);
	/* Its log is criu-restore.log, given with the request: what it would
	 * print on stdout or stderr (a complaint that its caller went away
	 * before asking anything) is not for the program's or the user's
	 * terminal. */
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	for (size_t i = 0; i < n_fds; i++)
		posix_spawn_file_actions_adddup2(&fa, fds[i], fds[i]);
	/* CRIU needs SIGCHLD; the caller may block signals for a signalfd. */
	sigset_t none, def;
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGCHLD);
	sigaddset(&def, SIGPIPE);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &def);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	char skarg[16];
	snprintf(skarg, sizeof(skarg), "%d", sk[1]);
	char *const argv[] = {(char *)bin, (char *)"swrk", skarg, NULL};
	int e = posix_spawn(&r->pid, bin, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(sk[1]);
	if (e != 0) {
		close(sk[0]);
		free(r);
		return error_set(err, -e, "cannot start '%s': %s", bin, strerror(e));
	}
	r->sk = sk[0];
	guard_start(r);
	*ret = r;
	return 0;
}

/* Reaps it: after its one restore it exits; else it is killed first (then
 * it does not see its socket close, which it would complain about). */
static void restorer_end(struct criu_glue_restorer *r, bool served)
{
	if (r->pid > 0 && !served)
		kill(r->pid, SIGKILL);
	close(r->sk);
	while (r->pid > 0 && waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
		;
	guard_end(r);
	free(r);
}

void criu_glue_restorer_free(struct criu_glue_restorer *r)
{
	if (r)
		restorer_end(r, false);
}

/* Whether r is alive and holds every fd o passes. */
static bool restorer_fits(struct criu_glue_restorer *r, const struct criu_glue_restore_opts *o)
{
	if (waitpid(r->pid, NULL, WNOHANG) != 0) {
		r->pid = 0; /* gone (and reaped now), or not ours: not to be killed */
		return false;
	}
	for (size_t i = 0; i < o->n_inherit; i++) {
		size_t j = 0;
		while (j < r->n_fds && r->fds[j] != o->inherit[i].fd)
			j++;
		if (j == r->n_fds)
			return false;
	}
	return true;
}

static int send_req(int sk, const CriuReq *req)
{
	size_t len = criu_req__get_packed_size(req);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	criu_req__pack(req, buf);
	ssize_t n;
	while ((n = send(sk, buf, len, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EPIPE;
}

/* A restore on its way: what ends the wait for CRIU's answer besides the
 * answer, and what CRIU told of it meanwhile. */
struct restore_wait {
	uint64_t deadline_ns;
	struct criu_glue_lazy *lazy; /* its failure gives the restore up; or NULL */
	const sigset_t *cancel;      /* a pending one gives it up; or NULL */
	pid_t root;                  /* the restored tree's root, once CRIU named it */
	int guard_sk;                /* told the root's PID (guard_start()); or -1 */
	int given_up;                /* why it was given up (a negative errno), or 0 */
	struct cryo_error why;
};

/* Waits until sk has something to read. Every 100 ms (and when the lazy page
 * server's notify fd fires) it looks whether the restore is to be given up:
 * -ETIMEDOUT past the deadline, -ECANCELED when the page server failed (its
 * tasks would wait for pages that never come), -EINTR for a pending signal
 * of w->cancel; w->why says which. */
static int wait_answer(int sk, struct restore_wait *w)
{
	for (;;) {
		struct pollfd p[2] = {{sk, POLLIN, 0}, {-1, POLLIN, 0}};
		if (w->lazy)
			p[1].fd = criu_glue_lazy_notify_fd(w->lazy);
		int n = poll(p, 2, 100);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0 && p[0].revents)
			return 0;
		if (n > 0 && p[1].revents) {
			struct cryo_error lerr = {{0}};
			int r = criu_glue_lazy_finish(w->lazy, &lerr);
			w->lazy = NULL; /* ended, well or not: not to be polled again */
			if (r < 0 && r != -EBUSY)
				return error_set(&w->why, -ECANCELED,
				                 "its memory could not be put in place: %s",
				                 lerr.msg);
		}
		sigset_t pending;
		if (w->cancel && sigpending(&pending) == 0)
			for (int sig = 1; sig < NSIG; sig++)
				if (sigismember(w->cancel, sig) == 1 &&
				    sigismember(&pending, sig) == 1)
					return error_set(&w->why, -EINTR,
					                 "given up for signal %d (%s)", sig,
					                 strsignal(sig));
		if (util_now_ns() >= w->deadline_ns)
			return error_set(&w->why, -ETIMEDOUT,
			                 "CRIU did not finish within %d s; given up",
			                 CRIU_GLUE_RESTORE_TIMEOUT_S);
	}
}

/* CRIU's answer to req, skipping (and acknowledging) notifications; the
 * first of them names the restored tree's root. */
static int recv_resp(int sk, struct restore_wait *w, CriuResp **ret)
{
	for (;;) {
		int r = wait_answer(sk, w);
		if (r < 0) {
			w->given_up = r;
			return r;
		}
		ssize_t len;
		while ((len = recv(sk, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT)) < 0 &&
		       errno == EINTR)
			;
		if (len < 0 && errno == EAGAIN)
			continue;
		if (len <= 0)
			return len < 0 ? -errno : -EPIPE; /* CRIU died */
		_cleanup_free_ uint8_t *buf = malloc((size_t)len);
		if (!buf)
			return -ENOMEM;
		ssize_t n;
		while ((n = recv(sk, buf, (size_t)len, MSG_DONTWAIT)) < 0 && errno == EINTR)
			;
		if (n != len)
			return n < 0 ? -errno : -EPIPE;
		CriuResp *resp = criu_resp__unpack(NULL, (size_t)n, buf);
		if (!resp)
			return -EBADMSG;
		if (resp->type != CRIU_REQ_TYPE__NOTIFY) {
			*ret = resp;
			return 0;
		}
		if (resp->notify && resp->notify->has_pid && resp->notify->pid > 0 &&
		    w->root <= 0) {
			w->root = resp->notify->pid;
			if (w->guard_sk >= 0)
				guard_add(w->guard_sk, w->root);
		}
		criu_resp__free_unpacked(resp, NULL);
		CriuReq ack = CRIU_REQ__INIT;
		ack.type = CRIU_REQ_TYPE__NOTIFY;
		ack.has_notify_success = true;
		ack.notify_success = true;
		r = send_req(sk, &ack);
		if (r < 0)
			return r;
	}
}

/* Ends a restore that failed or was given up, and everything it made: the
 * restored tree's root is the init of its own PID namespace and our child
 * (CRIU makes it its sibling), so SIGKILL to it ends every process of the
 * tree, and CRIU itself is killed too (it would otherwise wait for tasks it
 * traces). Both are reaped, each wait bounded. */
static void restore_kill(struct criu_glue_restorer *rs, pid_t root)
{
	if (root > 0)
		kill(root, SIGKILL);
	restorer_end(rs, false);
	if (root <= 0)
		return;
	/* The namespace's other processes die first; a few ms usually. */
	for (int i = 0; i < 1000; i++) {
		pid_t w = waitpid(root, NULL, WNOHANG);
		if (w == root || (w < 0 && errno != EINTR))
			return;
		usleep(10000);
	}
}

int criu_glue_restore(const struct criu_glue_restore_opts *o, pid_t *ret_pid,
                      struct cryo_error *err)
{
	struct criu_glue_restorer *rs = o->restorer;
	if (o->n_inherit > CRIU_GLUE_MAX_INHERIT) {
		criu_glue_restorer_free(rs);
		return error_set(err, -E2BIG, "cannot restore: %zu fds to pass to CRIU, at most %d",
		                 o->n_inherit, CRIU_GLUE_MAX_INHERIT);
	}
	if (rs && !restorer_fits(rs, o)) {
		criu_glue_restorer_free(rs);
		rs = NULL;
	}
	if (!rs) {
		int fds[CRIU_GLUE_MAX_INHERIT];
		size_t n = 0;
		for (size_t i = 0; i < o->n_inherit; i++)
			fds[n++] = o->inherit[i].fd;
		int r = criu_glue_restorer_start(fds, n, &rs, err);
		if (r < 0)
			return r;
	}
	/* CRIU finds both directories as /proc/OUR_PID/fd/N (SO_PEERCRED). */
	_cleanup_close_ int log_fd = open(o->log_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int images_fd = open(o->images_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (log_fd < 0 || images_fd < 0) {
		int r = -errno;
		restorer_end(rs, false);
		return error_set(err, r, "cannot open '%s': %s",
		                 log_fd < 0 ? o->log_dir : o->images_dir, strerror(-r));
	}
	int lr = fresh_log(log_fd, o->log_dir, o->log_name, err);
	if (lr < 0) {
		restorer_end(rs, false);
		return lr;
	}
	/* Mounts of ours the workload's namespace had at the checkpoint and we
	 * have no longer would fail the restore (mounts.c). */
	size_t gone_mounts = 0;
	lr = criu_glue_drop_gone_mounts(o->images_dir, &gone_mounts, err);
	if (o->gone_mounts)
		*o->gone_mounts = gone_mounts;
	if (lr < 0) {
		restorer_end(rs, false);
		return lr;
	}
	/* The links CRIU opens files unlinked while open by (remap.c). */
	struct remap_links links = {0};
	lr = remap_recreate(o->images_dir, &links, err);
	if (lr < 0) {
		restorer_end(rs, false);
		return lr;
	}
	InheritFd inherit[CRIU_GLUE_MAX_INHERIT], *inherit_p[CRIU_GLUE_MAX_INHERIT];
	size_t n = o->n_inherit;
	for (size_t i = 0; i < n; i++) {
		inherit_fd__init(&inherit[i]);
		inherit[i].key = (char *)o->inherit[i].key;
		inherit[i].fd = o->inherit[i].fd;
		inherit_p[i] = &inherit[i];
	}
	CriuOpts opts = CRIU_OPTS__INIT;
	opts.images_dir_fd = images_fd;
	opts.has_work_dir_fd = true;
	opts.work_dir_fd = log_fd;
	opts.log_file = (char *)o->log_name;
	opts.has_log_level = true;
	opts.log_level = 4;
	opts.has_tcp_established = true;
	opts.tcp_established = o->tcp_established;
	opts.has_tcp_close = true;
	opts.tcp_close = o->tcp_close;
	opts.has_file_locks = true;
	opts.file_locks = true;
	opts.has_lazy_pages = true;
	opts.lazy_pages = o->lazy_pages;
	/* The workload's mount namespace is built again from our root: its
	 * external mounts bound from ours (slaves of ours again where ours are
	 * shared), a /proc of the restored PID namespace mounted afresh
	 * (without a root, CRIU 4.2.1 fails with "BUG at criu/mount.c:48").
	 * Images without a mount namespace restore as before. */
	opts.has_auto_ext_mnt = true;
	opts.auto_ext_mnt = true;
	opts.has_ext_masters = true;
	opts.ext_masters = true;
	opts.root = (char *)"/";
	/* The restored tree becomes the sibling of CRIU: our child. */
	opts.has_rst_sibling = true;
	opts.rst_sibling = true;
	opts.n_inherit_fd = n;
	opts.inherit_fd = inherit_p;
	/* CRIU's notifications (scripts run through RPC) name the restored
	 * tree's root early, before its memory is restored: a restore given up
	 * can end the tree even while CRIU waits for it. */
	opts.has_notify_scripts = true;
	opts.notify_scripts = true;
	CriuReq req = CRIU_REQ__INIT;
	req.type = CRIU_REQ_TYPE__RESTORE;
	req.opts = &opts;
	CriuResp *resp = NULL;
	struct restore_wait w = {
	    .deadline_ns = util_now_ns() + (uint64_t)CRIU_GLUE_RESTORE_TIMEOUT_S * 1000000000u,
	    .lazy = o->lazy,
	    .cancel = o->cancel_signals,
	    .guard_sk = rs->guard_sk,
	};
	int r = send_req(rs->sk, &req);
	if (r == 0)
		r = recv_resp(rs->sk, &w, &resp);
	pid_t pid = 0;
	if (resp && resp->type == CRIU_REQ_TYPE__RESTORE && resp->success && resp->restore)
		pid = resp->restore->pid;
	if (resp)
		criu_resp__free_unpacked(resp, NULL);
	if (pid > 0)
		restorer_end(rs, true);
	else
		restore_kill(rs, w.root);
	/* CRIU removes them after a restore that succeeds. */
	remap_links_drop(&links, pid <= 0);
	unlinkat(log_fd, "stats-restore", 0);
	if (pid <= 0 && w.given_up)
		return error_set(err, w.given_up, "CRIU restore given up: %s (log: '%s/%s')",
		                 w.why.msg, o->log_dir, o->log_name);
	if (pid <= 0)
		return criu_glue_failed(err, 0, "restore", o->log_dir, o->log_name);
	*ret_pid = pid;
	return 0;
}

/* CRIU writes stats-dump into its work directory (here: beside the log).
 * It is [IMG_SERVICE_MAGIC][STATS_MAGIC][u32 len][stats_entry], where
 * stats_entry.dump is a dump_stats_entry of varint fields. */
static int read_dump_stats(const char *dir, struct criu_glue_dump_stats *ret)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/stats-dump", dir);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = util_read_file(path, &buf, &len);
	if (r < 0)
		return r;
	const uint8_t *b = (const uint8_t *)buf, *msg;
	size_t off = pb_entries_start(b, len), msg_len;
	if (pb_next_entry(b, len, &off, &msg, &msg_len) != 1)
		return -EBADMSG;
	memset(ret, 0, sizeof(*ret));
	const uint8_t *p = msg, *end = msg + msg_len;
	struct pb_field f;
	while ((r = pb_next(&p, end, &f)) == 1) {
		if (f.number != PB_STATS_ENTRY_DUMP || f.wire_type != 2)
			continue;
		const uint8_t *q = f.data, *qend = f.data + f.len;
		struct pb_field g;
		while ((r = pb_next(&q, qend, &g)) == 1) {
			if (g.wire_type != 0)
				continue;
			switch (g.number) {
			case PB_DUMP_STATS_ENTRY_FREEZING_TIME:
				ret->freezing_us = (uint32_t)g.varint;
				break;
			case PB_DUMP_STATS_ENTRY_FROZEN_TIME:
				ret->frozen_us = (uint32_t)g.varint;
				break;
			case PB_DUMP_STATS_ENTRY_MEMDUMP_TIME:
				ret->memdump_us = (uint32_t)g.varint;
				break;
			case PB_DUMP_STATS_ENTRY_MEMWRITE_TIME:
				ret->memwrite_us = (uint32_t)g.varint;
				break;
			case PB_DUMP_STATS_ENTRY_PAGES_WRITTEN:
				ret->pages_written = g.varint;
				break;
			default: break;
			}
		}
		if (r < 0)
			return r;
	}
	return r;
}

/* A periodic timerfd whose expiry is pending (unread) when it is dumped has
 * no running timer, so CRIU records it_value 0 and restores it disarmed: the
 * program's periodic timer never fires again. Give such timers an it_value of
 * 1 ns instead, so the restored timer fires at once and then runs on its
 * interval. The change is in place (a one-byte varint 0 becomes 1). */
static bool fix_timerfd_entry(uint8_t *msg, size_t len)
{
	const uint8_t *p = msg, *end = msg + len;
	uint64_t vsec = 1, vnsec = 1, isec = 0, insec = 0;
	uint8_t *vnsec_at = NULL;
	struct pb_field f;
	while (pb_next(&p, end, &f) == 1) {
		if (f.wire_type != 0)
			continue;
		switch (f.number) {
		case PB_TIMERFD_ENTRY_VSEC: vsec = f.varint; break;
		case PB_TIMERFD_ENTRY_VNSEC:
			vnsec = f.varint;
			vnsec_at = f.len == 1 ? msg + (f.data - msg) : NULL;
			break;
		case PB_TIMERFD_ENTRY_ISEC: isec = f.varint; break;
		case PB_TIMERFD_ENTRY_INSEC: insec = f.varint; break;
		default: break;
		}
	}
	if (vsec || vnsec || !(isec || insec) || !vnsec_at)
		return false;
	*vnsec_at = 1;
	return true;
}

static int fix_timerfds(const char *images_dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/files.img", images_dir);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = util_read_file(path, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	/* file_entry.tfd is a timerfd_entry. */
	uint8_t *b = (uint8_t *)buf;
	const uint8_t *msg;
	size_t off = pb_entries_start(b, len), msg_len;
	bool changed = false;
	while ((r = pb_next_entry(b, len, &off, &msg, &msg_len)) == 1) {
		const uint8_t *p = msg, *end = msg + msg_len;
		struct pb_field f;
		while ((r = pb_next(&p, end, &f)) == 1)
			if (f.number == PB_FILE_ENTRY_TFD && f.wire_type == 2)
				changed |= fix_timerfd_entry(b + (f.data - b), f.len);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	if (!changed)
		return 0;
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return util_write_all(fd, buf, len);
}
