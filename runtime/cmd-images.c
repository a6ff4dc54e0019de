/* cryo images NAME: the stored generations of a workload. */
#include "cli.h"
#include "cleanup.h"
#include "log.h"
#include "store-url.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs("usage: cryo images [--state-dir DIR] [--json] [--no-verify] NAME\n"
	      "\n"
	      "Lists NAME's stored generations with their time, size, where they are\n"
	      "(local, remote: in the --store, or both, as the supervisor last saw the\n"
	      "store), trigger (program, command, timer, stop, migrate) and whether each\n"
	      "verifies (every checksum, and what its manifest says: what a restore checks\n"
	      "before it takes a generation); with --lease, the generation last published\n"
	      "is marked (published).\n",
	      f);
}

/* A generation the store holds and this machine does not: only what the
 * supervisor recorded of it. */
static void remote_row(uint64_t gen, uint64_t size, bool published, struct json_object *rows)
{
	char sz[32];
	if (rows) {
		struct json_object *o = json_object_new_object();
		cryo_json_add(o, "generation", json_object_new_uint64(gen));
		cryo_json_add(o, "size", json_object_new_uint64(size));
		cryo_json_add(o, "stored", json_object_new_string("remote"));
		cryo_json_add(o, "published", json_object_new_boolean(published));
		json_object_array_add(rows, o);
	} else {
		printf("%-6" PRIu64 " %-20s %-10s %-10s %-7s %-8s %s%s\n", gen, "?",
		       util_format_bytes(size, sz, sizeof(sz)), "?", "remote", "?",
		       "not checked (not here)", published ? " (published)" : "");
	}
}

static int images_option(int c, const char *arg, void *ctx)
{
	(void)c;
	(void)arg;
	*(bool *)ctx = false; /* --no-verify */
	return 0;
}

int cmd_images(int argc, char **argv)
{
	static const struct option extra[] = {{"no-verify", no_argument, NULL, 'n'}, {0}};
	bool verify = true;
	struct cli_args a;
	int c = cli_parse(argc, argv, "images", usage, extra, images_option, &verify, 1, 1,
	                  "one workload name: cryo images NAME (see cryo status)", &a);
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
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	int r = image_store_list(p.dir, &gens, &n);
	if (r < 0) {
		log_error("cannot read '%s': %s", p.dir, strerror(-r));
		return 1;
	}
	/* What the supervisor recorded of the store (--store): read, not
	 * asked of the store, so that this needs neither the store nor its
	 * credentials, and answers at once. */
	struct store_record rec;
	bool have_rec = store_record_read(p.dir, &rec) == 0;
	size_t ri = 0; /* the next of rec's generations to show */
	_cleanup_json_ struct json_object *rows = json ? json_object_new_array() : NULL;
	if (!json)
		printf("%-6s %-20s %-10s %-10s %-7s %-8s %s\n", "GEN", "TIME", "SIZE", "RAW",
		       "STORED", "TRIGGER", "VERIFIES");
	size_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		for (; have_rec && ri < rec.n && rec.gens[ri] <= gens[i]; ri++)
			if (rec.gens[ri] < gens[i]) {
				remote_row(rec.gens[ri], rec.sizes[ri],
				           rec.lease && rec.published == rec.gens[ri], rows);
				shown++;
			}
		char path[4200], when[32] = "?", size[32], raw[32];
		image_store_path(p.dir, gens[i], path, sizeof(path));
		_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			continue; /* pruned since the listing: a running workload's retention */
		struct stat st = {0};
		struct manifest *m = NULL;
		struct cryo_error err = {{0}};
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -errno;
			error_set(&err, r, "%s", strerror(-r));
		} else {
			r = verify ? image_archive_read(fd, NULL, &m, &err)
			           : image_archive_read_manifest(fd, &m, &err);
			/* What a restore checks, by the generation's number too:
			 * "verifies" says that a restore takes it. */
			if (r == 0)
				r = image_manifest_validate(m, gens[i], 0, &err);
			if (r < 0 && verify && !m) {
				/* Still show what the manifest says, if it can be read. */
				image_archive_read_manifest(fd, &m, &(struct cryo_error){{0}});
			}
		}
		time_t t = m ? (time_t)manifest_get_u64(m, "time", 0) : 0;
		uint64_t raw_bytes = 0;
		for (size_t k = 0; m && k < m->n_files; k++)
			raw_bytes += m->files[k].size;
		struct tm tm;
		if (t && localtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
		const char *trigger =
		    m && manifest_get(m, "trigger") ? manifest_get(m, "trigger") : "?";
		const char *verdict = !verify ? "not checked" : r == 0 ? "yes" : "NO";
		const char *stored =
		    have_rec && store_record_has(&rec, gens[i], NULL) ? "both" : "local";
		bool published = rec.lease && rec.published == gens[i];
		if (json) {
			struct json_object *o = json_object_new_object();
			cryo_json_add(o, "generation", json_object_new_uint64(gens[i]));
			cryo_json_add(o, "time", json_object_new_int64(t));
			cryo_json_add(o, "size", json_object_new_int64(st.st_size));
			cryo_json_add(o, "raw_size", json_object_new_uint64(raw_bytes));
			cryo_json_add(o, "stored", json_object_new_string(stored));
			cryo_json_add(o, "published", json_object_new_boolean(published));
			cryo_json_add(o, "trigger", json_object_new_string(trigger));
			cryo_json_add(o, "verified",
			              verify ? json_object_new_boolean(r == 0) : NULL);
			cryo_json_add(o, "error", json_object_new_string(err.msg));
			cryo_json_add(o, "path", json_object_new_string(path));
			/* The files held open for writing, and what it stores of each. */
			if (m)
				cryo_json_add(o, "held_files", cli_held_json(m));
			json_object_array_add(rows, o);
		} else {
			printf("%-6" PRIu64 " %-20s %-10s %-10s %-7s %-8s %s%s%s%s\n", gens[i],
			       when, util_format_bytes((uint64_t)st.st_size, size, sizeof(size)),
			       m ? util_format_bytes(raw_bytes, raw, sizeof(raw)) : "?", stored,
			       trigger, verdict, r < 0 ? ": " : "", r < 0 ? err.msg : "",
			       published ? " (published)" : "");
		}
		manifest_free(m);
		shown++;
	}
	for (; have_rec && ri < rec.n; ri++, shown++)
		remote_row(rec.gens[ri], rec.sizes[ri], rec.lease && rec.published == rec.gens[ri],
		           rows); /* newer than any here */
	if (have_rec)
		store_record_clear(&rec);
	if (json)
		printf("%s\n", cryo_json_text(rows));
	else if (shown == 0)
		printf("(no images of '%s' in '%s')\n", name, p.dir);
	return 0;
}
