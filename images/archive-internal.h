/* What the pieces of the image archive (archive-write.c, archive-read.c,
 * archive-lazy.c) share and nobody else should see: the on-disk layout, and
 * which files are memory images. Callers use archive.h. */
#pragma once

#include "archive.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

/* On-disk layout (little-endian), see FORMAT.md:
 *   header  16 bytes: "CRYOIMG\0", u32 version, u32 zero
 *   body    zstd frames (one in format 1): per file { u16 name_len, name, u64 size, data },
 *           then u16 0
 *   manifest one zstd frame of the manifest text
 *   trailer 64 bytes, below */
static const char header_magic[8] = "CRYOIMG";
static const char trailer_magic[8] = "CRYOEND";
#define HEADER_SIZE 16

struct trailer {
	char magic[8];
	uint64_t manifest_offset;
	uint64_t manifest_length;
	uint8_t body_hash[16];
	uint8_t manifest_hash[16];
	uint64_t self_hash; /* XXH64 of the 56 bytes before it */
};
_Static_assert(sizeof(struct trailer) == 64, "trailer layout");

/* Format 2 stores each memory image (pages-*.img) as frames of its own,
 * one per MEMORY_CHUNK bytes, which a lazy restore decompresses in any
 * order; format 1 had the whole body in one frame. */
#define MEMORY_CHUNK (2u << 20)

/* CRIU's memory images: stored after every other file, so that a reader
 * has all the small images in hand while the memory still streams in (a
 * lazy restore starts the program then). */
static inline bool is_memory_image(const char *name)
{
	return strncmp(name, "pages-", 6) == 0;
}
