/*
 * rootfs.h: turn an ordered list of OCI layer blobs (already verified, on
 * local disk) into a bootable ext4 image, without mounting anything.
 *
 * rootfs_build() is the whole job: it flattens the layers in order (OCI
 * whiteouts and opaque directories applied), refuses unsafe entries, sizes
 * the filesystem from the merged content plus headroom, and writes the image
 * with libext2fs.  It blocks (seconds to minutes): call it from a pool thread
 * (a step body), never from the loop thread.  It is reentrant: several builds
 * may run at once in different threads.  See docs/images.md, "Layers,
 * whiteouts and the ext4 layout", for the rules and the on-disk result.
 *
 * The smaller functions below are the pure pieces (path and name rules) that
 * rootfs_build() uses; they are exported for the unit tests and for callers
 * that want to check a media type before downloading anything.
 */
#ifndef BANGER_ROOTFS_H
#define BANGER_ROOTFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One layer blob, lowest first. */
struct rootfs_layer {
	const char *path;       /* the blob on local disk */
	/* OCI or Docker layer media type ("application/vnd.oci.image.layer.v1.tar+gzip",
	 * "application/vnd.docker.image.rootfs.diff.tar.gzip", ...), or one of the
	 * shorthands "tar", "gzip", "zstd"; NULL or "" detects the compression.
	 * The compression actually used is always detected from the bytes (as
	 * containerd does); a media type banger cannot read (bzip2, encrypted,
	 * unknown) is refused before anything is read. */
	const char *media_type;
	const char *digest;     /* "sha256:..." for messages; NULL: path is shown */
};

enum rootfs_phase {
	ROOTFS_SCAN,  /* pass 1: reading headers of every layer */
	ROOTFS_WRITE, /* pass 2: streaming surviving files' data into the image */
};

struct rootfs_progress {
	enum rootfs_phase phase;
	size_t layer;        /* 0-based index of the layer being read */
	uint64_t done;       /* blob bytes read so far in this phase (all layers) */
	uint64_t total;      /* blob bytes this phase will read (all layers) */
};

struct rootfs_opts {
	/* Required.  The image's manifest digest: the filesystem UUID and the
	 * directory hash seed are derived from it, so the same layers and digest
	 * give the same bytes. */
	const char *manifest_digest;
	/* Free space left in the image after the content:
	 * headroom_bytes + content * headroom_pct / 100.  Both 0: none (the
	 * filesystem is sized to fit, which still leaves a little slack). */
	uint64_t headroom_bytes;
	unsigned headroom_pct;
	/* Free inodes beyond the ones the content uses; 0 derives them from the
	 * headroom (one per 16 KiB, at least 1024). */
	uint64_t extra_inodes;
	bool journal;          /* add an ext4 journal (default: none, see docs) */
	const char *label;     /* volume label (at most 16 bytes); NULL: "rootfs" */
	/* Time written into filesystem metadata (superblock times, directories a
	 * layer did not list, lost+found); 0 = ROOTFS_FS_TIME_DEFAULT.  Files
	 * keep the mtimes their tar entries carry. */
	int64_t fs_time;
	/* Polled between entries and every few MiB of data; true stops the build
	 * with BG_ERR_CANCELED (the output is removed).  May be NULL. */
	bool (*cancelled)(void *arg);
	/* Called from the building thread at most about once per MiB of blob
	 * read, and at the end of each layer.  May be NULL. */
	void (*progress)(void *arg, const struct rootfs_progress *p);
	void *arg;             /* passed to cancelled and progress */

	/* For tests.  max_run_blocks > 0 caps each data extent at that many
	 * blocks (forces deep extent trees on small files); no_space_check skips
	 * the free-space check before writing, so a full disk is met mid-write. */
	uint32_t max_run_blocks;
	bool no_space_check;
};

/* 2000-01-01T00:00:00Z: a fixed, non-zero time (libext2fs treats 0 as "now"). */
#define ROOTFS_FS_TIME_DEFAULT 946684800

struct rootfs_result {
	uint64_t image_bytes;    /* size of the image file */
	uint64_t used_bytes;     /* blocks in use (content and metadata), in bytes */
	uint64_t free_bytes;     /* free blocks left, in bytes */
	uint64_t blocks;         /* filesystem blocks (of block_size) */
	uint32_t block_size;
	uint64_t inodes;         /* inodes in the filesystem */
	uint64_t inodes_used;
	uint64_t files, dirs, symlinks, hardlinks, specials; /* surviving tree */
	uint64_t whiteouts;      /* .wh. entries and opaque markers applied */
	uint64_t data_bytes;     /* bytes of regular-file data written */
	char uuid[37];           /* filesystem UUID, text form */
};

/*
 * Build out_path from layers[0..n) (lowest first).  out_path is created (or
 * truncated) and written; the caller picks a temporary name and renames it
 * once this returns 0.  On any failure out_path is removed, so a failed build
 * never leaves a file behind, and the return value is a negative BG_ERR_*:
 *
 *   BG_ERR_INVAL        an unsafe or unrepresentable entry, bad options
 *   BG_ERR_UNSUPPORTED  a media type banger cannot read
 *   BG_ERR_NOENT        a layer blob is missing
 *   BG_ERR_IO           a corrupt or truncated layer, a read or write error
 *   BG_ERR_NOSPC        the disk holding out_path is (or became) full
 *   BG_ERR_CANCELED     opts->cancelled returned true
 *
 * *errmsg (if errmsg is not NULL) receives a message a person can act on,
 * naming the layer (1-based index and digest) and the entry; the caller frees
 * it.  It is set to NULL on success.  res may be NULL.
 */
int rootfs_build(const struct rootfs_layer *layers, size_t n, const struct rootfs_opts *o,
		 const char *out_path, struct rootfs_result *res, char **errmsg);

/* ---- pure pieces ---- */

/*
 * Normalize a tar entry name into a path relative to the image root: a
 * leading "/" is dropped (absolute names are taken relative to the root, as
 * Docker and containerd do), "." and empty components are dropped, a
 * trailing "/" is dropped.  "" is the root itself.  Refused (BG_ERR_INVAL,
 * *why says why): ".." components (anywhere: they would escape the root or
 * depend on symlinks), a component longer than 255 bytes, a path longer than
 * 4095 bytes.  out must hold strlen(in) + 1 bytes.
 */
int rootfs_path_clean(const char *in, char *out, size_t outsz, const char **why);

enum rootfs_wh {
	ROOTFS_WH_NONE,    /* an ordinary name */
	ROOTFS_WH_FILE,    /* ".wh.NAME": remove NAME from the lower layers */
	ROOTFS_WH_OPAQUE,  /* ".wh..wh..opq": hide the directory's lower contents */
	ROOTFS_WH_META,    /* another ".wh..wh." name (aufs bookkeeping): ignored */
	ROOTFS_WH_INVALID, /* ".wh." with nothing usable after it */
};

/* Classify the last component of an entry name; for ROOTFS_WH_FILE,
 * *target points into base at NAME. */
enum rootfs_wh rootfs_whiteout_parse(const char *base, const char **target);

enum rootfs_compression {
	ROOTFS_COMP_AUTO,
	ROOTFS_COMP_NONE,
	ROOTFS_COMP_GZIP,
	ROOTFS_COMP_ZSTD,
};

/* The compression a layer media type names: 0, or BG_ERR_UNSUPPORTED for a
 * media type banger cannot read. */
int rootfs_media_type(const char *media_type, enum rootfs_compression *out);

#endif
