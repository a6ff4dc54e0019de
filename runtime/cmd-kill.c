/* cryo kill NAME: crash a running workload's program on purpose. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"

#include <stdio.h>

static void usage(FILE *f)
{
	fputs("usage: cryo kill [--state-dir DIR] [--json] NAME\n"
	      "\n"
	      "Kills the program of the running workload NAME with SIGKILL, as a crash\n"
	      "would: its supervisor then does what it does after a crash (by default it\n"
	      "restores the newest checkpoint; see cryo run --help, --restart). The\n"
	      "supervisor signals the program's namespace through its own child, which\n"
	      "cannot have ended and left its PID to another process, as a PID read from\n"
	      "a file can. To end a workload, use cryo stop.\n",
	      f);
}

int cmd_kill(int argc, char **argv)
{
	struct cli_args a;
	int c = cli_parse(argc, argv, "kill", usage, NULL, NULL, NULL, 1, 1,
	                  "one workload name: cryo kill NAME (see cryo status)", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	const char *name = argv[a.first];
	struct workload_paths p;
	if (cli_workload(a.state_dir, name, &p) < 0)
		return 1;
	_cleanup_json_ struct json_object *reply = NULL;
	int r = cli_request(&p, "crash", 5000, &reply);
	int status;
	if (cli_reply_done(&p, name, r, reply, a.json, "kill the program of", "", &status))
		return status;
	printf("killed the program of '%s' (SIGKILL); its supervisor takes it as a crash\n", name);
	return 0;
}
