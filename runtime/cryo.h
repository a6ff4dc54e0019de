/* libcryo: the calls a program makes to cryo, its checkpoint/restore runtime.
 *
 * Build with: cc prog.c $(pkg-config --cflags --libs cryo)
 *
 * A program run under `cryo run` may call cryo_checkpoint() at a quiet point
 * of its loop. The same binary runs unchanged outside cryo, where the calls
 * fail at once with -ENOTCONN. Every call is thread-safe; a checkpoint holds
 * the whole process, so call it where no other thread is in the middle of
 * something it could not resume. */
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

/* cryo_checkpoint()'s two successful results, like fork()'s. */
#define CRYO_CHECKPOINTED 0 /* this process was checkpointed and runs on */
#define CRYO_RESTORED     1 /* this process is a copy restored from that checkpoint */

/* Asks the supervisor to checkpoint this process now and waits until the
 * image is durably stored. Returns CRYO_CHECKPOINTED (0) in the original
 * process, CRYO_RESTORED (1) when the process was later restored from this
 * checkpoint, or a negative errno on failure, after which the program runs on
 * unharmed and the previous checkpoint stays the newest:
 *   -ENOTCONN  not running under cryo (or the supervisor is gone)
 *   -EBUSY     a checkpoint is already under way
 *   -ENOSPC, -EIO, ...  the dump or its storage failed; the supervisor logs why
 *   -EPROTO    the supervisor answered something this libcryo cannot read */
CRYO_EXPORT int cryo_checkpoint(void);

/* The generation of the last checkpoint this process took or was restored
 * from, 0 if none. Generations of one workload only grow. */
CRYO_EXPORT uint64_t cryo_generation(void);

#ifdef __cplusplus
}
#endif

#endif
