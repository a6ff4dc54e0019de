/* The lazy pages of a task as its memory map changes (criu-glue/ranges.c):
 * each case against a page-by-page model. */
#include "ranges.h"
#include "test.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define P      4096u
#define NPAGES 64u /* the model: page p of [0, NPAGES * P) */

/* model[p]: the dump-time address of what page p must get, or 0 if none */
static void model_of(struct ranges *s, uint64_t *model)
{
	memset(model, 0, NPAGES * sizeof(*model));
	for (size_t i = 0; i < s->n; i++) {
		const struct range *x = &s->r[i];
		CHECK(x->start < x->end);
		CHECK(i == 0 || s->r[i - 1].end <= x->start);
		for (uint64_t a = x->start; a < x->end; a += P)
			model[a / P] = x->img + (a - x->start) + 1;
	}
}

static void check_same(struct ranges *s, const uint64_t *want)
{
	uint64_t got[NPAGES];
	model_of(s, got);
	for (unsigned p = 0; p < NPAGES; p++)
		if (got[p] != want[p]) {
			fprintf(stderr, "page %u: got %llu, want %llu\n", p,
			        (unsigned long long)got[p], (unsigned long long)want[p]);
			CHECK(got[p] == want[p]);
			return;
		}
	for (unsigned p = 0; p < NPAGES; p++) {
		struct range *x = ranges_find(s, (uint64_t)p * P + 5);
		CHECK((x != NULL) == (want[p] != 0));
	}
}

static void setup(struct ranges *s, uint64_t *want)
{
	*s = (struct ranges){0};
	/* [2, 10), [12, 20) moved from 40, [20, 30) */
	CHECK(ranges_append(s, (struct range){2 * P, 10 * P, 2 * P}) == 0);
	CHECK(ranges_append(s, (struct range){12 * P, 20 * P, 40 * P}) == 0);
	CHECK(ranges_append(s, (struct range){20 * P, 30 * P, 20 * P}) == 0);
	CHECK(ranges_append(s, (struct range){25 * P, 31 * P, 25 * P}) == -EINVAL);
	model_of(s, want);
}

static void model_cut(uint64_t *want, unsigned from, unsigned to)
{
	for (unsigned p = from; p < to && p < NPAGES; p++)
		want[p] = 0;
}

static void model_move(uint64_t *want, unsigned from, unsigned to, unsigned len)
{
	uint64_t tmp[NPAGES];
	memcpy(tmp, want, sizeof(tmp));
	model_cut(want, from, from + len);
	model_cut(want, to, to + len);
	for (unsigned i = 0; i < len; i++)
		want[to + i] = tmp[from + i];
}

static void test_cut(void)
{
	/* every cut of [a, b) within the model */
	for (unsigned a = 0; a < 34; a += 3)
		for (unsigned b = a + 1; b < 36; b += 5) {
			struct ranges s;
			uint64_t want[NPAGES];
			setup(&s, want);
			CHECK(ranges_cut(&s, (uint64_t)a * P, (uint64_t)b * P) == 0);
			model_cut(want, a, b);
			check_same(&s, want);
			ranges_free(&s);
		}
}

static void test_move(void)
{
	/* moves of every part, up and down, onto free and onto lazy pages */
	unsigned tos[] = {0, 5, 33, 40};
	for (unsigned a = 0; a < 30; a += 4)
		for (unsigned len = 1; len < 14; len += 6)
			for (size_t t = 0; t < sizeof(tos) / sizeof(tos[0]); t++) {
				unsigned to = tos[t];
				if ((to < a + len && a < to + len) || to + len > NPAGES)
					continue; /* mremap refuses overlaps */
				struct ranges s;
				uint64_t want[NPAGES];
				setup(&s, want);
				CHECK(ranges_move(&s, (uint64_t)a * P, (uint64_t)to * P,
				                  (uint64_t)len * P) == 0);
				model_move(want, a, to, len);
				check_same(&s, want);
				ranges_free(&s);
			}
}

static void test_copy(void)
{
	struct ranges s, c;
	uint64_t want[NPAGES];
	setup(&s, want);
	CHECK(ranges_copy(&c, &s) == 0);
	CHECK(ranges_cut(&s, 0, NPAGES * P) == 0);
	CHECK(s.n == 0);
	check_same(&c, want);
	ranges_free(&s);
	ranges_free(&c);
}

TEST_MAIN(test_cut, test_move, test_copy)
