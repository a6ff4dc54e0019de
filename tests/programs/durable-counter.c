/* A counter whose every value is made durable before anyone hears of it,
 * and a heartbeat that tells which copy of it runs, for the failover tests.
 *
 * Every INTERVAL_MS (or once the last one is durable, if that takes longer)
 * it counts one up and takes a checkpoint with
 * cryo_checkpoint_async(); only when the news comes that the image is
 * durable (with --store-sync: in the store and, with --lease, published)
 * does it append "N durable TOKEN" to LOG. A copy restored from a checkpoint
 * appends "N restored TOKEN" with that checkpoint's value, under a new
 * TOKEN (random, one per copy). Every INTERVAL_MS, whatever the checkpoints
 * do, it appends "alive TOKEN". LOG is opened, appended to and closed each
 * time (no file the program holds).
 *
 * A reader of LOG sees: the values never go down as long as each restore
 * takes the newest durable checkpoint; and a copy's token never appears
 * again once another's has, as long as at most one copy runs at any
 * instant.
 *
 * Usage: durable-counter LOG [INTERVAL_MS] */
#include <cryo.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static const char *log_path;

static void append(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, (size_t)len) != len) {
		perror(log_path);
		exit(1);
	}
	close(fd);
}

static uint64_t new_token(void)
{
	uint64_t t = 0;
	if (getrandom(&t, sizeof(t), 0) != (ssize_t)sizeof(t))
		exit(1);
	return t;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: durable-counter LOG [INTERVAL_MS]\n");
		return 2;
	}
	log_path = argv[1];
	int interval_ms = argc > 2 ? atoi(argv[2]) : 100;
	setvbuf(stdout, NULL, _IOLBF, 0);
	uint64_t token = new_token();
	unsigned long n = 0;
	bool pending = false;
	struct timespec next = {0};
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		bool due = now.tv_sec > next.tv_sec ||
		           (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec);
		if (!pending && due) {
			long ns = now.tv_nsec + interval_ms * 1000000L;
			next.tv_sec = now.tv_sec + ns / 1000000000L;
			next.tv_nsec = ns % 1000000000L;
			n++;
			int r = cryo_checkpoint_async();
			if (r == CRYO_RESTORED) {
				token = new_token();
				append("%lu restored %016" PRIx64 "\n", n, token);
			} else if (r == CRYO_CHECKPOINTED) {
				pending = true;
			} else {
				printf("%lu: checkpoint failed: %s\n", n, strerror(-r));
			}
		}
		struct pollfd p = {.fd = cryo_checkpoint_fd(), .events = POLLIN};
		if (p.fd >= 0)
			poll(&p, 1, interval_ms);
		else
			usleep((useconds_t)interval_ms * 1000);
		if (pending) {
			int64_t res = cryo_checkpoint_result();
			if (res > 0) {
				append("%lu durable %016" PRIx64 "\n", n, token);
				pending = false;
			} else if (res != -EAGAIN) {
				printf("%lu: not durable: %s\n", n, strerror((int)-res));
				pending = false;
			}
		}
		append("alive %016" PRIx64 "\n", token);
	}
}
