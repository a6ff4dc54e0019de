/* The S3 client's requests: one libcurl handle, signed by libcurl's SigV4,
 * bodies streamed from and to file descriptors. */
#include "s3.h"

#include "cleanup.h"
#include "error.h"
#include "http.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The largest reply kept in memory: a listing of 1000 keys is ~300 KiB. */
#define REPLY_MAX (8u << 20)
#define MAX_PARTS 10000
/* SHA-256 of an empty body, as SigV4 wants it in x-amz-content-sha256. */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_client {
	struct s3_config cfg;
	CURL *h;
	char sigv4[128];
	char errbuf[CURL_ERROR_SIZE];
};

/* One request and what came back. */
struct request {
	const char *method; /* GET HEAD PUT POST DELETE */
	const char *bucket, *key, *query;
	/* PUT: the bytes [in_off, in_off + in_len) of in_fd, with has_in. */
	bool has_in;
	int in_fd;
	uint64_t in_off, in_len, sent;
	/* POST: a small body in memory. */
	const char *body;
	/* GET with has_out: the body goes to out_fd when the answer is 2xx. */
	bool has_out;
	int out_fd;
	const char *expect_etag;
	uint64_t received;
	EVP_MD_CTX *md5; /* of the bytes sent or received */

	int local_errno; /* reading in_fd or writing out_fd failed */
	bool shrank;     /* in_fd ended before in_len */
	bool stale;      /* the ETag was not expect_etag */

	long status;
	char etag[80];
	uint64_t length;
	bool have_length;
	struct http_buf reply; /* any body not written to out_fd */
};

int s3_client_new(struct s3_client **ret, const struct s3_config *cfg, struct cryo_error *err)
{
	if (cfg->part_size < S3_MIN_PART)
		return error_set(err, -EINVAL, "S3 parts must be at least 5 MiB, not %llu bytes",
		                 (unsigned long long)cfg->part_size);
	if (cfg->multipart_from < cfg->part_size)
		return error_set(err, -EINVAL,
		                 "multipart uploads must start at one part's size (%llu) or more",
		                 (unsigned long long)cfg->part_size);
	http_global_init();
	struct s3_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cfg = *cfg;
	c->h = curl_easy_init();
	if (!c->h) {
		free(c);
		return error_set(err, -ENOMEM, "cannot start libcurl");
	}
	snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", cfg->region);
	*ret = c;
	return 0;
}

void s3_client_free(struct s3_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->h);
	explicit_bzero(c->cfg.secret_key, sizeof(c->cfg.secret_key));
	free(c);
}

/* s3://bucket/key for messages. */
static void object_name(char *out, size_t len, const char *bucket, const char *key)
{
	snprintf(out, len, "s3://%.200s%s%.400s", bucket, key ? "/" : "", key ? key : "");
}

static void unquote(const char *in, size_t n, char *out, size_t len)
{
	while (n && (in[n - 1] == '\r' || in[n - 1] == '\n' || in[n - 1] == ' '))
		n--;
	while (n && *in == ' ')
		in++, n--;
	if (n >= 2 && in[0] == '"' && in[n - 1] == '"')
		in++, n -= 2;
	snprintf(out, len, "%.*s", (int)n, in);
}

static size_t on_header(char *p, size_t size, size_t n, void *userdata)
{
	struct request *q = userdata;
	size_t len = size * n;
	if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
		/* A new status line (after a 100 Continue, say) starts afresh. */
		const char *sp = memchr(p, ' ', len);
		q->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		q->etag[0] = '\0';
		q->have_length = false;
	} else if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
		unquote(p + 5, len - 5, q->etag, sizeof(q->etag));
	} else if (len > 15 && strncasecmp(p, "content-length:", 15) == 0) {
		char buf[32];
		snprintf(buf, sizeof(buf), "%.*s", (int)(len - 15), p + 15);
		q->length = strtoull(buf, NULL, 10);
		q->have_length = true;
	}
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *userdata)
{
	struct request *q = userdata;
	size_t len = size * n;
	if (!q->has_out || q->status / 100 != 2)
		return http_buf_append(&q->reply, p, len) ? len : 0;
	if (q->expect_etag && strcmp(q->etag, q->expect_etag) != 0) {
		q->stale = true;
		return 0;
	}
	for (size_t done = 0; done < len;) {
		ssize_t w = write(q->out_fd, p + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			q->local_errno = errno;
			return 0;
		}
		done += (size_t)w;
	}
	if (q->md5)
		EVP_DigestUpdate(q->md5, p, len);
	q->received += len;
	return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *userdata)
{
	struct request *q = userdata;
	uint64_t left = q->in_len - q->sent;
	size_t want = size * n < left ? size * n : (size_t)left;
	if (want == 0)
		return 0;
	for (;;) {
		ssize_t r = pread(q->in_fd, p, want, (off_t)(q->in_off + q->sent));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			q->local_errno = errno;
			return CURL_READFUNC_ABORT;
		}
		if (r == 0) {
			q->shrank = true;
			return CURL_READFUNC_ABORT;
		}
		if (q->md5)
			EVP_DigestUpdate(q->md5, p, (size_t)r);
		q->sent += (uint64_t)r;
		return (size_t)r;
	}
}

static void hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void sha256_hex(const char *s, size_t n, char out[65])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_Digest(s, n, d, &len, EVP_sha256(), NULL);
	hex(d, len, out);
}

/* Sends q; returns 0 once the store has answered (any HTTP status, in
 * q->status), or a negative errno with err filled when the answer never came
 * or a local file failed. */
static int perform(struct s3_client *c, struct request *q, struct cryo_error *err)
{
	CURL *h = c->h;
	_cleanup_free_ char *bucket = s3_uri_encode(q->bucket, false);
	_cleanup_free_ char *key = q->key ? s3_uri_encode(q->key, true) : NULL;
	if (!bucket || (q->key && !key))
		return -ENOMEM;
	_cleanup_free_ char *url = NULL;
	if (asprintf(&url, "%s/%s%s%s%s%s", c->cfg.endpoint, bucket, key ? "/" : "", key ? key : "",
	             q->query ? "?" : "", q->query ? q->query : "") < 0)
		return -ENOMEM;

	char sha[65] = EMPTY_SHA256;
	if (q->has_in)
		strcpy(sha, "UNSIGNED-PAYLOAD");
	else if (q->body)
		sha256_hex(q->body, strlen(q->body), sha);
	char sha_header[128];
	snprintf(sha_header, sizeof(sha_header), "x-amz-content-sha256: %s", sha);
	struct curl_slist *headers = curl_slist_append(NULL, sha_header);
	if (q->body)
		headers = curl_slist_append(headers, "Content-Type: application/xml");
	if (!headers)
		return -ENOMEM;

	curl_easy_reset(h);
	c->errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
	/* Not CURLOPT_USERPWD: Swift's access keys hold a ':' ("account:user"). */
	curl_easy_setopt(h, CURLOPT_USERNAME, c->cfg.access_key);
	curl_easy_setopt(h, CURLOPT_PASSWORD, c->cfg.secret_key);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, q);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
	bool stream = q->has_in || q->has_out;
	struct http_deadlines d = {
	    .connect_ms = c->cfg.connect_ms,
	    .total_ms = stream ? 0 : c->cfg.request_ms,
	    .low_speed_s = c->cfg.low_speed_s,
	};
	http_set_deadlines(h, &d);
	if (strcmp(q->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(q->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, q);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
		                 (curl_off_t)(q->has_in ? q->in_len : 0));
	} else if (strcmp(q->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		                 (curl_off_t)(q->body ? strlen(q->body) : 0));
	} else if (strcmp(q->method, "DELETE") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
	q->reply.max = REPLY_MAX;
	CURLcode rc = curl_easy_perform(h);
	curl_slist_free_all(headers);

	char name[640];
	object_name(name, sizeof(name), q->bucket, q->key);
	if (q->local_errno)
		return error_set(err, -q->local_errno, "cannot %s the local file for %s: %s",
		                 q->has_in ? "read" : "write", name, strerror(q->local_errno));
	if (q->shrank)
		return error_set(err, -EIO,
		                 "the file for %s shrank while it was being uploaded: nothing may "
		                 "change a file while it is stored",
		                 name);
	if (q->stale)
		return error_set(err, -ESTALE,
		                 "%s changed in the store: its ETag is now %s, not %s as expected; "
		                 "list it again for its current version",
		                 name, q->etag, q->expect_etag);
	if (q->reply.overflow)
		return error_set(err, -EBADMSG,
		                 "the object store at %s answered %s with more than %u MiB: not an "
		                 "S3 reply",
		                 c->cfg.endpoint, name, REPLY_MAX >> 20);
	if (rc != CURLE_OK)
		return http_transport_error(rc, c->errbuf, "the object store", c->cfg.endpoint, &d,
		                            "AWS_ENDPOINT_URL", err);
	return 0;
}

/* The one line for an answer that is no success, from its status and S3's
 * error code. what: "put", "get", ... */
static int status_error(struct s3_client *c, struct request *q, const char *what,
                        struct cryo_error *err)
{
	char code[128], msg[512], name[640], http[768];
	if (!s3_xml_error(q->reply.data, q->reply.len, code, sizeof(code), msg, sizeof(msg)))
		code[0] = msg[0] = '\0';
	object_name(name, sizeof(name), q->bucket, q->key);
	/* "HTTP 403 SignatureDoesNotMatch: The request signature ..." */
	snprintf(http, sizeof(http), "HTTP %ld%s%s%s%s", q->status, code[0] ? " " : "", code,
	         msg[0] ? ": " : "", msg);
	if (q->status == 403 || q->status == 401)
		return error_set(err, -EACCES,
		                 "the object store at %s refused to %s %s (%s): check the "
		                 "credentials of access key '%s' (AWS_ACCESS_KEY_ID, "
		                 "AWS_SECRET_ACCESS_KEY) and what they may do",
		                 c->cfg.endpoint, what, name, http, c->cfg.access_key);
	if (strcmp(code, "NoSuchBucket") == 0)
		return error_set(err, -ENXIO,
		                 "there is no bucket '%s' at %s: create it, or name another in the "
		                 "store's URL",
		                 q->bucket, c->cfg.endpoint);
	if (q->status == 404 && q->key && (!code[0] || strcmp(code, "NoSuchKey") == 0))
		return error_set(err, -ENOENT, "there is no object %s at %s", name,
		                 c->cfg.endpoint);
	if (q->status == 412)
		return error_set(err, -ESTALE, "%s changed in the store (%s)", name, http);
	return error_set(err, -EIO, "the object store at %s refused to %s %s: %s%s",
	                 c->cfg.endpoint, what, name, http,
	                 q->status >= 500 ? " (the store failed: try again later)" : "");
}

static void request_clear(struct request *q)
{
	http_buf_clear(&q->reply);
	EVP_MD_CTX_free(q->md5);
	q->md5 = NULL;
}

#define REQUEST(...) ((struct request){__VA_ARGS__})

int s3_create_bucket(struct s3_client *c, const char *bucket, struct cryo_error *err)
{
	struct request q = REQUEST(.method = "PUT", .bucket = bucket);
	int r = perform(c, &q, err);
	if (r == 0 && q.status / 100 != 2) {
		char code[128], msg[512];
		s3_xml_error(q.reply.data, q.reply.len, code, sizeof(code), msg, sizeof(msg));
		if (q.status == 409 && strcmp(code, "BucketAlreadyOwnedByYou") == 0)
			r = 0;
		else
			r = status_error(c, &q, "create bucket", err);
	}
	request_clear(&q);
	return r;
}

static bool md5_start(struct request *q)
{
	q->md5 = EVP_MD_CTX_new();
	return q->md5 && EVP_DigestInit_ex(q->md5, EVP_md5(), NULL) == 1;
}

static void md5_finish(struct request *q, unsigned char out[16])
{
	unsigned len = 16;
	EVP_DigestFinal_ex(q->md5, out, &len);
}

/* PUTs [off, off + len) of fd with query (a part, or NULL: the whole); the
 * part's binary MD5 goes into md5 and is checked against the ETag answered. */
static int put_range(struct s3_client *c, const char *bucket, const char *key, const char *query,
                     int fd, uint64_t off, uint64_t len, unsigned char md5[16],
                     struct cryo_error *err)
{
	struct request q = REQUEST(.method = "PUT", .bucket = bucket, .key = key, .query = query,
	                           .has_in = true, .in_fd = fd, .in_off = off, .in_len = len);
	int r = md5_start(&q) ? perform(c, &q, err) : -ENOMEM;
	if (r == 0 && q.status / 100 != 2)
		r = status_error(c, &q, "put", err);
	if (r == 0) {
		char want[33];
		md5_finish(&q, md5);
		hex(md5, 16, want);
		if (strcmp(q.etag, want) != 0) {
			char name[640];
			object_name(name, sizeof(name), bucket, key);
			r = error_set(
			    err, -EBADMSG,
			    "the object store holds other bytes than were sent for %s%s%s "
			    "(its ETag '%s', the MD5 sent %s): put it again",
			    name, query ? " " : "", query ? "(a part)" : "", q.etag, want);
		}
	}
	request_clear(&q);
	return r;
}

static int multipart_abort(struct s3_client *c, const char *bucket, const char *key,
                           const char *upload_id)
{
	struct s3_param p[] = {{"uploadId", upload_id}};
	_cleanup_free_ char *query = s3_query_canonical(p, ARRAY_SIZE(p));
	if (!query)
		return -ENOMEM;
	struct request q =
	    REQUEST(.method = "DELETE", .bucket = bucket, .key = key, .query = query);
	int r = perform(c, &q, NULL);
	request_clear(&q);
	return r;
}

static int put_multipart(struct s3_client *c, const char *bucket, const char *key, int fd,
                         uint64_t size, struct s3_object *ret, struct cryo_error *err)
{
	uint64_t part = c->cfg.part_size;
	/* At most 10000 parts: larger files get larger parts (whole MiBs). */
	if ((size + part - 1) / part > MAX_PARTS)
		part = ((size + MAX_PARTS - 1) / MAX_PARTS + (1u << 20) - 1) & ~((1ULL << 20) - 1);
	size_t nparts = (size_t)((size + part - 1) / part);

	struct s3_param init_params[] = {{"uploads", NULL}};
	_cleanup_free_ char *init_query = s3_query_canonical(init_params, 1);
	if (!init_query)
		return -ENOMEM;
	struct request q =
	    REQUEST(.method = "POST", .bucket = bucket, .key = key, .query = init_query);
	int r = perform(c, &q, err);
	if (r == 0 && q.status / 100 != 2)
		r = status_error(c, &q, "start a multipart upload of", err);
	_cleanup_free_ char *upload_id =
	    r == 0 ? s3_xml_field(q.reply.data, q.reply.len, "InitiateMultipartUploadResult",
	                          "UploadId")
	           : NULL;
	request_clear(&q);
	if (r < 0)
		return r;
	if (!upload_id || !upload_id[0])
		return error_set(err, -EBADMSG,
		                 "the object store at %s answered a multipart upload's start "
		                 "without an UploadId",
		                 c->cfg.endpoint);

	_cleanup_free_ unsigned char(*md5s)[16] = calloc(nparts, 16);
	/* <Part><PartNumber>N</PartNumber><ETag>"32 hex"</ETag></Part> */
	size_t body_cap = 64 + nparts * 96;
	_cleanup_free_ char *body = malloc(body_cap);
	if (!md5s || !body) {
		multipart_abort(c, bucket, key, upload_id);
		return -ENOMEM;
	}
	size_t used = (size_t)snprintf(body, body_cap, "<CompleteMultipartUpload>");
	for (size_t i = 0; i < nparts && r == 0; i++) {
		char number[24], etag[33];
		snprintf(number, sizeof(number), "%zu", i + 1);
		struct s3_param pp[] = {{"partNumber", number}, {"uploadId", upload_id}};
		_cleanup_free_ char *query = s3_query_canonical(pp, ARRAY_SIZE(pp));
		if (!query) {
			r = -ENOMEM;
			break;
		}
		uint64_t off = i * part, len = size - off < part ? size - off : part;
		r = put_range(c, bucket, key, query, fd, off, len, md5s[i], err);
		if (r < 0) {
			error_wrap(err, r, "part %zu of %zu", i + 1, nparts);
			break;
		}
		hex(md5s[i], 16, etag);
		used += (size_t)snprintf(
		    body + used, body_cap - used,
		    "<Part><PartNumber>%zu</PartNumber><ETag>\"%s\"</ETag></Part>", i + 1, etag);
	}
	snprintf(body + used, body_cap - used, "</CompleteMultipartUpload>");

	_cleanup_free_ char *etag = NULL;
	if (r == 0) {
		struct s3_param cp[] = {{"uploadId", upload_id}};
		_cleanup_free_ char *query = s3_query_canonical(cp, ARRAY_SIZE(cp));
		q = REQUEST(.method = "POST", .bucket = bucket, .key = key, .query = query,
		            .body = body);
		r = query ? perform(c, &q, err) : -ENOMEM;
		char code[128], msg[512];
		/* S3 may answer 200 and still put an <Error> in the body. */
		if (r == 0 && (q.status / 100 != 2 || s3_xml_error(q.reply.data, q.reply.len, code,
		                                                   sizeof(code), msg, sizeof(msg))))
			r = status_error(c, &q, "complete the multipart upload of", err);
		if (r == 0)
			etag = s3_xml_field(q.reply.data, q.reply.len,
			                    "CompleteMultipartUploadResult", "ETag");
		request_clear(&q);
	}
	if (r < 0) {
		multipart_abort(c, bucket, key, upload_id);
		return r;
	}

	char want[48], got[80];
	s3_multipart_etag((const unsigned char(*)[16])md5s, nparts, want);
	unquote(etag ? etag : "", etag ? strlen(etag) : 0, got, sizeof(got));
	/* Some stores (Ceph RGW) answer an empty ETag here: then HEAD tells. */
	if (!got[0]) {
		struct s3_object o;
		r = s3_head(c, bucket, key, &o, err);
		if (r < 0)
			return r;
		snprintf(got, sizeof(got), "%s", o.etag);
	}
	if (strcmp(got, want) != 0) {
		char name[640];
		object_name(name, sizeof(name), bucket, key);
		return error_set(err, -EBADMSG,
		                 "the object store holds other bytes than were sent for %s (its "
		                 "ETag '%s', the MD5 of the parts sent %s): put it again",
		                 name, got, want);
	}
	if (ret) {
		ret->size = size;
		snprintf(ret->etag, sizeof(ret->etag), "%s", want);
	}
	return 0;
}

int s3_put(struct s3_client *c, const char *bucket, const char *key, int fd, struct s3_object *ret,
           struct cryo_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return error_set(err, -errno, "cannot stat the file to put as s3://%s/%s: %s",
		                 bucket, key, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return error_set(err, -EINVAL,
		                 "only regular files are put in the object store (s3://%s/%s)",
		                 bucket, key);
	uint64_t size = (uint64_t)st.st_size;
	if (size >= c->cfg.multipart_from)
		return put_multipart(c, bucket, key, fd, size, ret, err);
	unsigned char md5[16];
	int r = put_range(c, bucket, key, NULL, fd, 0, size, md5, err);
	if (r == 0 && ret) {
		ret->size = size;
		hex(md5, 16, ret->etag);
	}
	return r;
}

/* An ETag that is the MD5 of the whole body (32 hex digits, no "-N"). */
static bool whole_md5_etag(const char *etag)
{
	if (strlen(etag) != 32)
		return false;
	for (const char *p = etag; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

int s3_get(struct s3_client *c, const char *bucket, const char *key, int fd,
           const char *expect_etag, struct s3_object *ret, struct cryo_error *err)
{
	struct request q = REQUEST(.method = "GET", .bucket = bucket, .key = key, .has_out = true,
	                           .out_fd = fd, .expect_etag = expect_etag);
	int r = md5_start(&q) ? perform(c, &q, err) : -ENOMEM;
	if (r == 0 && q.status / 100 != 2)
		r = status_error(c, &q, "get", err);
	char name[640];
	object_name(name, sizeof(name), bucket, key);
	if (r == 0 && expect_etag && strcmp(q.etag, expect_etag) != 0)
		r = error_set(err, -ESTALE,
		              "%s changed in the store: its ETag is now %s, not %s as expected; "
		              "list it again for its current version",
		              name, q.etag, expect_etag);
	if (r == 0 && q.have_length && q.received != q.length)
		r = error_set(err, -EBADMSG, "%s arrived with %llu bytes of %llu", name,
		              (unsigned long long)q.received, (unsigned long long)q.length);
	if (r == 0 && whole_md5_etag(q.etag)) {
		unsigned char md5[16];
		char got[33];
		md5_finish(&q, md5);
		hex(md5, 16, got);
		if (strcmp(got, q.etag) != 0)
			r = error_set(
			    err, -EBADMSG,
			    "the bytes received for %s are not the store's (their MD5 %s, "
			    "its ETag %s): damaged in the store or on the way",
			    name, got, q.etag);
	}
	if (r == 0 && ret) {
		ret->size = q.received;
		snprintf(ret->etag, sizeof(ret->etag), "%s", q.etag);
	}
	request_clear(&q);
	return r;
}

int s3_head(struct s3_client *c, const char *bucket, const char *key, struct s3_object *ret,
            struct cryo_error *err)
{
	struct request q = REQUEST(.method = "HEAD", .bucket = bucket, .key = key);
	int r = perform(c, &q, err);
	if (r == 0 && q.status / 100 != 2)
		r = status_error(c, &q, "look at", err);
	if (r == 0 && ret) {
		ret->key = NULL;
		ret->size = q.length;
		snprintf(ret->etag, sizeof(ret->etag), "%s", q.etag);
	}
	request_clear(&q);
	return r;
}

int s3_delete(struct s3_client *c, const char *bucket, const char *key, struct cryo_error *err)
{
	struct request q = REQUEST(.method = "DELETE", .bucket = bucket, .key = key);
	int r = perform(c, &q, err);
	if (r == 0 && q.status / 100 != 2)
		r = status_error(c, &q, "delete", err);
	request_clear(&q);
	return r;
}

int s3_list(struct s3_client *c, const char *bucket, const char *prefix, struct s3_list *ret,
            struct cryo_error *err)
{
	_cleanup_free_ char *token = NULL;
	struct s3_list l = {0};
	int r = 0;
	for (;;) {
		struct s3_param p[4] = {{"list-type", "2"}};
		size_t n = 1;
		char page[16];
		if (c->cfg.list_page) {
			snprintf(page, sizeof(page), "%u", c->cfg.list_page);
			p[n++] = (struct s3_param){"max-keys", page};
		}
		if (prefix && *prefix)
			p[n++] = (struct s3_param){"prefix", prefix};
		if (token)
			p[n++] = (struct s3_param){"continuation-token", token};
		_cleanup_free_ char *query = s3_query_canonical(p, n);
		if (!query) {
			r = -ENOMEM;
			break;
		}
		struct request q = REQUEST(.method = "GET", .bucket = bucket, .query = query);
		r = perform(c, &q, err);
		if (r == 0 && q.status / 100 != 2)
			r = status_error(c, &q, "list", err);
		bool truncated = false;
		char *next = NULL;
		if (r == 0) {
			r = s3_xml_list(q.reply.data, q.reply.len, &l, &truncated, &next);
			if (r == -EBADMSG)
				error_set(
				    err, r,
				    "the object store at %s answered a listing of bucket '%s' with "
				    "no ListBucketResult that makes sense",
				    c->cfg.endpoint, bucket);
		}
		request_clear(&q);
		/* A token that does not move on would loop for ever. */
		if (r == 0 && truncated && token && strcmp(token, next) == 0)
			r = error_set(
			    err, -EBADMSG,
			    "the object store at %s gave the same continuation token twice "
			    "listing bucket '%s'",
			    c->cfg.endpoint, bucket);
		free(token);
		token = next;
		if (r < 0 || !truncated)
			break;
	}
	if (r < 0) {
		s3_list_clear(&l);
		return r;
	}
	*ret = l;
	return 0;
}
