/* cryo migrate, on the source: offers the program to the target, pre-copies
 * it, freezes and sends it, and runs it here again if the move fails. The
 * protocol is drawn in runtime/migrate.h. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "migrate.h"
#include "store.h"
#include "util.h"

#include <inttypes.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- migration -------------------------------------------------------------- */

/* Connects to host:port within timeout_ms. */
static int connect_to(const char *target, int timeout_ms, struct cryo_error *err)
{
	struct addrinfo *ai = NULL;
	struct cryo_error cause = {{0}};
	int g = net_resolve(target, false, &ai, &cause);
	if (g == -EINVAL)
		return error_set(err, g, "'%s' is not HOST:PORT", target);
	if (g < 0)
		return error_set(err, g, "cannot resolve '%s': %s", target, cause.msg);
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int r = fd < 0 ? -errno : 0;
	if (r == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		r = -errno;
		if (r == -EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int so_error = 0;
			socklen_t el = sizeof(so_error);
			if (poll(&p, 1, timeout_ms) <= 0)
				r = -ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &el) < 0 ||
			         so_error)
				r = -(so_error ? so_error : errno);
			else
				r = 0;
		}
	}
	freeaddrinfo(ai);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return error_set(err, r, "cannot connect to %s: %s (is cryo serve running there?)",
		                 target, strerror(-r));
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

struct migration_out {
	struct supervisor *s;
	struct client *client; /* the cryo migrate that asked, for progress lines */
	uint64_t t0;
	struct json_object *phases; /* each phase's name and milliseconds */
	uint64_t phase_t0;
};

/* A phase of the migration ended: it goes into the final report, and out to
 * cryo migrate at once. */
static void phase_done(struct migration_out *mo, const char *name)
{
	uint64_t now = util_now_ns();
	double ms = (double)(now - mo->phase_t0) / 1e6;
	cryo_json_add(mo->phases, name, cryo_json_ms(ms));
	struct json_object *ev = json_object_new_object();
	cryo_json_add(ev, "event", json_object_new_string("phase"));
	cryo_json_add(ev, "phase", json_object_new_string(name));
	cryo_json_add(ev, "ms", cryo_json_ms(ms));
	status_reply(mo->client, ev);
	mo->phase_t0 = now;
}

static void report_progress(void *arg, uint64_t sent, uint64_t raw_done, uint64_t raw_total)
{
	struct migration_out *mo = arg;
	struct json_object *ev = json_object_new_object();
	cryo_json_add(ev, "event", json_object_new_string("progress"));
	cryo_json_add(ev, "sent", json_object_new_uint64(sent));
	cryo_json_add(ev, "raw_done", json_object_new_uint64(raw_done));
	cryo_json_add(ev, "raw_total", json_object_new_uint64(raw_total));
	cryo_json_add(ev, "ms", cryo_json_ms((double)(util_now_ns() - mo->phase_t0) / 1e6));
	status_reply(mo->client, ev);
}

/* Where a migration's dump goes (with extra bytes of the files it holds):
 * memory when it fits comfortably. */
static int make_migrate_dir(struct supervisor *s, uint64_t extra, char *dir, size_t len)
{
	char tag[128], fallback[PATH_MAX];
	snprintf(tag, sizeof(tag), "migrate-%s", s->cfg->name);
	int r = util_format_path(fallback, sizeof(fallback), "%s/.migrate", s->cfg->paths.dir);
	if (r < 0)
		return r;
	return util_scratch_dir(criu_glue_estimate_pages(s->init_pid) + extra, tag, fallback, dir,
	                        len);
}

/* The settings that travel with the workload. */
static void add_settings(const struct supervisor_config *cfg, struct manifest *m)
{
	manifest_addf(m, "set.policy", "%d", (int)cfg->policy);
	manifest_addf(m, "set.max_restarts", "%u", cfg->max_restarts);
	manifest_addf(m, "set.keep", "%u", cfg->keep);
	manifest_addf(m, "set.every_ns", "%" PRIu64, cfg->every_ns);
	manifest_addf(m, "set.zstd_level", "%d", cfg->zstd_level);
	manifest_addf(m, "set.files_max", "%" PRIu64, cfg->files_max);
	manifest_addf(m, "set.files", "%d", (int)cfg->files);
	for (size_t i = 0; i < cfg->n_files_skip; i++)
		manifest_addf(m, "set.files_skip", "%s", cfg->files_skip[i]);
	manifest_addf(m, "set.incremental", "%d", cfg->incremental);
	manifest_addf(m, "set.lazy_restore", "%d", cfg->lazy_restore);
	manifest_addf(m, "set.dump_via_memory", "%d", cfg->dump_via_memory);
}

static int read_cpuinfo(char **ret, size_t *ret_len, struct cryo_error *err)
{
	char dir[] = "/tmp/cryo-cpuinfo-XXXXXX";
	if (!mkdtemp(dir))
		return error_set(err, -errno, "cannot make a temporary directory: %m");
	int r = criu_glue_cpuinfo_dump(dir, err);
	if (r == 0) {
		char path[64];
		snprintf(path, sizeof(path), "%s/cpuinfo.img", dir);
		r = util_read_file(path, ret, ret_len);
		if (r < 0)
			error_set(err, r, "cannot read '%s': %s", path, strerror(-r));
	}
	util_rm_rf(dir);
	return r;
}

/* Tests forge a field of the offer (see migrate_fault_arg()). */
static int forge_offer(struct manifest *m)
{
	const char *forged = migrate_fault_arg("offer:");
	const char *eq = forged ? strchr(forged, '=') : NULL;
	if (!eq)
		return 0;
	_cleanup_free_ char *key = strndup(forged, (size_t)(eq - forged));
	if (!key)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], key) != 0)
			continue;
		char *v = strdup(eq + 1);
		if (!v)
			return -ENOMEM;
		free(m->values[i]);
		m->values[i] = v;
		return 0;
	}
	return manifest_add(m, key, eq + 1);
}

/* Asks the target whether it can take the program, whose files held open
 * for writing (listed in held) go with it; *gen gets the generation number
 * the target will store it as. */
static int offer(struct migration_out *mo, struct channel *c, bool precopy,
                 const struct files_capture *held, uint64_t *gen, struct cryo_error *err)
{
	struct supervisor *s = mo->s;
	struct manifest *m = manifest_new();
	if (!m)
		return error_set(err, -ENOMEM, "out of memory");
	struct criu_glue_dump_stats none = {0};
	checkpoint_fill_manifest(s, m, 0, TRIGGER_MIGRATE, &none);
	add_settings(s->cfg, m);
	if (precopy)
		manifest_add(m, "precopy", "1");
	_cleanup_free_ char *text = NULL, *cpu = NULL;
	size_t text_len, cpu_len;
	int r = 0;
	for (size_t i = 0; i < held->n && r == 0; i++)
		if (manifest_addf(m, MIGRATE_HELD_KEY, "%" PRIu64 " %s", held->files[i].size,
		                  held->files[i].path) < 0)
			r = error_set(err, -ENOMEM, "out of memory");
	if (r == 0)
		r = migrate_describe(s->init_pid, m, err);
	if (r == 0 && forge_offer(m) < 0)
		r = error_set(err, -ENOMEM, "out of memory");
	if (r == 0)
		r = manifest_to_text(m, &text, &text_len);
	manifest_free(m);
	if (r == 0)
		r = read_cpuinfo(&cpu, &cpu_len, err);
	if (r == 0)
		r = channel_send(c, MSG_OFFER, text, text_len, err);
	if (r == 0)
		r = channel_send(c, MSG_CPUINFO, cpu, cpu_len, err);
	if (r < 0)
		return r;
	uint8_t type;
	const uint8_t *data;
	size_t n;
	r = channel_recv(c, &type, &data, &n, MIGRATE_ANSWER_MS, err);
	if (r < 0)
		return r;
	if (type == MSG_REFUSE)
		return error_set(err, -EPERM, "the target refused: %.*s", (int)n,
		                 (const char *)data);
	uint64_t le;
	if (type != MSG_ACCEPT || n != sizeof(le))
		return error_set(err, -EPROTO, "the target answered the offer with message %u",
		                 type);
	memcpy(&le, data, sizeof(le));
	*gen = le64toh(le);
	return 0;
}

/* Waits for the target's answer to an image: want, or FAILED and its reason
 * (the restore may take a while). */
static int await_answer(struct channel *c, uint8_t want, struct cryo_error *err)
{
	uint8_t type;
	const uint8_t *data;
	size_t n;
	int r = channel_recv(c, &type, &data, &n, 4 * MIGRATE_ANSWER_MS, err);
	if (r < 0 || type == want)
		return r;
	if (type == MSG_FAILED)
		return error_set(err, -EIO, "%.*s", (int)n, (const char *)data);
	return error_set(err, -EIO, "the target answered with message %u", type);
}

/* Pre-copy: a dump taken while the program runs on (and stays on the
 * network) is sent whole before the freeze; the image taken frozen then
 * only carries the pages that changed since. *index gets the pages of the
 * one sent. */
static int precopy(struct migration_out *mo, struct channel *c, uint64_t gen,
                   struct page_index **index, struct cryo_error *err)
{
	struct supervisor *s = mo->s;
	char dir[PATH_MAX];
	int r = make_migrate_dir(s, 0, dir, sizeof(dir));
	if (r < 0)
		return error_set(err, r, "cannot make a directory for the dump: %s", strerror(-r));
	struct criu_glue_dump_opts o = checkpoint_dump_opts(s, dir, true, false);
	struct criu_glue_dump_stats st = {0};
	struct cryo_error cerr = {{0}};
	struct delta_dir dd = {0};
	struct manifest *m = NULL;
	r = criu_glue_dump(&o, &st, &cerr);
	if (r < 0) {
		error_set(err, r, "%s", cerr.msg);
		goto out;
	}
	r = delta_prepare_dir(dir, gen, NULL, true, &dd);
	if (r == 0 && !(m = manifest_new()))
		r = -ENOMEM;
	if (r < 0) {
		error_set(err, r, "cannot read the dumped memory: %s", strerror(-r));
		goto out;
	}
	checkpoint_fill_manifest(s, m, gen, TRIGGER_MIGRATE, &st);
	add_settings(s->cfg, m);
	struct migrate_progress progress = {report_progress, mo};
	r = migrate_send_image(c, dir, dd.files, dd.n_files, m, &progress, NULL, err);
	if (r == 0)
		r = await_answer(c, MSG_ACCEPT, err);
	if (r == 0)
		*index = TAKE_PTR(dd.index);
out:
	manifest_free(m);
	delta_dir_clear(&dd);
	util_rm_rf(dir);
	return r;
}

/* After a failed migration: the program runs here again, from its dump,
 * with the neighbour entries its namespace had before it went off the
 * network (the link's going down dropped them). */
static int resume_here(struct supervisor *s, const char *dir, const struct net_neigh *neigh,
                       size_t n_neigh, struct cryo_error *err)
{
	/* What restore_dir() reads of a manifest: the channels' inodes. The
	 * files it held are as the dump left them (nothing of it ran since):
	 * none is put back. */
	_cleanup_manifest_ struct manifest *m = manifest_new();
	if (!m || manifest_addf(m, "ino.stdin", "%" PRIu64, s->ino_stdin) < 0 ||
	    manifest_addf(m, "ino.stdout", "%" PRIu64, s->ino_stdout) < 0 ||
	    manifest_addf(m, "ino.stderr", "%" PRIu64, s->ino_stderr) < 0 ||
	    manifest_addf(m, "ino.control", "%" PRIu64, s->ino_control) < 0)
		return error_append(err, -ENOMEM, "; resuming it here failed too: out of memory");
	struct cryo_error cause = {{0}};
	if (n_neigh && net_neigh_add(&s->net, neigh, n_neigh, &cause) < 0)
		log_info("'%s': %s (its peers are resolved anew)", s->cfg->name, cause.msg);
	int r = restore_dir(s, dir, m, true, NULL, &cause);
	if (r < 0)
		return error_append(err, r, "; resuming it here failed too: %s", cause.msg);
	if (s->net.fd >= 0 && net_set_up(&s->net, true, NULL) == 0)
		net_announce(&s->net, NULL); /* the program runs here whether or not */
	program_send(s, CRYO_MSG_RESULT, 1, s->current_generation);
	program_publish_pid(s);
	supervisor_set_state(s, "running");
	return 0;
}

/* The generations left here would resume a second copy: they go. */
static void forget_generations(struct supervisor *s)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (image_store_list(s->cfg->paths.dir, &gens, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX];
		image_store_path(s->cfg->paths.dir, gens[i], path, sizeof(path));
		unlink(path);
	}
	util_fsync_dir(s->cfg->paths.dir);
}

/* How many unix connections to processes outside the program holds. */
static size_t migrate_count_unix(struct supervisor *s)
{
	_cleanup_free_ uint64_t *outside = NULL;
	size_t n = 0;
	if (unixsk_outside(s->init_pid, s->net.fd, s->ino_control, &outside, &n) < 0)
		return 0; /* CRIU's dump names any */
	return n;
}

/* cryo migrate: moves the program to the cryo serve at target. On any
 * failure before the target runs it, the program runs here again. */
void migrate_out(struct supervisor *s, struct client *client, const char *target,
                 const char *key_file, bool with_precopy)
{
	const struct supervisor_config *cfg = s->cfg;
	struct migration_out mo = {
	    .s = s, .client = client, .t0 = util_now_ns(), .phases = json_object_new_object()};
	mo.phase_t0 = mo.t0;
	struct cryo_error err = {{0}};
	char dir[PATH_MAX] = "";
	uint8_t key[CHANNEL_KEY_BYTES];
	struct channel ch = {.fd = -1};
	bool frozen = false, paused = false;
	uint64_t t_freeze = 0, frozen_ns = 0, sent = 0;
	struct criu_glue_dump_stats st = {0};
	struct page_index *base = NULL;
	struct delta_dir dd = {0};
	/* Its namespace's neighbour entries, read before it goes off the
	 * network: they go with it (net_neigh_add()). */
	struct net_neigh neigh[NET_NEIGH_MAX];
	size_t n_neigh = 0;
	/* The files it holds open for writing: listed before the offer,
	 * copied while it is frozen. */
	struct files_capture listed = {.max = cfg->files_max, .policy = cfg},
	                     held = {.max = cfg->files_max, .policy = cfg};
	int r;

	if (!s->running) {
		r = error_set(&err, -ESRCH, "the program is not running");
		goto out;
	}
	r = lazy_settle(s, &err);
	if (r < 0)
		goto out;
	r = channel_load_key(key_file, key, &err);
	if (r < 0)
		goto out;
	/* Without its own namespace its address stays here: connections
	 * could not live on there. */
	int conns = s->net.fd < 0 ? migrate_count_connections(s->init_pid) : 0;
	if (conns > 0) {
		r = error_set(
		    &err, -EADDRNOTAVAIL,
		    "it holds %d open TCP connection%s and its address cannot move with it "
		    "(start it with cryo run --net ADDR/PREFIX to migrate connections)",
		    conns, conns == 1 ? "" : "s");
		goto out;
	}
	/* A unix connection's other end stays on this machine. */
	size_t n_outside = migrate_count_unix(s);
	if (n_outside > 0) {
		r = error_set(
		    &err, -EADDRNOTAVAIL,
		    "it holds %zu unix-socket connection%s to processes outside it, which "
		    "cannot move to another machine (end them, then migrate)",
		    n_outside, n_outside == 1 ? "" : "s");
		goto out;
	}
	/* Past --files-max, refused before anything else. */
	listed.root = s->init_pid;
	r = files_capture(&listed, &err);
	if (r < 0)
		goto out;
	int fd = connect_to(target, 5000, &err);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	r = channel_open(&ch, fd, key, true, 10000, &err);
	sodium_memzero(key, sizeof(key));
	if (r < 0)
		goto out;
	phase_done(&mo, "connect");
	supervisor_set_state(s, "migrating");
	uint64_t gen = 0;
	r = offer(&mo, &ch, with_precopy, &listed, &gen, &err);
	if (r < 0)
		goto out;
	phase_done(&mo, "preflight");
	if (with_precopy) {
		r = precopy(&mo, &ch, gen, &base, &err);
		if (r < 0)
			goto out;
		phase_done(&mo, "precopy");
		gen++;
	}

	/* Frozen from here: off the network, then dumped (and gone). */
	r = make_migrate_dir(s, listed.total, dir, sizeof(dir));
	if (r < 0) {
		error_set(&err, r, "cannot make a directory for the dump: %s", strerror(-r));
		dir[0] = '\0';
		goto out;
	}
	if (s->net.fd >= 0) {
		int k = net_neigh_list(&s->net, neigh, NET_NEIGH_MAX);
		if (k < 0)
			log_info("cannot read the neighbour entries of '%s' (its peers are "
			         "resolved anew after the move): %s",
			         cfg->name, strerror(-k));
		n_neigh = k > 0 ? (size_t)k : 0;
		r = net_set_up(&s->net, false, &err);
		if (r < 0)
			goto out;
	}
	t_freeze = util_now_ns();
	struct criu_glue_dump_opts o = checkpoint_dump_opts(s, dir, false, true);
	/* The files it holds open for writing, copied whole while it is
	 * frozen: they travel in the image, and the target puts them back
	 * before CRIU restores it there. */
	held.root = s->init_pid;
	held.images = dir;
	o.hook = (struct criu_glue_frozen_hook){files_capture, &held};
	struct cryo_error cerr = {{0}};
	paused = true;
	r = criu_glue_dump(&o, &st, &cerr);
	if (r < 0) {
		/* CRIU let the program run on (after holding it frozen, as
		 * long as the files' copy took when that failed). */
		error_set(&err, r, "%s", cerr.msg);
		if (s->net.fd >= 0)
			net_set_up(&s->net, true, &cerr);
		goto out;
	}
	frozen = true;
	/* CRIU ended the tree; it was our child. */
	while (waitpid(s->init_pid, NULL, 0) < 0 && errno == EINTR)
		;
	s->running = false;
	__atomic_store_n(&s->init_pid, 0, __ATOMIC_SEQ_CST);
	program_unpublish_pid(s);
	channels_drain(s);
	close_fd(&s->stdin_w);
	close_fd(&s->stdout_r);
	close_fd(&s->stderr_r);
	close_fd(&s->control);
	phase_done(&mo, "dump");

	/* With a pre-copy, only the pages that changed since go. */
	const struct mem_file *mem = NULL;
	size_t n_mem = 0;
	if (base) {
		r = delta_prepare_dir(dir, gen, base, false, &dd);
		if (r < 0) {
			error_set(&err, r, "cannot read the dumped memory: %s", strerror(-r));
			goto out;
		}
		mem = dd.files;
		n_mem = dd.n_files;
	}
	struct manifest *m = manifest_new();
	if (!m) {
		r = error_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	checkpoint_fill_manifest(s, m, gen, TRIGGER_MIGRATE, &st);
	add_settings(cfg, m);
	bool neigh_ok = true;
	for (size_t i = 0; i < n_neigh && neigh_ok; i++) {
		char e[96];
		net_neigh_format(&neigh[i], e, sizeof(e));
		neigh_ok = manifest_add(m, NET_NEIGH_KEY, e) == 0;
	}
	if (!neigh_ok || files_describe(&held, m) < 0) {
		manifest_free(m);
		r = error_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	if (dd.incremental) {
		delta_describe(&dd, page_index_generation(base), m);
		manifest_add(m, "chain", "1");
	}
	struct migrate_progress progress = {report_progress, &mo};
	r = migrate_send_image(&ch, dir, mem, n_mem, m, &progress, &sent, &err);
	manifest_free(m);
	if (r < 0) {
		/* The target may have said why it stopped listening. */
		uint8_t t;
		const uint8_t *d;
		size_t dn;
		if (channel_recv(&ch, &t, &d, &dn, 1000, NULL) == 0 && t == MSG_FAILED)
			error_set(&err, r, "the target stopped: %.*s", (int)dn, (const char *)d);
		goto out;
	}
	phase_done(&mo, "transfer");
	r = await_answer(&ch, MSG_RUNNING, &err);
	if (r < 0)
		goto out;
	frozen_ns = util_now_ns() - t_freeze;
	/* From here the target's copy is the program, once it hears so. A
	 * DONE that could not be sent never reached it (a part of a message
	 * does not authenticate), and a target that does not hear DONE stops
	 * its copy: the program runs here again. */
	/* Tests hold DONE back, so that a target that gave up meanwhile has
	 * closed the connection before it is sent. */
	if (migrate_fault("late-done"))
		usleep(300000);
	r = channel_send(&ch, MSG_DONE, NULL, 0, &err);
	if (r < 0) {
		struct cryo_error cause = err;
		error_set(&err, r,
		          "the target gave up before it heard that the program may run there (%s)",
		          cause.msg);
		goto out;
	}
	phase_done(&mo, "restore");
	r = 0;
out:
	files_capture_clear(&listed);
	files_capture_clear(&held);
	page_index_free(base);
	if (r < 0 && frozen) {
		frozen_ns = util_now_ns() - t_freeze;
		/* The memory images went into memory for the delta: back to the
		 * directory CRIU restores from. */
		if (dd.n_maps && delta_dir_restore_files(&dd, dir) < 0)
			error_append(&err, r, "; its dump could not be put back together");
		if (resume_here(s, dir, neigh, n_neigh, &err) == 0)
			error_append(&err, r, "; '%s' runs here again after %.1f ms frozen",
			             cfg->name, (double)frozen_ns / 1e6);
		else
			error_append(&err, r, " (its dump is kept in '%s')", dir);
	} else if (r < 0) {
		error_append(&err, r, paused ? "; '%s' runs on here" : "; '%s' was not paused",
		             cfg->name);
	}
	delta_dir_clear(&dd);
	if (ch.buf)
		channel_close(&ch);
	if (ch.fd >= 0)
		close(ch.fd);
	if (dir[0] && (r == 0 || s->running))
		util_rm_rf(dir);
	if (r < 0) {
		if (s->running)
			supervisor_set_state(s, "running");
		log_error("migration of '%s' to %s failed: %s", cfg->name, target, err.msg);
		status_reply_error(client, r, err.msg);
		json_object_put(mo.phases);
		return;
	}
	log_info("'%s' moved to %s (frozen %.1f ms, %" PRIu64 " bytes sent)", cfg->name, target,
	         (double)frozen_ns / 1e6, sent);
	forget_generations(s);
	struct json_object *rep = json_object_new_object();
	cryo_json_add(rep, "ok", json_object_new_boolean(true));
	cryo_json_add(rep, "to", json_object_new_string(target));
	cryo_json_add(rep, "frozen_ms", cryo_json_ms((double)frozen_ns / 1e6));
	cryo_json_add(rep, "criu_frozen_ms", cryo_json_ms((double)st.frozen_us / 1e3));
	cryo_json_add(rep, "bytes", json_object_new_uint64(sent));
	cryo_json_add(rep, "total_ms", cryo_json_ms((double)(util_now_ns() - mo.t0) / 1e6));
	cryo_json_add(rep, "phases", mo.phases);
	status_reply(client, rep);
	s->stopping = true;
	s->leave = true;
	snprintf(s->moved_to, sizeof(s->moved_to), "%s", target);
	supervisor_set_state(s, "migrated");
}
