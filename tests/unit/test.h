/* A minimal harness for cryo's C unit tests: CHECK() records a failure with
 * its place and goes on; main returns non-zero if any check failed. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

static int test_failures;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define TEST_MAIN(...)                                                                             \
	int main(void)                                                                             \
	{                                                                                          \
		void (*tests[])(void) = {__VA_ARGS__};                                             \
		for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)                      \
			tests[i]();                                                                \
		if (test_failures)                                                                 \
			fprintf(stderr, "%d check(s) failed\n", test_failures);                    \
		return test_failures ? 1 : 0;                                                      \
	}
