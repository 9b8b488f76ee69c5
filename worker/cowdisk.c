/*
 * cowdisk.c: private copies of raw base images (see cowdisk.h): FICLONE,
 * else a sparse copy that keeps holes as holes.  The base is only ever
 * opened O_RDONLY.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowdisk.h"
#include "err.h"
#include "util.h"

const char *cowdisk_method_name(enum cowdisk_method m)
{
	return m == COWDISK_REFLINK ? "reflink" : "sparse";
}

/* Copy [off, off+len) from in to out at the same offset. */
static int copy_range(int in, int out, off_t off, off_t len, bool *no_cfr, uint64_t *copied)
{
	char *buf = NULL;
	int rc = 0;
	while (len > 0) {
		ssize_t n = -1;
		if (!*no_cfr) {
			off_t io = off, oo = off;
			n = copy_file_range(in, &io, out, &oo, (size_t)(len > (1 << 30) ? (1 << 30) : len),
					    0);
			if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
				      errno == EINVAL)) {
				*no_cfr = true; /* read/write from now on */
				continue;
			}
		} else {
			if (!buf)
				buf = xmalloc(1 << 20);
			n = pread(in, buf, (size_t)(len > (1 << 20) ? (1 << 20) : len), off);
			if (n > 0) {
				ssize_t w = 0;
				while (w < n) {
					ssize_t k = pwrite(out, buf + w, (size_t)(n - w), off + w);
					if (k < 0 && errno == EINTR)
						continue;
					if (k < 0) {
						rc = bg_errno(errno);
						goto out;
					}
					w += k;
				}
			}
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = bg_errno(errno);
			goto out;
		}
		if (n == 0) {
			rc = BG_ERR_IO; /* the base shrank under us */
			goto out;
		}
		off += n;
		len -= n;
		*copied += (uint64_t)n;
	}
out:
	free(buf);
	return rc;
}

/* Sparse copy of in (size bytes) into out, which is empty. */
static int sparse_copy(int in, int out, off_t size, uint64_t *copied, const char **what)
{
	off_t pos = 0;
	bool no_cfr = false;
	int rc;
	while (pos < size) {
		off_t data = lseek(in, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break; /* only a hole is left */
		if (data < 0) {
			/* no SEEK_DATA: the whole rest is data */
			if (errno != EINVAL && errno != EOPNOTSUPP) {
				*what = "seek";
				return bg_errno(errno);
			}
			data = pos;
		}
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			hole = size;
		if (hole > size)
			hole = size;
		if ((rc = copy_range(in, out, data, hole - data, &no_cfr, copied)) < 0) {
			*what = "copy";
			return rc;
		}
		pos = hole;
	}
	/* the apparent size, with a trailing hole */
	if (ftruncate(out, size) < 0) {
		*what = "truncate";
		return bg_errno(errno);
	}
	return 0;
}

int cowdisk_create(const char *base, const char *dest, int flags, struct cowdisk_result *res,
		   char **errmsg)
{
	struct stat st;
	int in = -1, out = -1, rc = 0;
	char *tmp = NULL;
	const char *what = "copy";
	struct cowdisk_result r = {0};

	if (lstat(dest, &st) == 0) {
		errmsg_set(errmsg, "disk '%s' already exists", dest);
		return BG_ERR_EXIST;
	}
	in = open(base, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot open base image '%s': %s", base, strerror(errno));
		return rc;
	}
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = BG_ERR_INVAL;
		errmsg_set(errmsg, "base image '%s' is not a regular file", base);
		goto out;
	}
	r.size = (uint64_t)st.st_size;
	tmp = xasprintf("%s.tmp-XXXXXX", dest);
	out = mkostemp(tmp, O_CLOEXEC);
	if (out < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot create a disk next to '%s': %s", dest, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if (!(flags & COWDISK_NO_REFLINK) && ioctl(out, FICLONE, in) == 0) {
		r.method = COWDISK_REFLINK;
	} else {
		r.method = COWDISK_SPARSE;
		if ((rc = sparse_copy(in, out, st.st_size, &r.copied, &what)) < 0) {
			errmsg_set(errmsg, "cannot %s base image '%s' to '%s': %s", what, base, tmp,
				   bg_strerror(rc));
			goto out;
		}
	}
	if (fsync(out) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot sync '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, dest) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot rename '%s' to '%s': %s", tmp, dest, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (res)
		*res = r;
out:
	if (out >= 0)
		close(out);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	close(in);
	return rc;
}
