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
	    "usage: cryo run [-d] [--name NAME] [--state-dir DIR] [--restart "
	    "on-failure|always|no]\n"
	    "                [--max-restarts N] [--keep N] [--every DURATION] [--fresh]\n"
	    "                [--zstd-level N] [--files-max SIZE]\n"
	    "                [--files-copy snapshot|none] [--files-skip PATH]... [--no-delta]\n"
	    "                [--dump-via memory|files] [--no-lazy-restore] [--verbose]\n"
	    "                [--store s3://BUCKET/PREFIX [--store-sync]\n"
	    "                 [--lease etcd://HOST:PORT [--lease-ttl SECONDS] [--standby]]]\n"
	    "                [--net ADDR/PREFIX [--bridge BRIDGE] [--gateway ADDR]]\n"
	    "                -- PROG [ARGS...]\n"
	    "\n"
	    "Runs PROG under a supervisor in its own PID namespace. PROG may call\n"
	    "cryo_checkpoint(); 'cryo checkpoint NAME' checkpoints it from outside, and\n"
	    "--every does so periodically. When PROG dies, the newest intact checkpoint\n"
	    "is restored. If NAME has images and no supervisor, they are resumed unless\n"
	    "--fresh is given.\n"
	    "\n"
	    "  -d, --detach         run in the background: print NAME and exit 0 once PROG\n"
	    "                       runs; PROG's output and cryo's go to "
	    "STATE_DIR/NAME/output.log\n"
	    "  --name NAME          workload name (default: PROG's base name)\n"
	    "  --state-dir DIR      state directory (default: $CRYO_STATE_DIR, else "
	    "/var/lib/cryo)\n"
	    "  --restart POLICY     on-failure (default): restore after a signal or non-zero "
	    "exit;\n"
	    "                       always: also after exit 0; no: never\n"
	    "  --max-restarts N     give up after N restores without a checkpoint between "
	    "(default 5)\n"
	    "  --keep N             the newest generations to keep (default 3), and those\n"
	    "                       they are built on (at most 8 more: cryo images marks\n"
	    "                       them base)\n"
	    "  --every DURATION     checkpoint periodically, e.g. 500ms, 30s, 5m\n"
	    "  --fresh              start afresh even if NAME has images (kept until the first\n"
	    "                       new checkpoint is durable)\n"
	    "  --zstd-level N       compression level, 1-19 (default 3)\n"
	    "  --files-max SIZE     the most a checkpoint copies of the files the program\n"
	    "                       holds open for writing (default 256M)\n"
	    "  --files-copy WHICH   snapshot (default): a checkpoint copies the regular files\n"
	    "                       PROG holds open for writing without O_APPEND or maps\n"
	    "                       shared and writable, and a restore puts them back first;\n"
	    "                       none: it copies none, and a restore fails if such a\n"
	    "                       file's size changed since (CRIU's own rule)\n"
	    "  --files-skip PATH    do not copy the files at or under PATH (absolute, without\n"
	    "                       symbolic links; up to 16 times): they are left as they are\n"
	    "                       at a restore, under CRIU's rule as with --files-copy none\n"
	    "  --no-delta           store every generation whole (by default a generation that\n"
	    "                       shares half its memory pages or more with the one before\n"
	    "                       stores only the pages that changed, up to 8 in a row)\n"
	    "  --dump-via WAY       memory (default): CRIU sends the pages to cryo's own page\n"
	    "                       server, into memory readied before the freeze (the\n"
	    "                       shortest freeze), whatever the program's size; files\n"
	    "                       instead when its pages would take half the memory\n"
	    "                       available or more, or that memory cannot be had;\n"
	    "                       files: CRIU writes image files that cryo archives\n"
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
	    "  --store s3://BUCKET/PREFIX\n"
	    "                       also copy every generation, once durable here, to this\n"
	    "                       S3-compatible store as PREFIX/NAME/gen-N.cryo, in the\n"
	    "                       background (retried while the store is down; pruned\n"
	    "                       with --keep); endpoint and credentials from\n"
	    "                       AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,\n"
	    "                       AWS_SECRET_ACCESS_KEY or /etc/cryo/s3.conf\n"
	    "  --store-sync         a checkpoint's news of durability (cryo_checkpoint()'s,\n"
	    "                       cryo checkpoint's reply) waits until the generation is in\n"
	    "                       the store (and published, with --lease); a store that\n"
	    "                       does not take it within 60 s makes it a failure (the\n"
	    "                       generation stays here)\n"
	    "  --lease etcd://HOST:PORT\n"
	    "                       run only while holding the workload's lease in this etcd\n"
	    "                       (key cryo/BUCKET/PREFIX/NAME/owner); another holder is\n"
	    "                       refused at start; a lease not renewed in time stops PROG\n"
	    "                       for good before it can expire (self-fencing); only the\n"
	    "                       holder publishes generations (.../published)\n"
	    "  --lease-ttl SECONDS  the lease's TTL, 2-3600 (default 10), renewed every TTL/3;\n"
	    "                       PROG is stopped when no renewal succeeded by TTL minus\n"
	    "                       max(1 s, TTL/4) after the last successful one was sent\n"
	    "  --standby            while another holds the lease, wait (asking every second)\n"
	    "                       instead of refusing; then take it and run from the\n"
	    "                       published generation\n"
	    "  --verbose            also report periodic checkpoints, and those a command\n"
	    "                       (cryo checkpoint, cryo stop --checkpoint) reported\n",
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

int cmd_run(int argc, char **argv)
{
	struct run_options o;
	int r = run_parse_options(argc, argv, false, &o);
	if (r < 0)
		return CLI_EXIT_USAGE;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (optind >= argc) {
		log_error(
		    "no program given: cryo run [OPTIONS] -- PROG [ARGS...] (see cryo run --help)");
		return CLI_EXIT_USAGE;
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
