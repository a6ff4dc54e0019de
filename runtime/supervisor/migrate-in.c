/* cryo serve, on the target: the supervisor of a program that arrives by
 * migration restores it and waits for the source's go-ahead. */

#include "internal.h"
#include "log.h"
#include "migrate.h"
#include "util.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* The files an arriving image holds (its "held_file" lines), which
 * restore_dir() writes at the paths the source named: only plain absolute
 * paths, under the serve's --files-under if it has any, only over regular
 * files or none (migrate_held_path_check(); then O_NOFOLLOW), never
 * set-user-ID or set-group-ID. The peer holds the key and the program runs
 * with its own credentials anyway; this keeps a peer from making the target
 * write through a link or a device, or where the target did not allow. */
static int check_arriving_files(const struct manifest *m, const struct migrate_limits *lim,
                                struct cryo_error *err)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		if (strcmp(m->keys[i], "held_file") != 0)
			continue;
		struct held_file f;
		size_t idx;
		if (files_parse(m->values[i], &f, &idx) < 0)
			return error_set(err, -EPROTO,
			                 "the image's manifest has a bad line 'held_file %.100s'",
			                 m->values[i]);
		int r = migrate_held_path_allowed(f.path, lim, err);
		if (r == 0)
			r = migrate_held_path_check(f.path, err);
		if (r < 0)
			return r;
		if (f.mode & (S_ISUID | S_ISGID))
			return error_set(
			    err, -EPERM,
			    "the image holds '%s' with mode %04o: a target does not write "
			    "set-user-ID or set-group-ID files",
			    f.path, (unsigned)f.mode);
	}
	return 0;
}

/* The neighbour entries the source's namespace had (NET_NEIGH_KEY lines),
 * put into the workload's namespace here; none that fail to go in is a
 * fault: the kernel resolves its peers then, as it would anyway. */
static void add_neighbours(struct supervisor *s, const struct manifest *m)
{
	struct net_neigh neigh[NET_NEIGH_MAX];
	size_t n = 0;
	for (size_t i = 0; i < m->n_entries && n < NET_NEIGH_MAX; i++) {
		if (strcmp(m->keys[i], NET_NEIGH_KEY) != 0)
			continue;
		if (net_neigh_parse(m->values[i], &neigh[n]) < 0) {
			log_info("'%s': left out the neighbour entry '%.100s' of its image",
			         s->cfg->name, m->values[i]);
			continue;
		}
		n++;
	}
	struct cryo_error err = {{0}};
	if (n && net_neigh_add(&s->net, neigh, n, &err) < 0)
		log_info("'%s': %s (its peers are resolved anew)", s->cfg->name, err.msg);
}

/* A copy that arrived by migration: restores it from the images extracted
 * on arrival, tells the source it runs once its archive is durable here, and
 * waits for the source's go-ahead before joining the network. */
int migrate_arrive(struct supervisor *s)
{
	const struct supervisor_config *cfg = s->cfg;
	struct incoming *in = cfg->incoming;
	struct channel *c = in->ch;
	struct cryo_error err = {{0}};
	supervisor_set_state(s, "restoring");
	uint64_t t0 = util_now_ns();
	/* Tests make a target's restore fail here (as a CRIU that cannot
	 * restore would), to see the source take its program back. */
	int r = migrate_fault("restore") ? error_set(&err, -EIO, "CRIU restore failed (injected)")
	                                 : check_arriving_files(in->manifest, in->limits, &err);
	/* Its neighbours on the segment have not moved: their entries go
	 * into its namespace before it runs, so that its first packets to
	 * them need no resolution (which, asked while it is still off the
	 * network, would be lost and asked again only a second later). */
	if (r == 0 && s->net.fd >= 0)
		add_neighbours(s, in->manifest);
	/* The files it held are put back first, then CRIU restores it. */
	if (r == 0)
		r = restore_dir(s, in->images, in->manifest, true, NULL, &err);
	if (r == 0 && cfg->incremental) {
		page_index_free(s->index);
		s->index = NULL;
		if (delta_index_dir(in->images, in->generation, &s->index) < 0)
			s->index = NULL;
		s->chain = (unsigned)manifest_get_u64(in->manifest, "chain", 0);
	}
	util_rm_rf(in->images);
	in->images[0] = '\0';
	if (r < 0) {
		struct cryo_error failed;
		error_set(&failed, r, "cannot restore on the target: %s", err.msg);
		log_error("%s (see criu-restore.log in '%s')", failed.msg, cfg->paths.dir);
		channel_send(c, MSG_FAILED, failed.msg, strlen(failed.msg), NULL);
		supervisor_set_state(s, "failed");
		return r;
	}
	s->current_generation = in->generation;
	log_info("restored '%s' from generation %" PRIu64 " in %.1f ms (program PID %d)", cfg->name,
	         in->generation, (double)(util_now_ns() - t0) / 1e6, program_pid(s));
	r = migrate_wait_durable(in, &err);
	int32_t pid = (int32_t)program_pid(s);
	if (r == 0)
		r = channel_send(c, MSG_RUNNING, &pid, sizeof(pid), &err);
	else
		channel_send(c, MSG_FAILED, err.msg, strlen(err.msg), NULL); /* err stays */
	uint8_t type = 0;
	const uint8_t *data;
	size_t n;
	/* Tests make a target give up right after RUNNING (as one whose
	 * wait for DONE ran out would), resetting the connection. */
	if (r == 0 && migrate_fault("give-up")) {
		/* A target that gives up has waited: RUNNING reached the source
		 * whole. A reset while it is still in our send queue would cut it
		 * (on a busy machine), and the source would see another failure. */
		for (int i = 0; i < 400; i++) {
			int queued = 0;
			if (ioctl(c->fd, SIOCOUTQ, &queued) < 0 || queued == 0)
				break;
			usleep(5000);
		}
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->fd);
		c->fd = -1;
		r = error_set(&err, -ETIMEDOUT, "gave up waiting (injected)");
	}
	if (r == 0)
		r = channel_recv(c, &type, &data, &n, MIGRATE_DONE_MS, &err);
	if (r == 0 && type != MSG_DONE)
		r = error_set(&err, -EPROTO, "unexpected message %u", type);
	if (r < 0) {
		log_error("'%s' was restored here, but the migration was not completed (%s): this "
		          "copy is stopped%s",
		          cfg->name, err.msg,
		          in->durable ? ", its image set aside (.unconfirmed)" : "");
		s->stopping = true;
		kill(s->init_pid, SIGKILL);
		waitpid(s->init_pid, NULL, 0);
		s->running = false;
		program_unpublish_pid(s);
		supervisor_set_state(s, "failed");
		return r;
	}
	in->confirmed = true;
	if (s->net.fd >= 0) {
		if (net_set_up(&s->net, true, &err) < 0 || net_announce(&s->net, &err) < 0)
			log_error("'%s' arrived, but its network: %s", cfg->name, err.msg);
	}
	program_send(s, CRYO_MSG_RESULT, 1, in->generation);
	program_publish_pid(s);
	supervisor_set_state(s, "running");
	log_info("'%s' arrived by migration and runs (program PID %d)", cfg->name, pid);
	return 0;
}
