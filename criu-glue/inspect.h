/* What a CRIU image directory holds, read from the images themselves: the
 * process tree, the memory dumped, the open files and sockets. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct criu_glue_process {
	uint32_t pid, ppid, pgid, sid; /* as seen inside the workload's PID namespace */
	uint32_t threads;
	char comm[32];
};

struct criu_glue_summary {
	struct criu_glue_process *procs;
	size_t n_procs;
	char **files; /* one line each: "socket TCP 127.0.0.1:6379 LISTEN", ... */
	size_t n_files;
};

/* Whether an image file holds the program's memory pages (large) rather
 * than the process metadata criu_glue_describe() reads. */
bool criu_glue_is_memory_image(const char *name);

int criu_glue_describe(const char *images_dir, struct criu_glue_summary *ret);
void criu_glue_summary_clear(struct criu_glue_summary *s);
