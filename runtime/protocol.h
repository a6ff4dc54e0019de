/* The messages between libcryo (in the program) and its supervisor, over the
 * program's control socket: fixed-size, native byte order (both ends are on
 * one machine). The program sends CHECKPOINT and blocks reading the RESULT,
 * so that nothing is in flight while the supervisor dumps it. After every
 * restore the supervisor sends RESULT with value 1 ("restored"): a copy
 * restored inside cryo_checkpoint() takes it as its reply, any other finds
 * it queued before its next request. */
#pragma once

#include <stdint.h>

#define CRYO_CONTROL_FD_ENV "CRYO_CONTROL_FD"
#define CRYO_MSG_MAGIC      0x4f595243u /* "CRYO" */

enum {
	CRYO_MSG_CHECKPOINT = 1,       /* program -> supervisor */
	CRYO_MSG_RESULT = 2,           /* supervisor -> program: value is 0, 1 or -errno */
	CRYO_MSG_CHECKPOINT_ASYNC = 3, /* program -> supervisor: RESULT once dumped, */
	CRYO_MSG_DURABLE = 4,          /* then this: value is the generation or -errno */
};

struct cryo_msg {
	uint32_t magic;
	uint32_t type;
	int64_t value;
	uint64_t generation;
};
