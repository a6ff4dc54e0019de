/* libcryo against a supervisor played by the test over a socket pair.
 *
 * libcryo takes its control socket in a constructor, from the fd named in
 * CRYO_CONTROL_FD, as under `cryo run`. So that each case starts from a fresh
 * library, each runs in a child process of its own, which makes the socket
 * pair, names one end in the environment and only then dlopen()s libcryo;
 * the test itself never loads it. dlsym() finding each call is also the proof
 * that the shared library exports it. A child reports its failed checks to
 * the case through a pipe, and every wait on it has a deadline. */
#include "cryo.h"
#include "protocol.h"
#include "test.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* libcryo's calls, as dlsym() finds them in the loaded library. */
static struct {
	typeof(&cryo_checkpoint) checkpoint;
	typeof(&cryo_checkpoint_async) checkpoint_async;
	typeof(&cryo_checkpoint_fd) checkpoint_fd;
	typeof(&cryo_checkpoint_result) checkpoint_result;
	typeof(&cryo_generation) generation;
	typeof(&cryo_version) version;
} cryo;

/* Loads libcryo into this process with fd as its control socket (-1: none,
 * as outside cryo). Returns whether every call was found. */
static bool load(int fd)
{
	if (fd >= 0) {
		char s[16];
		snprintf(s, sizeof(s), "%d", fd);
		setenv(CRYO_CONTROL_FD_ENV, s, 1);
	} else {
		unsetenv(CRYO_CONTROL_FD_ENV);
	}
	void *lib = dlopen(LIBCRYO_PATH, RTLD_NOW | RTLD_LOCAL);
	CHECK(lib != NULL);
	if (!lib)
		return false;
	cryo.checkpoint = (typeof(cryo.checkpoint))dlsym(lib, "cryo_checkpoint");
	cryo.checkpoint_async = (typeof(cryo.checkpoint_async))dlsym(lib, "cryo_checkpoint_async");
	cryo.checkpoint_fd = (typeof(cryo.checkpoint_fd))dlsym(lib, "cryo_checkpoint_fd");
	cryo.checkpoint_result =
	    (typeof(cryo.checkpoint_result))dlsym(lib, "cryo_checkpoint_result");
	cryo.generation = (typeof(cryo.generation))dlsym(lib, "cryo_generation");
	cryo.version = (typeof(cryo.version))dlsym(lib, "cryo_version");
	bool every_call_exported = cryo.checkpoint && cryo.checkpoint_async && cryo.checkpoint_fd &&
	                           cryo.checkpoint_result && cryo.generation && cryo.version;
	CHECK(every_call_exported);
	CHECK(getenv(CRYO_CONTROL_FD_ENV) == NULL); /* hidden from the program's children */
	return every_call_exported;
}

/* Loads libcryo with one end of a new socket pair as its control socket;
 * sup is the supervisor's end, prog the program's. */
static bool load_connected(int *sup, int *prog)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	*sup = sv[0];
	*prog = sv[1];
	return load(sv[1]) && cryo.checkpoint_fd() == sv[1];
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static bool fd_closed(int fd)
{
	return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

/* Whether the supervisor's end has nothing to read: the program sent nothing. */
static bool nothing_sent(int sup)
{
	char c;
	return recv(sup, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static void send_msg(int sup, uint32_t type, int64_t value, uint64_t generation)
{
	struct cryo_msg m = {
	    .magic = CRYO_MSG_MAGIC, .type = type, .value = value, .generation = generation};
	CHECK(send(sup, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m));
}

/* Reads one request on the supervisor's end within timeout_ms; returns its
 * type, or 0 if none came whole. */
static uint32_t read_request(int sup, int timeout_ms)
{
	struct pollfd p = {.fd = sup, .events = POLLIN};
	struct cryo_msg m;
	if (poll(&p, 1, timeout_ms) != 1 ||
	    recv(sup, &m, sizeof(m), MSG_WAITALL) != (ssize_t)sizeof(m) ||
	    m.magic != CRYO_MSG_MAGIC)
		return 0;
	return m.type;
}

/* One request on the supervisor's end, and the answer it gets. */
struct supervisor {
	int sup;
	int64_t value; /* the RESULT sent back */
	uint64_t generation;
	uint32_t request; /* the request's type; 0 if none came */
};

/* A supervisor thread that answers one request with a RESULT. */
static void *answer(void *arg)
{
	struct supervisor *s = arg;
	s->request = read_request(s->sup, 10000);
	if (s->request)
		send_msg(s->sup, CRYO_MSG_RESULT, s->value, s->generation);
	return NULL;
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Runs body(arg) in a child process and waits for it, up to timeout_ms
 * (then kills it by its PID): the child's failed checks become the current
 * case's. With raw, the child is made by the clone system call itself, which
 * runs no fork handlers, as a child of clone() or syscall(SYS_fork) would be
 * (flags SIGCHLD and no stack: a fork, whatever the architecture's order of
 * clone's other arguments). */
static void in_child(void (*body)(void *), void *arg, bool raw, int timeout_ms)
{
	int out[2];
	CHECK(pipe2(out, O_CLOEXEC) == 0);
	pid_t pid = raw ? (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) : fork();
	CHECK(pid >= 0);
	if (pid < 0)
		return;
	if (pid == 0) {
		close(out[0]);
		test_failures = 0;
		test_diag_len = 0;
		body(arg);
		if (test_diag_len > 0 && write(out[1], test_diag, test_diag_len) < 0)
			_exit(2);
		_exit(test_failures ? 1 : 0);
	}
	close(out[1]);
	/* The child's report, until it closes the pipe by exiting. */
	char buf[sizeof(test_diag)], rest[256];
	size_t len = 0;
	int64_t deadline = now_ms() + timeout_ms;
	bool timed_out = false;
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd p = {.fd = out[0], .events = POLLIN};
		int r = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			timed_out = true;
			break;
		}
		/* What does not fit is read and dropped, so that the child
		 * never blocks on a full pipe. */
		bool full = len == sizeof(buf);
		ssize_t n = full ? read(out[0], rest, sizeof(rest))
		                 : read(out[0], buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (!full)
			len += (size_t)n;
	}
	close(out[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	bool child_ended_in_time = !timed_out;
	CHECK(child_ended_in_time);
	if (len > sizeof(test_diag) - test_diag_len)
		len = sizeof(test_diag) - test_diag_len;
	memcpy(test_diag + test_diag_len, buf, len);
	test_diag_len += len;
	/* A child that failed a check has said which; one that crashed has not. */
	bool child_crashed = !timed_out && !WIFEXITED(status);
	CHECK(!child_crashed);
	if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) != 0)
		test_failures++;
}

struct plain {
	void (*body)(void);
};

static void run_plain(void *arg)
{
	((struct plain *)arg)->body();
}

/* Runs a case's body in a fresh child, where libcryo is loaded anew. */
static void fresh(void (*body)(void))
{
	struct plain p = {body};
	in_child(run_plain, &p, false, 20000);
}

/* ---- the supervisor gone -------------------------------------------------- */

static void eof_body(void)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, prog, &ev) == 0);
	CHECK(cryo.checkpoint_result() == -EAGAIN);
	CHECK(epoll_wait(ep, &ev, 1, 0) == 0);

	close(sup); /* the supervisor dies */
	CHECK(epoll_wait(ep, &ev, 1, 5000) == 1);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(fd_closed(prog));
	/* Its last reference gone, the socket left the epoll set by itself. */
	CHECK(epoll_wait(ep, &ev, 1, 0) == 0);

	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(cryo.checkpoint_fd() == -ENOTCONN);
	CHECK(cryo.checkpoint() == -ENOTCONN);
	CHECK(cryo.checkpoint_async() == -ENOTCONN);
	close(ep);
}

/* The supervisor's end closes: cryo_checkpoint_result() says -ENOTCONN and
 * has closed the fd, which no longer wakes an epoll set. */
static void eof_is_enotconn_and_closes_the_fd(void)
{
	fresh(eof_body);
}

static void reset_body(void)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	/* Bytes the supervisor never reads make its close a reset: the
	 * program's next read fails with ECONNRESET, not an end of file. */
	CHECK(send(prog, "x", 1, MSG_NOSIGNAL) == 1);
	close(sup);
	struct pollfd p = {.fd = prog, .events = POLLIN};
	CHECK(poll(&p, 1, 5000) == 1);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(fd_closed(prog));
	CHECK(cryo.checkpoint_fd() == -ENOTCONN);
}

/* A reset of the control socket is taken as its end. */
static void reset_is_enotconn(void)
{
	fresh(reset_body);
}

static void news_then_eof_body(void)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	struct supervisor s = {.sup = sup, .value = CRYO_CHECKPOINTED, .generation = 4};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, answer, &s) == 0);
	CHECK(cryo.checkpoint_async() == CRYO_CHECKPOINTED);
	pthread_join(t, NULL);
	CHECK(s.request == CRYO_MSG_CHECKPOINT_ASYNC);
	CHECK(cryo.generation() == 4);

	send_msg(sup, CRYO_MSG_DURABLE, 4, 4);
	close(sup);
	struct pollfd p = {.fd = prog, .events = POLLIN};
	CHECK(poll(&p, 1, 5000) == 1);
	CHECK(cryo.checkpoint_result() == 4);
	CHECK(fd_open(prog));
	CHECK(cryo.checkpoint_fd() == prog);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(fd_closed(prog));
}

/* The supervisor's last news and its end arrive together: the news is told
 * first, with the fd still open, then -ENOTCONN, closing it. */
static void news_then_eof(void)
{
	fresh(news_then_eof_body);
}

/* A supervisor that dies during the dump. */
static void *die_during_dump(void *arg)
{
	struct supervisor *s = arg;
	s->request = read_request(s->sup, 10000);
	close(s->sup);
	return NULL;
}

static void dies_during_dump_body(void)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	struct supervisor s = {.sup = sup};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, die_during_dump, &s) == 0);
	CHECK(cryo.checkpoint() == -ENOTCONN);
	pthread_join(t, NULL);
	CHECK(s.request == CRYO_MSG_CHECKPOINT);
	CHECK(fd_closed(prog));
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
}

/* The supervisor dies while cryo_checkpoint() waits for its reply. */
static void dies_during_dump(void)
{
	fresh(dies_during_dump_body);
}

static void outside_body(void)
{
	if (!load(-1))
		return;
	CHECK(cryo.checkpoint() == -ENOTCONN);
	CHECK(cryo.checkpoint_async() == -ENOTCONN);
	CHECK(cryo.checkpoint_fd() == -ENOTCONN);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(cryo.generation() == 0);
}

/* Outside cryo every call fails at once with -ENOTCONN. */
static void outside_cryo(void)
{
	fresh(outside_body);
}

/* ---- children ------------------------------------------------------------- */

/* What a child should find: its parent's generation at the fork, and the
 * number of the parent's control socket. */
struct child_arg {
	uint64_t generation;
	int prog;
};

/* A child's every call fails at once, without a byte on the socket. */
static void child_calls(void *arg)
{
	struct child_arg *a = arg;
	CHECK(cryo.checkpoint() == -ENOTCONN);
	CHECK(cryo.checkpoint_async() == -ENOTCONN);
	CHECK(cryo.checkpoint_fd() == -ENOTCONN);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(cryo.generation() == a->generation);
}

static void fork_child_calls(void *arg)
{
	child_calls(arg);
	/* Closed at the fork: the child holds no reference to the socket. */
	CHECK(fd_closed(((struct child_arg *)arg)->prog));
}

/* The parent takes a checkpoint through sup, answered by a thread. */
static void parent_checkpoints(int sup, uint64_t generation)
{
	struct supervisor s = {.sup = sup, .value = CRYO_CHECKPOINTED, .generation = generation};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, answer, &s) == 0);
	CHECK(cryo.checkpoint() == CRYO_CHECKPOINTED);
	pthread_join(t, NULL);
	CHECK(s.request == CRYO_MSG_CHECKPOINT);
	CHECK(cryo.generation() == generation);
}

static void children_body(bool raw)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	parent_checkpoints(sup, 2);
	struct child_arg arg = {.generation = 2, .prog = prog};
	if (raw)
		in_child(child_calls, &arg, true, 5000);
	else
		in_child(fork_child_calls, &arg, false, 5000);
	bool child_sent_nothing = nothing_sent(sup);
	CHECK(child_sent_nothing);
	if (!child_sent_nothing)
		return; /* the supervisor's end holds a request not the parent's */
	/* The parent's socket and its calls are as they were. */
	CHECK(fd_open(prog));
	CHECK(cryo.checkpoint_fd() == prog);
	CHECK(cryo.checkpoint_result() == -EAGAIN);
	parent_checkpoints(sup, 3);
}

static void fork_child_body(void)
{
	children_body(false);
}

/* A child of fork() gets -ENOTCONN from every call, sends nothing, and has
 * its copy of the socket closed; its parent goes on. */
static void fork_child_is_not_connected(void)
{
	fresh(fork_child_body);
}

static void clone_child_body(void)
{
	children_body(true);
}

/* So does a child that ran no fork handlers (the clone system call). */
static void clone_child_is_not_connected(void)
{
	fresh(clone_child_body);
}

struct waiter {
	int r;
};

static void *checkpoint_thread(void *arg)
{
	((struct waiter *)arg)->r = cryo.checkpoint();
	return NULL;
}

static void fork_while_waiting_body(void)
{
	int sup, prog;
	if (!load_connected(&sup, &prog))
		return;
	struct waiter w = {.r = 99};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, checkpoint_thread, &w) == 0);
	/* Once its request is here, the thread waits for the reply, holding
	 * libcryo's lock, which the child inherits held. */
	CHECK(read_request(sup, 10000) == CRYO_MSG_CHECKPOINT);
	struct child_arg arg = {.generation = 0, .prog = prog};
	in_child(fork_child_calls, &arg, false, 5000);
	bool child_sent_nothing = nothing_sent(sup);
	CHECK(child_sent_nothing);
	send_msg(sup, CRYO_MSG_RESULT, CRYO_CHECKPOINTED, 5);
	pthread_join(t, NULL);
	CHECK(w.r == CRYO_CHECKPOINTED);
	CHECK(cryo.generation() == 5);
}

/* A child forked while another thread waits in cryo_checkpoint() does not
 * wait for the lock that thread holds (it would, forever). */
static void fork_while_waiting(void)
{
	fresh(fork_while_waiting_body);
}

static void eof_with_child_body(void)
{
	int sup, prog, hold[2];
	if (!load_connected(&sup, &prog))
		return;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, prog, &ev) == 0);
	CHECK(pipe2(hold, O_CLOEXEC) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* A child that lives on, until the parent closes hold[1]. */
		close(sup);
		close(hold[1]);
		struct pollfd p = {.fd = hold[0], .events = POLLIN};
		poll(&p, 1, 10000);
		_exit(0);
	}
	close(hold[0]);
	close(sup); /* the supervisor dies (once the child closed its copy) */
	CHECK(epoll_wait(ep, &ev, 1, 5000) == 1);
	CHECK(cryo.checkpoint_result() == -ENOTCONN);
	CHECK(fd_closed(prog));
	/* The child's copy, had it kept one, would keep the socket in the set,
	 * readable for good, with no fd left to take it out by. */
	CHECK(epoll_wait(ep, &ev, 1, 0) == 0);
	close(hold[1]);
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	close(ep);
}

/* With a child of fork() alive, the supervisor's end still takes the fd out
 * of the parent's epoll set. */
static void eof_with_a_child_alive(void)
{
	fresh(eof_with_child_body);
}

/* ---- version -------------------------------------------------------------- */

static void version_body(void)
{
	if (!load(-1))
		return;
	const char *v = cryo.version();
	CHECK(v != NULL && strcmp(v, PROJECT_VERSION) == 0);
	char header[32];
	snprintf(header, sizeof(header), "%d.%d.%d", CRYO_VERSION_MAJOR, CRYO_VERSION_MINOR,
	         CRYO_VERSION_PATCH);
	CHECK(strcmp(header, PROJECT_VERSION) == 0);
	int major = -1, minor = -1, patch = -1;
	CHECK(sscanf(PROJECT_VERSION, "%d.%d.%d", &major, &minor, &patch) == 3);
	CHECK(CRYO_VERSION_NUMBER == major * 10000 + minor * 100 + patch);
}

/* cryo_version() is exported and is meson's project version, as are
 * cryo.h's CRYO_VERSION_*; it answers outside cryo. */
static void version_is_the_projects(void)
{
	fresh(version_body);
}

TEST_MAIN(eof_is_enotconn_and_closes_the_fd, reset_is_enotconn, news_then_eof, dies_during_dump,
          outside_cryo, fork_child_is_not_connected, clone_child_is_not_connected,
          fork_while_waiting, eof_with_a_child_alive, version_is_the_projects)
