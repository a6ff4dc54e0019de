/* criu-glue's CRIU started ahead (criu_glue_restorer_*): the criu swrk it
 * starts holds the fds it was given, under the same numbers, and goes away
 * when it is freed or when a restore refuses to start; too many fds are
 * refused with a reason. Needs CRIU (scripts/setup installs it). */
#include "glue.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether pid is a guard (glue.c's guard_start()): its command line names
 * it. A child just spawned may not show its command line yet (its exec is
 * under way): looked at again, for up to a second. */
static bool is_guard(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	for (int i = 0; i < 100; i++) {
		FILE *f = fopen(path, "re");
		if (!f)
			return false;
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		if (n > 0)
			return memmem(buf, n, "cryo-restore-guard", 18) != NULL;
		usleep(10000);
	}
	return false;
}

/* Our children that are not zombies, guards counted apart (through /proc:
 * /proc/PID/task/TID/children is not in every kernel). */
static int children(pid_t *first, int *guards)
{
	int n = 0;
	*guards = 0;
	*first = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char path[300], buf[512];
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		const char *p = strrchr(buf, ')');
		char state;
		int ppid;
		if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2 || ppid != getpid() ||
		    state == 'Z')
			continue;
		pid_t pid = atoi(de->d_name);
		if (is_guard(pid)) {
			(*guards)++;
		} else {
			n++;
			*first = pid;
		}
	}
	if (d)
		closedir(d);
	return n;
}

/* Our only child (a guard apart, which goes with it), or 0 if there is
 * none. */
static pid_t only_child(void)
{
	pid_t pid;
	int guards;
	int n = children(&pid, &guards);
	CHECK(n <= 1);      /* never two */
	CHECK(guards == n); /* a guard with each CRIU, and none left over */
	return n == 1 ? pid : 0;
}

/* Whether pid's fd n is the same file as our fd n. */
static bool holds_same(pid_t pid, int n)
{
	char path[64];
	struct stat theirs, ours;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, n);
	return stat(path, &theirs) == 0 && fstat(n, &ours) == 0 && theirs.st_ino == ours.st_ino &&
	       theirs.st_dev == ours.st_dev;
}

static void test_holds_fds(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct criu_glue_restorer *r = NULL;
	struct cryo_error err = {{0}};
	CHECK(criu_glue_restorer_start(p, 2, &r, &err) == 0 && r);
	pid_t pid = only_child();
	CHECK(pid > 0);
	CHECK(holds_same(pid, p[0]) && holds_same(pid, p[1]));
	criu_glue_restorer_free(r);
	/* Gone and reaped. */
	CHECK(only_child() == 0);
	CHECK(waitpid(pid, NULL, WNOHANG) < 0 && errno == ECHILD);
	close(p[0]);
	close(p[1]);
}

static void test_too_many_fds(void)
{
	int fds[CRIU_GLUE_MAX_INHERIT + 1];
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		fds[i] = 0;
	struct criu_glue_restorer *r = NULL;
	struct cryo_error err = {{0}};
	CHECK(criu_glue_restorer_start(fds, CRIU_GLUE_MAX_INHERIT + 1, &r, &err) == -E2BIG);
	CHECK(r == NULL && strstr(err.msg, "at most 128"));
	CHECK(only_child() == 0);

	/* A restore asked to pass too many ends the CRIU it was given. */
	CHECK(criu_glue_restorer_start(fds, 1, &r, &err) == 0 && r);
	CHECK(only_child() > 0);
	struct criu_glue_inherit inh[CRIU_GLUE_MAX_INHERIT + 1];
	for (size_t i = 0; i < sizeof(inh) / sizeof(inh[0]); i++)
		inh[i] = (struct criu_glue_inherit){.key = "fd", .fd = 0};
	struct criu_glue_restore_opts o = {
	    .images_dir = "/nonexistent",
	    .log_dir = "/nonexistent",
	    .log_name = "restore.log",
	    .inherit = inh,
	    .n_inherit = CRIU_GLUE_MAX_INHERIT + 1,
	    .restorer = r,
	};
	memset(&err, 0, sizeof(err));
	pid_t pid = 0;
	CHECK(criu_glue_restore(&o, &pid, &err) == -E2BIG && strstr(err.msg, "at most 128"));
	CHECK(only_child() == 0);
}

/* A CRIU started ahead that died is not used: the restore starts its own
 * (which fails here, on a directory that is not there, with a reason). */
static void test_dead_restorer(void)
{
	struct criu_glue_restorer *r = NULL;
	struct cryo_error err = {{0}};
	int fd = 0;
	CHECK(criu_glue_restorer_start(&fd, 1, &r, &err) == 0 && r);
	pid_t pid = only_child();
	CHECK(pid > 0 && kill(pid, SIGKILL) == 0);
	int status;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid); /* reaped by someone else */
	struct criu_glue_inherit inh = {.key = "fd", .fd = 0};
	struct criu_glue_restore_opts o = {
	    .images_dir = "/nonexistent",
	    .log_dir = "/nonexistent",
	    .log_name = "restore.log",
	    .inherit = &inh,
	    .n_inherit = 1,
	    .restorer = r,
	};
	pid_t restored = 0;
	CHECK(criu_glue_restore(&o, &restored, &err) < 0 && err.msg[0] && restored == 0);
	CHECK(only_child() == 0);
}

TEST_MAIN(test_holds_fds, test_too_many_fds, test_dead_restorer)
