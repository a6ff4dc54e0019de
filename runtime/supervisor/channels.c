/* The program's channels: its stdio pipes, passed through to cryo run's own
 * stdio, and its control socket, on which libcryo's calls arrive. */

#include "internal.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>

/* Closes the program's ends (those not handed over yet). */
void program_ends_close(struct program_ends *e)
{
	for (int i = 0; i < 4; i++)
		close_fd(&e->fds[i]);
}

/* A new set of stdio pipes and control socket: ours (stdin's write end,
 * stdout's and stderr's read ends, control: O_CLOEXEC, non-blocking) and
 * the program's. */
int channels_new(struct supervisor *s, int ours[4], struct program_ends *e)
{
	int in[2], out[2], err[2], sp[2];
	if (pipe2(in, 0) < 0)
		return -errno;
	if (pipe2(out, 0) < 0) {
		int r = -errno;
		close(in[0]);
		close(in[1]);
		return r;
	}
	if (pipe2(err, 0) < 0 || net_socketpair(&s->net, sp) < 0) {
		int r = -errno;
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return r;
	}
	ours[0] = in[1];
	ours[1] = out[0];
	ours[2] = err[0];
	ours[3] = sp[0];
	for (int i = 0; i < 4; i++) {
		fcntl(ours[i], F_SETFD, FD_CLOEXEC);
		fcntl(ours[i], F_SETFL, fcntl(ours[i], F_GETFL) | O_NONBLOCK);
	}
	e->fds[0] = in[0];
	e->fds[1] = out[1];
	e->fds[2] = err[1];
	e->fds[3] = sp[1];
	return 0;
}

/* Makes ours the channels to the program whose ends are e. */
void channels_use(struct supervisor *s, const int ours[4], const struct program_ends *e)
{
	s->stdin_w = ours[0];
	s->stdout_r = ours[1];
	s->stderr_r = ours[2];
	s->control = ours[3];
	s->control_len = 0;
	s->ino_stdin = util_fd_inode(e->fds[0]);
	s->ino_stdout = util_fd_inode(e->fds[1]);
	s->ino_stderr = util_fd_inode(e->fds[2]);
	s->ino_control = util_fd_inode(e->fds[3]);
}

/* A new set of channels, ours in use at once (a fresh start). */
int channels_make(struct supervisor *s, struct program_ends *e)
{
	int ours[4];
	int r = channels_new(s, ours, e);
	if (r == 0)
		channels_use(s, ours, e);
	return r;
}

static void update_stdin_events(struct supervisor *s);

/* Puts our ends of the channels in the loop's epoll set. */
void channels_watch(struct supervisor *s)
{
	ep_add(s, s->stdout_r, EPOLLIN, EV_STDOUT);
	ep_add(s, s->stderr_r, EPOLLIN, EV_STDERR);
	ep_add(s, s->control, EPOLLIN, EV_CONTROL);
	ep_add(s, s->stdin_w, 0, EV_STDIN_PIPE);
	if (s->stdin_eof && s->stdin_len == 0)
		close_fd(&s->stdin_w);
	update_stdin_events(s);
}

/* Copies what is readable on from to our own fd to. Returns false at EOF. */
bool channels_forward(int from, int to)
{
	char buf[65536];
	for (int i = 0; i < 16; i++) {
		ssize_t n = read(from, buf, sizeof(buf));
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		if (n == 0)
			return false;
		/* Our own stdout may be gone; the program must not notice. */
		(void)util_write_all(to, buf, (size_t)n);
	}
	return true;
}

/* Reads the rest of a dead program's output, then closes our ends. */
void channels_drain(struct supervisor *s)
{
	ep_del(s, s->stdout_r);
	ep_del(s, s->stderr_r);
	ep_del(s, s->control);
	ep_del(s, s->stdin_w);
	uint64_t deadline = util_now_ns() + 2000000000ULL;
	while ((s->stdout_r >= 0 || s->stderr_r >= 0) && util_now_ns() < deadline) {
		struct pollfd p[2] = {{.fd = s->stdout_r, .events = POLLIN},
		                      {.fd = s->stderr_r, .events = POLLIN}};
		if (poll(p, 2, 100) < 0 && errno != EINTR)
			break;
		if (p[0].revents && !channels_forward(s->stdout_r, STDOUT_FILENO))
			close_fd(&s->stdout_r);
		if (p[1].revents && !channels_forward(s->stderr_r, STDERR_FILENO))
			close_fd(&s->stderr_r);
	}
	close_fd(&s->stdout_r);
	close_fd(&s->stderr_r);
	close_fd(&s->control);
	close_fd(&s->stdin_w);
}

/* Our stdin feeds the program's: read when our buffer is empty, write when it
 * is not. A stdin epoll cannot watch (a file, /dev/null) counts as always
 * readable. */
static void update_stdin_events(struct supervisor *s)
{
	bool want_read = s->stdin_len == 0 && !s->stdin_eof;
	if (s->stdin_pollable)
		ep_mod(s, STDIN_FILENO, want_read ? EPOLLIN : 0, EV_STDIN);
	if (s->stdin_w >= 0) {
		bool want_write = s->stdin_len > 0 || (want_read && !s->stdin_pollable);
		ep_mod(s, s->stdin_w, want_write ? EPOLLOUT : 0, EV_STDIN_PIPE);
	}
}

/* Moves what cryo run's stdin has to the program's, as far as the pipe
 * takes it; at our EOF the program's stdin ends too. */
void channels_pump_stdin(struct supervisor *s)
{
	if (s->stdin_len == 0 && !s->stdin_eof) {
		ssize_t n = read(STDIN_FILENO, s->stdin_buf, sizeof(s->stdin_buf));
		if (n > 0) {
			s->stdin_len = (size_t)n;
			s->stdin_off = 0;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			s->stdin_eof = true;
			if (s->stdin_pollable) {
				ep_del(s, STDIN_FILENO);
				s->stdin_pollable = false;
			}
		}
	}
	while (s->stdin_len > 0 && s->stdin_w >= 0) {
		ssize_t n = write(s->stdin_w, s->stdin_buf + s->stdin_off, s->stdin_len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			s->stdin_len = 0; /* the program closed its stdin */
			break;
		}
		s->stdin_off += (size_t)n;
		s->stdin_len -= (size_t)n;
	}
	if (s->stdin_eof && s->stdin_len == 0 && s->stdin_w >= 0) {
		ep_del(s, s->stdin_w);
		close_fd(&s->stdin_w);
	}
	update_stdin_events(s);
}

/* Sends a message on the program's control socket (a result, or the news
 * that an image is durable); a program that does not read loses it. */
void program_send(struct supervisor *s, uint32_t type, int64_t value, uint64_t generation)
{
	if (s->control < 0)
		return;
	struct cryo_msg m = {
	    .magic = CRYO_MSG_MAGIC, .type = type, .value = value, .generation = generation};
	/* A full socket means a program that does not read: it loses a notice. */
	(void)send(s->control, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
}
