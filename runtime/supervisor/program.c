/* The program: starting it in its own PID namespace under cryo-init, its
 * stdio pipes and control socket (the channels), and finding its PID. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <fcntl.h>
#include <linux/sched.h>
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

/* Starts the program afresh: a new PID namespace whose init is cryo-init,
 * with its channels, its network and CRYO_CONTROL_FD set. */
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

	pid_t pid = clone_newpid();
	if (pid < 0) {
		r = -errno;
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
		syscall(SYS_close_range, 4U, ~0U, 0U);
		setenv(CRYO_CONTROL_FD_ENV, "3", 1);
		char **argv = calloc(argc + 2, sizeof(char *));
		if (!argv)
			_exit(127);
		argv[0] = init;
		for (size_t i = 0; i < argc; i++)
			argv[i + 1] = s->cfg->argv[i];
		execv(init, argv);
		_exit(127);
	}
	program_ends_close(&e);
	s->init_pid = pid;
	s->running = true;
	channels_watch(s);
	program_publish_pid(s);
	supervisor_set_state(s, "running");
	return 0;
}

/* Stops the program with sig, for good: no restore follows its end. */
void supervisor_request_stop(struct supervisor *s, int sig)
{
	s->stopping = true;
	if (s->running)
		kill(s->init_pid, sig);
}
