/* cryo restore NAME: resume a workload from its images; this process becomes
 * its supervisor. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: cryo restore [-d] [--state-dir DIR] [--generation G] [--restart POLICY]\n"
	      "                    [--max-restarts N] [--keep N] [--every DURATION]\n"
	      "                    [--zstd-level N] [--files-max SIZE]\n"
	      "                    [--files-copy snapshot|none] [--files-skip PATH]...\n"
	      "                    [--no-delta] [--dump-via memory|files] [--no-lazy-restore]\n"
	      "                    [--verbose] [--store s3://BUCKET/PREFIX [--store-sync]\n"
	      "                     [--lease etcd://HOST:PORT [--lease-ttl SECONDS]]]\n"
	      "                    [--net ADDR/PREFIX [--bridge BRIDGE] [--gateway ADDR]] NAME\n"
	      "\n"
	      "Resumes NAME from its newest intact image (or generation G) when no supervisor\n"
	      "runs it: after a reboot, a killed supervisor, or 'cryo stop --checkpoint'.\n"
	      "This process becomes its supervisor, as 'cryo run' would, with the program's\n"
	      "command line from the image. The settings are not taken from the image: each\n"
	      "option not given has cryo run's default. With --store, the newest generation\n"
	      "in the store that can be restored, and those it is built on, are brought\n"
	      "here first (on a machine that lost none of them, nothing is fetched), and\n"
	      "the store's prefix becomes this machine's.\n"
	      "\n"
	      "  -d, --detach         run in the background, as cryo run -d does\n"
	      "  --generation G       resume generation G (see cryo images NAME) instead of\n"
	      "                       the newest\n"
	      "  --net ADDR/PREFIX    the address to restore the program with, instead of the\n"
	      "                       image's own (its address, bridge and gateway, if it\n"
	      "                       had one); --bridge and --gateway go with it\n"
	      "  --state-dir, --restart, --max-restarts, --keep, --every, --zstd-level,\n"
	      "  --files-max, --files-copy, --files-skip, --no-delta, --dump-via,\n"
	      "  --no-lazy-restore, --verbose, --store, --store-sync, --lease, --lease-ttl:\n"
	      "                       as for cryo run (see cryo run --help)\n",
	      f);
}

int cmd_restore(int argc, char **argv)
{
	struct run_options o;
	int r = run_parse_options(argc, argv, true, &o);
	if (r < 0)
		return CLI_EXIT_USAGE;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (optind != argc - 1) {
		log_error("give one workload name: cryo restore NAME (see cryo status)");
		return CLI_EXIT_USAGE;
	}
	o.name = o.cfg.name = argv[optind];
	if (cli_require_root("restore") < 0)
		return 1;
	struct workload_paths p;
	if (cli_workload(o.state_dir, o.name, &p) < 0)
		return 1;

	/* --store: what the store holds that is newer than what is here
	 * (all of it on a machine that has none). */
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (o.cfg.store) {
		r = run_fetch(&o);
		if (r == -EBUSY || r == -EINVAL)
			return 1;
		if (r < 0 && (image_store_list(p.dir, &gens, &n) < 0 || n == 0))
			return 1;
		if (r < 0)
			log_info("restoring '%s' from the generations here instead", o.name);
		free(TAKE_PTR(gens));
	}

	/* The command line comes from the image, for the checkpoints to come. */
	r = image_store_list(p.dir, &gens, &n);
	if (r < 0 || n == 0) {
		log_error(
		    "'%s' has no images in '%s' (see cryo status; state directories are chosen "
		    "with --state-dir or CRYO_STATE_DIR)",
		    o.name, p.dir);
		return 1;
	}
	struct manifest *m = NULL;
	for (size_t i = n; i-- > 0 && !m;) {
		struct cryo_error err = {{0}};
		if (o.cfg.resume_generation && gens[i] != o.cfg.resume_generation)
			continue;
		if (image_store_read_manifest(p.dir, gens[i], &m, &err) < 0)
			m = NULL;
	}
	if (!m) {
		log_error("no readable image of '%s' in '%s' (see cryo images %s)", o.name, p.dir,
		          o.name);
		return 1;
	}
	size_t argc_img = 0;
	for (size_t i = 0; i < m->n_entries; i++)
		argc_img += !strcmp(m->keys[i], "arg");
	char **args = calloc(argc_img + 1, sizeof(char *));
	if (!args) {
		manifest_free(m);
		return 1;
	}
	for (size_t i = 0, k = 0; i < m->n_entries; i++)
		if (!strcmp(m->keys[i], "arg"))
			args[k++] = m->values[i];
	o.cfg.argv = args;
	o.cfg.resume = true;
	r = run_supervised(&o);
	free(args);
	manifest_free(m);
	return r;
}
