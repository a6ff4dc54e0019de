#include "error.h"
#include "test.h"
#include "unixsk.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_durations(void)
{
	uint64_t ns;
	CHECK(util_parse_duration("500ms", &ns) == 0 && ns == 500000000ULL);
	uint64_t sz;
	CHECK(util_parse_size("0", &sz) == 0 && sz == 0);
	CHECK(util_parse_size("4096", &sz) == 0 && sz == 4096);
	CHECK(util_parse_size("64K", &sz) == 0 && sz == 65536);
	CHECK(util_parse_size("256M", &sz) == 0 && sz == 256ULL << 20);
	CHECK(util_parse_size("2GiB", &sz) == 0 && sz == 2ULL << 30);
	CHECK(util_parse_size("1T", &sz) == -EINVAL);
	CHECK(util_parse_size("M", &sz) == -EINVAL);
	CHECK(util_parse_size("-1", &sz) == -EINVAL);
	CHECK(util_parse_size("99999999999999G", &sz) == -ERANGE);
	CHECK(util_parse_duration("30s", &ns) == 0 && ns == 30000000000ULL);
	CHECK(util_parse_duration("5m", &ns) == 0 && ns == 300000000000ULL);
	CHECK(util_parse_duration("2h", &ns) == 0 && ns == 7200000000000ULL);
	CHECK(util_parse_duration("7", &ns) == 0 && ns == 7000000000ULL);
	CHECK(util_parse_duration("", &ns) < 0);
	CHECK(util_parse_duration("0s", &ns) < 0);
	CHECK(util_parse_duration("-1s", &ns) < 0);
	CHECK(util_parse_duration("5x", &ns) < 0);
	CHECK(util_parse_duration("ms", &ns) < 0);
	CHECK(util_parse_duration("99999999999999999999s", &ns) < 0);
}

static void test_uint(void)
{
	uint64_t v;
	CHECK(util_parse_uint("42", 100, &v) == 0 && v == 42);
	CHECK(util_parse_uint("101", 100, &v) < 0);
	CHECK(util_parse_uint("4x", 100, &v) < 0);
	CHECK(util_parse_uint("", 100, &v) < 0);
	CHECK(util_parse_uint("-3", 100, &v) < 0);
}

static void test_names(void)
{
	CHECK(util_name_is_valid("counter"));
	CHECK(util_name_is_valid("web-1.prod_a"));
	CHECK(!util_name_is_valid(""));
	CHECK(!util_name_is_valid(".hidden"));
	CHECK(!util_name_is_valid("-rf"));
	CHECK(!util_name_is_valid("a/b"));
	CHECK(!util_name_is_valid("a b"));
	CHECK(!util_name_is_valid(
	    "x123456789012345678901234567890123456789012345678901234567890123456"));
}

static void test_files(void)
{
	char dir[] = "/tmp/cryo-test-util-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[256], deep[256];
	snprintf(path, sizeof(path), "%s/f", dir);
	CHECK(util_write_file_atomic(path, "hello", 5) == 0);
	char *buf = NULL;
	size_t len = 0;
	CHECK(util_read_file(path, &buf, &len) == 0 && len == 5 && !strcmp(buf, "hello"));
	free(buf);
	snprintf(deep, sizeof(deep), "%s/a/b/c", dir);
	CHECK(util_mkdir_p(deep) == 0);
	CHECK(util_mkdir_p(deep) == 0);
	CHECK(util_mkdir_p(path) == -ENOTDIR);
	CHECK(util_rm_rf(dir) == 0);
	struct stat st;
	CHECK(stat(dir, &st) < 0 && errno == ENOENT);
	CHECK(util_read_file("/nonexistent/x", &buf, &len) == -ENOENT);
}

/* A link planted under a file's name or its temporary name is replaced, never
 * written through; a directory only we can change passes the check, one
 * others may write does not, unless sticky above the last. */
static void test_links_and_trust(void)
{
	char dir[] = "/tmp/cryo-test-trust-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char target[256], link[256], path[256];
	snprintf(target, sizeof(target), "%s/target", dir);
	CHECK(util_write_file_atomic(target, "keep", 4) == 0);
	snprintf(link, sizeof(link), "%s/f.tmp", dir);
	CHECK(symlink(target, link) == 0);
	snprintf(path, sizeof(path), "%s/f", dir);
	CHECK(util_write_file_atomic(path, "new", 3) == 0);
	char *buf = NULL;
	CHECK(util_read_file(target, &buf, NULL) == 0 && !strcmp(buf, "keep"));
	free(buf);
	CHECK(util_read_file(path, &buf, NULL) == 0 && !strcmp(buf, "new"));
	free(buf);
	struct stat st;
	CHECK(lstat(link, &st) < 0 && errno == ENOENT);

	struct cryo_error err = {{0}};
	CHECK(util_check_trusted_dir(dir, false, &err) == 0);
	CHECK(chmod(dir, 0777) == 0);
	CHECK(util_check_trusted_dir(dir, false, &err) == -EPERM && strstr(err.msg, "chmod go-w"));
	CHECK(chmod(dir, 01777) == 0);
	CHECK(util_check_trusted_dir(dir, false, &err) == -EPERM);
	CHECK(util_check_trusted_dir(dir, true, &err) == 0);
	snprintf(path, sizeof(path), "%s/sub", dir);
	CHECK(mkdir(path, 0700) == 0);
	CHECK(util_check_trusted_dir(path, false, &err) == 0);
	CHECK(chmod(dir, 0770) == 0);
	CHECK(util_check_trusted_dir(path, false, &err) == -EPERM && strstr(err.msg, "its group"));
	CHECK(chmod(dir, 0700) == 0);
	CHECK(util_check_trusted_dir(link, false, &err) == -ENOENT);
	CHECK(symlink(path, link) == 0);
	CHECK(util_check_trusted_dir(link, false, &err) == -ELOOP);
	CHECK(util_check_trusted_dir("relative", false, &err) == -EINVAL);
	CHECK(util_rm_rf(dir) == 0);
}

/* A scratch directory outlives a killed process; the next sweep removes it,
 * and only it. */
static void test_scratch_sweep(void)
{
	char mine[256], theirs[256] = "";
	CHECK(util_scratch_dir(4096, "unit-test", "/tmp/cryo-unit-fallback", mine, sizeof(mine)) ==
	      0);
	CHECK(!strncmp(mine, "/dev/shm/cryo-unit-test-", 24));
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t child = fork();
	if (child == 0) {
		char dir[256];
		close(p[0]);
		int ok = util_scratch_dir(4096, "unit-test", "/tmp/cryo-unit-fallback", dir,
		                          sizeof(dir)) == 0;
		(void)!write(p[1], dir, ok ? strlen(dir) + 1 : 1);
		_exit(0);
	}
	close(p[1]);
	CHECK(read(p[0], theirs, sizeof(theirs)) > 1);
	close(p[0]);
	waitpid(child, NULL, 0);
	struct stat st;
	CHECK(stat(theirs, &st) == 0);
	util_scratch_sweep();
	CHECK(stat(theirs, &st) < 0 && errno == ENOENT);
	CHECK(stat(mine, &st) == 0);
	CHECK(util_rm_rf(mine) == 0);
}

/* The reason's helpers: set, context before, more after, and a long reason
 * cut with "..." at its end. */
static void test_errors(void)
{
	struct cryo_error err = {{0}};
	CHECK(error_wrap(&err, -EIO, "cannot store") == -EIO && !strcmp(err.msg, "cannot store"));
	CHECK(error_set(&err, -ENOSPC, "disk %s", "full") == -ENOSPC &&
	      !strcmp(err.msg, "disk full"));
	CHECK(error_wrap(&err, -ENOSPC, "cannot write '%s'", "x") == -ENOSPC &&
	      !strcmp(err.msg, "cannot write 'x': disk full"));
	CHECK(error_append(&err, -EIO, "; %d left", 3) == -EIO &&
	      !strcmp(err.msg, "cannot write 'x': disk full; 3 left"));
	CHECK(error_set(NULL, -EINVAL, "nobody asked") == -EINVAL);
	CHECK(error_append(NULL, -EINVAL, "nobody asked") == -EINVAL);

	char big[2 * CRYO_ERROR_MAX];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	error_set(&err, -EIO, "%s", big);
	CHECK(strlen(err.msg) == CRYO_ERROR_MAX - 1 &&
	      !strcmp(err.msg + CRYO_ERROR_MAX - 4, "..."));
	/* Room for 1023 characters: 1021 and "bcd" do not fit, 1022 and "b" do. */
	error_set(&err, -EIO, "%.*s", CRYO_ERROR_MAX - 3, big);
	error_append(&err, -EIO, "bcd");
	CHECK(strlen(err.msg) == CRYO_ERROR_MAX - 1 &&
	      !strcmp(err.msg + CRYO_ERROR_MAX - 4, "..."));
	error_set(&err, -EIO, "%.*s", CRYO_ERROR_MAX - 2, big);
	error_append(&err, -EIO, "b");
	CHECK(strlen(err.msg) == CRYO_ERROR_MAX - 1 && err.msg[CRYO_ERROR_MAX - 2] == 'b');
	error_append(&err, -EIO, "c");
	CHECK(!strcmp(err.msg + CRYO_ERROR_MAX - 4, "..."));
}

/* A child holding an inner pair (both ends its own), one end of a pair whose
 * other end we hold, and a listening socket: only the end connected to us
 * leaves its tree. */
static void test_unix_outside(void)
{
	int inner[2], cross[2], go[2], ready[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, inner) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, cross) == 0);
	CHECK(pipe(go) == 0 && pipe(ready) == 0);
	int lsk = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un any = {.sun_family = AF_UNIX}; /* an abstract name of the kernel's */
	CHECK(lsk >= 0 && bind(lsk, (struct sockaddr *)&any, sizeof(sa_family_t)) == 0 &&
	      listen(lsk, 1) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(go[1]);
		close(cross[0]);
		close(ready[1]); /* tells us it holds what it keeps */
		char c;
		(void)!read(go[0], &c, 1); /* until we close go[1] */
		_exit(0);
	}
	CHECK(pid > 0);
	close(inner[0]);
	close(inner[1]);
	close(lsk);
	close(go[0]);
	close(ready[1]);
	char c;
	CHECK(read(ready[0], &c, 1) == 0);
	close(ready[0]);
	uint64_t *ino = NULL;
	size_t n = 99;
	CHECK(unixsk_outside(pid, -1, 0, &ino, &n) == 0);
	CHECK(n == 1 && ino && ino[0] == util_fd_inode(cross[1]));
	free(ino);
	/* The one skipped (a control socket, say) is not listed. */
	CHECK(unixsk_outside(pid, -1, util_fd_inode(cross[1]), &ino, &n) == 0 && n == 0);
	free(ino);
	/* Once we close our end, nothing of the tree's has a peer outside. */
	close(cross[0]);
	CHECK(unixsk_outside(pid, -1, 0, &ino, &n) == 0 && n == 0);
	free(ino);
	close(cross[1]);
	close(go[1]);
	CHECK(waitpid(pid, NULL, 0) == pid);
}

TEST_MAIN(test_durations, test_uint, test_names, test_files, test_links_and_trust,
          test_scratch_sweep, test_errors, test_unix_outside)
