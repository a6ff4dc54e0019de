/* Incremental generations. A memory image (CRIU's pages-*.img) is stored as
 * a delta against the generation before it: each 4 KiB page that the base
 * generation already holds (same XXH3-128) becomes a reference to it, every
 * other page is stored. The delta stream is what the archive holds; the
 * store rebuilds the file from the base at restore and checks it against
 * the file's own checksum. See images/FORMAT.md.
 *
 * cryo finds the changed pages itself, hashing every page of a dump, rather
 * than through CRIU's own incremental dumps (criu pre-dump, --track-mem,
 * --prev-images-dir): those ask the kernel which pages were written since
 * the last dump, by its soft-dirty bits (CONFIG_MEM_SOFT_DIRTY; writing "4"
 * to /proc/PID/clear_refs clears them, bit 55 of /proc/PID/pagemap reads
 * them), and the kernel cryo's machines run lacks them. Checked on Linux
 * 6.18 with CRIU 4.2 (December 2026): `criu check --feature mem_dirty_track`
 * fails ("Dirty tracking is OFF"), the kernel's config leaves
 * CONFIG_MEM_SOFT_DIRTY unset, and a page written after "4" went into
 * /proc/self/clear_refs (the write is accepted) reads 0 at bit 55, as does a
 * page just mapped and written. Hashing costs a pass over the memory at each
 * checkpoint and needs nothing of the kernel. */
#pragma once

#include "manifest.h"
#include "memfile.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DELTA_PAGE_SIZE 4096u

/* Incremental generations in a row before a full one: each restore rebuilds
 * the whole chain. A rule of the format, as the manifest's "chain" key
 * counts them: it also bounds how many generations images/chain.c reads to
 * restore one (the whole one and at most this many on it). */
#define IMAGE_MAX_CHAIN 8

/* Where every page of one generation's memory images is: built when that
 * generation is taken, used to encode the next one against it. */
struct page_index;

struct page_index *page_index_new(uint64_t generation);
void page_index_free(struct page_index *idx);
uint64_t page_index_generation(const struct page_index *idx);

/* Adds the pages of file name (len bytes at data, a multiple of the page
 * size) to the index. */
int page_index_add(struct page_index *idx, const char *name, const uint8_t *data, size_t len);
/* A page's XXH3-128. */
struct page_hash {
	uint64_t low, high;
};
struct page_hash page_hash_of(const void *page);

/* The same as page_index_add(), from the hash of each page, in order. */
int page_index_add_hashes(struct page_index *idx, const char *name, const struct page_hash *hashes,
                          size_t pages);

/* A delta-encoded file: a mem_file whose segments point into a header
 * buffer it owns and into the caller's data (which must outlive it). */
struct delta_file {
	struct mem_file mem;
	uint64_t pages, copied_pages; /* all pages, and those taken from the base */
	uint8_t *headers;
	void *records;
	struct iovec *iov;
	size_t n_iov;
};

/* Encodes name (len bytes at data) against base. */
int delta_encode(const struct page_index *base, const char *name, const uint8_t *data, size_t len,
                 struct delta_file *out);
void delta_file_clear(struct delta_file *d);

/* Rebuilds a file from its delta stream (at delta_path) and the base
 * generation's rebuilt files in base_dir, writing it to out_path. Returns
 * -EBADMSG if the stream is malformed or refers to what the base lacks. */
int delta_decode(const char *delta_path, const char *base_dir, const char *out_path);

/* A delta stream read in memory: where each page of the rebuilt file is. */
struct delta_run {
	uint64_t first;  /* its first page in the rebuilt file */
	uint64_t pages;  /* how many */
	uint32_t base;   /* DELTA_STORED, or the index of a base file name */
	uint64_t offset; /* stored: byte offset in the stream; else the base file's page */
};
#define DELTA_STORED UINT32_MAX

struct delta_map {
	uint64_t size; /* of the rebuilt file */
	char **names;  /* the base files it takes pages from */
	size_t n_names;
	struct delta_run *runs; /* in order, covering the whole file */
	size_t n_runs;
};

/* Parses the delta stream at data (len bytes). -EBADMSG if malformed. */
int delta_map_parse(const uint8_t *data, size_t len, struct delta_map *out);
void delta_map_clear(struct delta_map *m);
/* The run holding page p of the rebuilt file, or NULL past its end. */
const struct delta_run *delta_map_find(const struct delta_map *m, uint64_t p);

/* Whether a CRIU image file is a memory image worth delta-encoding. */
bool delta_applies_to(const char *name);

/* The memory images of one dump directory, taken out of it (mapped, then
 * unlinked) and made ready for the archive: delta-encoded against base when
 * base is given and the dump shares at least half its pages with it, else
 * whole. index is this dump's own page index, the base for the next one
 * (built only with want_index). */
struct delta_dir {
	struct page_index *index;
	struct mem_file *files;
	size_t n_files;
	uint64_t pages, copied_pages;
	bool incremental; /* files are deltas against base */
	/* owned */
	struct delta_mapping {
		char *name;
		void *data;
		size_t len;
		bool mapped, owned;      /* data: a file mapped, or a copy of ours */
		const struct iovec *src; /* else (data NULL) its pieces, the caller's */
		size_t n_src;
		struct page_hash *hashes; /* of each page, once hashed */
		struct iovec iov;
		struct delta_file delta;
		char hash[33];
	} * maps;
	size_t n_maps;
};

int delta_prepare_dir(const char *images_dir, uint64_t generation, const struct page_index *base,
                      bool want_index, struct delta_dir *out);

/* The same for a dump held in memory (n files, memory images and others):
 * out->files holds all n, the memory images made ready as above, the others
 * as they are. The files' segments must outlive out. */
/* What is known of the pages of one file before it is hashed: spans of it
 * that are the pages of a file of the dump before, whose page hashes
 * (delta_dir_take_hashes()) are those. */
struct delta_known {
	const struct page_hash *hashes;
	size_t n_hashes;
	const struct mem_span *spans;
	size_t n_spans;
};

/* delta_prepare_mem(), or _on with always, with known[i] (known may be
 * NULL, an entry all zeros) for files[i]. */
int delta_prepare_mem_known(const struct mem_file *files, size_t n, uint64_t generation,
                            const struct page_index *base, bool want_index, bool always,
                            const struct delta_known *known, struct delta_dir *out);

/* The page hashes of the memory image name that d computed, now the
 * caller's (free()); NULL if none. */
struct page_hash *delta_dir_take_hashes(struct delta_dir *d, const char *name, size_t *n);

int delta_prepare_mem(const struct mem_file *files, size_t n, uint64_t generation,
                      const struct page_index *base, bool want_index, struct delta_dir *out);

/* The same, incremental whenever base is given, whatever it shares: for a
 * generation that stores held files against base and must be built on it
 * (the memory then takes the same chain). */
int delta_prepare_dir_on(const char *images_dir, uint64_t generation, const struct page_index *base,
                         bool want_index, struct delta_dir *out);
int delta_prepare_mem_on(const struct mem_file *files, size_t n, uint64_t generation,
                         const struct page_index *base, bool want_index, struct delta_dir *out);

/* Writes the memory images delta_prepare_dir() took out of images_dir back
 * into it (for a restore from the dump after all). */
int delta_dir_restore_files(const struct delta_dir *d, const char *images_dir);

/* Adds what restoring an incremental generation needs to its manifest:
 * "base GEN" and one "delta NAME SIZE HASH" per file. */
int delta_describe(const struct delta_dir *d, uint64_t base_generation, struct manifest *m);

/* One "delta" value of such a manifest: the file's name, and its size and
 * XXH3-128 once rebuilt. -EBADMSG if malformed. */
struct delta_line {
	char name[256];
	uint64_t size;
	uint8_t hash[16];
};
int delta_line_parse(const char *value, struct delta_line *out);

/* ---- held files (runtime/supervisor/files.c) ----
 * A file the program holds open for writing is stored, when the generation
 * before holds a copy of it, as a delta stream of the same format against
 * that copy: its blocks (4 KiB, the last one perhaps partial) unchanged by
 * position are OP_COPY runs of the copy's same blocks, the others are
 * stored. Its "file_delta NAME SIZE DIGEST" manifest line gives the size of
 * the file rebuilt and its digest: the XXH3-128 of its blocks' XXH3-128s
 * (delta_blocks_digest()), which the checkpoint has from comparing the
 * blocks and needs no second pass over the file for. */

/* The XXH3-128 of one block of a held file (len <= DELTA_PAGE_SIZE). */
struct page_hash delta_block_hash(const void *block, size_t len);

/* The digest of a file whose n blocks hash to hashes. */
void delta_blocks_digest(const struct page_hash *hashes, size_t n, uint8_t digest[16]);

/* The digest of the file at fd (size bytes), read from its start through
 * buf (len bytes, a multiple of the page size); with hashes (room for
 * every block), each block's hash too. -EIO if it ends before size. */
int delta_file_digest(int fd, uint64_t size, uint8_t *buf, size_t len, struct page_hash *hashes,
                      uint8_t digest[16]);

/* Writes a held file's delta stream to fd, as its blocks come, through buf
 * (cap bytes, at least 64 KiB: memory the caller keeps, touched already). */
struct delta_writer {
	int fd;
	uint8_t *buf;
	size_t cap, len;
	size_t literal;            /* offset in buf of the open literal record, or SIZE_MAX */
	uint64_t copy_first;       /* the open copy run: its first base block */
	uint32_t copy_pages;       /* and its length (0: none open) */
	uint64_t stored;           /* bytes written in all */
	uint64_t blocks, literals; /* blocks written, and of those stored */
};
int delta_writer_start(struct delta_writer *w, int fd, uint8_t *buf, size_t cap, uint64_t size,
                       const char *base_name);
/* The next block is block `block` of the base, unchanged. */
int delta_writer_copy(struct delta_writer *w, uint64_t block);
/* The next block is stored: len bytes (a page; less only for the last). */
int delta_writer_literal(struct delta_writer *w, const void *data, size_t len);
/* Ends the stream and writes out what is buffered. */
int delta_writer_end(struct delta_writer *w);

/* One "file_delta" value: as a delta line, any size. -EBADMSG if malformed. */
int delta_file_line_parse(const char *value, struct delta_line *out);

/* Rebuilds, in dest, the held files an incremental generation (manifest m)
 * stores as deltas ("file_delta" lines), from base_dir, the base
 * generation's files (rebuilt), and checks each against its line. On
 * failure *bad names the file (a pointer into m). */
int delta_apply_files(const struct manifest *m, const char *dest, const char *base_dir,
                      const char **bad);

/* Builds the page index of a directory of rebuilt images (after a restore). */
int delta_index_dir(const char *images_dir, uint64_t generation, struct page_index **ret);

void delta_dir_clear(struct delta_dir *d);
