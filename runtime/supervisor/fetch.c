/* --store: generations brought back from the object store into the
 * workload's directory, for a restore on a machine that lacks them (another
 * machine after this one was lost, or this one after its disk was).
 *
 * The newest generation in the store (or the newest at most a bound: the
 * one published through etcd) is taken with every generation its restore
 * needs (the bases its manifest names, down to a whole one); each object is
 * checked against the ETag the listing gave (the store's MD5 of what was
 * put) while it arrives, then verified as a local archive is (every
 * checksum, a manifest that makes sense, its own generation number), and
 * made a generation of the directory as an arriving migration's is (written
 * under a temporary name, fsynced, renamed, the directory fsynced). An
 * object missing or damaged makes that chain unusable: what was fetched for
 * it goes, and the generation before is tried. Generations already here are
 * used as they are. */
#include "internal.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "store-url.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct fetch {
	const struct store_config *sc;
	const char *name, *dir;
	struct s3_client *client;
	struct s3_list list;
	const struct store_expect *expect;
	size_t n_expect;
	/* What this call fetched for the chain being tried. */
	uint64_t fetched[IMAGE_MAX_CHAIN + 2];
	size_t n_fetched;
	uint64_t bytes;
};

static const struct s3_object *listed(const struct fetch *f, uint64_t gen)
{
	for (size_t i = 0; i < f->list.n; i++)
		if (store_key_generation(f->list.items[i].key) == gen)
			return &f->list.items[i];
	return NULL;
}

static bool here(const struct fetch *f, uint64_t gen)
{
	char path[PATH_MAX];
	struct stat st;
	return image_store_path(f->dir, gen, path, sizeof(path)) == 0 && stat(path, &st) == 0;
}

/* Fetches generation gen into the directory, verified; its manifest in *m. */
static int fetch_one(struct fetch *f, uint64_t gen, struct manifest **m, struct cryo_error *err)
{
	const struct s3_object *o = listed(f, gen);
	if (!o)
		return error_set(err, -ENOENT, "generation %" PRIu64 " is not in the store", gen);
	const char *etag = o->etag;
	for (size_t i = 0; i < f->n_expect; i++)
		if (f->expect[i].generation == gen)
			etag = f->expect[i].etag;
	if (strcmp(etag, o->etag) != 0)
		return error_set(
		    err, -ESTALE,
		    "generation %" PRIu64 " in the store is not the one published (its "
		    "ETag is %s, not %s: put there by an owner that had lost the lease?)",
		    gen, o->etag, etag);
	char key[1024], tmp[PATH_MAX], path[PATH_MAX];
	if (store_key(f->sc, f->name, gen, key, sizeof(key)) < 0 ||
	    image_store_incoming_path(f->dir, gen, tmp, sizeof(tmp)) < 0 ||
	    image_store_path(f->dir, gen, path, sizeof(path)) < 0)
		return error_set(err, -ENAMETOOLONG,
		                 "the path of generation %" PRIu64 " is too long", gen);
	unlink(tmp); /* an interrupted fetch's */
	_cleanup_close_ int fd =
	    open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return error_set(err, -errno, "cannot create '%s': %m", tmp);
	struct cryo_error gerr = {{0}};
	int r = s3_get(f->client, f->sc->bucket, key, fd, o->etag, NULL, &gerr);
	if (r < 0) {
		unlink(tmp);
		return error_set(err, r, "cannot fetch generation %" PRIu64 ": %s", gen, gerr.msg);
	}
	struct cryo_error verr = {{0}};
	r = image_archive_read(fd, NULL, m, &verr);
	if (r == 0 && manifest_get_u64(*m, "generation", 0) != gen) {
		manifest_free(*m);
		*m = NULL;
		r = error_set(&verr, -EBADMSG, "it holds another generation");
	}
	if (r < 0) {
		unlink(tmp);
		return error_set(err, r, "generation %" PRIu64 " in the store is damaged: %s", gen,
		                 verr.msg);
	}
	if (fsync(fd) < 0 || rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		manifest_free(*m);
		*m = NULL;
		return error_set(err, r, "cannot store generation %" PRIu64 " in '%s': %s", gen,
		                 f->dir, strerror(-r));
	}
	(void)util_fsync_dir(f->dir);
	f->fetched[f->n_fetched++] = gen;
	f->bytes += o->size;
	return 0;
}

/* Makes generation gen restorable here: it and every generation below it
 * that its restore needs. */
static int fetch_chain(struct fetch *f, uint64_t gen, struct cryo_error *err)
{
	f->n_fetched = 0;
	uint64_t g = gen;
	for (unsigned depth = 0;; depth++) {
		if (depth > IMAGE_MAX_CHAIN)
			return error_set(err, -EBADMSG,
			                 "generation %" PRIu64
			                 " is built on a chain longer than %u",
			                 gen, IMAGE_MAX_CHAIN);
		struct manifest *m = NULL;
		int r;
		if (here(f, g)) {
			struct cryo_error merr = {{0}};
			r = image_store_read_manifest(f->dir, g, &m, &merr);
			if (r < 0)
				r = error_set(err, r, "generation %" PRIu64 " here is damaged: %s",
				              g, merr.msg);
		} else {
			r = fetch_one(f, g, &m, err);
		}
		if (r < 0)
			return r;
		uint64_t base = manifest_get_u64(m, "base", 0);
		manifest_free(m);
		if (!base)
			return 0;
		if (base >= g)
			return error_set(err, -EBADMSG,
			                 "generation %" PRIu64 " names a base that is not older",
			                 g);
		g = base;
	}
}

/* What a failed chain fetched goes: nothing can restore it. */
static void unfetch(struct fetch *f)
{
	for (size_t i = 0; i < f->n_fetched; i++) {
		char path[PATH_MAX];
		if (image_store_path(f->dir, f->fetched[i], path, sizeof(path)) == 0)
			unlink(path);
	}
	f->n_fetched = 0;
}

/* Generations here newer than the bound are no chain the store published: a
 * restore must not take them. They are set aside, not deleted. */
static void set_aside_newer(const char *dir, uint64_t upto)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (image_store_list(dir, &gens, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if (gens[i] <= upto)
			continue;
		char path[PATH_MAX], aside[PATH_MAX + 16];
		if (image_store_path(dir, gens[i], path, sizeof(path)) < 0)
			continue;
		snprintf(aside, sizeof(aside), "%s.unpublished", path);
		if (rename(path, aside) == 0)
			log_info("generation %" PRIu64
			         " here was never published: set aside as '%s'",
			         gens[i], aside);
	}
}

int64_t store_fetch_into(const struct store_config *sc, const char *name, const char *dir,
                         int dir_fd, uint64_t upto, const struct store_expect *expect,
                         size_t n_expect, struct cryo_error *err)
{
	struct fetch f = {
	    .sc = sc, .name = name, .dir = dir, .expect = expect, .n_expect = n_expect};
	_cleanup_free_ uint64_t *cand = NULL;
	int r = s3_client_new(&f.client, &sc->s3, err);
	if (r < 0)
		return r;
	char prefix[sizeof(sc->prefix) + 300];
	store_object_key(sc, name, "", prefix, sizeof(prefix));
	struct cryo_error lerr = {{0}};
	r = s3_list(f.client, sc->bucket, prefix, &f.list, &lerr);
	if (r < 0) {
		error_set(err, r, "cannot list %s/%s: %s", sc->url, name, lerr.msg);
		goto out;
	}
	/* The candidates, newest first. */
	cand = calloc(f.list.n + 1, sizeof(*cand));
	size_t n = 0;
	if (!cand) {
		r = error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < f.list.n; i++) {
		const char *k = f.list.items[i].key;
		uint64_t g = store_key_generation(k);
		if (g && !strchr(k + strlen(prefix), '/') && (!upto || g <= upto))
			cand[n++] = g;
	}
	for (size_t i = 1; i < n; i++) /* insertion sort, descending */
		for (size_t j = i; j > 0 && cand[j] > cand[j - 1]; j--) {
			uint64_t t = cand[j];
			cand[j] = cand[j - 1];
			cand[j - 1] = t;
		}
	if (upto)
		set_aside_newer(dir, upto);
	r = -ENOENT;
	error_set(err, r, "%s holds no generation of '%s'%s", sc->url, name,
	          upto ? " up to the published one" : "");
	for (size_t i = 0; i < n; i++) {
		uint64_t t0 = util_now_ns();
		f.bytes = 0;
		struct cryo_error cerr = {{0}};
		r = fetch_chain(&f, cand[i], &cerr);
		if (r == 0) {
			char size[32];
			if (f.n_fetched)
				log_info("fetched generation %" PRIu64
				         " of '%s' from %s (%zu object(s), "
				         "%s, in %.1f ms)",
				         cand[i], name, sc->url, f.n_fetched,
				         util_format_bytes(f.bytes, size, sizeof(size)),
				         (double)(util_now_ns() - t0) / 1e6);
			struct cryo_error oerr = {{0}};
			/* Generations restored from here are this directory's to
			 * upload from now on. */
			if (store_owner_claim(f.client, sc, name, dir_fd, &oerr) < 0)
				log_error(
				    "'%s' is restored from %s, but its prefix there could not be "
				    "claimed: %s",
				    name, sc->url, oerr.msg);
			err->msg[0] = '\0';
			s3_list_clear(&f.list);
			s3_client_free(f.client);
			return (int64_t)cand[i];
		}
		unfetch(&f);
		error_set(err, r, "%s", cerr.msg);
		if (i + 1 < n)
			log_info("generation %" PRIu64
			         " of '%s' in %s cannot be restored (%s); trying "
			         "generation %" PRIu64,
			         cand[i], name, sc->url, cerr.msg, cand[i + 1]);
	}
out:
	s3_list_clear(&f.list);
	s3_client_free(f.client);
	return r;
}

int64_t store_fetch(struct supervisor *s, uint64_t upto, struct cryo_error *err)
{
	if (!s->cfg->store)
		return error_set(err, -EINVAL, "no --store is given");
	const struct store_expect *expect = NULL;
	size_t n = lease_published_chain(s, &expect);
	return store_fetch_into(s->cfg->store, s->cfg->name, s->cfg->paths.dir, s->dir_fd, upto,
	                        expect, n, err);
}
