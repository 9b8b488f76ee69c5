/*
 * ext4w.c: the libext2fs writer behind rootfs_build() (see ext4w.h).
 *
 * Layout.  4 KiB blocks, 256-byte inodes, flex_bg groups of 16, every
 * inode numbered up front (rtree_finish: breadth-first in name order) and
 * written in that order.  Blocks are handed out in the same order from one
 * moving cursor (directory blocks and file data alike), so the files of one
 * directory sit together, each in as few extents as the free space allows:
 * a fresh image ends up with nearly every file contiguous.  Directory blocks are built here from
 * the sorted child lists (one pass, no ext2fs_link scans), with checksum
 * tails.  The inode tables are never written as a whole: the image starts as
 * a sparse, all-zero file, so every group can be marked INODE_ZEROED.
 *
 * Reproducibility: nothing here reads the clock or a random source.  The
 * UUID and hash seed come from the caller (derived from the manifest
 * digest), fs->now is the caller's fixed time (libext2fs uses it for every
 * time it stamps), and allocation depends only on the tree.
 *
 * Space: all blocks are allocated (and the metadata written) in
 * ext4w_write_tree; ext4w_write_data only copies bytes into blocks that are
 * already mapped, through a 1 MiB staging buffer, so memory stays flat
 * whatever the file sizes.
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

#include <ext2fs/ext2fs.h>
#include <ext2fs/ext3_extents.h>

#include "err.h"
#include "ext4w.h"
#include "rootfs_tree.h"
#include "util.h"

#define BS 4096u
#define LOG_BS 2 /* 1024 << 2 */
#define INODE_SIZE 256u
#define MAX_EXTENT_LEN 32768u /* blocks in one initialized extent */
#define CHUNK (1u << 20)      /* staging buffer for file data */
#define EXT4_LINK_MAX 65000u
#define FAST_SYMLINK_MAX 59u  /* targets up to this length live in the inode */
#define TAIL_SIZE 12u         /* struct ext2_dir_entry_tail */

struct run {
	uint64_t lblk, pblk, len;
};

struct ext4w {
	ext2_filsys fs;
	char *path;
	int64_t fs_time;
	uint32_t max_run;
	uint64_t cursor; /* allocation goal for the next run */
	struct run *runs;
	uint32_t nruns, runcap;
	char *chunk; /* CHUNK bytes, zero outside what is being written */
	char *blk;   /* one block */
	struct ext4w_run *xruns; /* ext4w_file_runs' answer */
	uint32_t xcap;
	struct ext4w_info info;
};

/* libext2fs's message for e, read straight from its table: no com_err
 * registration (global, not thread-safe) and no libcom_err to link. */
static const char *e2msg(errcode_t e)
{
	const struct error_table *t = &et_ext2_error_table;
	if (e >= t->base && e < t->base + t->n_msgs)
		return t->msgs[e - t->base];
	if (e > 0 && e < 4096)
		return strerror((int)e);
	return "unknown libext2fs error";
}

/* A libext2fs error as a BG_ERR_* code. */
static int map_err(errcode_t e)
{
	switch (e) {
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
	case EXT2_ET_SHORT_WRITE: /* a short write to a regular file: the disk is full */
		return BG_ERR_NOSPC;
	case ENOMEM:
	case EXT2_ET_NO_MEMORY:
		return BG_ERR_NOMEM;
	default:
		return BG_ERR_IO;
	}
}

/* Set *why for a libext2fs failure while doing what (printf format). */
static int e2fail(struct ext4w *w, errcode_t e, char **why, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int e2fail(struct ext4w *w, errcode_t e, char **why, const char *fmt, ...)
{
	int rc = map_err(e);
	struct sb s;
	sb_init(&s);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s, fmt, ap);
	va_end(ap);
	char *what = sb_detach(&s);
	if (rc == BG_ERR_NOSPC)
		*why = xasprintf("no space left on the disk holding '%s' while %s (the image "
				 "takes about %llu MiB)",
				 w->path, what,
				 (unsigned long long)(w->info.used_blocks * BS >> 20) + 1);
	else if (e == EXT2_ET_BLOCK_ALLOC_FAIL || e == EXT2_ET_INODE_ALLOC_FAIL ||
		 e == EXT2_ET_DIR_NO_SPACE)
		*why = xasprintf("%s in '%s': %s (the image was sized too small; this is a bug "
				 "in banger's sizing)",
				 what, w->path, e2msg(e));
	else
		*why = xasprintf("%s in '%s': %s", what, w->path, e2msg(e));
	free(what);
	return rc;
}

/* ---- sizing ---- */

static uint32_t rec_len(size_t namelen)
{
	return (uint32_t)((8 + namelen + 3) & ~(size_t)3);
}

/* Blocks a directory's entries take when packed in order, as write_dir
 * packs them. */
static uint64_t dir_blocks(const struct rt_dentry *d)
{
	const uint32_t limit = BS - TAIL_SIZE;
	uint64_t n = 1;
	uint32_t off = rec_len(1) + rec_len(2);
	for (uint32_t i = 0; i < d->nkids; i++) {
		uint32_t r = rec_len(d->kids[i]->namelen);
		if (off + r > limit) {
			n++;
			off = 0;
		}
		off += r;
	}
	return n;
}

/* Extent tree blocks a file of nb blocks may need: more than four extents
 * leave the inode for leaf blocks (340 extents each).  Generous: the runs
 * estimate assumes a break at every group boundary. */
static uint64_t extent_blocks(uint64_t nb, uint32_t max_run)
{
	if (!nb)
		return 0;
	uint64_t runs = nb / max_run + nb / (8 * BS) + 2;
	if (runs <= 4)
		return 0;
	return (runs + 339) / 340 + 1;
}

/* Whether an inode's xattrs may not fit in the inode body (96 bytes after
 * the 32 extra bytes, less the header); conservative: full names counted. */
static bool needs_ea_block(const struct rt_inode *in)
{
	size_t sum = 0;
	for (uint32_t i = 0; i < in->nxattrs; i++)
		sum += ((16 + strlen(in->xattrs[i].name) + 3) & ~(size_t)3) +
		       ((in->xattrs[i].len + 3) & ~(size_t)3);
	return sum > INODE_SIZE - EXT2_GOOD_OLD_INODE_SIZE - 32 - 8;
}

static uint64_t inode_blocks(const struct rt_inode *in, uint32_t max_run)
{
	uint64_t n = 0, nb;
	switch (in->mode & S_IFMT) {
	case S_IFREG:
		nb = (in->size + BS - 1) / BS;
		n = nb + extent_blocks(nb, max_run);
		break;
	case S_IFDIR:
		nb = dir_blocks(in->dir);
		n = nb + extent_blocks(nb, max_run);
		break;
	case S_IFLNK:
		n = strlen(in->link) > FAST_SYMLINK_MAX ? 1 : 0;
		break;
	default:
		break;
	}
	if (in->nxattrs && needs_ea_block(in))
		n++;
	return n;
}

/* ---- creating the filesystem ---- */

static void set_param(struct ext2_super_block *p, uint64_t blocks, uint64_t inodes)
{
	memset(p, 0, sizeof(*p));
	ext2fs_blocks_count_set(p, blocks);
	p->s_log_block_size = LOG_BS;
	p->s_rev_level = EXT2_DYNAMIC_REV;
	p->s_inode_size = INODE_SIZE;
	p->s_inodes_count = (uint32_t)inodes;
	p->s_log_groups_per_flex = 4;
	p->s_feature_compat = EXT2_FEATURE_COMPAT_DIR_INDEX | EXT2_FEATURE_COMPAT_EXT_ATTR;
	p->s_feature_incompat = EXT2_FEATURE_INCOMPAT_FILETYPE | EXT3_FEATURE_INCOMPAT_EXTENTS |
				EXT4_FEATURE_INCOMPAT_64BIT | EXT4_FEATURE_INCOMPAT_FLEX_BG;
	p->s_feature_ro_compat = EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |
				 EXT2_FEATURE_RO_COMPAT_LARGE_FILE |
				 EXT4_FEATURE_RO_COMPAT_HUGE_FILE | EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
				 EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |
				 EXT4_FEATURE_RO_COMPAT_METADATA_CSUM;
	p->s_default_mount_opts = EXT2_DEFM_XATTR_USER | EXT2_DEFM_ACL;
}

/* Identity, times and checksum seed; before the group tables are laid out,
 * as mke2fs does, since the descriptors' checksums depend on the UUID. */
static void set_identity(ext2_filsys fs, const struct ext4w_params *p)
{
	struct ext2_super_block *s = fs->super;
	fs->now = (time_t)p->fs_time;
	memcpy(s->s_uuid, p->uuid, sizeof(s->s_uuid));
	memcpy(s->s_hash_seed, p->hash_seed, sizeof(s->s_hash_seed));
	s->s_def_hash_version = EXT2_HASH_HALF_MD4;
	s->s_checksum_type = EXT2_CRC32C_CHKSUM;
	ext2fs_init_csum_seed(fs);
	s->s_max_mnt_count = -1;
	s->s_mkfs_time = s->s_lastcheck = s->s_wtime = (uint32_t)p->fs_time;
	s->s_mkfs_time_hi = s->s_lastcheck_hi = s->s_wtime_hi = (uint8_t)(p->fs_time >> 32);
	const char *label = p->label ? p->label : "rootfs";
	size_t n = strlen(label);
	if (n > sizeof(s->s_volume_name))
		n = sizeof(s->s_volume_name);
	memset(s->s_volume_name, 0, sizeof(s->s_volume_name));
	memcpy(s->s_volume_name, label, n);
}

int ext4w_create(struct ext4w **out, const char *path, const struct rtree *t,
		 const struct ext4w_params *p, struct ext4w_info *info, char **why)
{
	*out = NULL;
	struct ext4w *w = xcalloc(1, sizeof(*w));
	w->path = xstrdup(path);
	w->fs_time = p->fs_time;
	w->max_run = p->max_run_blocks && p->max_run_blocks < MAX_EXTENT_LEN ? p->max_run_blocks
									    : MAX_EXTENT_LEN;
	int rc = 0;
	errcode_t err;

	uint64_t content = inode_blocks(t->root->inode, w->max_run);
	for (uint32_t i = 0; i < t->norder; i++)
		content += inode_blocks(t->order[i], w->max_run);
	uint64_t headroom = (p->headroom_bytes + BS - 1) / BS + content * p->headroom_pct / 100;
	uint64_t want_free = content + headroom + content / 64 + 64;
	uint64_t used_inodes = (uint64_t)t->first_ino - 1 + t->norder;
	uint64_t extra = p->extra_inodes;
	if (!extra) {
		extra = headroom * BS / 16384;
		if (extra < 1024)
			extra = 1024;
	}
	uint64_t want_inodes = used_inodes + extra;
	if (want_inodes > UINT32_MAX - 1) {
		*why = xasprintf("%llu inodes are more than ext4 can hold",
				 (unsigned long long)want_inodes);
		rc = BG_ERR_INVAL;
		goto fail;
	}
	w->info.content_blocks = content;
	w->info.block_size = BS;

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = bg_errno(errno);
		*why = xasprintf("cannot create '%s': %s", path, strerror(errno));
		goto fail;
	}
	close(fd);

	/* Start from a guess of the metadata overhead, then let
	 * ext2fs_initialize say what is really free and grow until the content,
	 * the headroom and the journal fit. */
	uint64_t total = want_free + want_free / 32 + want_inodes * INODE_SIZE / BS + 64;
	if (total < 2048)
		total = 2048;
	ext2_filsys fs = NULL;
	uint64_t jblocks = 0;
	struct ext2fs_journal_params jp;
	memset(&jp, 0, sizeof(jp));
	for (int attempt = 0;; attempt++) {
		if (attempt == 32) {
			*why = xasprintf("cannot find a filesystem size for '%s' (%llu blocks of "
					 "content)",
					 path, (unsigned long long)content);
			rc = BG_ERR_IO;
			goto fail;
		}
		struct ext2_super_block param;
		set_param(&param, total, want_inodes);
		err = ext2fs_initialize(path, EXT2_FLAG_64BITS, &param, unix_io_manager, &fs);
		if (err == EXT2_ET_TOO_MANY_INODES) {
			total += total / 4 + 1024;
			continue;
		}
		if (err) {
			rc = e2fail(w, err, why, "laying out the filesystem");
			goto fail;
		}
		w->fs = fs;
		set_identity(fs, p);
		err = ext2fs_allocate_tables(fs);
		if (err) {
			rc = e2fail(w, err, why, "allocating the group tables");
			goto fail;
		}
		jblocks = 0;
		if (p->journal) {
			if (ext2fs_get_journal_params(&jp, fs) == 0)
				jblocks = jp.num_journal_blocks + jp.num_fc_blocks;
			else
				jblocks = total; /* too small for a journal: grow */
		}
		uint64_t freeb = ext2fs_free_blocks_count(fs->super);
		if (freeb >= want_free + jblocks && fs->super->s_inodes_count >= want_inodes)
			break;
		total += (want_free + jblocks > freeb ? want_free + jblocks - freeb : 0) + 64;
		ext2fs_free(fs);
		w->fs = fs = NULL;
	}

	uint64_t blocks = ext2fs_blocks_count(fs->super);
	if (truncate(path, (off_t)(blocks * BS)) < 0) {
		rc = bg_errno(errno);
		*why = xasprintf("cannot size '%s': %s", path, strerror(errno));
		goto fail;
	}

	/* The file is all zeros: the kernel need not zero the inode tables. */
	for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
		ext2fs_bg_flags_set(fs, g, EXT2_BG_INODE_ZEROED);
		ext2fs_group_desc_csum_set(fs, g);
	}
	/* Reserved inodes get valid (zero) contents and checksums, are marked
	 * used, and inode 1 is the empty bad-blocks inode: what mke2fs does. */
	char *zero = xcalloc(1, INODE_SIZE);
	for (ext2_ino_t ino = 1; ino < EXT2_FIRST_INO(fs->super); ino++) {
		err = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)zero, INODE_SIZE);
		if (err)
			break;
	}
	free(zero);
	if (err) {
		rc = e2fail(w, err, why, "writing the reserved inodes");
		goto fail;
	}
	for (ext2_ino_t ino = EXT2_ROOT_INO + 1; ino < EXT2_FIRST_INO(fs->super); ino++)
		ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
	ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
	err = ext2fs_update_bb_inode(fs, NULL);
	if (err) {
		rc = e2fail(w, err, why, "writing the bad-blocks inode");
		goto fail;
	}
	if (p->journal) {
		err = ext2fs_add_journal_inode3(fs, &jp, ~0ULL,
						EXT2_MKJOURNAL_LAZYINIT | EXT2_MKJOURNAL_NO_MNT_CHECK);
		if (err) {
			rc = e2fail(w, err, why, "creating the journal");
			goto fail;
		}
	}

	/* Content starts after the first flex group's packed tables: the gaps
	 * libext2fs leaves between them (room for groups a small image does not
	 * have) would otherwise split the first files. */
	dgrp_t flex = (dgrp_t)1 << fs->super->s_log_groups_per_flex;
	for (dgrp_t g = 0; g < fs->group_desc_count && g < flex; g++) {
		blk64_t ends[] = {ext2fs_block_bitmap_loc(fs, g) + 1,
				  ext2fs_inode_bitmap_loc(fs, g) + 1,
				  ext2fs_inode_table_loc(fs, g) + fs->inode_blocks_per_group};
		for (size_t i = 0; i < ARRAY_LEN(ends); i++)
			if (ends[i] > w->cursor && ends[i] < blocks)
				w->cursor = ends[i];
	}

	w->chunk = xcalloc(1, CHUNK);
	w->blk = xcalloc(1, BS);
	w->info.blocks = blocks;
	w->info.inodes = fs->super->s_inodes_count;
	w->info.used_blocks = blocks - ext2fs_free_blocks_count(fs->super) + content;
	if (info)
		*info = w->info;
	*out = w;
	return 0;
fail:
	ext4w_destroy(w);
	return rc;
}

/* ---- inodes ---- */

static void set_time(__u32 *lo, __u32 *extra, int64_t sec, uint32_t ns)
{
	*lo = (__u32)sec;
	int64_t epoch = (sec - (int64_t)(int32_t)*lo) >> 32;
	*extra = (__u32)(epoch & 3) | (ns << 2);
}

static int ftype(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return EXT2_FT_REG_FILE;
	case S_IFDIR: return EXT2_FT_DIR;
	case S_IFLNK: return EXT2_FT_SYMLINK;
	case S_IFCHR: return EXT2_FT_CHRDEV;
	case S_IFBLK: return EXT2_FT_BLKDEV;
	case S_IFIFO: return EXT2_FT_FIFO;
	case S_IFSOCK: return EXT2_FT_SOCK;
	default: return EXT2_FT_UNKNOWN;
	}
}

/* Allocate nblocks from the cursor into w->runs (each at most max_run). */
static int alloc_runs(struct ext4w *w, uint64_t nblocks, char **why)
{
	w->nruns = 0;
	uint64_t lblk = 0;
	while (lblk < nblocks) {
		uint64_t want = nblocks - lblk;
		blk64_t pblk, plen;
		if (want > w->max_run)
			want = w->max_run;
		errcode_t err = ext2fs_new_range(w->fs, 0, w->cursor, want, NULL, &pblk, &plen);
		if (err)
			return e2fail(w, err, why, "allocating %llu blocks",
				      (unsigned long long)want);
		ext2fs_block_alloc_stats_range(w->fs, pblk, (blk_t)plen, +1);
		w->cursor = pblk + plen;
		struct run *last = w->nruns ? &w->runs[w->nruns - 1] : NULL;
		if (last && last->pblk + last->len == pblk && last->len + plen <= w->max_run) {
			last->len += plen;
		} else {
			if (w->nruns == w->runcap) {
				w->runcap = w->runcap ? w->runcap * 2 : 16;
				w->runs = xrealloc(w->runs, w->runcap * sizeof(*w->runs));
			}
			w->runs[w->nruns++] = (struct run){lblk, pblk, plen};
		}
		lblk += plen;
	}
	return 0;
}

/* An extent header in i_block with the runs (at most 4) as its entries. */
static void inline_extents(struct ext2_inode_large *ei, const struct run *r, uint32_t n)
{
	memset(ei->i_block, 0, sizeof(ei->i_block));
	struct ext3_extent_header *eh = (struct ext3_extent_header *)ei->i_block;
	eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
	eh->eh_entries = ext2fs_cpu_to_le16((uint16_t)n);
	eh->eh_max = ext2fs_cpu_to_le16(
		(sizeof(ei->i_block) - sizeof(*eh)) / sizeof(struct ext3_extent));
	eh->eh_depth = 0;
	struct ext3_extent *ex = (struct ext3_extent *)(eh + 1);
	for (uint32_t i = 0; i < n; i++) {
		ex[i].ee_block = ext2fs_cpu_to_le32((uint32_t)r[i].lblk);
		ex[i].ee_len = ext2fs_cpu_to_le16((uint16_t)r[i].len);
		ex[i].ee_start_hi = ext2fs_cpu_to_le16((uint16_t)(r[i].pblk >> 32));
		ex[i].ee_start = ext2fs_cpu_to_le32((uint32_t)r[i].pblk);
	}
}

/* More than four runs: an extent tree with leaf blocks, built by
 * libext2fs from the inode already written with an empty header. */
static int tree_extents(struct ext4w *w, ext2_ino_t ino, char **why)
{
	ext2_extent_handle_t h;
	errcode_t err = ext2fs_extent_open2(w->fs, ino, NULL, &h);
	if (err)
		return e2fail(w, err, why, "mapping inode %u", ino);
	for (uint32_t i = 0; i < w->nruns && !err; i++) {
		struct ext2fs_extent ex = {
			.e_pblk = w->runs[i].pblk,
			.e_lblk = (blk64_t)w->runs[i].lblk,
			.e_len = (__u32)w->runs[i].len,
			.e_flags = 0,
		};
		err = ext2fs_extent_insert(h, i ? EXT2_EXTENT_INSERT_AFTER : 0, &ex);
	}
	ext2fs_extent_free(h);
	if (err)
		return e2fail(w, err, why, "mapping inode %u", ino);
	return 0;
}

/* The runs of a file mapped by tree_extents, read back into w->runs. */
static int load_runs(struct ext4w *w, ext2_ino_t ino, char **why)
{
	ext2_extent_handle_t h;
	errcode_t err = ext2fs_extent_open2(w->fs, ino, NULL, &h);
	if (err)
		return e2fail(w, err, why, "reading the extents of inode %u", ino);
	w->nruns = 0;
	struct ext2fs_extent ex;
	err = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
	while (!err) {
		if (ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) {
			if (w->nruns == w->runcap) {
				w->runcap = w->runcap ? w->runcap * 2 : 16;
				w->runs = xrealloc(w->runs, w->runcap * sizeof(*w->runs));
			}
			w->runs[w->nruns++] = (struct run){ex.e_lblk, ex.e_pblk, ex.e_len};
		}
		err = ext2fs_extent_get(h, EXT2_EXTENT_NEXT, &ex);
	}
	ext2fs_extent_free(h);
	if (err != EXT2_ET_EXTENT_NO_NEXT)
		return e2fail(w, err, why, "reading the extents of inode %u", ino);
	return 0;
}

/* Write count blocks of buf at logical block lblk of the current runs. */
static int write_blocks(struct ext4w *w, uint64_t lblk, uint64_t count, const char *buf,
			char **why)
{
	for (uint32_t i = 0; i < w->nruns && count; i++) {
		const struct run *r = &w->runs[i];
		if (lblk < r->lblk || lblk >= r->lblk + r->len)
			continue;
		uint64_t n = r->lblk + r->len - lblk;
		if (n > count)
			n = count;
		errcode_t err = io_channel_write_blk64(w->fs->io, r->pblk + (lblk - r->lblk),
						       (int)n, buf);
		if (err)
			return e2fail(w, err, why, "writing file data");
		lblk += n;
		count -= n;
		buf += n * BS;
	}
	if (count) {
		*why = xasprintf("block %llu is not mapped in '%s' (a bug in banger's writer)",
				 (unsigned long long)lblk, w->path);
		return BG_ERR_IO;
	}
	return 0;
}

static uint64_t run_pblk(const struct ext4w *w, uint64_t lblk)
{
	for (uint32_t i = 0; i < w->nruns; i++)
		if (lblk >= w->runs[i].lblk && lblk < w->runs[i].lblk + w->runs[i].len)
			return w->runs[i].pblk + (lblk - w->runs[i].lblk);
	return 0;
}

struct dirw {
	char *buf;
	uint32_t off, last;
	uint64_t lblk;
	ext2_ino_t ino;
};

static int dir_flush(struct ext4w *w, struct dirw *d, char **why)
{
	const uint32_t limit = BS - TAIL_SIZE;
	struct ext2_dir_entry *last = (struct ext2_dir_entry *)(d->buf + d->last);
	ext2fs_set_rec_len(w->fs, limit - d->last, last);
	ext2fs_initialize_dirent_tail(w->fs, (struct ext2_dir_entry_tail *)(d->buf + limit));
	uint64_t pblk = run_pblk(w, d->lblk);
	errcode_t err = pblk ? ext2fs_write_dir_block4(w->fs, pblk, d->buf, 0, d->ino)
			     : EXT2_ET_BLOCK_ALLOC_FAIL;
	if (err)
		return e2fail(w, err, why, "writing directory inode %u", d->ino);
	memset(d->buf, 0, BS);
	d->off = d->last = 0;
	d->lblk++;
	return 0;
}

static int dir_add(struct ext4w *w, struct dirw *d, const char *name, size_t len, ext2_ino_t ino,
		   int type, char **why)
{
	uint32_t r = rec_len(len);
	if (d->off + r > BS - TAIL_SIZE) {
		int rc = dir_flush(w, d, why);
		if (rc < 0)
			return rc;
	}
	struct ext2_dir_entry *de = (struct ext2_dir_entry *)(d->buf + d->off);
	de->inode = ino;
	ext2fs_dirent_set_name_len(de, (int)len);
	ext2fs_dirent_set_file_type(de, type);
	memcpy(de->name, name, len);
	ext2fs_set_rec_len(w->fs, r, de);
	d->last = d->off;
	d->off += r;
	return 0;
}

static int write_dir(struct ext4w *w, const struct rt_inode *in, char **why)
{
	const struct rt_dentry *dn = in->dir;
	struct dirw d = {w->blk, 0, 0, 0, in->ino};
	memset(w->blk, 0, BS);
	int rc = dir_add(w, &d, ".", 1, in->ino, EXT2_FT_DIR, why);
	if (rc == 0)
		rc = dir_add(w, &d, "..", 2, dn->parent->inode->ino, EXT2_FT_DIR, why);
	for (uint32_t i = 0; i < dn->nkids && rc == 0; i++) {
		const struct rt_dentry *k = dn->kids[i];
		rc = dir_add(w, &d, k->name, k->namelen, k->inode->ino, ftype(k->inode->mode), why);
	}
	if (rc == 0)
		rc = dir_flush(w, &d, why);
	return rc;
}

static int set_xattrs(struct ext4w *w, const struct rt_inode *in, char **why)
{
	struct ext2_xattr_handle *h;
	errcode_t err = ext2fs_xattrs_open(w->fs, in->ino, &h);
	if (err)
		return e2fail(w, err, why, "opening the xattrs of inode %u", in->ino);
	err = ext2fs_xattrs_read(h);
	for (uint32_t i = 0; i < in->nxattrs && !err; i++)
		err = ext2fs_xattr_set(h, in->xattrs[i].name, in->xattrs[i].value,
				       in->xattrs[i].len);
	ext2fs_xattrs_close(&h);
	if (err == EXT2_ET_EA_NO_SPACE) {
		*why = xasprintf("the xattrs of inode %u do not fit in one ext4 block", in->ino);
		return BG_ERR_INVAL;
	}
	if (err)
		return e2fail(w, err, why, "writing the xattrs of inode %u", in->ino);
	return 0;
}

static int write_inode(struct ext4w *w, struct rt_inode *in, char **why)
{
	ext2_filsys fs = w->fs;
	union {
		struct ext2_inode_large l;
		char pad[INODE_SIZE];
	} u;
	memset(&u, 0, sizeof(u));
	struct ext2_inode_large *ei = &u.l;
	uint32_t type = in->mode & S_IFMT;
	int64_t sec = in->implicit ? w->fs_time : in->mtime;
	uint32_t ns = in->implicit ? 0 : in->mtime_ns;

	ei->i_mode = (__u16)in->mode;
	ei->i_uid = (__u16)in->uid;
	ext2fs_set_i_uid_high(*ei, in->uid >> 16);
	ei->i_gid = (__u16)in->gid;
	ext2fs_set_i_gid_high(*ei, in->gid >> 16);
	ei->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
	set_time(&ei->i_mtime, &ei->i_mtime_extra, sec, ns);
	set_time(&ei->i_atime, &ei->i_atime_extra, sec, ns);
	set_time(&ei->i_ctime, &ei->i_ctime_extra, sec, ns);
	set_time(&ei->i_crtime, &ei->i_crtime_extra, sec, ns);

	uint64_t size = 0, nblocks = 0;
	uint32_t links = in->nlink;
	switch (type) {
	case S_IFDIR: {
		uint32_t subdirs = 0;
		for (uint32_t i = 0; i < in->dir->nkids; i++)
			subdirs += S_ISDIR(in->dir->kids[i]->inode->mode);
		links = 2 + subdirs;
		if (links > EXT4_LINK_MAX)
			links = 1; /* dir_nlink: "many" */
		nblocks = dir_blocks(in->dir);
		size = nblocks * BS;
		break;
	}
	case S_IFREG:
		size = in->size;
		nblocks = (size + BS - 1) / BS;
		break;
	case S_IFLNK:
		size = strlen(in->link);
		if (size <= FAST_SYMLINK_MAX)
			memcpy(ei->i_block, in->link, size);
		else
			nblocks = 1;
		break;
	case S_IFCHR:
	case S_IFBLK:
		/* The old 8:8 encoding when it fits, else the new one (as the
		 * kernel's ext4_write_inode does). */
		if (in->rdev_major < 256 && in->rdev_minor < 256) {
			ei->i_block[0] = ext2fs_cpu_to_le32(in->rdev_major << 8 | in->rdev_minor);
		} else {
			ei->i_block[1] = ext2fs_cpu_to_le32((in->rdev_minor & 0xff) |
							    (in->rdev_major << 8) |
							    ((in->rdev_minor & ~0xffu) << 12));
		}
		break;
	default:
		break;
	}
	ei->i_links_count = (__u16)links;

	w->nruns = 0;
	if (nblocks) {
		int rc = alloc_runs(w, nblocks, why);
		if (rc < 0)
			return rc;
		ext2fs_iblk_set(fs, (struct ext2_inode *)ei, nblocks);
	}
	if (type == S_IFREG || type == S_IFDIR || nblocks) {
		ei->i_flags |= EXT4_EXTENTS_FL;
		inline_extents(ei, w->runs, w->nruns <= 4 ? w->nruns : 0);
	}
	errcode_t err = ext2fs_inode_size_set(fs, (struct ext2_inode *)ei, size);
	if (!err)
		err = ext2fs_write_inode_full(fs, in->ino, (struct ext2_inode *)ei, INODE_SIZE);
	if (err)
		return e2fail(w, err, why, "writing inode %u", in->ino);
	ext2fs_inode_alloc_stats2(fs, in->ino, +1, type == S_IFDIR);
	if (w->nruns > 4) {
		int rc = tree_extents(w, in->ino, why);
		if (rc < 0)
			return rc;
	}
	in->nruns = w->nruns;
	in->pblk = w->nruns ? w->runs[0].pblk : 0;

	int rc = 0;
	if (type == S_IFDIR) {
		rc = write_dir(w, in, why);
	} else if (type == S_IFLNK && nblocks) {
		memset(w->blk, 0, BS);
		memcpy(w->blk, in->link, size);
		rc = write_blocks(w, 0, 1, w->blk, why);
	}
	if (rc == 0 && in->nxattrs)
		rc = set_xattrs(w, in, why);
	return rc;
}

int ext4w_write_tree(struct ext4w *w, struct rtree *t, bool (*cancelled)(void *), void *arg,
		     char **why)
{
	int rc = write_inode(w, t->root->inode, why);
	for (uint32_t i = 0; i < t->norder && rc == 0; i++) {
		if (i % 512 == 0 && cancelled && cancelled(arg))
			return BG_ERR_CANCELED;
		rc = write_inode(w, t->order[i], why);
	}
	return rc;
}

/* ---- file data ---- */

int ext4w_write_data(struct ext4w *w, const struct rt_inode *in, ext4w_read_fn read, void *arg,
		     char **why)
{
	uint64_t nblocks = (in->size + BS - 1) / BS;
	if (!nblocks)
		return 0;
	if (in->nruns == 1) {
		w->nruns = 1;
		if (!w->runcap) {
			w->runcap = 16;
			w->runs = xrealloc(w->runs, w->runcap * sizeof(*w->runs));
		}
		w->runs[0] = (struct run){0, in->pblk, nblocks};
	} else {
		int rc = load_runs(w, in->ino, why);
		if (rc < 0)
			return rc;
	}
	uint64_t cstart = 0, cend = 0; /* the chunk holds bytes [cstart, cstart + cend) */
	bool dirty = false;
	for (;;) {
		const void *buf;
		size_t len;
		int64_t off;
		int r = read(arg, &buf, &len, &off, why);
		if (r < 0)
			return r;
		if (r == 1)
			break;
		if (off < 0 || (uint64_t)off + len > in->size) {
			*why = xasprintf("the data runs past the %llu bytes its header gives",
					 (unsigned long long)in->size);
			return BG_ERR_INVAL;
		}
		const char *p = buf;
		uint64_t o = (uint64_t)off;
		while (len) {
			if (dirty && (o < cstart || o >= cstart + CHUNK)) {
				uint64_t nb = (cend + BS - 1) / BS;
				int rc = write_blocks(w, cstart / BS, nb, w->chunk, why);
				if (rc < 0)
					return rc;
				memset(w->chunk, 0, nb * BS);
				dirty = false;
			}
			if (!dirty) {
				cstart = o - o % CHUNK;
				cend = 0;
			}
			size_t n = len;
			if (n > cstart + CHUNK - o)
				n = (size_t)(cstart + CHUNK - o);
			memcpy(w->chunk + (o - cstart), p, n);
			dirty = true;
			if (o - cstart + n > cend)
				cend = o - cstart + n;
			o += n;
			p += n;
			len -= n;
		}
	}
	if (dirty) {
		uint64_t nb = (cend + BS - 1) / BS;
		int rc = write_blocks(w, cstart / BS, nb, w->chunk, why);
		memset(w->chunk, 0, nb * BS);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int ext4w_file_runs(struct ext4w *w, const struct rt_inode *in, const struct ext4w_run **runs,
		    uint32_t *n, char **why)
{
	uint64_t nblocks = (in->size + BS - 1) / BS;
	*runs = NULL;
	*n = 0;
	if (!nblocks)
		return 0;
	if (in->nruns == 1) {
		w->nruns = 1;
		if (!w->runcap) {
			w->runcap = 16;
			w->runs = xrealloc(w->runs, w->runcap * sizeof(*w->runs));
		}
		w->runs[0] = (struct run){0, in->pblk, nblocks};
	} else {
		int rc = load_runs(w, in->ino, why);
		if (rc < 0)
			return rc;
	}
	if (w->xcap < w->nruns) {
		w->xcap = w->nruns;
		w->xruns = xrealloc(w->xruns, w->xcap * sizeof(*w->xruns));
	}
	for (uint32_t i = 0; i < w->nruns; i++)
		w->xruns[i] = (struct ext4w_run){w->runs[i].lblk, w->runs[i].pblk, w->runs[i].len};
	*runs = w->xruns;
	*n = w->nruns;
	return 0;
}

/* ---- closing ---- */

int ext4w_close(struct ext4w *w, struct ext4w_info *info, char *uuid_text, char **why)
{
	ext2_filsys fs = w->fs;
	w->info.used_blocks = ext2fs_blocks_count(fs->super) - ext2fs_free_blocks_count(fs->super);
	w->info.inodes = fs->super->s_inodes_count;
	if (info)
		*info = w->info;
	if (uuid_text) {
		const uint8_t *u = fs->super->s_uuid;
		snprintf(uuid_text, 37,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
			 u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
			 u[13], u[14], u[15]);
	}
	errcode_t err = ext2fs_close_free(&w->fs);
	int rc = 0;
	if (err)
		rc = e2fail(w, err, why, "writing the filesystem metadata");
	ext4w_destroy(w);
	return rc;
}

void ext4w_destroy(struct ext4w *w)
{
	if (!w)
		return;
	if (w->fs)
		ext2fs_free(w->fs);
	free(w->runs);
	free(w->xruns);
	free(w->chunk);
	free(w->blk);
	free(w->path);
	free(w);
}

int ext4w_space_check(const char *out_path, uint64_t need, const char *what, char **msg)
{
	char *copy = xstrdup(out_path);
	const char *dir = dirname(copy);
	struct statvfs sv;
	int rc = 0;
	if (statvfs(dir, &sv) == 0) {
		uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
		if (avail < need) {
			*msg = xasprintf("not enough space for '%s': %s needs about %llu MiB on "
					 "disk and '%s' has %llu MiB free",
					 out_path, what, (unsigned long long)(need >> 20) + 1, dir,
					 (unsigned long long)(avail >> 20));
			rc = BG_ERR_NOSPC;
		}
	}
	free(copy);
	return rc;
}
