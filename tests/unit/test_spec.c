/*
 * test_spec.c: unit tests for worker/spec.c: what a person submitting a spec
 * sees, accepted jobs and the exact messages for each kind of mistake.
 *
 * The tests register two kinds of their own (unit.box, unit.noop) so they do
 * not depend on which kinds the binary ships.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "kind.h"
#include "mpk.h"
#include "spec.h"
#include "test.h"
#include "util.h"

#define P "t/spec.yaml"

static const struct kind_field box_fields[] = {
	{"image", FT_STR, true},
	{"vcpus", FT_INT, false},
	{"memory", FT_SIZE, false},
	{"tags", FT_STRLIST, false},
	{"workspace", FT_ANY, false},
	{"wait", FT_DURATION, false},
	{"fast", FT_BOOL, false},
	{NULL, FT_STR, false},
};

static const struct kind box_kind = {
	.name = "unit.box",
	.summary = "a fake kind with one field of every type",
	.fields = box_fields,
};

static const struct kind_field no_fields[] = {{NULL, FT_STR, false}};

static const struct kind noop_kind = {
	.name = "unit.noop",
	.summary = "a fake kind without fields",
	.fields = no_fields,
};

static void unit_kinds(void)
{
	kinds_register(&box_kind); /* a second registration is ignored */
	kinds_register(&noop_kind);
}

static int parse(const char *yaml, struct spec *s, char **err)
{
	unit_kinds();
	return spec_parse(yaml, strlen(yaml), P, s, err);
}

static const struct spec_job *find_job(const struct spec *s, const char *name)
{
	for (size_t i = 0; i < s->njobs; i++)
		if (strcmp(s->jobs[i].name, name) == 0)
			return &s->jobs[i];
	return NULL;
}

/* Decode a job's params; the caller msgpack_unpacked_destroy()s. */
static bool params_of(const struct spec_job *j, msgpack_unpacked *u)
{
	size_t off = 0;
	msgpack_unpacked_init(u);
	return j->params && msgpack_unpack_next(u, j->params, j->params_len, &off) ==
				    MSGPACK_UNPACK_SUCCESS &&
	       off == j->params_len && u->data.type == MSGPACK_OBJECT_MAP;
}

static int64_t int_of(const msgpack_object *map, const char *key)
{
	int64_t v = -12345;
	mpk_get_int(map, key, &v);
	return v;
}

static bool str_is(const msgpack_object *o, const char *s)
{
	return mpk_str_eq(o, s);
}

static int count_lines(const char *s)
{
	int n = s && *s ? 1 : 0;
	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

/* Parse yaml, expect refusal with exactly the message want (all lines). */
#define EXPECT_ERRORS(yaml, want)                                         \
	do {                                                              \
		struct spec s_;                                           \
		char *e_ = NULL;                                          \
		CHECK_EQ_INT(parse((yaml), &s_, &e_), BG_ERR_SPEC);       \
		CHECK_EQ_STR(e_, (want));                                 \
		CHECK_EQ_INT(s_.njobs, 0);                                \
		CHECK(s_.jobs == NULL && s_.name == NULL);                \
		free(e_);                                                 \
	} while (0)

/* Parse yaml, expect refusal with a message containing want. */
#define EXPECT_ERROR_CONTAINS(yaml, want)                                 \
	do {                                                              \
		struct spec s_;                                           \
		char *e_ = NULL;                                          \
		CHECK_EQ_INT(parse((yaml), &s_, &e_), BG_ERR_SPEC);       \
		CHECK_STR_CONTAINS(e_, (want));                           \
		CHECK_EQ_INT(s_.njobs, 0);                                \
		free(e_);                                                 \
	} while (0)

TEST(spec_minimal)
{
	struct spec s;
	char *err = NULL;
	int rc = parse("jobs:\n"
		       "  a:\n"
		       "    kind: unit.noop\n",
		       &s, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	REQUIRE(rc == 0);
	CHECK_EQ_STR(s.name, "spec");
	REQUIRE(s.njobs == 1);
	const struct spec_job *j = &s.jobs[0];
	CHECK_EQ_STR(j->name, "a");
	CHECK_EQ_STR(j->kind, "unit.noop");
	CHECK_EQ_INT(j->nneeds, 0);
	CHECK(!j->when_always);
	CHECK_EQ_INT(j->priority, 0);
	CHECK_EQ_INT(j->max_attempts, 3);
	CHECK_EQ_INT(j->timeout_us, 0);
	CHECK_EQ_INT(j->delay_us, 0);
	CHECK_EQ_INT(j->retry, -1);
	CHECK_EQ_INT(j->line, 2);
	CHECK_EQ_INT(j->col, 3);
	msgpack_unpacked u;
	CHECK(params_of(j, &u));
	CHECK_EQ_INT(u.data.via.map.size, 0);
	msgpack_unpacked_destroy(&u);
	spec_release(&s);
	CHECK(s.jobs == NULL && s.njobs == 0);
}

TEST(spec_name)
{
	const char *yaml = "jobs:\n  a:\n    kind: unit.noop\n";
	struct spec s;
	char *err = NULL;
	unit_kinds();
	CHECK_EQ_INT(spec_parse(yaml, strlen(yaml), "ci/nightly.yml", &s, &err), 0);
	CHECK_EQ_STR(s.name, "nightly");
	spec_release(&s);
	CHECK_EQ_INT(spec_parse(yaml, strlen(yaml), "/x/build.yaml", &s, &err), 0);
	CHECK_EQ_STR(s.name, "build");
	spec_release(&s);
	CHECK_EQ_INT(spec_parse(yaml, strlen(yaml), "plain", &s, &err), 0);
	CHECK_EQ_STR(s.name, "plain");
	spec_release(&s);
	CHECK_EQ_INT(spec_parse(yaml, strlen(yaml), NULL, &s, &err), 0);
	CHECK_EQ_STR(s.name, "spec");
	spec_release(&s);
	const char *named = "name: release train\njobs:\n  a:\n    kind: unit.noop\n";
	CHECK_EQ_INT(spec_parse(named, strlen(named), "x.yaml", &s, &err), 0);
	CHECK_EQ_STR(s.name, "release train");
	spec_release(&s);
	CHECK(err == NULL);
}

TEST(spec_common_keys)
{
	struct spec s;
	char *err = NULL;
	int rc = parse("jobs:\n"
		       "  a:\n"
		       "    kind: unit.noop\n"
		       "  b:\n"
		       "    kind: unit.noop\n"
		       "    needs: a\n"
		       "    when: always\n"
		       "    priority: -5\n"
		       "    max_attempts: 10\n"
		       "    timeout: 1h30m\n"
		       "    delay: 500ms\n"
		       "    retry: yes\n"
		       "  c:\n"
		       "    kind: unit.noop\n"
		       "    needs: [a, b]\n"
		       "    when: on_success\n"
		       "    retry: false\n"
		       "    timeout: 90\n",
		       &s, &err);
	CHECK_EQ_INT(rc, 0);
	REQUIRE(rc == 0);
	const struct spec_job *b = find_job(&s, "b"), *c = find_job(&s, "c");
	REQUIRE(b && c);
	CHECK(b->when_always);
	CHECK_EQ_INT(b->priority, -5);
	CHECK_EQ_INT(b->max_attempts, 10);
	CHECK_EQ_INT(b->timeout_us, 5400LL * 1000000);
	CHECK_EQ_INT(b->delay_us, 500000);
	CHECK_EQ_INT(b->retry, 1);
	REQUIRE(b->nneeds == 1);
	CHECK_EQ_STR(b->needs[0], "a");
	CHECK_EQ_INT(b->line, 4);
	CHECK_EQ_INT(b->col, 3);
	CHECK(!c->when_always);
	CHECK_EQ_INT(c->retry, 0);
	CHECK_EQ_INT(c->timeout_us, 90LL * 1000000);
	REQUIRE(c->nneeds == 2);
	CHECK_EQ_STR(c->needs[0], "a");
	CHECK_EQ_STR(c->needs[1], "b");
	spec_release(&s);
}

TEST(spec_params_normalized)
{
	struct spec s;
	char *err = NULL;
	int rc = parse("jobs:\n"
		       "  box:\n"
		       "    kind: unit.box\n"
		       "    image: \"alpine:3.19\"\n"
		       "    vcpus: 4\n"
		       "    memory: 1G\n"
		       "    tags: ci\n"
		       "    wait: 2m\n"
		       "    fast: yes\n"
		       "    timeout: 20m\n"
		       "    workspace:\n"
		       "      paths: [src, /tmp]\n"
		       "      mode: 0755\n"
		       "      nested: {x: ~}\n"
		       "  small:\n"
		       "    kind: unit.box\n"
		       "    image: x\n"
		       "    tags: [a, b, c]\n"
		       "    fast: False\n",
		       &s, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	REQUIRE(rc == 0);
	const struct spec_job *box = find_job(&s, "box"), *small = find_job(&s, "small");
	REQUIRE(box && small);
	CHECK_EQ_INT(box->timeout_us, 1200LL * 1000000);
	msgpack_unpacked u;
	REQUIRE(params_of(box, &u));
	const msgpack_object *m = &u.data;
	CHECK_EQ_INT(m->via.map.size, 7); /* kind fields only: no kind, no timeout */
	CHECK(mpk_get(m, "kind") == NULL && mpk_get(m, "timeout") == NULL);
	CHECK(str_is(mpk_get(m, "image"), "alpine:3.19"));
	CHECK_EQ_INT(mpk_get(m, "vcpus")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	CHECK_EQ_INT(int_of(m, "vcpus"), 4);
	CHECK_EQ_INT(int_of(m, "memory"), 1073741824LL);
	CHECK_EQ_INT(int_of(m, "wait"), 120LL * 1000000);
	bool fast = false;
	CHECK_EQ_INT(mpk_get_bool(m, "fast", &fast), 0);
	CHECK(fast);
	const msgpack_object *tags = mpk_get(m, "tags");
	REQUIRE(tags && tags->type == MSGPACK_OBJECT_ARRAY);
	CHECK_EQ_INT(tags->via.array.size, 1);
	CHECK(str_is(&tags->via.array.ptr[0], "ci"));
	const msgpack_object *ws = mpk_get(m, "workspace");
	REQUIRE(ws && ws->type == MSGPACK_OBJECT_MAP);
	const msgpack_object *paths = mpk_get(ws, "paths");
	REQUIRE(paths && paths->type == MSGPACK_OBJECT_ARRAY && paths->via.array.size == 2);
	CHECK(str_is(&paths->via.array.ptr[1], "/tmp"));
	CHECK(str_is(mpk_get(ws, "mode"), "0755")); /* scalars stay text */
	const msgpack_object *nested = mpk_get(ws, "nested");
	REQUIRE(nested && nested->type == MSGPACK_OBJECT_MAP);
	CHECK(mpk_get(nested, "x") && mpk_get(nested, "x")->type == MSGPACK_OBJECT_NIL);
	msgpack_unpacked_destroy(&u);

	REQUIRE(params_of(small, &u));
	m = &u.data;
	CHECK_EQ_INT(m->via.map.size, 3);
	tags = mpk_get(m, "tags");
	REQUIRE(tags && tags->type == MSGPACK_OBJECT_ARRAY && tags->via.array.size == 3);
	CHECK(str_is(&tags->via.array.ptr[2], "c"));
	CHECK_EQ_INT(mpk_get_bool(m, "fast", &fast), 0);
	CHECK(!fast);
	CHECK(mpk_get(m, "memory") == NULL);
	msgpack_unpacked_destroy(&u);
	spec_release(&s);
}

TEST(spec_size_units)
{
	static const struct {
		const char *text;
		long long bytes;
	} good[] = {
		{"4096", 4096},		  {"4096B", 4096},
		{"512K", 512LL << 10},	  {"512k", 512LL << 10},
		{"512Ki", 512LL << 10},	  {"256M", 256LL << 20},
		{"256MiB", 256LL << 20},  {"1G", 1LL << 30},
		{"1Gi", 1LL << 30},	  {"1GiB", 1LL << 30},
		{"1GB", 1LL << 30},	  {"2T", 2LL << 40},
		{"0", 0},
	};
	static const char *const bad[] = {"1.5G", "G", "1X", "-1", "1iB", "1 G", "", "99999999999T"};
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		char *yaml = xasprintf("jobs:\n  box:\n    kind: unit.box\n    image: x\n"
				       "    memory: \"%s\"\n",
				       good[i].text);
		struct spec s;
		char *err = NULL;
		int rc = parse(yaml, &s, &err);
		if (!CHECK_EQ_INT(rc, 0)) {
			test_fail(__FILE__, __LINE__, "size '%s': %s", good[i].text, err);
			free(err);
		} else {
			msgpack_unpacked u;
			CHECK(params_of(&s.jobs[0], &u));
			if (!CHECK_EQ_INT(int_of(&u.data, "memory"), good[i].bytes))
				test_fail(__FILE__, __LINE__, "size '%s'", good[i].text);
			msgpack_unpacked_destroy(&u);
			spec_release(&s);
		}
		free(yaml);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		char *yaml = xasprintf("jobs:\n  box:\n    kind: unit.box\n    image: x\n"
				       "    memory: \"%s\"\n",
				       bad[i]);
		char *want = xasprintf(P ":5:13: 'memory' in job 'box' must be a size such as "
				       "'512M', '1G' or '4096', got '%s'",
				       bad[i]);
		EXPECT_ERRORS(yaml, want);
		free(want);
		free(yaml);
	}
}

TEST(spec_unknown_key)
{
	EXPECT_ERRORS("jobs:\n"
		      "  box:\n"
		      "    kind: unit.box\n"
		      "    imgae: alpine\n",
		      P ":4:5: unknown key 'imgae' in job 'box' (did you mean 'image'?)\n" P
			":2:3: job 'box' is missing required field 'image' (kind 'unit.box')");
	/* common keys are suggested too, by edit distance or by prefix */
	EXPECT_ERRORS("jobs:\n"
		      "  box:\n"
		      "    kind: unit.box\n"
		      "    image: alpine\n"
		      "    need: [a]\n"
		      "    max_att: 2\n"
		      "    frobnicate: 1\n"
		      "    name: x\n",
		      P ":5:5: unknown key 'need' in job 'box' (did you mean 'needs'?)\n" P
			":6:5: unknown key 'max_att' in job 'box' (did you mean 'max_attempts'?)\n" P
			":7:5: unknown key 'frobnicate' in job 'box'\n" P
			":8:5: unknown key 'name' in job 'box'");
	/* a key naming another kind's field is unknown for this kind */
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "    image: alpine\n",
		      P ":4:5: unknown key 'image' in job 'a'");
}

TEST(spec_duplicate_key)
{
	EXPECT_ERRORS("jobs:\n"
		      "  box:\n"
		      "    kind: unit.box\n"
		      "    image: a\n"
		      "    image: b\n"
		      "    priority: 1\n"
		      "    priority: 2\n",
		      P ":5:5: duplicate key 'image' in job 'box'\n" P
			":7:5: duplicate key 'priority' in job 'box'");
}

TEST(spec_wrong_types)
{
	EXPECT_ERRORS(
		"jobs:\n"
		"  box:\n"
		"    kind: unit.box\n"
		"    image: [alpine]\n"
		"    vcpus: two\n"
		"    memory: lots\n"
		"    fast: maybe\n"
		"    wait: soon\n"
		"    tags: {a: b}\n"
		"  c:\n"
		"    kind: unit.noop\n"
		"    needs: {x: y}\n"
		"    timeout: forever\n"
		"    retry: perhaps\n"
		"    when: sometimes\n"
		"    priority: high\n"
		"  d:\n"
		"    kind: unit.box\n"
		"    image:\n"
		"    tags: [a, [b]]\n"
		"    vcpus: 1.5\n"
		"    needs: [c, [c]]\n"
		"    kind: 5\n",
		P ":4:12: 'image' in job 'box' must be a string, got a list\n" P
		  ":5:12: 'vcpus' in job 'box' must be an integer, got 'two'\n" P
		  ":6:13: 'memory' in job 'box' must be a size such as '512M', '1G' or '4096', got 'lots'\n" P
		  ":7:11: 'fast' in job 'box' must be true or false, got 'maybe'\n" P
		  ":8:11: 'wait' in job 'box' must be a duration such as '90s', '20m' or '1h30m', got 'soon'\n" P
		  ":9:11: 'tags' in job 'box' must be a string or a list of strings, got a mapping\n" P
		  ":12:12: 'needs' in job 'c' must be a job name or a list of job names, got a mapping\n" P
		  ":13:14: 'timeout' in job 'c' must be a duration such as '90s', '20m' or '1h30m', got 'forever'\n" P
		  ":14:12: 'retry' in job 'c' must be true or false, got 'perhaps'\n" P
		  ":15:11: 'when' in job 'c' must be 'always' or 'on_success', got 'sometimes'\n" P
		  ":16:15: 'priority' in job 'c' must be an integer, got 'high'\n" P
		  ":23:5: duplicate key 'kind' in job 'd'\n" P
		  ":19:11: 'image' in job 'd' must be a string, got nothing (null)\n" P
		  ":20:15: entries of 'tags' in job 'd' must be strings, got a list\n" P
		  ":21:12: 'vcpus' in job 'd' must be an integer, got '1.5'\n" P
		  ":22:16: entries of 'needs' in job 'd' must be job names, got a list");
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: [unit.noop]\n",
		      P ":3:11: 'kind' in job 'a' must be a string, got a list");
}

TEST(spec_range_errors)
{
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "    priority: 5000\n"
		      "    max_attempts: 0\n"
		      "  b:\n"
		      "    kind: unit.noop\n"
		      "    priority: -1001\n"
		      "    max_attempts: 101\n",
		      P ":4:15: 'priority' in job 'a' must be between -1000 and 1000, got 5000\n" P
			":5:19: 'max_attempts' in job 'a' must be between 1 and 100, got 0\n" P
			":8:15: 'priority' in job 'b' must be between -1000 and 1000, got -1001\n" P
			":9:19: 'max_attempts' in job 'b' must be between 1 and 100, got 101");
	/* the bounds themselves are fine */
	struct spec s;
	char *err = NULL;
	CHECK_EQ_INT(parse("jobs:\n  a:\n    kind: unit.noop\n    priority: -1000\n"
			   "    max_attempts: 100\n",
			   &s, &err),
		     0);
	if (s.njobs == 1) {
		CHECK_EQ_INT(s.jobs[0].priority, -1000);
		CHECK_EQ_INT(s.jobs[0].max_attempts, 100);
	}
	spec_release(&s);
}

TEST(spec_unknown_kind)
{
	struct spec s;
	char *err = NULL;
	CHECK_EQ_INT(parse("jobs:\n"
			   "  a:\n"
			   "    kind: unit.bx\n"
			   "  b:\n"
			   "    kind: zzz\n"
			   "    image: fields of an unknown kind are not judged\n",
			   &s, &err),
		     BG_ERR_SPEC);
	CHECK_STR_CONTAINS(err, P ":3:11: unknown kind 'unit.bx' in job 'a' (did you mean 'unit.box'?)\n");
	CHECK_STR_CONTAINS(err, P ":5:11: unknown kind 'zzz' in job 'b' (known kinds: ");
	CHECK_STR_CONTAINS(err, "unit.box");
	CHECK_STR_CONTAINS(err, "unit.noop");
	CHECK_EQ_INT(count_lines(err), 2);
	free(err);
}

TEST(spec_missing_kind_and_field)
{
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    priority: 1\n"
		      "  b:\n"
		      "    kind: unit.box\n"
		      "    vcpus: 2\n"
		      "  c: 5\n",
		      P ":2:3: job 'a' has no 'kind'\n" P
			":4:3: job 'b' is missing required field 'image' (kind 'unit.box')\n" P
			":7:6: job 'c' must be a mapping with at least 'kind:', got '5'");
}

TEST(spec_unknown_need)
{
	EXPECT_ERRORS("jobs:\n"
		      "  build:\n"
		      "    kind: unit.noop\n"
		      "  test:\n"
		      "    kind: unit.noop\n"
		      "    needs: [build, biuld, nope]\n"
		      "  ship:\n"
		      "    kind: unit.noop\n"
		      "    needs: tset\n",
		      P ":6:20: job 'test' needs 'biuld', which is not a job in this spec "
			"(did you mean 'build'?)\n" P
			":6:27: job 'test' needs 'nope', which is not a job in this spec\n" P
			":9:12: job 'ship' needs 'tset', which is not a job in this spec "
			"(did you mean 'test'?)");
}

TEST(spec_cycle)
{
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "    needs: b\n"
		      "  b:\n"
		      "    kind: unit.noop\n"
		      "    needs: [c]\n"
		      "  c:\n"
		      "    kind: unit.noop\n"
		      "    needs: a\n"
		      "  d:\n"
		      "    kind: unit.noop\n"
		      "    needs: a\n",
		      P ":4:12: dependency cycle: a -> b -> c -> a");

	/* a long cycle is spelled out with the middle left out */
	struct sb y;
	sb_init(&y);
	sb_adds(&y, "jobs:\n");
	for (int i = 0; i < 12; i++)
		sb_addf(&y, "  j%d:\n    kind: unit.noop\n    needs: j%d\n", i, (i + 1) % 12);
	EXPECT_ERRORS(y.buf, P ":4:12: dependency cycle: j0 -> j1 -> j2 -> j3 -> j4 -> j5 -> "
			       "j6 -> j7 -> ... (3 more) -> j11 -> j0");
	sb_release(&y);
}

TEST(spec_self_need)
{
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "    needs: [a]\n",
		      P ":4:13: dependency cycle: a -> a (job 'a' needs itself)");
}

TEST(spec_duplicate_names)
{
	EXPECT_ERRORS("jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "  a:\n"
		      "    kind: unit.noop\n",
		      P ":4:3: duplicate job name 'a' (first defined at 2:3)");
}

TEST(spec_bad_job_names)
{
	char long_name[65];
	memset(long_name, 'x', 64);
	long_name[64] = '\0';
	char *yaml = xasprintf("jobs:\n"
			       "  Box: {kind: unit.noop}\n"
			       "  -x: {kind: unit.noop}\n"
			       "  \"a b\": {kind: unit.noop}\n"
			       "  %s: {kind: unit.noop}\n"
			       "  %.63s: {kind: unit.noop}\n"
			       "  0k_1.2-3: {kind: unit.noop}\n"
			       "  [x]: {kind: unit.noop}\n",
			       long_name, long_name);
	const char *rules = "use 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit";
	char *want = xasprintf(P ":2:3: invalid job name 'Box': %s\n" P
			       ":3:3: invalid job name '-x': %s\n" P
			       ":4:3: invalid job name 'a b': %s\n" P
			       ":5:3: invalid job name '%.60s...': %s\n" P
			       ":8:3: job names must be strings, got a list",
			       rules, rules, rules, long_name, rules);
	EXPECT_ERRORS(yaml, want);
	free(want);
	free(yaml);
}

TEST(spec_empty)
{
	EXPECT_ERRORS("", P ":1:1: spec has no jobs");
	EXPECT_ERRORS("# nothing but a comment\n", P ":1:1: spec has no jobs");
	EXPECT_ERRORS("jobs:\n", P ":1:6: spec has no jobs");
	EXPECT_ERRORS("jobs: {}\n", P ":1:7: spec has no jobs");
	EXPECT_ERRORS("name: x\n", P ":1:1: spec has no jobs (add a 'jobs:' mapping)");
	EXPECT_ERRORS("jobs: [a, b]\n",
		      P ":1:7: 'jobs' must be a mapping of job names to jobs, got a list");
	EXPECT_ERRORS("- a\n- b\n", P ":1:1: a spec must be a mapping with a 'jobs:' key, got a list");
}

TEST(spec_bad_yaml)
{
	EXPECT_ERRORS("jobs:\n  a: [1, 2\n",
		      P ":3:1: did not find expected ',' or ']' (while parsing a flow sequence)");
	EXPECT_ERRORS("jobs:\n  a: b\n c: d\n",
		      P ":3:2: did not find expected key (while parsing a block mapping)");
	EXPECT_ERRORS("jobs:\n  a: \xff\n", P ":2:6: invalid leading UTF-8 octet");
	EXPECT_ERRORS("jobs:\n  a:\n    kind: unit.noop\n---\njobs: {}\n",
		      P ":5:1: a spec is one YAML document; found a second one");
	EXPECT_ERRORS("jobs:\n  a: {kind: *nope}\n",
		      P ":2:13: found undefined alias");
}

TEST(spec_top_level)
{
	EXPECT_ERRORS("job:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "nmae: x\n",
		      P ":1:1: unknown top-level key 'job' (did you mean 'jobs'?)\n" P
			":4:1: unknown top-level key 'nmae' (did you mean 'name'?)\n" P
			":1:1: spec has no jobs (add a 'jobs:' mapping)");
	EXPECT_ERRORS("name: [x]\n"
		      "jobs:\n"
		      "  a:\n"
		      "    kind: unit.noop\n"
		      "jobs: {}\n",
		      P ":1:7: 'name' must be a non-empty string, got a list\n" P
			":5:1: duplicate top-level key 'jobs'");
}

TEST(spec_alias_bomb)
{
	/* "billion laughs": nine levels of ten aliases each */
	struct sb y;
	sb_init(&y);
	sb_adds(&y, "jobs:\n  box:\n    kind: unit.box\n    image: x\n    workspace:\n"
		    "      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
	for (int i = 1; i < 9; i++) {
		sb_addf(&y, "      l%d: &l%d [", i, i);
		for (int k = 0; k < 10; k++)
			sb_addf(&y, "%s*l%d", k ? ", " : "", i - 1);
		sb_adds(&y, "]\n");
	}
	struct spec s;
	char *err = NULL;
	int64_t t0 = mono_us();
	CHECK_EQ_INT(parse(y.buf, &s, &err), BG_ERR_SPEC);
	CHECK(mono_us() - t0 < 10 * 1000000); /* refused, not expanded */
	CHECK_STR_CONTAINS(err, P ":");
	CHECK_STR_CONTAINS(err, "spec refused: its aliases expand to more than 1000000 nodes");
	CHECK_EQ_INT(count_lines(err), 1);
	CHECK_EQ_INT(s.njobs, 0);
	free(err);
	sb_release(&y);

	/* an alias that contains itself */
	EXPECT_ERROR_CONTAINS("jobs:\n  box:\n    kind: unit.box\n    image: x\n"
			      "    workspace: &r [*r]\n",
			      "'workspace' in job 'box' is nested more than 64 levels deep");
	/* the same bomb through a list field */
	sb_init(&y);
	sb_adds(&y, "jobs:\n  box:\n    kind: unit.box\n    image: x\n    tags: &t [");
	for (int k = 0; k < 2000; k++)
		sb_addf(&y, "%sa", k ? ", " : "");
	sb_adds(&y, "]\n");
	for (int j = 0; j < 600; j++)
		sb_addf(&y, "  j%d:\n    kind: unit.box\n    image: x\n    tags: *t\n", j);
	EXPECT_ERROR_CONTAINS(y.buf, "spec refused: its aliases expand to more than 1000000 nodes");
	sb_release(&y);
}

TEST(spec_alias_ok)
{
	struct spec s;
	char *err = NULL;
	int rc = parse("jobs:\n"
		       "  a: &base\n"
		       "    kind: unit.box\n"
		       "    image: &img alpine:3.19\n"
		       "    tags: &t [x, y]\n"
		       "  b:\n"
		       "    kind: unit.box\n"
		       "    image: *img\n"
		       "    tags: *t\n"
		       "  c: *base\n",
		       &s, &err);
	CHECK_EQ_INT(rc, 0);
	REQUIRE(rc == 0 && s.njobs == 3);
	for (size_t i = 0; i < 3; i++) {
		msgpack_unpacked u;
		CHECK(params_of(&s.jobs[i], &u));
		CHECK(str_is(mpk_get(&u.data, "image"), "alpine:3.19"));
		const msgpack_object *t = mpk_get(&u.data, "tags");
		CHECK(t && t->type == MSGPACK_OBJECT_ARRAY && t->via.array.size == 2);
		msgpack_unpacked_destroy(&u);
	}
	spec_release(&s);
}

TEST(spec_too_many_jobs)
{
	struct sb y;
	sb_init(&y);
	sb_adds(&y, "jobs: {");
	for (int i = 0; i <= 100000; i++)
		sb_addf(&y, "%sj%d: 0", i ? ", " : "", i);
	sb_adds(&y, "}\n");
	EXPECT_ERRORS(y.buf, P ":1:7: spec has 100001 jobs; at most 100000 are allowed");
	sb_release(&y);

	msgpack_sbuffer buf;
	msgpack_packer pk;
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 100001);
	for (int i = 0; i <= 100000; i++)
		msgpack_pack_nil(&pk);
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	REQUIRE(msgpack_unpack_next(&u, buf.data, buf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
	struct spec s;
	char *err = NULL;
	CHECK_EQ_INT(spec_from_msgpack(&u.data, NULL, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err, "jobs: spec has 100001 jobs; at most 100000 are allowed");
	free(err);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&buf);
}

TEST(spec_error_cap)
{
	struct sb y;
	sb_init(&y);
	sb_adds(&y, "jobs:\n");
	for (int i = 0; i < 25; i++)
		sb_addf(&y, "  j%d:\n    kind: unit.noop\n    bogus: 1\n", i);
	struct spec s;
	char *err = NULL;
	CHECK_EQ_INT(parse(y.buf, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_INT(count_lines(err), 20);
	CHECK_STR_CONTAINS(err, P ":4:5: unknown key 'bogus' in job 'j0'\n");
	CHECK_STR_CONTAINS(err, "in job 'j19'");
	CHECK(err && !strstr(err, "in job 'j20'"));
	CHECK(err && err[strlen(err) - 1] != '\n');
	free(err);
	sb_release(&y);
}

TEST(spec_topo_order)
{
	struct spec s;
	char *err = NULL;
	int rc = parse("jobs:\n"
		       "  deploy: {kind: unit.noop, needs: [test, build]}\n"
		       "  lint: {kind: unit.noop}\n"
		       "  test: {kind: unit.noop, needs: build}\n"
		       "  build: {kind: unit.noop}\n"
		       "  docs: {kind: unit.noop, needs: [build, build]}\n",
		       &s, &err);
	CHECK_EQ_INT(rc, 0);
	REQUIRE(rc == 0 && s.njobs == 5);
	static const char *const want[] = {"build", "test", "deploy", "lint", "docs"};
	for (size_t i = 0; i < 5; i++)
		CHECK_EQ_STR(s.jobs[i].name, want[i]);
	const struct spec_job *deploy = find_job(&s, "deploy"), *docs = find_job(&s, "docs");
	REQUIRE(deploy && docs);
	REQUIRE(deploy->nneeds == 2);
	CHECK_EQ_STR(deploy->needs[0], "test");
	CHECK_EQ_STR(deploy->needs[1], "build");
	REQUIRE(docs->nneeds == 1); /* repeated need dropped */
	CHECK_EQ_STR(docs->needs[0], "build");
	spec_release(&s);
}

/* ---- msgpack input -------------------------------------------------------- */

struct mp {
	msgpack_sbuffer buf;
	msgpack_packer pk;
	msgpack_unpacked u;
};

static void mp_begin(struct mp *m)
{
	msgpack_sbuffer_init(&m->buf);
	msgpack_packer_init(&m->pk, &m->buf, msgpack_sbuffer_write);
	msgpack_unpacked_init(&m->u);
}

static const msgpack_object *mp_object(struct mp *m)
{
	if (msgpack_unpack_next(&m->u, m->buf.data, m->buf.size, NULL) != MSGPACK_UNPACK_SUCCESS)
		return NULL;
	return &m->u.data;
}

static void mp_end(struct mp *m)
{
	msgpack_unpacked_destroy(&m->u);
	msgpack_sbuffer_destroy(&m->buf);
}

TEST(spec_msgpack_ok)
{
	struct mp m;
	mp_begin(&m);
	msgpack_packer *pk = &m.pk;
	msgpack_pack_array(pk, 2);
	/* in reverse order: test needs build */
	msgpack_pack_map(pk, 10);
	mpk_kv_str(pk, "name", "test");
	mpk_kv_str(pk, "kind", "unit.box");
	mpk_kv_str(pk, "image", "x");
	mpk_kv_str(pk, "memory", "1G");
	mpk_kv_str(pk, "wait", "2s");
	mpk_kv_str(pk, "vcpus", "3");
	mpk_kv_str(pk, "needs", "build");
	mpk_kv_str(pk, "delay", "1m");
	mpk_kv_str(pk, "when", "always");
	mpk_kv_str(pk, "tags", "one");
	msgpack_pack_map(pk, 12);
	mpk_kv_str(pk, "name", "build");
	mpk_kv_str(pk, "kind", "unit.box");
	mpk_kv_int(pk, "image", 42); /* a number for a string field: spelled out */
	mpk_kv_int(pk, "vcpus", 2);
	mpk_kv_int(pk, "memory", 1048576);
	mpk_kv_int(pk, "wait", 5000000);
	mpk_kv_bool(pk, "fast", true);
	mpk_kv_int(pk, "timeout", 60000000);
	mpk_kv_int(pk, "priority", 7);
	mpk_kv_bool(pk, "retry", false);
	mpk_pack_str(pk, "tags");
	msgpack_pack_array(pk, 2);
	mpk_pack_str(pk, "a");
	mpk_pack_str(pk, "b");
	mpk_pack_str(pk, "workspace");
	msgpack_pack_map(pk, 1);
	mpk_pack_str(pk, "k");
	msgpack_pack_array(pk, 2);
	msgpack_pack_int(pk, 1);
	msgpack_pack_int(pk, 2);
	const msgpack_object *jobs = mp_object(&m);
	REQUIRE(jobs);

	struct spec s;
	char *err = NULL;
	unit_kinds();
	int rc = spec_from_msgpack(jobs, NULL, &s, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	REQUIRE(rc == 0 && s.njobs == 2);
	CHECK_EQ_STR(s.name, "batch");
	CHECK_EQ_STR(s.jobs[0].name, "build");
	CHECK_EQ_STR(s.jobs[1].name, "test");
	const struct spec_job *b = &s.jobs[0], *t = &s.jobs[1];
	CHECK_EQ_INT(b->timeout_us, 60000000);
	CHECK_EQ_INT(b->priority, 7);
	CHECK_EQ_INT(b->retry, 0);
	CHECK_EQ_INT(b->line, 0);
	CHECK_EQ_INT(t->delay_us, 60000000);
	CHECK(t->when_always);
	REQUIRE(t->nneeds == 1);
	CHECK_EQ_STR(t->needs[0], "build");

	msgpack_unpacked u;
	REQUIRE(params_of(b, &u));
	CHECK_EQ_INT(u.data.via.map.size, 7);
	CHECK(str_is(mpk_get(&u.data, "image"), "42"));
	CHECK_EQ_INT(int_of(&u.data, "vcpus"), 2);
	CHECK_EQ_INT(int_of(&u.data, "memory"), 1048576);
	CHECK_EQ_INT(int_of(&u.data, "wait"), 5000000);
	bool fast = false;
	CHECK_EQ_INT(mpk_get_bool(&u.data, "fast", &fast), 0);
	CHECK(fast);
	const msgpack_object *ws = mpk_get(&u.data, "workspace");
	const msgpack_object *k = mpk_get(ws, "k");
	REQUIRE(k && k->type == MSGPACK_OBJECT_ARRAY && k->via.array.size == 2);
	CHECK_EQ_INT(k->via.array.ptr[1].via.u64, 2); /* native values kept */
	msgpack_unpacked_destroy(&u);

	REQUIRE(params_of(t, &u));
	CHECK_EQ_INT(int_of(&u.data, "memory"), 1LL << 30);
	CHECK_EQ_INT(int_of(&u.data, "wait"), 2000000);
	CHECK_EQ_INT(int_of(&u.data, "vcpus"), 3);
	const msgpack_object *tags = mpk_get(&u.data, "tags");
	REQUIRE(tags && tags->type == MSGPACK_OBJECT_ARRAY && tags->via.array.size == 1);
	CHECK(str_is(&tags->via.array.ptr[0], "one"));
	msgpack_unpacked_destroy(&u);
	spec_release(&s);

	CHECK_EQ_INT(spec_from_msgpack(jobs, "nightly", &s, &err), 0);
	CHECK_EQ_STR(s.name, "nightly");
	spec_release(&s);
	mp_end(&m);
}

TEST(spec_msgpack_errors)
{
	struct mp m;
	mp_begin(&m);
	msgpack_packer *pk = &m.pk;
	msgpack_pack_array(pk, 8);
	msgpack_pack_map(pk, 3);
	mpk_kv_str(pk, "name", "a");
	mpk_kv_str(pk, "kind", "unit.box");
	mpk_kv_str(pk, "imgae", "x");
	msgpack_pack_map(pk, 1);
	mpk_kv_str(pk, "kind", "unit.noop");
	msgpack_pack_map(pk, 2);
	mpk_kv_str(pk, "name", "Bad");
	mpk_kv_str(pk, "kind", "unit.noop");
	msgpack_pack_map(pk, 4);
	mpk_kv_str(pk, "name", "d");
	mpk_kv_str(pk, "kind", "unit.box");
	mpk_kv_str(pk, "image", "x");
	mpk_kv_str(pk, "vcpus", "two");
	msgpack_pack_map(pk, 4);
	mpk_kv_str(pk, "name", "e");
	mpk_kv_str(pk, "kind", "unit.box");
	mpk_kv_str(pk, "image", "x");
	mpk_kv_int(pk, "wait", -5);
	msgpack_pack_int(pk, 42);
	msgpack_pack_map(pk, 2);
	mpk_kv_str(pk, "name", "a");
	mpk_kv_str(pk, "kind", "unit.noop");
	msgpack_pack_map(pk, 3);
	mpk_kv_str(pk, "name", "g");
	mpk_kv_str(pk, "kind", "unit.noop");
	mpk_pack_str(pk, "needs");
	msgpack_pack_array(pk, 1);
	mpk_pack_str(pk, "nope");
	const msgpack_object *jobs = mp_object(&m);
	REQUIRE(jobs);

	struct spec s;
	char *err = NULL;
	unit_kinds();
	CHECK_EQ_INT(spec_from_msgpack(jobs, "x", &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err,
		     "jobs[0] ('a'): unknown key 'imgae' in job 'a' (did you mean 'image'?)\n"
		     "jobs[0] ('a'): job 'a' is missing required field 'image' (kind 'unit.box')\n"
		     "jobs[1]: job has no 'name'\n"
		     "jobs[2]: invalid job name 'Bad': use 1 to 63 of a-z, 0-9, '_', '.', '-', "
		     "starting with a letter or digit\n"
		     "jobs[3] ('d'): 'vcpus' in job 'd' must be an integer, got 'two'\n"
		     "jobs[4] ('e'): 'wait' in job 'e' must be a duration such as '90s', '20m' or "
		     "'1h30m', got -5\n"
		     "jobs[5]: each job must be a map, got 42\n"
		     "jobs[6]: duplicate job name 'a' (first defined at jobs[0])\n"
		     "jobs[7] ('g'): job 'g' needs 'nope', which is not a job in this spec");
	CHECK_EQ_INT(s.njobs, 0);
	free(err);
	mp_end(&m);

	/* a cycle */
	mp_begin(&m);
	msgpack_pack_array(pk, 2);
	msgpack_pack_map(pk, 3);
	mpk_kv_str(pk, "name", "x");
	mpk_kv_str(pk, "kind", "unit.noop");
	mpk_kv_str(pk, "needs", "y");
	msgpack_pack_map(pk, 3);
	mpk_kv_str(pk, "name", "y");
	mpk_kv_str(pk, "kind", "unit.noop");
	mpk_kv_str(pk, "needs", "x");
	jobs = mp_object(&m);
	REQUIRE(jobs);
	CHECK_EQ_INT(spec_from_msgpack(jobs, NULL, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err, "jobs[0] ('x'): dependency cycle: x -> y -> x");
	free(err);
	mp_end(&m);

	/* not an array; an empty one */
	mp_begin(&m);
	msgpack_pack_map(pk, 0);
	msgpack_pack_array(pk, 0);
	jobs = mp_object(&m);
	REQUIRE(jobs);
	CHECK_EQ_INT(spec_from_msgpack(jobs, NULL, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err, "jobs: expected an array of job maps, got a mapping");
	free(err);
	CHECK_EQ_INT(spec_from_msgpack(NULL, NULL, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err, "jobs: expected an array of job maps, got nothing");
	free(err);
	size_t off = 0;
	msgpack_unpack_next(&m.u, m.buf.data, m.buf.size, &off);
	REQUIRE(msgpack_unpack_next(&m.u, m.buf.data, m.buf.size, &off) == MSGPACK_UNPACK_SUCCESS);
	CHECK_EQ_INT(spec_from_msgpack(&m.u.data, NULL, &s, &err), BG_ERR_SPEC);
	CHECK_EQ_STR(err, "jobs: spec has no jobs");
	free(err);
	mp_end(&m);
}

TEST(spec_msgpack_100k)
{
	enum { N = 100000 };
	struct mp m;
	mp_begin(&m);
	msgpack_packer *pk = &m.pk;
	msgpack_pack_array(pk, N);
	char name[16], need[16];
	for (int i = 0; i < N; i++) {
		/* each job needs the next: a chain 100,000 deep, sources reversed */
		snprintf(name, sizeof(name), "j%d", i);
		snprintf(need, sizeof(need), "j%d", i + 1);
		msgpack_pack_map(pk, i + 1 < N ? 5 : 4);
		mpk_kv_str(pk, "name", name);
		mpk_kv_str(pk, "kind", "unit.box");
		mpk_kv_str(pk, "image", "alpine");
		mpk_kv_int(pk, "vcpus", i % 8 + 1);
		if (i + 1 < N)
			mpk_kv_str(pk, "needs", need);
	}
	const msgpack_object *jobs = mp_object(&m);
	REQUIRE(jobs);
	struct spec s;
	char *err = NULL;
	unit_kinds();
	int rc = spec_from_msgpack(jobs, "big", &s, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	REQUIRE(rc == 0);
	CHECK_EQ_INT(s.njobs, N);
	CHECK_EQ_STR(s.jobs[0].name, "j99999");
	CHECK_EQ_STR(s.jobs[N - 1].name, "j0");
	CHECK_EQ_INT(s.jobs[N - 1].nneeds, 1);
	spec_release(&s);
	mp_end(&m);
}
