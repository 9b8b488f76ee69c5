/*
 * import.c: a host directory (or one file) into a running VM through the
 * agent's IMPORT request (see import.h for the rules, agent.h for
 * agent_import, which frames, sends and checks the stream).
 *
 * This file is the source side: a depth-first walk (names sorted, one
 * descriptor and one sorted name list per open level) that hands
 * agent_import one entry at a time (next) and then the file's bytes
 * (read, from the file's own descriptor, at most one frame's worth per
 * call).  Entries are produced only as fast as the link takes them, so
 * memory is the open levels' names plus the hardlink table ((st_dev,
 * st_ino) and first path of files with more than one link), whatever the
 * tree's size.
 *
 * Threading: blocking, in the caller's thread; no global state.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "err.h"
#include "import.h"
#include "linkmap.h"
#include "util.h"

#define MAX_DEPTH 512

struct level {
	int fd;
	char **names;
	size_t n, i;
	size_t plen; /* length of this directory's path (0: the root) */
};

struct src {
	const struct import_opts *o;
	const char *host;
	struct import_result *r;
	uid_t owner;
	dev_t dev;
	struct level *lv;
	int depth, cap;
	char path[AP_MAX_PATH + 1];
	char link[AP_MAX_PATH + 1];
	/* the file being sent */
	int file_fd;
	uint64_t file_left;
	/* a single file */
	bool single, single_sent;
	struct stat sst;
	const char *single_name;
	struct linkmap links; /* files with st_nlink > 1 met so far */
};

static void skip(struct src *m, enum workspace_skip kind, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void skip(struct src *m, enum workspace_skip kind, const char *path, const char *fmt, ...)
{
	m->r->skipped++;
	if (!m->o->warn)
		return;
	struct sb s;
	sb_init(&s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s, fmt, ap);
	va_end(ap);
	m->o->warn(m->o->arg, kind, path, s.buf);
	sb_release(&s);
}

static int cmp_name(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Push the directory fd (taken over) at path length plen: its names,
 * sorted.  0 or -errno (fd closed). */
static int push(struct src *m, int fd, size_t plen)
{
	int dfd = dup(fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		close(fd);
		return -e;
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[n++] = xstrdup(de->d_name);
		errno = 0;
	}
	int e = errno;
	closedir(d);
	if (e) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		close(fd);
		return -e;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_name);
	if (m->depth == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->lv = xrealloc(m->lv, (size_t)m->cap * sizeof(*m->lv));
	}
	m->lv[m->depth++] = (struct level){fd, v, n, 0, plen};
	return 0;
}

static void pop(struct src *m)
{
	struct level *l = &m->lv[--m->depth];
	close(l->fd);
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
}

static void fill(struct ap_entry *e, char *path, int type, const struct src *m,
		 const struct stat *st)
{
	e->path = path;
	e->type = type;
	e->mode = (uint32_t)st->st_mode & 07777;
	e->uid = m->o->uid;
	e->gid = m->o->gid;
	e->mtime = (int64_t)st->st_mtim.tv_sec;
	e->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
	e->size = type == AP_E_REG ? (uint64_t)st->st_size : 0;
	e->link = NULL;
}

/* agent_import_ops.next */
static int src_next(void *arg, struct ap_entry *e, char **errmsg)
{
	struct src *m = arg;
	if (m->file_fd >= 0 && !m->single) { /* the single file's is sent next */
		close(m->file_fd);
		m->file_fd = -1;
	}
	if (m->single) {
		if (m->single_sent)
			return 0;
		m->single_sent = true;
		snprintf(m->path, sizeof(m->path), "%s", m->single_name);
		fill(e, m->path, AP_E_REG, m, &m->sst);
		m->r->files++;
		m->file_left = e->size;
		return 1;
	}
	while (m->depth > 0) {
		struct level *l = &m->lv[m->depth - 1];
		if (l->i == l->n) {
			pop(m);
			continue;
		}
		const char *name = l->names[l->i++];
		size_t nl = strlen(name);
		if (l->plen + 1 + nl > AP_MAX_PATH) {
			m->path[l->plen] = 0;
			skip(m, WORKSPACE_SKIP_UNREADABLE, m->path, "a name in '%s' makes a path longer "
			     "than %u bytes; skipped", l->plen ? m->path : ".", AP_MAX_PATH);
			continue;
		}
		size_t plen = l->plen;
		if (plen)
			m->path[plen++] = '/';
		memcpy(m->path + plen, name, nl + 1);
		plen += nl;
		const char *path = m->path;
		struct stat st;
		if (fstatat(l->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) /* ENOENT: gone since readdir */
				skip(m, WORKSPACE_SKIP_UNREADABLE, path, "cannot stat '%s': %s; skipped",
				     path, strerror(errno));
			continue;
		}
		bool is_dir = S_ISDIR(st.st_mode);
		if (workspace_excluded(m->o->exclude, path, is_dir)) {
			m->r->excluded++;
			continue;
		}
		if (!is_dir && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
			const char *what = S_ISFIFO(st.st_mode)   ? "a fifo"
					   : S_ISSOCK(st.st_mode) ? "a socket"
					   : S_ISCHR(st.st_mode)  ? "a character device"
					   : S_ISBLK(st.st_mode)  ? "a block device"
								  : "of an unknown type";
			skip(m, WORKSPACE_SKIP_SPECIAL, path, "'%s' is %s; skipped", path, what);
			continue;
		}
		if (st.st_uid != m->owner) {
			skip(m, WORKSPACE_SKIP_OWNER, path, "'%s' belongs to uid %u, not to uid %u; "
			     "skipped", path, (unsigned)st.st_uid, (unsigned)m->owner);
			continue;
		}
		if (is_dir) {
			if (st.st_dev != m->dev) {
				skip(m, WORKSPACE_SKIP_MOUNT, path, "'%s' is on another filesystem (a "
				     "mount point); skipped", path);
				continue;
			}
			if (m->depth >= MAX_DEPTH) {
				errmsg_set(errmsg, "'%s' in '%s' is more than %d directories deep", path,
					   m->host, MAX_DEPTH);
				return BG_ERR_INVAL;
			}
			int fd = openat(l->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int r = fd < 0 ? -errno : push(m, fd, plen); /* l is stale after push */
			if (r < 0) {
				if (r != -ENOENT)
					skip(m, WORKSPACE_SKIP_UNREADABLE, path, "cannot read the directory "
					     "'%s': %s; skipped", path, strerror(-r));
				continue;
			}
			fill(e, m->path, AP_E_DIR, m, &st);
			m->r->dirs++;
			return 1;
		}
		if (S_ISLNK(st.st_mode)) {
			ssize_t n = readlinkat(l->fd, name, m->link, sizeof(m->link));
			if (n <= 0 || (size_t)n >= sizeof(m->link)) {
				if (n < 0 && errno == ENOENT)
					continue;
				skip(m, WORKSPACE_SKIP_UNREADABLE, path, "cannot read the symlink '%s'%s%s; "
				     "skipped", path, n < 0 ? ": " : " (its target is too long)",
				     n < 0 ? strerror(errno) : "");
				continue;
			}
			m->link[n] = 0;
			fill(e, m->path, AP_E_SYMLINK, m, &st);
			e->link = m->link;
			m->r->symlinks++;
			return 1;
		}
		/* a regular file; O_NONBLOCK: one swapped for a fifo must not hang us */
		int fd = openat(l->fd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		struct stat fst;
		if (fd < 0 || fstat(fd, &fst) < 0) {
			int err = errno;
			if (fd >= 0)
				close(fd);
			if (err != ENOENT)
				skip(m, WORKSPACE_SKIP_UNREADABLE, path, "cannot open '%s': %s; skipped",
				     path, strerror(err));
			continue;
		}
		if (!S_ISREG(fst.st_mode) || fst.st_ino != st.st_ino || fst.st_dev != st.st_dev) {
			close(fd);
			skip(m, WORKSPACE_SKIP_UNREADABLE, path, "'%s' changed while it was being "
			     "imported; skipped", path);
			continue;
		}
		if (fst.st_nlink > 1) {
			const char *first = linkmap_find_or_add(&m->links, fst.st_dev, fst.st_ino, path);
			if (first) {
				close(fd);
				fill(e, m->path, AP_E_HARDLINK, m, &fst);
				snprintf(m->link, sizeof(m->link), "%s", first);
				e->link = m->link;
				m->r->hardlinks++;
				return 1;
			}
		}
		fill(e, m->path, AP_E_REG, m, &fst);
		m->r->files++;
		m->file_left = e->size;
		if (m->file_left)
			m->file_fd = fd;
		else
			close(fd);
		return 1;
	}
	return 0;
}

/* agent_import_ops.read */
static int64_t src_read(void *arg, void *buf, size_t cap, char **errmsg)
{
	struct src *m = arg;
	ssize_t n;
	if (m->file_fd < 0) {
		errmsg_set(errmsg, "'%s' in '%s' is not open (a bug in banger's import)", m->path,
			   m->host);
		return BG_ERR_IO;
	}
	if (cap > m->file_left)
		cap = (size_t)m->file_left;
	do
		n = read(m->file_fd, buf, cap);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;
		errmsg_set(errmsg, "reading '%s' in '%s': %s", m->path, m->host, strerror(e));
		return bg_errno(e) == BG_ERR_PERM ? BG_ERR_PERM : BG_ERR_IO;
	}
	if (n == 0) {
		errmsg_set(errmsg, "'%s' in '%s' shrank while it was being imported; import it "
			   "again once nothing writes to it", m->single ? m->host : m->path, m->host);
		return BG_ERR_IO;
	}
	m->file_left -= (uint64_t)n;
	m->r->data_bytes += (uint64_t)n;
	if (!m->file_left) {
		close(m->file_fd);
		m->file_fd = -1;
	}
	return n;
}

/* agent_import_ops.cancelled: the caller's callback with the caller's arg */
static bool src_cancelled(void *arg)
{
	const struct src *m = arg;
	return m->o->cancelled(m->o->arg);
}

int import_dir(struct agent_conn *c, const char *host_path, const char *guest_dest,
	       const struct import_opts *o, struct import_result *res, char **errmsg)
{
	static const struct import_opts none;
	struct import_result local;
	struct src m;
	int rc = 0, root = -1;
	char *base = NULL;
	memset(&m, 0, sizeof(m));
	if (!res)
		res = &local;
	memset(res, 0, sizeof(*res));
	if (errmsg) {
		free(*errmsg);
		*errmsg = NULL;
	}
	m.o = o ? o : &none;
	m.r = res;
	m.host = host_path ? host_path : "";
	m.file_fd = -1;
	if (!host_path || !*host_path || !guest_dest || guest_dest[0] != '/') {
		errmsg_set(errmsg, "import: want a host path and an absolute guest path (got '%s' "
			   "and '%s')", m.host, guest_dest ? guest_dest : "");
		return BG_ERR_INVAL;
	}
	size_t nex = 0;
	for (const char *const *p = m.o->exclude; p && *p; p++, nex++) {
		const char *why;
		if (nex >= WORKSPACE_MAX_EXCLUDES) {
			errmsg_set(errmsg, "more than %d exclude patterns", WORKSPACE_MAX_EXCLUDES);
			return BG_ERR_INVAL;
		}
		if (workspace_exclude_check(*p, &why) < 0) {
			errmsg_set(errmsg, "exclude pattern '%s': %s", *p, why);
			return BG_ERR_INVAL;
		}
	}
	m.owner = m.o->owner_set ? m.o->owner : geteuid();
	root = open(host_path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (root < 0 || fstat(root, &st) < 0) {
		int e = errno;
		errmsg_set(errmsg, "cannot open '%s' to import it: %s", host_path, strerror(e));
		rc = bg_errno(e);
		goto out;
	}
	m.dev = st.st_dev;
	if (S_ISREG(st.st_mode)) {
		/* the name it gets in the guest: its last component */
		base = xstrdup(host_path);
		size_t n = strlen(base);
		while (n > 1 && base[n - 1] == '/')
			base[--n] = 0;
		const char *slash = strrchr(base, '/');
		m.single_name = slash ? slash + 1 : base;
		if (!ap_path_clean(m.single_name)) {
			errmsg_set(errmsg, "'%s' does not end in a file name", host_path);
			rc = BG_ERR_INVAL;
			goto out;
		}
		m.single = true;
		m.sst = st;
		m.file_fd = root; /* sent by the first read */
		root = -1;
	} else if (S_ISDIR(st.st_mode)) {
		rc = push(&m, root, 0);
		root = -1;
		if (rc < 0) {
			errmsg_set(errmsg, "cannot read the directory '%s': %s", host_path, strerror(-rc));
			rc = bg_errno(-rc);
			goto out;
		}
	} else {
		errmsg_set(errmsg, "'%s' is neither a directory nor a regular file; only those can "
			   "be imported", host_path);
		rc = BG_ERR_INVAL;
		goto out;
	}
	struct agent_import_ops ops = {
		.next = src_next,
		.read = src_read,
		.cancelled = m.o->cancelled ? src_cancelled : NULL,
		.timeout_us = m.o->timeout_us,
		.single_file = m.single,
		.arg = &m,
	};
	struct agent_import_stats ist;
	rc = agent_import(c, guest_dest, &ops, &ist, errmsg);
	res->entries = rc == 0 ? ist.entries : 0;
out:
	if (root >= 0)
		close(root);
	if (m.file_fd >= 0)
		close(m.file_fd);
	while (m.depth > 0)
		pop(&m);
	free(m.lv);
	linkmap_release(&m.links);
	free(base);
	if (rc < 0 && errmsg && !*errmsg)
		errmsg_set(errmsg, "%s", bg_strerror(rc));
	return rc;
}
