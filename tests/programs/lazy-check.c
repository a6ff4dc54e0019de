/* Checks a lazy restore from inside. Fills SIZE_MB of memory with bytes
 * that each page's number determines (half random, half text), then calls
 * cryo_checkpoint(). The original copy then waits to be killed. A restored
 * copy (cryo_checkpoint() returned 1) calls cryo_checkpoint() again at once,
 * while its memory may still be on its way, and then checks every page, in
 * a scattered order, printing
 *   checked N pages after checkpoint RESULT: ok       (or: page P differs)
 * On SIGUSR1 it checks likewise ("checked N pages on request: ok").
 *
 *   lazy-check SIZE_MB
 */
#include <cryo.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: lazy-check SIZE_MB\n");
		return 2;
	}
	size_t pages = ((size_t)atol(argv[1]) << 20) / PAGE;
	uint8_t *mem = malloc(pages * PAGE);
	if (!mem)
		return 1;
	for (size_t i = 0; i < pages; i++)
		fill_page(mem + i * PAGE, i);
	signal(SIGUSR1, on_usr1);
	int r = cryo_checkpoint();
	if (r < 0) {
		printf("checkpoint failed: %d\n", r);
		return 1;
	}
	if (r == 1) {
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
