/* The runtime's parts that need no CRIU: JSON through json-c, the status
 * JSON's round trip, CIDR parsing, cryo run's and cryo restore's option
 * tables, the migration channel's framing and the target's checks of an
 * offer's fields, the files a checkpoint copies. */
#include "channel.h"
#include "cleanup.h"
#include "cli.h"
#include "json.h"
#include "migrate.h"
#include "net.h"
#include "supervisor/internal.h"
#include "test.h"

#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_json_reader(void)
{
	/* The nested "generation" comes first: a lookup must not find it. */
	struct json_object *o = cryo_json_parse(
	    "{\"last\":{\"generation\":2},\"generation\":7,\"bell\":\"a\\u0007b\",\"ok\":true,"
	    "\"ms\":1.5,\"n\":null}");
	CHECK(o != NULL);
	CHECK(cryo_json_int(o, "generation", -1) == 7);
	CHECK(cryo_json_int(cryo_json_obj(o, "last"), "generation", -1) == 2);
	CHECK(cryo_json_str(o, "bell") && !strcmp(cryo_json_str(o, "bell"), "a\ab"));
	CHECK(cryo_json_bool(o, "ok"));
	CHECK(!cryo_json_bool(o, "bell"));
	CHECK(cryo_json_double(o, "ms", 0) == 1.5);
	CHECK(cryo_json_double(o, "generation", 0) == 7.0);
	CHECK(cryo_json_int(o, "missing", -3) == -3);
	CHECK(cryo_json_int(o, "bell", -3) == -3); /* a string is not a number */
	CHECK(cryo_json_str(o, "n") == NULL);
	CHECK(cryo_json_obj(o, "generation") == NULL);
	json_object_put(o);
	CHECK(cryo_json_parse("[1,2]") == NULL);
	CHECK(cryo_json_parse("{\"a\":") == NULL);
	CHECK(cryo_json_parse("") == NULL);
}

static void test_json_writer(void)
{
	struct json_object *o = json_object_new_object();
	cryo_json_add(o, "path", json_object_new_string("/var/lib/cryo/\"x\"\n"));
	cryo_json_add(o, "ms", cryo_json_ms(12.345));
	CHECK(!strcmp(cryo_json_text(o), "{\"path\":\"/var/lib/cryo/\\\"x\\\"\\n\",\"ms\":12.3}"));
	json_object_put(o);
}

/* What the supervisor publishes reads back as it was, whatever its name and
 * state hold. */
static void test_status_round_trip(void)
{
	struct supervisor_config cfg = {.name = "we\"b\x07"};
	struct supervisor s = {
	    .cfg = &cfg,
	    .state = "running",
	    .restarts_total = 4,
	    .current_generation = 12,
	    .have_last = true,
	    .last = {.generation = 11,
	             .time_ns = 1700000000ULL * 1000000000ULL,
	             .size = 1 << 20,
	             .frozen_us = 1234,
	             .trigger = TRIGGER_TIMER},
	};
	snprintf(s.moved_to, sizeof(s.moved_to), "10.0.0.2:7070");
	struct json_object *o = status_json(&s);
	struct json_object *back = cryo_json_parse(cryo_json_text(o));
	json_object_put(o);
	CHECK(back != NULL);
	CHECK(cryo_json_bool(back, "ok"));
	CHECK(cryo_json_str(back, "name") && !strcmp(cryo_json_str(back, "name"), cfg.name));
	CHECK(cryo_json_str(back, "state") && !strcmp(cryo_json_str(back, "state"), "running"));
	CHECK(cryo_json_int(back, "supervisor_pid", 0) == getpid());
	CHECK(cryo_json_int(back, "pid", -1) == 0); /* not running */
	CHECK(cryo_json_int(back, "restarts", 0) == 4);
	CHECK(cryo_json_int(back, "generation", 0) == 12);
	struct json_object *last = cryo_json_obj(back, "last_checkpoint");
	CHECK(last != NULL);
	CHECK(cryo_json_int(last, "generation", 0) == 11);
	CHECK(cryo_json_int(last, "time", 0) == 1700000000);
	CHECK(cryo_json_int(last, "size", 0) == 1 << 20);
	CHECK(cryo_json_int(last, "frozen_us", 0) == 1234);
	CHECK(cryo_json_str(last, "trigger") && !strcmp(cryo_json_str(last, "trigger"), "timer"));
	CHECK(cryo_json_str(back, "moved_to") &&
	      !strcmp(cryo_json_str(back, "moved_to"), "10.0.0.2:7070"));
	json_object_put(back);

	s.have_last = false;
	o = status_json(&s);
	back = cryo_json_parse(cryo_json_text(o));
	json_object_put(o);
	CHECK(back && cryo_json_obj(back, "last_checkpoint") == NULL);
	json_object_put(back);
}

static void test_cidr(void)
{
	struct net_ip ip;
	unsigned prefix = 0;
	char buf[INET6_ADDRSTRLEN];
	CHECK(net_parse_cidr("10.0.0.5/24", &ip, &prefix) == 0 && ip.family == AF_INET &&
	      prefix == 24);
	CHECK(!strcmp(net_format_ip(&ip, buf, sizeof(buf)), "10.0.0.5"));
	CHECK(net_parse_cidr("10.0.0.5", &ip, &prefix) == 0 && prefix == 32);
	CHECK(net_parse_cidr("fd00::5/64", &ip, &prefix) == 0 && ip.family == AF_INET6 &&
	      prefix == 64);
	CHECK(!strcmp(net_format_ip(&ip, buf, sizeof(buf)), "fd00::5"));
	CHECK(net_parse_cidr("fd00::5", &ip, &prefix) == 0 && prefix == 128);
	CHECK(net_parse_cidr("10.0.0.5/33", &ip, &prefix) < 0);
	CHECK(net_parse_cidr("fd00::5/129", &ip, &prefix) < 0);
	CHECK(net_parse_cidr("10.0.0.5/", &ip, &prefix) < 0);
	CHECK(net_parse_cidr("10.0.0.5/2x", &ip, &prefix) < 0);
	CHECK(net_parse_cidr("web/24", &ip, &prefix) < 0);
	CHECK(net_parse_cidr("", &ip, &prefix) < 0);
	CHECK(net_parse_ip("10.0.0.256", &ip) < 0);
}

/* A neighbour entry as a migration's manifest carries it. */
static void test_neigh_text(void)
{
	struct net_neigh e = {0}, back = {0};
	char buf[96], ip[INET6_ADDRSTRLEN];
	CHECK(net_neigh_parse("10.77.0.3 0a:1b:2c:3d:4e:5f", &e) == 0 && e.ip.family == AF_INET);
	CHECK(!strcmp(net_format_ip(&e.ip, ip, sizeof(ip)), "10.77.0.3"));
	CHECK(e.lladdr[0] == 0x0a && e.lladdr[5] == 0x5f);
	net_neigh_format(&e, buf, sizeof(buf));
	CHECK(!strcmp(buf, "10.77.0.3 0a:1b:2c:3d:4e:5f"));
	CHECK(net_neigh_parse("fe80::1 fe:00:00:00:00:01", &e) == 0 && e.ip.family == AF_INET6);
	net_neigh_format(&e, buf, sizeof(buf));
	CHECK(net_neigh_parse(buf, &back) == 0 && back.ip.family == AF_INET6 &&
	      !memcmp(&back.ip.v6, &e.ip.v6, 16) && !memcmp(back.lladdr, e.lladdr, 6));
	CHECK(net_neigh_parse("10.77.0.3", &e) < 0);
	CHECK(net_neigh_parse("10.77.0.3 0a:1b:2c:3d:4e", &e) < 0);
	CHECK(net_neigh_parse("10.77.0.3 0a:1b:2c:3d:4e:5f extra", &e) < 0);
	CHECK(net_neigh_parse("10.77.0.300 0a:1b:2c:3d:4e:5f", &e) < 0);
	CHECK(net_neigh_parse("web 0a:1b:2c:3d:4e:5f", &e) < 0);
}

static int parse(bool restore, struct run_options *o, ...)
{
	char *argv[16] = {restore ? "restore" : "run"};
	int argc = 1;
	va_list ap;
	va_start(ap, o);
	for (char *a; argc < 15 && (a = va_arg(ap, char *));)
		argv[argc++] = a;
	va_end(ap);
	return run_parse_options(argc, argv, restore, o);
}

static void test_run_options(void)
{
	struct run_options o;
	CHECK(parse(false, &o, "--name", "web", "--every", "30s", "--keep", "5", "--no-delta", "--",
	            "prog", "-x", NULL) == 0);
	CHECK(o.name && !strcmp(o.name, "web") && o.cfg.every_ns == 30000000000ULL &&
	      o.cfg.keep == 5 && !o.cfg.incremental && o.cfg.lazy_restore);
	CHECK(optind == 9); /* PROG */
	/* Each verb has its own table: run takes no --generation, restore no
	 * --name or --fresh. */
	CHECK(parse(false, &o, "--generation", "3", "--", "prog", NULL) == -EINVAL);
	CHECK(parse(true, &o, "--generation", "3", NULL) == 0 && o.cfg.resume_generation == 3);
	CHECK(parse(true, &o, "--name", "web", NULL) == -EINVAL);
	CHECK(parse(true, &o, "--fresh", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--fresh", "--", "prog", NULL) == 0 && o.fresh);
	CHECK(parse(true, &o, "--every", "1s", "--no-lazy-restore", NULL) == 0 &&
	      !o.cfg.lazy_restore);
	CHECK(parse(false, &o, "--help", NULL) == 0 && o.help);
	CHECK(parse(false, &o, "--restart", "sometimes", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--every", "5ms", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--zstd-level", "20", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--keep", "0", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--dump-via", "disk", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--", "prog", NULL) == 0 &&
	      o.cfg.files_max == SUPERVISOR_FILES_MAX_DEFAULT);
	CHECK(parse(true, &o, "--files-max", "1G", NULL) == 0 && o.cfg.files_max == 1ULL << 30);
	CHECK(parse(false, &o, "--files-max", "0", "--", "prog", NULL) == 0 &&
	      o.cfg.files_max == 0);
	CHECK(parse(false, &o, "--files-max", "lots", NULL) == -EINVAL);
	/* --files-copy: snapshot by default; --files-skip: absolute paths
	 * without '.', '..', empty parts or a symbolic link on the way. */
	CHECK(parse(false, &o, "--", "prog", NULL) == 0 && o.cfg.files == FILES_SNAPSHOT &&
	      o.cfg.n_files_skip == 0);
	CHECK(parse(true, &o, "--files-copy", "none", NULL) == 0 && o.cfg.files == FILES_NONE);
	CHECK(parse(false, &o, "--files-copy", "none", "--files-copy", "snapshot", "--", "prog",
	            NULL) == 0 &&
	      o.cfg.files == FILES_SNAPSHOT);
	CHECK(parse(false, &o, "--files-copy", "check", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--files-skip", "/srv/cache/", "--files-skip", "/no/such/dir", "--",
	            "prog", NULL) == 0 &&
	      o.cfg.n_files_skip == 2 && !strcmp(o.cfg.files_skip[0], "/srv/cache/") &&
	      !strcmp(o.cfg.files_skip[1], "/no/such/dir"));
	CHECK(parse(true, &o, "--files-skip", "/", NULL) == 0 && o.cfg.n_files_skip == 1);
	CHECK(parse(false, &o, "--files-skip", "cache", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--files-skip", "/srv/../etc", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--files-skip", "/srv//cache", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--files-skip", "/srv/./cache", NULL) == -EINVAL);
	{
		char dir[] = "/tmp/cryo-test-skip-XXXXXX", link[64];
		CHECK(mkdtemp(dir) != NULL);
		snprintf(link, sizeof(link), "%s/link", dir);
		CHECK(symlink(dir, link) == 0);
		CHECK(parse(false, &o, "--files-skip", link, NULL) == -EINVAL);
		CHECK(parse(false, &o, "--files-skip", dir, "--", "prog", NULL) == 0);
		unlink(link);
		rmdir(dir);
	}
	{
		const char *args[2 * SUPERVISOR_FILES_SKIP_MAX + 4] = {0};
		size_t k = 0;
		args[k++] = "run";
		for (int i = 0; i <= SUPERVISOR_FILES_SKIP_MAX; i++) {
			args[k++] = "--files-skip";
			args[k++] = "/srv";
		}
		CHECK(run_parse_options((int)k, (char **)args, false, &o) == -EINVAL);
		CHECK(run_parse_options((int)k - 2, (char **)args, false, &o) == 0 &&
		      o.cfg.n_files_skip == SUPERVISOR_FILES_SKIP_MAX);
	}
	/* --store: its address checked, the credentials from the environment. */
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1", 1);
	setenv("AWS_ACCESS_KEY_ID", "a:b", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
	CHECK(parse(false, &o, "--store", "s3://bkt/some/where/", "--", "prog", NULL) == 0 &&
	      o.cfg.store == &o.store && !strcmp(o.store.bucket, "bkt") &&
	      !strcmp(o.store.prefix, "some/where") && o.store.s3.request_ms == 10000);
	CHECK(parse(false, &o, "--store", "s3://bkt", "--", "prog", NULL) == 0 &&
	      !strcmp(o.store.prefix, ""));
	CHECK(parse(false, &o, "--store", "http://bkt/x", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://b1/x", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://Bkt/x", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://bkt/a//b", NULL) == -EINVAL);
	/* --lease: with --store only; --standby (run only) and --lease-ttl
	 * with --lease only; --store-sync with --store. */
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--lease", "etcd://127.0.0.1:2379",
	            "--lease-ttl", "3", "--standby", "--store-sync", "--", "prog", NULL) == 0 &&
	      o.cfg.lease == &o.lease && o.lease.ttl_s == 3 && o.lease.standby &&
	      o.cfg.store_sync && !strcmp(o.lease.endpoint, "http://127.0.0.1:2379"));
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--lease", "etcd://h:2379", "--", "prog",
	            NULL) == 0 &&
	      o.lease.ttl_s == LEASE_TTL_DEFAULT && !o.lease.standby && !o.cfg.store_sync);
	CHECK(parse(true, &o, "--store", "s3://bkt/x", "--lease", "etcd://h:2379", "--standby",
	            NULL) == -EINVAL);
	CHECK(parse(false, &o, "--lease", "etcd://h:2379", "--", "prog", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--standby", "--", "prog", NULL) ==
	      -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--lease-ttl", "5", "--", "prog", NULL) ==
	      -EINVAL);
	CHECK(parse(false, &o, "--store-sync", "--", "prog", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--lease", "etcd://h:2379", "--lease-ttl",
	            "1", "--", "prog", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--store", "s3://bkt/x", "--lease", "http://h:2379", NULL) ==
	      -EINVAL);
	{
		struct lease_config lc = {0};
		struct store_config sc = {0};
		char key[256];
		CHECK(lease_parse_url("etcd://[::1]:2379", &lc, NULL) == 0 &&
		      !strcmp(lc.endpoint, "http://[::1]:2379"));
		CHECK(lease_parse_url("etcd://h", &lc, NULL) == -EINVAL);
		CHECK(lease_parse_url("etcd://h:0", &lc, NULL) == -EINVAL);
		CHECK(lease_parse_url("etcd://h:2379/x", &lc, NULL) == -EINVAL);
		CHECK(lease_parse_url("etcd://:2379", &lc, NULL) == -EINVAL);
		CHECK(store_parse_url("s3://bkt/p/q", &sc, NULL) == 0 &&
		      lease_key(&sc, "web", "owner", key, sizeof(key)) == 0 &&
		      !strcmp(key, "cryo/bkt/p/q/web/owner"));
		CHECK(store_parse_url("s3://bkt", &sc, NULL) == 0 &&
		      lease_key(&sc, "web", "published", key, sizeof(key)) == 0 &&
		      !strcmp(key, "cryo/bkt/web/published"));
	}
	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK(parse(false, &o, "--store", "s3://bkt/x", NULL) == -EINVAL);
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_ACCESS_KEY_ID");
	{
		struct store_config sc = {0};
		char key[256];
		CHECK(store_parse_url("s3://bkt/p/q", &sc, NULL) == 0 &&
		      store_key(&sc, "web", 42, key, sizeof(key)) == 0 &&
		      !strcmp(key, "p/q/web/gen-000000000042.cryo"));
		CHECK(store_key_generation(key) == 42);
		CHECK(store_key_generation("p/q/web/gen-000000000042.cryo.tmp") == 0);
		CHECK(store_key_generation("p/q/web/other") == 0);
		CHECK(store_parse_url("s3://bkt", &sc, NULL) == 0 &&
		      store_key(&sc, "web", 7, key, sizeof(key)) == 0 &&
		      !strcmp(key, "web/gen-000000000007.cryo"));
	}
	CHECK(parse(false, &o, "--bridge", "br0", NULL) == -EINVAL); /* without --net */
	CHECK(parse(false, &o, "--net", "10.0.0.5/24", "--gateway", "fd00::1", NULL) == -EINVAL);
	CHECK(parse(false, &o, "--net", "10.0.0.5/24", "--gateway", "10.0.0.1", "--bridge", "br0",
	            NULL) == 0 &&
	      o.cfg.net == &o.net && !strcmp(o.net.bridge, "br0"));
}

/* ---- the migration channel ---- */

struct opener {
	struct channel c;
	int fd;
	const uint8_t *key;
	int r;
	struct cryo_error err;
};

static void *open_server(void *arg)
{
	struct opener *op = arg;
	op->r = channel_open(&op->c, op->fd, op->key, false, 5000, &op->err);
	return NULL;
}

/* Opens both ends of a channel over the socket pair sp, with a key each. */
static int open_pair(int sp[2], const uint8_t *ckey, const uint8_t *skey, struct channel *client,
                     struct opener *server)
{
	*server = (struct opener){.fd = sp[1], .key = skey};
	pthread_t t;
	if (pthread_create(&t, NULL, open_server, server) != 0)
		return -EAGAIN;
	struct cryo_error err = {{0}};
	int r = channel_open(client, sp[0], ckey, true, 5000, &err);
	pthread_join(t, NULL);
	return r < 0 ? r : server->r;
}

struct reader {
	struct channel *c;
	uint8_t type;
	size_t len;
	bool same;
	int r;
	const uint8_t *want;
};

static void *read_one(void *arg)
{
	struct reader *rd = arg;
	const uint8_t *data;
	struct cryo_error err = {{0}};
	rd->r = channel_recv(rd->c, &rd->type, &data, &rd->len, 5000, &err);
	rd->same = rd->r == 0 && (rd->len == 0 || !memcmp(data, rd->want, rd->len));
	return NULL;
}

static void close_pair(int sp[2], struct channel *c, struct opener *s)
{
	channel_close(c);
	channel_close(&s->c);
	close(sp[0]);
	close(sp[1]);
}

static void test_channel(void)
{
	static const uint8_t key[CHANNEL_KEY_BYTES] = {1, 2, 3}, other[CHANNEL_KEY_BYTES] = {9};
	static uint8_t big[CHANNEL_MAX_MSG + 1];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + (i >> 12));
	struct cryo_error err = {{0}};
	int sp[2];
	struct channel c;
	struct opener s;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(open_pair(sp, key, key, &c, &s) == 0);

	/* Messages of every size come through whole, typed and in order (a
	 * reader runs meanwhile: the biggest do not fit the socket's buffer). */
	static const size_t sizes[] = {0, 1, 4095, 65537, CHANNEL_MAX_MSG};
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct reader rd = {.c = &s.c, .want = big};
		pthread_t t;
		CHECK(pthread_create(&t, NULL, read_one, &rd) == 0);
		CHECK(channel_send(&c, (uint8_t)(MSG_DATA + i % 2), big, sizes[i], &err) == 0);
		pthread_join(t, NULL);
		CHECK(rd.r == 0 && rd.type == MSG_DATA + i % 2 && rd.len == sizes[i] && rd.same);
	}
	CHECK(channel_send(&c, MSG_DATA, big, CHANNEL_MAX_MSG + 1, &err) == -EMSGSIZE &&
	      !strcmp(err.msg, "message too long"));

	/* A byte altered on the way fails to open: the message is read raw off
	 * the wire and handed to the receiver altered, through another pair. */
	CHECK(channel_send(&c, MSG_DATA, "hello", 5, &err) == 0);
	uint8_t wire[256];
	ssize_t n = read(sp[1], wire, sizeof(wire));
	CHECK(n > 10);
	if (n > 10) {
		wire[n - 3] ^= 0x20;
		int back[2];
		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, back) == 0);
		CHECK(write(back[0], wire, (size_t)n) == n);
		s.c.fd = back[1];
		uint8_t type;
		const uint8_t *data;
		size_t len;
		CHECK(channel_recv(&s.c, &type, &data, &len, 1000, &err) == -EBADMSG);
		/* The peer went away mid-message. */
		close(back[0]);
		CHECK(channel_recv(&s.c, &type, &data, &len, 1000, &err) < 0);
		close(back[1]);
		s.c.fd = sp[1];
	}
	close_pair(sp, &c, &s);

	/* A wrong key: each end refuses the other's first message. */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(open_pair(sp, key, other, &c, &s) == -EACCES);
	CHECK(s.r == -EACCES);
	close_pair(sp, &c, &s);

	/* A peer that is not cryo. */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	static const char http[] = "GET / HTTP/1.1\r\nHost: cryo.example\r\nAccept: */*\r\n\r\n";
	CHECK(write(sp[1], http, sizeof(http) - 1) == (ssize_t)sizeof(http) - 1);
	CHECK(channel_open(&c, sp[0], key, true, 1000, &err) == -EPROTO &&
	      !strcmp(err.msg, "the peer does not speak cryo's migration protocol"));
	channel_close(&c);
	close(sp[0]);
	close(sp[1]);
}

/* A peer that sends the magic, then one byte every 100 ms for 4 s. */
static void *trickle(void *arg)
{
	int fd = *(int *)arg;
	static const char start[] = "CRYOMIG1";
	if (send(fd, start, 8, MSG_NOSIGNAL) != 8)
		return NULL;
	for (int i = 0; i < 40; i++) {
		if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(100000);
	}
	shutdown(fd, SHUT_WR);
	return NULL;
}

/* The handshake has one deadline for the whole of it: a peer that trickles
 * its bytes is cut off when it passes, not when it goes quiet. */
static void test_channel_deadline(void)
{
	static const uint8_t key[CHANNEL_KEY_BYTES] = {1, 2, 3};
	int sp[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, trickle, &sp[1]) == 0);
	struct channel c;
	struct cryo_error err = {{0}};
	CHECK(channel_open(&c, sp[0], key, false, 1000, &err) == -ETIMEDOUT &&
	      !strcmp(err.msg, "the peer did not complete the handshake within 1.0 s"));
	channel_close(&c);
	close(sp[0]);
	pthread_join(t, NULL);
	close(sp[1]);
}

/* An offer as cryo migrate makes it, with key set to value (NULL: left
 * out), checked against lim; err gets the reason. */
static int check_offer(const struct migrate_limits *lim, const char *key, const char *value,
                       struct supervisor_config *cfg, struct net_config *net,
                       struct cryo_error *err)
{
	static const char *const base[][2] = {
	    {"name", "web"},
	    {"arg", "/usr/bin/server"},
	    {"arg", "--port"},
	    {"cwd", "/srv"},
	    {"net.addr", "10.0.0.5/24"},
	    {"net.gateway", "10.0.0.1"},
	    {"net.bridge", "br0"},
	    {"set.policy", "1"},
	    {"set.max_restarts", "5"},
	    {"set.keep", "3"},
	    {"set.every_ns", "30000000000"},
	    {"set.zstd_level", "3"},
	    {"set.incremental", "1"},
	    {"set.lazy_restore", "0"},
	    {"set.dump_via_memory", "1"},
	    {"raw_estimate", "1048576"},
	};
	_cleanup_manifest_ struct manifest *m = manifest_new();
	bool replaced = false;
	for (size_t i = 0; m && i < ARRAY_SIZE(base); i++) {
		if (key && !strcmp(base[i][0], key)) {
			if (value && !replaced)
				manifest_add(m, key, value);
			replaced = true;
			continue;
		}
		manifest_add(m, base[i][0], base[i][1]);
	}
	if (key && !replaced && value)
		manifest_add(m, key, value);
	*cfg = (struct supervisor_config){0};
	*err = (struct cryo_error){{0}};
	int r = m ? migrate_check_offer(m, lim, cfg, net, err) : -ENOMEM;
	/* What points into the offer goes with it. */
	static char name[80];
	snprintf(name, sizeof(name), "%s", cfg->name ? cfg->name : "");
	cfg->name = name;
	free(cfg->argv);
	cfg->argv = NULL;
	return r;
}

/* A target checks every field it obeys, and names the one it refuses. */
static void test_offer_checks(void)
{
	char *bridges[] = {"br0", "lan1"}, *names[] = {"db", "web"};
	const struct migrate_limits lim = {.bridges = bridges, .n_bridges = 2};
	struct supervisor_config cfg;
	struct net_config net;
	struct cryo_error err;

	CHECK(check_offer(&lim, NULL, NULL, &cfg, &net, &err) == 0);
	CHECK(check_offer(&lim, "held", "268435456 /srv/data/db.sqlite-wal", &cfg, &net, &err) ==
	      0);
	CHECK(!strcmp(cfg.name, "web") && cfg.policy == RESTART_ALWAYS && cfg.keep == 3 &&
	      cfg.every_ns == UINT64_C(30000000000) && cfg.zstd_level == 3 && cfg.incremental &&
	      cfg.files_max == SUPERVISOR_FILES_MAX_DEFAULT && !cfg.lazy_restore &&
	      cfg.dump_via_memory && cfg.net == &net && !strcmp(net.bridge, "br0") &&
	      net.prefix == 24 && cfg.files == FILES_SNAPSHOT && cfg.n_files_skip == 0);
	/* The file policy travels: --files-copy none, --files-skip paths. */
	CHECK(check_offer(&lim, "set.files", "1", &cfg, &net, &err) == 0 &&
	      cfg.files == FILES_NONE);
	CHECK(check_offer(&lim, "set.files_skip", "/srv/cache/", &cfg, &net, &err) == 0 &&
	      cfg.n_files_skip == 1);
	CHECK(check_offer(&lim, "set.files_skip", "/", &cfg, &net, &err) == 0 &&
	      cfg.n_files_skip == 1);
	/* Without an address the workload is not given one. */
	CHECK(check_offer(&lim, "net.addr", NULL, &cfg, &net, &err) == -EPROTO &&
	      strstr(err.msg, "net.gateway but no net.addr"));

	static const struct {
		const char *key, *value, *reason;
	} bad[] = {
	    {"name", "../etc", "the offer has no valid workload name"},
	    {"arg", "", "the offer's arg names no program"},
	    {"cwd", "srv", "the offer's cwd 'srv' is not an absolute path"},
	    {"net.addr", "10.0.0.300/24", "the offer's net.addr '10.0.0.300/24' is invalid"},
	    {"net.gateway", "fd00::1", "the offer's net.gateway 'fd00::1' is invalid"},
	    {"net.bridge", "mgmt0",
	     "the offer's net.bridge 'mgmt0' is not one this target lets "
	     "workloads attach to (it allows: br0, lan1;"},
	    {"net.bridge", "a-name-longer-than-ifnamsiz", "is no interface name"},
	    {"set.policy", "3",
	     "the offer's set.policy '3' is out of range: this target takes 0 "
	     "to 2"},
	    {"set.max_restarts", "1000001", "set.max_restarts '1000001' is out of range"},
	    {"set.keep", "0", "set.keep '0' is out of range: this target takes 1 to"},
	    {"set.every_ns", "5", "set.every_ns '5' is out of range: this target takes 0 (none)"},
	    {"set.zstd_level", "20",
	     "set.zstd_level '20' is out of range: this target takes 1 "
	     "to 19"},
	    {"set.zstd_level", "-1", "set.zstd_level '-1' is out of range"},
	    {"set.incremental", "2", "set.incremental '2' is out of range"},
	    {"set.lazy_restore", "yes", "set.lazy_restore 'yes' is out of range"},
	    {"set.dump_via_memory", "7", "set.dump_via_memory '7' is out of range"},
	    {"set.files", "2", "set.files '2' is out of range: this target takes 0 to 1"},
	    {"set.files_skip", "srv", "set.files_skip 'srv' is no plain absolute path"},
	    {"set.files_skip", "/srv/../etc", "set.files_skip '/srv/../etc' is no plain"},
	    {"set.files_skip", "", "set.files_skip '' is no plain absolute path"},
	    {"precopy", "2", "precopy '2' is out of range"},
	    {"raw_estimate", "18446744073709551615",
	     "raw_estimate '18446744073709551615' is out "
	     "of range"},
	    /* The files that travel with it: plain absolute paths only, no
	     * more than its own --files-max. */
	    {"held", "10 /srv/../etc/shadow", "the offer's held '/srv/../etc/shadow' is no plain"},
	    {"held", "10 srv/db", "the offer's held 'srv/db' is no plain absolute path"},
	    {"held", "10 /srv//db", "the offer's held '/srv//db' is no plain"},
	    {"held", "10 /srv/./db", "the offer's held '/srv/./db' is no plain"},
	    {"held", "10 /srv/db/", "the offer's held '/srv/db/' is no plain"},
	    {"held", "ten /srv/db", "the offer's held lines are not 'SIZE PATH'"},
	    {"held", "/srv/db", "the offer's held lines are not 'SIZE PATH'"},
	    {"held", "268435457 /srv/db",
	     "the offer's held files take more than its set.files_max"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = check_offer(&lim, bad[i].key, bad[i].value, &cfg, &net, &err);
		bool refused = r < 0 && strstr(err.msg, bad[i].reason);
		if (!refused)
			printf("# %s=%s: %d '%s'\n", bad[i].key, bad[i].value, r, err.msg);
		CHECK(refused);
	}

	/* No bridge allowed: a bridged workload is refused, a routed one not. */
	const struct migrate_limits none = {0};
	CHECK(check_offer(&none, NULL, NULL, &cfg, &net, &err) == -EPERM &&
	      strstr(err.msg, "(it allows: none; start cryo serve with --bridge br0 to allow it)"));
	CHECK(check_offer(&none, "net.bridge", NULL, &cfg, &net, &err) == 0 && cfg.net == &net &&
	      !net.bridge[0]);

	/* --allow: only those names. */
	const struct migrate_limits only = {
	    .bridges = bridges, .n_bridges = 2, .names = names, .n_names = 2};
	CHECK(check_offer(&only, NULL, NULL, &cfg, &net, &err) == 0);
	CHECK(check_offer(&only, "name", "cache", &cfg, &net, &err) == -EPERM &&
	      !strcmp(err.msg, "this target does not take a workload named 'cache' (cryo serve "
	                       "--allow)"));

	/* --files-under: the files it holds only under those directories. */
	char *dirs[] = {"/srv/data", "/var/lib/app"};
	const struct migrate_limits under = {
	    .bridges = bridges, .n_bridges = 2, .file_dirs = dirs, .n_file_dirs = 2};
	CHECK(check_offer(&under, NULL, NULL, &cfg, &net, &err) == 0);
	CHECK(check_offer(&under, "held", "10 /var/lib/app/x/state", &cfg, &net, &err) == 0);
	CHECK(check_offer(&under, "held", "10 /srv/database", &cfg, &net, &err) == -EPERM &&
	      !strcmp(err.msg, "the program holds '/srv/database' open for writing, outside the "
	                       "directories this target writes such files under (it allows: "
	                       "/srv/data, /var/lib/app; cryo serve --files-under DIR)"));
	CHECK(check_offer(&under, "held", "10 /srv/data", &cfg, &net, &err) == -EPERM);
	char *root[] = {"/"};
	const struct migrate_limits anywhere = {
	    .bridges = bridges, .n_bridges = 2, .file_dirs = root, .n_file_dirs = 1};
	CHECK(check_offer(&anywhere, "held", "10 /srv/database", &cfg, &net, &err) == 0);

	/* The room for the image: the memory and a margin, twice with a
	 * pre-copy, never more than the largest estimate taken. */
	_cleanup_manifest_ struct manifest *m = manifest_new();
	CHECK(m && manifest_add(m, "raw_estimate", "4194304") == 0);
	CHECK(migrate_stream_cap(m) == 4194304 + 1048576 + (UINT64_C(16) << 20));
	CHECK(manifest_add(m, "precopy", "1") == 0);
	CHECK(migrate_stream_cap(m) == 2 * (4194304 + 1048576 + (UINT64_C(16) << 20)));
	/* The files it holds go once, with a quarter more. */
	CHECK(manifest_add(m, "held", "800 /srv/db") == 0 &&
	      manifest_add(m, "held", "1200 /srv/db-wal") == 0);
	CHECK(migrate_held_bytes(m) == 2000);
	CHECK(migrate_stream_cap(m) == 2 * (4194304 + 1048576 + (UINT64_C(16) << 20)) + 2500);
}

/* Where a migration may put back a file the program holds: a plain
 * absolute path, over a regular file or none, in a directory that exists. */
static void test_held_paths(void)
{
	CHECK(migrate_held_path_plain("/") == -EINVAL);
	CHECK(migrate_held_path_plain("/a") == 0 && migrate_held_path_plain("/a/b.db-wal") == 0);
	CHECK(migrate_held_path_plain("/a/..b/c..") == 0);
	CHECK(migrate_held_path_plain("/a/../b") == -EINVAL);
	CHECK(migrate_held_path_plain("/..") == -EINVAL);
	CHECK(migrate_held_path_plain("a/b") == -EINVAL);

	char dir[] = "/tmp/cryo-test-held-XXXXXX", path[PATH_MAX];
	CHECK(mkdtemp(dir) != NULL);
	struct cryo_error err = {{0}};
	snprintf(path, sizeof(path), "%s/db", dir);
	CHECK(migrate_held_path_check(path, &err) == 0); /* not there yet */
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && migrate_held_path_check(path, &err) == 0);
	snprintf(path, sizeof(path), "%s/link", dir);
	CHECK(symlink("/etc/passwd", path) == 0);
	CHECK(migrate_held_path_check(path, &err) == -EEXIST &&
	      strstr(err.msg, "is a symbolic link here, not a regular file"));
	snprintf(path, sizeof(path), "%s/sub", dir);
	CHECK(mkdir(path, 0700) == 0);
	CHECK(migrate_held_path_check(path, &err) == -EEXIST &&
	      strstr(err.msg, "is something else here, not a regular file"));
	snprintf(path, sizeof(path), "%s/none/db", dir);
	CHECK(migrate_held_path_check(path, &err) == -ENOENT &&
	      strstr(err.msg, "does not exist here (create it)"));
	snprintf(path, sizeof(path), "%s/sub/../db", dir);
	CHECK(migrate_held_path_check(path, &err) == -EPERM &&
	      strstr(err.msg, "which is no plain absolute path"));
	util_rm_rf(dir);
}

static bool file_is(const char *path, const char *want)
{
	char buf[256];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
	return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

/* files.c: a checkpoint copies the files a process holds open for writing
 * without O_APPEND (read-only and append-only ones are left to CRIU), whole
 * and once per inode; a restore puts them back in place (same inode, size,
 * content), setting aside an SQLite journal written after the checkpoint;
 * past the limit, one line names the file and --files-max. */
static void test_held_files(void)
{
	char dir[] = "/tmp/cryo-test-files.XXXXXX", images[PATH_MAX], db[PATH_MAX / 2],
	     logf[PATH_MAX], ro[PATH_MAX], journal[PATH_MAX];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(images, sizeof(images), "%s/images", dir);
	snprintf(db, sizeof(db), "%s/data.db", dir);
	snprintf(logf, sizeof(logf), "%s/log", dir);
	snprintf(ro, sizeof(ro), "%s/ro", dir);
	snprintf(journal, sizeof(journal), "%s-journal", db);
	CHECK(mkdir(images, 0700) == 0);
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t child = fork();
	if (child == 0) {
		int a = open(db, O_RDWR | O_CREAT, 0640);
		int b = open(db, O_WRONLY); /* the same inode again */
		int c = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int d = open(ro, O_RDONLY | O_CREAT, 0600);
		if (a < 0 || b < 0 || c < 0 || d < 0 || write(a, "frozen state", 12) != 12 ||
		    write(c, "log", 3) != 3 || write(p[1], "!", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char c;
	CHECK(child > 0 && read(p[0], &c, 1) == 1);
	struct stat before, after;
	CHECK(stat(db, &before) == 0);

	struct cryo_error err = {{0}};
	struct files_capture fc = {.root = child, .images = images, .max = 1 << 20};
	CHECK(files_capture(&fc, &err) == 0);
	CHECK(fc.n == 1 && fc.total == 12 && !strcmp(fc.files[0].path, db));
	char copy[PATH_MAX + 32];
	snprintf(copy, sizeof(copy), "%s/file-0.data", images);
	CHECK(file_is(copy, "frozen state"));
	_cleanup_manifest_ struct manifest *m = manifest_new();
	CHECK(m && files_describe(&fc, m) == 0);
	files_capture_clear(&fc);

	/* After the checkpoint the file changes size and mode, and a journal
	 * appears beside it. */
	int fd = open(db, O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, " and more", 9) == 9);
	close(fd);
	CHECK(chmod(db, 0600) == 0);
	fd = open(journal, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0);
	close(fd);
	CHECK(files_restore(m, images, &err) == 0);
	CHECK(file_is(db, "frozen state"));
	CHECK(stat(db, &after) == 0 && after.st_ino == before.st_ino &&
	      (after.st_mode & 07777) == 0640);
	char stale[PATH_MAX + 32];
	snprintf(stale, sizeof(stale), "%s.cryo-stale", journal);
	CHECK(access(journal, F_OK) < 0 && access(stale, F_OK) == 0);

	/* Past the limit: one line naming the file and the option. */
	char images2[PATH_MAX + 8];
	snprintf(images2, sizeof(images2), "%s2", images);
	CHECK(mkdir(images2, 0700) == 0);
	fc = (struct files_capture){.root = child, .images = images2, .max = 11};
	CHECK(files_capture(&fc, &err) == -EFBIG);
	CHECK(strstr(err.msg, db) && strstr(err.msg, "--files-max SIZE") && !strchr(err.msg, '\n'));
	files_capture_clear(&fc);

	/* A file deleted since is made again (the child's fds now hold the
	 * deleted one). */
	CHECK(unlink(db) == 0);
	CHECK(files_restore(m, images, &err) == 0 && file_is(db, "frozen state"));

	/* A copy of the wrong size is refused. */
	fd = open(copy, O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, "x", 1) == 1);
	close(fd);
	CHECK(files_restore(m, images, &err) == -EBADMSG && strstr(err.msg, db));

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(p[0]);
	close(p[1]);
	util_rm_rf(dir);
}

TEST_MAIN(test_json_reader, test_json_writer, test_status_round_trip, test_cidr, test_neigh_text,
          test_run_options, test_channel, test_channel_deadline, test_offer_checks, test_held_paths,
          test_held_files)
