/* criu-glue's refusal, before a dump, of fds no restore under cryo could
 * bring back (preflight.c), with this test's own process (and a child of
 * it) as the tree: each kind is found and named, and the fds CRIU restores
 * well are let through. */
#include "glue.h"
#include "internal.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
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
	/* Unlinked, but another hard link keeps it: CRIU's link_remap, kept by
	 * remap.c. */
	fd = open(a, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(link(a, b) == 0);
	CHECK(unlink(a) == 0);
	CHECK(criu_glue_find_unrestorable(getpid(), &err) == 0);
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

static void test_own_proc_of_its_own(void)
{
	/* A child with a /proc of its own (a mount namespace with a new proc
	 * over /proc, as cryo gives each program) holding a file of its own
	 * /proc and a namespace file: CRIU restores both there, so neither is
	 * refused. */
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC) == 0);
	pid_t child = fork();
	if (child == 0) {
		close(p[0]);
		char c = 'x';
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("proc", "/proc", "proc", 0, NULL) < 0)
			c = 'n';
		int fd = open("/proc/self/maps", O_RDONLY);
		int ns = open("/proc/self/ns/net", O_RDONLY);
		(void)fd;
		(void)ns;
		if (write(p[1], &c, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	char c = 0;
	CHECK(read(p[0], &c, 1) == 1);
	close(p[0]);
	struct cryo_error err = {{0}};
	int r = criu_glue_find_unrestorable(getpid(), &err);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	if (c == 'n')
		SKIP("cannot give a child a mount namespace of its own here (not root?)");
	CHECK(r == 0);
}

/* Writes dir/files.img holding one file_entry: a reg_file_entry named name
 * (with field, 3), or an empty ns_file_entry (field 5, name NULL). */
static void write_files_img(const char *dir, uint32_t field, const char *name)
{
	uint8_t inner[300], msg[320], img[340];
	size_t ni = 0, nm = 0;
	if (name) {
		size_t len = strlen(name);
		inner[ni++] = 6 << 3 | 2; /* reg_file_entry.name */
		inner[ni++] = (uint8_t)len;
		memcpy(inner + ni, name, len);
		ni += len;
	}
	msg[nm++] = 1 << 3; /* file_entry.type */
	msg[nm++] = 1;
	msg[nm++] = 2 << 3; /* file_entry.id */
	msg[nm++] = 7;
	msg[nm++] = (uint8_t)(field << 3 | 2);
	msg[nm++] = (uint8_t)ni;
	memcpy(msg + nm, inner, ni);
	nm += ni;
	/* IMG_COMMON_MAGIC, the image's magic (any), the entry's size. */
	uint32_t head[3] = {0x54564319, 0x56213975, (uint32_t)nm};
	memcpy(img, head, sizeof(head));
	memcpy(img + sizeof(head), msg, nm);
	char path[128];
	snprintf(path, sizeof(path), "%s/files.img", dir);
	FILE *f = fopen(path, "we");
	CHECK(f && fwrite(img, 1, sizeof(head) + nm, f) == sizeof(head) + nm);
	if (f)
		fclose(f);
}

static void test_dumped_files(void)
{
	/* An fd opened after the look before the dump is in CRIU's
	 * files.img: found there. */
	char dir[] = "/tmp/cryo-test-preflight-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	struct cryo_error err = {{0}};
	CHECK(preflight_check_dumped(dir, getpid(), &err) == 0); /* no files.img */
	char name[64];
	snprintf(name, sizeof(name), "/proc/%d/maps", getpid());
	write_files_img(dir, 3, name);
	CHECK(preflight_check_dumped(dir, getpid(), &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, name) != NULL);
	write_files_img(dir, 3, name + 1); /* without the leading slash */
	CHECK(preflight_check_dumped(dir, getpid(), &err) == -EOPNOTSUPP);
	snprintf(name, sizeof(name), "/proc/%d/maps", getppid()); /* not the tree's */
	write_files_img(dir, 3, name);
	CHECK(preflight_check_dumped(dir, getpid(), &err) == 0);
	write_files_img(dir, 3, "/proc/meminfo");
	CHECK(preflight_check_dumped(dir, getpid(), &err) == 0);
	write_files_img(dir, 5, NULL);
	CHECK(preflight_check_dumped(dir, getpid(), &err) == -EOPNOTSUPP);
	CHECK(strstr(err.msg, "a namespace file") != NULL);
	char path[128];
	snprintf(path, sizeof(path), "%s/files.img", dir);
	unlink(path);
	rmdir(dir);
}

TEST_MAIN(test_nothing_held, test_own_proc_file, test_other_proc_file, test_namespace_file,
          test_unlinked_files, test_in_a_child, test_own_proc_of_its_own, test_dumped_files)
