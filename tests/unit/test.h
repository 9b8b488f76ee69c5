/*
 * test.h: banger's unit-test harness (after seatd's include/test.h).
 *
 * A test is `TEST(name) { ... }` in any C file under tests/unit/ plus one X(name)
 * line in test_list.h; main.c runs them all, or those named on its command
 * line.  A test defined but missing from the list fails to compile
 * (-Wmissing-prototypes); one listed but not defined fails to link.
 *
 * CHECK* record a failure with file:line and the values, and let the test go
 * on; REQUIRE records one and returns from the test (use it before a pointer
 * that must not be NULL is dereferenced).  Single-threaded: call checks from
 * the test's own thread.
 */
#ifndef BANGER_TEST_H
#define BANGER_TEST_H

#include <stdbool.h>

#include "test_list.h"

#define TEST(name) void test_##name(void)

#define TEST_DECLARE_(name) TEST(name);
TEST_LIST(TEST_DECLARE_)
#undef TEST_DECLARE_

/* Record a failure of the running test. */
void test_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The checks behind the macros; false when they failed. */
bool test_eq_int(const char *file, int line, const char *ea, const char *eb, long long a,
		 long long b);
bool test_eq_str(const char *file, int line, const char *ea, const char *eb, const char *a,
		 const char *b);
bool test_str_contains(const char *file, int line, const char *eh, const char *h,
		       const char *needle);

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond))                                                 \
			test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);   \
	} while (0)

#define REQUIRE(cond)                                                        \
	do {                                                                 \
		if (!(cond)) {                                               \
			test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond); \
			return;                                              \
		}                                                            \
	} while (0)

#define CHECK_EQ_INT(a, b) \
	test_eq_int(__FILE__, __LINE__, #a, #b, (long long)(a), (long long)(b))
#define CHECK_EQ_STR(a, b) test_eq_str(__FILE__, __LINE__, #a, #b, (a), (b))
#define CHECK_STR_CONTAINS(haystack, needle) \
	test_str_contains(__FILE__, __LINE__, #haystack, (haystack), (needle))

/* A scratch directory for this run, removed when the run ends. */
const char *test_tmpdir(void);
/* Write text to test_tmpdir()/name (creating directories in name); returns
 * the path, which the caller frees. */
char *test_write_file(const char *name, const char *text);

#endif
