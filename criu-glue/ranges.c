#include "ranges.h"
#include "cleanup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int reserve(struct ranges *s, size_t more)
{
	if (s->n + more <= s->cap)
		return 0;
	size_t cap = s->cap ? s->cap * 2 : 64;
	while (cap < s->n + more)
		cap *= 2;
	struct range *r = realloc(s->r, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	s->r = r;
	s->cap = cap;
	return 0;
}

/* The first range that ends after addr. */
static size_t after(const struct ranges *s, uint64_t addr)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->r[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int ranges_append(struct ranges *s, struct range x)
{
	if (x.end <= x.start || (s->n && s->r[s->n - 1].end > x.start))
		return -EINVAL;
	if (reserve(s, 1) < 0)
		return -ENOMEM;
	s->r[s->n++] = x;
	return 0;
}

struct range *ranges_find(struct ranges *s, uint64_t addr)
{
	size_t i = after(s, addr);
	return i < s->n && s->r[i].start <= addr ? &s->r[i] : NULL;
}

int ranges_cut(struct ranges *s, uint64_t from, uint64_t to)
{
	for (size_t i = after(s, from); i < s->n && s->r[i].start < to;) {
		struct range *x = &s->r[i];
		if (x->start < from && x->end > to) { /* a hole in the middle */
			if (reserve(s, 1) < 0)
				return -ENOMEM;
			x = &s->r[i];
			memmove(x + 2, x + 1, (s->n - i - 1) * sizeof(*x));
			x[1] = (struct range){to, x->end, x->img + (to - x->start)};
			x->end = from;
			s->n++;
			return 0;
		}
		if (x->start < from) {
			x->end = from;
			i++;
		} else if (x->end > to) {
			x->img += to - x->start;
			x->start = to;
			i++;
		} else {
			memmove(x, x + 1, (s->n - i - 1) * sizeof(*x));
			s->n--;
		}
	}
	return 0;
}

static int insert(struct ranges *s, struct range x)
{
	if (reserve(s, 1) < 0)
		return -ENOMEM;
	size_t i = after(s, x.start);
	memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(x));
	s->r[i] = x;
	s->n++;
	return 0;
}

int ranges_move(struct ranges *s, uint64_t from, uint64_t to, uint64_t len)
{
	size_t i = after(s, from), j = i;
	while (j < s->n && s->r[j].start < from + len)
		j++;
	_cleanup_free_ struct range *m = j > i ? malloc((j - i) * sizeof(*m)) : NULL;
	if (j > i && !m)
		return -ENOMEM;
	size_t k = 0;
	for (; i < j; i++) {
		struct range x = s->r[i];
		if (x.start < from) {
			x.img += from - x.start;
			x.start = from;
		}
		if (x.end > from + len)
			x.end = from + len;
		x.start = x.start - from + to;
		x.end = x.end - from + to;
		m[k++] = x;
	}
	int r = ranges_cut(s, from, from + len);
	if (r == 0)
		r = ranges_cut(s, to, to + len);
	for (size_t q = 0; q < k && r == 0; q++)
		r = insert(s, m[q]);
	return r;
}

int ranges_copy(struct ranges *dst, const struct ranges *src)
{
	*dst = (struct ranges){0};
	if (reserve(dst, src->n) < 0)
		return -ENOMEM;
	if (src->n)
		memcpy(dst->r, src->r, src->n * sizeof(*src->r));
	dst->n = src->n;
	return 0;
}

void ranges_free(struct ranges *s)
{
	free(s->r);
	*s = (struct ranges){0};
}
