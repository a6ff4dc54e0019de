/* The physical floor: how long a memcpy of SIZE_MB takes here, into memory
 * already faulted in, and into fresh memory. Prints "memcpy MS fresh MS". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	size_t size = (size_t)atol(argc > 1 ? argv[1] : "256") << 20;
	uint8_t *a = malloc(size), *b = malloc(size);
	if (!a || !b)
		return 1;
	memset(a, 1, size);
	memset(b, 2, size);
	double best = 1e9;
	for (int i = 0; i < 3; i++) {
		double t0 = ms();
		memcpy(b, a, size);
		double t = ms() - t0;
		best = t < best ? t : best;
	}
	uint8_t *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t0 = ms();
	memcpy(c, a, size);
	double fresh = ms() - t0;
	printf("memcpy %.1f fresh %.1f\n", best, fresh);
	return b[size / 2] == 1 && c[size / 3] == 1 ? 0 : 1;
}
