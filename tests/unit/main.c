/*
 * main.c: runs the unit tests listed in test_list.h (see test.h).
 *
 *   unit-tests            run every test
 *   unit-tests NAME...    run only these
 *
 * Prints `ok NAME` or one `FAIL NAME: file:line: detail` per failed check,
 * then exactly one summary line `unit: N passed, N failed`; exits 1 when any
 * test failed, 2 on a bad command line.
 */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kind.h"
#include "test.h"
#include "util.h"

struct test {
	const char *name;
	void (*fn)(void);
};

#define TEST_ENTRY_(name) {#name, test_##name},
static const struct test tests[] = {TEST_LIST(TEST_ENTRY_)};
#undef TEST_ENTRY_

static const char *current;
static int current_failures;
static char tmpdir[64];

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	printf("FAIL %s: %s:%d: ", current, file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	current_failures++;
}

bool test_eq_int(const char *file, int line, const char *ea, const char *eb, long long a,
		 long long b)
{
	if (a == b)
		return true;
	test_fail(file, line, "%s == %s: %lld != %lld", ea, eb, a, b);
	return false;
}

bool test_eq_str(const char *file, int line, const char *ea, const char *eb, const char *a,
		 const char *b)
{
	if (a && b && strcmp(a, b) == 0)
		return true;
	test_fail(file, line, "%s == %s: \"%s\" != \"%s\"", ea, eb, a ? a : "(null)",
		  b ? b : "(null)");
	return false;
}

bool test_str_contains(const char *file, int line, const char *eh, const char *h,
		       const char *needle)
{
	if (h && strstr(h, needle))
		return true;
	test_fail(file, line, "%s does not contain \"%s\": \"%s\"", eh, needle, h ? h : "(null)");
	return false;
}

const char *test_tmpdir(void)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/banger-unit-XXXXXX");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(2);
		}
	}
	return tmpdir;
}

char *test_write_file(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", test_tmpdir(), name);
	char *dir = xstrdup(path);
	*strrchr(dir, '/') = '\0';
	mkdir_p(dir, 0755);
	free(dir);
	if (write_file_atomic(path, text, strlen(text), 0644) != 0)
		test_fail(__FILE__, __LINE__, "cannot write %s", path);
	return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static bool selected(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return true;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return true;
	return false;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		bool known = false;
		for (size_t t = 0; t < ARRAY_LEN(tests) && !known; t++)
			known = strcmp(tests[t].name, argv[i]) == 0;
		if (!known) {
			fprintf(stderr, "unit: unknown test '%s'\n", argv[i]);
			return 2;
		}
	}
	kinds_register_all();
	int passed = 0, failed = 0;
	for (size_t t = 0; t < ARRAY_LEN(tests); t++) {
		if (!selected(tests[t].name, argc, argv))
			continue;
		current = tests[t].name;
		current_failures = 0;
		tests[t].fn();
		if (current_failures) {
			failed++;
		} else {
			passed++;
			printf("ok %s\n", current);
			fflush(stdout);
		}
	}
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	printf("unit: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
