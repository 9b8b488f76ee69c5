/*
 * tail.c: `banger job tail` and `banger job submit --follow` (see tail.h).
 *
 * Reattach rule: seqs count per job, and each job's events come in seq order.
 * We remember, per job, the highest seq printed; an event at or below it is
 * dropped, so a resumed stream that overlaps prints nothing twice.  A job tail
 * resumes with from = highest seq printed + 1.  A submission tail cannot say
 * "from" per job (one number would skip the events of jobs that are behind),
 * so it resumes from seq 1 and the per-job filter drops what was printed.
 *
 * A drop is told apart from a daemon error by rpc_call's message (transport
 * failures read "reading from bangerd: ..." / "sending to bangerd: ...").  The
 * reconnect window restarts after a connection that delivered an event or
 * stayed up for a second, so a daemon that restarts twice during a long quiet
 * job is followed, while one that drops us at once, again and again, is given
 * up on after TAIL_RECONNECT_US.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "err.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "tail.h"
#include "util.h"

struct seen {
	int64_t job, seq;
};

struct tail_state {
	const struct tail_req *req;
	struct out_events out;
	int64_t last_seq;  /* highest seq printed, any job (job tails: that job) */
	struct seen *seen; /* highest seq printed per job */
	size_t nseen, cap;
	bool got_event;    /* an event arrived on the current connection */
};

static struct seen *seen_for(struct tail_state *t, int64_t job)
{
	for (size_t i = 0; i < t->nseen; i++)
		if (t->seen[i].job == job)
			return &t->seen[i];
	if (t->nseen == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 16;
		t->seen = xrealloc(t->seen, t->cap * sizeof(*t->seen));
	}
	t->seen[t->nseen] = (struct seen){.job = job, .seq = t->req->from - 1};
	return &t->seen[t->nseen++];
}

static int on_event(const msgpack_object *ev, void *arg)
{
	struct tail_state *t = arg;
	int64_t job = 0, seq;
	t->got_event = true;
	if (mpk_get_int(ev, "seq", &seq) == 0) {
		if (mpk_get_int(ev, "job", &job) != 0)
			job = t->req->submission ? 0 : t->req->id;
		struct seen *s = seen_for(t, job);
		if (seq <= s->seq)
			return 0; /* printed before the connection dropped */
		s->seq = seq;
		if (seq > t->last_seq)
			t->last_seq = seq;
	}
	out_event(&t->out, ev);
	return 0;
}

static bool is_final(const msgpack_object *state)
{
	static const char *const finals[] = {"succeeded", "failed", "cancelled", "rolled_back",
					     "dead",      "skipped"};
	for (size_t i = 0; i < ARRAY_LEN(finals); i++)
		if (mpk_str_eq(state, finals[i]))
			return true;
	return false;
}

int tail_job_status(const msgpack_object *job, bool final_only)
{
	const msgpack_object *state = mpk_get(job, "state");
	int64_t code;
	if (mpk_str_eq(state, "succeeded"))
		return 0;
	if (final_only && !is_final(state))
		return 0;
	if (mpk_get_int(job, "exit_code", &code) == 0 && code >= 1 && code <= 255)
		return (int)code;
	return 1;
}

int tail_submission_status(const msgpack_object *result)
{
	const msgpack_object *jobs = mpk_get(result, "jobs");
	int status = 0;
	if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("malformed reply from bangerd (no jobs in the final reply of job.tail)");
		return CLI_EXIT_FAIL;
	}
	for (uint32_t i = 0; i < jobs->via.array.size; i++) {
		const msgpack_object *j = &jobs->via.array.ptr[i];
		if (mpk_str_eq(mpk_get(j, "state"), "succeeded"))
			continue;
		int64_t code;
		if (mpk_get_int(j, "exit_code", &code) == 0 && code >= 1 && code <= 255)
			return (int)code;
		status = 1;
	}
	return status;
}

static void pack_params(const struct tail_req *req, int64_t from, msgpack_sbuffer *sb)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	mpk_kv_int(&pk, req->submission ? "submission" : "job", req->id);
	mpk_kv_int(&pk, "from", from);
	mpk_kv_bool(&pk, "follow", req->follow);
}

static bool is_drop(int rc, const char *errmsg)
{
	if (rc == BG_ERR_CLOSED)
		return true;
	if (rc != BG_ERR_PROTO && rc != BG_ERR_IO && rc != BG_ERR_TIMEDOUT)
		return false;
	return errmsg && (strncmp(errmsg, "reading from bangerd", 20) == 0 ||
			  strncmp(errmsg, "sending to bangerd", 18) == 0);
}

static void pause_us(int64_t us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

int tail_run(struct cli *cli, const struct tail_req *req)
{
	struct tail_state t = {.req = req, .last_seq = req->from - 1};
	char subject[64];
	int64_t from = req->from;
	int64_t deadline = 0; /* while reconnecting: give up at this mono time */
	bool announced = false; /* "lost connection" printed, "reconnected" not yet */
	int status;

	snprintf(subject, sizeof(subject), "%s %lld", req->submission ? "submission" : "job",
		 (long long)req->id);
	out_events_init(&t.out, req->json);
	for (;;) {
		struct rpc_client c;
		msgpack_unpacked reply;
		msgpack_sbuffer params;
		char *errmsg = NULL;
		int bgerr;

		status = cli_connect(cli, &c, deadline != 0, &bgerr);
		if (status) {
			if (deadline == 0 || bgerr == BG_ERR_INVAL)
				goto out;
			if (mono_us() >= deadline) {
				if (req->submission)
					cli_error("%s: gave up reconnecting to bangerd after %llds",
						  subject, TAIL_RECONNECT_US / 1000000);
				else
					cli_error("%s: gave up reconnecting to bangerd after %llds "
						  "(resume with 'banger job tail %lld --from %lld')",
						  subject, TAIL_RECONNECT_US / 1000000,
						  (long long)req->id, (long long)from);
				status = CLI_EXIT_FAIL;
				goto out;
			}
			pause_us(TAIL_RETRY_US);
			continue;
		}
		if (announced) {
			if (req->submission)
				cli_error("%s: reconnected to bangerd, resuming", subject);
			else
				cli_error("%s: reconnected to bangerd, resuming at seq %lld",
					  subject, (long long)from);
			announced = false;
		}

		int64_t started = mono_us();
		t.got_event = false;
		pack_params(req, from, &params);
		int rc = rpc_call(&c, BG_M_JOB_TAIL, cli->op, params.data, params.size, on_event, &t,
				  &reply, &errmsg);
		msgpack_sbuffer_destroy(&params);
		rpc_close(&c);

		if (rc == 0) {
			const msgpack_object *result = mpk_get(&reply.data, "result");
			out_events_finish(&t.out);
			if (!result) {
				cli_error("%s: malformed reply from bangerd (no result)", subject);
				status = CLI_EXIT_FAIL;
			} else if (req->submission) {
				status = tail_submission_status(result);
			} else {
				status = tail_job_status(result, !req->follow);
			}
			msgpack_unpacked_destroy(&reply);
			goto out;
		}
		if (!is_drop(rc, errmsg)) {
			out_events_finish(&t.out);
			status = cli_report(rc, subject, errmsg);
			free(errmsg);
			goto out;
		}
		if (!req->submission)
			from = t.last_seq + 1;
		out_events_finish(&t.out);
		/* A new reconnect window (and a note) unless this connection was
		 * dropped at once, without a single event. */
		if (deadline == 0 || t.got_event || mono_us() - started >= 1000000) {
			deadline = mono_us() + TAIL_RECONNECT_US;
			cli_error("%s: lost connection to bangerd (%s); reconnecting", subject,
				  errmsg ? errmsg : bg_strerror(rc));
			announced = true;
		}
		free(errmsg);
		pause_us(TAIL_RETRY_US);
	}
out:
	free(t.seen);
	return status;
}
