/* --lease etcd://HOST:PORT: the workload runs only while this supervisor
 * holds its etcd lease, and only the holder publishes generations.
 *
 * At start the supervisor grants a lease of --lease-ttl seconds and makes
 * the key cryo/BUCKET/PREFIX/NAME/owner held by it; another holder refuses
 * the start (or, with --standby, is waited for). A keeper thread renews the
 * lease every TTL/3. The lease is known valid until the instant the last
 * successful keep-alive was sent plus the TTL granted: etcd counts the TTL
 * from when it received that keep-alive, which is later. If no renewal has
 * succeeded by that instant minus a margin (LEASE_MARGIN_NS(ttl)), or etcd
 * says the lease is gone, the keeper fences: it kills the program's tree
 * (the PID namespace's init) at once, from its own thread (the loop may be
 * busy in a checkpoint), and wakes the loop, which says so and ends. Each
 * keep-alive's deadline ends no later than that instant, so that no request
 * holds the fence back. The margin assumes that the clocks of this machine
 * and of etcd's members run at the same rate within it (not that they show
 * the same time), and covers the kill's own delay.
 *
 * The uploader publishes through lease_publish(): a transaction that writes
 * cryo/.../published only while our lease holds the owner key; refused, we
 * are no longer the owner and fence likewise. */
#include "internal.h"
#include "cleanup.h"
#include "error.h"
#include "etcd.h"
#include "log.h"
#include "store-url.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>

#define NS_PER_MS UINT64_C(1000000)
/* The fence comes this long before the lease can expire: TTL/4, at least 1 s. */
#define LEASE_MARGIN_NS(ttl_ns)                                                                    \
	((ttl_ns) / 4 > UINT64_C(1000000000) ? (ttl_ns) / 4 : UINT64_C(1000000000))
/* A standby asks etcd this often whether the lease is free. */
#define STANDBY_POLL_MS 1000
/* The deadline of a request at start and while waiting. */
#define START_REQUEST_MS 5000

struct lease {
	struct supervisor *s;
	const struct lease_config *lc;
	char owner_key[1024], published_key[1024];
	char owner_value[PATH_MAX + 400];
	struct etcd_client *client; /* the keeper's (the main thread's before it starts) */
	int64_t id;
	uint64_t ttl_ns; /* granted */
	int efd;         /* the loop is woken through it when the lease is lost */
	int dir_fd;      /* the workload's directory, for LEASE_RECORD */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Under lock: */
	bool stop;
	bool lost;
	uint64_t valid_until; /* CLOCK_MONOTONIC ns */
	uint64_t published;
	/* The chain the record read at start names, with its ETags. */
	struct store_expect chain[IMAGE_MAX_CHAIN + 2];
	size_t n_chain;
	const char *state; /* "held", "waiting", "lost", "released" */
	char reason[CRYO_ERROR_MAX + 128];
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* LEASE_RECORD, for cryo status; under l->lock. */
static void record_write(struct lease *l)
{
	_cleanup_json_ struct json_object *o = json_object_new_object();
	cryo_json_add(o, "url", json_object_new_string(l->lc->url));
	cryo_json_add(o, "state", json_object_new_string(l->state));
	cryo_json_add(o, "ttl", json_object_new_int64((int64_t)(l->ttl_ns / UINT64_C(1000000000))));
	cryo_json_add(o, "published", json_object_new_uint64(l->published));
	cryo_json_add(o, "error", l->reason[0] ? json_object_new_string(l->reason) : NULL);
	const char *text = cryo_json_text(o);
	(void)util_write_file_at(l->dir_fd, LEASE_RECORD, text, strlen(text), 0644, false);
}

/* Stops the program for good, from whichever thread finds the lease lost:
 * the tree's init is killed now, and the loop is woken to say so and end. */
static void fence(struct lease *l, const char *reason)
{
	pthread_mutex_lock(&l->lock);
	bool first = !l->lost;
	l->lost = true;
	if (first) {
		snprintf(l->reason, sizeof(l->reason), "%s", reason);
		l->state = "lost";
		record_write(l);
	}
	/* l->s is NULL once the supervisor has left (an uploader left behind
	 * in a request may still call here): nothing runs any more then. */
	pid_t init = l->s ? __atomic_load_n(&l->s->init_pid, __ATOMIC_SEQ_CST) : 0;
	if (init > 0)
		kill(init, SIGKILL);
	if (l->s) {
		uint64_t one = 1;
		(void)!write(l->efd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&l->lock);
}

static void *keeper_main(void *arg)
{
	struct lease *l = arg;
	uint64_t period = l->ttl_ns / 3, margin = LEASE_MARGIN_NS(l->ttl_ns);
	uint64_t next = mono_ns() + period;
	pthread_mutex_lock(&l->lock);
	while (!l->stop && !l->lost) {
		uint64_t fence_at = l->valid_until - margin;
		uint64_t wake = next < fence_at ? next : fence_at;
		struct timespec ts = {(time_t)(wake / UINT64_C(1000000000)),
		                      (long)(wake % UINT64_C(1000000000))};
		while (!l->stop && mono_ns() < wake)
			pthread_cond_timedwait(&l->cond, &l->lock, &ts);
		if (l->stop)
			break;
		pthread_mutex_unlock(&l->lock);

		uint64_t sent = mono_ns();
		struct cryo_error err = {{0}};
		int r;
		if (sent + 50 * NS_PER_MS >= fence_at) {
			r = -ETIMEDOUT;
		} else {
			/* The request ends by the fence's instant at the latest. */
			uint64_t left = fence_at - sent;
			etcd_client_set_deadline(
			    l->client, (long)((left < period ? left : period) / NS_PER_MS));
			int64_t ttl_s = 0;
			r = etcd_lease_keepalive(l->client, l->id, &ttl_s, &err);
			if (r == 0) {
				uint64_t ttl = (uint64_t)ttl_s * UINT64_C(1000000000);
				pthread_mutex_lock(&l->lock);
				l->valid_until = sent + (ttl < l->ttl_ns ? ttl : l->ttl_ns);
				if (l->reason[0]) {
					l->reason[0] = '\0';
					record_write(l);
				}
				pthread_mutex_unlock(&l->lock);
				next = sent + period;
			}
		}
		if (r == -ENOLCK) {
			fence(l, err.msg);
		} else if (r < 0) {
			char why[sizeof(l->reason)];
			uint64_t now = mono_ns();
			if (now + 50 * NS_PER_MS >= fence_at) {
				snprintf(why, sizeof(why),
				         "no renewal succeeded for %.1f s (the lease could expire "
				         "%.1f s later): %s",
				         (double)(now - (l->valid_until - l->ttl_ns)) / 1e9,
				         (double)(l->valid_until - now) / 1e9,
				         err.msg[0] ? err.msg
				                    : "the last keep-alive found no time left");
				fence(l, why);
			} else {
				pthread_mutex_lock(&l->lock);
				snprintf(l->reason, sizeof(l->reason), "renewing: %s", err.msg);
				record_write(l);
				pthread_mutex_unlock(&l->lock);
				/* Tried again soon, well before the fence. */
				next = now + period / 4;
			}
		}
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* What a holder wrote in the owner key: one line for a message. */
static void describe_holder(const struct etcd_kv *kv, char *buf, size_t len)
{
	_cleanup_json_ struct json_object *o = kv->value ? cryo_json_parse(kv->value) : NULL;
	const char *host = o ? cryo_json_str(o, "host") : NULL;
	const char *dir = o ? cryo_json_str(o, "dir") : NULL;
	int64_t pid = o ? cryo_json_int(o, "pid", 0) : 0;
	if (host && dir)
		snprintf(buf, len,
		         "the supervisor PID %" PRId64 " on host '%s' (state directory '%s')", pid,
		         host, dir);
	else
		snprintf(buf, len, "lease %" PRId64 " ('%.64s')", kv->lease,
		         kv->value ? kv->value : "");
}

/* Waits up to ms for a signal that stops the supervisor: true if one came. */
static bool stop_requested(struct supervisor *s, int ms)
{
	struct pollfd p = {.fd = s->sigfd, .events = POLLIN};
	if (poll(&p, 1, ms) <= 0)
		return false;
	struct signalfd_siginfo si;
	bool stop = false;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		stop |= si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM || si.ssi_signo == SIGHUP;
	return stop;
}

static int grant(struct lease *l, struct cryo_error *err)
{
	int64_t granted = 0;
	uint64_t sent = mono_ns();
	int r = etcd_lease_grant(l->client, l->lc->ttl_s, &l->id, &granted, err);
	if (r < 0)
		return r;
	l->ttl_ns = (uint64_t)granted * UINT64_C(1000000000);
	l->valid_until = sent + l->ttl_ns;
	return 0;
}

/* Makes the owner key ours: at once, or with --standby once it is free.
 * Returns 0, or a negative errno after a logged error. */
static int acquire(struct lease *l)
{
	struct supervisor *s = l->s;
	const char *name = s->cfg->name, *url = l->lc->url;
	bool said = false;
	int64_t shown = 0; /* the holder cryo status was last told of */
	for (;;) {
		struct etcd_kv holder = {0};
		struct cryo_error err = {{0}};
		int r = etcd_acquire(l->client, l->owner_key, l->owner_value, l->id, &holder, &err);
		if (r == -ENOLCK) {
			/* Our lease expired while we waited (etcd was away): a new one. */
			r = grant(l, &err);
			if (r == 0)
				continue;
		}
		if (r == 0)
			return 0;
		char who[PATH_MAX + 200];
		int64_t holder_lease = holder.lease;
		if (r == -EBUSY)
			describe_holder(&holder, who, sizeof(who));
		etcd_kv_clear(&holder);
		if (!l->lc->standby) {
			if (r == -EBUSY)
				log_error(
				    "'%s' is owned through %s by %s: not started here; wait for "
				    "it to end with --standby, or stop it there",
				    name, url, who);
			else
				log_error("cannot take the lease of '%s' on %s: %s; not started",
				          name, url, err.msg);
			return r;
		}
		if (r == -EBUSY && holder_lease != shown) {
			/* cryo status shows it waiting, and for whom. */
			pthread_mutex_lock(&l->lock);
			snprintf(l->reason, sizeof(l->reason), "held by %.900s", who);
			record_write(l);
			l->reason[0] = '\0';
			pthread_mutex_unlock(&l->lock);
			shown = holder_lease;
		}
		if (!said && r == -EBUSY) {
			log_info("'%s' is owned through %s by %s: standing by, waiting until its "
			         "lease ends",
			         name, url, who);
			said = true;
		} else if (r != -EBUSY) {
			log_error("standby of '%s': cannot ask %s: %s; trying again", name, url,
			          err.msg);
		}
		if (stop_requested(s, STANDBY_POLL_MS)) {
			log_info("standby of '%s' stopped before it took the lease on %s", name,
			         url);
			return -EINTR;
		}
		/* Our own lease must live while we wait. */
		uint64_t sent = mono_ns();
		int64_t ttl = 0;
		if (etcd_lease_keepalive(l->client, l->id, &ttl, &err) == 0)
			l->valid_until = sent + (uint64_t)ttl * UINT64_C(1000000000);
	}
}

int lease_start(struct supervisor *s, uint64_t *published)
{
	const struct lease_config *lc = s->cfg->lease;
	*published = 0;
	if (!lc)
		return 0;
	struct lease *l = calloc(1, sizeof(*l));
	if (!l) {
		log_error("out of memory");
		return -ENOMEM;
	}
	l->s = s;
	l->lc = lc;
	l->efd = l->dir_fd = -1;
	l->state = "waiting";
	l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	l->dir_fd = fcntl(s->dir_fd, F_DUPFD_CLOEXEC, 3);
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->lease = l;
	const char *name = s->cfg->name;
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	_cleanup_json_ struct json_object *v = json_object_new_object();
	cryo_json_add(v, "host", json_object_new_string(host));
	cryo_json_add(v, "dir", json_object_new_string(s->cfg->paths.dir));
	cryo_json_add(v, "pid", json_object_new_int(getpid()));
	snprintf(l->owner_value, sizeof(l->owner_value), "%s", cryo_json_text(v));
	struct cryo_error err = {{0}};
	int r = lease_key(s->cfg->store, name, "owner", l->owner_key, sizeof(l->owner_key));
	if (r == 0)
		r = lease_key(s->cfg->store, name, "published", l->published_key,
		              sizeof(l->published_key));
	if (r < 0) {
		log_error("the etcd keys of '%s' are too long: give a shorter --store prefix",
		          name);
		return r;
	}
	if (l->efd < 0 || l->dir_fd < 0 ||
	    etcd_client_new(&l->client, lc->endpoint, START_REQUEST_MS, &err) < 0) {
		log_error("cannot take the lease of '%s' on %s: %s; not started", name, lc->url,
		          err.msg[0] ? err.msg : strerror(errno));
		return -EIO;
	}
	r = grant(l, &err);
	if (r < 0) {
		log_error("cannot take the lease of '%s' on %s: %s; not started (is etcd running "
		          "there?)",
		          name, lc->url, err.msg);
		return r;
	}
	r = acquire(l);
	if (r < 0) {
		struct cryo_error rerr = {{0}};
		etcd_lease_revoke(l->client, l->id, &rerr);
		return r;
	}
	struct etcd_kv kv = {0};
	r = etcd_get(l->client, l->published_key, &kv, &err);
	if (r == 0) {
		_cleanup_json_ struct json_object *o = cryo_json_parse(kv.value);
		int64_t g = o ? cryo_json_int(o, "generation", 0) : 0;
		l->published = g > 0 ? (uint64_t)g : 0;
		struct json_object *chain = NULL;
		if (o && json_object_object_get_ex(o, "chain", &chain) &&
		    json_object_is_type(chain, json_type_array)) {
			size_t n = json_object_array_length(chain);
			for (size_t i = 0; i < n && l->n_chain < ARRAY_SIZE(l->chain); i++) {
				struct json_object *e = json_object_array_get_idx(chain, i);
				const char *etag = cryo_json_str(e, "etag");
				int64_t cg = cryo_json_int(e, "generation", 0);
				if (!etag || cg <= 0 || strlen(etag) >= sizeof(l->chain[0].etag))
					continue;
				l->chain[l->n_chain].generation = (uint64_t)cg;
				strcpy(l->chain[l->n_chain].etag, etag);
				l->n_chain++;
			}
		}
	}
	etcd_kv_clear(&kv);
	if (r < 0 && r != -ENOENT) {
		log_error("cannot read what '%s' published on %s: %s; not started", name, lc->url,
		          err.msg);
		etcd_lease_revoke(l->client, l->id, &err);
		return r;
	}
	*published = l->published;
	pthread_mutex_lock(&l->lock);
	l->state = "held";
	record_write(l);
	pthread_mutex_unlock(&l->lock);
	r = -pthread_create(&l->thread, NULL, keeper_main, l);
	if (r < 0) {
		log_error("cannot start the lease keeper of '%s': %s; not started", name,
		          strerror(-r));
		etcd_lease_revoke(l->client, l->id, &err);
		return r;
	}
	l->thread_started = true;
	ep_add(s, l->efd, EPOLLIN, EV_LEASE);
	log_debug("'%s' holds its lease %" PRId64 " on %s (TTL %" PRIu64 " s, published %" PRIu64
	          ")",
	          name, l->id, lc->url, l->ttl_ns / UINT64_C(1000000000), l->published);
	return 0;
}

bool lease_lost(struct supervisor *s)
{
	struct lease *l = s->lease;
	if (!l)
		return false;
	pthread_mutex_lock(&l->lock);
	bool lost = l->lost;
	pthread_mutex_unlock(&l->lock);
	return lost;
}

bool lease_valid(struct lease *l)
{
	if (!l)
		return true;
	pthread_mutex_lock(&l->lock);
	bool ok = !l->lost && !l->stop && mono_ns() < l->valid_until - LEASE_MARGIN_NS(l->ttl_ns);
	pthread_mutex_unlock(&l->lock);
	return ok;
}

size_t lease_published_chain(struct supervisor *s, const struct store_expect **ret)
{
	*ret = s->lease ? s->lease->chain : NULL;
	return s->lease ? s->lease->n_chain : 0;
}

uint64_t lease_published(struct lease *l)
{
	if (!l)
		return 0;
	pthread_mutex_lock(&l->lock);
	uint64_t g = l->published;
	pthread_mutex_unlock(&l->lock);
	return g;
}

int lease_publish(struct lease *l, struct etcd_client *c, uint64_t gen, const char *record,
                  struct cryo_error *err)
{
	if (!lease_valid(l))
		return error_set(err, -ENOLCK,
		                 "the lease is lost or about to be: nothing is "
		                 "published");
	struct cryo_error perr = {{0}};
	int r = etcd_put_if_owner(c, l->owner_key, l->id, l->published_key, record, &perr);
	if (r == -ENOLCK) {
		fence(l, perr.msg);
		return error_set(err, r, "%s", perr.msg);
	}
	if (r < 0)
		return error_set(err, r, "cannot publish generation %" PRIu64 ": %s", gen,
		                 perr.msg);
	pthread_mutex_lock(&l->lock);
	l->published = gen;
	record_write(l);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

const char *lease_reason(struct supervisor *s)
{
	return s->lease ? s->lease->reason : "";
}

const char *lease_url(struct lease *l)
{
	return l ? l->lc->url : "";
}

void lease_stop(struct supervisor *s, bool uploader_left)
{
	struct lease *l = s->lease;
	if (!l)
		return;
	s->lease = NULL;
	if (l->thread_started) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->thread, NULL);
		/* Let go at once rather than after the TTL: a standby may take
		 * over, or this workload start again, without waiting. */
		if (!l->lost) {
			struct cryo_error err = {{0}};
			etcd_client_set_deadline(l->client, 2000);
			if (etcd_lease_revoke(l->client, l->id, &err) == 0)
				l->state = "released";
			pthread_mutex_lock(&l->lock);
			record_write(l);
			pthread_mutex_unlock(&l->lock);
		}
	}
	if (l->efd >= 0)
		ep_del(s, l->efd);
	pthread_mutex_lock(&l->lock);
	l->s = NULL;
	pthread_mutex_unlock(&l->lock);
	/* An uploader left behind in a request still uses it: it goes with
	 * the process. */
	if (uploader_left)
		return;
	if (l->efd >= 0)
		close(l->efd);
	if (l->dir_fd >= 0)
		close(l->dir_fd);
	etcd_client_free(l->client);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l);
}
