/* criu-glue's one dependency on libcriu's internals (libcriu-internals.c):
 * the libcriu installed is one whose private options it was checked
 * against, and a dump given a page-server fd carries that fd in the RPC
 * request libcriu sends, where CRIU reads it. The request is read by a
 * stand-in for `criu swrk` (fake-criu-swrk.c, through CRYO_CRIU), so no
 * CRIU runs and nothing is dumped. */
#include "cleanup.h"
#include "glue.h"
#include "libcriu-internals.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Adds text to the case's diagnostics, on one line. */
static void note(int line, const char *text)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", text);
	for (char *p = buf; (p = strchr(p, '\n'));)
		*p = '|';
	test_note_failure(__FILE__, line, buf);
}

static void test_layout_checked(void)
{
	struct cryo_error err = {{0}};
	int r = criu_glue_page_server_fd_supported(&err);
	/* On a CRIU release not yet checked: read its lib/c/criu.c, and
	 * extend LAYOUT_CHECKED in libcriu-internals.c if it still holds. */
	if (r != 0)
		note(__LINE__, err.msg);
	CHECK(r == 0);
}

/* Dumps through libcriu with the stand-in as CRIU (page_server_fd: fd or
 * -1) and returns what it read in the request, or NULL. */
static char *dump_request(int fd)
{
	const char *fake = getenv("CRYO_TEST_FAKE_CRIU");
	if (!fake || !*fake)
		return NULL;
	char dir[] = "/tmp/cryo-test-libcriu-XXXXXX";
	if (!mkdtemp(dir))
		return NULL;
	setenv("CRYO_CRIU", fake, 1);
	struct criu_glue_dump_opts o = {
	    .pid = getpid(),
	    .images_dir = dir,
	    .log_dir = dir,
	    .log_name = "criu-dump.log",
	    .page_server_fd = fd,
	};
	struct cryo_error err = {{0}};
	int r = criu_glue_dump(&o, NULL, &err);
	unsetenv("CRYO_CRIU");
	if (r != 0)
		note(__LINE__, err.msg);
	CHECK(r == 0);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/request.txt", dir);
	char *text = NULL;
	size_t len;
	if (util_read_file(path, &text, &len) < 0)
		text = NULL;
	util_rm_rf(dir);
	return text;
}

static void test_dump_sends_fd(void)
{
	if (!getenv("CRYO_TEST_FAKE_CRIU"))
		SKIP("CRYO_TEST_FAKE_CRIU is not set (meson sets it)");
	int sp[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
	struct stat st;
	CHECK(fstat(sp[1], &st) == 0);
	_cleanup_free_ char *got = dump_request(sp[1]);
	char want[256];
	snprintf(want, sizeof(want),
	         "dump pid %d\npage server address '' port 0 fd %d socket %llu\n", getpid(), sp[1],
	         (unsigned long long)st.st_ino);
	CHECK(got && strcmp(got, want) == 0);
	if (got && strcmp(got, want) != 0)
		note(__LINE__, got);
	close(sp[0]);
	close(sp[1]);
}

static void test_dump_without_fd(void)
{
	if (!getenv("CRYO_TEST_FAKE_CRIU"))
		SKIP("CRYO_TEST_FAKE_CRIU is not set (meson sets it)");
	_cleanup_free_ char *got = dump_request(-1);
	char want[256];
	snprintf(want, sizeof(want), "dump pid %d\nno page server\n", getpid());
	CHECK(got && strcmp(got, want) == 0);
}

TEST_MAIN(test_layout_checked, test_dump_sends_fd, test_dump_without_fd)
