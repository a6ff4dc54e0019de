/* What the pieces of the image archive (archive-write.c, archive-read.c,
 * archive-lazy.c) share and nobody else should see: the on-disk layout, which
 * files are memory images, and the reader of the body's frames that the lazy
 * reader uses too. Callers use archive.h. */
#pragma once

#include "archive.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

/* On-disk layout (little-endian), see FORMAT.md:
 *   header  16 bytes: "CRYOIMG\0", u32 version, u32 XXH32 of the 12 bytes before it
 *           (formats 1 and 2: u32 zero)
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

/* A memory image's frame table, from its manifest's "frames OFFSET
 * LEN,LEN,... NAME" line: where its first frame is in the archive, and each
 * frame's compressed length. */
struct frame_table {
	uint64_t first;
	uint64_t *lens;
	size_t n;
};

/* Memory image name's frame table in m: 0, -ENOENT if m has none, -EBADMSG
 * if it is malformed. Only its syntax is checked here; whether it fits the
 * file and the archive is image_manifest_validate()'s. */
int archive_frames_get(const struct manifest *m, const char *name, struct frame_table *t);
void archive_frames_clear(struct frame_table *t);

/* Checks archive fd's header and trailer, the trailer's numbers put in host
 * order: the format version, or a negative errno (-EBADMSG for a damaged or
 * foreign archive) with its reason in err. */
int archive_read_trailer(int fd, struct trailer *t, uint64_t *file_size, struct cryo_error *err);

/* Decompressed body bytes come out of here, in order, across frame chunks. */
struct source {
	int fd;
	uint64_t left; /* compressed bytes left before the manifest */
	ZSTD_DCtx *dctx;
	XXH3_state_t *hash;
	uint8_t *in;
	size_t in_cap;
	ZSTD_inBuffer inb;
	uint8_t *out;
	size_t out_cap, out_pos, out_len;
	bool frame_done;
	bool multi;        /* format 2: the body is several frames */
	bool stream;       /* fd is a pipe: read what comes, the body's end is the frame's */
	uint64_t consumed; /* compressed body bytes decoded so far */
};

/* A source reading fd: a file whose body is left bytes long, or a stream. */
int archive_source_init(struct source *s, int fd, bool stream, uint64_t left, int version);
void archive_source_fini(struct source *s);
/* The next len bytes of the body, into buf, else (buf NULL) written to out_fd
 * if it is >= 0; hashed into h if given. -EBADMSG if the body ends first. */
int archive_source_read(struct source *s, void *buf, size_t len, int out_fd, XXH3_state_t *h);
/* Decodes to the end of the current frame, which must hold no more data. */
int archive_source_end_frame(struct source *s);
/* After the end marker: the frame it is in must end there, and (in a file)
 * the body with it. */
int archive_source_end(struct source *s);
