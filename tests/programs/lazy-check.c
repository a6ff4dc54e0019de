/* Checks a lazy restore from inside. Fills SIZE_MB of memory with bytes
 * that each page's number determines (half random, half text), then calls
 * cryo_checkpoint(). The original copy then waits to be killed. A restored
 * copy (cryo_checkpoint() returned 1) calls cryo_checkpoint() again at once,
 * while its memory may still be on its way, and then checks every page, in
 * a scattered order, printing
 *   checked N pages after checkpoint RESULT: ok       (or: page P differs)
 * On SIGUSR1 it checks likewise ("checked N pages on request: ok").
 *
 * With "mm", a restored copy first changes its memory map while its memory
 * is still coming, on a 16 MiB area of its own: it forks a child that reads
 * a part, moves a part (mremap), unmaps a part, drops a part
 * (MADV_DONTNEED: reads zeros), and checks all that, printing
 *   mm changes: ok       (or what went wrong)
 *
 *   lazy-check SIZE_MB [mm]
 */
#include <cryo.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t want_check;

static void on_usr1(int sig)
{
	(void)sig;
	want_check = 1;
}

static void fill_page(uint8_t *p, size_t page)
{
	uint64_t x = 0x9E3779B97F4A7C15ULL ^ (page * 0x100000001B3ULL);
	if (page % 2) {
		for (size_t i = 0; i < PAGE; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			p[i] = (uint8_t)x;
		}
	} else {
		int n = snprintf((char *)p, PAGE, "page %zu ", page);
		for (size_t i = (size_t)n; i < PAGE; i++)
			p[i] = (uint8_t) "the quick brown fox "[i % 20];
	}
}

/* Every page, in an order that jumps around (a stride prime to the count). */
static void check(const uint8_t *mem, size_t pages, const char *when)
{
	uint8_t want[PAGE];
	size_t stride = 7919;
	while (pages % stride == 0)
		stride += 2;
	for (size_t i = 0, page = pages / 2; i < pages; i++, page = (page + stride) % pages) {
		fill_page(want, page);
		if (memcmp(mem + page * PAGE, want, PAGE) != 0) {
			printf("checked %zu pages %s: page %zu differs\n", pages, when, page);
			fflush(stdout);
			return;
		}
	}
	printf("checked %zu pages %s: ok\n", pages, when);
	fflush(stdout);
}

#define EV_PAGES 4096u
#define EV_FIRST (1u << 24) /* its pages' numbers */

static bool same(const uint8_t *p, size_t page)
{
	uint8_t want[PAGE];
	fill_page(want, page);
	return memcmp(p, want, PAGE) == 0;
}

static const char *mm_changes(uint8_t *ev)
{
	pid_t c = fork();
	if (c < 0)
		return "fork failed";
	if (c == 0) {
		for (size_t p = 0; p < 1024; p++)
			if (!same(ev + p * PAGE, EV_FIRST + p))
				_exit(1);
		_exit(0);
	}
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return "the forked child read wrong pages";
	void *dst = mmap(NULL, 1024 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *moved = dst == MAP_FAILED ? MAP_FAILED
	                                   : mremap(ev + 1024 * PAGE, 1024 * PAGE, 1024 * PAGE,
	                                            MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (moved == MAP_FAILED)
		return "mremap failed";
	if (munmap(ev + 2048 * PAGE, 512 * PAGE) < 0 ||
	    madvise(ev + 2560 * PAGE, 512 * PAGE, MADV_DONTNEED) < 0)
		return "munmap or madvise failed";
	for (size_t p = 0; p < 1024; p++)
		if (!same(moved + p * PAGE, EV_FIRST + 1024 + p))
			return "a moved page differs";
	for (size_t i = 0; i < 512 * PAGE; i++)
		if (ev[2560 * PAGE + i] != 0)
			return "a dropped page is not zeros";
	for (size_t p = 3072; p < EV_PAGES; p++)
		if (!same(ev + p * PAGE, EV_FIRST + p))
			return "an untouched page differs";
	for (size_t p = 0; p < 1024; p++)
		if (!same(ev + p * PAGE, EV_FIRST + p))
			return "a page the child read differs";
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: lazy-check SIZE_MB\n");
		return 2;
	}
	size_t pages = ((size_t)atol(argv[1]) << 20) / PAGE;
	bool mm = argc > 2 && strcmp(argv[2], "mm") == 0;
	/* Mapped first: above the rest, which the restore brings back first. */
	uint8_t *ev = mm ? mmap(NULL, EV_PAGES * PAGE, PROT_READ | PROT_WRITE,
	                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
	                 : NULL;
	uint8_t *mem = malloc(pages * PAGE);
	if (!mem || ev == MAP_FAILED)
		return 1;
	for (size_t i = 0; mm && i < EV_PAGES; i++)
		fill_page(ev + i * PAGE, EV_FIRST + i);
	for (size_t i = 0; i < pages; i++)
		fill_page(mem + i * PAGE, i);
	signal(SIGUSR1, on_usr1);
	int r = cryo_checkpoint();
	if (r < 0) {
		printf("checkpoint failed: %d\n", r);
		return 1;
	}
	if (r == 1) {
		if (mm) {
			const char *bad = mm_changes(ev);
			printf("mm changes: %s\n", bad ? bad : "ok");
			fflush(stdout);
		}
		r = cryo_checkpoint();
		char when[64];
		snprintf(when, sizeof(when), "after checkpoint %d", r);
		check(mem, pages, when);
	} else {
		printf("filled %zu pages\n", pages);
		fflush(stdout);
	}
	for (;;) {
		if (want_check) {
			want_check = 0;
			check(mem, pages, "on request");
		}
		usleep(20000);
	}
}
