#include "chain.h"
#include "cleanup.h"
#include "delta.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

/* At most this many generations in a chain: IMAGE_MAX_CHAIN (delta.h)
 * incremental ones on a whole one, and some room. */
#define MAX_LEVELS 16
_Static_assert(IMAGE_MAX_CHAIN + 1 <= MAX_LEVELS,
               "room for a whole generation and IMAGE_MAX_CHAIN on it");

/* A memory image of an incremental generation: its delta stream, parsed
 * once it is all in. Its pages are never copied into a file of their own:
 * they are handed out where they are (the stream's stored pages, the
 * base's memory). */
struct chain_file {
	char *name;
	uint64_t size;    /* rebuilt */
	uint8_t hash[16]; /* of the rebuilt file (its delta line) */
	bool parsed;      /* set once, under parse_lock */
	struct delta_map map;
	const uint8_t *delta; /* the stream, in the level's lazy memory */
	/* The generation restored's images only: the rebuild check as the
	 * checker thread goes (pages hashed so far, each page's hash with an
	 * index wanted), the pages the program has (image_chain_release()),
	 * and per piece whether the memory below it was let go. Under lock. */
	uint64_t checked;
	struct page_hash *hashes;
	uint64_t *given;
	bool *done;
};

/* A memory image of the bottom generation (the whole one): how many pages
 * of the restored generation's images take each of its pages. A page
 * none takes any more goes (image_lazy_release()). Under lock. */
struct bottom_use {
	const char *name;
	const uint8_t *data;
	uint32_t *refs;
	uint64_t pages;
};

struct level {
	uint64_t gen, base; /* base: 0 for a whole generation */
	int fd;
	/* With held files stored as deltas on top: the level's own files'
	 * directory (a base level's, made for it), and its manifest. */
	char *dir;
	struct manifest *m;
	struct image_lazy *l;
	bool incremental;
	struct chain_file *files; /* incremental: its delta'd images */
	size_t n_files;
};

struct image_chain {
	struct level lv[MAX_LEVELS];
	size_t n; /* lv[0] is the generation restored, lv[i + 1] its base */
	bool want_index;
	/* The generation restored stores held files as deltas: every level's
	 * files come into a directory, to rebuild them from the bottom up. */
	bool files;
	const char *dir;
	unsigned chain;
	/* An incremental generation's rebuilt images are checked as their
	 * pages come, in a thread (check_main()), so that the bottom
	 * generation's memory can go as the program takes its pages. */
	pthread_mutex_t lock, parse_lock;
	pthread_t checker;
	bool checking;
	int check_r;
	uint64_t check_bad;
	const char *check_name; /* the image that failed */
	struct bottom_use *uses;
	size_t n_uses;
	bool counted; /* uses are complete */
	/* What the last image_chain_get() handed out, which its caller may
	 * still be copying from: pages [flight_first, flight_end) of
	 * flight. Under lock. */
	struct chain_file *flight;
	uint64_t flight_first, flight_end;
};

/* How many pages a piece of memory is, as image_lazy releases it. */
#define PIECE_PAGES ((2u << 20) / DELTA_PAGE_SIZE)

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
                      struct cryo_error *err)
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
	if (c->n == 1) {
		c->chain = (unsigned)manifest_get_u64(m, "chain", 0);
		c->files = v->incremental && manifest_get(m, "file_delta") != NULL;
	}
	r = v->incremental ? level_files(v, m) : 0;
	if (c->files)
		v->m = m;
	else
		manifest_free(m);
	if (r < 0)
		return r == -EBADMSG ? error_set(err, r, "its manifest's delta lines are malformed")
		                     : r;
	char path[PATH_MAX];
	if (c->files && c->n > 1) {
		/* A base's files, held files among them, beside the restored
		 * one's. */
		if (asprintf(&v->dir, "%s.base-%" PRIu64, c->dir, gen) < 0) {
			v->dir = NULL;
			return -ENOMEM;
		}
		util_rm_rf(v->dir);
		if (mkdir(v->dir, 0700) < 0)
			return error_set(err, -errno, "cannot create '%s': %m", v->dir);
		dir = v->dir;
	}
	image_store_path(store_dir, gen, path, sizeof(path));
	v->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (v->fd < 0)
		return error_set(err, -errno, "cannot open '%s': %m", path);
	/* The index of a whole generation is built as it comes in; an
	 * incremental one's from its rebuilt images, at the end. */
	return image_lazy_open(v->fd, dir, c->want_index && c->n == 1 && !v->incremental, gen,
	                       &v->l, err);
}

static void *check_main(void *arg);

int image_chain_open(const char *store_dir, uint64_t gen, const char *dir, bool want_index,
                     struct image_chain **ret, uint64_t *bad_gen, struct cryo_error *err)
{
	struct image_chain *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->want_index = want_index;
	c->dir = dir;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->parse_lock, NULL);
	int r = 0;
	for (uint64_t g = gen; r == 0;) {
		if (c->n == IMAGE_MAX_CHAIN + 1) {
			/* As image_store_extract() says, for the same images. */
			*bad_gen = gen;
			r = error_set(err, -EBADMSG,
			              "generation %" PRIu64
			              " is the %dth incremental generation in a "
			              "row; a restore takes at most %d",
			              c->lv[c->n - 1].gen, IMAGE_MAX_CHAIN + 1, IMAGE_MAX_CHAIN);
			break;
		}
		r = level_open(c, store_dir, g, c->n ? NULL : dir, err);
		*bad_gen = g;
		const struct level *v = &c->lv[c->n - 1];
		if (r < 0 || !v->incremental)
			break;
		if (v->base == 0 || v->base >= g)
			r = error_set(err, -EBADMSG, "its base is malformed");
		g = v->base;
	}
	if (r < 0) {
		image_chain_free(c);
		return r;
	}
	/* The whole generation's memory goes as it is put in place
	 * (image_chain_release(); through incremental ones, once checked and
	 * taken by no page still to come): decompressed not far ahead of
	 * that, it takes little memory, and memory just released. */
	image_lazy_bound(c->lv[c->n - 1].l, 16);
	struct level *top = &c->lv[0];
	for (size_t i = 0; top->incremental && i < top->n_files && r == 0; i++) {
		struct chain_file *f = &top->files[i];
		uint64_t pages = f->size / DELTA_PAGE_SIZE;
		f->given = calloc(pages / 64 + 1, sizeof(uint64_t));
		f->done = calloc(pages / PIECE_PAGES + 1, sizeof(bool));
		f->hashes =
		    want_index ? malloc((pages ? pages : 1) * sizeof(struct page_hash)) : NULL;
		if (!f->given || !f->done || (want_index && !f->hashes))
			r = -ENOMEM;
	}
	if (r == 0 && top->incremental)
		c->checking = pthread_create(&c->checker, NULL, check_main, c) == 0;
	if (r < 0) {
		image_chain_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

int image_chain_wait_files(struct image_chain *c, struct cryo_error *err)
{
	int r = image_lazy_wait_files(c->lv[0].l, err);
	if (r < 0 || !c->files)
		return r;
	/* The held files the restored generation stores as deltas, rebuilt
	 * from the bottom up: each level's from the files of the one below,
	 * rebuilt before it. */
	for (size_t i = c->n; i-- > 1 && r == 0;)
		r = image_lazy_wait_files(c->lv[i].l, err);
	for (size_t i = c->n - 1; i-- > 0 && r == 0;) {
		struct level *v = &c->lv[i];
		const char *bad = NULL;
		r = delta_apply_files(v->m, i ? v->dir : c->dir, c->lv[i + 1].dir, &bad);
		if (r < 0)
			error_set(err, r == -ENOMEM ? r : -EBADMSG,
			          "held file '%.*s' of generation %" PRIu64
			          " cannot be rebuilt from generation %" PRIu64 ": %s",
			          bad ? (int)strcspn(bad, " ") : 1, bad ? bad : "?", v->gen,
			          c->lv[i + 1].gen,
			          r == -EBADMSG ? "checksum mismatch" : strerror(-r));
		if (r < 0 && r != -ENOMEM)
			r = -EBADMSG;
	}
	/* The bases' files served their turn. */
	for (size_t i = 1; i < c->n; i++)
		if (c->lv[i].dir)
			util_rm_rf(c->lv[i].dir);
	return r;
}

/* Level i's delta stream for f, whole and parsed (once, by whichever
 * thread comes first). */
static int file_parse(struct image_chain *c, struct level *v, struct chain_file *f)
{
	if (__atomic_load_n(&f->parsed, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&c->parse_lock);
	int r = 0;
	if (!f->parsed) {
		uint64_t len = 0;
		const uint8_t *p = image_lazy_memory(v->l, f->name, &len);
		r = p ? image_lazy_get(v->l, p, 0, len) : -EBADMSG;
		if (r == 0)
			r = delta_map_parse(p, len, &f->map);
		if (r == 0 && f->map.size != f->size)
			r = -EBADMSG;
		if (r == 0) {
			f->delta = p;
			__atomic_store_n(&f->parsed, true, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&c->parse_lock);
	return r;
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

/* The run of f's delta map holding page: *skip pages into it, and how many
 * of the n pages from page on it covers (*k). NULL past f's end. */
static const struct delta_run *run_at(const struct chain_file *f, uint64_t page, uint64_t n,
                                      uint64_t *skip, uint64_t *k)
{
	const struct delta_run *run = delta_map_find(&f->map, page);
	if (run) {
		*skip = page - run->first;
		*k = run->pages - *skip < n ? run->pages - *skip : n;
	}
	return run;
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
	int r = file_parse(c, v, f);
	while (r == 0 && n > 0 && !g->full) {
		*bad = v->gen;
		uint64_t skip, k;
		const struct delta_run *run = run_at(f, page, n, &skip, &k);
		if (!run)
			return -EBADMSG;
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
	struct chain_file *f = c->lv[0].incremental ? level_file(&c->lv[0], name) : NULL;
	if (f) {
		/* Held until the caller is done: see piece_done(). */
		pthread_mutex_lock(&c->lock);
		c->flight = f;
		c->flight_first = off / DELTA_PAGE_SIZE;
		c->flight_end = (off + len) / DELTA_PAGE_SIZE;
		pthread_mutex_unlock(&c->lock);
	}
	int r = resolve(c, 0, name, off / DELTA_PAGE_SIZE, len / DELTA_PAGE_SIZE, &g, &bad);
	if (r < 0)
		return r;
	*n_iov = g.n;
	return (int64_t)(g.pages * DELTA_PAGE_SIZE);
}

/* Calls fn for every run of pages of the bottom generation (the whole
 * one) that pages [page, page + n) of image name, as level i rebuilds it,
 * take. Every delta stream on the way is parsed already. */
typedef void (*bottom_fn)(struct image_chain *c, const char *name, uint64_t page, uint64_t n,
                          void *ctx);

static void walk_below(struct image_chain *c, size_t i, const char *name, uint64_t page, uint64_t n,
                       bottom_fn fn, void *ctx)
{
	struct level *v = &c->lv[i];
	if (!v->incremental) {
		fn(c, name, page, n, ctx);
		return;
	}
	struct chain_file *f = level_file(v, name);
	if (!f || !__atomic_load_n(&f->parsed, __ATOMIC_ACQUIRE))
		return;
	while (n > 0) {
		uint64_t skip, k;
		const struct delta_run *run = run_at(f, page, n, &skip, &k);
		if (!run)
			return;
		if (run->base != DELTA_STORED && i + 1 < c->n)
			walk_below(c, i + 1, f->map.names[run->base], run->offset + skip, k, fn,
			           ctx);
		page += k;
		n -= k;
	}
}

static struct bottom_use *bottom_use(struct image_chain *c, const char *name)
{
	for (size_t i = 0; i < c->n_uses; i++)
		if (strcmp(c->uses[i].name, name) == 0)
			return &c->uses[i];
	return NULL;
}

/* Gives up pages [first, end) of u's image: to the bottom generation, its
 * pages that none takes. */
static void release_unused(struct image_chain *c, struct bottom_use *u, uint64_t first,
                           uint64_t end)
{
	struct image_lazy *l = c->lv[c->n - 1].l;
	for (uint64_t p = first; p < end;) {
		while (p < end && u->refs[p])
			p++;
		uint64_t q = p;
		while (q < end && !u->refs[q])
			q++;
		if (q > p)
			image_lazy_release(l, u->data, p * DELTA_PAGE_SIZE,
			                   (q - p) * DELTA_PAGE_SIZE);
		p = q;
	}
}

static void count_bottom(struct image_chain *c, const char *name, uint64_t page, uint64_t n,
                         void *ctx)
{
	int *r = ctx;
	struct bottom_use *u = bottom_use(c, name);
	if (!u) {
		uint64_t size = 0;
		const uint8_t *data = image_lazy_memory(c->lv[c->n - 1].l, name, &size);
		struct bottom_use *nu =
		    data ? realloc(c->uses, (c->n_uses + 1) * sizeof(*nu)) : NULL;
		if (!nu) {
			*r = data ? -ENOMEM : *r;
			return;
		}
		c->uses = nu;
		u = &c->uses[c->n_uses];
		*u = (struct bottom_use){name, data, calloc(size / DELTA_PAGE_SIZE + 1, 4),
		                         size / DELTA_PAGE_SIZE};
		if (!u->refs) {
			*r = -ENOMEM;
			return;
		}
		c->n_uses++;
	}
	for (uint64_t p = page; p < page + n && p < u->pages; p++)
		if (u->refs[p] < UINT32_MAX)
			u->refs[p]++;
}

static void uncount_bottom(struct image_chain *c, const char *name, uint64_t page, uint64_t n,
                           void *ctx)
{
	(void)ctx;
	struct bottom_use *u = bottom_use(c, name);
	if (!u)
		return;
	uint64_t end = page + n < u->pages ? page + n : u->pages;
	for (uint64_t p = page; p < end; p++)
		if (u->refs[p] > 0 && u->refs[p] < UINT32_MAX)
			u->refs[p]--;
	release_unused(c, u, page, end);
}

/* Piece k of the restored generation's image f, once the program has all
 * its pages, the check went past it and the consumer no longer reads it
 * (a forked child may ask for pages its parent was given): the pages of
 * the bottom generation it takes are taken once fewer. Under lock. */
static void piece_done(struct image_chain *c, struct chain_file *f, uint64_t k)
{
	uint64_t pages = f->size / DELTA_PAGE_SIZE, first = k * PIECE_PAGES;
	uint64_t end = first + PIECE_PAGES < pages ? first + PIECE_PAGES : pages;
	if (!c->counted || f->done[k] || end > f->checked ||
	    (c->flight == f && first < c->flight_end && c->flight_first < end))
		return;
	for (uint64_t p = first; p < end; p++)
		if (!(f->given[p / 64] & (1ULL << (p % 64))))
			return;
	f->done[k] = true;
	walk_below(c, 0, f->name, first, end - first, uncount_bottom, NULL);
}

static void pieces_done(struct image_chain *c, struct chain_file *f, uint64_t first, uint64_t end)
{
	for (uint64_t k = first / PIECE_PAGES; first < end && k <= (end - 1) / PIECE_PAGES; k++)
		piece_done(c, f, k);
}

void image_chain_release(struct image_chain *c, const char *name, uint64_t off, uint64_t len)
{
	struct level *v = &c->lv[0];
	uint64_t size;
	if (!v->incremental) {
		const uint8_t *p = image_lazy_memory(v->l, name, &size);
		if (p)
			image_lazy_release(v->l, p, off, len);
		return;
	}
	struct chain_file *f = level_file(v, name);
	if (!f || !f->given || off % DELTA_PAGE_SIZE || len % DELTA_PAGE_SIZE || off > f->size ||
	    len > f->size - off)
		return;
	uint64_t first = off / DELTA_PAGE_SIZE, end = (off + len) / DELTA_PAGE_SIZE;
	pthread_mutex_lock(&c->lock);
	struct chain_file *was = c->flight;
	uint64_t was_first = c->flight_first, was_end = c->flight_end;
	c->flight = NULL;
	for (uint64_t p = first; p < end; p++)
		f->given[p / 64] |= 1ULL << (p % 64);
	pieces_done(c, f, first, end);
	if (was)
		pieces_done(c, was, was_first, was_end);
	pthread_mutex_unlock(&c->lock);
}

/* Checks the restored generation's image f as rebuilt, in order, as its
 * pages come: its checksum and, with hashes, each page's XXH3-128. */
static int file_check(struct image_chain *c, struct chain_file *f, uint64_t *bad)
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_128bits_reset(st);
	struct iovec iov[256];
	int r = 0;
	uint64_t pages = f->size / DELTA_PAGE_SIZE;
	struct page_hash *hashes = f->hashes;
	for (uint64_t p = 0; p < pages && r == 0;) {
		struct gather g = {iov, 256, 0, 0, false};
		r = resolve(c, 0, f->name, p, pages - p, &g, bad);
		for (int k = 0; k < g.n && r == 0; k++) {
			XXH3_128bits_update(st, iov[k].iov_base, iov[k].iov_len);
			for (size_t o = 0; hashes && o < iov[k].iov_len; o += DELTA_PAGE_SIZE)
				*hashes++ = page_hash_of((const uint8_t *)iov[k].iov_base + o);
		}
		if (r < 0)
			break;
		pthread_mutex_lock(&c->lock);
		f->checked = p + g.pages;
		pieces_done(c, f, p, f->checked);
		pthread_mutex_unlock(&c->lock);
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

/* The checker: every delta stream of the chain parsed; how many pages of
 * the restored generation take each page of the bottom one counted (those
 * none takes, the ones changed since, go at once); then the restored
 * generation's images rebuilt and checked in order as the memory below
 * comes in, each piece's memory below let go once the program has it. */
static void *check_main(void *arg)
{
	struct image_chain *c = arg;
	uint64_t bad = c->lv[0].gen;
	int r = 0;
	for (size_t i = 0; i + 1 < c->n && r == 0; i++) {
		struct level *v = &c->lv[i];
		for (size_t k = 0; k < v->n_files && r == 0; k++) {
			bad = v->gen;
			c->check_name = v->files[k].name;
			r = file_parse(c, v, &v->files[k]);
		}
	}
	if (r == 0) {
		pthread_mutex_lock(&c->lock);
		for (size_t k = 0; k < c->lv[0].n_files && r == 0; k++)
			walk_below(c, 0, c->lv[0].files[k].name, 0,
			           c->lv[0].files[k].size / DELTA_PAGE_SIZE, count_bottom, &r);
		for (size_t i = 0; i < c->n_uses && r == 0; i++)
			release_unused(c, &c->uses[i], 0, c->uses[i].pages);
		c->counted = r == 0;
		pthread_mutex_unlock(&c->lock);
	}
	for (size_t k = 0; k < c->lv[0].n_files && r == 0; k++) {
		c->check_name = c->lv[0].files[k].name;
		r = file_check(c, &c->lv[0].files[k], &bad);
	}
	c->check_r = r;
	c->check_bad = bad;
	return NULL;
}

int image_chain_finish(struct image_chain *c, struct page_index **index, unsigned *chain,
                       uint64_t *bad_gen, struct cryo_error *err)
{
	struct level *top = &c->lv[0];
	int r = 0;
	/* Every generation's own memory, in and verified. */
	for (size_t i = 0; i < c->n && r == 0; i++) {
		*bad_gen = c->lv[i].gen;
		r = image_lazy_finish(c->lv[i].l, NULL, i == 0 && !top->incremental ? index : NULL,
		                      err);
	}
	*chain = c->chain;
	if (!top->incremental)
		return r;
	/* The rebuilt images, as they were dumped (checked by then, or here,
	 * without a thread); their pages give the index for the next delta. */
	if (c->checking) {
		if (r < 0)
			image_chain_cancel(c);
		pthread_join(c->checker, NULL);
		c->checking = false;
	} else if (r == 0) {
		check_main(c);
	}
	if (r == 0 && c->check_r < 0) {
		r = c->check_r;
		*bad_gen = c->check_bad;
		const char *name = c->check_name ? c->check_name : "an image";
		if (r == -EBADMSG)
			error_set(err, r, "'%s' does not rebuild as it was dumped", name);
		else
			error_set(err, r, "cannot check '%s' as rebuilt: %s", name, strerror(-r));
	}
	struct page_index *idx = r == 0 && c->want_index ? page_index_new(top->gen) : NULL;
	if (r == 0 && c->want_index && !idx)
		r = -ENOMEM;
	for (size_t i = 0; idx && i < top->n_files && r == 0; i++) {
		struct chain_file *f = &top->files[i];
		r = page_index_add_hashes(idx, f->name, f->hashes, f->size / DELTA_PAGE_SIZE);
	}
	if (r == 0 && idx)
		*index = idx;
	else
		page_index_free(idx);
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
	if (c->checking) {
		image_chain_cancel(c);
		pthread_join(c->checker, NULL);
	}
	for (size_t i = 0; i < c->n_uses; i++)
		free(c->uses[i].refs);
	free(c->uses);
	for (size_t i = 0; i < c->n; i++) {
		struct level *v = &c->lv[i];
		image_lazy_free(v->l);
		if (v->fd >= 0)
			close(v->fd);
		if (v->dir)
			util_rm_rf(v->dir);
		free(v->dir);
		manifest_free(v->m);
		for (size_t k = 0; k < v->n_files; k++) {
			free(v->files[k].name);
			delta_map_clear(&v->files[k].map);
			free(v->files[k].hashes);
			free(v->files[k].given);
			free(v->files[k].done);
		}
		free(v->files);
	}
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->parse_lock);
	free(c);
}
