/* cryo serve: accept workloads that other machines migrate here, and
 * supervise each one that arrives. */
#include "channel.h"
#include "cleanup.h"
#include "cli.h"
#include "log.h"
#include "migrate.h"
#include "net.h"
#include "store.h"
#include "util.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Connections that have not yet proved the key, and how long they have to
 * do it (OpenSSH's MaxStartups and LoginGraceTime). */
#define DEFAULT_MAX_UNAUTHENTICATED 10
#define DEFAULT_HANDSHAKE_MS        10000

static void usage(FILE *f)
{
	fputs("usage: cryo serve --listen ADDR:PORT --key-file FILE [--state-dir DIR]\n"
	      "                  [--bridge BRIDGE]... [--allow NAME]... [--files-under DIR]...\n"
	      "                  [--max-unauthenticated N] [--handshake-timeout DURATION]\n"
	      "\n"
	      "Accepts migrations (cryo migrate) from machines that hold the same key, and\n"
	      "nothing else. Each workload that arrives is checked first (CRIU, CPU, the same\n"
	      "files, its address, disk room, every setting against this target's limits),\n"
	      "stored durably in the state directory, restored as root with its TCP\n"
	      "connections and supervised here as if started with cryo run: cryo status,\n"
	      "checkpoint and stop work on it. Runs in the foreground; stop it with Ctrl-C or\n"
	      "SIGTERM (workloads that arrived keep running).\n"
	      "\n"
	      "Whoever holds the key can run any program as root here: give it only to the\n"
	      "machines that may do so (see the README, \"Moving a program to another machine\").\n"
	      "\n"
	      "  --listen ADDR:PORT   where to listen, e.g. 0.0.0.0:7070 or [::]:7070\n"
	      "  --key-file FILE      the shared key: at least 32 bytes, a file of this user's\n"
	      "                       (not a symbolic link), mode 600 (make one with\n"
	      "                       head -c 32 /dev/urandom > FILE)\n"
	      "  --state-dir DIR      state directory (default: $CRYO_STATE_DIR, else "
	      "/var/lib/cryo)\n"
	      "  --bridge BRIDGE      a bridge arriving workloads' addresses may attach to (may\n"
	      "                       be repeated); a workload on any other bridge is refused\n"
	      "  --allow NAME         take only workloads of this name (may be repeated;\n"
	      "                       default: any name)\n"
	      "  --files-under DIR    write the files an arriving program holds open for\n"
	      "                       writing only under DIR (may be repeated; default:\n"
	      "                       wherever the source had them); a workload with a file\n"
	      "                       elsewhere is refused\n"
	      "  --max-unauthenticated N\n"
	      "                       connections that have not yet proved the key, at most\n"
	      "                       (default 10); more are closed at once\n"
	      "  --handshake-timeout DURATION\n"
	      "                       the time a connection has to prove the key, all of it\n"
	      "                       (default 10s)\n",
	      f);
}

struct serve_opts {
	const char *listen;
	const char *key_file;
	char **bridges;
	size_t n_bridges;
	char **names;
	size_t n_names;
	char **file_dirs;
	size_t n_file_dirs;
	unsigned max_unauthenticated;
	int handshake_ms;
};

/* Appends s to a list of option values (they live in argv). */
static int list_add(char ***list, size_t *n, const char *s)
{
	char **l = realloc(*list, (*n + 1) * sizeof(*l));
	if (!l) {
		log_error("out of memory");
		return -ENOMEM;
	}
	l[(*n)++] = (char *)s;
	*list = l;
	return 0;
}

static int on_option(int c, const char *arg, void *ctx)
{
	struct serve_opts *o = ctx;
	uint64_t v;
	switch (c) {
	case 'L': o->listen = arg; return 0;
	case 'K': o->key_file = arg; return 0;
	case 'B':
		if (!arg[0] || strlen(arg) >= IFNAMSIZ) {
			log_error("invalid --bridge '%s': an interface name has 1 to %d characters",
			          arg, IFNAMSIZ - 1);
			return -EINVAL;
		}
		return list_add(&o->bridges, &o->n_bridges, arg);
	case 'A':
		if (!util_name_is_valid(arg)) {
			log_error("invalid --allow '%s': give a workload name (letters, digits, "
			          "'.', '_' and '-', up to 64)",
			          arg);
			return -EINVAL;
		}
		return list_add(&o->names, &o->n_names, arg);
	case 'F':
		if (strcmp(arg, "/") != 0 && migrate_held_path_plain(arg) < 0) {
			log_error("invalid --files-under '%s': give an absolute path without '.', "
			          "'..', '//' or a trailing '/'",
			          arg);
			return -EINVAL;
		}
		return list_add(&o->file_dirs, &o->n_file_dirs, arg);
	case 'U':
		if (util_parse_uint(arg, 10000, &v) < 0 || v < 1) {
			log_error("invalid --max-unauthenticated '%s': give a number from 1 to "
			          "10000",
			          arg);
			return -EINVAL;
		}
		o->max_unauthenticated = (unsigned)v;
		return 0;
	case 'T':
		if (util_parse_duration(arg, &v) < 0 || v < UINT64_C(100000000) ||
		    v > UINT64_C(600000000000)) {
			log_error("invalid --handshake-timeout '%s': give a duration from 100ms "
			          "to 10m, e.g. 10s",
			          arg);
			return -EINVAL;
		}
		o->handshake_ms = (int)(v / 1000000);
		return 0;
	}
	return -EINVAL;
}

static int listen_on(const char *spec)
{
	struct addrinfo *ai = NULL;
	struct cryo_error cause = {{0}};
	int g = net_resolve(spec, true, &ai, &cause);
	if (g == -EINVAL)
		log_error("invalid --listen '%s': give ADDR:PORT, e.g. 0.0.0.0:7070 or [::]:7070",
		          spec);
	else if (g < 0)
		log_error("invalid --listen '%s': %s", spec, cause.msg);
	if (g < 0)
		return -EINVAL;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		int r = -errno;
		log_error("cannot listen on %s: %s", spec, strerror(-r));
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return r;
	}
	freeaddrinfo(ai);
	return fd;
}

/* Gives the reason, then reads what the source still sends until it hangs
 * up (at most 10 s): closing with unread data would reset the connection and
 * lose the reason on the way. */
static void answer_and_hang_up(struct channel *c, uint8_t type, const char *reason)
{
	channel_send(c, type, reason, strlen(reason), NULL);
	shutdown(c->fd, SHUT_WR);
	char buf[65536];
	uint64_t deadline = util_now_ns() + UINT64_C(10000000000);
	while (util_now_ns() < deadline) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		if (poll(&p, 1, 100) < 0 || (p.revents && read(c->fd, buf, sizeof(buf)) <= 0))
			break;
	}
}

/* Refuses the offer: says why (a format), here and to the source. */
static void refuse(struct channel *c, const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(struct channel *c, const char *peer, const char *fmt, ...)
{
	struct cryo_error reason;
	va_list ap;
	va_start(ap, fmt);
	error_setv(&reason, 0, fmt, ap);
	va_end(ap);
	log_error("refused a migration from %s: %s", peer, reason.msg);
	answer_and_hang_up(c, MSG_REFUSE, reason.msg);
}

/* Receives what a source offers, in a child of its own. token is this
 * connection's place among the unauthenticated ones: closing it gives the
 * place back. */
static int serve_one(int fd, int token, const char *peer, const uint8_t key[CHANNEL_KEY_BYTES],
                     const struct serve_opts *so, const char *state_dir)
{
	struct channel ch;
	struct cryo_error err = {{0}};
	int r = channel_open(&ch, fd, key, false, so->handshake_ms, &err);
	close(token);
	if (r < 0) {
		log_error("refused a connection from %s: %s", peer, err.msg);
		return 1;
	}
	uint8_t type;
	const uint8_t *data;
	size_t n;
	struct manifest *offer = NULL;
	r = channel_recv(&ch, &type, &data, &n, MIGRATE_ANSWER_MS, &err);
	if (r == 0 && type == MSG_OFFER)
		r = manifest_from_text((const char *)data, n, &offer);
	else if (r == 0)
		r = -EPROTO;
	if (r < 0) {
		log_error("dropped a migration from %s: no valid offer (%s)", peer,
		          err.msg[0] ? err.msg : strerror(-r));
		return 1;
	}
	r = channel_recv(&ch, &type, &data, &n, MIGRATE_ANSWER_MS, &err);
	if (r < 0 || type != MSG_CPUINFO) {
		log_error("dropped a migration from %s: no CPU description", peer);
		return 1;
	}
	_cleanup_free_ uint8_t *cpuinfo = malloc(n ? n : 1);
	if (!cpuinfo)
		return 1;
	memcpy(cpuinfo, data, n);
	size_t cpuinfo_len = n;

	/* Every field this target obeys, against its own limits. */
	struct supervisor_config cfg = {0};
	struct net_config net;
	const struct migrate_limits lim = {.bridges = so->bridges,
	                                   .n_bridges = so->n_bridges,
	                                   .names = so->names,
	                                   .n_names = so->n_names,
	                                   .file_dirs = so->file_dirs,
	                                   .n_file_dirs = so->n_file_dirs};
	r = migrate_check_offer(offer, &lim, &cfg, &net, &err);
	if (r < 0) {
		refuse(&ch, peer, "%s", err.msg);
		return 1;
	}
	_cleanup_free_ char **argv = cfg.argv;
	const char *name = cfg.name;
	if (workload_paths_init(&cfg.paths, state_dir, name) < 0 ||
	    util_mkdir_p(cfg.paths.dir) < 0) {
		refuse(&ch, peer, "cannot create '%s/%s' here", state_dir, name);
		return 1;
	}
	if (workload_trust(&cfg.paths, &err) < 0) {
		refuse(&ch, peer, "the state directory here is not safe: %s", err.msg);
		return 1;
	}
	pid_t holder = 0;
	int lock = workload_lock(&cfg.paths, &holder);
	if (lock < 0) {
		refuse(&ch, peer, "a workload named '%s' already runs here (supervisor PID %d)",
		       name, holder);
		return 1;
	}
	image_store_sweep(cfg.paths.dir);
	r = migrate_check(offer, cpuinfo, cpuinfo_len, state_dir, &err);
	if (r < 0) {
		refuse(&ch, peer, "%s", err.msg);
		return 1;
	}
	/* The source numbers what it sends as the generations they become here. */
	uint64_t gen = 0, le;
	r = image_store_next_generation(cfg.paths.dir, &gen);
	if (r < 0) {
		refuse(&ch, peer, "cannot read '%s' here: %s", cfg.paths.dir, strerror(-r));
		return 1;
	}
	le = htole64(gen);
	r = channel_send(&ch, MSG_ACCEPT, &le, sizeof(le), &err);
	/* What is extracted on arrival: its memory and the files it holds. */
	uint64_t raw = manifest_get_u64(offer, "raw_estimate", 0) + migrate_held_bytes(offer);
	/* The archives take no more than the room checked for. */
	uint64_t room = migrate_stream_cap(offer);
	struct incoming in = {.archive_fd = -1}, base = {.archive_fd = -1};
	bool with_precopy = manifest_get_u64(offer, "precopy", 0) == 1;
	if (r == 0 && with_precopy) {
		/* Pre-copy: a whole image while the program still runs there,
		 * then the frozen one as a delta against it. */
		r = migrate_receive(&base, &ch, cfg.paths.dir, gen++, raw, room, &err);
		if (r == 0)
			r = channel_send(&ch, MSG_ACCEPT, NULL, 0, &err);
	}
	if (r == 0)
		r = migrate_receive(&in, &ch, cfg.paths.dir, gen, raw, room - base.bytes, &err);
	if (r == 0 && with_precopy)
		r = migrate_rebuild(&in, &base, &err);
	if (r == 0 && with_precopy)
		r = migrate_wait_durable(&base, &err);
	if (r < 0) {
		migrate_incoming_done(&in);
		migrate_incoming_done(&base);
		log_error("migration of '%s' from %s failed: %s; nothing was restored", name, peer,
		          err.msg);
		answer_and_hang_up(&ch, MSG_FAILED, err.msg);
		return 1;
	}
	in.limits = &lim; /* what the image says it holds is held to them too */
	cfg.incoming = &in;
	const char *cwd = manifest_get(offer, "cwd");
	if (cwd && cwd[0] && chdir(cwd) < 0)
		log_error("cannot enter '%s': %m", cwd);

	/* From here this process is the workload's supervisor; its output
	 * goes beside its images. */
	char out[PATH_MAX + 16], size[32];
	snprintf(out, sizeof(out), "%s/output.log", cfg.paths.dir);
	log_info("'%s' from %s: %s received; its supervisor is PID %d, its output goes to '%s'",
	         name, peer, util_format_bytes(in.bytes, size, sizeof(size)), getpid(), out);
	int ofd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (ofd >= 0) {
		dup2(ofd, STDOUT_FILENO);
		dup2(ofd, STDERR_FILENO);
		close(ofd);
	}
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	r = supervisor_run(&cfg, lock);
	/* The pre-copied base stands or falls with the generation built on it. */
	base.confirmed = in.confirmed;
	migrate_incoming_done(&in);
	migrate_incoming_done(&base);
	channel_close(&ch);
	manifest_free(offer);
	return r < 0 ? 1 : r;
}

/* Whether accept() failed for a reason that passes (no file descriptor or
 * memory free now, a connection that went away or a network error on it,
 * which Linux reports here too), rather than a broken listening socket. */
static bool accept_error_passes(int e)
{
	return e != EBADF && e != EFAULT && e != EINVAL && e != ENOTSOCK && e != EOPNOTSUPP;
}

/* Serves connections until a signal ends it; returns cryo serve's exit
 * status. */
static int serve_loop(int lfd, const uint8_t key[CHANNEL_KEY_BYTES], const struct serve_opts *so,
                      const char *state_dir)
{
	/* A connection still in its handshake is the read end of a pipe whose
	 * write end only its child holds, until it has proved the key or
	 * ended. */
	_cleanup_free_ int *pend = calloc(so->max_unauthenticated, sizeof(*pend));
	_cleanup_free_ struct pollfd *pfd = calloc(so->max_unauthenticated + 1, sizeof(*pfd));
	if (!pend || !pfd) {
		log_error("out of memory");
		return 1;
	}
	size_t n_pend = 0;
	/* A failing accept() is tried again after a back-off, 10 ms doubling
	 * up to 1 s; it is said once, and when it works again. */
	uint64_t backoff_ms = 0, retry_at = 0;
	/* A refusal for want of room is said at once, the ones that follow
	 * it as a count when a place is free again, or after 5 s. */
	unsigned unsaid = 0;
	uint64_t refused_said = 0;
	for (;;) {
		uint64_t now = util_now_ns();
		bool may_accept = now >= retry_at;
		pfd[0] = (struct pollfd){.fd = lfd, .events = may_accept ? POLLIN : 0};
		for (size_t i = 0; i < n_pend; i++)
			pfd[i + 1] = (struct pollfd){.fd = pend[i], .events = POLLIN};
		int timeout = may_accept ? -1 : (int)((retry_at - now + 999999) / 1000000);
		/* Refusals not yet said are said within a second or so. */
		if (unsaid && (timeout < 0 || timeout > 1000))
			timeout = 1000;
		if (poll(pfd, n_pend + 1, timeout) < 0 && errno != EINTR) {
			log_error("poll: %m");
			return 1;
		}
		/* Children that proved the key or ended give their place back. */
		for (size_t i = n_pend; i-- > 0;) {
			if (!pfd[i + 1].revents)
				continue;
			close(pend[i]);
			pend[i] = pend[--n_pend];
		}
		now = util_now_ns();
		uint64_t since = now - refused_said;
		if (unsaid &&
		    ((n_pend < so->max_unauthenticated && since >= UINT64_C(1000000000)) ||
		     since >= UINT64_C(5000000000))) {
			log_error("refused %u more connection%s beyond the %u in their handshake "
			          "(--max-unauthenticated)",
			          unsaid, unsaid == 1 ? "" : "s", so->max_unauthenticated);
			unsaid = 0;
			refused_said = now;
		}
		if (now < retry_at || !(pfd[0].revents & POLLIN))
			continue;

		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			if (e == EINTR || e == EAGAIN || e == ECONNABORTED)
				continue;
			if (!accept_error_passes(e)) {
				log_error("cannot accept connections on %s: %s", so->listen,
				          strerror(e));
				return 1;
			}
			if (!backoff_ms)
				log_error("cannot accept a connection: %s; trying again until it "
				          "works",
				          strerror(e));
			backoff_ms =
			    backoff_ms ? (backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2) : 10;
			retry_at = util_now_ns() + backoff_ms * 1000000;
			continue;
		}
		if (backoff_ms)
			log_info("accepting connections again");
		backoff_ms = 0;
		char peer[INET6_ADDRSTRLEN + 8] = "?";
		char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
		getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
		            NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(peer, sizeof(peer), "%s:%s", host, port);

		/* Beyond the bound a connection is closed at once: a flood of
		 * them costs no process, and a source holding the key tries
		 * again later. */
		int token[2] = {-1, -1};
		if (n_pend >= so->max_unauthenticated) {
			close(fd);
			now = util_now_ns();
			if (unsaid || (refused_said && now - refused_said < UINT64_C(5000000000))) {
				unsaid++;
				continue;
			}
			log_error("refused a connection from %s: %zu connections are in their "
			          "handshake already, the most --max-unauthenticated allows",
			          peer, n_pend);
			refused_said = now;
			continue;
		}
		if (pipe2(token, O_CLOEXEC) < 0) {
			log_error("refused a connection from %s: %m", peer);
			close(fd);
			continue;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(lfd);
			close(token[0]);
			for (size_t i = 0; i < n_pend; i++)
				close(pend[i]);
			setsid();
			/* The supervisor it may become waits for its own children. */
			struct sigaction dfl = {.sa_handler = SIG_DFL};
			sigaction(SIGCHLD, &dfl, NULL);
			_exit(serve_one(fd, token[1], peer, key, so, state_dir));
		}
		close(fd);
		close(token[1]);
		if (pid < 0) {
			log_error("cannot serve %s: fork: %m", peer);
			close(token[0]);
			continue;
		}
		pend[n_pend++] = token[0];
	}
}

int cmd_serve(int argc, char **argv)
{
	static const struct option extra[] = {
	    {"listen", required_argument, NULL, 'L'},
	    {"key-file", required_argument, NULL, 'K'},
	    {"bridge", required_argument, NULL, 'B'},
	    {"allow", required_argument, NULL, 'A'},
	    {"files-under", required_argument, NULL, 'F'},
	    {"max-unauthenticated", required_argument, NULL, 'U'},
	    {"handshake-timeout", required_argument, NULL, 'T'},
	    {0},
	};
	struct serve_opts so = {.max_unauthenticated = DEFAULT_MAX_UNAUTHENTICATED,
	                        .handshake_ms = DEFAULT_HANDSHAKE_MS};
	struct cli_args a;
	int c = cli_parse(argc, argv, "serve", usage, extra, on_option, &so, 0, 0,
	                  "no arguments besides the options", &a);
	_cleanup_free_ char **bridges = so.bridges, **names = so.names, **file_dirs = so.file_dirs;
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	if (!so.listen || !so.key_file) {
		log_error("cryo serve needs --listen ADDR:PORT and --key-file FILE (see cryo serve "
		          "--help)");
		return CLI_EXIT_USAGE;
	}
	if (cli_require_root("serve") < 0)
		return 1;
	uint8_t key[CHANNEL_KEY_BYTES];
	struct cryo_error err = {{0}};
	if (channel_load_key(so.key_file, key, &err) < 0) {
		log_error("%s", err.msg);
		return 1;
	}
	const char *state_dir = workload_state_dir(a.state_dir);
	int r = util_mkdir_p(state_dir);
	if (r < 0) {
		log_error(
		    "cannot create state directory '%s': %s (choose another with --state-dir)",
		    state_dir, strerror(-r));
		return 1;
	}
	/* The supervisors it starts run as root in it (see workload_trust()). */
	_cleanup_free_ char *real = realpath(state_dir, NULL);
	r = real ? util_check_trusted_dir(real, true, &err)
	         : error_set(&err, -errno, "cannot resolve '%s': %m", state_dir);
	if (r < 0) {
		log_error("state directory '%s' is not safe: %s; or choose another with "
		          "--state-dir or CRYO_STATE_DIR",
		          state_dir, err.msg);
		return 1;
	}
	int lfd = listen_on(so.listen);
	if (lfd < 0)
		return 1;
	/* Connections are served by children, which nobody waits for. */
	struct sigaction sa = {.sa_handler = SIG_DFL, .sa_flags = SA_NOCLDWAIT};
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	log_info("serving migrations on %s (state directory '%s')", so.listen, state_dir);
	r = serve_loop(lfd, key, &so, state_dir);
	sodium_memzero(key, sizeof(key));
	close(lfd);
	return r;
}
