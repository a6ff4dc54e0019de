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

/* Memory the pages land in. A dump's image points into its own chunks and,
 * for the pages unchanged since its parent, into the parent's: each chunk
 * counts the dumps that point into it, and goes when none does. */
struct chunk {
	uint8_t *base;
	size_t size, used;
	unsigned refs;
	bool prepared; /* made ready before a dump (or the spare): may become the spare */
};

/* Where one piece of an image's pages is: len bytes at data (in chunk), for
 * the memory from vaddr on. */
struct run {
	uint64_t vaddr;
	uint8_t *data;
	size_t len;
	uint32_t flags; /* its pagemap entry's (PE_PRESENT, and PE_LAZY or not) */
	struct chunk *chunk;
	uint64_t page; /* where it starts in the image's pages file, in pages */
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
	uint64_t dst_id;  /* CRIU's name for it: the task (or shmem) and type */
	struct run *runs; /* in the order of vaddr, as CRIU sends them */
	size_t n_runs, runs_cap;
	struct mem_span *shared; /* pages that are the parent's pages file's */
	size_t n_shared, shared_cap;
	char parent_pages[64]; /* that file's name */
};

struct criu_glue_pages {
	int sk;      /* our end of the page stream */
	int criu_sk; /* CRIU's end, inherited by the criu process */
	pthread_t thread;
	bool thread_started;
	struct chunk **chunks; /* those its images point into, one reference each */
	size_t n_chunks;
	struct chunk *cur; /* the one of its own that pages go into */
	bool reused;       /* its first is the spare's memory */
	struct image *images;
	size_t n_images;
	uint32_t next_pages_id;
	bool closed; /* CRIU said PS_IOV_CLOSE */
	int error;
	struct cryo_error err; /* the receiving thread's reason, with error */
	struct mem_file *files;
	size_t n_files;
	/* Write tracking (pages.h): the dump this one builds on, what it
	 * shares with it, and the userfaultfds CRIU handed over. */
	const struct criu_glue_pages *parent;
	uint64_t parent_bytes;
	int *uffds;
	size_t n_uffds;
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

/* Adds c to p's chunks (one more reference), unless p has it already. */
static int hold_chunk(struct criu_glue_pages *p, struct chunk *c)
{
	for (size_t i = p->n_chunks; i-- > 0;)
		if (p->chunks[i] == c)
			return 0;
	struct chunk **n = realloc(p->chunks, (p->n_chunks + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	p->chunks = n;
	p->chunks[p->n_chunks++] = c;
	c->refs++;
	return 0;
}

/* Drops one reference to c; the last makes it *spare (if it was made
 * ready, and spare is given) or unmaps it. */
static void release_chunk(struct chunk *c, struct criu_glue_spare *spare)
{
	if (--c->refs > 0)
		return;
	if (spare && c->prepared) {
		criu_glue_spare_drop(spare);
		*spare = (struct criu_glue_spare){.base = c->base, .size = c->size};
	} else {
		munmap(c->base, c->size);
	}
	free(c);
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
	struct chunk *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (spare && spare->base &&
	    (spare->size + spare->size / 16 < size || spare->size / 2 > size))
		criu_glue_spare_drop(spare);
	if (prepare && spare && spare->base) {
		*c = (struct chunk){.base = spare->base, .size = spare->size, .prepared = true};
		*spare = (struct criu_glue_spare){0};
		p->reused = true;
	} else {
		void *base =
		    mmap(NULL, size, PROT_READ | PROT_WRITE,
		         MAP_PRIVATE | MAP_ANONYMOUS | (prepare ? MAP_POPULATE : 0), -1, 0);
		if (base == MAP_FAILED) {
			free(c);
			return -ENOMEM;
		}
		/* Not in the children cryo forks (CRIU's among them): forking
		 * would make every page copy-on-write, and the first write to
		 * each fault. */
		madvise(base, size, MADV_DONTFORK);
		int r = prepare ? warm(base, size) : 0;
		if (r < 0) {
			munmap(base, size);
			free(c);
			return r;
		}
		*c = (struct chunk){.base = base, .size = size, .prepared = prepare};
	}
	int r = hold_chunk(p, c);
	if (r < 0) {
		c->refs = 1;
		release_chunk(c, NULL);
		return r;
	}
	p->cur = c;
	return 0;
}

/* Space for len more bytes of pages, contiguous, at *ret; at most len
 * (whole pages), possibly less at a chunk's end. */
static int reserve(struct criu_glue_pages *p, size_t len, uint8_t **ret, size_t *got)
{
	struct chunk *c = p->cur;
	if (!c || c->used == c->size) {
		int r = add_chunk(p, CHUNK_SIZE, false, NULL);
		if (r < 0)
			return r;
		c = p->cur;
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
	im->dst_id = dst_id;
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

/* Appends len bytes at data to the pages image, growing the last segment
 * when they follow it. */
static int add_segment(struct image *im, uint8_t *data, size_t len)
{
	struct iovec *last = im->n_pages ? &im->pages[im->n_pages - 1] : NULL;
	if (last && (uint8_t *)last->iov_base + last->iov_len == data) {
		last->iov_len += len;
	} else {
		if (im->n_pages == im->pages_cap) {
			size_t cap = im->pages_cap ? im->pages_cap * 2 : 16;
			struct iovec *v = realloc(im->pages, cap * sizeof(*v));
			if (!v)
				return -ENOMEM;
			im->pages = v;
			im->pages_cap = cap;
		}
		im->pages[im->n_pages++] = (struct iovec){data, len};
	}
	im->pages_bytes += len;
	return 0;
}

/* Records that the memory at vaddr is len bytes at data (in chunk c), for
 * a dump that builds on this one. */
static int add_run(struct image *im, uint64_t vaddr, uint8_t *data, size_t len, uint32_t flags,
                   struct chunk *c, uint64_t page)
{
	struct run *last = im->n_runs ? &im->runs[im->n_runs - 1] : NULL;
	if (last && last->vaddr + last->len == vaddr && last->data + last->len == data &&
	    last->flags == flags && last->chunk == c &&
	    last->page + last->len / PAGE_SIZE == page) {
		last->len += len;
		return 0;
	}
	if (last && last->vaddr + last->len > vaddr)
		return -EPROTO; /* not in the order of vaddr */
	if (im->n_runs == im->runs_cap) {
		size_t cap = im->runs_cap ? im->runs_cap * 2 : 16;
		struct run *v = realloc(im->runs, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		im->runs = v;
		im->runs_cap = cap;
	}
	im->runs[im->n_runs++] = (struct run){vaddr, data, len, flags, c, page};
	return 0;
}

static const struct image *find_image(const struct criu_glue_pages *p, uint64_t dst_id)
{
	for (size_t i = 0; p && i < p->n_images; i++)
		if (p->images[i].dst_id == dst_id)
			return &p->images[i];
	return NULL;
}

/* The run of im holding the page at vaddr, or NULL. */
static const struct run *find_run(const struct image *im, uint64_t vaddr)
{
	size_t lo = 0, hi = im ? im->n_runs : 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (im->runs[mid].vaddr <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	const struct run *run = lo ? &im->runs[lo - 1] : NULL;
	return run && vaddr - run->vaddr < run->len ? run : NULL;
}

static int put_pagemap_entry(struct image *im, uint64_t vaddr, uint64_t nr_pages, uint32_t flags)
{
	const struct varint_field entry[] = {
	    {PB_PAGEMAP_ENTRY_VADDR, vaddr},
	    {PB_PAGEMAP_ENTRY_COMPAT_NR_PAGES, 0},
	    {PB_PAGEMAP_ENTRY_FLAGS, flags},
	    {PB_PAGEMAP_ENTRY_NR_PAGES, nr_pages},
	};
	return put_entry(im, entry, ARRAY_SIZE(entry));
}

/* Records that pages pages from page on are the parent image's (src's),
 * from its page from on. */
static int add_shared(struct image *im, const struct image *src, uint64_t page, uint64_t from,
                      uint64_t pages)
{
	memcpy(im->parent_pages, src->pages_name, sizeof(im->parent_pages));
	struct mem_span *last = im->n_shared ? &im->shared[im->n_shared - 1] : NULL;
	if (last && last->page + last->pages == page && last->from + last->pages == from) {
		last->pages += pages;
		return 0;
	}
	if (im->n_shared == im->shared_cap) {
		size_t cap = im->shared_cap ? im->shared_cap * 2 : 16;
		struct mem_span *v = realloc(im->shared, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		im->shared = v;
		im->shared_cap = cap;
	}
	im->shared[im->n_shared++] = (struct mem_span){page, from, pages};
	return 0;
}

/* Pages CRIU names as the parent's (PE_PARENT: unchanged since the parent
 * dump, which CRIU knows from the write tracking): the image points at the
 * parent's copy of them, and holds them as present, with the parent's
 * flags (lazy or not: CRIU's choice, by where they are), so that every
 * image is whole, restorable without its parent. Nothing is copied. */
static int add_parent_pages(struct criu_glue_pages *p, struct image *im, const struct ps_iov *pi)
{
	const struct image *src = find_image(p->parent, im->dst_id);
	uint64_t vaddr = pi->vaddr, end = pi->vaddr + pi->nr_pages * PAGE_SIZE;
	while (vaddr < end) {
		const struct run *run = find_run(src, vaddr);
		if (!run)
			return error_set(&p->err, -EPROTO,
			                 "CRIU counted the page at 0x%" PRIx64
			                 " of %s as unchanged, but the dump before did not hold it",
			                 vaddr, im->pagemap_name);
		uint64_t n = run->vaddr + run->len - vaddr;
		if (n > end - vaddr)
			n = end - vaddr;
		uint8_t *data = run->data + (vaddr - run->vaddr);
		uint64_t page = im->pages_bytes / PAGE_SIZE;
		int r = put_pagemap_entry(im, vaddr, n / PAGE_SIZE, run->flags);
		if (r == 0)
			r = hold_chunk(p, run->chunk);
		if (r == 0)
			r = add_segment(im, data, (size_t)n);
		if (r == 0)
			r = add_run(im, vaddr, data, (size_t)n, run->flags, run->chunk, page);
		if (r == 0)
			r = add_shared(im, src, page, run->page + (vaddr - run->vaddr) / PAGE_SIZE,
			               n / PAGE_SIZE);
		if (r < 0)
			return r;
		p->parent_bytes += n;
		vaddr += n;
	}
	return 0;
}

/* A range of pages: with PE_PRESENT they follow on the socket. */
static int add_pages(struct criu_glue_pages *p, int sk, struct image *im, const struct ps_iov *pi,
                     uint32_t flags)
{
	if (pi->nr_pages > (UINT64_MAX - pi->vaddr) / PAGE_SIZE || pi->vaddr % PAGE_SIZE)
		return -EPROTO;
	if (flags & PE_PARENT)
		return add_parent_pages(p, im, pi);
	int r = put_pagemap_entry(im, pi->vaddr, pi->nr_pages, flags);
	if (r < 0 || !(flags & PE_PRESENT))
		return r;
	uint64_t vaddr = pi->vaddr, left = pi->nr_pages * PAGE_SIZE;
	while (left > 0) {
		uint8_t *dst;
		size_t got;
		r = reserve(p, left > SIZE_MAX ? SIZE_MAX : (size_t)left, &dst, &got);
		if (r < 0)
			return r;
		ssize_t n = recv(sk, dst, got, MSG_WAITALL);
		if (n != (ssize_t)got)
			return n < 0 ? -errno : -EPIPE;
		uint64_t page = im->pages_bytes / PAGE_SIZE;
		r = add_segment(im, dst, got);
		if (r == 0)
			r = add_run(im, vaddr, dst, got, flags, p->cur, page);
		if (r < 0)
			return r;
		vaddr += got;
		left -= got;
	}
	return 0;
}

/* ---- the protocol ------------------------------------------------------------- */

/* A command, and the fd that came with it (-1: none). */
static ssize_t recv_command(int sk, struct ps_iov *pi, int *fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct iovec iov = {pi, sizeof(*pi)};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = c.buf,
	                    .msg_controllen = sizeof(c.buf)};
	*fd = -1;
	ssize_t n = recvmsg(sk, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *h = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; h; h = CMSG_NXTHDR(&mh, h))
		if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS &&
		    h->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(fd, CMSG_DATA(h), sizeof(int));
	return n;
}

static int keep_uffd(struct criu_glue_pages *p, int fd)
{
	int *v = realloc(p->uffds, (p->n_uffds + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->uffds = v;
	p->uffds[p->n_uffds++] = fd;
	return 0;
}

static int serve(struct criu_glue_pages *p, int sk)
{
	struct image *cur = NULL;
	uint64_t cur_id = 0;
	for (;;) {
		struct ps_iov pi;
		int fd;
		ssize_t n = recv_command(sk, &pi, &fd);
		if (fd >= 0 && (n != (ssize_t)sizeof(pi) || (pi.cmd & 0xffff) != PS_IOV_UFFD)) {
			close(fd);
			fd = -1;
		}
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
				/* Where the last dump of the task is ours: CRIU then
				 * sends only what was written since as pages. */
				char has_parent = find_image(p->parent, pi.dst_id) != NULL;
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
		case PS_IOV_UFFD:
			/* The task's write tracking, ours to keep (pages.h). */
			if (fd < 0)
				return error_set(&p->err, -EPROTO,
				                 "CRIU sent the write tracking without its fd");
			r = keep_uffd(p, fd);
			if (r < 0)
				close(fd);
			break;
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
		/* CRIU, waiting for an answer or to send more, learns at once
		 * that none comes: its dump fails instead of waiting forever. */
		shutdown(p->sk, SHUT_RDWR);
	}
	return NULL;
}

int criu_glue_pages_start(uint64_t expect_bytes, struct criu_glue_spare *spare,
                          const struct criu_glue_pages *parent, struct criu_glue_pages **ret,
                          struct cryo_error *err)
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
	p->parent = parent;
	/* The pages' memory is made ready now, while the program runs. */
	if (expect_bytes > 0) {
		size_t size = (size_t)((expect_bytes + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1));
		r = add_chunk(p, size, true, spare);
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

bool criu_glue_pages_broken(struct criu_glue_pages *p, struct cryo_error *err)
{
	stop_thread(p);
	if (!p->error || !p->err.msg[0])
		return false;
	*err = p->err;
	return true;
}

int criu_glue_pages_finish(struct criu_glue_pages *p, struct cryo_error *err)
{
	stop_thread(p);
	if (p->error || !p->closed)
		return error_set(err, p->error ? p->error : -EPIPE,
		                 "receiving the pages failed: %s",
		                 p->err.msg[0] ? p->err.msg : "the stream ended early");
	/* What the pages did not take of the memory made for them goes back:
	 * the next dumps may keep this memory for the pages they share. */
	for (size_t i = 0; i < p->n_chunks; i++) {
		struct chunk *c = p->chunks[i];
		size_t keep = (c->used + PAGE_SIZE - 1) & ~(size_t)(PAGE_SIZE - 1);
		if (c->refs == 1 && keep < c->size && keep > 0) {
			munmap(c->base + keep, c->size - keep);
			c->size = keep;
		}
	}
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
	for (size_t i = 0; i < p->n_chunks; i++)
		release_chunk(p->chunks[i], spare);
	for (size_t i = 0; i < p->n_images; i++) {
		free(p->images[i].pagemap);
		free(p->images[i].pages);
		free(p->images[i].runs);
		free(p->images[i].shared);
	}
	for (size_t i = 0; i < p->n_uffds; i++)
		close(p->uffds[i]);
	free(p->uffds);
	if (p->sk >= 0)
		close(p->sk);
	free(p->chunks);
	free(p->images);
	free(p->files);
	free(p);
}

/* ---- write tracking ------------------------------------------------------------ */

const char *criu_glue_pages_shared(const struct criu_glue_pages *p, const char *pages_name,
                                   const struct mem_span **spans, size_t *n)
{
	for (size_t i = 0; i < p->n_images; i++) {
		const struct image *im = &p->images[i];
		if (strcmp(im->pages_name, pages_name) != 0)
			continue;
		*spans = im->shared;
		*n = im->n_shared;
		return im->n_shared ? im->parent_pages : NULL;
	}
	return NULL;
}

void criu_glue_pages_counts(const struct criu_glue_pages *p, uint64_t *received,
                            uint64_t *from_parent)
{
	uint64_t total = 0;
	for (size_t i = 0; i < p->n_images; i++)
		total += p->images[i].pages_bytes;
	*from_parent = p->parent_bytes;
	*received = total - p->parent_bytes;
}

/* Tracking fds kept at most: CRIU makes a new one for each dump that finds
 * memory not yet registered; past this, the tracking starts over. */
#define MAX_UFFDS 64

void criu_glue_track_drop(struct criu_glue_track *t, struct criu_glue_spare *spare)
{
	for (size_t i = 0; i < t->n_uffds; i++)
		close(t->uffds[i]);
	free(t->uffds);
	struct criu_glue_pages *parent = t->parent;
	*t = (struct criu_glue_track){0};
	if (parent)
		parent->parent = NULL;
	criu_glue_pages_free(parent, spare);
}

void criu_glue_track_next(struct criu_glue_track *t, struct criu_glue_pages *p,
                          struct criu_glue_spare *spare)
{
	if (t->n_uffds + p->n_uffds > MAX_UFFDS) {
		criu_glue_track_drop(t, spare);
		/* Without its fds the memory is unregistered: the next dump
		 * sends it all, and registers it anew. */
		for (size_t i = 0; i < p->n_uffds; i++)
			close(p->uffds[i]);
		p->n_uffds = 0;
	}
	int *v = p->n_uffds ? realloc(t->uffds, (t->n_uffds + p->n_uffds) * sizeof(*v)) : t->uffds;
	if (p->n_uffds && !v) {
		/* Without room for its fds: no tracking, never a wrong one. */
		criu_glue_track_drop(t, spare);
		criu_glue_pages_free(p, NULL);
		return;
	}
	if (p->n_uffds) {
		memcpy(v + t->n_uffds, p->uffds, p->n_uffds * sizeof(*v));
		t->uffds = v;
		t->n_uffds += p->n_uffds;
		p->n_uffds = 0;
	}
	struct criu_glue_pages *old = t->parent;
	stop_thread(p);
	p->parent = NULL; /* old: what p shares with it, p holds itself */
	if (old)
		old->parent = NULL;
	criu_glue_pages_free(old, spare);
	t->parent = p;
	t->dumps++;
	/* After many dumps most of the memory their pages came into may be no
	 * image's any more, but for a few pages still: the tracking then
	 * starts over, and the next dump, whole, into memory of its own. */
	uint64_t held = 0, live = 0;
	for (size_t i = 0; i < p->n_chunks; i++)
		held += p->chunks[i]->size;
	for (size_t i = 0; i < p->n_images; i++)
		live += p->images[i].pages_bytes;
	if (held > 2 * live + (64u << 20))
		criu_glue_track_drop(t, spare);
}

uint64_t criu_glue_track_expect(const struct criu_glue_track *t, uint64_t whole)
{
	if (!t->parent || !t->n_uffds)
		return whole;
	uint64_t received, from_parent;
	criu_glue_pages_counts(t->parent, &received, &from_parent);
	/* After a whole dump, what one without tracking would take tells
	 * nothing: a little; more comes (cold) if more arrives. And what the
	 * program has grown by since (whole: what it holds now) is new. */
	uint64_t e = (from_parent ? 2 * received : whole / 32) + (4u << 20);
	uint64_t last = received + from_parent;
	if (whole > last)
		e += whole - last;
	return e < whole ? e : whole;
}
