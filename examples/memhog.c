/* memhog: touches SIZE_MB of memory, half random bytes and half repetitive
 * text, so that compression has realistic work, then loops: each round it
 * changes CHANGE_PERMILLE of its pages, calls cryo_checkpoint() and prints
 * how long the call took. Used by scripts/bench and the demo.
 *
 *   memhog SIZE_MB [ROUNDS] [CHANGE_PERMILLE] [SLEEP_MS]
 */
#include <cryo.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: memhog SIZE_MB [ROUNDS] [CHANGE_PERMILLE] [SLEEP_MS]\n");
		return 2;
	}
	size_t size = (size_t)atol(argv[1]) << 20;
	long rounds = argc > 2 ? atol(argv[2]) : 1;
	long permille = argc > 3 ? atol(argv[3]) : 10;
	long sleep_ms = argc > 4 ? atol(argv[4]) : 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	uint8_t *mem = malloc(size);
	if (!mem) {
		perror("memhog");
		return 1;
	}
	size_t half = size / 2;
	for (size_t i = 0; i + 8 <= half; i += 8) {
		uint64_t v = next();
		memcpy(mem + i, &v, 8);
	}
	static const char text[] = "cryo keeps long-running programs alive across crashes. ";
	for (size_t i = half; i < size; i++)
		mem[i] = (uint8_t)text[(i - half) % (sizeof(text) - 1)];
	printf("ready %zu MiB\n", size >> 20);

	for (long r = 0; r < rounds; r++) {
		size_t pages = size / 4096, change = pages * (size_t)permille / 1000;
		for (size_t k = 0; k < change; k++)
			mem[(next() % pages) * 4096] ^= 0xff;
		double t0 = now_ms();
		int rc = cryo_checkpoint();
		double t1 = now_ms();
		printf("checkpoint %ld rc %d generation %" PRIu64 " took %.1f ms\n", r, rc,
		       cryo_generation(), t1 - t0);
		if (sleep_ms > 0)
			usleep((useconds_t)sleep_ms * 1000);
	}
	uint64_t sum = 0;
	for (size_t i = 0; i < size; i += 4096)
		sum += mem[i];
	printf("done sum %" PRIu64 "\n", sum);
	return 0;
}
