/* cryo status [NAME]: workloads, their state and last checkpoint. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "store-url.h"
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
	      "Shows each workload (or NAME) with its state (starting, running,\n"
	      "checkpointing, restoring, migrating, migrated, stopped, failed), the\n"
	      "program's host PID, its restarts and its last checkpoint (for a migrated\n"
	      "workload, where it moved to); with --store, on a line of its own, the newest\n"
	      "generation in the store against the newest here, and why the store is\n"
	      "behind; with --lease, on another, whether the lease is held (held, waiting,\n"
	      "lost, released; ended: its supervisor is gone), its TTL and the generation\n"
	      "last published.\n",
	      f);
}

struct row {
	char name[80];
	char state[32];
	long long pid, supervisor_pid, restarts, generation;
	long long last_gen, last_time, last_size, last_frozen_us;
	char moved_to[128];
	/* --store: what the supervisor's uploader recorded. */
	bool store;
	struct store_record rec;
	long long newest_local, uploaded, behind;
};

/* How far the store's copy lags: the newest local generation it holds, and
 * how many local generations are newer. */
static void store_lag(const struct workload_paths *p, struct row *row)
{
	int r = store_record_read(p->dir, &row->rec);
	/* A supervisor killed holds its lease no more (or not for long): it
	 * could not say so. */
	if (row->rec.lease &&
	    (!strcmp(row->rec.lease_state, "held") || !strcmp(row->rec.lease_state, "waiting")) &&
	    !workload_is_supervised(p, NULL))
		snprintf(row->rec.lease_state, sizeof(row->rec.lease_state), "ended");
	if (r < 0)
		return;
	row->store = true;
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (image_store_list(p->dir, &gens, &n) < 0)
		n = 0;
	row->newest_local = n ? (long long)gens[n - 1] : 0;
	for (size_t i = 0; i < n; i++) {
		if (store_record_has(&row->rec, gens[i], NULL))
			row->uploaded = (long long)gens[i];
	}
	for (size_t i = 0; i < n; i++)
		if ((long long)gens[i] > row->uploaded)
			row->behind++;
}

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

/* Whether generation gen of p was set aside as damaged. */
static bool set_aside(const struct workload_paths *p, uint64_t gen)
{
	_cleanup_free_ uint64_t *aside = NULL;
	size_t n = 0;
	if (image_store_list_damaged(p->dir, &aside, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (aside[i] == gen)
			return true;
	return false;
}

/* What the supervisor last published in status.json, checked against its
 * lock: a state file without a live supervisor means it stopped (or died). */
static int collect(const char *state_dir, const char *name, struct row *row)
{
	struct workload_paths p;
	if (workload_paths_init(&p, state_dir, name) < 0)
		return -EINVAL;
	store_record_clear(&row->rec);
	memset(row, 0, sizeof(*row));
	snprintf(row->name, sizeof(row->name), "%s", name);
	row->last_gen = -1;

	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/status.json", p.dir);
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ struct json_object *json = NULL;
	bool supervised = workload_is_supervised(&p, NULL);
	if (util_read_file(path, &text, NULL) == 0 && (json = cryo_json_parse(text))) {
		const char *state = cryo_json_str(json, "state");
		snprintf(row->state, sizeof(row->state), "%s", state ? state : "");
		row->restarts = cryo_json_int(json, "restarts", 0);
		row->generation = cryo_json_int(json, "generation", 0);
		if (supervised) {
			row->pid = cryo_json_int(json, "pid", 0);
			row->supervisor_pid = cryo_json_int(json, "supervisor_pid", 0);
		}
		struct json_object *last = cryo_json_obj(json, "last_checkpoint");
		if (last) {
			row->last_gen = cryo_json_int(last, "generation", -1);
			row->last_time = cryo_json_int(last, "time", 0);
			row->last_size = cryo_json_int(last, "size", 0);
			row->last_frozen_us = cryo_json_int(last, "frozen_us", 0);
		}
		const char *moved = cryo_json_str(json, "moved_to");
		if (moved)
			snprintf(row->moved_to, sizeof(row->moved_to), "%s", moved);
	}
	if (!supervised && strcmp(row->state, "failed") != 0 && strcmp(row->state, "migrated") != 0)
		snprintf(row->state, sizeof(row->state), "stopped");
	/* A generation set aside as damaged since (a restore found it so) is
	 * no checkpoint to resume from: the newest one left is. */
	if (row->last_gen > 0 && !row->moved_to[0] && set_aside(&p, (uint64_t)row->last_gen)) {
		if (row->generation == row->last_gen)
			row->generation = 0;
		row->last_gen = -1;
	}
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
	store_lag(&p, row);
	return 0;
}

static struct json_object *row_json(const struct row *r)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "name", json_object_new_string(r->name));
	cryo_json_add(o, "state", json_object_new_string(r->state));
	cryo_json_add(o, "pid", json_object_new_int64(r->pid));
	cryo_json_add(o, "supervisor_pid", json_object_new_int64(r->supervisor_pid));
	cryo_json_add(o, "restarts", json_object_new_int64(r->restarts));
	cryo_json_add(o, "generation", json_object_new_int64(r->generation));
	struct json_object *last = NULL;
	if (!r->moved_to[0] && r->last_gen >= 0) {
		last = json_object_new_object();
		cryo_json_add(last, "generation", json_object_new_int64(r->last_gen));
		cryo_json_add(last, "time", json_object_new_int64(r->last_time));
		cryo_json_add(last, "size", json_object_new_int64(r->last_size));
		cryo_json_add(last, "frozen_us", json_object_new_int64(r->last_frozen_us));
	}
	cryo_json_add(o, "last_checkpoint", last);
	if (r->moved_to[0])
		cryo_json_add(o, "moved_to", json_object_new_string(r->moved_to));
	if (r->store) {
		struct json_object *st = json_object_new_object();
		cryo_json_add(st, "url", json_object_new_string(r->rec.url));
		cryo_json_add(st, "uploaded", json_object_new_int64(r->uploaded));
		cryo_json_add(st, "newest_local", json_object_new_int64(r->newest_local));
		cryo_json_add(st, "behind", json_object_new_int64(r->behind));
		cryo_json_add(st, "checked", json_object_new_int64(r->rec.time));
		cryo_json_add(st, "error",
		              r->rec.error[0] ? json_object_new_string(r->rec.error) : NULL);
		cryo_json_add(st, "failing_since", json_object_new_int64(r->rec.error_since));
		cryo_json_add(o, "store", st);
	}
	if (r->rec.lease) {
		struct json_object *l = json_object_new_object();
		cryo_json_add(l, "url", json_object_new_string(r->rec.lease_url));
		cryo_json_add(l, "state", json_object_new_string(r->rec.lease_state));
		cryo_json_add(l, "ttl", json_object_new_int64(r->rec.lease_ttl));
		cryo_json_add(l, "published", json_object_new_uint64(r->rec.published));
		cryo_json_add(l, "error",
		              r->rec.lease_error[0] ? json_object_new_string(r->rec.lease_error)
		                                    : NULL);
		cryo_json_add(o, "lease", l);
	}
	return o;
}

static void print_row(const struct row *r)
{
	/* last holds "moved to " and the whole of moved_to. */
	char pid[24] = "-", last[sizeof("moved to ") + sizeof(r->moved_to)] = "-", size[32];
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
	if (r->rec.lease) {
		printf("  lease %s: %s (TTL %llds)", r->rec.lease_url, r->rec.lease_state,
		       (long long)r->rec.lease_ttl);
		if (r->rec.published)
			printf(", published generation %llu", (unsigned long long)r->rec.published);
		else
			printf(", nothing published yet");
		if (r->rec.lease_error[0])
			printf("; %s", r->rec.lease_error);
		printf("\n");
	}
	if (!r->store)
		return;
	long long since = r->rec.error_since ? (long long)time(NULL) - r->rec.error_since : 0;
	if (r->behind)
		printf("  store %s: %lld generation%s behind (newest here %lld, in the store %lld)",
		       r->rec.url, r->behind, r->behind == 1 ? "" : "s", r->newest_local,
		       r->uploaded);
	else
		printf("  store %s: up to date (generation %lld)", r->rec.url, r->uploaded);
	if (r->rec.error[0])
		printf("; failing for %llds: %s", since < 0 ? 0 : since, r->rec.error);
	printf("\n");
}

int cmd_status(int argc, char **argv)
{
	struct cli_args a;
	int c = cli_parse(argc, argv, "status", usage, NULL, NULL, NULL, 0, 1,
	                  "at most one workload name: cryo status [NAME]", &a);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (a.help)
		return 0;
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
		memset(&row, 0, sizeof(row));
		collect(state_dir, name, &row);
		if (json) {
			_cleanup_json_ struct json_object *o = row_json(&row);
			printf("%s\n", cryo_json_text(o));
		} else {
			printf("%-20s %-13s %-8s %-8s %s\n", "NAME", "STATE", "PID", "RESTARTS",
			       "LAST CHECKPOINT");
			print_row(&row);
		}
		store_record_clear(&row.rec);
		return 0;
	}
	_cleanup_closedir_ DIR *d = opendir(state_dir);
	if (!d && errno != ENOENT) {
		log_error("cannot read state directory '%s': %m", state_dir);
		return 1;
	}
	_cleanup_json_ struct json_object *rows = json ? json_object_new_array() : NULL;
	if (!json)
		printf("%-20s %-13s %-8s %-8s %s\n", "NAME", "STATE", "PID", "RESTARTS",
		       "LAST CHECKPOINT");
	struct dirent *de;
	memset(&row, 0, sizeof(row));
	while (d && (de = readdir(d))) {
		if (!util_name_is_valid(de->d_name) || de->d_type != DT_DIR)
			continue;
		if (collect(state_dir, de->d_name, &row) < 0)
			continue;
		if (json)
			json_object_array_add(rows, row_json(&row));
		else
			print_row(&row);
	}
	store_record_clear(&row.rec);
	if (json)
		printf("%s\n", cryo_json_text(rows));
	return 0;
}
