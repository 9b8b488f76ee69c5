/*
 * workspace.h: turn a host directory (the pipeline's checkout) into an ext4
 * image that vm.create attaches to the VM as its workspace disk, written
 * with libext2fs (the rootfs_tree + ext4w writer behind image.pull): no
 * mount, no loop device, no root, no mkfs process.
 *
 * What goes in: regular files (modes with setuid/setgid/sticky, mtimes with
 * nanoseconds), directories (empty ones too), symlinks stored as symlinks
 * with their target bytes as they are (never followed, also when they point
 * outside the tree: the guest resolves them, inside the guest), hardlinks as
 * hardlinks, every name as its bytes (UTF-8 or not), .git and everything
 * else not excluded.  Owners are not copied: every inode belongs to
 * opts->uid:gid in the image (default root), so `git` in the guest (root)
 * sees its own checkout.
 *
 * What is skipped, each with a call of opts->warn (the step turns it into a
 * warning event): devices, fifos and sockets; anything owned by a user
 * other than opts->owner (default: the effective uid); directories on
 * another filesystem (mount points: the tree would escape its device);
 * entries that cannot be read.  Excluded paths (workspace_exclude_match)
 * are skipped silently; an excluded directory is not entered.
 *
 * Safety: the walk never follows a symlink.  Every directory and file is
 * opened relative to its parent's descriptor with O_NOFOLLOW, so a
 * directory swapped for a symlink while the build runs cannot lead it out
 * of the tree; a file that changes between the two passes (size, type,
 * mtime) fails the build.
 *
 * Streaming: pass 1 reads metadata only (a few hundred bytes per entry in
 * memory); pass 2 copies each file's bytes from its own descriptor into the
 * blocks already reserved for it, in the kernel (copy_file_range) when it
 * can and through one 1 MiB buffer otherwise.  File contents are never held
 * in memory.
 *
 * Reproducible: the same tree (names, types, modes, sizes, mtimes, link
 * targets) and options give the same image bytes: the UUID and hash seed
 * are derived from a digest of that metadata (or from opts->uuid_seed),
 * every other time is opts->fs_time.
 *
 * Blocking (seconds for a large tree): call it from a pool thread (a step
 * body) or a tool, never from bangerd's loop thread.  Reentrant.
 */
#ifndef BANGER_WORKSPACE_H
#define BANGER_WORKSPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What vm.create should use unless the spec says otherwise: 1 GiB + 25 %
 * free in the image (the file is sparse: free space costs no disk). */
#define WORKSPACE_HEADROOM_BYTES (1ull << 30)
#define WORKSPACE_HEADROOM_PCT 25u
#define WORKSPACE_LABEL "workspace"
/* Most exclude patterns one build takes, and the longest one. */
#define WORKSPACE_MAX_EXCLUDES 256
#define WORKSPACE_MAX_PATTERN 1024

enum workspace_skip {
	WORKSPACE_SKIP_SPECIAL,   /* a device, fifo or socket */
	WORKSPACE_SKIP_OWNER,     /* owned by a user other than opts->owner */
	WORKSPACE_SKIP_MOUNT,     /* a directory on another filesystem */
	WORKSPACE_SKIP_UNREADABLE /* cannot be opened or read (permissions) */
};

struct workspace_progress {
	uint64_t done;  /* bytes of file data copied so far */
	uint64_t total; /* bytes of file data the image will hold */
};

struct workspace_opts {
	/* Exclude patterns (see workspace_exclude_match); NULL-terminated, may
	 * be NULL.  Checked by workspace_build before anything is read. */
	const char *const *exclude;
	/* Free space after the content: headroom_bytes + content * pct / 100.
	 * Both 0: none (the image is sized to fit, with a little slack); the
	 * WORKSPACE_HEADROOM_* values above are the suggested defaults. */
	uint64_t headroom_bytes;
	unsigned headroom_pct;
	uint64_t extra_inodes;   /* 0: one per 16 KiB of headroom, at least 1024 */
	const char *label;       /* at most 16 bytes; NULL: WORKSPACE_LABEL */
	int64_t fs_time;         /* 0: ROOTFS_FS_TIME_DEFAULT (2000-01-01) */
	/* Owner of every inode in the image; default (both 0) root. */
	uint32_t uid, gid;
	/* Files owned by another uid are skipped.  owner_set false: the
	 * effective uid of the process. */
	bool owner_set;
	uid_t owner;
	/* NULL: the UUID comes from the tree's metadata.  Otherwise from this
	 * string (a job id, ...). */
	const char *uuid_seed;
	/* Called for each skipped entry with its path relative to the root and
	 * a lowercase reason; may be NULL. */
	void (*warn)(void *arg, enum workspace_skip kind, const char *path, const char *why);
	/* Polled between entries and every few MiB; true stops the build with
	 * BG_ERR_CANCELED (the output is removed).  May be NULL. */
	bool (*cancelled)(void *arg);
	/* About once per 4 MiB of data and at the end.  May be NULL. */
	void (*progress)(void *arg, const struct workspace_progress *p);
	void *arg;

	/* For tests and the benchmark: never use copy_file_range. */
	bool no_copy_range;
};

struct workspace_result {
	uint64_t image_bytes;  /* size of the image file (sparse) */
	uint64_t used_bytes;   /* blocks in use, in bytes */
	uint64_t free_bytes;
	uint64_t inodes, inodes_used;
	uint64_t files, dirs, symlinks, hardlinks;
	uint64_t skipped;      /* entries reported through warn */
	uint64_t excluded;     /* entries (a directory counts once) excluded */
	uint64_t data_bytes;   /* bytes of file data copied */
	char uuid[37];
};

/*
 * Build out_path from the directory src_dir.  out_path is created (or
 * truncated); the caller picks a temporary name and renames it once this
 * returns 0.  On any failure out_path is removed and the return value is:
 *
 *   BG_ERR_INVAL     a bad exclude pattern or option; src_dir is not a directory
 *   BG_ERR_NOENT     src_dir does not exist
 *   BG_ERR_PERM      src_dir cannot be read
 *   BG_ERR_IO        a read or write error; a file changed while it was copied
 *   BG_ERR_NOSPC     the disk holding out_path is (or became) full
 *   BG_ERR_CANCELED  opts->cancelled returned true
 *
 * *errmsg (if errmsg is not NULL) gets a message naming the path, the
 * caller frees it; NULL on success.  res may be NULL.
 */
int workspace_build(const char *src_dir, const struct workspace_opts *o, const char *out_path,
		    struct workspace_result *res, char **errmsg);

/*
 * Check one exclude pattern: 0, or BG_ERR_INVAL with *why (static) saying
 * what is wrong (empty, too long, a '!' negation, a '..' component, ...).
 */
int workspace_exclude_check(const char *pattern, const char **why);

/*
 * Whether path (relative to the root, components separated by '/', no
 * leading '/') is excluded by pattern, .gitignore-lite:
 *
 *   - a pattern with no '/' except a trailing one matches the last
 *     component at any depth ("node_modules", "*.o");
 *   - a pattern with a '/' elsewhere is anchored at the root and matched
 *     against the whole path with fnmatch(FNM_PATHNAME): '*' and '?' never
 *     match a '/' and do match a leading '.' (".git/objects/pack/" then "*.tmp");
 *     a leading '/' only anchors ("/build");
 *   - a leading '**' component matches at any depth (the pattern without
 *     it is tried against the path and each of its suffixes);
 *   - a trailing '/' matches directories only ("out/").
 *
 * An excluded directory takes its whole subtree with it.
 */
bool workspace_exclude_match(const char *pattern, const char *path, bool is_dir);
/* Whether any of patterns (NULL-terminated; NULL: none) excludes path. */
bool workspace_excluded(const char *const *patterns, const char *path, bool is_dir);

#endif
