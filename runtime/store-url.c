/* --store s3://BUCKET/PREFIX, and the keys of the generations in it. */
#include "store-url.h"
#include "cleanup.h"
#include "error.h"
#include "json.h"
#include "util.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_parse_url(const char *url, struct store_config *sc, struct cryo_error *err)
{
	static const char scheme[] = "s3://";
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return error_set(err, -EINVAL, "'%s' is no s3:// address: give s3://BUCKET/PREFIX",
		                 url);
	if (strlen(url) >= sizeof(sc->url))
		return error_set(err, -EINVAL, "'%s' is too long (at most %zu characters)", url,
		                 sizeof(sc->url) - 1);
	const char *b = url + sizeof(scheme) - 1, *slash = strchr(b, '/');
	size_t blen = slash ? (size_t)(slash - b) : strlen(b);
	if (blen < 3 || blen >= sizeof(sc->bucket))
		return error_set(err, -EINVAL,
		                 "'%s' names no valid bucket: a bucket name has 3 to 63 characters",
		                 url);
	for (size_t i = 0; i < blen; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-' ||
		      b[i] == '.'))
			return error_set(
			    err, -EINVAL,
			    "'%s' names no valid bucket: use lowercase letters, digits, "
			    "'-' and '.'",
			    url);
	strcpy(sc->url, url);
	memcpy(sc->bucket, b, blen);
	sc->bucket[blen] = '\0';
	const char *p = slash ? slash + 1 : "";
	size_t plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		plen--;
	memcpy(sc->prefix, p, plen);
	sc->prefix[plen] = '\0';
	if (strstr(sc->prefix, "//"))
		return error_set(err, -EINVAL, "'%s' has an empty component in its prefix", url);
	return 0;
}

int lease_parse_url(const char *url, struct lease_config *lc, struct cryo_error *err)
{
	static const char scheme[] = "etcd://";
	const char *way = "give etcd://HOST:PORT, e.g. etcd://127.0.0.1:2379";
	if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
		return error_set(err, -EINVAL, "'%s' is no etcd:// address: %s", url, way);
	const char *h = url + sizeof(scheme) - 1, *colon = strrchr(h, ':');
	if (strlen(url) >= sizeof(lc->url) - 8 || !colon || colon == h)
		return error_set(err, -EINVAL, "'%s' names no host and port: %s", url, way);
	for (const char *p = h; p < colon; p++)
		if (*p == '/' || *p == '@' || *p == '?' || *p == '#' || *p == ' ')
			return error_set(err, -EINVAL, "'%s' names no host and port: %s", url, way);
	uint64_t port;
	if (util_parse_uint(colon + 1, 65535, &port) < 0 || port == 0)
		return error_set(err, -EINVAL, "'%s' has no valid port: %s", url, way);
	snprintf(lc->url, sizeof(lc->url), "%s", url);
	snprintf(lc->endpoint, sizeof(lc->endpoint), "http://%s", h);
	return 0;
}

int lease_key(const struct store_config *sc, const char *name, const char *what, char *buf,
              size_t len)
{
	int n = snprintf(buf, len, "cryo/%s/%s%s%s/%s", sc->bucket, sc->prefix,
	                 sc->prefix[0] ? "/" : "", name, what);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int store_key(const struct store_config *sc, const char *name, uint64_t gen, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s%s%s/gen-%012" PRIu64 IMAGE_STORE_SUFFIX, sc->prefix,
	                 sc->prefix[0] ? "/" : "", name, gen);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

uint64_t store_key_generation(const char *key)
{
	const char *base = strrchr(key, '/');
	base = base ? base + 1 : key;
	if (strncmp(base, "gen-", 4) != 0)
		return 0;
	char *end;
	unsigned long long g = strtoull(base + 4, &end, 10);
	if (end == base + 4 || strcmp(end, IMAGE_STORE_SUFFIX) != 0)
		return 0;
	return (uint64_t)g;
}

void lease_record_read(const char *dir, struct store_record *rec)
{
	char path[PATH_MAX];
	_cleanup_free_ char *text = NULL;
	if (snprintf(path, sizeof(path), "%s/%s", dir, LEASE_RECORD) >= (int)sizeof(path) ||
	    util_read_file(path, &text, NULL) < 0)
		return;
	_cleanup_json_ struct json_object *o = cryo_json_parse(text);
	const char *url = o ? cryo_json_str(o, "url") : NULL;
	if (!url)
		return;
	const char *state = cryo_json_str(o, "state"), *error = cryo_json_str(o, "error");
	rec->lease = true;
	snprintf(rec->lease_url, sizeof(rec->lease_url), "%s", url);
	snprintf(rec->lease_state, sizeof(rec->lease_state), "%s", state ? state : "?");
	snprintf(rec->lease_error, sizeof(rec->lease_error), "%s", error ? error : "");
	rec->lease_ttl = cryo_json_int(o, "ttl", 0);
	rec->published = (uint64_t)cryo_json_int(o, "published", 0);
}

int store_record_read(const char *dir, struct store_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, STORE_RECORD) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	_cleanup_free_ char *text = NULL;
	int r = util_read_file(path, &text, NULL);
	if (r < 0) {
		lease_record_read(dir, rec);
		return r;
	}
	_cleanup_json_ struct json_object *o = cryo_json_parse(text);
	struct json_object *arr;
	if (!o || !json_object_object_get_ex(o, "remote", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return -EBADMSG;
	const char *url = cryo_json_str(o, "url"), *error = cryo_json_str(o, "error");
	snprintf(rec->url, sizeof(rec->url), "%s", url ? url : "");
	snprintf(rec->error, sizeof(rec->error), "%s", error ? error : "");
	rec->time = cryo_json_int(o, "time", 0);
	rec->error_since = cryo_json_int(o, "error_since", 0);
	size_t n = json_object_array_length(arr);
	rec->gens = calloc(n ? n : 1, sizeof(*rec->gens));
	rec->sizes = calloc(n ? n : 1, sizeof(*rec->sizes));
	if (!rec->gens || !rec->sizes) {
		store_record_clear(rec);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *g = json_object_array_get_idx(arr, i);
		int64_t gen = cryo_json_int(g, "generation", 0);
		if (gen <= 0)
			continue;
		rec->gens[rec->n] = (uint64_t)gen;
		rec->sizes[rec->n++] = (uint64_t)cryo_json_int(g, "size", 0);
	}
	lease_record_read(dir, rec);
	return 0;
}

void store_record_clear(struct store_record *rec)
{
	free(rec->gens);
	free(rec->sizes);
	memset(rec, 0, sizeof(*rec));
}

bool store_record_has(const struct store_record *rec, uint64_t gen, uint64_t *size)
{
	for (size_t i = 0; i < rec->n; i++)
		if (rec->gens[i] == gen) {
			if (size)
				*size = rec->sizes[i];
			return true;
		}
	return false;
}
