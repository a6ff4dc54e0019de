/* cryo migrate NAME --to HOST:PORT --key-file FILE: move a running workload
 * to the cryo serve on another machine. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs("usage: cryo migrate [--state-dir DIR] [--json] [--precopy] NAME --to HOST:PORT\n"
	      "                    --key-file FILE\n"
	      "\n"
	      "Moves the running workload NAME to the machine where 'cryo serve' listens on\n"
	      "HOST:PORT, with its memory, its address (cryo run --net) and its open TCP\n"
	      "connections. Both ends must hold the same key file. The target first checks\n"
	      "that it can take the program (CRIU, CPU, the same files, the address, disk\n"
	      "room); only then is the program frozen, dumped and streamed, encrypted. If\n"
	      "anything fails before the target runs it, it runs here again. On a terminal a\n"
	      "progress bar shows the transfer; --json prints the phases and their durations.\n"
	      "\n"
	      "  --to HOST:PORT     where cryo serve listens ([IPv6]:PORT for an IPv6 address)\n"
	      "  --key-file FILE    the shared key (at least 32 bytes, mode 600)\n"
	      "  --precopy          first send a whole image while the program runs on, then\n"
	      "                     freeze it and send only the pages that changed since: a\n"
	      "                     shorter freeze for a program with much memory that changes\n"
	      "                     little, at the cost of one more short pause (a\n"
	      "                     checkpoint's) before the move\n",
	      f);
}

struct migrate_opts {
	const char *to;
	const char *key_file;
	bool precopy;
};

static int on_option(int c, const char *arg, void *ctx)
{
	struct migrate_opts *o = ctx;
	if (c == 'T')
		o->to = arg;
	else if (c == 'K')
		o->key_file = arg;
	else if (c == 'P')
		o->precopy = true;
	return 0;
}

struct view {
	bool tty;
	bool json;
	bool drawn;
};

static void on_event(struct json_object *line, void *ctx)
{
	struct view *v = ctx;
	if (v->json) {
		printf("%s\n", cryo_json_text(line));
		fflush(stdout);
		return;
	}
	if (!v->tty)
		return;
	const char *phase = cryo_json_str(line, "phase");
	if (phase) {
		if (v->drawn)
			fputc('\n', stderr);
		v->drawn = false;
		fprintf(stderr, "  %-10s %8.1f ms\n", phase, cryo_json_double(line, "ms", 0));
		return;
	}
	/* progress: bytes sent, rate, and the time left by the raw bytes read */
	long long sent = (long long)cryo_json_int(line, "sent", 0),
	          done = (long long)cryo_json_int(line, "raw_done", 0),
	          total = (long long)cryo_json_int(line, "raw_total", 1);
	double ms = cryo_json_double(line, "ms", 1);
	if (total <= 0)
		total = 1;
	double frac = (double)done / (double)total;
	if (frac > 1)
		frac = 1;
	int width = 30, fill = (int)(frac * width);
	char bar[64], a[32];
	for (int i = 0; i < width; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[width] = '\0';
	double rate = ms > 0 ? (double)sent / (ms / 1000) : 0;
	double eta = frac > 0 ? ms / 1000 * (1 - frac) / frac : 0;
	fprintf(stderr, "\r  transfer   [%s] %3.0f%% %s sent, %.1f MiB/s, ETA %.1f s", bar,
	        frac * 100, util_format_bytes((uint64_t)sent, a, sizeof(a)), rate / 1048576, eta);
	v->drawn = true;
}

int cmd_migrate(int argc, char **argv)
{
	static const struct option extra[] = {
	    {"to", required_argument, NULL, 'T'},
	    {"key-file", required_argument, NULL, 'K'},
	    {"precopy", no_argument, NULL, 'P'},
	    {0},
	};
	struct migrate_opts mo = {0};
	struct cli_args a;
	int c =
	    cli_parse(argc, argv, "migrate", usage, extra, on_option, &mo, 1, 1,
	              "one workload name: cryo migrate NAME --to HOST:PORT --key-file FILE", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
	const char *name = argv[a.first];
	if (!mo.to || !mo.key_file) {
		log_error("cryo migrate needs --to HOST:PORT and --key-file FILE (see cryo migrate "
		          "--help)");
		return CLI_EXIT_USAGE;
	}
	if (strchr(mo.to, '\t') || strchr(mo.to, '\n') || strchr(mo.key_file, '\t') ||
	    strchr(mo.key_file, '\n')) {
		log_error("--to and --key-file may not hold tabs or newlines");
		return CLI_EXIT_USAGE;
	}
	if (cli_require_root("migrate") < 0)
		return 1;
	struct workload_paths p;
	if (cli_workload(a.state_dir, name, &p) < 0)
		return 1;
	/* The supervisor reads the key file: give it a path that does not
	 * depend on our working directory. */
	char key[PATH_MAX];
	if (!realpath(mo.key_file, key)) {
		int r = -errno;
		cli_fail(a.json, r, "cannot read the key file '%s': %s", mo.key_file, strerror(-r));
		return 1;
	}
	_cleanup_free_ char *request = NULL;
	_cleanup_json_ struct json_object *reply = NULL;
	if (asprintf(&request, "migrate\t%s\t%s\t%s", mo.to, key, mo.precopy ? "precopy" : "") < 0)
		return 1;
	struct view v = {.tty = isatty(STDERR_FILENO), .json = a.json};
	int r = cli_request_events(&p, request, 3600 * 1000, on_event, &v, &reply);
	if (v.drawn)
		fputc('\n', stderr);
	int status;
	if (cli_reply_done(&p, name, r, reply, a.json, "migrate", "", &status))
		return status;
	char size[32];
	printf("'%s' moved to %s: frozen %.1f ms, %s sent; it runs there now (cryo status %s on "
	       "that machine)\n",
	       name, mo.to, cryo_json_double(reply, "frozen_ms", 0),
	       util_format_bytes((uint64_t)cryo_json_int(reply, "bytes", 0), size, sizeof(size)),
	       name);
	return 0;
}
