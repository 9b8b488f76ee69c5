/*
 * kind_workspace.c: workspace.export (docs/workspaces.md): bring a guest
 * directory out of a running VM as a tar archive, or a git checkout's
 * changes as a patch, and store it at the spec's `to:`.
 *
 *   export   plan: `vm:` must name a running VM (vm_use_plan); the undo
 *            record names `to:` as resolved and the temporary the export
 *            writes next to it (".NAME.JOB-ATTEMPT.partial", export.h
 *            temp_tag), and whether `to:` existed before.
 *            do: the agent streams the directory (export_tar) or runs git
 *            (export_patch); the bytes go to the temporary, hashed and
 *            bounded by max_export_bytes, then replace `to:` at once.
 *            undo: remove the temporary; remove `to:` too when this job
 *            created it.  Not resumable: a crash mid-export rolls the job
 *            back (no partial file is left) and the job is re-queued.
 *
 * The failpoint "workspace.export/export:streaming" is hit about every
 * 100 ms while the archive streams (the crash tests use it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent.h"
#include "engine.h"
#include "err.h"
#include "export.h"
#include "failpoint.h"
#include "kind.h"
#include "mpk.h"
#include "util.h"
#include "vm.h"

struct export_params {
	char *path, *to, *mode, *base;
	const char *dir; /* in ctx->params */
	size_t dlen;
	bool patch;
};

static void export_params_release(struct export_params *p)
{
	free(p->path);
	free(p->to);
	free(p->mode);
	free(p->base);
	memset(p, 0, sizeof(*p));
}

/* The fields, checked: a permanent step failure naming what is wrong. */
static int export_params(struct step_ctx *ctx, struct export_params *p)
{
	memset(p, 0, sizeof(*p));
	p->path = mpk_dup_str(ctx->params, "path");
	p->to = mpk_dup_str(ctx->params, "to");
	p->mode = mpk_dup_str(ctx->params, "mode");
	p->base = mpk_dup_str(ctx->params, "base");
	mpk_get_str(ctx->params, SPEC_DIR_FIELD, &p->dir, &p->dlen);
	int rc = 0;
	if (p->mode && strcmp(p->mode, "tar") != 0 && strcmp(p->mode, "patch") != 0)
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "mode '%.64s' is not 'tar' (the directory as a tar archive, the "
			       "default) or 'patch' (a git checkout's changes, for git apply)",
			       p->mode);
	else if (!p->path || p->path[0] != '/')
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "'path' must be an absolute path in the guest, got '%.200s'",
			       p->path ? p->path : "");
	else if (!p->to || !*p->to)
		rc = step_fail(ctx, BG_ERR_INVAL, true, "'to' must name a file on the host");
	else if (!p->dir)
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "this submission names no directory for 'to: %.200s' (submit a spec "
			       "file, or send 'dir' with job.submit)",
			       p->to);
	p->patch = p->mode && !strcmp(p->mode, "patch");
	if (!rc && p->base && !p->patch)
		rc = step_fail(ctx, BG_ERR_INVAL, true, "'base' is for mode: patch only");
	if (!rc) {
		char *dir = xstrndup(p->dir, p->dlen), *err = NULL;
		struct export_opts o = {.spec_dir = dir, .artifacts_dir = vms_artifacts_dir()};
		int r = export_check_to(p->to, &o, &err);
		if (r)
			rc = step_fail(ctx, r, true, "%s", err ? err : bg_strerror(r));
		free(err);
		free(dir);
	}
	if (rc)
		export_params_release(p);
	return rc;
}

static char *temp_tag(struct step_ctx *ctx)
{
	return xasprintf("%lld-%d", (long long)ctx->job_id, ctx->attempt);
}

static int export_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	struct export_params p;
	int rc = export_params(ctx, &p);
	if (rc)
		return rc;
	if ((rc = vm_use_plan(ctx))) {
		export_params_release(&p);
		return rc;
	}
	/* whether `to` is there now (the undo removes it only if not) */
	char *full = p.to[0] == '/' ? xstrdup(p.to) : xasprintf("%.*s/%s", (int)p.dlen, p.dir, p.to);
	struct stat st;
	bool existed = lstat(full, &st) == 0;
	char *tag = temp_tag(ctx);
	msgpack_pack_map(undo, 4);
	mpk_kv_str(undo, "to", p.to);
	mpk_pack_str(undo, "dir");
	mpk_pack_strn(undo, p.dir, p.dlen);
	mpk_kv_str(undo, "tag", tag);
	mpk_kv_bool(undo, "existed", existed);
	free(tag);
	free(full);
	export_params_release(&p);
	return 0;
}

static void on_warn(void *arg, const char *path, const char *msg)
{
	step_warnf(arg, "export: '%s': %s", path, msg);
}

static bool on_cancelled(void *arg)
{
	failpoint_hit("workspace.export/export:streaming");
	return step_cancelled(arg);
}

static int export_do(struct step_ctx *ctx)
{
	struct export_params p;
	struct vm_use u;
	int rc = export_params(ctx, &p);
	if (rc)
		return rc;
	if ((rc = vm_use_open(ctx, &u))) {
		vm_use_close(&u);
		export_params_release(&p);
		return rc;
	}
	char *dir = xstrndup(p.dir, p.dlen), *tag = temp_tag(ctx), *err = NULL;
	struct export_opts o = {
		.spec_dir = dir,
		.artifacts_dir = vms_artifacts_dir(),
		.max_bytes = (uint64_t)vms_max_export_bytes(),
		.temp_tag = tag,
	};
	struct export_hooks h = {.warn = on_warn, .cancelled = on_cancelled, .arg = ctx};
	struct export_result r = {0};
	int64_t t0 = mono_us();
	if (p.patch)
		rc = export_patch(u.conn, p.path, p.base, p.to, &o, &h, &r, &err);
	else
		rc = export_tar(u.conn, p.path, p.to, &o, &h, &r, &err);
	int64_t ms = (mono_us() - t0) / 1000;
	if (rc == BG_ERR_CLOSED || rc == BG_ERR_PROTO) {
		rc = vm_use_broke(ctx, &u, rc, "the export", err);
	} else if (rc == BG_ERR_CANCELED) {
		rc = step_fail(ctx, rc, false, "the export was stopped; nothing was stored");
	} else if (rc) {
		/* a guest directory that is not there, over the limit, a `to`
		 * outside the allowed roots, no git: retrying cannot help */
		bool permanent = rc == BG_ERR_NOENT || rc == BG_ERR_INVAL || rc == BG_ERR_PERM ||
				 rc == BG_ERR_TOOBIG || rc == BG_ERR_EXIST;
		rc = step_fail(ctx, rc, permanent, "%s", err ? err : bg_strerror(rc));
	} else {
		double mib = r.bytes / 1048576.0;
		step_logf(ctx, "exported %s of vm '%s' to %s: %.1f MiB%s%llu entries in %.2f s "
			  "(%.1f MiB/s), sha256 %s",
			  p.path, u.name, r.path, mib, p.patch ? " (patch), " : ", ",
			  (unsigned long long)r.entries, ms / 1000.0,
			  ms > 0 ? mib * 1000.0 / (double)ms : 0.0, r.sha256);
		msgpack_packer *pk = &ctx->result;
		msgpack_pack_map(pk, 8);
		mpk_kv_str(pk, "path", r.path);
		mpk_kv_int(pk, "bytes", (int64_t)r.bytes);
		mpk_kv_str(pk, "sha256", r.sha256);
		mpk_kv_str(pk, "mode", p.patch ? "patch" : "tar");
		mpk_kv_int(pk, "entries", (int64_t)r.entries);
		mpk_kv_int(pk, "data_bytes", (int64_t)r.data_bytes);
		mpk_kv_int(pk, "warnings", (int64_t)r.warnings);
		mpk_kv_int(pk, "duration_ms", ms);
	}
	export_result_release(&r);
	vm_use_close(&u);
	free(err);
	free(dir);
	free(tag);
	export_params_release(&p);
	return rc;
}

static int export_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	char *to = mpk_dup_str(rec, "to"), *dir = mpk_dup_str(rec, "dir");
	char *tag = mpk_dup_str(rec, "tag"), *err = NULL;
	bool existed = true;
	mpk_get_bool(rec, "existed", &existed);
	int rc = 0;
	if (to && dir && tag) {
		struct export_opts o = {
			.spec_dir = dir, .artifacts_dir = vms_artifacts_dir(), .temp_tag = tag};
		rc = export_discard(to, &o, !existed, &err);
		if (rc)
			rc = step_fail(ctx, rc, false, "%s", err ? err : bg_strerror(rc));
	}
	free(err);
	free(to);
	free(dir);
	free(tag);
	return rc;
}

static const struct kind_field export_fields[] = {
	{"vm", FT_STR, true},
	{"path", FT_STR, true},
	{"to", FT_STR, true},
	{"mode", FT_STR, false},
	{"base", FT_STR, false},
	{NULL},
};

static const struct step_def export_steps[] = {
	{.name = "export", .plan = export_plan, .do_ = export_do, .undo = export_undo,
	 .resumable = false},
};

const struct kind kind_workspace_export = {
	.name = "workspace.export",
	.summary = "bring a directory out of a VM as a tar archive (or a git patch)",
	.fields = export_fields,
	.steps = export_steps,
	.nsteps = ARRAY_LEN(export_steps),
	.retry_interrupted = true,
	.wants_dir = true,
};
