/* The etcd client's requests: JSON POSTs to the v3 gateway on one libcurl
 * handle, each with its deadline. */
#include "etcd.h"

#include "cleanup.h"
#include "error.h"
#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPLY_MAX (1u << 20)
#define HINT      "the etcd address"

struct etcd_client {
	char endpoint[512];
	long request_ms;
	CURL *h;
	char errbuf[CURL_ERROR_SIZE];
};

int etcd_client_new(struct etcd_client **ret, const char *endpoint, long request_ms,
                    struct cryo_error *err)
{
	if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0)
		return error_set(err, -EINVAL, "etcd address '%s' is no http:// or https:// URL",
		                 endpoint);
	if (strlen(endpoint) >= sizeof(((struct etcd_client *)0)->endpoint))
		return error_set(err, -EINVAL, "etcd address '%.64s...' is too long", endpoint);
	if (request_ms <= 0)
		return error_set(err, -EINVAL, "etcd requests need a deadline above 0");
	if (sodium_init() < 0)
		return error_set(err, -EIO, "cannot start libsodium");
	http_global_init();
	struct etcd_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	strcpy(c->endpoint, endpoint);
	size_t n = strlen(c->endpoint);
	while (n > 8 && c->endpoint[n - 1] == '/')
		c->endpoint[--n] = '\0';
	c->request_ms = request_ms;
	c->h = curl_easy_init();
	if (!c->h) {
		free(c);
		return error_set(err, -ENOMEM, "cannot start libcurl");
	}
	*ret = c;
	return 0;
}

void etcd_client_free(struct etcd_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->h);
	free(c);
}

void etcd_client_set_deadline(struct etcd_client *c, long request_ms)
{
	if (request_ms > 0)
		c->request_ms = request_ms;
}

/* POSTs body to path; 0 with etcd's answer in reply when it says 200.
 * lease (0: none) names the lease a "lease not found" refusal is about. */
static int call(struct etcd_client *c, const char *path, const char *body, int64_t lease,
                struct http_buf *reply, struct cryo_error *err)
{
	if (!body)
		return -ENOMEM;
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s%s", c->endpoint, path) < 0)
		return -ENOMEM;
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!headers)
		return -ENOMEM;
	CURL *h = c->h;
	curl_easy_reset(h);
	c->errbuf[0] = '\0';
	reply->max = REPLY_MAX;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_buf_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, reply);
	struct http_deadlines d = {
	    .connect_ms = c->request_ms < 5000 ? c->request_ms : 5000,
	    .total_ms = c->request_ms,
	    .low_speed_s = c->request_ms / 1000 + 1,
	};
	http_set_deadlines(h, &d);
	CURLcode rc = curl_easy_perform(h);
	curl_slist_free_all(headers);
	if (reply->overflow)
		return error_set(err, -EBADMSG, "etcd at %s answered %s with more than 1 MiB",
		                 c->endpoint, path);
	if (rc != CURLE_OK)
		return http_transport_error(rc, c->errbuf, "etcd", c->endpoint, &d, HINT, err);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	char msg[256] = "";
	int code = 0;
	bool has_error = etcd_parse_error(reply->data, msg, sizeof(msg), &code);
	if (has_error && strstr(msg, "lease not found"))
		return error_set(err, -ENOLCK,
		                 "lease %" PRId64 " has expired or was revoked (etcd: %s): this "
		                 "client no longer owns what it held",
		                 lease, msg);
	if (status != 200 || has_error)
		return error_set(err, -EIO, "etcd at %s refused %s: HTTP %ld%s%s", c->endpoint,
		                 path, status, msg[0] ? ": " : "", msg);
	return 0;
}

int etcd_lease_grant(struct etcd_client *c, int64_t ttl_s, int64_t *id, int64_t *granted_s,
                     struct cryo_error *err)
{
	char body[64];
	snprintf(body, sizeof(body), "{\"TTL\":%" PRId64 "}", ttl_s);
	struct http_buf reply = {0};
	int64_t ttl = 0;
	int r = call(c, "/v3/lease/grant", body, 0, &reply, err);
	if (r == 0 && etcd_parse_grant(reply.data, id, &ttl) < 0)
		r = error_set(err, -EIO, "etcd at %s granted no lease: %.200s", c->endpoint,
		              reply.data ? reply.data : "");
	if (r == 0 && granted_s)
		*granted_s = ttl;
	http_buf_clear(&reply);
	return r;
}

int etcd_lease_keepalive(struct etcd_client *c, int64_t id, int64_t *ttl_s, struct cryo_error *err)
{
	char body[64];
	snprintf(body, sizeof(body), "{\"ID\":\"%" PRId64 "\"}", id);
	struct http_buf reply = {0};
	int64_t ttl = 0;
	int r = call(c, "/v3/lease/keepalive", body, id, &reply, err);
	if (r == 0) {
		r = etcd_parse_keepalive(reply.data, &ttl);
		if (r == -ENOLCK)
			error_set(err, r,
			          "lease %" PRId64
			          " has expired or was revoked (etcd renewed it to "
			          "no TTL): this client no longer owns what it held",
			          id);
		else if (r < 0)
			r = error_set(err, -EIO, "etcd at %s answered a keep-alive with: %.200s",
			              c->endpoint, reply.data ? reply.data : "");
	}
	if (r == 0 && ttl_s)
		*ttl_s = ttl;
	http_buf_clear(&reply);
	return r;
}

int etcd_lease_revoke(struct etcd_client *c, int64_t id, struct cryo_error *err)
{
	char body[64];
	snprintf(body, sizeof(body), "{\"ID\":\"%" PRId64 "\"}", id);
	struct http_buf reply = {0};
	int r = call(c, "/v3/lease/revoke", body, id, &reply, err);
	http_buf_clear(&reply);
	return r;
}

/* A value fit for one line of a message: printable, at most 64 bytes. */
static void printable(const char *v, char *out, size_t len)
{
	size_t o = 0;
	for (const char *p = v ? v : ""; *p && o + 1 < len && o < 64; p++)
		out[o++] = (*p >= ' ' && *p < 127) ? *p : '?';
	out[o] = '\0';
}

/* Posts transaction body and reads its answer: whether it succeeded, and
 * the key-value its failure branch read (kv->value NULL if none). */
static int txn(struct etcd_client *c, const char *body, int64_t lease, bool *ok, struct etcd_kv *kv,
               struct cryo_error *err)
{
	struct http_buf reply = {0};
	int r = call(c, "/v3/kv/txn", body, lease, &reply, err);
	if (r == 0 && etcd_parse_txn(reply.data, ok, kv) < 0)
		r = error_set(err, -EIO, "etcd at %s answered a transaction with: %.200s",
		              c->endpoint, reply.data ? reply.data : "");
	http_buf_clear(&reply);
	return r;
}

int etcd_acquire(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                 struct etcd_kv *holder, struct cryo_error *err)
{
	_cleanup_free_ char *body = etcd_json_acquire(key, value, lease);
	/* The holder may let go between the compare and the read that shows it:
	 * then ask again (a few times at most). */
	for (int attempt = 0; attempt < 3; attempt++) {
		struct etcd_kv kv = {0};
		bool ok = false;
		int r = txn(c, body, lease, &ok, &kv, err);
		if (r < 0 || ok || (kv.value && kv.lease == lease)) {
			etcd_kv_clear(&kv);
			return r;
		}
		if (kv.value) {
			char shown[80];
			printable(kv.value, shown, sizeof(shown));
			r = error_set(err, -EBUSY,
			              "'%s' is held by lease %" PRId64
			              " ('%s'), not by this client's "
			              "lease %" PRId64,
			              key, kv.lease, shown, lease);
			if (holder) {
				etcd_kv_clear(holder);
				*holder = kv;
			} else {
				etcd_kv_clear(&kv);
			}
			return r;
		}
	}
	return error_set(err, -EIO, "'%s' kept changing hands while this client asked for it", key);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int etcd_acquire_wait(struct etcd_client *c, const char *key, const char *value, int64_t lease,
                      long poll_ms, long timeout_ms, struct cryo_error *err)
{
	int64_t deadline = now_ms() + timeout_ms;
	for (;;) {
		int r = etcd_acquire(c, key, value, lease, NULL, err);
		if (r != -EBUSY)
			return r;
		if (now_ms() + poll_ms > deadline)
			return error_wrap(err, -ETIMEDOUT, "waited %ld.%03ld s in vain",
			                  timeout_ms / 1000, timeout_ms % 1000);
		/* A waiter's own lease would expire while it waits if left alone. */
		r = etcd_lease_keepalive(c, lease, NULL, err);
		if (r < 0)
			return r;
		sleep_ms(poll_ms);
	}
}

int etcd_put_if_owner(struct etcd_client *c, const char *owner_key, int64_t lease, const char *key,
                      const char *value, struct cryo_error *err)
{
	_cleanup_free_ char *body = etcd_json_put_if_owner(owner_key, lease, key, value);
	struct etcd_kv kv = {0};
	bool ok = false;
	int r = txn(c, body, lease, &ok, &kv, err);
	if (r == 0 && !ok) {
		char shown[80];
		printable(kv.value, shown, sizeof(shown));
		if (kv.value)
			r = error_set(err, -ENOLCK,
			              "'%s' not published: '%s' is held by lease %" PRId64
			              " ('%s'), not by this client's lease %" PRId64
			              ": this client does not own it (any more)",
			              key, owner_key, kv.lease, shown, lease);
		else
			r = error_set(
			    err, -ENOLCK,
			    "'%s' not published: nobody holds '%s' (lease %" PRId64
			    " expired or was revoked): this client does not own it (any more)",
			    key, owner_key, lease);
	}
	etcd_kv_clear(&kv);
	return r;
}

int etcd_get(struct etcd_client *c, const char *key, struct etcd_kv *ret, struct cryo_error *err)
{
	size_t n = strlen(key);
	size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
	_cleanup_free_ char *k = malloc(len);
	_cleanup_free_ char *body = k ? malloc(len + 16) : NULL;
	if (!body)
		return -ENOMEM;
	sodium_bin2base64(k, len, (const unsigned char *)key, n, sodium_base64_VARIANT_ORIGINAL);
	snprintf(body, len + 16, "{\"key\":\"%s\"}", k);
	struct http_buf reply = {0};
	int r = call(c, "/v3/kv/range", body, 0, &reply, err);
	if (r == 0) {
		r = etcd_parse_range(reply.data, ret);
		if (r == -ENOENT)
			error_set(err, r, "etcd at %s has no key '%s'", c->endpoint, key);
		else if (r < 0)
			r = error_set(err, -EIO, "etcd at %s answered a range with: %.200s",
			              c->endpoint, reply.data ? reply.data : "");
	}
	http_buf_clear(&reply);
	return r;
}
