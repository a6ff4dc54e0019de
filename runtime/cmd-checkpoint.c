/* cryo checkpoint NAME: checkpoint a running workload now. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: cryo checkpoint [--state-dir DIR] [--json] NAME\n"
	      "\n"
	      "Checkpoints the running workload NAME now and returns once the image is\n"
	      "durable; prints the generation, its size and how long the program was frozen.\n",
	      f);
}

int cmd_checkpoint(int argc, char **argv)
{
	struct cli_args a;
	int c = cli_parse(argc, argv, "checkpoint", usage, NULL, NULL, NULL, 1, 1,
	                  "one workload name: cryo checkpoint NAME (see cryo status)", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	const char *state_dir = a.state_dir;
	bool json = a.json;
	const char *name = argv[a.first];
	struct workload_paths p;
	if (cli_workload(state_dir, name, &p) < 0)
		return 1;
	_cleanup_json_ struct json_object *reply = NULL;
	int r = cli_request(&p, "checkpoint", 3600 * 1000, &reply);
	int status;
	/* ESRCH: the program ended meanwhile (its supervisor restores it). */
	bool ended = r == 0 && cryo_json_int(reply, "errno", 0) == ESRCH;
	if (cli_reply_done(&p, name, r, reply, json, "checkpoint",
	                   ended ? "" : "; the program runs on", &status))
		return status;
	char size[32], raw[32];
	printf("checkpoint %" PRId64
	       " of '%s': %s (%s uncompressed), frozen %.1f ms, durable after %.1f "
	       "ms\n",
	       cryo_json_int(reply, "generation", 0), name,
	       util_format_bytes((uint64_t)cryo_json_int(reply, "size", 0), size, sizeof(size)),
	       util_format_bytes((uint64_t)cryo_json_int(reply, "raw_size", 0), raw, sizeof(raw)),
	       (double)cryo_json_int(reply, "frozen_us", 0) / 1000,
	       (double)cryo_json_int(reply, "duration_us", 0) / 1000);
	return 0;
}
