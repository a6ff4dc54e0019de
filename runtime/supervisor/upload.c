/* --store: every generation, once durable here, is copied to the object
 * store in the background by a thread of the supervisor, as its archive file
 * unchanged (already compressed and checksummed; an incremental generation's
 * archive holds only what changed). The thread makes the store's copy of the
 * workload's prefix follow the local store: it puts each local generation the
 * store lacks, oldest first (a base before what is built on it), and deletes
 * each stored generation the local store has pruned (image_store_prune()
 * keeps the bases a kept generation needs, so the store keeps them too: the
 * rule lives there only). It never deletes a generation newer than the
 * newest here. What it knows goes into STORE_RECORD, written atomically,
 * where cryo images and cryo status read it without asking the store.
 *
 * Nothing here blocks the supervisor's loop: the loop only wakes the thread.
 * A failed pass is tried again after a back-off (1 s doubling to 30 s); each
 * request has its own deadline (the s3 client's). The thread never logs (the
 * supervisor's log writes through the loop's buffers); its one-line reason
 * goes into the record. */
#include "internal.h"
#include "cleanup.h"
#include "error.h"
#include "etcd.h"
#include "store-url.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define UPLOAD_BACKOFF_MIN_NS (1000000000ULL)
#define UPLOAD_BACKOFF_MAX_NS (30000000000ULL)
/* How long a stopping supervisor waits for the last pass. */
#define UPLOAD_STOP_NS (20000000000ULL)

struct uploader {
	const struct store_config *sc;
	const char *name, *dir;
	int dir_fd;
	struct s3_client *client;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool wake, stop, finished;
	bool owner_checked; /* the store's owner mark is this workload's */
	/* What the store holds of this workload, as last listed and since
	 * changed by this thread: generation, size and ETag, ascending. */
	uint64_t *gens, *sizes;
	char (*etags)[80];
	size_t n, cap;
	/* --lease: the lease (its keeper's), our own etcd client, whether the
	 * store's prefix was taken over, and the generations the published
	 * record names (never deleted). */
	struct lease *lease;
	struct etcd_client *etcd;
	bool taken_over;
	uint64_t *chain;
	size_t n_chain;
	/* The newest generation the store holds with all it is built on
	 * (with --lease: published); the loop is woken through sync_fd when
	 * it grows (--store-sync). */
	uint64_t synced;
	int sync_fd;
	char error[sizeof(((struct cryo_error *)0)->msg) + 128];
	uint64_t error_since; /* CLOCK_REALTIME seconds, 0: no error */
};

static void record_write(struct uploader *u)
{
	_cleanup_json_ struct json_object *o = json_object_new_object();
	cryo_json_add(o, "url", json_object_new_string(u->sc->url));
	cryo_json_add(o, "time", json_object_new_int64((int64_t)time(NULL)));
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < u->n; i++) {
		struct json_object *g = json_object_new_object();
		cryo_json_add(g, "generation", json_object_new_uint64(u->gens[i]));
		cryo_json_add(g, "size", json_object_new_uint64(u->sizes[i]));
		json_object_array_add(arr, g);
	}
	cryo_json_add(o, "remote", arr);
	cryo_json_add(o, "error", u->error[0] ? json_object_new_string(u->error) : NULL);
	cryo_json_add(o, "error_since", json_object_new_uint64(u->error_since));
	const char *text = cryo_json_text(o);
	/* Not fsynced: the store itself is the truth; this is what we saw. */
	(void)util_write_file_at(u->dir_fd, STORE_RECORD, text, strlen(text), 0644, false);
}

static ssize_t remote_find(const struct uploader *u, uint64_t gen)
{
	for (size_t i = 0; i < u->n; i++)
		if (u->gens[i] == gen)
			return (ssize_t)i;
	return -1;
}

static int remote_add(struct uploader *u, uint64_t gen, uint64_t size, const char *etag)
{
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		uint64_t *g = realloc(u->gens, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		u->gens = g;
		uint64_t *sz = realloc(u->sizes, cap * sizeof(*sz));
		if (!sz)
			return -ENOMEM;
		u->sizes = sz;
		char(*e)[80] = realloc(u->etags, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		u->etags = e;
		u->cap = cap;
	}
	size_t i = u->n;
	while (i > 0 && u->gens[i - 1] > gen) {
		u->gens[i] = u->gens[i - 1];
		u->sizes[i] = u->sizes[i - 1];
		memcpy(u->etags[i], u->etags[i - 1], sizeof(u->etags[i]));
		i--;
	}
	u->gens[i] = gen;
	u->sizes[i] = size;
	snprintf(u->etags[i], sizeof(u->etags[i]), "%s", etag ? etag : "");
	u->n++;
	return 0;
}

static void remote_remove(struct uploader *u, size_t i)
{
	memmove(u->gens + i, u->gens + i + 1, (u->n - i - 1) * sizeof(*u->gens));
	memmove(u->sizes + i, u->sizes + i + 1, (u->n - i - 1) * sizeof(*u->sizes));
	memmove(u->etags + i, u->etags + i + 1, (u->n - i - 1) * sizeof(*u->etags));
	u->n--;
}

/* Reads what the store holds under PREFIX/NAME/. */
static int remote_list(struct uploader *u, struct cryo_error *err)
{
	char prefix[sizeof(u->sc->prefix) + 300];
	store_object_key(u->sc, u->name, "", prefix, sizeof(prefix));
	struct s3_list l = {0};
	int r = s3_list(u->client, u->sc->bucket, prefix, &l, err);
	if (r < 0)
		return r;
	u->n = 0;
	for (size_t i = 0; i < l.n && r == 0; i++) {
		uint64_t g = store_key_generation(l.items[i].key);
		if (g && !strchr(l.items[i].key + strlen(prefix), '/'))
			r = remote_add(u, g, l.items[i].size, l.items[i].etag);
	}
	s3_list_clear(&l);
	return r;
}

/* With --lease, nothing is put in the store or deleted there unless the
 * lease is held with its margin to spare. */
static int lease_check(struct uploader *u, struct cryo_error *err)
{
	if (lease_valid(u->lease))
		return 0;
	return error_set(err, -ENOLCK,
	                 "the lease on %s is lost or about to be: nothing more is put in "
	                 "or deleted from the store",
	                 lease_url(u->lease));
}

static bool in_chain(const struct uploader *u, uint64_t gen)
{
	for (size_t i = 0; i < u->n_chain; i++)
		if (u->chain[i] == gen)
			return true;
	return false;
}

/* The generations of what is published (value: its JSON record) into
 * u->chain. */
static void chain_read(struct uploader *u, const char *value)
{
	_cleanup_json_ struct json_object *o = cryo_json_parse(value);
	struct json_object *arr;
	u->n_chain = 0;
	if (!o || !json_object_object_get_ex(o, "chain", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return;
	size_t n = json_object_array_length(arr);
	uint64_t *c = realloc(u->chain, (n ? n : 1) * sizeof(*c));
	if (!c)
		return;
	u->chain = c;
	for (size_t i = 0; i < n; i++) {
		int64_t g = cryo_json_int(json_object_array_get_idx(arr, i), "generation", 0);
		if (g > 0)
			u->chain[u->n_chain++] = (uint64_t)g;
	}
}

/* Taking the prefix over, once the lease is ours: what the store holds
 * newer than the published generation is a fenced owner's unpublished
 * leftovers (or ours, from before a stop), deleted before the first put. */
static int take_over(struct uploader *u, struct cryo_error *err)
{
	char key[1024];
	struct etcd_kv kv = {0};
	struct cryo_error gerr = {{0}};
	lease_key(u->sc, u->name, "published", key, sizeof(key));
	int r = etcd_get(u->etcd, key, &kv, &gerr);
	if (r < 0 && r != -ENOENT)
		return error_set(err, r, "cannot read what is published: %s", gerr.msg);
	if (r == 0)
		chain_read(u, kv.value);
	etcd_kv_clear(&kv);
	uint64_t published = u->n_chain ? u->chain[u->n_chain - 1] : 0;
	for (size_t i = 0; i < u->n;) {
		if (u->gens[i] <= published) {
			i++;
			continue;
		}
		r = lease_check(u, err);
		if (r < 0)
			return r;
		struct cryo_error derr = {{0}};
		store_key(u->sc, u->name, u->gens[i], key, sizeof(key));
		r = s3_delete(u->client, u->sc->bucket, key, &derr);
		if (r < 0)
			return error_set(err, r,
			                 "cannot delete generation %" PRIu64
			                 ", left unpublished by an earlier owner: %s",
			                 u->gens[i], derr.msg);
		remote_remove(u, i);
	}
	u->taken_over = true;
	return 0;
}

/* The generations generation gen needs to be restored, base first, into
 * chain (at most 16); how many, or 0 if one of them is not in the store
 * with the size it has here. */
static size_t chain_of(struct uploader *u, uint64_t gen, uint64_t chain[16])
{
	uint64_t rev[16];
	size_t n = 0;
	for (uint64_t g = gen; g && n < 16;) {
		char path[PATH_MAX];
		struct stat st;
		ssize_t k = remote_find(u, g);
		image_store_path(u->dir, g, path, sizeof(path));
		if (k < 0 || stat(path, &st) < 0 || u->sizes[k] != (uint64_t)st.st_size)
			return 0;
		rev[n++] = g;
		struct manifest *m = NULL;
		struct cryo_error merr = {{0}};
		if (image_store_read_manifest(u->dir, g, &m, &merr) < 0)
			return 0;
		g = manifest_get_u64(m, "base", 0);
		manifest_free(m);
	}
	for (size_t i = 0; i < n; i++)
		chain[i] = rev[n - 1 - i];
	return n;
}

/* The newest local generation the store holds with its chain is published
 * (with --lease; else only noted for --store-sync). */
static int publish(struct uploader *u, const uint64_t *gens, size_t n, struct cryo_error *err)
{
	uint64_t chain[16];
	size_t k = 0;
	size_t i = n;
	while (i-- > 0) {
		if (gens[i] <= u->synced)
			return 0;
		if ((k = chain_of(u, gens[i], chain)) > 0)
			break;
	}
	if (!k)
		return 0;
	uint64_t gen = gens[i];
	if (u->lease) {
		_cleanup_json_ struct json_object *o = json_object_new_object();
		struct json_object *arr = json_object_new_array();
		cryo_json_add(o, "generation", json_object_new_uint64(gen));
		for (size_t j = 0; j < k; j++) {
			ssize_t x = remote_find(u, chain[j]);
			struct json_object *g = json_object_new_object();
			cryo_json_add(g, "generation", json_object_new_uint64(chain[j]));
			cryo_json_add(g, "size", json_object_new_uint64(u->sizes[x]));
			cryo_json_add(g, "etag", json_object_new_string(u->etags[x]));
			json_object_array_add(arr, g);
		}
		cryo_json_add(o, "chain", arr);
		int r = lease_publish(u->lease, u->etcd, gen, cryo_json_text(o), err);
		if (r < 0)
			return r;
		uint64_t *c = realloc(u->chain, k * sizeof(*c));
		if (!c)
			return error_set(err, -ENOMEM, "out of memory");
		memcpy(c, chain, k * sizeof(*c));
		u->chain = c;
		u->n_chain = k;
	}
	__atomic_store_n(&u->synced, gen, __ATOMIC_SEQ_CST);
	if (u->sync_fd >= 0) {
		uint64_t one = 1;
		(void)!write(u->sync_fd, &one, sizeof(one));
	}
	return 0;
}

/* The store's PREFIX/NAME/ belongs to one workload directory
 * (store_owner_check()): another machine's workload of the same name, sent to
 * the same prefix, puts and deletes nothing there: it would replace and prune
 * the other's generations. */
/* One pass: the store made to hold what the local store holds. */
static int sync_pass(struct uploader *u, struct cryo_error *err)
{
	int r = lease_check(u, err);
	if (r < 0)
		return r;
	if (!u->owner_checked) {
		/* With a lease, the lease decides who owns the prefix: the
		 * mark is put anew as this workload's. */
		r = (u->lease ? store_owner_claim : store_owner_check)(u->client, u->sc, u->name,
		                                                       u->dir_fd, err);
		if (r < 0)
			return r;
		u->owner_checked = true;
	}
	r = remote_list(u, err);
	if (r < 0)
		return r;
	if (u->lease && !u->taken_over) {
		r = take_over(u, err);
		if (r < 0)
			return r;
	}
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	r = image_store_list(u->dir, &gens, &n);
	if (r < 0)
		return error_set(err, r, "cannot read '%s': %s", u->dir, strerror(-r));
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX], key[1024];
		image_store_path(u->dir, gens[i], path, sizeof(path));
		/* The fd keeps the archive while it is read, even if a prune
		 * removes its name meanwhile (the next pass deletes its copy). */
		_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 && errno == ENOENT)
			continue;
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -errno;
			return error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
		}
		ssize_t k = remote_find(u, gens[i]);
		if (k >= 0 && u->sizes[k] == (uint64_t)st.st_size)
			continue;
		r = store_key(u->sc, u->name, gens[i], key, sizeof(key));
		if (r < 0)
			return error_set(err, r, "the key of generation %" PRIu64 " is too long",
			                 gens[i]);
		r = lease_check(u, err);
		if (r < 0)
			return r;
		struct cryo_error perr = {{0}};
		struct s3_object obj = {0};
		r = s3_put(u->client, u->sc->bucket, key, fd, &obj, &perr);
		if (r < 0)
			return error_set(err, r, "cannot upload generation %" PRIu64 ": %s",
			                 gens[i], perr.msg);
		if (k >= 0)
			remote_remove(u, (size_t)k);
		if (remote_add(u, gens[i], obj.size, obj.etag) < 0)
			return error_set(err, -ENOMEM, "out of memory");
		record_write(u);
	}
	r = publish(u, gens, n, err);
	if (r < 0)
		return r;
	uint64_t newest = n ? gens[n - 1] : 0;
	for (size_t i = 0; i < u->n;) {
		bool local = false;
		for (size_t j = 0; j < n && !local; j++)
			local = gens[j] == u->gens[i];
		/* What is published stays until something newer is. */
		if (local || u->gens[i] >= newest || in_chain(u, u->gens[i])) {
			i++;
			continue;
		}
		r = lease_check(u, err);
		if (r < 0)
			return r;
		char key[1024];
		struct cryo_error derr = {{0}};
		store_key(u->sc, u->name, u->gens[i], key, sizeof(key));
		r = s3_delete(u->client, u->sc->bucket, key, &derr);
		if (r < 0)
			return error_set(err, r, "cannot delete pruned generation %" PRIu64 ": %s",
			                 u->gens[i], derr.msg);
		remote_remove(u, i);
	}
	return 0;
}

static void *upload_main(void *arg)
{
	struct uploader *u = arg;
	uint64_t backoff = 0;
	bool last = false;
	pthread_mutex_lock(&u->lock);
	for (;;) {
		/* A pass at start (what earlier runs left), on each wake, and
		 * after a failure once its back-off has passed. */
		if (!u->wake && !u->stop) {
			if (backoff) {
				struct timespec ts;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				uint64_t t = (uint64_t)ts.tv_sec * 1000000000ULL +
				             (uint64_t)ts.tv_nsec + backoff;
				ts.tv_sec = (time_t)(t / 1000000000ULL);
				ts.tv_nsec = (long)(t % 1000000000ULL);
				pthread_cond_timedwait(&u->cond, &u->lock, &ts);
			} else {
				pthread_cond_wait(&u->cond, &u->lock);
			}
		}
		/* Stopping: one last pass if anything is left to do. */
		if (u->stop) {
			if (last || (!u->wake && !backoff))
				break;
			last = true;
		}
		u->wake = false;
		pthread_mutex_unlock(&u->lock);

		struct cryo_error err = {{0}};
		int r = sync_pass(u, &err);
		if (r < 0) {
			if (!u->error_since)
				u->error_since = (uint64_t)time(NULL);
			snprintf(u->error, sizeof(u->error), "%s", err.msg);
			backoff = !backoff                              ? UPLOAD_BACKOFF_MIN_NS
			          : backoff * 2 > UPLOAD_BACKOFF_MAX_NS ? UPLOAD_BACKOFF_MAX_NS
			                                                : backoff * 2;
		} else {
			u->error[0] = '\0';
			u->error_since = 0;
			backoff = 0;
		}
		record_write(u);
		pthread_mutex_lock(&u->lock);
	}
	u->finished = true;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
	return NULL;
}

static void uploader_free(struct uploader *u)
{
	if (!u)
		return;
	s3_client_free(u->client);
	etcd_client_free(u->etcd);
	free(u->etags);
	free(u->chain);
	if (u->dir_fd >= 0)
		close(u->dir_fd);
	pthread_mutex_destroy(&u->lock);
	pthread_cond_destroy(&u->cond);
	free(u->gens);
	free(u->sizes);
	free(u);
}

int upload_start(struct supervisor *s, struct cryo_error *err)
{
	const struct store_config *sc = s->cfg->store;
	if (!sc)
		return 0;
	struct uploader *u = calloc(1, sizeof(*u));
	if (!u)
		return error_set(err, -ENOMEM, "out of memory");
	u->sc = sc;
	u->name = s->cfg->name;
	u->dir = s->cfg->paths.dir;
	u->dir_fd = fcntl(s->dir_fd, F_DUPFD_CLOEXEC, 3);
	pthread_mutex_init(&u->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&u->cond, &ca);
	pthread_condattr_destroy(&ca);
	u->wake = true;
	u->lease = s->lease;
	u->synced = lease_published(s->lease);
	u->sync_fd = s->sync_fd;
	int r = u->dir_fd < 0 ? -errno : s3_client_new(&u->client, &sc->s3, err);
	if (r == 0 && s->cfg->lease)
		r = etcd_client_new(&u->etcd, s->cfg->lease->endpoint, 5000, err);
	if (r == 0) {
		r = -pthread_create(&u->thread, NULL, upload_main, u);
		if (r < 0)
			error_set(err, r, "cannot start the uploader: %s", strerror(-r));
	} else if (u->dir_fd < 0) {
		error_set(err, r, "cannot open '%s': %s", u->dir, strerror(-r));
	}
	if (r < 0) {
		uploader_free(u);
		return r;
	}
	s->uploader = u;
	return 0;
}

uint64_t upload_synced(struct supervisor *s)
{
	return s->uploader ? __atomic_load_n(&s->uploader->synced, __ATOMIC_SEQ_CST) : 0;
}

void upload_wake(struct supervisor *s)
{
	struct uploader *u = s->uploader;
	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	u->wake = true;
	pthread_cond_signal(&u->cond);
	pthread_mutex_unlock(&u->lock);
}

bool upload_stop(struct supervisor *s)
{
	struct uploader *u = s->uploader;
	if (!u)
		return true;
	s->uploader = NULL;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t t = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + UPLOAD_STOP_NS;
	ts.tv_sec = (time_t)(t / 1000000000ULL);
	ts.tv_nsec = (long)(t % 1000000000ULL);
	pthread_mutex_lock(&u->lock);
	u->stop = true;
	pthread_cond_signal(&u->cond);
	while (!u->finished)
		if (pthread_cond_timedwait(&u->cond, &u->lock, &ts) == ETIMEDOUT)
			break;
	bool finished = u->finished;
	pthread_mutex_unlock(&u->lock);
	if (!finished) {
		/* Still in a request to a store that does not answer: the
		 * process ends with it. */
		pthread_detach(u->thread);
		return false;
	}
	pthread_join(u->thread, NULL);
	uploader_free(u);
	return true;
}
