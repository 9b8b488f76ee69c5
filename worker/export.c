/*
 * export.c: the host writer of workspace.export (see export.h for the
 * safety rules): `to:` resolution without following symlinks, the
 * temporary file that is hashed, counted and bounded while it is written
 * and renamed into place only when complete, and the two sources: a tar
 * archive built with libarchive from the agent's entry stream, and a git
 * patch captured from an exec in the guest.
 *
 * Memory: libarchive's 10 KiB block buffer and one agent frame at a time;
 * the set of regular-file paths already in the archive (for hardlinks).
 * Threading: blocking, in the caller's thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "agent.h"
#include "agent_proto.h"
#include "err.h"
#include "export.h"
#include "util.h"

struct export_file {
	int dirfd, fd;
	char *name;     /* final name in dirfd */
	char *tmpname;  /* temporary name in dirfd */
	char *path;     /* root + relative, for messages and the result */
	char *tmppath;
	uint64_t size, max;
	EVP_MD_CTX *md;
	unsigned mode;
};

void export_result_release(struct export_result *r)
{
	if (!r)
		return;
	free(r->path);
	memset(r, 0, sizeof(*r));
}

/* Is root a component-wise prefix of path?  Then *rest is what follows. */
static bool under(const char *root, const char *path, const char **rest)
{
	size_t n = strlen(root);
	while (n > 1 && root[n - 1] == '/')
		n--;
	if (strncmp(root, path, n) != 0 || (path[n] != '/' && path[n] != '\0'))
		return false;
	const char *r = path + n;
	while (*r == '/')
		r++;
	*rest = r;
	return true;
}

/* Check the relative part: components that are not "." or "..", no empty
 * name at the end.  Static reason or NULL. */
static const char *rel_bad(const char *rel)
{
	if (!*rel)
		return "it names the directory itself, not a file";
	size_t n = strlen(rel);
	if (rel[n - 1] == '/')
		return "it ends with '/': give a file name";
	for (const char *c = rel; *c;) {
		size_t len = strcspn(c, "/");
		if (len == 2 && c[0] == '.' && c[1] == '.')
			return "it has a '..' component";
		if (len > 255)
			return "a name in it is longer than 255 bytes";
		c += len;
		while (*c == '/')
			c++;
	}
	return NULL;
}

/* The root `to` is under and the part of it below the root; the rules of
 * export_check_to. */
static int to_root(const char *to, const struct export_opts *o, const char **root,
		   const char **rel, char **errmsg)
{
	if (!o || !o->spec_dir || !*o->spec_dir) {
		errmsg_set(errmsg, "export: no spec directory given");
		return BG_ERR_INVAL;
	}
	if (!to || !*to) {
		errmsg_set(errmsg, "export: 'to' is empty");
		return BG_ERR_INVAL;
	}
	*root = o->spec_dir;
	*rel = to;
	if (to[0] == '/') {
		if (o->artifacts_dir && under(o->artifacts_dir, to, rel)) {
			*root = o->artifacts_dir;
		} else if (!under(o->spec_dir, to, rel)) {
			errmsg_set(errmsg, "export: '%s' is outside the spec's directory '%s'%s%s", to,
				o->spec_dir, o->artifacts_dir ? " and the artifacts directory " : "",
				o->artifacts_dir ? o->artifacts_dir : "");
			return BG_ERR_PERM;
		}
	}
	const char *bad = rel_bad(*rel);
	if (bad) {
		errmsg_set(errmsg, "export: 'to' '%s' is refused: %s", to, bad);
		return strstr(bad, "'..'") ? BG_ERR_PERM : BG_ERR_INVAL;
	}
	return 0;
}

int export_check_to(const char *to, const struct export_opts *o, char **errmsg)
{
	const char *root, *rel;
	return to_root(to, o, &root, &rel, errmsg);
}

/*
 * Resolve `to` under the allowed roots, walking its directories one
 * component at a time from the root without following symlinks (creating
 * missing ones when create).  Out: the last directory's fd, the file's name
 * in it, and the directory's path for messages (caller frees both strings
 * and closes the fd).
 */
static int walk_to(const char *to, const struct export_opts *o, bool create, int *dirfd,
		   char **name, char **dirpath, char **errmsg)
{
	*dirfd = -1;
	*name = *dirpath = NULL;
	const char *root, *rel;
	int rc = to_root(to, o, &root, &rel, errmsg);
	if (rc)
		return rc;
	int cur = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0) {
		int e = errno;
		errmsg_set(errmsg, "export: cannot open '%s': %s", root, strerror(e));
		return bg_errno(e);
	}
	char *copy = xstrdup(rel);
	char *p = copy, *last = NULL;
	struct sb done;
	sb_init(&done);
	sb_adds(&done, root);
	for (;;) {
		size_t len = strcspn(p, "/");
		if (p[len] == '\0') {
			last = p;
			break;
		}
		p[len] = '\0';
		if (!(len == 1 && p[0] == '.')) {
			sb_addf(&done, "/%s", p);
			int fd = openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 && errno == ENOENT && create) {
				if (mkdirat(cur, p, 0755) < 0 && errno != EEXIST) {
					int e = errno;
					errmsg_set(errmsg, "export: cannot create '%s': %s", done.buf, strerror(e));
					rc = bg_errno(e);
					goto out;
				}
				fd = openat(cur, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			}
			if (fd < 0) {
				int e = errno;
				if (e == ELOOP || e == ENOTDIR) {
					struct stat st;
					bool link = fstatat(cur, p, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
						    S_ISLNK(st.st_mode);
					errmsg_set(errmsg, "export: '%s' is %s; refused (exports never follow "
						"symlinks)", done.buf, link ? "a symlink" : "not a directory");
					rc = link ? BG_ERR_PERM : BG_ERR_INVAL;
				} else {
					errmsg_set(errmsg, "export: cannot open '%s': %s", done.buf, strerror(e));
					rc = bg_errno(e);
				}
				goto out;
			}
			close(cur);
			cur = fd;
		}
		p += len + 1;
		while (*p == '/')
			p++;
	}
	if ((last[0] == '.' && last[1] == '\0')) {
		errmsg_set(errmsg, "export: 'to' '%s' is refused: it names a directory", to);
		rc = BG_ERR_INVAL;
		goto out;
	}
	*dirfd = cur;
	cur = -1;
	*name = xstrdup(last);
	*dirpath = sb_detach(&done);
out:
	if (cur >= 0)
		close(cur);
	free(copy);
	sb_release(&done);
	return rc;
}

static char *temp_name(const char *name, const char *tag)
{
	return xasprintf(".%.200s.%s.partial", name, tag);
}

int export_open(const char *to, const struct export_opts *o, struct export_file **out,
		char **errmsg)
{
	*out = NULL;
	int cur;
	char *last, *dir;
	int rc = walk_to(to, o, true, &cur, &last, &dir, errmsg);
	if (rc)
		return rc;
	struct stat st;
	if (fstatat(cur, last, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
		errmsg_set(errmsg, "export: '%s/%s' exists and is %s; refused", dir, last,
			S_ISLNK(st.st_mode)  ? "a symlink (exports never follow symlinks)"
			: S_ISDIR(st.st_mode) ? "a directory"
					      : "not a regular file");
		rc = S_ISLNK(st.st_mode) ? BG_ERR_PERM : BG_ERR_EXIST;
		goto out;
	}
	struct export_file *f = xcalloc(1, sizeof(*f));
	f->dirfd = cur;
	f->fd = -1;
	f->name = xstrdup(last);
	f->path = xasprintf("%s/%s", dir, last);
	f->max = o->max_bytes;
	f->mode = o->mode ? o->mode : 0644;
	if (o->temp_tag) {
		/* ours by name: a crashed attempt's leftover goes first */
		f->tmpname = temp_name(last, o->temp_tag);
		unlinkat(cur, f->tmpname, 0);
		f->fd = openat(cur, f->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       0600);
	}
	for (int tries = 0; !o->temp_tag && tries < 100 && f->fd < 0; tries++) {
		char r[13];
		rand_hex(r, 6);
		free(f->tmpname);
		f->tmpname = temp_name(last, r);
		f->fd = openat(cur, f->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       0600);
		if (f->fd < 0 && errno != EEXIST)
			break;
	}
	if (f->fd < 0) {
		int e = errno;
		errmsg_set(errmsg, "export: cannot create a temporary file next to '%s': %s", f->path,
			strerror(e));
		rc = bg_errno(e);
		f->dirfd = -1;
		free(f->name);
		free(f->path);
		free(f->tmpname);
		free(f);
		goto out;
	}
	f->tmppath = xasprintf("%s/%s", dir, f->tmpname);
	f->md = EVP_MD_CTX_new();
	if (!f->md || EVP_DigestInit_ex(f->md, EVP_sha256(), NULL) != 1) {
		errmsg_set(errmsg, "export: cannot start a sha256 digest");
		export_abort(f);
		cur = -1;
		rc = BG_ERR_NOMEM;
		goto out;
	}
	cur = -1;
	*out = f;
out:
	if (cur >= 0)
		close(cur);
	free(last);
	free(dir);
	return rc;
}

int export_discard(const char *to, const struct export_opts *o, bool remove_to, char **errmsg)
{
	int cur;
	char *last, *dir;
	if (export_check_to(to, o, NULL) != 0)
		return 0; /* refused before anything was written */
	int rc = walk_to(to, o, false, &cur, &last, &dir, errmsg);
	if (rc == BG_ERR_NOENT) {
		if (errmsg) {
			free(*errmsg);
			*errmsg = NULL;
		}
		return 0; /* its directory never came to be: nothing was written */
	}
	if (rc)
		return rc;
	if (o->temp_tag) {
		char *tmp = temp_name(last, o->temp_tag);
		if (unlinkat(cur, tmp, 0) < 0 && errno != ENOENT) {
			int e = errno;
			errmsg_set(errmsg, "export: cannot remove '%s/%s': %s", dir, tmp, strerror(e));
			rc = bg_errno(e);
		}
		free(tmp);
	}
	struct stat st;
	if (!rc && remove_to && fstatat(cur, last, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && unlinkat(cur, last, 0) < 0 && errno != ENOENT) {
		int e = errno;
		errmsg_set(errmsg, "export: cannot remove '%s/%s': %s", dir, last, strerror(e));
		rc = bg_errno(e);
	}
	close(cur);
	free(last);
	free(dir);
	return rc;
}

const char *export_temp_path(const struct export_file *f)
{
	return f->tmppath;
}

uint64_t export_size(const struct export_file *f)
{
	return f->size;
}

int export_write(struct export_file *f, const void *p, size_t n, char **errmsg)
{
	if (f->max && f->size + n > f->max) {
		errmsg_set(errmsg, "the export is larger than max_export_bytes (%llu bytes); nothing "
			"was stored at '%s'",
			(unsigned long long)f->max, f->path);
		return BG_ERR_TOOBIG;
	}
	EVP_DigestUpdate(f->md, p, n);
	const char *b = p;
	size_t left = n;
	while (left) {
		ssize_t w = write(f->fd, b, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = w < 0 ? errno : ENOSPC;
			errmsg_set(errmsg, "cannot write '%s': %s", f->tmppath, strerror(e));
			return bg_errno(e);
		}
		b += w;
		left -= (size_t)w;
	}
	f->size += n;
	return 0;
}

static void file_free(struct export_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->dirfd >= 0)
		close(f->dirfd);
	EVP_MD_CTX_free(f->md);
	free(f->name);
	free(f->tmpname);
	free(f->path);
	free(f->tmppath);
	free(f);
}

void export_abort(struct export_file *f)
{
	if (!f)
		return;
	if (f->dirfd >= 0 && f->tmpname)
		unlinkat(f->dirfd, f->tmpname, 0);
	file_free(f);
}

int export_commit(struct export_file *f, struct export_result *res, char **errmsg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	int rc = 0;
	if (fchmod(f->fd, f->mode) < 0 || fsync(f->fd) < 0) {
		int e = errno;
		errmsg_set(errmsg, "cannot sync '%s': %s", f->tmppath, strerror(e));
		export_abort(f);
		return bg_errno(e);
	}
	close(f->fd);
	f->fd = -1;
	if (renameat(f->dirfd, f->tmpname, f->dirfd, f->name) < 0) {
		int e = errno;
		errmsg_set(errmsg, "cannot rename '%s' to '%s': %s", f->tmppath, f->path, strerror(e));
		export_abort(f);
		return bg_errno(e);
	}
	fsync(f->dirfd);
	EVP_DigestFinal_ex(f->md, md, &len);
	if (res) {
		memset(res, 0, sizeof(*res));
		res->path = xstrdup(f->path);
		res->bytes = f->size;
		for (unsigned i = 0; i < 32 && i < len; i++)
			snprintf(res->sha256 + 2 * i, 3, "%02x", md[i]);
	}
	file_free(f);
	return rc;
}

/* ---- tar from the agent's entry stream ---- */

struct tar {
	struct export_file *f;
	struct archive *a;
	char *err;       /* the first write error (export_write's words) */
	int err_rc;
	/* regular-file paths already written (hardlink targets must be one) */
	char **set;
	size_t setcap, setcount;
	uint64_t entries, data;
	const struct export_hooks *h;
	uint64_t warnings;
};

static la_ssize_t tar_write_cb(struct archive *a, void *arg, const void *buf, size_t n)
{
	struct tar *t = arg;
	int rc = export_write(t->f, buf, n, &t->err);
	if (rc < 0) {
		t->err_rc = rc;
		archive_set_error(a, EIO, "%s", t->err ? t->err : "write failed");
		return -1;
	}
	return (la_ssize_t)n;
}

static size_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 31));
}

static bool set_has(const struct tar *t, const char *s)
{
	if (!t->setcap)
		return false;
	for (size_t k = str_hash(s) & (t->setcap - 1); t->set[k]; k = (k + 1) & (t->setcap - 1))
		if (!strcmp(t->set[k], s))
			return true;
	return false;
}

static void set_add(struct tar *t, const char *s)
{
	if ((t->setcount + 1) * 2 > t->setcap) {
		size_t ncap = t->setcap ? t->setcap * 2 : 256;
		char **n = xcalloc(ncap, sizeof(*n));
		for (size_t i = 0; i < t->setcap; i++) {
			if (!t->set[i])
				continue;
			size_t k = str_hash(t->set[i]) & (ncap - 1);
			while (n[k])
				k = (k + 1) & (ncap - 1);
			n[k] = t->set[i];
		}
		free(t->set);
		t->set = n;
		t->setcap = ncap;
	}
	size_t k = str_hash(s) & (t->setcap - 1);
	while (t->set[k])
		k = (k + 1) & (t->setcap - 1);
	t->set[k] = xstrdup(s);
	t->setcount++;
}

static int tar_fail(struct tar *t, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int tar_fail(struct tar *t, int rc, const char *fmt, ...)
{
	if (t->err_rc)
		return t->err_rc; /* export_write's reason (too big, disk full) wins */
	struct sb s;
	sb_init(&s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s, fmt, ap);
	va_end(ap);
	free(t->err);
	t->err = sb_detach(&s);
	t->err_rc = rc;
	return rc;
}

static int tar_entry(void *arg, const struct ap_entry *e)
{
	struct tar *t = arg;
	struct archive_entry *ae = archive_entry_new();
	archive_entry_set_pathname(ae, e->path);
	archive_entry_set_perm(ae, (mode_t)e->mode);
	archive_entry_set_uid(ae, e->uid);
	archive_entry_set_gid(ae, e->gid);
	archive_entry_set_mtime(ae, (time_t)e->mtime, (long)e->mtime_ns);
	int rc = 0;
	switch (e->type) {
	case AP_E_REG:
		archive_entry_set_filetype(ae, AE_IFREG);
		archive_entry_set_size(ae, (la_int64_t)e->size);
		set_add(t, e->path);
		t->data += e->size;
		break;
	case AP_E_DIR:
		archive_entry_set_filetype(ae, AE_IFDIR);
		break;
	case AP_E_SYMLINK:
		archive_entry_set_filetype(ae, AE_IFLNK);
		archive_entry_set_symlink(ae, e->link);
		break;
	case AP_E_HARDLINK:
		if (!set_has(t, e->link)) {
			rc = tar_fail(t, BG_ERR_PROTO,
				      "the guest sent '%s' as a hardlink to '%s', which is not a file "
				      "it sent before",
				      e->path, e->link);
			break;
		}
		archive_entry_set_filetype(ae, AE_IFREG);
		archive_entry_set_hardlink(ae, e->link);
		archive_entry_set_size(ae, 0);
		break;
	default:
		rc = tar_fail(t, BG_ERR_PROTO, "entry of unknown type %d", e->type);
		break;
	}
	if (rc == 0 && archive_write_header(t->a, ae) < ARCHIVE_WARN)
		rc = tar_fail(t, BG_ERR_IO, "writing the tar header of '%s': %s", e->path,
			      archive_error_string(t->a));
	archive_entry_free(ae);
	if (rc == 0)
		t->entries++;
	return rc;
}

static int tar_data(void *arg, const void *p, size_t n)
{
	struct tar *t = arg;
	la_ssize_t w = archive_write_data(t->a, p, n);
	if (w < 0 || (size_t)w != n)
		return tar_fail(t, BG_ERR_IO, "writing file data into the tar: %s",
				archive_error_string(t->a));
	return 0;
}

static bool tar_cancelled(void *arg)
{
	struct tar *t = arg;
	return t->h->cancelled(t->h->arg);
}

static void tar_warn(void *arg, const char *path, const char *msg)
{
	struct tar *t = arg;
	t->warnings++;
	if (t->h && t->h->warn)
		t->h->warn(t->h->arg, path, msg);
}

int export_tar(struct agent_conn *c, const char *guest_path, const char *to,
	       const struct export_opts *o, const struct export_hooks *h,
	       struct export_result *res, char **errmsg)
{
	static const struct export_hooks noh;
	struct tar t;
	memset(&t, 0, sizeof(t));
	t.h = h ? h : &noh;
	if (res)
		memset(res, 0, sizeof(*res));
	int rc = export_open(to, o, &t.f, errmsg);
	if (rc < 0)
		return rc;
	/* Names are bytes from the guest, UTF-8 as a rule: libarchive converts
	 * them for the pax header from the thread's locale, so the writer runs
	 * in C.UTF-8 (this thread only; a name that is not UTF-8 is stored as
	 * its bytes, marked hdrcharset=BINARY). */
	locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	locale_t old = loc ? uselocale(loc) : (locale_t)0;
	t.a = archive_write_new();
	if (!t.a || archive_write_set_format_pax_restricted(t.a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(t.a) != ARCHIVE_OK ||
	    archive_write_open(t.a, &t, NULL, tar_write_cb, NULL) != ARCHIVE_OK) {
		errmsg_set(errmsg, "export: cannot start a tar archive: %s",
			t.a ? archive_error_string(t.a) : "out of memory");
		rc = BG_ERR_NOMEM;
		goto fail;
	}
	struct agent_export_ops ops = {
		.entry = tar_entry,
		.data = tar_data,
		.warn = tar_warn,
		.cancelled = t.h->cancelled ? tar_cancelled : NULL,
		.timeout_us = t.h->timeout_us,
		.arg = &t,
	};
	struct agent_export_stats st;
	char *aerr = NULL;
	rc = agent_export(c, guest_path, &ops, &st, &aerr);
	if (rc < 0) {
		if (t.err_rc && rc == t.err_rc)
			errmsg_set(errmsg, "%s", t.err);
		else
			errmsg_set(errmsg, "export of '%s': %s", guest_path, aerr ? aerr : bg_strerror(rc));
		free(aerr);
		goto fail;
	}
	free(aerr);
	if (archive_write_close(t.a) != ARCHIVE_OK) {
		rc = t.err_rc ? t.err_rc : BG_ERR_IO;
		errmsg_set(errmsg, "%s", t.err ? t.err : archive_error_string(t.a));
		goto fail;
	}
	archive_write_free(t.a);
	t.a = NULL;
	rc = export_commit(t.f, res, errmsg);
	t.f = NULL;
	if (rc == 0 && res) {
		res->entries = t.entries;
		res->data_bytes = st.bytes;
		res->warnings = t.warnings;
	}
	goto out;
fail:
	if (t.a) {
		archive_write_fail(t.a);
		archive_write_free(t.a);
	}
	export_abort(t.f);
out:
	if (loc) {
		uselocale(old);
		freelocale(loc);
	}
	for (size_t i = 0; i < t.setcap; i++)
		free(t.set[i]);
	free(t.set);
	free(t.err);
	return rc;
}

/* ---- patch from git in the guest ---- */

struct patch {
	struct export_file *f;
	const struct export_hooks *h;
	struct sb errout; /* git's stderr, the first 4 KiB */
	char *err;
	int err_rc;
};

static bool patch_cancelled(void *arg)
{
	struct patch *p = arg;
	return p->h->cancelled(p->h->arg);
}

static int patch_output(void *arg, int stream, const void *data, size_t len)
{
	struct patch *p = arg;
	if (stream == 2) {
		if (p->errout.len < 4096)
			sb_add(&p->errout, data, len < 4096 - p->errout.len ? len : 4096 - p->errout.len);
		return 0;
	}
	int rc = export_write(p->f, data, len, &p->err);
	if (rc < 0)
		p->err_rc = rc;
	return rc;
}

int export_patch(struct agent_conn *c, const char *guest_path, const char *base, const char *to,
		 const struct export_opts *o, const struct export_hooks *h,
		 struct export_result *res, char **errmsg)
{
	static const struct export_hooks noh;
	struct patch p;
	memset(&p, 0, sizeof(p));
	sb_init(&p.errout);
	if (!h)
		h = &noh;
	if (res)
		memset(res, 0, sizeof(*res));
	if (!guest_path || guest_path[0] != '/') {
		errmsg_set(errmsg, "export: '%s' is not an absolute guest path", guest_path ? guest_path : "");
		return BG_ERR_INVAL;
	}
	int rc = export_open(to, o, &p.f, errmsg);
	if (rc < 0)
		return rc;
	/* New files must show in the diff: mark them intent-to-add first (the
	 * index of a throwaway VM's checkout). */
	const char *add[] = {"git", "-C", guest_path, "add", "-A", "-N", NULL};
	const char *diff[] = {"git", "-C", guest_path, "diff", "--binary", base ? base : "HEAD",
			      "--", NULL};
	struct agent_exit ex;
	char *aerr = NULL;
	p.h = h;
	struct agent_wait_opts wo = {patch_output, &p, h->timeout_us,
				     h->cancelled ? patch_cancelled : NULL};
	struct agent_wait_opts wa = {NULL, NULL, h->timeout_us, h->cancelled ? patch_cancelled : NULL};
	wa.arg = &p;
	struct agent_exec_req req = {.argv = add};
	rc = agent_run(c, &req, NULL, 0, &wa, &ex, &aerr);
	if (rc == 0 && (ex.signaled || ex.value != 0)) {
		errmsg_set(errmsg, "git add -A -N in '%s' failed (exit %d): is it a git checkout?",
			guest_path, ex.value);
		rc = BG_ERR_IO;
		goto fail;
	}
	if (rc < 0) {
		errmsg_set(errmsg, "cannot run git in the guest: %s%s", aerr ? aerr : bg_strerror(rc),
			rc == BG_ERR_NOENT ? " (the image has no git)" : "");
		goto fail;
	}
	req.argv = diff;
	rc = agent_run(c, &req, NULL, 0, &wo, &ex, &aerr);
	if (rc < 0) {
		if (p.err_rc)
			errmsg_set(errmsg, "%s", p.err);
		else
			errmsg_set(errmsg, "git diff in the guest: %s", aerr ? aerr : bg_strerror(rc));
		goto fail;
	}
	if (ex.signaled || ex.value != 0) {
		errmsg_set(errmsg, "git diff --binary in '%s' failed (exit %d): %s", guest_path, ex.value,
			p.errout.buf ? p.errout.buf : "");
		rc = BG_ERR_IO;
		goto fail;
	}
	uint64_t n = export_size(p.f);
	rc = export_commit(p.f, res, errmsg);
	p.f = NULL;
	if (rc == 0 && res)
		res->data_bytes = n;
	goto out;
fail:
	export_abort(p.f);
out:
	free(aerr);
	free(p.err);
	sb_release(&p.errout);
	return rc;
}
