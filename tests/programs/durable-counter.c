/* A counter whose every value is made durable before anyone hears of it:
 * each round it counts one up, takes a checkpoint with cryo_checkpoint()
 * (which returns once the image is durable: with --store-sync, once the
 * store holds it and, with --lease, once it is published), and only then
 * appends the value to LOG (opened, appended to and closed each time, so
 * that it is no file the program holds). A copy restored from a checkpoint
 * appends that checkpoint's value again (it cannot know whether the copy
 * before it did), so a client reading LOG sees a sequence that never goes
 * down as long as at most one copy runs; two copies at once, or a copy
 * restored from anything but the newest durable checkpoint, make it go down.
 * A round whose checkpoint fails appends nothing.
 *
 * Usage: durable-counter LOG [INTERVAL_MS] */
#include <cryo.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void append(const char *log, unsigned long n, const char *how)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "%lu %s\n", n, how);
	int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, (size_t)len) != len) {
		perror(log);
		exit(1);
	}
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: durable-counter LOG [INTERVAL_MS]\n");
		return 2;
	}
	const char *log = argv[1];
	long interval_ms = argc > 2 ? atol(argv[2]) : 100;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned long n = 1;; n++) {
		int r = cryo_checkpoint();
		if (r == CRYO_CHECKPOINTED || r == CRYO_RESTORED)
			append(log, n, r == CRYO_RESTORED ? "restored" : "durable");
		else
			printf("%lu: checkpoint failed: %s\n", n, strerror(-r));
		usleep((useconds_t)interval_ms * 1000);
	}
}
