/*
 * failpoint.h: named points where a test can make the process crash or fail.
 *
 * Always compiled in, off by default.  BANGER_FAILPOINTS holds a list
 * separated by ';' or ',' of  NAME=ACTION  where NAME may use fnmatch
 * wildcards and ACTION is
 *     crash        SIGKILL this process at once (no cleanup, like a power cut
 *                  for the process: what is not durable is lost)
 *     error        make the point return BG_ERR_FAILPOINT
 *     sleep:MS     sleep MS milliseconds, then go on
 * optionally prefixed by "N*" to act only on the Nth hit (1-based), e.g.
 * "test.marker/s2:after=2*crash".  Names in use are listed by
 * `bangerd --failpoints` and in docs/recovery.md.
 */
#ifndef BANGER_FAILPOINT_H
#define BANGER_FAILPOINT_H

/* Parse the environment.  Returns BG_ERR_INVAL (and *errmsg, caller frees)
 * for a malformed list.  Call once, before any thread starts. */
int failpoint_init(char **errmsg);
/* 0, or BG_ERR_FAILPOINT; may not return (crash).  Thread-safe. */
int failpoint_hit(const char *name);
/* failpoint_hit on a name built from a format: skips formatting when no
 * failpoint is configured. */
int failpoint_hitf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int failpoint_enabled(void);

#endif
