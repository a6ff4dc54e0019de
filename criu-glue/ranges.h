/* The lazy pages of a task still to be put in place, as the task's memory
 * map changes under them (mremap moves them, munmap and MADV_DONTNEED take
 * them away). Internal to criu-glue (lazy.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* [start, end) in the task now, which held [img, img + end - start) at
 * dump time. */
struct range {
	uint64_t start, end, img;
};

struct ranges {
	struct range *r; /* sorted by start, disjoint */
	size_t n, cap;
};

/* Appends x, which starts at or after the end of the last range. */
int ranges_append(struct ranges *s, struct range x);

/* The range that holds addr, or NULL. */
struct range *ranges_find(struct ranges *s, uint64_t addr);

/* Takes [from, to) out. */
int ranges_cut(struct ranges *s, uint64_t from, uint64_t to);

/* mremap moved [from, from + len) to [to, to + len) (which it emptied). */
int ranges_move(struct ranges *s, uint64_t from, uint64_t to, uint64_t len);

/* A copy of src (a fork's child starts with its parent's). */
int ranges_copy(struct ranges *dst, const struct ranges *src);

void ranges_free(struct ranges *s);
