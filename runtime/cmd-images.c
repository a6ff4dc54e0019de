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
#include <stdlib.h>
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
	      "Lists NAME's stored generations with their time, size, why each is kept\n"
	      "(newest: one of the newest --keep; base: only because a newer kept one is\n"
	      "built on it; damaged: set aside by a restore), where they are (local,\n"
	      "remote: in the --store, or both, as the supervisor last saw the store),\n"
	      "trigger (program, command, timer, stop, migrate) and whether each verifies\n"
	      "(every checksum, and what its manifest says: what a restore checks before\n"
	      "it takes a generation); with --lease, the generation last published is\n"
	      "marked (published).\n",
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
		printf("%-6" PRIu64 " %-20s %-10s %-10s %-7s %-7s %-8s %s%s\n", gen, "?",
		       util_format_bytes(size, sz, sizeof(sz)), "?", "-", "remote", "?",
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

/* One generation here: its number, and whether it is set aside as damaged
 * (gen-N.cryo.damaged). */
struct local_gen {
	uint64_t gen;
	bool damaged;
	const char *kept; /* "newest", "base", "damaged" or NULL: see kept_marks() */
};

static int compare_local(const void *a, const void *b)
{
	const struct local_gen *x = a, *y = b;
	return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* Marks why each generation is kept, as image_store_prune() decides: the
 * newest --keep (the newest generation's manifest says how many: "keep",
 * or "set.keep" in one a migration brought) are "newest"; one that is kept
 * only because a kept one is built on it (deltas chain back to the last
 * whole generation) is "base". Unknown (an image from before "keep") stays
 * NULL. */
static void kept_marks(const char *dir, struct local_gen *g, size_t n)
{
	size_t n_good = 0, newest = n;
	for (size_t i = 0; i < n; i++)
		if (g[i].damaged)
			g[i].kept = "damaged";
		else
			n_good++, newest = i;
	if (!n_good)
		return;
	struct manifest *m = NULL;
	struct cryo_error err = {{0}};
	uint64_t keep = 0;
	if (image_store_read_manifest(dir, g[newest].gen, &m, &err) == 0)
		keep = manifest_get_u64(m, "keep", manifest_get_u64(m, "set.keep", 0));
	manifest_free(m);
	if (!keep)
		return;
	size_t seen = 0;
	for (size_t i = n; i-- > 0;) {
		if (g[i].damaged)
			continue;
		if (seen++ < keep)
			g[i].kept = "newest";
		if (!g[i].kept)
			continue;
		m = NULL;
		uint64_t base = image_store_read_manifest(dir, g[i].gen, &m, &err) == 0
		                    ? manifest_get_u64(m, "base", 0)
		                    : 0;
		manifest_free(m);
		for (size_t k = 0; k < i && base; k++)
			if (g[k].gen == base && !g[k].damaged && !g[k].kept)
				g[k].kept = "base";
	}
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
	struct stat dst;
	if (stat(p.dir, &dst) < 0) {
		/* As cryo status NAME says it. */
		log_error("no workload '%s' in '%s' (see cryo status)", name,
		          workload_state_dir(state_dir));
		return 1;
	}
	_cleanup_free_ uint64_t *gens = NULL, *aside = NULL;
	size_t n_good = 0, n_aside = 0;
	int r = image_store_list(p.dir, &gens, &n_good);
	if (r == 0)
		r = image_store_list_damaged(p.dir, &aside, &n_aside);
	if (r < 0) {
		log_error("cannot read '%s': %s", p.dir, strerror(-r));
		return 1;
	}
	size_t n = n_good + n_aside;
	_cleanup_free_ struct local_gen *g = calloc(n ? n : 1, sizeof(*g));
	if (!g) {
		log_error("out of memory");
		return 1;
	}
	for (size_t i = 0; i < n_good; i++)
		g[i] = (struct local_gen){.gen = gens[i]};
	for (size_t i = 0; i < n_aside; i++)
		g[n_good + i] = (struct local_gen){.gen = aside[i], .damaged = true};
	qsort(g, n, sizeof(*g), compare_local);
	kept_marks(p.dir, g, n);
	/* What the supervisor recorded of the store (--store): read, not
	 * asked of the store, so that this needs neither the store nor its
	 * credentials, and answers at once. */
	struct store_record rec;
	bool have_rec = store_record_read(p.dir, &rec) == 0;
	size_t ri = 0; /* the next of rec's generations to show */
	_cleanup_json_ struct json_object *rows = json ? json_object_new_array() : NULL;
	if (!json)
		printf("%-6s %-20s %-10s %-10s %-7s %-7s %-8s %s\n", "GEN", "TIME", "SIZE", "RAW",
		       "KEPT", "STORED", "TRIGGER", "VERIFIES");
	size_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		for (; have_rec && ri < rec.n && rec.gens[ri] <= g[i].gen; ri++)
			if (rec.gens[ri] < g[i].gen) {
				remote_row(rec.gens[ri], rec.sizes[ri],
				           rec.lease && rec.published == rec.gens[ri], rows);
				shown++;
			}
		char path[4200], when[32] = "?", size[32], raw[32];
		image_store_path(p.dir, g[i].gen, path, sizeof(path) - 16);
		if (g[i].damaged)
			strcat(path, ".damaged");
		_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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
				r = image_manifest_validate(m, g[i].gen, 0, &err);
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
		/* A set-aside generation is one no restore takes, whatever its
		 * bytes say now. */
		const char *verdict = g[i].damaged ? "NO (set aside as damaged)"
		                      : !verify    ? "not checked"
		                      : r == 0     ? "yes"
		                                   : "NO";
		const char *stored =
		    have_rec && store_record_has(&rec, g[i].gen, NULL) ? "both" : "local";
		bool published = rec.lease && rec.published == g[i].gen;
		if (json) {
			struct json_object *o = json_object_new_object();
			cryo_json_add(o, "generation", json_object_new_uint64(g[i].gen));
			cryo_json_add(o, "time", json_object_new_int64(t));
			cryo_json_add(o, "size", json_object_new_int64(st.st_size));
			cryo_json_add(o, "raw_size", json_object_new_uint64(raw_bytes));
			cryo_json_add(o, "kept",
			              g[i].kept ? json_object_new_string(g[i].kept) : NULL);
			cryo_json_add(o, "set_aside", json_object_new_boolean(g[i].damaged));
			cryo_json_add(o, "stored", json_object_new_string(stored));
			cryo_json_add(o, "published", json_object_new_boolean(published));
			cryo_json_add(o, "trigger", json_object_new_string(trigger));
			cryo_json_add(o, "verified",
			              verify && !g[i].damaged ? json_object_new_boolean(r == 0)
			              : g[i].damaged          ? json_object_new_boolean(false)
			                                      : NULL);
			cryo_json_add(o, "error", json_object_new_string(err.msg));
			cryo_json_add(o, "path", json_object_new_string(path));
			/* The files held open for writing, and what it stores of each. */
			if (m)
				cryo_json_add(o, "held_files", cli_held_json(m));
			json_object_array_add(rows, o);
		} else {
			printf("%-6" PRIu64 " %-20s %-10s %-10s %-7s %-7s %-8s %s%s%s%s\n",
			       g[i].gen, when,
			       util_format_bytes((uint64_t)st.st_size, size, sizeof(size)),
			       m ? util_format_bytes(raw_bytes, raw, sizeof(raw)) : "?",
			       g[i].kept ? g[i].kept : "-", stored, trigger, verdict,
			       r < 0 ? ": " : "", r < 0 ? err.msg : "",
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
