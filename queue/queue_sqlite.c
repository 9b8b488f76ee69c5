/*
 * queue_sqlite.c: the SQLite backend of the queue (queue.h), for one host.
 *
 * DURABILITY.  The database runs in WAL mode with synchronous=NORMAL, so a
 * COMMIT only appends frames to the -wal file (no fsync) and returns in
 * microseconds on the loop thread.  Durability comes from ops->sync, which
 * fdatasync()s the -wal file from the daemon's syncer thread: every commit made
 * before the sync started is then on disk.  Callers wait for the sync covering
 * their commit before acting (group commit: one fsync serves every commit that
 * arrived meanwhile).  Checkpoints are also run by the syncer thread, on a
 * connection of its own, so the loop never waits for one.
 *
 * THREADS.  Everything but sync runs on the thread that opened the queue (the
 * loop thread).  sync touches only the -wal file descriptor, the checkpoint
 * connection and an atomic page counter.
 *
 * Every prepared statement is reset right after use, so the loop connection
 * never holds a read transaction open between calls (that would stall
 * checkpoints).
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "migrations.h"
#include "queue.h"
#include "util.h"

#define CHECKPOINT_PAGES 8192

enum stmt_id {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_SUB_BY_KEY,
	S_SUB_INSERT,
	S_JOB_INSERT,
	S_NEED_INSERT,
	S_DEPENDENT_ADD,
	S_PROMOTE,
	S_READY,
	S_CLAIM,
	S_ATTEMPT_INSERT,
	S_ATTEMPT_EPOCH,
	S_HEARTBEAT,
	S_RECLAIM,
	S_NEXT_DUE,
	S_STEP_BEGIN,
	S_STEP_DONE,
	S_STEP_FAILED,
	S_UNDO_BEGIN,
	S_UNDO_END,
	S_STEPS,
	S_STEPS_ALL,
	S_ATTEMPTS,
	S_SET_STATE,
	S_FINISH,
	S_ATTEMPT_CLOSE,
	S_DEPENDENTS,
	S_DEP_RELEASE,
	S_SKIP,
	S_CANCEL_QUEUED,
	S_REQUEST_CANCEL,
	S_RETRY,
	S_JOB_GET,
	S_JOB_LIST,
	S_JOB_NEEDS,
	S_HELD,
	S_STATS,
	S_EVENT_APPEND,
	S_EVENT_MAX,
	S_EVENTS_READ,
	S_IMAGE_PUT,
	S_IMAGE_REF_PUT,
	S_IMAGE_BY_DIGEST,
	S_IMAGE_BY_REF,
	S_IMAGE_LIST,
	S_IMAGE_REFS,
	S_IMAGE_DELETE,
	S_IMAGE_REFS_DELETE,
	S_VM_PUT,
	S_VM_GET,
	S_VM_FIND,
	S_VM_LIST,
	S_VM_LIST_ALL,
	S_VM_SET_STATE,
	S_NODE_GET,
	S_NODE_UPSERT,
	S_NODE_STOP,
	S_COUNT
};

#define FENCE "EXISTS(SELECT 1 FROM jobs WHERE id = ?1 AND epoch = ?2)"
#define JOB_COLS                                                                                  \
	"j.id, j.submission, j.name, j.kind, j.state, j.params, j.priority, j.attempt, "          \
	"j.failures, j.max_attempts, j.crashes, j.attempt_open, j.when_always, "                  \
	"j.cancel_requested, j.retry, j.deps_pending, j.epoch, j.run_after, j.timeout, "          \
	"j.created, j.started, j.finished, j.lease_owner, j.lease_expires, j.exit_code, "         \
	"j.error, j.result, s.idem_key, j.rollback_reason"
#define JOB_FROM " FROM jobs j JOIN submissions s ON s.id = j.submission "
#define IMAGE_COLS "digest, rootfs, size, content, config, layers, source, created, job"
#define VM_COLS                                                                                  \
	"id, name, state, image, rootfs, kernel, vcpus, memory, address, tap, overlay, run_dir, " \
	"pid, node, error, created, deleted, created_by, deleted_by"
/* the same columns from a RETURNING clause (no join: the key reads NULL) */
#define JOB_COLS_ROW                                                                              \
	"id, submission, name, kind, state, params, priority, attempt, failures, max_attempts, "  \
	"crashes, attempt_open, when_always, cancel_requested, retry, deps_pending, epoch, "      \
	"run_after, timeout, created, started, finished, lease_owner, lease_expires, exit_code, " \
	"error, result, NULL, rollback_reason"

static const char *const sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SUB_BY_KEY] = "SELECT id FROM submissions WHERE idem_key = ?1 AND idem_key IS NOT NULL",
	[S_SUB_INSERT] = "INSERT INTO submissions(name, path, idem_key, op, spec, created) "
			 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_JOB_INSERT] = "INSERT INTO jobs(submission, name, kind, params, state, priority, "
			 "max_attempts, run_after, delayed, timeout, retry, when_always, deps_pending, "
			 "created) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?7 > ?12, ?8, ?9, ?10, "
			 "?11, ?12)",
	[S_NEED_INSERT] = "INSERT OR IGNORE INTO job_needs(job, needs) VALUES (?1, ?2)",
	[S_DEPENDENT_ADD] = "UPDATE jobs SET dependents = dependents + 1 WHERE id = ?1",
	[S_PROMOTE] = "UPDATE jobs INDEXED BY jobs_due SET delayed = 0 "
		      "WHERE state = 'queued' AND delayed = 1 AND run_after <= ?1",
	[S_READY] = "SELECT id, kind, attempt_open FROM jobs INDEXED BY jobs_ready "
		    "WHERE state = 'queued' AND deps_pending = 0 AND delayed = 0 "
		    "ORDER BY priority DESC, id",
	[S_CLAIM] = "UPDATE jobs SET state = 'running', epoch = epoch + 1, lease_owner = ?2, "
		    "lease_expires = ?3, started = COALESCE(started, ?4), "
		    "attempt = CASE WHEN attempt_open THEN attempt ELSE attempt + 1 END, "
		    "attempt_open = 1, cancel_requested = 0 "
		    "WHERE id = ?1 AND state = 'queued' RETURNING " JOB_COLS_ROW,
	[S_ATTEMPT_INSERT] = "INSERT OR REPLACE INTO attempts(job, attempt, op, node, epochs, started) "
			     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_ATTEMPT_EPOCH] = "UPDATE attempts SET epochs = epochs || ',' || ?3, node = ?4 "
			    "WHERE job = ?1 AND attempt = ?2",
	[S_HEARTBEAT] = "UPDATE jobs SET lease_expires = ?3 "
			"WHERE id = ?1 AND epoch = ?2 AND lease_owner = ?4",
	[S_RECLAIM] = "UPDATE jobs SET epoch = epoch + 1, lease_expires = ?4, crashes = crashes + ?5 "
		      "WHERE id = ?1 AND epoch = ?2 AND lease_owner = ?3 RETURNING epoch, attempt",
	[S_NEXT_DUE] = "SELECT MIN(run_after) FROM jobs INDEXED BY jobs_due "
		       "WHERE state = 'queued' AND delayed = 1",
	[S_STEP_BEGIN] = "INSERT INTO steps(job, attempt, seq, name, state, undo, started) "
			 "SELECT ?1, ?3, ?4, ?5, 'begun', ?6, ?7 WHERE " FENCE " "
			 "ON CONFLICT(job, attempt, seq) DO UPDATE SET state = 'begun', "
			 "undo = excluded.undo, started = excluded.started, finished = NULL, "
			 "error = NULL",
	[S_STEP_DONE] = "UPDATE steps SET state = 'done', result = ?5, finished = ?6 "
			"WHERE job = ?1 AND attempt = ?3 AND seq = ?4 AND " FENCE,
	[S_STEP_FAILED] = "UPDATE steps SET state = 'failed', error = ?5, finished = ?6 "
			  "WHERE job = ?1 AND attempt = ?3 AND seq = ?4 AND " FENCE,
	[S_UNDO_BEGIN] = "UPDATE steps SET state = 'undoing', undo_started = COALESCE(undo_started, ?5), "
			 "undo_runs = undo_runs + 1 "
			 "WHERE job = ?1 AND attempt = ?3 AND seq = ?4 AND " FENCE,
	[S_UNDO_END] = "UPDATE steps SET state = CASE WHEN ?5 IS NULL THEN 'undone' ELSE 'undo_failed' END, "
		       "undo_error = ?5, undo_finished = ?6 "
		       "WHERE job = ?1 AND attempt = ?3 AND seq = ?4 AND " FENCE,
	[S_STEPS] = "SELECT attempt, seq, name, state, undo, result, error, started, finished, "
		    "undo_started, undo_finished, undo_error, undo_runs FROM steps "
		    "WHERE job = ?1 AND attempt = ?2 ORDER BY attempt, seq",
	[S_STEPS_ALL] = "SELECT attempt, seq, name, state, undo, result, error, started, finished, "
			"undo_started, undo_finished, undo_error, undo_runs FROM steps "
			"WHERE job = ?1 ORDER BY attempt, seq",
	[S_ATTEMPTS] = "SELECT attempt, op, node, epochs, started, finished, outcome, error "
		       "FROM attempts WHERE job = ?1 ORDER BY attempt",
	[S_SET_STATE] = "UPDATE jobs SET state = ?3, error = COALESCE(?4, error), "
			"rollback_reason = ?5 WHERE id = ?1 AND epoch = ?2",
	[S_FINISH] = "UPDATE jobs SET state = ?3, lease_owner = NULL, lease_expires = NULL, "
		     "run_after = CASE WHEN ?3 = 'queued' THEN ?4 ELSE run_after END, "
		     "delayed = (?3 = 'queued' AND ?4 > ?11), "
		     "failures = failures + ?5, "
		     "crashes = CASE WHEN ?6 THEN crashes + 1 ELSE 0 END, "
		     "attempt_open = ?7, exit_code = ?8, error = ?9, result = ?10, rollback_reason = NULL, "
		     "finished = CASE WHEN ?3 = 'queued' THEN NULL ELSE ?11 END "
		     "WHERE id = ?1 AND epoch = ?2 RETURNING attempt, dependents",
	[S_ATTEMPT_CLOSE] = "UPDATE attempts SET finished = ?3, outcome = ?4, error = ?5 "
			    "WHERE job = ?1 AND attempt = ?2",
	[S_DEPENDENTS] = "SELECT j.id, j.when_always, j.state, j.name FROM job_needs n "
			 "JOIN jobs j ON j.id = n.job WHERE n.needs = ?1",
	[S_DEP_RELEASE] = "UPDATE jobs SET deps_pending = deps_pending - 1 "
			  "WHERE id = ?1 AND deps_pending > 0",
	[S_SKIP] = "UPDATE jobs SET state = 'skipped', error = ?2, finished = ?3 "
		   "WHERE id = ?1 AND state = 'queued'",
	[S_CANCEL_QUEUED] = "UPDATE jobs SET state = 'cancelled', error = 'cancelled while queued', "
			    "finished = ?2 WHERE id = ?1 AND state = 'queued'",
	[S_REQUEST_CANCEL] = "UPDATE jobs SET cancel_requested = 1 "
			     "WHERE id = ?1 AND state IN ('running', 'rolling_back')",
	[S_RETRY] = "UPDATE jobs SET state = 'queued', failures = 0, crashes = 0, attempt_open = 0, "
		    "run_after = ?2, delayed = 0, error = NULL, exit_code = NULL, result = NULL, finished = NULL, "
		    "deps_pending = (SELECT COUNT(*) FROM job_needs n JOIN jobs d ON d.id = n.needs "
		    "  WHERE n.job = ?1 AND d.state NOT IN "
		    "  ('succeeded','failed','dead','cancelled','rolled_back','skipped')) "
		    "WHERE id = ?1 AND state IN ('failed','dead','cancelled','rolled_back','skipped')",
	[S_JOB_GET] = "SELECT " JOB_COLS JOB_FROM "WHERE j.id = ?1",
	[S_JOB_LIST] = "SELECT " JOB_COLS JOB_FROM
		       "WHERE (?1 IS NULL OR j.state = ?1) AND (?2 = 0 OR j.submission = ?2) "
		       "AND j.id > ?3 ORDER BY j.id LIMIT ?4",
	[S_JOB_NEEDS] = "SELECT needs FROM job_needs WHERE job = ?1 ORDER BY needs",
	[S_HELD] = "SELECT " JOB_COLS JOB_FROM
		   "WHERE j.lease_owner = ?1 AND j.state IN ('running', 'rolling_back') ORDER BY j.id",
	[S_STATS] = "SELECT state, COUNT(*) FROM jobs GROUP BY state",
	[S_EVENT_APPEND] = "INSERT INTO events(job, seq, ts, stream, data) VALUES (?1, ?5, ?2, ?3, ?4)",
	[S_EVENT_MAX] = "SELECT MAX(seq) FROM events WHERE job = ?1",
	[S_EVENTS_READ] = "SELECT seq, ts, stream, data FROM events WHERE job = ?1 AND seq >= ?2 "
			  "ORDER BY seq LIMIT ?3",
	[S_IMAGE_PUT] = "INSERT OR REPLACE INTO images(digest, rootfs, size, content, config, layers, "
			"source, created, job) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[S_IMAGE_REF_PUT] = "INSERT OR REPLACE INTO image_refs(ref, digest, updated) VALUES (?1, ?2, ?3)",
	[S_IMAGE_BY_DIGEST] = "SELECT " IMAGE_COLS " FROM images WHERE digest = ?1",
	[S_IMAGE_BY_REF] = "SELECT " IMAGE_COLS " FROM images "
			   "WHERE digest = (SELECT digest FROM image_refs WHERE ref = ?1)",
	[S_IMAGE_LIST] = "SELECT " IMAGE_COLS " FROM images ORDER BY created",
	[S_IMAGE_REFS] = "SELECT ref FROM image_refs WHERE digest = ?1 ORDER BY ref",
	[S_IMAGE_DELETE] = "DELETE FROM images WHERE digest = ?1",
	[S_IMAGE_REFS_DELETE] = "DELETE FROM image_refs WHERE digest = ?1",
	/* an upsert on id only: a clash on a live name or address stays an error */
	[S_VM_PUT] = "INSERT INTO vms(" VM_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
		     "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) "
		     "ON CONFLICT(id) DO UPDATE SET name = ?2, state = ?3, image = ?4, rootfs = ?5, "
		     "kernel = ?6, vcpus = ?7, memory = ?8, address = ?9, tap = ?10, overlay = ?11, "
		     "run_dir = ?12, pid = ?13, node = ?14, error = ?15, created = ?16, "
		     "deleted = ?17, created_by = ?18, deleted_by = ?19",
	[S_VM_GET] = "SELECT " VM_COLS " FROM vms WHERE id = ?1",
	[S_VM_FIND] = "SELECT " VM_COLS " FROM vms WHERE name = ?1 "
		      "ORDER BY state = 'deleted', deleted DESC, id DESC LIMIT 1",
	[S_VM_LIST] = "SELECT " VM_COLS " FROM vms WHERE state != 'deleted' ORDER BY id",
	[S_VM_LIST_ALL] = "SELECT " VM_COLS " FROM vms ORDER BY id",
	[S_VM_SET_STATE] = "UPDATE vms SET state = ?2, pid = CASE WHEN ?3 >= 0 THEN ?3 ELSE pid END, "
			   "error = ?4, "
			   "deleted = CASE WHEN ?2 = 'deleted' THEN COALESCE(deleted, ?6) ELSE deleted END, "
			   "deleted_by = CASE WHEN ?2 = 'deleted' AND ?5 > 0 THEN ?5 ELSE deleted_by END "
			   "WHERE id = ?1",
	[S_NODE_GET] = "SELECT clean_stop FROM nodes WHERE id = ?1",
	[S_NODE_UPSERT] = "INSERT INTO nodes(id, pid, started, heartbeat, clean_stop) "
			  "VALUES (?1, ?2, ?3, ?3, 0) ON CONFLICT(id) DO UPDATE SET pid = ?2, "
			  "started = ?3, heartbeat = ?3, clean_stop = 0",
	[S_NODE_STOP] = "UPDATE nodes SET clean_stop = 1, heartbeat = ?2 WHERE id = ?1",
};

struct sq {
	struct queue base;
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	char *path;
	bool in_txn;
	uint64_t commit_no;
	/* syncer-thread state */
	int wal_fd;
	sqlite3 *ckpt_db;
	atomic_int wal_pages;
	/* next event seq per job (see next_seq) */
	int64_t *seq_keys, *seq_vals;
	size_t seq_cap, seq_n;
};

#define SQ(q) ((struct sq *)(q))

static void seq_cache_clear(struct sq *s);

static int map_rc(struct sq *s, int rc)
{
	snprintf(s->base.errmsg, sizeof(s->base.errmsg), "%s", sqlite3_errmsg(s->db));
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_FULL:
		return BG_ERR_NOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return BG_ERR_BUSY;
	case SQLITE_NOMEM:
		return BG_ERR_NOMEM;
	case SQLITE_IOERR:
		return BG_ERR_IO;
	case SQLITE_CONSTRAINT:
		return BG_ERR_EXIST;
	default:
		return BG_ERR_DB;
	}
}

static sqlite3_stmt *stmt(struct sq *s, enum stmt_id id)
{
	return s->st[id];
}

/* Run a statement that returns no rows, then reset it. */
static int exec_stmt(struct sq *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	int out = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : map_rc(s, rc);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return out;
}

static void done_stmt(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static void bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	if (p && n)
		sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? xstrdup((const char *)t) : NULL;
}

static char *col_blob(sqlite3_stmt *st, int i, size_t *len)
{
	const void *p = sqlite3_column_blob(st, i);
	int n = sqlite3_column_bytes(st, i);
	*len = 0;
	if (!p || n <= 0)
		return NULL;
	char *c = xmalloc((size_t)n);
	memcpy(c, p, (size_t)n);
	*len = (size_t)n;
	return c;
}

/* Open the write transaction of the current group if none is open. */
static int write_begin(struct sq *s)
{
	if (s->in_txn)
		return 0;
	int rc = exec_stmt(s, stmt(s, S_BEGIN));
	if (rc == 0)
		s->in_txn = true;
	return rc;
}

/* ---- group commit ------------------------------------------------------ */

static int sq_commit(struct queue *q, uint64_t *commit_no)
{
	struct sq *s = SQ(q);
	if (!s->in_txn) {
		*commit_no = s->commit_no;
		return 0;
	}
	int rc = sqlite3_step(stmt(s, S_COMMIT));
	sqlite3_reset(stmt(s, S_COMMIT));
	if (rc != SQLITE_DONE) {
		int e = map_rc(s, rc);
		/* The whole group is lost: roll back so the database holds
		 * exactly what was committed before. */
		if (!sqlite3_get_autocommit(s->db)) {
			sqlite3_step(stmt(s, S_ROLLBACK));
			sqlite3_reset(stmt(s, S_ROLLBACK));
		}
		seq_cache_clear(s);
		s->in_txn = false;
		return e;
	}
	s->in_txn = false;
	*commit_no = ++s->commit_no;
	return 0;
}

static uint64_t sq_committed(struct queue *q)
{
	return SQ(q)->commit_no;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sq *s = arg;
	atomic_store(&s->wal_pages, pages);
	return SQLITE_OK;
}

static int sq_sync(struct queue *q)
{
	struct sq *s = SQ(q);
	if (s->wal_fd < 0) {
		char *wal = xasprintf("%s-wal", s->path);
		s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
		free(wal);
		if (s->wal_fd < 0)
			return bg_errno(errno);
	}
	if (fdatasync(s->wal_fd) < 0)
		return bg_errno(errno);
	if (atomic_load(&s->wal_pages) >= CHECKPOINT_PAGES) {
		if (!s->ckpt_db &&
		    sqlite3_open_v2(s->path, &s->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
				    NULL) == SQLITE_OK)
			sqlite3_busy_timeout(s->ckpt_db, 100);
		if (s->ckpt_db) {
			int log = 0, done = 0;
			sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
						  &done);
			if (log == done)
				atomic_store(&s->wal_pages, 0);
		}
	}
	return 0;
}

/* ---- nodes ------------------------------------------------------------- */

static int sq_node_start(struct queue *q, const char *node, int pid, int64_t now, bool *was_clean)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_NODE_GET);
	bind_text(st, 1, node);
	*was_clean = true;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*was_clean = sqlite3_column_int(st, 0) != 0;
	done_stmt(st);
	if ((rc = write_begin(s)))
		return rc;
	st = stmt(s, S_NODE_UPSERT);
	bind_text(st, 1, node);
	sqlite3_bind_int(st, 2, pid);
	sqlite3_bind_int64(st, 3, now);
	return exec_stmt(s, st);
}

static int sq_node_stop(struct queue *q, const char *node, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_NODE_STOP);
	bind_text(st, 1, node);
	sqlite3_bind_int64(st, 2, now);
	return exec_stmt(s, st);
}

/* ---- submit ------------------------------------------------------------ */

static int sq_submit(struct queue *q, const struct q_submit *sub, int64_t *submission,
		     int64_t *job_ids, bool *existing)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st;
	int rc;

	*existing = false;
	if (sub->key) {
		st = stmt(s, S_SUB_BY_KEY);
		bind_text(st, 1, sub->key);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*submission = sqlite3_column_int64(st, 0);
			*existing = true;
		}
		done_stmt(st);
		if (*existing)
			return 0;
	}
	if ((rc = write_begin(s)))
		return rc;
	/* A submission is all or nothing: a savepoint inside the group's
	 * transaction undoes a half-inserted one without touching the rest. */
	sqlite3_exec(s->db, "SAVEPOINT submit", NULL, NULL, NULL);
	st = stmt(s, S_SUB_INSERT);
	bind_text(st, 1, sub->name);
	bind_text(st, 2, sub->path);
	bind_text(st, 3, sub->key);
	bind_text(st, 4, sub->op);
	if (sub->spec)
		sqlite3_bind_text64(st, 5, sub->spec, sub->spec_len, SQLITE_STATIC, SQLITE_UTF8);
	sqlite3_bind_int64(st, 6, sub->now);
	if ((rc = exec_stmt(s, st)))
		goto fail;
	*submission = sqlite3_last_insert_rowid(s->db);

	for (size_t i = 0; i < sub->njobs; i++) {
		const struct q_newjob *j = &sub->jobs[i];
		st = stmt(s, S_JOB_INSERT);
		sqlite3_bind_int64(st, 1, *submission);
		bind_text(st, 2, j->name);
		bind_text(st, 3, j->kind);
		bind_blob(st, 4, j->params, j->params_len);
		sqlite3_bind_int64(st, 5, j->priority);
		sqlite3_bind_int(st, 6, j->max_attempts);
		sqlite3_bind_int64(st, 7, j->run_after);
		sqlite3_bind_int64(st, 8, j->timeout_us);
		sqlite3_bind_int(st, 9, j->retry);
		sqlite3_bind_int(st, 10, j->when_always);
		sqlite3_bind_int64(st, 11, (int64_t)j->nneeds);
		sqlite3_bind_int64(st, 12, sub->now);
		if ((rc = exec_stmt(s, st)))
			goto fail;
		job_ids[i] = sqlite3_last_insert_rowid(s->db);
		for (size_t k = 0; k < j->nneeds; k++) {
			if (j->needs[k] >= i) {
				rc = BG_ERR_INVAL;
				snprintf(s->base.errmsg, sizeof(s->base.errmsg),
					 "job '%s' needs a job that is not before it", j->name);
				goto fail;
			}
			st = stmt(s, S_NEED_INSERT);
			sqlite3_bind_int64(st, 1, job_ids[i]);
			sqlite3_bind_int64(st, 2, job_ids[j->needs[k]]);
			if ((rc = exec_stmt(s, st)))
				goto fail;
			st = stmt(s, S_DEPENDENT_ADD);
			sqlite3_bind_int64(st, 1, job_ids[j->needs[k]]);
			if ((rc = exec_stmt(s, st)))
				goto fail;
		}
	}
	sqlite3_exec(s->db, "RELEASE submit", NULL, NULL, NULL);
	return 0;
fail:
	sqlite3_exec(s->db, "ROLLBACK TO submit; RELEASE submit", NULL, NULL, NULL);
	return rc;
}

/* ---- reading rows ------------------------------------------------------ */

static void read_job(sqlite3_stmt *st, struct q_job *j)
{
	memset(j, 0, sizeof(*j));
	j->id = sqlite3_column_int64(st, 0);
	j->submission = sqlite3_column_int64(st, 1);
	j->name = col_text(st, 2);
	j->kind = col_text(st, 3);
	j->state = col_text(st, 4);
	j->params = col_blob(st, 5, &j->params_len);
	j->priority = sqlite3_column_int64(st, 6);
	j->attempt = sqlite3_column_int(st, 7);
	j->failures = sqlite3_column_int(st, 8);
	j->max_attempts = sqlite3_column_int(st, 9);
	j->crashes = sqlite3_column_int(st, 10);
	j->attempt_open = sqlite3_column_int(st, 11) != 0;
	j->when_always = sqlite3_column_int(st, 12) != 0;
	j->cancel_requested = sqlite3_column_int(st, 13) != 0;
	j->retry = sqlite3_column_int(st, 14);
	j->deps_pending = sqlite3_column_int64(st, 15);
	j->epoch = sqlite3_column_int64(st, 16);
	j->run_after = sqlite3_column_int64(st, 17);
	j->timeout_us = sqlite3_column_int64(st, 18);
	j->created = sqlite3_column_int64(st, 19);
	j->started = sqlite3_column_int64(st, 20);
	j->finished = sqlite3_column_int64(st, 21);
	j->lease_owner = col_text(st, 22);
	j->lease_expires = sqlite3_column_int64(st, 23);
	j->has_exit = sqlite3_column_type(st, 24) != SQLITE_NULL;
	j->exit_code = sqlite3_column_int(st, 24);
	j->error = col_text(st, 25);
	j->result = col_blob(st, 26, &j->result_len);
	j->key = col_text(st, 27);
	j->rollback_reason = col_text(st, 28);
}

static int sq_job_get(struct queue *q, int64_t id, struct q_job *out)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_JOB_GET);
	sqlite3_bind_int64(st, 1, id);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		read_job(st, out);
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		snprintf(s->base.errmsg, sizeof(s->base.errmsg), "no job %lld", (long long)id);
		rc = BG_ERR_NOENT;
	} else {
		rc = map_rc(s, rc);
	}
	done_stmt(st);
	return rc;
}

/* Step st through its rows, calling row(st, arg) for each; stop at the first
 * nonzero return and give it back.  A failed step is mapped to BG_ERR_*;
 * st is reset either way. */
static int each_row(struct sq *s, sqlite3_stmt *st, int (*row)(sqlite3_stmt *st, void *arg),
		    void *arg)
{
	int rc, out = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if ((out = row(st, arg)))
			break;
	if (!out && rc != SQLITE_DONE && rc != SQLITE_ROW)
		out = map_rc(s, rc);
	done_stmt(st);
	return out;
}

struct job_rows {
	q_job_cb cb;
	void *arg;
};

static int job_row(sqlite3_stmt *st, void *arg)
{
	struct job_rows *jr = arg;
	struct q_job j;
	read_job(st, &j);
	int out = jr->cb(&j, jr->arg);
	q_job_release(&j);
	return out;
}

static int each_job(struct sq *s, sqlite3_stmt *st, q_job_cb cb, void *arg)
{
	struct job_rows jr = {cb, arg};
	return each_row(s, st, job_row, &jr);
}

static int sq_job_list(struct queue *q, const struct q_list_filter *f, q_job_cb cb, void *arg)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_JOB_LIST);
	bind_text(st, 1, f->state);
	sqlite3_bind_int64(st, 2, f->submission);
	sqlite3_bind_int64(st, 3, f->after);
	sqlite3_bind_int(st, 4, f->limit > 0 ? f->limit : 100);
	return each_job(s, st, cb, arg);
}

static int sq_held(struct queue *q, const char *node, q_job_cb cb, void *arg)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_HELD);
	bind_text(st, 1, node);
	return each_job(s, st, cb, arg);
}

static int sq_stats(struct queue *q, void (*cb)(const char *, int64_t, void *), void *arg)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_STATS);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), arg);
	rc = rc == SQLITE_DONE ? 0 : map_rc(s, rc);
	done_stmt(st);
	return rc;
}

static int sq_job_needs(struct queue *q, int64_t id, int64_t **ids, size_t *n)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_JOB_NEEDS);
	size_t cap = 0;
	*ids = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, id);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			*ids = xrealloc(*ids, cap * sizeof(**ids));
		}
		(*ids)[(*n)++] = sqlite3_column_int64(st, 0);
	}
	done_stmt(st);
	return 0;
}

/* ---- claim and leases -------------------------------------------------- */

static int sq_claim(struct queue *q, const char *node, int64_t now, int64_t lease_until,
		    const struct q_claim_limit *kinds, size_t nkinds, int max, struct q_job *out,
		    int *nout)
{
	struct sq *s = SQ(q);
	int slots[64];
	int64_t ids[256];
	bool reopen[256];
	int n = 0, rc, left = 0;

	*nout = 0;
	if (max > (int)ARRAY_LEN(ids))
		max = (int)ARRAY_LEN(ids);
	if (nkinds > ARRAY_LEN(slots))
		nkinds = ARRAY_LEN(slots);
	for (size_t k = 0; k < nkinds; k++)
		left += slots[k] = kinds[k].slots;

	/* Delayed jobs whose time has come join the ready index first. */
	sqlite3_stmt *st = stmt(s, S_NEXT_DUE);
	int64_t due = 0;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		due = sqlite3_column_int64(st, 0);
	done_stmt(st);
	if (due && due <= now) {
		if ((rc = write_begin(s)))
			return rc;
		st = stmt(s, S_PROMOTE);
		sqlite3_bind_int64(st, 1, now);
		if ((rc = exec_stmt(s, st)))
			return rc;
	}

	/* Ready jobs in claim order; a kind without slots is passed over.  The
	 * scan stops after a bounded number of rows, so a deep queue of one
	 * kind at its limit costs a claim little. */
	int scanned = 0, scan_max = 4 * max + 1024;
	st = stmt(s, S_READY);
	while (n < max && left > 0 && scanned++ < scan_max &&
	       (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *kind = (const char *)sqlite3_column_text(st, 1);
		for (size_t k = 0; k < nkinds; k++) {
			if (slots[k] > 0 && kind && strcmp(kind, kinds[k].kind) == 0) {
				slots[k]--;
				left--;
				reopen[n] = sqlite3_column_int(st, 2) != 0;
				ids[n++] = sqlite3_column_int64(st, 0);
				break;
			}
		}
	}
	done_stmt(st);
	if (n == 0)
		return 0;
	if ((rc = write_begin(s)))
		return rc;
	for (int i = 0; i < n; i++) {
		st = stmt(s, S_CLAIM);
		sqlite3_bind_int64(st, 1, ids[i]);
		bind_text(st, 2, node);
		sqlite3_bind_int64(st, 3, lease_until);
		sqlite3_bind_int64(st, 4, now);
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			rc = rc == SQLITE_DONE ? 0 : map_rc(s, rc);
			done_stmt(st);
			if (rc)
				return rc;
			continue;
		}
		struct q_job *j = &out[*nout];
		read_job(st, j);
		done_stmt(st);

		/* bound SQLITE_STATIC: both must live until the statement ran */
		char ep[24], op[64];
		snprintf(ep, sizeof(ep), "%lld", (long long)j->epoch);
		if (reopen[i]) {
			/* a re-claimed open attempt (after a drain) adds its epoch */
			st = stmt(s, S_ATTEMPT_EPOCH);
			sqlite3_bind_int64(st, 1, ids[i]);
			sqlite3_bind_int(st, 2, j->attempt);
			bind_text(st, 3, ep);
			bind_text(st, 4, node);
		} else {
			snprintf(op, sizeof(op), "job-%lld-%d", (long long)ids[i], j->attempt);
			st = stmt(s, S_ATTEMPT_INSERT);
			sqlite3_bind_int64(st, 1, ids[i]);
			sqlite3_bind_int(st, 2, j->attempt);
			bind_text(st, 3, op);
			bind_text(st, 4, node);
			bind_text(st, 5, ep);
			sqlite3_bind_int64(st, 6, now);
		}
		if ((rc = exec_stmt(s, st))) {
			q_job_release(j);
			return rc;
		}
		(*nout)++;
	}
	return 0;
}

static int sq_heartbeat(struct queue *q, const char *node, int64_t lease_until, const int64_t *ids,
			const int64_t *epochs, size_t n, bool *lost)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *st = stmt(s, S_HEARTBEAT);
		sqlite3_bind_int64(st, 1, ids[i]);
		sqlite3_bind_int64(st, 2, epochs[i]);
		sqlite3_bind_int64(st, 3, lease_until);
		bind_text(st, 4, node);
		if ((rc = exec_stmt(s, st)))
			return rc;
		lost[i] = sqlite3_changes(s->db) == 0;
	}
	return 0;
}

static int sq_reclaim(struct queue *q, int64_t job, int64_t old_epoch, const char *node,
		      int64_t lease_until, int crashes, int64_t *new_epoch)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_RECLAIM);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, old_epoch);
	bind_text(st, 3, node);
	sqlite3_bind_int64(st, 4, lease_until);
	sqlite3_bind_int(st, 5, crashes);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = rc == SQLITE_DONE ? BG_ERR_STALE : map_rc(s, rc);
		done_stmt(st);
		return rc;
	}
	*new_epoch = sqlite3_column_int64(st, 0);
	int attempt = sqlite3_column_int(st, 1);
	done_stmt(st);
	char ep[24];
	snprintf(ep, sizeof(ep), "%lld", (long long)*new_epoch);
	st = stmt(s, S_ATTEMPT_EPOCH);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int(st, 2, attempt);
	bind_text(st, 3, ep);
	bind_text(st, 4, node);
	return exec_stmt(s, st);
}

static int sq_next_due(struct queue *q, int64_t now, int64_t *when)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_NEXT_DUE);
	*when = 0;
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		*when = sqlite3_column_int64(st, 0);
	done_stmt(st);
	if (*when && *when <= now)
		*when = now; /* due already: the next claim promotes it */
	return 0;
}

/* ---- op log -------------------------------------------------------------- */

/* Bind the (job, epoch, attempt, seq) prefix every fenced step write shares. */
static sqlite3_stmt *step_stmt(struct sq *s, enum stmt_id id, int64_t job, int64_t epoch,
			       int attempt, int seq)
{
	sqlite3_stmt *st = stmt(s, id);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, epoch);
	sqlite3_bind_int(st, 3, attempt);
	sqlite3_bind_int(st, 4, seq);
	return st;
}

static int fenced(struct sq *s, sqlite3_stmt *st)
{
	int rc = exec_stmt(s, st);
	if (rc == 0 && sqlite3_changes(s->db) == 0) {
		snprintf(s->base.errmsg, sizeof(s->base.errmsg),
			 "write refused: the job was claimed again (stale epoch)");
		return BG_ERR_STALE;
	}
	return rc;
}

static int sq_step_begin(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			 const char *name, const void *undo, size_t undo_len, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = step_stmt(s, S_STEP_BEGIN, job, epoch, attempt, seq);
	bind_text(st, 5, name);
	bind_blob(st, 6, undo, undo_len);
	sqlite3_bind_int64(st, 7, now);
	return fenced(s, st);
}

static int sq_step_done(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			const void *result, size_t len, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = step_stmt(s, S_STEP_DONE, job, epoch, attempt, seq);
	bind_blob(st, 5, result, len);
	sqlite3_bind_int64(st, 6, now);
	return fenced(s, st);
}

static int sq_step_failed(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			  const char *error, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = step_stmt(s, S_STEP_FAILED, job, epoch, attempt, seq);
	bind_text(st, 5, error);
	sqlite3_bind_int64(st, 6, now);
	return fenced(s, st);
}

static int sq_undo_begin(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
			 int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = step_stmt(s, S_UNDO_BEGIN, job, epoch, attempt, seq);
	sqlite3_bind_int64(st, 5, now);
	return fenced(s, st);
}

static int sq_undo_end(struct queue *q, int64_t job, int64_t epoch, int attempt, int seq,
		       const char *error, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = step_stmt(s, S_UNDO_END, job, epoch, attempt, seq);
	bind_text(st, 5, error);
	sqlite3_bind_int64(st, 6, now);
	return fenced(s, st);
}

static int sq_steps(struct queue *q, int64_t job, int attempt, struct q_step **out, size_t *n)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, attempt ? S_STEPS : S_STEPS_ALL);
	size_t cap = 0;
	int rc;
	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, job);
	if (attempt)
		sqlite3_bind_int(st, 2, attempt);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			*out = xrealloc(*out, cap * sizeof(**out));
		}
		struct q_step *p = &(*out)[(*n)++];
		memset(p, 0, sizeof(*p));
		p->attempt = sqlite3_column_int(st, 0);
		p->seq = sqlite3_column_int(st, 1);
		p->name = col_text(st, 2);
		p->state = col_text(st, 3);
		p->undo = col_blob(st, 4, &p->undo_len);
		p->result = col_blob(st, 5, &p->result_len);
		p->error = col_text(st, 6);
		p->started = sqlite3_column_int64(st, 7);
		p->finished = sqlite3_column_int64(st, 8);
		p->undo_started = sqlite3_column_int64(st, 9);
		p->undo_finished = sqlite3_column_int64(st, 10);
		p->undo_error = col_text(st, 11);
		p->undo_runs = sqlite3_column_int(st, 12);
	}
	rc = rc == SQLITE_DONE ? 0 : map_rc(s, rc);
	done_stmt(st);
	return rc;
}

static int sq_attempts(struct queue *q, int64_t job, struct q_attempt **out, size_t *n)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_ATTEMPTS);
	size_t cap = 0;
	int rc;
	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, job);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 4;
			*out = xrealloc(*out, cap * sizeof(**out));
		}
		struct q_attempt *a = &(*out)[(*n)++];
		memset(a, 0, sizeof(*a));
		a->attempt = sqlite3_column_int(st, 0);
		a->op = col_text(st, 1);
		a->node = col_text(st, 2);
		a->epochs = col_text(st, 3);
		a->started = sqlite3_column_int64(st, 4);
		a->finished = sqlite3_column_int64(st, 5);
		a->outcome = col_text(st, 6);
		a->error = col_text(st, 7);
	}
	rc = rc == SQLITE_DONE ? 0 : map_rc(s, rc);
	done_stmt(st);
	return rc;
}

/* ---- transitions ------------------------------------------------------- */

static int sq_set_state(struct queue *q, int64_t job, int64_t epoch, const char *state,
			const char *error, const char *reason)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_SET_STATE);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, epoch);
	bind_text(st, 3, state);
	bind_text(st, 4, error);
	bind_text(st, 5, reason);
	return fenced(s, st);
}

/*
 * A job reached a final state: let its dependents go.  A dependent whose need
 * did not succeed is skipped (and lets its own dependents go the same way)
 * unless it is `when: always`.  Iterative, with a worklist.
 */
static int release_dependents(struct sq *s, int64_t job, bool succeeded, int64_t now,
			      void (*skipped_cb)(int64_t, void *), void *arg)
{
	struct work {
		int64_t id;
		bool ok;
	} *wl = xmalloc(16 * sizeof(*wl));
	size_t n = 0, cap = 16;
	int rc = 0;
	wl[n++] = (struct work){job, succeeded};
	while (n > 0 && rc == 0) {
		struct work w = wl[--n];
		sqlite3_stmt *st = stmt(s, S_DEPENDENTS);
		sqlite3_bind_int64(st, 1, w.id);
		struct dep {
			int64_t id;
			bool always, queued;
		} *deps = NULL;
		size_t nd = 0, capd = 0;
		while (sqlite3_step(st) == SQLITE_ROW) {
			if (nd == capd) {
				capd = capd ? capd * 2 : 8;
				deps = xrealloc(deps, capd * sizeof(*deps));
			}
			const char *state = (const char *)sqlite3_column_text(st, 2);
			deps[nd++] = (struct dep){sqlite3_column_int64(st, 0),
						  sqlite3_column_int(st, 1) != 0,
						  state && strcmp(state, JS_QUEUED) == 0};
		}
		done_stmt(st);
		for (size_t i = 0; i < nd && rc == 0; i++) {
			if (!deps[i].queued)
				continue;
			if (w.ok || deps[i].always) {
				st = stmt(s, S_DEP_RELEASE);
				sqlite3_bind_int64(st, 1, deps[i].id);
				rc = exec_stmt(s, st);
				continue;
			}
			char msg[96];
			snprintf(msg, sizeof(msg), "skipped: needed job %lld did not succeed",
				 (long long)w.id);
			st = stmt(s, S_SKIP);
			sqlite3_bind_int64(st, 1, deps[i].id);
			bind_text(st, 2, msg);
			sqlite3_bind_int64(st, 3, now);
			if ((rc = exec_stmt(s, st)))
				break;
			if (skipped_cb)
				skipped_cb(deps[i].id, arg);
			if (n == cap) {
				cap *= 2;
				wl = xrealloc(wl, cap * sizeof(*wl));
			}
			wl[n++] = (struct work){deps[i].id, false};
		}
		free(deps);
	}
	free(wl);
	return rc;
}

static int sq_finish(struct queue *q, int64_t job, int64_t epoch, const struct q_finish *f,
		     void (*skipped_cb)(int64_t, void *), void *arg)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_FINISH);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, epoch);
	bind_text(st, 3, f->state);
	sqlite3_bind_int64(st, 4, f->run_after);
	sqlite3_bind_int(st, 5, f->count_failure ? 1 : 0);
	sqlite3_bind_int(st, 6, f->count_crash ? 1 : 0);
	sqlite3_bind_int(st, 7, f->close_attempt ? 0 : 1);
	if (f->has_exit)
		sqlite3_bind_int(st, 8, f->exit_code);
	else
		sqlite3_bind_null(st, 8);
	bind_text(st, 9, f->error);
	bind_blob(st, 10, f->result, f->result_len);
	sqlite3_bind_int64(st, 11, f->now);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		rc = rc == SQLITE_DONE ? BG_ERR_STALE : map_rc(s, rc);
		done_stmt(st);
		if (rc == BG_ERR_STALE)
			snprintf(s->base.errmsg, sizeof(s->base.errmsg),
				 "write refused: the job was claimed again (stale epoch)");
		return rc;
	}
	int attempt = sqlite3_column_int(st, 0);
	int64_t dependents = sqlite3_column_int64(st, 1);
	done_stmt(st);
	rc = 0;
	if (f->close_attempt && attempt > 0) {
		st = stmt(s, S_ATTEMPT_CLOSE);
		sqlite3_bind_int64(st, 1, job);
		sqlite3_bind_int(st, 2, attempt);
		sqlite3_bind_int64(st, 3, f->now);
		bind_text(st, 4, f->outcome);
		bind_text(st, 5, f->error);
		if ((rc = exec_stmt(s, st)))
			return rc;
	}
	if (job_state_final(f->state) && dependents > 0)
		rc = release_dependents(s, job, strcmp(f->state, JS_SUCCEEDED) == 0, f->now,
					skipped_cb, arg);
	return rc;
}

static int sq_cancel_queued(struct queue *q, int64_t job, int64_t now,
			    void (*skipped_cb)(int64_t, void *), void *arg)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_CANCEL_QUEUED);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, now);
	if ((rc = exec_stmt(s, st)))
		return rc;
	if (sqlite3_changes(s->db) == 0)
		return BG_ERR_STATE;
	return release_dependents(s, job, false, now, skipped_cb, arg);
}

static int sq_request_cancel(struct queue *q, int64_t job)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_REQUEST_CANCEL);
	sqlite3_bind_int64(st, 1, job);
	if ((rc = exec_stmt(s, st)))
		return rc;
	return sqlite3_changes(s->db) ? 0 : BG_ERR_STATE;
}

static int sq_retry(struct queue *q, int64_t job, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_RETRY);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, now);
	if ((rc = exec_stmt(s, st)))
		return rc;
	return sqlite3_changes(s->db) ? 0 : BG_ERR_STATE;
}

/* ---- events ------------------------------------------------------------ */

/*
 * Each job's next event seq, cached so that an append is one INSERT.  Filled
 * from MAX(seq) on a miss; emptied when a group is rolled back (the cache may
 * then be ahead of the table) and when it grows past SEQ_CACHE_MAX entries.
 */
#define SEQ_CACHE_MAX 65536

static void seq_cache_clear(struct sq *s)
{
	if (s->seq_cap) {
		memset(s->seq_keys, 0, s->seq_cap * sizeof(*s->seq_keys));
		memset(s->seq_vals, 0, s->seq_cap * sizeof(*s->seq_vals));
	}
	s->seq_n = 0;
}

static void seq_cache_grow(struct sq *s)
{
	if (!s->seq_cap) {
		s->seq_cap = 1024;
		s->seq_keys = xcalloc(s->seq_cap, sizeof(*s->seq_keys));
		s->seq_vals = xcalloc(s->seq_cap, sizeof(*s->seq_vals));
	}
	if (s->seq_n * 2 < s->seq_cap)
		return;
	if (s->seq_cap >= SEQ_CACHE_MAX) {
		seq_cache_clear(s);
		return;
	}
	size_t old_cap = s->seq_cap;
	int64_t *ok = s->seq_keys, *ov = s->seq_vals;
	s->seq_cap *= 2;
	s->seq_keys = xcalloc(s->seq_cap, sizeof(*s->seq_keys));
	s->seq_vals = xcalloc(s->seq_cap, sizeof(*s->seq_vals));
	for (size_t i = 0; i < old_cap; i++) {
		if (!ok[i])
			continue;
		size_t h = ((uint64_t)ok[i] * 0x9e3779b97f4a7c15ull) & (s->seq_cap - 1);
		while (s->seq_keys[h])
			h = (h + 1) & (s->seq_cap - 1);
		s->seq_keys[h] = ok[i];
		s->seq_vals[h] = ov[i];
	}
	free(ok);
	free(ov);
}

static int next_seq(struct sq *s, int64_t job, int64_t *seq)
{
	seq_cache_grow(s);
	size_t h = ((uint64_t)job * 0x9e3779b97f4a7c15ull) & (s->seq_cap - 1);
	while (s->seq_keys[h] && s->seq_keys[h] != job)
		h = (h + 1) & (s->seq_cap - 1);
	if (!s->seq_keys[h]) {
		sqlite3_stmt *st = stmt(s, S_EVENT_MAX);
		sqlite3_bind_int64(st, 1, job);
		int rc = sqlite3_step(st);
		int64_t max = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
		done_stmt(st);
		if (rc != SQLITE_ROW)
			return map_rc(s, rc);
		s->seq_keys[h] = job;
		s->seq_vals[h] = max;
		s->seq_n++;
	}
	*seq = ++s->seq_vals[h];
	return 0;
}

static int sq_event_append(struct queue *q, int64_t job, int64_t ts, const char *stream,
			   const void *data, size_t len, int64_t *seq_out)
{
	struct sq *s = SQ(q);
	int64_t seq = 0;
	int rc = write_begin(s);
	if (rc)
		return rc;
	if ((rc = next_seq(s, job, &seq)))
		return rc;
	sqlite3_stmt *st = stmt(s, S_EVENT_APPEND);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, ts);
	bind_text(st, 3, stream);
	bind_blob(st, 4, data, len);
	sqlite3_bind_int64(st, 5, seq);
	if ((rc = exec_stmt(s, st)))
		return rc;
	if (seq_out)
		*seq_out = seq;
	return 0;
}

struct event_rows {
	int64_t job;
	q_event_cb cb;
	void *arg;
};

static int event_row(sqlite3_stmt *st, void *arg)
{
	struct event_rows *er = arg;
	return er->cb(er->job, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
		      (const char *)sqlite3_column_text(st, 2), sqlite3_column_blob(st, 3),
		      (size_t)sqlite3_column_bytes(st, 3), er->arg);
}

static int sq_events_read(struct queue *q, int64_t job, int64_t from_seq, int limit, q_event_cb cb,
			  void *arg)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_EVENTS_READ);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_int64(st, 2, from_seq);
	sqlite3_bind_int(st, 3, limit);
	struct event_rows er = {job, cb, arg};
	return each_row(s, st, event_row, &er);
}

/* ---- images ------------------------------------------------------------ */

static int sq_image_put(struct queue *q, const struct q_image *img, const char *ref, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_IMAGE_PUT);
	bind_text(st, 1, img->digest);
	bind_text(st, 2, img->rootfs);
	sqlite3_bind_int64(st, 3, img->size);
	sqlite3_bind_int64(st, 4, img->content);
	bind_text(st, 5, img->config);
	bind_blob(st, 6, img->layers, img->layers_len);
	bind_text(st, 7, img->source);
	sqlite3_bind_int64(st, 8, img->created ? img->created : now);
	sqlite3_bind_int64(st, 9, img->job);
	if ((rc = exec_stmt(s, st)) || !ref)
		return rc;
	st = stmt(s, S_IMAGE_REF_PUT);
	bind_text(st, 1, ref);
	bind_text(st, 2, img->digest);
	sqlite3_bind_int64(st, 3, now);
	return exec_stmt(s, st);
}

static void read_image(struct sq *s, sqlite3_stmt *st, struct q_image *img)
{
	memset(img, 0, sizeof(*img));
	img->digest = col_text(st, 0);
	img->rootfs = col_text(st, 1);
	img->size = sqlite3_column_int64(st, 2);
	img->content = sqlite3_column_int64(st, 3);
	img->config = col_text(st, 4);
	img->layers = col_blob(st, 5, &img->layers_len);
	img->source = col_text(st, 6);
	img->created = sqlite3_column_int64(st, 7);
	img->job = sqlite3_column_int64(st, 8);
	sqlite3_stmt *r = stmt(s, S_IMAGE_REFS);
	bind_text(r, 1, img->digest);
	size_t cap = 0;
	while (sqlite3_step(r) == SQLITE_ROW) {
		if (img->nrefs == cap) {
			cap = cap ? cap * 2 : 4;
			img->refs = xrealloc(img->refs, cap * sizeof(*img->refs));
		}
		img->refs[img->nrefs++] = col_text(r, 0);
	}
	done_stmt(r);
}

static int sq_image_get(struct queue *q, const char *key, struct q_image *out)
{
	struct sq *s = SQ(q);
	bool by_digest = strncmp(key, "sha256:", 7) == 0;
	sqlite3_stmt *st = stmt(s, by_digest ? S_IMAGE_BY_DIGEST : S_IMAGE_BY_REF);
	bind_text(st, 1, key);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		/* read_image runs a second statement: copy this row first */
		struct q_image img;
		memset(&img, 0, sizeof(img));
		img.digest = col_text(st, 0);
		done_stmt(st);
		st = stmt(s, S_IMAGE_BY_DIGEST);
		bind_text(st, 1, img.digest);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			read_image(s, st, out);
			done_stmt(st);
			free(img.digest);
			return 0;
		}
		free(img.digest);
	}
	rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? BG_ERR_NOENT : map_rc(s, rc);
	done_stmt(st);
	if (rc == BG_ERR_NOENT)
		snprintf(s->base.errmsg, sizeof(s->base.errmsg), "no image '%s'", key);
	return rc;
}

static int sq_image_list(struct queue *q, int (*cb)(const struct q_image *, void *), void *arg)
{
	struct sq *s = SQ(q);
	/* collect the digests first: read_image needs its own statement */
	sqlite3_stmt *st = stmt(s, S_IMAGE_LIST);
	char **digests = NULL;
	size_t n = 0, cap = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			digests = xrealloc(digests, cap * sizeof(*digests));
		}
		digests[n++] = col_text(st, 0);
	}
	done_stmt(st);
	int out = 0;
	for (size_t i = 0; i < n; i++) {
		struct q_image img;
		if (!out && sq_image_get(q, digests[i], &img) == 0) {
			out = cb(&img, arg);
			q_image_release(&img);
		}
		free(digests[i]);
	}
	free(digests);
	return out;
}

static int sq_image_delete(struct queue *q, const char *digest)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_IMAGE_REFS_DELETE);
	bind_text(st, 1, digest);
	if ((rc = exec_stmt(s, st)))
		return rc;
	st = stmt(s, S_IMAGE_DELETE);
	bind_text(st, 1, digest);
	if ((rc = exec_stmt(s, st)))
		return rc;
	return sqlite3_changes(s->db) ? 0 : BG_ERR_NOENT;
}

/* ---- vms --------------------------------------------------------------- */

static void bind_id(sqlite3_stmt *st, int i, int64_t v)
{
	if (v)
		sqlite3_bind_int64(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

static int sq_vm_put(struct queue *q, const struct q_vm *vm)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_VM_PUT);
	sqlite3_bind_int64(st, 1, vm->id);
	bind_text(st, 2, vm->name);
	bind_text(st, 3, vm->state);
	bind_text(st, 4, vm->image);
	bind_text(st, 5, vm->rootfs);
	bind_text(st, 6, vm->kernel);
	sqlite3_bind_int64(st, 7, vm->vcpus);
	sqlite3_bind_int64(st, 8, vm->memory);
	bind_text(st, 9, vm->address);
	bind_text(st, 10, vm->tap);
	bind_text(st, 11, vm->overlay);
	bind_text(st, 12, vm->run_dir);
	bind_id(st, 13, vm->pid);
	bind_text(st, 14, vm->node);
	bind_text(st, 15, vm->error);
	sqlite3_bind_int64(st, 16, vm->created);
	bind_id(st, 17, vm->deleted);
	sqlite3_bind_int64(st, 18, vm->created_by);
	bind_id(st, 19, vm->deleted_by);
	rc = exec_stmt(s, st);
	if (rc == BG_ERR_EXIST)
		snprintf(s->base.errmsg, sizeof(s->base.errmsg),
			 "a vm that is not deleted already has the name '%s' or the address '%s'",
			 vm->name ? vm->name : "", vm->address ? vm->address : "");
	return rc;
}

static void read_vm(sqlite3_stmt *st, struct q_vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->id = sqlite3_column_int64(st, 0);
	vm->name = col_text(st, 1);
	vm->state = col_text(st, 2);
	vm->image = col_text(st, 3);
	vm->rootfs = col_text(st, 4);
	vm->kernel = col_text(st, 5);
	vm->vcpus = sqlite3_column_int(st, 6);
	vm->memory = sqlite3_column_int64(st, 7);
	vm->address = col_text(st, 8);
	vm->tap = col_text(st, 9);
	vm->overlay = col_text(st, 10);
	vm->run_dir = col_text(st, 11);
	vm->pid = sqlite3_column_int64(st, 12);
	vm->node = col_text(st, 13);
	vm->error = col_text(st, 14);
	vm->created = sqlite3_column_int64(st, 15);
	vm->deleted = sqlite3_column_int64(st, 16);
	vm->created_by = sqlite3_column_int64(st, 17);
	vm->deleted_by = sqlite3_column_int64(st, 18);
}

/* One row from a statement whose parameters are bound; BG_ERR_NOENT if none. */
static int vm_one(struct sq *s, sqlite3_stmt *st, struct q_vm *out)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		read_vm(st, out);
		done_stmt(st);
		return 0;
	}
	rc = rc == SQLITE_DONE ? BG_ERR_NOENT : map_rc(s, rc);
	done_stmt(st);
	return rc;
}

static int sq_vm_get(struct queue *q, int64_t id, struct q_vm *out)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_VM_GET);
	sqlite3_bind_int64(st, 1, id);
	int rc = vm_one(s, st, out);
	if (rc == BG_ERR_NOENT)
		snprintf(s->base.errmsg, sizeof(s->base.errmsg), "no vm %lld", (long long)id);
	return rc;
}

static int sq_vm_find(struct queue *q, const char *name, struct q_vm *out)
{
	struct sq *s = SQ(q);
	sqlite3_stmt *st = stmt(s, S_VM_FIND);
	bind_text(st, 1, name);
	int rc = vm_one(s, st, out);
	if (rc == BG_ERR_NOENT)
		snprintf(s->base.errmsg, sizeof(s->base.errmsg), "no vm '%s'", name);
	return rc;
}

struct vm_rows {
	int (*cb)(const struct q_vm *, void *);
	void *arg;
};

static int vm_row(sqlite3_stmt *st, void *arg)
{
	struct vm_rows *vr = arg;
	struct q_vm vm;
	read_vm(st, &vm);
	int out = vr->cb(&vm, vr->arg);
	q_vm_release(&vm);
	return out;
}

static int sq_vm_list(struct queue *q, bool all, int (*cb)(const struct q_vm *, void *), void *arg)
{
	struct sq *s = SQ(q);
	struct vm_rows vr = {cb, arg};
	return each_row(s, stmt(s, all ? S_VM_LIST_ALL : S_VM_LIST), vm_row, &vr);
}

static int sq_vm_set_state(struct queue *q, int64_t id, const char *state, int64_t pid,
			   const char *error, int64_t job, int64_t now)
{
	struct sq *s = SQ(q);
	int rc = write_begin(s);
	if (rc)
		return rc;
	sqlite3_stmt *st = stmt(s, S_VM_SET_STATE);
	sqlite3_bind_int64(st, 1, id);
	bind_text(st, 2, state);
	sqlite3_bind_int64(st, 3, pid);
	bind_text(st, 4, error);
	sqlite3_bind_int64(st, 5, job);
	sqlite3_bind_int64(st, 6, now);
	if ((rc = exec_stmt(s, st)))
		return rc;
	if (sqlite3_changes(s->db) == 0) {
		snprintf(s->base.errmsg, sizeof(s->base.errmsg), "no vm %lld", (long long)id);
		return BG_ERR_NOENT;
	}
	return 0;
}

/* ---- open / close ------------------------------------------------------ */

static void sq_close(struct queue *q)
{
	struct sq *s = SQ(q);
	if (s->in_txn) {
		uint64_t n;
		sq_commit(q, &n);
	}
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	if (s->ckpt_db)
		sqlite3_close(s->ckpt_db);
	sqlite3_close(s->db);
	if (s->wal_fd >= 0)
		close(s->wal_fd);
	free(s->seq_keys);
	free(s->seq_vals);
	free(s->path);
	free(s);
}

static const struct queue_ops sqlite_ops = {
	.name = "sqlite",
	.close = sq_close,
	.commit = sq_commit,
	.sync = sq_sync,
	.committed = sq_committed,
	.node_start = sq_node_start,
	.node_stop = sq_node_stop,
	.submit = sq_submit,
	.claim = sq_claim,
	.reclaim = sq_reclaim,
	.heartbeat = sq_heartbeat,
	.next_due = sq_next_due,
	.step_begin = sq_step_begin,
	.step_done = sq_step_done,
	.step_failed = sq_step_failed,
	.undo_begin = sq_undo_begin,
	.undo_end = sq_undo_end,
	.steps = sq_steps,
	.attempts = sq_attempts,
	.set_state = sq_set_state,
	.finish = sq_finish,
	.cancel_queued = sq_cancel_queued,
	.request_cancel = sq_request_cancel,
	.retry = sq_retry,
	.job_get = sq_job_get,
	.job_list = sq_job_list,
	.job_needs = sq_job_needs,
	.held = sq_held,
	.stats = sq_stats,
	.image_put = sq_image_put,
	.image_get = sq_image_get,
	.image_list = sq_image_list,
	.image_delete = sq_image_delete,
	.vm_put = sq_vm_put,
	.vm_get = sq_vm_get,
	.vm_find = sq_vm_find,
	.vm_list = sq_vm_list,
	.vm_set_state = sq_vm_set_state,
	.event_append = sq_event_append,
	.events_read = sq_events_read,
};

/* Bring the schema up to date in one transaction; refuse a newer one. */
static int migrate(struct sq *s, char **errmsg)
{
	sqlite3_stmt *st;
	int have = 0, rc;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		*errmsg = xasprintf("%s: cannot lock the database: %s", s->path, sqlite3_errmsg(s->db));
		return BG_ERR_BUSY;
	}
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			have = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	int want = queue_schema_version();
	if (have > want) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		*errmsg = xasprintf("%s: database schema version %d is newer than this banger "
				    "(knows up to %d): upgrade banger, or use another state directory",
				    s->path, have, want);
		return BG_ERR_SCHEMA;
	}
	for (int i = 0; i < migrations_count; i++) {
		if (migrations[i].version <= have)
			continue;
		char *err = NULL;
		if (sqlite3_exec(s->db, migrations[i].sql, NULL, NULL, &err) != SQLITE_OK) {
			*errmsg = xasprintf("%s: migration %s failed: %s", s->path,
					    migrations[i].name, err ? err : "?");
			sqlite3_free(err);
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return BG_ERR_DB;
		}
		char pragma[64];
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", migrations[i].version);
		sqlite3_exec(s->db, pragma, NULL, NULL, NULL);
	}
	rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		*errmsg = xasprintf("%s: cannot commit migrations: %s", s->path, sqlite3_errmsg(s->db));
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return map_rc(s, rc);
	}
	return 0;
}

int queue_sqlite_open(const char *path, struct queue **out, char **errmsg)
{
	struct sq *s = xcalloc(1, sizeof(*s));
	int rc;
	s->base.ops = &sqlite_ops;
	s->path = xstrdup(path);
	s->wal_fd = -1;
	atomic_init(&s->wal_pages, 0);
	*errmsg = NULL;

	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		*errmsg = xasprintf("%s: cannot open database: %s", path,
				    s->db ? sqlite3_errmsg(s->db) : "out of memory");
		rc = BG_ERR_DB;
		goto fail;
	}
	sqlite3_busy_timeout(s->db, 5000);
	char *err = NULL;
	if (sqlite3_exec(s->db,
			 "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
			 "PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = OFF; "
			 "PRAGMA cache_size = -65536; "
			 "PRAGMA journal_size_limit = 67108864",
			 NULL, NULL, &err) != SQLITE_OK) {
		*errmsg = xasprintf("%s: %s", path, err ? err : sqlite3_errmsg(s->db));
		sqlite3_free(err);
		rc = BG_ERR_DB;
		goto fail;
	}
	if ((rc = migrate(s, errmsg)))
		goto fail;
	for (int i = 0; i < S_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK) {
			*errmsg = xasprintf("%s: preparing statement %d: %s", path, i,
					    sqlite3_errmsg(s->db));
			rc = BG_ERR_DB;
			goto fail;
		}
	}
	sqlite3_wal_hook(s->db, wal_hook, s);
	*out = &s->base;
	return 0;
fail:
	sq_close(&s->base);
	return rc;
}
