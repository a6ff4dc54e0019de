/* cryo status [NAME]: workloads, their state and last checkpoint. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f)
{
	fputs("usage: cryo status [--state-dir DIR] [--json] [NAME]\n"
	      "\n"
	      "Shows each workload (or NAME) with its state (running, checkpointing,\n"
	      "restoring, stopped, failed), the program's host PID, its restarts and its\n"
	      "last checkpoint.\n",
	      f);
}

struct row {
	char name[80];
	char state[32];
	long long pid, supervisor_pid, restarts, generation;
	long long last_gen, last_time, last_size, last_frozen_us;
	char moved_to[128];
};

/* A workload without a supervisor: what its newest image says. */
static void from_images(const struct workload_paths *p, struct row *row)
{
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n;
	if (image_store_list(p->dir, &gens, &n) < 0 || n == 0)
		return;
	struct manifest *m = NULL;
	struct cryo_error err;
	char path[4200];
	struct stat st;
	row->last_gen = row->generation = (long long)gens[n - 1];
	image_store_path(p->dir, gens[n - 1], path, sizeof(path));
	if (stat(path, &st) == 0)
		row->last_size = st.st_size;
	if (image_store_read_manifest(p->dir, gens[n - 1], &m, &err) == 0) {
		row->last_time = (long long)manifest_get_u64(m, "time", 0);
		row->last_frozen_us = (long long)manifest_get_u64(m, "frozen_us", 0);
		manifest_free(m);
	}
}

/* What the supervisor last published in status.json, checked against its
 * lock: a state file without a live supervisor means it stopped (or died). */
static int collect(const char *state_dir, const char *name, struct row *row)
{
	struct workload_paths p;
	if (workload_paths_init(&p, state_dir, name) < 0)
		return -EINVAL;
	memset(row, 0, sizeof(*row));
	snprintf(row->name, sizeof(row->name), "%s", name);
	row->last_gen = -1;

	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/status.json", p.dir);
	_cleanup_free_ char *json = NULL;
	bool supervised = workload_is_supervised(&p, NULL);
	if (util_read_file(path, &json, NULL) == 0) {
		cli_json_str(json, "state", row->state, sizeof(row->state));
		row->restarts = cli_json_int(json, "restarts", 0);
		row->generation = cli_json_int(json, "generation", 0);
		if (supervised) {
			row->pid = cli_json_int(json, "pid", 0);
			row->supervisor_pid = cli_json_int(json, "supervisor_pid", 0);
		}
		const char *last = strstr(json, "\"last_checkpoint\":{");
		if (last) {
			row->last_gen = cli_json_int(last, "generation", -1);
			row->last_time = cli_json_int(last, "time", 0);
			row->last_size = cli_json_int(last, "size", 0);
			row->last_frozen_us = cli_json_int(last, "frozen_us", 0);
		}
	}
	cli_json_str(json ? json : "", "moved_to", row->moved_to, sizeof(row->moved_to));
	if (!supervised && strcmp(row->state, "failed") != 0 && strcmp(row->state, "migrated") != 0)
		snprintf(row->state, sizeof(row->state), "stopped");
	if (row->last_gen < 0) {
		struct row img;
		memset(&img, 0, sizeof(img));
		from_images(&p, &img);
		if (img.generation) {
			row->last_gen = img.last_gen;
			row->last_time = img.last_time;
			row->last_size = img.last_size;
			row->last_frozen_us = img.last_frozen_us;
			if (!row->generation)
				row->generation = img.generation;
		}
	}
	return 0;
}

static void print_json(const struct row *r, bool comma)
{
	printf("%s{\"name\":\"%s\",\"state\":\"%s\",\"pid\":%lld,\"supervisor_pid\":%lld,"
	       "\"restarts\":%lld,\"generation\":%lld,\"last_checkpoint\":",
	       comma ? "," : "", r->name, r->state, r->pid, r->supervisor_pid, r->restarts,
	       r->generation);
	if (r->moved_to[0])
		printf("null,\"moved_to\":\"%s\"}", r->moved_to);
	else if (r->last_gen < 0)
		printf("null}");
	else
		printf("{\"generation\":%lld,\"time\":%lld,\"size\":%lld,\"frozen_us\":%lld}}",
		       r->last_gen, r->last_time, r->last_size, r->last_frozen_us);
}

static void print_row(const struct row *r)
{
	char pid[24] = "-", last[96] = "-", size[32];
	if (r->pid > 0)
		snprintf(pid, sizeof(pid), "%lld", r->pid);
	if (r->last_gen >= 0) {
		long long age = (long long)time(NULL) - r->last_time;
		snprintf(last, sizeof(last), "gen %lld, %llds ago, %s, frozen %.1f ms", r->last_gen,
		         age < 0 ? 0 : age,
		         util_format_bytes((uint64_t)r->last_size, size, sizeof(size)),
		         (double)r->last_frozen_us / 1000);
	}
	if (r->moved_to[0])
		snprintf(last, sizeof(last), "moved to %s", r->moved_to);
	printf("%-20s %-13s %-8s %-8lld %s\n", r->name, r->state, pid, r->restarts, last);
}

int cmd_status(int argc, char **argv)
{
	struct cli_args a;
	int c = cli_parse(argc, argv, "status", usage, NULL, NULL, NULL, 0, 1,
	                  "at most one workload name: cryo status [NAME]", &a);
	if (c)
		return c < 0 ? 0 : c;
	const char *state_dir_opt = a.state_dir;
	bool json = a.json;
	const char *state_dir = workload_state_dir(state_dir_opt);
	struct row row;
	if (a.first < argc) {
		const char *name = argv[a.first];
		struct workload_paths p;
		if (cli_workload(state_dir_opt, name, &p) < 0)
			return 1;
		struct stat st;
		if (stat(p.dir, &st) < 0) {
			log_error("no workload '%s' in '%s' (see cryo status)", name, state_dir);
			return 1;
		}
		collect(state_dir, name, &row);
		if (json) {
			print_json(&row, false);
			putchar('\n');
		} else {
			printf("%-20s %-13s %-8s %-8s %s\n", "NAME", "STATE", "PID", "RESTARTS",
			       "LAST CHECKPOINT");
			print_row(&row);
		}
		return 0;
	}
	_cleanup_closedir_ DIR *d = opendir(state_dir);
	if (!d && errno != ENOENT) {
		log_error("cannot read state directory '%s': %m", state_dir);
		return 1;
	}
	if (json)
		printf("[");
	else
		printf("%-20s %-13s %-8s %-8s %s\n", "NAME", "STATE", "PID", "RESTARTS",
		       "LAST CHECKPOINT");
	bool first = true;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!util_name_is_valid(de->d_name) || de->d_type != DT_DIR)
			continue;
		if (collect(state_dir, de->d_name, &row) < 0)
			continue;
		if (json)
			print_json(&row, !first);
		else
			print_row(&row);
		first = false;
	}
	if (json)
		printf("]\n");
	return 0;
}
