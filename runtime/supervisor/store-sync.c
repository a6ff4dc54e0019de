/* --store-sync: the news that a checkpoint is durable (the result of
 * cryo_checkpoint(), the DURABLE message after cryo_checkpoint_async(), the
 * reply of cryo checkpoint) waits until the uploader has the generation in
 * the store with every generation it is built on (and, with --lease, has
 * published it): like PostgreSQL's synchronous_commit. The loop keeps the
 * news waiting here; the uploader wakes it through s->sync_fd (EV_SYNCED)
 * whenever what the store holds grows. News kept longer than
 * STORE_SYNC_NS becomes a failure (-ETIMEDOUT); the local generation stays
 * and is uploaded later. Nothing here blocks the loop. */
#include "internal.h"
#include "log.h"
#include "store-url.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#define STORE_SYNC_NS (60 * UINT64_C(1000000000))

enum sync_kind {
	SYNC_RESULT,  /* cryo_checkpoint(): its RESULT */
	SYNC_DURABLE, /* cryo_checkpoint_async(): its DURABLE */
	SYNC_CLIENT,  /* cryo checkpoint: its reply */
};

struct sync_wait {
	enum sync_kind kind;
	uint64_t generation;
	uint64_t deadline_ns;
	struct client *client;     /* SYNC_CLIENT */
	struct json_object *reply; /* SYNC_CLIENT: the reply to send once synced */
};

struct sync_waits {
	struct sync_wait *w;
	size_t n, cap;
};

int store_sync_start(struct supervisor *s)
{
	if (!s->cfg->store_sync)
		return 0;
	s->sync_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->sync = calloc(1, sizeof(*s->sync));
	if (s->sync_fd < 0 || !s->sync)
		return -ENOMEM;
	return ep_add(s, s->sync_fd, EPOLLIN, EV_SYNCED);
}

static void add(struct supervisor *s, struct sync_wait w)
{
	struct sync_waits *q = s->sync;
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 8;
		struct sync_wait *n = realloc(q->w, cap * sizeof(*n));
		if (!n) {
			/* No room to wait: the news goes out now, as without
			 * --store-sync, rather than never. */
			log_error("out of memory: the news of checkpoint %" PRIu64
			          " of '%s' does not wait for the store",
			          w.generation, s->cfg->name);
			w.deadline_ns = 0;
			if (w.kind == SYNC_CLIENT) {
				w.client->deferred = false;
				status_reply(w.client, w.reply);
			} else {
				program_send(
				    s, w.kind == SYNC_RESULT ? CRYO_MSG_RESULT : CRYO_MSG_DURABLE,
				    w.kind == SYNC_RESULT ? 0 : (int64_t)w.generation,
				    w.generation);
			}
			return;
		}
		q->w = n;
		q->cap = cap;
	}
	w.deadline_ns = util_now_ns() + STORE_SYNC_NS;
	q->w[q->n++] = w;
}

bool store_sync_program(struct supervisor *s, uint64_t gen, bool async)
{
	if (!s->sync)
		return false;
	add(s, (struct sync_wait){.kind = async ? SYNC_DURABLE : SYNC_RESULT, .generation = gen});
	store_sync_check(s);
	return true;
}

bool store_sync_client(struct supervisor *s, struct client *c, uint64_t gen,
                       struct json_object *reply)
{
	if (!s->sync)
		return false;
	c->deferred = true;
	c->deadline_ns = util_now_ns() + STORE_SYNC_NS + COMMANDS_IDLE_NS;
	add(s, (struct sync_wait){
	           .kind = SYNC_CLIENT, .generation = gen, .client = c, .reply = reply});
	store_sync_check(s);
	return true;
}

/* Sends w's news: success when synced, else -ETIMEDOUT. */
static void release(struct supervisor *s, struct sync_wait *w, bool synced)
{
	char why[1024];
	if (!synced)
		snprintf(why, sizeof(why),
		         "checkpoint %" PRIu64 " of '%s' is durable here, but the store %s did not "
		         "take it within %d s (--store-sync); it stays here and is uploaded later",
		         w->generation, s->cfg->name, s->cfg->store->url,
		         (int)(STORE_SYNC_NS / UINT64_C(1000000000)));
	switch (w->kind) {
	case SYNC_RESULT:
		program_send(s, CRYO_MSG_RESULT, synced ? 0 : -ETIMEDOUT, w->generation);
		break;
	case SYNC_DURABLE:
		program_send(s, CRYO_MSG_DURABLE, synced ? (int64_t)w->generation : -ETIMEDOUT,
		             w->generation);
		break;
	case SYNC_CLIENT:
		w->client->deferred = false;
		w->client->deadline_ns = util_now_ns() + COMMANDS_IDLE_NS;
		if (synced) {
			status_reply(w->client, w->reply);
		} else {
			json_object_put(w->reply);
			status_reply_error(w->client, -ETIMEDOUT, why);
		}
		break;
	}
	if (!synced)
		log_error("%s", why);
}

void store_sync_check(struct supervisor *s)
{
	struct sync_waits *q = s->sync;
	if (!q)
		return;
	uint64_t one;
	(void)!read(s->sync_fd, &one, sizeof(one));
	uint64_t synced = upload_synced(s), now = util_now_ns();
	size_t k = 0;
	for (size_t i = 0; i < q->n; i++) {
		struct sync_wait *w = &q->w[i];
		if (w->generation <= synced)
			release(s, w, true);
		else if (w->deadline_ns <= now)
			release(s, w, false);
		else
			q->w[k++] = *w;
	}
	q->n = k;
}

int store_sync_timeout_ms(struct supervisor *s, int timeout)
{
	struct sync_waits *q = s->sync;
	if (!q || q->n == 0)
		return timeout;
	uint64_t first = UINT64_MAX, now = util_now_ns();
	for (size_t i = 0; i < q->n; i++)
		if (q->w[i].deadline_ns < first)
			first = q->w[i].deadline_ns;
	int ms = first <= now ? 0 : (int)((first - now) / 1000000 + 1);
	return timeout < 0 || ms < timeout ? ms : timeout;
}

void store_sync_forget_client(struct supervisor *s, struct client *c)
{
	struct sync_waits *q = s->sync;
	if (!q)
		return;
	size_t k = 0;
	for (size_t i = 0; i < q->n; i++) {
		if (q->w[i].kind == SYNC_CLIENT && q->w[i].client == c)
			json_object_put(q->w[i].reply);
		else
			q->w[k++] = q->w[i];
	}
	q->n = k;
}

void store_sync_forget_program(struct supervisor *s)
{
	struct sync_waits *q = s->sync;
	if (!q)
		return;
	size_t k = 0;
	for (size_t i = 0; i < q->n; i++)
		if (q->w[i].kind == SYNC_CLIENT)
			q->w[k++] = q->w[i];
	q->n = k;
}

void store_sync_free(struct supervisor *s)
{
	struct sync_waits *q = s->sync;
	if (q) {
		for (size_t i = 0; i < q->n; i++)
			if (q->w[i].kind == SYNC_CLIENT)
				json_object_put(q->w[i].reply);
		free(q->w);
		free(q);
		s->sync = NULL;
	}
	if (s->sync_fd >= 0) {
		ep_del(s, s->sync_fd);
		close_fd(&s->sync_fd);
	}
}
