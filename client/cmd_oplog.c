/*
 * cmd_oplog.c: `banger oplog ID`: the operation log of a job, every attempt
 * and every step, as an indented report an operator reads after a failure
 * (or the reply converted to JSON with --json).
 *
 * The report shows, per step, what the undo record said the step was about
 * to acquire, what it produced, how it failed, and whether its undo ran and
 * how that ended: enough to tell whether anything can have been left behind.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "util.h"

enum { OPLOG_JSON };

static const struct args_opt oplog_opts[] = {
	[OPLOG_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

/* "  label:     value" with the value's continuation lines aligned. */
static void line(int indent, const char *label, const char *value)
{
	char lab[32];
	char pad[64];
	snprintf(lab, sizeof(lab), "%s:", label);
	int w = indent + 13;
	snprintf(pad, sizeof(pad), "\n%*s", w, "");
	printf("%*s%-12s ", indent, "", lab);
	out_text(stdout, value, strlen(value), pad + 1);
	fputc('\n', stdout);
}

static void line_owned(int indent, const char *label, char *value)
{
	line(indent, label, value);
	free(value);
}

static void line_opt(int indent, const msgpack_object *map, const char *key, const char *label,
		     enum out_fmt fmt)
{
	if (out_has(map, key))
		line_owned(indent, label, out_field(map, key, fmt));
}

static char *int_list(const msgpack_object *arr)
{
	struct sb sb;
	int64_t v;
	if (!arr || arr->type == MSGPACK_OBJECT_NIL)
		return xstrdup("-");
	if (arr->type != MSGPACK_OBJECT_ARRAY)
		return xstrdup("?");
	sb_init(&sb);
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		if (i)
			sb_adds(&sb, ", ");
		if (mpk_as_int(&arr->via.array.ptr[i], &v))
			sb_addf(&sb, "%lld", (long long)v);
		else
			sb_adds(&sb, "?");
	}
	return sb.len ? sb_detach(&sb) : (sb_release(&sb), xstrdup("none"));
}

/* How the undo of a step went: "not run", "ok", "failed", "not finished". */
static const char *undo_outcome(const msgpack_object *step)
{
	if (!out_has(step, "undo_started"))
		return out_has(step, "undo_error") ? "failed" : "not run";
	if (out_has(step, "undo_error"))
		return "failed";
	if (!out_has(step, "undo_finished"))
		return "not finished (interrupted?)";
	return "ok";
}

static void print_step(const msgpack_object *step)
{
	char *seq = out_field(step, "seq", OUT_INT);
	char *name = out_field(step, "name", OUT_STR);
	char *state = out_field(step, "state", OUT_STR);
	printf("  step %s %s: %s\n", seq, name, state);
	free(seq);
	free(name);
	free(state);
	if (step->type != MSGPACK_OBJECT_MAP) {
		line(4, "error", "? (malformed step record)");
		return;
	}
	line_owned(4, "ran", out_span(step, "started", "finished"));
	const msgpack_object *undo = mpk_get(step, "undo");
	line_owned(4, "undo record",
		   undo && undo->type != MSGPACK_OBJECT_NIL ? out_json_text(undo)
							    : xstrdup("none (acquires nothing)"));
	line_opt(4, step, "result", "result", OUT_JSON);
	line_opt(4, step, "error", "error", OUT_TEXT);
	if (out_has(step, "undo_started") || out_has(step, "undo_error")) {
		char *span = out_span(step, "undo_started", "undo_finished");
		line_owned(4, "undo", xasprintf("%s, %s", undo_outcome(step), span));
		free(span);
		line_opt(4, step, "undo_error", "undo error", OUT_TEXT);
	}
}

static void print_attempt(const msgpack_object *at)
{
	char *n = out_field(at, "attempt", OUT_INT);
	char *outcome = out_has(at, "outcome") ? out_field(at, "outcome", OUT_STR)
					       : xstrdup(out_has(at, "finished") ? "-" : "running");
	printf("\nattempt %s: %s\n", n, outcome);
	free(n);
	free(outcome);
	if (at->type != MSGPACK_OBJECT_MAP) {
		line(2, "error", "? (malformed attempt record)");
		return;
	}
	line_owned(2, "op", out_field(at, "op", OUT_STR));
	line_owned(2, "node", out_field(at, "node", OUT_STR));
	line_owned(2, "epochs", int_list(mpk_get(at, "epochs")));
	line_owned(2, "ran", out_span(at, "started", "finished"));
	line_opt(2, at, "error", "error", OUT_TEXT);

	const msgpack_object *steps = mpk_get(at, "steps");
	if (!steps || steps->type != MSGPACK_OBJECT_ARRAY) {
		line(2, "steps", steps ? "?" : "-");
		return;
	}
	if (steps->via.array.size == 0)
		line(2, "steps", "none");
	for (uint32_t i = 0; i < steps->via.array.size; i++)
		print_step(&steps->via.array.ptr[i]);
}

static void print_job(const msgpack_object *job)
{
	char *id = out_field(job, "id", OUT_INT);
	char *name = out_field(job, "name", OUT_STR);
	char *kind = out_field(job, "kind", OUT_STR);
	char *state = out_field(job, "state", OUT_STR);
	printf("job %s %s (%s): %s", id, name, kind, state);
	if (out_has(job, "exit_code")) {
		char *code = out_field(job, "exit_code", OUT_INT);
		printf(" (exit %s)", code);
		free(code);
	}
	fputc('\n', stdout);
	free(id);
	free(name);
	free(kind);
	free(state);
	line_owned(2, "submission", out_field(job, "submission", OUT_INT));
	char *a = out_field(job, "attempts", OUT_INT), *m = out_field(job, "max_attempts", OUT_INT);
	line_owned(2, "attempts", xasprintf("%s of %s", a, m));
	free(a);
	free(m);
	line_owned(2, "created", out_field(job, "created", OUT_TIME));
	if (out_has(job, "started"))
		line_owned(2, "ran", out_span(job, "started", "finished"));
	line_opt(2, job, "error", "error", OUT_TEXT);
	line_opt(2, job, "result", "result", OUT_JSON);
}

static int oplog_run(struct cli *cli, const struct args *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked reply;
	const msgpack_object *result;
	char subject[48];
	int64_t id;
	int st = cli_parse_id(a->pos[0], "job id", &id);
	if (st)
		return st;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_int(&pk, "job", id);
	snprintf(subject, sizeof(subject), "job %lld", (long long)id);
	st = cli_call(cli, BG_M_OPLOG, &sb, subject, &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;

	if (a->val[OPLOG_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	const msgpack_object *job = mpk_get(result, "job");
	const msgpack_object *attempts = mpk_get(result, "attempts");
	if (!job || job->type != MSGPACK_OBJECT_MAP) {
		cli_error("%s: malformed reply from bangerd (no job)", subject);
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	print_job(job);
	if (!attempts || attempts->type != MSGPACK_OBJECT_ARRAY) {
		printf("\nattempts: %s\n", attempts ? "? (malformed)" : "-");
	} else if (attempts->via.array.size == 0) {
		printf("\nno attempts yet\n");
	} else {
		for (uint32_t i = 0; i < attempts->via.array.size; i++)
			print_attempt(&attempts->via.array.ptr[i]);
	}
	msgpack_unpacked_destroy(&reply);
	return 0;
}

const struct args_cmd cmd_oplog = {
	.name = "oplog",
	.synopsis = "ID [--json]",
	.summary = "Show a job's operation log, to read after a failure.",
	.details = "Every attempt (op, node, epochs, timings, outcome, error) and every step of\n"
		   "it: state, undo record, result, error, timings, and whether its undo ran\n"
		   "and how it ended.\n",
	.opts = oplog_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = oplog_run,
};
