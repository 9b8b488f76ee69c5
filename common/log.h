/*
 * log.h: JSON log lines, one object per line, on stderr (or a file).
 *
 * Every line carries the op id of the RPC or job attempt that caused it, so
 * `grep '"op":"job-42-1"'` shows everything one attempt did.  Thread-safe: a
 * line is written with one write(2).
 */
#ifndef BANGER_LOG_H
#define BANGER_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* level: "debug"|"info"|"warn"|"error" (NULL: info); fd receives the lines.
 * Returns BG_ERR_INVAL for an unknown level name. */
int log_init(const char *level, int fd);
/* ident appears as "proc" in every line (e.g. "bangerd"). */
void log_set_ident(const char *ident);
int log_enabled(enum log_level lv);

/* op may be NULL; job 0 means "no job". */
void log_msg(enum log_level lv, const char *op, int64_t job, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define log_debug(op, job, ...) \
	do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, op, job, __VA_ARGS__); } while (0)
#define log_info(op, job, ...) log_msg(LOG_INFO, op, job, __VA_ARGS__)
#define log_warn(op, job, ...) log_msg(LOG_WARN, op, job, __VA_ARGS__)
#define log_error(op, job, ...) log_msg(LOG_ERROR, op, job, __VA_ARGS__)

#endif
