/* Takes ROUNDS checkpoints with cryo_checkpoint(), sleeping SLEEP_MS after
 * each. After each, a child of fork() makes every call, which must fail with
 * -ENOTCONN and leave its parent's control socket alone, so that the
 * parent's next checkpoint works. Prints what each learns. */
#include <cryo.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* In the child: every call, and what they said. */
static void child(void)
{
	int sync = cryo_checkpoint();
	int async = cryo_checkpoint_async();
	int fd = cryo_checkpoint_fd();
	int64_t result = cryo_checkpoint_result();
	if (sync == -ENOTCONN && async == -ENOTCONN && fd == -ENOTCONN && result == -ENOTCONN)
		printf("child: not connected, generation %" PRIu64 "\n", cryo_generation());
	else
		printf("child: cryo_checkpoint %d, _async %d, _fd %d, _result %" PRId64 "\n", sync,
		       async, fd, result);
	_exit(0);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	int sleep_ms = argc > 2 ? atoi(argv[2]) : 100;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("libcryo %s\n", cryo_version());
	for (int i = 1; i <= rounds; i++) {
		int r = cryo_checkpoint();
		if (r == CRYO_RESTORED)
			printf("restored from generation %" PRIu64 "\n", cryo_generation());
		else if (r < 0)
			printf("checkpoint failed: %s\n", strerror(-r));
		else
			printf("checkpointed generation %" PRIu64 "\n", cryo_generation());
		pid_t pid = fork();
		if (pid == 0)
			child();
		if (pid < 0) {
			printf("fork: %s\n", strerror(errno));
			return 1;
		}
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		usleep((useconds_t)sleep_ms * 1000);
	}
	printf("done\n");
	return 0;
}
