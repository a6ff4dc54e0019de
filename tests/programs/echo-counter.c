/* A single-threaded epoll TCP server written for the migration tests: for
 * each line a client sends it answers "count N LINE", where N counts every
 * request since it started (kept in memory, so a restored copy continues it).
 * Usage: echo-counter ADDR PORT (ADDR: IPv4 or IPv6) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 1024

static char bufs[MAX_FDS][4096];
static size_t lens[MAX_FDS];
static unsigned long count;

static void serve(int fd)
{
	ssize_t n = read(fd, bufs[fd] + lens[fd], sizeof(bufs[fd]) - lens[fd]);
	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		close(fd);
		lens[fd] = 0;
		return;
	}
	lens[fd] += (size_t)n;
	char *nl;
	while ((nl = memchr(bufs[fd], '\n', lens[fd]))) {
		*nl = '\0';
		char out[4200];
		int k = snprintf(out, sizeof(out), "count %lu %s\n", ++count, bufs[fd]);
		if (write(fd, out, (size_t)k) != k) {
			close(fd);
			lens[fd] = 0;
			return;
		}
		size_t used = (size_t)(nl + 1 - bufs[fd]);
		memmove(bufs[fd], nl + 1, lens[fd] - used);
		lens[fd] -= used;
	}
	if (lens[fd] == sizeof(bufs[fd])) {
		close(fd);
		lens[fd] = 0;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: echo-counter ADDR PORT\n");
		return 2;
	}
	uint16_t port = htons((uint16_t)atoi(argv[2]));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = port};
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = port};
	bool v6 = inet_pton(AF_INET6, argv[1], &sa6.sin6_addr) == 1;
	if (!v6 && inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1)
		return 2;
	int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, v6 ? (struct sockaddr *)&sa6 : (struct sockaddr *)&sa,
	         v6 ? sizeof(sa6) : sizeof(sa)) < 0 ||
	    listen(l, 16) < 0) {
		perror("echo-counter: listen");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		struct epoll_event evs[16];
		int n = epoll_wait(ep, evs, 16, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd != l) {
				serve(fd);
				continue;
			}
			int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
			if (c < 0 || c >= MAX_FDS) {
				if (c >= 0)
					close(c);
				continue;
			}
			struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
			epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
		}
	}
}
