/* Maps a file shared and writable, closes its fd, and every 20 ms checks
 * that the file (through the mapping) holds the step its memory says it
 * last wrote, then writes the next step into its first and last pages and
 * prints "step N". A file not as it was at the program's checkpoint prints
 * MISMATCH and exits 3.
 * usage: map-writer PATH */
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGES 4

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: map-writer PATH\n");
		return 2;
	}
	long page = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)page * PAGES;
	int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)len) < 0) {
		perror(argv[1]);
		return 1;
	}
	uint64_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	close(fd); /* only the mapping holds the file now */
	uint64_t *last_page = (uint64_t *)((char *)map + len - (size_t)page);
	uint64_t step = 0;
	for (;;) {
		if (map[0] != step || last_page[0] != step) {
			fprintf(stderr,
			        "MISMATCH at step %" PRIu64 ": the file holds %" PRIu64
			        " and %" PRIu64 "\n",
			        step, map[0], last_page[0]);
			return 3;
		}
		step++;
		map[0] = step;
		last_page[0] = step;
		printf("step %" PRIu64 "\n", step);
		fflush(stdout);
		nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
	}
}
