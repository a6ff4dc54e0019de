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

/* Explains a failed request to a supervisor, in one line. */
void cli_report_unreachable(const struct workload_paths *p, const char *name, int r)
{
	if (r == -ENOENT || r == -ECONNREFUSED)
		log_error(
		    "'%s' is not running: no supervisor in '%s' (start it with cryo run --name "
		    "%s -- PROG, or resume it with cryo restore %s)",
		    name, p->dir, name, name);
	else if (r == -ETIMEDOUT)
		log_error("the supervisor of '%s' did not answer in time; try again, or see cryo "
		          "status %s",
		          name, name);
	else if (r == -EPROTO)
		log_error("the supervisor of '%s' answered with something that is not JSON; is "
		          "this cryo older or newer than the one that runs it?",
		          name);
	else
		log_error("lost the supervisor of '%s' while waiting for its answer (%s); see cryo "
		          "status %s",
		          name, strerror(-r), name);
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
	if (r < 0) {
		cli_report_unreachable(&p, name, r);
		return 1;
	}
	const char *why = cli_reply_error(reply);
	if (json) {
		printf("%s\n", cryo_json_text(reply));
		return why ? 1 : 0;
	}
	if (why) {
		log_error("cannot checkpoint '%s': %s; the program runs on", name, why);
		return 1;
	}
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
