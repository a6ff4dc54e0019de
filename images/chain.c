#include "chain.h"
#include "cleanup.h"
#include "delta.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

/* At most this many generations in a chain: 8 incremental ones on a whole
 * one (the supervisor's MAX_CHAIN), and some room. */
#define MAX_LEVELS 16

/* A memory image of an incremental generation: its delta stream, parsed
 * once it is all in. Its pages are never copied into a file of their own:
 * they are handed out where they are (the stream's stored pages, the
 * base's memory). */
struct chain_file {
	char *name;
	uint64_t size;    /* rebuilt */
	uint8_t hash[16]; /* of the rebuilt file (its delta line) */
	bool parsed;
	struct delta_map map;
	const uint8_t *delta; /* the stream, in the level's lazy memory */
};

struct level {
	uint64_t gen, base; /* base: 0 for a whole generation */
	int fd;
	struct image_lazy *l;
	bool incremental;
	struct chain_file *files; /* incremental: its delta'd images */
	size_t n_files;
};

struct image_chain {
	struct level lv[MAX_LEVELS];
	size_t n; /* lv[0] is the generation restored, lv[i + 1] its base */
	bool want_index;
	unsigned chain;
};

/* The delta'd images an incremental generation's manifest lists. */
static int level_files(struct level *v, const struct manifest *m)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "delta") != 0)
			continue;
		struct delta_line d;
		if (delta_line_parse(m->values[i], &d) < 0)
			return -EBADMSG;
		struct chain_file *n = realloc(v->files, (v->n_files + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		v->files = n;
		struct chain_file *f = &v->files[v->n_files++];
		*f = (struct chain_file){.name = strdup(d.name), .size = d.size};
		if (!f->name)
			return -ENOMEM;
		memcpy(f->hash, d.hash, sizeof(f->hash));
	}
	return 0;
}

static struct chain_file *level_file(struct level *v, const char *name)
{
	for (size_t i = 0; i < v->n_files; i++)
		if (strcmp(v->files[i].name, name) == 0)
			return &v->files[i];
	return NULL;
}

static int level_open(struct image_chain *c, const char *store_dir, uint64_t gen, const char *dir,
                      struct image_error *err)
{
	struct level *v = &c->lv[c->n];
	*v = (struct level){.gen = gen, .fd = -1};
	c->n++;
	struct manifest *m = NULL;
	int r = image_store_read_manifest(store_dir, gen, &m, err);
	if (r < 0)
		return r;
	v->incremental = manifest_get(m, "base") != NULL;
	v->base = manifest_get_u64(m, "base", 0);
	if (c->n == 1)
		c->chain = (unsigned)manifest_get_u64(m, "chain", 0);
	r = v->incremental ? level_files(v, m) : 0;
	manifest_free(m);
	if (r < 0)
		return r == -EBADMSG ? util_fail(err->msg, sizeof(err->msg), r,
		                                 "its manifest's delta lines are malformed")
		                     : r;
	char path[PATH_MAX];
	image_store_path(store_dir, gen, path, sizeof(path));
	v->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (v->fd < 0)
		return util_fail(err->msg, sizeof(err->msg), -errno, "cannot open '%s': %m", path);
	/* The index of a whole generation is built as it comes in; an
	 * incremental one's from its rebuilt images, at the end. */
	return image_lazy_open(v->fd, dir, c->want_index && c->n == 1 && !v->incremental, gen,
	                       &v->l, err);
}

int image_chain_open(const char *store_dir, uint64_t gen, const char *dir, bool want_index,
                     struct image_chain **ret, uint64_t *bad_gen, struct image_error *err)
{
	struct image_chain *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->want_index = want_index;
	int r = 0;
	for (uint64_t g = gen; r == 0;) {
		if (c->n == MAX_LEVELS) {
			r = util_fail(err->msg, sizeof(err->msg), -EPROTONOSUPPORT,
			              "more than %d generations in a chain", MAX_LEVELS);
			break;
		}
		r = level_open(c, store_dir, g, c->n ? NULL : dir, err);
		*bad_gen = g;
		const struct level *v = &c->lv[c->n - 1];
		if (r < 0 || !v->incremental)
			break;
		if (v->base == 0 || v->base >= g)
			r = util_fail(err->msg, sizeof(err->msg), -EBADMSG,
			              "its base is malformed");
		g = v->base;
	}
	if (r < 0) {
		image_chain_free(c);
		return r;
	}
	/* A whole generation's memory goes as it is put in place
	 * (image_chain_release()): decompressed not far ahead of that, it
	 * takes little memory, and memory just released. */
	if (c->n == 1 && !c->lv[0].incremental)
		image_lazy_bound(c->lv[0].l, 16);
	*ret = c;
	return 0;
}

int image_chain_wait_files(struct image_chain *c, struct image_error *err)
{
	return image_lazy_wait_files(c->lv[0].l, err);
}

/* Level i's delta stream for f, whole and parsed. */
static int file_parse(struct level *v, struct chain_file *f)
{
	if (f->parsed)
		return 0;
	uint64_t len = 0;
	const uint8_t *p = image_lazy_memory(v->l, f->name, &len);
	if (!p)
		return -EBADMSG;
	int r = image_lazy_get(v->l, p, 0, len);
	if (r == 0)
		r = delta_map_parse(p, len, &f->map);
	if (r == 0 && f->map.size != f->size)
		r = -EBADMSG;
	if (r < 0)
		return r;
	f->delta = p;
	f->parsed = true;
	return 0;
}

/* Pieces of memory, in order, as many as fit. */
struct gather {
	struct iovec *iov;
	int max, n;
	uint64_t pages; /* covered so far */
	bool full;
};

static void gather_add(struct gather *g, const uint8_t *p, uint64_t pages)
{
	struct iovec *last = g->n ? &g->iov[g->n - 1] : NULL;
	if (last && (const uint8_t *)last->iov_base + last->iov_len == p) {
		last->iov_len += pages * DELTA_PAGE_SIZE;
	} else if (g->n == g->max) {
		g->full = true;
		return;
	} else {
		g->iov[g->n++] = (struct iovec){(void *)p, pages * DELTA_PAGE_SIZE};
	}
	g->pages += pages;
}

/* Gathers pages [page, page + n) of memory image name as level i rebuilds
 * it, waiting for whatever is not in yet, until g is full. On -EBADMSG,
 * *bad is the generation at fault. */
static int resolve(struct image_chain *c, size_t i, const char *name, uint64_t page, uint64_t n,
                   struct gather *g, uint64_t *bad)
{
	struct level *v = &c->lv[i];
	*bad = v->gen;
	if (!v->incremental) {
		uint64_t size = 0;
		const uint8_t *p = image_lazy_memory(v->l, name, &size);
		uint64_t off = page * DELTA_PAGE_SIZE, len = n * DELTA_PAGE_SIZE;
		if (!p || off > size || len > size - off)
			return -EBADMSG; /* a delta refers to what its base lacks */
		int r = image_lazy_get(v->l, p, off, len);
		if (r == 0)
			gather_add(g, p + off, n);
		return r;
	}
	struct chain_file *f = level_file(v, name);
	if (!f)
		return -EBADMSG;
	int r = file_parse(v, f);
	while (r == 0 && n > 0 && !g->full) {
		*bad = v->gen;
		const struct delta_run *run = delta_map_find(&f->map, page);
		if (!run)
			return -EBADMSG;
		uint64_t skip = page - run->first, k = run->pages - skip;
		if (k > n)
			k = n;
		if (run->base == DELTA_STORED)
			gather_add(g, f->delta + run->offset + skip * DELTA_PAGE_SIZE, k);
		else if (i + 1 < c->n)
			r = resolve(c, i + 1, f->map.names[run->base], run->offset + skip, k, g,
			            bad);
		else
			r = -EBADMSG;
		page += k;
		n -= k;
	}
	return r;
}

/* The size of memory image name as level v has it rebuilt; false if v
 * has no such image. */
static bool memory_size(struct level *v, const char *name, uint64_t *size)
{
	if (!v->incremental)
		return image_lazy_memory(v->l, name, size) != NULL;
	const struct chain_file *f = level_file(v, name);
	if (f)
		*size = f->size;
	return f != NULL;
}

int64_t image_chain_get(struct image_chain *c, const char *name, uint64_t off, uint64_t len,
                        struct iovec *iov, int max_iov, int *n_iov)
{
	*n_iov = 0;
	uint64_t size = 0;
	if (!memory_size(&c->lv[0], name, &size) || max_iov < 1 || len == 0 ||
	    off % DELTA_PAGE_SIZE || len % DELTA_PAGE_SIZE || off > size || len > size - off)
		return -EINVAL;
	struct gather g = {iov, max_iov, 0, 0, false};
	uint64_t bad;
	int r = resolve(c, 0, name, off / DELTA_PAGE_SIZE, len / DELTA_PAGE_SIZE, &g, &bad);
	if (r < 0)
		return r;
	*n_iov = g.n;
	return (int64_t)(g.pages * DELTA_PAGE_SIZE);
}

void image_chain_release(struct image_chain *c, const char *name, uint64_t off, uint64_t len)
{
	/* An incremental generation's images are read again at the end (their
	 * rebuild check), its bases' too: only a whole generation's go. */
	struct level *v = &c->lv[0];
	uint64_t size;
	const uint8_t *p =
	    c->n == 1 && !v->incremental ? image_lazy_memory(v->l, name, &size) : NULL;
	if (p)
		image_lazy_release(v->l, p, off, len);
}

/* Checks incremental image f as rebuilt against its checksum and, with
 * hashes, gives the XXH3-128 of each of its pages. */
static int file_check(struct image_chain *c, struct chain_file *f, struct page_hash *hashes,
                      uint64_t *bad)
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_128bits_reset(st);
	struct iovec iov[256];
	int r = 0;
	uint64_t pages = f->size / DELTA_PAGE_SIZE;
	for (uint64_t p = 0; p < pages && r == 0;) {
		struct gather g = {iov, 256, 0, 0, false};
		r = resolve(c, 0, f->name, p, pages - p, &g, bad);
		for (int k = 0; k < g.n && r == 0; k++) {
			XXH3_128bits_update(st, iov[k].iov_base, iov[k].iov_len);
			for (size_t o = 0; hashes && o < iov[k].iov_len; o += DELTA_PAGE_SIZE)
				*hashes++ = page_hash_of((const uint8_t *)iov[k].iov_base + o);
		}
		p += g.pages;
	}
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits_digest(st));
	XXH3_freeState(st);
	if (r == 0 && memcmp(h.digest, f->hash, 16) != 0) {
		*bad = c->lv[0].gen;
		r = -EBADMSG;
	}
	return r;
}

int image_chain_finish(struct image_chain *c, struct page_index **index, unsigned *chain,
                       uint64_t *bad_gen, struct image_error *err)
{
	struct level *top = &c->lv[0];
	int r = 0;
	/* Every generation's own memory, in and verified. */
	for (size_t i = 0; i < c->n && r == 0; i++) {
		*bad_gen = c->lv[i].gen;
		r = image_lazy_finish(c->lv[i].l, NULL, i == 0 && !top->incremental ? index : NULL,
		                      err);
	}
	/* The rebuilt images, as they were dumped; their pages give the index
	 * for the next delta. */
	struct page_index *idx =
	    r == 0 && top->incremental && c->want_index ? page_index_new(top->gen) : NULL;
	if (r == 0 && top->incremental && c->want_index && !idx)
		r = -ENOMEM;
	for (size_t i = 0; top->incremental && i < top->n_files && r == 0; i++) {
		struct chain_file *f = &top->files[i];
		uint64_t pages = f->size / DELTA_PAGE_SIZE;
		struct page_hash *hashes =
		    idx ? malloc((pages ? pages : 1) * sizeof(*hashes)) : NULL;
		if (idx && !hashes) {
			r = -ENOMEM;
			break;
		}
		r = file_check(c, f, hashes, bad_gen);
		if (r < 0)
			snprintf(err->msg, sizeof(err->msg),
			         "'%s' does not rebuild as it was dumped", f->name);
		else if (idx)
			r = page_index_add_hashes(idx, f->name, hashes, pages);
		free(hashes);
	}
	if (r == 0 && idx)
		*index = idx;
	else
		page_index_free(idx);
	*chain = c->chain;
	return r;
}

void image_chain_cancel(struct image_chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->lv[i].l)
			image_lazy_cancel(c->lv[i].l);
}

void image_chain_free(struct image_chain *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		struct level *v = &c->lv[i];
		image_lazy_free(v->l);
		if (v->fd >= 0)
			close(v->fd);
		for (size_t k = 0; k < v->n_files; k++) {
			free(v->files[k].name);
			delta_map_clear(&v->files[k].map);
		}
		free(v->files);
	}
	free(c);
}
