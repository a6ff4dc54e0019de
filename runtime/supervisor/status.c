/* What the supervisor tells about its workload: its state (in status.json
 * and cryo status's reply), the program's PID (in the pid file), and the
 * one-line replies on the commands socket. */

#include "internal.h"
#include "cleanup.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

const char *checkpoint_trigger_name(enum checkpoint_trigger t)
{
	switch (t) {
	case TRIGGER_PROGRAM: return "program";
	case TRIGGER_COMMAND: return "command";
	case TRIGGER_TIMER: return "timer";
	case TRIGGER_STOP: return "stop";
	case TRIGGER_MIGRATE: return "migrate";
	}
	return "unknown";
}

/* The program's host PID: cryo-init's one child; 0 while there is none. */
pid_t program_pid(const struct supervisor *s)
{
	char path[64], buf[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", s->init_pid, s->init_pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)atoi(buf);
}

/* The program's host PID goes into dir/pid while it runs under this
 * supervisor, and only then (program_unpublish_pid() when it ends, moves or
 * the supervisor leaves), for people and tests; it takes a moment for
 * cryo-init to fork it. */
void program_publish_pid(struct supervisor *s)
{
	pid_t pid = 0;
	for (int i = 0; i < 400 && !(pid = program_pid(s)); i++)
		usleep(5000);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", pid);
	/* Not fsynced: it describes this boot's processes only. */
	(void)util_write_file_at(s->dir_fd, "pid", buf, (size_t)n, 0600, false);
}

void program_unpublish_pid(struct supervisor *s)
{
	unlinkat(s->dir_fd, "pid", 0);
}

/* Sends o as one line to a client of the commands socket, and drops o. A
 * client that does not read gets what its socket takes in 2 s (SO_SNDTIMEO). */
void status_reply(int fd, struct json_object *o)
{
	if (!o)
		return;
	const char *text = cryo_json_text(o);
	size_t len = strlen(text);
	struct iovec iov[2] = {{(void *)text, len}, {"\n", 1}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		while (mh.msg_iovlen > 0 && (size_t)n >= mh.msg_iov[0].iov_len) {
			n -= (ssize_t)mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen > 0) {
			mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + n;
			mh.msg_iov[0].iov_len -= (size_t)n;
		}
	}
	json_object_put(o);
}

/* Replies {"ok":false,"errno":-r,"error":reason}. */
void status_reply_error(int fd, int r, const char *reason)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(false));
	cryo_json_add(o, "errno", json_object_new_int(-r));
	cryo_json_add(o, "error", json_object_new_string(reason));
	status_reply(fd, o);
}

/* Replies {"ok":true}. */
void status_reply_ok(int fd)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(true));
	status_reply(fd, o);
}

/* The supervisor's view of its workload as one JSON object. */
struct json_object *status_json(struct supervisor *s)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(true));
	cryo_json_add(o, "name", json_object_new_string(s->cfg->name));
	cryo_json_add(o, "state", json_object_new_string(s->state));
	cryo_json_add(o, "supervisor_pid", json_object_new_int(getpid()));
	cryo_json_add(o, "pid", json_object_new_int(s->running ? program_pid(s) : 0));
	cryo_json_add(o, "restarts", json_object_new_int64(s->restarts_total));
	cryo_json_add(o, "generation", json_object_new_uint64(s->current_generation));
	struct json_object *last = NULL;
	if (s->have_last) {
		last = json_object_new_object();
		cryo_json_add(last, "generation", json_object_new_uint64(s->last.generation));
		cryo_json_add(last, "time",
		              json_object_new_uint64(s->last.time_ns / UINT64_C(1000000000)));
		cryo_json_add(last, "size", json_object_new_uint64(s->last.size));
		cryo_json_add(last, "frozen_us", json_object_new_uint64(s->last.frozen_us));
		cryo_json_add(last, "trigger",
		              json_object_new_string(checkpoint_trigger_name(s->last.trigger)));
	}
	cryo_json_add(o, "last_checkpoint", last);
	if (s->moved_to[0])
		cryo_json_add(o, "moved_to", json_object_new_string(s->moved_to));
	return o;
}

/* Sets the workload's state and publishes it in dir/status.json, where
 * cryo status reads it without waiting for a busy supervisor. */
void supervisor_set_state(struct supervisor *s, const char *state)
{
	s->state = state;
	_cleanup_json_ struct json_object *o = status_json(s);
	const char *text = cryo_json_text(o);
	size_t len = strlen(text);
	_cleanup_free_ char *line = malloc(len + 2);
	if (!line)
		return;
	memcpy(line, text, len);
	memcpy(line + len, "\n", 2);
	/* Not fsynced: it describes this boot's processes only. */
	(void)util_write_file_at(s->dir_fd, "status.json", line, len + 1, 0644, false);
}
