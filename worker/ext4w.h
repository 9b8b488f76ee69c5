/*
 * ext4w.h: write a merged rootfs tree (rootfs_tree.h) into a new ext4 image
 * with libext2fs: no mount, no loop device, no mkfs or debugfs process.
 *
 * The steps, driven by rootfs.c:
 *
 *   ext4w_create       size the filesystem from the tree plus headroom,
 *                      create the image file and lay out the empty ext4
 *                      (superblock, group tables, reserved inodes, journal);
 *   ext4w_write_tree   every inode, directory block, symlink and xattr, and
 *                      the data blocks of every regular file (allocated and
 *                      mapped, not yet written) — all metadata is final after
 *                      this;
 *   ext4w_write_data   once per regular file with data, in layer stream
 *                      order: the bytes, pulled from a reader callback;
 *   ext4w_close        flush bitmaps, descriptors and superblocks, fsync.
 *
 * ext4w_destroy abandons a build without flushing; the caller deletes the
 * file.  Errors are negative BG_ERR_* with *why (the caller frees) saying
 * what failed, in words a person can act on.  Blocking; one writer per
 * thread.
 */
#ifndef BANGER_EXT4W_H
#define BANGER_EXT4W_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rtree;
struct rt_inode;
struct ext4w;

struct ext4w_params {
	uint8_t uuid[16];
	uint8_t hash_seed[16];
	uint64_t headroom_bytes;
	unsigned headroom_pct;
	uint64_t extra_inodes;  /* 0: derived from the headroom */
	bool journal;
	const char *label;      /* NULL: "rootfs" */
	int64_t fs_time;        /* non-zero */
	uint32_t max_run_blocks; /* 0: 32768 (the most one ext4 extent holds) */
};

/* The geometry ext4w_create chose, and what the content uses. */
struct ext4w_info {
	uint64_t blocks;         /* filesystem size in blocks */
	uint32_t block_size;
	uint64_t inodes;
	uint64_t used_blocks;    /* metadata + content, once written */
	uint64_t content_blocks; /* the content's estimate (data, dirs, ...) */
};

/* Create path (truncating it) and lay out an empty ext4 sized for t, which
 * rtree_finish() has numbered.  *out is the writer; info (may be NULL)
 * receives the geometry. */
int ext4w_create(struct ext4w **out, const char *path, const struct rtree *t,
		 const struct ext4w_params *p, struct ext4w_info *info, char **why);

/* Write every inode of t.  cancelled (may be NULL) is polled every few
 * hundred inodes; true stops with BG_ERR_CANCELED. */
int ext4w_write_tree(struct ext4w *w, struct rtree *t, bool (*cancelled)(void *), void *arg,
		     char **why);

/* A source of one regular file's bytes: 0 with the next piece (*buf, *len at
 * byte offset *off; offsets only grow, gaps are holes), 1 at the end, or a
 * negative BG_ERR_* (having set *why). */
typedef int (*ext4w_read_fn)(void *arg, const void **buf, size_t *len, int64_t *off,
			     char **why);

/* Write in's bytes (in->size of them, from read) into the blocks
 * ext4w_write_tree gave it. */
int ext4w_write_data(struct ext4w *w, const struct rt_inode *in, ext4w_read_fn read, void *arg,
		     char **why);

/* One data extent of a file: logical block lblk.. maps to physical block
 * pblk.., len blocks (of ext4w_info.block_size). */
struct ext4w_run {
	uint64_t lblk, pblk, len;
};

/* The data extents ext4w_write_tree mapped for the regular file in, for a
 * caller that writes the bytes itself (copy_file_range into the image at
 * pblk * block_size): *runs points into w and stays valid until the next
 * call on w.  A file of 0 bytes has no runs. */
int ext4w_file_runs(struct ext4w *w, const struct rt_inode *in, const struct ext4w_run **runs,
		    uint32_t *n, char **why);

/* Flush and close; w is freed whatever happens.  info (may be NULL) receives
 * the final counts and uuid_text (37 bytes, may be NULL) the UUID. */
/* Whether the filesystem holding out_path has need bytes free: 0, or
 * BG_ERR_NOSPC with *msg (caller frees) naming what (e.g. "the image"), the
 * sizes and the directory.  An unreadable filesystem passes (the write
 * itself then reports). */
int ext4w_space_check(const char *out_path, uint64_t need, const char *what, char **msg);

int ext4w_close(struct ext4w *w, struct ext4w_info *info, char *uuid_text, char **why);

/* Abandon: free without flushing.  NULL is fine. */
void ext4w_destroy(struct ext4w *w);

#endif
