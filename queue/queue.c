/*
 * queue.c: backend selection and the parts of the queue interface every
 * backend shares (state names, releasing rows).  See queue.h.
 */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "migrations.h"
#include "queue.h"
#include "util.h"

bool job_state_final(const char *s)
{
	return strcmp(s, JS_SUCCEEDED) == 0 || strcmp(s, JS_FAILED) == 0 ||
	       strcmp(s, JS_DEAD) == 0 || strcmp(s, JS_CANCELLED) == 0 ||
	       strcmp(s, JS_ROLLED_BACK) == 0 || strcmp(s, JS_SKIPPED) == 0;
}

void q_job_release(struct q_job *j)
{
	free(j->name);
	free(j->kind);
	free(j->state);
	free(j->params);
	free(j->lease_owner);
	free(j->error);
	free(j->result);
	free(j->key);
	free(j->rollback_reason);
	memset(j, 0, sizeof(*j));
}

void q_step_release(struct q_step *s)
{
	free(s->name);
	free(s->state);
	free(s->undo);
	free(s->result);
	free(s->error);
	free(s->undo_error);
	memset(s, 0, sizeof(*s));
}

void q_image_release(struct q_image *img)
{
	free(img->digest);
	free(img->rootfs);
	free(img->config);
	free(img->source);
	free(img->layers);
	for (size_t i = 0; i < img->nrefs; i++)
		free(img->refs[i]);
	free(img->refs);
	memset(img, 0, sizeof(*img));
}

void q_vm_release(struct q_vm *vm)
{
	free(vm->name);
	free(vm->state);
	free(vm->image);
	free(vm->rootfs);
	free(vm->kernel);
	free(vm->address);
	free(vm->tap);
	free(vm->overlay);
	free(vm->run_dir);
	free(vm->node);
	free(vm->error);
	memset(vm, 0, sizeof(*vm));
}

void q_attempt_release(struct q_attempt *a)
{
	free(a->op);
	free(a->node);
	free(a->epochs);
	free(a->outcome);
	free(a->error);
	memset(a, 0, sizeof(*a));
}

int queue_schema_version(void)
{
	return migrations_count ? migrations[migrations_count - 1].version : 0;
}

int queue_open(const char *db, const char *state_dir, struct queue **out, char **errmsg)
{
	if (!db || strcmp(db, "sqlite") == 0) {
		char *path = xasprintf("%s/queue.db", state_dir);
		int rc = queue_sqlite_open(path, out, errmsg);
		free(path);
		return rc;
	}
	if (strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0) {
		*errmsg = xasprintf("db '%s': the PostgreSQL backend is not built yet", db);
		return BG_ERR_UNSUPPORTED;
	}
	return queue_sqlite_open(db, out, errmsg);
}
