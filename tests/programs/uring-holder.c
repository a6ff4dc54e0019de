/* Holds an io_uring instance (set up with the raw syscall, no liburing) and
 * prints a tick every 50 ms: something CRIU cannot checkpoint. */
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	long fd = syscall(__NR_io_uring_setup, 8, &p);
	if (fd < 0) {
		perror("io_uring_setup");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long i = 1;; i++) {
		printf("%ld\n", i);
		usleep(50000);
	}
}
