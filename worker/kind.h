/*
 * kind.h: what a job kind is, and the registry of kinds.
 *
 * A kind is a table of steps {name, plan, do, undo, resumable} plus the fields
 * its spec entries may carry.  The step engine (engine.c) runs the table:
 *
 *   plan   on the loop thread, no side effects: writes the undo record that
 *          names, deterministically, what do is about to acquire;
 *   ...    the engine commits the undo record durably (fsync);
 *   do     in a pool thread, may block: acquires, may emit output, may set a
 *          result; must poll step_cancelled()/use step_sleep() in long waits;
 *   ...    the engine commits `done` with the result;
 *   undo   in a pool thread, on rollback, given the committed undo record; must
 *          be idempotent: "already gone" is success.
 *
 * resumable: after a crash while this step was running, re-run do (it must
 * then cope with having partly run); otherwise the job is rolled back.
 *
 * Each binary decides which kinds it carries by defining kinds_register_all():
 * bangerd registers the shipped kinds; the test daemon adds the test kinds
 * (tests/kinds/) through the same table.
 */
#ifndef BANGER_KIND_H
#define BANGER_KIND_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum field_type {
	FT_STR,      /* a scalar, kept as str */
	FT_INT,      /* integer */
	FT_BOOL,     /* true/false */
	FT_DURATION, /* "20m", "1h30m", "500ms", bare seconds: stored as int µs */
	FT_SIZE,     /* "1G", "256M", "4096": stored as int bytes */
	FT_STRLIST,  /* a sequence of scalars (a single scalar is a list of one) */
	FT_ANY,      /* any YAML value: scalars as str, sequences, mappings */
};

struct kind_field {
	const char *name;
	enum field_type type;
	bool required;
};

struct step_ctx; /* engine.h */
struct queue;    /* queue.h */

struct step_def {
	const char *name;
	/* Loop thread.  Pack exactly one msgpack value (usually a map) that
	 * names what do will acquire.  May be NULL: the record is then nil. */
	int (*plan)(struct step_ctx *ctx, msgpack_packer *undo);
	/* Pool thread.  0, or a negative BG_ERR_* with step_fail() detail. */
	int (*do_)(struct step_ctx *ctx);
	/* Pool thread.  May be NULL for steps that acquire nothing. */
	int (*undo)(struct step_ctx *ctx, const msgpack_object *undo_record);
	bool resumable;
	/* Loop thread, optional: after do succeeded, write what the step made
	 * to the queue (an images row, a vms row) in the same transaction as
	 * the step's `done`, so both are stored or neither.  result is what do
	 * packed (NULL if nothing).  0 or a BG_ERR_* that fails the step. */
	int (*record)(struct step_ctx *ctx, struct queue *q, const msgpack_object *result);
};

struct kind {
	const char *name;
	const char *summary;
	const struct kind_field *fields; /* terminated by {NULL} */
	const struct step_def *steps;
	size_t nsteps;
	/* When an attempt is interrupted by a daemon crash at a step that is not
	 * resumable: true re-queues the job after rollback (attempt not counted);
	 * false leaves it rolled_back.  A spec's `retry:` overrides it. */
	bool retry_interrupted;
	/* Its fields hold paths relative to the spec's directory: the job's
	 * params get SPEC_DIR_FIELD, the absolute directory of the submitted
	 * file (spec_set_dir), absent when the client sent none. */
	bool wants_dir;
};

/* The parameter spec_set_dir adds.  A spec cannot set it: it is no kind's
 * declared field, so the parser refuses it as unknown. */
#define SPEC_DIR_FIELD "_dir"

/* Register a kind (static storage; the registry keeps the pointer). */
void kinds_register(const struct kind *k);
/* NULL when no kind of that name is registered. */
const struct kind *kinds_find(const char *name);
const struct kind *kinds_findn(const char *name, size_t len);
/* Iterate: i from 0 until NULL. */
const struct kind *kinds_at(size_t i);
/* Defined once per binary: registers every kind that binary runs. */
void kinds_register_all(void);
/* The kinds an installed bangerd runs (kind_*.c); both bangerd and the
 * test daemon call it from their kinds_register_all. */
void kinds_register_shipped(void);

extern const struct kind kind_image_pull; /* kind_image.c */
extern const struct kind kind_vm_create; /* kind_vm.c */
extern const struct kind kind_vm_exec;
extern const struct kind kind_vm_delete;
extern const struct kind kind_workspace_export; /* kind_workspace.c */
extern const struct kind kind_workspace_import;

#endif
