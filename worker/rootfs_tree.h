/*
 * rootfs_tree.h: the merged filesystem tree that rootfs_build() assembles in
 * memory from the layers' tar headers (pass 1), before anything is written.
 *
 * It holds names and metadata only.  A regular file's bytes stay in its layer
 * blob: the inode records (layer, entry index) and the writer streams the data
 * from the blob in pass 2.  Directory entries (rt_dentry) and inodes
 * (rt_inode) are separate so that hardlinks share one inode.
 *
 * Paths given to rtree_* are already cleaned by rootfs_path_clean(): relative
 * to the root, components separated by one "/", no "." or "..".  Parent
 * directories are resolved the way containerd resolves them: symlinks in the
 * parent path are followed, confined to the root (".." stops at "/", an
 * absolute target starts again at the root), and missing directories are
 * created (mode 0755, owned by root, marked implicit).
 *
 * Not thread-safe: one tree belongs to one build.
 */
#ifndef BANGER_ROOTFS_TREE_H
#define BANGER_ROOTFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct rt_xattr {
	char *name;    /* full name, "user.foo", "security.capability", ... */
	void *value;
	uint32_t len;
};

struct rt_dentry;

struct rt_inode {
	uint32_t mode;        /* S_IFMT type bits | permission bits (07777) */
	uint32_t uid, gid;
	int64_t mtime;
	uint32_t mtime_ns;
	uint32_t nlink;       /* directory entries referring to this inode */
	uint64_t size;        /* regular files: bytes */
	uint32_t rdev_major, rdev_minor;
	char *link;           /* symlink target (owned) */
	struct rt_xattr *xattrs; /* owned, nxattrs of them */
	uint32_t nxattrs;
	uint32_t layer;       /* regular files: 0-based layer holding the data */
	uint32_t entry;       /* regular files: 0-based entry index in that layer */
	bool implicit;        /* a directory no layer listed: fs time, 0755, root */
	struct rt_dentry *dir; /* directories: their one dentry */
	/* Set by rtree_finish (ino) and by the writer (the rest). */
	uint32_t ino;
	uint32_t nruns;       /* data extents; 1 means pblk..pblk+blocks-1 */
	uint64_t pblk;
};

struct rt_dentry {
	struct rt_dentry *parent;   /* the root's parent is itself */
	struct rt_dentry *hnext;    /* hash chain */
	struct rt_dentry *kid;      /* first child (unordered) */
	struct rt_dentry *prev, *next; /* siblings */
	struct rt_inode *inode;
	struct rt_dentry **kids;    /* children sorted by name; by rtree_finish */
	uint32_t nkids;
	uint32_t layer;             /* the last layer that listed it or put
				     * something under it (for whiteouts) */
	uint16_t namelen;
	char name[];                /* NUL-terminated too */
};

struct rtree {
	struct rt_dentry *root;
	struct rt_dentry **htab;    /* (parent, name) -> dentry */
	size_t hcap, hcount;
	/* By rtree_finish: every inode, indexed by ino - first_ino (the root,
	 * inode 2, is root->inode and not in the array). */
	struct rt_inode **order;
	uint32_t norder;
	uint32_t first_ino;
	/* Counts by rtree_finish. */
	uint64_t files, dirs, symlinks, hardlinks, specials;
	uint64_t data_bytes;        /* sum of regular files' sizes */
};

void rtree_init(struct rtree *t);
void rtree_release(struct rtree *t);

/* A fresh inode (zeroed, nlink 0) of mode (type | permissions); the caller
 * fills it and hands it to rtree_add, which takes it over. */
struct rt_inode *rtree_inode_new(uint32_t mode);
/* Free an inode that was never added. */
void rtree_inode_free(struct rt_inode *in);

/*
 * Put in at path (created by layer).  Takes in over, also on failure.  A
 * directory over a directory updates the existing one's metadata and keeps
 * its children; anything else replaces what was at path (a directory with
 * its whole subtree).  path "" is the root, which must stay a directory.
 * 0, or BG_ERR_INVAL with *why (caller frees) saying what is wrong.
 */
int rtree_add(struct rtree *t, const char *path, struct rt_inode *in, uint32_t layer,
	      char **why);
/* A hardlink at path to the existing non-directory at target.  0 or
 * BG_ERR_INVAL with *why (missing target, target a directory, ...). */
int rtree_link(struct rtree *t, const char *path, const char *target, uint32_t layer,
	       char **why);
/*
 * Whiteouts of layer, applied after the layer's entries: they hide only what
 * the layers below put there.  Every entry remembers the last layer that
 * listed it or put something under it (rt_dentry.layer), so "below" is
 * known: rtree_whiteout removes name from directory dir when a lower layer
 * put it there; when this layer listed it too, a file stays and a directory
 * loses only its lower contents.  rtree_opaque makes dir opaque: everything
 * under it that lower layers put there goes.  Missing paths are nothing to
 * do.  True when something was removed.
 */
bool rtree_whiteout(struct rtree *t, const char *dir, const char *name, uint32_t layer);
bool rtree_opaque(struct rtree *t, const char *dir, uint32_t layer);

/* The entry at path, not following a symlink in the last component (parents
 * are followed); NULL when missing. */
struct rt_dentry *rtree_lookup(struct rtree *t, const char *path);

/*
 * After the last layer: make sure /lost+found exists (a directory, 0700, as
 * e2fsck wants), sort every directory's children by name, number the inodes
 * (root 2, then first_ino.. breadth-first in name order) and count.  0 or
 * BG_ERR_INVAL with *why (a non-directory at /lost+found, too many
 * inodes or links for ext4).
 */
int rtree_finish(struct rtree *t, uint32_t first_ino, char **why);

#endif
