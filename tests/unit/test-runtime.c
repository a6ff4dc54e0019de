/* The runtime's parts that need no CRIU: JSON through json-c, the status
 * JSON's round trip, CIDR parsing, cryo run's and cryo restore's option
 * tables, and the migration channel's framing. */
#include "channel.h"
#include "cleanup.h"
#include "cli.h"
#include "json.h"
#include "net.h"
#include "supervisor/internal.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
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

TEST_MAIN(test_json_reader, test_json_writer, test_status_round_trip, test_cidr, test_run_options,
          test_channel, test_channel_deadline)
