/* cryo inspect NAME[@GEN] | PATH | --file FILE: what an image holds, in the spirit of
 * checkpointctl: manifest, process tree, memory, open files and sockets,
 * compression. */
#include "cli.h"
#include "cleanup.h"
#include "inspect.h"
#include "log.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fputs("usage: cryo inspect [--state-dir DIR] [--json] NAME[@GEN]\n"
	      "       cryo inspect [--json] PATH | --file FILE\n"
	      "\n"
	      "Shows what an image holds: its manifest, the process tree, the memory dumped,\n"
	      "the open files and sockets, and the compression ratio. NAME alone means the\n"
	      "workload's newest generation, NAME@GEN generation GEN. An image file is named\n"
	      "by a path with a '/' in it (./gen-000000000003.cryo, /var/lib/cryo/web/...)\n"
	      "or by --file FILE: a bare word is always a workload's name. The image is\n"
	      "verified first.\n"
	      "\n"
	      "  --file FILE   the gen-*.cryo file FILE, whatever its name\n",
	      f);
}

static bool want_metadata(const char *name)
{
	return !criu_glue_is_memory_image(name);
}

/* Resolves NAME[@GEN] (a bare word), or a PATH (with a '/'), to an archive
 * path, and its generation in *ret_gen (0 for a file: its manifest says). */
static int resolve(const char *state_dir, const char *arg, char *path, size_t len,
                   uint64_t *ret_gen)
{
	*ret_gen = 0;
	if (strchr(arg, '/')) {
		snprintf(path, len, "%s", arg);
		return 0;
	}
	char name[128];
	snprintf(name, sizeof(name), "%s", arg);
	uint64_t gen = 0;
	char *at = strchr(name, '@');
	if (at) {
		*at = '\0';
		if (util_parse_uint(at + 1, UINT64_MAX, &gen) < 0 || gen == 0) {
			log_error("invalid generation in '%s': use NAME@GEN, e.g. web@3", arg);
			return -EINVAL;
		}
	}
	struct workload_paths p;
	if (cli_workload(state_dir, name, &p) < 0)
		return -EINVAL;
	_cleanup_free_ uint64_t *gens = NULL;
	size_t n = 0;
	if (image_store_list(p.dir, &gens, &n) < 0 || n == 0) {
		/* cryo inspect FILE once opened a file of that name here: say
		 * how to name it now. */
		struct stat st;
		if (!at && stat(arg, &st) == 0 && S_ISREG(st.st_mode))
			log_error(
			    "'%s' is taken as a workload name, and that workload has no images "
			    "in '%s'; for the file '%s' in this directory, use: cryo inspect "
			    "./%s (or --file %s)",
			    arg, p.dir, arg, arg, arg);
		else
			log_error("'%s' has no images in '%s' (see cryo status; an image file is "
			          "named by a path with a '/' or by --file FILE)",
			          name, p.dir);
		return -ENOENT;
	}
	if (!gen)
		gen = gens[n - 1];
	*ret_gen = gen;
	return image_store_path(p.dir, gen, path, len);
}

/* A manifest entry into o: a key the manifest holds more than once (an
 * incremental generation's "delta", one per memory image) becomes an array
 * of its values, in order, instead of keeping only the last. */
static void add_entry(struct json_object *o, const char *key, const char *value)
{
	struct json_object *v = json_object_new_string(value), *had = NULL;
	if (!json_object_object_get_ex(o, key, &had)) {
		cryo_json_add(o, key, v);
		return;
	}
	if (!json_object_is_type(had, json_type_array)) {
		struct json_object *a = json_object_new_array();
		json_object_array_add(a, json_object_get(had));
		cryo_json_add(o, key, a); /* drops the reference o held to had */
		had = a;
	}
	json_object_array_add(had, v);
}

/* The image as one JSON object (cryo inspect --json). */
static void print_json(const char *path, const struct stat *st, const struct manifest *m,
                       const struct criu_glue_summary *sum, uint64_t raw, uint64_t memory)
{
	_cleanup_json_ struct json_object *o = json_object_new_object();
	cryo_json_add(o, "path", json_object_new_string(path));
	cryo_json_add(o, "verified", json_object_new_boolean(true));
	cryo_json_add(o, "size", json_object_new_int64(st->st_size));
	cryo_json_add(o, "raw_size", json_object_new_uint64(raw));
	cryo_json_add(o, "memory_bytes", json_object_new_uint64(memory));
	struct json_object *mo = json_object_new_object(), *argv = json_object_new_array();
	for (size_t i = 0; i < m->n_entries; i++) {
		/* The command line comes as argv; frame tables are for readers. */
		if (!strcmp(m->keys[i], "arg"))
			json_object_array_add(argv, json_object_new_string(m->values[i]));
		else if (strcmp(m->keys[i], "frames") != 0)
			add_entry(mo, m->keys[i], m->values[i]);
	}
	cryo_json_add(o, "manifest", mo);
	cryo_json_add(o, "argv", argv);
	struct json_object *procs = json_object_new_array(), *files = json_object_new_array();
	for (size_t i = 0; i < sum->n_procs; i++) {
		struct json_object *p = json_object_new_object();
		cryo_json_add(p, "pid", json_object_new_int64(sum->procs[i].pid));
		cryo_json_add(p, "ppid", json_object_new_int64(sum->procs[i].ppid));
		cryo_json_add(p, "threads", json_object_new_int64(sum->procs[i].threads));
		cryo_json_add(p, "comm", json_object_new_string(sum->procs[i].comm));
		json_object_array_add(procs, p);
	}
	for (size_t i = 0; i < sum->n_files; i++)
		json_object_array_add(files, json_object_new_string(sum->files[i]));
	cryo_json_add(o, "processes", procs);
	cryo_json_add(o, "files", files);
	cryo_json_add(o, "held_files", cli_held_json(m));
	printf("%s\n", cryo_json_text(o));
}

/* The image for people to read. */
static void print_text(const char *path, const struct stat *st, const struct manifest *m,
                       const struct criu_glue_summary *sum, uint64_t raw, uint64_t memory)
{
	char a[32], b[32], when[64] = "?";
	time_t t = (time_t)manifest_get_u64(m, "time", 0);
	struct tm tm;
	if (t && localtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	const char *trigger = manifest_get(m, "trigger");
	printf("image      %s (verified)\n", path);
	printf("workload   %s, generation %s, taken %s by %s\n", manifest_get(m, "name") ?: "?",
	       manifest_get(m, "generation") ?: "?", when, trigger ? trigger : "?");
	printf("command   ");
	for (size_t i = 0; i < m->n_entries; i++) {
		const char *v = m->values[i];
		if (strcmp(m->keys[i], "arg") != 0)
			continue;
		/* Quoted where a shell would need it. */
		if (*v && !v[strcspn(v, " \t\n'\"\\$`")])
			printf(" %s", v);
		else
			printf(" '%s'", v);
	}
	printf("\ncwd        %s\n", manifest_get(m, "cwd") ?: "?");
	printf("taken on   %s, kernel %s (%s), CRIU %s\n", manifest_get(m, "hostname") ?: "?",
	       manifest_get(m, "kernel") ?: "?", manifest_get(m, "machine") ?: "?",
	       manifest_get(m, "criu_version") ?: "?");
	printf("frozen     %.1f ms\n", (double)manifest_get_u64(m, "frozen_us", 0) / 1000);
	if (manifest_get(m, "base"))
		printf("incremental on generation %s (%s in a row)\n", manifest_get(m, "base"),
		       manifest_get(m, "chain") ?: "?");
	printf("memory     %s dumped\n", util_format_bytes(memory, a, sizeof(a)));
	printf("size       %s stored, %s raw",
	       util_format_bytes((uint64_t)st->st_size, a, sizeof(a)),
	       util_format_bytes(raw, b, sizeof(b)));
	if (st->st_size > 0)
		printf(" (compression ratio %.1f)", (double)raw / (double)st->st_size);
	printf("\n\nprocesses (PIDs inside the workload's namespace)\n");
	printf("  %-6s %-6s %-8s %s\n", "PID", "PPID", "THREADS", "COMMAND");
	for (size_t i = 0; i < sum->n_procs; i++)
		printf("  %-6u %-6u %-8u %s\n", sum->procs[i].pid, sum->procs[i].ppid,
		       sum->procs[i].threads, sum->procs[i].comm);
	printf("\nopen files and sockets\n");
	/* Identical lines once, with a count. */
	for (size_t i = 0; i < sum->n_files; i++) {
		bool seen = false;
		size_t count = 0;
		for (size_t k = 0; k < sum->n_files; k++) {
			if (strcmp(sum->files[k], sum->files[i]) != 0)
				continue;
			seen |= k < i;
			count++;
		}
		if (seen)
			continue;
		if (count > 1)
			printf("  %s (x%zu)\n", sum->files[i], count);
		else
			printf("  %s\n", sum->files[i]);
	}
	/* The files held open for writing, copied with the checkpoint: whole,
	 * or the blocks changed since the generation it is built on. */
	bool first = true;
	struct cli_held h;
	for (size_t i = 0; i < m->n_entries; i++) {
		if (!cli_held_file(m, i, &h))
			continue;
		if (first)
			printf("\nfiles copied with it (put back before a restore)\n");
		first = false;
		printf("  %s (%s, ", h.path, util_format_bytes(h.size, a, sizeof(a)));
		if (h.base)
			printf("%s stored: the blocks changed since generation %" PRIu64 ")\n",
			       util_format_bytes(h.stored, b, sizeof(b)), h.base);
		else
			printf("stored whole)\n");
	}
}

static int file_option(int c, const char *arg, void *ctx)
{
	(void)c;
	*(const char **)ctx = arg; /* --file */
	return 0;
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option extra[] = {{"file", required_argument, NULL, 'f'}, {0}};
	const char *file = NULL;
	struct cli_args args;
	int c = cli_parse(argc, argv, "inspect", usage, extra, file_option, &file, 0, 1,
	                  "one image: cryo inspect NAME[@GEN] | PATH | --file FILE (see cryo "
	                  "images NAME)",
	                  &args);
	if (c < 0)
		return CLI_EXIT_USAGE;
	if (args.help)
		return 0;
	if (!file == (args.first == argc)) {
		log_error("give one image: cryo inspect NAME[@GEN] | PATH | --file FILE (see cryo "
		          "images NAME)");
		return CLI_EXIT_USAGE;
	}
	bool json = args.json;
	char path[PATH_MAX];
	uint64_t gen = 0;
	if (file)
		snprintf(path, sizeof(path), "%s", file);
	else if (resolve(args.state_dir, argv[args.first], path, sizeof(path), &gen) < 0)
		return 1;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_error("cannot open '%s': %m (see cryo images)", path);
		return 1;
	}
	struct stat st;
	fstat(fd, &st);

	char tmp[] = "/tmp/cryo-inspect.XXXXXX";
	if (!mkdtemp(tmp)) {
		log_error("cannot create a temporary directory: %m");
		return 1;
	}
	struct manifest *m = NULL;
	struct cryo_error err = {{0}};
	int r = image_archive_read_some(fd, tmp, want_metadata, &m, &err);
	/* As a restore would take it: by the generation it is stored as. */
	if (r == 0)
		r = image_manifest_validate(m, gen, 0, &err);
	if (r < 0) {
		manifest_free(m);
		util_rm_rf(tmp);
		log_error("'%s' does not verify: %s", path, err.msg[0] ? err.msg : strerror(-r));
		return 1;
	}
	struct criu_glue_summary sum;
	r = criu_glue_describe(tmp, &sum);
	util_rm_rf(tmp);
	if (r < 0) {
		manifest_free(m);
		log_error("'%s' verifies, but its CRIU images cannot be read (%s): made by another "
		          "CRIU version?",
		          path, strerror(-r));
		return 1;
	}
	uint64_t raw = 0, memory = 0;
	for (size_t i = 0; i < m->n_files; i++) {
		raw += m->files[i].size;
		if (criu_glue_is_memory_image(m->files[i].name))
			memory += m->files[i].size;
	}

	if (json)
		print_json(path, &st, m, &sum, raw, memory);
	else
		print_text(path, &st, m, &sum, raw, memory);
	criu_glue_summary_clear(&sum);
	manifest_free(m);
	return 0;
}
