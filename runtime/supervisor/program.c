/* The program: starting it in its own PID namespace under cryo-init, with
 * its own /proc (a mount namespace), its stdio pipes and control socket (the
 * channels), and finding its PID. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#ifndef CRYO_LIBEXECDIR
#define CRYO_LIBEXECDIR "/usr/local/libexec"
#endif

/* cryo-init is found beside the cryo binary (a build tree) or in libexec. */
static int find_init(char *buf, size_t len)
{
	const char *env = getenv("CRYO_INIT");
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return access(buf, X_OK) == 0 ? 0 : -ENOENT;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (util_format_path(buf, len, "%s/cryo-init", self) == 0 &&
			    access(buf, X_OK) == 0)
				return 0;
		}
	}
	snprintf(buf, len, "%s/cryo/cryo-init", CRYO_LIBEXECDIR);
	return access(buf, X_OK) == 0 ? 0 : -ENOENT;
}

/* ---- starting, and finding the program ------------------------------------ */

static pid_t clone_newpid(void)
{
	struct clone_args args = {.flags = CLONE_NEWPID, .exit_signal = SIGCHLD};
	return (pid_t)syscall(SYS_clone3, &args, sizeof(args));
}

/* In the namespace's init, before cryo-init runs: the program's own /proc. A
 * mount namespace, a copy of ours whose mounts are slaves of ours (what is
 * mounted in it stays in it; what the host mounts or unmounts below a shared
 * mount of its own reaches it, instead of being held there: a network
 * namespace's file under /run/netns, say), with a /proc of the new PID
 * namespace over ours, so /proc/<getpid()> is the program itself. CRIU dumps
 * this namespace with the workload, finding every mount but that /proc as
 * one of ours (external: criu-glue/glue.c), and builds it again at each
 * restore with a /proc of the restored PID namespace. Every file of the
 * workload is opened after this (cryo-init included), so each is on one of
 * the namespace's mounts, as CRIU requires. Returns 0 or a negative errno
 * and the step that failed. */
/* Reads /proc/self/mountinfo into buf (static: this runs in a child after
 * fork); its length, or -1. */
static ssize_t read_mountinfo(char *buf, size_t len)
{
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t have = 0;
	ssize_t n;
	while (have < len - 1 && (n = read(fd, buf + have, len - 1 - have)) > 0)
		have += (size_t)n;
	close(fd);
	buf[have] = '\0';
	return n < 0 || have == len - 1 ? -1 : (ssize_t)have;
}

/* The value of the optional field "tag:N" of one mountinfo line (between
 * the sixth field and " - "), or 0. */
static unsigned long mountinfo_tag(const char *line, const char *tag)
{
	const char *end = strstr(line, " - ");
	size_t t = strlen(tag);
	for (const char *p = strstr(line, tag); p && (!end || p < end); p = strstr(p + 1, tag))
		if (p[-1] == ' ' && p[t] == ':')
			return strtoul(p + t + 1, NULL, 10);
	return 0;
}

/* The mount point of one mountinfo line (its fifth field, with \ooo
 * escapes undone) into mp. */
static bool mountinfo_point(const char *line, char *mp, size_t len)
{
	const char *p = line;
	for (int field = 0; field < 4 && p; field++)
		if ((p = strchr(p, ' ')))
			p++;
	if (!p)
		return false;
	size_t o = 0;
	while (*p && *p != ' ' && *p != '\n' && o < len - 1) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
			mp[o++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 4;
		} else
			mp[o++] = *p++;
	}
	mp[o] = '\0';
	return o > 0 && o < len - 1;
}

static int own_proc(const char **step)
{
	/* Our mounts' peer groups: a copy of a mount that is only a slave here
	 * (cryo itself in a container, or under `unshare -m` with slaves)
	 * would be a slave of a mount CRIU cannot see, and CRIU refuses to
	 * dump it ("has unreachable sharing"): such copies are made private. */
	static char ours[1 << 18], theirs[1 << 18];
	static char mp[PATH_MAX];
	*step = "reading /proc/self/mountinfo";
	if (read_mountinfo(ours, sizeof(ours)) < 0)
		return -EIO;
	*step = "unshare(CLONE_NEWNS)";
	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	*step = "making its mounts slaves of ours";
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return -errno;
	*step = "reading /proc/self/mountinfo";
	if (read_mountinfo(theirs, sizeof(theirs)) < 0)
		return -EIO;
	*step = "making private the mounts only slaves of ours";
	for (char *line = theirs; line && *line;
	     line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		unsigned long master = mountinfo_tag(line, "master");
		if (!master)
			continue;
		bool reachable = false;
		for (const char *o = ours; o && *o && !reachable;
		     o = strchr(o, '\n'), o = o ? o + 1 : NULL)
			reachable = mountinfo_tag(o, "shared") == master;
		if (!reachable && mountinfo_point(line, mp, sizeof(mp)) &&
		    mount(NULL, mp, NULL, MS_PRIVATE, NULL) < 0)
			return -errno;
	}
	*step = "mounting /proc";
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return -errno;
	return 0;
}

/* Starts the program afresh: a new PID namespace whose init is cryo-init,
 * with its own /proc, its channels, its network and CRYO_CONTROL_FD set. */
int program_start(struct supervisor *s)
{
	char init[PATH_MAX];
	if (find_init(init, sizeof(init)) < 0) {
		log_error(
		    "cannot start '%s': cryo-init is missing (looked beside cryo and in %s/cryo; "
		    "reinstall cryo)",
		    s->cfg->name, CRYO_LIBEXECDIR);
		return -ENOENT;
	}
	struct program_ends e;
	int r = channels_make(s, &e);
	if (r < 0) {
		log_error("cannot start '%s': cannot create its pipes: %s", s->cfg->name,
		          strerror(-r));
		return r;
	}
	size_t argc = 0;
	while (s->cfg->argv[argc])
		argc++;
	/* Its argv and environment are made here: between clone and exec the
	 * child may call only what is async-signal-safe, since cryo has other
	 * threads (the lease's keeper, the uploader) that may hold malloc's
	 * lock at the clone; a child that called malloc (setenv did) could
	 * wait for it forever (CI saw one). */
	extern char **environ;
	size_t envc = 0;
	while (environ[envc])
		envc++;
	_cleanup_free_ char **argv = calloc(argc + 2, sizeof(char *));
	_cleanup_free_ char **envp = calloc(envc + 2, sizeof(char *));
	if (!argv || !envp) {
		program_ends_close(&e);
		log_error("cannot start '%s': out of memory", s->cfg->name);
		return -ENOMEM;
	}
	argv[0] = init;
	for (size_t i = 0; i < argc; i++)
		argv[i + 1] = s->cfg->argv[i];
	static char control_env[] = CRYO_CONTROL_FD_ENV "=3";
	size_t n = 0;
	for (size_t i = 0; i < envc; i++)
		if (strncmp(environ[i], CRYO_CONTROL_FD_ENV "=", strlen(CRYO_CONTROL_FD_ENV) + 1) !=
		    0)
			envp[n++] = environ[i];
	envp[n] = control_env;

	/* Ends (EOF) when the child has exec'd cryo-init, or died: until then
	 * it is a copy of cryo in the middle of its set-up, which a checkpoint
	 * must not take (CRIU fails on it, CI saw it: "Can't lookup mount"). */
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0) {
		r = -errno;
		program_ends_close(&e);
		log_error("cannot start '%s': cannot create a pipe: %s", s->cfg->name,
		          strerror(-r));
		return r;
	}
	pid_t pid = clone_newpid();
	if (pid < 0) {
		r = -errno;
		close(ready[0]);
		close(ready[1]);
		program_ends_close(&e);
		log_error("cannot start '%s': clone3(CLONE_NEWPID): %s", s->cfg->name,
		          strerror(-r));
		return r;
	}
	if (pid == 0) {
		/* The namespace's init: its network, stdio and the control socket
		 * in place, nothing else open, default signals. */
		if (s->net.fd >= 0 && setns(s->net.fd, CLONE_NEWNET) < 0)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Every disposition back to its default, ignored ones too: what
		 * reaches the program is what we forward, whatever cryo's caller
		 * ignored (a shell's `cryo run ... &` ignores SIGINT and SIGQUIT),
		 * and it is frozen into every image: a program started with SIGINT
		 * ignored would ignore a later cryo restore's Ctrl-C. */
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
		int high[4];
		for (int i = 0; i < 4; i++)
			high[i] = fcntl(e.fds[i], F_DUPFD, 10);
		for (int i = 0; i < 4; i++)
			if (high[i] < 0 || dup2(high[i], i) < 0)
				_exit(127);
		/* All but 0-3 and the exec's signal (close-on-exec) go. */
		int w = fcntl(ready[1], F_DUPFD_CLOEXEC, 4);
		if (w < 0)
			_exit(127);
		if (w > 4)
			syscall(SYS_close_range, 4U, (unsigned)w - 1, 0U);
		syscall(SYS_close_range, (unsigned)w + 1, ~0U, 0U);
		const char *step;
		int r2 = own_proc(&step);
		if (r2 < 0) {
			dprintf(2,
			        "cryo: cannot start '%s': cannot give it its own /proc: %s: %s "
			        "(cryo makes a mount namespace and mounts proc: run it as root, "
			        "where mounts are allowed)\n",
			        s->cfg->name, step, strerror(-r2));
			_exit(127);
		}
		execve(init, argv, envp);
		_exit(127);
	}
	program_ends_close(&e);
	close(ready[1]);
	struct pollfd pfd = {ready[0], POLLIN, 0};
	char c;
	if (poll(&pfd, 1, 10000) <= 0 || read(ready[0], &c, 1) != 0)
		log_debug("'%s': its init took over 10 s to start", s->cfg->name);
	close(ready[0]);
	__atomic_store_n(&s->init_pid, pid, __ATOMIC_SEQ_CST);
	s->running = true;
	/* The lease's keeper kills what it finds in init_pid: one lost just
	 * before that was not found. */
	if (lease_lost(s))
		kill(pid, SIGKILL);
	channels_watch(s);
	program_publish_pid(s);
	supervisor_set_state(s, "running");
	return 0;
}

bool program_gone(const struct supervisor *s)
{
	/* Its init exited (not reaped yet: that is the loop's, next). */
	siginfo_t si = {0};
	if (waitid(P_PID, (id_t)s->init_pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == s->init_pid)
		return true;
	/* Or the program died and its init has not yet followed: a zombie
	 * among the init's children. (None found says nothing: a kernel
	 * without /proc's children files, or the moment the init reaped it,
	 * which its own exit follows at once.) */
	pid_t pid = program_pid(s);
	if (pid <= 0)
		return false;
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return fd < 0 && errno == ENOENT; /* reaped since we looked */
	buf[n] = '\0';
	const char *end = strrchr(buf, ')'); /* the name may hold anything */
	if (!end || end[1] != ' ')
		return false;
	if (end[2] == 'Z' || end[2] == 'X')
		return true;
	/* Or on its way out: killed while CRIU held it, its memory may be
	 * gone already (CRIU's "Can't open PID/pagemap ...: No such
	 * process") before it is a zombie. The kernel marks such a task
	 * PF_EXITING (0x4) in its flags, the 9th field of stat, from the
	 * start of its exit. */
	unsigned long long flags = 0;
	if (sscanf(end + 2, "%*c %*d %*d %*d %*d %*d %llu", &flags) == 1 && (flags & 0x4))
		return true;
	/* Or a SIGKILL pending that it has not acted on yet. */
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[256];
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long mask;
		if ((sscanf(line, "ShdPnd: %llx", &mask) == 1 ||
		     sscanf(line, "SigPnd: %llx", &mask) == 1) &&
		    (mask & (1ULL << (SIGKILL - 1))))
			return true;
	}
	return false;
}

/* Stops the program with sig, for good: no restore follows its end. */
void supervisor_request_stop(struct supervisor *s, int sig)
{
	s->stopping = true;
	if (s->running)
		kill(s->init_pid, sig);
}
