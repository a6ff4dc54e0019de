#include "channel.h"
#include "cleanup.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC        "CRYOMIG1"
#define NONCE_BYTES  32
#define ABYTES       crypto_secretstream_xchacha20poly1305_ABYTES
#define HEADER_BYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define HELLO_TEXT   "cryo migration v1"
/* How long one message may take to leave. */
#define CHANNEL_SEND_MS 120000

int channel_load_key(const char *path, uint8_t key[CHANNEL_KEY_BYTES], struct cryo_error *err)
{
	/* Whoever can write the key, or the link that names it, holds every
	 * target: it must be the caller's own file, and no link. */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && errno == ELOOP)
		return error_set(err, -ELOOP,
		                 "the key file '%s' is a symbolic link: give the path of the file "
		                 "itself",
		                 path);
	if (fd < 0)
		return error_set(err, -errno, "cannot read the key file '%s': %m", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return error_set(err, -EINVAL, "the key file '%s' is not a regular file", path);
	if (st.st_uid != geteuid())
		return error_set(err, -EPERM,
		                 "the key file '%s' is owned by UID %u, not by this user (UID %u): "
		                 "whoever owns it holds the key (run: chown %u '%s')",
		                 path, (unsigned)st.st_uid, (unsigned)geteuid(),
		                 (unsigned)geteuid(), path);
	if (st.st_mode & 077)
		return error_set(err, -EPERM,
		                 "the key file '%s' is open to others (mode %03o; run: chmod 600 "
		                 "'%s')",
		                 path, (unsigned)(st.st_mode & 0777), path);
	if (st.st_size < CHANNEL_KEY_BYTES || st.st_size > 65536)
		return error_set(
		    err, -EINVAL,
		    "the key file '%s' must hold 32 to 65536 bytes (make one with: head -c "
		    "32 /dev/urandom > '%s')",
		    path, path);
	if (sodium_init() < 0)
		return error_set(err, -EIO, "libsodium cannot start");
	uint8_t *content = sodium_malloc((size_t)st.st_size);
	if (!content)
		return error_set(err, -ENOMEM, "out of memory");
	int r = util_read_exact(fd, content, (size_t)st.st_size);
	if (r == 0)
		crypto_generichash(key, CHANNEL_KEY_BYTES, content, (size_t)st.st_size,
		                   (const uint8_t *)"cryo-key", 8);
	sodium_free(content);
	if (r < 0)
		return error_set(err, r, "cannot read the key file '%s': %s", path, strerror(-r));
	return 0;
}

/* A deadline on CLOCK_MONOTONIC, timeout_ms from now; < 0: none. */
static uint64_t deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : util_now_ns() + (uint64_t)timeout_ms * 1000000;
}

/* Waits until fd is ready for events; -ETIMEDOUT once the deadline passed. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	for (;;) {
		int ms = -1;
		if (deadline != UINT64_MAX) {
			uint64_t now = util_now_ns();
			if (now >= deadline)
				return -ETIMEDOUT;
			uint64_t left = (deadline - now + 999999) / 1000000;
			ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		int n = poll(&p, 1, ms);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* Reads exactly len bytes before the deadline, however the peer spreads
 * them. -ECONNRESET when the peer closed first. */
static int read_full(int fd, void *buf, size_t len, uint64_t deadline)
{
	uint8_t *p = buf;
	while (len) {
		int r = wait_fd(fd, POLLIN, deadline);
		if (r < 0)
			return r;
		ssize_t n = recv(fd, p, len, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int r = wait_fd(fd, POLLOUT, deadline);
				if (r < 0)
					return r;
				continue;
			}
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One direction's key: H(key, direction || client nonce || server nonce). */
static void derive(uint8_t out[CHANNEL_KEY_BYTES], const uint8_t key[CHANNEL_KEY_BYTES],
                   const char *dir, const uint8_t nc[NONCE_BYTES], const uint8_t ns[NONCE_BYTES])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, key, CHANNEL_KEY_BYTES, CHANNEL_KEY_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)dir, strlen(dir));
	crypto_generichash_update(&st, nc, NONCE_BYTES);
	crypto_generichash_update(&st, ns, NONCE_BYTES);
	crypto_generichash_final(&st, out, CHANNEL_KEY_BYTES);
}

static int send_until(struct channel *c, uint8_t type, const void *data, size_t len,
                      uint64_t deadline, struct cryo_error *err)
{
	if (len > CHANNEL_MAX_MSG)
		return error_set(err, -EMSGSIZE, "message too long");
	/* Plaintext: type byte and data; ciphertext: that plus the tag. */
	uint8_t *plain = c->plain;
	plain[0] = type;
	if (len)
		memcpy(plain + 1, data, len);
	unsigned long long clen;
	uint8_t hdr[4];
	crypto_secretstream_xchacha20poly1305_push(&c->tx, c->buf, &clen, plain, 1 + len, NULL, 0,
	                                           0);
	uint32_t n = (uint32_t)clen;
	hdr[0] = (uint8_t)n;
	hdr[1] = (uint8_t)(n >> 8);
	hdr[2] = (uint8_t)(n >> 16);
	hdr[3] = (uint8_t)(n >> 24);
	int r = write_full(c->fd, hdr, 4, deadline);
	if (r == 0)
		r = write_full(c->fd, c->buf, clen, deadline);
	if (r < 0)
		return error_set(err, r, "the peer %s",
		                 r == -ECONNRESET  ? "closed the connection"
		                 : r == -ETIMEDOUT ? "did not take a message in time"
		                                   : strerror(-r));
	return 0;
}

int channel_send(struct channel *c, uint8_t type, const void *data, size_t len,
                 struct cryo_error *err)
{
	return send_until(c, type, data, len, deadline_in(CHANNEL_SEND_MS), err);
}

static int recv_until(struct channel *c, uint8_t *type, const uint8_t **data, size_t *len,
                      uint64_t deadline, struct cryo_error *err)
{
	uint8_t hdr[4];
	int r = read_full(c->fd, hdr, 4, deadline);
	if (r < 0)
		return error_set(err, r, "the peer %s",
		                 r == -ETIMEDOUT    ? "did not answer in time"
		                 : r == -ECONNRESET ? "closed the connection"
		                                    : strerror(-r));
	uint32_t n =
	    hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	if (n < 1 + ABYTES || n > 1 + CHANNEL_MAX_MSG + ABYTES)
		return error_set(err, -EBADMSG,
		                 "the stream is damaged or forged (a message of %u bytes)", n);
	r = read_full(c->fd, c->buf, n, deadline);
	if (r < 0)
		return error_set(err, r, "the peer %s in the middle of a message",
		                 r == -ETIMEDOUT ? "stopped sending" : "closed the connection");
	unsigned long long plen;
	uint8_t tag;
	if (crypto_secretstream_xchacha20poly1305_pull(&c->rx, c->plain, &plen, &tag, c->buf, n,
	                                               NULL, 0) != 0)
		return error_set(
		    err, -EBADMSG,
		    "a message failed authentication: the stream was altered on the way, "
		    "or the keys differ");
	*type = c->plain[0];
	*data = c->plain + 1;
	*len = (size_t)plen - 1;
	return 0;
}

int channel_recv(struct channel *c, uint8_t *type, const uint8_t **data, size_t *len,
                 int timeout_ms, struct cryo_error *err)
{
	return recv_until(c, type, data, len, deadline_in(timeout_ms), err);
}

/* The reason for a handshake cut short by r. */
static int handshake_failed(struct cryo_error *err, int r, int timeout_ms)
{
	if (r == -ETIMEDOUT)
		return error_set(err, r, "the peer did not complete the handshake within %d.%d s",
		                 timeout_ms / 1000, timeout_ms % 1000 / 100);
	if (r == -ECONNRESET)
		return error_set(err, r, "the peer closed the connection during the handshake");
	return error_set(err, r, "the handshake failed: %s", strerror(-r));
}

int channel_open(struct channel *c, int fd, const uint8_t key[CHANNEL_KEY_BYTES], bool client,
                 int timeout_ms, struct cryo_error *err)
{
	*c = (struct channel){.fd = fd};
	/* One deadline for the whole handshake: a peer that trickles its
	 * bytes gains nothing by it. */
	uint64_t deadline = deadline_in(timeout_ms);
	if (sodium_init() < 0)
		return error_set(err, -EIO, "libsodium cannot start");

	uint8_t mine[8 + NONCE_BYTES], theirs[8 + NONCE_BYTES];
	memcpy(mine, MAGIC, 8);
	randombytes_buf(mine + 8, NONCE_BYTES);
	int r = write_full(fd, mine, sizeof(mine), deadline);
	if (r == 0)
		r = read_full(fd, theirs, sizeof(theirs), deadline);
	if (r < 0)
		return handshake_failed(err, r, timeout_ms);
	if (memcmp(theirs, MAGIC, 8) != 0)
		return error_set(err, -EPROTO, "the peer does not speak cryo's migration protocol");
	c->buf = malloc(1 + CHANNEL_MAX_MSG + ABYTES);
	c->plain = malloc(1 + CHANNEL_MAX_MSG);
	if (!c->buf || !c->plain)
		return error_set(err, -ENOMEM, "out of memory");
	const uint8_t *nc = client ? mine + 8 : theirs + 8;
	const uint8_t *ns = client ? theirs + 8 : mine + 8;
	uint8_t ktx[CHANNEL_KEY_BYTES], krx[CHANNEL_KEY_BYTES];
	derive(ktx, key, client ? "c2s" : "s2c", nc, ns);
	derive(krx, key, client ? "s2c" : "c2s", nc, ns);

	uint8_t hdr_out[HEADER_BYTES], hdr_in[HEADER_BYTES];
	crypto_secretstream_xchacha20poly1305_init_push(&c->tx, hdr_out, ktx);
	r = write_full(fd, hdr_out, sizeof(hdr_out), deadline);
	if (r == 0)
		r = read_full(fd, hdr_in, sizeof(hdr_in), deadline);
	if (r == 0 && crypto_secretstream_xchacha20poly1305_init_pull(&c->rx, hdr_in, krx) != 0)
		r = -EPROTO;
	sodium_memzero(ktx, sizeof(ktx));
	sodium_memzero(krx, sizeof(krx));
	if (r < 0)
		return handshake_failed(err, r, timeout_ms);

	/* Each end proves its key by a message the other can open. */
	r = send_until(c, MSG_HELLO, HELLO_TEXT, strlen(HELLO_TEXT), deadline, err);
	if (r < 0)
		return handshake_failed(err, r, timeout_ms);
	uint8_t type;
	const uint8_t *data;
	size_t n;
	r = recv_until(c, &type, &data, &n, deadline, err);
	if (r == -EBADMSG || (r == 0 && (type != MSG_HELLO || n != strlen(HELLO_TEXT) ||
	                                 memcmp(data, HELLO_TEXT, n) != 0)))
		return error_set(err, -EACCES,
		                 "the peer does not hold the same key (compare the --key-file of "
		                 "both ends)");
	if (r == -ECONNRESET)
		return error_set(err, -EACCES,
		                 "the peer closed the connection during the handshake: it does not "
		                 "hold the same key (compare the --key-file of both ends)");
	return r < 0 ? handshake_failed(err, r, timeout_ms) : 0;
}

void channel_close(struct channel *c)
{
	free(c->buf);
	free(c->plain);
	c->buf = c->plain = NULL;
	sodium_memzero(&c->tx, sizeof(c->tx));
	sodium_memzero(&c->rx, sizeof(c->rx));
}
