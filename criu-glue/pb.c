#include "pb.h"

#include <errno.h>
#include <string.h>

#define IMG_COMMON_MAGIC  0x54564319u
#define IMG_SERVICE_MAGIC 0x55105940u

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -EBADMSG;
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -EBADMSG;
}

int pb_next(const uint8_t **p, const uint8_t *end, struct pb_field *f)
{
	if (*p >= end)
		return 0;
	uint64_t key;
	if (read_varint(p, end, &key) < 0 || key >> 3 == 0 || key >> 3 > UINT32_MAX)
		return -EBADMSG;
	f->number = (uint32_t)(key >> 3);
	f->wire_type = (int)(key & 7);
	f->varint = 0;
	f->data = *p;
	switch (f->wire_type) {
	case 0:
		if (read_varint(p, end, &f->varint) < 0)
			return -EBADMSG;
		break;
	case 1:
	case 5: {
		size_t n = f->wire_type == 1 ? 8 : 4;
		if ((size_t)(end - *p) < n)
			return -EBADMSG;
		*p += n;
		break;
	}
	case 2: {
		uint64_t n;
		if (read_varint(p, end, &n) < 0 || n > (uint64_t)(end - *p))
			return -EBADMSG;
		f->data = *p;
		*p += n;
		break;
	}
	default: return -EBADMSG;
	}
	f->len = (size_t)(*p - f->data);
	return 1;
}

size_t pb_entries_start(const uint8_t *buf, size_t len)
{
	uint32_t m;
	if (len < 4)
		return len;
	memcpy(&m, buf, 4);
	/* The inventory has a single magic; every other image two. */
	return (m == IMG_COMMON_MAGIC || m == IMG_SERVICE_MAGIC) ? 8 : 4;
}

int pb_next_entry(const uint8_t *buf, size_t len, size_t *off, const uint8_t **msg, size_t *msg_len)
{
	if (*off >= len)
		return 0;
	uint32_t n;
	if (len - *off < 4)
		return -EBADMSG;
	memcpy(&n, buf + *off, 4);
	*off += 4;
	if (n > len - *off)
		return -EBADMSG;
	*msg = buf + *off;
	*msg_len = n;
	*off += n;
	return 1;
}

size_t pb_put_varint(uint8_t *out, uint64_t v)
{
	size_t n = 0;
	do {
		out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}
