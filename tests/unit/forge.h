/* Forging an image's manifest as someone who can write the state directory
 * could, its checksums made good again (images/FORMAT.md's trailer), so that
 * only what the manifest says can give it away: shared by the unit test
 * test-validate and the e2e tool manifest-forge. Include after xxhash.h and
 * zstd.h. */
#pragma once

#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FORGE_TRAILER 64

/* Compresses the manifest text (len bytes) and remakes trailer (the
 * archive's FORGE_TRAILER bytes) around it: the manifest's length, its
 * XXH3-128 and the trailer's own XXH64. Returns the compressed manifest
 * (free() it) with its length in *clen, or NULL. */
static inline uint8_t *forge_manifest(const void *text, size_t len, uint8_t *trailer, size_t *clen)
{
	size_t bound = ZSTD_compressBound(len);
	uint8_t *c = malloc(bound);
	size_t n = c ? ZSTD_compress(c, bound, text, len, 3) : 0;
	if (!n || ZSTD_isError(n)) {
		free(c);
		return NULL;
	}
	uint64_t v = htole64(n);
	memcpy(trailer + 16, &v, 8);
	XXH128_canonical_t h;
	XXH128_canonicalFromHash(&h, XXH3_128bits(c, n));
	memcpy(trailer + 40, h.digest, 16);
	v = htole64(XXH64(trailer, 56, 0));
	memcpy(trailer + 56, &v, 8);
	*clen = n;
	return c;
}
