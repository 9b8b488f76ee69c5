/*
 * testkinds.c: job kinds used only by the tests and benchmarks, registered
 * through the same table as the real kinds (kind.h) and linked only into
 * build/bangerd-test and the unit tests, never into the shipped bangerd.
 *
 *   test.noop     one step with an undo record and nothing to do; its result is
 *                 {started: wall-clock µs when the step body ran} (benchmarks:
 *                 pickup latency)
 *   test.marker   three steps s1 s2 s3, each creates DIR/JOB-sN; undo moves
 *                 it to DIR/undone/JOB-sN.aATTEMPT (a rename: so a test can
 *                 count every undo that really happened); resumable steps
 *   test.marker_once   the same steps, not resumable: a crash mid-step rolls
 *                 the job back
 *   test.echo     one step: prints text / bytes to stdout, sleeps, exits with
 *                 a code (non-zero fails the job for good with that exit code)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "err.h"
#include "kind.h"
#include "mpk.h"
#include "util.h"

/* ---- test.noop ---- */

static int noop_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	msgpack_pack_map(undo, 1);
	mpk_kv_int(undo, "job", ctx->job_id);
	return 0;
}

static int noop_do(struct step_ctx *ctx)
{
	msgpack_pack_map(&ctx->result, 1);
	mpk_kv_int(&ctx->result, "started", now_us());
	return 0;
}

static const struct kind_field noop_fields[] = {{NULL}};
static const struct step_def noop_steps[] = {
	{.name = "noop", .plan = noop_plan, .do_ = noop_do, .resumable = true},
};
static const struct kind noop_kind = {
	"test.noop", "does nothing, durably", noop_fields, noop_steps, 1, true, false,
};

/* ---- test.marker ---- */

static char *marker_path(struct step_ctx *ctx)
{
	char *dir = mpk_dup_str(ctx->params, "dir");
	char *p = xasprintf("%s/%lld-s%d", dir ? dir : "/nonexistent", (long long)ctx->job_id,
			    ctx->seq);
	free(dir);
	return p;
}

static int marker_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	char *p = marker_path(ctx);
	msgpack_pack_map(undo, 1);
	mpk_kv_str(undo, "path", p);
	free(p);
	return 0;
}

/* Attempts so far are counted in DIR/JOB-attempts (one byte each). */
static int count_attempt(struct step_ctx *ctx)
{
	char *dir = mpk_dup_str(ctx->params, "dir");
	char *p = xasprintf("%s/%lld-attempts", dir, (long long)ctx->job_id);
	int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
	int n = 0;
	if (fd >= 0) {
		if (write(fd, "x", 1) == 1) {
			struct stat st;
			fstat(fd, &st);
			n = (int)st.st_size;
		}
		close(fd);
	}
	free(p);
	free(dir);
	return n;
}

static int marker_do(struct step_ctx *ctx)
{
	int64_t v;
	if (mpk_get_int(ctx->params, "sleep", &v) == 0 && v > 0) {
		int rc = step_sleep(ctx, v);
		if (rc)
			return rc;
	}
	char *p = marker_path(ctx);
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	int rc = 0;
	if (fd < 0)
		rc = step_fail(ctx, bg_errno(errno), true, "cannot create '%s': %s", p,
			       strerror(errno));
	else
		close(fd);
	free(p);
	if (rc)
		return rc;
	step_logf(ctx, "created marker %d", ctx->seq);
	if (mpk_get_int(ctx->params, "fail_at", &v) == 0 && v == ctx->seq)
		return step_fail(ctx, BG_ERR_STEP, true, "failing at step %d as asked", ctx->seq);
	if (mpk_get_int(ctx->params, "fail_times", &v) == 0 && ctx->seq == 3 &&
	    count_attempt(ctx) <= v)
		return step_fail(ctx, BG_ERR_STEP, false, "transient failure (attempt fails as asked)");
	msgpack_pack_map(&ctx->result, 1);
	mpk_kv_int(&ctx->result, "marker", ctx->seq);
	return 0;
}

static int marker_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	char *p = mpk_dup_str(rec, "path");
	if (!p)
		return 0; /* nothing was named: nothing to undo */
	char *slash = strrchr(p, '/');
	*slash = '\0';
	char *undone_dir = xasprintf("%s/undone", p);
	char *to = xasprintf("%s/%s.a%d", undone_dir, slash + 1, ctx->attempt);
	*slash = '/';
	mkdir(undone_dir, 0755);
	int rc = 0;
	if (rename(p, to) < 0 && errno != ENOENT) /* ENOENT: already undone */
		rc = step_fail(ctx, bg_errno(errno), false, "cannot move '%s': %s", p,
			       strerror(errno));
	free(undone_dir);
	free(to);
	free(p);
	return rc;
}

static const struct kind_field marker_fields[] = {
	{"dir", FT_STR, true},
	{"sleep", FT_DURATION, false},
	{"fail_at", FT_INT, false},
	{"fail_times", FT_INT, false},
	{NULL},
};
static const struct step_def marker_steps[] = {
	{.name = "s1", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo, .resumable = true},
	{.name = "s2", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo, .resumable = true},
	{.name = "s3", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo, .resumable = true},
};
static const struct kind marker_kind = {
	"test.marker", "creates marker files, undo moves them away", marker_fields,
	marker_steps, 3, true, false,
};
static const struct step_def marker_once_steps[] = {
	{.name = "s1", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo},
	{.name = "s2", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo},
	{.name = "s3", .plan = marker_plan, .do_ = marker_do, .undo = marker_undo},
};
static const struct kind marker_once_kind = {
	"test.marker_once", "test.marker with steps that cannot resume", marker_fields,
	marker_once_steps, 3, false, false,
};

/* ---- test.echo ---- */

static int echo_do(struct step_ctx *ctx)
{
	const char *text;
	size_t len;
	int64_t v;
	if (mpk_get_str(ctx->params, "text", &text, &len) == 0)
		step_emit(ctx, "stdout", text, len);
	if (mpk_get_int(ctx->params, "bytes", &v) == 0 && v > 0) {
		static char chunk[65536];
		memset(chunk, 'x', sizeof(chunk));
		while (v > 0 && !step_cancelled(ctx)) {
			size_t n = v > (int64_t)sizeof(chunk) ? sizeof(chunk) : (size_t)v;
			step_emit(ctx, "stdout", chunk, n);
			v -= (int64_t)n;
		}
	}
	/* lines: N: "out N\n" lines to stdout, one write each, every 1000th
	 * also "err N\n" to stderr; 3000 bytes at once after every 100th: how
	 * the engine coalesces output is seen in the bytes of each stream */
	if (mpk_get_int(ctx->params, "lines", &v) == 0 && v > 0) {
		static char blob[3000];
		memset(blob, 'b', sizeof(blob));
		blob[sizeof(blob) - 1] = '\n';
		for (int64_t i = 1; i <= v && !step_cancelled(ctx); i++) {
			char line[32];
			int n = snprintf(line, sizeof(line), "out %lld\n", (long long)i);
			step_emit(ctx, "stdout", line, (size_t)n);
			if (i % 100 == 0)
				step_emit(ctx, "stdout", blob, sizeof(blob));
			if (i % 1000 == 0) {
				n = snprintf(line, sizeof(line), "err %lld\n", (long long)i);
				step_emit(ctx, "stderr", line, (size_t)n);
			}
		}
	}
	if (mpk_get_str(ctx->params, "stderr", &text, &len) == 0)
		step_emit(ctx, "stderr", text, len);
	if (mpk_get_int(ctx->params, "for", &v) == 0 && v > 0) {
		int rc = step_sleep(ctx, v);
		if (rc)
			return rc;
	}
	if (mpk_get_int(ctx->params, "exit", &v) == 0) {
		step_set_exit(ctx, (int)v);
		if (v != 0)
			return step_fail(ctx, BG_ERR_STEP, true, "command exited with status %d",
					 (int)v);
	}
	const char *dir = NULL;
	size_t dlen = 0;
	mpk_get_str(ctx->params, SPEC_DIR_FIELD, &dir, &dlen);
	msgpack_pack_map(&ctx->result, 1 + (dir != NULL));
	mpk_kv_int(&ctx->result, "exit_code", 0);
	if (dir) {
		mpk_pack_str(&ctx->result, "dir");
		mpk_pack_strn(&ctx->result, dir, dlen);
	}
	return 0;
}

static const struct kind_field echo_fields[] = {
	{"text", FT_STR, false},
	{"stderr", FT_STR, false},
	{"bytes", FT_SIZE, false},
	{"lines", FT_INT, false},
	{"for", FT_DURATION, false},
	{"exit", FT_INT, false},
	{NULL},
};
static const struct step_def echo_steps[] = {
	{.name = "run", .do_ = echo_do},
};
static const struct kind echo_kind = {
	"test.echo", "prints, sleeps and exits as told; its result names the spec's directory",
	echo_fields, echo_steps, 1, false, true,
};

void kinds_register_all(void)
{
	kinds_register_shipped();
	kinds_register(&noop_kind);
	kinds_register(&marker_kind);
	kinds_register(&marker_once_kind);
	kinds_register(&echo_kind);
}
