/* Reading an archive lazily: a thread extracts it in the background (the
 * small files into a directory, the memory images into memory, chunk by
 * chunk, each checked by its frame's checksum) while the caller asks for the
 * pieces of memory it needs now, which are decompressed at once, and gives
 * back those it is done with. The thread also hashes every page, for the
 * page index of the next incremental generation (delta.h). */
#include "archive-internal.h"
#include "delta.h"
#include "cleanup.h"
#include "util.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK_NONE, CHUNK_BUSY, CHUNK_DONE };

struct lazy_memory {
	const char *name; /* the manifest's */
	const uint8_t *hash;
	uint8_t *data; /* anonymous memory of size bytes */
	uint64_t size;
	size_t n_chunks;
	uint8_t *state;  /* per chunk, under lock */
	uint64_t *frame; /* per chunk: its frame's offset in the archive */
	uint64_t *frame_len;
	bool seen; /* met in the body (by the thread) */
	/* The thread hashes the chunks in order as they come in (the file's
	 * checksum, and each page's hash for the page index); a chunk both
	 * hashed and handed over in full (image_lazy_release()) goes back to
	 * the kernel, to be decompressed again should it be asked for. Under
	 * lock. */
	uint8_t *hashed;               /* per chunk */
	uint64_t *given;               /* bitmap: the pages handed over */
	XXH3_state_t *st;              /* the thread's */
	struct page_hash *page_hashes; /* with want_index */
};

#define LAZY_STASH 16

struct image_lazy {
	int fd, dfd;
	const uint8_t *map; /* the archive, mapped */
	size_t map_len;
	struct trailer t;
	struct manifest *m;
	bool want_index;
	uint64_t gen;
	struct page_index *index;
	struct lazy_memory *mem;
	size_t n_mem;
	size_t n_dir; /* files bound for dir */

	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t dir_done; /* files extracted into dir so far */
	int result;      /* 0 while running, 1 done and verified, <0 failed */
	struct cryo_error err;
	bool cancel;
	/* With a consumer that releases what it is done with: how many chunks
	 * the thread keeps decompressed ahead of it at most (0: no limit), and
	 * how many are in and not released. Under lock. */
	unsigned bound;
	size_t resident;
	/* Released chunks whose pages stay, for chunks decompressed later to
	 * take (lazy_ready()). Under lock. */
	uint8_t *stash[LAZY_STASH];
	size_t n_stash;
	/* The chunks of the last image_lazy_get(), which its caller may still
	 * be reading: not released until its image_lazy_release(). Under
	 * lock. */
	struct lazy_memory *pin;
	size_t pin_first, pin_last;
};

static struct lazy_memory *lazy_find(struct image_lazy *l, const char *name)
{
	for (size_t i = 0; i < l->n_mem; i++)
		if (strcmp(l->mem[i].name, name) == 0)
			return &l->mem[i];
	return NULL;
}

/* The memory image whose memory is at data. */
static struct lazy_memory *lazy_by_data(struct image_lazy *l, const uint8_t *data)
{
	for (size_t i = 0; i < l->n_mem; i++)
		if (l->mem[i].data == data)
			return &l->mem[i];
	return NULL;
}

static bool lazy_cancelled(struct image_lazy *l)
{
	return __atomic_load_n(&l->cancel, __ATOMIC_RELAXED);
}

/* Records the thread's failure (the first one) and wakes every waiter. */
static int lazy_failed(struct image_lazy *l, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int lazy_failed(struct image_lazy *l, int r, const char *fmt, ...)
{
	pthread_mutex_lock(&l->lock);
	if (l->result == 0) {
		va_list ap;
		va_start(ap, fmt);
		error_setv(&l->err, r, fmt, ap);
		va_end(ap);
		l->result = r;
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return r;
}

static uint64_t chunk_len(const struct lazy_memory *f, size_t k)
{
	uint64_t off = (uint64_t)k * MEMORY_CHUNK;
	return f->size - off < MEMORY_CHUNK ? f->size - off : MEMORY_CHUNK;
}

/* Memory for a whole chunk at at, from the stash: its own pages if they are
 * there still, else a released chunk's pages, moved (MREMAP_DONTUNMAP
 * leaves where they were mapped, empty). false if none is to be had. */
static bool lazy_ready(struct image_lazy *l, uint8_t *at)
{
	pthread_mutex_lock(&l->lock);
	bool ok = false;
	for (size_t i = 0; i < l->n_stash && !ok; i++) {
		if (l->stash[i] == at) {
			l->stash[i] = l->stash[--l->n_stash];
			ok = true;
		}
	}
	if (!ok && l->n_stash > 0) {
		uint8_t *from = l->stash[--l->n_stash];
		ok = mremap(from, MEMORY_CHUNK, MEMORY_CHUNK,
		            MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, at) != MAP_FAILED;
		if (!ok) /* before Linux 5.13, or too many mappings */
			madvise(from, MEMORY_CHUNK, MADV_DONTNEED);
	}
	pthread_mutex_unlock(&l->lock);
	return ok;
}

/* Decompresses chunk k of f, which the caller claimed (CHUNK_BUSY). */
static int lazy_inflate(struct image_lazy *l, ZSTD_DCtx *d, struct lazy_memory *f, size_t k)
{
	uint64_t len = chunk_len(f, k);
	/* Memory a released chunk had, its pages in place already; else
	 * fresh memory, faulted in at once rather than a page at a time as
	 * zstd writes it: half the time on these VMs. Without it (before
	 * Linux 5.14), the faults come as they come. */
	if (len != MEMORY_CHUNK || !lazy_ready(l, f->data + (uint64_t)k * MEMORY_CHUNK))
		madvise(f->data + (uint64_t)k * MEMORY_CHUNK, len, MADV_POPULATE_WRITE);
	size_t n = ZSTD_decompressDCtx(d, f->data + (uint64_t)k * MEMORY_CHUNK, len,
	                               l->map + f->frame[k], f->frame_len[k]);
	int r = 0;
	if (ZSTD_isError(n) || n != len)
		r = lazy_failed(l, -EBADMSG, "image body is damaged in '%s' (chunk %zu: %s)",
		                f->name, k, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
	pthread_mutex_lock(&l->lock);
	f->state[k] = r < 0 ? CHUNK_NONE : CHUNK_DONE;
	if (r == 0)
		l->resident++;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* Memory image f's frames, from the manifest's frame table (add_frames()),
 * which image_manifest_validate() found to have one frame per chunk, all
 * inside the body. */
static int lazy_frames(struct image_lazy *l, struct lazy_memory *f)
{
	_cleanup_(archive_frames_clear) struct frame_table t = {0};
	int r = archive_frames_get(l->m, f->name, &t);
	if (r < 0)
		return r;
	if (t.n != f->n_chunks)
		return -EBADMSG;
	uint64_t off = t.first;
	for (size_t k = 0; k < f->n_chunks; k++) {
		f->frame[k] = off;
		f->frame_len[k] = t.lens[k];
		off += t.lens[k];
	}
	return 0;
}

/* Whether every page of chunk k was handed over. Under lock. */
static bool chunk_given(const struct lazy_memory *f, size_t k)
{
	uint64_t first = (uint64_t)k * (MEMORY_CHUNK / DELTA_PAGE_SIZE);
	uint64_t n = chunk_len(f, k) / DELTA_PAGE_SIZE;
	for (uint64_t p = first; p < first + n; p++)
		if (!(f->given[p / 64] & (1ULL << (p % 64))))
			return false;
	return true;
}

/* Chunk k, hashed and handed over, goes to the stash, for a chunk
 * decompressed later to reuse its pages (fresh memory costs more here than
 * the moving: scripts/bench), or back to the kernel. Under lock. */
static void chunk_release(struct image_lazy *l, struct lazy_memory *f, size_t k)
{
	if (f->state[k] != CHUNK_DONE || !f->hashed[k] || !chunk_given(f, k) ||
	    (f == l->pin && k >= l->pin_first && k <= l->pin_last))
		return;
	uint8_t *at = f->data + (uint64_t)k * MEMORY_CHUNK;
	if (chunk_len(f, k) == MEMORY_CHUNK && l->n_stash < LAZY_STASH)
		l->stash[l->n_stash++] = at;
	else
		madvise(at, chunk_len(f, k), MADV_DONTNEED);
	f->state[k] = CHUNK_NONE;
	l->resident--;
	pthread_cond_broadcast(&l->cond);
	uint64_t first = (uint64_t)k * (MEMORY_CHUNK / DELTA_PAGE_SIZE);
	for (uint64_t p = first; p < first + chunk_len(f, k) / DELTA_PAGE_SIZE; p++)
		f->given[p / 64] &= ~(1ULL << (p % 64));
}

/* The consumer is done with what it got last: those chunks may go, as far
 * as it is concerned. Under lock. */
static void unpin(struct image_lazy *l)
{
	struct lazy_memory *f = l->pin;
	l->pin = NULL;
	for (size_t k = l->pin_first; f && k <= l->pin_last; k++)
		chunk_release(l, f, k);
}

/* Decompresses what nobody asked for yet, and hashes every chunk, in
 * order. */
static int lazy_fill(struct image_lazy *l, ZSTD_DCtx *d, struct lazy_memory *f)
{
	for (size_t k = 0; k < f->n_chunks; k++) {
		if (lazy_cancelled(l))
			return -ECANCELED;
		pthread_mutex_lock(&l->lock);
		/* Not too far ahead of a consumer that releases: the memory it
		 * releases is reused, still warm, rather than fresh memory taken.
		 * Should it stall, the thread goes on after a while. Someone
		 * else's decompression of this chunk is waited for, always. */
		for (int waits = 0; l->result == 0;) {
			if (f->state[k] == CHUNK_BUSY) {
				pthread_cond_wait(&l->cond, &l->lock);
				continue;
			}
			if (f->state[k] != CHUNK_NONE || !l->bound || l->resident < l->bound ||
			    waits++ == 10)
				break;
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 5 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&l->cond, &l->lock, &ts);
		}
		int r = l->result < 0 ? l->result : 0;
		bool mine = r == 0 && f->state[k] == CHUNK_NONE;
		if (mine)
			f->state[k] = CHUNK_BUSY;
		pthread_mutex_unlock(&l->lock);
		if (r == 0 && mine)
			r = lazy_inflate(l, d, f, k);
		if (r < 0)
			return r;
		/* In, and not to be released before it is hashed. */
		const uint8_t *c = f->data + (uint64_t)k * MEMORY_CHUNK;
		uint64_t len = chunk_len(f, k);
		XXH3_128bits_update(f->st, c, len);
		if (f->page_hashes)
			for (uint64_t o = 0; o < len; o += DELTA_PAGE_SIZE)
				f->page_hashes[(k * MEMORY_CHUNK + o) / DELTA_PAGE_SIZE] =
				    page_hash_of(c + o);
		pthread_mutex_lock(&l->lock);
		f->hashed[k] = 1;
		chunk_release(l, f, k);
		pthread_mutex_unlock(&l->lock);
	}
	return 0;
}

/* Once every chunk is hashed: the file's checksum. */
static int lazy_verify(struct image_lazy *l, struct lazy_memory *f)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(f->st));
	if (memcmp(c.digest, f->hash, 16) != 0)
		return lazy_failed(l, -EBADMSG, "checksum mismatch in '%s'", f->name);
	return 0;
}

static int lazy_check_body(struct image_lazy *l)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(
	    &c, XXH3_128bits(l->map + HEADER_SIZE, l->t.manifest_offset - HEADER_SIZE));
	return memcmp(c.digest, l->t.body_hash, 16) == 0 ? 0 : -EBADMSG;
}

static int lazy_extract(struct image_lazy *l, ZSTD_DCtx *d)
{
	struct source s;
	uint64_t pos = HEADER_SIZE; /* where the source started */
	int r = archive_source_init(&s, l->fd, false, l->t.manifest_offset - HEADER_SIZE, 2);
	if (r == 0 && lseek(l->fd, HEADER_SIZE, SEEK_SET) < 0)
		r = -errno;
	for (size_t i = 0; r == 0 && i <= l->m->n_files; i++) {
		uint16_t nl;
		r = archive_source_read(&s, &nl, sizeof(nl), -1, NULL);
		if (r < 0)
			break;
		nl = le16toh(nl);
		if (i == l->m->n_files || nl == 0) {
			if (i != l->m->n_files || nl != 0)
				r = lazy_failed(l, -EBADMSG, "image body and manifest disagree");
			break;
		}
		const struct manifest_file *mf = &l->m->files[i];
		char name[UINT16_MAX + 1];
		uint64_t size;
		r = archive_source_read(&s, name, nl, -1, NULL);
		if (r == 0)
			r = archive_source_read(&s, &size, sizeof(size), -1, NULL);
		if (r < 0)
			break;
		name[nl] = '\0';
		if (strcmp(name, mf->name) != 0 || le64toh(size) != mf->size) {
			r = lazy_failed(l, -EBADMSG,
			                "image body does not match its manifest at '%s'", name);
			break;
		}
		struct lazy_memory *f = lazy_find(l, name);
		if (f) {
			/* The frame ends after the header; the chunks' frames follow,
			 * then the body goes on in a frame of its own. */
			uint64_t end = 0;
			r = archive_source_end_frame(&s);
			if (r == 0) {
				uint64_t at = pos + s.consumed;
				end = f->n_chunks ? f->frame[f->n_chunks - 1] +
				                        f->frame_len[f->n_chunks - 1]
				                  : at;
				if (f->seen || (f->n_chunks && f->frame[0] != at))
					r = -EBADMSG; /* the frame table says otherwise */
				f->seen = true;
			}
			if (r == 0)
				r = lazy_fill(l, d, f);
			if (r == 0) {
				archive_source_fini(&s);
				pos = end;
				r = archive_source_init(&s, l->fd, false,
				                        l->t.manifest_offset - end, 2);
				if (r == 0 && lseek(l->fd, (off_t)end, SEEK_SET) < 0)
					r = -errno;
			}
			continue;
		}
		XXH3_state_t *h = XXH3_createState();
		if (!h) {
			r = -ENOMEM;
			break;
		}
		XXH3_128bits_reset(h);
		/* Without a directory (a base generation's), checked only. */
		_cleanup_close_ int ofd =
		    l->dfd < 0 ? -1
		               : openat(l->dfd, name,
		                        O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		r = ofd < 0 && l->dfd >= 0 ? -errno : archive_source_read(&s, NULL, size, ofd, h);
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
		XXH3_freeState(h);
		if (ofd < 0 && l->dfd >= 0)
			r = lazy_failed(l, r, "cannot create '%s': %s", name, strerror(-r));
		else if (r == 0 && memcmp(c.digest, mf->hash, 16) != 0)
			r = lazy_failed(l, -EBADMSG, "checksum mismatch in '%s'", name);
		if (r == 0) {
			pthread_mutex_lock(&l->lock);
			l->dir_done++;
			pthread_cond_broadcast(&l->cond);
			pthread_mutex_unlock(&l->lock);
		}
	}
	if (r == 0 && archive_source_end(&s) < 0)
		r = lazy_failed(l, -EBADMSG, "image body has trailing data");
	archive_source_fini(&s);
	for (size_t i = 0; r == 0 && i < l->n_mem; i++)
		r = l->mem[i].seen
		        ? lazy_verify(l, &l->mem[i])
		        : lazy_failed(l, -EBADMSG, "image body lacks '%s'", l->mem[i].name);
	if (r == 0 && lazy_check_body(l) < 0)
		r = lazy_failed(l, -EBADMSG, "image body checksum mismatch");
	if (r == 0 && l->want_index) {
		l->index = page_index_new(l->gen);
		for (size_t i = 0; r == 0 && i < l->n_mem; i++)
			r = l->index ? page_index_add_hashes(l->index, l->mem[i].name,
			                                     l->mem[i].page_hashes,
			                                     l->mem[i].size / DELTA_PAGE_SIZE)
			             : -ENOMEM;
	}
	if (r == -EBADMSG)
		lazy_failed(l, r, "image body is damaged or truncated");
	else if (r < 0)
		lazy_failed(l, r, "cannot extract the image: %s", strerror(-r));
	return r;
}

static void *lazy_main(void *arg)
{
	struct image_lazy *l = arg;
	/* The archive was written past the page cache: read it all ahead,
	 * in the background, rather than a fault's readahead at a time. */
	posix_fadvise(l->fd, 0, 0, POSIX_FADV_WILLNEED);
	ZSTD_DCtx *d = ZSTD_createDCtx();
	int r = d ? lazy_extract(l, d) : lazy_failed(l, -ENOMEM, "out of memory");
	ZSTD_freeDCtx(d);
	pthread_mutex_lock(&l->lock);
	if (l->result == 0)
		l->result = r < 0 ? r : 1;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

int image_lazy_open(int fd, const char *dir, bool want_index, uint64_t gen, struct image_lazy **ret,
                    struct cryo_error *err)
{
	struct image_lazy *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = fd;
	l->dfd = -1;
	l->want_index = want_index;
	l->gen = gen;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	uint64_t size;
	int r = archive_read_trailer(fd, &l->t, &size, err);
	if (r == 1)
		r = error_set(err, -EPROTONOSUPPORT,
		              "image format 1 has no chunks to restore lazily");
	if (r >= 0)
		r = image_archive_read_manifest(fd, &l->m, err);
	if (r >= 0)
		r = image_manifest_validate(l->m, gen, l->t.manifest_offset, err);
	if (r < 0)
		goto fail;
	void *map;
	r = util_map_fd(fd, &map, &l->map_len);
	if (r < 0 || !map) {
		r = error_set(err, r < 0 ? r : -EBADMSG, "cannot map the image");
		goto fail;
	}
	l->map = map;
	l->dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dir && l->dfd < 0) {
		r = error_set(err, -errno, "cannot open '%s': %m", dir);
		goto fail;
	}
	l->mem = calloc(l->m->n_files ? l->m->n_files : 1, sizeof(*l->mem));
	if (!l->mem) {
		r = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < l->m->n_files; i++) {
		const struct manifest_file *mf = &l->m->files[i];
		if (!is_memory_image(mf->name)) {
			l->n_dir++;
			continue;
		}
		struct lazy_memory *f = &l->mem[l->n_mem++];
		f->name = mf->name;
		f->hash = mf->hash;
		f->size = mf->size;
		f->n_chunks = (size_t)((mf->size + MEMORY_CHUNK - 1) / MEMORY_CHUNK);
		f->state = calloc(f->n_chunks + 1, 1);
		f->frame = calloc(f->n_chunks + 1, sizeof(*f->frame));
		f->frame_len = calloc(f->n_chunks + 1, sizeof(*f->frame_len));
		f->hashed = calloc(f->n_chunks + 1, 1);
		f->given = calloc(mf->size / DELTA_PAGE_SIZE / 64 + 1, sizeof(*f->given));
		f->st = XXH3_createState();
		if (f->st)
			XXH3_128bits_reset(f->st);
		f->page_hashes =
		    want_index ? malloc((mf->size / DELTA_PAGE_SIZE + 1) * sizeof(struct page_hash))
		               : NULL;
		f->data = mmap(NULL, mf->size ? mf->size : 1, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (f->data == MAP_FAILED)
			f->data = NULL;
		if (!f->state || !f->frame || !f->frame_len || !f->data || !f->hashed ||
		    !f->given || !f->st || (want_index && !f->page_hashes)) {
			r = error_set(err, -ENOMEM, "cannot map %s of memory for '%s'",
			              util_format_bytes(mf->size, (char[32]){0}, 32), mf->name);
			goto fail;
		}
		r = lazy_frames(l, f);
		if (r == -ENOENT)
			r = error_set(err, -EPROTONOSUPPORT, "image has no frame table for '%s'",
			              f->name);
		else if (r < 0)
			r = error_set(err, r, "image's frame table for '%s' is damaged", f->name);
		if (r < 0)
			goto fail;
	}
	r = -pthread_create(&l->thread, NULL, lazy_main, l);
	if (r < 0) {
		error_set(err, r, "cannot start a thread: %s", strerror(-r));
		goto fail;
	}
	l->started = true;
	*ret = l;
	return 0;
fail:
	image_lazy_free(l);
	return r;
}

int image_lazy_wait_files(struct image_lazy *l, struct cryo_error *err)
{
	pthread_mutex_lock(&l->lock);
	while (l->result == 0 && l->dir_done < l->n_dir)
		pthread_cond_wait(&l->cond, &l->lock);
	int r = l->result < 0 ? l->result : 0;
	if (r < 0 && err)
		*err = l->err;
	pthread_mutex_unlock(&l->lock);
	return r;
}

const uint8_t *image_lazy_memory(struct image_lazy *l, const char *name, uint64_t *size)
{
	struct lazy_memory *f = lazy_find(l, name);
	if (!f)
		return NULL;
	*size = f->size;
	return f->data;
}

int image_lazy_get(struct image_lazy *l, const uint8_t *data, uint64_t off, uint64_t len)
{
	struct lazy_memory *f = lazy_by_data(l, data);
	if (!f || off > f->size || len > f->size - off)
		return -EINVAL;
	if (len == 0)
		return 0;
	size_t first = (size_t)(off / MEMORY_CHUNK),
	       last = (size_t)((off + len - 1) / MEMORY_CHUNK);
	ZSTD_DCtx *d = NULL;
	int r = 0;
	pthread_mutex_lock(&l->lock);
	/* Pages the consumer gave the program may be asked for again (a
	 * forked child wants them too): what it gets now stays until it is
	 * done with it, whatever the hashing thread releases meanwhile. */
	unpin(l);
	l->pin = f;
	l->pin_first = first;
	l->pin_last = last;
	for (size_t k = first; k <= last && r == 0;) {
		if (l->result < 0) {
			r = l->result;
			break;
		}
		if (f->state[k] == CHUNK_DONE) {
			k++;
			continue;
		}
		if (f->state[k] == CHUNK_BUSY) {
			pthread_cond_wait(&l->cond, &l->lock);
			continue;
		}
		/* Nobody has it yet: decompressed here, now. */
		f->state[k] = CHUNK_BUSY;
		pthread_mutex_unlock(&l->lock);
		if (!d)
			d = ZSTD_createDCtx();
		r = d ? lazy_inflate(l, d, f, k) : -ENOMEM;
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	ZSTD_freeDCtx(d);
	return r;
}

void image_lazy_release(struct image_lazy *l, const uint8_t *data, uint64_t off, uint64_t len)
{
	struct lazy_memory *f = lazy_by_data(l, data);
	if (!f || off % DELTA_PAGE_SIZE || len % DELTA_PAGE_SIZE || off > f->size ||
	    len > f->size - off || !len)
		return;
	pthread_mutex_lock(&l->lock);
	unpin(l);
	for (uint64_t p = off / DELTA_PAGE_SIZE; p < (off + len) / DELTA_PAGE_SIZE; p++)
		f->given[p / 64] |= 1ULL << (p % 64);
	for (size_t k = (size_t)(off / MEMORY_CHUNK); k <= (off + len - 1) / MEMORY_CHUNK; k++)
		chunk_release(l, f, k);
	pthread_mutex_unlock(&l->lock);
}

int image_lazy_finish(struct image_lazy *l, struct manifest **m, struct page_index **index,
                      struct cryo_error *err)
{
	image_lazy_bound(l, 0); /* nothing more is released */
	if (l->started) {
		pthread_join(l->thread, NULL);
		l->started = false;
	}
	if (l->result < 0) {
		if (err)
			*err = l->err;
		return l->result;
	}
	if (m)
		*m = TAKE_PTR(l->m);
	if (index)
		*index = TAKE_PTR(l->index);
	return 0;
}

void image_lazy_bound(struct image_lazy *l, unsigned chunks)
{
	pthread_mutex_lock(&l->lock);
	l->bound = chunks;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

void image_lazy_cancel(struct image_lazy *l)
{
	__atomic_store_n(&l->cancel, true, __ATOMIC_RELAXED);
	lazy_failed(l, -ECANCELED, "cancelled");
}

void image_lazy_free(struct image_lazy *l)
{
	if (!l)
		return;
	if (l->started) {
		image_lazy_cancel(l);
		pthread_join(l->thread, NULL);
	}
	for (size_t i = 0; i < l->n_mem; i++) {
		if (l->mem[i].data)
			munmap(l->mem[i].data, l->mem[i].size ? l->mem[i].size : 1);
		free(l->mem[i].state);
		free(l->mem[i].frame);
		free(l->mem[i].frame_len);
		free(l->mem[i].hashed);
		free(l->mem[i].given);
		XXH3_freeState(l->mem[i].st);
		free(l->mem[i].page_hashes);
	}
	free(l->mem);
	if (l->map)
		munmap((void *)l->map, l->map_len);
	if (l->dfd >= 0)
		close(l->dfd);
	page_index_free(l->index);
	manifest_free(l->m);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
