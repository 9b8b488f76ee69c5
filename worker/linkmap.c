/*
 * linkmap.c: see linkmap.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "linkmap.h"
#include "util.h"

static size_t slot(size_t cap, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)dev * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)ino * 0xC2B2AE3D27D4EB4FULL);
	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

const char *linkmap_find_or_add(struct linkmap *m, dev_t dev, ino_t ino, const char *path)
{
	if ((m->count + 1) * 2 > m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 256;
		struct linkmap_slot *old = m->v;
		size_t ocap = m->cap;
		m->v = xcalloc(ncap, sizeof(*m->v));
		m->cap = ncap;
		for (size_t i = 0; i < ocap; i++) {
			if (!old[i].path)
				continue;
			size_t k = slot(ncap, old[i].dev, old[i].ino);
			while (m->v[k].path)
				k = (k + 1) & (ncap - 1);
			m->v[k] = old[i];
		}
		free(old);
	}
	size_t k = slot(m->cap, dev, ino);
	for (; m->v[k].path; k = (k + 1) & (m->cap - 1))
		if (m->v[k].dev == dev && m->v[k].ino == ino)
			return m->v[k].path;
	m->v[k] = (struct linkmap_slot){dev, ino, xstrdup(path)};
	m->count++;
	return NULL;
}

void linkmap_release(struct linkmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->v[i].path);
	free(m->v);
	memset(m, 0, sizeof(*m));
}
