/* libcryo: the calls a program makes to cryo, its checkpoint/restore runtime.
 *
 * Build with: cc prog.c $(pkg-config --cflags --libs cryo)
 *
 * A program run under `cryo run` may call cryo_checkpoint() at a quiet point
 * of its loop. The same binary runs unchanged outside cryo, where the calls
 * fail at once with -ENOTCONN. Every call is thread-safe; a checkpoint holds
 * the whole process, so call it where no other thread is in the middle of
 * something it could not resume.
 *
 * Only the process `cryo run` started, and its restored copies, can
 * checkpoint. In its children, made by fork(), vfork() or clone(), every call
 * fails at once with -ENOTCONN without touching the control socket (the
 * parent's calls go on unharmed), and cryo_generation() tells the parent's
 * generation at the fork: a child cannot checkpoint, and there is no way for
 * it to connect. A program it starts with exec() runs as outside cryo. The
 * parent's checkpoints still take in its children, as they take in the whole
 * process tree. At fork(), libcryo closes the child's copy of the control
 * socket. */
#ifndef CRYO_H
#define CRYO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CRYO_EXPORT __attribute__((visibility("default")))
#else
#define CRYO_EXPORT
#endif

/* The version of this cryo.h, for checks at compile time:
 * CRYO_VERSION_NUMBER is major * 10000 + minor * 100 + patch (100 for 0.1.0).
 * The libcryo a program runs with may be newer: see cryo_version(). */
#define CRYO_VERSION_MAJOR 0
#define CRYO_VERSION_MINOR 1
#define CRYO_VERSION_PATCH 0
#define CRYO_VERSION_NUMBER                                                                        \
	(CRYO_VERSION_MAJOR * 10000 + CRYO_VERSION_MINOR * 100 + CRYO_VERSION_PATCH)

/* cryo_checkpoint()'s two successful results, like fork()'s. */
#define CRYO_CHECKPOINTED 0 /* this process was checkpointed and runs on */
#define CRYO_RESTORED     1 /* this process is a copy restored from that checkpoint */

/* Asks the supervisor to checkpoint this process now and waits until the
 * image is durably stored. Returns CRYO_CHECKPOINTED (0) in the original
 * process, CRYO_RESTORED (1) when the process was later restored from this
 * checkpoint, or a negative errno on failure, after which the program runs on
 * unharmed and the previous checkpoint stays the newest:
 *   -ENOTCONN  not running under cryo, or the supervisor is gone (then for
 *              good: see cryo_checkpoint_result())
 *   -EBUSY     a checkpoint is already under way
 *   -ENOSPC, -EIO, ...  the dump or its storage failed; the supervisor logs why
 *   -EPROTO    the supervisor answered something this libcryo cannot read */
CRYO_EXPORT int cryo_checkpoint(void);

/* The generation of the last checkpoint this process took or was restored
 * from, 0 if none. Generations of one workload only grow. */
CRYO_EXPORT uint64_t cryo_generation(void);

/* Like cryo_checkpoint(), but returns as soon as this process may run again,
 * before the image is durable: CRYO_CHECKPOINTED (0), CRYO_RESTORED (1) in a
 * restored copy, or a negative errno (nothing was dumped). After a 0, whether
 * the image became durable arrives later: cryo_checkpoint_fd() becomes
 * readable and cryo_checkpoint_result() tells. Until then, a crash restores
 * the previous checkpoint. */
CRYO_EXPORT int cryo_checkpoint_async(void);

/* An fd for poll()/epoll (readable input) that becomes readable when the
 * outcome of a cryo_checkpoint_async() arrives, or when the supervisor is
 * gone; -ENOTCONN outside cryo and once the supervisor is gone. Only wait on
 * it, never read, dup() or close it: read it with cryo_checkpoint_result(). */
CRYO_EXPORT int cryo_checkpoint_fd(void);

/* Without blocking: the generation (> 0) that became durable after the last
 * cryo_checkpoint_async(), a negative errno if storing it failed (that
 * generation does not exist; the one before stays the newest), -EAGAIN
 * while there is no news, or -ENOTCONN outside cryo and once the supervisor
 * is gone. Call it each time the fd is readable, until -EAGAIN (an
 * edge-triggered epoll needs that): one wake-up may bring news and the
 * supervisor's end together, told one after the other.
 *
 * When the supervisor is gone (its end of the socket closed or reset), the
 * call that first returns -ENOTCONN has closed the fd, and every later call
 * returns -ENOTCONN too; there is no reconnecting. The caller then forgets
 * the fd: it takes it out of its poll() set (poll() would report it POLLNVAL,
 * or, once the number is reused, poll someone else's file), and does not
 * epoll_ctl() it any more: the number may already name another file. An
 * epoll set drops a closed fd by itself only when it was the last reference
 * to its socket; libcryo keeps it the last by closing the copy that a child
 * of fork() inherits, so this holds unless the program dup()ed the fd (don't)
 * or made a child by clone() that still has it. */
CRYO_EXPORT int64_t cryo_checkpoint_result(void);

/* The version of the libcryo this program runs with, "MAJOR.MINOR.PATCH":
 * the CRYO_VERSION_* of the cryo.h that libcryo was built with, which may be
 * newer than the program's. A static string, never NULL; it needs no cryo
 * and answers in any process. */
CRYO_EXPORT const char *cryo_version(void);

#ifdef __cplusplus
}
#endif

#endif
