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

/* meson passes the project's version as the string cryo_version() returns,
 * and as a number, so that cryo.h's CRYO_VERSION_* cannot drift from it. */
#if CRYO_VERSION_NUMBER != CRYO_PROJECT_VERSION_NUMBER
#error "cryo.h's CRYO_VERSION_MAJOR, _MINOR and _PATCH are not meson.build's project version"
#endif

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int control_fd = -1;
static uint64_t generation;
static pid_t owner; /* the process libcryo was loaded in */

/* Whether this process is a child of the one libcryo was loaded in, made by
 * fork(), vfork() or clone(); a restored copy is not one, as CRIU gives it
 * back its PID. The supervisor speaks to that one process over one stream: a
 * child's request would start a checkpoint whose reply either of the two
 * might read. Nor may a child take the lock: a thread of its parent may have
 * held it at the fork (waiting in cryo_checkpoint()), and that thread does
 * not exist in the child to release it. A PID check, rather than a flag set
 * by a fork handler, also sees the children of clone() and syscall(SYS_fork),
 * which run no fork handlers. */
static bool in_child(void)
{
	return getpid() != owner;
}

/* Runs in the child of a fork(): closes the child's copy of the control
 * socket, which it may not use (see in_child()). A copy left open would keep
 * the socket alive after the parent closes its own once the supervisor is
 * gone, and an epoll set drops an fd only with the last reference to its
 * socket: the parent's event loop would go on waking for an fd it can no
 * longer name. Only the child's descriptor goes; the socket and the parent
 * are untouched. The child's only thread reads control_fd without the lock,
 * which it may have inherited held. */
static void forget_in_child(void)
{
	if (control_fd >= 0)
		close(control_fd);
	control_fd = -1;
}

/* Takes the control socket the supervisor left on an inherited fd, and hides
 * it from the program's own children (environment and exec). */
__attribute__((constructor)) static void cryo_init(void)
{
	owner = getpid();
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
	/* Should this fail (no memory), children keep their copy, which
	 * in_child() still keeps them from using. */
	(void)pthread_atfork(NULL, NULL, forget_in_child);
}

static int64_t durable = -EAGAIN; /* news of the last asynchronous checkpoint */

static bool valid(const struct cryo_msg *m)
{
	if (m->magic != CRYO_MSG_MAGIC)
		return false;
	if (m->type == CRYO_MSG_RESULT)
		return m->value <= 1 && m->value >= -4095;
	if (m->type == CRYO_MSG_DURABLE)
		return m->value >= -4095;
	return false;
}

/* Takes note of a message that is not the reply being waited for: a
 * "durable" notice, or a "restored" notice that a restored copy finds queued
 * when it was not waiting in cryo_checkpoint() at that moment. */
static void note(const struct cryo_msg *m)
{
	if (m->type == CRYO_MSG_DURABLE)
		durable = m->value;
	else if (m->value == CRYO_RESTORED)
		generation = m->generation;
}

/* Stops using the control socket, which is gone. err is the errno a recv()
 * or send() on it failed with, or ENOTCONN for its end (the supervisor closed
 * it or died). Closing it is what stops poll() and epoll from waking the
 * program for it: a socket at its end stays readable for good. After EBADF or
 * ENOTSOCK the program has closed the fd, or put something else under its
 * number, behind libcryo's back; that number is no longer ours to close. */
static void disconnect(int err)
{
	int fd = control_fd;
	/* Cleared before the close: a child forked in between then keeps a copy
	 * of a dead socket, rather than closing as ours whatever another thread
	 * opened under the number after the close. */
	control_fd = -1;
	if (err != EBADF && err != ENOTSOCK)
		close(fd);
}

/* Reads what is queued without waiting, so that old notices are not taken
 * for the reply to the next request. Returns 0 once nothing more is queued,
 * or, when the socket is gone, the negative errno it failed with (-ENOTCONN
 * at its end), leaving the caller to disconnect(). */
static int drain(void)
{
	for (;;) {
		struct cryo_msg m;
		ssize_t n = recv(control_fd, &m, sizeof(m), MSG_DONTWAIT);
		if (n == (ssize_t)sizeof(m)) {
			if (valid(&m))
				note(&m);
			continue;
		}
		if (n > 0)
			return 0; /* a torn message, which the supervisor never sends */
		if (n == 0)
			return -ENOTCONN;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno; /* ECONNRESET: it died with our bytes unread */
	}
}

static int read_msg(struct cryo_msg *m)
{
	char *q = (char *)m;
	size_t left = sizeof(*m);
	while (left > 0) {
		ssize_t n = read(control_fd, q, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -ENOTCONN : -errno;
		q += n;
		left -= (size_t)n;
	}
	return valid(m) ? 0 : -EPROTO;
}

/* Sends a request and reads its reply. Returns 0, -EPROTO for a reply this
 * libcryo cannot read, or, when the socket is gone, the negative errno it
 * failed with (-ENOTCONN at its end). */
static int exchange(uint32_t type, struct cryo_msg *reply)
{
	int r = drain();
	if (r < 0)
		return r;
	struct cryo_msg req = {.magic = CRYO_MSG_MAGIC, .type = type};
	const char *p = (const char *)&req;
	size_t left = sizeof(req);
	while (left > 0) {
		ssize_t n = send(control_fd, p, left, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -ENOTCONN : -errno;
		p += n;
		left -= (size_t)n;
	}
	/* Blocks here while the supervisor dumps this process; a restored copy
	 * wakes up here too, reading the supervisor's "restored". */
	for (;;) {
		r = read_msg(reply);
		if (r < 0)
			return r;
		if (reply->type == CRYO_MSG_RESULT)
			return 0;
		note(reply);
	}
}

static int checkpoint(uint32_t type)
{
	if (in_child())
		return -ENOTCONN;
	pthread_mutex_lock(&lock);
	if (control_fd < 0) {
		pthread_mutex_unlock(&lock);
		return -ENOTCONN;
	}
	struct cryo_msg reply;
	int r = exchange(type, &reply);
	if (r < 0 && r != -EPROTO) {
		/* The supervisor is gone: stay out of its way from now on. */
		disconnect(-r);
		r = -ENOTCONN;
	} else if (r == 0) {
		r = (int)reply.value;
		if (r >= 0)
			generation = reply.generation;
		if (type == CRYO_MSG_CHECKPOINT_ASYNC)
			durable = -EAGAIN;
	}
	pthread_mutex_unlock(&lock);
	return r;
}

int cryo_checkpoint(void)
{
	return checkpoint(CRYO_MSG_CHECKPOINT);
}

int cryo_checkpoint_async(void)
{
	return checkpoint(CRYO_MSG_CHECKPOINT_ASYNC);
}

int cryo_checkpoint_fd(void)
{
	if (in_child())
		return -ENOTCONN;
	pthread_mutex_lock(&lock);
	int fd = control_fd < 0 ? -ENOTCONN : control_fd;
	pthread_mutex_unlock(&lock);
	return fd;
}

int64_t cryo_checkpoint_result(void)
{
	if (in_child())
		return -ENOTCONN;
	pthread_mutex_lock(&lock);
	int64_t r = -ENOTCONN;
	if (control_fd >= 0) {
		int gone = drain();
		r = durable;
		if (r != -EAGAIN) {
			/* Told once. News read along with the socket's end is told
			 * first; the socket stays open (and readable, at its end)
			 * until the next call tells -ENOTCONN, so that the fd is
			 * closed by the very call that says so. */
			durable = -EAGAIN;
		} else if (gone < 0) {
			disconnect(-gone);
			r = -ENOTCONN;
		}
	}
	pthread_mutex_unlock(&lock);
	return r;
}

uint64_t cryo_generation(void)
{
	/* A child's memory is its own copy, read by its only thread. */
	if (in_child())
		return generation;
	pthread_mutex_lock(&lock);
	uint64_t g = generation;
	pthread_mutex_unlock(&lock);
	return g;
}

const char *cryo_version(void)
{
	return CRYO_VERSION;
}
