/*
 * ops_loop.c: loop.attach / loop.detach, and the loops of the inventory.
 *
 * attach opens the backing file beneath the state directory (openat2, no
 * symlinks; then checks it is a regular file owned by the owner), takes a
 * free device with LOOP_CTL_GET_FREE and binds it in one LOOP_CONFIGURE with
 * LO_FLAGS_AUTOCLEAR (and READ_ONLY when asked).  The reply carries an open
 * descriptor of the device: with autoclear, the device is released as soon
 * as the last descriptor closes, so if bangerd, the hypervisor and the helper
 * all die, no loop device is left behind.  The owner cannot open /dev/loopN
 * itself (root:disk 0660): the descriptor is also how it gets access.
 *
 * A device is banger's when the kernel says its backing file is under the
 * state directory (/sys/block/loopN/loop/backing_file, the kernel's own
 * d_path, which a client cannot forge).  One mutex serializes attach and
 * detach so that "already attached?" and "take a free one" cannot race each
 * other inside the helper.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "mpk.h"
#include "util.h"

static pthread_mutex_t loop_lock = PTHREAD_MUTEX_INITIALIZER;

static int read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bg_errno(errno);
	ssize_t n = read(fd, buf, size - 1);
	int e = errno;
	close(fd);
	if (n < 0)
		return bg_errno(e);
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return 0;
}

int loop_backing(int minor, char *buf, size_t size)
{
	char p[80];
	snprintf(p, sizeof(p), "/sys/block/loop%d/loop/backing_file", minor);
	int rc = read_small(p, buf, size);
	if (rc)
		return rc;
	static const char del[] = " (deleted)";
	size_t n = strlen(buf), dl = sizeof(del) - 1;
	if (n > dl && !strcmp(buf + n - dl, del))
		buf[n - dl] = '\0';
	return 0;
}

/* Every loop device minor that sysfs lists, into *out (caller frees). */
static size_t loop_minors(int **out)
{
	size_t n = 0, cap = 0;
	int *v = NULL;
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, "loop", 4) != 0)
			continue;
		char *end;
		long m = strtol(de->d_name + 4, &end, 10);
		if (end == de->d_name + 4 || *end || m < 0 || m >= (1 << 20))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n++] = (int)m;
	}
	if (d)
		closedir(d);
	*out = v;
	return n;
}

static bool loop_ro(int minor)
{
	char p[64], buf[16];
	snprintf(p, sizeof(p), "/sys/block/loop%d/ro", minor);
	return read_small(p, buf, sizeof(buf)) == 0 && buf[0] == '1';
}

/* The device already bound to the file st names (same path, and the kernel's
 * device/inode match), or -1. */
static int find_bound(const char *path, const struct stat *st)
{
	int *minors, found = -1;
	size_t n = loop_minors(&minors);
	char back[HP_PATH_MAX + 64];
	for (size_t i = 0; i < n && found < 0; i++) {
		if (loop_backing(minors[i], back, sizeof(back)) || strcmp(back, path) != 0)
			continue;
		char dev[HP_DEV_MAX];
		snprintf(dev, sizeof(dev), "/dev/loop%d", minors[i]);
		int fd = open(dev, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		struct loop_info64 li;
		if (fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &li) == 0 &&
		    li.lo_inode == st->st_ino && li.lo_device == st->st_dev)
			found = minors[i];
		if (fd >= 0)
			close(fd);
	}
	free(minors);
	return found;
}

/* Open the backing file as asked, checked: regular, owner's, not empty. */
static int open_backing(const struct hp_args *a, struct stat *st, int *out, struct hreply *r)
{
	char err[HP_PATH_MAX + 128];
	int pfd, rc = sp_open_beneath(H.state_fd, a->rel, a->path, O_PATH, &pfd, err, sizeof(err));
	if (rc)
		return hfail(r, rc, "%s", err);
	if (fstat(pfd, st) < 0) {
		rc = hfail(r, bg_errno(errno), "'%s': %s", a->path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		rc = hfail(r, BG_ERR_INVAL, "'%s' is not a regular file", a->path);
		goto out;
	}
	if (st->st_uid != H.owner_uid) {
		rc = hfail(r, BG_ERR_PERM, "'%s' is owned by uid %u, not by banger's owner (uid %u)",
			   a->path, (unsigned)st->st_uid, (unsigned)H.owner_uid);
		goto out;
	}
	if (st->st_size < 512) {
		rc = hfail(r, BG_ERR_INVAL, "'%s' is smaller than one 512-byte sector", a->path);
		goto out;
	}
	/* Re-open the very inode we checked, with the access asked for. */
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	int fd = open(proc, (a->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	struct stat st2;
	if (fd < 0 || fstat(fd, &st2) < 0 || st2.st_ino != st->st_ino || st2.st_dev != st->st_dev) {
		rc = hfail(r, fd < 0 ? bg_errno(errno) : BG_ERR_IO, "cannot open '%s': %s", a->path,
			   fd < 0 ? strerror(errno) : "it changed while it was opened");
		if (fd >= 0)
			close(fd);
		goto out;
	}
	*out = fd;
out:
	close(pfd);
	return rc;
}

static int attach_locked(const struct hp_args *a, struct hreply *r)
{
	struct stat st;
	int bfd = -1, ctl = -1, dfd = -1, rc;
	int minor = -1;
	bool created = false;
	char dev[HP_DEV_MAX];

	rc = open_backing(a, &st, &bfd, r);
	if (rc)
		return rc;
	minor = find_bound(a->path, &st);
	if (minor >= 0) {
		snprintf(dev, sizeof(dev), "/dev/loop%d", minor);
		if (loop_ro(minor) != a->ro) {
			rc = hfail(r, BG_ERR_BUSY, "'%s' is already attached %s as %s", a->path,
				   a->ro ? "read-write" : "read-only", dev);
			goto out;
		}
		dfd = open(dev, (a->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
		if (dfd < 0) {
			rc = hfail(r, bg_errno(errno), "cannot open %s: %s", dev, strerror(errno));
			goto out;
		}
	} else {
		ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
		if (ctl < 0) {
			rc = hfail(r, bg_errno(errno), "cannot open /dev/loop-control: %s",
				   strerror(errno));
			goto out;
		}
		for (int tries = 0; tries < 32 && dfd < 0; tries++) {
			minor = ioctl(ctl, LOOP_CTL_GET_FREE);
			if (minor < 0) {
				rc = hfail(r, bg_errno(errno), "no free loop device: %s",
					   strerror(errno));
				goto out;
			}
			snprintf(dev, sizeof(dev), "/dev/loop%d", minor);
			int fd = open(dev, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
			if (fd < 0) {
				rc = hfail(r, bg_errno(errno), "cannot open %s: %s", dev,
					   strerror(errno));
				goto out;
			}
			struct loop_config lc;
			memset(&lc, 0, sizeof(lc));
			lc.fd = (unsigned)bfd;
			lc.info.lo_flags = LO_FLAGS_AUTOCLEAR | (a->ro ? LO_FLAGS_READ_ONLY : 0);
			size_t pl = strlen(a->path);
			if (pl >= LO_NAME_SIZE)
				pl = LO_NAME_SIZE - 1;
			memcpy(lc.info.lo_file_name, a->path, pl);
			if (ioctl(fd, LOOP_CONFIGURE, &lc) == 0) {
				dfd = fd;
				created = true;
				break;
			}
			int e = errno;
			close(fd);
			if (e != EBUSY) { /* EBUSY: someone else took it first */
				rc = hfail(r, bg_errno(e), "LOOP_CONFIGURE %s: %s", dev, strerror(e));
				goto out;
			}
		}
		if (dfd < 0) {
			rc = hfail(r, BG_ERR_BUSY, "no free loop device after 32 tries");
			goto out;
		}
		if (a->ro) {
			/* hand out a read-only descriptor; ours keeps the device
			 * alive until that one is open */
			int ro = open(dev, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (ro < 0) {
				rc = hfail(r, bg_errno(errno), "cannot reopen %s: %s", dev,
					   strerror(errno));
				goto out;
			}
			close(dfd);
			dfd = ro;
		}
	}
	msgpack_pack_map(&r->pk, 2);
	mpk_kv_str(&r->pk, "device", dev);
	mpk_kv_bool(&r->pk, "created", created);
	r->fd = dfd;
	dfd = -1;
out:
	if (dfd >= 0)
		close(dfd); /* autoclear: a device we bound goes away with it */
	if (ctl >= 0)
		close(ctl);
	close(bfd);
	return rc;
}

int op_loop_attach(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	pthread_mutex_lock(&loop_lock);
	int rc = attach_locked(a, r);
	pthread_mutex_unlock(&loop_lock);
	return rc;
}

/* Clear one device: now if nobody holds it, else when its last user closes
 * it (the kernel turns LOOP_CLR_FD on a busy device into autoclear). */
static int clear_one(int minor, bool *done, struct hreply *r)
{
	char dev[HP_DEV_MAX];
	snprintf(dev, sizeof(dev), "/dev/loop%d", minor);
	*done = false;
	int fd = open(dev, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT || errno == ENXIO
			       ? 0
			       : hfail(r, bg_errno(errno), "cannot open %s: %s", dev, strerror(errno));
	int rc = 0;
	if (ioctl(fd, LOOP_CLR_FD, 0) == 0) {
		*done = true;
	} else if (errno == EBUSY) {
		struct loop_info64 li;
		if (ioctl(fd, LOOP_GET_STATUS64, &li) == 0) {
			li.lo_flags |= LO_FLAGS_AUTOCLEAR;
			if (ioctl(fd, LOOP_SET_STATUS64, &li) == 0)
				*done = true;
		}
		if (!*done)
			rc = hfail(r, BG_ERR_BUSY, "%s is busy: %s", dev, strerror(errno));
	} else if (errno != ENXIO) { /* ENXIO: not bound any more */
		rc = hfail(r, bg_errno(errno), "LOOP_CLR_FD %s: %s", dev, strerror(errno));
	}
	close(fd);
	return rc;
}

int op_loop_detach(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	int *minors, rc = 0, detached = 0;
	char back[HP_PATH_MAX + 64];
	pthread_mutex_lock(&loop_lock);
	size_t n = loop_minors(&minors);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (loop_backing(minors[i], back, sizeof(back)) || strcmp(back, a->path) != 0)
			continue;
		bool done;
		rc = clear_one(minors[i], &done, r);
		detached += done;
	}
	pthread_mutex_unlock(&loop_lock);
	free(minors);
	if (rc)
		return rc;
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_int(&r->pk, "detached", detached);
	return 0;
}

int loop_inventory(msgpack_packer *pk)
{
	int *minors;
	size_t n = loop_minors(&minors), k = 0;
	char back[HP_PATH_MAX + 64];
	bool *mine = xcalloc(n ? n : 1, sizeof(bool));
	for (size_t i = 0; i < n; i++) {
		if (loop_backing(minors[i], back, sizeof(back)) == 0 &&
		    (path_under(back, H.pol.state_dir) || path_under(back, H.pol.runtime_dir))) {
			mine[i] = true;
			k++;
		}
	}
	mpk_pack_str(pk, "loops");
	msgpack_pack_array(pk, k);
	for (size_t i = 0; i < n; i++) {
		if (!mine[i])
			continue;
		char dev[HP_DEV_MAX];
		snprintf(dev, sizeof(dev), "/dev/loop%d", minors[i]);
		if (loop_backing(minors[i], back, sizeof(back)))
			back[0] = '\0'; /* cleared meanwhile */
		msgpack_pack_map(pk, 2);
		mpk_kv_str(pk, "device", dev);
		mpk_kv_str(pk, "backing", back);
	}
	free(mine);
	free(minors);
	return 0;
}
