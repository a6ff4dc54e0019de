/* Lazy restores, CRIU's side: the pages a restore needs at once set apart
 * at dump time and put back before CRIU runs (the eager pages), and the
 * userfaultfd server that brings the rest as the program touches it and in
 * the background (CRIU's lazy-pages protocol, spoken by cryo itself).
 *
 * Why one file of about 1,150 lines: both halves read CRIU's pagemap and
 * mm images through the same parser, and the server is one state machine
 * (its tasks, their userfaultfds and forks, the fault and background copy,
 * the final check) whose functions all share struct criu_glue_lazy; split
 * further, each piece would need that struct's insides. */
#include "lazy.h"
#include "cleanup.h"
#include "criu-proto.h"
#include "internal.h"
#include "pb.h"
#include "ranges.h"
#include "util.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* eager-*.img: "CRYOEGR1", u16 length + name of the pages image, u64 its
 * size, then records { u64 offset, u64 length, the bytes } to the end. */
static const char eager_magic[8] = "CRYOEGR1";

/* ---- pagemaps ------------------------------------------------------------------ */

struct pm_entry {
	uint64_t vaddr, nr_pages;
	uint64_t off; /* in the pages image, for present entries */
	uint32_t flags;
};

struct pagemap {
	char pages_name[64];
	struct pm_entry *e;
	size_t n;
	uint64_t pages_bytes; /* what its present entries hold */
};

static void pagemap_clear(struct pagemap *pm)
{
	free(pm->e);
	*pm = (struct pagemap){0};
}

/* Parses a pagemap image: a pagemap_head, then pagemap_entry's. An entry
 * of an older CRIU has compat_nr_pages and in_parent rather than nr_pages
 * and flags. */
static int pagemap_parse(const uint8_t *buf, size_t len, struct pagemap *pm)
{
	*pm = (struct pagemap){0};
	size_t off = pb_entries_start(buf, len), msg_len, cap = 0;
	const uint8_t *msg;
	struct pb_field f;
	int r = pb_next_entry(buf, len, &off, &msg, &msg_len);
	if (r != 1)
		return -EBADMSG;
	uint64_t pages_id = UINT64_MAX;
	for (const uint8_t *p = msg; (r = pb_next(&p, msg + msg_len, &f)) == 1;)
		if (f.number == PB_PAGEMAP_HEAD_PAGES_ID && f.wire_type == 0)
			pages_id = f.varint;
	if (r < 0 || pages_id == UINT64_MAX)
		return -EBADMSG;
	snprintf(pm->pages_name, sizeof(pm->pages_name), "pages-%" PRIu64 ".img", pages_id);
	while ((r = pb_next_entry(buf, len, &off, &msg, &msg_len)) == 1) {
		struct pm_entry e = {0};
		bool has_flags = false, in_parent = false;
		uint64_t compat = 0;
		for (const uint8_t *p = msg; (r = pb_next(&p, msg + msg_len, &f)) == 1;) {
			if (f.wire_type != 0)
				continue;
			switch (f.number) {
			case PB_PAGEMAP_ENTRY_VADDR: e.vaddr = f.varint; break;
			case PB_PAGEMAP_ENTRY_COMPAT_NR_PAGES: compat = f.varint; break;
			case PB_PAGEMAP_ENTRY_IN_PARENT: in_parent = f.varint != 0; break;
			case PB_PAGEMAP_ENTRY_FLAGS:
				e.flags = (uint32_t)f.varint;
				has_flags = true;
				break;
			case PB_PAGEMAP_ENTRY_NR_PAGES: e.nr_pages = f.varint; break;
			default: break;
			}
		}
		if (r < 0)
			break;
		if (!e.nr_pages)
			e.nr_pages = compat;
		if (!has_flags)
			e.flags = in_parent ? 0 : PE_PRESENT;
		if (e.nr_pages > UINT64_MAX / PAGE_SIZE / 2 || (e.vaddr & (PAGE_SIZE - 1)) ||
		    (pm->n && e.vaddr < pm->e[pm->n - 1].vaddr)) {
			r = -EBADMSG;
			break;
		}
		if (e.flags & PE_PRESENT) {
			e.off = pm->pages_bytes;
			pm->pages_bytes += e.nr_pages * PAGE_SIZE;
		}
		if (pm->n == cap) {
			cap = cap ? cap * 2 : 64;
			struct pm_entry *n = realloc(pm->e, cap * sizeof(*n));
			if (!n) {
				r = -ENOMEM;
				break;
			}
			pm->e = n;
		}
		pm->e[pm->n++] = e;
	}
	if (r < 0) {
		pagemap_clear(pm);
		return r == -ENOMEM ? r : -EBADMSG;
	}
	return 0;
}

/* ---- eager pages, at checkpoint time ---------------------------------------------- */

static bool is_pagemap(const char *name)
{
	size_t n = strlen(name);
	return strncmp(name, "pagemap-", 8) == 0 && n > 12 && strcmp(name + n - 4, ".img") == 0;
}

/* A file of the dump: in memory if mem has it, else in the directory. */
struct dump_file {
	const struct mem_file *mem;
	void *map; /* a file of the directory, mapped */
	size_t len;
};

static int dump_file_open(int dfd, const struct mem_file *mem, size_t n_mem, const char *name,
                          struct dump_file *f)
{
	*f = (struct dump_file){0};
	for (size_t i = 0; i < n_mem; i++)
		if (strcmp(mem[i].name, name) == 0) {
			f->mem = &mem[i];
			f->len = mem[i].size;
			return 0;
		}
	return util_map_file(dfd, name, &f->map, &f->len);
}

static void dump_file_close(struct dump_file *f)
{
	if (f->map)
		munmap(f->map, f->len);
	*f = (struct dump_file){0};
}

/* Writes bytes [off, off + len) of f to out. */
static int dump_file_copy(const struct dump_file *f, uint64_t off, uint64_t len, FILE *out)
{
	if (off > f->len || len > f->len - off)
		return -EBADMSG;
	if (!f->mem)
		return fwrite((uint8_t *)f->map + off, 1, len, out) == len ? 0 : -EIO;
	for (size_t i = 0; i < f->mem->n_iov && len > 0; i++) {
		const struct iovec *v = &f->mem->iov[i];
		if (off >= v->iov_len) {
			off -= v->iov_len;
			continue;
		}
		size_t n = v->iov_len - off < len ? v->iov_len - (size_t)off : (size_t)len;
		if (fwrite((uint8_t *)v->iov_base + off, 1, n, out) != n)
			return -EIO;
		len -= n;
		off = 0;
	}
	return len ? -EBADMSG : 0;
}

/* A pagemap's contents, whichever way the dump came. */
static int read_dump_file(int dfd, const struct mem_file *mem, size_t n_mem, const char *name,
                          uint8_t **ret, size_t *ret_len)
{
	struct dump_file f;
	int r = dump_file_open(dfd, mem, n_mem, name, &f);
	if (r < 0)
		return r;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	_cleanup_fclose_ FILE *s = open_memstream(&buf, &len);
	if (!s)
		r = -ENOMEM;
	else
		r = dump_file_copy(&f, 0, f.len, s);
	dump_file_close(&f);
	if (r == 0 && fflush(s) != 0)
		r = -ENOMEM;
	if (r < 0)
		return r;
	fclose(TAKE_PTR(s));
	*ret = (uint8_t *)TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

/* The eager file of pagemap pm_name ("pagemap-X.img" gives "eager-X.img"). */
static int write_eager(const char *dir, int dfd, const struct mem_file *mem, size_t n_mem,
                       const char *pm_name)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len;
	int r = read_dump_file(dfd, mem, n_mem, pm_name, &buf, &len);
	if (r < 0)
		return r;
	struct pagemap pm;
	r = pagemap_parse(buf, len, &pm);
	if (r < 0)
		return r;
	struct dump_file pages = {0};
	r = dump_file_open(dfd, mem, n_mem, pm.pages_name, &pages);
	if (r == -ENOENT && pm.pages_bytes == 0)
		r = 0; /* nothing present: CRIU may not have made the file */
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/eager-%s", dir, pm_name + 8);
	_cleanup_fclose_ FILE *out = r == 0 ? fopen(path, "wxe") : NULL;
	if (r == 0 && !out)
		r = -errno;
	if (r == 0) {
		uint16_t nl = htole16((uint16_t)strlen(pm.pages_name));
		uint64_t size = htole64(pages.len);
		if (fwrite(eager_magic, 8, 1, out) != 1 || fwrite(&nl, 2, 1, out) != 1 ||
		    fwrite(pm.pages_name, strlen(pm.pages_name), 1, out) != 1 ||
		    fwrite(&size, 8, 1, out) != 1)
			r = -EIO;
	}
	for (size_t i = 0; r == 0 && i < pm.n; i++) {
		const struct pm_entry *e = &pm.e[i];
		if (!(e->flags & PE_PRESENT) || (e->flags & PE_LAZY))
			continue;
		uint64_t rec[2] = {htole64(e->off), htole64(e->nr_pages * PAGE_SIZE)};
		if (fwrite(rec, sizeof(rec), 1, out) != 1)
			r = -EIO;
		else
			r = dump_file_copy(&pages, e->off, e->nr_pages * PAGE_SIZE, out);
	}
	if (r == 0 && fflush(out) != 0)
		r = -errno;
	dump_file_close(&pages);
	pagemap_clear(&pm);
	return r;
}

int criu_glue_eager_write(const char *dir, const struct mem_file *mem, size_t n_mem,
                          struct cryo_error *err)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return error_set(err, -errno, "cannot open '%s': %m", dir);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)))
		if (is_pagemap(de->d_name))
			r = write_eager(dir, dirfd(d), mem, n_mem, de->d_name);
	for (size_t i = 0; r == 0 && i < n_mem; i++)
		if (is_pagemap(mem[i].name))
			r = write_eager(dir, dirfd(d), mem, n_mem, mem[i].name);
	if (r < 0)
		return error_set(err, r, "cannot set apart the pages a restore needs at once: %s",
		                 strerror(-r));
	return 0;
}

/* ---- eager pages, at restore time -------------------------------------------------- */

static int apply_one(int dfd, const char *name)
{
	void *map;
	size_t len;
	int r = util_map_file(dfd, name, &map, &len);
	if (r < 0)
		return r;
	const uint8_t *p = map, *end = p + len;
	char pages[64];
	uint16_t nl;
	uint64_t size;
	int fd = -1;
	r = -EBADMSG;
	if (len < 8 + 2 || memcmp(p, eager_magic, 8) != 0)
		goto out;
	memcpy(&nl, p + 8, 2);
	nl = le16toh(nl);
	p += 10;
	if (nl == 0 || nl >= sizeof(pages) || (size_t)(end - p) < nl + 8u)
		goto out;
	memcpy(pages, p, nl);
	pages[nl] = '\0';
	if (strncmp(pages, "pages-", 6) != 0 || strchr(pages, '/'))
		goto out;
	memcpy(&size, p + nl, 8);
	size = le64toh(size);
	p += nl + 8;
	fd = openat(dfd, pages, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		goto out;
	}
	while (p < end) {
		uint64_t rec[2];
		if ((size_t)(end - p) < sizeof(rec))
			goto out;
		memcpy(rec, p, sizeof(rec));
		p += sizeof(rec);
		uint64_t off = le64toh(rec[0]), n = le64toh(rec[1]);
		if (n > (uint64_t)(end - p) || off > size || n > size - off)
			goto out;
		for (uint64_t done = 0; done < n;) {
			ssize_t w = pwrite(fd, p + done, n - done, (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				r = w < 0 ? -errno : -EIO;
				goto out;
			}
			done += (uint64_t)w;
		}
		p += n;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	munmap(map, len);
	return r;
}

int criu_glue_eager_apply(const char *dir, struct cryo_error *err)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return error_set(err, -errno, "cannot open '%s': %m", dir);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (!is_pagemap(de->d_name))
			continue;
		char eager[NAME_MAX + 1];
		snprintf(eager, sizeof(eager), "eager-%s", de->d_name + 8);
		r = apply_one(dirfd(d), eager);
		if (r == -ENOENT)
			return error_set(err, r, "the image has no %s (taken by an older cryo)",
			                 eager);
		if (r < 0)
			return error_set(err, r, "cannot apply '%s': %s", eager, strerror(-r));
	}
	return 0;
}

/* ---- the program's memory, through its userfaultfds --------------------------------- */

/* What CRIU's restore does with lazy-pages (criu/uffd.c, pie/restorer.c):
 * it connects to "lazy-pages.socket" in its work directory and sends, for
 * each task it restores, the task's pid in the image (an int, negative for
 * a zombie, which has no memory) and then a userfaultfd (SCM_RIGHTS, with
 * one byte), on which the restorer registers the task's private anonymous
 * VMAs in missing mode. Once every task is restored it sends
 * LAZY_PAGES_RESTORE_FINISHED. The pages marked PE_LAZY are then for us to
 * put in place (UFFDIO_COPY); other pages of those VMAs read as zeros
 * (UFFDIO_ZEROPAGE). The fds come with the events CRIU asks for: fork,
 * mremap, munmap, madvise(DONTNEED). */
#define LAZY_SOCK_NAME        "lazy-pages.socket"
#define LAZY_RESTORE_FINISHED 0x52535446u
/* What a fault or a background step copies at most: a piece of the memory
 * image, as the archive compresses them. */
#define LAZY_WINDOW  (2u << 20)
#define LAZY_MAX_IOV (LAZY_WINDOW / PAGE_SIZE)

enum { TAG_LISTEN, TAG_CLIENT, TAG_STOP, TAG_GO, TAG_TASK };

struct task {
	int pid;  /* in the image */
	int uffd; /* -1 once the task is gone */
	const struct pagemap *pm;
	struct ranges lazy; /* its pages still to put in place */
};

/* A fault that could not be served yet (an mm change pending). */
struct retry {
	size_t task;
	uint64_t addr;
};

struct criu_glue_lazy {
	struct criu_glue_lazy_opts o;
	char *images_dir, *sock_path;
	int listen_fd, client, ep, stop, go_fd;
	pthread_t thread;
	bool started;
	bool finished;         /* CRIU's restore said so */
	bool go;               /* the background copy may begin (criu_glue_lazy_go()) */
	bool done;             /* the thread has nothing more to do */
	int result;            /* published with notify_fd */
	struct cryo_error err; /* why the thread stopped, published with result */
	struct task **t;
	size_t nt;
	struct pagemap **pms;
	size_t n_pms;
	struct retry *retry;
	size_t n_retry, cap_retry;
	size_t next; /* the task the background copy serves next */
	struct criu_glue_lazy_stats st;
	uint64_t t_finished;
	struct iovec iov[LAZY_MAX_IOV];
};

/* ---- tasks ---- */

struct vma {
	uint64_t start, end;
};

static int vma_cmp(const void *a, const void *b)
{
	const struct vma *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The VMAs of an mm image: mm_entry.vmas, each a vma_entry. */
static int mm_vmas(const uint8_t *buf, size_t len, struct vma **ret, size_t *n_ret)
{
	size_t off = pb_entries_start(buf, len), msg_len, n = 0, cap = 0;
	const uint8_t *msg;
	if (pb_next_entry(buf, len, &off, &msg, &msg_len) != 1)
		return -EBADMSG;
	_cleanup_free_ struct vma *v = NULL;
	struct pb_field f, g;
	int r, q = 0;
	for (const uint8_t *p = msg; (r = pb_next(&p, msg + msg_len, &f)) == 1;) {
		if (f.number != PB_MM_ENTRY_VMAS || f.wire_type != 2)
			continue;
		struct vma x = {0, 0};
		for (const uint8_t *s = f.data; (q = pb_next(&s, f.data + f.len, &g)) == 1;) {
			if (g.wire_type == 0 && g.number == PB_VMA_ENTRY_START)
				x.start = g.varint;
			else if (g.wire_type == 0 && g.number == PB_VMA_ENTRY_END)
				x.end = g.varint;
		}
		if (q < 0 || x.end <= x.start)
			return -EBADMSG;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			struct vma *nv = realloc(v, cap * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			v = nv;
		}
		v[n++] = x;
	}
	if (r < 0)
		return -EBADMSG;
	qsort(v, n, sizeof(*v), vma_cmp);
	*ret = TAKE_PTR(v);
	*n_ret = n;
	return 0;
}

static const struct pagemap *load_pagemap(struct criu_glue_lazy *l, int pid)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pagemap-%d.img", l->images_dir, pid);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct pagemap *pm = calloc(1, sizeof(*pm));
	struct pagemap **n = realloc(l->pms, (l->n_pms + 1) * sizeof(*n));
	if (n)
		l->pms = n;
	if (!pm || !n || util_read_file(path, &buf, &len) < 0 ||
	    pagemap_parse((uint8_t *)buf, len, pm) < 0) {
		free(pm);
		return NULL;
	}
	l->pms[l->n_pms++] = pm;
	return pm;
}

static void task_free(struct task *t)
{
	if (!t)
		return;
	if (t->uffd >= 0)
		close(t->uffd);
	ranges_free(&t->lazy);
	free(t);
}

static int task_add(struct criu_glue_lazy *l, struct task *t)
{
	struct task **n = realloc(l->t, (l->nt + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	l->t = n;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_TASK + l->nt};
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, t->uffd, &ev) < 0)
		return -errno;
	l->t[l->nt++] = t;
	return 0;
}

/* A task CRIU restores: its lazy pages, split where its VMAs end (one
 * UFFDIO_COPY stays within one VMA). */
static int task_new(struct criu_glue_lazy *l, int pid, int uffd)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t) {
		close(uffd);
		return -ENOMEM;
	}
	t->pid = pid;
	t->uffd = uffd;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/mm-%d.img", l->images_dir, pid);
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ struct vma *v = NULL;
	size_t len, nv = 0;
	int r = util_read_file(path, &buf, &len);
	if (r == 0)
		r = mm_vmas((uint8_t *)buf, len, &v, &nv);
	if (r == 0 && !(t->pm = load_pagemap(l, pid)))
		r = -EBADMSG;
	if (r < 0) {
		task_free(t);
		return error_set(&l->err, r, "cannot read the memory map of task %d: %s", pid,
		                 strerror(-r));
	}
	size_t j = 0;
	for (size_t i = 0; i < t->pm->n && r == 0; i++) {
		const struct pm_entry *e = &t->pm->e[i];
		if ((e->flags & (PE_LAZY | PE_PRESENT)) != (PE_LAZY | PE_PRESENT))
			continue;
		uint64_t s = e->vaddr, end = s + e->nr_pages * PAGE_SIZE;
		while (j < nv && v[j].end <= s)
			j++;
		for (size_t k = j; k < nv && v[k].start < end && r == 0; k++) {
			uint64_t a = s > v[k].start ? s : v[k].start,
			         b = end < v[k].end ? end : v[k].end;
			r = ranges_append(&t->lazy, (struct range){a, b, a});
			l->st.lazy_pages += (b - a) / PAGE_SIZE;
		}
	}
	if (r == 0)
		r = task_add(l, t);
	if (r < 0) {
		task_free(t);
		return error_set(&l->err, r, "cannot follow task %d: %s", pid, strerror(-r));
	}
	return 0;
}

/* ---- copying ---- */

static void task_gone(struct criu_glue_lazy *l, struct task *t)
{
	if (t->uffd >= 0) {
		/* CRIU may hold the same file still: out of the set first */
		epoll_ctl(l->ep, EPOLL_CTL_DEL, t->uffd, NULL);
		close(t->uffd);
	}
	t->uffd = -1;
	ranges_free(&t->lazy);
}

/* Where the page at addr of range x is in the pages image (*off), and how
 * far the image holds it contiguously before and after addr (bytes, within
 * x too). */
static int locate(const struct task *t, const struct range *x, uint64_t addr, uint64_t *off,
                  uint64_t *before, uint64_t *after)
{
	const struct pagemap *pm = t->pm;
	uint64_t img = x->img + (addr - x->start);
	size_t lo = 0, hi = pm->n;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (pm->e[mid].vaddr <= img)
			lo = mid;
		else
			hi = mid;
	}
	const struct pm_entry *e = pm->n ? &pm->e[lo] : NULL;
	if (!e || !(e->flags & PE_PRESENT) || e->vaddr > img ||
	    img >= e->vaddr + e->nr_pages * PAGE_SIZE)
		return -EBADMSG;
	*off = e->off + (img - e->vaddr);
	uint64_t b = img - e->vaddr, a = e->vaddr + e->nr_pages * PAGE_SIZE - img;
	*before = b < addr - x->start ? b : addr - x->start;
	*after = a < x->end - addr ? a : x->end - addr;
	return 0;
}

enum copy_end { COPY_DONE, COPY_AGAIN, COPY_GONE };

/* A page already there (a fault or a copy put it there first): whoever
 * waits for it goes on. */
static void wake(const struct task *t, uint64_t addr)
{
	struct uffdio_range w = {addr, PAGE_SIZE};
	ioctl(t->uffd, UFFDIO_WAKE, &w);
}

/* UFFDIO_COPY of [src, src + len) to dst. *handled: how much is in place
 * (a page found there already counts: a fault put it there). */
static int copy_pages(struct criu_glue_lazy *l, struct task *t, uint64_t dst, const uint8_t *src,
                      uint64_t len, uint64_t *handled, uint64_t *copied)
{
	uint64_t pos = 0;
	int end = COPY_DONE;
	while (pos < len) {
		struct uffdio_copy uc = {
		    .dst = dst + pos, .src = (uintptr_t)(src + pos), .len = len - pos};
		if (ioctl(t->uffd, UFFDIO_COPY, &uc) == 0) {
			*copied += len - pos;
			pos = len;
			break;
		}
		int e = errno;
		if (uc.copy > 0) { /* part of it; the rest says why not */
			*copied += (uint64_t)uc.copy;
			pos += (uint64_t)uc.copy;
			continue;
		}
		if (uc.copy < 0)
			e = (int)-uc.copy;
		if (e == EEXIST) {
			wake(t, dst + pos);
			pos += PAGE_SIZE;
		} else if (e == EAGAIN) { /* an mm change to read first */
			end = COPY_AGAIN;
			break;
		} else if (e == ENOENT) { /* no VMA there any more */
			pos = len;
		} else if (e == ESRCH || e == ENOSPC) { /* the task is gone */
			end = COPY_GONE;
			break;
		} else {
			return error_set(&l->err, -e,
			                 "cannot put pages in place at 0x%" PRIx64
			                 " of task %d: %s",
			                 dst + pos, t->pid, strerror(e));
		}
	}
	*handled = pos;
	return end;
}

/* Puts [from, to) of range x (contiguous in the pages image from off on) in
 * place, and takes what is in place out of the ranges. Returns a copy_end,
 * or a negative errno. */
static int copy_window(struct criu_glue_lazy *l, struct task *t, uint64_t from, uint64_t to,
                       uint64_t off, uint64_t *copied)
{
	uint64_t done = 0, len = to - from;
	int end = COPY_DONE;
	while (done < len && end == COPY_DONE) {
		int n = 0;
		uint64_t tg = util_now_ns();
		int64_t c = l->o.source.get(l->o.source.ctx, t->pm->pages_name, off + done,
		                            len - done, l->iov, (int)LAZY_MAX_IOV, &n);
		if (c <= 0)
			return error_set(&l->err, c < 0 ? (int)c : -EIO,
			                 "the memory image %s is not to be had", t->pm->pages_name);
		uint64_t tc = util_now_ns();
		l->st.get_ns += tc - tg;
		for (int k = 0; k < n && end == COPY_DONE; k++) {
			uint64_t h = 0;
			end = copy_pages(l, t, from + done, l->iov[k].iov_base, l->iov[k].iov_len,
			                 &h, copied);
			if (end < 0)
				return end;
			done += h;
		}
		l->st.copy_ns += util_now_ns() - tc;
	}
	if (done && l->o.source.put)
		l->o.source.put(l->o.source.ctx, t->pm->pages_name, off, done);
	if (end == COPY_GONE) {
		task_gone(l, t);
		return end;
	}
	int r = ranges_cut(&t->lazy, from, from + done);
	return r < 0 ? r : end;
}

/* Puts in place what of range x lies in the same piece of the image as the
 * page at addr (contiguous there): for a fault, around it; for the
 * background copy, from the range's start on. */
static int copy_piece(struct criu_glue_lazy *l, struct task *t, const struct range *x,
                      uint64_t addr, uint64_t *bytes)
{
	uint64_t off, before, after;
	if (locate(t, x, addr, &off, &before, &after) < 0)
		return error_set(&l->err, -EBADMSG,
		                 "the pagemap of task %d lacks its lazy page at 0x%" PRIx64, t->pid,
		                 addr);
	uint64_t in = off % LAZY_WINDOW;
	uint64_t b = before < in ? before : in;
	uint64_t a = after < LAZY_WINDOW - in ? after : LAZY_WINDOW - in;
	return copy_window(l, t, addr - b, addr + a, off - b, bytes);
}

/* A fault at addr: the piece of the image its page is in, or a zero page. */
static int serve_fault(struct criu_glue_lazy *l, size_t ti, uint64_t addr)
{
	struct task *t = l->t[ti];
	if (t->uffd < 0)
		return 0;
	addr &= ~(uint64_t)(PAGE_SIZE - 1);
	struct range *x = ranges_find(&t->lazy, addr);
	int end = COPY_DONE;
	if (!x) {
		/* Nothing the dump had (or in place already): zeros. */
		struct uffdio_zeropage z = {.range = {addr, PAGE_SIZE}};
		if (ioctl(t->uffd, UFFDIO_ZEROPAGE, &z) == 0) {
			l->st.zero_pages++;
		} else {
			int e = z.zeropage < 0 ? (int)-z.zeropage : errno;
			if (e == EEXIST) {
				wake(t, addr);
			} else if (e == EAGAIN) {
				end = COPY_AGAIN;
			} else if (e == ESRCH || e == ENOSPC) {
				task_gone(l, t);
			} else if (e != ENOENT) {
				return error_set(&l->err, -e,
				                 "cannot give task %d a zero page at 0x%" PRIx64
				                 ": %s",
				                 t->pid, addr, strerror(e));
			}
		}
	} else {
		l->st.faults++;
		end = copy_piece(l, t, x, addr, &l->st.fault_bytes);
		if (end < 0)
			return end;
		if (end == COPY_AGAIN && ranges_find(&t->lazy, addr) == NULL)
			end = COPY_DONE; /* the faulting page made it */
	}
	if (end == COPY_AGAIN) {
		if (l->n_retry == l->cap_retry) {
			size_t cap = l->cap_retry ? l->cap_retry * 2 : 16;
			struct retry *n = realloc(l->retry, cap * sizeof(*n));
			if (!n)
				return -ENOMEM;
			l->retry = n;
			l->cap_retry = cap;
		}
		l->retry[l->n_retry++] = (struct retry){ti, addr};
	}
	return 0;
}

/* One window of the background copy: the lowest lazy page of the next task
 * on, and what follows it in the same piece of the image. */
static int background_step(struct criu_glue_lazy *l)
{
	for (size_t k = 0; k < l->nt; k++) {
		size_t ti = (l->next + k) % l->nt;
		struct task *t = l->t[ti];
		if (t->uffd < 0 || t->lazy.n == 0)
			continue;
		l->next = ti;
		struct range *x = &t->lazy.r[0];
		int r = copy_piece(l, t, x, x->start, &l->st.background_bytes);
		return r < 0 ? r : 0;
	}
	return 0;
}

static bool work_left(const struct criu_glue_lazy *l)
{
	for (size_t i = 0; i < l->nt; i++)
		if (l->t[i]->uffd >= 0 && l->t[i]->lazy.n > 0)
			return true;
	return false;
}

/* ---- events ---- */

static int on_fork(struct criu_glue_lazy *l, struct task *parent, int uffd)
{
	struct task *t = calloc(1, sizeof(*t));
	if (!t) {
		close(uffd);
		return -ENOMEM;
	}
	*t = (struct task){.pid = parent->pid, .uffd = uffd, .pm = parent->pm};
	int r = ranges_copy(&t->lazy, &parent->lazy);
	if (r == 0)
		r = task_add(l, t);
	if (r < 0) {
		task_free(t);
		return error_set(&l->err, r, "cannot follow a fork of task %d: %s", parent->pid,
		                 strerror(-r));
	}
	return 0;
}

/* Reads what the kernel has for task ti. */
static int on_uffd(struct criu_glue_lazy *l, size_t ti)
{
	for (;;) {
		struct task *t = l->t[ti];
		if (t->uffd < 0)
			return 0;
		struct uffd_msg m[16];
		ssize_t n = read(t->uffd, m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0) {
			task_gone(l, t);
			return 0;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(m[0]); i++) {
			const struct uffd_msg *e = &m[i];
			int r = 0;
			if (e->event != UFFD_EVENT_PAGEFAULT)
				l->st.events++;
			switch (e->event) {
			case UFFD_EVENT_PAGEFAULT:
				r = serve_fault(l, ti, e->arg.pagefault.address);
				break;
			case UFFD_EVENT_FORK: r = on_fork(l, l->t[ti], (int)e->arg.fork.ufd); break;
			case UFFD_EVENT_REMAP:
				r = ranges_move(&l->t[ti]->lazy, e->arg.remap.from, e->arg.remap.to,
				                e->arg.remap.len);
				break;
			case UFFD_EVENT_REMOVE: {
				/* madvise(DONTNEED): those pages read as zeros from now on */
				struct uffdio_range u = {e->arg.remove.start,
				                         e->arg.remove.end - e->arg.remove.start};
				if (ioctl(l->t[ti]->uffd, UFFDIO_UNREGISTER, &u) < 0 &&
				    errno == ENOMEM) {
					task_gone(l, l->t[ti]);
					break;
				}
				r = ranges_cut(&l->t[ti]->lazy, e->arg.remove.start,
				               e->arg.remove.end);
				break;
			}
			case UFFD_EVENT_UNMAP:
				r = ranges_cut(&l->t[ti]->lazy, e->arg.remove.start,
				               e->arg.remove.end);
				break;
			default:
				r = error_set(&l->err, -EPROTO,
				              "unknown userfaultfd event %u from task %d", e->event,
				              l->t[ti]->pid);
			}
			if (r < 0)
				return r == -ENOMEM ? error_set(&l->err, r, "out of memory") : r;
		}
	}
}

/* CRIU's restore: a pid and its userfaultfd, or the end of the restore. */
static int on_client(struct criu_glue_lazy *l)
{
	int32_t pid;
	ssize_t n = recv(l->client, &pid, sizeof(pid), MSG_WAITALL);
	if (n == 0 && l->finished) {
		epoll_ctl(l->ep, EPOLL_CTL_DEL, l->client, NULL);
		close(l->client);
		l->client = -1;
		return 0;
	}
	if (n != (ssize_t)sizeof(pid))
		return error_set(&l->err, n < 0 ? -errno : -EPIPE,
		                 "CRIU's restore went away before it finished");
	if ((uint32_t)pid == LAZY_RESTORE_FINISHED) {
		l->finished = true;
		l->t_finished = util_now_ns();
		return 0;
	}
	if (pid < 0) /* a zombie: no memory */
		return 0;
	char byte;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct iovec v = {&byte, 1};
	struct msghdr mh = {.msg_iov = &v,
	                    .msg_iovlen = 1,
	                    .msg_control = cm.buf,
	                    .msg_controllen = sizeof(cm.buf)};
	while ((n = recvmsg(l->client, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return error_set(&l->err, -EPROTO, "CRIU's restore sent no userfaultfd for task %d",
		                 pid);
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(fd));
	return task_new(l, pid, fd);
}

static void notify(struct criu_glue_lazy *l, int result)
{
	__atomic_store_n(&l->result, result, __ATOMIC_RELEASE);
	uint64_t one = 1;
	if (write(l->o.notify_fd, &one, sizeof(one)) < 0) {
		/* The caller's eventfd: nothing to be done about it here. */
	}
}

static int run(struct criu_glue_lazy *l)
{
	struct epoll_event ev[16];
	for (;;) {
		bool work = l->finished && ((l->go && work_left(l)) || l->n_retry);
		int n = epoll_wait(l->ep, ev, 16, work ? 0 : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return error_set(&l->err, -errno, "epoll_wait: %m");
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;
			int r = 0;
			if (tag == TAG_STOP)
				return 1;
			if (tag == TAG_GO) {
				uint64_t v;
				if (read(l->go_fd, &v, sizeof(v)) < 0) {
					/* read already: go is go */
				}
				l->go = true;
				continue;
			}
			if (tag == TAG_LISTEN) {
				l->client = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
				if (l->client < 0)
					return error_set(&l->err, -errno,
					                 "cannot accept CRIU's restore: %m");
				struct epoll_event ce = {.events = EPOLLIN, .data.u64 = TAG_CLIENT};
				epoll_ctl(l->ep, EPOLL_CTL_DEL, l->listen_fd, NULL);
				if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->client, &ce) < 0)
					return error_set(&l->err, -errno, "epoll_ctl: %m");
			} else if (tag == TAG_CLIENT) {
				r = on_client(l);
			} else if (tag >= TAG_TASK && tag - TAG_TASK < l->nt) {
				r = on_uffd(l, (size_t)(tag - TAG_TASK));
			}
			if (r < 0)
				return r;
		}
		/* Faults that had to wait for an mm change, then a window more. */
		struct retry *rt = l->retry;
		size_t nr = l->n_retry;
		l->retry = NULL;
		l->n_retry = l->cap_retry = 0;
		int r = 0;
		for (size_t i = 0; i < nr && r == 0; i++)
			r = serve_fault(l, rt[i].task, rt[i].addr);
		free(rt);
		if (r == 0 && l->finished && l->go && !l->n_retry)
			r = background_step(l);
		if (r < 0)
			return r;
		if (l->finished && !work_left(l) && !l->n_retry) {
			/* All in place: the program runs on its own. */
			for (size_t i = 0; i < l->nt; i++)
				task_gone(l, l->t[i]);
			l->st.ns = util_now_ns() - l->t_finished;
			return 0;
		}
	}
}

static void *run_main(void *arg)
{
	struct criu_glue_lazy *l = arg;
	int r = run(l);
	if (r == 1)
		return NULL; /* stopped */
	__atomic_store_n(&l->done, true, __ATOMIC_RELEASE);
	if (r < 0) {
		/* Pages that never come: the program's faults wait (closing the
		 * userfaultfds would give it zeros) until the caller ended it and
		 * calls criu_glue_lazy_free(). */
		for (size_t i = 0; i < l->nt; i++)
			if (l->t[i]->uffd >= 0)
				epoll_ctl(l->ep, EPOLL_CTL_DEL, l->t[i]->uffd, NULL);
	}
	/* CRIU's restore, if it still goes on, fails: without us its program
	 * would have no memory. */
	if (l->client >= 0) {
		epoll_ctl(l->ep, EPOLL_CTL_DEL, l->client, NULL);
		if (r < 0 && !l->finished)
			shutdown(l->client, SHUT_RDWR);
	}
	epoll_ctl(l->ep, EPOLL_CTL_DEL, l->listen_fd, NULL);
	if (r < 0 && !l->finished)
		shutdown(l->listen_fd, SHUT_RDWR);
	notify(l, r < 0 ? r : 0);
	/* Until criu_glue_lazy_free(). */
	struct epoll_event ev;
	while (epoll_wait(l->ep, &ev, 1, -1) < 0 || ev.data.u64 != TAG_STOP)
		;
	return NULL;
}

int criu_glue_lazy_start(const struct criu_glue_lazy_opts *o, struct criu_glue_lazy **ret,
                         struct cryo_error *err)
{
	struct criu_glue_lazy *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	_cleanup_close_ int dfd = -1;
	l->o = *o;
	l->listen_fd = l->client = l->ep = l->stop = l->go_fd = -1;
	l->images_dir = strdup(o->images_dir);
	int r = -ENOMEM;
	if (!l->images_dir || asprintf(&l->sock_path, "%s/" LAZY_SOCK_NAME, o->work_dir) < 0) {
		l->sock_path = NULL;
		goto fail;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char via[64];
	const char *path = l->sock_path;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		/* too long for a socket address: through an fd of the directory */
		dfd = open(o->work_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			r = error_set(err, -errno, "cannot open '%s': %m", o->work_dir);
			goto fail;
		}
		snprintf(via, sizeof(via), "/proc/self/fd/%d/" LAZY_SOCK_NAME, dfd);
		path = via;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(l->sock_path);
	l->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l->listen_fd < 0 || bind(l->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(l->listen_fd, 1) < 0) {
		r = error_set(err, -errno, "cannot listen on '%s' for CRIU's restore: %m",
		              l->sock_path);
		goto fail;
	}
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	l->go_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event a = {.events = EPOLLIN, .data.u64 = TAG_LISTEN},
	                   b = {.events = EPOLLIN, .data.u64 = TAG_STOP},
	                   g = {.events = EPOLLIN, .data.u64 = TAG_GO};
	if (l->ep < 0 || l->stop < 0 || l->go_fd < 0 ||
	    epoll_ctl(l->ep, EPOLL_CTL_ADD, l->listen_fd, &a) < 0 ||
	    epoll_ctl(l->ep, EPOLL_CTL_ADD, l->stop, &b) < 0 ||
	    epoll_ctl(l->ep, EPOLL_CTL_ADD, l->go_fd, &g) < 0) {
		r = error_set(err, -errno, "cannot set up epoll: %m");
		goto fail;
	}
	r = -pthread_create(&l->thread, NULL, run_main, l);
	if (r < 0) {
		error_set(err, r, "cannot start a thread: %s", strerror(-r));
		goto fail;
	}
	l->started = true;
	*ret = l;
	return 0;
fail:
	criu_glue_lazy_free(l);
	return r;
}

void criu_glue_lazy_go(struct criu_glue_lazy *l)
{
	uint64_t one = 1;
	if (write(l->go_fd, &one, sizeof(one)) < 0) {
		/* An eventfd of ours: it does not fail. */
	}
}

int criu_glue_lazy_notify_fd(const struct criu_glue_lazy *l)
{
	return l->o.notify_fd;
}

int criu_glue_lazy_finish(struct criu_glue_lazy *l, struct cryo_error *err)
{
	int r = __atomic_load_n(&l->result, __ATOMIC_ACQUIRE);
	if (r < 0)
		return error_set(err, r, "%s", l->err.msg);
	if (!__atomic_load_n(&l->done, __ATOMIC_ACQUIRE))
		return error_set(err, -EBUSY, "pages are still coming");
	return 0;
}

void criu_glue_lazy_stats(struct criu_glue_lazy *l, struct criu_glue_lazy_stats *st)
{
	*st =
	    __atomic_load_n(&l->done, __ATOMIC_ACQUIRE) ? l->st : (struct criu_glue_lazy_stats){0};
}

void criu_glue_lazy_free(struct criu_glue_lazy *l)
{
	if (!l)
		return;
	if (l->started) {
		uint64_t one = 1;
		if (write(l->stop, &one, sizeof(one)) < 0) {
			/* an eventfd of ours: it does not fail */
		}
		pthread_join(l->thread, NULL);
	}
	for (size_t i = 0; i < l->nt; i++)
		task_free(l->t[i]);
	free(l->t);
	for (size_t i = 0; i < l->n_pms; i++) {
		pagemap_clear(l->pms[i]);
		free(l->pms[i]);
	}
	free(l->pms);
	free(l->retry);
	if (l->client >= 0)
		close(l->client);
	if (l->listen_fd >= 0)
		close(l->listen_fd);
	if (l->ep >= 0)
		close(l->ep);
	if (l->stop >= 0)
		close(l->stop);
	if (l->go_fd >= 0)
		close(l->go_fd);
	if (l->sock_path)
		unlink(l->sock_path);
	free(l->sock_path);
	free(l->images_dir);
	free(l);
}
