/* The supervisor: runs one workload in its own PID namespace, owns its stdio
 * and control socket, checkpoints it on request, and restores the newest
 * intact checkpoint when it dies. */
#pragma once

#include "net.h"
#include "workload.h"

#include <stdbool.h>

struct incoming;
struct store_config;
struct lease_config;
#include <stdint.h>

enum restart_policy {
	RESTART_ON_FAILURE,
	RESTART_ALWAYS,
	RESTART_NO,
};

enum checkpoint_trigger {
	TRIGGER_PROGRAM, /* cryo_checkpoint() */
	TRIGGER_COMMAND, /* cryo checkpoint NAME */
	TRIGGER_TIMER,   /* cryo run --every */
	TRIGGER_STOP,    /* cryo stop --checkpoint */
	TRIGGER_MIGRATE, /* cryo migrate */
};

#define SUPERVISOR_FILES_MAX_DEFAULT (UINT64_C(256) << 20)
/* The most --files-skip paths. */
#define SUPERVISOR_FILES_SKIP_MAX 16

/* Which of the files the program holds open for writing a checkpoint copies
 * (--files-copy; supervisor/files.c). */
enum files_policy {
	FILES_SNAPSHOT, /* each, but those under a files_skip path */
	FILES_NONE,     /* none: CRIU's own rule, the same size at a restore */
};

struct supervisor_config {
	const char *name;
	struct workload_paths paths;
	char **argv; /* the program and its arguments */
	enum restart_policy policy;
	unsigned max_restarts;
	unsigned keep;     /* generations to keep, >= 1 */
	uint64_t every_ns; /* periodic checkpoints; 0 = none */
	int zstd_level;
	/* The most bytes of files held open for writing a checkpoint copies
	 * (--files-max; supervisor/files.c). */
	uint64_t files_max;
	enum files_policy files;
	/* Files at or under these absolute paths are not copied
	 * (--files-skip; pointing into argv or the offer). */
	const char *files_skip[SUPERVISOR_FILES_SKIP_MAX];
	size_t n_files_skip;
	bool incremental;             /* store memory images as deltas when it pays */
	bool dump_via_memory;         /* pages through cryo's page server, not files */
	bool lazy_restore;            /* a whole generation's memory follows the restore */
	bool resume;                  /* start from the newest image instead of afresh */
	bool fresh;                   /* cryo run --fresh */
	uint64_t resume_generation;   /* with resume: this one, 0 = newest intact */
	const struct net_config *net; /* its own network namespace (--net), or NULL */
	/* Set by cryo serve: the workload arrives by migration (see migrate.h);
	 * the restored copy stays off the network until the source says DONE. */
	struct incoming *incoming;
	/* cryo run -d: a byte goes down this pipe (its write end, > 2; 0 for
	 * none) once the program runs, and it is closed. */
	int ready_fd;
	/* --store s3://BUCKET/PREFIX: every generation is copied there in the
	 * background (supervisor/upload.c); NULL for none. */
	const struct store_config *store;
	/* --lease etcd://HOST:PORT (with store): the workload runs only while
	 * this supervisor holds its lease, and only it publishes generations
	 * (supervisor/lease.c); NULL for none. */
	const struct lease_config *lease;
	/* --store-sync: a checkpoint's news of durability waits until the
	 * generation is in the store (and published, with a lease). */
	bool store_sync;
};

/* Runs the workload until it ends for good. Returns the exit status for
 * `cryo run` (the program's own, or 128 + signal), or a negative errno if it
 * could not start at all (already logged). lock_fd is the workload's lock,
 * held for the supervisor's lifetime. */
int supervisor_run(const struct supervisor_config *cfg, int lock_fd);

const char *checkpoint_trigger_name(enum checkpoint_trigger t);

/* A generation and the ETag its object must have in the store (the
 * published record's). */
struct store_expect {
	uint64_t generation;
	char etag[80];
};

/* Brings into dir (the workload name's directory, open as dir_fd, its lock
 * held) the newest generation in the store sc (at most upto, when not 0) that
 * can be restored, with every generation it is built on, each verified as a
 * local archive is; an object missing or damaged makes the generation before
 * be tried. The n_expect generations in expect (the published chain) must
 * have those ETags in the store, else they count as damaged (an object put
 * over the published one, by an owner that had lost its lease while its
 * upload was under way). With upto, generations here newer than it are set
 * aside (gen-N.cryo.unpublished). The prefix in the store is then this
 * directory's (store_owner_claim()). Returns the generation, or -ENOENT when
 * the store holds none that can be restored (the last reason in err), or
 * another negative errno when the store cannot be read. Logs what it
 * fetched and each generation it passed over. */
int64_t store_fetch_into(const struct store_config *sc, const char *name, const char *dir,
                         int dir_fd, uint64_t upto, const struct store_expect *expect,
                         size_t n_expect, struct cryo_error *err);
