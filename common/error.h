/* The one way a failure's reason travels between cryo's layers.
 *
 * A function that can fail returns 0 (or a count) on success and a negative
 * errno on failure; when the caller needs to know why, it also takes a
 * struct cryo_error and fills it with one line naming the cause. Library
 * layers (common, images, criu-glue) never log: the runtime logs once, where
 * the error is handled, adding what it was doing and the way out. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

/* Long enough for a path or two and CRIU's own line; a longer reason is cut
 * and ends in "...". */
#define CRYO_ERROR_MAX 1024

struct cryo_error {
	char msg[CRYO_ERROR_MAX];
};

/* Formats the reason into err (if err is not NULL) and returns r. */
int error_set(struct cryo_error *err, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same with the arguments in ap, for a function of its own that takes a
 * format (one that also records the failure elsewhere, say). */
int error_setv(struct cryo_error *err, int r, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Puts context before the reason already in err ("context: reason") and
 * returns r; with no reason yet, the context alone. */
int error_wrap(struct cryo_error *err, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds to the end of the reason already in err ("reason; more") and
 * returns r. */
int error_append(struct cryo_error *err, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
