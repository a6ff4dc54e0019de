#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Marks a cut reason so that nobody mistakes it for the whole one. */
static void mark_cut(struct cryo_error *err, int n)
{
	if (n >= (int)sizeof(err->msg))
		memcpy(err->msg + sizeof(err->msg) - 4, "...", 4);
}

int error_set(struct cryo_error *err, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(err, r, fmt, ap);
	va_end(ap);
	return r;
}

int error_setv(struct cryo_error *err, int r, const char *fmt, va_list ap)
{
	if (!err)
		return r;
	mark_cut(err, vsnprintf(err->msg, sizeof(err->msg), fmt, ap));
	return r;
}

int error_wrap(struct cryo_error *err, int r, const char *fmt, ...)
{
	if (!err)
		return r;
	char old[sizeof(err->msg)];
	memcpy(old, err->msg, sizeof(old));
	old[sizeof(old) - 1] = '\0';
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && n < (int)sizeof(err->msg) && old[0]) {
		int m = snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", old);
		n = m < 0 ? n : n + m;
	}
	mark_cut(err, n);
	return r;
}

int error_append(struct cryo_error *err, int r, const char *fmt, ...)
{
	if (!err)
		return r;
	size_t used = strnlen(err->msg, sizeof(err->msg) - 1);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg + used, sizeof(err->msg) - used, fmt, ap);
	va_end(ap);
	mark_cut(err, n < 0 ? n : (int)used + n);
	return r;
}
