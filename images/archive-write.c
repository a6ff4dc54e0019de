/* Writing an archive: the files of a dump directory and those held in
 * memory, compressed in one pass (the small files as one stream, each memory
 * image's 2 MiB chunks by a pool of threads) and written with their manifest
 * and trailer, the file's writeback started as it grows. What a writer keeps
 * from one archive to the next (struct image_writer) is here too. */
#include "archive-internal.h"
#include "cleanup.h"
#include "util.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_CHUNK (1u << 20)

/* Compressed output goes through here: written to fd and hashed. */
struct sink {
	int fd;
	ZSTD_CCtx *cctx;
	XXH3_state_t *hash;
	uint8_t *out;
	size_t out_cap;
	uint64_t written;
	uint64_t *raw_progress; /* stats->raw_bytes, advanced as input is read */
	/* A regular file: where the bytes written so far end, and up to where
	 * their writeback has been started. */
	bool file;
	uint64_t pos, started;
};

/* Writeback of a file's new bytes starts every this many bytes (a frame;
 * 8 MiB made a 256 MB checkpoint durable ~5% later). */
#define WRITEBACK_STEP (2u << 20)

/* Bytes of the archive, in order. The page cache takes them, and their
 * writeback starts as soon as WRITEBACK_STEP of them are there, while the
 * compression goes on, so that the disk works all along. Checkpoints of a
 * 256 MB and a 1 GB program were durable 10-20% sooner so than with writes
 * past the page cache (O_DIRECT, one at a time, each waiting for the disk;
 * medians of 8 `cryo checkpoint`s, the two builds taking turns), and plain
 * writes that leave the writeback to the fsync were slower still. */
static int sink_out(struct sink *s, const void *buf, size_t len)
{
	int r = util_write_all(s->fd, buf, len);
	if (r < 0)
		return r;
	s->pos += len;
	if (s->file && s->pos - s->started >= WRITEBACK_STEP) {
		/* Only a hint: the fsync that follows makes the bytes durable. */
		(void)sync_file_range(s->fd, (off_t)s->started, (off_t)(s->pos - s->started),
		                      SYNC_FILE_RANGE_WRITE);
		s->started = s->pos;
	}
	return 0;
}

static int sink_emit(struct sink *s, const void *buf, size_t len)
{
	int r = sink_out(s, buf, len);
	if (r < 0)
		return r;
	if (s->hash)
		XXH3_128bits_update(s->hash, buf, len);
	s->written += len;
	return 0;
}

static int sink_compress(struct sink *s, const void *buf, size_t len, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {buf, len, 0};
	for (;;) {
		ZSTD_outBuffer out = {s->out, s->out_cap, 0};
		size_t rem = ZSTD_compressStream2(s->cctx, &out, &in, mode);
		if (ZSTD_isError(rem))
			return -EIO;
		if (out.pos > 0) {
			int r = sink_emit(s, s->out, out.pos);
			if (r < 0)
				return r;
		}
		if (mode == ZSTD_e_continue ? in.pos == in.size : rem == 0)
			return 0;
	}
}

/* The order of the files in the body: the memory images last, each group
 * by name. */
static int entry_order(const char *a, const char *b)
{
	bool ma = is_memory_image(a), mb = is_memory_image(b);
	return ma != mb ? (ma ? 1 : -1) : strcmp(a, b);
}

static int compare_names(const void *a, const void *b)
{
	return entry_order(*(char *const *)a, *(char *const *)b);
}

static int list_files(const char *dir, char ***ret, size_t *ret_n)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return -errno;
	char **names = NULL;
	size_t n = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode) || strlen(de->d_name) > UINT16_MAX) {
			r = -EINVAL;
			break;
		}
		char **nn = realloc(names, (n + 1) * sizeof(char *));
		if (!nn || !(nn[n] = strdup(de->d_name))) {
			names = nn ? nn : names;
			r = -ENOMEM;
			break;
		}
		names = nn;
		n++;
	}
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return r;
	}
	qsort(names, n, sizeof(char *), compare_names);
	*ret = names;
	*ret_n = n;
	return 0;
}

static int write_header(struct sink *s, const char *name, uint64_t size)
{
	uint16_t nl = htole16((uint16_t)strlen(name));
	uint64_t le = htole64(size);
	int r = sink_compress(s, &nl, sizeof(nl), ZSTD_e_continue);
	if (r == 0)
		r = sink_compress(s, name, strlen(name), ZSTD_e_continue);
	if (r == 0)
		r = sink_compress(s, &le, sizeof(le), ZSTD_e_continue);
	return r;
}

/* ---- memory images: chunks compressed by a pool of threads ------------------ */

#define POOL_RING    8
#define POOL_THREADS 4

struct pool_job {
	const uint8_t *src; /* the chunk, or copy when it spans segments */
	uint8_t *copy;
	size_t len;
	uint8_t *dst;
	size_t dst_len;
	int state; /* 0 free, 1 ready, 2 taken, 3 done, <0 failed */
};

struct pool {
	pthread_t threads[POOL_THREADS];
	int n_threads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct pool_job jobs[POOL_RING];
	uint64_t filled, taken, written; /* counts of jobs */
	bool stop;
	struct image_writer *w; /* its contexts: chunk[i] thread i's, chunk[0] without threads */
	int started;            /* threads that took their context */
	size_t dst_cap;
	/* The current memory image's frames, in order: their lengths. */
	uint64_t *lens;
	size_t n_lens, lens_cap;
};

/* ---- what a writer keeps between archives ---------------------------------- */

struct image_writer {
	ZSTD_CCtx *chunk[POOL_THREADS]; /* one per pool thread (chunk[0] without) */
	ZSTD_CCtx *stream;              /* the small files' */
	/* One mapping: POOL_RING compressed chunks of dst_cap bytes.
	 * madvise(MADV_FREE)d between archives. */
	uint8_t *mem;
	size_t mem_len, dst_cap;
};

struct image_writer *image_writer_new(void)
{
	return calloc(1, sizeof(struct image_writer));
}

static void writer_clear(struct image_writer *w)
{
	for (int i = 0; i < POOL_THREADS; i++)
		ZSTD_freeCCtx(w->chunk[i]);
	ZSTD_freeCCtx(w->stream);
	if (w->mem)
		munmap(w->mem, w->mem_len);
	*w = (struct image_writer){0};
}

void image_writer_free(struct image_writer *w)
{
	if (!w)
		return;
	writer_clear(w);
	free(w);
}

/* The writer's memory, and its first contexts (one per pool thread, at
 * least one), made ready for an archive at level. */
static int writer_ready(struct image_writer *w, int level, int contexts)
{
	/* A reset context takes any level; its workspace stays. */
	for (int i = 0; i < contexts; i++) {
		if (!w->chunk[i] && !(w->chunk[i] = ZSTD_createCCtx()))
			return -ENOMEM;
		ZSTD_CCtx_reset(w->chunk[i], ZSTD_reset_session_and_parameters);
		ZSTD_CCtx_setParameter(w->chunk[i], ZSTD_c_compressionLevel, level);
		ZSTD_CCtx_setParameter(w->chunk[i], ZSTD_c_checksumFlag, 1);
		ZSTD_CCtx_setParameter(w->chunk[i], ZSTD_c_contentSizeFlag, 1);
	}
	if (!w->stream && !(w->stream = ZSTD_createCCtx()))
		return -ENOMEM;
	ZSTD_CCtx_reset(w->stream, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(w->stream, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(w->stream, ZSTD_c_checksumFlag, 1);
	if (!w->mem) {
		w->dst_cap = ZSTD_compressBound(MEMORY_CHUNK);
		w->mem_len = POOL_RING * w->dst_cap;
		w->mem = mmap(NULL, w->mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		              -1, 0);
		if (w->mem == MAP_FAILED) {
			w->mem = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

static int compress_chunk(ZSTD_CCtx *c, struct pool_job *j, size_t cap)
{
	size_t n = ZSTD_compress2(c, j->dst, cap, j->src, j->len);
	if (ZSTD_isError(n))
		return -EIO;
	j->dst_len = n;
	return 0;
}

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	pthread_mutex_lock(&p->lock);
	ZSTD_CCtx *c = p->w->chunk[p->started++];
	for (;;) {
		while (!p->stop && p->taken == p->filled)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop)
			break;
		struct pool_job *j = &p->jobs[p->taken++ % POOL_RING];
		j->state = 2;
		pthread_mutex_unlock(&p->lock);
		int r = c ? compress_chunk(c, j, p->dst_cap) : -ENOMEM;
		pthread_mutex_lock(&p->lock);
		j->state = r < 0 ? r : 3;
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static int pool_start(struct pool *p, int threads, struct image_writer *w)
{
	*p = (struct pool){.w = w, .dst_cap = ZSTD_compressBound(MEMORY_CHUNK)};
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (int i = 0; i < POOL_RING; i++)
		p->jobs[i].dst = w->mem + (size_t)i * w->dst_cap;
	if (threads > POOL_THREADS)
		threads = POOL_THREADS;
	for (int i = 0; i < threads; i++) {
		int r = -pthread_create(&p->threads[i], NULL, pool_main, p);
		if (r < 0)
			return r;
		p->n_threads++;
	}
	return 0;
}

static void pool_stop(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	for (int i = 0; i < POOL_RING; i++)
		free(p->jobs[i].copy);
	free(p->lens);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
}

/* After a failure: no job is left in a thread's hands (its source may be
 * unmapped once the caller returns), and none is pending. */
static void pool_quiesce(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->taken = p->filled; /* what no thread took yet, none will */
	for (bool busy = true; busy;) {
		busy = false;
		for (int i = 0; i < POOL_RING; i++)
			busy |= p->jobs[i].state == 2;
		if (busy)
			pthread_cond_wait(&p->cond, &p->lock);
	}
	for (int i = 0; i < POOL_RING; i++)
		p->jobs[i].state = 0;
	p->written = p->filled;
	pthread_mutex_unlock(&p->lock);
}

/* Writes the finished jobs, in order; with all, waits for every one. */
static int pool_drain(struct pool *p, struct sink *s, bool all)
{
	int r = 0;
	pthread_mutex_lock(&p->lock);
	while (r == 0 && p->written < p->filled) {
		struct pool_job *j = &p->jobs[p->written % POOL_RING];
		if (j->state == 1 && p->n_threads == 0) {
			/* No threads: compressed here. */
			p->taken++;
			r = compress_chunk(p->w->chunk[0], j, p->dst_cap);
			j->state = r < 0 ? r : 3;
		}
		if (j->state < 0) {
			r = j->state;
			break;
		}
		if (j->state != 3) {
			if (!all && p->filled - p->written < POOL_RING)
				break;
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		if (p->n_lens == p->lens_cap) {
			size_t cap = p->lens_cap ? 2 * p->lens_cap : 64;
			uint64_t *n = realloc(p->lens, cap * sizeof(*n));
			r = n ? 0 : -ENOMEM;
			if (n) {
				p->lens = n;
				p->lens_cap = cap;
			}
		}
		if (r == 0) {
			p->lens[p->n_lens++] = j->dst_len;
			r = sink_emit(s, j->dst, j->dst_len);
		}
		pthread_mutex_lock(&p->lock);
		j->state = 0;
		p->written++;
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* The frame table of the memory image just written: "frames OFFSET
 * LEN,LEN,... NAME", OFFSET the first frame's in the archive. A lazy restore
 * finds any piece with it, without reading the frames before. */
static int add_frames(struct manifest *m, const char *name, uint64_t first, const struct pool *p)
{
	size_t cap = 48 + strlen(name) + p->n_lens * 21;
	_cleanup_free_ char *v = malloc(cap);
	if (!v)
		return -ENOMEM;
	size_t n = (size_t)snprintf(v, cap, "%" PRIu64 " ", first);
	for (size_t i = 0; i < p->n_lens; i++)
		n += (size_t)snprintf(v + n, cap - n, "%s%" PRIu64, i ? "," : "", p->lens[i]);
	snprintf(v + n, cap - n, " %s", name);
	return manifest_add(m, "frames", v);
}

/* A memory image: the frame so far ends after its entry header, then one
 * frame per chunk, compressed by the pool. */
static int write_memory_image(struct sink *s, struct pool *p, const struct mem_file *f,
                              XXH3_state_t *h, struct manifest *m)
{
	int r = sink_compress(s, NULL, 0, ZSTD_e_end);
	uint64_t first = HEADER_SIZE + s->written;
	p->n_lens = 0;
	size_t seg = 0, seg_off = 0;
	for (uint64_t done = 0; r == 0 && done < f->size;) {
		size_t len =
		    f->size - done < MEMORY_CHUNK ? (size_t)(f->size - done) : MEMORY_CHUNK;
		r = pool_drain(p, s, false);
		if (r < 0)
			break;
		struct pool_job *j = &p->jobs[p->filled % POOL_RING];
		/* The chunk: straight from its segment, or gathered. */
		while (seg < f->n_iov && seg_off == f->iov[seg].iov_len) {
			seg++;
			seg_off = 0;
		}
		if (seg < f->n_iov && f->iov[seg].iov_len - seg_off >= len) {
			j->src = (const uint8_t *)f->iov[seg].iov_base + seg_off;
			seg_off += len;
		} else {
			if (!j->copy && !(j->copy = malloc(MEMORY_CHUNK))) {
				r = -ENOMEM;
				break;
			}
			size_t got = 0;
			while (got < len && seg < f->n_iov) {
				size_t n = f->iov[seg].iov_len - seg_off;
				if (n > len - got)
					n = len - got;
				memcpy(j->copy + got,
				       (const uint8_t *)f->iov[seg].iov_base + seg_off, n);
				got += n;
				seg_off += n;
				if (seg_off == f->iov[seg].iov_len) {
					seg++;
					seg_off = 0;
				}
			}
			if (got < len) {
				r = -EINVAL;
				break;
			}
			j->src = j->copy;
		}
		j->len = len;
		XXH3_128bits_update(h, j->src, len);
		pthread_mutex_lock(&p->lock);
		j->state = 1;
		p->filled++;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		done += len;
		if (s->raw_progress)
			__atomic_fetch_add(s->raw_progress, len, __ATOMIC_RELAXED);
	}
	if (r == 0)
		r = pool_drain(p, s, true);
	if (r < 0)
		pool_quiesce(p); /* f's memory may go once we return */
	if (r == 0)
		r = add_frames(m, f->name, first, p);
	return r;
}

/* A file held in memory: compressed and hashed straight from its segments. */
static int write_one_mem(struct sink *s, struct pool *pl, const struct mem_file *f,
                         struct manifest *m, uint64_t *raw)
{
	int r = write_header(s, f->name, f->size);
	if (r < 0)
		return r;
	XXH3_state_t *h = XXH3_createState();
	if (!h)
		return -ENOMEM;
	XXH3_128bits_reset(h);
	if (is_memory_image(f->name))
		r = write_memory_image(s, pl, f, h, m);
	for (size_t i = 0; i < f->n_iov && r == 0 && !is_memory_image(f->name); i++) {
		const uint8_t *p = f->iov[i].iov_base;
		size_t left = f->iov[i].iov_len;
		/* In pieces, so the hash reads what the compressor just read. */
		while (left > 0 && r == 0) {
			size_t n = left < IO_CHUNK ? left : IO_CHUNK;
			XXH3_128bits_update(h, p, n);
			r = sink_compress(s, p, n, ZSTD_e_continue);
			if (s->raw_progress)
				__atomic_fetch_add(s->raw_progress, n, __ATOMIC_RELAXED);
			p += n;
			left -= n;
		}
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
	XXH3_freeState(h);
	if (r < 0)
		return r;
	*raw += f->size;
	return manifest_add_file(m, f->name, f->size, c.digest);
}

/* A file of the directory: mapped, and written as a file in memory is. */
static int write_one_file(struct sink *s, struct pool *p, int dfd, const char *name,
                          struct manifest *m, uint64_t *raw)
{
	struct iovec iov;
	int r = util_map_file(dfd, name, &iov.iov_base, &iov.iov_len);
	if (r < 0)
		return r;
	if (iov.iov_base)
		madvise(iov.iov_base, iov.iov_len, MADV_SEQUENTIAL);
	struct mem_file f = {name, &iov, 1, iov.iov_len};
	r = write_one_mem(s, p, &f, m, raw);
	if (iov.iov_base)
		munmap(iov.iov_base, iov.iov_len);
	return r;
}

static int compare_mem_files(const void *a, const void *b)
{
	return entry_order(((const struct mem_file *)a)->name, ((const struct mem_file *)b)->name);
}

int image_archive_write(int fd, const char *dir, const struct mem_file *mem, size_t n_mem,
                        struct manifest *m, int level, int workers, struct image_writer *w,
                        struct image_write_stats *stats, struct cryo_error *err)
{
	char **names = NULL;
	size_t n = 0;
	int r = list_files(dir, &names, &n);
	if (r < 0)
		return error_set(err, r, "cannot list the image files in '%s': %s", dir,
		                 strerror(-r));
	struct image_writer own = {0};
	if (!w)
		w = &own;
	int threads = workers < 1 ? 1 : workers > POOL_THREADS ? POOL_THREADS : workers;
	int wr = writer_ready(w, level, threads);

	struct sink s = {.fd = fd, .out_cap = ZSTD_CStreamOutSize()};
	if (stats) {
		__atomic_store_n(&stats->raw_bytes, 0, __ATOMIC_RELAXED);
		s.raw_progress = &stats->raw_bytes;
	}
	s.out = malloc(s.out_cap);
	struct stat st;
	s.file = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	s.cctx = wr == 0 ? w->stream : NULL;
	s.hash = XXH3_createState();
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct pool pool;
	bool pool_started = false;
	uint64_t raw = 0;
	_cleanup_free_ char *text = NULL, *ctext = NULL;
	size_t text_len, bound, clen;
	struct trailer t = {0};
	XXH128_canonical_t c;
	if (!s.out || wr < 0 || !s.hash) {
		r = -ENOMEM;
		goto out;
	}
	if (dfd < 0) {
		r = -errno;
		goto out;
	}
	XXH3_128bits_reset(s.hash);
	/* The small files in one frame, the memory images' chunks by the pool. */
	r = pool_start(&pool, workers, w);
	pool_started = true;
	if (r < 0)
		goto out;

	char header[HEADER_SIZE] = {0};
	memcpy(header, header_magic, 8);
	uint32_t ver = htole32(IMAGE_FORMAT_VERSION);
	memcpy(header + 8, &ver, 4);
	uint32_t sum = htole32(XXH32(header, 12, 0));
	memcpy(header + 12, &sum, 4);
	r = sink_out(&s, header, sizeof(header));
	if (r < 0)
		goto out;

	/* Disk and memory files, merged in entry_order(). */
	struct mem_file *sorted = NULL;
	if (n_mem) {
		sorted = malloc(n_mem * sizeof(*sorted));
		if (!sorted) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(sorted, mem, n_mem * sizeof(*sorted));
		qsort(sorted, n_mem, sizeof(*sorted), compare_mem_files);
	}
	for (size_t i = 0, k = 0; (i < n || k < n_mem) && r == 0;) {
		if (k < n_mem && (i == n || entry_order(sorted[k].name, names[i]) < 0))
			r = write_one_mem(&s, &pool, &sorted[k++], m, &raw);
		else
			r = write_one_file(&s, &pool, dfd, names[i++], m, &raw);
	}
	free(sorted);
	uint16_t zero = 0;
	if (r == 0)
		r = sink_compress(&s, &zero, sizeof(zero), ZSTD_e_end);
	if (r < 0)
		goto out;

	memcpy(t.magic, trailer_magic, 8);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s.hash));
	memcpy(t.body_hash, c.digest, 16);
	t.manifest_offset = HEADER_SIZE + s.written;

	/* The manifest: its own frame, so that it can be read without the body. */
	r = manifest_to_text(m, &text, &text_len);
	if (r < 0)
		goto out;
	bound = ZSTD_compressBound(text_len);
	ctext = malloc(bound);
	if (!ctext) {
		r = -ENOMEM;
		goto out;
	}
	clen = ZSTD_compress(ctext, bound, text, text_len, 3);
	if (ZSTD_isError(clen)) {
		r = -EIO;
		goto out;
	}
	r = sink_out(&s, ctext, clen);
	if (r < 0)
		goto out;
	t.manifest_length = clen;
	XXH128_canonicalFromHash(&c, XXH3_128bits(ctext, clen));
	memcpy(t.manifest_hash, c.digest, 16);
	t.manifest_offset = htole64(t.manifest_offset);
	t.manifest_length = htole64(t.manifest_length);
	t.self_hash = htole64(XXH64(&t, offsetof(struct trailer, self_hash), 0));
	r = sink_out(&s, &t, sizeof(t));
	if (r < 0)
		goto out;
	if (stats) {
		__atomic_store_n(&stats->raw_bytes, raw, __ATOMIC_RELAXED);
		stats->archive_bytes = HEADER_SIZE + s.written + clen + sizeof(t);
	}
out:
	if (pool_started)
		pool_stop(&pool);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(s.out);
	XXH3_freeState(s.hash);
	/* The writer's memory: the kernel's if it needs it, else the next
	 * archive's. */
	if (w == &own)
		writer_clear(&own);
	else if (w->mem)
		madvise(w->mem, w->mem_len, MADV_FREE);
	if (r < 0 && err && !err->msg[0])
		error_set(err, r, "cannot write the image archive: %s", strerror(-r));
	return r;
}
