/*
 * cowdisk.h: a VM's private writable copy of a raw base image, made without
 * ever writing the base.  The fallback for hosts where neither a qcow2
 * overlay (QEMU) nor a dm-snapshot through banger-helper (Firecracker) is
 * available: Firecracker reads raw files only.
 *
 * Methods, tried in order:
 *   reflink  ioctl(FICLONE): the copy shares the base's extents until
 *            either is written (btrfs, xfs with reflink=1); instant, no space;
 *   sparse   SEEK_DATA/SEEK_HOLE over the base, copy_file_range of each data
 *            range (plain read/write when the kernel refuses that), holes
 *            left as holes: costs the image's allocated bytes, not its size.
 *
 * The copy is written to DEST.tmp-XXXXXX next to dest, fsync'd and renamed
 * into place, so dest is either absent or whole.  Blocks; pool threads and
 * tools only.
 */
#ifndef BANGER_COWDISK_H
#define BANGER_COWDISK_H

#include <stdint.h>

enum cowdisk_method { COWDISK_REFLINK, COWDISK_SPARSE };

/* Test hook: when set, FICLONE is not tried (as on a filesystem without it). */
enum cowdisk_flags { COWDISK_NO_REFLINK = 1 };

struct cowdisk_result {
	enum cowdisk_method method;
	uint64_t size;   /* apparent size, the base's */
	uint64_t copied; /* bytes copied (0 for a reflink) */
};

/*
 * Make dest a private copy of base (mode 0600).  dest must not exist
 * (BG_ERR_EXIST).  0 with *res filled (res may be NULL); a negative BG_ERR_*
 * with a message naming the file and the cause in *errmsg otherwise (then no
 * dest and no temporary file is left behind).  base is opened read-only.
 */
int cowdisk_create(const char *base, const char *dest, int flags, struct cowdisk_result *res,
		   char **errmsg);

const char *cowdisk_method_name(enum cowdisk_method m);

#endif
