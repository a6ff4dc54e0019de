/* Everything cryo asks of CRIU: dumps through libcriu's per-call
 * (criu_local_*) options, restores through CRIU's RPC to a `criu swrk` that
 * cryo starts itself (possibly ahead of time). Functions return 0 or a
 * negative errno; when CRIU itself fails they fill err with a one-line cause
 * that names CRIU's log, which is kept. */
#pragma once

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#define CRIU_GLUE_MIN_VERSION 40200 /* 4.2: inet sockets on kernels >= 6.16 */

/* What the caller does while CRIU holds the dumped tree frozen, its images
 * written and before it runs again (CRIU's "post-dump" notification): what it
 * copies then is as the program left it. A callback struct, so that
 * criu-glue knows nothing of what is copied where. frozen returns 0, or a
 * negative errno with its reason in err: the dump then fails (the tree runs
 * on with leave_running) and criu_glue_dump() returns that error. */
struct criu_glue_frozen_hook {
	int (*frozen)(void *data, struct cryo_error *err);
	void *data;
};

struct criu_glue_dump_opts {
	pid_t pid;                     /* root of the process tree to dump */
	const char *images_dir;        /* an empty directory */
	const char *log_dir;           /* where the log file goes */
	const char *log_name;          /* e.g. "criu-dump.log" */
	const uint64_t *external_unix; /* inodes of unix sockets whose peer stays outside */
	size_t n_external_unix;
	uint64_t external_net; /* inode of the tree's network namespace, kept outside; 0: none */
	const char *external_net_key; /* its key, given again at restore (criu_glue_inherit) */
	bool leave_running;
	/* Established TCP connections. With tcp_established each one's state
	 * is dumped (CRIU puts it in repair mode and, in the host's network
	 * namespace, locks it with iptables: two runs before and two after,
	 * ~10 ms each, all inside the freeze), so that a restore can bring it
	 * back open. With tcp_close CRIU leaves them untouched and dumps only
	 * their addresses (CRIU's --tcp-close: "Don't dump the state of, or
	 * block, established tcp connections ... useful when tcp connections
	 * are not going to be restored", Documentation/criu.txt; sk-tcp.c
	 * dump_one_tcp() returns before tcp_repair_established()): the freeze
	 * does not grow with them, and a restore of the image must bring them
	 * back closed (criu_glue_restore_opts.tcp_close; CRIU records the
	 * option in inventory.img and refuses a restore without it). Neither:
	 * a dump of a program holding one fails. */
	bool tcp_established;
	bool tcp_close;
	/* No CRIU network lock: the caller keeps the namespace's traffic away
	 * (its link down). */
	bool network_lock_skip;
	/* >= 0: send the pages on this socket (pages.h), which
	 * criu_glue_pages_start() made only where libcriu can pass it on (else
	 * criu_glue_dump() fails with -EOPNOTSUPP and its reason); else -1 */
	int page_server_fd;
	/* Write tracking (pages.h): CRIU sends only the pages written since
	 * the dump the page server holds as the parent, and re-arms the
	 * tracking. Only with page_server_fd, where
	 * criu_glue_track_supported(). */
	bool track_mem;
	/* Called once the tree is dumped, still frozen; frozen NULL: none. */
	struct criu_glue_frozen_hook hook;
};

struct criu_glue_inherit {
	int fd;       /* an fd of the caller (O_CLOEXEC or not: CRIU gets it either way) */
	char key[64]; /* e.g. "pipe:[1234]" or "socket:[5678]" */
};

/* A CRIU service process (`criu swrk`), started ahead of a restore so that
 * starting CRIU (exec, its libraries: about 5 ms here) is done before the
 * program dies. It holds its own copies of the fds the restore will pass to
 * the restored program, given when it starts; the restore names them by the
 * same numbers. Serves one restore. */
struct criu_glue_restorer;

/* The most fds a restore passes to the restored program (inherit). */
#define CRIU_GLUE_MAX_INHERIT 128 /* 5 of cryo's + UNIXSK_MAX_OUTSIDE, and some */

/* Starts one holding fds (the caller keeps its own; at most
 * CRIU_GLUE_MAX_INHERIT, else -E2BIG). */
int criu_glue_restorer_start(const int *fds, size_t n_fds, struct criu_glue_restorer **ret,
                             struct cryo_error *err);
/* Ends one that served no restore (NULL: nothing). */
void criu_glue_restorer_free(struct criu_glue_restorer *r);

struct criu_glue_lazy; /* lazy.h */

/* How long a restore may take before it is given up (a full restore of
 * 1 GiB takes about a second here). */
#define CRIU_GLUE_RESTORE_TIMEOUT_S 120

struct criu_glue_restore_opts {
	const char *images_dir;
	const char *log_dir;
	const char *log_name;
	const struct criu_glue_inherit *inherit;
	size_t n_inherit;
	bool tcp_established; /* restore established TCP connections open */
	bool tcp_close;       /* restore them closed (after a crash) */
	bool lazy_pages;      /* cryo puts the lazy pages in place (lazy.h) */
	/* Started ahead and holding every inherit fd; consumed (freed) by the
	 * restore. NULL: the restore starts its own. */
	struct criu_glue_restorer *restorer;
	/* With lazy_pages: the page server (lazy.h). If it fails before CRIU's
	 * restore is done, the restore is given up at once (-ECANCELED): its
	 * tasks would wait for pages that never come. */
	struct criu_glue_lazy *lazy;
	/* Signals the caller blocks (for a signalfd, say), any of which, once
	 * pending, gives the restore up (-EINTR). NULL: none. */
	const sigset_t *cancel_signals;
	/* If not NULL, set to how many of the workload's mounts the restore
	 * left out, gone from ours since the checkpoint (mounts.h). */
	size_t *gone_mounts;
};

struct criu_glue_dump_stats {
	uint32_t freezing_us; /* time to freeze the tree */
	uint32_t frozen_us;   /* time the tree stayed frozen */
	uint32_t memdump_us;
	uint32_t memwrite_us;
	uint64_t pages_written;
};

/* The path of the criu binary cryo uses: $CRYO_CRIU, else the first criu on
 * PATH, /usr/local/sbin or /usr/sbin. NULL if there is none. */
const char *criu_glue_binary(void);

/* Whether the CRIU in use can track writes through userfaultfd on this
 * kernel (`criu check --feature uffd_wp_track`, asked once): see pages.h. */
bool criu_glue_track_supported(void);

/* CRIU's version as major*10000 + minor*100 + sublevel. */
int criu_glue_version(int *ret);

/* Dumps the tree rooted at o->pid. With leave_running, the tree runs on
 * whether or not the dump succeeded. Fills stats (if not NULL) from the
 * stats-dump file CRIU writes beside its log. A file the tree holds open
 * unlinked while another hard link remains is copied into images_dir
 * (remap.c), and CRIU's link_remap.N beside it is gone when this returns. */
int criu_glue_dump(const struct criu_glue_dump_opts *o, struct criu_glue_dump_stats *stats,
                   struct cryo_error *err);

/* Looks through the fds of the tree rooted at root for one that CRIU would
 * dump but no restore under cryo could bring back (a file in /proc of the
 * tree's own tasks or a namespace file, held by a process without a /proc of
 * its own; see preflight.c): -EOPNOTSUPP with err naming the process, the fd and its
 * target, else 0. criu_glue_dump() calls it first. */
int criu_glue_find_unrestorable(pid_t root, struct cryo_error *err);

/* Runs `criu check`: whether CRIU can work on this kernel. */
int criu_glue_check(struct cryo_error *err);

/* Writes CRIU's description of this machine's CPU (cpuinfo.img) into dir. */
int criu_glue_cpuinfo_dump(const char *dir, struct cryo_error *err);

/* Checks that a program dumped on the machine whose cpuinfo.img is in dir
 * can run here; err says why not. */
int criu_glue_cpuinfo_check(const char *dir, struct cryo_error *err);

/* Restores a tree whose root becomes a child of the caller; *ret_pid is the
 * root's PID. A restore that fails, or is given up (past
 * CRIU_GLUE_RESTORE_TIMEOUT_S: -ETIMEDOUT; o->lazy, o->cancel_signals), leaves
 * nothing behind: CRIU and the half-restored tree are killed and reaped. The
 * link_remap.N links a dump's files unlinked while open need are made anew
 * from images_dir first, and none is left afterwards, well or not. */
int criu_glue_restore(const struct criu_glue_restore_opts *o, pid_t *ret_pid,
                      struct cryo_error *err);
