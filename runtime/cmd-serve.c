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
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs("usage: cryo serve --listen ADDR:PORT --key-file FILE [--state-dir DIR]\n"
	      "                  [--bridge BRIDGE]\n"
	      "\n"
	      "Accepts migrations (cryo migrate) from machines that hold the same key, and\n"
	      "nothing else. Each workload that arrives is checked first (CRIU, CPU, the same\n"
	      "files, its address, disk room), stored durably in the state directory, restored\n"
	      "with its TCP connections and supervised here as if started with cryo run: cryo\n"
	      "status, checkpoint and stop work on it. Runs in the foreground; stop it with\n"
	      "Ctrl-C or SIGTERM (workloads that arrived keep running).\n"
	      "\n"
	      "  --listen ADDR:PORT   where to listen, e.g. 0.0.0.0:7070 or [::]:7070\n"
	      "  --key-file FILE      the shared key (at least 32 bytes, mode 600; make one with\n"
	      "                       head -c 32 /dev/urandom > FILE)\n"
	      "  --state-dir DIR      state directory (default: $CRYO_STATE_DIR, else "
	      "/var/lib/cryo)\n"
	      "  --bridge BRIDGE      attach arriving workloads' addresses to this bridge\n"
	      "                       (default: the bridge they had at the source)\n",
	      f);
}

struct serve_opts {
	const char *listen;
	const char *key_file;
	const char *bridge;
};

static int on_option(int c, const char *arg, void *ctx)
{
	struct serve_opts *o = ctx;
	if (c == 'L')
		o->listen = arg;
	else if (c == 'K')
		o->key_file = arg;
	else if (c == 'B')
		o->bridge = arg;
	return 0;
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
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
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

/* Receives what a source offers, in a child of its own. */
static int serve_one(int fd, const char *peer, const uint8_t key[CHANNEL_KEY_BYTES],
                     const struct serve_opts *so, const char *state_dir)
{
	struct channel ch;
	struct cryo_error err = {{0}};
	int r = channel_open(&ch, fd, key, false, 10000, &err);
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

	const char *name = manifest_get(offer, "name");
	if (!name || !util_name_is_valid(name)) {
		refuse(&ch, peer, "the offer has no valid workload name");
		return 1;
	}
	struct supervisor_config cfg = {.name = name};
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
	r = migrate_check(offer, cpuinfo, cpuinfo_len, state_dir, so->bridge, &err);
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
	uint64_t raw = manifest_get_u64(offer, "raw_estimate", 0);
	struct incoming in = {.archive_fd = -1}, base = {.archive_fd = -1};
	bool with_precopy = manifest_get_u64(offer, "precopy", 0) == 1;
	if (r == 0 && with_precopy) {
		/* Pre-copy: a whole image while the program still runs there,
		 * then the frozen one as a delta against it. */
		r = migrate_receive(&base, &ch, cfg.paths.dir, gen++, raw, &err);
		if (r == 0)
			r = channel_send(&ch, MSG_ACCEPT, NULL, 0, &err);
	}
	if (r == 0)
		r = migrate_receive(&in, &ch, cfg.paths.dir, gen, raw, &err);
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

	/* The settings and the address that came with it. */
	size_t argc = 0;
	for (size_t i = 0; i < offer->n_entries; i++)
		argc += !strcmp(offer->keys[i], "arg");
	_cleanup_free_ char **argv = calloc(argc + 1, sizeof(char *));
	if (!argv || argc == 0) {
		channel_send(&ch, MSG_FAILED, "the offer names no program", 26, NULL);
		return 1;
	}
	for (size_t i = 0, k = 0; i < offer->n_entries; i++)
		if (!strcmp(offer->keys[i], "arg"))
			argv[k++] = offer->values[i];
	cfg.argv = argv;
	cfg.policy = (enum restart_policy)manifest_get_u64(offer, "set.policy", RESTART_ON_FAILURE);
	cfg.max_restarts = (unsigned)manifest_get_u64(offer, "set.max_restarts", 5);
	cfg.keep = (unsigned)manifest_get_u64(offer, "set.keep", 3);
	if (cfg.keep < 1)
		cfg.keep = 1;
	cfg.every_ns = manifest_get_u64(offer, "set.every_ns", 0);
	cfg.zstd_level = (int)manifest_get_u64(offer, "set.zstd_level", 3);
	cfg.incremental = manifest_get_u64(offer, "set.incremental", 1) != 0;
	cfg.lazy_restore = manifest_get_u64(offer, "set.lazy_restore", 1) != 0;
	cfg.dump_via_memory = manifest_get_u64(offer, "set.dump_via_memory", 1) != 0;
	cfg.incoming = &in;
	struct net_config net = {0};
	const char *addr = manifest_get(offer, "net.addr");
	if (addr && net_parse_cidr(addr, &net.addr, &net.prefix) == 0) {
		const char *gw = manifest_get(offer, "net.gateway");
		const char *br = so->bridge ? so->bridge : manifest_get(offer, "net.bridge");
		if (gw)
			net_parse_ip(gw, &net.gateway);
		if (br)
			snprintf(net.bridge, sizeof(net.bridge), "%s", br);
		cfg.net = &net;
	}
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

int cmd_serve(int argc, char **argv)
{
	static const struct option extra[] = {
	    {"listen", required_argument, NULL, 'L'},
	    {"key-file", required_argument, NULL, 'K'},
	    {"bridge", required_argument, NULL, 'B'},
	    {0},
	};
	struct serve_opts so = {0};
	struct cli_args a;
	int c = cli_parse(argc, argv, "serve", usage, extra, on_option, &so, 0, 0,
	                  "no arguments besides the options", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	if (!so.listen || !so.key_file) {
		log_error("cryo serve needs --listen ADDR:PORT and --key-file FILE (see cryo serve "
		          "--help)");
		return CLI_EXIT_USAGE;
	}
	if (so.bridge && strlen(so.bridge) >= IFNAMSIZ) {
		log_error("invalid --bridge '%s': too long for an interface name", so.bridge);
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
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			log_error("accept: %m");
			return 1;
		}
		char peer[INET6_ADDRSTRLEN + 8] = "?";
		char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
		getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
		            NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(peer, sizeof(peer), "%s:%s", host, port);
		pid_t pid = fork();
		if (pid == 0) {
			close(lfd);
			setsid();
			/* The supervisor it may become waits for its own children. */
			struct sigaction dfl = {.sa_handler = SIG_DFL};
			sigaction(SIGCHLD, &dfl, NULL);
			_exit(serve_one(fd, peer, key, &so, state_dir));
		}
		if (pid < 0)
			log_error("cannot serve %s: fork: %m", peer);
		close(fd);
	}
}
