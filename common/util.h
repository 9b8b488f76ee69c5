/*
 * util.h: small helpers shared by every banger binary: clocks, growable
 * buffers, paths, allocation that aborts on failure.
 */
#ifndef BANGER_UTIL_H
#define BANGER_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Wall-clock microseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t now_us(void);
/* Monotonic microseconds (CLOCK_MONOTONIC), for durations. */
int64_t mono_us(void);

/* Allocation that aborts the process on failure: an out-of-memory bangerd is
 * restarted by its supervisor and recovers, which is safer than limping on. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Replace *errmsg (freeing what it held) with a newly formatted message, for
 * functions that report errors through a char **errmsg the caller frees.
 * Does nothing when errmsg is NULL. */
void errmsg_set(char **errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Newly allocated, formatted string; the caller owns it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A growable byte buffer (git's strbuf).  buf is always NUL-terminated.
 * sb_init/sb_release for embedded use; sb_detach hands ownership of the bytes
 * to the caller and leaves the sb empty.
 */
struct sb {
	char *buf;
	size_t len, cap;
};
void sb_init(struct sb *sb);
void sb_release(struct sb *sb);
void sb_add(struct sb *sb, const void *p, size_t n);
void sb_adds(struct sb *sb, const char *s);
void sb_addf(struct sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vaddf(struct sb *sb, const char *fmt, va_list ap);
char *sb_detach(struct sb *sb);

/* mkdir -p with mode for each created component; 0 or BG_ERR_*. */
int mkdir_p(const char *path, unsigned mode);
/* Read a whole file (at most max bytes) into *out (caller frees). */
int read_file(const char *path, size_t max, char **out, size_t *len);
/* Write a file atomically: temp name, fsync, rename, fsync the directory. */
int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* Random bytes as lowercase hex into out (2*n+1 bytes). */
void rand_hex(char *out, size_t n);

/* Parse a duration such as "20m", "1h30m", "500ms", "10s" into microseconds.
 * A bare number means seconds.  0 or BG_ERR_INVAL. */
int parse_duration_us(const char *s, int64_t *out);
/* Sizes: "4096", "512K", "256M", "1G", "2T", each unit also as "Ki"/"KiB"/
 * "KB" (binary in every spelling), "4096B"; n bytes of s.  0 or BG_ERR_INVAL. */
int parse_size_bytes(const char *s, size_t n, int64_t *out);

#endif
