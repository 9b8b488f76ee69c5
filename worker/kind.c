/*
 * kind.c: the registry of job kinds (see kind.h).  Filled once at start-up,
 * before the loop runs; read-only afterwards, so any thread may read it.
 */
#include <string.h>

#include "kind.h"

#define MAX_KINDS 64

static const struct kind *kinds[MAX_KINDS];
static size_t nkinds;

void kinds_register(const struct kind *k)
{
	if (kinds_find(k->name) || nkinds == MAX_KINDS)
		return;
	kinds[nkinds++] = k;
}

const struct kind *kinds_findn(const char *name, size_t len)
{
	for (size_t i = 0; i < nkinds; i++)
		if (strlen(kinds[i]->name) == len && memcmp(kinds[i]->name, name, len) == 0)
			return kinds[i];
	return NULL;
}

const struct kind *kinds_find(const char *name)
{
	return kinds_findn(name, strlen(name));
}

void kinds_register_shipped(void)
{
	kinds_register(&kind_image_pull);
	kinds_register(&kind_vm_create);
	kinds_register(&kind_vm_exec);
	kinds_register(&kind_vm_delete);
	kinds_register(&kind_workspace_export);
	kinds_register(&kind_workspace_import);
}

const struct kind *kinds_at(size_t i)
{
	return i < nkinds ? kinds[i] : NULL;
}
