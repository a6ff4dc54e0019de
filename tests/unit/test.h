/* A minimal harness for cryo's C unit tests, speaking TAP (as meson's
 * protocol: 'tap' reads it): each function given to TEST_MAIN is one case,
 * reported "ok N - name" or "not ok N - name" with each failed CHECK() as a
 * diagnostic line, or "ok N - name # SKIP reason" after SKIP(). A failed
 * CHECK() records its place and the case goes on. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;     /* failed checks in the current case */
static const char *test_skip; /* why the current case was skipped, or NULL */
static __attribute__((unused)) char test_skip_buf[256];
/* The current case's failed checks, printed after its "not ok" line. */
static char test_diag[8192];
static size_t test_diag_len;

static inline void test_note_failure(const char *file, int line, const char *cond)
{
	if (test_diag_len >= sizeof(test_diag))
		return;
	int n = snprintf(test_diag + test_diag_len, sizeof(test_diag) - test_diag_len,
	                 "# %s:%d: check failed: %s\n", file, line, cond);
	if (n > 0)
		test_diag_len += (size_t)n;
	if (test_diag_len >= sizeof(test_diag))
		test_diag_len = sizeof(test_diag) - 1;
}

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			test_note_failure(__FILE__, __LINE__, #cond);                              \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

/* Ends the current case as skipped, with a reason (printf-style). */
#define SKIP(...)                                                                                  \
	do {                                                                                       \
		/* The reason is for people: a long one is cut, and says so. */                    \
		if (snprintf(test_skip_buf, sizeof(test_skip_buf), __VA_ARGS__) >=                 \
		    (int)sizeof(test_skip_buf))                                                    \
			memcpy(test_skip_buf + sizeof(test_skip_buf) - 4, "...", 4);               \
		test_skip = test_skip_buf;                                                         \
		return;                                                                            \
	} while (0)

/* The name of case i in the stringified list of TEST_MAIN's arguments. */
static inline void test_name(const char *list, size_t i, char *buf, size_t len)
{
	const char *p = list;
	for (; i > 0 && p; i--) {
		p = strchr(p, ',');
		if (p)
			p++;
	}
	if (!p) {
		snprintf(buf, len, "case %zu", i);
		return;
	}
	p += strspn(p, " \t\n");
	size_t n = strcspn(p, ", \t\n");
	snprintf(buf, len, "%.*s", (int)n, p);
}

#define TEST_MAIN(...)                                                                             \
	int main(void)                                                                             \
	{                                                                                          \
		void (*tests[])(void) = {__VA_ARGS__};                                             \
		size_t n = sizeof(tests) / sizeof(tests[0]);                                       \
		int failed = 0;                                                                    \
		setvbuf(stdout, NULL, _IOLBF, 0);                                                  \
		printf("1..%zu\n", n);                                                             \
		for (size_t i = 0; i < n; i++) {                                                   \
			char name[128];                                                            \
			test_name(#__VA_ARGS__, i, name, sizeof(name));                            \
			test_failures = 0;                                                         \
			test_diag_len = 0;                                                         \
			test_skip = NULL;                                                          \
			tests[i]();                                                                \
			if (test_failures) {                                                       \
				failed++;                                                          \
				printf("not ok %zu - %s\n%.*s", i + 1, name, (int)test_diag_len,   \
				       test_diag);                                                 \
			} else if (test_skip) {                                                    \
				printf("ok %zu - %s # SKIP %s\n", i + 1, name, test_skip);         \
			} else {                                                                   \
				printf("ok %zu - %s\n", i + 1, name);                              \
			}                                                                          \
		}                                                                                  \
		return failed ? 1 : 0;                                                             \
	}
