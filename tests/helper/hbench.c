/*
 * hbench.c: measurements of banger-helper through bangerd's own stubs
 * (helper/client.c), for tests/bench/helper.sh.
 *
 *   hbench SOCK ping N            N no-op calls on one connection
 *   hbench SOCK ping-connect N    N no-op calls, a new connection each
 *   hbench SOCK tap-rt N BRIDGE   N tap create+remove round trips
 *   hbench SOCK taps K BRIDGE     K taps one after another, then K in
 *                                 parallel (K threads, a connection each);
 *                                 each batch removed the same way
 *
 * Prints one line per figure: NAME n=.. p50_us=.. p99_us=.. or
 * NAME n=.. wall_us=..; exits non-zero if any call failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "util.h"

static const char *sock;

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *name, int64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp64);
	int i50 = n / 2, i99 = (int)((n * 99LL) / 100);
	if (i99 >= n)
		i99 = n - 1;
	printf("%s n=%d p50_us=%lld p99_us=%lld\n", name, n, (long long)v[i50], (long long)v[i99]);
}

static void conn(struct helper_client *c)
{
	char *err;
	if (helper_connect(sock, c, &err)) {
		fprintf(stderr, "hbench: %s\n", err);
		exit(1);
	}
}

static void check(int rc, char *err)
{
	if (rc) {
		fprintf(stderr, "hbench: %s\n", err ? err : "error");
		exit(1);
	}
}

struct job {
	const char *bridge;
	int i;
	bool create;
};

static void *one_tap(void *arg)
{
	struct job *j = arg;
	struct helper_client c;
	char name[16], *err = NULL;
	snprintf(name, sizeof(name), "bgb%04x", j->i);
	conn(&c);
	check(j->create ? helper_tap_create(&c, "bench-par", name, j->bridge, &err)
			: helper_tap_remove(&c, "bench-par", name, &err),
	      err);
	helper_close(&c);
	return NULL;
}

static int64_t batch(const char *bridge, int k, bool parallel, bool create)
{
	int64_t t0 = mono_us();
	if (!parallel) {
		struct helper_client c;
		char name[16], *err = NULL;
		conn(&c);
		for (int i = 0; i < k; i++) {
			snprintf(name, sizeof(name), "bgb%04x", i);
			check(create ? helper_tap_create(&c, "bench-seq", name, bridge, &err)
				     : helper_tap_remove(&c, "bench-seq", name, &err),
			      err);
		}
		helper_close(&c);
	} else {
		pthread_t *t = xcalloc((size_t)k, sizeof(*t));
		struct job *j = xcalloc((size_t)k, sizeof(*j));
		for (int i = 0; i < k; i++) {
			j[i] = (struct job){bridge, i, create};
			pthread_create(&t[i], NULL, one_tap, &j[i]);
		}
		for (int i = 0; i < k; i++)
			pthread_join(t[i], NULL);
		free(t);
		free(j);
	}
	return mono_us() - t0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: hbench SOCK ping|ping-connect|tap-rt|taps N [BRIDGE]\n");
		return 2;
	}
	sock = argv[1];
	const char *what = argv[2];
	int n = atoi(argv[3]);
	const char *bridge = argc > 4 ? argv[4] : "bgbr0";
	char *err = NULL;
	if (n <= 0)
		return 2;
	int64_t *v = xcalloc((size_t)n, sizeof(*v));
	struct helper_client c;
	if (!strcmp(what, "ping")) {
		conn(&c);
		for (int i = 0; i < 200 && i < n; i++) /* warm up */
			check(helper_ping(&c, "bench-ping", &err), err);
		for (int i = 0; i < n; i++) {
			int64_t t0 = mono_us();
			check(helper_ping(&c, "bench-ping", &err), err);
			v[i] = mono_us() - t0;
		}
		helper_close(&c);
		report("ping", v, n);
	} else if (!strcmp(what, "ping-connect")) {
		for (int i = 0; i < n; i++) {
			int64_t t0 = mono_us();
			conn(&c);
			check(helper_ping(&c, "bench-ping", &err), err);
			helper_close(&c);
			v[i] = mono_us() - t0;
		}
		report("ping-connect", v, n);
	} else if (!strcmp(what, "tap-rt")) {
		conn(&c);
		for (int i = 0; i < n; i++) {
			int64_t t0 = mono_us();
			check(helper_tap_create(&c, "bench-rt", "bgbe01", bridge, &err), err);
			check(helper_tap_remove(&c, "bench-rt", "bgbe01", &err), err);
			v[i] = mono_us() - t0;
		}
		helper_close(&c);
		report("tap-rt", v, n);
	} else if (!strcmp(what, "taps")) {
		int64_t cs = batch(bridge, n, false, true);
		int64_t rs = batch(bridge, n, false, false);
		int64_t cp = batch(bridge, n, true, true);
		int64_t rp = batch(bridge, n, true, false);
		printf("taps-create-seq n=%d wall_us=%lld\n", n, (long long)cs);
		printf("taps-create-par n=%d wall_us=%lld\n", n, (long long)cp);
		printf("taps-remove-seq n=%d wall_us=%lld\n", n, (long long)rs);
		printf("taps-remove-par n=%d wall_us=%lld\n", n, (long long)rp);
	} else {
		fprintf(stderr, "hbench: unknown figure '%s'\n", what);
		return 2;
	}
	free(v);
	return 0;
}
