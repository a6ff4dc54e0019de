#include "log.h"

#include <stdarg.h>
#include <stdio.h>

bool log_verbose;
static void (*log_sink)(const char *line, size_t len);

void log_set_sink(void (*sink)(const char *line, size_t len))
{
	log_sink = sink;
}

static void emit(const char *fmt, va_list ap)
{
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_sink) {
		char whole[1100];
		int n = snprintf(whole, sizeof(whole), "cryo: %s\n", line);
		log_sink(whole, (size_t)n);
		return;
	}
	fprintf(stderr, "cryo: %s\n", line);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	if (!log_verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	emit(fmt, ap);
	va_end(ap);
}
