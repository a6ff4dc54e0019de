/* The supervisor's and the CLI's messages: one line each, on stderr,
 * prefixed "cryo: ". Library layers never log; they return errors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

extern bool log_verbose;

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Only with --verbose. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Where the lines go instead of stderr while set (the supervisor queues them
 * behind the program's output, never waiting for its stderr's reader); each
 * comes whole, with its newline. NULL: stderr again. */
void log_set_sink(void (*sink)(const char *line, size_t len));
