/* For the e2e tests: forges an image's manifest as someone who can write the
 * state directory could, its checksums made good again, so that only what
 * the manifest says can give it away.
 *
 *   manifest-forge show FILE    prints FILE's manifest text
 *   manifest-forge write FILE   replaces it with the text on stdin: a new
 *                               manifest frame, its checksum, and the
 *                               trailer (offsets, own checksum) made anew
 *
 * FILE's header and body stay as they are. Exits 1 with a reason on
 * stderr if FILE is no cryo image. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "../unit/forge.h"

#define TRAILER FORGE_TRAILER

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "manifest-forge: %s: %s\n", path, what);
	return 1;
}

static uint8_t *slurp(FILE *f, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	uint8_t *b = malloc(cap);
	for (size_t got; b && (got = fread(b + n, 1, cap - n, f)) > 0;) {
		n += got;
		if (n == cap) {
			uint8_t *nb = realloc(b, cap *= 2);
			if (!nb)
				free(b);
			b = nb;
		}
	}
	*len = n;
	return b;
}

int main(int argc, char **argv)
{
	if (argc != 3 || (strcmp(argv[1], "show") && strcmp(argv[1], "write"))) {
		fputs("usage: manifest-forge show|write FILE\n", stderr);
		return 2;
	}
	const char *path = argv[2];
	FILE *f = fopen(path, "rb");
	if (!f)
		return fail(strerror(errno), path);
	size_t len;
	uint8_t *a = slurp(f, &len);
	fclose(f);
	if (!a || len < 16 + TRAILER || memcmp(a, "CRYOIMG", 8) ||
	    memcmp(a + len - TRAILER, "CRYOEND", 8))
		return fail("not a cryo image", path);
	uint8_t *t = a + len - TRAILER;
	uint64_t off, mlen;
	memcpy(&off, t + 8, 8);
	memcpy(&mlen, t + 16, 8);
	off = le64toh(off);
	mlen = le64toh(mlen);
	if (off + mlen + TRAILER != len)
		return fail("trailer does not fit the file", path);

	if (!strcmp(argv[1], "show")) {
		unsigned long long n = ZSTD_getFrameContentSize(a + off, mlen);
		char *text = n < (1u << 28) ? malloc(n) : NULL;
		if (!text || ZSTD_decompress(text, n, a + off, mlen) != n)
			return fail("manifest does not decompress", path);
		fwrite(text, 1, n, stdout);
		return 0;
	}

	size_t tlen;
	uint8_t *text = slurp(stdin, &tlen);
	size_t clen = 0;
	uint8_t *c = text ? forge_manifest(text, tlen, t, &clen) : NULL;
	if (!c)
		return fail("cannot compress the new manifest", path);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.forging", path);
	f = fopen(tmp, "wb");
	if (!f || fwrite(a, 1, off, f) != off || fwrite(c, 1, clen, f) != clen ||
	    fwrite(t, 1, TRAILER, f) != TRAILER || fclose(f) != 0 || rename(tmp, path) != 0)
		return fail(strerror(errno), path);
	return 0;
}
