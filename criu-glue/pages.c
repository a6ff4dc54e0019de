#include "pages.h"
#include "criu-proto.h"
#include "internal.h"
#include "libcriu-internals.h"
#include "pb.h"
#include "cleanup.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* The image magics CRIU writes at the head of a pagemap image. */
#define IMG_COMMON_MAGIC 0x54564319u
#define PAGEMAP_MAGIC    0x56084025u
/* CRIU's own page server numbers its pages images from here, so that they
 * never collide with ones the dumping CRIU writes itself. */
#define FIRST_PAGES_ID 0x10001u

#define CHUNK_SIZE (64u << 20)

struct chunk {
	uint8_t *base;
	size_t size, used;
};

/* One pagemap image and the pages image it names. */
struct image {
	char pagemap_name[64], pages_name[64];
	uint8_t *pagemap;
	size_t pagemap_len, pagemap_cap;
	struct iovec pagemap_iov;
	struct iovec *pages;
	size_t n_pages, pages_cap;
	uint64_t pages_bytes;
};

struct criu_glue_pages {
	int sk;      /* our end of the page stream */
	int criu_sk; /* CRIU's end, inherited by the criu process */
	pthread_t thread;
	bool thread_started;
	struct chunk *chunks;
	size_t n_chunks;
	bool prepared; /* chunks[0] was made ready before the dump */
	bool reused;   /* chunks[0] is the spare's memory */
	struct image *images;
	size_t n_images;
	uint32_t next_pages_id;
	bool closed; /* CRIU said PS_IOV_CLOSE */
	int error;
	struct cryo_error err; /* the receiving thread's reason, with error */
	struct mem_file *files;
	size_t n_files;
};

/* ---- estimating ------------------------------------------------------------ */

/* RssAnon, RssShmem and VmSwap of /proc/PID/status: counters the kernel
 * keeps, where smaps_rollup's Anonymous walks every page table (~9 ms per GB
 * mapped). Shared memory and swapped pages are dumped too; memory shared by
 * several processes counts once for each, which errs towards more room. */
static uint64_t anon_bytes(pid_t pid)
{
	char path[64], line[256];
	uint64_t total = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long kb;
		if (sscanf(line, "RssAnon: %llu kB", &kb) == 1 ||
		    sscanf(line, "RssShmem: %llu kB", &kb) == 1 ||
		    sscanf(line, "VmSwap: %llu kB", &kb) == 1)
			total += (uint64_t)kb << 10;
	}
	return total;
}

uint64_t criu_glue_estimate_pages(pid_t root)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	if (util_proc_tree(root, &pids, &n) < 0)
		return 0;
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += anon_bytes(pids[i]);
	return total;
}

/* ---- memory for the pages ----------------------------------------------------- */

void criu_glue_spare_drop(struct criu_glue_spare *spare)
{
	if (spare->base)
		munmap(spare->base, spare->size);
	*spare = (struct criu_glue_spare){0};
}

/* In pieces, with MADV_DONTNEED, which holds the mmap lock for reading
 * only: munmap() would hold it for writing throughout, and every fault
 * and mapping of cryo's other threads would wait. */
static void *drop_main(void *arg)
{
	struct criu_glue_spare *spare = arg;
	for (size_t off = 0; off < spare->size; off += CHUNK_SIZE)
		madvise((uint8_t *)spare->base + off,
		        spare->size - off < CHUNK_SIZE ? spare->size - off : CHUNK_SIZE,
		        MADV_DONTNEED);
	criu_glue_spare_drop(spare);
	free(spare);
	return NULL;
}

void criu_glue_spare_drop_later(struct criu_glue_spare *spare)
{
	if (!spare->base)
		return;
	struct criu_glue_spare *copy = malloc(sizeof(*copy));
	pthread_attr_t a;
	pthread_t t;
	if (copy && pthread_attr_init(&a) == 0) {
		*copy = *spare;
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		bool started = pthread_create(&t, &a, drop_main, copy) == 0;
		pthread_attr_destroy(&a);
		if (started) {
			*spare = (struct criu_glue_spare){0};
			return;
		}
	}
	free(copy);
	criu_glue_spare_drop(spare);
}

#define WARM_PIECE (2u << 20)
#define WARM_PROBE (32u << 20)

/* Writes every page of [base, base+len) once: from the kernel (a read from
 * /dev/zero, as recv() writes the pages inside the freeze) or from user
 * mode (as zstd reads them after it). */
static int write_pages(int zero, uint8_t *base, size_t len, bool kernel)
{
	for (size_t off = 0; off < len;) {
		size_t n = len - off < WARM_PIECE ? len - off : WARM_PIECE;
		if (kernel) {
			ssize_t got = read(zero, base + off, n);
			if (got <= 0)
				return got < 0 ? -errno : -EIO;
			n = (size_t)got;
		} else {
			volatile uint8_t *b = base + off;
			for (size_t i = 0; i < n; i += PAGE_SIZE)
				b[i] = 0;
		}
		off += n;
	}
	return 0;
}

/* Whether the first write to a page from that side costs more than the
 * next, measured here on the first WARM_PROBE bytes (written twice, and so
 * warm whatever the answer): on a paravirtualised VM the first touch of a
 * page, from the kernel and from user mode, can cost ~5 us each even after
 * MAP_POPULATE, and neither warms the other; elsewhere it costs nothing
 * more than the copy. Noise errs either way, costing time, never pages. */
static int first_write_dear(int zero, uint8_t *base, size_t probe, bool kernel, bool *dear)
{
	uint64_t t0 = util_now_ns();
	int r = write_pages(zero, base, probe, kernel);
	uint64_t t1 = util_now_ns();
	if (r == 0)
		r = write_pages(zero, base, probe, kernel);
	uint64_t t2 = util_now_ns();
	/* Over twice the second write, and over ~30 ms per GiB more. */
	*dear = t1 - t0 > 2 * (t2 - t1) && (t1 - t0) - (t2 - t1) > probe / 32;
	return r;
}

/* Makes freshly populated memory ready for the pages: written once from
 * each side where this machine's first write is dear, so that neither is
 * paid inside the freeze (nor, for zstd's reads, after it). */
static int warm(uint8_t *base, size_t size)
{
	int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (zero < 0)
		return -errno;
	size_t probe = size < WARM_PROBE ? size : WARM_PROBE;
	bool kernel = false, user = false;
	int r = first_write_dear(zero, base, probe, true, &kernel);
	if (r == 0)
		r = first_write_dear(zero, base, probe, false, &user);
	if (r == 0 && kernel)
		r = write_pages(zero, base + probe, size - probe, true);
	if (r == 0 && user)
		r = write_pages(zero, base + probe, size - probe, false);
	close(zero);
	return r;
}

/* A chunk of size bytes. With prepare, the spare if it holds between size
 * (less a sixteenth: a program grows a little between checkpoints, and
 * what does not fit goes to a chunk of its own) and twice as much, as it
 * is: kept resident and written since, it is ready. Else new memory, made
 * ready now with prepare (faulted in at once, then warm()), while the
 * program runs, or faulted in by the pages as they come. */
static int add_chunk(struct criu_glue_pages *p, size_t size, bool prepare,
                     struct criu_glue_spare *spare)
{
	struct chunk *n = realloc(p->chunks, (p->n_chunks + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	p->chunks = n;
	if (spare && spare->base &&
	    (spare->size + spare->size / 16 < size || spare->size / 2 > size))
		criu_glue_spare_drop(spare);
	if (prepare && spare && spare->base) {
		p->chunks[p->n_chunks++] = (struct chunk){.base = spare->base, .size = spare->size};
		*spare = (struct criu_glue_spare){0};
		p->reused = true;
		return 0;
	}
	void *base = mmap(NULL, size, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS | (prepare ? MAP_POPULATE : 0), -1, 0);
	if (base == MAP_FAILED)
		return -ENOMEM;
	/* Not in the children cryo forks (CRIU's among them): forking would
	 * make every page copy-on-write, and the first write to each fault. */
	madvise(base, size, MADV_DONTFORK);
	int r = prepare ? warm(base, size) : 0;
	if (r < 0) {
		munmap(base, size);
		return r;
	}
	p->chunks[p->n_chunks++] = (struct chunk){.base = base, .size = size};
	return 0;
}

/* Space for len more bytes of pages, contiguous, at *ret; at most len
 * (whole pages), possibly less at a chunk's end. */
static int reserve(struct criu_glue_pages *p, size_t len, uint8_t **ret, size_t *got)
{
	struct chunk *c = p->n_chunks ? &p->chunks[p->n_chunks - 1] : NULL;
	if (!c || c->used == c->size) {
		int r = add_chunk(p, CHUNK_SIZE, false, NULL);
		if (r < 0)
			return r;
		c = &p->chunks[p->n_chunks - 1];
	}
	*ret = c->base + c->used;
	*got = len < c->size - c->used ? len : c->size - c->used;
	c->used += *got;
	return 0;
}

/* ---- images ---------------------------------------------------------------- */

static int buf_put(struct image *im, const void *data, size_t len)
{
	if (im->pagemap_len + len > im->pagemap_cap) {
		size_t cap = im->pagemap_cap ? im->pagemap_cap * 2 : 4096;
		while (cap < im->pagemap_len + len)
			cap *= 2;
		uint8_t *n = realloc(im->pagemap, cap);
		if (!n)
			return -ENOMEM;
		im->pagemap = n;
		im->pagemap_cap = cap;
	}
	memcpy(im->pagemap + im->pagemap_len, data, len);
	im->pagemap_len += len;
	return 0;
}

/* A field of a message that cryo writes: all are varints. */
struct varint_field {
	uint64_t number, value;
};

/* One protobuf entry of a CRIU image: u32 size, then the message. */
static int put_entry(struct image *im, const struct varint_field *fields, size_t n)
{
	uint8_t msg[128];
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		len += pb_put_varint(msg + len, fields[i].number << 3);
		len += pb_put_varint(msg + len, fields[i].value);
	}
	uint32_t size = (uint32_t)len;
	int r = buf_put(im, &size, sizeof(size));
	return r < 0 ? r : buf_put(im, msg, len);
}

static int open_image(struct criu_glue_pages *p, uint64_t dst_id)
{
	uint64_t type = dst_id & 0xff, id = dst_id >> 8;
	if (type != PS_TYPE_PID && type != PS_TYPE_SHMEM)
		return -EPROTO;
	struct image *n = realloc(p->images, (p->n_images + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	p->images = n;
	struct image *im = &p->images[p->n_images++];
	memset(im, 0, sizeof(*im));
	uint32_t pages_id = p->next_pages_id++;
	snprintf(im->pagemap_name, sizeof(im->pagemap_name), "pagemap-%s%" PRIu64 ".img",
	         type == PS_TYPE_SHMEM ? "shmem-" : "", id);
	snprintf(im->pages_name, sizeof(im->pages_name), "pages-%" PRIu32 ".img", pages_id);
	uint32_t magics[2] = {IMG_COMMON_MAGIC, PAGEMAP_MAGIC};
	int r = buf_put(im, magics, sizeof(magics));
	if (r < 0)
		return r;
	const struct varint_field head[] = {{PB_PAGEMAP_HEAD_PAGES_ID, pages_id}};
	return put_entry(im, head, ARRAY_SIZE(head));
}

static int add_pages(struct criu_glue_pages *p, int sk, struct image *im, const struct ps_iov *pi,
                     uint32_t flags)
{
	const struct varint_field entry[] = {
	    {PB_PAGEMAP_ENTRY_VADDR, pi->vaddr},
	    {PB_PAGEMAP_ENTRY_COMPAT_NR_PAGES, 0},
	    {PB_PAGEMAP_ENTRY_FLAGS, flags},
	    {PB_PAGEMAP_ENTRY_NR_PAGES, pi->nr_pages},
	};
	int r = put_entry(im, entry, ARRAY_SIZE(entry));
	if (r < 0 || !(flags & PE_PRESENT))
		return r;
	if (pi->nr_pages > (UINT64_MAX / PAGE_SIZE))
		return -EPROTO;
	uint64_t left = pi->nr_pages * PAGE_SIZE;
	while (left > 0) {
		uint8_t *dst;
		size_t got;
		r = reserve(p, left > SIZE_MAX ? SIZE_MAX : (size_t)left, &dst, &got);
		if (r < 0)
			return r;
		ssize_t n = recv(sk, dst, got, MSG_WAITALL);
		if (n != (ssize_t)got)
			return n < 0 ? -errno : -EPIPE;
		/* Grow the last segment when the new bytes follow it. */
		struct iovec *last = im->n_pages ? &im->pages[im->n_pages - 1] : NULL;
		if (last && (uint8_t *)last->iov_base + last->iov_len == dst) {
			last->iov_len += got;
		} else {
			if (im->n_pages == im->pages_cap) {
				size_t cap = im->pages_cap ? im->pages_cap * 2 : 16;
				struct iovec *v = realloc(im->pages, cap * sizeof(*v));
				if (!v)
					return -ENOMEM;
				im->pages = v;
				im->pages_cap = cap;
			}
			im->pages[im->n_pages++] = (struct iovec){dst, got};
		}
		im->pages_bytes += got;
		left -= got;
	}
	return 0;
}

/* ---- the protocol ------------------------------------------------------------- */

static int serve(struct criu_glue_pages *p, int sk)
{
	struct image *cur = NULL;
	uint64_t cur_id = 0;
	for (;;) {
		struct ps_iov pi;
		ssize_t n = recv(sk, &pi, sizeof(pi), MSG_WAITALL);
		if (n == 0)
			return p->closed ? 0 : -EPIPE;
		if (n != (ssize_t)sizeof(pi))
			return n < 0 ? -errno : -EPIPE;
		uint32_t cmd = pi.cmd & 0xffff, flags = pi.cmd >> 16;
		int r = 0;
		switch (cmd) {
		case PS_IOV_OPEN:
		case PS_IOV_OPEN2:
			r = open_image(p, pi.dst_id);
			cur = r == 0 ? &p->images[p->n_images - 1] : NULL;
			cur_id = pi.dst_id;
			if (r == 0 && cmd == PS_IOV_OPEN2) {
				char has_parent = 0;
				r = send(sk, &has_parent, 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
			}
			break;
		case PS_IOV_ADD_F:
		case PS_IOV_ADD:
		case PS_IOV_HOLE:
			if (!cur || pi.dst_id != cur_id) {
				r = open_image(p, pi.dst_id);
				cur = r == 0 ? &p->images[p->n_images - 1] : NULL;
				cur_id = pi.dst_id;
			}
			if (r == 0)
				r = add_pages(p, sk, cur, &pi,
				              cmd == PS_IOV_ADD_F ? flags
				              : cmd == PS_IOV_ADD ? PE_PRESENT
				                                  : PE_PARENT);
			break;
		case PS_IOV_PARENT: {
			int32_t none = 0; /* no parent images here */
			r = send(sk, &none, sizeof(none), MSG_NOSIGNAL) == sizeof(none) ? 0
			                                                                : -errno;
			break;
		}
		case PS_IOV_CLOSE:
		case PS_IOV_FORCE_CLOSE: {
			int32_t status = 0;
			p->closed = true;
			r = send(sk, &status, sizeof(status), MSG_NOSIGNAL) == sizeof(status)
			        ? 0
			        : -errno;
			if (r == 0)
				return 0;
			break;
		}
		default: return error_set(&p->err, -EPROTO, "unknown page-server command %u", cmd);
		}
		if (r < 0)
			return r;
	}
}

static void *receive(void *arg)
{
	struct criu_glue_pages *p = arg;
	int r = serve(p, p->sk);
	if (r < 0) {
		p->error = r;
		if (!p->err.msg[0])
			error_set(&p->err, r, "page stream broken: %s", strerror(-r));
	}
	return NULL;
}

int criu_glue_pages_start(uint64_t expect_bytes, struct criu_glue_spare *spare,
                          struct criu_glue_pages **ret, struct cryo_error *err)
{
	/* Before any memory is made ready: without a way to give CRIU the
	 * socket, the dump goes through files. */
	int r = criu_glue_page_server_fd_supported(err);
	if (r < 0)
		return r;
	struct criu_glue_pages *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->sk = p->criu_sk = -1;
	p->next_pages_id = FIRST_PAGES_ID;
	/* The pages' memory is made ready now, while the program runs. */
	if (expect_bytes > 0) {
		size_t size = (size_t)((expect_bytes + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1));
		r = add_chunk(p, size, true, spare);
		p->prepared = r == 0;
	}
	/* A unix socket pair rather than TCP: CRIU corks a TCP page-server
	 * socket and its last command would wait out the cork (200 ms). Its
	 * end must survive the exec of criu. */
	int sp[2];
	if (r == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		r = -errno;
	if (r == 0) {
		p->sk = sp[0];
		p->criu_sk = sp[1];
		fcntl(p->sk, F_SETFD, FD_CLOEXEC);
		int size = 4 << 20;
		setsockopt(p->sk, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
		int big = 64 << 20;
		setsockopt(sp[1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
		r = -pthread_create(&p->thread, NULL, receive, p);
		p->thread_started = r == 0;
	}
	if (r < 0) {
		error_set(err, r, "cannot start cryo's page server: %s", strerror(-r));
		criu_glue_pages_free(p, spare);
		return r;
	}
	*ret = p;
	return 0;
}

bool criu_glue_pages_reused(const struct criu_glue_pages *p)
{
	return p->reused;
}

int criu_glue_pages_fd(const struct criu_glue_pages *p)
{
	return p->criu_sk;
}

/* Once CRIU is gone, closing its end ends the stream for the thread. */
static void stop_thread(struct criu_glue_pages *p)
{
	if (p->criu_sk >= 0) {
		close(p->criu_sk);
		p->criu_sk = -1;
	}
	if (!p->thread_started)
		return;
	pthread_join(p->thread, NULL);
	p->thread_started = false;
}

int criu_glue_pages_finish(struct criu_glue_pages *p, struct cryo_error *err)
{
	stop_thread(p);
	if (p->error || !p->closed)
		return error_set(err, p->error ? p->error : -EPIPE,
		                 "receiving the pages failed: %s",
		                 p->err.msg[0] ? p->err.msg : "the stream ended early");
	p->files = calloc(2 * p->n_images + 1, sizeof(struct mem_file));
	if (!p->files)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_images; i++) {
		struct image *im = &p->images[i];
		im->pagemap_iov = (struct iovec){im->pagemap, im->pagemap_len};
		p->files[p->n_files++] =
		    (struct mem_file){im->pagemap_name, &im->pagemap_iov, 1, im->pagemap_len};
		p->files[p->n_files++] =
		    (struct mem_file){im->pages_name, im->pages, im->n_pages, im->pages_bytes};
	}
	return 0;
}

void criu_glue_pages_files(const struct criu_glue_pages *p, const struct mem_file **files,
                           size_t *n)
{
	*files = p->files;
	*n = p->n_files;
}

void criu_glue_pages_free(struct criu_glue_pages *p, struct criu_glue_spare *spare)
{
	if (!p)
		return;
	stop_thread(p);
	size_t kept = 0;
	if (spare && p->prepared) {
		struct chunk *c = &p->chunks[kept++];
		criu_glue_spare_drop(spare);
		*spare = (struct criu_glue_spare){.base = c->base, .size = c->size};
	}
	for (size_t i = kept; i < p->n_chunks; i++)
		munmap(p->chunks[i].base, p->chunks[i].size);
	for (size_t i = 0; i < p->n_images; i++) {
		free(p->images[i].pagemap);
		free(p->images[i].pages);
	}
	if (p->sk >= 0)
		close(p->sk);
	free(p->chunks);
	free(p->images);
	free(p->files);
	free(p);
}
