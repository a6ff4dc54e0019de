/* cryo run's and cryo restore's options, and supervising a workload with
 * them: shared by the two verbs, in the runtime library so that unit tests
 * reach the parser. */
#include "cli.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <getopt.h>
#include <string.h>
#include <unistd.h>

/* Makes the workload's directory and checks that it is the supervisor's
 * alone (see workload_trust()): the supervisor runs as root, writes its
 * files there and restores the images it finds there. */
static int check_state_dir(struct workload_paths *p)
{
	int r = util_mkdir_p(p->dir);
	if (r < 0) {
		log_error(
		    "cannot create state directory '%s': %s (choose another with --state-dir or "
		    "CRYO_STATE_DIR)",
		    p->dir, strerror(-r));
		return r;
	}
	if (access(p->dir, W_OK) < 0) {
		r = -errno;
		log_error(
		    "cannot write state directory '%s': %s (choose another with --state-dir or "
		    "CRYO_STATE_DIR)",
		    p->dir, strerror(-r));
		return r;
	}
	struct cryo_error err = {{0}};
	r = workload_trust(p, &err);
	if (r < 0) {
		log_error(
		    "state directory '%s' is not safe: %s; or choose another with --state-dir "
		    "or CRYO_STATE_DIR",
		    p->dir, err.msg);
		return r;
	}
	return 0;
}

/* Checks a --files-skip path: absolute, without '.', '..' or empty parts
 * (a trailing '/' aside), and, if it exists, without a symbolic link on the
 * way (the program's fds name files by the paths they lead to). Returns 0
 * or -EINVAL after a logged error. */
static int check_skip_path(const char *path)
{
	const char *way = "give an absolute path, e.g. /var/cache/app";
	if (path[0] != '/') {
		log_error("invalid --files-skip '%s': %s", path, way);
		return -EINVAL;
	}
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	for (const char *p = path + 1; p < path + len;) {
		const char *e = memchr(p, '/', (size_t)(path + len - p));
		size_t part = e ? (size_t)(e - p) : (size_t)(path + len - p);
		if (part == 0 || (part == 1 && p[0] == '.') ||
		    (part == 2 && p[0] == '.' && p[1] == '.')) {
			log_error("invalid --files-skip '%s': a path without '.', '..' or empty "
			          "parts; %s",
			          path, way);
			return -EINVAL;
		}
		p += part + 1;
	}
	char real[PATH_MAX];
	if (len >= PATH_MAX) {
		log_error("invalid --files-skip '%s': longer than %d bytes", path, PATH_MAX - 1);
		return -EINVAL;
	}
	if (realpath(path, real) && (strlen(real) != len || memcmp(real, path, len) != 0)) {
		log_error("invalid --files-skip '%s': it goes through a symbolic link; give the "
		          "path it leads to, '%s'",
		          path, real);
		return -EINVAL;
	}
	return 0;
}

/* The options of each verb: cryo restore has neither --name nor --fresh (the
 * name is its argument, resuming is what it does), and only it has
 * --generation. */
enum {
	OPT_NAME = 256,
	OPT_STATE_DIR,
	OPT_RESTART,
	OPT_MAX_RESTARTS,
	OPT_KEEP,
	OPT_EVERY,
	OPT_FRESH,
	OPT_LEVEL,
	OPT_VERBOSE,
	OPT_HELP,
	OPT_GENERATION,
	OPT_DUMP_VIA,
	OPT_NO_DELTA,
	OPT_NO_LAZY,
	OPT_NET,
	OPT_BRIDGE,
	OPT_GATEWAY,
	OPT_FILES_MAX,
	OPT_FILES,
	OPT_FILES_SKIP,
	OPT_STORE,
	OPT_LEASE,
	OPT_LEASE_TTL,
	OPT_STANDBY,
	OPT_STORE_SYNC,
};

/* How the supervisor runs the workload: both verbs. */
/* Laid out by hand: clang-format cannot lay out a list inside a macro. */
// clang-format off
#define SUPERVISOR_OPTIONS \
	{"state-dir", required_argument, NULL, OPT_STATE_DIR}, \
	{"restart", required_argument, NULL, OPT_RESTART}, \
	{"max-restarts", required_argument, NULL, OPT_MAX_RESTARTS}, \
	{"keep", required_argument, NULL, OPT_KEEP}, \
	{"every", required_argument, NULL, OPT_EVERY}, \
	{"zstd-level", required_argument, NULL, OPT_LEVEL}, \
	{"files-max", required_argument, NULL, OPT_FILES_MAX}, \
	{"files-copy", required_argument, NULL, OPT_FILES}, \
	{"files-skip", required_argument, NULL, OPT_FILES_SKIP}, \
	{"store", required_argument, NULL, OPT_STORE}, \
	{"store-sync", no_argument, NULL, OPT_STORE_SYNC}, \
	{"lease", required_argument, NULL, OPT_LEASE}, \
	{"lease-ttl", required_argument, NULL, OPT_LEASE_TTL}, \
	{"dump-via", required_argument, NULL, OPT_DUMP_VIA}, \
	{"no-delta", no_argument, NULL, OPT_NO_DELTA}, \
	{"no-lazy-restore", no_argument, NULL, OPT_NO_LAZY}, \
	{"net", required_argument, NULL, OPT_NET}, \
	{"bridge", required_argument, NULL, OPT_BRIDGE}, \
	{"gateway", required_argument, NULL, OPT_GATEWAY}, \
	{"verbose", no_argument, NULL, OPT_VERBOSE}, \
	{"detach", no_argument, NULL, 'd'}, \
	{"help", no_argument, NULL, OPT_HELP}

static const struct option run_opts[] = {
	{"name", required_argument, NULL, OPT_NAME},
	{"fresh", no_argument, NULL, OPT_FRESH},
	{"standby", no_argument, NULL, OPT_STANDBY},
	SUPERVISOR_OPTIONS,
	{0},
};

static const struct option restore_opts[] = {
	SUPERVISOR_OPTIONS,
	{"generation", required_argument, NULL, OPT_GENERATION},
	{0},
};
// clang-format on

int run_parse_options(int argc, char **argv, bool restore, struct run_options *o)
{
	const struct option *opts = restore ? restore_opts : run_opts;
	const char *verb = restore ? "restore" : "run";
	uint64_t v;
	int64_t lease_ttl = LEASE_TTL_DEFAULT;
	int c;

	*o = (struct run_options){
	    .cfg = {.policy = RESTART_ON_FAILURE,
	            .max_restarts = 5,
	            .keep = 3,
	            .zstd_level = 3,
	            .files_max = SUPERVISOR_FILES_MAX_DEFAULT,
	            .incremental = true,
	            .lazy_restore = true,
	            .dump_via_memory = true},
	};
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+d", opts, NULL)) != -1) {
		switch (c) {
		case OPT_NAME: o->name = optarg; break;
		case OPT_STATE_DIR: o->state_dir = optarg; break;
		case OPT_RESTART:
			if (!strcmp(optarg, "on-failure"))
				o->cfg.policy = RESTART_ON_FAILURE;
			else if (!strcmp(optarg, "always"))
				o->cfg.policy = RESTART_ALWAYS;
			else if (!strcmp(optarg, "no"))
				o->cfg.policy = RESTART_NO;
			else {
				log_error("invalid --restart '%s': use on-failure, always or no",
				          optarg);
				return -EINVAL;
			}
			break;
		case OPT_MAX_RESTARTS:
			if (util_parse_uint(optarg, 1000000, &v) < 0) {
				log_error("invalid --max-restarts '%s': give a whole number",
				          optarg);
				return -EINVAL;
			}
			o->cfg.max_restarts = (unsigned)v;
			break;
		case OPT_KEEP:
			if (util_parse_uint(optarg, 1000000, &v) < 0 || v < 1) {
				log_error("invalid --keep '%s': give a whole number of at least 1",
				          optarg);
				return -EINVAL;
			}
			o->cfg.keep = (unsigned)v;
			break;
		case OPT_EVERY:
			if (util_parse_duration(optarg, &o->cfg.every_ns) < 0 ||
			    o->cfg.every_ns < 10000000ULL) {
				log_error(
				    "invalid --every '%s': give a duration of at least 10ms, e.g. "
				    "500ms, 30s, 5m",
				    optarg);
				return -EINVAL;
			}
			break;
		case OPT_FRESH: o->fresh = o->cfg.fresh = true; break;
		case OPT_LEVEL:
			if (util_parse_uint(optarg, 19, &v) < 0 || v < 1) {
				log_error("invalid --zstd-level '%s': give a number from 1 to 19",
				          optarg);
				return -EINVAL;
			}
			o->cfg.zstd_level = (int)v;
			break;
		case OPT_FILES_MAX:
			if (util_parse_size(optarg, &o->cfg.files_max) < 0) {
				log_error("invalid --files-max '%s': give a size, e.g. 0, 64M, 2G",
				          optarg);
				return -EINVAL;
			}
			break;
		case OPT_FILES:
			if (!strcmp(optarg, "snapshot"))
				o->cfg.files = FILES_SNAPSHOT;
			else if (!strcmp(optarg, "none"))
				o->cfg.files = FILES_NONE;
			else {
				log_error("invalid --files-copy '%s': use snapshot or none",
				          optarg);
				return -EINVAL;
			}
			break;
		case OPT_FILES_SKIP:
			if (check_skip_path(optarg) < 0)
				return -EINVAL;
			if (o->cfg.n_files_skip == SUPERVISOR_FILES_SKIP_MAX) {
				log_error(
				    "too many --files-skip: at most %d; give a directory that "
				    "holds them",
				    SUPERVISOR_FILES_SKIP_MAX);
				return -EINVAL;
			}
			o->cfg.files_skip[o->cfg.n_files_skip++] = optarg;
			break;
		case OPT_NO_DELTA: o->cfg.incremental = false; break;
		case OPT_NO_LAZY: o->cfg.lazy_restore = false; break;
		case OPT_DUMP_VIA:
			if (strcmp(optarg, "memory") != 0 && strcmp(optarg, "files") != 0) {
				log_error("invalid --dump-via '%s': use memory or files", optarg);
				return -EINVAL;
			}
			o->cfg.dump_via_memory = !strcmp(optarg, "memory");
			break;
		case OPT_GENERATION:
			if (util_parse_uint(optarg, UINT64_MAX, &v) < 0 || v < 1) {
				log_error(
				    "invalid --generation '%s': give a generation number (see cryo "
				    "images NAME)",
				    optarg);
				return -EINVAL;
			}
			o->cfg.resume_generation = v;
			break;
		case OPT_NET:
			if (net_parse_cidr(optarg, &o->net.addr, &o->net.prefix) < 0) {
				log_error("invalid --net '%s': give an address and prefix, e.g. "
				          "10.0.0.5/24 or fd00::5/64",
				          optarg);
				return -EINVAL;
			}
			o->cfg.net = &o->net;
			break;
		case OPT_BRIDGE:
			if (strlen(optarg) >= sizeof(o->net.bridge) || !optarg[0]) {
				log_error("invalid --bridge '%s': an interface name has 1 to %zu "
				          "characters",
				          optarg, sizeof(o->net.bridge) - 1);
				return -EINVAL;
			}
			strcpy(o->net.bridge, optarg);
			break;
		case OPT_GATEWAY:
			if (net_parse_ip(optarg, &o->net.gateway) < 0) {
				log_error("invalid --gateway '%s': give an IPv4 or IPv6 address",
				          optarg);
				return -EINVAL;
			}
			break;
		case OPT_STORE: {
			/* Endpoint and credentials from the environment or the
			 * root-only file, never from here; read now, so that a
			 * missing one stops cryo run before anything starts. */
			struct cryo_error err = {{0}};
			if (store_parse_url(optarg, &o->store, &err) < 0 ||
			    s3_config_load(&o->store.s3, NULL, &err) < 0) {
				log_error("invalid --store '%s': %s", optarg, err.msg);
				return -EINVAL;
			}
			/* A store that does not answer holds an upload back this
			 * long at most, then it is tried again. */
			o->store.s3.request_ms = 10000;
			o->store.s3.low_speed_s = 10;
			o->cfg.store = &o->store;
			break;
		}
		case OPT_LEASE: {
			struct cryo_error err = {{0}};
			if (lease_parse_url(optarg, &o->lease, &err) < 0) {
				log_error("invalid --lease '%s': %s", optarg, err.msg);
				return -EINVAL;
			}
			o->cfg.lease = &o->lease;
			break;
		}
		case OPT_LEASE_TTL:
			if (util_parse_uint(optarg, 3600, &v) < 0 || v < 2) {
				log_error("invalid --lease-ttl '%s': give whole seconds, from 2 to "
				          "3600 (etcd grants no less than 2)",
				          optarg);
				return -EINVAL;
			}
			lease_ttl = (int64_t)v;
			break;
		case OPT_STANDBY: o->lease.standby = true; break;
		case OPT_STORE_SYNC: o->cfg.store_sync = true; break;
		case OPT_VERBOSE: log_verbose = true; break;
		case 'd': o->detach = true; break;
		case OPT_HELP: o->help = true; return 0;
		default:
			if (optopt)
				log_error("unknown option '-%c' for 'cryo %s' (see cryo %s --help)",
				          optopt, verb, verb);
			else
				log_error("unknown option '%s' for 'cryo %s' (see cryo %s --help)",
				          argv[optind - 1], verb, verb);
			return -EINVAL;
		}
	}
	o->lease.ttl_s = lease_ttl;
	if (o->cfg.lease && !o->cfg.store) {
		log_error("--lease needs --store s3://BUCKET/PREFIX: the lease owns the "
		          "workload's copy in that store");
		return -EINVAL;
	}
	if (!o->cfg.lease && (o->lease.standby || lease_ttl != LEASE_TTL_DEFAULT)) {
		log_error("--standby and --lease-ttl need --lease etcd://HOST:PORT");
		return -EINVAL;
	}
	if (o->cfg.store_sync && !o->cfg.store) {
		log_error("--store-sync needs --store s3://BUCKET/PREFIX");
		return -EINVAL;
	}
	if (!o->cfg.net && (o->net.bridge[0] || o->net.gateway.family)) {
		log_error("--bridge and --gateway need --net ADDR/PREFIX");
		return -EINVAL;
	}
	if (o->cfg.net && o->net.gateway.family && o->net.gateway.family != o->net.addr.family) {
		log_error(
		    "--gateway must be an address of the same family as --net (IPv4 or IPv6)");
		return -EINVAL;
	}
	return 0;
}

/* cryo run -d: this process goes on as the supervisor in a session of its
 * own, its stdin /dev/null, its and the program's output appended to
 * output.log in the workload's directory; the caller's process waits until
 * the program runs (exit 0, the name on stdout) or the supervisor gives up
 * (what it logged meanwhile, then its status). Returns 0 in the supervisor,
 * or the caller's exit status, with *caller set. */
static int detach(const struct supervisor_config *cfg, bool *caller)
{
	char log_path[PATH_MAX];
	*caller = true;
	if (util_format_path(log_path, sizeof(log_path), "%s/output.log", cfg->paths.dir) < 0) {
		log_error("cannot run '%s' detached: its state directory's path is too long",
		          cfg->name);
		return 1;
	}
	int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int ready[2];
	if (log_fd < 0 || null < 0 || pipe2(ready, O_CLOEXEC) < 0) {
		log_error("cannot run '%s' detached: cannot open '%s': %m (is the state "
		          "directory writable?)",
		          cfg->name, log_path);
		return 1;
	}
	off_t start = lseek(log_fd, 0, SEEK_END);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		log_error("cannot run '%s' detached: fork: %m", cfg->name);
		return 1;
	}
	if (pid == 0) {
		*caller = false;
		close(ready[0]);
		setsid();
		dup2(null, STDIN_FILENO);
		dup2(log_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		close(null);
		close(log_fd);
		/* Nothing of the caller's stays open (a caller that waits for
		 * the end of a pipe it gave us would wait for the workload's):
		 * stdio and the ready pipe, at 3, only. */
		if (ready[1] != 3 && dup3(ready[1], 3, O_CLOEXEC) < 0)
			_exit(1);
		syscall(SYS_close_range, 4U, ~0U, 0U);
		return 3;
	}
	close(ready[1]);
	close(null);
	char c;
	ssize_t n;
	while ((n = read(ready[0], &c, 1)) < 0 && errno == EINTR)
		;
	close(ready[0]);
	if (n == 1) {
		close(log_fd);
		log_info("'%s' runs detached: supervisor PID %d, output in '%s' (cryo status, cryo "
		         "stop %s)",
		         cfg->name, pid, log_path, cfg->name);
		printf("%s\n", cfg->name);
		return 0;
	}
	/* It gave up before the program ran: what it said, and its status. */
	int ws = 0;
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	int in = open(log_path, O_RDONLY | O_CLOEXEC);
	char buf[4096];
	if (in >= 0 && start >= 0) {
		while ((n = pread(in, buf, sizeof(buf), start)) > 0) {
			(void)util_write_all(STDERR_FILENO, buf, (size_t)n);
			start += n;
		}
	}
	if (in >= 0)
		close(in);
	close(log_fd);
	return WIFEXITED(ws) && WEXITSTATUS(ws) ? WEXITSTATUS(ws) : 1;
}

/* Takes the workload's lock: its fd, or -1 (said why). */
static int lock_workload(const struct supervisor_config *cfg)
{
	pid_t holder = 0;
	int lock = workload_lock(&cfg->paths, &holder);
	if (lock == -EBUSY) {
		log_error(
		    "workload '%s' is already running under supervisor PID %d (state directory "
		    "'%s'); pick another --name, or cryo stop %s",
		    cfg->name, holder, cfg->paths.state_dir, cfg->name);
		return -1;
	}
	if (lock == -ELOOP || lock == -EPERM) {
		log_error("cannot lock '%s': it is a symbolic link, a hard link or another user's "
		          "file, which cryo does not open; remove it",
		          cfg->paths.lock);
		return -1;
	}
	if (lock < 0) {
		log_error("cannot lock '%s': %s", cfg->paths.lock, strerror(-lock));
		return -1;
	}
	return lock;
}

int run_fetch(struct run_options *o)
{
	struct supervisor_config *cfg = &o->cfg;
	if (cli_workload(o->state_dir, cfg->name, &cfg->paths) < 0 ||
	    check_state_dir(&cfg->paths) < 0)
		return -EINVAL;
	_cleanup_close_ int lock = lock_workload(cfg);
	if (lock < 0)
		return -EBUSY;
	_cleanup_close_ int dir_fd = workload_open_dir(&cfg->paths);
	if (dir_fd < 0) {
		log_error("cannot open the state directory '%s': %s", cfg->paths.dir,
		          strerror(-dir_fd));
		return dir_fd;
	}
	image_store_sweep(cfg->paths.dir);
	struct cryo_error err = {{0}};
	int64_t r =
	    store_fetch_into(cfg->store, cfg->name, cfg->paths.dir, dir_fd, 0, NULL, 0, &err);
	if (r < 0)
		log_error("cannot fetch '%s' from %s: %s", cfg->name, cfg->store->url, err.msg);
	return r < 0 ? (int)r : 0;
}

int run_supervised(struct run_options *o)
{
	struct supervisor_config *cfg = &o->cfg;
	if (cli_workload(o->state_dir, cfg->name, &cfg->paths) < 0 ||
	    check_state_dir(&cfg->paths) < 0)
		return 1;
	if (o->detach) {
		bool caller;
		int r = detach(cfg, &caller);
		if (caller)
			return r;
		cfg->ready_fd = r;
	}
	int lock = lock_workload(cfg);
	if (lock < 0)
		return 1;
	int r = supervisor_run(cfg, lock);
	close(lock);
	return r < 0 ? 1 : r;
}
