/* The program scripts/bench checkpoints. It touches SIZE_MB of memory (half
 * random bytes, half repetitive text) and then reads CLOCK_REALTIME in a
 * tight loop; whenever two readings are more than 2 ms apart it prints
 *   gap START_NS END_NS
 * so the benchmark sees, from inside, how long the program was stopped
 * (CLOCK_REALTIME, unlike CLOCK_MONOTONIC, is not shifted by a restore).
 * After a gap it reads one byte of every page and prints
 *   touched END_NS
 * (and before it, as a gap line, the largest stop while it read, if over
 * 2 ms: a freeze then is seen too)
 * which tells when all its memory is back after a (lazy) restore.
 * On SIGHUP it changes one byte in 1% of its pages and prints "changed".
 * On SIGUSR1 it calls cryo_checkpoint() and prints
 *   call START_NS END_NS RESULT
 * and on SIGUSR2 cryo_checkpoint_async(), printing
 *   async START_NS END_NS RESULT
 * then, when the news arrives on cryo_checkpoint_fd(),
 *   durable END_NS RESULT
 *
 *   bench-target SIZE_MB
 */
#include <cryo.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t want_checkpoint;

static volatile sig_atomic_t want_change;

static void on_usr(int sig)
{
	if (sig == SIGHUP)
		want_change = 1;
	else
		want_checkpoint = sig == SIGUSR1 ? 1 : 2;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench-target SIZE_MB\n");
		return 2;
	}
	size_t size = (size_t)atol(argv[1]) << 20;
	uint8_t *mem = malloc(size);
	if (!mem)
		return 1;
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (size_t i = 0; i + 8 <= size / 2; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(mem + i, &x, 8);
	}
	static const char text[] = "cryo keeps long-running programs alive across crashes. ";
	for (size_t i = size / 2; i < size; i++)
		mem[i] = (uint8_t)text[(i - size / 2) % (sizeof(text) - 1)];
	signal(SIGUSR1, on_usr);
	signal(SIGUSR2, on_usr);
	signal(SIGHUP, on_usr);
	bool waiting = false;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %zu\n", size >> 20);

	uint64_t last = now_ns();
	volatile uint8_t sink = 0;
	for (;;) {
		uint64_t t = now_ns();
		if (t - last > 2000000) {
			printf("gap %llu %llu\n", (unsigned long long)last, (unsigned long long)t);
			/* A stop while it reads (a checkpoint's freeze) is a gap too:
			 * the largest one inside, after it. */
			uint64_t was = t, in_s = 0, in_e = 0;
			for (size_t i = 0; i < size; i += 4096) {
				sink ^= mem[i];
				if ((i >> 12) % 256 == 255) {
					uint64_t now = now_ns();
					if (now - was > in_e - in_s)
						in_s = was, in_e = now;
					was = now;
				}
			}
			t = now_ns();
			if (in_e - in_s > 2000000)
				printf("gap %llu %llu\n", (unsigned long long)in_s,
				       (unsigned long long)in_e);
			printf("touched %llu\n", (unsigned long long)t);
		}
		if (want_change) {
			want_change = 0;
			size_t pages = size / 4096;
			for (size_t k = 0; k < pages / 100; k++) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				mem[(x % pages) * 4096] ^= 0xff;
			}
			printf("changed\n");
			t = now_ns();
		}
		if (want_checkpoint) {
			bool async = want_checkpoint == 2;
			want_checkpoint = 0;
			uint64_t t0 = now_ns();
			int r = async ? cryo_checkpoint_async() : cryo_checkpoint();
			t = now_ns();
			printf("%s %llu %llu %d\n", async ? "async" : "call",
			       (unsigned long long)t0, (unsigned long long)t, r);
			waiting = async && r == 0;
		}
		if (waiting) {
			/* An event loop would poll this fd with its others. */
			struct pollfd p = {.fd = cryo_checkpoint_fd(), .events = POLLIN};
			if (poll(&p, 1, 0) == 1) {
				long long res = (long long)cryo_checkpoint_result();
				if (res != -EAGAIN) {
					t = now_ns();
					printf("durable %llu %lld\n", (unsigned long long)t, res);
					waiting = false;
				}
			}
		}
		last = t;
	}
}
