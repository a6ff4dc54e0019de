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
#include <sys/mman.h>
#include <unistd.h>

#include <xxhash.h>

/* At most this many generations in a chain: 8 incremental ones on a whole
 * one (the supervisor's MAX_CHAIN), and some room. */
#define MAX_LEVELS 16

/* A memory image of an incremental generation: its delta stream, parsed
 * once it is all in; at the top, the image rebuilt as far as asked. */
struct chain_file {
	char *name;
	uint64_t size;    /* rebuilt */
	uint8_t hash[16]; /* of the rebuilt file (its delta line) */
	bool parsed;
	struct delta_map map;
	const uint8_t *delta; /* the stream, in the level's lazy memory */
	uint8_t *data;        /* top level only: anonymous, size bytes */
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

static int parse_hash(const char *hex, uint8_t out[16])
{
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -EBADMSG;
		out[i] = (uint8_t)v;
	}
	return hex[32] == '\0' ? 0 : -EBADMSG;
}

/* The delta'd images an incremental generation's manifest lists. */
static int level_files(struct level *v, const struct manifest *m, bool top)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "delta") != 0)
			continue;
		char name[256], hex[64];
		unsigned long long size;
		if (sscanf(m->values[i], "%255s %llu %63s", name, &size, hex) != 3 ||
		    size % DELTA_PAGE_SIZE)
			return -EBADMSG;
		struct chain_file *n = realloc(v->files, (v->n_files + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		v->files = n;
		struct chain_file *f = &v->files[v->n_files++];
		*f = (struct chain_file){.name = strdup(name), .size = size};
		if (!f->name)
			return -ENOMEM;
		if (parse_hash(hex, f->hash) < 0)
			return -EBADMSG;
		if (top && size) {
			f->data = mmap(NULL, size, PROT_READ | PROT_WRITE,
			               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (f->data == MAP_FAILED) {
				f->data = NULL;
				return -ENOMEM;
			}
		}
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
	r = v->incremental ? level_files(v, m, c->n == 1) : 0;
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
	*ret = c;
	return 0;
}

int image_chain_wait_files(struct image_chain *c, struct image_error *err)
{
	return image_lazy_wait_files(c->lv[0].l, err);
}

const uint8_t *image_chain_memory(struct image_chain *c, const char *name, uint64_t *size)
{
	struct level *v = &c->lv[0];
	if (!v->incremental)
		return image_lazy_memory(v->l, name, size);
	struct chain_file *f = level_file(v, name);
	if (!f)
		return NULL;
	*size = f->size;
	return f->data;
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

/* Copies pages [page, page + n) of memory image name, as level i rebuilds
 * it, to dst. On -EBADMSG, *bad is the generation at fault. */
static int resolve(struct image_chain *c, size_t i, const char *name, uint64_t page, uint64_t n,
                   uint8_t *dst, uint64_t *bad)
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
			memcpy(dst, p + off, len);
		return r;
	}
	struct chain_file *f = level_file(v, name);
	if (!f)
		return -EBADMSG;
	int r = file_parse(v, f);
	while (r == 0 && n > 0) {
		*bad = v->gen;
		const struct delta_run *run = delta_map_find(&f->map, page);
		if (!run)
			return -EBADMSG;
		uint64_t skip = page - run->first, k = run->pages - skip;
		if (k > n)
			k = n;
		if (run->base == DELTA_STORED) {
			memcpy(dst, f->delta + run->offset + skip * DELTA_PAGE_SIZE,
			       k * DELTA_PAGE_SIZE);
		} else if (i + 1 < c->n) {
			r = resolve(c, i + 1, f->map.names[run->base], run->offset + skip, k, dst,
			            bad);
		} else {
			r = -EBADMSG;
		}
		page += k;
		n -= k;
		dst += k * DELTA_PAGE_SIZE;
	}
	return r;
}

int image_chain_get(struct image_chain *c, const uint8_t *data, uint64_t off, uint64_t len)
{
	struct level *v = &c->lv[0];
	if (!v->incremental)
		return image_lazy_get(v->l, data, off, len);
	struct chain_file *f = NULL;
	for (size_t i = 0; i < v->n_files && !f; i++)
		if (v->files[i].data == data)
			f = &v->files[i];
	if (!f || off % DELTA_PAGE_SIZE || len % DELTA_PAGE_SIZE || off > f->size ||
	    len > f->size - off)
		return -EINVAL;
	uint64_t bad;
	return resolve(c, 0, f->name, off / DELTA_PAGE_SIZE, len / DELTA_PAGE_SIZE, f->data + off,
	               &bad);
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
	/* The rebuilt images, whole and as they were dumped. */
	for (size_t i = 0; top->incremental && i < top->n_files && r == 0; i++) {
		struct chain_file *f = &top->files[i];
		r = resolve(c, 0, f->name, 0, f->size / DELTA_PAGE_SIZE, f->data, bad_gen);
		XXH128_canonical_t h;
		XXH128_canonicalFromHash(&h, XXH3_128bits(f->data, f->size));
		if (r == 0 && memcmp(h.digest, f->hash, 16) != 0) {
			*bad_gen = top->gen;
			r = -EBADMSG;
		}
		if (r < 0)
			snprintf(err->msg, sizeof(err->msg),
			         "'%s' does not rebuild as it was dumped", f->name);
	}
	if (r == 0 && top->incremental && c->want_index) {
		struct page_index *idx = page_index_new(top->gen);
		for (size_t i = 0; i < top->n_files && r == 0; i++)
			r = idx ? page_index_add(idx, top->files[i].name, top->files[i].data,
			                         top->files[i].size)
			        : -ENOMEM;
		if (r == 0)
			*index = idx;
		else
			page_index_free(idx);
	}
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
			if (v->files[k].data)
				munmap(v->files[k].data, v->files[k].size);
		}
		free(v->files);
	}
	free(c);
}
