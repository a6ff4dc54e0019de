/* What an image must say about itself to be restored: the one check of a
 * manifest and its frame tables that every reader makes before it calls an
 * image good (cryo images, cryo inspect, a full and a lazy restore), so that
 * "verifies" means "a restore takes it". The checksums say that the bytes
 * are those written; this says that what they say makes sense. */
#include "archive-internal.h"
#include "cleanup.h"
#include "delta.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A decimal number: digits only, no sign or space, within 64 bits. */
static bool parse_u64(const char *p, const char **end, uint64_t *ret)
{
	uint64_t v = 0;
	const char *s = p;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*end = p;
	*ret = v;
	return p != s;
}

static bool parse_whole_u64(const char *s, uint64_t *ret)
{
	const char *end;
	return parse_u64(s, &end, ret) && *end == '\0';
}

/* The frames line value v names name: "OFFSET LEN,LEN,... NAME". */
static const char *frames_name(const char *v)
{
	const char *sp = strchr(v, ' ');
	sp = sp ? strchr(sp + 1, ' ') : NULL;
	return sp ? sp + 1 : NULL;
}

void archive_frames_clear(struct frame_table *t)
{
	free(t->lens);
	*t = (struct frame_table){0};
}

/* Parses frames line value v into t. */
static int frames_parse(const char *v, struct frame_table *t)
{
	*t = (struct frame_table){0};
	const char *p;
	if (!parse_u64(v, &p, &t->first) || *p != ' ')
		return -EBADMSG;
	p++;
	for (size_t cap = 0; *p != ' ';) {
		uint64_t n;
		if (t->n && *p++ != ',')
			goto bad;
		if (!parse_u64(p, &p, &n))
			goto bad;
		if (t->n == cap) {
			cap = cap ? 2 * cap : 64;
			uint64_t *nl = realloc(t->lens, cap * sizeof(*nl));
			if (!nl) {
				archive_frames_clear(t);
				return -ENOMEM;
			}
			t->lens = nl;
		}
		t->lens[t->n++] = n;
	}
	return 0;
bad:
	archive_frames_clear(t);
	return -EBADMSG;
}

int archive_frames_get(const struct manifest *m, const char *name, struct frame_table *t)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		const char *n;
		if (strcmp(m->keys[i], "frames") == 0 && (n = frames_name(m->values[i])) &&
		    strcmp(n, name) == 0)
			return frames_parse(m->values[i], t);
	}
	return -ENOENT;
}

static const struct manifest_file *find_file(const struct manifest *m, const char *name)
{
	for (size_t i = 0; i < m->n_files; i++)
		if (strcmp(m->files[i].name, name) == 0)
			return &m->files[i];
	return NULL;
}

/* A key that must appear at most once: its value, or NULL. */
static int single(const struct manifest *m, const char *key, const char **ret,
                  struct cryo_error *err)
{
	*ret = NULL;
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], key) != 0)
			continue;
		if (*ret)
			return error_set(err, -EBADMSG, "manifest has '%s' twice", key);
		*ret = m->values[i];
	}
	return 0;
}

/* base and chain: an incremental generation is built on an earlier one, at
 * most IMAGE_MAX_CHAIN in a row; its delta lines name files it holds. */
static int check_lineage(const struct manifest *m, uint64_t gen, struct cryo_error *err)
{
	const char *bv, *cv;
	int r = single(m, "base", &bv, err);
	if (r == 0)
		r = single(m, "chain", &cv, err);
	if (r < 0)
		return r;
	uint64_t base = 0, chain = 0;
	if (bv && (!parse_whole_u64(bv, &base) || base == 0))
		return error_set(err, -EBADMSG, "manifest's base '%s' is malformed", bv);
	if (base && gen && base >= gen)
		return error_set(err, -EBADMSG,
		                 "generation %" PRIu64 " says it is built on generation %" PRIu64
		                 ", which is not an earlier one",
		                 gen, base);
	if (cv && !parse_whole_u64(cv, &chain))
		return error_set(err, -EBADMSG, "manifest's chain '%s' is malformed", cv);
	if (base && cv && (chain < 1 || chain > IMAGE_MAX_CHAIN))
		return error_set(err, -EBADMSG,
		                 "manifest's chain of %s incremental generations is not 1 to %d",
		                 cv, IMAGE_MAX_CHAIN);
	if (!base && chain)
		return error_set(err, -EBADMSG, "manifest has a chain (%s) but no base", cv);
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "delta") != 0)
			continue;
		struct delta_line d;
		if (delta_line_parse(m->values[i], &d) < 0)
			return error_set(err, -EBADMSG, "manifest's delta line '%s' is malformed",
			                 m->values[i]);
		if (!base)
			return error_set(err, -EBADMSG, "manifest has a delta for '%s' but no base",
			                 d.name);
		if (!find_file(m, d.name) || !is_memory_image(d.name))
			return error_set(err, -EBADMSG,
			                 "manifest has a delta for '%s', a memory image it lacks",
			                 d.name);
		for (size_t k = 0; k < i; k++) {
			struct delta_line e;
			if (strcmp(m->keys[k], "delta") == 0 &&
			    delta_line_parse(m->values[k], &e) == 0 && strcmp(e.name, d.name) == 0)
				return error_set(err, -EBADMSG, "manifest has two deltas for '%s'",
				                 d.name);
		}
	}
	/* A held file stored against the base's copy: a file it holds, not a
	 * memory image, one line each. */
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "file_delta") != 0)
			continue;
		struct delta_line d;
		if (delta_file_line_parse(m->values[i], &d) < 0)
			return error_set(err, -EBADMSG,
			                 "manifest's file_delta line '%s' is malformed",
			                 m->values[i]);
		if (!base)
			return error_set(err, -EBADMSG,
			                 "manifest has a delta for held file '%s' but no base",
			                 d.name);
		if (!find_file(m, d.name) || is_memory_image(d.name))
			return error_set(err, -EBADMSG,
			                 "manifest has a delta for '%s', a held file it lacks",
			                 d.name);
		for (size_t k = 0; k < i; k++) {
			struct delta_line e;
			if (strcmp(m->keys[k], "file_delta") == 0 &&
			    delta_file_line_parse(m->values[k], &e) == 0 && !strcmp(e.name, d.name))
				return error_set(err, -EBADMSG,
				                 "manifest has two deltas for held file '%s'",
				                 d.name);
		}
	}
	return 0;
}

/* The frame tables: each for a memory image the archive holds (one each),
 * one frame per 2 MiB of it, none empty, all inside the body (which ends at
 * body_end, if known) and in the files' order. */
static int check_frames(const struct manifest *m, uint64_t body_end, struct cryo_error *err)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "frames") != 0)
			continue;
		const char *name = frames_name(m->values[i]);
		const struct manifest_file *f = name ? find_file(m, name) : NULL;
		if (!f || !is_memory_image(name))
			return error_set(
			    err, -EBADMSG,
			    "manifest has a frame table for '%s', a memory image it lacks",
			    name ? name : m->values[i]);
		for (size_t k = 0; k < i; k++)
			if (strcmp(m->keys[k], "frames") == 0 && frames_name(m->values[k]) &&
			    strcmp(frames_name(m->values[k]), name) == 0)
				return error_set(err, -EBADMSG,
				                 "manifest has two frame tables for '%s'", name);
	}
	uint64_t prev_end = HEADER_SIZE;
	for (size_t i = 0; i < m->n_files; i++) {
		const struct manifest_file *f = &m->files[i];
		if (!is_memory_image(f->name))
			continue;
		_cleanup_(archive_frames_clear) struct frame_table t = {0};
		int r = archive_frames_get(m, f->name, &t);
		if (r == -ENOENT)
			continue; /* restored in full */
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return error_set(err, r, "manifest's frame table for '%s' is malformed",
			                 f->name);
		uint64_t chunks = f->size / MEMORY_CHUNK + (f->size % MEMORY_CHUNK != 0);
		if (t.n != chunks)
			return error_set(err, -EBADMSG,
			                 "manifest's frame table for '%s' has %zu frames, its size "
			                 "%" PRIu64 " takes %" PRIu64,
			                 f->name, t.n, f->size, chunks);
		if (t.first < prev_end)
			return error_set(err, -EBADMSG,
			                 "manifest's frame table for '%s' starts at %" PRIu64
			                 ", before the files ahead of it end",
			                 f->name, t.first);
		uint64_t end = t.first;
		for (size_t k = 0; k < t.n; k++) {
			if (t.lens[k] == 0 || t.lens[k] > UINT64_MAX - end ||
			    (body_end && end + t.lens[k] > body_end))
				return error_set(err, -EBADMSG,
				                 "manifest's frame table for '%s' has frame %zu "
				                 "(%" PRIu64 " bytes at %" PRIu64
				                 ") outside the image body",
				                 f->name, k, t.lens[k], end);
			end += t.lens[k];
		}
		prev_end = end;
	}
	return 0;
}

int image_manifest_validate(const struct manifest *m, uint64_t gen, uint64_t body_end,
                            struct cryo_error *err)
{
	uint64_t own;
	const char *gv;
	int r = single(m, "generation", &gv, err);
	if (r < 0)
		return r;
	if (gv && !parse_whole_u64(gv, &own))
		return error_set(err, -EBADMSG, "manifest's generation '%s' is malformed", gv);
	if (!gen && gv)
		gen = own;
	for (size_t i = 0; i < m->n_files; i++)
		for (size_t k = 0; k < i; k++)
			if (strcmp(m->files[i].name, m->files[k].name) == 0)
				return error_set(err, -EBADMSG, "manifest lists '%s' twice",
				                 m->files[i].name);
	r = check_lineage(m, gen, err);
	if (r == 0)
		r = check_frames(m, body_end, err);
	return r;
}
