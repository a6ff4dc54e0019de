/* The commands socket that cryo checkpoint, status, stop, kill and migrate
 * speak to, and the workload's state as published in status.json. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"

#include <inttypes.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- the commands socket (cryo checkpoint/status/stop) ---------------------- */

int commands_listen(struct supervisor *s)
{
	const char *path = s->cfg->paths.socket;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path); /* we hold the workload's lock: a socket left here is stale */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	chmod(path, 0600);
	s->commands_fd = fd;
	return ep_add(s, fd, EPOLLIN, EV_COMMANDS);
}

/* A checkpoint's outcome: the new generation, or why there is none. */
static void reply_checkpoint(struct supervisor *s, int fd, int64_t g, const struct cryo_error *err)
{
	if (g < 0) {
		status_reply_error(fd, (int)g, err->msg);
		return;
	}
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(true));
	cryo_json_add(o, "generation", json_object_new_uint64(s->last.generation));
	cryo_json_add(o, "size", json_object_new_uint64(s->last.size));
	cryo_json_add(o, "raw_size", json_object_new_uint64(s->last.raw_size));
	cryo_json_add(o, "frozen_us", json_object_new_uint64(s->last.frozen_us));
	cryo_json_add(o, "duration_us", json_object_new_uint64(s->last.duration_ns / 1000));
	status_reply(fd, o);
}

void commands_handle(struct supervisor *s)
{
	_cleanup_close_ int fd = accept4(s->commands_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	/* A client that says nothing, or too much, is dropped. */
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char buf[PATH_MAX + 512];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl) {
		status_reply_error(fd, -EPROTO, "malformed request");
		return;
	}
	*nl = '\0';
	struct cryo_error err = {{0}};
	if (!strcmp(buf, "checkpoint")) {
		int64_t g = checkpoint_take(s, TRIGGER_COMMAND, false, NULL, &err);
		if (g >= 0)
			checkpoint_log(s, TRIGGER_COMMAND);
		else
			log_error("cannot checkpoint '%s': %s; the program runs on", s->cfg->name,
			          err.msg);
		reply_checkpoint(s, fd, g, &err);
	} else if (!strcmp(buf, "status")) {
		status_reply(fd, status_json(s));
	} else if (!strcmp(buf, "stop")) {
		supervisor_request_stop(s, SIGTERM);
		status_reply_ok(fd);
	} else if (!strcmp(buf, "stop-checkpoint")) {
		int64_t g = checkpoint_take(s, TRIGGER_STOP, false, NULL, &err);
		if (g >= 0) {
			checkpoint_log(s, TRIGGER_STOP);
			supervisor_request_stop(s, SIGTERM);
		} else {
			log_error("cannot checkpoint '%s' before stopping it: %s; it runs on",
			          s->cfg->name, err.msg);
		}
		reply_checkpoint(s, fd, g, &err);
	} else if (!strncmp(buf, "migrate\t", 8)) {
		/* migrate TAB target TAB key-file */
		char *target = buf + 8, *key = strchr(target, '\t');
		if (!key) {
			status_reply_error(fd, -EPROTO, "malformed request");
			return;
		}
		*key++ = '\0';
		/* and optionally TAB flags */
		char *flags = strchr(key, '\t');
		if (flags)
			*flags++ = '\0';
		migrate_out(s, fd, target, key, flags && !strcmp(flags, "precopy"));
	} else if (!strcmp(buf, "crash")) {
		/* cryo kill: init is our child, not yet waited for, so its PID
		 * is still its own; the program's end follows as a crash's. */
		if (!s->running || s->stopping) {
			status_reply_error(fd, -ESRCH,
			                   s->stopping ? "it is being stopped"
			                               : "its program is not running now (being "
			                                 "restored or started); try again");
			return;
		}
		kill(s->init_pid, SIGKILL);
		status_reply_ok(fd);
	} else if (!strcmp(buf, "kill")) {
		supervisor_request_stop(s, SIGKILL);
		status_reply_ok(fd);
	} else {
		status_reply_error(fd, -EINVAL, "unknown request");
	}
}
