/* The migration channel: a TCP connection on which both ends prove they hold
 * the same key and every message is encrypted and authenticated (libsodium's
 * secretstream, XChaCha20-Poly1305, one stream per direction, keys derived
 * from the shared key and a fresh nonce of each end). A message is a type
 * byte and up to CHANNEL_MAX_MSG bytes; reordered, replayed, altered or
 * forged messages fail to decrypt. Functions return 0 or a negative errno
 * with a one-line reason in err. */
#pragma once

#include "error.h"

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHANNEL_KEY_BYTES 32
#define CHANNEL_MAX_MSG   (1U << 20)

enum channel_msg {
	MSG_HELLO = 1,
	MSG_OFFER,   /* source -> target: what would come (a manifest's text) */
	MSG_CPUINFO, /* source -> target: CRIU's cpuinfo image of the source */
	MSG_ACCEPT,  /* target -> source: it can take it */
	MSG_REFUSE,  /* target -> source: why not (text) */
	MSG_DATA,    /* source -> target: the next bytes of the image archive */
	MSG_END,     /* source -> target: the archive is complete (its size, u64) */
	MSG_RUNNING, /* target -> source: restored, stopped from the network */
	MSG_FAILED,  /* target -> source: could not store or restore (text) */
	MSG_DONE,    /* source -> target: the source copy is gone; go ahead */
};

struct channel {
	int fd;
	crypto_secretstream_xchacha20poly1305_state tx, rx;
	uint8_t *buf;   /* one ciphertext */
	uint8_t *plain; /* its plaintext */
};

/* Reads a key file: at least 32 bytes, a regular file (not a symbolic link)
 * owned by the effective user, mode 0600 or stricter. The key is a hash of
 * its whole content. */
int channel_load_key(const char *path, uint8_t key[CHANNEL_KEY_BYTES], struct cryo_error *err);

/* The handshake on a connected socket, as the connecting end (client) or the
 * accepting end. The whole of it must end within timeout_ms, however the
 * peer spreads its bytes (-ETIMEDOUT). */
int channel_open(struct channel *c, int fd, const uint8_t key[CHANNEL_KEY_BYTES], bool client,
                 int timeout_ms, struct cryo_error *err);

void channel_close(struct channel *c);

/* Sends one message; -ETIMEDOUT if the peer does not take it within 120 s. */
int channel_send(struct channel *c, uint8_t type, const void *data, size_t len,
                 struct cryo_error *err);

/* Receives the next message into c's buffer: *data points into it, valid
 * until the next call. -ETIMEDOUT if the whole message has not come within
 * timeout_ms (< 0: no limit),
 * -ECONNRESET when the peer closed, -EBADMSG when a message was altered. */
int channel_recv(struct channel *c, uint8_t *type, const uint8_t **data, size_t *len,
                 int timeout_ms, struct cryo_error *err);
