/* libcryo: the program's side of the control socket. */
#include "cryo.h"
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int control_fd = -1;
static uint64_t generation;

/* Takes the control socket the supervisor left on an inherited fd, and hides
 * it from the program's own children (environment and exec). */
__attribute__((constructor)) static void cryo_init(void)
{
	const char *s = getenv(CRYO_CONTROL_FD_ENV);
	if (!s)
		return;
	char *end;
	long fd = strtol(s, &end, 10);
	unsetenv(CRYO_CONTROL_FD_ENV);
	if (*end || fd < 0 || fd > 1 << 20)
		return;
	int type = 0, domain = 0;
	socklen_t len = sizeof(type);
	if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
		return;
	len = sizeof(domain);
	if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
		return;
	fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	control_fd = (int)fd;
}

static bool valid_result(const struct cryo_msg *m)
{
	return m->magic == CRYO_MSG_MAGIC && m->type == CRYO_MSG_RESULT && m->value <= 1 &&
	       m->value >= -4095;
}

/* A restored copy finds a "restored" notice queued on its socket; when it was
 * not waiting in cryo_checkpoint() at that moment, the notice is read here,
 * before the next request, so that it is not taken for that request's reply. */
static void drain_notices(void)
{
	struct cryo_msg m;
	while (recv(control_fd, &m, sizeof(m), MSG_DONTWAIT) == (ssize_t)sizeof(m))
		if (valid_result(&m) && m.value == CRYO_RESTORED)
			generation = m.generation;
}

static int exchange(struct cryo_msg *reply)
{
	drain_notices();
	struct cryo_msg req = {.magic = CRYO_MSG_MAGIC, .type = CRYO_MSG_CHECKPOINT};
	const char *p = (const char *)&req;
	size_t left = sizeof(req);
	while (left > 0) {
		ssize_t n = send(control_fd, p, left, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ENOTCONN;
		p += n;
		left -= (size_t)n;
	}
	/* Blocks here while the supervisor dumps this process; a restored copy
	 * wakes up here too, reading the supervisor's "restored". */
	char *q = (char *)reply;
	left = sizeof(*reply);
	while (left > 0) {
		ssize_t n = read(control_fd, q, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ENOTCONN;
		q += n;
		left -= (size_t)n;
	}
	if (!valid_result(reply))
		return -EPROTO;
	return 0;
}

int cryo_checkpoint(void)
{
	pthread_mutex_lock(&lock);
	if (control_fd < 0) {
		pthread_mutex_unlock(&lock);
		return -ENOTCONN;
	}
	struct cryo_msg reply;
	int r = exchange(&reply);
	if (r == -ENOTCONN) {
		/* The supervisor is gone: stay out of its way from now on. */
		close(control_fd);
		control_fd = -1;
	} else if (r == 0) {
		r = (int)reply.value;
		if (r >= 0)
			generation = reply.generation;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

uint64_t cryo_generation(void)
{
	pthread_mutex_lock(&lock);
	uint64_t g = generation;
	pthread_mutex_unlock(&lock);
	return g;
}
