/*
 * queue.h: the job queue, the op log and the event streams, behind one
 * interface that more than one backend implements (SQLite now; PostgreSQL for
 * fleets, where claim is SELECT ... FOR UPDATE SKIP LOCKED and wake-ups come
 * from LISTEN/NOTIFY).  The engine sees only this header.
 *
 * Threading and durability: a queue handle is used from one thread (bangerd's
 * loop thread), except ops->sync, which any one other thread may call
 * concurrently.  Writes are grouped: the first write opens a transaction;
 * ops->commit ends it (cheap, not yet durable) and returns its commit number;
 * ops->sync makes every commit up to the returned number durable (fsync).  A
 * caller that must not act before its writes are durable (reply to a submit,
 * run a step after its undo record) waits for sync to cover its commit.
 *
 * Fencing: every write about a running attempt names the job's epoch; when the
 * job's epoch has moved on (another claim), the write changes nothing and
 * returns BG_ERR_STALE.
 *
 * Strings and blobs in the q_* structs returned by reads are owned by the
 * struct; release them with q_job_release / q_step_release.
 */
#ifndef BANGER_QUEUE_H
#define BANGER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue;

/* Job states (docs/states.md). */
#define JS_QUEUED "queued"
#define JS_RUNNING "running"
#define JS_ROLLING_BACK "rolling_back"
#define JS_SUCCEEDED "succeeded"
#define JS_FAILED "failed"
#define JS_DEAD "dead"
#define JS_CANCELLED "cancelled"
#define JS_ROLLED_BACK "rolled_back"
#define JS_SKIPPED "skipped"
bool job_state_final(const char *state);

/* Step states in the op log. */
#define SS_BEGUN "begun"
#define SS_DONE "done"
#define SS_FAILED "failed"
#define SS_UNDOING "undoing"
#define SS_UNDONE "undone"
#define SS_UNDO_FAILED "undo_failed"

struct q_newjob {
	const char *name, *kind;
	const char *params;
	size_t params_len;
	int64_t priority;
	int max_attempts;
	int64_t timeout_us;
	int64_t run_after;
	int retry;
	bool when_always;
	const size_t *needs; /* indices of earlier jobs in the same submission */
	size_t nneeds;
};

struct q_submit {
	const char *name, *path, *key, *op;
	const char *spec;
	size_t spec_len;
	const struct q_newjob *jobs;
	size_t njobs;
	int64_t now;
};

struct q_job {
	int64_t id, submission;
	char *name, *kind, *state;
	char *params;
	size_t params_len;
	int64_t priority;
	int attempt, failures, max_attempts, crashes;
	bool attempt_open, when_always, cancel_requested;
	int retry;
	int64_t deps_pending;
	int64_t epoch, run_after, timeout_us, created, started, finished;
	char *lease_owner;
	int64_t lease_expires;
	bool has_exit;
	int exit_code;
	char *error;
	char *result;
	size_t result_len;
	char *key; /* the submission's idempotency key */
	char *rollback_reason; /* set with rolling_back (set_state) */
};
void q_job_release(struct q_job *j);

struct q_step {
	int attempt, seq;
	char *name, *state;
	char *undo, *result;
	size_t undo_len, result_len;
	char *error, *undo_error;
	int64_t started, finished, undo_started, undo_finished;
	int undo_runs;
};
void q_step_release(struct q_step *s);

struct q_attempt {
	int attempt;
	char *op, *node, *epochs, *outcome, *error;
	int64_t started, finished;
};
void q_attempt_release(struct q_attempt *a);

/* An image pulled by image.pull (schema/002_images.sql). */
struct q_image {
	char *digest, *rootfs, *config, *source;
	int64_t size, content, created, job;
	char *layers; /* msgpack array of layer digests */
	size_t layers_len;
	char **refs; /* the refs naming it (image_get/image_list only) */
	size_t nrefs;
};
void q_image_release(struct q_image *img);

/* VM states (schema/003_vms.sql). */
#define VS_CREATING "creating"
#define VS_RUNNING "running"
#define VS_STOPPED "stopped"
#define VS_DELETED "deleted"

/* A VM made by vm.create (schema/003_vms.sql); id = its vm.create job. */
struct q_vm {
	int64_t id;
	char *name, *state, *image, *rootfs, *kernel;
	int vcpus;
	int64_t memory; /* bytes */
	char *address, *tap, *overlay, *run_dir, *node, *error; /* address, tap, node,
								  * error may be NULL */
	int64_t pid; /* 0: none */
	int64_t created, deleted, created_by, deleted_by;
};
void q_vm_release(struct q_vm *vm);

struct q_claim_limit {
	const char *kind;
	int slots; /* > 0 */
};

/* How an attempt ends (ops->finish). */
struct q_finish {
	const char *state;   /* a final state, or JS_QUEUED to run again */
	const char *outcome; /* recorded on the attempt: succeeded, failed, cancelled,
				interrupted, drained, timed_out, ... */
	int64_t run_after;   /* for JS_QUEUED */
	bool count_failure;  /* counts against max_attempts */
	bool close_attempt;  /* false: the attempt resumes at the next claim */
	bool count_crash;    /* the attempt was cut by a crash: crashes += 1 */
	bool has_exit;
	int exit_code;
	const char *error;
	const char *result;
	size_t result_len;
	int64_t now;
};

struct q_list_filter {
	const char *state;
	int64_t submission; /* 0: any */
	int64_t after;      /* ids greater than this */
	int limit;
};

typedef int (*q_job_cb)(const struct q_job *j, void *arg);
typedef int (*q_event_cb)(int64_t job, int64_t seq, int64_t ts, const char *stream,
			  const void *data, size_t len, void *arg);

struct queue_ops {
	const char *name;
	void (*close)(struct queue *q);

	/* group commit */
	int (*commit)(struct queue *q, uint64_t *commit_no); /* 0 = nothing was open */
	int (*sync)(struct queue *q);                        /* any one thread */
	uint64_t (*committed)(struct queue *q);

	/* nodes */
	int (*node_start)(struct queue *q, const char *node, int pid, int64_t now,
			  bool *was_clean);
	int (*node_stop)(struct queue *q, const char *node, int64_t now);

	/* submit; *existing when key matched an earlier submission (job_ids
	 * then untouched) */
	int (*submit)(struct queue *q, const struct q_submit *s, int64_t *submission,
		      int64_t *job_ids, bool *existing);

	/* Claim up to max ready jobs of the given kinds (priority, run_after,
	 * id order), honouring each kind's slots.  Out: jobs (caller releases);
	 * each claim bumps the epoch, sets the lease and opens an attempt (or
	 * re-opens the one a drain left open).  op_fmt gets job id, attempt. */
	int (*claim)(struct queue *q, const char *node, int64_t now, int64_t lease_until,
		     const struct q_claim_limit *kinds, size_t nkinds, int max,
		     struct q_job *out, int *nout);
	/* Recovery: take back a job this node held before it restarted: bump
	 * its epoch (fencing out the previous process), renew the lease, add
	 * crashes to its consecutive-crash count.  BG_ERR_STALE when the job is
	 * no longer ours at old_epoch. */
	int (*reclaim)(struct queue *q, int64_t job, int64_t old_epoch, const char *node,
		       int64_t lease_until, int crashes, int64_t *new_epoch);
	/* Renew leases; lost[i] set when job i's epoch moved on. */
	int (*heartbeat)(struct queue *q, const char *node, int64_t lease_until,
			 const int64_t *ids, const int64_t *epochs, size_t n, bool *lost);
	/* Earliest run_after of a ready-but-delayed queued job, or 0. */
	int (*next_due)(struct queue *q, int64_t now, int64_t *when);

	/* the op log (fenced by epoch) */
	int (*step_begin)(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			  const char *name, const void *undo, size_t undo_len, int64_t now);
	int (*step_done)(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			 const void *result, size_t len, int64_t now);
	int (*step_failed)(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			   const char *error, int64_t now);
	int (*undo_begin)(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			  int64_t now);
	int (*undo_end)(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			const char *error /* NULL: undone */, int64_t now);
	int (*steps)(struct queue *q, int64_t job, int attempt /* 0: all */,
		     struct q_step **out, size_t *n);
	int (*attempts)(struct queue *q, int64_t job, struct q_attempt **out, size_t *n);

	/* job transitions */
	int (*set_state)(struct queue *q, int64_t job, int64_t epoch, const char *state,
			 const char *error, const char *rollback_reason);
	/* End the attempt (fenced); for a final state, release dependents:
	 * their deps_pending drops, or they are skipped when the job did not
	 * succeed and they are not `when: always`.  Skipped job ids are
	 * reported through skipped_cb so their streams get an event. */
	int (*finish)(struct queue *q, int64_t job, int64_t epoch, const struct q_finish *f,
		      void (*skipped_cb)(int64_t job, void *arg), void *arg);
	/* Queued job -> cancelled at once (BG_ERR_STATE when not queued). */
	int (*cancel_queued)(struct queue *q, int64_t job, int64_t now,
			     void (*skipped_cb)(int64_t job, void *arg), void *arg);
	int (*request_cancel)(struct queue *q, int64_t job);
	/* Final, not succeeded -> queued with a fresh attempt budget. */
	int (*retry)(struct queue *q, int64_t job, int64_t now);

	/* reads */
	int (*job_get)(struct queue *q, int64_t id, struct q_job *out);
	int (*job_list)(struct queue *q, const struct q_list_filter *f, q_job_cb cb, void *arg);
	int (*job_needs)(struct queue *q, int64_t id, int64_t **ids, size_t *n);
	/* Count of jobs per state: cb(state, count) for each state present. */
	int (*stats)(struct queue *q, void (*cb)(const char *state, int64_t n, void *arg),
		     void *arg);
	/* Jobs this node holds: running or rolling_back with lease_owner = node. */
	int (*held)(struct queue *q, const char *node, q_job_cb cb, void *arg);

	/* images: put inserts or replaces the image and points ref at it (ref
	 * may be NULL); get finds by ref or by digest (BG_ERR_NOENT); delete
	 * removes the row and its refs. */
	int (*image_put)(struct queue *q, const struct q_image *img, const char *ref, int64_t now);
	int (*image_get)(struct queue *q, const char *ref_or_digest, struct q_image *out);
	int (*image_list)(struct queue *q, int (*cb)(const struct q_image *img, void *arg),
			  void *arg);
	int (*image_delete)(struct queue *q, const char *digest);

	/* vms: put inserts the row (replacing one of the same id: a retried
	 * vm.create); BG_ERR_EXIST when a VM that is not deleted has the name
	 * or address.  get by id; find by name: the VM of that name that is not
	 * deleted, else the most recently deleted one (BG_ERR_NOENT).  list:
	 * every VM not deleted (all: deleted ones too), by id.  set_state: pid
	 * >= 0 replaces the pid; error (may be NULL) replaces the error; to
	 * VS_DELETED it also sets deleted = now and deleted_by = job (0: none).
	 * BG_ERR_NOENT when there is no such VM. */
	int (*vm_put)(struct queue *q, const struct q_vm *vm);
	int (*vm_get)(struct queue *q, int64_t id, struct q_vm *out);
	int (*vm_find)(struct queue *q, const char *name, struct q_vm *out);
	int (*vm_list)(struct queue *q, bool all, int (*cb)(const struct q_vm *vm, void *arg),
		       void *arg);
	int (*vm_set_state)(struct queue *q, int64_t id, const char *state, int64_t pid,
			    const char *error, int64_t job, int64_t now);

	/* events: seq assigned as the job's next; *seq_out may be NULL */
	int (*event_append)(struct queue *q, int64_t job, int64_t ts, const char *stream,
			    const void *data, size_t len, int64_t *seq_out);
	int (*events_read)(struct queue *q, int64_t job, int64_t from_seq, int limit,
			   q_event_cb cb, void *arg);
};

struct queue {
	const struct queue_ops *ops;
	char errmsg[512]; /* detail of the last failure, for messages */
};

/* Open the backend named by db: "sqlite" or a path ending in .db (SQLite,
 * default STATE_DIR/queue.db) or postgresql:// (not yet built: BG_ERR_UNSUPPORTED).
 * Applies migrations; refuses a database newer than this binary
 * (BG_ERR_SCHEMA) with the detail in *errmsg (caller frees). */
int queue_open(const char *db, const char *state_dir, struct queue **out, char **errmsg);

/* SQLite backend entry point. */
int queue_sqlite_open(const char *path, struct queue **out, char **errmsg);

/* Highest schema version this binary knows. */
int queue_schema_version(void);

#endif
