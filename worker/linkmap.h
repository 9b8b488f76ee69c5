/*
 * linkmap.h: the files with more than one link a tree walk has met, by
 * (st_dev, st_ino), so the second name of a file becomes a hardlink to the
 * first (the workspace disk builder, the import walk).  An open-addressing
 * table that doubles; a few dozen bytes a linked file.
 */
#ifndef BANGER_LINKMAP_H
#define BANGER_LINKMAP_H

#include <stddef.h>
#include <sys/types.h>

struct linkmap_slot {
	dev_t dev;
	ino_t ino;
	char *path; /* NULL: a free slot */
};

struct linkmap {
	struct linkmap_slot *v;
	size_t cap, count;
};

/* Zeroed is empty. */
#define LINKMAP_INIT {NULL, 0, 0}

/* The first path recorded for (dev, ino); else NULL, after recording path
 * (copied) for it. */
const char *linkmap_find_or_add(struct linkmap *m, dev_t dev, ino_t ino, const char *path);
void linkmap_release(struct linkmap *m);

#endif
