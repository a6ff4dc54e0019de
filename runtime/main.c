/* cryo: the command line. One file per verb (cmd-*.c). */
#include "cli.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *summary;
} verbs[] = {
    {"run", cmd_run, "run a program under a supervisor that checkpoints and restores it"},
    {"checkpoint", cmd_checkpoint, "checkpoint a running workload now"},
    {"status", cmd_status, "show workloads and their last checkpoints"},
    {"images", cmd_images, "list a workload's stored generations"},
    {"inspect", cmd_inspect, "show what an image holds"},
    {"stop", cmd_stop, "stop a workload, optionally checkpointing it first"},
    {"kill", cmd_kill, "kill a workload's program as a crash would (it is restored)"},
    {"restore", cmd_restore, "resume a workload from its images when no supervisor runs it"},
    {"migrate", cmd_migrate, "move a running workload to another machine"},
    {"serve", cmd_serve, "accept workloads migrated from other machines"},
    {"keygen", cmd_keygen, "make the key that cryo migrate and cryo serve share"},
};

static void usage(FILE *f)
{
	fputs("usage: cryo VERB [OPTIONS] ...\n\n", f);
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %-11s %s\n", verbs[i].name, verbs[i].summary);
	fputs("\n'cryo VERB --help' tells more.\n", f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("cryo %s\n", CRYO_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	log_error("unknown command '%s' (see cryo --help)", argv[1]);
	return CLI_EXIT_USAGE;
}
