/* Reading an archive in one pass, from a file or from a pipe: the manifest
 * alone, or every file checked against it (and extracted if asked). Also the
 * body's frame reader (struct source) and the header and trailer checks,
 * which the lazy reader (archive-lazy.c) uses too. */
#include "archive-internal.h"
#include "cleanup.h"
#include "util.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int check_header(const char header[HEADER_SIZE], struct cryo_error *err)
{
	if (memcmp(header, header_magic, 8) != 0)
		return error_set(err, -EBADMSG, "not a cryo image (bad magic)");
	uint32_t ver;
	memcpy(&ver, header + 8, 4);
	ver = le32toh(ver);
	if (ver < 1 || ver > IMAGE_FORMAT_VERSION)
		return error_set(
		    err, -EBADMSG,
		    "image format version %u is not supported (this cryo reads 1 to %d; "
		    "a newer cryo wrote it)",
		    ver, IMAGE_FORMAT_VERSION);
	/* Format 3 covers the header by a checksum of its own; before, its
	 * last four bytes were zero, and must be. */
	uint32_t sum;
	memcpy(&sum, header + 12, 4);
	if (le32toh(sum) != (ver >= 3 ? XXH32(header, 12, 0) : 0))
		return error_set(err, -EBADMSG, "image header is damaged (checksum mismatch)");
	return (int)ver;
}

/* Checks a trailer read from the end of an archive of file_size bytes, and
 * puts its numbers in host order. */
static int check_trailer(struct trailer *t, uint64_t file_size, struct cryo_error *err)
{
	if (memcmp(t->magic, trailer_magic, 8) != 0)
		return error_set(err, -EBADMSG, "image is truncated (no trailer)");
	if (le64toh(t->self_hash) != XXH64(t, offsetof(struct trailer, self_hash), 0))
		return error_set(err, -EBADMSG, "image trailer is damaged (checksum mismatch)");
	t->manifest_offset = le64toh(t->manifest_offset);
	t->manifest_length = le64toh(t->manifest_length);
	if (t->manifest_offset < HEADER_SIZE || t->manifest_length > (1u << 26) ||
	    t->manifest_offset + t->manifest_length + sizeof(*t) != file_size)
		return error_set(err, -EBADMSG, "image trailer is inconsistent with the file size");
	return 0;
}

int archive_read_trailer(int fd, struct trailer *t, uint64_t *file_size, struct cryo_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return error_set(err, -errno, "cannot stat the image: %m");
	char header[HEADER_SIZE];
	if ((uint64_t)st.st_size < HEADER_SIZE + sizeof(*t))
		return error_set(err, -EBADMSG, "image is truncated (%lld bytes)",
		                 (long long)st.st_size);
	if (pread(fd, header, sizeof(header), 0) != (ssize_t)sizeof(header))
		return error_set(err, -EIO, "cannot read the image header");
	int ver = check_header(header, err);
	if (ver < 0)
		return ver;
	if (pread(fd, t, sizeof(*t), st.st_size - (off_t)sizeof(*t)) != (ssize_t)sizeof(*t))
		return error_set(err, -EIO, "cannot read the image trailer");
	int r = check_trailer(t, (uint64_t)st.st_size, err);
	if (r < 0)
		return r;
	*file_size = (uint64_t)st.st_size;
	return ver;
}

/* The manifest frame ctext, checked against the trailer and parsed. */
static int decode_manifest(const char *ctext, const struct trailer *t, struct manifest **ret,
                           struct cryo_error *err)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(ctext, t->manifest_length));
	if (memcmp(c.digest, t->manifest_hash, 16) != 0)
		return error_set(err, -EBADMSG, "manifest is damaged (checksum mismatch)");
	unsigned long long rsize = ZSTD_getFrameContentSize(ctext, t->manifest_length);
	if (rsize == ZSTD_CONTENTSIZE_ERROR || rsize == ZSTD_CONTENTSIZE_UNKNOWN ||
	    rsize > (1u << 28))
		return error_set(err, -EBADMSG, "manifest frame is malformed");
	_cleanup_free_ char *text = malloc(rsize + 1);
	if (!text)
		return -ENOMEM;
	size_t n = ZSTD_decompress(text, rsize, ctext, t->manifest_length);
	if (ZSTD_isError(n) || n != rsize)
		return error_set(err, -EBADMSG, "manifest does not decompress");
	_cleanup_manifest_ struct manifest *m = NULL;
	int r = manifest_from_text(text, n, &m);
	if (r == -EBADMSG)
		return error_set(err, r, "manifest is malformed");
	if (r == 0)
		r = image_manifest_validate(m, 0, t->manifest_offset, err);
	if (r == 0)
		*ret = TAKE_PTR(m);
	return r;
}

int image_archive_read_manifest(int fd, struct manifest **ret, struct cryo_error *err)
{
	struct trailer t;
	uint64_t size;
	int r = archive_read_trailer(fd, &t, &size, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *ctext = malloc(t.manifest_length);
	if (!ctext)
		return -ENOMEM;
	if (pread(fd, ctext, t.manifest_length, (off_t)t.manifest_offset) !=
	    (ssize_t)t.manifest_length)
		return error_set(err, -EIO, "cannot read the manifest");
	return decode_manifest(ctext, &t, ret, err);
}

/* A source reading fd: a file whose body is left bytes long, or a stream. */
int archive_source_init(struct source *s, int fd, bool stream, uint64_t left, int version)
{
	*s = (struct source){
	    .fd = fd,
	    .left = left,
	    .multi = version >= 2,
	    .stream = stream,
	    .in_cap = ZSTD_DStreamInSize(),
	    .out_cap = ZSTD_DStreamOutSize(),
	};
	s->dctx = ZSTD_createDCtx();
	s->hash = XXH3_createState();
	s->in = malloc(s->in_cap);
	s->out = malloc(s->out_cap);
	if (!s->dctx || !s->hash || !s->in || !s->out)
		return -ENOMEM;
	XXH3_128bits_reset(s->hash);
	return 0;
}

void archive_source_fini(struct source *s)
{
	ZSTD_freeDCtx(s->dctx);
	XXH3_freeState(s->hash);
	free(s->in);
	free(s->out);
}

/* Fills the decompressed window; returns >0 bytes available, 0 at end, <0 error. */
static int source_fill(struct source *s)
{
	while (s->out_pos == s->out_len) {
		if (s->frame_done) {
			/* Format 2: another frame follows, unless the body is over
			 * (a stream's end is the end marker, found by the caller). */
			if (!s->multi || (!s->stream && s->left == 0 && s->inb.pos == s->inb.size))
				return 0;
			s->frame_done = false;
		}
		if (s->inb.pos == s->inb.size) {
			size_t want;
			if (s->stream) {
				ssize_t n;
				while ((n = read(s->fd, s->in, s->in_cap)) < 0 && errno == EINTR)
					;
				if (n <= 0)
					return n == 0 ? -EBADMSG : -errno; /* ends early */
				want = (size_t)n;
			} else {
				if (s->left == 0)
					return -EBADMSG; /* the frame ends early */
				want = s->left < s->in_cap ? (size_t)s->left : s->in_cap;
				int r = util_read_exact(s->fd, s->in, want);
				if (r < 0)
					return r == -EIO ? -EBADMSG : r;
				s->left -= want;
			}
			s->inb = (ZSTD_inBuffer){s->in, want, 0};
		}
		ZSTD_outBuffer out = {s->out, s->out_cap, 0};
		size_t before = s->inb.pos;
		size_t rem = ZSTD_decompressStream(s->dctx, &out, &s->inb);
		if (ZSTD_isError(rem))
			return -EBADMSG;
		/* The body's hash covers what the frame consumed: in a stream,
		 * the manifest may follow in the same read. */
		XXH3_128bits_update(s->hash, s->in + before, s->inb.pos - before);
		s->consumed += s->inb.pos - before;
		if (rem == 0)
			s->frame_done = true;
		s->out_pos = 0;
		s->out_len = out.pos;
	}
	return 1;
}

/* Decodes to the end of the current frame, which must hold no more data. */
int archive_source_end_frame(struct source *s)
{
	bool multi = s->multi;
	s->multi = false;
	int r = source_fill(s);
	s->multi = multi;
	return r == 0 && s->frame_done ? 0 : -EBADMSG;
}

/* After the end marker: the frame it is in must end there, and (in a file)
 * the body with it. */
int archive_source_end(struct source *s)
{
	bool multi = s->multi;
	s->multi = false;
	int r = source_fill(s);
	s->multi = multi;
	if (r != 0 || (!s->stream && (s->left != 0 || s->inb.pos != s->inb.size)))
		return -EBADMSG;
	return 0;
}

int archive_source_read(struct source *s, void *buf, size_t len, int out_fd, XXH3_state_t *h)
{
	uint8_t *p = buf;
	while (len > 0) {
		int r = source_fill(s);
		if (r <= 0)
			return r == 0 ? -EBADMSG : r;
		size_t n = s->out_len - s->out_pos;
		if (n > len)
			n = len;
		const uint8_t *src = s->out + s->out_pos;
		if (h)
			XXH3_128bits_update(h, src, n);
		if (p) {
			memcpy(p, src, n);
			p += n;
		} else if (out_fd >= 0) {
			r = util_write_all(out_fd, src, n);
			if (r < 0)
				return r;
		}
		s->out_pos += n;
		len -= n;
	}
	return 0;
}

/* Memory image f's bytes, which (format 2 on) come in frames of their own
 * where its frame table in m says: checked against the table as they stream
 * by, so that what a lazy restore finds by the table is what is read here.
 * *astray when the body and the table disagree. */
static int read_framed(struct source *s, const struct manifest *m, const struct manifest_file *f,
                       int ofd, XXH3_state_t *h, bool *astray)
{
	_cleanup_(archive_frames_clear) struct frame_table t = {0};
	int r = archive_frames_get(m, f->name, &t);
	if (r == -ENOENT)
		return archive_source_read(s, NULL, f->size, ofd, h);
	if (r < 0)
		return r;
	if (archive_source_end_frame(s) < 0 || HEADER_SIZE + s->consumed != t.first) {
		*astray = true;
		return -EBADMSG;
	}
	uint64_t done = 0;
	for (size_t k = 0; k < t.n; k++) {
		uint64_t len = f->size - done < MEMORY_CHUNK ? f->size - done : MEMORY_CHUNK;
		uint64_t at = s->consumed;
		r = archive_source_read(s, NULL, len, ofd, h);
		if (r < 0)
			return r;
		if (archive_source_end_frame(s) < 0 || s->consumed - at != t.lens[k]) {
			*astray = true;
			return -EBADMSG;
		}
		done += len;
	}
	return 0;
}

/* Extracts the body into dfd (when >= 0 and want(name)), checking it
 * against manifest m; without m (a stream, whose manifest comes last), the
 * files found are recorded in got, to be checked afterwards. */
static int read_body(struct source *s, int dfd, bool (*want)(const char *),
                     const struct manifest *m, struct manifest *got, struct cryo_error *err)
{
	for (size_t i = 0;; i++) {
		uint16_t nl;
		int r = archive_source_read(s, &nl, sizeof(nl), -1, NULL);
		if (r < 0)
			return error_set(err, r, "image body is damaged or truncated");
		nl = le16toh(nl);
		if (nl == 0 && !m)
			break;
		if (nl == 0) {
			if (i != m->n_files)
				return error_set(err, -EBADMSG,
				                 "image body holds %zu files, manifest %zu", i,
				                 m->n_files);
			break;
		}
		if (m && i >= m->n_files)
			return error_set(err, -EBADMSG,
			                 "image body holds more files than its manifest");
		const struct manifest_file *f = m ? &m->files[i] : NULL;
		char name[UINT16_MAX + 1];
		uint64_t size;
		r = archive_source_read(s, name, nl, -1, NULL);
		if (r == 0)
			r = archive_source_read(s, &size, sizeof(size), -1, NULL);
		if (r < 0)
			return error_set(err, r, "image body is damaged or truncated");
		name[nl] = '\0';
		size = le64toh(size);
		if (f && (strcmp(name, f->name) != 0 || size != f->size))
			return error_set(err, -EBADMSG,
			                 "image body does not match its manifest at '%s'", name);
		if (!f &&
		    (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")))
			return error_set(err, -EBADMSG, "image body names a file '%s'", name);

		_cleanup_close_ int ofd = -1;
		if (dfd >= 0 && (!want || want(name))) {
			ofd = openat(dfd, name,
			             O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (ofd < 0)
				return error_set(err, -errno, "cannot create '%s': %m", name);
		}
		XXH3_state_t *h = XXH3_createState();
		if (!h)
			return -ENOMEM;
		XXH3_128bits_reset(h);
		bool astray = false;
		r = f && s->multi && is_memory_image(name)
		        ? read_framed(s, m, f, ofd, h, &astray)
		        : archive_source_read(s, NULL, size, ofd, h);
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
		XXH3_freeState(h);
		if (astray)
			return error_set(err, -EBADMSG,
			                 "image body does not match its frame table at '%s'", name);
		if (r == -EBADMSG)
			return error_set(err, r, "image body is damaged or truncated in '%s'",
			                 name);
		if (r < 0)
			return error_set(err, r, "cannot extract '%s': %s", name, strerror(-r));
		if (f && memcmp(c.digest, f->hash, 16) != 0)
			return error_set(err, -EBADMSG, "checksum mismatch in '%s'", name);
		if (!f) {
			r = manifest_add_file(got, name, size, c.digest);
			if (r < 0)
				return r;
		}
	}
	/* Nothing may follow the end marker inside the body. */
	if (archive_source_end(s) < 0)
		return error_set(err, -EBADMSG, "image body has trailing data");
	return 0;
}

int image_archive_read(int fd, const char *dir, struct manifest **ret, struct cryo_error *err)
{
	return image_archive_read_some(fd, dir, NULL, ret, err);
}

int image_archive_read_some(int fd, const char *dir, bool (*want)(const char *name),
                            struct manifest **ret, struct cryo_error *err)
{
	struct trailer t;
	uint64_t size;
	int ver = archive_read_trailer(fd, &t, &size, err);
	if (ver < 0)
		return ver;
	_cleanup_manifest_ struct manifest *m = NULL;
	int r = image_archive_read_manifest(fd, &m, err);
	if (r < 0)
		return r;

	_cleanup_close_ int dfd = -1;
	if (dir) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return error_set(err, -errno, "cannot open '%s': %m", dir);
	}
	if (lseek(fd, HEADER_SIZE, SEEK_SET) < 0)
		return error_set(err, -errno, "cannot seek in the image: %m");

	struct source s;
	r = archive_source_init(&s, fd, false, t.manifest_offset - HEADER_SIZE, ver);
	if (r == 0)
		r = read_body(&s, dfd, want, m, NULL, err);
	if (r == 0) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s.hash));
		if (memcmp(c.digest, t.body_hash, 16) != 0)
			r = error_set(err, -EBADMSG, "image body checksum mismatch");
	}
	archive_source_fini(&s);
	if (r < 0)
		return r;
	if (ret)
		*ret = TAKE_PTR(m);
	return 0;
}

int image_archive_read_stream(int fd, const char *dir, struct manifest **ret,
                              struct cryo_error *err)
{
	char header[HEADER_SIZE];
	int r = util_read_exact(fd, header, sizeof(header));
	if (r < 0)
		return error_set(err, r == -EIO ? -EBADMSG : r, "image stream ends in its header");
	int ver = check_header(header, err);
	if (ver < 0)
		return ver;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, -errno, "cannot open '%s': %m", dir);
	_cleanup_manifest_ struct manifest *got = manifest_new(), *m = NULL;
	struct source s;
	_cleanup_free_ char *tail = NULL;
	size_t tail_len = 0, tail_cap = 0;
	r = archive_source_init(&s, fd, true, 0, ver);
	if (r == 0 && !got)
		r = -ENOMEM;
	if (r < 0)
		goto out;
	r = read_body(&s, dfd, NULL, NULL, got, err);
	if (r < 0)
		goto out;
	/* What follows the body: the manifest frame and the trailer, starting
	 * with what the last read brought beyond the body's frame. */
	tail_cap = 65536 + s.inb.size - s.inb.pos;
	tail = malloc(tail_cap);
	if (!tail) {
		r = -ENOMEM;
		goto out;
	}
	tail_len = s.inb.size - s.inb.pos;
	memcpy(tail, s.in + s.inb.pos, tail_len);
	for (;;) {
		if (tail_len == tail_cap) {
			if (tail_cap > (1u << 27)) {
				r = error_set(err, -EBADMSG,
				              "image stream has too much after its body");
				goto out;
			}
			char *nt = realloc(tail, tail_cap *= 2);
			if (!nt) {
				r = -ENOMEM;
				goto out;
			}
			tail = nt;
		}
		ssize_t n = read(fd, tail + tail_len, tail_cap - tail_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = error_set(err, -errno, "cannot read the image stream: %m");
			goto out;
		}
		if (n == 0)
			break;
		tail_len += (size_t)n;
	}
	struct trailer t;
	if (tail_len < sizeof(t)) {
		r = error_set(err, -EBADMSG, "image stream is truncated (no trailer)");
		goto out;
	}
	memcpy(&t, tail + tail_len - sizeof(t), sizeof(t));
	r = check_trailer(&t, HEADER_SIZE + s.consumed + tail_len, err);
	if (r == 0 && t.manifest_offset != HEADER_SIZE + s.consumed)
		r = error_set(err, -EBADMSG, "image trailer is inconsistent with the body");
	if (r == 0)
		r = decode_manifest(tail + tail_len - sizeof(t) - t.manifest_length, &t, &m, err);
	if (r < 0)
		goto out;
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s.hash));
	if (memcmp(c.digest, t.body_hash, 16) != 0) {
		r = error_set(err, -EBADMSG, "image body checksum mismatch");
		goto out;
	}
	if (got->n_files != m->n_files) {
		r = error_set(err, -EBADMSG, "image body holds %zu files, manifest %zu",
		              got->n_files, m->n_files);
		goto out;
	}
	for (size_t i = 0; i < m->n_files; i++)
		if (strcmp(got->files[i].name, m->files[i].name) != 0 ||
		    got->files[i].size != m->files[i].size ||
		    memcmp(got->files[i].hash, m->files[i].hash, 16) != 0) {
			r = error_set(err, -EBADMSG,
			              "image body does not match its manifest at '%s'",
			              got->files[i].name);
			goto out;
		}
	if (ret)
		*ret = TAKE_PTR(m);
out:
	archive_source_fini(&s);
	return r;
}
