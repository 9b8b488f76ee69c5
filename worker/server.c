/*
 * server.c: the RPC server (see server.h and common/protocol.h).
 *
 * One connection reads one request at a time: while a request is in progress
 * (a submit waiting for its commit to be durable, a tail streaming events),
 * reading stops, so a client can neither grow our buffers past one frame nor
 * reorder its replies.  A frame header announcing more than BG_RPC_MAX_FRAME,
 * or a body that is not one msgpack map, gets an error frame and the
 * connection is closed; nothing else happens.
 *
 * Memory: a conn is freed in its close callback, and only when no commit
 * callback still refers to it (refs).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobstore.h"
#include "commit.h"
#include "engine.h"
#include "err.h"
#include "failpoint.h"
#include "imgsrc.h"
#include "kind.h"
#include "log.h"
#include "mpk.h"
#include "protocol.h"
#include "queue.h"
#include "rpc.h"
#include "server.h"
#include "spec.h"
#include "util.h"
#include "vmrpc.h"

#define TAIL_HIGH_WATER (1u << 20)

struct sub;

struct conn {
	uv_pipe_t pipe;
	struct conn *prev, *next;
	char *buf;
	size_t len, cap;
	bool busy, closing, reading;
	int refs;
	unsigned uid;
	uint32_t req_id;
	char op[64];
	struct sub *sub;
};

struct sub {
	struct conn *c;
	uint32_t id;
	int64_t submission; /* 0 for a single job */
	int64_t *jobs;
	int64_t *next_seq;
	size_t njobs;
	bool follow;
	struct sub *prev, *next;
};

static struct {
	uv_loop_t *loop;
	struct queue *q;
	struct server_opts o;
	uv_pipe_t listener;
	struct conn *conns;
	struct sub *subs;
	bool stopping;
	bool pruning; /* an image.prune is in the pool */
} S;

static void conn_close(struct conn *c);
static void conn_next(struct conn *c);
static void sub_pump(struct sub *s);
static void conn_resume_read(struct conn *c);

/* ---- sending ------------------------------------------------------------- */

struct wreq {
	uv_write_t req;
	struct conn *c;
	char *data;
};

static void on_write(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct conn *c = w->c;
	free(w->data);
	free(w);
	c->refs--;
	if (status < 0 && !c->closing) {
		conn_close(c);
		return;
	}
	if (c->closing) {
		if (c->refs == 0 && !uv_is_closing((uv_handle_t *)&c->pipe))
			conn_close(c);
		return;
	}
	if (c->sub && c->pipe.write_queue_size < TAIL_HIGH_WATER / 2)
		sub_pump(c->sub);
}

/* Send one frame whose body is a then b (both copied; b may be NULL). */
static void conn_send2(struct conn *c, const char *a, size_t alen, const void *b, size_t blen)
{
	size_t len = alen + blen;
	if (c->closing)
		return;
	if (len > BG_RPC_MAX_FRAME) {
		log_error(c->op, 0, "reply of %zu bytes exceeds the frame limit", len);
		conn_close(c);
		return;
	}
	struct wreq *w = xmalloc(sizeof(*w));
	w->c = c;
	w->data = xmalloc(len + 4);
	rpc_frame_hdr((unsigned char *)w->data, (uint32_t)len);
	memcpy(w->data + 4, a, alen);
	if (blen)
		memcpy(w->data + 4 + alen, b, blen);
	uv_buf_t buf = uv_buf_init(w->data, (unsigned)(len + 4));
	c->refs++;
	if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write) != 0) {
		c->refs--;
		free(w->data);
		free(w);
		conn_close(c);
	}
}

/* Send one frame: takes the packed body (copied). */
static void conn_send(struct conn *c, const char *body, size_t len)
{
	conn_send2(c, body, len, NULL, 0);
}

struct reply {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

/* Start a reply {id, ok: true, result: ...}: the caller packs the result. */
static void reply_begin(struct reply *r, uint32_t id)
{
	msgpack_sbuffer_init(&r->sb);
	msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
	msgpack_pack_map(&r->pk, 3);
	mpk_kv_int(&r->pk, "id", id);
	mpk_kv_bool(&r->pk, "ok", true);
	mpk_pack_str(&r->pk, "result");
}

static void reply_end(struct conn *c, struct reply *r)
{
	conn_send(c, r->sb.data, r->sb.size);
	msgpack_sbuffer_destroy(&r->sb);
	c->busy = false;
	conn_next(c);
}

static void send_error(struct conn *c, uint32_t id, int code, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	mpk_kv_int(&pk, "id", id);
	mpk_kv_bool(&pk, "ok", false);
	mpk_pack_str(&pk, "error");
	msgpack_pack_map(&pk, 2);
	mpk_kv_str(&pk, "code", bg_errname(code));
	mpk_kv_str(&pk, "message", msg);
	conn_send(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void reply_verror(struct conn *c, uint32_t id, int code, const char *fmt, va_list ap)
{
	struct sb m;
	sb_init(&m);
	sb_vaddf(&m, fmt, ap);
	log_debug(c->op, 0, "error reply: %s", m.buf);
	send_error(c, id, code, m.buf ? m.buf : bg_strerror(code));
	sb_release(&m);
	c->busy = false;
	conn_next(c);
}

static void reply_error(struct conn *c, uint32_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply_error(struct conn *c, uint32_t id, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_verror(c, id, code, fmt, ap);
	va_end(ap);
}

/* ---- shapes -------------------------------------------------------------- */

static void pack_raw_or_nil(msgpack_packer *pk, const char *k, const char *raw, size_t len)
{
	mpk_kv_raw(pk, k, raw, len);
}

static void pack_job(msgpack_packer *pk, const struct q_job *j, bool full, const int64_t *needs,
		     size_t nneeds)
{
	int n = 9 + j->has_exit;
	if (full)
		n += 12 + (j->key != NULL);
	msgpack_pack_map(pk, (size_t)n);
	mpk_kv_int(pk, "id", j->id);
	mpk_kv_int(pk, "submission", j->submission);
	mpk_kv_str(pk, "name", j->name);
	mpk_kv_str(pk, "kind", j->kind);
	mpk_kv_str(pk, "state", j->state);
	mpk_kv_int(pk, "priority", j->priority);
	mpk_kv_int(pk, "attempts", j->attempt);
	mpk_kv_int(pk, "max_attempts", j->max_attempts);
	mpk_kv_int(pk, "created", j->created);
	if (j->has_exit)
		mpk_kv_int(pk, "exit_code", j->exit_code);
	if (!full)
		return;
	mpk_kv_int(pk, "epoch", j->epoch);
	mpk_kv_int(pk, "run_after", j->run_after);
	mpk_kv_int(pk, "timeout", j->timeout_us);
	if (j->started)
		mpk_kv_int(pk, "started", j->started);
	else
		mpk_kv_nil(pk, "started");
	if (j->finished)
		mpk_kv_int(pk, "finished", j->finished);
	else
		mpk_kv_nil(pk, "finished");
	mpk_kv_str(pk, "error", j->error);
	pack_raw_or_nil(pk, "result", j->result, j->result_len);
	mpk_pack_str(pk, "needs");
	msgpack_pack_array(pk, nneeds);
	for (size_t i = 0; i < nneeds; i++)
		msgpack_pack_int64(pk, needs[i]);
	mpk_kv_str(pk, "when", j->when_always ? "always" : "on_success");
	mpk_kv_str(pk, "lease_owner", j->lease_owner);
	if (j->lease_expires)
		mpk_kv_int(pk, "lease_expires", j->lease_expires);
	else
		mpk_kv_nil(pk, "lease_expires");
	if (j->params && j->params_len)
		mpk_kv_raw(pk, "params", j->params, j->params_len);
	else {
		mpk_pack_str(pk, "params");
		msgpack_pack_map(pk, 0);
	}
	if (j->key)
		mpk_kv_str(pk, "key", j->key);
}

/* ---- methods ------------------------------------------------------------- */

typedef void (*method_fn)(struct conn *c, uint32_t id, const msgpack_object *params);

static void m_ping(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct reply r;
	reply_begin(&r, id);
	msgpack_pack_map(&r.pk, 5);
	mpk_kv_int(&r.pk, "version", BG_PROTOCOL_VERSION);
	mpk_kv_str(&r.pk, "node", S.o.node);
	mpk_kv_int(&r.pk, "pid", getpid());
	mpk_kv_str(&r.pk, "state_dir", S.o.state_dir);
	mpk_kv_str(&r.pk, "db", S.o.db_desc);
	reply_end(c, &r);
}

struct submit_op {
	struct conn *c;
	uint32_t id;
	int64_t submission;
	bool existing;
	size_t njobs;
	int64_t *ids;
	char **names, **kinds;
};

static void submit_op_free(struct submit_op *so)
{
	for (size_t i = 0; i < so->njobs; i++) {
		free(so->names[i]);
		free(so->kinds[i]);
	}
	free(so->names);
	free(so->kinds);
	free(so->ids);
	free(so);
}

static int pack_summary_cb(const struct q_job *j, void *arg)
{
	pack_job(arg, j, false, NULL, 0);
	return 0;
}

struct counter {
	size_t n;
};

static int count_cb(const struct q_job *j, void *arg)
{
	((struct counter *)arg)->n++;
	return 0;
}

static void submit_durable(void *arg, int rc)
{
	struct submit_op *so = arg;
	struct conn *c = so->c;
	c->refs--;
	if (c->closing) {
		if (c->refs == 0)
			conn_close(c);
		submit_op_free(so);
		return;
	}
	if (rc) {
		reply_error(c, so->id, rc, "submission not stored: %s (%s)", bg_strerror(rc),
			    S.q->errmsg);
		submit_op_free(so);
		return;
	}
	struct reply r;
	reply_begin(&r, so->id);
	msgpack_pack_map(&r.pk, 3);
	mpk_kv_int(&r.pk, "submission", so->submission);
	mpk_kv_bool(&r.pk, "existing", so->existing);
	mpk_pack_str(&r.pk, "jobs");
	if (so->existing) {
		struct q_list_filter f = {.submission = so->submission, .limit = 1000000};
		struct counter cnt = {0};
		S.q->ops->job_list(S.q, &f, count_cb, &cnt);
		msgpack_pack_array(&r.pk, cnt.n);
		S.q->ops->job_list(S.q, &f, pack_summary_cb, &r.pk);
	} else {
		msgpack_pack_array(&r.pk, so->njobs);
		for (size_t i = 0; i < so->njobs; i++) {
			msgpack_pack_map(&r.pk, 4);
			mpk_kv_int(&r.pk, "id", so->ids[i]);
			mpk_kv_str(&r.pk, "name", so->names[i]);
			mpk_kv_str(&r.pk, "kind", so->kinds[i]);
			mpk_kv_str(&r.pk, "state", JS_QUEUED);
		}
	}
	reply_end(c, &r);
	submit_op_free(so);
}

/* Name -> index of the jobs in a spec, for `needs:` (open addressing). */
struct name_index {
	size_t cap;
	int64_t *slot; /* index + 1, 0 empty */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static void index_build(struct name_index *ix, const struct spec *sp)
{
	ix->cap = 16;
	while (ix->cap < sp->njobs * 2)
		ix->cap *= 2;
	ix->slot = xcalloc(ix->cap, sizeof(*ix->slot));
	for (size_t i = 0; i < sp->njobs; i++) {
		size_t h = hash_str(sp->jobs[i].name) & (ix->cap - 1);
		while (ix->slot[h])
			h = (h + 1) & (ix->cap - 1);
		ix->slot[h] = (int64_t)i + 1;
	}
}

static int64_t index_find(const struct name_index *ix, const struct spec *sp, const char *name)
{
	size_t h = hash_str(name) & (ix->cap - 1);
	while (ix->slot[h]) {
		size_t i = (size_t)(ix->slot[h] - 1);
		if (strcmp(sp->jobs[i].name, name) == 0)
			return (int64_t)i;
		h = (h + 1) & (ix->cap - 1);
	}
	return -1;
}

/* The directory part of an absolute file name ("/" for "/x"). */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
}

static void m_submit(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct spec sp;
	char *err = NULL;
	int rc;
	char *path = mpk_dup_str(params, "path");
	char *key = mpk_dup_str(params, "key");
	const char *text = NULL;
	size_t text_len = 0;
	const msgpack_object *jobs = mpk_get(params, "jobs");

	if (mpk_get_str(params, "spec", &text, &text_len) == 0) {
		rc = spec_parse(text, text_len, path ? path : "spec.yaml", &sp, &err);
	} else if (jobs) {
		rc = spec_from_msgpack(jobs, path, &sp, &err);
	} else {
		reply_error(c, id, BG_ERR_INVAL, "job.submit needs 'spec' (YAML text) or 'jobs'");
		free(path);
		free(key);
		return;
	}
	if (rc == 0) {
		char *dir = mpk_dup_str(params, "dir");
		if (!dir && path && path[0] == '/')
			dir = dir_of(path);
		if (dir && (rc = spec_set_dir(&sp, dir, &err)) != 0)
			spec_release(&sp);
		free(dir);
	}
	if (rc) {
		reply_error(c, id, BG_ERR_SPEC, "%s", err ? err : "invalid spec");
		free(err);
		free(path);
		free(key);
		return;
	}
	free(err);

	int64_t now = now_us();
	struct q_newjob *nj = xcalloc(sp.njobs, sizeof(*nj));
	size_t *needs = NULL, nneeds_total = 0;
	for (size_t i = 0; i < sp.njobs; i++)
		nneeds_total += sp.jobs[i].nneeds;
	needs = xcalloc(nneeds_total + 1, sizeof(*needs));
	struct name_index ix;
	index_build(&ix, &sp);
	size_t np = 0;
	for (size_t i = 0; i < sp.njobs; i++) {
		const struct spec_job *j = &sp.jobs[i];
		nj[i] = (struct q_newjob){
			.name = j->name, .kind = j->kind, .params = j->params,
			.params_len = j->params_len, .priority = j->priority,
			.max_attempts = j->max_attempts, .timeout_us = j->timeout_us,
			.run_after = now + j->delay_us, .retry = j->retry,
			.when_always = j->when_always, .needs = &needs[np], .nneeds = j->nneeds,
		};
		for (size_t k = 0; k < j->nneeds; k++)
			needs[np++] = (size_t)index_find(&ix, &sp, j->needs[k]);
	}
	free(ix.slot);

	struct submit_op *so = xcalloc(1, sizeof(*so));
	so->c = c;
	so->id = id;
	so->njobs = sp.njobs;
	so->ids = xcalloc(sp.njobs + 1, sizeof(*so->ids));
	struct q_submit qs = {
		.name = sp.name, .path = path, .key = key, .op = c->op,
		.spec = text, .spec_len = text_len, .jobs = nj, .njobs = sp.njobs, .now = now,
	};
	rc = S.q->ops->submit(S.q, &qs, &so->submission, so->ids, &so->existing);
	if (rc) {
		reply_error(c, id, rc, "cannot queue the submission: %s (%s)", bg_strerror(rc),
			    S.q->errmsg);
		so->njobs = 0;
		submit_op_free(so);
		goto out;
	}
	if (!so->existing) {
		so->names = xcalloc(sp.njobs, sizeof(char *));
		so->kinds = xcalloc(sp.njobs, sizeof(char *));
		for (size_t i = 0; i < sp.njobs; i++) {
			so->names[i] = xstrdup(sp.jobs[i].name);
			so->kinds[i] = xstrdup(sp.jobs[i].kind);
			engine_state_event(so->ids[i], JS_QUEUED, NULL, false, 0);
		}
		log_info(c->op, 0, "submission %lld '%s': %zu job(s) queued",
			 (long long)so->submission, sp.name, sp.njobs);
		engine_kick();
	} else {
		so->njobs = 0;
	}
	c->refs++;
	commit_after(submit_durable, so);
out:
	free(nj);
	free(needs);
	spec_release(&sp);
	free(path);
	free(key);
}

static int get_job_id(struct conn *c, uint32_t id, const msgpack_object *params, int64_t *job)
{
	int rc = mpk_get_int(params, "job", job);
	if (rc) {
		reply_error(c, id, BG_ERR_INVAL, "%s", rc == BG_ERR_NOENT ? "missing 'job' (an id)"
									   : "'job' must be an integer id");
		return rc;
	}
	return 0;
}

struct pack_list {
	msgpack_packer *pk;
};

static void m_list(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct q_list_filter f = {0};
	int64_t v;
	char *state = mpk_dup_str(params, "state");
	if (state && !job_state_final(state) && strcmp(state, JS_QUEUED) != 0 &&
	    strcmp(state, JS_RUNNING) != 0 && strcmp(state, JS_ROLLING_BACK) != 0) {
		reply_error(c, id, BG_ERR_INVAL,
			    "unknown state '%s' (queued, running, rolling_back, succeeded, failed, "
			    "dead, cancelled, rolled_back, skipped)", state);
		free(state);
		return;
	}
	f.state = state;
	if (mpk_get_int(params, "submission", &v) == 0)
		f.submission = v;
	if (mpk_get_int(params, "after", &v) == 0)
		f.after = v;
	f.limit = 100;
	if (mpk_get_int(params, "limit", &v) == 0)
		f.limit = v < 1 ? 1 : v > 100000 ? 100000 : (int)v;
	struct counter cnt = {0};
	int rc = S.q->ops->job_list(S.q, &f, count_cb, &cnt);
	if (rc) {
		reply_error(c, id, rc, "cannot list jobs: %s", S.q->errmsg);
		free(state);
		return;
	}
	struct reply r;
	reply_begin(&r, id);
	msgpack_pack_map(&r.pk, 1);
	mpk_pack_str(&r.pk, "jobs");
	msgpack_pack_array(&r.pk, cnt.n);
	S.q->ops->job_list(S.q, &f, pack_summary_cb, &r.pk);
	reply_end(c, &r);
	free(state);
}

static void m_show(struct conn *c, uint32_t id, const msgpack_object *params)
{
	int64_t job;
	struct q_job j;
	if (get_job_id(c, id, params, &job))
		return;
	if (S.q->ops->job_get(S.q, job, &j) != 0) {
		reply_error(c, id, BG_ERR_NOENT, "no job %lld", (long long)job);
		return;
	}
	int64_t *needs;
	size_t nn;
	S.q->ops->job_needs(S.q, job, &needs, &nn);
	struct reply r;
	reply_begin(&r, id);
	pack_job(&r.pk, &j, true, needs, nn);
	reply_end(c, &r);
	free(needs);
	q_job_release(&j);
}

struct state_op {
	struct conn *c;
	uint32_t id;
	char state[24];
};

static void state_durable(void *arg, int rc)
{
	struct state_op *so = arg;
	struct conn *c = so->c;
	c->refs--;
	if (c->closing) {
		if (c->refs == 0)
			conn_close(c);
	} else if (rc) {
		reply_error(c, so->id, rc, "not stored: %s", bg_strerror(rc));
	} else {
		struct reply r;
		reply_begin(&r, so->id);
		msgpack_pack_map(&r.pk, 1);
		mpk_kv_str(&r.pk, "state", so->state);
		reply_end(c, &r);
	}
	free(so);
}

static void reply_state_when_durable(struct conn *c, uint32_t id, const char *state)
{
	struct state_op *so = xcalloc(1, sizeof(*so));
	so->c = c;
	so->id = id;
	snprintf(so->state, sizeof(so->state), "%s", state);
	c->refs++;
	commit_after(state_durable, so);
}

static void skipped_event(int64_t job, void *arg)
{
	engine_state_event(job, JS_SKIPPED, "a job it needs did not succeed", false, 0);
}

static void m_cancel(struct conn *c, uint32_t id, const msgpack_object *params)
{
	int64_t job;
	struct q_job j;
	if (get_job_id(c, id, params, &job))
		return;
	if (S.q->ops->job_get(S.q, job, &j) != 0) {
		reply_error(c, id, BG_ERR_NOENT, "no job %lld", (long long)job);
		return;
	}
	if (job_state_final(j.state)) {
		reply_error(c, id, BG_ERR_STATE, "job %lld is already %s", (long long)job, j.state);
	} else if (strcmp(j.state, JS_QUEUED) == 0) {
		int rc = S.q->ops->cancel_queued(S.q, job, now_us(), skipped_event, NULL);
		if (rc) {
			reply_error(c, id, rc, "cannot cancel job %lld: %s", (long long)job,
				    S.q->errmsg);
		} else {
			engine_state_event(job, JS_CANCELLED, "cancelled while queued", false, 0);
			log_info(c->op, job, "cancelled while queued");
			engine_kick();
			reply_state_when_durable(c, id, JS_CANCELLED);
		}
	} else if (engine_cancel(job)) {
		reply_state_when_durable(c, id, JS_ROLLING_BACK);
	} else {
		/* running on another node: it sees the request at its heartbeat */
		int rc = S.q->ops->request_cancel(S.q, job);
		if (rc)
			reply_error(c, id, rc, "cannot cancel job %lld: %s", (long long)job,
				    bg_strerror(rc));
		else
			reply_state_when_durable(c, id, j.state);
	}
	q_job_release(&j);
}

static void m_retry(struct conn *c, uint32_t id, const msgpack_object *params)
{
	int64_t job;
	struct q_job j;
	if (get_job_id(c, id, params, &job))
		return;
	if (S.q->ops->job_get(S.q, job, &j) != 0) {
		reply_error(c, id, BG_ERR_NOENT, "no job %lld", (long long)job);
		return;
	}
	int rc = S.q->ops->retry(S.q, job, now_us());
	if (rc == BG_ERR_STATE) {
		reply_error(c, id, rc, "job %lld is %s: only a job that ended without succeeding "
			    "can be retried", (long long)job, j.state);
	} else if (rc) {
		reply_error(c, id, rc, "cannot retry job %lld: %s", (long long)job, S.q->errmsg);
	} else {
		engine_state_event(job, JS_QUEUED, "retry requested", false, 0);
		log_info(c->op, job, "retry requested");
		engine_kick();
		reply_state_when_durable(c, id, JS_QUEUED);
	}
	q_job_release(&j);
}

static void m_oplog(struct conn *c, uint32_t id, const msgpack_object *params)
{
	int64_t job;
	struct q_job j;
	if (get_job_id(c, id, params, &job))
		return;
	if (S.q->ops->job_get(S.q, job, &j) != 0) {
		reply_error(c, id, BG_ERR_NOENT, "no job %lld", (long long)job);
		return;
	}
	struct q_attempt *att;
	size_t na;
	struct q_step *steps;
	size_t ns;
	S.q->ops->attempts(S.q, job, &att, &na);
	S.q->ops->steps(S.q, job, 0, &steps, &ns);
	int64_t *needs;
	size_t nn;
	S.q->ops->job_needs(S.q, job, &needs, &nn);

	struct reply r;
	reply_begin(&r, id);
	msgpack_packer *pk = &r.pk;
	msgpack_pack_map(pk, 2);
	mpk_pack_str(pk, "job");
	pack_job(pk, &j, true, needs, nn);
	mpk_pack_str(pk, "attempts");
	msgpack_pack_array(pk, na);
	for (size_t a = 0; a < na; a++) {
		msgpack_pack_map(pk, 9);
		mpk_kv_int(pk, "attempt", att[a].attempt);
		mpk_kv_str(pk, "op", att[a].op);
		mpk_kv_str(pk, "node", att[a].node);
		mpk_pack_str(pk, "epochs");
		size_t ne = 1;
		for (const char *p = att[a].epochs; p && *p; p++)
			ne += *p == ',';
		msgpack_pack_array(pk, ne);
		for (const char *p = att[a].epochs; p && *p;) {
			msgpack_pack_int64(pk, strtoll(p, NULL, 10));
			p = strchr(p, ',');
			if (p)
				p++;
		}
		mpk_kv_int(pk, "started", att[a].started);
		if (att[a].finished)
			mpk_kv_int(pk, "finished", att[a].finished);
		else
			mpk_kv_nil(pk, "finished");
		mpk_kv_str(pk, "outcome", att[a].outcome);
		mpk_kv_str(pk, "error", att[a].error);
		size_t cnt = 0;
		for (size_t s = 0; s < ns; s++)
			cnt += steps[s].attempt == att[a].attempt;
		mpk_pack_str(pk, "steps");
		msgpack_pack_array(pk, cnt);
		for (size_t s = 0; s < ns; s++) {
			struct q_step *st = &steps[s];
			if (st->attempt != att[a].attempt)
				continue;
			msgpack_pack_map(pk, 12);
			mpk_kv_int(pk, "seq", st->seq);
			mpk_kv_str(pk, "name", st->name);
			mpk_kv_str(pk, "state", st->state);
			mpk_kv_raw(pk, "undo", st->undo, st->undo_len);
			mpk_kv_raw(pk, "result", st->result, st->result_len);
			mpk_kv_str(pk, "error", st->error);
			mpk_kv_int(pk, "started", st->started);
			if (st->finished)
				mpk_kv_int(pk, "finished", st->finished);
			else
				mpk_kv_nil(pk, "finished");
			if (st->undo_started)
				mpk_kv_int(pk, "undo_started", st->undo_started);
			else
				mpk_kv_nil(pk, "undo_started");
			if (st->undo_finished)
				mpk_kv_int(pk, "undo_finished", st->undo_finished);
			else
				mpk_kv_nil(pk, "undo_finished");
			mpk_kv_str(pk, "undo_error", st->undo_error);
			mpk_kv_int(pk, "undo_runs", st->undo_runs);
		}
	}
	reply_end(c, &r);
	for (size_t a = 0; a < na; a++)
		q_attempt_release(&att[a]);
	for (size_t s = 0; s < ns; s++)
		q_step_release(&steps[s]);
	free(att);
	free(steps);
	free(needs);
	q_job_release(&j);
}

struct stat_pack {
	msgpack_packer *pk;
	int n;
	const char *states[16];
	int64_t counts[16];
};

static void stat_cb(const char *state, int64_t n, void *arg)
{
	struct stat_pack *sp = arg;
	if (sp->n < 16 && state) {
		sp->states[sp->n] = xstrdup(state);
		sp->counts[sp->n++] = n;
	}
}

static void m_stats(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct stat_pack sp = {0};
	int rc = S.q->ops->stats(S.q, stat_cb, &sp);
	if (rc) {
		reply_error(c, id, rc, "cannot count jobs: %s", S.q->errmsg);
		return;
	}
	struct reply r;
	reply_begin(&r, id);
	msgpack_pack_map(&r.pk, 2);
	mpk_pack_str(&r.pk, "states");
	msgpack_pack_map(&r.pk, (size_t)sp.n);
	for (int i = 0; i < sp.n; i++) {
		mpk_kv_int(&r.pk, sp.states[i], sp.counts[i]);
		free((char *)sp.states[i]);
	}
	mpk_kv_int(&r.pk, "running_here", engine_running());
	reply_end(c, &r);
}

/* ---- images ------------------------------------------------------------- */

/* The VMs (not deleted) whose root disks are overlays of an image: counted,
 * or packed as names when pk is set. */
struct image_users {
	const char *digest;
	msgpack_packer *pk;
	size_t n;
};

static int image_user_cb(const struct q_vm *vm, void *arg)
{
	struct image_users *u = arg;
	if (vm->image && strcmp(vm->image, u->digest) == 0) {
		if (u->pk)
			mpk_pack_str(u->pk, vm->name);
		u->n++;
	}
	return 0;
}

static void pack_image(msgpack_packer *pk, const struct q_image *img)
{
	msgpack_pack_map(pk, 11);
	mpk_kv_str(pk, "digest", img->digest);
	mpk_pack_str(pk, "refs");
	msgpack_pack_array(pk, img->nrefs);
	for (size_t i = 0; i < img->nrefs; i++)
		mpk_pack_str(pk, img->refs[i]);
	mpk_kv_str(pk, "rootfs", img->rootfs);
	mpk_kv_int(pk, "size", img->size);
	mpk_kv_int(pk, "content", img->content);
	mpk_kv_str(pk, "config", img->config);
	if (img->layers && img->layers_len)
		mpk_kv_raw(pk, "layers", img->layers, img->layers_len);
	else {
		mpk_pack_str(pk, "layers");
		msgpack_pack_array(pk, 0);
	}
	mpk_kv_str(pk, "source", img->source);
	mpk_kv_int(pk, "created", img->created);
	if (img->job)
		mpk_kv_int(pk, "job", img->job);
	else
		mpk_kv_nil(pk, "job");
	struct image_users u = {.digest = img->digest};
	S.q->ops->vm_list(S.q, false, image_user_cb, &u);
	mpk_pack_str(pk, "used_by");
	msgpack_pack_array(pk, u.n);
	u.pk = pk;
	S.q->ops->vm_list(S.q, false, image_user_cb, &u);
}

static int count_image_cb(const struct q_image *img, void *arg)
{
	((struct counter *)arg)->n++;
	return 0;
}

static int pack_image_cb(const struct q_image *img, void *arg)
{
	pack_image(arg, img);
	return 0;
}

static void m_image_list(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct counter cnt = {0};
	int rc = S.q->ops->image_list(S.q, count_image_cb, &cnt);
	if (rc) {
		reply_error(c, id, rc, "cannot list images: %s", S.q->errmsg);
		return;
	}
	struct reply r;
	reply_begin(&r, id);
	msgpack_pack_map(&r.pk, 1);
	mpk_pack_str(&r.pk, "images");
	msgpack_pack_array(&r.pk, cnt.n);
	S.q->ops->image_list(S.q, pack_image_cb, &r.pk);
	reply_end(c, &r);
}

/* The image named by params' "image" (ref or digest), or an error reply. */
static int get_image(struct conn *c, uint32_t id, const msgpack_object *params,
		     struct q_image *img)
{
	char *key = mpk_dup_str(params, "image");
	if (!key || !*key) {
		reply_error(c, id, BG_ERR_INVAL, "missing 'image' (a ref or a sha256: digest)");
		free(key);
		return BG_ERR_INVAL;
	}
	int rc = S.q->ops->image_get(S.q, key, img);
	if (rc)
		reply_error(c, id, rc, "no image '%s'", key);
	free(key);
	return rc;
}

static void m_image_show(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct q_image img;
	if (get_image(c, id, params, &img))
		return;
	struct reply r;
	reply_begin(&r, id);
	pack_image(&r.pk, &img);
	reply_end(c, &r);
	q_image_release(&img);
}

struct image_rm_op {
	struct conn *c;
	uint32_t id;
	char *digest, *rootfs;
};

static void image_rm_durable(void *arg, int rc)
{
	struct image_rm_op *op = arg;
	struct conn *c = op->c;
	c->refs--;
	if (rc == 0 && op->rootfs) {
		/* the row is gone for good: now the file may go */
		unlink(op->rootfs);
		char *slash = strrchr(op->rootfs, '/');
		if (slash) {
			*slash = '\0';
			rmdir(op->rootfs);
		}
	}
	if (c->closing) {
		if (c->refs == 0)
			conn_close(c);
	} else if (rc) {
		reply_error(c, op->id, rc, "image not removed: %s", bg_strerror(rc));
	} else {
		struct reply r;
		reply_begin(&r, op->id);
		msgpack_pack_map(&r.pk, 1);
		mpk_kv_str(&r.pk, "digest", op->digest);
		reply_end(c, &r);
	}
	free(op->digest);
	free(op->rootfs);
	free(op);
}

static void m_image_rm(struct conn *c, uint32_t id, const msgpack_object *params)
{
	struct q_image img;
	if (get_image(c, id, params, &img))
		return;
	struct image_users u = {.digest = img.digest};
	S.q->ops->vm_list(S.q, false, image_user_cb, &u);
	if (u.n) {
		reply_error(c, id, BG_ERR_BUSY, "image %s is the root disk of %zu vm%s: delete %s "
			    "first (banger vm list)", img.digest, u.n, u.n == 1 ? "" : "s",
			    u.n == 1 ? "it" : "them");
		q_image_release(&img);
		return;
	}
	int rc = S.q->ops->image_delete(S.q, img.digest);
	if (rc) {
		reply_error(c, id, rc, "cannot remove image %s: %s", img.digest, S.q->errmsg);
		q_image_release(&img);
		return;
	}
	log_info(c->op, 0, "image %s removed", img.digest);
	struct image_rm_op *op = xcalloc(1, sizeof(*op));
	op->c = c;
	op->id = id;
	op->digest = xstrdup(img.digest);
	op->rootfs = img.rootfs ? xstrdup(img.rootfs) : NULL;
	c->refs++;
	commit_after(image_rm_durable, op);
	q_image_release(&img);
}

/* ---- image.prune ---------------------------------------------------------
 *
 * The keep set comes from the images table, read here on the loop thread
 * (the only thread that may use the queue).  Everything that touches the
 * disk (reading manifests for imgsrc_image_blobs, listing and deleting
 * blobs and image directories) runs in a pool thread; the reply is sent
 * from the after-work callback, back on the loop thread.
 *
 * Refused while an image.pull job runs on this node.  A pull that starts
 * while the prune runs is protected by time and locks: blobs and image
 * directories changed after the request arrived (less PRUNE_SLACK_US, for
 * the kernel's coarse file clock) are kept, a directory whose .lock a build
 * holds is kept, and blobstore_prune keeps partial downloads a writer holds.
 * (A pull that reuses blobs or an orphan directory already on disk during
 * that window can still lose them; its build then fails and is retried.)
 */

#define PRUNE_SLACK_US 50000

struct strs {
	char **v;
	size_t n, cap;
};

static void strs_add(struct strs *l, char *owned)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = owned;
}

static void strs_release(struct strs *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct prune_item {
	char *name; /* a blob digest, or an image directory's path */
	uint64_t size;
};

struct prune_items {
	struct prune_item *v;
	size_t n, cap;
};

static void items_add(struct prune_items *l, char *owned, uint64_t size)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n].name = owned;
	l->v[l->n++].size = size;
}

static void items_release(struct prune_items *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
}

/* One prune request.  The loop thread fills the input, the pool thread the
 * results; the after-work callback reads them and frees the op. */
struct prune_op {
	uv_work_t work;
	struct conn *c; /* c->refs holds it until the after-work callback */
	uint32_t id;
	char op[64];
	bool dry_run;
	int64_t since; /* when the request arrived */
	char *state_dir;
	/* input, from the images table */
	struct strs manifests; /* each image's manifest digest */
	struct strs blobs;     /* digest, config and layers each row lists */
	struct strs dirs;      /* the image directories rows name (full paths) */
	/* results */
	int rc;
	char *err;
	struct blobstore_prune_stats st;
	struct prune_items removed, orphans;
	uint64_t orphan_bytes;
};

static void prune_op_free(struct prune_op *op)
{
	free(op->state_dir);
	strs_release(&op->manifests);
	strs_release(&op->blobs);
	strs_release(&op->dirs);
	free(op->err);
	items_release(&op->removed);
	items_release(&op->orphans);
	free(op);
}

/* image_list callback (loop thread): what this image keeps. */
static int prune_collect_cb(const struct q_image *img, void *arg)
{
	struct prune_op *op = arg;
	if (img->digest) {
		strs_add(&op->manifests, xstrdup(img->digest));
		strs_add(&op->blobs, xstrdup(img->digest));
		if (blobstore_digest_valid(img->digest))
			strs_add(&op->dirs,
				 xasprintf("%s/images/%s", op->state_dir, img->digest + 7));
	}
	if (img->config)
		strs_add(&op->blobs, xstrdup(img->config));
	if (img->layers && img->layers_len && mpk_prescan(img->layers, img->layers_len) == 0) {
		msgpack_unpacked u;
		size_t off = 0;
		msgpack_unpacked_init(&u);
		if (msgpack_unpack_next(&u, img->layers, img->layers_len, &off) ==
			    MSGPACK_UNPACK_SUCCESS &&
		    u.data.type == MSGPACK_OBJECT_ARRAY) {
			for (uint32_t i = 0; i < u.data.via.array.size; i++) {
				const msgpack_object *o = &u.data.via.array.ptr[i];
				if (o->type == MSGPACK_OBJECT_STR)
					strs_add(&op->blobs,
						 xstrndup(o->via.str.ptr, o->via.str.size));
			}
		}
		msgpack_unpacked_destroy(&u);
	}
	const char *slash = img->rootfs ? strrchr(img->rootfs, '/') : NULL;
	if (slash && slash > img->rootfs)
		strs_add(&op->dirs, xstrndup(img->rootfs, (size_t)(slash - img->rootfs)));
	return 0;
}

static void prune_removed_cb(void *arg, const char *digest, uint64_t size)
{
	items_add(&((struct prune_op *)arg)->removed, xstrdup(digest), size);
}

static int64_t stat_changed_us(const struct stat *st)
{
	int64_t c = (int64_t)st->st_ctim.tv_sec * 1000000 + st->st_ctim.tv_nsec / 1000;
	int64_t m = (int64_t)st->st_mtim.tv_sec * 1000000 + st->st_mtim.tv_nsec / 1000;
	return c > m ? c : m;
}

static bool is_digest_hex(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == 64;
}

/*
 * Pool thread: remove the image directory name (in the directory parent, at
 * path) if it is an orphan banger made and nothing is using it: holding
 * its build lock, it must hold only files (rootfs.ext4, temp files, .lock),
 * none changed since the request.  Adds it to op->orphans when it goes (or
 * would go, for a dry run).
 */
static void prune_orphan_dir(struct prune_op *op, int parent, const char *name, char *path)
{
	int64_t young = op->since - PRUNE_SLACK_US;
	struct strs files = {0};
	uint64_t bytes = 0;
	bool keep = false;
	int lock = -1;
	DIR *d = NULL;
	struct stat st;
	int dfd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0 || stat_changed_us(&st) >= young)
		goto out; /* not a directory, gone, or new */
	/* a build (or a pull waiting for one) holds it */
	lock = openat(dfd, ".lock", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) < 0)
		goto out;
	int dfd2 = dup(dfd);
	if (dfd2 < 0 || !(d = fdopendir(dfd2))) {
		if (dfd2 >= 0)
			close(dfd2);
		goto out;
	}
	struct dirent *de;
	while ((de = readdir(d)) && !keep) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat es;
		if (fstatat(dfd, de->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		/* a subdirectory is not what image.pull makes; something new is in use */
		if (S_ISDIR(es.st_mode) || stat_changed_us(&es) >= young)
			keep = true;
		bytes += (uint64_t)es.st_blocks * 512;
		strs_add(&files, xstrdup(de->d_name));
	}
	if (keep)
		goto out;
	if (!op->dry_run) {
		for (size_t i = 0; i < files.n; i++) {
			if (unlinkat(dfd, files.v[i], 0) < 0 && errno != ENOENT) {
				log_warn(op->op, 0, "cannot remove '%s/%s': %s", path, files.v[i],
					 strerror(errno));
				goto out;
			}
		}
		if (unlinkat(parent, name, AT_REMOVEDIR) < 0) {
			log_warn(op->op, 0, "cannot remove '%s': %s", path, strerror(errno));
			goto out;
		}
	}
	op->orphan_bytes += bytes;
	items_add(&op->orphans, path, bytes);
	path = NULL;
out:
	if (d)
		closedir(d);
	if (lock >= 0)
		close(lock); /* only now: a build waiting on it finds the directory gone */
	if (dfd >= 0)
		close(dfd);
	strs_release(&files);
	free(path);
}

/* Pool thread: every directory under STATE/images that no row names. */
static int prune_orphans(struct prune_op *op)
{
	char *images = xasprintf("%s/images", op->state_dir);
	DIR *d = opendir(images);
	if (!d) {
		int rc = errno == ENOENT ? 0 : bg_errno(errno);
		if (rc)
			op->err = xasprintf("cannot list '%s': %s", images, strerror(errno));
		free(images);
		return rc;
	}
	qsort(op->dirs.v, op->dirs.n, sizeof(char *), cmp_strp);
	struct strs names = {0};
	struct dirent *de;
	while ((de = readdir(d)))
		if (is_digest_hex(de->d_name))
			strs_add(&names, xstrdup(de->d_name));
	for (size_t i = 0; i < names.n; i++) {
		char *path = xasprintf("%s/%s", images, names.v[i]);
		if (op->dirs.n &&
		    bsearch(&path, op->dirs.v, op->dirs.n, sizeof(char *), cmp_strp)) {
			free(path);
			continue;
		}
		prune_orphan_dir(op, dirfd(d), names.v[i], path);
	}
	if (!op->dry_run && op->orphans.n)
		fsync(dirfd(d));
	strs_release(&names);
	closedir(d);
	free(images);
	return 0;
}

static void prune_work(uv_work_t *w)
{
	struct prune_op *op = w->data;
	char *dir = xasprintf("%s/blobs", op->state_dir);
	struct blobstore *bs = NULL;
	struct strs keep = {0};
	struct stat st;

	/* without a cache there are no blobs to prune: do not create one */
	if (stat(dir, &st) == 0) {
		if ((op->rc = blobstore_open(dir, &bs, &op->err)))
			goto out;
		for (size_t i = 0; i < op->blobs.n; i++)
			if (blobstore_digest_valid(op->blobs.v[i]))
				strs_add(&keep, xstrdup(op->blobs.v[i]));
		for (size_t i = 0; i < op->manifests.n; i++) {
			char **v = NULL, *err = NULL;
			size_t n = 0;
			int rc = imgsrc_image_blobs(bs, op->manifests.v[i], &v, &n, &err);
			if (rc) {
				/* the row's own list still keeps its manifest, config and layers */
				log_warn(op->op, 0, "image %s: %s (keeping the blobs its row "
					 "lists)", op->manifests.v[i], err ? err : bg_strerror(rc));
				free(err);
				continue;
			}
			for (size_t k = 0; k < n; k++)
				strs_add(&keep, v[k]);
			free(v);
		}
		int64_t grace = now_us() - op->since + PRUNE_SLACK_US;
		op->rc = blobstore_prune(bs, (const char *const *)keep.v, keep.n, grace,
					 op->dry_run, prune_removed_cb, op, &op->st, &op->err);
		if (op->rc)
			goto out;
	}
	op->rc = prune_orphans(op);
out:
	if (bs)
		blobstore_close(bs);
	strs_release(&keep);
	free(dir);
}

static void prune_done(uv_work_t *w, int status)
{
	struct prune_op *op = w->data;
	struct conn *c = op->c;
	S.pruning = false;
	c->refs--;
	if (status < 0 && op->rc == 0)
		op->rc = BG_ERR_CANCELED;
	uint64_t freed = op->st.removed_bytes + op->orphan_bytes;
	if (op->rc == 0)
		log_info(op->op, 0, "image cache %s: %zu blob(s), %zu partial(s), %zu image "
			 "director%s, %llu bytes; %zu blob(s) kept",
			 op->dry_run ? "prune dry run" : "pruned", op->st.removed,
			 op->st.partials_removed, op->orphans.n, op->orphans.n == 1 ? "y" : "ies",
			 (unsigned long long)freed, op->st.kept);
	if (c->closing) {
		if (c->refs == 0)
			conn_close(c);
	} else if (op->rc) {
		reply_error(c, op->id, op->rc, "image cache not pruned: %s",
			    op->err ? op->err : bg_strerror(op->rc));
	} else {
		struct reply r;
		reply_begin(&r, op->id);
		msgpack_packer *pk = &r.pk;
		msgpack_pack_map(pk, 5);
		mpk_pack_str(pk, "removed");
		msgpack_pack_array(pk, op->removed.n);
		for (size_t i = 0; i < op->removed.n; i++) {
			msgpack_pack_map(pk, 2);
			mpk_kv_str(pk, "digest", op->removed.v[i].name);
			mpk_kv_int(pk, "size", (int64_t)op->removed.v[i].size);
		}
		mpk_kv_int(pk, "freed", (int64_t)freed);
		mpk_kv_int(pk, "kept", (int64_t)op->st.kept);
		mpk_kv_int(pk, "partials", (int64_t)op->st.partials_removed);
		mpk_pack_str(pk, "orphans");
		msgpack_pack_array(pk, op->orphans.n);
		for (size_t i = 0; i < op->orphans.n; i++) {
			msgpack_pack_map(pk, 2);
			mpk_kv_str(pk, "path", op->orphans.v[i].name);
			mpk_kv_int(pk, "size", (int64_t)op->orphans.v[i].size);
		}
		reply_end(c, &r);
	}
	prune_op_free(op);
}

static void m_image_prune(struct conn *c, uint32_t id, const msgpack_object *params)
{
	bool dry_run = false;
	if (mpk_get_bool(params, "dry_run", &dry_run) == BG_ERR_INVAL) {
		reply_error(c, id, BG_ERR_INVAL, "'dry_run' must be true or false");
		return;
	}
	if (S.pruning) {
		reply_error(c, id, BG_ERR_BUSY, "the image cache is already being pruned (by "
			    "another request); try again when it ends");
		return;
	}
	int pulls = engine_running_kind(kind_image_pull.name);
	if (pulls > 0) {
		reply_error(c, id, BG_ERR_BUSY, "refusing to prune the image cache: %d '%s' "
			    "job%s running on this node; try again when %s", pulls,
			    kind_image_pull.name, pulls == 1 ? " is" : "s are",
			    pulls == 1 ? "it ends" : "they end");
		return;
	}
	struct prune_op *op = xcalloc(1, sizeof(*op));
	op->c = c;
	op->id = id;
	snprintf(op->op, sizeof(op->op), "%s", c->op);
	op->dry_run = dry_run;
	op->since = now_us();
	op->state_dir = xstrdup(S.o.state_dir);
	int rc = S.q->ops->image_list(S.q, prune_collect_cb, op);
	if (rc) {
		reply_error(c, id, rc, "cannot list images: %s", S.q->errmsg);
		prune_op_free(op);
		return;
	}
	op->work.data = op;
	if (uv_queue_work(S.loop, &op->work, prune_work, prune_done) != 0) {
		/* its callback never fires */
		reply_error(c, id, BG_ERR_NOMEM, "cannot start pruning the image cache");
		prune_op_free(op);
		return;
	}
	c->refs++;
	S.pruning = true;
	log_debug(c->op, 0, "image cache prune%s started: %zu image(s)",
		  dry_run ? " (dry run)" : "", op->manifests.n);
}

/* ---- tails --------------------------------------------------------------- */

static void sub_free(struct sub *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		S.subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->c)
		s->c->sub = NULL;
	free(s->jobs);
	free(s->next_seq);
	free(s);
}

struct ev_send {
	struct sub *s;
	size_t idx;
	int sent;
};

static int send_event_cb(int64_t job, int64_t seq, int64_t ts, const char *stream,
			 const void *data, size_t len, void *arg)
{
	struct ev_send *es = arg;
	struct sub *s = es->s;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	mpk_kv_int(&pk, "id", s->id);
	mpk_pack_str(&pk, "event");
	msgpack_pack_map(&pk, 5);
	mpk_kv_int(&pk, "job", job);
	mpk_kv_int(&pk, "seq", seq);
	mpk_kv_int(&pk, "ts", ts);
	mpk_kv_str(&pk, "stream", stream ? stream : "?");
	mpk_pack_str(&pk, "data");
	bool raw = stream && (strcmp(stream, "stdout") == 0 || strcmp(stream, "stderr") == 0);
	if (raw)
		msgpack_pack_bin(&pk, len); /* the body follows, copied once */
	else if (!data || !len)
		msgpack_pack_nil(&pk);
	if (raw || (data && len))
		conn_send2(s->c, sb.data, sb.size, data, len);
	else
		conn_send(s->c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	s->next_seq[es->idx] = seq + 1;
	es->sent++;
	/* a full socket stops the batch; on_write pumps again (output events
	 * are up to 256 KiB: a batch of 256 must not all be queued at once) */
	return s->c->closing || s->c->pipe.write_queue_size >= TAIL_HIGH_WATER;
}

/* Send what the subscriber has not seen yet, as far as the socket takes it;
 * end the tail once every job is final and its events are all sent. */
static void sub_pump(struct sub *s)
{
	struct conn *c = s->c;
	for (;;) {
		int sent = 0;
		for (size_t i = 0; i < s->njobs; i++) {
			if (c->closing || c->pipe.write_queue_size >= TAIL_HIGH_WATER)
				return;
			struct ev_send es = {s, i, 0};
			S.q->ops->events_read(S.q, s->jobs[i], s->next_seq[i], 256, send_event_cb,
					      &es);
			sent += es.sent;
		}
		if (!sent)
			break;
	}
	/* Caught up: is everything final? */
	bool all_final = true;
	bool has_exit = false;
	int exit_code = 0;
	char state[24] = "";
	for (size_t i = 0; i < s->njobs && all_final; i++) {
		struct q_job j;
		if (S.q->ops->job_get(S.q, s->jobs[i], &j) != 0)
			continue;
		all_final = job_state_final(j.state);
		snprintf(state, sizeof(state), "%s", j.state);
		has_exit = j.has_exit;
		exit_code = j.exit_code;
		q_job_release(&j);
	}
	if (s->follow && !all_final)
		return;
	struct reply r;
	reply_begin(&r, s->id);
	if (s->submission) {
		struct q_list_filter f = {.submission = s->submission, .limit = 1000000};
		struct counter cnt = {0};
		S.q->ops->job_list(S.q, &f, count_cb, &cnt);
		msgpack_pack_map(&r.pk, 1);
		mpk_pack_str(&r.pk, "jobs");
		msgpack_pack_array(&r.pk, cnt.n);
		S.q->ops->job_list(S.q, &f, pack_summary_cb, &r.pk);
	} else {
		msgpack_pack_map(&r.pk, 1 + has_exit);
		mpk_kv_str(&r.pk, "state", state);
		if (has_exit)
			mpk_kv_int(&r.pk, "exit_code", exit_code);
	}
	sub_free(s);
	reply_end(c, &r);
}

struct idlist {
	int64_t *ids;
	size_t n, cap;
};

static int collect_id(const struct q_job *j, void *arg)
{
	struct idlist *l = arg;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->ids = xrealloc(l->ids, l->cap * sizeof(*l->ids));
	}
	l->ids[l->n++] = j->id;
	return 0;
}

static void m_tail(struct conn *c, uint32_t id, const msgpack_object *params)
{
	int64_t job = 0, submission = 0, from = 1;
	bool follow = true;
	mpk_get_int(params, "job", &job);
	mpk_get_int(params, "submission", &submission);
	mpk_get_int(params, "from", &from);
	mpk_get_bool(params, "follow", &follow);
	struct idlist l = {0};
	if (submission > 0) {
		struct q_list_filter f = {.submission = submission, .limit = 1000000};
		S.q->ops->job_list(S.q, &f, collect_id, &l);
		if (l.n == 0) {
			reply_error(c, id, BG_ERR_NOENT, "no submission %lld", (long long)submission);
			return;
		}
	} else if (job > 0) {
		struct q_job j;
		if (S.q->ops->job_get(S.q, job, &j) != 0) {
			reply_error(c, id, BG_ERR_NOENT, "no job %lld", (long long)job);
			return;
		}
		q_job_release(&j);
		collect_id(&(struct q_job){.id = job}, &l);
	} else {
		reply_error(c, id, BG_ERR_INVAL, "job.tail needs 'job' or 'submission' (an id)");
		return;
	}
	struct sub *s = xcalloc(1, sizeof(*s));
	s->c = c;
	s->id = id;
	s->submission = submission;
	s->jobs = l.ids;
	s->njobs = l.n;
	s->next_seq = xcalloc(l.n, sizeof(*s->next_seq));
	for (size_t i = 0; i < l.n; i++)
		s->next_seq[i] = submission > 0 ? 1 : (from > 0 ? from : 1);
	s->follow = follow;
	s->next = S.subs;
	if (S.subs)
		S.subs->prev = s;
	S.subs = s;
	c->sub = s;
	sub_pump(s);
}

void server_notify(int64_t job)
{
	for (struct sub *s = S.subs, *next; s; s = next) {
		next = s->next;
		for (size_t i = 0; i < s->njobs; i++)
			if (s->jobs[i] == job) {
				sub_pump(s);
				break;
			}
	}
}

bool server_has_subscribers(void)
{
	return S.subs != NULL;
}

/* ---- for handlers in other files (server.h) ----------------------------- */

void server_reply(struct conn *c, uint32_t id, const void *result, size_t len)
{
	struct reply r;
	reply_begin(&r, id);
	msgpack_sbuffer_write(&r.sb, result, len);
	reply_end(c, &r);
}

void server_reply_error(struct conn *c, uint32_t id, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	reply_verror(c, id, code, fmt, ap);
	va_end(ap);
}

void server_hold(struct conn *c)
{
	c->refs++;
}

bool server_unhold(struct conn *c)
{
	c->refs--;
	if (c->closing) {
		if (c->refs == 0)
			conn_close(c);
		return false;
	}
	return true;
}

const char *server_op(const struct conn *c)
{
	return c->op;
}

/* ---- dispatch ------------------------------------------------------------ */

static const struct method {
	const char *name;
	method_fn fn;
} methods[] = {
	{BG_M_PING, m_ping},       {BG_M_JOB_SUBMIT, m_submit}, {BG_M_JOB_LIST, m_list},
	{BG_M_JOB_SHOW, m_show},   {BG_M_JOB_CANCEL, m_cancel}, {BG_M_JOB_RETRY, m_retry},
	{BG_M_JOB_TAIL, m_tail},   {BG_M_OPLOG, m_oplog},       {BG_M_JOB_STATS, m_stats},
	{BG_M_IMAGE_LIST, m_image_list}, {BG_M_IMAGE_SHOW, m_image_show}, {BG_M_IMAGE_RM, m_image_rm},
	{BG_M_IMAGE_PRUNE, m_image_prune},
	{BG_M_VM_LIST, vmrpc_vm_list},     {BG_M_VM_SHOW, vmrpc_vm_show},
	{BG_M_KERNEL_IMPORT, vmrpc_kernel_import}, {BG_M_KERNEL_LIST, vmrpc_kernel_list},
	{BG_M_KERNEL_RM, vmrpc_kernel_rm}, {BG_M_DOCTOR, vmrpc_doctor},
};

static void dispatch(struct conn *c, const char *body, size_t len)
{
	msgpack_unpacked msg;
	if (rpc_decode(body, len, &msg) != 0) {
		log_warn(NULL, 0, "closing a connection that sent a frame that is not a msgpack map");
		send_error(c, 0, BG_ERR_PROTO, "frame is not a msgpack map");
		conn_close(c);
		return;
	}
	const msgpack_object *root = &msg.data;
	int64_t id = 0;
	const char *m = NULL;
	size_t mlen = 0;
	if (mpk_get_int(root, "id", &id) != 0 || id < 0 || id > UINT32_MAX ||
	    mpk_get_str(root, "method", &m, &mlen) != 0) {
		send_error(c, (uint32_t)(id > 0 && id <= UINT32_MAX ? id : 0), BG_ERR_PROTO,
			   "request needs 'id' (uint) and 'method' (str)");
		msgpack_unpacked_destroy(&msg);
		return;
	}
	const char *op;
	size_t oplen;
	if (mpk_get_str(root, "op", &op, &oplen) == 0 && oplen > 0 && oplen < sizeof(c->op))
		snprintf(c->op, sizeof(c->op), "%.*s", (int)oplen, op);
	else {
		char hex[17];
		rand_hex(hex, 8);
		snprintf(c->op, sizeof(c->op), "rpc-%s", hex);
	}
	const msgpack_object *params = mpk_get(root, "params");
	static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
	if (!params || params->type == MSGPACK_OBJECT_NIL)
		params = &empty;
	if (params->type != MSGPACK_OBJECT_MAP) {
		send_error(c, (uint32_t)id, BG_ERR_PROTO, "'params' must be a map");
		msgpack_unpacked_destroy(&msg);
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(methods); i++) {
		if (strlen(methods[i].name) == mlen && memcmp(methods[i].name, m, mlen) == 0) {
			log_debug(c->op, 0, "rpc %s", methods[i].name);
			c->busy = true;
			c->req_id = (uint32_t)id;
			methods[i].fn(c, (uint32_t)id, params);
			msgpack_unpacked_destroy(&msg);
			return;
		}
	}
	send_error(c, (uint32_t)id, BG_ERR_INVAL, "unknown method");
	msgpack_unpacked_destroy(&msg);
}

/* Process buffered frames while not busy. */
static void conn_next(struct conn *c)
{
	while (!c->busy && !c->closing && c->len >= 4) {
		int64_t n = rpc_frame_len((unsigned char *)c->buf);
		if (n < 0) {
			log_warn(NULL, 0, "closing a connection: %s",
				 n == BG_ERR_TOOBIG ? "frame larger than the limit" : "empty frame");
			send_error(c, 0, (int)n,
				   n == BG_ERR_TOOBIG ? "frame larger than the 16 MiB limit"
						      : "empty frame");
			conn_close(c);
			return;
		}
		if (c->len < (size_t)n + 4)
			break;
		char *body = xmalloc((size_t)n);
		memcpy(body, c->buf + 4, (size_t)n);
		memmove(c->buf, c->buf + 4 + n, c->len - 4 - (size_t)n);
		c->len -= 4 + (size_t)n;
		dispatch(c, body, (size_t)n);
		free(body);
	}
	if (c->closing)
		return;
	/* Read more only while idle, and never more than one frame ahead. */
	bool want = !c->busy && c->len < 4 + (size_t)BG_RPC_MAX_FRAME;
	if (want && !c->reading) {
		conn_resume_read(c);
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	size_t want = 65536;
	if (c->cap - c->len < want) {
		c->cap = c->len + want;
		c->buf = xrealloc(c->buf, c->cap);
	}
	*buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = st->data;
	if (n < 0) {
		conn_close(c);
		return;
	}
	c->len += (size_t)n;
	/* check an oversized header at once, before buffering its body */
	if (c->len >= 4 && rpc_frame_len((unsigned char *)c->buf) == BG_ERR_TOOBIG && c->busy) {
		uv_read_stop(st);
		c->reading = false;
		return;
	}
	conn_next(c);
}

static void conn_resume_read(struct conn *c)
{
	if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
		c->reading = true;
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	free(c->buf);
	free(c);
}

static void conn_close(struct conn *c)
{
	if (!c->closing) {
		c->closing = true;
		if (c->sub)
			sub_free(c->sub);
		if (c->prev)
			c->prev->next = c->next;
		else if (S.conns == c)
			S.conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		c->prev = c->next = NULL;
		if (c->reading) {
			uv_read_stop((uv_stream_t *)&c->pipe);
			c->reading = false;
		}
	}
	/* freed once no write or commit callback refers to it */
	if (c->refs == 0 && !uv_is_closing((uv_handle_t *)&c->pipe))
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct conn *c = xcalloc(1, sizeof(*c));
	uv_pipe_init(S.loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
		uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
		return;
	}
	c->next = S.conns;
	if (S.conns)
		S.conns->prev = c;
	S.conns = c;
	uv_os_fd_t fd;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
		conn_close(c);
		return;
	}
	c->uid = cred.uid;
	if (cred.uid != S.o.owner_uid && cred.uid != 0) {
		log_warn(NULL, 0, "refused a connection from uid %u (pid %d): only uid %u and root "
			 "may use this bangerd", cred.uid, cred.pid, S.o.owner_uid);
		char msg[160];
		snprintf(msg, sizeof(msg), "permission denied: uid %u may not use this bangerd "
			 "(owner is uid %u)", cred.uid, S.o.owner_uid);
		send_error(c, 0, BG_ERR_PERM, msg);
		conn_close(c);
		return;
	}
	conn_resume_read(c);
}

int server_start(uv_loop_t *loop, struct queue *q, const struct server_opts *o, char **errmsg)
{
	S.loop = loop;
	S.q = q;
	S.o = *o;
	uv_pipe_init(loop, &S.listener, 0);
	unlink(o->socket_path); /* stale: we hold the runtime directory's lock */
	mode_t old = umask(0177);
	int rc = uv_pipe_bind(&S.listener, o->socket_path);
	umask(old);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&S.listener, 128, on_connection);
	if (rc) {
		*errmsg = xasprintf("cannot listen on '%s': %s", o->socket_path, uv_strerror(rc));
		return BG_ERR_IO;
	}
	chmod(o->socket_path, 0600);
	return 0;
}

void server_stop(void)
{
	if (S.stopping)
		return;
	S.stopping = true;
	uv_close((uv_handle_t *)&S.listener, NULL);
	while (S.conns)
		conn_close(S.conns);
}
