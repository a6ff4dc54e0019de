/* cryo-init: PID 1 of a workload's PID namespace. It starts the program as
 * PID 2, forwards the signals a program expects to receive (PID 1 itself
 * ignores signals it has no handler for), reaps orphans, and exits with the
 * program's status: its exit code, or 128 + the signal that killed it.
 * It is part of every checkpoint, so it stays tiny and holds no other fd than
 * the program's stdio. */
#include "protocol.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig)
{
	if (child > 0)
		kill(child, sig);
}

int main(int argc, char **argv)
{
	static const int forwarded[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT,
	                                SIGUSR1, SIGUSR2, SIGWINCH};

	if (argc < 2) {
		fprintf(stderr, "cryo-init: usage: cryo-init PROGRAM [ARGS...]\n");
		return 2;
	}
	/* The namespace ends with its supervisor: no program is left running
	 * unsupervised. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	setsid();

	struct sigaction sa = {.sa_handler = forward, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);

	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "cryo-init: fork: %s\n", strerror(errno));
		return 127;
	}
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		execvp(argv[1], argv + 1);
		fprintf(stderr, "cryo-init: cannot execute '%s': %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	child = pid;
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaction(forwarded[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);

	/* The control socket is the program's alone. */
	const char *s = getenv(CRYO_CONTROL_FD_ENV);
	if (s)
		close(atoi(s));

	for (;;) {
		int status;
		pid_t w = wait(&status);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return 127;
		}
		if (w != child)
			continue;
		if (WIFEXITED(status))
			return WEXITSTATUS(status);
		return 128 + WTERMSIG(status);
	}
}
