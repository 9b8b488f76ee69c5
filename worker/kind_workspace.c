/*
 * kind_workspace.c: the workspace kinds (docs/workspaces.md).
 *
 * workspace.export: bring a guest directory out of a running VM as a tar
 * archive, or a git checkout's changes as a patch, and store it at the
 * spec's `to:`.
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
 *
 * workspace.import (banger vm cp ./dir NAME:/path): copy a host directory
 * or file into a running VM through the agent's IMPORT (import_dir).
 *
 *   import   plan: `vm:` resolved, `to` absolute, `from` resolvable, the
 *            exclude patterns valid.  No undo record: the guest's files are
 *            the VM's, and an import is not transactional (a failed one may
 *            leave part of the tree; the agent never leaves a temporary).
 *            Resumable: after a crash the copy runs again, and a second
 *            copy of the same tree lands on the first (files replaced).
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
#include "import.h"
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

/* ---- fields that name host paths and exclude patterns (vm.h) --------------------------- */

int step_host_path(struct step_ctx *ctx, const char *field, const char *path, char **out)
{
	const char *dir = NULL;
	size_t dlen = 0;
	*out = NULL;
	if (path[0] == '/') {
		*out = xstrdup(path);
		return 0;
	}
	if (mpk_get_str(ctx->params, SPEC_DIR_FIELD, &dir, &dlen) != 0)
		return step_fail(ctx, BG_ERR_INVAL, true,
				 "'%s: %.200s' is relative, and this submission names no directory "
				 "to resolve it against (submit a spec file, or give an absolute "
				 "path)",
				 field, path);
	*out = xasprintf("%.*s/%s", (int)dlen, dir, path);
	return 0;
}

int step_excludes(struct step_ctx *ctx, const char *field, const msgpack_object *ex,
		  char ***out)
{
	size_t n = !ex || ex->type == MSGPACK_OBJECT_NIL ? 0
		   : ex->type == MSGPACK_OBJECT_ARRAY ? ex->via.array.size : 1;
	*out = NULL;
	if (n > WORKSPACE_MAX_EXCLUDES)
		return step_fail(ctx, BG_ERR_INVAL, true, "'%s' has %zu patterns; at most %d", field,
				 n, WORKSPACE_MAX_EXCLUDES);
	char **v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *e = ex->type == MSGPACK_OBJECT_ARRAY ? &ex->via.array.ptr[i] : ex;
		const char *why = NULL;
		int rc = 0;
		if (e->type == MSGPACK_OBJECT_STR)
			v[i] = xstrndup(e->via.str.ptr, e->via.str.size);
		if (!v[i])
			rc = step_fail(ctx, BG_ERR_INVAL, true,
				       "'%s' entries must be patterns (strings)", field);
		else if (workspace_exclude_check(v[i], &why))
			rc = step_fail(ctx, BG_ERR_INVAL, true, "'%s' pattern '%.200s' is refused: %s",
				       field, v[i], why);
		if (rc) {
			for (size_t j = 0; j <= i; j++)
				free(v[j]);
			free(v);
			return rc;
		}
	}
	*out = v;
	return 0;
}

/* ---- workspace.import ---------------------------------------------------------------- */

struct import_params {
	char *from; /* absolute */
	char *to;
	char **exclude; /* NULL-terminated */
};

static void import_params_release(struct import_params *p)
{
	free(p->from);
	free(p->to);
	for (size_t i = 0; p->exclude && p->exclude[i]; i++)
		free(p->exclude[i]);
	free(p->exclude);
	memset(p, 0, sizeof(*p));
}

static int import_params(struct step_ctx *ctx, struct import_params *p)
{
	memset(p, 0, sizeof(*p));
	char *from = mpk_dup_str(ctx->params, "from");
	p->to = mpk_dup_str(ctx->params, "to");
	int rc = 0;
	if (!from || !*from)
		rc = step_fail(ctx, BG_ERR_INVAL, true, "'from' must name a host directory or file");
	else if (!p->to || p->to[0] != '/')
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "'to' must be an absolute path in the guest, got '%.200s'",
			       p->to ? p->to : "");
	else if (!(rc = step_host_path(ctx, "from", from, &p->from)))
		rc = step_excludes(ctx, "exclude", mpk_get(ctx->params, "exclude"), &p->exclude);
	free(from);
	if (rc)
		import_params_release(p);
	return rc;
}

static int import_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	struct import_params p;
	int rc = import_params(ctx, &p);
	if (rc)
		return rc;
	import_params_release(&p);
	msgpack_pack_nil(undo);
	return vm_use_plan(ctx);
}

static void import_warn(void *arg, enum workspace_skip kind, const char *path, const char *why)
{
	step_warnf(arg, "import: '%s' %s", path, why);
}

static int import_do(struct step_ctx *ctx)
{
	struct import_params p;
	struct vm_use u;
	int rc = import_params(ctx, &p);
	if (rc)
		return rc;
	if ((rc = vm_use_open(ctx, &u))) {
		vm_use_close(&u);
		import_params_release(&p);
		return rc;
	}
	struct import_opts o = {
		.exclude = (const char *const *)p.exclude,
		.warn = import_warn,
		.cancelled = on_cancelled,
		.arg = ctx,
	};
	struct import_result r = {0};
	char *err = NULL;
	int64_t t0 = mono_us();
	rc = import_dir(u.conn, p.from, p.to, &o, &r, &err);
	int64_t ms = (mono_us() - t0) / 1000;
	if (rc == BG_ERR_CLOSED || rc == BG_ERR_PROTO) {
		rc = vm_use_broke(ctx, &u, rc, "the import", err);
	} else if (rc == BG_ERR_CANCELED) {
		rc = step_fail(ctx, rc, false, "the import was stopped (part of the tree may be in "
			       "the guest)");
	} else if (rc) {
		bool permanent = rc == BG_ERR_NOENT || rc == BG_ERR_INVAL || rc == BG_ERR_PERM ||
				 rc == BG_ERR_UNSUPPORTED;
		rc = step_fail(ctx, rc, permanent, "%s", err ? err : bg_strerror(rc));
	} else {
		double mib = r.data_bytes / 1048576.0;
		step_logf(ctx, "copied %s into vm '%s' at %s: %llu files, %llu dirs, %llu symlinks, "
			  "%.1f MiB in %.2f s%s",
			  p.from, u.name, p.to, (unsigned long long)r.files, (unsigned long long)r.dirs,
			  (unsigned long long)r.symlinks, mib, ms / 1000.0,
			  r.skipped ? " (some entries skipped: see the warnings)" : "");
		msgpack_packer *pk = &ctx->result;
		msgpack_pack_map(pk, 8);
		mpk_kv_str(pk, "to", p.to);
		mpk_kv_int(pk, "files", (int64_t)r.files);
		mpk_kv_int(pk, "dirs", (int64_t)r.dirs);
		mpk_kv_int(pk, "symlinks", (int64_t)r.symlinks);
		mpk_kv_int(pk, "data_bytes", (int64_t)r.data_bytes);
		mpk_kv_int(pk, "skipped", (int64_t)r.skipped);
		mpk_kv_int(pk, "excluded", (int64_t)r.excluded);
		mpk_kv_int(pk, "duration_ms", ms);
	}
	vm_use_close(&u);
	free(err);
	import_params_release(&p);
	return rc;
}

static const struct kind_field import_fields[] = {
	{"vm", FT_STR, true},
	{"from", FT_STR, true},
	{"to", FT_STR, true},
	{"exclude", FT_STRLIST, false},
	{NULL},
};

static const struct step_def import_steps[] = {
	{.name = "import", .plan = import_plan, .do_ = import_do, .resumable = true},
};

const struct kind kind_workspace_import = {
	.name = "workspace.import",
	.summary = "copy a host directory or file into a running VM",
	.fields = import_fields,
	.steps = import_steps,
	.nsteps = ARRAY_LEN(import_steps),
	.retry_interrupted = true,
	.wants_dir = true,
};
