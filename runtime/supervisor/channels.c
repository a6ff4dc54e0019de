/* The program's channels: its stdio pipes, passed through to cryo run's own
 * stdio, and its control socket, on which libcryo's calls arrive. */

#include "internal.h"
#include "log.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <stdio.h>
#include <sys/stat.h>

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
static void output_events(struct supervisor *s, int which);

/* Puts our ends of the channels in the loop's epoll set. */
void channels_watch(struct supervisor *s)
{
	ep_add(s, s->stdout_r, 0, EV_STDOUT);
	ep_add(s, s->stderr_r, 0, EV_STDERR);
	output_events(s, 0);
	output_events(s, 1);
	ep_add(s, s->control, EPOLLIN, EV_CONTROL);
	ep_add(s, s->stdin_w, 0, EV_STDIN_PIPE);
	if (s->stdin_eof && s->stdin_len == 0)
		close_fd(&s->stdin_w);
	update_stdin_events(s);
}

/* ---- our stdout and stderr: never waiting for their readers ---------------- */

static const int out_tag[2] = {EV_STDOUT_OUT, EV_STDERR_OUT};
static const int in_tag[2] = {EV_STDOUT, EV_STDERR};
static struct supervisor *log_owner; /* whose stderr our log lines join */

static int *program_out(struct supervisor *s, int which)
{
	return which ? &s->stderr_r : &s->stdout_r;
}

/* Sends what waits in o as far as its reader takes it now. */
static void output_flush(struct outbuf *o)
{
	while (o->off < o->len && !o->broken) {
		ssize_t n = o->is_socket ? send(o->fd, o->buf + o->off, o->len - o->off,
		                                MSG_DONTWAIT | MSG_NOSIGNAL)
		                         : write(o->fd, o->buf + o->off, o->len - o->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			/* Our reader is gone; the program must not notice. */
			o->broken = true;
			break;
		}
		o->off += (size_t)n;
	}
	if (o->broken || o->off == o->len)
		o->off = o->len = 0;
}

/* The room left in o, made at its end. */
static size_t output_room(struct outbuf *o)
{
	if (o->off > 0 && o->len == OUTBUF_SIZE) {
		memmove(o->buf, o->buf + o->off, o->len - o->off);
		o->len -= o->off;
		o->off = 0;
	}
	return OUTBUF_SIZE - o->len;
}

/* What the loop waits for: the program's pipe while our buffer has room,
 * our own fd while something waits in it. */
static void output_events(struct supervisor *s, int which)
{
	struct outbuf *o = &s->out[which];
	int fd = *program_out(s, which);
	if (fd >= 0)
		ep_mod(s, fd, output_room(o) > 0 ? EPOLLIN : 0, (uint64_t)in_tag[which]);
	if (o->pollable) {
		bool want = o->len > o->off;
		if (want != o->watched) {
			ep_mod(s, o->fd, want ? EPOLLOUT : 0, (uint64_t)out_tag[which]);
			o->watched = want;
		}
	}
}

/* Appends len bytes to o if they fit; returns what did. */
static size_t output_put(struct outbuf *o, const char *buf, size_t len)
{
	if (o->broken)
		return len;
	size_t room = output_room(o);
	size_t n = len < room ? len : room;
	memcpy(o->buf + o->len, buf, n);
	o->len += n;
	return n;
}

/* Our log lines go out on our stderr behind the program's output there. */
static void log_to_stderr(const char *line, size_t len)
{
	struct supervisor *s = log_owner;
	struct outbuf *o = &s->out[1];
	/* A line that finds no room is lost: our reader does not read. */
	(void)output_put(o, line, len);
	output_flush(o);
	output_events(s, 1);
}

/* Our fd (1 or 2) as an outbuf: a pipe or terminal gets a description of
 * its own, non-blocking (setting O_NONBLOCK on the one we were given would
 * change it for the shell and everyone else who shares it); a socket is sent
 * to with MSG_DONTWAIT; a file is written as it is (it never waits long). */
static int output_open(struct supervisor *s, int which)
{
	struct outbuf *o = &s->out[which];
	int ours = which ? STDERR_FILENO : STDOUT_FILENO;
	*o = (struct outbuf){.fd = -1};
	o->buf = malloc(OUTBUF_SIZE);
	if (!o->buf)
		return -ENOMEM;
	struct stat st;
	if (fstat(ours, &st) < 0) {
		o->broken = true; /* closed: nothing to write to */
		return 0;
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", ours);
	if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))
		o->fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (o->fd < 0) {
		o->fd = fcntl(ours, F_DUPFD_CLOEXEC, 3);
		o->is_socket = S_ISSOCK(st.st_mode);
	}
	if (o->fd < 0)
		return -errno;
	if (o->is_socket || S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))
		o->pollable = ep_add(s, o->fd, 0, (uint64_t)out_tag[which]) == 0;
	return 0;
}

/* Our stdout and stderr for the program's output and our log lines, never
 * waiting for their readers. */
int channels_output_open(struct supervisor *s)
{
	int r = output_open(s, 0);
	if (r == 0)
		r = output_open(s, 1);
	if (r < 0)
		return r;
	/* A terminal with TOSTOP would stop us for writing from the background
	 * (ignored, it lets us write). */
	signal(SIGTTOU, SIG_IGN);
	log_owner = s;
	log_set_sink(log_to_stderr);
	return 0;
}

/* At the end, what is left goes out within a deadline. */
void channels_output_close(struct supervisor *s)
{
	log_set_sink(NULL);
	log_owner = NULL;
	uint64_t deadline = util_now_ns() + 2000000000ULL;
	for (int i = 0; i < 2; i++) {
		struct outbuf *o = &s->out[i];
		if (!o->buf)
			continue;
		for (;;) {
			output_flush(o);
			uint64_t now = util_now_ns();
			if (o->len == o->off || !o->pollable || now >= deadline)
				break;
			struct pollfd p = {.fd = o->fd, .events = POLLOUT};
			poll(&p, 1, (int)((deadline - now) / 1000000 + 1));
		}
		if (o->watched)
			ep_del(s, o->fd);
		close_fd(&o->fd);
		free(o->buf);
		o->buf = NULL;
	}
}

/* The program's stdout (which 0) or stderr (1) is readable: into our buffer
 * as far as it has room, and on to ours. At its end we stop watching it. */
void channels_forward(struct supervisor *s, int which)
{
	struct outbuf *o = &s->out[which];
	int *fd = program_out(s, which);
	for (int i = 0; i < 16 && *fd >= 0; i++) {
		size_t room = output_room(o);
		if (room == 0)
			break;
		ssize_t n = read(*fd, o->buf + o->len, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			ep_del(s, *fd);
			close_fd(fd);
			break;
		}
		if (o->broken)
			continue; /* read and dropped: nobody reads ours */
		o->len += (size_t)n;
		output_flush(o);
	}
	output_flush(o);
	output_events(s, which);
}

/* Our stdout (0) or stderr (1) takes more. */
void channels_output_ready(struct supervisor *s, int which)
{
	output_flush(&s->out[which]);
	output_events(s, which);
}

/* Reads the rest of a dead program's output (its writers are gone: the end
 * comes as soon as the pipe is empty), then closes our ends. What does not
 * fit in our buffers because our reader does not read is lost: nothing
 * waits for our reader. */
void channels_drain(struct supervisor *s)
{
	ep_del(s, s->control);
	ep_del(s, s->stdin_w);
	uint64_t deadline = util_now_ns() + 2000000000ULL;
	for (int which = 0; which < 2; which++) {
		int *fd = program_out(s, which);
		while (*fd >= 0 && util_now_ns() < deadline) {
			channels_forward(s, which);
			if (*fd < 0 || output_room(&s->out[which]) == 0)
				break;
			struct pollfd p = {.fd = *fd, .events = POLLIN};
			if (poll(&p, 1, 100) < 0 && errno != EINTR)
				break;
		}
		ep_del(s, *fd);
		close_fd(fd);
	}
	close_fd(&s->control);
	close_fd(&s->stdin_w);
}

/* Our stdin feeds the program's: read when our buffer is empty, write when it
 * is not. A stdin epoll cannot watch (a file, /dev/null) counts as always
 * readable. */
static void update_stdin_events(struct supervisor *s)
{
	bool want_read = s->stdin_len == 0 && !s->stdin_eof && !s->stdin_background;
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
		} else if (n < 0 && errno == EIO && s->stdin_tty) {
			/* We went to the background between the check and the
			 * read (SIGTTIN is ignored): the terminal is not ours now. */
			s->stdin_background = true;
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

/* Whether cryo's terminal is ours to read now: only while we are in its
 * foreground process group (a read from the background would stop us with
 * SIGTTIN, or with it ignored, fail). A terminal that is not our controlling
 * one is always ours. Rechecked every second while it is not, and on
 * SIGCONT (fg). */
void channels_stdin_check(struct supervisor *s)
{
	if (!s->stdin_tty || s->stdin_eof)
		return;
	pid_t fg = tcgetpgrp(STDIN_FILENO);
	bool background = fg >= 0 && fg != getpgrp();
	if (background != s->stdin_background) {
		s->stdin_background = background;
		update_stdin_events(s);
	}
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
