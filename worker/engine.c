/*
 * engine.c: the step engine (see engine.h, kind.h, docs/architecture.md).
 *
 * A claimed job becomes a job_run that walks its kind's steps:
 *
 *   plan (loop) -> step_begin + undo record written -> durable (group commit)
 *   -> do (pool thread) -> step_done written -> next step's begin in the same
 *   group ... -> finish written -> durable -> slot freed.
 *
 * On failure, cancel, timeout or lost lease the run turns around: every step
 * that began is undone in reverse (undo in the pool; each outcome written),
 * then the job is finished in the state its reason calls for.  Nothing here
 * blocks: step bodies run in libuv's pool; all writes go through the queue on
 * this thread; acting on a write waits for commit_after().
 *
 * RECOVERY (engine_start): every job the queue says this node holds is taken
 * back with a new epoch.  Its op log decides: a step left `begun` re-runs if the
 * kind marks it resumable, else the job rolls back; a job that was rolling back
 * carries on undoing; an attempt cut by max_crashes crashes in a row is rolled
 * back and marked dead.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commit.h"
#include "config.h"
#include "engine.h"
#include "err.h"
#include "failpoint.h"
#include "log.h"
#include "mpk.h"
#include "queue.h"
#include "server.h"
#include "util.h"

enum reason {
	R_NONE,
	R_FAILED,      /* a step failed */
	R_CANCEL,      /* the user cancelled */
	R_TIMEOUT,     /* the job's timeout passed */
	R_INTERRUPTED, /* a crash cut a step that cannot resume */
	R_CRASHES,     /* too many crashes in a row */
	R_LEASE,       /* the lease was lost: stop, write nothing */
};

enum phase { P_IDLE, P_COMMIT, P_DO, P_UNDO, P_FINISH };

enum sstate { ST_NONE, ST_BEGUN, ST_DONE, ST_FAILED, ST_UNDONE };

struct job_run {
	struct job_run *prev, *next;
	struct q_job row;
	int64_t id, epoch;
	int attempt;
	char op[48];
	const struct kind *kind;
	int kind_idx;
	msgpack_unpacked params;
	char *job_dir;

	/* per step, index 0..nsteps-1 (seq = index + 1) */
	enum sstate *st;
	char **undo;
	size_t *undo_len;
	char **res;
	size_t *res_len;
	msgpack_unpacked *res_obj;
	bool *res_unpacked;

	int cur;      /* step being run */
	int undo_idx; /* next step to undo, going down */
	enum phase phase;
	bool rolling_back;
	enum reason reason;
	char *error;
	bool permanent;
	bool has_exit;
	int exit_code;
	bool drain_stop; /* checkpoint after the current step */

	atomic_int cancel; /* an enum reason when set */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pgid;

	uv_work_t work;
	int work_rc;
	struct step_ctx ctx;
	msgpack_sbuffer result_buf;
	char errbuf[1024];
	bool err_permanent;

	uv_timer_t timer;
	struct q_finish fin; /* how the attempt ends, kept to retry the write */
	struct pending_event *out; /* output being coalesced (E.ev_mu) */
	int64_t out_since;         /* mono_us() of its first byte */
	char *fin_error;
};

/*
 * Output coalescing.  Step bodies emit output as it comes (a guest's pipe
 * gives 4-64 KiB at a time); each event is a row, a notification and a
 * frame to every follower, so stdout and stderr chunks of one job are
 * gathered into one event until OUT_EVENT_MAX bytes, OUT_DELAY_US after its
 * first byte (the loop's flush timer: `banger job tail` still shows output
 * live), another stream or a non-output event of the job (which go after
 * it: order is kept), or the step's end (after_do/after_undo write the
 * step's output before its outcome).  Pool threads wait while more than
 * OUT_BACKLOG_MAX bytes are not yet written, so a fast command cannot grow
 * bangerd without bound.
 *
 * 64 KiB is the agent's frame (AP_CHUNK): a command writing fast already
 * fills whole events, and events of 256 KiB made `banger job tail` of 200 MB
 * slower here (0.33 s against 0.20 s), with no gain on the way in.  What
 * coalescing buys is for small writes: 200,000 lines, one write each, were
 * 202,205 events and 1.7 s, now 405 events and 0.05 s (docs/benchmarks.md).
 */
#define OUT_EVENT_MAX (64u * 1024)
#define OUT_DELAY_US (20 * 1000)
#define OUT_BACKLOG_MAX (8u << 20)

struct pending_event {
	struct pending_event *next;
	int64_t job;
	char stream[16];
	size_t len, cap;
	char data[];
};

static struct {
	uv_loop_t *loop;
	struct queue *q;
	struct engine_opts o;
	struct job_run *runs; /* doubly linked */
	int nrunning;
	int *kind_running;
	int nkinds;
	bool claim_wanted;
	bool started;
	bool draining;
	void (*drain_done)(void);
	uv_timer_t due_timer;
	int64_t due_at;
	uv_timer_t heartbeat;
	uv_async_t ev_async;
	uv_timer_t out_timer; /* seals output OUT_DELAY_US after its first byte */
	pthread_mutex_t ev_mu;
	pthread_cond_t ev_cv; /* backlog went down */
	struct pending_event *ev_head, **ev_tail;
	size_t backlog; /* bytes queued or being coalesced, not yet written */
	pthread_t loop_thread;
} E;

static void run_next_step(struct job_run *jr);
static void undo_next(struct job_run *jr);
static void start_rollback(struct job_run *jr, enum reason why, const char *error);
static void events_flush(struct job_run *jr);
static struct job_run *run_find(int64_t id);

/* ---- events ------------------------------------------------------------ */

struct notify {
	int64_t job;
};

static void notify_cb(void *arg, int rc)
{
	struct notify *n = arg;
	if (rc == 0)
		server_notify(n->job);
	free(n);
}

int engine_event(int64_t job, const char *stream, const void *data, size_t len)
{
	int rc = E.q->ops->event_append(E.q, job, now_us(), stream, data, len, NULL);
	if (rc) {
		log_warn(NULL, job, "cannot append '%s' event: %s", stream, bg_strerror(rc));
		return rc;
	}
	if (server_has_subscribers()) {
		struct notify *n = xmalloc(sizeof(*n));
		n->job = job;
		commit_after(notify_cb, n);
	}
	return 0;
}

int engine_state_event(int64_t job, const char *state, const char *error, bool has_exit,
		       int exit_code)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1 + (error != NULL) + has_exit);
	mpk_kv_str(&pk, "state", state);
	if (error)
		mpk_kv_str(&pk, "error", error);
	if (has_exit)
		mpk_kv_int(&pk, "exit_code", exit_code);
	events_flush(run_find(job)); /* the job's output so far goes first */
	int rc = engine_event(job, "state", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static void step_event(struct job_run *jr, int idx, const char *phase, const char *error)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4 + (error != NULL));
	mpk_kv_int(&pk, "attempt", jr->attempt);
	mpk_kv_int(&pk, "seq", idx + 1);
	mpk_kv_str(&pk, "name", jr->kind->steps[idx].name);
	mpk_kv_str(&pk, "phase", phase);
	if (error)
		mpk_kv_str(&pk, "error", error);
	events_flush(jr);
	engine_event(jr->id, "step", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* Pool threads hand events to the loop through this list.  With E.ev_mu
 * held: queue e (not yet linked anywhere). */
static void queue_locked(struct pending_event *e)
{
	e->next = NULL;
	*E.ev_tail = e;
	E.ev_tail = &e->next;
}

/* With E.ev_mu held: queue jr's coalesced output, if any. */
static void seal_locked(struct job_run *jr)
{
	if (jr->out) {
		queue_locked(jr->out);
		jr->out = NULL;
	}
}

static struct pending_event *event_new(int64_t job, const char *stream, size_t cap)
{
	struct pending_event *e = xmalloc(sizeof(*e) + cap);
	e->next = NULL;
	e->job = job;
	snprintf(e->stream, sizeof(e->stream), "%s", stream);
	e->len = 0;
	e->cap = cap;
	return e;
}

/* Pool thread: wait (with E.ev_mu held) while the backlog is over its
 * bound, unless the job is being stopped.  Never on the loop thread (a
 * plan that logs), which is the one that drains it. */
static void backlog_wait_locked(struct job_run *jr)
{
	if (pthread_equal(pthread_self(), E.loop_thread))
		return;
	while (E.backlog > OUT_BACKLOG_MAX && atomic_load(&jr->cancel) == R_NONE) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&E.ev_cv, &E.ev_mu, &ts);
	}
}

/* An event that is not coalesced ("log", "progress": msgpack values): after
 * the job's output so far. */
static void push_event(struct job_run *jr, const char *stream, const void *data, size_t len)
{
	struct pending_event *e = event_new(jr->id, stream, len);
	memcpy(e->data, data, len);
	e->len = len;
	pthread_mutex_lock(&E.ev_mu);
	backlog_wait_locked(jr);
	seal_locked(jr);
	queue_locked(e);
	E.backlog += len;
	pthread_mutex_unlock(&E.ev_mu);
	uv_async_send(&E.ev_async);
}

/* Output bytes (stdout, stderr): into the job's open event (see
 * OUT_EVENT_MAX).  Wakes the loop only when an event is sealed or a new one
 * starts (to arm the flush timer), not for every chunk. */
static void push_output(struct job_run *jr, const char *stream, const char *p, size_t len)
{
	bool wake = false;
	pthread_mutex_lock(&E.ev_mu);
	backlog_wait_locked(jr);
	E.backlog += len;
	while (len > 0) {
		struct pending_event *o = jr->out;
		if (o && strncmp(o->stream, stream, sizeof(o->stream)) != 0) {
			seal_locked(jr);
			o = NULL;
		}
		if (!o) {
			/* a big writer fills whole events: no copies while growing */
			size_t cap = len < 4096 ? 4096 : len >= 8192 ? OUT_EVENT_MAX : len;
			o = jr->out = event_new(jr->id, stream, cap);
			jr->out_since = mono_us();
			wake = true;
		}
		size_t n = OUT_EVENT_MAX - o->len;
		if (n > len)
			n = len;
		if (o->len + n > o->cap) {
			size_t cap = o->cap * 2;
			if (cap < o->len + n)
				cap = o->len + n;
			if (cap > OUT_EVENT_MAX)
				cap = OUT_EVENT_MAX;
			o = jr->out = xrealloc(o, sizeof(*o) + cap);
			o->cap = cap;
		}
		memcpy(o->data + o->len, p, n);
		o->len += n;
		p += n;
		len -= n;
		if (o->len == OUT_EVENT_MAX) {
			seal_locked(jr);
			wake = true;
		}
	}
	pthread_mutex_unlock(&E.ev_mu);
	if (wake)
		uv_async_send(&E.ev_async);
}

static void out_timer_arm(void);

/* Write every queued event (loop thread). */
static void events_drain(void)
{
	pthread_mutex_lock(&E.ev_mu);
	struct pending_event *list = E.ev_head;
	E.ev_head = NULL;
	E.ev_tail = &E.ev_head;
	pthread_mutex_unlock(&E.ev_mu);
	size_t bytes = 0;
	while (list) {
		struct pending_event *e = list;
		list = e->next;
		engine_event(e->job, e->stream, e->data, e->len);
		bytes += e->len;
		free(e);
	}
	if (bytes) {
		pthread_mutex_lock(&E.ev_mu);
		E.backlog -= bytes;
		pthread_cond_broadcast(&E.ev_cv);
		pthread_mutex_unlock(&E.ev_mu);
	}
	out_timer_arm();
}

/* jr's output so far, then everything queued, written now: before an event
 * of jr's own that must come after its output (its step's outcome, a
 * state). */
static void events_flush(struct job_run *jr)
{
	if (jr) {
		pthread_mutex_lock(&E.ev_mu);
		seal_locked(jr);
		pthread_mutex_unlock(&E.ev_mu);
	}
	events_drain();
}

/* Seal the output events that are OUT_DELAY_US old; arm the timer for the
 * oldest one left. */
static void out_timer_cb(uv_timer_t *t)
{
	int64_t now = mono_us();
	bool sealed = false;
	pthread_mutex_lock(&E.ev_mu);
	for (struct job_run *jr = E.runs; jr; jr = jr->next)
		if (jr->out && now - jr->out_since >= OUT_DELAY_US) {
			seal_locked(jr);
			sealed = true;
		}
	pthread_mutex_unlock(&E.ev_mu);
	if (sealed)
		events_drain(); /* arms the timer again */
	else
		out_timer_arm();
}

static void out_timer_arm(void)
{
	int64_t oldest = 0;
	pthread_mutex_lock(&E.ev_mu);
	for (struct job_run *jr = E.runs; jr; jr = jr->next)
		if (jr->out && (!oldest || jr->out_since < oldest))
			oldest = jr->out_since;
	pthread_mutex_unlock(&E.ev_mu);
	if (!oldest) {
		uv_timer_stop(&E.out_timer);
		return;
	}
	int64_t wait = oldest + OUT_DELAY_US - mono_us();
	uint64_t ms = wait <= 0 ? 0 : (uint64_t)((wait + 999) / 1000);
	/* a timer already due no later is left alone */
	if (uv_is_active((uv_handle_t *)&E.out_timer) &&
	    uv_timer_get_due_in(&E.out_timer) <= ms)
		return;
	uv_timer_start(&E.out_timer, out_timer_cb, ms, 0);
}

static void on_ev_async(uv_async_t *h)
{
	events_drain();
}

/* ---- step API (pool thread) -------------------------------------------- */

int step_fail(struct step_ctx *ctx, int rc, bool permanent, const char *fmt, ...)
{
	struct job_run *jr = ctx->run;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(jr->errbuf, sizeof(jr->errbuf), fmt, ap);
	va_end(ap);
	jr->err_permanent = permanent;
	return rc ? rc : BG_ERR_STEP;
}

void step_set_exit(struct step_ctx *ctx, int code)
{
	ctx->run->has_exit = true;
	ctx->run->exit_code = code;
}

void step_emit(struct step_ctx *ctx, const char *stream, const void *data, size_t len)
{
	const char *p = data;
	if (strcmp(stream, "stdout") == 0 || strcmp(stream, "stderr") == 0) {
		push_output(ctx->run, stream, p, len); /* events of OUT_EVENT_MAX at most */
		return;
	}
	/* Big values go in chunks so no event exceeds a frame. */
	while (len > 0) {
		size_t n = len > 65536 ? 65536 : len;
		push_event(ctx->run, stream, p, n);
		p += n;
		len -= n;
	}
}

static void push_text(struct step_ctx *ctx, const char *stream, const char *fmt, va_list ap)
{
	struct sb sb;
	sb_init(&sb);
	sb_vaddf(&sb, fmt, ap);
	msgpack_sbuffer m;
	msgpack_packer pk;
	msgpack_sbuffer_init(&m);
	msgpack_packer_init(&pk, &m, msgpack_sbuffer_write);
	mpk_pack_strn(&pk, sb.buf ? sb.buf : "", sb.len);
	push_event(ctx->run, stream, m.data, m.size);
	msgpack_sbuffer_destroy(&m);
	sb_release(&sb);
}

void step_logf(struct step_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	push_text(ctx, "log", fmt, ap);
	va_end(ap);
}

void step_warnf(struct step_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	push_text(ctx, "warning", fmt, ap);
	va_end(ap);
}

bool step_cancelled(struct step_ctx *ctx)
{
	return atomic_load(&ctx->run->cancel) != R_NONE;
}

int step_sleep(struct step_ctx *ctx, int64_t us)
{
	struct job_run *jr = ctx->run;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = ts.tv_nsec + (us % 1000000) * 1000;
	ts.tv_sec += us / 1000000 + ns / 1000000000;
	ts.tv_nsec = ns % 1000000000;
	int rc = 0;
	pthread_mutex_lock(&jr->mu);
	while (atomic_load(&jr->cancel) == R_NONE) {
		if (pthread_cond_timedwait(&jr->cv, &jr->mu, &ts) == ETIMEDOUT)
			break;
	}
	if (atomic_load(&jr->cancel) != R_NONE)
		rc = BG_ERR_CANCELED;
	pthread_mutex_unlock(&jr->mu);
	return rc;
}

const msgpack_object *step_result(struct step_ctx *ctx, int seq)
{
	struct job_run *jr = ctx->run;
	int i = seq - 1;
	if (i < 0 || i >= (int)jr->kind->nsteps || !jr->res[i])
		return NULL;
	/* Unpacked on the loop thread before do runs (see dispatch_do). */
	return jr->res_unpacked[i] ? &jr->res_obj[i].data : NULL;
}

void step_set_pgid(struct step_ctx *ctx, int pgid)
{
	pthread_mutex_lock(&ctx->run->mu);
	ctx->run->pgid = pgid;
	pthread_mutex_unlock(&ctx->run->mu);
}

/* ---- job_run lifecycle ------------------------------------------------- */

static int kind_index(const struct kind *k)
{
	for (int i = 0; kinds_at((size_t)i); i++)
		if (kinds_at((size_t)i) == k)
			return i;
	return 0;
}

static struct job_run *run_find(int64_t id)
{
	for (struct job_run *jr = E.runs; jr; jr = jr->next)
		if (jr->id == id)
			return jr;
	return NULL;
}

static struct job_run *run_create(struct q_job *row, const struct kind *k)
{
	struct job_run *jr = xcalloc(1, sizeof(*jr));
	jr->row = *row; /* takes ownership of the strings */
	memset(row, 0, sizeof(*row));
	jr->id = jr->row.id;
	jr->epoch = jr->row.epoch;
	jr->attempt = jr->row.attempt;
	snprintf(jr->op, sizeof(jr->op), "job-%lld-%d", (long long)jr->id, jr->attempt);
	jr->kind = k;
	jr->kind_idx = kind_index(k);
	size_t n = k->nsteps;
	jr->st = xcalloc(n, sizeof(*jr->st));
	jr->undo = xcalloc(n, sizeof(*jr->undo));
	jr->undo_len = xcalloc(n, sizeof(*jr->undo_len));
	jr->res = xcalloc(n, sizeof(*jr->res));
	jr->res_len = xcalloc(n, sizeof(*jr->res_len));
	jr->res_obj = xcalloc(n, sizeof(*jr->res_obj));
	jr->res_unpacked = xcalloc(n, sizeof(*jr->res_unpacked));
	msgpack_unpacked_init(&jr->params);
	size_t off = 0;
	if (!jr->row.params ||
	    msgpack_unpack_next(&jr->params, jr->row.params, jr->row.params_len, &off) !=
		    MSGPACK_UNPACK_SUCCESS) {
		/* no params: an empty map */
		static const char empty[] = {(char)0x80};
		off = 0;
		msgpack_unpack_next(&jr->params, empty, 1, &off);
	}
	jr->job_dir = xasprintf("%s/jobs/%lld", E.o.state_dir, (long long)jr->id);
	atomic_init(&jr->cancel, R_NONE);
	pthread_mutex_init(&jr->mu, NULL);
	pthread_cond_init(&jr->cv, NULL);
	msgpack_sbuffer_init(&jr->result_buf);
	uv_timer_init(E.loop, &jr->timer);
	jr->timer.data = jr;
	jr->next = E.runs;
	if (E.runs)
		E.runs->prev = jr;
	E.runs = jr;
	E.nrunning++;
	E.kind_running[jr->kind_idx]++;
	return jr;
}

static void run_free_cb(uv_handle_t *h)
{
	struct job_run *jr = h->data;
	size_t n = jr->kind->nsteps;
	for (size_t i = 0; i < n; i++) {
		free(jr->undo[i]);
		free(jr->res[i]);
		if (jr->res_unpacked[i])
			msgpack_unpacked_destroy(&jr->res_obj[i]);
	}
	free(jr->st);
	free(jr->undo);
	free(jr->undo_len);
	free(jr->res);
	free(jr->res_len);
	free(jr->res_obj);
	free(jr->res_unpacked);
	msgpack_unpacked_destroy(&jr->params);
	msgpack_sbuffer_destroy(&jr->result_buf);
	pthread_mutex_destroy(&jr->mu);
	pthread_cond_destroy(&jr->cv);
	free(jr->job_dir);
	free(jr->error);
	free(jr->fin_error);
	q_job_release(&jr->row);
	free(jr);
}

static void maybe_drained(void)
{
	if (E.draining && E.nrunning == 0 && E.drain_done) {
		void (*fn)(void) = E.drain_done;
		E.drain_done = NULL;
		fn();
	}
}

/* Forget a run (its final state is written or it is no longer ours). */
static void run_release(struct job_run *jr)
{
	pthread_mutex_lock(&E.ev_mu);
	seal_locked(jr); /* none left after its last step; written with the next drain */
	pthread_mutex_unlock(&E.ev_mu);
	if (jr->prev)
		jr->prev->next = jr->next;
	else
		E.runs = jr->next;
	if (jr->next)
		jr->next->prev = jr->prev;
	E.nrunning--;
	E.kind_running[jr->kind_idx]--;
	uv_timer_stop(&jr->timer);
	uv_close((uv_handle_t *)&jr->timer, run_free_cb);
	engine_kick();
	maybe_drained();
}

static void set_error(struct job_run *jr, const char *msg)
{
	if (!msg)
		return;
	free(jr->error);
	jr->error = xstrdup(msg);
}

/* ---- finishing --------------------------------------------------------- */

static void skipped_cb(int64_t job, void *arg)
{
	engine_state_event(job, JS_SKIPPED, "a job it needs did not succeed", false, 0);
}

static void finish_write(struct job_run *jr);

static void on_finish_retry(uv_timer_t *t)
{
	finish_write(t->data);
}

static void finished_cb(void *arg, int rc)
{
	struct job_run *jr = arg;
	if (rc) {
		/* The group was lost (disk full?): in the database the job is
		 * still ours and unfinished; write its end again shortly. */
		log_error(jr->op, jr->id, "cannot record the end of the job: %s; retrying in 1s",
			  bg_strerror(rc));
		uv_timer_start(&jr->timer, on_finish_retry, 1000, 0);
		return;
	}
	run_release(jr);
}

static int64_t backoff_us(int failures)
{
	int64_t d = E.o.retry_base_us;
	for (int i = 1; i < failures && d < E.o.retry_max_us; i++)
		d *= 2;
	if (d > E.o.retry_max_us)
		d = E.o.retry_max_us;
	/* full jitter on the upper half: [d/2, d) */
	int64_t half = d / 2;
	return half + (half > 0 ? (int64_t)(((uint64_t)rand() << 16 ^ (uint64_t)rand()) % (uint64_t)half) : 0);
}

/* Write the end of the attempt as jr->fin says, then release the run once
 * it is durable. */
static void finish_write(struct job_run *jr)
{
	struct q_finish *f = &jr->fin;
	f->now = now_us();
	jr->phase = P_FINISH;
	if (failpoint_hitf("%s:finish", jr->kind->name) == BG_ERR_FAILPOINT) {
		finished_cb(jr, BG_ERR_FAILPOINT);
		return;
	}
	int rc = E.q->ops->finish(E.q, jr->id, jr->epoch, f, skipped_cb, NULL);
	if (rc == BG_ERR_STALE) {
		log_warn(jr->op, jr->id, "job was claimed elsewhere; dropping it here");
		run_release(jr);
		return;
	}
	if (rc) {
		finished_cb(jr, rc);
		return;
	}
	if (strcmp(f->state, JS_QUEUED) == 0 && !f->close_attempt)
		log_info(jr->op, jr->id, "checkpointed before step %d; will resume", jr->cur + 1);
	else if (strcmp(f->state, JS_SUCCEEDED) == 0)
		log_debug(jr->op, jr->id, "job succeeded"); /* the common case: not logged by default */
	else
		log_info(jr->op, jr->id, "job %s%s%s", f->state, f->error ? ": " : "",
			 f->error ? f->error : "");
	engine_state_event(jr->id, f->state, f->error, f->has_exit, f->exit_code);
	commit_after(finished_cb, jr);
}

static void finish(struct job_run *jr, const struct q_finish *f)
{
	uv_timer_stop(&jr->timer);
	jr->fin = *f;
	free(jr->fin_error);
	jr->fin_error = f->error ? xstrdup(f->error) : NULL;
	jr->fin.error = jr->fin_error;
	if (jr->has_exit && !jr->fin.has_exit) {
		jr->fin.has_exit = true;
		jr->fin.exit_code = jr->exit_code;
	}
	finish_write(jr);
}

static void finish_success(struct job_run *jr)
{
	struct q_finish f = {.state = JS_SUCCEEDED, .outcome = "succeeded", .close_attempt = true};
	/* The job's result is its last step's result. */
	size_t n = jr->kind->nsteps;
	if (n && jr->res[n - 1]) {
		f.result = jr->res[n - 1];
		f.result_len = jr->res_len[n - 1];
	}
	finish(jr, &f);
}

/* Rollback is complete: decide the job's state from why it rolled back. */
static void finish_after_rollback(struct job_run *jr)
{
	struct q_finish f = {.close_attempt = true, .error = jr->error};
	switch (jr->reason) {
	case R_CANCEL:
		f.state = JS_CANCELLED;
		f.outcome = "cancelled";
		if (!f.error)
			f.error = "cancelled by request";
		break;
	case R_TIMEOUT:
		f.state = JS_FAILED;
		f.outcome = "timed_out";
		break;
	case R_CRASHES:
		f.state = JS_DEAD;
		f.outcome = "interrupted";
		break;
	case R_INTERRUPTED: {
		bool retry = jr->row.retry >= 0 ? jr->row.retry == 1 : jr->kind->retry_interrupted;
		f.outcome = "interrupted";
		if (retry) {
			f.state = JS_QUEUED;
			f.run_after = now_us();
		} else {
			f.state = JS_ROLLED_BACK;
		}
		break;
	}
	case R_FAILED:
	default:
		f.outcome = "failed";
		if (jr->permanent) {
			f.state = JS_FAILED;
		} else if (jr->row.failures + 1 < jr->row.max_attempts) {
			f.state = JS_QUEUED;
			f.count_failure = true;
			f.run_after = now_us() + backoff_us(jr->row.failures + 1);
		} else {
			f.state = jr->row.max_attempts > 1 ? JS_DEAD : JS_FAILED;
			f.count_failure = true;
		}
		break;
	}
	char *msg = NULL;
	if (strcmp(f.state, JS_DEAD) == 0 && jr->reason == R_FAILED) {
		msg = xasprintf("all %d attempts failed; last: %s", jr->row.max_attempts,
				jr->error ? jr->error : "?");
		f.error = msg;
	}
	finish(jr, &f);
	free(msg);
}

/* ---- running steps ----------------------------------------------------- */

static void do_work(uv_work_t *w)
{
	struct job_run *jr = w->data;
	const struct step_def *sd = &jr->kind->steps[jr->cur];
	jr->work_rc = sd->do_ ? sd->do_(&jr->ctx) : 0;
}

static void undo_work(uv_work_t *w)
{
	struct job_run *jr = w->data;
	const struct step_def *sd = &jr->kind->steps[jr->undo_idx];
	msgpack_unpacked rec;
	msgpack_unpacked_init(&rec);
	size_t off = 0;
	const msgpack_object *obj = NULL;
	if (jr->undo[jr->undo_idx] &&
	    msgpack_unpack_next(&rec, jr->undo[jr->undo_idx], jr->undo_len[jr->undo_idx], &off) ==
		    MSGPACK_UNPACK_SUCCESS)
		obj = &rec.data;
	static const msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
	jr->work_rc = sd->undo(&jr->ctx, obj ? obj : &nil);
	msgpack_unpacked_destroy(&rec);
}

static void ctx_setup(struct job_run *jr, int idx)
{
	jr->errbuf[0] = '\0';
	jr->err_permanent = false;
	jr->ctx.job_id = jr->id;
	jr->ctx.attempt = jr->attempt;
	jr->ctx.seq = idx + 1;
	jr->ctx.op = jr->op;
	jr->ctx.job_dir = jr->job_dir;
	jr->ctx.state_dir = E.o.state_dir;
	jr->ctx.params = &jr->params.data;
	jr->ctx.run = jr;
	jr->result_buf.size = 0;
	msgpack_packer_init(&jr->ctx.result, &jr->result_buf, msgpack_sbuffer_write);
	for (int i = 0; i < idx; i++) {
		if (jr->res[i] && !jr->res_unpacked[i]) {
			size_t off = 0;
			msgpack_unpacked_init(&jr->res_obj[i]);
			if (msgpack_unpack_next(&jr->res_obj[i], jr->res[i], jr->res_len[i], &off) ==
			    MSGPACK_UNPACK_SUCCESS)
				jr->res_unpacked[i] = true;
			else
				msgpack_unpacked_destroy(&jr->res_obj[i]);
		}
	}
}

static void after_do(uv_work_t *w, int status)
{
	struct job_run *jr = w->data;
	int idx = jr->cur;
	const struct step_def *sd = &jr->kind->steps[idx];
	int rc = status ? BG_ERR_CANCELED : jr->work_rc;
	int64_t now = now_us();

	pthread_mutex_lock(&jr->mu);
	jr->pgid = 0;
	pthread_mutex_unlock(&jr->mu);
	events_flush(jr); /* the step's output goes before its outcome */
	failpoint_hitf("%s/%s:after", jr->kind->name, sd->name);
	if (rc == 0 && failpoint_hitf("%s/%s:error", jr->kind->name, sd->name))
		rc = step_fail(&jr->ctx, BG_ERR_FAILPOINT, false, "failpoint %s/%s:error",
			       jr->kind->name, sd->name);

	enum reason cancel = (enum reason)atomic_load(&jr->cancel);
	if (cancel == R_LEASE) {
		run_release(jr);
		return;
	}
	if (rc == 0 && sd->record) {
		msgpack_unpacked res;
		size_t off = 0;
		msgpack_unpacked_init(&res);
		bool have = jr->result_buf.size &&
			    msgpack_unpack_next(&res, jr->result_buf.data, jr->result_buf.size, &off) ==
				    MSGPACK_UNPACK_SUCCESS;
		rc = sd->record(&jr->ctx, E.q, have ? &res.data : NULL);
		msgpack_unpacked_destroy(&res);
		if (rc && !jr->errbuf[0])
			step_fail(&jr->ctx, rc, false, "cannot record the step's result: %s (%s)",
				  bg_strerror(rc), E.q->errmsg);
	}
	if (rc == 0) {
		free(jr->res[idx]);
		jr->res[idx] = NULL;
		jr->res_len[idx] = 0;
		if (jr->result_buf.size) {
			jr->res[idx] = xmalloc(jr->result_buf.size);
			memcpy(jr->res[idx], jr->result_buf.data, jr->result_buf.size);
			jr->res_len[idx] = jr->result_buf.size;
		}
		int wrc = E.q->ops->step_done(E.q, jr->id, jr->epoch, jr->attempt, idx + 1,
					      jr->res[idx], jr->res_len[idx], now);
		if (wrc == BG_ERR_STALE) {
			run_release(jr);
			return;
		}
		jr->st[idx] = ST_DONE;
		step_event(jr, idx, "done", NULL);
		jr->cur++;
		if (cancel != R_NONE) {
			start_rollback(jr, cancel, NULL);
			return;
		}
		if (jr->drain_stop && jr->cur < (int)jr->kind->nsteps) {
			struct q_finish f = {.state = JS_QUEUED, .outcome = NULL,
					     .close_attempt = false, .run_after = now};
			finish(jr, &f);
			return;
		}
		run_next_step(jr);
		return;
	}
	/* failed, or cancelled while running */
	char *msg;
	if (cancel == R_TIMEOUT)
		msg = xasprintf("timed out after %.3gs in step '%s'", jr->row.timeout_us / 1e6,
				sd->name);
	else if (cancel == R_CANCEL)
		msg = xasprintf("cancelled during step '%s'", sd->name);
	else
		msg = xasprintf("step '%s' failed: %s", sd->name,
				jr->errbuf[0] ? jr->errbuf : bg_strerror(rc));
	E.q->ops->step_failed(E.q, jr->id, jr->epoch, jr->attempt, idx + 1, msg, now);
	jr->st[idx] = ST_FAILED;
	step_event(jr, idx, "failed", msg);
	jr->permanent = jr->err_permanent;
	log_info(jr->op, jr->id, "%s", msg);
	start_rollback(jr, cancel != R_NONE ? cancel : R_FAILED, msg);
	free(msg);
}

static void dispatch_do(struct job_run *jr)
{
	const struct step_def *sd = &jr->kind->steps[jr->cur];
	ctx_setup(jr, jr->cur);
	jr->phase = P_DO;
	jr->work.data = jr;
	if (uv_queue_work(E.loop, &jr->work, do_work, after_do) != 0) {
		step_fail(&jr->ctx, BG_ERR_NOMEM, false, "cannot start step '%s'", sd->name);
		after_do(&jr->work, UV_ECANCELED);
	}
}

static void begun_cb(void *arg, int rc)
{
	struct job_run *jr = arg;
	const struct step_def *sd = &jr->kind->steps[jr->cur];
	jr->phase = P_IDLE;
	if (rc) {
		char *msg = xasprintf("cannot record step '%s' in the op log: %s", sd->name,
				      bg_strerror(rc));
		jr->st[jr->cur] = ST_NONE; /* nothing of it is stored */
		start_rollback(jr, R_FAILED, msg);
		free(msg);
		return;
	}
	enum reason cancel = (enum reason)atomic_load(&jr->cancel);
	if (cancel == R_LEASE) {
		run_release(jr);
		return;
	}
	if (cancel != R_NONE) {
		start_rollback(jr, cancel, NULL);
		return;
	}
	/* The undo record is durable: the step may act. */
	failpoint_hitf("%s/%s:before", jr->kind->name, sd->name);
	dispatch_do(jr);
}

static void run_next_step(struct job_run *jr)
{
	if (jr->cur >= (int)jr->kind->nsteps) {
		finish_success(jr);
		return;
	}
	int idx = jr->cur;
	const struct step_def *sd = &jr->kind->steps[idx];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ctx_setup(jr, idx);
	int rc = sd->plan ? sd->plan(&jr->ctx, &pk) : 0;
	if (rc) {
		msgpack_sbuffer_destroy(&sb);
		char *msg = xasprintf("step '%s' cannot start: %s", sd->name,
				      jr->errbuf[0] ? jr->errbuf : bg_strerror(rc));
		jr->permanent = true;
		start_rollback(jr, R_FAILED, msg);
		free(msg);
		return;
	}
	if (sb.size == 0)
		msgpack_pack_nil(&pk);
	free(jr->undo[idx]);
	jr->undo_len[idx] = sb.size;
	jr->undo[idx] = msgpack_sbuffer_release(&sb);
	rc = E.q->ops->step_begin(E.q, jr->id, jr->epoch, jr->attempt, idx + 1, sd->name,
				  jr->undo[idx], jr->undo_len[idx], now_us());
	if (rc == BG_ERR_STALE) {
		run_release(jr);
		return;
	}
	if (rc) {
		begun_cb(jr, rc);
		return;
	}
	jr->st[idx] = ST_BEGUN;
	step_event(jr, idx, "begin", NULL);
	jr->phase = P_COMMIT;
	commit_after(begun_cb, jr);
}

/* ---- rollback ---------------------------------------------------------- */

static void after_undo(uv_work_t *w, int status)
{
	struct job_run *jr = w->data;
	int idx = jr->undo_idx;
	const struct step_def *sd = &jr->kind->steps[idx];
	int rc = status ? BG_ERR_CANCELED : jr->work_rc;
	events_flush(jr);
	failpoint_hitf("%s/%s:undo-after", jr->kind->name, sd->name);
	char *msg = NULL;
	if (rc)
		msg = xasprintf("undo of step '%s' failed: %s", sd->name,
				jr->errbuf[0] ? jr->errbuf : bg_strerror(rc));
	int wrc = E.q->ops->undo_end(E.q, jr->id, jr->epoch, jr->attempt, idx + 1, msg, now_us());
	if (wrc == BG_ERR_STALE) {
		free(msg);
		run_release(jr);
		return;
	}
	jr->st[idx] = ST_UNDONE;
	step_event(jr, idx, rc ? "undo_failed" : "undone", msg);
	if (msg) {
		log_error(jr->op, jr->id, "%s", msg);
		char *e = xasprintf("%s; %s", jr->error ? jr->error : "rollback", msg);
		free(jr->error);
		jr->error = e;
		free(msg);
	}
	jr->undo_idx--;
	undo_next(jr);
}

static void undo_next(struct job_run *jr)
{
	if (atomic_load(&jr->cancel) == R_LEASE) {
		run_release(jr);
		return;
	}
	while (jr->undo_idx >= 0 &&
	       (jr->st[jr->undo_idx] == ST_NONE || jr->st[jr->undo_idx] == ST_UNDONE))
		jr->undo_idx--;
	if (jr->undo_idx < 0) {
		finish_after_rollback(jr);
		return;
	}
	if (E.draining) {
		/* Leave the rest for the next start: the job stays ours and
		 * rolling_back, and recovery carries on from here. */
		log_info(jr->op, jr->id, "draining: rollback continues after restart");
		run_release(jr);
		return;
	}
	int idx = jr->undo_idx;
	const struct step_def *sd = &jr->kind->steps[idx];
	int64_t now = now_us();
	int rc = E.q->ops->undo_begin(E.q, jr->id, jr->epoch, jr->attempt, idx + 1, now);
	if (rc == BG_ERR_STALE) {
		run_release(jr);
		return;
	}
	step_event(jr, idx, "undo", NULL);
	failpoint_hitf("%s/%s:undo-before", jr->kind->name, sd->name);
	if (!sd->undo) {
		jr->work_rc = 0;
		jr->work.data = jr;
		after_undo(&jr->work, 0);
		return;
	}
	ctx_setup(jr, idx);
	jr->phase = P_UNDO;
	jr->work.data = jr;
	if (uv_queue_work(E.loop, &jr->work, undo_work, after_undo) != 0) {
		jr->work_rc = BG_ERR_NOMEM;
		after_undo(&jr->work, 0);
	}
}

/* Names of rollback reasons as stored with the job (recovery reads them). */
static const char *reason_name(const struct job_run *jr)
{
	switch (jr->reason) {
	case R_CANCEL: return "cancelled";
	case R_TIMEOUT: return "timed_out";
	case R_INTERRUPTED: return "interrupted";
	case R_CRASHES: return "crashes";
	case R_LEASE: return "lease";
	case R_FAILED:
	default: return jr->permanent ? "failed_permanent" : "failed";
	}
}

static void reason_parse(struct job_run *jr, const char *name)
{
	static const struct {
		const char *name;
		enum reason r;
		bool permanent;
	} map[] = {
		{"cancelled", R_CANCEL, false},     {"timed_out", R_TIMEOUT, false},
		{"interrupted", R_INTERRUPTED, false}, {"crashes", R_CRASHES, false},
		{"failed_permanent", R_FAILED, true}, {"failed", R_FAILED, false},
	};
	jr->reason = R_INTERRUPTED;
	for (size_t i = 0; name && i < ARRAY_LEN(map); i++)
		if (strcmp(name, map[i].name) == 0) {
			jr->reason = map[i].r;
			jr->permanent = map[i].permanent;
		}
}

static void rollback_recorded(void *arg, int rc)
{
	struct job_run *jr = arg;
	jr->phase = P_IDLE;
	/* Undo runs even if the record was lost (rc != 0): undo is idempotent
	 * and the op log gets each undo's outcome as it happens. */
	undo_next(jr);
}

/*
 * Turn the run around.  The failure and the decision to roll back are made
 * durable before the first undo runs, so that after a crash the op log still
 * says why the job rolled back (and recovery finishes it the same way).
 */
static void start_rollback(struct job_run *jr, enum reason why, const char *error)
{
	if (jr->rolling_back)
		return;
	jr->rolling_back = true;
	jr->reason = why;
	set_error(jr, error);
	if (!jr->error) {
		if (why == R_CANCEL)
			set_error(jr, "cancelled by request");
		else if (why == R_TIMEOUT)
			set_error(jr, "timed out");
	}
	uv_timer_stop(&jr->timer);
	int rc = E.q->ops->set_state(E.q, jr->id, jr->epoch, JS_ROLLING_BACK, jr->error,
				     reason_name(jr));
	if (rc == BG_ERR_STALE) {
		run_release(jr);
		return;
	}
	engine_state_event(jr->id, JS_ROLLING_BACK, jr->error, false, 0);
	jr->undo_idx = (int)jr->kind->nsteps - 1;
	jr->phase = P_COMMIT;
	commit_after(rollback_recorded, jr);
}

/* ---- cancel, timeout, leases ------------------------------------------- */

static void interrupt_run(struct job_run *jr, enum reason why)
{
	/* A rollback runs to its end: undo bodies must not see a cancel (only
	 * a lost lease stops it, at the next undo boundary). */
	if (jr->rolling_back && why != R_LEASE)
		return;
	int expected = R_NONE;
	if (!atomic_compare_exchange_strong(&jr->cancel, &expected, why))
		return;
	pthread_mutex_lock(&jr->mu);
	pthread_cond_broadcast(&jr->cv);
	if (jr->pgid > 0)
		kill(-jr->pgid, SIGKILL);
	pthread_mutex_unlock(&jr->mu);
	/* Between steps (waiting for a commit) the callback sees the flag; a
	 * run in P_IDLE with nothing pending is turned around here. */
	if (jr->phase == P_IDLE && !jr->rolling_back)
		start_rollback(jr, why, NULL);
}

static void on_timeout(uv_timer_t *t)
{
	struct job_run *jr = t->data;
	if (jr->phase == P_FINISH)
		return;
	log_info(jr->op, jr->id, "timed out after %.3gs", jr->row.timeout_us / 1e6);
	interrupt_run(jr, R_TIMEOUT);
}

bool engine_cancel(int64_t job)
{
	struct job_run *jr = run_find(job);
	if (!jr)
		return false;
	if (!jr->rolling_back)
		log_info(jr->op, jr->id, "cancel requested");
	interrupt_run(jr, R_CANCEL);
	return true;
}

static void on_heartbeat(uv_timer_t *t)
{
	size_t n = (size_t)E.nrunning, i = 0;
	if (n == 0)
		return;
	int64_t *ids = xmalloc(n * sizeof(*ids));
	int64_t *epochs = xmalloc(n * sizeof(*epochs));
	bool *lost = xcalloc(n, sizeof(*lost));
	struct job_run **runs = xmalloc(n * sizeof(*runs));
	for (struct job_run *jr = E.runs; jr && i < n; jr = jr->next, i++) {
		ids[i] = jr->id;
		epochs[i] = jr->epoch;
		runs[i] = jr;
	}
	int rc = E.q->ops->heartbeat(E.q, E.o.node, now_us() + E.o.lease_ttl_us, ids, epochs, i,
				     lost);
	if (rc == 0)
		for (size_t k = 0; k < i; k++)
			if (lost[k]) {
				log_error(runs[k]->op, runs[k]->id,
					  "lease lost: stopping the job's steps here");
				interrupt_run(runs[k], R_LEASE);
			}
	free(ids);
	free(epochs);
	free(lost);
	free(runs);
}

/* ---- claiming ---------------------------------------------------------- */

static void on_due(uv_timer_t *t)
{
	E.due_at = 0;
	engine_kick();
}

static void start_run(struct job_run *jr, int resume_from)
{
	if (jr->row.timeout_us > 0)
		uv_timer_start(&jr->timer, on_timeout, (uint64_t)(jr->row.timeout_us / 1000), 0);
	jr->cur = resume_from;
	run_next_step(jr);
}

/* Load the op log of the run's attempt into memory.  Returns the index of
 * the first step not done. */
static int load_steps(struct job_run *jr, int *last_state_idx)
{
	struct q_step *steps;
	size_t n;
	int first_not_done = 0;
	*last_state_idx = -1;
	if (E.q->ops->steps(E.q, jr->id, jr->attempt, &steps, &n) != 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		int idx = steps[i].seq - 1;
		if (idx < 0 || idx >= (int)jr->kind->nsteps)
			continue;
		const char *s = steps[i].state;
		jr->undo[idx] = steps[i].undo;
		jr->undo_len[idx] = steps[i].undo_len;
		steps[i].undo = NULL;
		jr->res[idx] = steps[i].result;
		jr->res_len[idx] = steps[i].result_len;
		steps[i].result = NULL;
		if (strcmp(s, SS_DONE) == 0)
			jr->st[idx] = ST_DONE;
		else if (strcmp(s, SS_BEGUN) == 0)
			jr->st[idx] = ST_BEGUN;
		else if (strcmp(s, SS_FAILED) == 0) {
			jr->st[idx] = ST_FAILED;
			if (steps[i].error)
				set_error(jr, steps[i].error);
		} else if (strcmp(s, SS_UNDOING) == 0)
			jr->st[idx] = ST_BEGUN; /* undo again: undo is idempotent */
		else
			jr->st[idx] = ST_UNDONE;
		if (idx > *last_state_idx)
			*last_state_idx = idx;
		q_step_release(&steps[i]);
	}
	free(steps);
	while (first_not_done < (int)jr->kind->nsteps && jr->st[first_not_done] == ST_DONE)
		first_not_done++;
	return first_not_done;
}

static void claim(void)
{
	int free_slots = E.o.max_running - E.nrunning;
	if (free_slots <= 0 || E.draining || !E.started)
		return;
	struct q_claim_limit lim[64];
	size_t nl = 0;
	for (int i = 0; i < E.nkinds && nl < ARRAY_LEN(lim); i++) {
		const struct kind *k = kinds_at((size_t)i);
		int limit = config_kind_limit(E.o.cfg, k->name);
		int slots = limit > 0 ? limit - E.kind_running[i] : free_slots;
		if (slots > free_slots)
			slots = free_slots;
		if (slots > 0)
			lim[nl++] = (struct q_claim_limit){k->name, slots};
	}
	if (nl == 0)
		return;
	int want = free_slots > 256 ? 256 : free_slots;
	struct q_job *jobs = xcalloc((size_t)want, sizeof(*jobs));
	int n = 0;
	int64_t now = now_us();
	int rc = E.q->ops->claim(E.q, E.o.node, now, now + E.o.lease_ttl_us, lim, nl, want, jobs, &n);
	if (rc)
		log_error(NULL, 0, "claim failed: %s (%s)", bg_strerror(rc), E.q->errmsg);
	if (n > 0)
		failpoint_hit("engine:claim");
	for (int i = 0; i < n; i++) {
		const struct kind *k = kinds_find(jobs[i].kind);
		bool resumed = jobs[i].attempt_open;
		struct job_run *jr = run_create(&jobs[i], k);
		log_debug(jr->op, jr->id, "claimed (%s, epoch %lld)", k->name, (long long)jr->epoch);
		engine_state_event(jr->id, JS_RUNNING, NULL, false, 0);
		int from = 0;
		if (resumed) {
			int last;
			from = load_steps(jr, &last);
		}
		start_run(jr, from);
	}
	free(jobs);
	if (n == want) {
		E.claim_wanted = true; /* more may be ready */
		return;
	}
	int64_t due = 0;
	E.q->ops->next_due(E.q, now, &due);
	if (due && (E.due_at == 0 || due < E.due_at)) {
		E.due_at = due;
		int64_t ms = (due - now) / 1000 + 1;
		uv_timer_start(&E.due_timer, on_due, (uint64_t)(ms > 0 ? ms : 1), 0);
	}
}

static void pre_flush(void)
{
	if (E.claim_wanted) {
		E.claim_wanted = false;
		claim();
	}
}

void engine_kick(void)
{
	E.claim_wanted = true;
}

/* ---- recovery ---------------------------------------------------------- */

struct held_list {
	struct q_job *jobs;
	size_t n, cap;
};

static int collect_held(const struct q_job *j, void *arg)
{
	struct held_list *h = arg;
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->jobs = xrealloc(h->jobs, h->cap * sizeof(*h->jobs));
	}
	/* copy: the callback's row is released after we return */
	struct q_job *c = &h->jobs[h->n++];
	*c = *j;
	c->name = j->name ? xstrdup(j->name) : NULL;
	c->kind = j->kind ? xstrdup(j->kind) : NULL;
	c->state = j->state ? xstrdup(j->state) : NULL;
	c->lease_owner = j->lease_owner ? xstrdup(j->lease_owner) : NULL;
	c->error = j->error ? xstrdup(j->error) : NULL;
	c->key = j->key ? xstrdup(j->key) : NULL;
	c->rollback_reason = j->rollback_reason ? xstrdup(j->rollback_reason) : NULL;
	c->params = NULL;
	c->result = NULL;
	if (j->params) {
		c->params = xmalloc(j->params_len);
		memcpy(c->params, j->params, j->params_len);
	}
	if (j->result) {
		c->result = xmalloc(j->result_len);
		memcpy(c->result, j->result, j->result_len);
	}
	return 0;
}

static void recover_one(struct q_job *row, bool clean)
{
	const struct kind *k = kinds_find(row->kind);
	int64_t epoch;
	int crashes = clean ? 0 : 1;
	int rc = E.q->ops->reclaim(E.q, row->id, row->epoch, E.o.node,
				   now_us() + E.o.lease_ttl_us, crashes, &epoch);
	if (rc) {
		log_warn(NULL, row->id, "cannot take back job at recovery: %s", bg_strerror(rc));
		q_job_release(row);
		return;
	}
	if (!k) {
		log_error(NULL, row->id, "recovery: kind '%s' is not known to this daemon; job left "
			  "as it is", row->kind);
		q_job_release(row);
		return;
	}
	row->epoch = epoch;
	row->crashes += crashes;
	bool was_rolling_back = strcmp(row->state, JS_ROLLING_BACK) == 0;
	struct job_run *jr = run_create(row, k);
	int last;
	int first_not_done = load_steps(jr, &last);
	if (jr->row.timeout_us > 0)
		uv_timer_start(&jr->timer, on_timeout, (uint64_t)(jr->row.timeout_us / 1000), 0);

	if (jr->row.crashes >= E.o.max_crashes) {
		char *msg = xasprintf("dead: the daemon crashed %d times in a row while this job "
				      "ran", jr->row.crashes);
		log_error(jr->op, jr->id, "%s", msg);
		start_rollback(jr, R_CRASHES, msg);
		free(msg);
		return;
	}
	if (was_rolling_back) {
		log_info(jr->op, jr->id, "recovery: continuing rollback (%s)",
			 jr->row.rollback_reason ? jr->row.rollback_reason : "?");
		jr->rolling_back = true;
		reason_parse(jr, jr->row.rollback_reason);
		set_error(jr, jr->row.error);
		jr->undo_idx = (int)k->nsteps - 1;
		undo_next(jr);
		return;
	}
	for (int i = 0; i <= last; i++) {
		if (jr->st[i] == ST_FAILED) {
			log_info(jr->op, jr->id, "recovery: step %d had failed; rolling back", i + 1);
			start_rollback(jr, R_FAILED, jr->error);
			return;
		}
		if (jr->st[i] == ST_UNDONE) {
			start_rollback(jr, R_INTERRUPTED, "interrupted by a daemon restart");
			return;
		}
	}
	if (last >= 0 && jr->st[last] == ST_BEGUN && !k->steps[last].resumable) {
		char *msg = xasprintf("interrupted by a daemon restart during step '%s', which "
				      "cannot resume", k->steps[last].name);
		log_info(jr->op, jr->id, "recovery: %s; rolling back", msg);
		start_rollback(jr, R_INTERRUPTED, msg);
		free(msg);
		return;
	}
	log_info(jr->op, jr->id, "recovery: resuming at step %d", first_not_done + 1);
	engine_state_event(jr->id, JS_RUNNING, "resumed after a daemon restart", false, 0);
	jr->cur = first_not_done;
	run_next_step(jr);
}

int engine_start(bool clean)
{
	struct held_list h = {0};
	int rc = E.q->ops->held(E.q, E.o.node, collect_held, &h);
	if (rc) {
		free(h.jobs);
		return rc;
	}
	if (h.n)
		log_info(NULL, 0, "recovery: %zu job(s) held by this node before the restart "
			 "(previous stop %s)", h.n, clean ? "clean" : "was a crash");
	for (size_t i = 0; i < h.n; i++)
		recover_one(&h.jobs[i], clean);
	free(h.jobs);
	E.started = true;
	engine_kick();
	return 0;
}

/* ---- setup ------------------------------------------------------------- */

int engine_init(uv_loop_t *loop, struct queue *q, const struct engine_opts *o)
{
	E.loop = loop;
	E.q = q;
	E.o = *o;
	while (kinds_at((size_t)E.nkinds))
		E.nkinds++;
	E.kind_running = xcalloc((size_t)E.nkinds + 1, sizeof(int));
	pthread_mutex_init(&E.ev_mu, NULL);
	pthread_cond_init(&E.ev_cv, NULL);
	E.loop_thread = pthread_self();
	E.ev_tail = &E.ev_head;
	uv_async_init(loop, &E.ev_async, on_ev_async);
	uv_timer_init(loop, &E.out_timer);
	uv_timer_init(loop, &E.due_timer);
	uv_timer_init(loop, &E.heartbeat);
	uint64_t hb = (uint64_t)(o->lease_ttl_us / 3000);
	uv_timer_start(&E.heartbeat, on_heartbeat, hb ? hb : 1, hb ? hb : 1);
	uv_unref((uv_handle_t *)&E.heartbeat);
	commit_set_pre_flush(pre_flush);
	srand((unsigned)(now_us() ^ getpid()));
	return 0;
}

void engine_drain(void (*done)(void))
{
	E.draining = true;
	E.drain_done = done;
	for (struct job_run *jr = E.runs; jr; jr = jr->next)
		jr->drain_stop = true;
	/* Runs between steps (waiting on a commit) stop at their next step
	 * boundary; runs mid-undo stop after that undo. */
	maybe_drained();
}

int engine_running(void)
{
	return E.nrunning;
}

int engine_running_kind(const char *kind)
{
	const struct kind *k = kinds_find(kind);
	return k && E.kind_running ? E.kind_running[kind_index(k)] : 0;
}

void engine_close(void)
{
	uv_close((uv_handle_t *)&E.ev_async, NULL);
	uv_close((uv_handle_t *)&E.out_timer, NULL);
	uv_close((uv_handle_t *)&E.due_timer, NULL);
	uv_close((uv_handle_t *)&E.heartbeat, NULL);
}

void engine_list_failpoints(void (*fn)(const char *name, void *arg), void *arg)
{
	static const char *const engine_points[] = {"engine:claim", "engine:synced"};
	for (size_t i = 0; i < ARRAY_LEN(engine_points); i++)
		fn(engine_points[i], arg);
	static const char *const phases[] = {"before", "after", "error", "undo-before",
					     "undo-after"};
	for (size_t i = 0; kinds_at(i); i++) {
		const struct kind *k = kinds_at(i);
		for (size_t s = 0; s < k->nsteps; s++)
			for (size_t p = 0; p < ARRAY_LEN(phases); p++) {
				char name[160];
				snprintf(name, sizeof(name), "%s/%s:%s", k->name, k->steps[s].name,
					 phases[p]);
				fn(name, arg);
			}
		char name[160];
		snprintf(name, sizeof(name), "%s:finish", k->name);
		fn(name, arg);
	}
}
