/* etcd's JSON gateway, written and read through json-c: keys and values are
 * base64 (libsodium's), int64 fields are strings, and fields at their default
 * value are left out of replies (a failed transaction has no "succeeded"). */
#include "etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *b64(const char *s)
{
	size_t n = strlen(s);
	size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	char *out = malloc(len);
	if (out)
		sodium_bin2base64(out, len, (const unsigned char *)s, n,
		                  sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* A base64 field decoded, NUL-terminated; "" for an empty one; NULL if it is
 * no base64 or memory runs out. */
static char *unb64(const char *s, size_t *ret_len)
{
	size_t n = strlen(s);
	char *out = malloc(n + 1);
	size_t len = 0;
	if (!out)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, n + 1, s, n, NULL, &len, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(out);
		return NULL;
	}
	out[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return out;
}

static struct json_object *str(const char *s)
{
	return json_object_new_string(s);
}

static struct json_object *i64(int64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return json_object_new_string(buf);
}

static struct json_object *obj(const char *k1, struct json_object *v1, const char *k2,
                               struct json_object *v2, const char *k3, struct json_object *v3)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, k1, v1);
	if (k2)
		json_object_object_add(o, k2, v2);
	if (k3)
		json_object_object_add(o, k3, v3);
	return o;
}

static struct json_object *one(struct json_object *v)
{
	struct json_object *a = json_object_new_array();
	json_object_array_add(a, v);
	return a;
}

/* The text of a transaction: if compare, then put key = value (with lease
 * unless 0), else read range_key. */
static char *txn(struct json_object *compare, const char *key, const char *value, int64_t lease,
                 const char *range_key)
{
	char *k = b64(key), *v = b64(value), *rk = b64(range_key), *out = NULL;
	if (k && v && rk) {
		struct json_object *put = obj("key", str(k), "value", str(v),
		                              lease ? "lease" : NULL, lease ? i64(lease) : NULL);
		struct json_object *t =
		    obj("compare", one(compare), "success",
		        one(obj("request_put", put, NULL, NULL, NULL, NULL)), "failure",
		        one(obj("request_range", obj("key", str(rk), NULL, NULL, NULL, NULL), NULL,
		                NULL, NULL, NULL)));
		const char *text = json_object_to_json_string_ext(t, JSON_C_TO_STRING_PLAIN);
		out = text ? strdup(text) : NULL;
		json_object_put(t);
	} else {
		json_object_put(compare);
	}
	free(k);
	free(v);
	free(rk);
	return out;
}

char *etcd_json_acquire(const char *key, const char *value, int64_t lease)
{
	char *k = b64(key);
	if (!k)
		return NULL;
	/* The key has never been created (or was deleted since): nobody holds it. */
	struct json_object *cmp = json_object_new_object();
	json_object_object_add(cmp, "target", str("CREATE"));
	json_object_object_add(cmp, "result", str("EQUAL"));
	json_object_object_add(cmp, "key", str(k));
	json_object_object_add(cmp, "create_revision", str("0"));
	free(k);
	return txn(cmp, key, value, lease, key);
}

char *etcd_json_put_if_owner(const char *owner_key, int64_t lease, const char *key,
                             const char *value)
{
	char *k = b64(owner_key);
	if (!k)
		return NULL;
	/* A key that does not exist compares as held by lease 0, so an owner key
	 * deleted with its expired lease fails too. */
	struct json_object *cmp = json_object_new_object();
	json_object_object_add(cmp, "target", str("LEASE"));
	json_object_object_add(cmp, "result", str("EQUAL"));
	json_object_object_add(cmp, "key", str(k));
	json_object_object_add(cmp, "lease", i64(lease));
	free(k);
	return txn(cmp, key, value, 0, owner_key);
}

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* An int64 field, written as a string (or a number); def when absent, and
 * false when it is something else. */
static bool get_i64(struct json_object *o, const char *key, int64_t def, int64_t *ret)
{
	struct json_object *v = get(o, key);
	*ret = def;
	if (!v)
		return true;
	if (json_object_is_type(v, json_type_int)) {
		*ret = json_object_get_int64(v);
		return true;
	}
	if (!json_object_is_type(v, json_type_string))
		return false;
	const char *s = json_object_get_string(v);
	char *end;
	errno = 0;
	long long n = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return false;
	*ret = n;
	return true;
}

static struct json_object *parse(const char *json)
{
	struct json_object *o = json ? json_tokener_parse(json) : NULL;
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

void etcd_kv_clear(struct etcd_kv *kv)
{
	free(kv->value);
	*kv = (struct etcd_kv){0};
}

static int parse_kv(struct json_object *o, struct etcd_kv *kv)
{
	struct json_object *v = get(o, "value");
	const char *text =
	    v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
	etcd_kv_clear(kv);
	if (!get_i64(o, "lease", 0, &kv->lease) ||
	    !get_i64(o, "create_revision", 0, &kv->create_revision) ||
	    !get_i64(o, "mod_revision", 0, &kv->mod_revision))
		return -EBADMSG;
	kv->value = unb64(text, &kv->value_len);
	return kv->value ? 0 : -EBADMSG;
}

/* The first element of array field key of o, or NULL. */
static struct json_object *first(struct json_object *o, const char *key)
{
	struct json_object *a = get(o, key);
	if (!a || !json_object_is_type(a, json_type_array) || json_object_array_length(a) == 0)
		return NULL;
	return json_object_array_get_idx(a, 0);
}

int etcd_parse_grant(const char *json, int64_t *id, int64_t *ttl)
{
	struct json_object *o = parse(json);
	int r = o && get(o, "ID") && get_i64(o, "ID", 0, id) && *id != 0 &&
	                get_i64(o, "TTL", 0, ttl) && *ttl > 0
	            ? 0
	            : -EBADMSG;
	json_object_put(o);
	return r;
}

int etcd_parse_keepalive(const char *json, int64_t *ttl)
{
	struct json_object *o = parse(json);
	struct json_object *res = get(o, "result");
	int r;
	if (!res || !json_object_is_type(res, json_type_object))
		r = -EBADMSG;
	else if (!get_i64(res, "TTL", 0, ttl))
		r = -EBADMSG;
	else
		r = *ttl > 0 ? 0 : -ENOLCK;
	json_object_put(o);
	return r;
}

int etcd_parse_txn(const char *json, bool *succeeded, struct etcd_kv *kv)
{
	struct json_object *o = parse(json);
	int r = o && get(o, "header") ? 0 : -EBADMSG;
	struct json_object *s = get(o, "succeeded");
	*succeeded = s && json_object_is_type(s, json_type_boolean) && json_object_get_boolean(s);
	etcd_kv_clear(kv);
	struct json_object *range = get(first(o, "responses"), "response_range");
	struct json_object *k = first(range, "kvs");
	if (r == 0 && k)
		r = parse_kv(k, kv);
	json_object_put(o);
	return r;
}

int etcd_parse_range(const char *json, struct etcd_kv *kv)
{
	struct json_object *o = parse(json);
	int r = o && get(o, "header") ? 0 : -EBADMSG;
	struct json_object *k = first(o, "kvs");
	etcd_kv_clear(kv);
	if (r == 0)
		r = k ? parse_kv(k, kv) : -ENOENT;
	json_object_put(o);
	return r;
}

bool etcd_parse_error(const char *json, char *msg, size_t len, int *code)
{
	struct json_object *root = parse(json), *o = root;
	struct json_object *e = get(root, "error");
	/* A streamed reply (keep-alive) nests it: {"error":{"grpc_code":5,
	 * "message":...}}. */
	if (e && json_object_is_type(e, json_type_object)) {
		o = e;
		e = get(o, "message");
	} else if (!e) {
		e = get(root, "message");
	}
	bool ok = e && json_object_is_type(e, json_type_string);
	if (ok) {
		int64_t c = 0;
		if (!get_i64(o, "code", 0, &c) || c == 0)
			get_i64(o, "grpc_code", 0, &c);
		*code = (int)c;
		snprintf(msg, len, "%s", json_object_get_string(e));
	}
	json_object_put(root);
	return ok;
}
