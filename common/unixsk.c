/* Unix stream connections that leave a process tree, found through the
 * kernel's sock_diag (the peer of each socket) and /proc/PID/fd (which
 * sockets the tree holds). */

#include "unixsk.h"
#include "cleanup.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct inode_set {
	uint64_t *v;
	size_t n, cap;
};

static int set_add(struct inode_set *s, uint64_t ino)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		uint64_t *v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = ino;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorts s and drops repeats. */
static void set_sort(struct inode_set *s)
{
	if (!s->n)
		return;
	qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
	size_t k = 1;
	for (size_t i = 1; i < s->n; i++)
		if (s->v[i] != s->v[k - 1])
			s->v[k++] = s->v[i];
	s->n = k;
}

static bool set_has(const struct inode_set *s, uint64_t ino)
{
	/* An empty set may have no array at all: bsearch() must not see NULL. */
	return s->n && bsearch(&ino, s->v, s->n, sizeof(*s->v), cmp_u64) != NULL;
}

/* The socket inodes pid holds. */
static int held_sockets(pid_t pid, struct inode_set *s)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno; /* gone meanwhile: holds nothing */
	struct dirent *de;
	while ((de = readdir(d))) {
		char link[64];
		ssize_t n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (n <= 8)
			continue;
		link[n] = '\0';
		unsigned long long ino;
		if (sscanf(link, "socket:[%llu]", &ino) == 1 && set_add(s, ino) < 0)
			return -ENOMEM;
	}
	return 0;
}

struct diag_open {
	int netns_fd;
	int fd; /* out */
	int err;
};

static void *diag_open_in_ns(void *arg)
{
	struct diag_open *o = arg;
	/* This thread alone moves into the namespace; the socket stays in it. */
	if (setns(o->netns_fd, CLONE_NEWNET) < 0) {
		o->err = -errno;
		return NULL;
	}
	o->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	o->err = o->fd < 0 ? -errno : 0;
	return NULL;
}

static int diag_socket(int netns_fd)
{
	if (netns_fd < 0) {
		int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
		return fd < 0 ? -errno : fd;
	}
	struct diag_open o = {.netns_fd = netns_fd, .fd = -1};
	pthread_t t;
	int r = pthread_create(&t, NULL, diag_open_in_ns, &o);
	if (r)
		return -r;
	pthread_join(t, NULL);
	return o.err < 0 ? o.err : o.fd;
}

/* For every unix stream socket of the namespace that has a peer: its inode
 * into socks[i], its peer's into peers[i]. */
static int diag_dump(int fd, struct inode_set *socks, struct inode_set *peers)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} msg = {
	    .nlh = {.nlmsg_len = sizeof(msg),
	            .nlmsg_type = SOCK_DIAG_BY_FAMILY,
	            .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
	            .nlmsg_seq = 1},
	    .req = {.sdiag_family = AF_UNIX,
	            .udiag_states = UINT32_MAX,
	            .udiag_show = UDIAG_SHOW_PEER,
	            .udiag_cookie = {UINT32_MAX, UINT32_MAX}},
	};
	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
		return -errno;
	/* Bounded: a dump ends with NLMSG_DONE; a socket that stops answering
	 * times out. */
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	_Alignas(struct nlmsghdr) char buf[32768];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPROTO;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				return e->error < 0 ? e->error : -EPROTO;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
				continue;
			const struct unix_diag_msg *m = NLMSG_DATA(h);
			if (m->udiag_type != SOCK_STREAM)
				continue;
			int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			const struct nlattr *a = (const struct nlattr *)(m + 1);
			while (len >= (int)sizeof(*a) && a->nla_len >= sizeof(*a) &&
			       a->nla_len <= len) {
				if (a->nla_type == UNIX_DIAG_PEER &&
				    a->nla_len >= NLA_HDRLEN + sizeof(uint32_t)) {
					uint32_t peer;
					memcpy(&peer, (const char *)a + NLA_HDRLEN, sizeof(peer));
					if (peer && (set_add(socks, m->udiag_ino) < 0 ||
					             set_add(peers, peer) < 0))
						return -ENOMEM;
				}
				int step = NLA_ALIGN(a->nla_len);
				len -= step;
				a = (const struct nlattr *)((const char *)a + step);
			}
		}
	}
}

int unixsk_outside(pid_t root, int netns_fd, uint64_t skip, uint64_t **ret, size_t *ret_n)
{
	*ret = NULL;
	*ret_n = 0;
	_cleanup_free_ pid_t *pids = NULL;
	size_t n_pids;
	int r = util_proc_tree(root, &pids, &n_pids);
	if (r < 0)
		return r;
	struct inode_set held = {0}, socks = {0}, peers = {0}, out = {0};
	_cleanup_close_ int fd = -1;
	for (size_t i = 0; i < n_pids && r == 0; i++)
		r = held_sockets(pids[i], &held);
	if (r < 0)
		goto done;
	set_sort(&held);
	fd = diag_socket(netns_fd);
	if (fd < 0) {
		r = fd;
		goto done;
	}
	r = diag_dump(fd, &socks, &peers);
	for (size_t i = 0; i < socks.n && r == 0; i++)
		if (socks.v[i] != skip && set_has(&held, socks.v[i]) && !set_has(&held, peers.v[i]))
			r = set_add(&out, socks.v[i]);
	if (r < 0)
		goto done;
	set_sort(&out);
	*ret = TAKE_PTR(out.v);
	*ret_n = out.n;
done:
	free(held.v);
	free(socks.v);
	free(peers.v);
	free(out.v);
	return r;
}
