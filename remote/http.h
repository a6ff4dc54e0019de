/* What the S3 and etcd clients share of libcurl: one global initialisation,
 * a bounded in-memory reply buffer, the deadlines every request carries, and
 * a transport failure told as one line naming the service, its address and
 * the way out. Private to remote/. */
#pragma once

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

struct cryo_error;

/* curl_global_init() once per process, thread-safe. */
void http_global_init(void);

/* A reply body kept in memory, NUL-terminated, up to max bytes (a longer one
 * makes the transfer fail: no reply the clients read is that large). */
struct http_buf {
	char *data;
	size_t len, cap, max;
	bool overflow;
};

/* Appends to b; false when it would pass b->max or memory runs out. */
bool http_buf_append(struct http_buf *b, const void *p, size_t n);
void http_buf_clear(struct http_buf *b);

/* A CURLOPT_WRITEFUNCTION that appends to the struct http_buf in its
 * CURLOPT_WRITEDATA. */
size_t http_buf_write_cb(char *p, size_t size, size_t n, void *userdata);

/* The deadlines of one request: connect_ms to connect; total_ms for the whole
 * request when it is not 0 (requests with small bodies); a transfer slower
 * than 1 KiB/s for low_speed_s seconds fails in any case (large streams,
 * whose length no fixed deadline fits). */
struct http_deadlines {
	long connect_ms;
	long total_ms;
	long low_speed_s;
};

/* Sets the deadlines of d on handle h, and CURLOPT_NOSIGNAL. */
void http_set_deadlines(CURL *h, const struct http_deadlines *d);

/* Fills err with the one line for transport failure rc of a request to
 * service ("the object store", "etcd") at url, errbuf being curl's own text,
 * hint where its address was given ("AWS_ENDPOINT_URL"); returns the negative errno: -ECONNREFUSED
 * (nothing listens, or the host is unreachable), -ETIMEDOUT (a deadline of d passed), -EHOSTUNREACH
 * (the name does not resolve), -EIO otherwise. */
int http_transport_error(CURLcode rc, const char *errbuf, const char *service, const char *url,
                         const struct http_deadlines *d, const char *hint, struct cryo_error *err);
