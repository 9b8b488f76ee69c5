/*
 * rootfs_tree.c: the in-memory merged tree of an image's layers (see
 * rootfs_tree.h): directory entries in one hash table keyed by (parent,
 * name), each directory's children on a list, inodes shared by hardlinks and
 * freed with their last entry.
 *
 * Memory is names and metadata only, about 200 bytes per entry; file
 * contents are never held (regular files point at their layer entry).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "rootfs_tree.h"
#include "util.h"

/* ext4's EXT4_LINK_MAX: more entries than this for one file cannot be stored. */
#define RT_LINK_MAX 65000
/* Symlinks followed while resolving one parent path (Linux's MAXSYMLINKS). */
#define RT_MAX_HOPS 40

static size_t hkey(const struct rt_dentry *parent, const char *name, size_t len)
{
	uint64_t h = 1469598103934665603ULL ^ ((uint64_t)(uintptr_t)parent * 0x9E3779B97F4A7C15ULL);
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)name[i];
		h *= 1099511628211ULL;
	}
	return (size_t)(h ^ (h >> 31));
}

static void hash_grow(struct rtree *t)
{
	size_t ncap = t->hcap ? t->hcap * 2 : 1024;
	struct rt_dentry **n = xcalloc(ncap, sizeof(*n));
	for (size_t i = 0; i < t->hcap; i++) {
		struct rt_dentry *d = t->htab[i];
		while (d) {
			struct rt_dentry *next = d->hnext;
			size_t k = hkey(d->parent, d->name, d->namelen) & (ncap - 1);
			d->hnext = n[k];
			n[k] = d;
			d = next;
		}
	}
	free(t->htab);
	t->htab = n;
	t->hcap = ncap;
}

static struct rt_dentry *lookup_child(struct rtree *t, struct rt_dentry *dir, const char *name,
				      size_t len)
{
	if (!t->hcap)
		return NULL;
	struct rt_dentry *d = t->htab[hkey(dir, name, len) & (t->hcap - 1)];
	for (; d; d = d->hnext)
		if (d->parent == dir && d->namelen == len && memcmp(d->name, name, len) == 0)
			return d;
	return NULL;
}

struct rt_inode *rtree_inode_new(uint32_t mode)
{
	struct rt_inode *in = xcalloc(1, sizeof(*in));
	in->mode = mode;
	return in;
}

void rtree_inode_free(struct rt_inode *in)
{
	if (!in)
		return;
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		free(in->xattrs[i].name);
		free(in->xattrs[i].value);
	}
	free(in->xattrs);
	free(in->link);
	free(in);
}

static void inode_unref(struct rt_inode *in)
{
	if (--in->nlink == 0)
		rtree_inode_free(in);
}

/* A new entry under parent; it takes one reference on in (counted by the
 * caller in in->nlink). */
static struct rt_dentry *dentry_new(struct rtree *t, struct rt_dentry *parent, const char *name,
				    size_t len, struct rt_inode *in, uint32_t layer)
{
	struct rt_dentry *d = xcalloc(1, sizeof(*d) + len + 1);
	memcpy(d->name, name, len);
	d->namelen = (uint16_t)len;
	d->parent = parent;
	d->inode = in;
	d->layer = layer;
	if (S_ISDIR(in->mode))
		in->dir = d;
	d->next = parent->kid;
	if (parent->kid)
		parent->kid->prev = d;
	parent->kid = d;
	if (t->hcount + 1 > t->hcap)
		hash_grow(t);
	size_t k = hkey(parent, name, len) & (t->hcap - 1);
	d->hnext = t->htab[k];
	t->htab[k] = d;
	t->hcount++;
	return d;
}

/* Remove d and everything under it. */
static void dentry_remove(struct rtree *t, struct rt_dentry *d)
{
	while (d->kid)
		dentry_remove(t, d->kid);
	if (d->parent != d) {
		struct rt_dentry **pp = &t->htab[hkey(d->parent, d->name, d->namelen) & (t->hcap - 1)];
		while (*pp != d)
			pp = &(*pp)->hnext;
		*pp = d->hnext;
		t->hcount--;
		if (d->prev)
			d->prev->next = d->next;
		else
			d->parent->kid = d->next;
		if (d->next)
			d->next->prev = d->prev;
	}
	if (d->inode->dir == d)
		d->inode->dir = NULL;
	inode_unref(d->inode);
	free(d->kids);
	free(d);
}

void rtree_init(struct rtree *t)
{
	memset(t, 0, sizeof(*t));
	struct rt_inode *in = rtree_inode_new(S_IFDIR | 0755);
	in->implicit = true;
	in->nlink = 1;
	struct rt_dentry *r = xcalloc(1, sizeof(*r) + 1);
	r->parent = r;
	r->inode = in;
	in->dir = r;
	t->root = r;
}

void rtree_release(struct rtree *t)
{
	if (t->root)
		dentry_remove(t, t->root);
	free(t->htab);
	free(t->order);
	memset(t, 0, sizeof(*t));
}

/* "a/b/c" of a dentry (the root is "/"); the caller frees. */
static char *dentry_path(const struct rt_dentry *d)
{
	if (d->parent == d)
		return xstrdup("/");
	size_t n = 0;
	for (const struct rt_dentry *p = d; p->parent != p; p = p->parent)
		n += (size_t)p->namelen + 1;
	char *s = xmalloc(n);
	size_t pos = n - 1;
	s[pos] = '\0';
	for (const struct rt_dentry *p = d; p->parent != p; p = p->parent) {
		pos -= p->namelen;
		memcpy(s + pos, p->name, p->namelen);
		if (pos > 0)
			s[--pos] = '/';
	}
	return s;
}

static struct rt_dentry *mkdir_implicit(struct rtree *t, struct rt_dentry *dir, const char *name,
					size_t len, uint32_t layer)
{
	struct rt_inode *in = rtree_inode_new(S_IFDIR | 0755);
	in->implicit = true;
	in->nlink = 1;
	return dentry_new(t, dir, name, len, in, layer);
}

/*
 * Resolve path to a directory, following symlinks confined to the root.
 * create: make missing directories, and a non-directory on the way is an
 * error (BG_ERR_INVAL, *why); otherwise a missing or non-directory component
 * gives *out = NULL and 0.
 */
static int walk(struct rtree *t, const char *path, bool create, uint32_t layer,
		struct rt_dentry **out, char **why)
{
	struct sb rest;
	sb_init(&rest);
	sb_adds(&rest, path);
	struct rt_dentry *cur = t->root;
	size_t pos = 0;
	int hops = 0, rc = 0;
	*out = NULL;
	while (pos < rest.len) {
		const char *c = rest.buf + pos;
		size_t len = strcspn(c, "/");
		size_t next = pos + len + (c[len] == '/');
		if (len == 0 || (len == 1 && c[0] == '.')) {
			pos = next;
			continue;
		}
		if (len == 2 && c[0] == '.' && c[1] == '.') {
			cur = cur->parent; /* the root's parent is the root */
			pos = next;
			continue;
		}
		struct rt_dentry *d = len <= 255 ? lookup_child(t, cur, c, len) : NULL;
		if (!d) {
			if (!create)
				goto out;
			if (len > 255) {
				*why = xasprintf("a symlink in '%s' leads to a name longer than "
						 "255 bytes", path);
				rc = BG_ERR_INVAL;
				goto out;
			}
			d = mkdir_implicit(t, cur, c, len, layer);
		} else if (S_ISDIR(d->inode->mode) && create) {
			d->layer = layer; /* touched: this layer has something under it */
		} else if (S_ISLNK(d->inode->mode)) {
			if (++hops > RT_MAX_HOPS) {
				if (create) {
					*why = xasprintf("too many levels of symbolic links in '%s'",
							 path);
					rc = BG_ERR_INVAL;
				}
				goto out;
			}
			const char *target = d->inode->link ? d->inode->link : "";
			struct sb n;
			sb_init(&n);
			sb_adds(&n, target);
			sb_add(&n, "/", 1);
			sb_adds(&n, rest.buf + next);
			sb_release(&rest);
			rest = n;
			pos = 0;
			if (target[0] == '/')
				cur = t->root;
			continue;
		} else if (!S_ISDIR(d->inode->mode)) {
			if (create) {
				char *p = dentry_path(d);
				*why = xasprintf("'%s' is not a directory, so nothing can go "
						 "under it", p);
				free(p);
				rc = BG_ERR_INVAL;
			}
			goto out;
		}
		cur = d;
		pos = next;
	}
	*out = cur;
out:
	sb_release(&rest);
	return rc;
}

/* Split a cleaned, non-empty path into its parent (copied into *parent, the
 * caller frees) and its last component. */
static const char *split(const char *path, char **parent)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		*parent = xstrdup("");
		return path;
	}
	*parent = xstrndup(path, (size_t)(slash - path));
	return slash + 1;
}

/* Move in's metadata onto the existing directory inode dst; frees in. */
static void update_dir(struct rt_inode *dst, struct rt_inode *in)
{
	dst->mode = in->mode;
	dst->uid = in->uid;
	dst->gid = in->gid;
	dst->mtime = in->mtime;
	dst->mtime_ns = in->mtime_ns;
	dst->implicit = false;
	for (uint32_t i = 0; i < dst->nxattrs; i++) {
		free(dst->xattrs[i].name);
		free(dst->xattrs[i].value);
	}
	free(dst->xattrs);
	dst->xattrs = in->xattrs;
	dst->nxattrs = in->nxattrs;
	in->xattrs = NULL;
	in->nxattrs = 0;
	rtree_inode_free(in);
}

int rtree_add(struct rtree *t, const char *path, struct rt_inode *in, uint32_t layer, char **why)
{
	if (!*path) {
		if (!S_ISDIR(in->mode)) {
			*why = xstrdup("the root entry '.' is not a directory");
			rtree_inode_free(in);
			return BG_ERR_INVAL;
		}
		update_dir(t->root->inode, in);
		t->root->layer = layer;
		return 0;
	}
	char *parent;
	const char *base = split(path, &parent);
	struct rt_dentry *dir;
	int rc = walk(t, parent, true, layer, &dir, why);
	free(parent);
	if (rc < 0) {
		rtree_inode_free(in);
		return rc;
	}
	size_t len = strlen(base);
	struct rt_dentry *old = lookup_child(t, dir, base, len);
	if (old) {
		if (S_ISDIR(old->inode->mode) && S_ISDIR(in->mode)) {
			update_dir(old->inode, in);
			old->layer = layer;
			return 0;
		}
		dentry_remove(t, old);
	}
	in->nlink = 1;
	dentry_new(t, dir, base, len, in, layer);
	return 0;
}

int rtree_link(struct rtree *t, const char *path, const char *target, uint32_t layer,
	       char **why)
{
	if (!*target) {
		*why = xstrdup("it is a hardlink to the root directory");
		return BG_ERR_INVAL;
	}
	if (!*path) {
		*why = xstrdup("the root entry '.' is a hardlink");
		return BG_ERR_INVAL;
	}
	struct rt_dentry *td = rtree_lookup(t, target);
	if (!td) {
		*why = xasprintf("it is a hardlink to '%s', which is not in this layer (before "
				 "it) or the layers below",
				 target);
		return BG_ERR_INVAL;
	}
	if (S_ISDIR(td->inode->mode)) {
		*why = xasprintf("it is a hardlink to the directory '%s'", target);
		return BG_ERR_INVAL;
	}
	struct rt_inode *in = td->inode;
	if (in->nlink >= RT_LINK_MAX) {
		*why = xasprintf("'%s' would have more than %d hardlinks", target, RT_LINK_MAX);
		return BG_ERR_INVAL;
	}
	in->nlink++; /* the new entry's reference, held across the removal below */
	char *parent;
	const char *base = split(path, &parent);
	struct rt_dentry *dir;
	int rc = walk(t, parent, true, layer, &dir, why);
	free(parent);
	if (rc < 0) {
		inode_unref(in);
		return rc;
	}
	size_t len = strlen(base);
	struct rt_dentry *old = lookup_child(t, dir, base, len);
	if (old && old->inode == in) {
		inode_unref(in); /* already this file */
		old->layer = layer;
		return 0;
	}
	if (old)
		dentry_remove(t, old);
	dentry_new(t, dir, base, len, in, layer);
	return 0;
}

struct rt_dentry *rtree_lookup(struct rtree *t, const char *path)
{
	if (!*path)
		return t->root;
	char *parent;
	const char *base = split(path, &parent);
	struct rt_dentry *dir;
	char *why = NULL;
	walk(t, parent, false, 0, &dir, &why);
	free(parent);
	free(why);
	size_t len = strlen(base);
	return dir && len <= 255 ? lookup_child(t, dir, base, len) : NULL;
}

/* Remove what layers below layer put under d; keep what layer itself put
 * there (and, in directories it touched, recurse). */
static bool prune_lower(struct rtree *t, struct rt_dentry *d, uint32_t layer)
{
	bool any = false;
	struct rt_dentry *next;
	for (struct rt_dentry *c = d->kid; c; c = next) {
		next = c->next;
		if (c->layer < layer) {
			dentry_remove(t, c);
			any = true;
		} else if (S_ISDIR(c->inode->mode)) {
			any |= prune_lower(t, c, layer);
		}
	}
	return any;
}

bool rtree_whiteout(struct rtree *t, const char *dir, const char *name, uint32_t layer)
{
	struct rt_dentry *d;
	char *why = NULL;
	walk(t, dir, false, 0, &d, &why);
	free(why);
	size_t len = strlen(name);
	struct rt_dentry *c = d && len <= 255 ? lookup_child(t, d, name, len) : NULL;
	if (!c)
		return false;
	if (c->layer < layer) {
		dentry_remove(t, c);
		return true;
	}
	/* The same layer put something here too: its own entry stays, and a
	 * directory it touched loses only the lower contents. */
	return S_ISDIR(c->inode->mode) && prune_lower(t, c, layer);
}

bool rtree_opaque(struct rtree *t, const char *dir, uint32_t layer)
{
	struct rt_dentry *d;
	char *why = NULL;
	walk(t, dir, false, 0, &d, &why);
	free(why);
	return d && S_ISDIR(d->inode->mode) && prune_lower(t, d, layer);
}

static int cmp_dentry(const void *a, const void *b)
{
	const struct rt_dentry *x = *(const struct rt_dentry *const *)a;
	const struct rt_dentry *y = *(const struct rt_dentry *const *)b;
	size_t n = x->namelen < y->namelen ? x->namelen : y->namelen;
	int c = memcmp(x->name, y->name, n);
	if (c)
		return c;
	return (int)x->namelen - (int)y->namelen;
}

int rtree_finish(struct rtree *t, uint32_t first_ino, char **why)
{
	static const char lpf[] = "lost+found";
	struct rt_dentry *l = lookup_child(t, t->root, lpf, sizeof(lpf) - 1);
	if (!l) {
		struct rt_inode *in = rtree_inode_new(S_IFDIR | 0700);
		in->implicit = true;
		in->nlink = 1;
		dentry_new(t, t->root, lpf, sizeof(lpf) - 1, in, 0);
	} else if (!S_ISDIR(l->inode->mode)) {
		*why = xstrdup("'lost+found' at the root is not a directory (e2fsck needs "
			       "/lost+found to be one)");
		return BG_ERR_INVAL;
	}

	t->first_ino = first_ino;
	t->files = t->symlinks = t->hardlinks = t->specials = t->data_bytes = 0;
	t->dirs = 1;
	free(t->order);
	t->order = NULL;
	t->norder = 0;
	size_t ocap = 0;
	/* Breadth-first; the queue holds directory entries. */
	size_t qcap = 64, qhead = 0, qtail = 0;
	struct rt_dentry **q = xmalloc(qcap * sizeof(*q));
	q[qtail++] = t->root;
	t->root->inode->ino = 2; /* EXT2_ROOT_INO */
	uint64_t next = first_ino;
	int rc = 0;
	while (qhead < qtail) {
		struct rt_dentry *d = q[qhead++];
		uint32_t n = 0;
		for (struct rt_dentry *k = d->kid; k; k = k->next)
			n++;
		free(d->kids);
		d->kids = n ? xmalloc(n * sizeof(*d->kids)) : NULL;
		d->nkids = n;
		n = 0;
		for (struct rt_dentry *k = d->kid; k; k = k->next)
			d->kids[n++] = k;
		if (n > 1)
			qsort(d->kids, n, sizeof(*d->kids), cmp_dentry);
		for (uint32_t i = 0; i < n; i++) {
			struct rt_inode *in = d->kids[i]->inode;
			if (in->ino) {
				t->hardlinks++;
				continue;
			}
			if (next > UINT32_MAX - 1) {
				*why = xstrdup("more files than an ext4 filesystem can hold");
				rc = BG_ERR_INVAL;
				goto out;
			}
			in->ino = (uint32_t)next++;
			if (t->norder == ocap) {
				ocap = ocap ? ocap * 2 : 1024;
				t->order = xrealloc(t->order, ocap * sizeof(*t->order));
			}
			t->order[t->norder++] = in;
			switch (in->mode & S_IFMT) {
			case S_IFDIR:
				t->dirs++;
				if (qtail == qcap) {
					qcap *= 2;
					q = xrealloc(q, qcap * sizeof(*q));
				}
				q[qtail++] = d->kids[i];
				break;
			case S_IFREG:
				t->files++;
				t->data_bytes += in->size;
				break;
			case S_IFLNK:
				t->symlinks++;
				break;
			default:
				t->specials++;
				break;
			}
		}
	}
out:
	free(q);
	return rc;
}
