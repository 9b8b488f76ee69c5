/*
 * rootfs.c: OCI layers to a bootable ext4 image (see rootfs.h), in two passes
 * over the layer blobs and without extracting anything to disk.
 *
 *   pass 1  read every layer's tar headers with libarchive (data skipped),
 *           refusing unsafe entries, and merge them into one tree
 *           (rootfs_tree.c): names and metadata only; a regular file
 *           remembers (layer, entry index) instead of its bytes.  A layer's
 *           entries apply as they come; its whiteouts and opaque markers are
 *           kept aside and applied when the layer ends, and remove only what
 *           lower layers put there (OCI: a whiteout hides lower content,
 *           whatever its position in the tar).
 *   sizing  rtree_finish numbers the inodes; ext4w_create sizes and lays out
 *           the filesystem; a free-space check on the target disk.
 *   write   ext4w_write_tree writes all metadata and maps every file's
 *           blocks; then each layer that still holds surviving data is read
 *           again and each surviving file's bytes stream straight from
 *           libarchive into its blocks.  A layer whose files were all
 *           overwritten or whited out is not read a second time.
 *
 * Memory is the tree (a few hundred bytes per entry), one layer's
 * whiteouts, libarchive's buffers and a 1 MiB staging buffer: never file
 * data.
 *
 * Threading: blocking, runs in the caller's thread; no global state besides
 * libext2fs's error table, registered once.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "err.h"
#include "ext4w.h"
#include "rootfs.h"
#include "rootfs_tree.h"
#include "util.h"

#define FIRST_INO 11             /* EXT2_GOOD_OLD_FIRST_INO */
#define MAX_PATH_LEN 4095
#define MAX_NAME_LEN 255
#define MAX_SYMLINK_LEN 4095     /* one 4 KiB block, NUL excluded */
#define MAX_XATTR_BYTES 4060     /* one EA block: 4096 - header - end marker */
#define MAX_FILE_BYTES (((uint64_t)1 << 32) * 4096 - 4096) /* 16 TiB - 4 KiB */
#define MAX_TIME (((int64_t)1 << 31) - 1 + ((int64_t)3 << 32)) /* ext4 with epoch bits */
#define MIN_TIME (-((int64_t)1 << 31))
#define PROGRESS_STEP (1u << 20)
#define CANCEL_STEP (4u << 20)

/* ---- pure pieces ---- */

int rootfs_path_clean(const char *in, char *out, size_t outsz, const char **why)
{
	size_t o = 0;
	const char *p = in;
	if (strlen(in) + 1 > outsz) {
		*why = "the output buffer is too small";
		return BG_ERR_INVAL;
	}
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, "/");
		if (len == 1 && p[0] == '.') {
			p += len;
			continue;
		}
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			*why = "it has a '..' component, which could escape the image root";
			return BG_ERR_INVAL;
		}
		if (len > MAX_NAME_LEN) {
			*why = "a name in it is longer than 255 bytes, the most ext4 holds";
			return BG_ERR_INVAL;
		}
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, len);
		o += len;
		p += len;
	}
	out[o] = '\0';
	if (o > MAX_PATH_LEN) {
		*why = "the path is longer than 4095 bytes";
		return BG_ERR_INVAL;
	}
	return 0;
}

enum rootfs_wh rootfs_whiteout_parse(const char *base, const char **target)
{
	if (strncmp(base, ".wh.", 4) != 0)
		return ROOTFS_WH_NONE;
	if (strcmp(base, ".wh..wh..opq") == 0)
		return ROOTFS_WH_OPAQUE;
	if (strncmp(base, ".wh..wh.", 8) == 0)
		return ROOTFS_WH_META;
	const char *t = base + 4;
	if (!*t || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
		return ROOTFS_WH_INVALID;
	*target = t;
	return ROOTFS_WH_FILE;
}

static const struct {
	const char *name;
	enum rootfs_compression c;
} media_types[] = {
	{"application/vnd.oci.image.layer.v1.tar", ROOTFS_COMP_NONE},
	{"application/vnd.oci.image.layer.v1.tar+gzip", ROOTFS_COMP_GZIP},
	{"application/vnd.oci.image.layer.v1.tar+zstd", ROOTFS_COMP_ZSTD},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar", ROOTFS_COMP_NONE},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", ROOTFS_COMP_GZIP},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", ROOTFS_COMP_ZSTD},
	{"application/vnd.docker.image.rootfs.diff.tar", ROOTFS_COMP_NONE},
	{"application/vnd.docker.image.rootfs.diff.tar.gzip", ROOTFS_COMP_GZIP},
	{"application/vnd.docker.image.rootfs.diff.tar.zstd", ROOTFS_COMP_ZSTD},
	{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ROOTFS_COMP_GZIP},
	{"tar", ROOTFS_COMP_NONE},
	{"gzip", ROOTFS_COMP_GZIP},
	{"zstd", ROOTFS_COMP_ZSTD},
	{"auto", ROOTFS_COMP_AUTO},
};

int rootfs_media_type(const char *media_type, enum rootfs_compression *out)
{
	if (!media_type || !*media_type) {
		*out = ROOTFS_COMP_AUTO;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_LEN(media_types); i++) {
		if (strcmp(media_type, media_types[i].name) == 0) {
			*out = media_types[i].c;
			return 0;
		}
	}
	return BG_ERR_UNSUPPORTED;
}

/* ---- the build ---- */

/* A whiteout of the layer being read, applied when the layer ends. */
struct pend {
	char *dir;            /* cleaned directory path */
	char *name;           /* the name whited out; NULL: dir is opaque */
};

struct build {
	const struct rootfs_layer *layers;
	size_t n;
	const struct rootfs_opts *o;
	struct rtree tree;
	char *err;
	uint64_t *sizes;
	/* progress */
	enum rootfs_phase phase;
	uint64_t done_base, total, last_report;
	/* whiteouts of the layer being scanned */
	struct pend *pend;
	size_t npend, pendcap;
	uint64_t whiteouts;
	/* pass 2: the layer being streamed */
	struct archive *a;
	size_t cur;
	uint64_t since_cancel_check;
};

static const char *layer_id(const struct build *b, size_t i)
{
	return b->layers[i].digest ? b->layers[i].digest : b->layers[i].path;
}

static int failf(struct build *b, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int failf(struct build *b, int rc, const char *fmt, ...)
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
	return rc;
}

static bool cancelled(const struct build *b)
{
	return b->o->cancelled && b->o->cancelled(b->o->arg);
}

static bool cancelled_cb(void *arg)
{
	return cancelled(arg);
}

static void report(struct build *b, size_t layer, uint64_t done, bool force)
{
	if (!b->o->progress)
		return;
	if (!force && done - b->last_report < PROGRESS_STEP)
		return;
	b->last_report = done;
	struct rootfs_progress p = {b->phase, layer, done, b->total};
	b->o->progress(b->o->arg, &p);
}

static const char *entry_name(struct archive_entry *e)
{
	const char *p = archive_entry_pathname_utf8(e);
	return p ? p : archive_entry_pathname(e);
}

static int open_layer(struct build *b, size_t li, struct archive **out)
{
	struct archive *a = archive_read_new();
	if (!a)
		return failf(b, BG_ERR_NOMEM, "out of memory opening layer %zu", li + 1);
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (archive_read_open_filename(a, b->layers[li].path, 1 << 20) != ARCHIVE_OK) {
		int e = archive_errno(a);
		int rc = e == ENOENT ? BG_ERR_NOENT : BG_ERR_IO;
		failf(b, rc, "layer %zu (%s): cannot read '%s': %s", li + 1, layer_id(b, li),
		      b->layers[li].path, archive_error_string(a));
		archive_read_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

static int read_fail(struct build *b, size_t li, struct archive *a, uint64_t idx)
{
	const char *msg = archive_error_string(a);
	return failf(b, BG_ERR_IO,
		     "layer %zu (%s): the layer is corrupt or truncated (at entry %llu): %s", li + 1,
		     layer_id(b, li), (unsigned long long)idx + 1,
		     msg ? msg : "unknown libarchive error");
}

static int entry_fail(struct build *b, size_t li, const char *path, const char *why)
{
	return failf(b, BG_ERR_INVAL, "layer %zu (%s): entry '%s': %s", li + 1, layer_id(b, li),
		     path, why);
}

static void pend_push(struct build *b, char *dir, char *name)
{
	if (b->npend == b->pendcap) {
		b->pendcap = b->pendcap ? b->pendcap * 2 : 64;
		b->pend = xrealloc(b->pend, b->pendcap * sizeof(*b->pend));
	}
	b->pend[b->npend++] = (struct pend){dir, name};
}

static void pend_clear(struct build *b)
{
	for (size_t i = 0; i < b->npend; i++) {
		free(b->pend[i].dir);
		free(b->pend[i].name);
	}
	b->npend = 0;
}

/* Merge one entry into the tree now; errors name the layer and the entry. */
static int apply(struct build *b, size_t li, const char *clean, struct rt_inode *in,
		 const char *link)
{
	char *why = NULL;
	int rc = in ? rtree_add(&b->tree, clean, in, (uint32_t)li, &why)
		    : rtree_link(&b->tree, clean, link, (uint32_t)li, &why);
	if (rc < 0)
		entry_fail(b, li, *clean ? clean : ".", why ? why : "refused");
	free(why);
	return rc;
}

/* Copy the xattrs banger keeps (the namespaces ext4 serves) onto in. */
static int take_xattrs(struct build *b, size_t li, const char *path, struct archive_entry *e,
		       struct rt_inode *in)
{
	static const char *const keep[] = {"user.", "trusted.", "security."};
	const char *name;
	const void *value;
	size_t size, total = 0;
	int n = archive_entry_xattr_reset(e);
	if (n <= 0)
		return 0;
	in->xattrs = xcalloc((size_t)n, sizeof(*in->xattrs));
	while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
		size_t plen = 0;
		for (size_t i = 0; i < ARRAY_LEN(keep) && !plen; i++)
			if (strncmp(name, keep[i], strlen(keep[i])) == 0)
				plen = strlen(keep[i]);
		if (!plen && (strcmp(name, "system.posix_acl_access") == 0 ||
			      strcmp(name, "system.posix_acl_default") == 0))
			plen = strlen(name);
		if (!plen)
			continue; /* other namespaces (macOS, system.*) mean nothing to ext4 */
		if (strlen(name) - plen > MAX_NAME_LEN) {
			char *why = xasprintf("the xattr name '%.40s...' is longer than 255 bytes", name);
			entry_fail(b, li, path, why);
			free(why);
			return BG_ERR_INVAL;
		}
		total += ((16 + strlen(name) + 3) & ~(size_t)3) + ((size + 3) & ~(size_t)3);
		if (total > MAX_XATTR_BYTES) {
			char *why = xasprintf("its xattrs take more than %d bytes, more than ext4 "
					      "holds for one file (one 4 KiB block)",
					      MAX_XATTR_BYTES);
			entry_fail(b, li, path, why);
			free(why);
			return BG_ERR_INVAL;
		}
		struct rt_xattr *x = &in->xattrs[in->nxattrs++];
		x->name = xstrdup(name);
		x->value = xmalloc(size ? size : 1);
		memcpy(x->value, value, size);
		x->len = (uint32_t)size;
	}
	return 0;
}

/* One tar entry of layer li (entry index idx): merged into the tree, or
 * kept aside if it is a whiteout. */
static int take_entry(struct build *b, size_t li, uint64_t idx, struct archive_entry *e)
{
	const char *name = entry_name(e);
	if (!name) {
		return failf(b, BG_ERR_INVAL,
			     "layer %zu (%s): entry %llu has no name libarchive can read", li + 1,
			     layer_id(b, li), (unsigned long long)idx + 1);
	}
	size_t nl = strlen(name);
	char *clean = xmalloc(nl + 1);
	const char *why = NULL;
	if (rootfs_path_clean(name, clean, nl + 1, &why) < 0) {
		free(clean);
		return entry_fail(b, li, name, why);
	}
	const char *slash = strrchr(clean, '/');
	const char *base = slash ? slash + 1 : clean;
	char *dir = xstrndup(clean, slash ? (size_t)(slash - clean) : 0);
	const char *target = NULL;
	switch (rootfs_whiteout_parse(base, &target)) {
	case ROOTFS_WH_OPAQUE:
		free(clean);
		pend_push(b, dir, NULL);
		return 0;
	case ROOTFS_WH_FILE:
		pend_push(b, dir, xstrdup(target));
		free(clean);
		return 0;
	case ROOTFS_WH_META:
		free(clean);
		free(dir);
		return 0;
	case ROOTFS_WH_INVALID:
		free(clean);
		free(dir);
		return entry_fail(b, li, name, "it is a whiteout ('.wh.') that names nothing");
	case ROOTFS_WH_NONE:
		break;
	}
	free(dir);

	const char *hl = archive_entry_hardlink_utf8(e);
	if (!hl)
		hl = archive_entry_hardlink(e);
	if (hl) {
		size_t tl = strlen(hl);
		char *ct = xmalloc(tl + 1);
		if (rootfs_path_clean(hl, ct, tl + 1, &why) < 0) {
			char *msg = xasprintf("its hardlink target '%s' is refused: %s", hl, why);
			entry_fail(b, li, name, msg);
			free(msg);
			free(ct);
			free(clean);
			return BG_ERR_INVAL;
		}
		int rc = apply(b, li, clean, NULL, ct);
		free(ct);
		free(clean);
		return rc;
	}

	uint32_t type;
	switch (archive_entry_filetype(e)) {
	case AE_IFREG: type = S_IFREG; break;
	case AE_IFDIR: type = S_IFDIR; break;
	case AE_IFLNK: type = S_IFLNK; break;
	case AE_IFCHR: type = S_IFCHR; break;
	case AE_IFBLK: type = S_IFBLK; break;
	case AE_IFIFO: type = S_IFIFO; break;
	case AE_IFSOCK: type = S_IFSOCK; break;
	default: {
		char *msg = xasprintf("its type (0%o) is not one ext4 can hold",
				      (unsigned)archive_entry_filetype(e));
		entry_fail(b, li, name, msg);
		free(msg);
		free(clean);
		return BG_ERR_INVAL;
	}
	}
	struct rt_inode *in = rtree_inode_new(type | ((uint32_t)archive_entry_perm(e) & 07777));
	int rc = 0;
	const char *bad = NULL;
	int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	if (uid < 0 || uid > 0xfffffffeLL || gid < 0 || gid > 0xfffffffeLL)
		bad = "its owner (uid or gid) does not fit ext4's 32 bits";
	in->uid = (uint32_t)uid;
	in->gid = (uint32_t)gid;
	if (archive_entry_mtime_is_set(e)) {
		int64_t t = archive_entry_mtime(e);
		long ns = archive_entry_mtime_nsec(e);
		in->mtime = t < MIN_TIME ? MIN_TIME : t > MAX_TIME ? MAX_TIME : t;
		in->mtime_ns = ns >= 0 && ns < 1000000000L ? (uint32_t)ns : 0;
	}
	if (type == S_IFREG) {
		int64_t size = archive_entry_size(e);
		if (size < 0 || (uint64_t)size > MAX_FILE_BYTES)
			bad = "its size is larger than an ext4 file can be (16 TiB)";
		in->size = size > 0 ? (uint64_t)size : 0;
		in->layer = (uint32_t)li;
		in->entry = (uint32_t)idx;
	} else if (type == S_IFLNK) {
		const char *t = archive_entry_symlink_utf8(e);
		if (!t)
			t = archive_entry_symlink(e);
		if (!t || !*t)
			bad = "it is a symlink with an empty target";
		else if (strlen(t) > MAX_SYMLINK_LEN)
			bad = "it is a symlink whose target is longer than 4095 bytes";
		else
			in->link = xstrdup(t);
	} else if (type == S_IFCHR || type == S_IFBLK) {
		unsigned long ma = (unsigned long)archive_entry_rdevmajor(e);
		unsigned long mi = (unsigned long)archive_entry_rdevminor(e);
		if (ma > 0xfff || mi > 0xfffff)
			bad = "its device number does not fit ext4 (12-bit major, 20-bit minor)";
		in->rdev_major = (uint32_t)ma;
		in->rdev_minor = (uint32_t)mi;
	}
	if (bad) {
		entry_fail(b, li, name, bad);
		rc = BG_ERR_INVAL;
	} else {
		rc = take_xattrs(b, li, name, e, in);
	}
	if (rc < 0) {
		rtree_inode_free(in);
		free(clean);
		return rc;
	}
	rc = apply(b, li, clean, in, NULL);
	free(clean);
	return rc;
}

/* The layer's whiteouts, once its entries are in: each hides only what the
 * layers below put there (rtree_whiteout, rtree_opaque). */
static void apply_whiteouts(struct build *b, size_t li)
{
	for (size_t i = 0; i < b->npend; i++) {
		struct pend *p = &b->pend[i];
		if (p->name)
			rtree_whiteout(&b->tree, p->dir, p->name, (uint32_t)li);
		else
			rtree_opaque(&b->tree, p->dir, (uint32_t)li);
		b->whiteouts++;
	}
}

static int scan_layer(struct build *b, size_t li)
{
	struct archive *a;
	int rc = open_layer(b, li, &a);
	if (rc < 0)
		return rc;
	uint64_t idx = 0;
	for (;;) {
		if (cancelled(b)) {
			rc = failf(b, BG_ERR_CANCELED, "cancelled while reading layer %zu", li + 1);
			break;
		}
		struct archive_entry *e;
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			rc = read_fail(b, li, a, idx);
			break;
		}
		if (idx == UINT32_MAX) {
			rc = failf(b, BG_ERR_INVAL, "layer %zu (%s): more than %u entries", li + 1,
				   layer_id(b, li), UINT32_MAX);
			break;
		}
		rc = take_entry(b, li, idx, e);
		if (rc < 0)
			break;
		idx++;
		report(b, li, b->done_base + (uint64_t)archive_filter_bytes(a, -1), false);
	}
	archive_read_free(a);
	if (rc == 0)
		apply_whiteouts(b, li);
	pend_clear(b);
	b->done_base += b->sizes[li];
	report(b, li, b->done_base, true);
	return rc;
}

/* ext4w_read_fn over the current archive entry. */
static int read_data(void *arg, const void **buf, size_t *len, int64_t *off, char **why)
{
	struct build *b = arg;
	la_int64_t o;
	int r = archive_read_data_block(b->a, buf, len, &o);
	if (r == ARCHIVE_EOF)
		return 1;
	if (r < ARCHIVE_WARN) {
		const char *msg = archive_error_string(b->a);
		*why = xasprintf("the layer is corrupt or truncated: %s",
				 msg ? msg : "unknown libarchive error");
		return BG_ERR_IO;
	}
	*off = o;
	b->since_cancel_check += *len;
	if (b->since_cancel_check >= CANCEL_STEP) {
		b->since_cancel_check = 0;
		if (cancelled(b)) {
			*why = xstrdup("cancelled while writing file data");
			return BG_ERR_CANCELED;
		}
	}
	report(b, b->cur, b->done_base + (uint64_t)archive_filter_bytes(b->a, -1), false);
	return 0;
}

static int cmp_entry(const void *x, const void *y)
{
	const struct rt_inode *a = *(const struct rt_inode *const *)x;
	const struct rt_inode *c = *(const struct rt_inode *const *)y;
	return a->entry < c->entry ? -1 : a->entry > c->entry;
}

/* Pass 2: stream each surviving file's bytes from its layer. */
static int write_layers(struct build *b, struct ext4w *w)
{
	struct rtree *t = &b->tree;
	size_t *count = xcalloc(b->n ? b->n : 1, sizeof(*count));
	for (uint32_t i = 0; i < t->norder; i++)
		if (S_ISREG(t->order[i]->mode) && t->order[i]->size)
			count[t->order[i]->layer]++;
	struct rt_inode **list = NULL;
	int rc = 0;
	b->phase = ROOTFS_WRITE;
	b->total = 0;
	b->done_base = 0;
	b->last_report = 0;
	for (size_t li = 0; li < b->n; li++)
		if (count[li])
			b->total += b->sizes[li];
	for (size_t li = 0; li < b->n && rc == 0; li++) {
		if (!count[li])
			continue;
		list = xrealloc(list, count[li] * sizeof(*list));
		size_t k = 0;
		for (uint32_t i = 0; i < t->norder; i++) {
			struct rt_inode *in = t->order[i];
			if (S_ISREG(in->mode) && in->size && in->layer == li)
				list[k++] = in;
		}
		qsort(list, k, sizeof(*list), cmp_entry);
		rc = open_layer(b, li, &b->a);
		if (rc < 0)
			break;
		b->cur = li;
		uint64_t idx = 0;
		k = 0;
		while (k < count[li]) {
			if (cancelled(b)) {
				rc = failf(b, BG_ERR_CANCELED, "cancelled while writing layer %zu",
					   li + 1);
				break;
			}
			struct archive_entry *e;
			int r = archive_read_next_header(b->a, &e);
			if (r == ARCHIVE_EOF) {
				rc = failf(b, BG_ERR_IO,
					   "layer %zu (%s): the layer changed while it was being read "
					   "(entry %llu is gone)",
					   li + 1, layer_id(b, li),
					   (unsigned long long)list[k]->entry + 1);
				break;
			}
			if (r < ARCHIVE_WARN) {
				rc = read_fail(b, li, b->a, idx);
				break;
			}
			if (idx == list[k]->entry) {
				struct rt_inode *in = list[k];
				const char *name = entry_name(e);
				if (archive_entry_size(e) != (int64_t)in->size) {
					rc = failf(b, BG_ERR_IO,
						   "layer %zu (%s): the layer changed while it was "
						   "being read (entry '%s' has another size)",
						   li + 1, layer_id(b, li), name ? name : "?");
					break;
				}
				char *why = NULL;
				rc = ext4w_write_data(w, in, read_data, b, &why);
				if (rc < 0) {
					if (rc == BG_ERR_NOSPC || rc == BG_ERR_CANCELED)
						failf(b, rc, "%s", why ? why : bg_strerror(rc));
					else
						failf(b, rc, "layer %zu (%s): entry '%s': %s", li + 1,
						      layer_id(b, li), name ? name : "?",
						      why ? why : "write failed");
					free(why);
					break;
				}
				k++;
			}
			idx++;
		}
		archive_read_free(b->a);
		b->a = NULL;
		b->done_base += b->sizes[li];
		report(b, li, b->done_base, true);
	}
	free(list);
	free(count);
	return rc;
}

/* 16 bytes derived from the manifest digest for one purpose. */
static void derive16(const char *digest, const char *what, uint8_t out[16])
{
	char *s = xasprintf("banger rootfs %s %s", what, digest);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL) != 1 || len < 16) {
		/* Cannot happen with a working libcrypto; stay deterministic. */
		memset(md, 0, sizeof(md));
		memcpy(md, s, strlen(s) < 16 ? strlen(s) : 16);
	}
	memcpy(out, md, 16);
	free(s);
}

/* Refuse before writing when the disk cannot take the image. */
static int space_check(struct build *b, const char *out_path, uint64_t need)
{
	char *msg = NULL;
	int rc = ext4w_space_check(out_path, need, "the image", &msg);
	if (rc)
		rc = failf(b, rc, "%s", msg);
	free(msg);
	return rc;
}

int rootfs_build(const struct rootfs_layer *layers, size_t n, const struct rootfs_opts *o,
		 const char *out_path, struct rootfs_result *res, char **errmsg)
{
	struct build b;
	memset(&b, 0, sizeof(b));
	b.layers = layers;
	b.n = n;
	b.o = o;
	rtree_init(&b.tree);
	struct ext4w *w = NULL;
	bool created = false;
	int rc = 0;
	if (errmsg)
		*errmsg = NULL;
	if (res)
		memset(res, 0, sizeof(*res));

	if (!out_path || !*out_path || !o || (n && !layers)) {
		rc = failf(&b, BG_ERR_INVAL, "rootfs_build: missing output path, options or layers");
		goto out;
	}
	if (!o->manifest_digest || !*o->manifest_digest) {
		rc = failf(&b, BG_ERR_INVAL,
			   "no manifest digest given (the image's UUID is derived from it)");
		goto out;
	}
	if (o->label && strlen(o->label) > 16) {
		rc = failf(&b, BG_ERR_INVAL, "the label '%s' is longer than 16 bytes", o->label);
		goto out;
	}
	b.sizes = xcalloc(n ? n : 1, sizeof(*b.sizes));
	for (size_t i = 0; i < n; i++) {
		enum rootfs_compression c;
		if (rootfs_media_type(layers[i].media_type, &c) < 0) {
			rc = failf(&b, BG_ERR_UNSUPPORTED,
				   "layer %zu (%s): media type '%s' is not supported (banger reads "
				   "uncompressed, gzip and zstd tar layers)",
				   i + 1, layer_id(&b, i), layers[i].media_type);
			goto out;
		}
		struct stat st;
		if (!layers[i].path || stat(layers[i].path, &st) < 0) {
			int e = layers[i].path ? errno : ENOENT;
			rc = failf(&b, bg_errno(e), "layer %zu (%s): cannot read '%s': %s", i + 1,
				   layer_id(&b, i), layers[i].path ? layers[i].path : "(null)",
				   strerror(e));
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			rc = failf(&b, BG_ERR_INVAL, "layer %zu (%s): '%s' is not a regular file",
				   i + 1, layer_id(&b, i), layers[i].path);
			goto out;
		}
		b.sizes[i] = (uint64_t)st.st_size;
		b.total += b.sizes[i];
	}
	/* Create the output now: a directory we cannot write to fails in
	 * milliseconds, not after reading every layer. */
	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = failf(&b, bg_errno(errno), "cannot create '%s': %s", out_path, strerror(errno));
		goto out;
	}
	close(fd);
	created = true;

	b.phase = ROOTFS_SCAN;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = scan_layer(&b, i);
	if (rc < 0)
		goto out;
	char *why = NULL;
	rc = rtree_finish(&b.tree, FIRST_INO, &why);
	if (rc < 0) {
		failf(&b, rc, "%s", why);
		free(why);
		goto out;
	}

	struct ext4w_params p;
	memset(&p, 0, sizeof(p));
	derive16(o->manifest_digest, "uuid", p.uuid);
	p.uuid[6] = (uint8_t)((p.uuid[6] & 0x0f) | 0x80); /* RFC 9562 version 8 */
	p.uuid[8] = (uint8_t)((p.uuid[8] & 0x3f) | 0x80);
	derive16(o->manifest_digest, "hash-seed", p.hash_seed);
	p.headroom_bytes = o->headroom_bytes;
	p.headroom_pct = o->headroom_pct;
	p.extra_inodes = o->extra_inodes;
	p.journal = o->journal;
	p.label = o->label;
	p.fs_time = o->fs_time ? o->fs_time : ROOTFS_FS_TIME_DEFAULT;
	p.max_run_blocks = o->max_run_blocks;
	struct ext4w_info info;
	rc = ext4w_create(&w, out_path, &b.tree, &p, &info, &why);
	if (rc < 0) {
		failf(&b, rc, "%s", why);
		free(why);
		goto out;
	}
	if (!o->no_space_check) {
		rc = space_check(&b, out_path, info.used_blocks * info.block_size);
		if (rc < 0)
			goto out;
	}
	rc = ext4w_write_tree(w, &b.tree, cancelled_cb, &b, &why);
	if (rc < 0) {
		failf(&b, rc, "%s", why ? why : "cancelled while writing the directory tree");
		free(why);
		goto out;
	}
	rc = write_layers(&b, w);
	if (rc < 0)
		goto out;
	char uuid[37];
	rc = ext4w_close(w, &info, uuid, &why);
	w = NULL;
	if (rc < 0) {
		failf(&b, rc, "%s", why);
		free(why);
		goto out;
	}
	if (res) {
		res->block_size = info.block_size;
		res->blocks = info.blocks;
		res->image_bytes = info.blocks * info.block_size;
		res->used_bytes = info.used_blocks * info.block_size;
		res->free_bytes = (info.blocks - info.used_blocks) * info.block_size;
		res->inodes = info.inodes;
		res->inodes_used = FIRST_INO - 1 + b.tree.norder;
		res->files = b.tree.files;
		res->dirs = b.tree.dirs;
		res->symlinks = b.tree.symlinks;
		res->hardlinks = b.tree.hardlinks;
		res->specials = b.tree.specials;
		res->whiteouts = b.whiteouts;
		res->data_bytes = b.tree.data_bytes;
		memcpy(res->uuid, uuid, sizeof(res->uuid));
	}
out:
	ext4w_destroy(w);
	if (rc < 0 && created)
		unlink(out_path);
	rtree_release(&b.tree);
	free(b.pend);
	free(b.sizes);
	if (rc < 0 && errmsg)
		*errmsg = b.err ? b.err : xstrdup(bg_strerror(rc));
	else
		free(b.err);
	return rc;
}
