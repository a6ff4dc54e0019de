/* Checkpoints: dumping the running program through CRIU (and cryo's page
 * server), storing the image, and the program's own requests on its control
 * socket. */

#include "internal.h"
#include "cleanup.h"
#include "lazy.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <inttypes.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>

/* What a generation's manifest says besides its files: the workload, the
 * program, the machine, and the inodes of the program's channels, which the
 * restore must give back. */
void checkpoint_fill_manifest(struct supervisor *s, struct manifest *m, uint64_t gen,
                              enum checkpoint_trigger trigger,
                              const struct criu_glue_dump_stats *st)
{
	struct utsname u;
	uname(&u);
	uint64_t now = util_realtime_ns();
	/* The program's working directory; after a migration's dump the
	 * program is gone, and the one read before it stands. */
	char cwd[PATH_MAX];
	char link[64];
	snprintf(link, sizeof(link), "/proc/%d/cwd", program_pid(s));
	ssize_t n = readlink(link, cwd, sizeof(cwd) - 1);
	if (n > 0) {
		cwd[n] = '\0';
		snprintf(s->cwd, sizeof(s->cwd), "%s", cwd);
	}

	manifest_add(m, "name", s->cfg->name);
	manifest_addf(m, "generation", "%" PRIu64, gen);
	manifest_addf(m, "time", "%" PRIu64, now / UINT64_C(1000000000));
	manifest_add(m, "trigger", checkpoint_trigger_name(trigger));
	/* The retention it was stored under, for cryo images to tell the
	 * generations kept as the newest from those kept as their bases. */
	manifest_addf(m, "keep", "%u", s->cfg->keep);
	for (char **a = s->cfg->argv; *a; a++)
		manifest_add(m, "arg", *a);
	manifest_add(m, "cwd", s->cwd);
	manifest_addf(m, "criu_version", "%d.%d.%d", s->criu_version / 10000,
	              s->criu_version / 100 % 100, s->criu_version % 100);
	manifest_add(m, "kernel", u.release);
	manifest_add(m, "machine", u.machine);
	manifest_add(m, "hostname", u.nodename);
	manifest_addf(m, "frozen_us", "%" PRIu32, st->frozen_us);
	manifest_addf(m, "ino.stdin", "%" PRIu64, s->ino_stdin);
	manifest_addf(m, "ino.stdout", "%" PRIu64, s->ino_stdout);
	manifest_addf(m, "ino.stderr", "%" PRIu64, s->ino_stderr);
	manifest_addf(m, "ino.control", "%" PRIu64, s->ino_control);
	if (s->net.fd >= 0) {
		const struct net_config *nc = &s->net.cfg;
		char cidr[64], gw[INET6_ADDRSTRLEN] = "";
		net_format_cidr(nc, cidr, sizeof(cidr));
		manifest_add(m, "net.addr", cidr);
		if (nc->gateway.family)
			manifest_add(m, "net.gateway", net_format_ip(&nc->gateway, gw, sizeof(gw)));
		if (nc->bridge[0])
			manifest_add(m, "net.bridge", nc->bridge);
	}
}

/* How the program is dumped into images: its control socket's and network
 * namespace's other ends stay outside. Its TCP connections are dumped to
 * come back open only for a migration's frozen dump (move_connections), the
 * only image ever restored with them open; with its own namespace that dump
 * needs no CRIU network lock: the namespace is held off the network (its
 * link down) while it moves, so no connection is locked one by one. Every
 * other image (checkpoints, a migration's pre-copy, whose memory alone is
 * used) is restored after a crash with its connections closed, so CRIU
 * leaves them alone (tcp_close): locking and repairing each connection
 * froze a server for ~45 ms per connected client in the host's network
 * namespace. */
struct criu_glue_dump_opts checkpoint_dump_opts(struct supervisor *s, const char *images,
                                                bool leave_running, bool move_connections)
{
	return (struct criu_glue_dump_opts){
	    .pid = s->init_pid,
	    .images_dir = images,
	    .log_dir = s->cfg->paths.dir,
	    .log_name = "criu-dump.log",
	    .external_unix = &s->ino_control,
	    .n_external_unix = 1,
	    .external_net = s->net.fd >= 0 ? s->net.ino : 0,
	    .external_net_key = NET_CRIU_KEY,
	    .leave_running = leave_running,
	    .tcp_established = move_connections,
	    .tcp_close = !move_connections,
	    .network_lock_skip = move_connections && s->net.fd >= 0,
	    .page_server_fd = -1,
	};
}

/* What the remover thread does after a checkpoint. */
struct removal {
	char *images;      /* the dump files, removed */
	const char *store; /* the store, whose generation gen leaves the page cache */
	uint64_t gen;
};

static void *remove_main(void *arg)
{
	struct removal *rm = arg;
	util_rm_rf(rm->images);
	image_store_uncache(rm->store, rm->gen);
	free(rm->images);
	free(rm);
	return NULL;
}

/* Waits for the last checkpoint's remover thread, if one runs. */
void checkpoint_remove_wait(struct supervisor *s)
{
	if (s->removing)
		pthread_join(s->remover, NULL);
	s->removing = false;
}

/* After a checkpoint, in a thread of its own: its dump files go (freeing a
 * large file takes the file system tens of milliseconds), and its archive
 * leaves the page cache (7 to 10 ms per 128 MiB here); the reply need wait for
 * neither. */
static void remove_later(struct supervisor *s, const char *dir, uint64_t gen)
{
	checkpoint_remove_wait(s);
	struct removal *rm = malloc(sizeof(*rm));
	if (rm && (rm->images = strdup(dir))) {
		rm->store = s->cfg->paths.dir;
		rm->gen = gen;
		if (pthread_create(&s->remover, NULL, remove_main, rm) == 0)
			s->removing = true;
		else
			remove_main(rm); /* here, then */
		return;
	}
	free(rm);
	util_rm_rf(dir);
	image_store_uncache(s->cfg->paths.dir, gen);
}

void checkpoint_forget_hashes(struct supervisor *s)
{
	for (size_t i = 0; i < s->n_hashes; i++)
		free(s->hashes[i].hashes);
	free(s->hashes);
	s->hashes = NULL;
	s->n_hashes = 0;
}

/* The page hashes dd computed, for the next checkpoint (none: forgotten). */
static void checkpoint_keep_hashes(struct supervisor *s, struct delta_dir *dd)
{
	checkpoint_forget_hashes(s);
	struct page_hashes *v = calloc(dd->n_maps ? dd->n_maps : 1, sizeof(*v));
	if (!v)
		return;
	size_t n = 0;
	for (size_t i = 0; i < dd->n_maps; i++) {
		const char *name = dd->maps[i].name;
		if (strlen(name) >= sizeof(v[n].name))
			continue;
		v[n].hashes = delta_dir_take_hashes(dd, name, &v[n].n);
		if (!v[n].hashes)
			continue;
		snprintf(v[n].name, sizeof(v[n].name), "%s", name);
		n++;
	}
	s->hashes = v;
	s->n_hashes = n;
}

/* What the page hashes of the last checkpoint tell of this dump's memory
 * images: the pages each shares with it (criu-glue/pages.h). NULL: nothing. */
static struct delta_known *checkpoint_known(const struct supervisor *s,
                                            const struct criu_glue_pages *pages,
                                            const struct mem_file *mem, size_t n_mem)
{
	struct delta_known *known = calloc(n_mem ? n_mem : 1, sizeof(*known));
	for (size_t i = 0; known && i < n_mem; i++) {
		const struct mem_span *spans;
		size_t n;
		const char *from = criu_glue_pages_shared(pages, mem[i].name, &spans, &n);
		for (size_t k = 0; from && k < s->n_hashes; k++)
			if (!strcmp(s->hashes[k].name, from))
				known[i] = (struct delta_known){s->hashes[k].hashes, s->hashes[k].n,
				                                spans, n};
	}
	return known;
}

/* Tests: CRYO_INJECT_CHECKPOINT_FAULT=frozen:N makes the Nth checkpoint of
 * this supervisor fail while the program is frozen, after CRIU dumped it
 * (and re-armed the write tracking), as a held file over --files-max does. */
static int frozen_injected(void *data, struct cryo_error *err)
{
	(void)data;
	return error_set(err, -EIO, "fault injected while the program was frozen");
}

static bool inject_frozen_fault(void)
{
	static unsigned seen;
	const char *inject = getenv("CRYO_INJECT_CHECKPOINT_FAULT");
	unsigned n;
	seen++;
	return inject && sscanf(inject, "frozen:%u", &n) == 1 && n == seen;
}

/* Whether dumps track writes (criu-glue/pages.h): where CRIU can, unless
 * CRYO_TRACK=0 (scripts/bench compares both). */
static bool checkpoint_tracks(const struct supervisor *s)
{
	(void)s;
	const char *env = getenv("CRYO_TRACK");
	if (env && !strcmp(env, "0"))
		return false;
	return criu_glue_track_supported();
}

/* Memory made ready for a dump's pages, while the program still runs (see
 * criu-glue/pages.h); NULL: the pages go through files. */
static struct criu_glue_pages *checkpoint_pages(struct supervisor *s)
{
	const struct supervisor_config *cfg = s->cfg;
	struct criu_glue_pages *pages = NULL;
	if (cfg->dump_via_memory) {
		/* Not when the estimate failed, nor when the pages would take
		 * half of the memory left. */
		struct cryo_error cerr = {{0}};
		uint64_t expect = criu_glue_estimate_pages(s->init_pid);
		/* With the write tracking going, about as much as the last time:
		 * the pages it shares with the last dump stay where they are. */
		expect = criu_glue_track_expect(&s->track, expect);
		if (expect > 0 && expect < util_mem_available() / 2 &&
		    criu_glue_pages_start(expect + (expect >> 5), &s->spare, s->track.parent,
		                          &pages, &cerr) < 0) {
			log_debug("%s; dumping '%s' through files instead", cerr.msg, cfg->name);
			pages = NULL;
		}
		if (!pages) {
			criu_glue_track_drop(&s->track, NULL);
			criu_glue_spare_drop(&s->spare);
		}
	}
	return pages;
}

/* Checkpoints the running program. On any failure the program runs on and
 * the stored generations are as they were. Returns the new generation, or a
 * negative errno with the reason in err.
 * With early_reply (cryo_checkpoint_async()), the program is told RESULT 0 as
 * soon as it has been dumped, and *replied says whether that happened. */
int64_t checkpoint_take(struct supervisor *s, enum checkpoint_trigger trigger, bool early_reply,
                        bool *replied, struct cryo_error *err)
{
	const struct supervisor_config *cfg = s->cfg;
	if (!s->running)
		return error_set(err, -ESRCH, "the program is not running");
	int r = lazy_settle(s, err);
	if (r < 0)
		return r;
	/* The last dump's files are gone before this dump needs memory. */
	checkpoint_remove_wait(s);
	uint64_t t0 = util_now_ns();
	uint64_t gen;
	r = image_store_next_generation(cfg->paths.dir, &gen);
	if (r < 0)
		return error_set(err, r, "cannot read '%s': %s", cfg->paths.dir, strerror(-r));
	/* A number told to the program is never reused, even if its image
	 * could not be stored. */
	if (gen <= s->last_attempted)
		gen = s->last_attempted + 1;
	s->last_attempted = gen;
	char images[PATH_MAX];
	r = image_store_dump_path(cfg->paths.dir, gen, images, sizeof(images));
	if (r < 0)
		return error_set(err, r, "state directory path too long: %s", cfg->paths.dir);
	util_rm_rf(images);
	if (mkdir(images, 0700) < 0) {
		r = -errno;
		return error_set(err, r, "cannot create '%s': %s", images, strerror(-r));
	}
	supervisor_set_state(s, "checkpointing");
	struct cryo_error cerr = {{0}};
	/* Pages go to memory made ready now, while the program still runs
	 * (see criu-glue/pages.h), unless that memory is not to be had. */
	struct criu_glue_pages *pages = checkpoint_pages(s);
	struct delta_dir dd = {0};
	struct criu_glue_dump_opts o = checkpoint_dump_opts(s, images, true, false);
	uint64_t external[1 + UNIXSK_MAX_OUTSIDE] = {s->ino_control};
	_cleanup_free_ uint64_t *outside = NULL;
	size_t n_outside = 0;
	/* The files it holds open for writing, copied while it is frozen:
	 * those the base generation holds, as the blocks changed since. */
	const struct page_index *base =
	    cfg->incremental && s->index && s->chain < IMAGE_MAX_CHAIN ? s->index : NULL;
	struct files_capture held = {.root = s->init_pid,
	                             .images = images,
	                             .max = cfg->files_max,
	                             .policy = cfg,
	                             .mem = cfg->incremental ? &s->held : NULL,
	                             .base = base ? page_index_generation(base) : 0};
	o.hook = (struct criu_glue_frozen_hook){files_capture, &held};
	if (inject_frozen_fault())
		o.hook = (struct criu_glue_frozen_hook){frozen_injected, NULL};
	struct criu_glue_dump_stats st = {0};
	/* Where the time went, for --verbose: start, dump, eager pages, memory
	 * images read, stored (compressed, written, fsynced). */
	uint64_t tp[5] = {t0};
	for (int attempt = 0;; attempt++) {
		/* Its unix connections to processes outside (a local server's
		 * clients) are dumped as external: the dump leaves them be, and
		 * a restore hands them in ended. */
		free(TAKE_PTR(outside));
		/* Tests make the first look miss the connections, as it misses
		 * one made between the look and the freeze. */
		const char *inject = getenv("CRYO_INJECT_CHECKPOINT_FAULT");
		bool look = !(attempt == 0 && inject && !strcmp(inject, "unix-look-late"));
		n_outside = 0;
		if (look && unixsk_outside(s->init_pid, s->net.fd, s->ino_control, &outside,
		                           &n_outside) < 0)
			n_outside = 0; /* CRIU names any such connection, if there is one */
		if (n_outside > UNIXSK_MAX_OUTSIDE) {
			r = error_set(
			    err, -EMFILE,
			    "it holds %zu unix-socket connections to processes outside it, "
			    "and cryo keeps at most %d (fewer clients connected at once, then)",
			    n_outside, UNIXSK_MAX_OUTSIDE);
			goto out;
		}
		if (n_outside > 0) /* outside is NULL without any */
			memcpy(external + 1, outside, n_outside * sizeof(*outside));
		o.external_unix = external;
		o.n_external_unix = 1 + n_outside;
		o.page_server_fd = pages ? criu_glue_pages_fd(pages) : -1;
		o.track_mem = pages && checkpoint_tracks(s);
		r = criu_glue_dump(&o, &st, &cerr);
		if (r == 0 || attempt > 0 || !strstr(cerr.msg, "External socket is used"))
			break;
		/* A client connected between our look and the freeze: once
		 * more, with it. */
		files_capture_clear(&held);
		criu_glue_pages_free(pages, &s->spare);
		/* CRIU may have re-armed the tracking before it failed. */
		criu_glue_track_drop(&s->track, &s->spare);
		util_rm_rf(images);
		if (mkdir(images, 0700) < 0) {
			r = -errno;
			error_set(err, r, "cannot create '%s': %s", images, strerror(-r));
			pages = NULL;
			goto out;
		}
		pages = checkpoint_pages(s);
	}
	tp[1] = util_now_ns();
	/* A kill that reached the program while it was frozen can be in the
	 * image, pending: a generation whose every restore dies at once (the
	 * supervisor restoring it again and again was seen). The program is
	 * ending anyway: this checkpoint does not count. */
	if (r == 0 && program_gone(s)) {
		r = error_set(err, -ESRCH, "the program ended during the checkpoint");
		goto out;
	}
	/* cryo_checkpoint_async(): CRIU has let the program go, which may run
	 * on now; it learns about durability (or a failure from here on) from
	 * the DURABLE message that follows. */
	if (r == 0 && early_reply) {
		program_send(s, CRYO_MSG_RESULT, 0, gen);
		*replied = true;
	}
	if (r == 0 && pages)
		r = criu_glue_pages_finish(pages, &cerr);
	/* The page server's refusal (a page CRIU named as the last dump's that
	 * it does not hold, ...) is the cause of CRIU's failure then. */
	if (r < 0 && pages && criu_glue_pages_broken(pages, &cerr))
		log_debug("the page server stopped the dump of '%s': %s", cfg->name, cerr.msg);
	if (r < 0 && program_gone(s)) {
		/* CRIU then fails on whatever of the dead program it met first
		 * ("Can't open .../pagemap", "Unable to detach"): not the cause. */
		r = error_set(err, -ESRCH, "the program ended during the checkpoint");
		goto out;
	}
	if (r < 0) {
		error_set(err, r, "%s", cerr.msg);
		goto out;
	}
	const struct mem_file *mem = NULL;
	size_t n_mem = 0;
	if (pages)
		criu_glue_pages_files(pages, &mem, &n_mem);
	/* What a lazy restore needs at once, set apart while the files are
	 * whole. */
	r = criu_glue_eager_write(images, mem, n_mem, &cerr);
	if (r < 0) {
		error_set(err, r, "%s", cerr.msg);
		goto out;
	}
	tp[2] = util_now_ns();
	/* Held files stored as deltas against base: the generation is built
	 * on it, its memory too, whatever it shares. */
	bool file_deltas = false;
	r = files_capture_finish(&held, &file_deltas, &cerr);
	if (r < 0) {
		error_set(err, r, "%s", cerr.msg);
		goto out;
	}
	if (pages) {
		criu_glue_pages_files(pages, &mem, &n_mem);
		_cleanup_free_ struct delta_known *known = checkpoint_known(s, pages, mem, n_mem);
		r = delta_prepare_mem_known(mem, n_mem, gen, base, cfg->incremental, file_deltas,
		                            known, &dd);
		if (r < 0) {
			error_set(err, r, "cannot read the memory images: %s", strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	} else {
		r = (file_deltas ? delta_prepare_dir_on : delta_prepare_dir)(images, gen, base,
		                                                             cfg->incremental, &dd);
		if (r < 0) {
			error_set(err, r, "cannot read the memory images in '%s': %s", images,
			          strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	}
	if (file_deltas && !dd.incremental) {
		/* A memory with no pages: nothing to build on. */
		r = error_set(err, -EINVAL,
		              "the held files are stored against generation %" PRIu64
		              ", but the memory cannot be",
		              held.base);
		goto out;
	}
	tp[3] = util_now_ns();

	struct manifest *m = manifest_new();
	if (!m) {
		r = -ENOMEM;
		error_set(err, r, "out of memory");
		goto out;
	}
	checkpoint_fill_manifest(s, m, gen, trigger, &st);
	if (n_outside > 0) {
		char list[UNIXSK_MAX_OUTSIDE * 21 + 1], *p = list;
		for (size_t i = 0; i < n_outside; i++)
			p += sprintf(p, "%s%" PRIu64, i ? " " : "", outside[i]);
		manifest_add(m, MANIFEST_UNIX_OUTSIDE, list);
	}
	r = files_describe(&held, m);
	if (r < 0) {
		manifest_free(m);
		error_set(err, r, "out of memory");
		goto out;
	}
	if (dd.incremental) {
		delta_describe(&dd, page_index_generation(base), m);
		manifest_addf(m, "chain", "%u", s->chain + 1);
	}
	struct cryo_error ierr = {{0}};
	struct image_write_stats ws = {0};
	if (!s->writer)
		s->writer = image_writer_new(); /* without it, the archive's own */
	r = image_store_commit(cfg->paths.dir, gen, images, mem, n_mem, m, cfg->zstd_level, 2,
	                       s->writer, &ws, &ierr);
	tp[4] = util_now_ns();
	manifest_free(m);
	if (r < 0) {
		error_set(err, r, "cannot store the image: %s",
		          ierr.msg[0] ? ierr.msg : strerror(-r));
		goto out;
	}
	/* After cryo run --fresh, the earlier run's generations go once this
	 * run has one of its own. */
	r = image_store_prune(cfg->paths.dir, cfg->keep,
	                      s->min_generation <= gen ? s->min_generation : 0);
	if (r < 0)
		log_error("checkpoint %" PRIu64
		          " of '%s' is stored, but older generations could not "
		          "be pruned: %s",
		          gen, cfg->name, strerror(-r));
	upload_wake(s);
	r = 0;
	if (cfg->incremental) {
		s->chain = dd.incremental ? s->chain + 1 : 0;
		page_index_free(s->index);
		s->index = TAKE_PTR(dd.index);
	}
	checkpoint_keep_hashes(s, &dd);
	if (cfg->incremental)
		files_memory_take(&s->held, &held, gen);
	s->restarts_in_a_row = 0;
	s->current_generation = gen;
	s->have_last = true;
	s->last = (struct last_checkpoint){
	    .generation = gen,
	    .time_ns = util_realtime_ns(),
	    .size = ws.archive_bytes,
	    .raw_size = ws.raw_bytes,
	    .frozen_us = st.frozen_us,
	    .duration_ns = util_now_ns() - t0,
	    .trigger = trigger,
	};
out:
	files_capture_clear(&held);
	delta_dir_clear(&dd);
	const char *via = !pages ? "through files"
	                  : criu_glue_pages_reused(pages)
	                      ? "through cryo's page server, into the last checkpoint's memory"
	                      : "through cryo's page server";
	if (r == 0 && o.track_mem) {
		uint64_t received = 0, from_parent = 0;
		criu_glue_pages_counts(pages, &received, &from_parent);
		log_debug("checkpoint %" PRIu64 " of '%s': %" PRIu64
		          " KiB of memory sent by CRIU, %" PRIu64
		          " KiB unchanged since the checkpoint before",
		          gen, cfg->name, received >> 10, from_parent >> 10);
		criu_glue_track_next(&s->track, TAKE_PTR(pages), &s->spare);
	} else {
		/* A failed dump may have re-armed the tracking: the next one is
		 * whole. After one without tracking (through files), the last
		 * dump is no longer the parent its hashes would be taken for. */
		criu_glue_track_drop(&s->track, &s->spare);
	}
	criu_glue_pages_free(pages, &s->spare);
	if (r == 0) {
		remove_later(s, images, gen);
		double ms[4];
		for (int i = 0; i < 4; i++)
			ms[i] = (double)(tp[i + 1] - tp[i]) / 1e6;
		log_debug("checkpoint %" PRIu64 " of '%s' (%s): CRIU %.1f ms (frozen %.1f), eager "
		          "pages %.1f, memory images read %.1f, compressed and written %.1f, fsync "
		          "%.1f",
		          gen, cfg->name, via, ms[0], (double)st.frozen_us / 1e3, ms[1], ms[2],
		          ms[3] - (double)ws.sync_ns / 1e6, (double)ws.sync_ns / 1e6);
	} else {
		util_rm_rf(images);
	}
	if (s->running)
		supervisor_set_state(s, "running");
	if (r == 0 && trigger != TRIGGER_STOP && trigger != TRIGGER_MIGRATE)
		standby_prepare(s);
	return r < 0 ? r : (int64_t)gen;
}

/* What internal.h says. */
void checkpoint_log(struct supervisor *s, enum checkpoint_trigger trigger, bool told)
{
	char size[32];
	void (*log)(const char *, ...) = trigger == TRIGGER_TIMER || told ? log_debug : log_info;
	log("checkpoint %" PRIu64 " of '%s' stored (%s, %s, frozen %.1f ms, durable after %.1f ms)",
	    s->last.generation, s->cfg->name, checkpoint_trigger_name(trigger),
	    util_format_bytes(s->last.size, size, sizeof(size)), (double)s->last.frozen_us / 1000,
	    (double)s->last.duration_ns / 1e6);
}

/* Answers the program's request on its control socket (cryo_checkpoint()
 * or cryo_checkpoint_async()): one per turn of the loop. */
void checkpoint_handle_control(struct supervisor *s)
{
	for (;;) {
		ssize_t n = read(s->control, s->control_buf + s->control_len,
		                 sizeof(s->control_buf) - s->control_len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			n = 0;
		}
		if (n == 0) {
			/* The program closed its control socket: it will not call us. */
			ep_del(s, s->control);
			return;
		}
		s->control_len += (size_t)n;
		if (s->control_len < sizeof(struct cryo_msg))
			continue;
		struct cryo_msg req;
		memcpy(&req, s->control_buf, sizeof(req));
		s->control_len = 0;
		bool async = req.type == CRYO_MSG_CHECKPOINT_ASYNC;
		if (req.magic != CRYO_MSG_MAGIC || (req.type != CRYO_MSG_CHECKPOINT && !async)) {
			log_error("'%s' sent garbage on its control socket; ignored", s->cfg->name);
			program_send(s, CRYO_MSG_RESULT, -EPROTO, s->current_generation);
			continue;
		}
		struct cryo_error err = {{0}};
		bool replied = false;
		int64_t g = checkpoint_take(s, TRIGGER_PROGRAM, async, &replied, &err);
		if (g < 0)
			log_error(
			    "cannot checkpoint '%s': %s; the program runs on, generation %" PRIu64
			    " stays the newest",
			    s->cfg->name, err.msg, s->current_generation);
		else
			checkpoint_log(s, TRIGGER_PROGRAM, false);
		/* With --store-sync the news waits for the store. */
		if (g >= 0 && store_sync_program(s, (uint64_t)g, replied))
			return;
		if (replied)
			program_send(s, CRYO_MSG_DURABLE, g, s->current_generation);
		else
			program_send(s, CRYO_MSG_RESULT, g < 0 ? g : 0,
			             g < 0 ? s->current_generation : (uint64_t)g);
		/* One request per turn of the loop: a program that asks again at
		 * once must not starve its own output and the commands. */
		return;
	}
}
