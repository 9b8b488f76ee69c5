/*
 * util.c: clocks, buffers, files (see util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "util.h"

int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void oom(void)
{
	static const char msg[] = "banger: out of memory\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		oom();
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	return sb_detach(&sb);
}

void errmsg_set(char **errmsg, const char *fmt, ...)
{
	if (!errmsg)
		return;
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	free(*errmsg);
	*errmsg = sb_detach(&sb);
}

void sb_init(struct sb *sb)
{
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}

void sb_release(struct sb *sb)
{
	free(sb->buf);
	sb_init(sb);
}

static void sb_grow(struct sb *sb, size_t extra)
{
	if (sb->len + extra + 1 <= sb->cap)
		return;
	size_t cap = sb->cap ? sb->cap * 2 : 64;
	while (cap < sb->len + extra + 1)
		cap *= 2;
	sb->buf = xrealloc(sb->buf, cap);
	sb->cap = cap;
}

void sb_add(struct sb *sb, const void *p, size_t n)
{
	sb_grow(sb, n);
	memcpy(sb->buf + sb->len, p, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

void sb_adds(struct sb *sb, const char *s)
{
	sb_add(sb, s, strlen(s));
}

void sb_vaddf(struct sb *sb, const char *fmt, va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return;
	sb_grow(sb, (size_t)n);
	vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
	sb->len += (size_t)n;
}

void sb_addf(struct sb *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(sb, fmt, ap);
	va_end(ap);
}

char *sb_detach(struct sb *sb)
{
	char *p = sb->buf ? sb->buf : xstrdup("");
	sb_init(sb);
	return p;
}

int mkdir_p(const char *path, unsigned mode)
{
	char *p = xstrdup(path);
	int rc = 0;
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) < 0 && errno != EEXIST) {
				rc = bg_errno(errno);
				break;
			}
			*s = c;
			if (!c)
				break;
		}
	}
	free(p);
	return rc;
}

int read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bg_errno(errno);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int rc = bg_errno(errno);
		close(fd);
		return rc;
	}
	if ((size_t)st.st_size > max) {
		close(fd);
		return BG_ERR_TOOBIG;
	}
	struct sb sb;
	sb_init(&sb);
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int rc = bg_errno(errno);
			close(fd);
			sb_release(&sb);
			return rc;
		}
		if (n == 0)
			break;
		if (sb.len + (size_t)n > max) {
			close(fd);
			sb_release(&sb);
			return BG_ERR_TOOBIG;
		}
		sb_add(&sb, buf, (size_t)n);
	}
	close(fd);
	*len = sb.len;
	*out = sb_detach(&sb);
	return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	int rc = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		rc = bg_errno(errno);
		goto out;
	}
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = bg_errno(errno);
			goto out_close;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		rc = bg_errno(errno);
		goto out_close;
	}
	if (rename(tmp, path) < 0) {
		rc = bg_errno(errno);
		goto out_close;
	}
	char *dcopy = xstrdup(path);
	int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dcopy);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out_close:
	close(fd);
	if (rc)
		unlink(tmp);
out:
	free(tmp);
	return rc;
}

void rand_hex(char *out, size_t n)
{
	unsigned char b[64];
	if (n > sizeof(b))
		n = sizeof(b);
	if (getrandom(b, n, 0) != (ssize_t)n) {
		for (size_t i = 0; i < n; i++)
			b[i] = (unsigned char)(rand() & 0xff);
	}
	static const char hx[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[b[i] >> 4];
		out[2 * i + 1] = hx[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int parse_size_bytes(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9') {
		if (v > (uint64_t)INT64_MAX / 10)
			return BG_ERR_INVAL;
		v = v * 10 + (uint64_t)(s[i++] - '0');
	}
	if (i == 0)
		return BG_ERR_INVAL;
	unsigned shift = 0;
	if (i < n) {
		switch (s[i]) {
		case 'K': case 'k': shift = 10; break;
		case 'M': case 'm': shift = 20; break;
		case 'G': case 'g': shift = 30; break;
		case 'T': case 't': shift = 40; break;
		default: break;
		}
		if (shift)
			i++;
	}
	const char *rest = s + i;
	size_t rl = n - i;
	bool ok = rl == 0 || (rl == 1 && *rest == 'B') ||
		  (shift && ((rl == 1 && *rest == 'i') || (rl == 2 && !memcmp(rest, "iB", 2))));
	if (!ok || v > ((uint64_t)INT64_MAX >> shift))
		return BG_ERR_INVAL;
	*out = (int64_t)(v << shift);
	return 0;
}

int parse_duration_us(const char *s, int64_t *out)
{
	int64_t total = 0;
	const char *p = s;
	if (!*p)
		return BG_ERR_INVAL;
	while (*p) {
		if (*p < '0' || *p > '9')
			return BG_ERR_INVAL;
		int64_t v = 0;
		while (*p >= '0' && *p <= '9') {
			if (__builtin_mul_overflow(v, 10, &v) ||
			    __builtin_add_overflow(v, *p - '0', &v))
				return BG_ERR_INVAL;
			p++;
		}
		int64_t mul;
		if (!*p)
			mul = 1000000;
		else if (strncmp(p, "ms", 2) == 0)
			mul = 1000, p += 2;
		else if (*p == 's')
			mul = 1000000, p++;
		else if (*p == 'm')
			mul = 60 * (int64_t)1000000, p++;
		else if (*p == 'h')
			mul = 3600 * (int64_t)1000000, p++;
		else if (*p == 'd')
			mul = 86400 * (int64_t)1000000, p++;
		else
			return BG_ERR_INVAL;
		int64_t part;
		if (__builtin_mul_overflow(v, mul, &part) || __builtin_add_overflow(total, part, &total))
			return BG_ERR_INVAL;
	}
	*out = total;
	return 0;
}
