/* The commands socket that cryo checkpoint, status, stop, kill and migrate
 * speak to, and the workload's state as published in status.json. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- the commands socket (cryo checkpoint/status/stop) ---------------------- */

/* Listens on the commands socket, without waiting for anyone. */
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
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	chmod(path, 0600);
	s->commands_fd = fd;
	return ep_add(s, fd, EPOLLIN, EV_COMMANDS);
}

/* A checkpoint's outcome: the new generation, or why there is none. With
 * sync (--store-sync), the reply waits until the store has it. */
static bool reply_checkpoint(struct supervisor *s, struct client *c, int64_t g,
                             const struct cryo_error *err, bool sync)
{
	if (g < 0) {
		status_reply_error(c, (int)g, err->msg);
		return false;
	}
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "ok", json_object_new_boolean(true));
	cryo_json_add(o, "generation", json_object_new_uint64(s->last.generation));
	cryo_json_add(o, "size", json_object_new_uint64(s->last.size));
	cryo_json_add(o, "raw_size", json_object_new_uint64(s->last.raw_size));
	cryo_json_add(o, "frozen_us", json_object_new_uint64(s->last.frozen_us));
	cryo_json_add(o, "duration_us", json_object_new_uint64(s->last.duration_ns / 1000));
	if (sync && store_sync_client(s, c, (uint64_t)g, o))
		return true;
	status_reply(c, o);
	return false;
}

/* Whether c's reply went out whole, or waits for the store (--store-sync)
 * with c still there: the command that asked has it, or will, and prints it.
 * (A reply that did not fit its socket at once, or a command that went away,
 * counts as not told.) */
static bool reply_delivered(const struct client *c, bool deferred)
{
	return !c->dropped && (deferred || c->out_len == 0);
}

/* Handles one request, a line without its newline. */
static void handle_request(struct supervisor *s, struct client *c, char *buf)
{
	struct cryo_error err = {{0}};
	if (!strcmp(buf, "checkpoint")) {
		int64_t g = checkpoint_take(s, TRIGGER_COMMAND, false, NULL, &err);
		bool deferred = reply_checkpoint(s, c, g, &err, true);
		/* cryo checkpoint prints the outcome to whoever asked; the
		 * supervisor says it too only if that command went away. */
		bool told = reply_delivered(c, deferred);
		if (g >= 0)
			checkpoint_log(s, TRIGGER_COMMAND, told);
		else
			(told ? log_debug : log_error)("cannot checkpoint '%s': %s; the program "
			                               "runs on",
			                               s->cfg->name, err.msg);
	} else if (!strcmp(buf, "status")) {
		status_reply(c, status_json(s));
	} else if (!strcmp(buf, "stop")) {
		supervisor_request_stop(s, SIGTERM);
		status_reply_ok(c);
	} else if (!strcmp(buf, "stop-checkpoint")) {
		int64_t g = checkpoint_take(s, TRIGGER_STOP, false, NULL, &err);
		if (g >= 0)
			supervisor_request_stop(s, SIGTERM);
		reply_checkpoint(s, c, g, &err, false);
		bool told = reply_delivered(c, false); /* as for "checkpoint" */
		if (g >= 0)
			checkpoint_log(s, TRIGGER_STOP, told);
		else
			(told ? log_debug : log_error)("cannot checkpoint '%s' before stopping it: "
			                               "%s; it runs on",
			                               s->cfg->name, err.msg);
	} else if (!strncmp(buf, "migrate\t", 8)) {
		/* migrate TAB target TAB key-file */
		char *target = buf + 8, *key = strchr(target, '\t');
		if (!key) {
			status_reply_error(c, -EPROTO, "malformed request");
			return;
		}
		*key++ = '\0';
		/* and optionally TAB flags */
		char *flags = strchr(key, '\t');
		if (flags)
			*flags++ = '\0';
		migrate_out(s, c, target, key, flags && !strcmp(flags, "precopy"));
	} else if (!strcmp(buf, "crash")) {
		/* cryo kill: init is our child, not yet waited for, so its PID
		 * is still its own; the program's end follows as a crash's. */
		if (!s->running || s->stopping) {
			status_reply_error(c, -ESRCH,
			                   s->stopping ? "it is being stopped"
			                               : "its program is not running now (being "
			                                 "restored or started); try again");
			return;
		}
		kill(s->init_pid, SIGKILL);
		status_reply_ok(c);
	} else if (!strcmp(buf, "kill")) {
		supervisor_request_stop(s, SIGKILL);
		status_reply_ok(c);
	} else {
		status_reply_error(c, -EINVAL, "unknown request");
	}
}

/* ---- the clients: nothing waits for them ----------------------------------- */

static void client_free(struct supervisor *s, struct client *c)
{
	s->clients[c->slot] = NULL;
	if (c->deferred)
		store_sync_forget_client(s, c);
	ep_del(s, c->fd);
	close_fd(&c->fd);
	free(c->out);
	free(c);
}

/* Sends what c's socket takes now. Returns false when c is to go: its reply
 * is all out, or it cannot take any. */
static bool client_flush(struct client *c)
{
	while (c->out_off < c->out_len && !c->dropped) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			c->dropped = true; /* it went away: nothing more to send */
			break;
		}
		c->out_off += (size_t)n;
		c->deadline_ns = util_now_ns() + COMMANDS_IDLE_NS;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->dropped)
		return false;
	return !(c->answered && !c->deferred && c->out_len == 0);
}

/* What c waits for: its request, then room for its reply. */
static void client_watch(struct client *c)
{
	uint32_t ev = c->answered ? 0 : EPOLLIN;
	if (c->out_len > 0)
		ev |= EPOLLOUT;
	ep_mod(c->s, c->fd, ev, EV_CLIENT + c->slot);
}

/* Queues len bytes for client c and sends what its socket takes now. */
void commands_send(struct client *c, const char *buf, size_t len)
{
	if (c->dropped)
		return;
	if (c->out_len + len > COMMANDS_OUT_MAX) {
		/* It does not read: it loses its reply, the loop loses nothing. */
		c->dropped = true;
		return;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		char *nb = realloc(c->out, cap);
		if (!nb) {
			c->dropped = true;
			return;
		}
		c->out = nb;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	if (c->out_len - c->out_off == len)
		c->deadline_ns = util_now_ns() + COMMANDS_IDLE_NS;
	client_flush(c);
}

/* Accepts the clients waiting on the commands socket. */
void commands_accept(struct supervisor *s)
{
	for (;;) {
		int fd = accept4(s->commands_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return; /* EAGAIN: none left; anything else: the next one */
		unsigned slot = 0;
		while (slot < COMMANDS_MAX_CLIENTS && s->clients[slot])
			slot++;
		struct client *c = slot < COMMANDS_MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			static const char busy[] =
			    "{\"ok\":false,\"errno\":16,\"error\":\"the "
			    "supervisor serves too many clients; try again\"}\n";
			(void)!send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
			close(fd);
			continue;
		}
		*c = (struct client){.s = s,
		                     .fd = fd,
		                     .slot = slot,
		                     .deadline_ns = util_now_ns() + COMMANDS_IDLE_NS};
		if (ep_add(s, fd, EPOLLIN, EV_CLIENT + slot) < 0) {
			close(fd);
			free(c);
			continue;
		}
		s->clients[slot] = c;
	}
}

/* Reads what c sent; once a line is whole (or cannot become one), handles it. */
static void client_read(struct supervisor *s, struct client *c)
{
	for (;;) {
		size_t room = sizeof(c->in) - 1 - c->in_len;
		ssize_t n = room ? read(c->fd, c->in + c->in_len, room) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n > 0) {
			c->in_len += (size_t)n;
			c->in[c->in_len] = '\0';
			char *nl = memchr(c->in, '\n', c->in_len);
			if (!nl)
				continue;
			*nl = '\0';
			c->answered = true;
			handle_request(s, c, c->in);
			return;
		}
		/* The end, an error or too much without a newline: a client that
		 * says nothing, or too much, is told so. */
		c->answered = true;
		status_reply_error(c, -EPROTO, "malformed request");
		return;
	}
}

/* A client's socket is ready (events from epoll): reads its request and
 * handles it once it is whole, or sends more of its reply. */
void commands_client_event(struct supervisor *s, unsigned slot, uint32_t events)
{
	struct client *c = slot < COMMANDS_MAX_CLIENTS ? s->clients[slot] : NULL;
	if (!c)
		return;
	if (!c->answered && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		client_read(s, c);
	if (!client_flush(c) || (events & EPOLLERR)) {
		client_free(s, c);
		return;
	}
	client_watch(c);
}

/* Milliseconds until the first client's deadline (for epoll_wait), -1 for
 * none. */
int commands_timeout_ms(struct supervisor *s)
{
	uint64_t first = UINT64_MAX, now = util_now_ns();
	for (unsigned i = 0; i < COMMANDS_MAX_CLIENTS; i++)
		if (s->clients[i] && s->clients[i]->deadline_ns < first)
			first = s->clients[i]->deadline_ns;
	if (first == UINT64_MAX)
		return -1;
	return first <= now ? 0 : (int)((first - now) / 1000000 + 1);
}

/* Drops the clients past their deadline, and those a request handled
 * meanwhile (a checkpoint, a migration) left to go or to wait for. */
void commands_expire(struct supervisor *s)
{
	uint64_t now = util_now_ns();
	for (unsigned i = 0; i < COMMANDS_MAX_CLIENTS; i++) {
		struct client *c = s->clients[i];
		if (!c)
			continue;
		/* One whose request came while the loop was busy (a long
		 * checkpoint) is answered in its turn. */
		char b;
		if (!c->answered && c->deadline_ns <= now &&
		    recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
			c->deadline_ns = now + COMMANDS_IDLE_NS;
		if (c->deadline_ns <= now || !client_flush(c))
			client_free(s, c);
		else
			client_watch(c);
	}
}

/* The supervisor ends: what its socket takes now goes to each client, and
 * the clients go. */
void commands_close_all(struct supervisor *s)
{
	for (unsigned i = 0; i < COMMANDS_MAX_CLIENTS; i++)
		if (s->clients[i]) {
			client_flush(s->clients[i]);
			client_free(s, s->clients[i]);
		}
}
