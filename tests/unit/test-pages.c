/* cryo's page server (criu-glue/pages.c) with the test as CRIU: what a
 * tracked dump receives, shares with the one before, and refuses. */
#include "error.h"
#include "internal.h"
#include "pages.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PG       4096u
#define TASK_ONE ((1u << 8) | PS_TYPE_PID)

static int send_cmd(int sk, uint32_t cmd, uint32_t flags, uint64_t vaddr, uint64_t nr, int fd)
{
	struct ps_iov pi = {
	    .cmd = cmd | (flags << 16), .nr_pages = nr, .vaddr = vaddr, .dst_id = TASK_ONE};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	struct iovec iov = {&pi, sizeof(pi)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		mh.msg_control = c.buf;
		mh.msg_controllen = sizeof(c.buf);
		struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &fd, sizeof(int));
	}
	return sendmsg(sk, &mh, MSG_NOSIGNAL) == sizeof(pi) ? 0 : -1;
}

/* OPEN2 for task one; returns the server's has_parent answer, or -1. */
static int open2(int sk)
{
	char has_parent;
	if (send_cmd(sk, PS_IOV_OPEN2, 0, 0, 0, -1) < 0 ||
	    recv(sk, &has_parent, 1, MSG_WAITALL) != 1)
		return -1;
	return has_parent;
}

static int add_present(int sk, uint64_t vaddr, size_t nr, uint8_t fill)
{
	uint8_t page[PG];
	if (send_cmd(sk, PS_IOV_ADD_F, PE_PRESENT, vaddr, nr, -1) < 0)
		return -1;
	for (size_t i = 0; i < nr; i++) {
		memset(page, fill + (int)i, sizeof(page));
		if (send(sk, page, sizeof(page), MSG_NOSIGNAL) != sizeof(page))
			return -1;
	}
	return 0;
}

static int close_stream(int sk)
{
	int32_t status;
	if (send_cmd(sk, PS_IOV_CLOSE, 0, 0, 0, -1) < 0 ||
	    recv(sk, &status, sizeof(status), MSG_WAITALL) != sizeof(status))
		return -1;
	return status;
}

/* The pages image of p and its bytes, flattened. */
static const struct mem_file *pages_file(const struct criu_glue_pages *p)
{
	const struct mem_file *files;
	size_t n;
	criu_glue_pages_files(p, &files, &n);
	for (size_t i = 0; i < n; i++)
		if (!strncmp(files[i].name, "pages-", 6))
			return &files[i];
	return NULL;
}

static uint8_t page_byte(const struct mem_file *f, size_t page)
{
	size_t off = page * PG;
	for (size_t i = 0; i < f->n_iov; i++) {
		if (off < f->iov[i].iov_len)
			return ((const uint8_t *)f->iov[i].iov_base)[off];
		off -= f->iov[i].iov_len;
	}
	return 0xee;
}

static int open_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static void test_shares_unchanged_pages(void)
{
	struct cryo_error err = {{0}};
	struct criu_glue_track t = {0};
	struct criu_glue_pages *a = NULL, *b = NULL;
	int fds_before = open_fds();
	/* The whole dump: 4 pages at 0x10000, and the task's tracking fd. */
	if (criu_glue_pages_start(16 * PG, NULL, NULL, &a, &err) < 0) {
		SKIP("cannot start the page server: %s", err.msg);
		return;
	}
	int sk = criu_glue_pages_fd(a);
	int efd = eventfd(0, EFD_CLOEXEC);
	CHECK(open2(sk) == 0);
	CHECK(add_present(sk, 0x10000, 4, 0x10) == 0);
	CHECK(send_cmd(sk, PS_IOV_UFFD, 0, 0, 0, efd) == 0);
	close(efd);
	CHECK(close_stream(sk) == 0);
	CHECK(criu_glue_pages_finish(a, &err) == 0);
	uint64_t received, from_parent;
	criu_glue_pages_counts(a, &received, &from_parent);
	CHECK(received == 4 * PG && from_parent == 0);
	const struct mem_file *fa = pages_file(a);
	CHECK(fa && fa->size == 4 * PG);
	const uint8_t *a_page1 = fa ? (const uint8_t *)fa->iov[0].iov_base + PG : NULL;
	criu_glue_track_next(&t, a, NULL);
	CHECK(t.parent == a && t.n_uffds == 1);

	/* The next: pages 0-1 unchanged (the parent's), 2-3 written again. */
	CHECK(criu_glue_pages_start(16 * PG, NULL, t.parent, &b, &err) == 0);
	if (!b) {
		criu_glue_track_drop(&t, NULL);
		return;
	}
	sk = criu_glue_pages_fd(b);
	CHECK(open2(sk) == 1);
	CHECK(send_cmd(sk, PS_IOV_ADD_F, PE_PARENT, 0x10000, 2, -1) == 0);
	CHECK(add_present(sk, 0x12000, 2, 0x40) == 0);
	CHECK(close_stream(sk) == 0);
	CHECK(criu_glue_pages_finish(b, &err) == 0);
	criu_glue_pages_counts(b, &received, &from_parent);
	CHECK(received == 2 * PG && from_parent == 2 * PG);
	const struct mem_file *fb = pages_file(b);
	CHECK(fb && fb->size == 4 * PG);
	if (fb) {
		CHECK(page_byte(fb, 0) == 0x10 && page_byte(fb, 1) == 0x11);
		CHECK(page_byte(fb, 2) == 0x40 && page_byte(fb, 3) == 0x41);
		/* Shared, not copied: the image points at the parent's page. */
		CHECK((const uint8_t *)fb->iov[0].iov_base + PG == a_page1);
		const struct mem_span *spans;
		size_t n;
		const char *from = criu_glue_pages_shared(b, fb->name, &spans, &n);
		CHECK(from && !strcmp(from, fa->name));
		CHECK(n == 1 && spans[0].page == 0 && spans[0].from == 0 && spans[0].pages == 2);
	}
	/* The parent goes; what b shares with it stays. */
	criu_glue_track_next(&t, b, NULL);
	CHECK(t.parent == b);
	if (fb)
		CHECK(page_byte(fb, 1) == 0x11);
	criu_glue_track_drop(&t, NULL);
	CHECK(t.parent == NULL && t.n_uffds == 0);
	CHECK(open_fds() == fds_before); /* the tracking fd closed too */
}

/* The server's end shut down: reading the CLOSE answer ends at once (EOF),
 * within 5 s in any case. */
static bool gives_up(int sk)
{
	struct timeval tv = {5, 0};
	setsockopt(sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int32_t status;
	return recv(sk, &status, sizeof(status), MSG_WAITALL) == 0;
}

static void test_refuses_a_parent_page_it_lacks(void)
{
	struct cryo_error err = {{0}};
	struct criu_glue_track t = {0};
	struct criu_glue_pages *a = NULL, *b = NULL;
	if (criu_glue_pages_start(16 * PG, NULL, NULL, &a, &err) < 0) {
		SKIP("cannot start the page server: %s", err.msg);
		return;
	}
	int sk = criu_glue_pages_fd(a);
	CHECK(open2(sk) == 0);
	CHECK(add_present(sk, 0x10000, 2, 0x10) == 0);
	CHECK(close_stream(sk) == 0);
	CHECK(criu_glue_pages_finish(a, &err) == 0);
	criu_glue_track_next(&t, a, NULL);
	CHECK(criu_glue_pages_start(16 * PG, NULL, t.parent, &b, &err) == 0);
	if (b) {
		sk = criu_glue_pages_fd(b);
		CHECK(open2(sk) == 1);
		/* 0x11000 is the parent's, 0x12000 is not. */
		send_cmd(sk, PS_IOV_ADD_F, PE_PARENT, 0x11000, 2, -1);
		send_cmd(sk, PS_IOV_CLOSE, 0, 0, 0, -1);
		/* CRIU waiting for the answer learns at once that none comes
		 * (the socket is shut down), rather than waiting forever. */
		CHECK(gives_up(sk));
		CHECK(criu_glue_pages_broken(b, &err));
		CHECK(criu_glue_pages_finish(b, &err) < 0);
		CHECK(strstr(err.msg, "0x12000") && strstr(err.msg, "did not hold it"));
		criu_glue_pages_free(b, NULL);
	}
	/* Without a parent, a page named as the parent's is refused too. */
	struct criu_glue_pages *c = NULL;
	err = (struct cryo_error){{0}};
	CHECK(criu_glue_pages_start(16 * PG, NULL, NULL, &c, &err) == 0);
	if (c) {
		sk = criu_glue_pages_fd(c);
		CHECK(open2(sk) == 0);
		send_cmd(sk, PS_IOV_ADD_F, PE_PARENT, 0x10000, 1, -1);
		send_cmd(sk, PS_IOV_CLOSE, 0, 0, 0, -1);
		CHECK(gives_up(sk));
		CHECK(criu_glue_pages_finish(c, &err) < 0);
		CHECK(strstr(err.msg, "has no parent") || strstr(err.msg, "did not hold it"));
		criu_glue_pages_free(c, NULL);
	}
	criu_glue_track_drop(&t, NULL);
}

TEST_MAIN(test_shares_unchanged_pages, test_refuses_a_parent_page_it_lacks)
