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

/* Sends o as one line to a client of the commands socket, and drops o. It
 * never waits: what the client's socket does not take now is sent as it
 * reads (commands_send()). */
void status_reply(struct client *c, struct json_object *o)
{
	if (!o)
		return;
	const char *text = cryo_json_text(o);
	commands_send(c, text, strlen(text));
	commands_send(c, "\n", 1);
	json_object_put(o);
}

/* Replies {"ok":false,"errno":-r,"error":reason}. */
void status_reply_error(struct client *c, int r, const char *reason)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(false));
	cryo_json_add(o, "errno", json_object_new_int(-r));
	cryo_json_add(o, "error", json_object_new_string(reason));
	status_reply(c, o);
}

/* Replies {"ok":true}. */
void status_reply_ok(struct client *c)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(true));
	status_reply(c, o);
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
	if (s->ready_fd > 0 && !strcmp(state, "running")) {
		/* cryo run -d: the program runs; the caller may go. */
		(void)!write(s->ready_fd, "1", 1);
		close(s->ready_fd);
		s->ready_fd = 0;
	}
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
