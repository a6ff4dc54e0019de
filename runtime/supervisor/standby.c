/* A restore's CRIU: the images in a directory restored by CRIU, through the
 * CRIU started ahead for it while the program ran (the standby) or one
 * started now. */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <string.h>

/* Where a generation is extracted for CRIU to read: memory (/dev/shm) when
 * its raw images fit comfortably there and in RAM, else beside the images. */
int restore_make_dir(struct supervisor *s, uint64_t gen, char *dir, size_t len)
{
	const struct supervisor_config *cfg = s->cfg;
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	uint64_t raw = UINT64_MAX;
	if (image_store_read_manifest(cfg->paths.dir, gen, &m, &ierr) == 0) {
		raw = 0;
		for (size_t i = 0; i < m->n_files; i++)
			raw += m->files[i].size;
		manifest_free(m);
	}
	char tag[128], fallback[PATH_MAX];
	snprintf(tag, sizeof(tag), "restore-%s", cfg->name);
	int r = util_format_path(fallback, sizeof(fallback), "%s/.restore", cfg->paths.dir);
	if (r < 0) {
		log_error("cannot restore '%s': the path '%s/.restore' is too long", cfg->name,
		          cfg->paths.dir);
		return r;
	}
	r = util_scratch_dir(raw, tag, fallback, dir, len);
	if (r < 0)
		log_error("cannot restore '%s': cannot create '%s': %s", cfg->name, dir,
		          strerror(-r));
	return r;
}

void restore_manifest_inodes(const struct manifest *m, struct program_inodes *ino)
{
	static const char *const keys[4] = {"ino.stdin", "ino.stdout", "ino.stderr", "ino.control"};
	for (int i = 0; i < 4; i++)
		ino->std[i] = manifest_get_u64(m, keys[i], 0);
	ino->n_outside = 0;
	const char *p = manifest_get(m, MANIFEST_UNIX_OUTSIDE);
	while (p && *p && ino->n_outside < UNIXSK_MAX_OUTSIDE) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(p, &end, 10);
		if (end == p || errno)
			break; /* not ours: the restore fails on CRIU's word, naming the socket */
		if (v)
			ino->outside[ino->n_outside++] = v;
		p = end + strspn(end, " ");
	}
}

/* The channels of the next restore and a CRIU service process holding the
 * program's ends, made while the program runs (after a checkpoint, and once
 * a restore's memory is all back): after a crash CRIU's work starts at once,
 * without CRIU's start (exec, its libraries) on the way. */
struct standby {
	struct criu_glue_restorer *criu;
	int ours[4];
	struct program_ends e;
	int netfd; /* our network namespace, for CRIU; or -1 */
};

/* Ends a standby's CRIU and closes what it held. */
void standby_free(struct standby *sb)
{
	if (!sb)
		return;
	criu_glue_restorer_free(sb->criu);
	for (int i = 0; i < 4; i++)
		close_fd(&sb->ours[i]);
	program_ends_close(&sb->e);
	close_fd(&sb->netfd);
	free(sb);
}

/* What a restore passes to CRIU, made new: the channels (ours not in use
 * yet; the program's ends O_CLOEXEC, for CRIU alone) and a copy of our
 * network namespace's fd, or -1 without one. On failure nothing is left
 * open and err says what failed. */
static int restore_ends(struct supervisor *s, int ours[4], struct program_ends *e, int *netfd,
                        struct cryo_error *err)
{
	int r = channels_new(s, ours, e);
	if (r < 0)
		return error_set(err, r, "cannot create its pipes: %s", strerror(-r));
	for (int i = 0; i < 4; i++)
		fcntl(e->fds[i], F_SETFD, FD_CLOEXEC);
	*netfd = -1;
	if (s->net.fd >= 0 && (*netfd = fcntl(s->net.fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		r = -errno;
		for (int i = 0; i < 4; i++)
			close_fd(&ours[i]);
		program_ends_close(e);
		return error_set(err, r, "cannot pass the network namespace: %s", strerror(-r));
	}
	return 0;
}

/* Makes the next restore ready, unless it is or no restore is to come. */
void standby_prepare(struct supervisor *s)
{
	if (s->standby || !s->running || s->stopping || s->cfg->policy == RESTART_NO)
		return;
	struct standby *sb = calloc(1, sizeof(*sb));
	if (!sb)
		return;
	struct cryo_error cerr = {{0}};
	if (restore_ends(s, sb->ours, &sb->e, &sb->netfd, &cerr) < 0) {
		free(sb);
	} else {
		int fds[5];
		size_t n = 0;
		for (int i = 0; i < 4; i++)
			fds[n++] = sb->e.fds[i];
		if (sb->netfd >= 0)
			fds[n++] = sb->netfd;
		if (criu_glue_restorer_start(fds, n, &sb->criu, &cerr) == 0) {
			s->standby = sb;
			return;
		}
		standby_free(sb);
	}
	/* The restore starts CRIU itself then. */
	log_debug("the next restore of '%s' is not made ready: %s", s->cfg->name, cerr.msg);
}

/* Restores the images in dir, whose stdio and control socket had the inodes
 * ino (stdin, stdout, stderr, control). The program becomes our child. With
 * tcp_established its connections come back open (a migration), else closed
 * (after a crash, the peers have moved on). err gets CRIU's reason. */
int restore_dir(struct supervisor *s, const char *dir, const struct manifest *m,
                bool tcp_established, struct criu_glue_lazy *lazy, struct cryo_error *err)
{
	const struct supervisor_config *cfg = s->cfg;
	/* Before anything else: CRIU reopens them by path and checks their
	 * size. */
	int r = files_restore(m, dir, err);
	if (r < 0)
		return r;
	struct program_inodes inodes;
	restore_manifest_inodes(m, &inodes);
	const struct program_inodes *ino = &inodes;
	struct program_ends e;
	int netfd = -1;
	struct criu_glue_restorer *criu = NULL;
	struct standby *sb = TAKE_PTR(s->standby);
	if (sb) {
		channels_use(s, sb->ours, &sb->e);
		e = sb->e;
		netfd = sb->netfd;
		criu = sb->criu;
		free(sb);
	} else {
		int ours[4];
		r = restore_ends(s, ours, &e, &netfd, err);
		if (r < 0)
			return r;
		channels_use(s, ours, &e);
	}
	static const char *const kinds[4] = {"pipe", "pipe", "pipe", "socket"};
	struct criu_glue_inherit inherit[5 + UNIXSK_MAX_OUTSIDE];
	size_t n = 4;
	for (int i = 0; i < 4; i++) {
		inherit[i].fd = e.fds[i];
		snprintf(inherit[i].key, sizeof(inherit[i].key), "%s:[%" PRIu64 "]", kinds[i],
		         ino->std[i]);
	}
	if (netfd >= 0) {
		inherit[n].fd = netfd;
		snprintf(inherit[n].key, sizeof(inherit[n].key), "%s", NET_CRIU_KEY);
		n++;
	}
	/* Each connection to a process outside comes back as a socket whose
	 * peer is gone: the program reads its end, and the client (which lost
	 * its connection with the crash) connects anew. */
	size_t first_outside = n;
	for (size_t i = 0; i < ino->n_outside; i++) {
		int sk[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk) < 0) {
			r = -errno;
			for (size_t j = first_outside; j < n; j++)
				close(inherit[j].fd);
			if (criu)
				criu_glue_restorer_free(criu);
			program_ends_close(&e);
			if (netfd >= 0)
				close(netfd);
			close_fd(&s->stdin_w);
			close_fd(&s->stdout_r);
			close_fd(&s->stderr_r);
			close_fd(&s->control);
			return error_set(err, r, "cannot create a socket for its connections: %s",
			                 strerror(-r));
		}
		close(sk[1]);
		inherit[n].fd = sk[0];
		snprintf(inherit[n].key, sizeof(inherit[n].key), "socket:[%" PRIu64 "]",
		         ino->outside[i]);
		n++;
	}
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGHUP);
	struct criu_glue_restore_opts o = {
	    .images_dir = dir,
	    .log_dir = cfg->paths.dir,
	    .log_name = "criu-restore.log",
	    .inherit = inherit,
	    .n_inherit = n,
	    .tcp_established = tcp_established,
	    .tcp_close = !tcp_established,
	    .lazy_pages = lazy != NULL,
	    .restorer = criu,
	    .lazy = lazy,
	    .cancel_signals = &stop_signals,
	};
	struct cryo_error cerr = {{0}};
	pid_t pid;
	size_t gone_mounts = 0;
	o.gone_mounts = &gone_mounts;
	r = criu_glue_restore(&o, &pid, &cerr);
	program_ends_close(&e);
	if (netfd >= 0)
		close(netfd);
	for (size_t j = first_outside; j < n; j++)
		close(inherit[j].fd);
	if (r < 0) {
		close_fd(&s->stdin_w);
		close_fd(&s->stdout_r);
		close_fd(&s->stderr_r);
		close_fd(&s->control);
		error_set(err, r, "%s", cerr.msg);
		/* CRIU's own rule for a file cryo left to it. */
		if (strstr(cerr.msg, "has bad size") &&
		    (cfg->files == FILES_NONE || cfg->n_files_skip > 0))
			error_append(
			    err, r,
			    "a file the program writes changed size since the checkpoint, "
			    "and cryo did not copy it (--files-copy none or --files-skip), so "
			    "CRIU refuses it: put the file back as it was, or run the "
			    "program with --files-copy snapshot to have it copied");
		return r;
	}
	/* The program's view changed with the host's: say so once. */
	if (gone_mounts)
		log_info("'%s' comes back without %zu mount%s it had at the checkpoint, gone from "
		         "the host since",
		         cfg->name, gone_mounts, gone_mounts == 1 ? "" : "s");
	__atomic_store_n(&s->init_pid, pid, __ATOMIC_SEQ_CST);
	s->running = true;
	/* As in program_start(). */
	if (lease_lost(s))
		kill(pid, SIGKILL);
	channels_watch(s);
	return 0;
}
