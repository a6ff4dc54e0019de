/* criu-glue's userfaultfd handling (lazy.c), without CRIU: the test plays
 * CRIU's restore. It writes the mm and pagemap images of a piece of its own
 * memory, registers that memory with a userfaultfd and hands the fd over
 * the lazy-pages socket as CRIU does; the handler then fills the memory
 * from the test's pages image. And the ways CRIU's side can go wrong: no
 * fd, a restore that goes away, an image that is missing or not to be had. */
#include "lazy.h"
#include "pb.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE          4096u
#define PAGES         64u /* the memory the test hands over */
#define LAZY_PAGES    48u /* the first ones, in the dump */
#define FINISHED      0x52535446u
#define COMMON_MAGIC  0x54564319u
#define PAGEMAP_MAGIC 0x56084025u
#define MM_MAGIC      0x57492820u
#define PE_PRESENT_F  (1u << 1)
#define PE_LAZY_F     (1u << 2)
#define WAIT_MS       10000

/* ---- images, written as CRIU writes them (protobuf entries) ---- */

/* A message of varint fields (number, value pairs). */
static size_t message(uint8_t *out, const uint64_t *fields, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++) {
		len += pb_put_varint(out + len, fields[2 * i] << 3);
		len += pb_put_varint(out + len, fields[2 * i + 1]);
	}
	return len;
}

static void put_entry(FILE *f, const uint8_t *msg, size_t len)
{
	uint32_t n = (uint32_t)len;
	fwrite(&n, sizeof(n), 1, f);
	fwrite(msg, 1, len, f);
}

static FILE *image(const char *dir, const char *name, uint32_t magic)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "we");
	uint32_t m[2] = {COMMON_MAGIC, magic};
	if (f)
		fwrite(m, sizeof(m), 1, f);
	return f;
}

/* mm-PID.img: one VMA, [start, end). */
static void write_mm(const char *dir, int pid, uint64_t start, uint64_t end)
{
	char name[64];
	snprintf(name, sizeof(name), "mm-%d.img", pid);
	FILE *f = image(dir, name, MM_MAGIC);
	uint8_t vma[64], msg[80];
	uint64_t vf[] = {1, start, 2, end};
	size_t vlen = message(vma, vf, 2), len = 0;
	len += pb_put_varint(msg + len, (14u << 3) | 2);
	len += pb_put_varint(msg + len, vlen);
	memcpy(msg + len, vma, vlen);
	put_entry(f, msg, len + vlen);
	fclose(f);
}

/* pagemap-PID.img: pages 1, then LAZY_PAGES lazy pages from start on. */
static void write_pagemap(const char *dir, int pid, uint64_t start)
{
	char name[64];
	snprintf(name, sizeof(name), "pagemap-%d.img", pid);
	FILE *f = image(dir, name, PAGEMAP_MAGIC);
	uint8_t msg[64];
	uint64_t head[] = {1, 1};
	put_entry(f, msg, message(msg, head, 1));
	uint64_t e[] = {1, start, 4, PE_PRESENT_F | PE_LAZY_F, 5, LAZY_PAGES};
	put_entry(f, msg, message(msg, e, 3));
	fclose(f);
}

/* ---- the pages image, as the source the handler reads ---- */

struct source {
	uint8_t *img; /* LAZY_PAGES pages */
	int fail;     /* get() returns this when negative */
	int gets;
};

static int64_t source_get(void *ctx, const char *name, uint64_t off, uint64_t len,
                          struct iovec *iov, int max_iov, int *n_iov)
{
	struct source *s = ctx;
	__atomic_fetch_add(&s->gets, 1, __ATOMIC_RELAXED);
	if (s->fail < 0)
		return s->fail;
	if (strcmp(name, "pages-1.img") != 0 || off >= LAZY_PAGES * PAGE || max_iov < 1)
		return -ENOENT;
	if (len > LAZY_PAGES * PAGE - off)
		len = LAZY_PAGES * PAGE - off;
	iov[0] = (struct iovec){s->img + off, len};
	*n_iov = 1;
	return (int64_t)len;
}

static uint8_t page_byte(size_t page, size_t i)
{
	return (uint8_t)(page * 31 + i * 7 + 1);
}

/* ---- CRIU's side of the socket ---- */

struct setup {
	char dir[64];
	int efd;
	struct source src;
	struct criu_glue_lazy *l;
	int sk; /* connected as CRIU's restore */
};

static bool start(struct setup *s, int fail)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/cryo-test-lazy.XXXXXX");
	s->sk = -1;
	if (!mkdtemp(s->dir))
		return false;
	s->efd = eventfd(0, EFD_CLOEXEC);
	s->src.img = malloc(LAZY_PAGES * PAGE);
	for (size_t p = 0; p < LAZY_PAGES; p++)
		for (size_t i = 0; i < PAGE; i++)
			s->src.img[p * PAGE + i] = page_byte(p, i);
	s->src.fail = fail;
	struct criu_glue_lazy_opts o = {
	    .images_dir = s->dir,
	    .work_dir = s->dir,
	    .source = {.get = source_get, .ctx = &s->src},
	    .notify_fd = s->efd,
	};
	struct cryo_error err = {{0}};
	if (criu_glue_lazy_start(&o, &s->l, &err) < 0) {
		fprintf(stderr, "criu_glue_lazy_start: %s\n", err.msg);
		return false;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/lazy-pages.socket", s->dir);
	s->sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return connect(s->sk, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

static void stop(struct setup *s)
{
	criu_glue_lazy_free(s->l);
	if (s->sk >= 0)
		close(s->sk);
	close(s->efd);
	free(s->src.img);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	CHECK(system(cmd) == 0);
}

/* A pid, then one byte with fd attached (none if fd < 0), as CRIU's
 * restore sends each task's userfaultfd. */
static bool send_task(int sk, int32_t pid, int fd)
{
	if (send(sk, &pid, sizeof(pid), MSG_NOSIGNAL) != sizeof(pid))
		return false;
	char byte = 0;
	struct iovec v = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr mh = {.msg_iov = &v, .msg_iovlen = 1};
	if (fd >= 0) {
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(fd));
	}
	return sendmsg(sk, &mh, MSG_NOSIGNAL) == 1;
}

/* CRIU's last word, then the restore's end (the background copy may go). */
static bool send_finished(struct setup *s)
{
	uint32_t v = FINISHED;
	bool ok = send(s->sk, &v, sizeof(v), MSG_NOSIGNAL) == sizeof(v);
	criu_glue_lazy_go(s->l);
	return ok;
}

/* The handler's verdict, once notify_fd fires (or -ETIMEDOUT). */
static int verdict(struct setup *s, struct cryo_error *err)
{
	struct pollfd p = {s->efd, POLLIN, 0};
	if (poll(&p, 1, WAIT_MS) != 1)
		return -ETIMEDOUT;
	return criu_glue_lazy_finish(s->l, err);
}

/* Memory registered with a new userfaultfd (missing pages), as CRIU's
 * restore leaves each task's lazy memory. */
static int uffd_over(void *mem, size_t len)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -1;
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg = {.range = {(uintptr_t)mem, len},
	                              .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(fd, UFFDIO_API, &api) < 0 || ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* New memory of len bytes, its images written and its userfaultfd handed
 * over as this process's, as CRIU's restore does for a task. */
static uint8_t *hand_over(struct setup *s, size_t len)
{
	uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(mem != MAP_FAILED);
	int pid = getpid();
	write_mm(s->dir, pid, (uintptr_t)mem, (uintptr_t)mem + len);
	write_pagemap(s->dir, pid, (uintptr_t)mem);
	int fd = uffd_over(mem, len);
	CHECK(fd >= 0);
	CHECK(send_task(s->sk, pid, fd));
	close(fd);
	return mem;
}

/* Reads a byte of a page in a thread of its own: a fault the handler
 * must serve. */
struct reader {
	volatile uint8_t *at;
	uint8_t got;
};

static void *read_byte(void *arg)
{
	struct reader *r = arg;
	r->got = *r->at;
	return NULL;
}

static bool read_in_thread(volatile uint8_t *at, uint8_t *got)
{
	struct reader r = {at, 0};
	pthread_t t;
	if (pthread_create(&t, NULL, read_byte, &r) != 0)
		return false;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	if (pthread_timedjoin_np(t, NULL, &ts) != 0) {
		/* A fault nobody serves: nothing more can be tested safely. */
		fprintf(stderr, "a fault was not served\n");
		_exit(1);
	}
	*got = r.got;
	return true;
}

/* ---- tests ---- */

static void test_pages_come(void)
{
	struct setup s;
	CHECK(start(&s, 0));
	size_t len = PAGES * PAGE;
	uint8_t *mem = hand_over(&s, len);
	/* A fault before the restore finished is served at once; one on a
	 * page the dump did not have reads zeros. */
	uint8_t b = 0;
	CHECK(read_in_thread(mem + 30 * PAGE + 5, &b) && b == page_byte(30, 5));
	CHECK(read_in_thread(mem + 60 * PAGE, &b) && b == 0);
	CHECK(send_finished(&s));
	struct cryo_error err = {{0}};
	CHECK(verdict(&s, &err) == 0);
	size_t wrong = 0;
	for (size_t p = 0; p < LAZY_PAGES; p++)
		for (size_t i = 0; i < PAGE; i++)
			wrong += mem[p * PAGE + i] != page_byte(p, i);
	CHECK(wrong == 0);
	struct criu_glue_lazy_stats st;
	criu_glue_lazy_stats(s.l, &st);
	CHECK(st.lazy_pages == LAZY_PAGES);
	CHECK(st.faults == 1);
	CHECK(st.zero_pages == 1);
	CHECK(st.fault_bytes + st.background_bytes == LAZY_PAGES * PAGE);
	munmap(mem, len);
	stop(&s);
}

static void test_no_fd(void)
{
	struct setup s;
	CHECK(start(&s, 0));
	CHECK(send_task(s.sk, 4242, -1));
	struct cryo_error err = {{0}};
	CHECK(verdict(&s, &err) == -EPROTO);
	CHECK(strstr(err.msg, "CRIU's restore sent no userfaultfd for task 4242") != NULL);
	/* CRIU's restore is told: its end of the socket is shut down. */
	char c;
	CHECK(recv(s.sk, &c, 1, 0) == 0);
	stop(&s);
}

static void test_restore_goes_away(void)
{
	struct setup s;
	CHECK(start(&s, 0));
	CHECK(send(s.sk, "ab", 2, MSG_NOSIGNAL) == 2);
	close(s.sk);
	s.sk = -1;
	struct cryo_error err = {{0}};
	CHECK(verdict(&s, &err) == -EPIPE);
	CHECK(strstr(err.msg, "CRIU's restore went away before it finished") != NULL);
	stop(&s);
}

static void test_no_memory_map(void)
{
	struct setup s;
	CHECK(start(&s, 0));
	uint8_t *mem = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = uffd_over(mem, PAGE);
	CHECK(fd >= 0);
	CHECK(send_task(s.sk, getpid(), fd));
	close(fd);
	struct cryo_error err = {{0}};
	CHECK(verdict(&s, &err) == -ENOENT);
	char want[96];
	snprintf(want, sizeof(want), "cannot read the memory map of task %d", getpid());
	CHECK(strstr(err.msg, want) != NULL);
	stop(&s);
	munmap(mem, PAGE);
}

static void test_image_not_to_be_had(void)
{
	struct setup s;
	CHECK(start(&s, -EIO));
	size_t len = PAGES * PAGE;
	uint8_t *mem = hand_over(&s, len);
	CHECK(send_finished(&s));
	struct cryo_error err = {{0}};
	CHECK(verdict(&s, &err) == -EIO);
	CHECK(strstr(err.msg, "the memory image pages-1.img is not to be had") != NULL);
	CHECK(s.src.gets == 1);
	/* Nothing was put in place; once the handler is gone, the memory is
	 * the kernel's again (zeros), not a wait. */
	stop(&s);
	CHECK(mem[0] == 0);
	munmap(mem, len);
}

TEST_MAIN(test_pages_come, test_no_fd, test_restore_goes_away, test_no_memory_map,
          test_image_not_to_be_had)
