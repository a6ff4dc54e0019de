/* The supervisor's life: setting up, the event loop, and what follows the
 * program's end (a restore, a fresh start, or the end of cryo run). */

#include "internal.h"
#include "cleanup.h"
#include "log.h"
#include "migrate.h"
#include "store-url.h"
#include "store.h"
#include "util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- the program's end ----------------------------------------------------- */

/* Decides what follows the program's exit. Returns 1 to go on (restored or
 * restarted), or 0 with *status set when cryo run should exit. */
static int handle_exit(struct supervisor *s, int wstatus, int *status)
{
	const struct supervisor_config *cfg = s->cfg;
	s->running = false;
	__atomic_store_n(&s->init_pid, 0, __ATOMIC_SEQ_CST);
	/* Killed by the lease's keeper: no restore follows. */
	if (lease_lost(s))
		s->stopping = true;
	lazy_end(s, true);
	program_unpublish_pid(s);
	store_sync_forget_program(s);
	channels_drain(s);

	/* The page server's memory goes back to the kernel now, in a thread
	 * (unmapping a GB takes ~60 ms): the restore that follows finds it
	 * free and warm, where fresh memory costs much more on a VM (restores
	 * in scripts/bench were slower with it held until after them). */
	criu_glue_track_drop(&s->track, &s->spare);
	checkpoint_forget_hashes(s);
	criu_glue_spare_drop_later(&s->spare);
	image_writer_free(s->writer);
	s->writer = NULL;
	/* A restore puts the held files back: the next checkpoint copies them
	 * whole. */
	files_memory_forget(&s->held);
	int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
	bool failed = code != 0;
	*status = code;
	char how[64];
	if (code > 128 && code < 128 + 65)
		snprintf(how, sizeof(how), "was killed by signal %d (%s)", code - 128,
		         strsignal(code - 128));
	else
		snprintf(how, sizeof(how), "exited with status %d", code);

	if (s->stopping || cfg->policy == RESTART_NO ||
	    (!failed && cfg->policy != RESTART_ALWAYS)) {
		supervisor_set_state(s, "stopped");
		if (failed && !s->stopping)
			log_info("'%s' %s", cfg->name, how);
		return 0;
	}
	bool have_images = restore_has_generation(s);
	if (s->restarts_in_a_row >= cfg->max_restarts) {
		supervisor_set_state(s, "failed");
		if (have_images)
			log_error("'%s' %s, after %u restarts in a row without a successful "
			          "checkpoint; giving up (images kept in '%s'; resume with: cryo "
			          "restore %s)",
			          cfg->name, how, s->restarts_in_a_row, cfg->paths.dir, cfg->name);
		else
			log_error("'%s' %s, after %u restarts in a row; giving up: no checkpoint "
			          "of it was taken, so there is nothing to resume (start it again "
			          "with: cryo run --name %s -- PROG)",
			          cfg->name, how, s->restarts_in_a_row, cfg->name);
		return 0;
	}
	s->restarts_in_a_row++;
	s->restarts_total++;
	/* One line says what happens next: a restore only where there is
	 * something to restore. */
	int r = -ENOENT;
	if (have_images) {
		log_info("'%s' %s; restoring the newest checkpoint", cfg->name, how);
		r = restore_newest(s, 0);
	}
	if (r == 0)
		return 1;
	if (r == -ENOENT) {
		if (have_images) /* gone since: removed by hand */
			log_info("'%s' has no checkpoint left: starting it afresh", cfg->name);
		else
			log_info("'%s' %s and has no checkpoint yet: starting it afresh", cfg->name,
			         how);
		return program_start(s) == 0 ? 1 : 0;
	}
	log_error("no generation of '%s' could be restored; giving up (images kept in '%s'; see "
	          "criu-restore.log there)",
	          cfg->name, cfg->paths.dir);
	*status = code ? code : 1;
	return 0;
}

static int handle_signals(struct supervisor *s, int *status)
{
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD: break;
		case SIGCONT: channels_stdin_check(s); break;
		case SIGINT:
		case SIGTERM:
		case SIGHUP:
			/* A second request is not polite any more. */
			supervisor_request_stop(s, s->stopping ? SIGKILL : (int)si.ssi_signo);
			break;
		default: break;
		}
	}
	/* Only our own child: libcriu waits for its criu helper itself. */
	while (s->running) {
		int ws;
		pid_t w = waitpid(s->init_pid, &ws, WNOHANG);
		if (w <= 0)
			break;
		if (!handle_exit(s, ws, status))
			return 0;
	}
	return 1;
}

/* The lease is lost: the keeper has killed the program's tree already (from
 * its thread); it stays stopped, and the supervisor ends. Returns cryo run's
 * exit status. */
static int fence(struct supervisor *s)
{
	s->stopping = true;
	if (s->running) {
		kill(s->init_pid, SIGKILL);
		waitpid(s->init_pid, NULL, 0);
		s->running = false;
		__atomic_store_n(&s->init_pid, 0, __ATOMIC_SEQ_CST);
		program_unpublish_pid(s);
	}
	supervisor_set_state(s, "failed");
	log_error("lost the lease on %s: stopped '%s' so that a standby can take over; %s "
	          "(images kept in '%s'; once etcd answers, resume with: cryo restore %s)",
	          s->cfg->lease->url, s->cfg->name, lease_reason(s), s->cfg->paths.dir,
	          s->cfg->name);
	return 1;
}

/* The network of the generation a resume starts from, if it had one. */
static bool image_net_config(struct supervisor *s, struct net_config *ret)
{
	uint64_t gen = s->cfg->resume_generation;
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (!gen && (image_store_list(s->cfg->paths.dir, &gens, &n) < 0 || n == 0))
		return false;
	if (!gen)
		gen = gens[n - 1];
	struct manifest *m = NULL;
	struct cryo_error ierr = {{0}};
	if (image_store_read_manifest(s->cfg->paths.dir, gen, &m, &ierr) < 0)
		return false;
	*ret = (struct net_config){0};
	const char *addr = manifest_get(m, "net.addr"), *gw = manifest_get(m, "net.gateway"),
	           *br = manifest_get(m, "net.bridge");
	bool ok = addr && net_parse_cidr(addr, &ret->addr, &ret->prefix) == 0;
	if (ok && gw)
		net_parse_ip(gw, &ret->gateway);
	if (ok && br)
		snprintf(ret->bridge, sizeof(ret->bridge), "%s", br);
	manifest_free(m);
	return ok;
}

/* ---- the loop ----------------------------------------------------------------- */

int supervisor_run(const struct supervisor_config *cfg, int lock_fd)
{
	(void)lock_fd;
	struct supervisor s = {
	    .cfg = cfg,
	    .epfd = -1,
	    .sigfd = -1,
	    .dir_fd = -1,
	    .timerfd = -1,
	    .commands_fd = -1,
	    .stdin_w = -1,
	    .stdout_r = -1,
	    .stderr_r = -1,
	    .control = -1,
	    .sync_fd = -1,
	    .net = NET_NS_INIT,
	    .state = "starting",
	    .ready_fd = cfg->ready_fd,
	};
	int status = 1, r;

	r = criu_glue_version(&s.criu_version);
	if (r < 0 || s.criu_version < CRIU_GLUE_MIN_VERSION) {
		const char *bin = criu_glue_binary();
		if (!bin)
			log_error("CRIU is not installed; run scripts/setup (or set CRYO_CRIU to "
			          "its path)");
		else if (r < 0)
			log_error(
			    "'%s' does not say its version (%s): is it CRIU? run scripts/setup, "
			    "or set CRYO_CRIU",
			    bin, strerror(-r));
		else
			log_error("CRIU at '%s' is version %d.%d.%d; cryo needs 4.2 or newer (run "
			          "scripts/setup)",
			          bin, s.criu_version / 10000, s.criu_version / 100 % 100,
			          s.criu_version % 100);
		return -ENOENT;
	}

	s.dir_fd = workload_open_dir(&cfg->paths);
	if (s.dir_fd < 0) {
		log_error("cannot open the state directory '%s': %s", cfg->paths.dir,
		          strerror(-s.dir_fd));
		return s.dir_fd;
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCONT); /* fg: the terminal may be ours again */
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s.sigfd < 0 || s.epfd < 0) {
		r = -errno;
		log_error("cannot set up the supervisor: %s", strerror(-r));
		close_fd(&s.dir_fd);
		return r;
	}
	ep_add(&s, s.sigfd, EPOLLIN, EV_SIGNAL);
	/* Before anything starts: the lease decides whether it may. After
	 * the signal mask: its thread and the uploader's inherit it. */
	uint64_t published = 0;
	r = lease_start(&s, &published);
	/* With the lease, the workload runs from what its owners published,
	 * brought from the store (generations here newer than it are set
	 * aside: no one published them); a standby starts afresh when nothing
	 * was. */
	bool resume = cfg->resume;
	if (r == 0 && cfg->lease && !cfg->incoming && cfg->fresh && published > 0) {
		/* A fresh run numbers its generations from 1 again, over the
		 * published chain's objects in the store. */
		log_error("'%s' has generation %" PRIu64 " published on %s: --fresh would put "
		          "generations numbered from 1 again over those in %s; start it without "
		          "--fresh (it resumes from the published one), or give it another --name "
		          "or --store prefix",
		          cfg->name, published, cfg->lease->url, cfg->store->url);
		r = -EEXIST;
	} else if (r == 0 && cfg->lease && !cfg->incoming && published > 0) {
		struct cryo_error ferr = {{0}};
		int64_t g = store_fetch(&s, published, &ferr);
		if (g < 0) {
			log_error(
			    "cannot bring '%s' from %s up to its published generation %" PRIu64
			    ": %s; not started (the lease is let go)",
			    cfg->name, cfg->store->url, published, ferr.msg);
			r = (int)g;
		} else {
			log_info("'%s' holds the lease on %s: resuming from generation %" PRId64
			         " (published: %" PRIu64 ")",
			         cfg->name, cfg->lease->url, g, published);
			resume = true;
		}
	} else if (r == 0 && cfg->lease && cfg->lease->standby) {
		log_info("'%s' holds the lease on %s; nothing was published: starting it afresh",
		         cfg->name, cfg->lease->url);
		resume = false;
	}
	if (r == 0 && store_sync_start(&s) < 0) {
		log_error("cannot set up --store-sync: %s", strerror(ENOMEM));
		r = -ENOMEM;
	}
	if (r < 0) {
		store_sync_free(&s);
		lease_stop(&s, false);
		close_fd(&s.epfd);
		close_fd(&s.sigfd);
		close_fd(&s.dir_fd);
		return r;
	}
	struct cryo_error uerr = {{0}};
	if (upload_start(&s, &uerr) < 0)
		log_error("cannot copy the checkpoints of '%s' to %s: %s; they stay local only",
		          cfg->name, cfg->store->url, uerr.msg);

	/* Our stdout and stderr: nothing waits for their readers. */
	r = channels_output_open(&s);
	if (r < 0) {
		log_error("cannot set up the supervisor's output: %s", strerror(-r));
		return r;
	}

	/* Our stdin: a pipe or terminal is watched; anything else is read as
	 * if always ready (a file) or is empty. A pipe or terminal is read
	 * through a description of our own, non-blocking (the one we were
	 * given is the shell's too). A terminal is read only while we are in
	 * its foreground: in the background we must never stop on it. */
	struct stat st;
	if (fstat(STDIN_FILENO, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
		int fd = open("/proc/self/fd/0", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			close(fd);
		}
	}
	fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
	s.stdin_tty = isatty(STDIN_FILENO);
	signal(SIGTTIN, SIG_IGN);
	if (ep_add(&s, STDIN_FILENO, 0, EV_STDIN) == 0)
		s.stdin_pollable = true;
	else if (fcntl(STDIN_FILENO, F_GETFD) < 0)
		s.stdin_eof = true;
	channels_stdin_check(&s);

	/* We hold the workload's lock: what an earlier supervisor left half
	 * written is nobody's (cryo serve swept before an arrival). */
	if (!cfg->incoming)
		image_store_sweep(cfg->paths.dir);
	util_scratch_sweep();
	r = commands_listen(&s);
	if (r < 0) {
		log_error("cannot listen on '%s': %s (is the state directory writable?)",
		          cfg->paths.socket, strerror(-r));
		goto out;
	}
	if (cfg->every_ns) {
		s.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		struct itimerspec its = {
		    .it_value = {(time_t)(cfg->every_ns / 1000000000ULL),
		                 (long)(cfg->every_ns % 1000000000ULL)},
		    .it_interval = {(time_t)(cfg->every_ns / 1000000000ULL),
		                    (long)(cfg->every_ns % 1000000000ULL)},
		};
		if (s.timerfd < 0 || timerfd_settime(s.timerfd, 0, &its, NULL) < 0) {
			log_error("cannot create the checkpoint timer: %m");
			goto out;
		}
		ep_add(&s, s.timerfd, EPOLLIN, EV_TIMER);
	}

	uint64_t resume_generation = cfg->resume_generation;

	/* Resumed images bring their address unless --net says otherwise. */
	struct net_config image_net;
	const struct net_config *net = cfg->net;
	if (!net && resume && image_net_config(&s, &image_net))
		net = &image_net;
	if (net) {
		struct cryo_error err = {{0}};
		/* A migrated copy stays off the network until the source is gone. */
		r = net_create(cfg->name, net, !cfg->incoming, &s.net, &err);
		/* Peers may remember the address elsewhere (it moved, or it
		 * comes back): tell them where it is now. */
		if (r == 0 && !cfg->incoming && net_announce(&s.net, &err) < 0)
			log_error("'%s': %s", cfg->name, err.msg);
		if (r < 0) {
			log_error("cannot set up the network of '%s': %s", cfg->name, err.msg);
			if (cfg->incoming)
				channel_send(cfg->incoming->ch, MSG_FAILED, err.msg,
				             strlen(err.msg), NULL);
			goto out;
		}
	}
	if (cfg->incoming) {
		if (migrate_arrive(&s) < 0)
			goto out;
	} else if (resume) {
		r = restore_newest(&s, resume_generation);
		if (r == -ENOENT && !resume_generation) {
			log_error("'%s' has no images in '%s' to restore", cfg->name,
			          cfg->paths.dir);
			goto out;
		}
		if (r < 0) {
			if (r != -ENOENT)
				log_error("could not restore '%s' (images kept in '%s'; see "
				          "criu-restore.log there)",
				          cfg->name, cfg->paths.dir);
			goto out;
		}
	} else {
		/* Images of an earlier run stay until this run's first checkpoint
		 * is durable, but a crash before then must not resume them. */
		if (image_store_next_generation(cfg->paths.dir, &s.min_generation) < 0)
			s.min_generation = UINT64_MAX;
		if (program_start(&s) < 0)
			goto out;
	}

	for (;;) {
		struct epoll_event ev[16];
		int timeout = commands_timeout_ms(&s);
		if (s.stdin_background && !s.stdin_eof && (timeout < 0 || timeout > 1000))
			timeout = 1000; /* is the terminal ours again? */
		timeout = store_sync_timeout_ms(&s, timeout);
		int n = epoll_wait(s.epfd, ev, 16, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("epoll_wait: %m");
			break;
		}
		for (int i = 0; i < n; i++) {
			switch (ev[i].data.u64) {
			case EV_SIGNAL:
				if (!handle_signals(&s, &status))
					goto out;
				break;
			case EV_CONTROL:
				if (s.running)
					checkpoint_handle_control(&s);
				break;
			case EV_STDOUT: channels_forward(&s, 0); break;
			case EV_STDERR: channels_forward(&s, 1); break;
			case EV_STDOUT_OUT: channels_output_ready(&s, 0); break;
			case EV_STDERR_OUT: channels_output_ready(&s, 1); break;
			case EV_STDIN:
			case EV_STDIN_PIPE: channels_pump_stdin(&s); break;
			case EV_TIMER: {
				uint64_t ticks;
				(void)!read(s.timerfd, &ticks, sizeof(ticks));
				/* A program that ended is the loop's to handle
				 * next, not a checkpoint's. */
				if (!s.running || s.stopping || program_gone(&s))
					break;
				struct cryo_error err = {{0}};
				int64_t g = checkpoint_take(&s, TRIGGER_TIMER, false, NULL, &err);
				if (g >= 0)
					checkpoint_log(&s, TRIGGER_TIMER, false);
				else if (g == -ESRCH)
					log_info("no periodic checkpoint of '%s': %s", cfg->name,
					         err.msg);
				else
					log_error("periodic checkpoint of '%s' failed: %s; the "
					          "program runs on",
					          cfg->name, err.msg);
				break;
			}
			case EV_COMMANDS: commands_accept(&s); break;
			case EV_LAZY: lazy_check_start(&s); break;
			case EV_LAZY_CHECKED: lazy_end(&s, false); break;
			case EV_SYNCED: store_sync_check(&s); break;
			case EV_LEASE:
				if (lease_lost(&s))
					goto out;
				break;
			default:
				if (ev[i].data.u64 >= EV_CLIENT)
					commands_client_event(
					    &s, (unsigned)(ev[i].data.u64 - EV_CLIENT),
					    ev[i].events);
				break;
			}
		}
		store_sync_check(&s);
		commands_expire(&s);
		channels_stdin_check(&s);
		if (s.leave) {
			status = 0;
			goto out;
		}
	}
out:
	if (lease_lost(&s))
		status = fence(&s);
	if (s.running) {
		/* We are leaving: the namespace goes with us. */
		kill(s.init_pid, SIGKILL);
		waitpid(s.init_pid, NULL, 0);
	}
	program_unpublish_pid(&s);
	lazy_end(&s, true);
	checkpoint_remove_wait(&s);
	bool uploaded = upload_stop(&s);
	if (!uploaded && !lease_lost(&s))
		log_error("the store %s did not take the last checkpoints of '%s' in time; "
		          "they are local only until the workload runs again",
		          cfg->store->url, cfg->name);
	lease_stop(&s, !uploaded);
	store_sync_free(&s);
	channels_drain(&s);
	commands_close_all(&s);
	if (s.commands_fd >= 0) {
		unlink(cfg->paths.socket);
		close(s.commands_fd);
	}
	if (strcmp(s.state, "failed") != 0 && strcmp(s.state, "starting") != 0 &&
	    strcmp(s.state, "migrated") != 0)
		supervisor_set_state(&s, "stopped");
	standby_free(s.standby);
	net_destroy(&s.net);
	criu_glue_track_drop(&s.track, NULL);
	checkpoint_forget_hashes(&s);
	criu_glue_spare_drop(&s.spare);
	image_writer_free(s.writer);
	page_index_free(s.index);
	files_memory_free(&s.held);
	channels_output_close(&s);
	close_fd(&s.timerfd);
	close_fd(&s.sigfd);
	close_fd(&s.epfd);
	close_fd(&s.dir_fd);
	if (s.ready_fd > 0)
		close(s.ready_fd); /* never ran: cryo run -d's caller reports it */
	return s.state && !strcmp(s.state, "starting") ? -EIO : status;
}
