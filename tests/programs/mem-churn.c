/* Changes its memory at random between checkpoints and checks, after each
 * restore, that every page came back as it was: the test of checkpoints that
 * send only what was written since the one before (criu-glue/pages.h).
 *
 *   mem-churn ROUNDS SEED
 *
 * Each round, the program (and a child of fork(), told through a pipe)
 * writes random pages of its mappings, maps new ones, unmaps whole ones and
 * parts of others, moves and grows some with mremap(), drops ranges with
 * madvise(MADV_DONTNEED), makes some read-only and writable again, then
 * keeps a digest of all of it (in its own memory, so that a restore brings
 * it back too) and calls cryo_checkpoint(). Every few rounds the child is
 * replaced by a new one. After a restore each recomputes its digest and
 * compares. Prints, one per line:
 *   round N checkpointed GEN
 *   round N restored GEN: parent ok|MISMATCH, child ok|MISMATCH
 *   round N checkpoint failed: REASON
 *   done
 */
#include <cryo.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE      4096u
#define MAX_REGS  64
#define BIG_PAGES 4096u /* a 16 MiB mapping written a little each round */

struct region {
	uint8_t *base;
	size_t pages;
	bool readonly;
};

/* Everything a restore must bring back, in this process's memory. */
static struct state {
	uint64_t rng;
	struct region regs[MAX_REGS];
	int n;
	uint64_t digest;
} st;

static uint64_t next(void)
{
	/* xorshift64* */
	st.rng ^= st.rng >> 12;
	st.rng ^= st.rng << 25;
	st.rng ^= st.rng >> 27;
	return st.rng * 2685821657736338717ull;
}

static size_t below(size_t n)
{
	return n ? (size_t)(next() % n) : 0;
}

static uint64_t digest_all(void)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < st.n; i++) {
		const struct region *r = &st.regs[i];
		h = (h ^ (uint64_t)r->pages) * 1099511628211ull;
		const uint64_t *w = (const uint64_t *)r->base;
		for (size_t k = 0; k < r->pages * PAGE / 8; k++)
			h = (h ^ w[k]) * 1099511628211ull;
	}
	return h;
}

static void writable(struct region *r)
{
	if (r->readonly && mprotect(r->base, r->pages * PAGE, PROT_READ | PROT_WRITE) == 0)
		r->readonly = false;
}

static void scribble(struct region *r, size_t pages)
{
	writable(r);
	for (size_t i = 0; i < pages; i++) {
		uint64_t *p = (uint64_t *)(r->base + below(r->pages) * PAGE);
		size_t words = 1 + below(PAGE / 8);
		for (size_t k = 0; k < words; k++)
			p[k] = next();
	}
}

static bool add_region(size_t pages)
{
	if (st.n == MAX_REGS)
		return false;
	void *m =
	    mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return false;
	st.regs[st.n++] = (struct region){m, pages, false};
	return true;
}

static void drop_region(int i)
{
	munmap(st.regs[i].base, st.regs[i].pages * PAGE);
	st.regs[i] = st.regs[--st.n];
}

/* One random change; region 0 (the big one) is only ever written. */
static void change(void)
{
	int i = st.n > 1 ? 1 + (int)below((size_t)st.n - 1) : 0;
	struct region *r = &st.regs[i];
	switch (below(st.n > 1 ? 8 : 2)) {
	case 0: /* a few pages of the big one */ scribble(&st.regs[0], 1 + below(24)); break;
	case 1: /* a new mapping, partly written */
		if (add_region(1 + below(256)))
			scribble(&st.regs[st.n - 1], 1 + below(16));
		break;
	case 2: /* some of a small one */ scribble(r, 1 + below(8)); break;
	case 3: /* gone whole, or a middle part (two mappings left) */
		if (r->pages < 3 || st.n == MAX_REGS || below(2)) {
			drop_region(i);
		} else {
			size_t at = 1 + below(r->pages - 2), len = 1 + below(r->pages - at - 1);
			munmap(r->base + at * PAGE, len * PAGE);
			st.regs[st.n++] = (struct region){r->base + (at + len) * PAGE,
			                                  r->pages - at - len, r->readonly};
			r->pages = at;
		}
		break;
	case 4: { /* moved or resized by mremap() */
		size_t pages = 1 + below(2 * r->pages + 8);
		void *m = mremap(r->base, r->pages * PAGE, pages * PAGE, MREMAP_MAYMOVE);
		if (m != MAP_FAILED) {
			r->base = m;
			r->pages = pages;
			scribble(r, 1);
		}
		break;
	}
	case 5: { /* pages dropped: they read as zeros now */
		size_t at = below(r->pages), len = 1 + below(r->pages - at);
		madvise(r->base + at * PAGE, len * PAGE, MADV_DONTNEED);
		if (below(2))
			scribble(r, 1);
		break;
	}
	case 6: /* read-only for a while */
		if (!r->readonly && mprotect(r->base, r->pages * PAGE, PROT_READ) == 0)
			r->readonly = true;
		break;
	default: /* the big one, dropped in part */
		madvise(st.regs[0].base + below(BIG_PAGES - 64) * PAGE, 64 * PAGE, MADV_DONTNEED);
		break;
	}
}

static void churn(void)
{
	for (int k = 0; k < 24; k++)
		change();
	st.digest = digest_all();
}

static void setup(uint64_t seed)
{
	st.rng = seed | 1;
	if (!add_region(BIG_PAGES)) {
		perror("mmap");
		exit(1);
	}
	for (size_t p = 0; p < BIG_PAGES; p++)
		*(uint64_t *)(st.regs[0].base + p * PAGE) = next();
	for (int k = 0; k < 8; k++)
		add_region(1 + below(64));
}

/* The child: churns when told 'c' (answering 'k'), checks when told 'v'
 * (answering 'y' or 'n'), ends at the pipe's end. */
static void child_main(int in, int out, uint64_t seed)
{
	for (int i = st.n - 1; i >= 0; i--)
		drop_region(i);
	setup(seed);
	for (;;) {
		char c, a;
		ssize_t n = read(in, &c, 1);
		if (n == 0)
			_exit(0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		if (c == 'c') {
			churn();
			a = 'k';
		} else {
			a = digest_all() == st.digest ? 'y' : 'n';
		}
		if (write(out, &a, 1) != 1)
			_exit(1);
	}
}

static struct {
	pid_t pid;
	int to, from;
} kid = {0, -1, -1};

static void new_child(uint64_t seed)
{
	if (kid.pid > 0) {
		close(kid.to);
		close(kid.from);
		waitpid(kid.pid, NULL, 0);
	}
	int down[2], up[2];
	if (pipe(down) < 0 || pipe(up) < 0) {
		perror("pipe");
		exit(1);
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		close(down[1]);
		close(up[0]);
		child_main(down[0], up[1], seed);
	}
	close(down[0]);
	close(up[1]);
	kid.pid = pid;
	kid.to = down[1];
	kid.from = up[0];
}

static char ask_child(char c)
{
	char a = '?';
	if (write(kid.to, &c, 1) != 1 || read(kid.from, &a, 1) != 1)
		return '?';
	return a;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: mem-churn ROUNDS SEED\n");
		return 2;
	}
	int rounds = atoi(argv[1]);
	uint64_t seed = strtoull(argv[2], NULL, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	setup(seed);
	new_child(seed * 31 + 7);
	for (int round = 1; round <= rounds; round++) {
		if (round % 4 == 0)
			new_child(seed * 31 + (uint64_t)round);
		churn();
		if (ask_child('c') != 'k') {
			printf("round %d: the child does not answer\n", round);
			return 1;
		}
		int r = cryo_checkpoint();
		if (r == CRYO_RESTORED) {
			bool mine = digest_all() == st.digest;
			char theirs = ask_child('v');
			printf("round %d restored %" PRIu64 ": parent %s, child %s\n", round,
			       cryo_generation(), mine ? "ok" : "MISMATCH",
			       theirs == 'y' ? "ok" : "MISMATCH");
		} else if (r < 0) {
			printf("round %d checkpoint failed: %s\n", round, strerror(-r));
		} else {
			printf("round %d checkpointed %" PRIu64 "\n", round, cryo_generation());
		}
	}
	printf("done\n");
	return 0;
}
