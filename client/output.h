/*
 * output.h: everything the CLI prints: msgpack objects as JSON (jansson),
 * aligned tables, human times, sizes and durations, defensive field
 * rendering, and job events (human or JSON lines).
 *
 * Rendering never trusts the daemon: a field of the wrong type prints "?",
 * an absent one "-", and text from the daemon has control characters replaced
 * before it reaches a terminal (raw job output excepted: it is the job's).
 */
#ifndef BANGER_CLIENT_OUTPUT_H
#define BANGER_CLIENT_OUTPUT_H

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- JSON ---------------------------------------------------------------- */

/*
 * Convert any msgpack object to JSON; returns a new reference, never NULL.
 * str and bin become JSON strings when they are valid UTF-8, otherwise
 * {"base64": "..."}; ext becomes {"ext": type, "base64": "..."}; non-string
 * map keys become their compact JSON text; non-finite floats become null;
 * integers above INT64_MAX become reals; nesting deeper than 64 becomes "?".
 */
json_t *out_json(const msgpack_object *o);
/* Print o as JSON on stdout, indented (pretty) or on one line, then a newline,
 * and flush.  0, or CLI_EXIT_FAIL after printing why. */
int out_json_print(const msgpack_object *o, bool pretty);
/* o as compact JSON text; the caller frees. */
char *out_json_text(const msgpack_object *o);

/* ---- formatting into caller buffers --------------------------------------- */

/* "512 bytes", "1.5 KiB", "50.0 MiB". */
void out_size(char *buf, size_t n, uint64_t bytes);
/* "350us", "12ms", "1.3s", "42s", "1m3s", "2h5m", "3d4h"; negative as "-1s". */
void out_duration(char *buf, size_t n, int64_t us);
/* One unit, for ages in tables: "5s", "3m", "2h", "4d". */
void out_age(char *buf, size_t n, int64_t us);
/* Local time "2024-05-01 12:00:00", with ".123" when ms. */
void out_time(char *buf, size_t n, int64_t us, bool ms);
/* "5m ago" or "in 20s" relative to now. */
void out_since(char *buf, size_t n, int64_t us, int64_t now);

/* ---- fields --------------------------------------------------------------- */

enum out_fmt {
	OUT_STR,      /* a string on one line, control characters replaced */
	OUT_TEXT,     /* a string that may span lines: newlines kept */
	OUT_INT,      /* decimal */
	OUT_TIME,     /* "2024-05-01 12:00:00 (5m ago)" */
	OUT_TIME_MS,  /* "2024-05-01 12:00:00.123" */
	OUT_AGE,      /* now minus the time, one unit */
	OUT_DURATION, /* microseconds as a duration; 0 is "none" */
	OUT_JSON,     /* any value as compact JSON */
};

/* True when map has key with a non-nil value. */
bool out_has(const msgpack_object *map, const char *key);
/* The field rendered; "-" when absent or nil, "?" when of the wrong type.
 * Never NULL; the caller frees. */
char *out_field(const msgpack_object *map, const char *key, enum out_fmt fmt);
/* "START -> END (DURATION)" from two time fields of map, times with
 * milliseconds, END without its date when on the same day; "START -> (not
 * finished)" without an end; "-" without a start.  The caller frees. */
char *out_span(const msgpack_object *map, const char *start_key, const char *end_key);
/* Write text (n bytes) to f with control characters other than tab replaced
 * by '?' and each newline followed by indent (NULL: newlines replaced too). */
void out_text(FILE *f, const char *s, size_t n, const char *indent);

/* ---- tables --------------------------------------------------------------- */

struct out_table {
	size_t ncols;
	char **cells; /* row-major, owned */
	size_t ncells, cap;
};

void out_table_init(struct out_table *t, size_t ncols);
/* Append a cell (rows wrap every ncols cells); the table takes ownership. */
void out_table_add(struct out_table *t, char *cell);
void out_table_addf(struct out_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print with columns padded to their widest cell (the last is not padded),
 * each row prefixed with indent. */
void out_table_print(const struct out_table *t, FILE *f, const char *indent);
void out_table_release(struct out_table *t);

/* ---- events --------------------------------------------------------------- */

/*
 * Printer state for a stream of EVENTs.  Human form: stdout/stderr chunks are
 * written raw to our stdout/stderr; other events are "[job N] ..." lines on
 * stdout, started on a fresh line when job output left one unfinished; when
 * stdout is a terminal, progress rewrites one line in place.  JSON form: one
 * compact object per event per line, flushed.
 */
struct out_events {
	bool json;
	bool tty;           /* stdout is a terminal */
	bool progress_open; /* the cursor is at the end of a progress line */
	bool *bol_out;      /* stdout is at the beginning of a line */
	bool *bol_err;      /* same for stderr; points at *bol_out when both
			     * are the same terminal */
	bool bol[2];
};

void out_events_init(struct out_events *e, bool json);
void out_event(struct out_events *e, const msgpack_object *ev);
/* End an open progress line. */
void out_events_finish(struct out_events *e);

#endif
