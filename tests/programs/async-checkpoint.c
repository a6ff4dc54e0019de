/* Takes ROUNDS checkpoints with cryo_checkpoint_async(), each time waiting
 * on cryo_checkpoint_fd() with poll() for the news that it became durable,
 * then sleeps SLEEP_MS. Prints what it learns at each step. */
#include <cryo.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	int sleep_ms = argc > 2 ? atoi(argv[2]) : 100;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i <= rounds; i++) {
		int r = cryo_checkpoint_async();
		if (r == CRYO_RESTORED) {
			printf("restored from generation %" PRIu64 "\n", cryo_generation());
			continue;
		}
		if (r < 0) {
			printf("checkpoint failed: %s\n", strerror(-r));
			continue;
		}
		printf("dumped generation %" PRIu64 ", running\n", cryo_generation());
		int64_t res = -EAGAIN;
		for (int tries = 0; tries < 300 && res == -EAGAIN; tries++) {
			struct pollfd p = {.fd = cryo_checkpoint_fd(), .events = POLLIN};
			poll(&p, 1, 100);
			res = cryo_checkpoint_result();
		}
		if (res > 0)
			printf("durable generation %" PRId64 "\n", res);
		else
			printf("not durable: %s\n", strerror((int)-res));
		usleep((useconds_t)sleep_ms * 1000);
	}
	printf("done\n");
	return 0;
}
