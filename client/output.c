/*
 * output.c: the CLI's printing (see output.h): msgpack to JSON, tables,
 * times and durations, defensive field rendering, job events.
 *
 * Nothing here trusts the shape of what bangerd sent: every lookup checks the
 * type and falls back to "?" rather than crash or print garbage.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "mpk.h"
#include "output.h"
#include "util.h"

/* ---- JSON ---------------------------------------------------------------- */

#define OUT_JSON_MAX_DEPTH 64

static char *base64(const void *p, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *s = p;
	char *out = xmalloc((n + 2) / 3 * 4 + 1);
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

/* Bytes as a JSON string when they are valid UTF-8, else {"base64": ...}. */
static json_t *bytes_json(const char *p, size_t n)
{
	json_t *s = json_stringn(p ? p : "", n);
	if (s)
		return s;
	char *b = base64(p, n);
	json_t *o = json_pack("{s:s}", "base64", b);
	free(b);
	return o ? o : json_null();
}

static json_t *conv(const msgpack_object *o, int depth);

static char *key_text(const msgpack_object *k, int depth)
{
	if (k->type == MSGPACK_OBJECT_STR)
		return NULL; /* handled by the caller */
	json_t *j = conv(k, depth);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	/* A string key that was not UTF-8 came back as {"base64":...}: fine,
	 * its text is what we show. */
	char *r = xstrdup(s ? s : "?");
	free(s);
	return r;
}

static json_t *conv(const msgpack_object *o, int depth)
{
	if (depth > OUT_JSON_MAX_DEPTH)
		return json_string("?");
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return json_null();
	case MSGPACK_OBJECT_BOOLEAN:
		return json_boolean(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		if (o->via.u64 <= (uint64_t)INT64_MAX)
			return json_integer((json_int_t)o->via.u64);
		return json_real((double)o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return json_integer((json_int_t)o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
	case MSGPACK_OBJECT_STR:
		return bytes_json(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN:
		return bytes_json(o->via.bin.ptr, o->via.bin.size);
	case MSGPACK_OBJECT_EXT: {
		char *b = base64(o->via.ext.ptr, o->via.ext.size);
		json_t *j = json_pack("{s:i,s:s}", "ext", (int)o->via.ext.type, "base64", b);
		free(b);
		return j ? j : json_null();
	}
	case MSGPACK_OBJECT_ARRAY: {
		json_t *a = json_array();
		for (uint32_t i = 0; i < o->via.array.size; i++)
			json_array_append_new(a, conv(&o->via.array.ptr[i], depth + 1));
		return a;
	}
	case MSGPACK_OBJECT_MAP: {
		json_t *m = json_object();
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			json_t *v = conv(&kv->val, depth + 1);
			if (kv->key.type == MSGPACK_OBJECT_STR &&
			    json_object_setn_new(m, kv->key.via.str.ptr ? kv->key.via.str.ptr : "",
						 kv->key.via.str.size, json_incref(v)) == 0) {
				json_decref(v);
				continue;
			}
			/* Not a string, or not UTF-8: key by its JSON text. */
			char *k = key_text(&kv->key, depth + 1);
			if (!k) {
				char *b = base64(kv->key.via.str.ptr, kv->key.via.str.size);
				k = xasprintf("base64:%s", b);
				free(b);
			}
			json_object_set_new(m, k, v);
			free(k);
		}
		return m;
	}
	}
	return json_string("?");
}

json_t *out_json(const msgpack_object *o)
{
	json_t *j = o ? conv(o, 0) : json_null();
	return j ? j : json_null();
}

int out_json_print(const msgpack_object *o, bool pretty)
{
	json_t *j = out_json(o);
	size_t flags = JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT);
	int rc = json_dumpf(j, stdout, flags);
	json_decref(j);
	if (rc == 0)
		rc = fputc('\n', stdout) == EOF ? -1 : 0;
	if (fflush(stdout) != 0 || rc) {
		cli_error("writing output: %s", strerror(errno));
		return CLI_EXIT_FAIL;
	}
	return 0;
}

char *out_json_text(const msgpack_object *o)
{
	json_t *j = out_json(o);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(j);
	char *r = xstrdup(s ? s : "?");
	free(s);
	return r;
}

/* ---- formatting ------------------------------------------------------------ */

void out_size(char *buf, size_t n, uint64_t bytes)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
	if (bytes < 1024) {
		snprintf(buf, n, "%llu bytes", (unsigned long long)bytes);
		return;
	}
	double v = (double)bytes / 1024;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ARRAY_LEN(units)) {
		v /= 1024;
		u++;
	}
	snprintf(buf, n, "%.1f %s", v, units[u]);
}

void out_duration(char *buf, size_t n, int64_t us)
{
	const char *sign = "";
	if (us < 0) {
		sign = "-";
		us = us == INT64_MIN ? INT64_MAX : -us;
	}
	long long s = (long long)(us / 1000000);
	if (us < 1000)
		snprintf(buf, n, "%s%lldus", sign, (long long)us);
	else if (us < 1000000)
		snprintf(buf, n, "%s%lldms", sign, (long long)(us / 1000));
	else if (us < 10000000)
		snprintf(buf, n, "%s%.1fs", sign, (double)(us / 100000) / 10);
	else if (s < 60)
		snprintf(buf, n, "%s%llds", sign, s);
	else if (s < 3600 && s % 60)
		snprintf(buf, n, "%s%lldm%llds", sign, s / 60, s % 60);
	else if (s < 3600)
		snprintf(buf, n, "%s%lldm", sign, s / 60);
	else if (s < 86400 && (s / 60) % 60)
		snprintf(buf, n, "%s%lldh%lldm", sign, s / 3600, (s / 60) % 60);
	else if (s < 86400)
		snprintf(buf, n, "%s%lldh", sign, s / 3600);
	else if ((s / 3600) % 24)
		snprintf(buf, n, "%s%lldd%lldh", sign, s / 86400, (s / 3600) % 24);
	else
		snprintf(buf, n, "%s%lldd", sign, s / 86400);
}

void out_age(char *buf, size_t n, int64_t us)
{
	long long s = us > 0 ? (long long)(us / 1000000) : 0;
	if (s < 60)
		snprintf(buf, n, "%llds", s);
	else if (s < 3600)
		snprintf(buf, n, "%lldm", s / 60);
	else if (s < 86400)
		snprintf(buf, n, "%lldh", s / 3600);
	else
		snprintf(buf, n, "%lldd", s / 86400);
}

void out_time(char *buf, size_t n, int64_t us, bool ms)
{
	time_t t = (time_t)(us / 1000000);
	int64_t frac = us % 1000000;
	if (frac < 0) {
		t -= 1;
		frac += 1000000;
	}
	struct tm tm;
	char s[64];
	if (!localtime_r(&t, &tm) || strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S", &tm) == 0) {
		snprintf(buf, n, "?");
		return;
	}
	if (ms)
		snprintf(buf, n, "%s.%03d", s, (int)(frac / 1000));
	else
		snprintf(buf, n, "%s", s);
}

/* a - b, saturated: times come from the daemon and may be anything. */
static int64_t sub_sat(int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_sub_overflow(a, b, &r))
		return b < 0 ? INT64_MAX : INT64_MIN;
	return r;
}

void out_since(char *buf, size_t n, int64_t us, int64_t now)
{
	char d[32];
	int64_t ago = sub_sat(now, us);
	if (ago > -1000000 && ago < 1000000)
		snprintf(buf, n, "now");
	else if (ago > 0 && ago < 60000000)
		snprintf(buf, n, "%llds ago", (long long)(ago / 1000000));
	else if (ago < 0 && ago > -60000000)
		snprintf(buf, n, "in %llds", (long long)(-ago / 1000000));
	else if (ago > 0) {
		out_duration(d, sizeof(d), ago / 1000000 * 1000000);
		snprintf(buf, n, "%s ago", d);
	} else {
		out_duration(d, sizeof(d), sub_sat(0, ago) / 1000000 * 1000000);
		snprintf(buf, n, "in %s", d);
	}
}

/* ---- fields ------------------------------------------------------------------ */

bool out_has(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = mpk_get(map, key);
	return o && o->type != MSGPACK_OBJECT_NIL;
}

/* A copy of n bytes with control characters (and, unless keep_nl, newlines)
 * replaced by '?'. */
static char *clean(const char *s, size_t n, bool keep_nl)
{
	char *r = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = c >= 0x20 && c != 0x7f;
		r[i] = ok || c == '\t' || (keep_nl && c == '\n') ? (char)c : '?';
	}
	r[n] = '\0';
	return r;
}

char *out_field(const msgpack_object *map, const char *key, enum out_fmt fmt)
{
	const msgpack_object *o = mpk_get(map, key);
	char buf[128], b2[64];
	int64_t v;
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return xstrdup("-");
	switch (fmt) {
	case OUT_STR:
	case OUT_TEXT:
		if (o->type == MSGPACK_OBJECT_STR)
			return clean(o->via.str.ptr, o->via.str.size, fmt == OUT_TEXT);
		if (o->type == MSGPACK_OBJECT_BIN)
			return clean(o->via.bin.ptr, o->via.bin.size, fmt == OUT_TEXT);
		if (mpk_as_int(o, &v))
			return xasprintf("%lld", (long long)v);
		return xstrdup("?");
	case OUT_INT:
		if (!mpk_as_int(o, &v))
			return xstrdup("?");
		return xasprintf("%lld", (long long)v);
	case OUT_TIME:
		if (!mpk_as_int(o, &v))
			return xstrdup("?");
		out_time(buf, sizeof(buf), v, false);
		out_since(b2, sizeof(b2), v, now_us());
		return xasprintf("%s (%s)", buf, b2);
	case OUT_TIME_MS:
		if (!mpk_as_int(o, &v))
			return xstrdup("?");
		out_time(buf, sizeof(buf), v, true);
		return xstrdup(buf);
	case OUT_AGE:
		if (!mpk_as_int(o, &v))
			return xstrdup("?");
		out_age(buf, sizeof(buf), sub_sat(now_us(), v));
		return xstrdup(buf);
	case OUT_DURATION:
		if (!mpk_as_int(o, &v))
			return xstrdup("?");
		if (v == 0)
			return xstrdup("none");
		out_duration(buf, sizeof(buf), v);
		return xstrdup(buf);
	case OUT_JSON:
		return out_json_text(o);
	}
	return xstrdup("?");
}

char *out_span(const msgpack_object *map, const char *start_key, const char *end_key)
{
	int64_t a, b;
	char sa[64], sb_[64], d[32];
	if (!out_has(map, start_key))
		return xstrdup("-");
	if (mpk_get_int(map, start_key, &a) != 0)
		return xstrdup("?");
	out_time(sa, sizeof(sa), a, true);
	if (!out_has(map, end_key))
		return xasprintf("%s -> (not finished)", sa);
	if (mpk_get_int(map, end_key, &b) != 0)
		return xasprintf("%s -> ?", sa);
	out_time(sb_, sizeof(sb_), b, true);
	out_duration(d, sizeof(d), sub_sat(b, a));
	/* Same date: show only the time of day for the end ("2024-05-01 "). */
	const char *end = sb_;
	if (strlen(sa) > 11 && strncmp(sa, sb_, 11) == 0)
		end = sb_ + 11;
	return xasprintf("%s -> %s (%s)", sa, end, d);
}

void out_text(FILE *f, const char *s, size_t n, const char *indent)
{
	char *c = clean(s, n, indent != NULL);
	for (char *p = c; *p; p++) {
		fputc(*p, f);
		if (*p == '\n' && p[1])
			fputs(indent, f);
	}
	free(c);
}

/* ---- tables ---------------------------------------------------------------- */

void out_table_init(struct out_table *t, size_t ncols)
{
	t->ncols = ncols ? ncols : 1;
	t->cells = NULL;
	t->ncells = t->cap = 0;
}

void out_table_add(struct out_table *t, char *cell)
{
	if (t->ncells == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 32;
		t->cells = xrealloc(t->cells, t->cap * sizeof(*t->cells));
	}
	t->cells[t->ncells++] = cell;
}

void out_table_addf(struct out_table *t, const char *fmt, ...)
{
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	out_table_add(t, sb_detach(&sb));
}

/* Display width: UTF-8 code points (continuation bytes do not count). */
static size_t width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

void out_table_print(const struct out_table *t, FILE *f, const char *indent)
{
	size_t *w = xcalloc(t->ncols, sizeof(*w));
	for (size_t i = 0; i < t->ncells; i++) {
		size_t cw = width(t->cells[i]);
		if (cw > w[i % t->ncols])
			w[i % t->ncols] = cw;
	}
	for (size_t i = 0; i < t->ncells; i++) {
		size_t col = i % t->ncols;
		bool last = col + 1 == t->ncols || i + 1 == t->ncells;
		if (col == 0 && indent)
			fputs(indent, f);
		fputs(t->cells[i], f);
		if (last) {
			fputc('\n', f);
			continue;
		}
		for (size_t pad = width(t->cells[i]); pad < w[col] + 2; pad++)
			fputc(' ', f);
	}
	free(w);
}

void out_table_release(struct out_table *t)
{
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	out_table_init(t, t->ncols);
}

/* ---- events ---------------------------------------------------------------- */

void out_events_init(struct out_events *e, bool json)
{
	struct stat so, se;
	memset(e, 0, sizeof(*e));
	e->json = json;
	e->tty = isatty(1);
	e->bol[0] = e->bol[1] = true;
	e->bol_out = &e->bol[0];
	e->bol_err = &e->bol[1];
	/* When stdout and stderr are the same terminal, a half line of job
	 * stderr is a half line on our stdout too. */
	if (e->tty && isatty(2) && fstat(1, &so) == 0 && fstat(2, &se) == 0 &&
	    so.st_rdev == se.st_rdev)
		e->bol_err = e->bol_out;
}

/* Start one of our own lines on stdout: end a progress line or a half line of
 * job output first. */
static void line_begin(struct out_events *e, bool progress)
{
	if (progress && e->progress_open) {
		fputs("\r\033[K", stdout);
		return;
	}
	if (!*e->bol_out) {
		fputc('\n', stdout);
		*e->bol_out = true;
	}
	e->progress_open = false;
}

static void job_prefix(const msgpack_object *ev)
{
	int64_t job;
	if (mpk_get_int(ev, "job", &job) == 0)
		printf("[job %lld] ", (long long)job);
	else
		fputs("[job ?] ", stdout);
}

static void print_str_field(const msgpack_object *map, const char *key)
{
	char *s = out_field(map, key, OUT_STR);
	fputs(s, stdout);
	free(s);
}

static void print_error_suffix(const msgpack_object *data)
{
	const msgpack_object *err = mpk_get(data, "error");
	if (!err || err->type == MSGPACK_OBJECT_NIL)
		return;
	fputs(": ", stdout);
	if (err->type == MSGPACK_OBJECT_STR)
		out_text(stdout, err->via.str.ptr, err->via.str.size, "    ");
	else
		fputs("?", stdout);
}

static void event_chunk(struct out_events *e, const msgpack_object *ev, const msgpack_object *data,
			bool err)
{
	const char *p;
	size_t n;
	if (data && data->type == MSGPACK_OBJECT_BIN) {
		p = data->via.bin.ptr;
		n = data->via.bin.size;
	} else if (data && data->type == MSGPACK_OBJECT_STR) {
		p = data->via.str.ptr;
		n = data->via.str.size;
	} else {
		line_begin(e, false);
		job_prefix(ev);
		printf("%s ?\n", err ? "stderr" : "stdout");
		return;
	}
	if (n == 0)
		return;
	FILE *f = err ? stderr : stdout;
	bool *bol = err ? e->bol_err : e->bol_out;
	if (e->progress_open && bol == e->bol_out) {
		fputc('\n', stdout);
		e->progress_open = false;
	}
	if (err)
		fflush(stdout);
	fwrite(p, 1, n, f);
	*bol = p[n - 1] == '\n';
}

static void event_progress(struct out_events *e, const msgpack_object *ev,
			   const msgpack_object *data)
{
	line_begin(e, e->tty);
	job_prefix(ev);
	fputs("progress", stdout);
	if (data && data->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < data->via.map.size; i++) {
			const msgpack_object_kv *kv = &data->via.map.ptr[i];
			fputc(' ', stdout);
			if (kv->key.type == MSGPACK_OBJECT_STR)
				out_text(stdout, kv->key.via.str.ptr, kv->key.via.str.size, NULL);
			else
				fputc('?', stdout);
			fputc('=', stdout);
			if (kv->val.type == MSGPACK_OBJECT_STR) {
				out_text(stdout, kv->val.via.str.ptr, kv->val.via.str.size, NULL);
			} else {
				char *j = out_json_text(&kv->val);
				out_text(stdout, j, strlen(j), NULL);
				free(j);
			}
		}
	} else if (data) {
		char *j = out_json_text(data);
		fputc(' ', stdout);
		out_text(stdout, j, strlen(j), NULL);
		free(j);
	}
	if (e->tty) {
		e->progress_open = true;
		*e->bol_out = false;
	} else {
		fputc('\n', stdout);
	}
}

void out_event(struct out_events *e, const msgpack_object *ev)
{
	const msgpack_object *stream = mpk_get(ev, "stream");
	const msgpack_object *data = mpk_get(ev, "data");
	int64_t v;

	if (e->json) {
		json_t *j = out_json(ev);
		json_dumpf(j, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
		json_decref(j);
		fputc('\n', stdout);
		fflush(stdout);
		return;
	}
	if (mpk_str_eq(stream, "stdout") || mpk_str_eq(stream, "stderr")) {
		event_chunk(e, ev, data, mpk_str_eq(stream, "stderr"));
	} else if (mpk_str_eq(stream, "progress")) {
		event_progress(e, ev, data);
	} else if (mpk_str_eq(stream, "state")) {
		line_begin(e, false);
		job_prefix(ev);
		fputs("state ", stdout);
		print_str_field(data, "state");
		if (out_has(data, "exit_code")) {
			if (mpk_get_int(data, "exit_code", &v) == 0)
				printf(" (exit %lld)", (long long)v);
			else
				fputs(" (exit ?)", stdout);
		}
		print_error_suffix(data);
		fputc('\n', stdout);
	} else if (mpk_str_eq(stream, "step")) {
		line_begin(e, false);
		job_prefix(ev);
		fputs("step ", stdout);
		print_str_field(data, "seq");
		fputc(' ', stdout);
		print_str_field(data, "name");
		fputs(": ", stdout);
		print_str_field(data, "phase");
		print_error_suffix(data);
		fputc('\n', stdout);
	} else if (mpk_str_eq(stream, "log") || mpk_str_eq(stream, "warning")) {
		line_begin(e, false);
		job_prefix(ev);
		if (mpk_str_eq(stream, "warning"))
			fputs("warning: ", stdout);
		if (data && data->type == MSGPACK_OBJECT_STR)
			out_text(stdout, data->via.str.ptr, data->via.str.size, "    ");
		else if (data && data->type == MSGPACK_OBJECT_BIN)
			out_text(stdout, data->via.bin.ptr, data->via.bin.size, "    ");
		else
			fputc('?', stdout);
		fputc('\n', stdout);
	} else {
		/* A stream this client does not know: show it rather than drop it. */
		line_begin(e, false);
		job_prefix(ev);
		char *s = stream && stream->type == MSGPACK_OBJECT_STR ? out_field(ev, "stream", OUT_STR)
								       : xstrdup("?");
		char *j = data ? out_json_text(data) : xstrdup("null");
		printf("%s ", s);
		out_text(stdout, j, strlen(j), NULL);
		fputc('\n', stdout);
		free(s);
		free(j);
	}
	fflush(stdout);
}

void out_events_finish(struct out_events *e)
{
	if (!e->json && e->progress_open) {
		fputc('\n', stdout);
		e->progress_open = false;
		*e->bol_out = true;
	}
	fflush(stdout);
}
