/* Just enough protobuf to read CRIU's image files without their generated
 * code: a field iterator over one message, and an iterator over the
 * entries of an image file ([magics][u32 size][message]...); and varints,
 * to write the few entries cryo writes. Internal to criu-glue. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pb_field {
	uint32_t number;
	int wire_type;       /* 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit */
	uint64_t varint;     /* wire type 0 */
	const uint8_t *data; /* the value's bytes (the payload, for type 2) */
	size_t len;
};

/* Reads the next field of the message [*p, end). Returns 1 with f filled, 0
 * at the end, -EBADMSG if malformed. */
int pb_next(const uint8_t **p, const uint8_t *end, struct pb_field *f);

/* Reads the next entry of an image file's body: *off starts at the first
 * entry (after the magics). Returns 1, 0 at the end, -EBADMSG. */
int pb_next_entry(const uint8_t *buf, size_t len, size_t *off, const uint8_t **msg,
                  size_t *msg_len);

/* Where the entries of an image file start: after IMG_COMMON/SERVICE magic and
 * the image's own magic. */
size_t pb_entries_start(const uint8_t *buf, size_t len);

/* Writes v as a varint at out (at most 10 bytes); returns its length. */
size_t pb_put_varint(uint8_t *out, uint64_t v);
