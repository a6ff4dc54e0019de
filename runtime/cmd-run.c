/* cryo run: start a program under a supervisor. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "supervisor.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs(
	    "usage: cryo run [--name NAME] [--state-dir DIR] [--restart on-failure|always|no]\n"
	    "                [--max-restarts N] [--keep N] [--every DURATION] [--fresh]\n"
	    "                [--zstd-level N] [--no-delta] [--dump-via memory|files]\n"
	    "                [--no-lazy-restore] [--verbose]\n"
	    "                [--net ADDR/PREFIX [--bridge BRIDGE] [--gateway ADDR]]\n"
	    "                -- PROG [ARGS...]\n"
	    "\n"
	    "Runs PROG under a supervisor in its own PID namespace. PROG may call\n"
	    "cryo_checkpoint(); 'cryo checkpoint NAME' checkpoints it from outside, and\n"
	    "--every does so periodically. When PROG dies, the newest intact checkpoint\n"
	    "is restored. If NAME has images and no supervisor, they are resumed unless\n"
	    "--fresh is given.\n"
	    "\n"
	    "  --name NAME          workload name (default: PROG's base name)\n"
	    "  --state-dir DIR      state directory (default: $CRYO_STATE_DIR, else "
	    "/var/lib/cryo)\n"
	    "  --restart POLICY     on-failure (default): restore after a signal or non-zero "
	    "exit;\n"
	    "                       always: also after exit 0; no: never\n"
	    "  --max-restarts N     give up after N restores without a checkpoint between "
	    "(default 5)\n"
	    "  --keep N             generations to keep (default 3)\n"
	    "  --every DURATION     checkpoint periodically, e.g. 500ms, 30s, 5m\n"
	    "  --fresh              start afresh even if NAME has images (kept until the first\n"
	    "                       new checkpoint is durable)\n"
	    "  --zstd-level N       compression level, 1-19 (default 3)\n"
	    "  --no-delta           store every generation whole (by default a generation that\n"
	    "                       shares half its memory pages or more with the one before\n"
	    "                       stores only the pages that changed, up to 8 in a row)\n"
	    "  --dump-via WAY       memory (default): CRIU sends the pages to cryo's own page\n"
	    "                       server, into memory readied before the freeze (the\n"
	    "                       shortest freeze; files for programs under 64 MiB or when\n"
	    "                       that memory is not to be had); files: CRIU writes image\n"
	    "                       files that cryo archives\n"
	    "  --no-lazy-restore    restore all memory before PROG runs again (by default a\n"
	    "                       whole generation is restored lazily: PROG runs as soon as\n"
	    "                       its stacks are back, and the rest of its memory follows\n"
	    "                       as it is decompressed, on demand and in the background)\n"
	    "  --net ADDR/PREFIX    run PROG in its own network namespace with this IPv4 or\n"
	    "                       IPv6 address on eth0, joined to the host by a veth pair;\n"
	    "                       the address moves with PROG when it is restored or migrated\n"
	    "  --bridge BRIDGE      attach the host end to this bridge (PROG is then on the\n"
	    "                       bridge's segment); without it the address is routed\n"
	    "                       through the host (IPv4: proxy ARP, forwarding turned on;\n"
	    "                       IPv6: through fe80::1 on the host end, forwarding as the\n"
	    "                       host has it)\n"
	    "  --gateway ADDR       PROG's default route (bridge mode; routed mode uses the host)\n"
	    "  --verbose            also report periodic checkpoints\n",
	    f);
}

/* Finds PROG as execvp() would, to report a missing program here rather
 * than from inside the namespace. */
static int check_program(const char *prog)
{
	char path[PATH_MAX];
	struct stat st;
	if (strchr(prog, '/')) {
		if (stat(prog, &st) < 0) {
			log_error("cannot run '%s': %s (check the path)", prog, strerror(errno));
			return -errno;
		}
		if (!S_ISREG(st.st_mode) || access(prog, X_OK) < 0) {
			log_error("cannot run '%s': not an executable file (chmod +x it?)", prog);
			return -EACCES;
		}
		return 0;
	}
	const char *env = getenv("PATH");
	_cleanup_free_ char *dirs = strdup(env ? env : "/usr/bin:/bin");
	if (!dirs)
		return -ENOMEM;
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(path, sizeof(path), "%s/%s", d, prog);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
			return 0;
	}
	log_error("cannot run '%s': no such program in PATH (give its path, e.g. ./%s)", prog,
	          prog);
	return -ENOENT;
}

static int check_state_dir(const struct workload_paths *p)
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
	return 0;
}

int run_parse_options(int argc, char **argv, bool restore, struct run_options *o)
{
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
	};
	static const struct option run_opts[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {"fresh", no_argument, NULL, OPT_FRESH},
	    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
	    {"restart", required_argument, NULL, OPT_RESTART},
	    {"max-restarts", required_argument, NULL, OPT_MAX_RESTARTS},
	    {"keep", required_argument, NULL, OPT_KEEP},
	    {"every", required_argument, NULL, OPT_EVERY},
	    {"zstd-level", required_argument, NULL, OPT_LEVEL},
	    {"dump-via", required_argument, NULL, OPT_DUMP_VIA},
	    {"no-delta", no_argument, NULL, OPT_NO_DELTA},
	    {"no-lazy-restore", no_argument, NULL, OPT_NO_LAZY},
	    {"net", required_argument, NULL, OPT_NET},
	    {"bridge", required_argument, NULL, OPT_BRIDGE},
	    {"gateway", required_argument, NULL, OPT_GATEWAY},
	    {"verbose", no_argument, NULL, OPT_VERBOSE},
	    {"help", no_argument, NULL, OPT_HELP},
	    {"generation", required_argument, NULL, OPT_GENERATION},
	    {0},
	};
	/* restore takes the same options but --name/--fresh, plus --generation. */
	const struct option *opts = restore ? run_opts + 2 : run_opts;
	const char *verb = restore ? "restore" : "run";
	uint64_t v;
	int c;

	*o = (struct run_options){
	    .cfg = {.policy = RESTART_ON_FAILURE,
	            .max_restarts = 5,
	            .keep = 3,
	            .zstd_level = 3,
	            .incremental = true,
	            .lazy_restore = true,
	            .dump_via_memory = true},
	};
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
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
				return 2;
			}
			break;
		case OPT_MAX_RESTARTS:
			if (util_parse_uint(optarg, 1000000, &v) < 0) {
				log_error("invalid --max-restarts '%s': give a whole number",
				          optarg);
				return 2;
			}
			o->cfg.max_restarts = (unsigned)v;
			break;
		case OPT_KEEP:
			if (util_parse_uint(optarg, 1000000, &v) < 0 || v < 1) {
				log_error("invalid --keep '%s': give a whole number of at least 1",
				          optarg);
				return 2;
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
				return 2;
			}
			break;
		case OPT_FRESH: o->fresh = true; break;
		case OPT_LEVEL:
			if (util_parse_uint(optarg, 19, &v) < 0 || v < 1) {
				log_error("invalid --zstd-level '%s': give a number from 1 to 19",
				          optarg);
				return 2;
			}
			o->cfg.zstd_level = (int)v;
			break;
		case OPT_NO_DELTA: o->cfg.incremental = false; break;
		case OPT_NO_LAZY: o->cfg.lazy_restore = false; break;
		case OPT_DUMP_VIA:
			if (strcmp(optarg, "memory") != 0 && strcmp(optarg, "files") != 0) {
				log_error("invalid --dump-via '%s': use memory or files", optarg);
				return 2;
			}
			o->cfg.dump_via_memory = !strcmp(optarg, "memory");
			break;
		case OPT_GENERATION:
			if (util_parse_uint(optarg, UINT64_MAX, &v) < 0 || v < 1) {
				log_error(
				    "invalid --generation '%s': give a generation number (see cryo "
				    "images NAME)",
				    optarg);
				return 2;
			}
			o->cfg.resume_generation = v;
			break;
		case OPT_NET:
			if (net_parse_cidr(optarg, &o->net.addr, &o->net.prefix) < 0) {
				log_error("invalid --net '%s': give an address and prefix, e.g. "
				          "10.0.0.5/24 or fd00::5/64",
				          optarg);
				return 2;
			}
			o->cfg.net = &o->net;
			break;
		case OPT_BRIDGE:
			if (strlen(optarg) >= sizeof(o->net.bridge) || !optarg[0]) {
				log_error("invalid --bridge '%s': an interface name has 1 to %zu "
				          "characters",
				          optarg, sizeof(o->net.bridge) - 1);
				return 2;
			}
			strcpy(o->net.bridge, optarg);
			break;
		case OPT_GATEWAY:
			if (net_parse_ip(optarg, &o->net.gateway) < 0) {
				log_error("invalid --gateway '%s': give an IPv4 or IPv6 address",
				          optarg);
				return 2;
			}
			break;
		case OPT_VERBOSE: log_verbose = true; break;
		case OPT_HELP: o->help = true; return 0;
		default:
			if (optopt)
				log_error("unknown option '-%c' for 'cryo %s' (see cryo %s --help)",
				          optopt, verb, verb);
			else
				log_error("unknown option '%s' for 'cryo %s' (see cryo %s --help)",
				          argv[optind - 1], verb, verb);
			return 2;
		}
	}
	if (!o->cfg.net && (o->net.bridge[0] || o->net.gateway.family)) {
		log_error("--bridge and --gateway need --net ADDR/PREFIX");
		return 2;
	}
	if (o->cfg.net && o->net.gateway.family && o->net.gateway.family != o->net.addr.family) {
		log_error(
		    "--gateway must be an address of the same family as --net (IPv4 or IPv6)");
		return 2;
	}
	return 0;
}

int run_supervised(struct run_options *o)
{
	struct supervisor_config *cfg = &o->cfg;
	if (cli_workload(o->state_dir, cfg->name, &cfg->paths) < 0 ||
	    check_state_dir(&cfg->paths) < 0)
		return 1;
	pid_t holder = 0;
	int lock = workload_lock(&cfg->paths, &holder);
	if (lock == -EBUSY) {
		log_error(
		    "workload '%s' is already running under supervisor PID %d (state directory "
		    "'%s'); pick another --name, or cryo stop %s",
		    cfg->name, holder, cfg->paths.state_dir, cfg->name);
		return 1;
	}
	if (lock < 0) {
		log_error("cannot lock '%s': %s", cfg->paths.lock, strerror(-lock));
		return 1;
	}
	int r = supervisor_run(cfg, lock);
	close(lock);
	return r < 0 ? 1 : r;
}

int cmd_run(int argc, char **argv)
{
	struct run_options o;
	int r = run_parse_options(argc, argv, false, &o);
	if (r || o.help) {
		if (o.help)
			usage(stdout);
		return r;
	}
	if (optind >= argc) {
		log_error(
		    "no program given: cryo run [OPTIONS] -- PROG [ARGS...] (see cryo run --help)");
		return 2;
	}
	o.cfg.argv = argv + optind;
	if (cli_require_root("run") < 0)
		return 1;
	if (check_program(o.cfg.argv[0]) < 0)
		return 127;
	if (!o.name) {
		const char *slash = strrchr(o.cfg.argv[0], '/');
		o.name = slash ? slash + 1 : o.cfg.argv[0];
	}
	o.cfg.name = o.name;
	if (!o.fresh) {
		struct workload_paths p;
		_cleanup_free_ uint64_t *gens = NULL;
		size_t n = 0;
		if (cli_workload(o.state_dir, o.name, &p) < 0)
			return 1;
		if (image_store_list(p.dir, &gens, &n) == 0 && n > 0 &&
		    !workload_is_supervised(&p, NULL)) {
			log_info(
			    "'%s' has %zu stored generation(s) and no supervisor: resuming the "
			    "newest (use --fresh to start afresh)",
			    o.name, n);
			o.cfg.resume = true;
		}
	}
	return run_supervised(&o);
}
