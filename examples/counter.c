/* counter: a loop that computes a running hash over STEPS steps and calls
 * cryo_checkpoint() every EVERY steps. Killed and restored, it must finish
 * with the same result as an uninterrupted run.
 *
 *   counter STEPS EVERY [STEP_MS]
 */
#include <cryo.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: counter STEPS EVERY [STEP_MS]\n");
		return 2;
	}
	long steps = atol(argv[1]), every = atol(argv[2]);
	long step_ms = argc > 3 ? atol(argv[3]) : 10;
	uint64_t hash = 1469598103934665603ULL;
	setvbuf(stdout, NULL, _IOLBF, 0);

	for (long i = 1; i <= steps; i++) {
		hash = (hash ^ (uint64_t)i) * 1099511628211ULL;
		printf("step %ld\n", i);
		struct timespec ts = {step_ms / 1000, (step_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		if (every > 0 && i % every == 0) {
			int r = cryo_checkpoint();
			if (r == CRYO_RESTORED)
				printf("restored at step %ld from generation %" PRIu64 "\n", i,
				       cryo_generation());
			else if (r == CRYO_CHECKPOINTED)
				printf("checkpointed at step %ld as generation %" PRIu64 "\n", i,
				       cryo_generation());
			else
				printf("checkpoint at step %ld failed: %s\n", i, strerror(-r));
		}
	}
	printf("result %016" PRIx64 "\n", hash);
	return 0;
}
