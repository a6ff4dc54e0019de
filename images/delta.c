#include "delta.h"
#include "cleanup.h"
#include "util.h"

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* The delta stream (little-endian):
 *   "CRYODLT1", u64 size of the rebuilt file,
 *   u32 number of base file names, each u16 length + bytes,
 *   records of 16 bytes { u32 op, u32 pages, u64 arg }:
 *     op 1: that many pages follow, stored;
 *     op 2: that many pages are the base file names[arg >> 40]'s, from page
 *           arg & (2^40 - 1) on;
 *     op 0: the end. */
static const char magic[8] = "CRYODLT1";
enum { OP_END = 0, OP_LITERAL = 1, OP_COPY = 2 };
#define PAGE_BITS 40

struct record {
	uint32_t op, pages;
	uint64_t arg;
};
_Static_assert(sizeof(struct record) == 16, "record layout");

struct slot {
	XXH128_hash_t hash;
	uint64_t where; /* name index << PAGE_BITS | page; 0 = empty, stored + 1 */
};

struct page_index {
	uint64_t generation;
	char **names;
	size_t n_names;
	struct slot *slots;
	size_t cap, used;
};

bool delta_applies_to(const char *name)
{
	return strncmp(name, "pages-", 6) == 0;
}

struct page_index *page_index_new(uint64_t generation)
{
	struct page_index *idx = calloc(1, sizeof(*idx));
	if (idx)
		idx->generation = generation;
	return idx;
}

void page_index_free(struct page_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->n_names; i++)
		free(idx->names[i]);
	free(idx->names);
	free(idx->slots);
	free(idx);
}

uint64_t page_index_generation(const struct page_index *idx)
{
	return idx->generation;
}

static size_t slot_of(const struct page_index *idx, XXH128_hash_t h)
{
	return (size_t)(h.low64 ^ (h.high64 >> 7)) & (idx->cap - 1);
}

static int grow(struct page_index *idx, size_t need)
{
	if (idx->cap >= 2 * need)
		return 0;
	size_t cap = idx->cap ? idx->cap : 1024;
	while (cap < 2 * need)
		cap *= 2;
	struct slot *slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	struct page_index tmp = {.slots = slots, .cap = cap};
	for (size_t i = 0; i < idx->cap; i++) {
		if (!idx->slots[i].where)
			continue;
		size_t k = slot_of(&tmp, idx->slots[i].hash);
		while (slots[k].where)
			k = (k + 1) & (cap - 1);
		slots[k] = idx->slots[i];
	}
	free(idx->slots);
	idx->slots = slots;
	idx->cap = cap;
	return 0;
}

/* The address of each page of data, given in pieces of whole pages (pages
 * in all). */
static const uint8_t **page_table(const struct iovec *iov, size_t n, size_t pages)
{
	const uint8_t **at = malloc((pages ? pages : 1) * sizeof(*at));
	size_t k = 0;
	for (size_t i = 0; at && i < n; i++)
		for (size_t off = 0; off + DELTA_PAGE_SIZE <= iov[i].iov_len && k < pages;
		     off += DELTA_PAGE_SIZE)
			at[k++] = (const uint8_t *)iov[i].iov_base + off;
	if (at && k != pages) {
		free(at);
		return NULL;
	}
	return at;
}

struct hash_job {
	const uint8_t *const *at;
	XXH128_hash_t *h;
	size_t from, to;
};

static void *hash_job_main(void *arg)
{
	struct hash_job *j = arg;
	for (size_t p = j->from; p < j->to; p++)
		j->h[p] = XXH3_128bits(j->at[p], DELTA_PAGE_SIZE);
	return NULL;
}

/* Pages hashed by one thread; more are hashed by two. */
#define HASH_ALONE (8u << 20) / DELTA_PAGE_SIZE

/* The XXH3-128 of each page at at[], into h. */
static void hash_into(const uint8_t *const *at, XXH128_hash_t *h, size_t pages)
{
	struct hash_job half = {at, h, pages / 2, pages}, rest = {at, h, 0, pages / 2};
	pthread_t t;
	bool two = pages > HASH_ALONE && pthread_create(&t, NULL, hash_job_main, &half) == 0;
	if (!two)
		rest.to = pages;
	hash_job_main(&rest);
	if (two)
		pthread_join(t, NULL);
}

static XXH128_hash_t *hash_table(const uint8_t *const *at, size_t pages)
{
	XXH128_hash_t *h = malloc((pages ? pages : 1) * sizeof(*h));
	if (h)
		hash_into(at, h, pages);
	return h;
}

_Static_assert(sizeof(struct page_hash) == sizeof(XXH128_hash_t) &&
                   offsetof(XXH128_hash_t, low64) == offsetof(struct page_hash, low),
               "struct page_hash is an XXH128_hash_t");

/* The hashes of pages pages at at[]: those known taken as they are, the
 * others computed (in one pass over the ones left, as above). */
static XXH128_hash_t *hash_known(const uint8_t *const *at, size_t pages,
                                 const struct delta_known *k)
{
	if (!k || !k->n_spans)
		return hash_table(at, pages);
	XXH128_hash_t *h = malloc((pages ? pages : 1) * sizeof(*h));
	uint8_t *known = calloc(pages ? pages : 1, 1);
	const uint8_t **left = malloc((pages ? pages : 1) * sizeof(*left));
	size_t *where = malloc((pages ? pages : 1) * sizeof(*where));
	if (!h || !known || !left || !where) {
		free(h);
		h = NULL;
		goto out;
	}
	for (size_t i = 0; i < k->n_spans; i++) {
		const struct mem_span *s = &k->spans[i];
		if (s->page > pages || s->pages > pages - s->page || s->from > k->n_hashes ||
		    s->pages > k->n_hashes - s->from)
			continue; /* not this file's: hashed */
		memcpy(h + s->page, k->hashes + s->from, s->pages * sizeof(*h));
		memset(known + s->page, 1, s->pages);
	}
	size_t n = 0;
	for (size_t p = 0; p < pages; p++)
		if (!known[p]) {
			left[n] = at[p];
			where[n++] = p;
		}
	XXH128_hash_t *got = malloc((n ? n : 1) * sizeof(*got));
	if (!got) {
		free(h);
		h = NULL;
		goto out;
	}
	hash_into(left, got, n);
	for (size_t i = 0; i < n; i++)
		h[where[i]] = got[i];
	free(got);
out:
	free(known);
	free(left);
	free(where);
	return h;
}

/* The XXH3-128 of each page of data (len a multiple of the page size). */
static XXH128_hash_t *hash_pages(const uint8_t *data, size_t len)
{
	size_t pages = len / DELTA_PAGE_SIZE;
	struct iovec one = {(void *)data, len};
	_cleanup_free_ const uint8_t **at = page_table(&one, 1, pages);
	return at ? hash_table(at, pages) : NULL;
}

struct page_hash page_hash_of(const void *page)
{
	XXH128_hash_t h = XXH3_128bits(page, DELTA_PAGE_SIZE);
	return (struct page_hash){h.low64, h.high64};
}

static int index_add_hashed(struct page_index *idx, const char *name, const XXH128_hash_t *hashes,
                            size_t pages)
{
	if (idx->n_names >= (1u << (64 - PAGE_BITS - 1)) || pages >= (1ULL << PAGE_BITS))
		return -E2BIG;
	int r = grow(idx, idx->used + pages);
	if (r < 0)
		return r;
	char **names = realloc(idx->names, (idx->n_names + 1) * sizeof(char *));
	if (!names)
		return -ENOMEM;
	idx->names = names;
	if (!(names[idx->n_names] = strdup(name)))
		return -ENOMEM;
	uint64_t name_no = idx->n_names++;
	for (size_t p = 0; p < pages; p++) {
		size_t k = slot_of(idx, hashes[p]);
		bool dup = false;
		while (idx->slots[k].where) {
			if (XXH128_isEqual(idx->slots[k].hash, hashes[p])) {
				dup = true; /* the first copy of a page serves for all */
				break;
			}
			k = (k + 1) & (idx->cap - 1);
		}
		if (dup)
			continue;
		idx->slots[k] = (struct slot){hashes[p], ((name_no << PAGE_BITS) | p) + 1};
		idx->used++;
	}
	return 0;
}

_Static_assert(sizeof(struct page_hash) == sizeof(XXH128_hash_t) &&
                   offsetof(XXH128_hash_t, low64) == offsetof(struct page_hash, low) &&
                   offsetof(XXH128_hash_t, high64) == offsetof(struct page_hash, high),
               "page_hash is XXH128_hash_t");

int page_index_add_hashes(struct page_index *idx, const char *name, const struct page_hash *hashes,
                          size_t pages)
{
	return index_add_hashed(idx, name, (const XXH128_hash_t *)hashes, pages);
}

int page_index_add(struct page_index *idx, const char *name, const uint8_t *data, size_t len)
{
	if (len % DELTA_PAGE_SIZE)
		return -EINVAL;
	_cleanup_free_ XXH128_hash_t *h = hash_pages(data, len);
	if (!h)
		return -ENOMEM;
	return index_add_hashed(idx, name, h, len / DELTA_PAGE_SIZE);
}

static uint64_t lookup(const struct page_index *idx, XXH128_hash_t h)
{
	if (!idx->cap)
		return 0;
	for (size_t k = slot_of(idx, h); idx->slots[k].where; k = (k + 1) & (idx->cap - 1))
		if (XXH128_isEqual(idx->slots[k].hash, h))
			return idx->slots[k].where;
	return 0;
}

void delta_file_clear(struct delta_file *d)
{
	free(d->headers);
	free(d->records);
	free(d->iov);
	memset(d, 0, sizeof(*d));
}

static int encode_hashed(const struct page_index *base, const char *name, const uint8_t *const *at,
                         size_t len, const XXH128_hash_t *hashes, struct delta_file *out);

int delta_encode(const struct page_index *base, const char *name, const uint8_t *data, size_t len,
                 struct delta_file *out)
{
	memset(out, 0, sizeof(*out));
	if (len % DELTA_PAGE_SIZE)
		return -EINVAL;
	struct iovec one = {(void *)data, len};
	_cleanup_free_ const uint8_t **at = page_table(&one, 1, len / DELTA_PAGE_SIZE);
	if (!at)
		return -ENOMEM;
	_cleanup_free_ XXH128_hash_t *h = hash_table(at, len / DELTA_PAGE_SIZE);
	if (!h)
		return -ENOMEM;
	return encode_hashed(base, name, at, len, h, out);
}

/* Encodes the pages at at[] (len bytes in all, hashed page by page in
 * hashes). */
static int encode_hashed(const struct page_index *base, const char *name, const uint8_t *const *at,
                         size_t len, const XXH128_hash_t *hashes, struct delta_file *out)
{
	memset(out, 0, sizeof(*out));
	size_t pages = len / DELTA_PAGE_SIZE;
	size_t names_len = 4;
	for (size_t i = 0; i < base->n_names; i++)
		names_len += 2 + strlen(base->names[i]);
	size_t head_len = 16 + names_len;
	/* The header, then the records in an array of their own (aligned); at
	 * worst one record per page, plus the end. */
	out->headers = malloc(head_len);
	out->records = malloc((pages + 1) * sizeof(struct record));
	out->iov = malloc((2 * pages + 3) * sizeof(struct iovec));
	if (!out->headers || !out->records || !out->iov) {
		delta_file_clear(out);
		return -ENOMEM;
	}
	uint8_t *h = out->headers;
	memcpy(h, magic, 8);
	uint64_t size = htole64(len);
	memcpy(h + 8, &size, 8);
	uint32_t n = htole32((uint32_t)base->n_names);
	memcpy(h + 16, &n, 4);
	size_t o = 20;
	for (size_t i = 0; i < base->n_names; i++) {
		uint16_t l = htole16((uint16_t)strlen(base->names[i]));
		memcpy(h + o, &l, 2);
		memcpy(h + o + 2, base->names[i], strlen(base->names[i]));
		o += 2 + strlen(base->names[i]);
	}
	uint64_t total = o;
	out->iov[out->n_iov++] = (struct iovec){h, o};
	struct record *recs = out->records, *cur = NULL;
	uint64_t next_copy = 0; /* the base page that would extend cur */
	for (size_t p = 0; p < pages; p++) {
		const uint8_t *page = at[p];
		uint64_t where = lookup(base, hashes[p]);
		if (where) {
			uint64_t arg = where - 1;
			out->copied_pages++;
			if (cur && le32toh(cur->op) == OP_COPY && arg == next_copy &&
			    le32toh(cur->pages) < UINT32_MAX) {
				cur->pages = htole32(le32toh(cur->pages) + 1);
			} else {
				cur = recs++;
				*cur = (struct record){htole32(OP_COPY), htole32(1), htole64(arg)};
				out->iov[out->n_iov++] = (struct iovec){cur, sizeof(*cur)};
				total += sizeof(*cur);
			}
			next_copy = arg + 1;
		} else if (cur && le32toh(cur->op) == OP_LITERAL &&
		           le32toh(cur->pages) < UINT32_MAX) {
			cur->pages = htole32(le32toh(cur->pages) + 1);
			struct iovec *last = &out->iov[out->n_iov - 1];
			if ((const uint8_t *)last->iov_base + last->iov_len == page)
				last->iov_len += DELTA_PAGE_SIZE;
			else /* the pages are in pieces: at most two iovecs a page still */
				out->iov[out->n_iov++] =
				    (struct iovec){(void *)page, DELTA_PAGE_SIZE};
			total += DELTA_PAGE_SIZE;
		} else {
			cur = recs++;
			*cur = (struct record){htole32(OP_LITERAL), htole32(1), 0};
			out->iov[out->n_iov++] = (struct iovec){cur, sizeof(*cur)};
			out->iov[out->n_iov++] = (struct iovec){(void *)page, DELTA_PAGE_SIZE};
			total += sizeof(*cur) + DELTA_PAGE_SIZE;
		}
	}
	*recs = (struct record){0};
	out->iov[out->n_iov++] = (struct iovec){recs, sizeof(*recs)};
	total += sizeof(*recs);
	out->pages = pages;
	out->mem = (struct mem_file){name, out->iov, out->n_iov, total};
	return 0;
}

int delta_decode(const char *delta_path, const char *base_dir, const char *out_path)
{
	_cleanup_close_ int in = open(delta_path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	_cleanup_close_ int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	char head[20];
	if (util_read_exact(in, head, sizeof(head)) < 0 || memcmp(head, magic, 8) != 0)
		return -EBADMSG;
	uint64_t size;
	uint32_t n_names;
	memcpy(&size, head + 8, 8);
	memcpy(&n_names, head + 16, 4);
	size = le64toh(size);
	n_names = le32toh(n_names);
	if (n_names > 65536)
		return -EBADMSG;
	int *base = calloc(n_names ? n_names : 1, sizeof(int));
	if (!base)
		return -ENOMEM;
	int r = 0;
	for (uint32_t i = 0; i < n_names; i++)
		base[i] = -1;
	for (uint32_t i = 0; i < n_names && r == 0; i++) {
		uint16_t l;
		char name[NAME_MAX + 1], path[PATH_MAX];
		if (util_read_exact(in, &l, 2) < 0 || (l = le16toh(l)) == 0 || l > NAME_MAX ||
		    util_read_exact(in, name, l) < 0) {
			r = -EBADMSG;
			break;
		}
		name[l] = '\0';
		if (strchr(name, '/')) {
			r = -EBADMSG;
			break;
		}
		snprintf(path, sizeof(path), "%s/%s", base_dir, name);
		base[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (base[i] < 0)
			r = -EBADMSG;
	}
	uint8_t *buf = malloc(64 * DELTA_PAGE_SIZE);
	if (!buf)
		r = -ENOMEM;
	uint64_t written = 0;
	while (r == 0) {
		struct record rec;
		if (util_read_exact(in, &rec, sizeof(rec)) < 0) {
			r = -EBADMSG;
			break;
		}
		uint32_t op = le32toh(rec.op);
		uint64_t pages = le32toh(rec.pages), arg = le64toh(rec.arg);
		if (op == OP_END)
			break;
		/* The run's bytes: whole pages, but for a held file's last page,
		 * which may be partial (the file's size is not a multiple of the
		 * page size). */
		uint64_t bytes = pages * DELTA_PAGE_SIZE, left = size - written;
		if (bytes > left && bytes - left < DELTA_PAGE_SIZE)
			bytes = left;
		if ((op != OP_LITERAL && op != OP_COPY) || bytes > left) {
			r = -EBADMSG;
			break;
		}
		uint64_t name_no = arg >> PAGE_BITS, page = arg & ((1ULL << PAGE_BITS) - 1);
		if (op == OP_COPY && name_no >= n_names) {
			r = -EBADMSG;
			break;
		}
		uint64_t from = page * DELTA_PAGE_SIZE;
		if (op == OP_COPY) {
			/* A run of the base's pages: copied by the kernel, file to
			 * file, when it can. */
			loff_t at = (loff_t)from;
			while (bytes > 0) {
				ssize_t n =
				    copy_file_range(base[name_no], &at, out, NULL, bytes, 0);
				if (n <= 0)
					break;
				bytes -= (uint64_t)n;
				written += (uint64_t)n;
			}
			from = (uint64_t)at;
		}
		while (bytes > 0 && r == 0) {
			size_t chunk =
			    bytes < 64 * DELTA_PAGE_SIZE ? (size_t)bytes : 64 * DELTA_PAGE_SIZE;
			if (op == OP_LITERAL) {
				r = util_read_exact(in, buf, chunk) < 0 ? -EBADMSG : 0;
			} else {
				/* What copy_file_range() left: the base ends short of the
				 * run if this comes short too. */
				ssize_t got = pread(base[name_no], buf, chunk, (off_t)from);
				r = got == (ssize_t)chunk ? 0 : -EBADMSG;
				from += chunk;
			}
			if (r == 0)
				r = util_write_all(out, buf, chunk);
			written += chunk;
			bytes -= chunk;
		}
	}
	if (r == 0 && written != size)
		r = -EBADMSG;
	for (uint32_t i = 0; i < n_names; i++)
		if (base[i] >= 0)
			close(base[i]);
	free(base);
	free(buf);
	return r;
}

void delta_map_clear(struct delta_map *m)
{
	for (size_t i = 0; i < m->n_names; i++)
		free(m->names[i]);
	free(m->names);
	free(m->runs);
	memset(m, 0, sizeof(*m));
}

int delta_map_parse(const uint8_t *data, size_t len, struct delta_map *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 20 || memcmp(data, magic, 8) != 0)
		return -EBADMSG;
	uint32_t n_names;
	memcpy(&out->size, data + 8, 8);
	memcpy(&n_names, data + 16, 4);
	out->size = le64toh(out->size);
	n_names = le32toh(n_names);
	if (n_names > 65536 || out->size % DELTA_PAGE_SIZE)
		return -EBADMSG;
	out->names = calloc(n_names ? n_names : 1, sizeof(char *));
	if (!out->names)
		return -ENOMEM;
	size_t at = 20;
	int r = 0;
	for (uint32_t i = 0; i < n_names && r == 0; i++) {
		uint16_t l;
		if (len - at < 2) {
			r = -EBADMSG;
			break;
		}
		memcpy(&l, data + at, 2);
		l = le16toh(l);
		at += 2;
		if (l == 0 || l > NAME_MAX || len - at < l || memchr(data + at, '/', l)) {
			r = -EBADMSG;
			break;
		}
		out->names[i] = strndup((const char *)data + at, l);
		r = out->names[i] ? 0 : -ENOMEM;
		out->n_names++;
		at += l;
	}
	size_t cap = 0;
	uint64_t page = 0, pages_total = out->size / DELTA_PAGE_SIZE;
	while (r == 0) {
		struct record rec;
		if (len - at < sizeof(rec)) {
			r = -EBADMSG;
			break;
		}
		memcpy(&rec, data + at, sizeof(rec));
		at += sizeof(rec);
		uint32_t op = le32toh(rec.op);
		uint64_t pages = le32toh(rec.pages), arg = le64toh(rec.arg);
		if (op == OP_END)
			break;
		if ((op != OP_LITERAL && op != OP_COPY) || pages > pages_total - page ||
		    (op == OP_COPY && (arg >> PAGE_BITS) >= out->n_names) ||
		    (op == OP_LITERAL && pages * DELTA_PAGE_SIZE > len - at)) {
			r = -EBADMSG;
			break;
		}
		if (out->n_runs == cap) {
			cap = cap ? 2 * cap : 64;
			struct delta_run *n = realloc(out->runs, cap * sizeof(*n));
			if (!n) {
				r = -ENOMEM;
				break;
			}
			out->runs = n;
		}
		struct delta_run *run = &out->runs[out->n_runs++];
		*run = (struct delta_run){.first = page, .pages = pages};
		if (op == OP_LITERAL) {
			run->base = DELTA_STORED;
			run->offset = at;
			at += pages * DELTA_PAGE_SIZE;
		} else {
			run->base = (uint32_t)(arg >> PAGE_BITS);
			run->offset = arg & ((1ULL << PAGE_BITS) - 1);
		}
		page += pages;
	}
	if (r == 0 && page != pages_total)
		r = -EBADMSG;
	if (r < 0)
		delta_map_clear(out);
	return r;
}

const struct delta_run *delta_map_find(const struct delta_map *m, uint64_t p)
{
	size_t lo = 0, hi = m->n_runs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (m->runs[mid].first + m->runs[mid].pages <= p)
			lo = mid + 1;
		else if (m->runs[mid].first > p)
			hi = mid;
		else
			return &m->runs[mid];
	}
	return NULL;
}

/* The XXH3-128 of the whole file, in pieces. */
static int hash_hex(const struct iovec *iov, size_t n, char out[33])
{
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_128bits_reset(st);
	for (size_t i = 0; i < n; i++)
		XXH3_128bits_update(st, iov[i].iov_base, iov[i].iov_len);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
	XXH3_freeState(st);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", c.digest[i]);
	return 0;
}

void delta_dir_clear(struct delta_dir *d)
{
	for (size_t i = 0; i < d->n_maps; i++) {
		if (d->maps[i].mapped)
			munmap(d->maps[i].data, d->maps[i].len);
		else if (d->maps[i].owned)
			free(d->maps[i].data);
		delta_file_clear(&d->maps[i].delta);
		free(d->maps[i].hashes);
		free(d->maps[i].name);
	}
	free(d->maps);
	free(d->files);
	page_index_free(d->index);
	memset(d, 0, sizeof(*d));
}

struct page_hash *delta_dir_take_hashes(struct delta_dir *d, const char *name, size_t *n)
{
	for (size_t i = 0; i < d->n_maps; i++) {
		struct delta_mapping *dm = &d->maps[i];
		if (strcmp(dm->name, name) != 0 || !dm->hashes)
			continue;
		*n = dm->len / DELTA_PAGE_SIZE;
		return TAKE_PTR(dm->hashes);
	}
	return NULL;
}

static struct delta_mapping *add_mapping(struct delta_dir *out, const char *name)
{
	struct delta_mapping *n = realloc(out->maps, (out->n_maps + 1) * sizeof(*n));
	if (!n)
		return NULL;
	out->maps = n;
	struct delta_mapping *dm = &out->maps[out->n_maps];
	memset(dm, 0, sizeof(*dm));
	if (!(dm->name = strdup(name)))
		return NULL;
	out->n_maps++;
	return dm;
}

struct digest_job {
	const struct iovec *src;
	size_t n;
	char *out;
	int r;
};

static void *digest_main(void *arg)
{
	struct digest_job *j = arg;
	j->r = hash_hex(j->src, j->n, j->out);
	return NULL;
}

/* Hashes dm's pages once, for this dump's index and for the delta; those
 * known (k, may be NULL) are not hashed again. */
static int prepare_one(struct delta_dir *out, struct delta_mapping *dm,
                       const struct page_index *base, bool want_index, const struct delta_known *k)
{
	if (dm->len % DELTA_PAGE_SIZE)
		return -EINVAL;
	size_t pages = dm->len / DELTA_PAGE_SIZE;
	out->pages += pages;
	if (!want_index && !base)
		return 0;
	/* In memory, the pages may be in pieces (where one dump shares them
	 * with the one before, criu-glue/pages.h): never copied together. */
	const struct iovec *src = dm->src ? dm->src : &dm->iov;
	size_t n_src = dm->src ? dm->n_src : 1;
	if (!dm->src)
		dm->iov = (struct iovec){dm->data, dm->len};
	_cleanup_free_ const uint8_t **at = page_table(src, n_src, pages);
	if (!at)
		return -ENOMEM;
	XXH128_hash_t *hashes = hash_known(at, pages, k);
	if (!hashes)
		return -ENOMEM;
	dm->hashes = (struct page_hash *)hashes;
	/* The whole file's digest, a pass over all of it, meanwhile in a
	 * thread of its own (the pages' hashes are mostly known: the index and
	 * the delta are the other core's work). */
	struct digest_job dj = {src, n_src, dm->hash, 0};
	pthread_t t;
	bool apart = base && pages > HASH_ALONE && pthread_create(&t, NULL, digest_main, &dj) == 0;
	int r = want_index ? index_add_hashed(out->index, dm->name, hashes, pages) : 0;
	if (r == 0 && base) {
		r = encode_hashed(base, dm->name, at, dm->len, hashes, &dm->delta);
		out->copied_pages += dm->delta.copied_pages;
	}
	if (apart)
		pthread_join(t, NULL);
	else if (base)
		digest_main(&dj);
	return r < 0 ? r : dj.r;
}

/* Incremental only when it pays: half the pages or more are the base's. */
static struct mem_file mapping_file(struct delta_dir *out, struct delta_mapping *dm)
{
	if (out->incremental)
		return dm->delta.mem;
	if (dm->src)
		return (struct mem_file){dm->name, dm->src, dm->n_src, dm->len};
	dm->iov = (struct iovec){dm->data, dm->len};
	return (struct mem_file){dm->name, &dm->iov, 1, dm->len};
}

static int prepare_dir(const char *images_dir, uint64_t generation, const struct page_index *base,
                       bool want_index, bool always, struct delta_dir *out)
{
	memset(out, 0, sizeof(*out));
	_cleanup_closedir_ DIR *dir = opendir(images_dir);
	if (!dir)
		return -errno;
	out->index = page_index_new(generation);
	if (!out->index)
		return -ENOMEM;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(dir)) && r == 0) {
		if (!delta_applies_to(de->d_name))
			continue;
		struct delta_mapping *dm = add_mapping(out, de->d_name);
		if (!dm) {
			r = -ENOMEM;
			break;
		}
		r = util_map_file(dirfd(dir), de->d_name, &dm->data, &dm->len);
		dm->mapped = r == 0 && dm->data;
		if (r == 0)
			r = prepare_one(out, dm, base, want_index, NULL);
	}
	if (r < 0) {
		delta_dir_clear(out);
		return r;
	}
	out->incremental =
	    base && (always || out->copied_pages * 2 >= out->pages) && out->pages > 0;
	out->files = calloc(out->n_maps ? out->n_maps : 1, sizeof(struct mem_file));
	if (!out->files) {
		delta_dir_clear(out);
		return -ENOMEM;
	}
	for (size_t i = 0; i < out->n_maps; i++) {
		struct delta_mapping *dm = &out->maps[i];
		out->files[i] = mapping_file(out, dm);
		/* The archive takes it from memory now, not from the directory. */
		if (unlinkat(dirfd(dir), dm->name, 0) < 0) {
			r = -errno;
			delta_dir_clear(out);
			return r;
		}
	}
	out->n_files = out->n_maps;
	return 0;
}

int delta_prepare_mem_known(const struct mem_file *files, size_t n, uint64_t generation,
                            const struct page_index *base, bool want_index, bool always,
                            const struct delta_known *known, struct delta_dir *out)
{
	memset(out, 0, sizeof(*out));
	out->index = page_index_new(generation);
	out->files = calloc(n ? n : 1, sizeof(struct mem_file));
	size_t *which = calloc(n ? n : 1, sizeof(*which)); /* files[i]'s mapping + 1, or 0 */
	int r = out->index && out->files && which ? 0 : -ENOMEM;
	for (size_t i = 0; i < n && r == 0; i++) {
		const struct mem_file *f = &files[i];
		out->files[i] = *f;
		if (!delta_applies_to(f->name))
			continue;
		struct delta_mapping *dm = add_mapping(out, f->name);
		if (!dm) {
			r = -ENOMEM;
			break;
		}
		dm->len = f->size;
		if (f->n_iov == 1) {
			dm->data = f->iov[0].iov_base;
		} else if (f->size) {
			/* in pieces: read where they are */
			for (size_t k = 0; k < f->n_iov && r == 0; k++)
				if (f->iov[k].iov_len % DELTA_PAGE_SIZE)
					r = -EINVAL;
			dm->src = f->iov;
			dm->n_src = f->n_iov;
		}
		if (r < 0)
			break;
		which[i] = out->n_maps;
		r = prepare_one(out, dm, base, want_index, known ? &known[i] : NULL);
	}
	if (r == 0) {
		out->incremental =
		    base && (always || out->copied_pages * 2 >= out->pages) && out->pages > 0;
		for (size_t i = 0; i < n; i++)
			if (which[i])
				out->files[i] = mapping_file(out, &out->maps[which[i] - 1]);
		out->n_files = n;
	}
	free(which);
	if (r < 0)
		delta_dir_clear(out);
	return r;
}

int delta_prepare_dir(const char *images_dir, uint64_t generation, const struct page_index *base,
                      bool want_index, struct delta_dir *out)
{
	return prepare_dir(images_dir, generation, base, want_index, false, out);
}

int delta_prepare_mem(const struct mem_file *files, size_t n, uint64_t generation,
                      const struct page_index *base, bool want_index, struct delta_dir *out)
{
	return delta_prepare_mem_known(files, n, generation, base, want_index, false, NULL, out);
}

int delta_prepare_dir_on(const char *images_dir, uint64_t generation, const struct page_index *base,
                         bool want_index, struct delta_dir *out)
{
	return prepare_dir(images_dir, generation, base, want_index, true, out);
}

int delta_prepare_mem_on(const struct mem_file *files, size_t n, uint64_t generation,
                         const struct page_index *base, bool want_index, struct delta_dir *out)
{
	return delta_prepare_mem_known(files, n, generation, base, want_index, true, NULL, out);
}

int delta_dir_restore_files(const struct delta_dir *d, const char *images_dir)
{
	for (size_t i = 0; i < d->n_maps; i++) {
		const struct delta_mapping *dm = &d->maps[i];
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", images_dir, dm->name);
		_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		int r = 0;
		if (dm->src)
			for (size_t k = 0; k < dm->n_src && r == 0; k++)
				r = util_write_all(fd, dm->src[k].iov_base, dm->src[k].iov_len);
		else if (dm->len)
			r = util_write_all(fd, dm->data, dm->len);
		if (r < 0)
			return r;
	}
	return 0;
}

static int line_parse(const char *value, bool pages, struct delta_line *out)
{
	char hex[64];
	unsigned long long size;
	if (sscanf(value, "%255s %llu %63s", out->name, &size, hex) != 3 ||
	    strchr(out->name, '/') || (pages && size % DELTA_PAGE_SIZE) || strlen(hex) != 32)
		return -EBADMSG;
	out->size = size;
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -EBADMSG;
		out->hash[i] = (uint8_t)v;
	}
	return 0;
}

int delta_line_parse(const char *value, struct delta_line *out)
{
	return line_parse(value, true, out);
}

int delta_file_line_parse(const char *value, struct delta_line *out)
{
	return line_parse(value, false, out);
}

#ifdef CRYO_XXH_DISPATCH
/* The same XXH3-128 through the library's run-time dispatch: the widest
 * vector unit the CPU has (AVX2 on cryo's machines) where the inline one is
 * compiled for the baseline (SSE2): 9 ms for 256 MiB against 27, inside a
 * checkpoint's freeze. Declared here: xxh_x86dispatch.h's declarations
 * clash with XXH_INLINE_ALL. */
struct xxh3_dispatch_hash {
	uint64_t low64, high64;
};
struct xxh3_dispatch_hash XXH3_128bits_dispatch(const void *input, size_t len);
#endif

struct page_hash delta_block_hash(const void *block, size_t len)
{
#ifdef CRYO_XXH_DISPATCH
	struct xxh3_dispatch_hash h = XXH3_128bits_dispatch(block, len);
#else
	XXH128_hash_t h = XXH3_128bits(block, len);
#endif
	return (struct page_hash){h.low64, h.high64};
}

void delta_blocks_digest(const struct page_hash *hashes, size_t n, uint8_t digest[16])
{
	/* Canonical (big-endian) hashes, so that the digest does not depend on
	 * the machine's byte order. */
	XXH3_state_t st;
	XXH3_INITSTATE(&st);
	XXH3_128bits_reset(&st);
	XXH128_canonical_t c[256];
	for (size_t i = 0; i < n;) {
		size_t k = 0;
		for (; k < ARRAY_SIZE(c) && i < n; k++, i++)
			XXH128_canonicalFromHash(&c[k],
			                         (XXH128_hash_t){hashes[i].low, hashes[i].high});
		XXH3_128bits_update(&st, c, k * sizeof(c[0]));
	}
	XXH128_canonicalFromHash(&c[0], XXH3_128bits_digest(&st));
	memcpy(digest, c[0].digest, 16);
}

int delta_file_digest(int fd, uint64_t size, uint8_t *buf, size_t len, struct page_hash *hashes,
                      uint8_t digest[16])
{
	uint64_t blocks = (size + DELTA_PAGE_SIZE - 1) / DELTA_PAGE_SIZE;
	_cleanup_free_ struct page_hash *own = NULL;
	if (!hashes) {
		hashes = own = malloc((blocks ? blocks : 1) * sizeof(*hashes));
		if (!own)
			return -ENOMEM;
	}
	for (uint64_t off = 0; off < size;) {
		size_t want = size - off < len ? (size_t)(size - off) : len;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		/* Whole blocks only, but at the file's end. */
		size_t usable =
		    (size_t)n == want ? want : (size_t)n / DELTA_PAGE_SIZE * DELTA_PAGE_SIZE;
		if (usable == 0)
			return -EIO;
		for (size_t o = 0; o < usable; o += DELTA_PAGE_SIZE) {
			size_t l = usable - o < DELTA_PAGE_SIZE ? usable - o : DELTA_PAGE_SIZE;
			hashes[(off + o) / DELTA_PAGE_SIZE] = delta_block_hash(buf + o, l);
		}
		off += usable;
	}
	delta_blocks_digest(hashes, blocks, digest);
	return 0;
}

/* Writes out what w holds but an open literal record, which may grow. */
static int writer_flush(struct delta_writer *w)
{
	int r = w->len ? util_write_all(w->fd, w->buf, w->len) : 0;
	w->stored += w->len;
	w->len = 0;
	w->literal = SIZE_MAX;
	return r;
}

static int writer_put(struct delta_writer *w, const void *data, size_t len)
{
	if (w->cap - w->len < len) {
		int r = writer_flush(w);
		if (r < 0)
			return r;
	}
	memcpy(w->buf + w->len, data, len);
	w->len += len;
	return 0;
}

/* Closes the open copy run, if any. */
static int writer_close_copy(struct delta_writer *w)
{
	if (!w->copy_pages)
		return 0;
	struct record rec = {htole32(OP_COPY), htole32(w->copy_pages), htole64(w->copy_first)};
	w->copy_pages = 0;
	return writer_put(w, &rec, sizeof(rec));
}

int delta_writer_start(struct delta_writer *w, int fd, uint8_t *buf, size_t cap, uint64_t size,
                       const char *base_name)
{
	size_t l = strlen(base_name);
	if (cap < 65536 || l == 0 || l > NAME_MAX || strchr(base_name, '/'))
		return -EINVAL;
	*w = (struct delta_writer){.fd = fd, .buf = buf, .cap = cap, .literal = SIZE_MAX};
	uint8_t head[20];
	memcpy(head, magic, 8);
	uint64_t s = htole64(size);
	memcpy(head + 8, &s, 8);
	uint32_t n = htole32(1);
	memcpy(head + 16, &n, 4);
	uint16_t ll = htole16((uint16_t)l);
	int r = writer_put(w, head, sizeof(head));
	if (r == 0)
		r = writer_put(w, &ll, 2);
	if (r == 0)
		r = writer_put(w, base_name, l);
	return r;
}

int delta_writer_copy(struct delta_writer *w, uint64_t block)
{
	if (block >= (1ULL << PAGE_BITS))
		return -E2BIG;
	w->blocks++;
	w->literal = SIZE_MAX;
	if (w->copy_pages && w->copy_first + w->copy_pages == block && w->copy_pages < UINT32_MAX) {
		w->copy_pages++;
		return 0;
	}
	int r = writer_close_copy(w);
	w->copy_first = block;
	w->copy_pages = 1;
	return r;
}

int delta_writer_literal(struct delta_writer *w, const void *data, size_t len)
{
	if (len == 0 || len > DELTA_PAGE_SIZE)
		return -EINVAL;
	w->blocks++;
	w->literals++;
	int r = writer_close_copy(w);
	if (r < 0)
		return r;
	/* The open literal record grows in place (at any alignment: the
	 * header before it has a name of any length). */
	uint8_t *count = w->literal != SIZE_MAX ? w->buf + w->literal + 4 : NULL;
	uint32_t pages = 0;
	if (count)
		memcpy(&pages, count, sizeof(pages));
	pages = le32toh(pages);
	if (count && w->cap - w->len >= len && pages < UINT32_MAX) {
		pages = htole32(pages + 1);
		memcpy(count, &pages, sizeof(pages));
		memcpy(w->buf + w->len, data, len);
		w->len += len;
		return 0;
	}
	struct record rec = {htole32(OP_LITERAL), htole32(1), 0};
	if (w->cap - w->len < sizeof(rec) + len && (r = writer_flush(w)) < 0)
		return r;
	w->literal = w->len;
	r = writer_put(w, &rec, sizeof(rec));
	if (r == 0)
		r = writer_put(w, data, len);
	return r;
}

int delta_writer_end(struct delta_writer *w)
{
	struct record end = {0};
	int r = writer_close_copy(w);
	if (r == 0)
		r = writer_put(w, &end, sizeof(end));
	if (r == 0)
		r = writer_flush(w);
	return r;
}

int delta_apply_files(const struct manifest *m, const char *dest, const char *base_dir,
                      const char **bad)
{
	int r = 0;
	*bad = NULL;
	for (size_t i = 0; i < m->n_entries && r == 0; i++) {
		if (strcmp(m->keys[i], "file_delta") != 0)
			continue;
		struct delta_line d;
		*bad = m->values[i];
		if (delta_file_line_parse(m->values[i], &d) < 0)
			return -EBADMSG;
		char path[PATH_MAX], tmp[PATH_MAX + 8];
		if (snprintf(path, sizeof(path), "%s/%s", dest, d.name) >= (int)sizeof(path))
			return -ENAMETOOLONG;
		snprintf(tmp, sizeof(tmp), "%s.delta", path);
		r = rename(path, tmp) < 0 ? -errno : delta_decode(tmp, base_dir, path);
		unlink(tmp);
		uint8_t digest[16];
		if (r == 0) {
			_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
			_cleanup_free_ uint8_t *buf = malloc(1 << 20);
			struct stat st;
			r = fd < 0 ? -errno : !buf ? -ENOMEM : fstat(fd, &st) < 0 ? -errno : 0;
			if (r == 0 && (uint64_t)st.st_size != d.size)
				r = -EBADMSG;
			if (r == 0)
				r = delta_file_digest(fd, d.size, buf, 1 << 20, NULL, digest);
			if (r == 0 && memcmp(digest, d.hash, 16) != 0)
				r = -EBADMSG;
		}
	}
	if (r == 0)
		*bad = NULL;
	return r;
}

int delta_describe(const struct delta_dir *d, uint64_t base_generation, struct manifest *m)
{
	if (!d->incremental)
		return 0;
	int r = manifest_addf(m, "base", "%llu", (unsigned long long)base_generation);
	for (size_t i = 0; i < d->n_maps && r == 0; i++)
		r = manifest_addf(m, "delta", "%s %llu %s", d->maps[i].name,
		                  (unsigned long long)d->maps[i].len, d->maps[i].hash);
	return r;
}

int delta_index_dir(const char *images_dir, uint64_t generation, struct page_index **ret)
{
	_cleanup_closedir_ DIR *dir = opendir(images_dir);
	if (!dir)
		return -errno;
	struct page_index *idx = page_index_new(generation);
	if (!idx)
		return -ENOMEM;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(dir)) && r == 0) {
		if (!delta_applies_to(de->d_name))
			continue;
		void *data = NULL;
		size_t len = 0;
		r = util_map_file(dirfd(dir), de->d_name, &data, &len);
		if (r == 0 && len % DELTA_PAGE_SIZE == 0)
			r = page_index_add(idx, de->d_name, data, len);
		if (data)
			munmap(data, len);
	}
	if (r < 0) {
		page_index_free(idx);
		return r;
	}
	*ret = idx;
	return 0;
}
