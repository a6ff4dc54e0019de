/* Restores: the newest intact generation after a crash or for cryo restore
 * (falling back to older ones), in full or lazily (restore-lazy.c), and the
 * next restore made ready while the program runs (the standby). */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <inttypes.h>
#include <sys/un.h>

/* Restores generation gen, after a crash or for cryo restore: its TCP
 * connections come back closed. Returns 0, -EBADMSG for a damaged image, or
 * another negative errno when CRIU could not restore it. */
static int restore_generation(struct supervisor *s, uint64_t gen)
{
	const struct supervisor_config *cfg = s->cfg;
	/* A program that died while its memory was still coming. */
	lazy_end(s, true);
	int r = cfg->lazy_restore ? restore_lazily(s, gen) : -EAGAIN;
	if (r == 0)
		goto restored;
	if (r != -EAGAIN)
		return r;
	char dir[PATH_MAX];
	r = restore_make_dir(s, gen, dir, sizeof(dir));
	if (r < 0)
		return r;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	r = image_store_extract(cfg->paths.dir, gen, dir, &m, &ierr);
	if (r < 0) {
		util_rm_rf(dir);
		if (r == -EBADMSG)
			log_error("generation %" PRIu64 " of '%s' is damaged (%s); set aside as "
			          "gen-%012" PRIu64 ".cryo.damaged",
			          gen, cfg->name, ierr.msg, gen);
		else
			log_error("cannot read generation %" PRIu64 " of '%s': %s", gen, cfg->name,
			          ierr.msg[0] ? ierr.msg : strerror(-r));
		if (r == -EBADMSG)
			image_store_set_aside(cfg->paths.dir, gen);
		return r;
	}
	unsigned chain = (unsigned)manifest_get_u64(m, "chain", 0);
	struct cryo_error err = {{0}};
	r = restore_dir(s, dir, m, false, NULL, &err);
	manifest_free(m);
	if (r == 0 && cfg->incremental) {
		/* The rebuilt memory images are the base of the next incremental
		 * checkpoint_take (the program runs already). */
		page_index_free(s->index);
		s->index = NULL;
		if (delta_index_dir(dir, gen, &s->index) < 0)
			s->index = NULL;
		s->chain = chain;
	}
	util_rm_rf(dir);
	if (r < 0) {
		log_error("cannot restore generation %" PRIu64 " of '%s': %s", gen, cfg->name,
		          err.msg);
		return r;
	}
	standby_prepare(s);
restored:
	s->current_generation = gen;
	program_send(s, CRYO_MSG_RESULT, 1, gen);
	program_publish_pid(s);
	supervisor_set_state(s, "running");
	return 0;
}

bool restore_has_generation(struct supervisor *s)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	/* One that cannot be listed is there as far as we know: the restore
	 * that follows says why it cannot read them. */
	if (image_store_list(s->cfg->paths.dir, &gens, &n) < 0)
		return true;
	return n > 0 && gens[n - 1] >= s->min_generation;
}

/* Restores the newest intact generation (or cfg->resume_generation), falling
 * back to older ones. Returns -ENOENT when there is none. */
int restore_newest(struct supervisor *s, uint64_t only)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n;
	int r = image_store_list(s->cfg->paths.dir, &gens, &n);
	if (r < 0) {
		log_error("cannot list the images of '%s' in '%s': %s", s->cfg->name,
		          s->cfg->paths.dir, strerror(-r));
		return r;
	}
	supervisor_set_state(s, "restoring");
	bool tried = false;
	for (size_t i = n; i-- > 0;) {
		if ((only && gens[i] != only) || gens[i] < s->min_generation)
			continue;
		tried = true;
		uint64_t t0 = util_now_ns();
		r = restore_generation(s, gens[i]);
		if (r == 0) {
			log_info("restored '%s' from generation %" PRIu64
			         " in %.1f ms (program PID %d%s)",
			         s->cfg->name, gens[i], (double)(util_now_ns() - t0) / 1e6,
			         program_pid(s), s->lazy ? "; its memory follows lazily" : "");
			return 0;
		}
		if (only || r == -EINTR) /* -EINTR: a stop was asked for */
			break;
		if (i > 0 && gens[i - 1] >= s->min_generation)
			log_info("trying generation %" PRIu64 " of '%s' instead", gens[i - 1],
			         s->cfg->name);
	}
	supervisor_set_state(s, "failed");
	if (only && !tried) {
		log_error("'%s' has no generation %" PRIu64 " in '%s' (see: cryo images %s)",
		          s->cfg->name, only, s->cfg->paths.dir, s->cfg->name);
		return -ENOENT;
	}
	return tried ? -EIO : -ENOENT;
}
