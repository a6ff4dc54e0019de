/* A lazy restore: the program runs again before its memory is back; CRIU's
 * lazy pages come from the archive as they are needed (criu-glue/lazy.c
 * serves them), and a thread checks the whole memory once it is in. */

#include "internal.h"
#include "cleanup.h"
#include "chain.h"
#include "lazy.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <inttypes.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <sys/wait.h>

/* A lazy restore whose memory is still on its way: the archive being
 * decompressed (images), its pages put in place from it (glue). */
struct lazy_restore {
	struct image_chain *images;
	struct criu_glue_lazy *glue;
	int efd; /* eventfd: the pages are in place, then: the check is done */
	char dir[PATH_MAX];
	uint64_t gen, t0;
	/* Once the pages are in place, a thread checks the memory (all of it
	 * verified, an incremental generation's rebuilt images too, the page
	 * index built), away from the supervisor's loop. */
	pthread_t checker;
	bool checked;  /* the check began */
	bool checking; /* in checker, to be joined */
	int glue_r, check_r;
	struct cryo_error cerr;
	struct cryo_error ierr;
	struct page_index *idx;
	unsigned chain;
	uint64_t bad;
	bool stall;     /* CRYO_INJECT_LAZY_FAULT=stall (below) */
	bool cancelled; /* (atomic) being freed: a stall ends */
};

/* ---- lazy restore ------------------------------------------------------------ */

/* Where the page server finds a memory image's bytes: in the archive's
 * decompression, once it got that far. */
/* Fault injection for tests, in SQLite's manner: CRYO_INJECT_LAZY_FAULT=
 * "stall" makes the first lazy page asked for wait (up to 60 s, or until the
 * restore is ended), as a page that does not come would: the restore stays
 * under way. */
static void injected_stall(struct lazy_restore *lz)
{
	if (!lz->stall)
		return;
	lz->stall = false;
	for (int i = 0; i < 6000 && !__atomic_load_n(&lz->cancelled, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
}

static int64_t lazy_get(void *ctx, const char *name, uint64_t off, uint64_t len, struct iovec *iov,
                        int max_iov, int *n_iov)
{
	struct lazy_restore *lz = ctx;
	injected_stall(lz);
	return image_chain_get(lz->images, name, off, len, iov, max_iov, n_iov);
}

static void lazy_put(void *ctx, const char *name, uint64_t off, uint64_t len)
{
	struct lazy_restore *lz = ctx;
	image_chain_release(lz->images, name, off, len);
}

static void lazy_free(struct lazy_restore *lz)
{
	if (!lz)
		return;
	__atomic_store_n(&lz->cancelled, true, __ATOMIC_RELEASE);
	if (lz->images)
		image_chain_cancel(lz->images);
	criu_glue_lazy_free(lz->glue);
	image_chain_free(lz->images);
	if (lz->efd >= 0)
		close(lz->efd);
	if (lz->dir[0])
		util_rm_rf(lz->dir);
	free(lz);
}

static void *lazy_check_main(void *arg)
{
	struct lazy_restore *lz = arg;
	lz->check_r = image_chain_finish(lz->images, &lz->idx, &lz->chain, &lz->bad, &lz->ierr);
	uint64_t one = 1;
	if (write(lz->efd, &one, sizeof(one)) < 0) {
		/* An eventfd of ours: it does not fail. */
	}
	return NULL;
}

/* The pages are in place (or cannot be): what the glue says, then the
 * memory's check in a thread (its end comes as EV_LAZY_CHECKED). */
void lazy_check_start(struct supervisor *s)
{
	struct lazy_restore *lz = s->lazy;
	if (!lz || lz->checked)
		return;
	lz->checked = true;
	uint64_t v;
	if (read(lz->efd, &v, sizeof(v)) < 0) {
		/* Not fired yet (lazy_settle() timed out): checked as it stands. */
	}
	lz->glue_r = criu_glue_lazy_finish(lz->glue, &lz->cerr);
	if (lz->glue_r < 0)
		image_chain_cancel(lz->images);
	lz->bad = lz->gen;
	ep_mod(s, lz->efd, EPOLLIN, EV_LAZY_CHECKED);
	if (pthread_create(&lz->checker, NULL, lazy_check_main, lz) == 0) {
		lz->checking = true;
		return;
	}
	lazy_check_main(lz); /* no thread to be had: here, then */
}

/* Ends the lazy restore in progress, if any. Without abort, once the pages
 * are in place: waits for the memory's check; if not all the memory came, or
 * intact, the program cannot run on (what never came reads as zeros) and is
 * killed, to be restored again. With abort: the program is gone already. */
int lazy_end(struct supervisor *s, bool abort)
{
	const struct supervisor_config *cfg = s->cfg;
	if (!abort)
		lazy_check_start(s);
	struct lazy_restore *lz = TAKE_PTR(s->lazy);
	if (!lz)
		return 0;
	ep_del(s, lz->efd);
	if (abort && lz->images)
		image_chain_cancel(lz->images);
	if (lz->checking)
		pthread_join(lz->checker, NULL);
	int r = 0;
	if (!abort) {
		r = lz->glue_r;
		int ri = lz->check_r;
		if (ri == -EBADMSG) {
			log_error("generation %" PRIu64
			          " of '%s' turned out damaged while its memory "
			          "was coming back (%s); set aside as gen-%012" PRIu64
			          ".cryo.damaged, restoring again",
			          lz->bad, cfg->name, lz->ierr.msg, lz->bad);
			image_store_set_aside(cfg->paths.dir, lz->bad);
			r = ri;
		} else if (r < 0) {
			log_error(
			    "the memory of '%s' could not be restored lazily: %s; restoring again",
			    cfg->name, lz->cerr.msg);
		} else if (ri < 0) {
			log_error("the memory of '%s' could not be checked (%s); restoring again",
			          cfg->name, lz->ierr.msg[0] ? lz->ierr.msg : strerror(-ri));
			r = ri;
		}
		if (r < 0) {
			/* Gone before its userfaultfds close (lazy_free()): its faults
			 * would read zeros then. The namespace's init exits after every
			 * process in it; its status stays for handle_exit(). */
			if (s->running) {
				kill(s->init_pid, SIGKILL);
				siginfo_t si;
				while (waitid(P_PID, (id_t)s->init_pid, &si, WEXITED | WNOWAIT) <
				           0 &&
				       errno == EINTR)
					;
			}
		} else {
			struct criu_glue_lazy_stats st;
			criu_glue_lazy_stats(lz->glue, &st);
			log_debug("all the memory of '%s' is back, %.1f ms after its restore began "
			          "(%" PRIu64 " lazy pages; %" PRIu64
			          " faults brought %.1f MB, the "
			          "background %.1f MB, in %.1f ms: %.1f ms getting pages, %.1f ms "
			          "copying; %" PRIu64 " zero pages, %" PRIu64 " map changes)",
			          cfg->name, (double)(util_now_ns() - lz->t0) / 1e6, st.lazy_pages,
			          st.faults, (double)st.fault_bytes / 1e6,
			          (double)st.background_bytes / 1e6, (double)st.ns / 1e6,
			          (double)st.get_ns / 1e6, (double)st.copy_ns / 1e6, st.zero_pages,
			          st.events);
			page_index_free(s->index);
			s->index = TAKE_PTR(lz->idx);
			s->chain = lz->chain;
		}
	}
	page_index_free(lz->idx);
	lazy_free(lz);
	if (r == 0 && !abort)
		standby_prepare(s);
	return r;
}

/* Before anything dumps the program: its memory must be all there. */
int lazy_settle(struct supervisor *s, struct cryo_error *err)
{
	if (!s->lazy)
		return 0;
	struct pollfd p = {s->lazy->efd, POLLIN, 0};
	int n;
	while ((n = poll(&p, 1, 120000)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return error_set(err, -EBUSY, "its memory is still being restored after 120 s");
	int r = lazy_end(s, false);
	return r < 0 ? error_set(err, r,
	                         "its memory could not be restored in full; it is being "
	                         "restored again")
	             : 0;
}

/* Restores generation gen with its memory to follow (from the generations
 * it is built on too, if it is incremental). Returns 0, or -EBADMSG for a
 * damaged image, or -EAGAIN when it is not to be restored this way (an
 * image of format 1 or without its eager pages, a lazy-pages socket that
 * cannot be set up): the caller restores it in full. */
int restore_lazily(struct supervisor *s, uint64_t gen)
{
	const struct supervisor_config *cfg = s->cfg;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	if (image_store_read_manifest(cfg->paths.dir, gen, &m, &ierr) < 0)
		return -EAGAIN; /* the full restore says what is wrong */
	_cleanup_manifest_ struct manifest *mf = m;
	struct lazy_restore *lz = calloc(1, sizeof(*lz));
	if (!lz)
		return -EAGAIN;
	const char *inject = getenv("CRYO_INJECT_LAZY_FAULT");
	*lz = (struct lazy_restore){.efd = -1,
	                            .gen = gen,
	                            .t0 = util_now_ns(),
	                            .stall = inject && strcmp(inject, "stall") == 0};
	struct cryo_error err = {{0}}, cerr = {{0}};
	int r = restore_make_dir(s, gen, lz->dir, sizeof(lz->dir));
	if (r < 0) {
		lz->dir[0] = '\0';
		goto full;
	}
	uint64_t bad = gen;
	r = image_chain_open(cfg->paths.dir, gen, lz->dir, cfg->incremental, &lz->images, &bad,
	                     &ierr);
	if (r == 0) {
		bad = gen;
		r = image_chain_wait_files(lz->images, &ierr);
	}
	if (r == -EBADMSG) {
		log_error("generation %" PRIu64 " of '%s' is damaged (%s); set aside as "
		          "gen-%012" PRIu64 ".cryo.damaged",
		          bad, cfg->name, ierr.msg, bad);
		lazy_free(lz);
		image_store_set_aside(cfg->paths.dir, bad);
		return r;
	}
	if (r < 0) {
		error_set(&err, r, "%s", ierr.msg[0] ? ierr.msg : strerror(-r));
		goto full;
	}
	r = criu_glue_eager_apply(lz->dir, &cerr);
	if (r == 0) {
		lz->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		struct criu_glue_lazy_opts o = {
		    .images_dir = lz->dir,
		    .work_dir = cfg->paths.dir,
		    .source = {lazy_get, lazy_put, lz},
		    .notify_fd = lz->efd,
		};
		r = lz->efd < 0 ? -errno : criu_glue_lazy_start(&o, &lz->glue, &cerr);
	}
	if (r < 0) {
		error_set(&err, r, "%s", cerr.msg[0] ? cerr.msg : strerror(-r));
		goto full;
	}
	r = restore_dir(s, lz->dir, mf, false, lz->glue, &err);
	if (r == -EINTR) {
		log_error("the restore of generation %" PRIu64 " of '%s' was given up: %s", gen,
		          cfg->name, err.msg);
		lazy_free(lz);
		return r;
	}
	if (r < 0)
		goto full; /* a damaged piece of memory among other causes: read in full, the
		            * whole image is checked */
	criu_glue_lazy_go(lz->glue);
	ep_add(s, lz->efd, EPOLLIN, EV_LAZY);
	s->lazy = lz;
	/* The page index comes when all the memory is in (lazy_end()). */
	page_index_free(s->index);
	s->index = NULL;
	return 0;
full:
	if (err.msg[0])
		log_info("cannot restore generation %" PRIu64 " of '%s' lazily (%s); restoring "
		         "it in full",
		         gen, cfg->name, err.msg);
	lazy_free(lz);
	return -EAGAIN;
}
