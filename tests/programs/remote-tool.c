/* Drives remote/'s clients from the e2e suite 96-remote, against a real
 * object store and etcd. One request (or one wait) per run; a failure prints
 * the client's one line as "remote-tool: LINE" and exits 2 for -EBUSY, 3 for
 * -ENOLCK (this client lost ownership), 4 for -ETIMEDOUT, 1 otherwise.
 *
 *   remote-tool [S3 OPTIONS] s3 mb BUCKET
 *   remote-tool [S3 OPTIONS] s3 put BUCKET KEY FILE        prints "ETAG SIZE"
 *   remote-tool [S3 OPTIONS] s3 get BUCKET KEY FILE [ETAG] prints "ETAG SIZE"
 *   remote-tool [S3 OPTIONS] s3 head BUCKET KEY            prints "ETAG SIZE"
 *   remote-tool [S3 OPTIONS] s3 ls BUCKET [PREFIX]         prints "KEY SIZE ETAG" lines
 *   remote-tool [S3 OPTIONS] s3 rm BUCKET KEY
 *     S3 OPTIONS: --config FILE, --part-size BYTES, --multipart-from BYTES,
 *     --deadline-ms MS (small requests; also the low-speed deadline, in s),
 *     --list-page N (keys per listing request);
 *     the endpoint and credentials come from the environment or FILE.
 *   remote-tool etcd grant TTL                     prints the lease's id
 *   remote-tool etcd keepalive LEASE               prints the TTL left
 *   remote-tool etcd revoke LEASE
 *   remote-tool etcd acquire KEY VALUE LEASE
 *   remote-tool etcd wait KEY VALUE LEASE TIMEOUT_MS   (polls every 100 ms)
 *   remote-tool etcd publish OWNER_KEY LEASE KEY VALUE
 *   remote-tool etcd get KEY                       prints "VALUE LEASE"
 *     etcd's address is $ETCD_ENDPOINT; each request's deadline
 *     $ETCD_DEADLINE_MS (default 2000).
 * With $REMOTE_TOOL_PEAK_RSS set to a file name, the tool writes its peak RSS
 * in KiB there as it ends (the clients stream: no object is held whole). */
#include "error.h"
#include "etcd.h"
#include "s3.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int fail(int r, const struct cryo_error *err)
{
	fprintf(stderr, "remote-tool: %s\n", err->msg[0] ? err->msg : strerror(-r));
	switch (r) {
	case -EBUSY: return 2;
	case -ENOLCK: return 3;
	case -ETIMEDOUT: return 4;
	default: return 1;
	}
}

static int usage(void)
{
	fprintf(stderr, "remote-tool: usage: see the comment at the top of remote-tool.c\n");
	return 64;
}

static int64_t num(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end) {
		fprintf(stderr, "remote-tool: '%s' is no number\n", s);
		exit(64);
	}
	return v;
}

static int s3_main(int argc, char **argv, const char *config, struct s3_config *over)
{
	struct cryo_error err = {""};
	struct s3_config cfg;
	int r = s3_config_load(&cfg, config, &err);
	if (r < 0)
		return fail(r, &err);
	if (over->list_page)
		cfg.list_page = over->list_page;
	if (over->part_size)
		cfg.part_size = over->part_size;
	if (over->multipart_from)
		cfg.multipart_from = over->multipart_from;
	if (over->request_ms) {
		cfg.request_ms = over->request_ms;
		cfg.connect_ms = over->request_ms;
		cfg.low_speed_s = (over->request_ms + 999) / 1000;
	}
	struct s3_client *c = NULL;
	if ((r = s3_client_new(&c, &cfg, &err)) < 0)
		return fail(r, &err);
	const char *verb = argv[0];
	struct s3_object o = {0};
	int fd = -1;
	if (strcmp(verb, "mb") == 0 && argc == 2) {
		r = s3_create_bucket(c, argv[1], &err);
	} else if (strcmp(verb, "put") == 0 && argc == 4) {
		fd = open(argv[3], O_RDONLY | O_CLOEXEC);
		r = fd < 0 ? error_set(&err, -errno, "cannot open %s: %m", argv[3])
		           : s3_put(c, argv[1], argv[2], fd, &o, &err);
	} else if (strcmp(verb, "get") == 0 && (argc == 4 || argc == 5)) {
		fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		r = fd < 0 ? error_set(&err, -errno, "cannot open %s: %m", argv[3])
		           : s3_get(c, argv[1], argv[2], fd, argc == 5 ? argv[4] : NULL, &o, &err);
	} else if (strcmp(verb, "head") == 0 && argc == 3) {
		r = s3_head(c, argv[1], argv[2], &o, &err);
	} else if (strcmp(verb, "rm") == 0 && argc == 3) {
		r = s3_delete(c, argv[1], argv[2], &err);
	} else if (strcmp(verb, "ls") == 0 && (argc == 2 || argc == 3)) {
		struct s3_list l = {0};
		r = s3_list(c, argv[1], argc == 3 ? argv[2] : NULL, &l, &err);
		for (size_t i = 0; r == 0 && i < l.n; i++)
			printf("%s %" PRIu64 " %s\n", l.items[i].key, l.items[i].size,
			       l.items[i].etag);
		s3_list_clear(&l);
		verb = "";
	} else {
		s3_client_free(c);
		return usage();
	}
	if (fd >= 0)
		close(fd);
	s3_client_free(c);
	if (r < 0)
		return fail(r, &err);
	if (strcmp(verb, "put") == 0 || strcmp(verb, "get") == 0 || strcmp(verb, "head") == 0)
		printf("%s %" PRIu64 "\n", o.etag, o.size);
	return 0;
}

static int etcd_main(int argc, char **argv)
{
	const char *endpoint = getenv("ETCD_ENDPOINT");
	const char *deadline = getenv("ETCD_DEADLINE_MS");
	struct cryo_error err = {""};
	if (!endpoint) {
		fprintf(stderr, "remote-tool: set ETCD_ENDPOINT\n");
		return 64;
	}
	struct etcd_client *c = NULL;
	int r = etcd_client_new(&c, endpoint, deadline ? (long)num(deadline) : 2000, &err);
	if (r < 0)
		return fail(r, &err);
	const char *verb = argv[0];
	int64_t v = 0;
	struct etcd_kv kv = {0};
	if (strcmp(verb, "grant") == 0 && argc == 2) {
		int64_t id = 0;
		r = etcd_lease_grant(c, num(argv[1]), &id, NULL, &err);
		if (r == 0)
			printf("%" PRId64 "\n", id);
	} else if (strcmp(verb, "keepalive") == 0 && argc == 2) {
		r = etcd_lease_keepalive(c, num(argv[1]), &v, &err);
		if (r == 0)
			printf("%" PRId64 "\n", v);
	} else if (strcmp(verb, "revoke") == 0 && argc == 2) {
		r = etcd_lease_revoke(c, num(argv[1]), &err);
	} else if (strcmp(verb, "acquire") == 0 && argc == 4) {
		r = etcd_acquire(c, argv[1], argv[2], num(argv[3]), &kv, &err);
	} else if (strcmp(verb, "wait") == 0 && argc == 5) {
		r = etcd_acquire_wait(c, argv[1], argv[2], num(argv[3]), 100, (long)num(argv[4]),
		                      &err);
	} else if (strcmp(verb, "publish") == 0 && argc == 5) {
		r = etcd_put_if_owner(c, argv[1], num(argv[2]), argv[3], argv[4], &err);
	} else if (strcmp(verb, "get") == 0 && argc == 2) {
		r = etcd_get(c, argv[1], &kv, &err);
		if (r == 0)
			printf("%s %" PRId64 "\n", kv.value, kv.lease);
	} else {
		etcd_client_free(c);
		return usage();
	}
	etcd_kv_clear(&kv);
	etcd_client_free(c);
	return r < 0 ? fail(r, &err) : 0;
}

static void write_peak_rss(void)
{
	const char *path = getenv("REMOTE_TOOL_PEAK_RSS");
	struct rusage ru;
	if (!path || getrusage(RUSAGE_SELF, &ru) < 0)
		return;
	FILE *f = fopen(path, "we");
	if (f) {
		fprintf(f, "%ld\n", ru.ru_maxrss);
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	atexit(write_peak_rss);
	const char *config = NULL;
	struct s3_config over = {0};
	int i = 1;
	for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (strcmp(argv[i], "--config") == 0)
			config = argv[i + 1];
		else if (strcmp(argv[i], "--part-size") == 0)
			over.part_size = (uint64_t)num(argv[i + 1]);
		else if (strcmp(argv[i], "--multipart-from") == 0)
			over.multipart_from = (uint64_t)num(argv[i + 1]);
		else if (strcmp(argv[i], "--list-page") == 0)
			over.list_page = (unsigned)num(argv[i + 1]);
		else if (strcmp(argv[i], "--deadline-ms") == 0)
			over.request_ms = (long)num(argv[i + 1]);
		else
			return usage();
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (i + 1 < argc && strcmp(argv[i], "s3") == 0)
		return s3_main(argc - i - 1, argv + i + 1, config, &over);
	if (i + 1 < argc && strcmp(argv[i], "etcd") == 0)
		return etcd_main(argc - i - 1, argv + i + 1);
	return usage();
}
