#include "lazy.h"
#include "cleanup.h"
#include "internal.h"
#include "pb.h"
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
#include <sys/mman.h>
#include <sys/socket.h>
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

/* Parses a pagemap image: pagemap_head { pages_id = 1 }, then
 * pagemap_entry { vaddr = 1, compat_nr_pages = 2, in_parent = 3,
 * flags = 4, nr_pages = 5 }. */
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
		if (f.number == 1 && f.wire_type == 0)
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
			case 1: e.vaddr = f.varint; break;
			case 2: compat = f.varint; break;
			case 3: in_parent = f.varint != 0; break;
			case 4:
				e.flags = (uint32_t)f.varint;
				has_flags = true;
				break;
			case 5: e.nr_pages = f.varint; break;
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
                          struct criu_glue_error *err)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return util_fail(err->msg, sizeof(err->msg), -errno, "cannot open '%s': %m", dir);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)))
		if (is_pagemap(de->d_name))
			r = write_eager(dir, dirfd(d), mem, n_mem, de->d_name);
	for (size_t i = 0; r == 0 && i < n_mem; i++)
		if (is_pagemap(mem[i].name))
			r = write_eager(dir, dirfd(d), mem, n_mem, mem[i].name);
	if (r < 0)
		return util_fail(err->msg, sizeof(err->msg), r,
		                 "cannot set apart the pages a restore needs at once: %s",
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

int criu_glue_eager_apply(const char *dir, struct criu_glue_error *err)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return util_fail(err->msg, sizeof(err->msg), -errno, "cannot open '%s': %m", dir);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (!is_pagemap(de->d_name))
			continue;
		char eager[NAME_MAX + 1];
		snprintf(eager, sizeof(eager), "eager-%s", de->d_name + 8);
		r = apply_one(dirfd(d), eager);
		if (r == -ENOENT)
			return util_fail(err->msg, sizeof(err->msg), r,
			                 "the image has no %s (taken by an older cryo)", eager);
		if (r < 0)
			return util_fail(err->msg, sizeof(err->msg), r, "cannot apply '%s': %s",
			                 eager, strerror(-r));
	}
	return 0;
}

/* ---- the daemon and its page server ---------------------------------------------- */

/* Pieces of pages per sendmsg (the header makes one more: IOV_MAX). */
#define PS_MAX_IOV 1023

struct criu_glue_lazy {
	struct criu_glue_lazy_opts o;
	char *images_dir, *log_dir, *log_name;
	pid_t daemon;
	int sk; /* our end of the page-server socket pair */
	pthread_t thread;
	bool started;
	bool running; /* the program runs (criu_glue_lazy_running()) */
	/* set by the thread, read after notify_fd fired (or the join) */
	int result;
	int daemon_status;
	char why[256];
	uint64_t pages_sent;
	/* the pagemaps asked about, by pid */
	struct pm_cache {
		uint64_t pid;
		struct pagemap pm;
	} * pms;
	size_t n_pms;
};

static const struct pagemap *find_pagemap(struct criu_glue_lazy *l, uint64_t pid)
{
	for (size_t i = 0; i < l->n_pms; i++)
		if (l->pms[i].pid == pid)
			return &l->pms[i].pm;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/pagemap-%" PRIu64 ".img", l->images_dir, pid);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct pagemap pm;
	if (util_read_file(path, &buf, &len) < 0 || pagemap_parse((uint8_t *)buf, len, &pm) < 0)
		return NULL;
	struct pm_cache *n = realloc(l->pms, (l->n_pms + 1) * sizeof(*n));
	if (!n) {
		pagemap_clear(&pm);
		return NULL;
	}
	l->pms = n;
	l->pms[l->n_pms] = (struct pm_cache){pid, pm};
	return &l->pms[l->n_pms++].pm;
}

static int send_all(int sk, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(sk, &mh, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Answers one PS_IOV_GET: the present pages from vaddr on, as many as asked
 * and contiguous in the pages image. */
static int answer_get(struct criu_glue_lazy *l, struct ps_iov *pi)
{
	/* Unlike the dump direction's, dst_id is the bare pid here. */
	uint64_t pid = pi->dst_id;
	const struct pagemap *pm = find_pagemap(l, pid);
	if (!pm)
		return util_fail(l->why, sizeof(l->why), -EBADMSG,
		                 "cannot read pagemap-%" PRIu64 ".img", pid);
	/* The last entry starting at or below vaddr. */
	size_t lo = 0, hi = pm->n;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (pm->e[mid].vaddr <= pi->vaddr)
			lo = mid;
		else
			hi = mid;
	}
	const struct pm_entry *e = pm->n ? &pm->e[lo] : NULL;
	if (!e || pi->nr_pages == 0 || !(e->flags & PE_PRESENT) || e->vaddr > pi->vaddr ||
	    pi->vaddr >= e->vaddr + e->nr_pages * PAGE_SIZE)
		return util_fail(l->why, sizeof(l->why), -EBADMSG,
		                 "asked for pages at 0x%" PRIx64 " of %" PRIu64 " the image lacks",
		                 pi->vaddr, pid);
	uint64_t skip = (pi->vaddr - e->vaddr) / PAGE_SIZE;
	uint64_t off = e->off + skip * PAGE_SIZE, n = e->nr_pages - skip;
	/* Entries that follow without a gap, in memory and in the file. */
	for (size_t i = lo + 1; n < pi->nr_pages && i < pm->n; i++) {
		const struct pm_entry *x = &pm->e[i], *prev = &pm->e[i - 1];
		if (!(x->flags & PE_PRESENT) ||
		    x->vaddr != prev->vaddr + prev->nr_pages * PAGE_SIZE)
			break;
		n += x->nr_pages;
	}
	if (n > pi->nr_pages)
		n = pi->nr_pages;
	struct ps_iov reply = {
	    .cmd = (PE_PRESENT << PS_CMD_BITS) | PS_IOV_ADD_F,
	    .nr_pages = n,
	    .vaddr = pi->vaddr,
	    .dst_id = pi->dst_id,
	};
	/* The header, then the pages in as many pieces as the source has them. */
	struct iovec iov[PS_MAX_IOV + 1] = {{&reply, sizeof(reply)}};
	int k = 1;
	for (uint64_t done = 0, len = n * PAGE_SIZE; done < len;) {
		int got = 0;
		int64_t c = l->o.source.get(l->o.source.ctx, pm->pages_name, off + done, len - done,
		                            iov + k, PS_MAX_IOV, &got);
		if (c <= 0)
			return util_fail(l->why, sizeof(l->why), c < 0 ? (int)c : -EIO,
			                 "the memory image %s is not to be had", pm->pages_name);
		int r = send_all(l->sk, iov, k + got);
		if (r < 0)
			return util_fail(l->why, sizeof(l->why), r, "cannot send pages to CRIU: %s",
			                 strerror(-r));
		done += (uint64_t)c;
		k = 0;
	}
	l->pages_sent += n;
	return 0;
}

static int serve(struct criu_glue_lazy *l)
{
	for (;;) {
		struct ps_iov pi;
		ssize_t n = recv(l->sk, &pi, sizeof(pi), MSG_WAITALL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			return util_fail(l->why, sizeof(l->why), -EPIPE,
			                 "CRIU's lazy-pages daemon went away before the end");
		if (n != (ssize_t)sizeof(pi))
			return util_fail(l->why, sizeof(l->why), n < 0 ? -errno : -EPROTO,
			                 "cannot read the lazy-pages daemon's request");
		switch (pi.cmd & ((1u << PS_CMD_BITS) - 1)) {
		case PS_IOV_GET: {
			int r = answer_get(l, &pi);
			if (r < 0)
				return r;
			break;
		}
		case PS_IOV_CLOSE:
		case PS_IOV_FORCE_CLOSE: {
			int32_t status = 0;
			if (send(l->sk, &status, sizeof(status), MSG_NOSIGNAL) != sizeof(status))
				return util_fail(l->why, sizeof(l->why), -errno,
				                 "cannot answer the daemon's close");
			return 0;
		}
		default:
			return util_fail(l->why, sizeof(l->why), -EPROTO,
			                 "unknown page-server command 0x%x", pi.cmd);
		}
	}
}

static void notify(struct criu_glue_lazy *l)
{
	uint64_t one = 1;
	if (write(l->o.notify_fd, &one, sizeof(one)) < 0) {
		/* The caller's eventfd: nothing to be done about it here. */
	}
}

static void *serve_main(void *arg)
{
	struct criu_glue_lazy *l = arg;
	int r = serve(l);
	__atomic_store_n(&l->result, r, __ATOMIC_RELEASE);
	if (r < 0) {
		/* Pages that never come: once the daemon is gone, the program's
		 * faults would be filled with zeros. While CRIU restores, that
		 * fails the restore (it needs the daemon to the end), so the
		 * daemon goes at once; once the program runs, the daemon (and the
		 * program's faults) wait until the caller has ended the program
		 * and calls criu_glue_lazy_free(). */
		for (int i = 0; i < 100 && !__atomic_load_n(&l->running, __ATOMIC_ACQUIRE); i++)
			usleep(10000);
		if (__atomic_load_n(&l->running, __ATOMIC_ACQUIRE))
			notify(l);
		else
			kill(l->daemon, SIGKILL);
	}
	/* The daemon ends after its close. */
	int ws;
	while (waitpid(l->daemon, &ws, 0) < 0 && errno == EINTR)
		;
	l->daemon_status = ws;
	__atomic_store_n(&l->daemon, 0, __ATOMIC_RELEASE);
	if (r == 0 || !__atomic_load_n(&l->running, __ATOMIC_ACQUIRE))
		notify(l);
	return NULL;
}

void criu_glue_lazy_running(struct criu_glue_lazy *l)
{
	__atomic_store_n(&l->running, true, __ATOMIC_RELEASE);
}

int criu_glue_lazy_start(const struct criu_glue_lazy_opts *o, struct criu_glue_lazy **ret,
                         struct criu_glue_error *err)
{
	const char *bin = criu_glue_binary();
	if (!bin)
		return util_fail(err->msg, sizeof(err->msg), -ENOENT,
		                 "CRIU is not installed (run scripts/setup, or set CRYO_CRIU)");
	struct criu_glue_lazy *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->o = *o;
	l->sk = -1;
	l->images_dir = strdup(o->images_dir);
	l->log_dir = strdup(o->log_dir);
	l->log_name = strdup(o->log_name);
	int sp[2] = {-1, -1}, st[2] = {-1, -1}, r;
	if (!l->images_dir || !l->log_dir || !l->log_name) {
		r = -ENOMEM;
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 ||
	    pipe2(st, O_CLOEXEC) < 0) {
		r = util_fail(err->msg, sizeof(err->msg), -errno, "cannot make a socket pair: %m");
		goto fail;
	}
	l->sk = sp[0];
	char ps_fd[16], status_fd[16];
	snprintf(ps_fd, sizeof(ps_fd), "%d", 3);
	snprintf(status_fd, sizeof(status_fd), "%d", 4);
	pid_t pid = fork();
	if (pid < 0) {
		r = util_fail(err->msg, sizeof(err->msg), -errno, "cannot fork: %m");
		goto fail;
	}
	if (pid == 0) {
		/* fds 3 and 4 for the daemon, nothing else beyond stdio. */
		int nul = open("/dev/null", O_RDWR);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0 || dup2(nul, 2) < 0)
			_exit(127);
		int a = fcntl(sp[1], F_DUPFD, 10), b = fcntl(st[1], F_DUPFD, 10);
		if (a < 0 || b < 0 || dup2(a, 3) < 0 || dup2(b, 4) < 0)
			_exit(127);
		close_range(5, ~0U, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execl(bin, bin, "lazy-pages", "-D", l->images_dir, "-W", l->log_dir, "-o",
		      l->log_name, "-v3", "--page-server", "--ps-socket", ps_fd, "--status-fd",
		      status_fd, (char *)NULL);
		_exit(127);
	}
	l->daemon = pid;
	close(sp[1]);
	sp[1] = -1;
	close(st[1]);
	st[1] = -1;
	/* Ready once it listens for the restore; gone if it failed. */
	struct pollfd p = {st[0], POLLIN, 0};
	char c;
	int pr = poll(&p, 1, 30000);
	if (pr <= 0 || read(st[0], &c, 1) != 1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		l->daemon = 0;
		r = criu_glue_failed(err, 0, "lazy-pages", l->log_dir, l->log_name);
		goto fail;
	}
	close(st[0]);
	st[0] = -1;
	r = -pthread_create(&l->thread, NULL, serve_main, l);
	if (r < 0) {
		util_fail(err->msg, sizeof(err->msg), r, "cannot start a thread: %s", strerror(-r));
		goto fail;
	}
	l->started = true;
	*ret = l;
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (st[i] >= 0)
			close(st[i]);
	}
	if (sp[1] >= 0)
		close(sp[1]);
	criu_glue_lazy_free(l);
	return r;
}

int criu_glue_lazy_finish(struct criu_glue_lazy *l, struct criu_glue_error *err)
{
	int r = __atomic_load_n(&l->result, __ATOMIC_ACQUIRE);
	if (r < 0)
		return util_fail(err->msg, sizeof(err->msg), r, "%s (see %s in '%s')", l->why,
		                 l->log_name, l->log_dir);
	if (l->started) {
		pthread_join(l->thread, NULL);
		l->started = false;
	}
	if (!WIFEXITED(l->daemon_status) || WEXITSTATUS(l->daemon_status) != 0)
		return criu_glue_failed(err, 0, "lazy-pages", l->log_dir, l->log_name);
	return 0;
}

void criu_glue_lazy_free(struct criu_glue_lazy *l)
{
	if (!l)
		return;
	/* The thread reaps the daemon; until then its PID is its own. */
	pid_t daemon = __atomic_load_n(&l->daemon, __ATOMIC_ACQUIRE);
	if (daemon > 0)
		kill(daemon, SIGKILL);
	if (l->started) {
		if (l->sk >= 0)
			shutdown(l->sk, SHUT_RDWR);
		pthread_join(l->thread, NULL);
	} else if (l->daemon > 0) {
		waitpid(l->daemon, NULL, 0);
	}
	if (l->sk >= 0)
		close(l->sk);
	/* The daemon's socket, in CRIU's work directory: nobody's now. */
	if (l->log_dir) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/lazy-pages.socket", l->log_dir);
		unlink(path);
	}
	for (size_t i = 0; i < l->n_pms; i++)
		pagemap_clear(&l->pms[i].pm);
	free(l->pms);
	free(l->images_dir);
	free(l->log_dir);
	free(l->log_name);
	free(l);
}
