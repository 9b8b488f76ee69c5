/*
 * audit.c: banger-helper's audit trail: exactly one JSON line per request
 * (op id, method, outcome, error code and message, duration, peer) and one
 * per refused peer, on stderr (the journal under systemd).
 *
 * The lines have the fields of common/log.c's lines (ts, level, proc, op,
 * msg) plus structured ones, so `grep '"op":"job-42-1"'` finds what the
 * helper did for a job attempt next to what bangerd did.  One write(2) per
 * line: safe from every connection thread.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "util.h"

static json_t *base(const char *level)
{
	int64_t us = now_us();
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	char ts[40];
	gmtime_r(&secs, &tm);
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%06dZ", (int)(us % 1000000));
	json_t *o = json_object();
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(level));
	json_object_set_new(o, "proc", json_string("banger-helper"));
	return o;
}

static void emit(json_t *o)
{
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!line)
		return;
	size_t len = strlen(line);
	line[len] = '\n';
	if (write(2, line, len + 1) < 0) {
		/* nowhere else to say it */
	}
	free(line);
}

/* A string from a client, made safe for JSON (jansson refuses bad UTF-8). */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	struct sb sb;
	sb_init(&sb);
	for (const char *p = s; *p; p++)
		sb_add(&sb, (unsigned char)*p < 0x80 ? p : "?", 1);
	j = json_string(sb.buf ? sb.buf : "");
	sb_release(&sb);
	return j;
}

void audit_request(const char *op, const char *method, int rc, const char *errmsg,
		   int64_t duration_us, const struct ucred *peer, uint64_t id)
{
	json_t *o = base(rc ? "warn" : "info");
	json_object_set_new(o, "op", op ? json_string(op) : json_null());
	json_object_set_new(o, "method", method ? json_string(method) : json_null());
	json_object_set_new(o, "outcome", json_string(rc ? "error" : "ok"));
	if (rc)
		json_object_set_new(o, "code", json_string(bg_errname(rc)));
	json_object_set_new(o, "duration_us", json_integer(duration_us));
	json_object_set_new(o, "uid", json_integer(peer->uid));
	json_object_set_new(o, "pid", json_integer(peer->pid));
	json_object_set_new(o, "id", json_integer((json_int_t)id));
	if (rc)
		json_object_set_new(o, "msg", jstr(errmsg ? errmsg : bg_strerror(rc)));
	emit(o);
}

void audit_refused(const struct ucred *peer, const char *why)
{
	json_t *o = base("warn");
	json_object_set_new(o, "event", json_string("refused"));
	json_object_set_new(o, "uid", json_integer(peer->uid));
	json_object_set_new(o, "pid", json_integer(peer->pid));
	json_object_set_new(o, "msg", jstr(why));
	emit(o);
}
