/* epoll-server: a single-threaded event loop blocked in epoll_wait on a
 * timerfd, an eventfd and a listening TCP socket. Every tick it counts; every
 * CHECKPOINT_TICKS ticks it signals its eventfd, and on that event it calls
 * cryo_checkpoint(). A client that connects gets one line with its state.
 *
 *   epoll-server PORT [TICK_MS] [CHECKPOINT_TICKS]
 */
#include <cryo.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: epoll-server PORT [TICK_MS] [CHECKPOINT_TICKS]\n");
		return 2;
	}
	int port = atoi(argv[1]);
	long tick_ms = argc > 2 ? atol(argv[2]) : 20;
	long every = argc > 3 ? atol(argv[3]) : 10;
	setvbuf(stdout, NULL, _IOLBF, 0);

	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 16) < 0) {
		perror("epoll-server: bind/listen");
		return 1;
	}
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec its = {{tick_ms / 1000, (tick_ms % 1000) * 1000000L},
	                         {tick_ms / 1000, (tick_ms % 1000) * 1000000L}};
	timerfd_settime(tfd, 0, &its, NULL);
	int efd = eventfd(0, EFD_CLOEXEC);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.fd = ls;
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	ev.data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	ev.data.fd = efd;
	epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
	printf("listening on 127.0.0.1:%d\n", port);

	uint64_t ticks = 0, checkpoints = 0, restores = 0;
	for (;;) {
		struct epoll_event out[4];
		int n = epoll_wait(ep, out, 4, -1);
		for (int i = 0; i < n; i++) {
			uint64_t v;
			if (out[i].data.fd == tfd) {
				if (read(tfd, &v, sizeof(v)) == sizeof(v))
					ticks += v;
				if (every > 0 && ticks / (uint64_t)every > checkpoints + restores) {
					v = 1;
					(void)!write(efd, &v, sizeof(v));
				}
			} else if (out[i].data.fd == efd) {
				(void)!read(efd, &v, sizeof(v));
				int r = cryo_checkpoint();
				if (r == CRYO_RESTORED)
					restores++;
				else if (r == CRYO_CHECKPOINTED)
					checkpoints++;
				printf("%s at tick %" PRIu64 " (generation %" PRIu64 ")\n",
				       r == CRYO_RESTORED ? "restored"
				       : r == 0           ? "checkpointed"
				                          : "checkpoint failed",
				       ticks, cryo_generation());
				if (r < 0)
					every =
					    0; /* not under cryo: serve on without checkpoints */
			} else if (out[i].data.fd == ls) {
				int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
				if (c < 0)
					continue;
				char line[128];
				int len = snprintf(line, sizeof(line),
				                   "ticks %" PRIu64 " checkpoints %" PRIu64
				                   " restores %" PRIu64 " generation %" PRIu64 "\n",
				                   ticks, checkpoints, restores, cryo_generation());
				(void)!write(c, line, (size_t)len);
				close(c);
			}
		}
	}
}
