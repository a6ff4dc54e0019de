#include "http.h"

#include "error.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void global_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

void http_global_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, global_init_once);
}

bool http_buf_append(struct http_buf *b, const void *p, size_t n)
{
	if (b->len + n > b->max || b->len + n + 1 < b->len) {
		b->overflow = true;
		return false;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (!d)
			return false;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

void http_buf_clear(struct http_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->overflow = false;
}

size_t http_buf_write_cb(char *p, size_t size, size_t n, void *userdata)
{
	return http_buf_append(userdata, p, size * n) ? size * n : 0;
}

void http_set_deadlines(CURL *h, const struct http_deadlines *d)
{
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, d->connect_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, d->total_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, d->low_speed_s);
}

int http_transport_error(CURLcode rc, const char *errbuf, const char *service, const char *url,
                         const struct http_deadlines *d, const char *hint, struct cryo_error *err)
{
	const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(rc);
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return error_set(err, -ECONNREFUSED,
		                 "cannot reach %s at %s (%s): is it running? check %s", service,
		                 url, why, hint);
	case CURLE_COULDNT_RESOLVE_HOST:
		return error_set(err, -EHOSTUNREACH,
		                 "cannot reach %s at %s (%s): is the name right? check %s", service,
		                 url, why, hint);
	case CURLE_OPERATION_TIMEDOUT:
		if (d->total_ms)
			return error_set(err, -ETIMEDOUT,
			                 "%s at %s did not answer within %ld.%03ld s (%s): is it "
			                 "stopped, overloaded or cut off? check %s",
			                 service, url, d->total_ms / 1000, d->total_ms % 1000, why,
			                 hint);
		return error_set(err, -ETIMEDOUT,
		                 "%s at %s stalled (under 1 KiB/s for %ld s: %s): is it "
		                 "stopped, overloaded or cut off? check %s",
		                 service, url, d->low_speed_s, why, hint);
	default: return error_set(err, -EIO, "request to %s at %s failed: %s", service, url, why);
	}
}
