/* A workload's place in the state directory and the lock that makes one
 * supervisor its only owner. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#define CRYO_DEFAULT_STATE_DIR "/var/lib/cryo"

struct workload_paths {
	char state_dir[PATH_MAX];
	char dir[PATH_MAX];      /* state_dir/NAME */
	char lock[PATH_MAX];     /* dir/lock: flock()ed by the supervisor */
	char socket[PATH_MAX];   /* dir/control.sock: the supervisor's command socket */
	char pid_file[PATH_MAX]; /* dir/pid: the program's host PID while it runs */
};

/* --state-dir, else $CRYO_STATE_DIR, else the built-in default. */
const char *workload_state_dir(const char *opt);

/* Fills the paths of workload name under state_dir. */
int workload_paths_init(struct workload_paths *p, const char *state_dir, const char *name);

struct cryo_error;

/* Before a supervisor writes into p->dir (which exists): puts p on the path
 * without symbolic links, and checks that only root or this user can change
 * that directory or any above it (util_check_trusted_dir()); -EPERM with the
 * directory at fault and the fix in err. */
int workload_trust(struct workload_paths *p, struct cryo_error *err);

/* Opens p->dir (O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) for creating files in it
 * with openat(); the fd or a negative errno. */
int workload_open_dir(const struct workload_paths *p);

/* Takes the workload's lock without waiting; returns the fd (O_CLOEXEC) or
 * -EBUSY when another supervisor holds it, with its PID in *holder if known;
 * -ELOOP if "lock" is a symbolic link, -EPERM if it is not a file of ours
 * (a hard link, another user's). */
int workload_lock(const struct workload_paths *p, pid_t *holder);

/* Whether a supervisor holds the workload's lock now. */
bool workload_is_supervised(const struct workload_paths *p, pid_t *holder);
