/* criu-glue's refusal, before a dump, of fds no restore under cryo could
 * bring back (preflight.c), with this test's own process (and a child of
 * it) as the tree: each kind is found and named, and the fds CRIU restores
 * well are let through. */
#include "glue.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Opens path, runs the check on this process's tree, closes it again:
 * the result, with the reason in err. */
static int check_holding(const char *path, struct cryo_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	memset(err, 0, sizeof(*err));
	int r = criu_glue_find_unrestorable(getpid(), err);
	if (fd >= 0)
		close(fd);
	return r;
}

static void test_nothing_held(void)
{
	struct cryo_error err = {{0}};
	CHECK(criu_glue_find_unrestorable(getpid(), &err) == 0);
}

static void test_own_proc_file(void)
{
	struct cryo_error err;
	char want[64];
	snprintf(want, sizeof(want), "on /proc/%d/maps, a file in /proc", getpid());
	CHECK(check_holding("/proc/self/maps", &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, want) != NULL);
	CHECK(strstr(err.msg, "close it before checkpointing") != NULL);
	/* /proc/PID itself, as a directory. */
	char self[32];
	snprintf(self, sizeof(self), "/proc/%d", getpid());
	CHECK(check_holding(self, &err) == -EOPNOTSUPP);
}

static void test_other_proc_file(void)
{
	/* The parent is outside the tree: its files are reopened as they
	 * were; so are /proc's files of no process. */
	struct cryo_error err;
	char parent[64];
	snprintf(parent, sizeof(parent), "/proc/%d/stat", getppid());
	CHECK(check_holding(parent, &err) == 0);
	CHECK(check_holding("/proc/meminfo", &err) == 0);
}

static void test_namespace_file(void)
{
	struct cryo_error err;
	CHECK(check_holding("/proc/self/ns/net", &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, "on net:[") != NULL);
	CHECK(strstr(err.msg, "a namespace file") != NULL);
	CHECK(check_holding("/proc/self/ns/pid", &err) == -EOPNOTSUPP);
}

static void test_unlinked_files(void)
{
	char dir[] = "/tmp/cryo-test-preflight-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char a[128], b[128];
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	int fd = open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	struct cryo_error err = {{0}};
	/* Unlinked with no other link: CRIU keeps its content in the image. */
	CHECK(unlink(a) == 0);
	CHECK(criu_glue_find_unrestorable(getpid(), &err) == 0);
	close(fd);
	/* Unlinked, but another hard link keeps it. */
	fd = open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(link(a, b) == 0);
	CHECK(unlink(a) == 0);
	CHECK(criu_glue_find_unrestorable(getpid(), &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, " (deleted), a file unlinked while open that has other hard links") !=
	      NULL);
	close(fd);
	unlink(b);
	rmdir(dir);
}

static void test_in_a_child(void)
{
	/* A child of the tree holding its own /proc file is found too. */
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	pid_t child = fork();
	if (child == 0) {
		close(p[0]);
		int fd = open("/proc/self/status", O_RDONLY);
		(void)fd;
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	char c;
	CHECK(read(p[0], &c, 1) == 1);
	close(p[0]);
	struct cryo_error err = {{0}};
	char want[64];
	snprintf(want, sizeof(want), "(PID %d) holds fd ", child);
	CHECK(criu_glue_find_unrestorable(getpid(), &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, want) != NULL);
	snprintf(want, sizeof(want), " on /proc/%d/status, ", child);
	CHECK(strstr(err.msg, want) != NULL);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

TEST_MAIN(test_nothing_held, test_own_proc_file, test_other_proc_file, test_namespace_file,
          test_unlinked_files, test_in_a_child)
