/*
 * workspace.c: a host directory to an ext4 workspace image (see
 * workspace.h), on the rootfs writer's two pieces: rootfs_tree.c holds the
 * tree in memory (names and metadata only) and ext4w.c lays out and writes
 * the filesystem.
 *
 *   pass 1  walk the directory with openat/fstatat relative to each
 *           parent's descriptor, never following a symlink; skip what must
 *           not go in (warn callback) and what is excluded; merge the rest
 *           into the tree; hardlinks by (st_dev, st_ino) of files with
 *           st_nlink > 1.
 *   sizing  rtree_finish numbers the inodes (breadth-first, name order);
 *           a digest of the sorted tree's metadata gives the UUID;
 *           ext4w_create sizes and lays out the image; the free space on
 *           the target disk is checked.
 *   write   ext4w_write_tree writes every inode and directory and maps
 *           every file's blocks; then the tree is walked again (depth
 *           first, each directory reopened from its parent's descriptor
 *           with O_NOFOLLOW) and each file's bytes are copied straight into
 *           its blocks with copy_file_range (pread/pwrite through one 1 MiB
 *           buffer when the kernel cannot).
 *
 * A workspace build has no layers, so rt_inode.layer is free: it is set to
 * 1 once a file's data is written (a hardlinked file is written once).
 * Memory: the tree, one directory's names at a time per open level, one
 * descriptor per level of depth, and the 1 MiB buffer.
 *
 * Threading: blocking, in the caller's thread; no global state.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "err.h"
#include "ext4w.h"
#include "rootfs.h"
#include "rootfs_tree.h"
#include "linkmap.h"
#include "util.h"
#include "workspace.h"

#define FIRST_INO 11
#define BUF_SIZE (1u << 20)
#define STEP (4u << 20)   /* progress and cancel checks */
#define MAX_DEPTH 512     /* directories deep: one descriptor each */
#define MAX_TIME (((int64_t)1 << 31) - 1 + ((int64_t)3 << 32))
#define MIN_TIME (-((int64_t)1 << 31))

/* ---- exclude patterns ---- */

int workspace_exclude_check(const char *p, const char **why)
{
	size_t n = p ? strlen(p) : 0;
	if (!n || (n == 1 && p[0] == '/')) {
		*why = "an exclude pattern is empty";
		return BG_ERR_INVAL;
	}
	if (n > WORKSPACE_MAX_PATTERN) {
		*why = "an exclude pattern is longer than 1024 bytes";
		return BG_ERR_INVAL;
	}
	if (p[0] == '!') {
		*why = "negated exclude patterns ('!') are not supported";
		return BG_ERR_INVAL;
	}
	/* components: no "..", no "." (they never match a walked path) */
	const char *c = p;
	while (*c) {
		size_t len = strcspn(c, "/");
		if ((len == 2 && c[0] == '.' && c[1] == '.') || (len == 1 && c[0] == '.')) {
			*why = "an exclude pattern has a '.' or '..' component";
			return BG_ERR_INVAL;
		}
		c += len;
		while (*c == '/')
			c++;
	}
	return 0;
}

bool workspace_exclude_match(const char *pattern, const char *path, bool is_dir)
{
	size_t n = strlen(pattern);
	char buf[WORKSPACE_MAX_PATTERN + 1];
	if (n == 0 || n > WORKSPACE_MAX_PATTERN)
		return false;
	memcpy(buf, pattern, n + 1);
	bool dir_only = false;
	while (n > 1 && buf[n - 1] == '/') {
		buf[--n] = '\0';
		dir_only = true;
	}
	if (dir_only && !is_dir)
		return false;
	const char *pat = buf;
	bool any_depth = false;
	if (strncmp(pat, "**/", 3) == 0) {
		any_depth = true;
		pat += 3;
		while (*pat == '/')
			pat++;
	}
	bool anchored = false;
	if (*pat == '/') {
		anchored = true;
		while (*pat == '/')
			pat++;
	}
	if (!*pat)
		return false;
	if (!any_depth && !anchored && !strchr(pat, '/')) {
		/* the last component, at any depth */
		const char *base = strrchr(path, '/');
		return fnmatch(pat, base ? base + 1 : path, 0) == 0;
	}
	if (fnmatch(pat, path, FNM_PATHNAME) == 0)
		return true;
	if (any_depth) {
		for (const char *s = strchr(path, '/'); s; s = strchr(s + 1, '/'))
			if (fnmatch(pat, s + 1, FNM_PATHNAME) == 0)
				return true;
	}
	return false;
}

/* ---- the build ---- */

struct ws {
	const struct workspace_opts *o;
	const char *src;
	struct rtree tree;
	char *err;
	int rc;
	uid_t owner;
	dev_t dev;
	struct linkmap links; /* files with st_nlink > 1 met so far */
	uint64_t skipped, excluded;
	/* pass 2 */
	struct ext4w *w;
	int img_fd;
	char *buf;
	bool copy_range;
	uint64_t done, total, last_report, since_check;
};

static int failf(struct ws *b, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(struct ws *b, int rc, const char *fmt, ...)
{
	if (b->err)
		return rc;
	struct sb s;
	sb_init(&s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s, fmt, ap);
	va_end(ap);
	b->err = sb_detach(&s);
	b->rc = rc;
	return rc;
}

static bool cancelled(struct ws *b)
{
	return b->o->cancelled && b->o->cancelled(b->o->arg);
}

static void skip(struct ws *b, enum workspace_skip kind, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void skip(struct ws *b, enum workspace_skip kind, const char *path, const char *fmt, ...)
{
	b->skipped++;
	if (!b->o->warn)
		return;
	struct sb s;
	sb_init(&s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s, fmt, ap);
	va_end(ap);
	b->o->warn(b->o->arg, kind, path, s.buf);
	sb_release(&s);
}

bool workspace_excluded(const char *const *patterns, const char *path, bool is_dir)
{
	for (const char *const *p = patterns; p && *p; p++)
		if (workspace_exclude_match(*p, path, is_dir))
			return true;
	return false;
}

static struct rt_inode *inode_from(const struct ws *b, const struct stat *st, uint32_t type)
{
	struct rt_inode *in = rtree_inode_new(type | ((uint32_t)st->st_mode & 07777));
	in->uid = b->o->uid;
	in->gid = b->o->gid;
	int64_t t = (int64_t)st->st_mtim.tv_sec;
	in->mtime = t < MIN_TIME ? MIN_TIME : t > MAX_TIME ? MAX_TIME : t;
	in->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
	return in;
}

static int add(struct ws *b, const char *path, struct rt_inode *in)
{
	char *why = NULL;
	int rc = rtree_add(&b->tree, path, in, 0, &why);
	if (rc < 0)
		failf(b, rc, "'%s' in '%s': %s", path, b->src, why ? why : "refused");
	free(why);
	return rc;
}

static int cmp_name(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The names in the directory dfd (closed here), sorted so the walk (and its
 * warnings) happen in a fixed order. */
static int read_names(struct ws *b, int dfd, const char *rel, char ***out, size_t *n)
{
	*out = NULL;
	*n = 0;
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		return failf(b, bg_errno(e), "cannot read the directory '%s' in '%s': %s",
			     *rel ? rel : ".", b->src, strerror(e));
	}
	size_t cap = 0;
	char **v = NULL;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 32;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[(*n)++] = xstrdup(de->d_name);
		errno = 0;
	}
	int e = errno;
	closedir(d);
	if (e) {
		for (size_t i = 0; i < *n; i++)
			free(v[i]);
		free(v);
		*n = 0;
		return failf(b, bg_errno(e), "cannot read the directory '%s' in '%s': %s",
			     *rel ? rel : ".", b->src, strerror(e));
	}
	if (*n > 1)
		qsort(v, *n, sizeof(*v), cmp_name);
	*out = v;
	return 0;
}

static int scan_dir(struct ws *b, int dfd, const char *rel, int depth);

/* One entry of the directory dfd at path (relative to the root). */
static int scan_entry(struct ws *b, int dfd, const char *name, const char *path, int depth)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0; /* gone since readdir */
		skip(b, WORKSPACE_SKIP_UNREADABLE, path, "cannot stat '%s': %s", path,
		     strerror(errno));
		return 0;
	}
	bool is_dir = S_ISDIR(st.st_mode);
	if (workspace_excluded(b->o->exclude, path, is_dir)) {
		b->excluded++;
		return 0;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
		const char *what = S_ISFIFO(st.st_mode)   ? "a fifo"
				   : S_ISSOCK(st.st_mode) ? "a socket"
				   : S_ISCHR(st.st_mode)  ? "a character device"
				   : S_ISBLK(st.st_mode)  ? "a block device"
							  : "of an unknown type";
		skip(b, WORKSPACE_SKIP_SPECIAL, path, "'%s' is %s; skipped", path, what);
		return 0;
	}
	if (st.st_uid != b->owner) {
		skip(b, WORKSPACE_SKIP_OWNER, path,
		     "'%s' belongs to uid %u, not to uid %u; skipped", path, (unsigned)st.st_uid,
		     (unsigned)b->owner);
		return 0;
	}
	if (is_dir) {
		if (st.st_dev != b->dev) {
			skip(b, WORKSPACE_SKIP_MOUNT, path,
			     "'%s' is on another filesystem (a mount point); skipped", path);
			return 0;
		}
		if (depth >= MAX_DEPTH)
			return failf(b, BG_ERR_INVAL, "'%s' in '%s' is more than %d directories deep",
				     path, b->src, MAX_DEPTH);
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				return 0;
			skip(b, WORKSPACE_SKIP_UNREADABLE, path, "cannot open the directory '%s': %s; "
			     "skipped", path, strerror(errno));
			return 0;
		}
		int rc = add(b, path, inode_from(b, &st, S_IFDIR));
		if (rc < 0) {
			close(fd);
			return rc;
		}
		return scan_dir(b, fd, path, depth + 1);
	}
	if (S_ISLNK(st.st_mode)) {
		size_t cap = (size_t)st.st_size + 2;
		if (cap < 64 || cap > 8192)
			cap = 8192;
		char *target = xmalloc(cap);
		ssize_t n = readlinkat(dfd, name, target, cap);
		if (n <= 0 || (size_t)n >= cap || n > 4095) {
			if (n < 0 && errno == ENOENT) {
				free(target);
				return 0;
			}
			skip(b, WORKSPACE_SKIP_UNREADABLE, path, "cannot read the symlink '%s'%s%s; "
			     "skipped", path, n < 0 ? ": " : " (its target is too long)",
			     n < 0 ? strerror(errno) : "");
			free(target);
			return 0;
		}
		target[n] = '\0';
		struct rt_inode *in = inode_from(b, &st, S_IFLNK);
		in->link = target;
		return add(b, path, in);
	}
	/* a regular file: can we read it? */
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		skip(b, WORKSPACE_SKIP_UNREADABLE, path, "cannot open '%s': %s; skipped", path,
		     strerror(errno));
		return 0;
	}
	close(fd);
	if (st.st_nlink > 1) {
		const char *first = linkmap_find_or_add(&b->links, st.st_dev, st.st_ino, path);
		if (first) {
			char *why = NULL;
			int rc = rtree_link(&b->tree, path, first, 0, &why);
			if (rc < 0)
				failf(b, rc, "'%s' in '%s': %s", path, b->src, why ? why : "refused");
			free(why);
			return rc;
		}
	}
	struct rt_inode *in = inode_from(b, &st, S_IFREG);
	in->size = (uint64_t)st.st_size;
	return add(b, path, in);
}

/* Pass 1 over the directory dfd (closed here) at rel. */
static int scan_dir(struct ws *b, int dfd, const char *rel, int depth)
{
	int keep = dup(dfd); /* fdopendir takes dfd; entries are looked up here */
	if (keep < 0) {
		int e = errno;
		close(dfd);
		return failf(b, bg_errno(e), "dup: %s", strerror(e));
	}
	char **names;
	size_t n;
	int rc = read_names(b, dfd, rel, &names, &n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (cancelled(b)) {
			rc = failf(b, BG_ERR_CANCELED, "cancelled while reading '%s'", b->src);
			break;
		}
		char *path = *rel ? xasprintf("%s/%s", rel, names[i]) : xstrdup(names[i]);
		rc = scan_entry(b, keep, names[i], path, depth);
		free(path);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	close(keep);
	return rc;
}

/* ---- the tree's digest (UUID) ---- */

static void digest_add(EVP_MD_CTX *md, const void *p, size_t n)
{
	EVP_DigestUpdate(md, p, n);
}

static void digest_dir(EVP_MD_CTX *md, const struct rt_dentry *d, struct sb *path)
{
	for (uint32_t i = 0; i < d->nkids; i++) {
		const struct rt_dentry *k = d->kids[i];
		const struct rt_inode *in = k->inode;
		size_t mark = path->len;
		sb_add(path, "/", 1);
		sb_add(path, k->name, k->namelen);
		char meta[160];
		int m = snprintf(meta, sizeof(meta), "|%o|%llu|%lld.%u|%u|%u:%u|", in->mode,
				 (unsigned long long)in->size, (long long)in->mtime, in->mtime_ns,
				 in->ino, in->uid, in->gid);
		digest_add(md, path->buf, path->len + 1);
		digest_add(md, meta, (size_t)m);
		if (in->link)
			digest_add(md, in->link, strlen(in->link) + 1);
		if (S_ISDIR(in->mode) && in->dir == k)
			digest_dir(md, k, path);
		path->len = mark;
		path->buf[mark] = '\0';
	}
}

static void derive16(const char *seed, const char *what, uint8_t out[16])
{
	char *s = xasprintf("banger workspace %s %s", what, seed);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1 || len < 16) {
		memset(md, 0, sizeof(md));
		memcpy(md, s, strlen(s) < 16 ? strlen(s) : 16);
	}
	memcpy(out, md, 16);
	free(s);
}

/* Hex sha256 of the sorted tree's metadata into hex (65 bytes). */
static void tree_digest(struct ws *b, char hex[65])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	struct sb path;
	sb_init(&path);
	sb_adds(&path, "");
	const struct rt_inode *r = b->tree.root->inode;
	char meta[96];
	int m = snprintf(meta, sizeof(meta), "root|%o|%lld.%u", r->mode, (long long)r->mtime,
			 r->mtime_ns);
	if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
		digest_add(md, meta, (size_t)m);
		digest_dir(md, b->tree.root, &path);
		EVP_DigestFinal_ex(md, out, &len);
	}
	EVP_MD_CTX_free(md);
	sb_release(&path);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", i < len ? out[i] : 0);
}

/* ---- pass 2 ---- */

static void report(struct ws *b, bool force)
{
	if (!b->o->progress)
		return;
	if (!force && b->done - b->last_report < STEP)
		return;
	b->last_report = b->done;
	struct workspace_progress p = {b->done, b->total};
	b->o->progress(b->o->arg, &p);
}

/* Copy len bytes of src from offset soff into the image at doff. */
static int copy_run(struct ws *b, int src, uint64_t soff, uint64_t doff, uint64_t len,
		    const char *path)
{
	while (len) {
		if (b->since_check >= STEP) {
			b->since_check = 0;
			if (cancelled(b))
				return failf(b, BG_ERR_CANCELED, "cancelled while copying '%s'", path);
			report(b, false);
		}
		size_t want = len > STEP ? STEP : (size_t)len;
		ssize_t n;
		if (b->copy_range) {
			loff_t so = (loff_t)soff, dof = (loff_t)doff;
			n = copy_file_range(src, &so, b->img_fd, &dof, want, 0);
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP || errno == EBADF)) {
				b->copy_range = false; /* this kernel or filesystem pair cannot */
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
		} else {
			if (want > BUF_SIZE)
				want = BUF_SIZE;
			n = pread(src, b->buf, want, (off_t)soff);
			if (n < 0 && errno == EINTR)
				continue;
			if (n > 0) {
				size_t off = 0;
				while (off < (size_t)n) {
					ssize_t w = pwrite(b->img_fd, b->buf + off, (size_t)n - off,
							   (off_t)(doff + off));
					if (w < 0 && errno == EINTR)
						continue;
					if (w <= 0) {
						int e = w < 0 ? errno : ENOSPC;
						return failf(b, bg_errno(e),
							     "%s while writing '%s' into the image: %s",
							     e == ENOSPC ? "no space left" : "error", path,
							     strerror(e));
					}
					off += (size_t)w;
				}
			}
		}
		if (n < 0) {
			int e = errno;
			return failf(b, bg_errno(e), "cannot copy '%s' in '%s' into the image: %s",
				     path, b->src, strerror(e));
		}
		if (n == 0)
			return failf(b, BG_ERR_IO, "'%s' in '%s' shrank while it was being copied",
				     path, b->src);
		soff += (uint64_t)n;
		doff += (uint64_t)n;
		len -= (uint64_t)n;
		b->done += (uint64_t)n;
		b->since_check += (uint64_t)n;
	}
	return 0;
}

static int write_file(struct ws *b, int dfd, const struct rt_dentry *k, const char *path)
{
	struct rt_inode *in = k->inode;
	int fd = openat(dfd, k->name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return failf(b, bg_errno(errno), "cannot open '%s' in '%s': %s", path, b->src,
			     strerror(errno));
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != in->size ||
	    st.st_mtim.tv_sec != in->mtime || (uint32_t)st.st_mtim.tv_nsec != in->mtime_ns) {
		rc = failf(b, BG_ERR_IO,
			   "'%s' in '%s' changed while the workspace was being built (size, type or "
			   "mtime); build it again once nothing writes to the directory",
			   path, b->src);
		goto out;
	}
	const struct ext4w_run *runs;
	uint32_t nr;
	char *why = NULL;
	rc = ext4w_file_runs(b->w, in, &runs, &nr, &why);
	if (rc < 0) {
		failf(b, rc, "%s", why ? why : "cannot map a file");
		free(why);
		goto out;
	}
	uint64_t left = in->size;
	for (uint32_t i = 0; i < nr && left && rc == 0; i++) {
		uint64_t bytes = runs[i].len * 4096;
		if (bytes > left)
			bytes = left;
		rc = copy_run(b, fd, runs[i].lblk * 4096, runs[i].pblk * 4096, bytes, path);
		left -= bytes;
	}
	if (rc == 0 && left)
		rc = failf(b, BG_ERR_IO, "'%s': %llu bytes are not mapped in the image (a bug in "
			   "banger's writer)", path, (unsigned long long)left);
	in->layer = 1;
out:
	close(fd);
	return rc;
}

/* Pass 2 over the directory d, open as dfd (closed here). */
static int write_dir(struct ws *b, const struct rt_dentry *d, int dfd, struct sb *path)
{
	int rc = 0;
	for (uint32_t i = 0; i < d->nkids && rc == 0; i++) {
		const struct rt_dentry *k = d->kids[i];
		struct rt_inode *in = k->inode;
		bool file = S_ISREG(in->mode) && in->size && !in->layer;
		bool dir = S_ISDIR(in->mode) && in->dir == k && !in->implicit;
		if (!file && !dir)
			continue;
		size_t mark = path->len;
		if (mark)
			sb_add(path, "/", 1);
		sb_add(path, k->name, k->namelen);
		if (file) {
			rc = write_file(b, dfd, k, path->buf);
		} else {
			int fd = openat(dfd, k->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				rc = failf(b, bg_errno(errno),
					   "cannot open the directory '%s' in '%s' again: %s (did it "
					   "change while the workspace was being built?)",
					   path->buf, b->src, strerror(errno));
			else
				rc = write_dir(b, k, fd, path);
		}
		path->len = mark;
		path->buf[mark] = '\0';
	}
	close(dfd);
	return rc;
}

/* Refuse before writing when the disk cannot take the image. */
static int space_check(struct ws *b, const char *out_path, uint64_t need)
{
	char *msg = NULL;
	int rc = ext4w_space_check(out_path, need, "the workspace image", &msg);
	if (rc)
		rc = failf(b, rc, "%s", msg);
	free(msg);
	return rc;
}

int workspace_build(const char *src_dir, const struct workspace_opts *o, const char *out_path,
		    struct workspace_result *res, char **errmsg)
{
	static const struct workspace_opts none;
	struct ws b;
	memset(&b, 0, sizeof(b));
	b.o = o ? o : &none;
	b.src = src_dir ? src_dir : "";
	b.img_fd = -1;
	rtree_init(&b.tree);
	bool created = false;
	int rc = 0, root = -1;
	if (errmsg)
		*errmsg = NULL;
	if (res)
		memset(res, 0, sizeof(*res));
	o = b.o;

	if (!src_dir || !*src_dir || !out_path || !*out_path) {
		rc = failf(&b, BG_ERR_INVAL, "workspace_build: missing source or output path");
		goto out;
	}
	if (o->label && strlen(o->label) > 16) {
		rc = failf(&b, BG_ERR_INVAL, "the label '%s' is longer than 16 bytes", o->label);
		goto out;
	}
	size_t nex = 0;
	for (const char *const *p = o->exclude; p && *p; p++, nex++) {
		const char *why;
		if (nex >= WORKSPACE_MAX_EXCLUDES) {
			rc = failf(&b, BG_ERR_INVAL, "more than %d exclude patterns",
				   WORKSPACE_MAX_EXCLUDES);
			goto out;
		}
		if (workspace_exclude_check(*p, &why) < 0) {
			rc = failf(&b, BG_ERR_INVAL, "exclude pattern '%s': %s", *p, why);
			goto out;
		}
	}
	b.owner = o->owner_set ? o->owner : geteuid();
	root = open(src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		int e = errno;
		rc = failf(&b, e == ENOTDIR ? BG_ERR_INVAL : bg_errno(e),
			   "cannot open the workspace directory '%s': %s", src_dir, strerror(e));
		goto out;
	}
	struct stat rst;
	if (fstat(root, &rst) < 0) {
		rc = failf(&b, bg_errno(errno), "cannot stat '%s': %s", src_dir, strerror(errno));
		goto out;
	}
	b.dev = rst.st_dev;
	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = failf(&b, bg_errno(errno), "cannot create '%s': %s", out_path, strerror(errno));
		goto out;
	}
	close(fd);
	created = true;

	/* pass 1 */
	rc = add(&b, "", inode_from(&b, &rst, S_IFDIR));
	if (rc < 0)
		goto out;
	rc = scan_dir(&b, root, "", 0);
	root = -1;
	if (rc < 0)
		goto out;
	char *why = NULL;
	rc = rtree_finish(&b.tree, FIRST_INO, &why);
	if (rc < 0) {
		failf(&b, rc, "'%s': %s", src_dir, why);
		free(why);
		goto out;
	}

	/* sizing */
	char hex[65];
	tree_digest(&b, hex);
	const char *seed = o->uuid_seed ? o->uuid_seed : hex;
	struct ext4w_params p;
	memset(&p, 0, sizeof(p));
	derive16(seed, "uuid", p.uuid);
	p.uuid[6] = (uint8_t)((p.uuid[6] & 0x0f) | 0x80); /* RFC 9562 version 8 */
	p.uuid[8] = (uint8_t)((p.uuid[8] & 0x3f) | 0x80);
	derive16(seed, "hash-seed", p.hash_seed);
	p.headroom_bytes = o->headroom_bytes;
	p.headroom_pct = o->headroom_pct;
	p.extra_inodes = o->extra_inodes;
	p.label = o->label ? o->label : WORKSPACE_LABEL;
	p.fs_time = o->fs_time ? o->fs_time : ROOTFS_FS_TIME_DEFAULT;
	struct ext4w_info info;
	rc = ext4w_create(&b.w, out_path, &b.tree, &p, &info, &why);
	if (rc < 0) {
		failf(&b, rc, "%s", why);
		free(why);
		goto out;
	}
	rc = space_check(&b, out_path, info.used_blocks * info.block_size);
	if (rc < 0)
		goto out;
	rc = ext4w_write_tree(b.w, &b.tree, o->cancelled, o->arg, &why);
	if (rc < 0) {
		failf(&b, rc, "%s", why ? why : "cancelled while writing the directory tree");
		free(why);
		goto out;
	}

	/* pass 2 */
	b.img_fd = open(out_path, O_WRONLY | O_CLOEXEC);
	if (b.img_fd < 0) {
		rc = failf(&b, bg_errno(errno), "cannot open '%s': %s", out_path, strerror(errno));
		goto out;
	}
	b.copy_range = !o->no_copy_range;
	b.buf = xmalloc(BUF_SIZE);
	b.total = b.tree.data_bytes;
	root = open(src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		rc = failf(&b, bg_errno(errno), "cannot open '%s' again: %s", src_dir,
			   strerror(errno));
		goto out;
	}
	struct sb path;
	sb_init(&path);
	sb_adds(&path, "");
	rc = write_dir(&b, b.tree.root, root, &path);
	root = -1;
	sb_release(&path);
	if (rc < 0)
		goto out;
	report(&b, true);
	char uuid[37];
	rc = ext4w_close(b.w, &info, uuid, &why);
	b.w = NULL;
	if (rc < 0) {
		failf(&b, rc, "%s", why);
		free(why);
		goto out;
	}
	if (res) {
		res->image_bytes = info.blocks * info.block_size;
		res->used_bytes = info.used_blocks * info.block_size;
		res->free_bytes = (info.blocks - info.used_blocks) * info.block_size;
		res->inodes = info.inodes;
		res->inodes_used = FIRST_INO - 1 + b.tree.norder;
		res->files = b.tree.files;
		res->dirs = b.tree.dirs;
		res->symlinks = b.tree.symlinks;
		res->hardlinks = b.tree.hardlinks;
		res->skipped = b.skipped;
		res->excluded = b.excluded;
		res->data_bytes = b.done;
		memcpy(res->uuid, uuid, sizeof(res->uuid));
	}
out:
	if (root >= 0)
		close(root);
	ext4w_destroy(b.w);
	if (b.img_fd >= 0)
		close(b.img_fd);
	if (rc < 0 && created)
		unlink(out_path);
	rtree_release(&b.tree);
	linkmap_release(&b.links);
	free(b.buf);
	if (rc < 0 && errmsg)
		*errmsg = b.err ? b.err : xstrdup(bg_strerror(rc));
	else
		free(b.err);
	return rc;
}
