/*
 * commit.c: group commit (see commit.h).
 *
 * Three lists of callbacks: `open` (their writes are in the transaction being
 * built), `waiting` (committed with number N, not yet durable), and the one
 * being run.  One syncer thread does queue->sync; while it runs, new commits
 * pile up and are all covered by the next sync.  A failed sync is fatal: the
 * process can no longer tell what is durable, so it aborts and recovery on the
 * next start decides (as PostgreSQL does after an fsync failure).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "commit.h"
#include "err.h"
#include "failpoint.h"
#include "log.h"
#include "queue.h"
#include "util.h"

struct cb {
	commit_fn fn;
	void *arg;
	uint64_t no;
	struct cb *next;
};

static struct {
	uv_loop_t *loop;
	struct queue *q;
	uv_prepare_t prepare;
	uv_check_t check;
	uv_async_t done;
	struct cb *open_head, **open_tail;
	struct cb *wait_head, **wait_tail;
	uint64_t synced;     /* durable up to this commit number */
	uint64_t target;     /* the sync in flight covers up to this */
	bool syncing;
	int sync_rc;
	void (*pre_flush)(void);
	bool in_flush;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool request, stop;
} C;

static void *syncer_main(void *arg)
{
	pthread_mutex_lock(&C.mu);
	for (;;) {
		while (!C.request && !C.stop)
			pthread_cond_wait(&C.cv, &C.mu);
		if (C.stop)
			break;
		C.request = false;
		pthread_mutex_unlock(&C.mu);
		int rc = C.q->ops->sync(C.q);
		pthread_mutex_lock(&C.mu);
		C.sync_rc = rc;
		uv_async_send(&C.done);
	}
	pthread_mutex_unlock(&C.mu);
	return NULL;
}

static void start_sync(void)
{
	uint64_t committed = C.q->ops->committed(C.q);
	if (C.syncing || C.synced >= committed)
		return;
	C.syncing = true;
	C.target = committed;
	pthread_mutex_lock(&C.mu);
	C.request = true;
	pthread_cond_signal(&C.cv);
	pthread_mutex_unlock(&C.mu);
}

/* Run, in order, every waiting callback whose commit is durable. */
static void run_durable(void)
{
	while (C.wait_head && C.wait_head->no <= C.synced) {
		struct cb *c = C.wait_head;
		C.wait_head = c->next;
		if (!C.wait_head)
			C.wait_tail = &C.wait_head;
		c->fn(c->arg, 0);
		free(c);
	}
}

static void flush(void)
{
	if (C.in_flush)
		return;
	C.in_flush = true;
	if (C.pre_flush)
		C.pre_flush();
	uint64_t no;
	int rc = C.q->ops->commit(C.q, &no);
	struct cb *list = C.open_head;
	C.open_head = NULL;
	C.open_tail = &C.open_head;
	if (rc) {
		log_error(NULL, 0, "commit failed, its writes are rolled back: %s (%s)",
			  bg_strerror(rc), C.q->errmsg);
		while (list) {
			struct cb *c = list;
			list = c->next;
			c->fn(c->arg, rc);
			free(c);
		}
	} else if (list) {
		for (struct cb *c = list; c; c = c->next)
			c->no = no;
		*C.wait_tail = list;
		while (*C.wait_tail)
			C.wait_tail = &(*C.wait_tail)->next;
	}
	start_sync();
	run_durable();
	C.in_flush = false;
}

static void on_prepare(uv_prepare_t *h)
{
	flush();
}

static void on_check(uv_check_t *h)
{
	flush();
}

static void on_sync_done(uv_async_t *h)
{
	if (!C.syncing)
		return;
	pthread_mutex_lock(&C.mu);
	int rc = C.sync_rc;
	pthread_mutex_unlock(&C.mu);
	if (rc) {
		log_error(NULL, 0, "fsync of the queue database failed: %s; stopping so that "
			  "recovery decides what is durable", bg_strerror(rc));
		abort();
	}
	C.syncing = false;
	C.synced = C.target;
	failpoint_hit("engine:synced");
	run_durable();
	start_sync();
}

int commit_init(uv_loop_t *loop, struct queue *q)
{
	C.loop = loop;
	C.q = q;
	C.open_tail = &C.open_head;
	C.wait_tail = &C.wait_head;
	C.synced = q->ops->committed(q);
	pthread_mutex_init(&C.mu, NULL);
	pthread_cond_init(&C.cv, NULL);
	uv_prepare_init(loop, &C.prepare);
	uv_check_init(loop, &C.check);
	uv_async_init(loop, &C.done, on_sync_done);
	uv_prepare_start(&C.prepare, on_prepare);
	uv_check_start(&C.check, on_check);
	uv_unref((uv_handle_t *)&C.prepare);
	uv_unref((uv_handle_t *)&C.check);
	if (pthread_create(&C.thread, NULL, syncer_main, NULL) != 0)
		return BG_ERR_NOMEM;
	return 0;
}

void commit_set_pre_flush(void (*fn)(void))
{
	C.pre_flush = fn;
}

void commit_after(commit_fn fn, void *arg)
{
	struct cb *c = xmalloc(sizeof(*c));
	c->fn = fn;
	c->arg = arg;
	c->no = 0;
	c->next = NULL;
	*C.open_tail = c;
	C.open_tail = &c->next;
}

int commit_flush_sync(void)
{
	uint64_t no;
	int rc = C.q->ops->commit(C.q, &no);
	if (rc)
		return rc;
	/* The syncer may be mid-sync; a second sync from here is harmless. */
	rc = C.q->ops->sync(C.q);
	return rc;
}

void commit_close(void)
{
	pthread_mutex_lock(&C.mu);
	C.stop = true;
	pthread_cond_signal(&C.cv);
	pthread_mutex_unlock(&C.mu);
	pthread_join(C.thread, NULL);
	uv_close((uv_handle_t *)&C.prepare, NULL);
	uv_close((uv_handle_t *)&C.check, NULL);
	uv_close((uv_handle_t *)&C.done, NULL);
}
