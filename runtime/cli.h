/* Shared by the CLI verbs: the verb table, and talking to a running
 * supervisor over its commands socket. */
#pragma once

#include "json.h"
#include "manifest.h"
#include "store-url.h"
#include "supervisor.h"
#include "workload.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

int cmd_run(int argc, char **argv);
int cmd_checkpoint(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_keygen(int argc, char **argv);

/* Sends one request line to the supervisor of p and reads its one-line JSON
 * reply, parsed (json_object_put() it). -ENOENT/-ECONNREFUSED when none runs,
 * -ETIMEDOUT, -ECONNRESET when it went away mid-answer, -EPROTO when the
 * reply is not a JSON object. */
int cli_request(const struct workload_paths *p, const char *request, int timeout_ms,
                struct json_object **reply);

/* The same, for requests that report as they go: every object with an
 * "event" key before the reply goes to on_event. */
int cli_request_events(const struct workload_paths *p, const char *request, int timeout_ms,
                       void (*on_event)(struct json_object *event, void *ctx), void *ctx,
                       struct json_object **reply);

/* NULL when a supervisor's reply says "ok", else its reason ("error"). */
const char *cli_reply_error(struct json_object *reply);

/* What a verb does first with the outcome r of its request to the
 * supervisor of name and its reply: a supervisor not reached is explained
 * (cli_report_unreachable), with json the reply is printed as it is, and a
 * refusal is logged as "cannot WHAT 'NAME': REASON[SUFFIX]". Returns true
 * when the verb is done, with its exit status in *status; false when the
 * reply says "ok" and the verb prints it its own way. */
bool cli_reply_done(const struct workload_paths *p, const char *name, int r,
                    struct json_object *reply, bool json, const char *what, const char *suffix,
                    int *status);

/* Checks that we run as root, with a clear message otherwise. */
int cli_require_root(const char *verb);

/* Resolves the state dir and the workload paths of name, with clear errors. */
int cli_workload(const char *state_dir_opt, const char *name, struct workload_paths *p);

/* cryo run's and cryo restore's options. */
struct run_options {
	struct supervisor_config cfg;
	struct net_config net;     /* cfg.net points here with --net */
	struct store_config store; /* cfg.store points here with --store */
	struct lease_config lease; /* cfg.lease points here with --lease */
	const char *name;
	const char *state_dir;
	bool fresh;
	bool help;
	bool detach; /* -d: the supervisor goes to the background */
};

/* Parses run's options (restore: without --name/--fresh, with --generation).
 * Returns 0, or -EINVAL after a logged error; o->help says --help was given;
 * optind is left at the first non-option. */
int run_parse_options(int argc, char **argv, bool restore, struct run_options *o);

/* Locks the workload and supervises it until it ends; returns cryo run's
 * exit status (the program's own), not an errno. */
int run_supervised(struct run_options *o);

/* cryo restore --store: brings the newest restorable generation in the
 * store, and those it is built on, into the workload's directory (its lock
 * taken meanwhile; store_fetch_into()). 0, or a negative errno (logged). */
int run_fetch(struct run_options *o);

/* Explains why a supervisor could not be asked (r from cli_request). */
void cli_report_unreachable(const struct workload_paths *p, const char *name, int r);

/* Says why a verb fails (r: a negative errno): one line on stderr, or with
 * json {"ok":false,"errno":-r,"error":"..."} on stdout, as a supervisor's
 * refusal reads. */
void cli_fail(bool json, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* cryo's exit status for bad usage (a wrong option or argument). */
#define CLI_EXIT_USAGE 2

/* The options every workload command shares, and where its positional
 * arguments start. */
struct cli_args {
	const char *state_dir;
	bool json;
	bool help; /* --help printed the usage: exit 0 */
	int first;
};

/* Parses --state-dir, --json and --help, plus the verb's own options (extra,
 * {0}-terminated or NULL, each passed to on_option(val, optarg, ctx), which
 * returns 0 or -EINVAL after logging), then checks for min..max positional
 * arguments, else logs "give WHAT". Returns 0 (out->help set if --help
 * printed the usage), or -EINVAL after a logged error. Like every helper of
 * the CLI, it returns a negative errno; only the verbs turn that into an
 * exit status. */
int cli_parse(int argc, char **argv, const char *verb, void (*usage)(FILE *),
              const struct option *extra, int (*on_option)(int, const char *, void *), void *ctx,
              int min_args, int max_args, const char *what, struct cli_args *out);

/* One file held open for writing that the image holds ("held_file INDEX
 * SIZE MODE UID GID PATH": supervisor/files.c): its path and size, the
 * bytes the image stores of it (its file-INDEX.data, before compression),
 * and the generation those are the changed blocks against (0: whole);
 * false if entry i of m is not such a line. */
struct cli_held {
	const char *path;
	uint64_t size, stored, base;
};

bool cli_held_file(const struct manifest *m, size_t i, struct cli_held *h);
/* Those of m as a JSON array of {path, size, stored, base}. */
struct json_object *cli_held_json(const struct manifest *m);
