/*
 * spec.c: a spec, YAML text or an array of msgpack job maps, checked whole and
 * turned into jobs to queue (see spec.h; the format is in docs/spec.md).
 *
 * Both inputs go through the same checks.  Each front end (spec_parse() over a
 * libyaml document, spec_from_msgpack() over msgpack objects) gathers every
 * job's key/value pairs and hands them to job_check(), which reads values
 * through the small `struct val` accessors that hide where they came from.
 * Then finish() resolves `needs:`, refuses cycles and orders the jobs.
 * Nothing here touches the queue: the functions depend only on their input and
 * on the kind registry, so any thread may call them once kinds are registered.
 *
 * The input is untrusted.  A YAML alias may be expanded any number of times
 * (the "billion laughs" document) or even refer to itself, so node visits
 * made through aliases are counted and bounded (SPEC_MAX_ALIAS_VISITS), and
 * nesting is bounded (SPEC_MAX_DEPTH).  Text quoted back in messages is cut
 * short and stripped of control characters, so one problem stays one line.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "err.h"
#include "kind.h"
#include "mpk.h"
#include "spec.h"
#include "suggest.h"
#include "util.h"

#define SPEC_MAX_ERRORS 20
#define SPEC_MAX_JOBS 100000
#define SPEC_MAX_ALIAS_VISITS 1000000
#define SPEC_MAX_DEPTH 64
#define JOB_NAME_MAX 63
#define SPEC_DEFAULT_ATTEMPTS 3

/* Where something is: 1-based line and column in YAML (0 for msgpack input,
 * where the job index says it all).  job is the job's index in source order,
 * -1 outside any job. */
struct pos {
	int line, col;
	long job;
};

/* A value from either input: exactly one of y and m is set. */
struct val {
	const yaml_node_t *y;
	const msgpack_object *m;
	struct pos pos;
};

enum vt { VT_NULL, VT_STR, VT_INT, VT_BOOL, VT_FLOAT, VT_SEQ, VT_MAP, VT_OTHER };

/* One key of a job; key is not NUL-terminated for msgpack input. */
struct kv {
	const char *key;
	size_t klen;
	struct pos kpos;
	struct val v;
};

/* A job being checked.  Index in struct ps.jobs == index in the source. */
struct draft {
	struct spec_job job;
	struct pos pos;
	bool live;            /* name valid and unique: part of the graph */
	struct pos *need_pos; /* parallel to job.needs */
	size_t *need_idx;     /* parallel to job.needs once resolved */
};

/* A job name in the hash table: the job's index + 1 (0: free) and the hash,
 * compared before the names are. */
struct slot {
	uint32_t job;
	uint32_t hash;
};

/* Parse state shared by both front ends. */
struct ps {
	const char *path;     /* YAML: the file name used in messages */
	yaml_document_t *doc; /* NULL for msgpack input */
	unsigned char *seen;  /* per YAML node: visited once already */
	size_t alias_visits;
	bool bomb;
	bool stop; /* too many errors, or an alias bomb: stop looking */
	struct sb err;
	int nerr;
	struct draft *jobs;
	size_t njobs;
	struct slot *tab; /* open-addressed job names */
	size_t tabcap;
	struct kv *kvs; /* the current job's keys, reused from job to job */
	int *cls;
	size_t kvcap;
	bool *field_seen;
	size_t field_cap;
	msgpack_sbuffer buf; /* the current job's params, reused */
	msgpack_packer pk;
};

/* The keys every job may carry, whatever its kind.  `name` only in msgpack
 * input, where it replaces the YAML mapping key. */
enum ckey { CK_KIND, CK_NEEDS, CK_WHEN, CK_PRIORITY, CK_MAX_ATTEMPTS, CK_TIMEOUT,
	    CK_DELAY, CK_RETRY, CK_NAME, CK_N };

static const char *const common_keys[CK_N] = {
	[CK_KIND] = "kind",       [CK_NEEDS] = "needs",
	[CK_WHEN] = "when",       [CK_PRIORITY] = "priority",
	[CK_MAX_ATTEMPTS] = "max_attempts", [CK_TIMEOUT] = "timeout",
	[CK_DELAY] = "delay",     [CK_RETRY] = "retry",
	[CK_NAME] = "name",
};

/* ---- messages ----------------------------------------------------------- */

/* User text fit to quote in a one-line message. */
struct quoted {
	char s[SUGGEST_QUOTE_MAX + 4];
};

static const char *quote(struct quoted *q, const char *s, size_t n)
{
	return suggest_quote(q->s, s, n);
}

static void perr(struct ps *ps, struct pos at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record one problem at `at`; the message is lowercase, no full stop. */
static void perr(struct ps *ps, struct pos at, const char *fmt, ...)
{
	if (ps->nerr >= SPEC_MAX_ERRORS) {
		ps->stop = true;
		return;
	}
	if (ps->nerr > 0)
		sb_adds(&ps->err, "\n");
	if (ps->doc)
		sb_addf(&ps->err, "%s:%d:%d: ", ps->path, at.line, at.col);
	else if (at.job < 0)
		sb_adds(&ps->err, "jobs: ");
	else if (ps->jobs[at.job].job.name)
		sb_addf(&ps->err, "jobs[%ld] ('%s'): ", at.job, ps->jobs[at.job].job.name);
	else
		sb_addf(&ps->err, "jobs[%ld]: ", at.job);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&ps->err, fmt, ap);
	va_end(ap);
	if (++ps->nerr >= SPEC_MAX_ERRORS)
		ps->stop = true;
}

/* " (did you mean 'x'?)" or "" into buf. */
static const char *did_you_mean(char *buf, size_t size, const char *word, size_t wlen,
				const char *const *cands, size_t n)
{
	char *w = xstrndup(word, wlen);
	const char *s = suggest_closest(w, cands, n);
	free(w);
	buf[0] = '\0';
	if (s)
		snprintf(buf, size, " (did you mean '%s'?)", s);
	return buf;
}

/* ---- values from either input ------------------------------------------- */

static struct pos ypos(const yaml_node_t *n, long job)
{
	return (struct pos){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1, job};
}

static bool yaml_null(const yaml_node_t *n)
{
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = (const char *)n->data.scalar.value;
	size_t l = n->data.scalar.length;
	return l == 0 || (l == 1 && s[0] == '~') ||
	       (l == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) ||
			   !memcmp(s, "NULL", 4)));
}

static enum vt vtype(const struct val *v)
{
	if (v->y) {
		switch (v->y->type) {
		case YAML_SCALAR_NODE: return yaml_null(v->y) ? VT_NULL : VT_STR;
		case YAML_SEQUENCE_NODE: return VT_SEQ;
		case YAML_MAPPING_NODE: return VT_MAP;
		default: return VT_OTHER;
		}
	}
	switch (v->m->type) {
	case MSGPACK_OBJECT_NIL: return VT_NULL;
	case MSGPACK_OBJECT_BOOLEAN: return VT_BOOL;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return VT_INT;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return VT_FLOAT;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN: return VT_STR;
	case MSGPACK_OBJECT_ARRAY: return VT_SEQ;
	case MSGPACK_OBJECT_MAP: return VT_MAP;
	default: return VT_OTHER;
	}
}

/* The text of a VT_STR value (not NUL-terminated for msgpack). */
static bool vstr(const struct val *v, const char **s, size_t *n)
{
	if (vtype(v) != VT_STR)
		return false;
	if (v->y) {
		*s = (const char *)v->y->data.scalar.value;
		*n = v->y->data.scalar.length;
	} else if (v->m->type == MSGPACK_OBJECT_STR) {
		*s = v->m->via.str.ptr;
		*n = v->m->via.str.size;
	} else {
		*s = v->m->via.bin.ptr;
		*n = v->m->via.bin.size;
	}
	return true;
}

static size_t vcount(const struct val *v)
{
	if (v->y && v->y->type == YAML_SEQUENCE_NODE)
		return (size_t)(v->y->data.sequence.items.top - v->y->data.sequence.items.start);
	if (v->y && v->y->type == YAML_MAPPING_NODE)
		return (size_t)(v->y->data.mapping.pairs.top - v->y->data.mapping.pairs.start);
	if (v->m && v->m->type == MSGPACK_OBJECT_ARRAY)
		return v->m->via.array.size;
	if (v->m && v->m->type == MSGPACK_OBJECT_MAP)
		return v->m->via.map.size;
	return 0;
}

/* A YAML node by index, counting visits made through aliases: the first visit
 * of a node is free, every later one is an alias expansion.  NULL once the
 * budget is spent (the error is recorded once). */
static const yaml_node_t *visit(struct ps *ps, int index, struct pos from)
{
	if (ps->bomb)
		return NULL;
	const yaml_node_t *n = yaml_document_get_node(ps->doc, index);
	if (!n)
		return NULL;
	if (!ps->seen[index - 1]) {
		ps->seen[index - 1] = 1;
		return n;
	}
	if (++ps->alias_visits <= SPEC_MAX_ALIAS_VISITS)
		return n;
	ps->bomb = true;
	perr(ps, from, "spec refused: its aliases expand to more than %d nodes",
	     SPEC_MAX_ALIAS_VISITS);
	ps->stop = true;
	return NULL;
}

static bool vseq_at(struct ps *ps, const struct val *v, size_t i, struct val *out)
{
	*out = (struct val){.pos = v->pos};
	if (v->m) {
		out->m = &v->m->via.array.ptr[i];
		return true;
	}
	out->y = visit(ps, v->y->data.sequence.items.start[i], v->pos);
	if (!out->y)
		return false;
	out->pos = ypos(out->y, v->pos.job);
	return true;
}

static bool vmap_at(struct ps *ps, const struct val *v, size_t i, struct val *k, struct val *val)
{
	*k = *val = (struct val){.pos = v->pos};
	if (v->m) {
		k->m = &v->m->via.map.ptr[i].key;
		val->m = &v->m->via.map.ptr[i].val;
		return true;
	}
	const yaml_node_pair_t *p = &v->y->data.mapping.pairs.start[i];
	k->y = visit(ps, p->key, v->pos);
	if (!k->y)
		return false;
	k->pos = ypos(k->y, v->pos.job);
	val->y = visit(ps, p->value, k->pos);
	if (!val->y)
		return false;
	val->pos = ypos(val->y, v->pos.job);
	return true;
}

/* What a value is, for "got ..." in messages. */
struct got {
	char s[SUGGEST_QUOTE_MAX + 24];
};

static const char *describe(struct got *g, const struct val *v)
{
	const char *s;
	size_t n;
	struct quoted q;
	switch (vtype(v)) {
	case VT_NULL: return "nothing (null)";
	case VT_STR:
		vstr(v, &s, &n);
		snprintf(g->s, sizeof(g->s), "'%s'", quote(&q, s, n));
		return g->s;
	case VT_INT:
		if (v->m->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			snprintf(g->s, sizeof(g->s), "%llu", (unsigned long long)v->m->via.u64);
		else
			snprintf(g->s, sizeof(g->s), "%lld", (long long)v->m->via.i64);
		return g->s;
	case VT_BOOL: return v->m->via.boolean ? "true" : "false";
	case VT_FLOAT:
		snprintf(g->s, sizeof(g->s), "%g", v->m->via.f64);
		return g->s;
	case VT_SEQ: return "a list";
	case VT_MAP: return "a mapping";
	default: return "an unsupported value";
	}
}

/* ---- scalar conversions ------------------------------------------------- */

static bool parse_int(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	bool neg = false;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (i == n)
		return false;
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (lim - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static bool val_int(const struct val *v, int64_t *out)
{
	const char *s;
	size_t n;
	if (vtype(v) == VT_INT)
		return mpk_as_int(v->m, out);
	return vstr(v, &s, &n) && parse_int(s, n, out);
}

static bool val_bool(const struct val *v, bool *out)
{
	const char *s;
	size_t n;
	if (vtype(v) == VT_BOOL) {
		*out = v->m->via.boolean;
		return true;
	}
	if (!vstr(v, &s, &n))
		return false;
	if ((n == 4 && !strncasecmp(s, "true", 4)) || (n == 3 && !strncasecmp(s, "yes", 3)))
		*out = true;
	else if ((n == 5 && !strncasecmp(s, "false", 5)) || (n == 2 && !strncasecmp(s, "no", 2)))
		*out = false;
	else
		return false;
	return true;
}

/* Durations: text through parse_duration_us(); a msgpack integer is already
 * microseconds. */
static bool val_duration(const struct val *v, int64_t *out)
{
	const char *s;
	size_t n;
	if (vtype(v) == VT_INT)
		return mpk_as_int(v->m, out) && *out >= 0;
	if (!vstr(v, &s, &n) || n == 0 || n > 64 || memchr(s, '\0', n))
		return false;
	char buf[65];
	memcpy(buf, s, n);
	buf[n] = '\0';
	return parse_duration_us(buf, out) == 0 && *out >= 0;
}

static bool val_size(const struct val *v, int64_t *out)
{
	const char *s;
	size_t n;
	if (vtype(v) == VT_INT)
		return mpk_as_int(v->m, out) && *out >= 0;
	return vstr(v, &s, &n) && parse_size_bytes(s, n, out) == 0;
}

/* Text of a scalar for a string field: msgpack numbers and booleans are
 * spelled out (into tmp) the way YAML would have carried them. */
static bool val_text(const struct val *v, const char **s, size_t *n, char tmp[32])
{
	if (vstr(v, s, n))
		return true;
	int len;
	switch (vtype(v)) {
	case VT_INT:
		if (v->m->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			len = snprintf(tmp, 32, "%llu", (unsigned long long)v->m->via.u64);
		else
			len = snprintf(tmp, 32, "%lld", (long long)v->m->via.i64);
		break;
	case VT_BOOL: len = snprintf(tmp, 32, "%s", v->m->via.boolean ? "true" : "false"); break;
	case VT_FLOAT:
		/* the shortest of the two spellings that reads back the same */
		len = snprintf(tmp, 32, "%.15g", v->m->via.f64);
		if (strtod(tmp, NULL) != v->m->via.f64)
			len = snprintf(tmp, 32, "%.17g", v->m->via.f64);
		break;
	default: return false;
	}
	*s = tmp;
	*n = (size_t)len;
	return true;
}

/* ---- job names ---------------------------------------------------------- */

static bool job_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > JOB_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  (i > 0 && (c == '_' || c == '.' || c == '-'));
		if (!ok)
			return false;
	}
	return true;
}

/* True when the NUL-terminated name equals the n bytes at s. */
static bool name_is(const char *name, const char *s, size_t n)
{
	size_t i = 0;
	while (i < n && name[i] && name[i] == s[i])
		i++;
	return i == n && name[n] == '\0';
}

static uint32_t name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* Slot of name in the table: its job is the job's index + 1, or 0 (a free
 * slot, with the hash already set for an insert). */
static struct slot *tab_slot(struct ps *ps, const char *s, size_t n)
{
	size_t mask = ps->tabcap - 1;
	uint32_t h = name_hash(s, n);
	for (size_t i = (h ^ (h >> 16)) & mask;; i = (i + 1) & mask) {
		struct slot *slot = &ps->tab[i];
		if (slot->job == 0) {
			slot->hash = h;
			return slot;
		}
		if (slot->hash != h)
			continue;
		const char *other = ps->jobs[slot->job - 1].job.name;
		if (name_is(other, s, n))
			return slot;
	}
}

static void jobs_alloc(struct ps *ps, size_t n)
{
	ps->jobs = xcalloc(n, sizeof(*ps->jobs));
	ps->njobs = n;
	ps->tabcap = 16;
	while (ps->tabcap < 2 * n)
		ps->tabcap *= 2;
	ps->tab = xcalloc(ps->tabcap, sizeof(*ps->tab));
}

static void pos_text(const struct ps *ps, struct pos p, char *buf, size_t size)
{
	if (ps->doc)
		snprintf(buf, size, "%d:%d", p.line, p.col);
	else
		snprintf(buf, size, "jobs[%ld]", p.job);
}

/* Name job i; false (error recorded) when the name is bad or taken. */
static bool job_name_set(struct ps *ps, size_t i, const struct val *k)
{
	struct draft *d = &ps->jobs[i];
	struct quoted q;
	struct got g;
	const char *s;
	size_t n;
	if (!vstr(k, &s, &n)) {
		perr(ps, k->pos, "job names must be strings, got %s", describe(&g, k));
		return false;
	}
	if (!job_name_ok(s, n)) {
		perr(ps, k->pos,
		     "invalid job name '%s': use 1 to %d of a-z, 0-9, '_', '.', '-', "
		     "starting with a letter or digit",
		     quote(&q, s, n), JOB_NAME_MAX);
		return false;
	}
	struct slot *slot = tab_slot(ps, s, n);
	if (slot->job) {
		char where[32];
		pos_text(ps, ps->jobs[slot->job - 1].pos, where, sizeof(where));
		perr(ps, k->pos, "duplicate job name '%s' (first defined at %s)", quote(&q, s, n),
		     where);
		return false;
	}
	slot->job = (uint32_t)i + 1;
	d->job.name = xstrndup(s, n);
	d->live = true;
	return true;
}

/* ---- one job ------------------------------------------------------------ */

static void bad_type(struct ps *ps, const struct draft *d, const char *key, const struct val *v,
		     const char *want)
{
	struct got g;
	perr(ps, v->pos, "'%s' in job '%s' must be %s, got %s", key, d->job.name, want,
	     describe(&g, v));
}

static bool want_int(struct ps *ps, const struct draft *d, const char *key, const struct val *v,
		     int64_t lo, int64_t hi, int64_t *out)
{
	if (!val_int(v, out)) {
		bad_type(ps, d, key, v, "an integer");
		return false;
	}
	if (*out < lo || *out > hi) {
		perr(ps, v->pos, "'%s' in job '%s' must be between %lld and %lld, got %lld", key,
		     d->job.name, (long long)lo, (long long)hi, (long long)*out);
		return false;
	}
	return true;
}

static bool want_duration(struct ps *ps, const struct draft *d, const char *key,
			  const struct val *v, int64_t *out)
{
	if (val_duration(v, out))
		return true;
	bad_type(ps, d, key, v, "a duration such as '90s', '20m' or '1h30m'");
	return false;
}

static bool want_bool(struct ps *ps, const struct draft *d, const char *key, const struct val *v,
		      bool *out)
{
	if (val_bool(v, out))
		return true;
	bad_type(ps, d, key, v, "true or false");
	return false;
}

static void add_need(struct draft *d, const char *s, size_t n, struct pos at, size_t cap)
{
	struct spec_job *j = &d->job;
	if (j->nneeds == 0 || j->nneeds >= cap) {
		size_t ncap = j->nneeds + 1 > cap ? j->nneeds + 1 : cap;
		j->needs = xrealloc(j->needs, ncap * sizeof(*j->needs));
		d->need_pos = xrealloc(d->need_pos, ncap * sizeof(*d->need_pos));
	}
	j->needs[j->nneeds] = xstrndup(s, n);
	d->need_pos[j->nneeds++] = at;
}

static void take_needs(struct ps *ps, struct draft *d, const struct val *v)
{
	const char *s;
	size_t n;
	struct got g;
	if (vstr(v, &s, &n)) {
		add_need(d, s, n, v->pos, 1);
		return;
	}
	if (vtype(v) != VT_SEQ) {
		bad_type(ps, d, "needs", v, "a job name or a list of job names");
		return;
	}
	size_t cnt = vcount(v);
	for (size_t i = 0; i < cnt; i++) {
		struct val e;
		if (!vseq_at(ps, v, i, &e))
			return;
		if (vstr(&e, &s, &n))
			add_need(d, s, n, e.pos, cnt);
		else
			perr(ps, e.pos, "entries of 'needs' in job '%s' must be job names, got %s",
			     d->job.name, describe(&g, &e));
	}
}

static void take_common(struct ps *ps, struct draft *d, enum ckey c, const struct val *v)
{
	struct spec_job *j = &d->job;
	const char *key = common_keys[c];
	int64_t i64;
	bool b;
	const char *s;
	size_t n;
	struct got g;
	switch (c) {
	case CK_NEEDS: take_needs(ps, d, v); break;
	case CK_WHEN:
		if (vstr(v, &s, &n) && n == 6 && !memcmp(s, "always", 6))
			j->when_always = true;
		else if (vstr(v, &s, &n) && n == 10 && !memcmp(s, "on_success", 10))
			j->when_always = false;
		else
			perr(ps, v->pos, "'when' in job '%s' must be 'always' or 'on_success', got %s",
			     j->name, describe(&g, v));
		break;
	case CK_PRIORITY:
		if (want_int(ps, d, key, v, -1000, 1000, &i64))
			j->priority = i64;
		break;
	case CK_MAX_ATTEMPTS:
		if (want_int(ps, d, key, v, 1, 100, &i64))
			j->max_attempts = (int)i64;
		break;
	case CK_TIMEOUT: want_duration(ps, d, key, v, &j->timeout_us); break;
	case CK_DELAY: want_duration(ps, d, key, v, &j->delay_us); break;
	case CK_RETRY:
		if (want_bool(ps, d, key, v, &b))
			j->retry = b;
		break;
	default: break; /* kind and name were taken before */
	}
}

/* Pack any value: YAML scalars as str (null as nil), sequences as arrays,
 * mappings as maps; msgpack values as they are. */
static bool pack_any(struct ps *ps, const struct draft *d, const char *key, const struct val *v,
		     int depth)
{
	msgpack_packer *pk = &ps->pk;
	if (v->m)
		return msgpack_pack_object(pk, *v->m) == 0;
	if (depth > SPEC_MAX_DEPTH) {
		perr(ps, v->pos, "'%s' in job '%s' is nested more than %d levels deep", key,
		     d->job.name, SPEC_MAX_DEPTH);
		return false;
	}
	const char *s;
	size_t n = vcount(v);
	switch (vtype(v)) {
	case VT_STR:
		vstr(v, &s, &n);
		mpk_pack_strn(pk, s, n);
		return true;
	case VT_SEQ:
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < n; i++) {
			struct val e;
			if (!vseq_at(ps, v, i, &e) || !pack_any(ps, d, key, &e, depth + 1))
				return false;
		}
		return true;
	case VT_MAP:
		msgpack_pack_map(pk, n);
		for (size_t i = 0; i < n; i++) {
			struct val k, e;
			if (!vmap_at(ps, v, i, &k, &e) || !pack_any(ps, d, key, &k, depth + 1) ||
			    !pack_any(ps, d, key, &e, depth + 1))
				return false;
		}
		return true;
	default: msgpack_pack_nil(pk); return true;
	}
}

static bool pack_strlist(struct ps *ps, const struct draft *d, const char *key,
			 const struct val *v)
{
	const char *s;
	size_t n;
	char tmp[32];
	struct got g;
	if (val_text(v, &s, &n, tmp)) {
		msgpack_pack_array(&ps->pk, 1);
		mpk_pack_strn(&ps->pk, s, n);
		return true;
	}
	if (vtype(v) != VT_SEQ) {
		bad_type(ps, d, key, v, "a string or a list of strings");
		return false;
	}
	size_t cnt = vcount(v);
	msgpack_pack_array(&ps->pk, cnt);
	for (size_t i = 0; i < cnt; i++) {
		struct val e;
		if (!vseq_at(ps, v, i, &e))
			return false;
		if (!val_text(&e, &s, &n, tmp)) {
			perr(ps, e.pos, "entries of '%s' in job '%s' must be strings, got %s", key,
			     d->job.name, describe(&g, &e));
			return false;
		}
		mpk_pack_strn(&ps->pk, s, n);
	}
	return true;
}

/* Pack one kind field's value, normalized; nil after an error (the spec is
 * refused then, but the map stays well formed). */
static void pack_field(struct ps *ps, const struct draft *d, const struct kind_field *f,
		       const struct val *v)
{
	msgpack_packer *pk = &ps->pk;
	const char *s;
	size_t n;
	char tmp[32];
	int64_t i64;
	bool b, ok = false;
	mpk_pack_str(pk, f->name);
	switch (f->type) {
	case FT_STR:
		if ((ok = val_text(v, &s, &n, tmp)))
			mpk_pack_strn(pk, s, n);
		else
			bad_type(ps, d, f->name, v, "a string");
		break;
	case FT_INT:
		if ((ok = val_int(v, &i64)))
			msgpack_pack_int64(pk, i64);
		else
			bad_type(ps, d, f->name, v, "an integer");
		break;
	case FT_BOOL:
		if ((ok = want_bool(ps, d, f->name, v, &b)))
			b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
		break;
	case FT_DURATION:
		if ((ok = want_duration(ps, d, f->name, v, &i64)))
			msgpack_pack_int64(pk, i64);
		break;
	case FT_SIZE:
		if ((ok = val_size(v, &i64)))
			msgpack_pack_int64(pk, i64);
		else
			bad_type(ps, d, f->name, v, "a size such as '512M', '1G' or '4096'");
		break;
	case FT_STRLIST: ok = pack_strlist(ps, d, f->name, v); break;
	case FT_ANY: ok = pack_any(ps, d, f->name, v, 0); break;
	}
	if (!ok && f->type != FT_STRLIST && f->type != FT_ANY)
		msgpack_pack_nil(pk);
}

static int common_key(const struct ps *ps, const char *s, size_t n)
{
	for (int c = 0; c < CK_N; c++) {
		if (c == CK_NAME && ps->doc)
			continue;
		if (name_is(common_keys[c], s, n))
			return c;
	}
	return -1;
}

static int field_index(const struct kind *k, const char *s, size_t n)
{
	for (int f = 0; k->fields && k->fields[f].name; f++)
		if (name_is(k->fields[f].name, s, n))
			return f;
	return -1;
}

static size_t field_count(const struct kind *k)
{
	size_t n = 0;
	while (k->fields && k->fields[n].name)
		n++;
	return n;
}

static void unknown_kind(struct ps *ps, const struct draft *d, const struct val *v,
			 const char *s, size_t n)
{
	const char *names[64];
	size_t nk = 0;
	for (const struct kind *k; nk < ARRAY_LEN(names) && (k = kinds_at(nk));)
		names[nk++] = k->name;
	char sug[128];
	struct quoted q;
	did_you_mean(sug, sizeof(sug), s, n, names, nk);
	if (sug[0] || nk == 0) {
		perr(ps, v->pos, "unknown kind '%s' in job '%s'%s", quote(&q, s, n), d->job.name,
		     nk ? sug : " (no kinds are registered)");
		return;
	}
	struct sb list;
	sb_init(&list);
	for (size_t i = 0; i < nk; i++)
		sb_addf(&list, "%s%s", i ? ", " : "", names[i]);
	perr(ps, v->pos, "unknown kind '%s' in job '%s' (known kinds: %s)", quote(&q, s, n),
	     d->job.name, list.buf);
	sb_release(&list);
}

static void unknown_key(struct ps *ps, const struct draft *d, const struct kind *k,
			const struct kv *kv)
{
	size_t nf = field_count(k);
	const char **cands = xmalloc((CK_N + nf) * sizeof(*cands));
	size_t nc = 0;
	for (int c = 0; c < CK_N; c++)
		if (c != CK_NAME || !ps->doc)
			cands[nc++] = common_keys[c];
	for (size_t f = 0; f < nf; f++)
		cands[nc++] = k->fields[f].name;
	char sug[128];
	struct quoted q;
	perr(ps, kv->kpos, "unknown key '%s' in job '%s'%s", quote(&q, kv->key, kv->klen),
	     d->job.name, did_you_mean(sug, sizeof(sug), kv->key, kv->klen, cands, nc));
	free(cands);
}

/* The kind of a job, from its `kind:` key; NULL (error recorded) if bad. */
static const struct kind *job_kind(struct ps *ps, struct draft *d, const struct kv *kvs,
				   size_t nkv)
{
	const char *s;
	size_t n;
	for (size_t i = 0; i < nkv; i++) {
		if (common_key(ps, kvs[i].key, kvs[i].klen) != CK_KIND)
			continue;
		if (!vstr(&kvs[i].v, &s, &n)) {
			bad_type(ps, d, "kind", &kvs[i].v, "a string");
			return NULL;
		}
		const struct kind *k = kinds_findn(s, n);
		if (!k)
			unknown_kind(ps, d, &kvs[i].v, s, n);
		return k;
	}
	perr(ps, d->pos, "job '%s' has no 'kind'", d->job.name);
	return NULL;
}

/*
 * Check one job's keys and fill d->job.  Keys are classified first (common,
 * kind field, unknown, duplicate), so that the params map header can carry the
 * right count; then values are converted in source order.
 */
static void job_check(struct ps *ps, struct draft *d, size_t nkv)
{
	struct spec_job *j = &d->job;
	const struct kv *kvs = ps->kvs;
	struct quoted q;
	j->max_attempts = SPEC_DEFAULT_ATTEMPTS;
	j->retry = -1;
	j->line = d->pos.line;
	j->col = d->pos.col;

	const struct kind *k = job_kind(ps, d, kvs, nkv);
	if (k)
		j->kind = xstrdup(k->name);
	size_t nf = k ? field_count(k) : 0;
	if (nf > ps->field_cap) {
		ps->field_seen = xrealloc(ps->field_seen, nf * sizeof(*ps->field_seen));
		ps->field_cap = nf;
	}
	if (nf)
		memset(ps->field_seen, 0, nf * sizeof(*ps->field_seen));

	unsigned common_seen = 0;
	uint32_t nparams = 0;
	for (size_t i = 0; i < nkv; i++) {
		int c = common_key(ps, kvs[i].key, kvs[i].klen);
		int f = c < 0 && k ? field_index(k, kvs[i].key, kvs[i].klen) : -1;
		bool dup = c >= 0 ? (common_seen >> c) & 1 : f >= 0 && ps->field_seen[f];
		ps->cls[i] = -1;
		if (dup) {
			perr(ps, kvs[i].kpos, "duplicate key '%s' in job '%s'",
			     quote(&q, kvs[i].key, kvs[i].klen), j->name);
		} else if (c >= 0) {
			common_seen |= 1u << c;
			ps->cls[i] = c;
		} else if (f >= 0) {
			ps->field_seen[f] = true;
			ps->cls[i] = CK_N + f;
			nparams++;
		} else if (k) {
			unknown_key(ps, d, k, &kvs[i]);
		} /* else: the kind is unknown, so its fields cannot be judged */
	}
	for (size_t f = 0; f < nf; f++)
		if (k->fields[f].required && !ps->field_seen[f])
			perr(ps, d->pos, "job '%s' is missing required field '%s' (kind '%s')",
			     j->name, k->fields[f].name, k->name);

	msgpack_sbuffer_clear(&ps->buf);
	msgpack_pack_map(&ps->pk, nparams);
	for (size_t i = 0; i < nkv && !ps->stop; i++) {
		if (ps->cls[i] >= CK_N)
			pack_field(ps, d, &k->fields[ps->cls[i] - CK_N], &kvs[i].v);
		else if (ps->cls[i] >= 0)
			take_common(ps, d, (enum ckey)ps->cls[i], &kvs[i].v);
	}
	if (ps->nerr == 0) {
		j->params_len = ps->buf.size;
		j->params = xmalloc(ps->buf.size);
		memcpy(j->params, ps->buf.data, ps->buf.size);
	}
}

static void kvs_reserve(struct ps *ps, size_t n)
{
	if (n <= ps->kvcap)
		return;
	ps->kvs = xrealloc(ps->kvs, n * sizeof(*ps->kvs));
	ps->cls = xrealloc(ps->cls, n * sizeof(*ps->cls));
	ps->kvcap = n;
}

/* Gather a job mapping's string keys into ps->kvs; the count. */
static size_t gather(struct ps *ps, const struct draft *d, const struct val *job)
{
	size_t n = vcount(job), nkv = 0;
	struct got g;
	kvs_reserve(ps, n);
	for (size_t i = 0; i < n; i++) {
		struct val k, v;
		if (!vmap_at(ps, job, i, &k, &v))
			break;
		struct kv *kv = &ps->kvs[nkv];
		if (!vstr(&k, &kv->key, &kv->klen)) {
			if (d->job.name)
				perr(ps, k.pos, "keys in job '%s' must be strings, got %s", d->job.name,
				     describe(&g, &k));
			else
				perr(ps, k.pos, "keys must be strings, got %s", describe(&g, &k));
			continue;
		}
		kv->kpos = k.pos;
		kv->v = v;
		nkv++;
	}
	return nkv;
}

/* ---- the whole spec ----------------------------------------------------- */

static void ps_init(struct ps *ps)
{
	memset(ps, 0, sizeof(*ps));
	sb_init(&ps->err);
	/* Small: msgpack_sbuffer_init() would start every buffer at 8 KiB. */
	ps->buf.alloc = 256;
	ps->buf.data = xmalloc(ps->buf.alloc);
	msgpack_packer_init(&ps->pk, &ps->buf, msgpack_sbuffer_write);
}

static void job_release(struct spec_job *j)
{
	free(j->name);
	free(j->kind);
	for (size_t i = 0; i < j->nneeds; i++)
		free(j->needs[i]);
	free(j->needs);
	free(j->params);
	memset(j, 0, sizeof(*j));
}

static void ps_release(struct ps *ps)
{
	for (size_t i = 0; i < ps->njobs; i++) {
		job_release(&ps->jobs[i].job);
		free(ps->jobs[i].need_pos);
		free(ps->jobs[i].need_idx);
	}
	free(ps->jobs);
	free(ps->tab);
	free(ps->kvs);
	free(ps->cls);
	free(ps->field_seen);
	free(ps->seen);
	msgpack_sbuffer_destroy(&ps->buf);
	sb_release(&ps->err);
}

/* Turn `needs:` names into indices: unknown names and self-needs are
 * reported, repeated names dropped. */
static void resolve_needs(struct ps *ps)
{
	size_t *stamp = xcalloc(ps->njobs, sizeof(*stamp));
	const char **names = NULL;
	for (size_t i = 0; i < ps->njobs && !ps->stop; i++) {
		struct draft *d = &ps->jobs[i];
		struct spec_job *j = &d->job;
		if (!d->live)
			continue;
		d->need_idx = xmalloc((j->nneeds ? j->nneeds : 1) * sizeof(*d->need_idx));
		size_t kept = 0;
		for (size_t e = 0; e < j->nneeds; e++) {
			char *need = j->needs[e];
			uint32_t slot = tab_slot(ps, need, strlen(need))->job;
			size_t idx = slot - 1;
			if (slot == 0) {
				if (!names) {
					names = xcalloc(ps->njobs, sizeof(*names));
					for (size_t t = 0; t < ps->njobs; t++)
						names[t] = ps->jobs[t].job.name;
				}
				char sug[128];
				struct quoted q;
				perr(ps, d->need_pos[e],
				     "job '%s' needs '%s', which is not a job in this spec%s", j->name,
				     quote(&q, need, strlen(need)),
				     did_you_mean(sug, sizeof(sug), need, strlen(need), names,
						  ps->njobs));
			} else if (idx == i) {
				perr(ps, d->need_pos[e], "dependency cycle: %s -> %s (job '%s' needs itself)",
				     j->name, j->name, j->name);
			} else if (stamp[idx] != i + 1) {
				stamp[idx] = i + 1;
				j->needs[kept] = need;
				d->need_pos[kept] = d->need_pos[e];
				d->need_idx[kept++] = idx;
				continue;
			}
			free(need);
		}
		j->nneeds = kept;
	}
	free(names);
	free(stamp);
}

struct frame {
	size_t job;
	size_t edge; /* next need to follow */
};

static void report_cycle(struct ps *ps, const struct frame *stk, size_t from, size_t top)
{
	size_t len = top - from + 1;
	struct sb s;
	sb_init(&s);
	for (size_t i = 0; i < len; i++) {
		if (len > 10 && i == 8) {
			sb_addf(&s, "... (%zu more) -> ", len - 9);
			i = len - 1;
		}
		sb_addf(&s, "%s -> ", ps->jobs[stk[from + i].job].job.name);
	}
	const struct draft *first = &ps->jobs[stk[from].job];
	sb_adds(&s, first->job.name);
	perr(ps, first->need_pos[stk[from].edge - 1], "dependency cycle: %s", s.buf);
	sb_release(&s);
}

/*
 * Order the live jobs so that needs come first, otherwise in source order: a
 * depth-first walk from each job in source order, emitting a job once all its
 * needs are emitted.  The walk keeps its own stack (a chain of 100,000 needs
 * must not overflow the C stack); an edge back to a job still on the stack is
 * a cycle, reported from that job round to itself.  Fills order; the count.
 */
static size_t topo_order(struct ps *ps, size_t *order)
{
	enum { WHITE, GREY, BLACK };
	unsigned char *state = xcalloc(ps->njobs, 1);
	size_t *at = xmalloc(ps->njobs * sizeof(*at)); /* stack index of a grey job */
	struct frame *stk = xmalloc(ps->njobs * sizeof(*stk));
	size_t n = 0;
	for (size_t root = 0; root < ps->njobs && !ps->stop; root++) {
		if (!ps->jobs[root].live || state[root] != WHITE)
			continue;
		size_t top = 0;
		stk[0] = (struct frame){root, 0};
		at[root] = 0;
		state[root] = GREY;
		for (;;) {
			struct frame *fr = &stk[top];
			const struct draft *d = &ps->jobs[fr->job];
			if (fr->edge < d->job.nneeds) {
				size_t v = d->need_idx[fr->edge++];
				if (state[v] == WHITE) {
					state[v] = GREY;
					at[v] = ++top;
					stk[top] = (struct frame){v, 0};
				} else if (state[v] == GREY) {
					report_cycle(ps, stk, at[v], top);
				}
				continue;
			}
			state[fr->job] = BLACK;
			order[n++] = fr->job;
			if (top == 0)
				break;
			top--;
		}
	}
	free(stk);
	free(at);
	free(state);
	return n;
}

/* Resolve, order and hand over the jobs; or the errors. */
static int finish(struct ps *ps, char *name, struct spec *out, char **errmsg)
{
	if (!ps->stop)
		resolve_needs(ps);
	size_t *order = xmalloc((ps->njobs ? ps->njobs : 1) * sizeof(*order));
	size_t n = ps->stop ? 0 : topo_order(ps, order);
	int rc = 0;
	if (ps->nerr > 0) {
		*errmsg = sb_detach(&ps->err);
		free(name);
		rc = BG_ERR_SPEC;
	} else {
		out->name = name;
		out->jobs = xcalloc(n ? n : 1, sizeof(*out->jobs));
		out->njobs = n;
		for (size_t i = 0; i < n; i++) {
			out->jobs[i] = ps->jobs[order[i]].job;
			memset(&ps->jobs[order[i]].job, 0, sizeof(out->jobs[i]));
		}
	}
	free(order);
	ps_release(ps);
	return rc;
}

/* ---- YAML front end ----------------------------------------------------- */

static void yaml_jobs(struct ps *ps, const struct val *jobs)
{
	struct got g;
	if (vtype(jobs) == VT_NULL) {
		perr(ps, jobs->pos, "spec has no jobs");
		return;
	}
	if (vtype(jobs) != VT_MAP) {
		perr(ps, jobs->pos, "'jobs' must be a mapping of job names to jobs, got %s",
		     describe(&g, jobs));
		return;
	}
	size_t n = vcount(jobs);
	if (n == 0) {
		perr(ps, jobs->pos, "spec has no jobs");
		return;
	}
	if (n > SPEC_MAX_JOBS) {
		perr(ps, jobs->pos, "spec has %zu jobs; at most %d are allowed", n, SPEC_MAX_JOBS);
		return;
	}
	jobs_alloc(ps, n);
	for (size_t i = 0; i < n && !ps->stop; i++) {
		struct val k, v;
		struct val at = *jobs;
		at.pos.job = (long)i;
		if (!vmap_at(ps, &at, i, &k, &v))
			return;
		ps->jobs[i].pos = k.pos;
		if (!job_name_set(ps, i, &k))
			continue;
		if (vtype(&v) != VT_MAP) {
			perr(ps, v.pos, "job '%s' must be a mapping with at least 'kind:', got %s",
			     ps->jobs[i].job.name, describe(&g, &v));
			continue;
		}
		job_check(ps, &ps->jobs[i], gather(ps, &ps->jobs[i], &v));
	}
}

/* The top-level mapping: `name:` and `jobs:`.  Sets *name when given. */
static void yaml_top(struct ps *ps, char **name)
{
	static const char *const top_keys[] = {"name", "jobs"};
	const yaml_node_t *root = yaml_document_get_root_node(ps->doc);
	struct pos start = {1, 1, -1};
	struct got g;
	struct quoted q;
	if (!root) {
		perr(ps, start, "spec has no jobs");
		return;
	}
	ps->seen[0] = 1;
	struct val top = {.y = root, .pos = ypos(root, -1)};
	if (vtype(&top) == VT_NULL) {
		perr(ps, start, "spec has no jobs");
		return;
	}
	if (vtype(&top) != VT_MAP) {
		perr(ps, top.pos, "a spec must be a mapping with a 'jobs:' key, got %s",
		     describe(&g, &top));
		return;
	}
	struct val jobs = {0};
	bool have_name = false;
	for (size_t i = 0, n = vcount(&top); i < n; i++) {
		struct val k, v;
		const char *s;
		size_t l;
		if (!vmap_at(ps, &top, i, &k, &v))
			return;
		if (!vstr(&k, &s, &l)) {
			perr(ps, k.pos, "top-level keys must be strings, got %s", describe(&g, &k));
		} else if ((l == 4 && !memcmp(s, "name", 4) && have_name) ||
			   (l == 4 && !memcmp(s, "jobs", 4) && jobs.y)) {
			perr(ps, k.pos, "duplicate top-level key '%s'", quote(&q, s, l));
		} else if (l == 4 && !memcmp(s, "name", 4)) {
			have_name = true;
			if (vstr(&v, &s, &l) && l > 0)
				*name = xstrndup(s, l);
			else
				perr(ps, v.pos, "'name' must be a non-empty string, got %s",
				     describe(&g, &v));
		} else if (l == 4 && !memcmp(s, "jobs", 4)) {
			jobs = v;
		} else {
			char sug[128];
			perr(ps, k.pos, "unknown top-level key '%s'%s", quote(&q, s, l),
			     did_you_mean(sug, sizeof(sug), s, l, top_keys, ARRAY_LEN(top_keys)));
		}
	}
	if (!jobs.y) {
		perr(ps, start, "spec has no jobs (add a 'jobs:' mapping)");
		return;
	}
	yaml_jobs(ps, &jobs);
}

/* The file's base name without .yaml/.yml. */
static char *name_from_path(const char *path)
{
	if (!path)
		return xstrdup("spec");
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t n = strlen(base);
	if (n > 5 && !strcmp(base + n - 5, ".yaml"))
		n -= 5;
	else if (n > 4 && !strcmp(base + n - 4, ".yml"))
		n -= 4;
	return n ? xstrndup(base, n) : xstrdup("spec");
}

int spec_parse(const char *text, size_t len, const char *path, struct spec *out, char **errmsg)
{
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	const char *where = path ? path : "spec";
	if (!text)
		text = "", len = 0;
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	if (!yaml_parser_initialize(&parser))
		return BG_ERR_NOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		*errmsg = suggest_yaml_error(&parser, where, text, len);
		yaml_parser_delete(&parser);
		return BG_ERR_SPEC;
	}
	/* A second document would be silently ignored: refuse it. */
	if (!yaml_parser_load(&parser, &extra)) {
		*errmsg = suggest_yaml_error(&parser, where, text, len);
		yaml_document_delete(&doc);
		yaml_parser_delete(&parser);
		return BG_ERR_SPEC;
	}
	struct ps ps;
	ps_init(&ps);
	ps.path = where;
	ps.doc = &doc;
	ps.seen = xcalloc((size_t)(doc.nodes.top - doc.nodes.start) + 1, 1);
	const yaml_node_t *second = yaml_document_get_root_node(&extra);
	if (second)
		perr(&ps, ypos(second, -1), "a spec is one YAML document; found a second one");
	char *name = NULL;
	if (!second)
		yaml_top(&ps, &name);
	if (!name)
		name = name_from_path(path);
	int rc = finish(&ps, name, out, errmsg);
	yaml_document_delete(&extra);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

/* ---- msgpack front end -------------------------------------------------- */

static void mp_job(struct ps *ps, size_t i, const msgpack_object *o)
{
	struct draft *d = &ps->jobs[i];
	struct val job = {.m = o, .pos = {0, 0, (long)i}};
	struct got g;
	d->pos = job.pos;
	if (vtype(&job) != VT_MAP) {
		perr(ps, job.pos, "each job must be a map, got %s", describe(&g, &job));
		return;
	}
	size_t nkv = gather(ps, d, &job);
	for (size_t k = 0; k < nkv; k++) {
		if (ps->kvs[k].klen == 4 && !memcmp(ps->kvs[k].key, "name", 4)) {
			if (job_name_set(ps, i, &ps->kvs[k].v))
				job_check(ps, d, nkv);
			return;
		}
	}
	perr(ps, job.pos, "job has no 'name'");
}

int spec_from_msgpack(const msgpack_object *jobs, const char *name, struct spec *out,
		      char **errmsg)
{
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	struct ps ps;
	struct pos none = {0, 0, -1};
	struct got g;
	ps_init(&ps);
	if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
		struct val v = {.m = jobs, .pos = none};
		perr(&ps, none, "expected an array of job maps, got %s",
		     jobs ? describe(&g, &v) : "nothing");
	} else if (jobs->via.array.size == 0) {
		perr(&ps, none, "spec has no jobs");
	} else if (jobs->via.array.size > SPEC_MAX_JOBS) {
		perr(&ps, none, "spec has %u jobs; at most %d are allowed", jobs->via.array.size,
		     SPEC_MAX_JOBS);
	} else {
		jobs_alloc(&ps, jobs->via.array.size);
		for (size_t i = 0; i < ps.njobs && !ps.stop; i++)
			mp_job(&ps, i, &jobs->via.array.ptr[i]);
	}
	return finish(&ps, xstrdup(name && *name ? name : "batch"), out, errmsg);
}

static bool dir_clean(const char *d)
{
	if (d[0] != '/' || strlen(d) >= 4096)
		return false;
	for (const char *p = d; *p;) {
		while (*p == '/')
			p++;
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p = e;
	}
	return true;
}

int spec_set_dir(struct spec *s, const char *dir, char **errmsg)
{
	if (!dir_clean(dir)) {
		*errmsg = xasprintf("the spec's directory '%.200s' is not an absolute, clean path",
				    dir);
		return BG_ERR_INVAL;
	}
	for (size_t i = 0; i < s->njobs; i++) {
		struct spec_job *j = &s->jobs[i];
		const struct kind *k = kinds_find(j->kind);
		if (!k || !k->wants_dir)
			continue;
		msgpack_unpacked u;
		msgpack_unpacked_init(&u);
		size_t off = 0;
		if (msgpack_unpack_next(&u, j->params, j->params_len, &off) != MSGPACK_UNPACK_SUCCESS ||
		    u.data.type != MSGPACK_OBJECT_MAP) {
			msgpack_unpacked_destroy(&u);
			continue;
		}
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		const msgpack_object_map *m = &u.data.via.map;
		msgpack_pack_map(&pk, m->size + 1);
		for (uint32_t f = 0; f < m->size; f++) {
			msgpack_pack_object(&pk, m->ptr[f].key);
			msgpack_pack_object(&pk, m->ptr[f].val);
		}
		mpk_kv_str(&pk, SPEC_DIR_FIELD, dir);
		msgpack_unpacked_destroy(&u);
		free(j->params);
		j->params_len = sb.size;
		j->params = msgpack_sbuffer_release(&sb);
	}
	return 0;
}

void spec_release(struct spec *s)
{
	for (size_t i = 0; i < s->njobs; i++)
		job_release(&s->jobs[i]);
	free(s->jobs);
	free(s->name);
	memset(s, 0, sizeof(*s));
}
