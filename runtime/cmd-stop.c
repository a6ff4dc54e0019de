/* cryo stop NAME [--checkpoint]: stop a workload. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs(
	    "usage: cryo stop [--state-dir DIR] [--checkpoint] [--timeout DURATION] [--json] NAME\n"
	    "\n"
	    "Stops workload NAME: SIGTERM, then SIGKILL after the timeout (default 10s).\n"
	    "With --checkpoint, takes a final checkpoint first (the program is not stopped\n"
	    "if that fails), so that 'cryo restore NAME' resumes it later.\n",
	    f);
}

static bool wait_gone(const struct workload_paths *p, uint64_t timeout_ns)
{
	uint64_t end = util_now_ns() + timeout_ns;
	while (workload_is_supervised(p, NULL)) {
		if (util_now_ns() > end)
			return false;
		usleep(20000);
	}
	return true;
}

struct stop_options {
	bool with_checkpoint;
	uint64_t timeout;
};

static int stop_option(int c, const char *arg, void *ctx)
{
	struct stop_options *o = ctx;
	if (c == 'c') {
		o->with_checkpoint = true;
		return 0;
	}
	if (util_parse_duration(arg, &o->timeout) < 0) {
		log_error("invalid --timeout '%s': give a duration, e.g. 10s", arg);
		return -EINVAL;
	}
	return 0;
}

int cmd_stop(int argc, char **argv)
{
	static const struct option extra[] = {
	    {"checkpoint", no_argument, NULL, 'c'},
	    {"timeout", required_argument, NULL, 't'},
	    {0},
	};
	struct stop_options so = {.timeout = 10000000000ULL};
	struct cli_args a;
	int c = cli_parse(argc, argv, "stop", usage, extra, stop_option, &so, 1, 1,
	                  "one workload name: cryo stop NAME (see cryo status)", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	const char *state_dir = a.state_dir;
	bool json = a.json, with_checkpoint = so.with_checkpoint;
	uint64_t timeout = so.timeout;
	const char *name = argv[a.first];
	struct workload_paths p;
	if (cli_workload(state_dir, name, &p) < 0)
		return 1;
	_cleanup_json_ struct json_object *reply = NULL;
	int r = cli_request(&p, with_checkpoint ? "stop-checkpoint" : "stop", 3600 * 1000, &reply);
	int status;
	if (r < 0 && cli_reply_done(&p, name, r, reply, json, "stop", "", &status))
		return status; /* explained, as JSON with --json */
	const char *why = cli_reply_error(reply);
	if (why) {
		if (json)
			printf("%s\n", cryo_json_text(reply));
		log_error("cannot checkpoint '%s' before stopping it: %s; it was not stopped (stop "
		          "it without --checkpoint to lose its state since the last checkpoint)",
		          name, why);
		return 1;
	}
	bool killed = false;
	if (!wait_gone(&p, timeout)) {
		_cleanup_json_ struct json_object *r2 = NULL;
		if (!json)
			log_info("'%s' did not stop within the timeout: killing it", name);
		if (cli_request(&p, "kill", 5000, &r2) == 0)
			wait_gone(&p, 10000000000ULL);
		killed = true;
	}
	int64_t gen = with_checkpoint ? cryo_json_int(reply, "generation", 0) : 0;
	if (json) {
		_cleanup_json_ struct json_object *o = json_object_new_object();
		cryo_json_add(o, "ok", json_object_new_boolean(true));
		cryo_json_add(o, "name", json_object_new_string(name));
		cryo_json_add(o, "killed", json_object_new_boolean(killed));
		cryo_json_add(o, "generation", json_object_new_int64(gen));
		printf("%s\n", cryo_json_text(o));
	} else if (with_checkpoint)
		printf("stopped '%s' after checkpoint %" PRId64
		       " (resume it with: cryo restore %s)\n",
		       name, gen, name);
	else
		printf("stopped '%s'\n", name);
	return 0;
}
