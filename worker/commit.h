/*
 * commit.h: group commit for bangerd's loop thread.
 *
 * Writes to the queue from any number of jobs and clients during one turn of
 * the loop land in one transaction.  At the end of the turn (uv_check) and
 * before the loop sleeps (uv_prepare) the transaction is committed, and the
 * syncer thread makes it durable with one fsync while the loop carries on.
 * commit_after() callbacks run on the loop thread once the writes made before
 * the call are durable (rc 0), or with the error that lost them (rc < 0:
 * the transaction was rolled back, nothing of it is stored).
 */
#ifndef BANGER_COMMIT_H
#define BANGER_COMMIT_H

#include <uv.h>

struct queue;

typedef void (*commit_fn)(void *arg, int rc);

int commit_init(uv_loop_t *loop, struct queue *q);
/* fn(arg, rc) once everything written so far is durable.  Never runs fn
 * before returning. */
void commit_after(commit_fn fn, void *arg);
/* Commit now and wait (blocking the loop) until durable: for shutdown. */
int commit_flush_sync(void);
void commit_close(void);
/* Hook called at the start of each flush, before committing (the engine
 * claims work there so claims join the turn's transaction). */
void commit_set_pre_flush(void (*fn)(void));

#endif
