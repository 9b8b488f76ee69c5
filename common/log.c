/*
 * log.c: JSON log lines (see log.h); jansson does the escaping.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "util.h"

static enum log_level min_level = LOG_INFO;
static int log_fd = 2;
static const char *ident = "banger";

static const char *const names[] = {"debug", "info", "warn", "error"};

int log_init(const char *level, int fd)
{
	log_fd = fd;
	if (!level)
		return 0;
	for (int i = 0; i < 4; i++)
		if (strcmp(level, names[i]) == 0) {
			min_level = (enum log_level)i;
			return 0;
		}
	return BG_ERR_INVAL;
}

void log_set_ident(const char *id)
{
	ident = id;
}

int log_enabled(enum log_level lv)
{
	return lv >= min_level;
}

void log_msg(enum log_level lv, const char *op, int64_t job, const char *fmt, ...)
{
	if (lv < min_level)
		return;
	struct sb msg;
	va_list ap;
	sb_init(&msg);
	va_start(ap, fmt);
	sb_vaddf(&msg, fmt, ap);
	va_end(ap);

	int64_t us = now_us();
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char ts[40];
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%06dZ", (int)(us % 1000000));

	json_t *o = json_object();
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(names[lv]));
	json_object_set_new(o, "proc", json_string(ident));
	if (op)
		json_object_set_new(o, "op", json_string(op));
	if (job)
		json_object_set_new(o, "job", json_integer(job));
	json_object_set_new(o, "msg", json_stringn(msg.buf ? msg.buf : "", msg.len));
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	sb_release(&msg);
	if (!line)
		return;
	size_t len = strlen(line);
	line[len] = '\n'; /* replaces the NUL: written with its length below */
	if (write(log_fd, line, len + 1) < 0) {
		/* nowhere left to report it */
	}
	free(line);
}
