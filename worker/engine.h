/*
 * engine.h: bangerd's step engine.  Runs claimed jobs through their kind's
 * step table (kind.h), records every step in the op log before and after it
 * acts, rolls back on failure, cancel or timeout, and recovers after a crash.
 *
 * Everything here runs on the loop thread except the step_* functions marked
 * "pool thread", which step bodies call.
 */
#ifndef BANGER_ENGINE_H
#define BANGER_ENGINE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kind.h"

struct queue;
struct bg_config;
struct job_run;

/* What a step body sees.  Valid for the duration of one do/undo call. */
struct step_ctx {
	int64_t job_id;
	int attempt;
	int seq; /* 1-based position of the step in its kind's table */
	const char *op;
	const char *job_dir;          /* STATE_DIR/jobs/ID, created on demand */
	const char *state_dir;        /* STATE_DIR */
	const msgpack_object *params; /* the job's fields (a map; never NULL) */
	msgpack_packer result;        /* do_ may pack exactly one value */
	struct job_run *run;          /* the engine's; do not touch */
};

/* ---- for step bodies (pool thread) ---- */

/* Record why the step failed (shown in the op log and the job's error) and
 * return rc.  permanent: retrying cannot help (a test's non-zero exit, bad
 * input), so the job fails without using more attempts. */
int step_fail(struct step_ctx *ctx, int rc, bool permanent, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The job's exit code (e.g. a command's status), kept on the job. */
void step_set_exit(struct step_ctx *ctx, int code);
/* Append to the job's event stream ("stdout", "stderr", "log", ...). */
void step_emit(struct step_ctx *ctx, const char *stream, const void *data, size_t len);
void step_logf(struct step_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A "warning" event: something was skipped or degraded, the step goes on. */
void step_warnf(struct step_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool step_cancelled(struct step_ctx *ctx);
/* Sleep up to us; BG_ERR_CANCELED at once if the job is cancelled. */
int step_sleep(struct step_ctx *ctx, int64_t us);
/* Result of an earlier step of this attempt (seq 1-based), or NULL. */
const msgpack_object *step_result(struct step_ctx *ctx, int seq);
/* Register a child process group to SIGKILL if the job is cancelled
 * (0 to clear). */
void step_set_pgid(struct step_ctx *ctx, int pgid);

/* ---- for the daemon (loop thread) ---- */

struct engine_opts {
	const char *node;
	const char *state_dir;
	int max_running;
	int64_t lease_ttl_us;
	int max_crashes;
	int64_t retry_base_us, retry_max_us;
	const struct bg_config *cfg;
};

int engine_init(uv_loop_t *loop, struct queue *q, const struct engine_opts *o);
/* Recover every job this node held, then start taking work. */
int engine_start(bool previous_stop_was_clean);
/* A submit or a retry made jobs ready: claim at the end of this turn. */
void engine_kick(void);
/* Cancel a running job of this node: true if it was running here. */
bool engine_cancel(int64_t job);
/* SIGTERM: stop claiming, let steps finish, checkpoint.  done() runs when
 * no job is active any more. */
void engine_drain(void (*done)(void));
int engine_running(void);
/* How many of this node's running jobs (rolling back included) are of the
 * kind named kind; 0 for a kind this daemon does not know. */
int engine_running_kind(const char *kind);
void engine_close(void);

/* Append an event to a job's stream from the loop thread; subscribers are
 * told once it is durable.  data is msgpack (pre-encoded) or raw bytes. */
int engine_event(int64_t job, const char *stream, const void *data, size_t len);
/* Pack {state, error?, exit_code?} and append it as a "state" event. */
int engine_state_event(int64_t job, const char *state, const char *error, bool has_exit,
		       int exit_code);

/* Every failpoint name this binary's kinds and engine can hit, one per line,
 * into a callback. */
void engine_list_failpoints(void (*fn)(const char *name, void *arg), void *arg);

#endif
