/* --store s3://BUCKET/PREFIX, and the keys of the generations in it. */
#include "store-url.h"
#include "cleanup.h"
#include "error.h"
#include "json.h"
#include "util.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

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
	const char *way = "give etcd://HOST:PORT, e.g. etcd://127.0.0.1:2379";
	size_t len = strlen(url), skip = strlen("etcd://");
	if (len < skip || memcmp(url, "etcd://", skip) != 0)
		return error_set(err, -EINVAL, "'%s' is no etcd:// address: %s", url, way);
	const char *h = url + skip, *colon = memrchr(h, ':', len - skip);
	if (len >= sizeof(lc->url) - 8 || !colon || colon == h)
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

int store_object_key(const struct store_config *sc, const char *name, const char *leaf, char *buf,
                     size_t len)
{
	int n = snprintf(buf, len, "%s%s%s/%s", sc->prefix, sc->prefix[0] ? "/" : "", name, leaf);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int store_key(const struct store_config *sc, const char *name, uint64_t gen, char *buf, size_t len)
{
	char leaf[64];
	snprintf(leaf, sizeof(leaf), "gen-%012" PRIu64 IMAGE_STORE_SUFFIX, gen);
	return store_object_key(sc, name, leaf, buf, len);
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

/* STORE_OWNER_FILE: "URL ETAG" of the mark this directory put. */
static void owner_mine(const struct store_config *sc, int dir_fd, char *mine, size_t len)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int fd =
	    openat(dir_fd, STORE_OWNER_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	mine[0] = '\0';
	char buf[sizeof(sc->url) + 128];
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = '\0';
	const char *sp = strrchr(buf, ' ');
	size_t ul = strlen(sc->url);
	if (sp && (size_t)(sp - buf) == ul && !strncmp(buf, sc->url, ul))
		snprintf(mine, len, "%s", sp + 1);
}

int store_owner_claim(struct s3_client *c, const struct store_config *sc, const char *name,
                      int dir_fd, struct cryo_error *err)
{
	char key[1024];
	if (store_object_key(sc, name, "owner", key, sizeof(key)) < 0)
		return error_set(err, -ENAMETOOLONG, "the store's key for '%s' is too long", name);
	_cleanup_close_ int fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	unsigned char rnd[16];
	char body[128];
	int len = snprintf(body, sizeof(body), "cryo workload %s, mark ", name);
	if (fd < 0 || getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return error_set(err, -EIO, "cannot make the store's owner mark");
	for (size_t i = 0; i < sizeof(rnd) && len < (int)sizeof(body) - 3; i++)
		len += snprintf(body + len, sizeof(body) - (size_t)len, "%02x", rnd[i]);
	body[len++] = '\n';
	if (write(fd, body, (size_t)len) != len)
		return error_set(err, -EIO, "cannot make the store's owner mark");
	struct s3_object obj = {0};
	struct cryo_error perr = {{0}};
	int r = s3_put(c, sc->bucket, key, fd, &obj, &perr);
	if (r < 0)
		return error_set(err, r, "cannot put the store's owner mark: %s", perr.msg);
	char line[sizeof(sc->url) + sizeof(obj.etag) + 2];
	len = snprintf(line, sizeof(line), "%s %s", sc->url, obj.etag);
	r = util_write_file_at(dir_fd, STORE_OWNER_FILE, line, (size_t)len, 0600, true);
	if (r < 0)
		return error_set(err, r, "cannot write '%s': %s", STORE_OWNER_FILE, strerror(-r));
	return 0;
}

int store_owner_check(struct s3_client *c, const struct store_config *sc, const char *name,
                      int dir_fd, struct cryo_error *err)
{
	char key[1024], mine[256];
	if (store_object_key(sc, name, "owner", key, sizeof(key)) < 0)
		return error_set(err, -ENAMETOOLONG, "the store's key for '%s' is too long", name);
	owner_mine(sc, dir_fd, mine, sizeof(mine));
	struct s3_object obj = {0};
	struct cryo_error herr = {{0}};
	int r = s3_head(c, sc->bucket, key, &obj, &herr);
	if (r == 0) {
		if (mine[0] && !strcmp(mine, obj.etag))
			return 0;
		return error_set(err, -EEXIST,
		                 "%s/%s in the store holds another workload's generations (its "
		                 "owner mark is not this machine's): nothing is uploaded there; "
		                 "give this workload another --store prefix or name, take it over "
		                 "with cryo restore %s --store %s, or delete that prefix in the "
		                 "store if it is no longer needed",
		                 sc->url, name, name, sc->url);
	}
	if (r != -ENOENT)
		return error_set(err, r, "cannot read the store's owner mark: %s", herr.msg);
	return store_owner_claim(c, sc, name, dir_fd, err);
}
