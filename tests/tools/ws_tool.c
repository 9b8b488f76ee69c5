/*
 * ws_tool.c: a test tool over worker/workspace.c, worker/export.c and the
 * workspace half of worker/agent.c, so tests/integration/t_workspace.sh
 * and tests/bench/workspace.sh can build workspace images, boot a VM with
 * one attached, and export guest directories before vm.create's
 * `workspace:` and the workspace.export kind exist.  Never installed.
 *
 *   ws-tool build --from DIR --out IMG [--exclude PAT]... [--headroom-mb N]
 *                 [--headroom-pct N] [--seed S] [--no-copy-range] [--owner UID]
 *        prints "warning: KIND: MSG" per skipped entry (stderr) and
 *        "files=F dirs=D symlinks=S hardlinks=H skipped=K excluded=E
 *        data_bytes=B image_bytes=I uuid=U s=SECONDS" (stdout)
 *   ws-tool start  --run-dir D --kernel-dir KD --rootfs R [--workspace IMG]
 *                  [--cmdline-mount PATH] [--timeout S] [--mem MB]
 *        boots with IMG as the second virtio disk (and banger.mount=
 *        LABEL=workspace:PATH on the command line when asked); QEMU keeps
 *        running; prints "pid=P boot_s=S"
 *   ws-tool mount  (--run-dir D | --sock S) --dev DEV --path P [--ro]
 *   ws-tool export (--run-dir D | --sock S) --path GUESTDIR --to TO
 *                  --spec-dir DIR [--artifacts DIR] [--max BYTES] [--timeout S]
 *        prints "bytes=N sha256=H entries=E data_bytes=B warnings=W s=S
 *        mbps=M path=P"; exit 1 with the message on stderr on failure
 *   ws-tool patch  (--run-dir D | --sock S) --path GUESTDIR --to TO
 *                  --spec-dir DIR [--base REV] [--max BYTES]
 *   ws-tool import (--run-dir D | --sock S) --from HOSTPATH --path GUESTDEST
 *                  [--exclude PAT]... [--owner UID] [--timeout S]
 *        import_dir (worker/import.h); prints "warning: KIND: MSG" per
 *        skipped entry (stderr) and "files=F dirs=D symlinks=S hardlinks=H
 *        skipped=K excluded=E data_bytes=B entries=N s=S mbps=M" (stdout);
 *        exit 1 with "ws-tool: import: MSG (ERRNAME)" on failure
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "err.h"
#include "export.h"
#include "import.h"
#include "log.h"
#include "qemu.h"
#include "util.h"
#include "workspace.h"

struct opts {
	const char *from, *out, *seed, *run_dir, *sock, *kernel_dir, *rootfs, *workspace;
	const char *cmdline_mount, *dev, *path, *to, *spec_dir, *artifacts, *base;
	const char *exclude[WORKSPACE_MAX_EXCLUDES + 1];
	int nexclude;
	long long headroom_mb, headroom_pct, owner, mem;
	unsigned long long max;
	double timeout;
	bool no_copy_range, ro, owner_set;
};

static int usage(void)
{
	fprintf(stderr, "usage: ws-tool build|start|mount|export|patch|import [options] "
			"(see tests/tools/ws_tool.c)\n");
	return 2;
}

static int parse(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->headroom_mb = -1;
	o->timeout = 120;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define S(name, field)            \
	if (!strcmp(a, name) && v) { \
		o->field = v;     \
		i++;              \
		continue;         \
	}
#define N(name, field)                       \
	if (!strcmp(a, name) && v) {            \
		o->field = strtoll(v, NULL, 10); \
		i++;                             \
		continue;                        \
	}
		S("--from", from)
		S("--out", out)
		S("--seed", seed)
		S("--run-dir", run_dir)
		S("--sock", sock)
		S("--kernel-dir", kernel_dir)
		S("--rootfs", rootfs)
		S("--workspace", workspace)
		S("--cmdline-mount", cmdline_mount)
		S("--dev", dev)
		S("--path", path)
		S("--to", to)
		S("--spec-dir", spec_dir)
		S("--artifacts", artifacts)
		S("--base", base)
		N("--headroom-mb", headroom_mb)
		N("--headroom-pct", headroom_pct)
		N("--mem", mem)
#undef S
#undef N
		if (!strcmp(a, "--owner") && v) {
			o->owner = strtoll(v, NULL, 10);
			o->owner_set = true;
			i++;
		} else if (!strcmp(a, "--exclude") && v && o->nexclude < WORKSPACE_MAX_EXCLUDES) {
			o->exclude[o->nexclude++] = v;
			i++;
		} else if (!strcmp(a, "--max") && v) {
			o->max = strtoull(v, NULL, 10);
			i++;
		} else if (!strcmp(a, "--timeout") && v) {
			o->timeout = atof(v);
			i++;
		} else if (!strcmp(a, "--no-copy-range")) {
			o->no_copy_range = true;
		} else if (!strcmp(a, "--ro")) {
			o->ro = true;
		} else {
			fprintf(stderr, "ws-tool: unknown option '%s'\n", a);
			return -1;
		}
	}
	return 0;
}

static const char *skip_name(enum workspace_skip k)
{
	switch (k) {
	case WORKSPACE_SKIP_SPECIAL: return "special";
	case WORKSPACE_SKIP_OWNER: return "owner";
	case WORKSPACE_SKIP_MOUNT: return "mount";
	default: return "unreadable";
	}
}

static void on_warn(void *arg, enum workspace_skip kind, const char *path, const char *why)
{
	fprintf(stderr, "warning: %s: %s\n", skip_name(kind), why);
}

static int cmd_build(const struct opts *o)
{
	if (!o->from || !o->out)
		return usage();
	struct workspace_opts w = {
		.exclude = o->nexclude ? o->exclude : NULL,
		.headroom_bytes = o->headroom_mb >= 0 ? (uint64_t)o->headroom_mb << 20
						     : WORKSPACE_HEADROOM_BYTES,
		.headroom_pct = o->headroom_mb >= 0 ? (unsigned)o->headroom_pct
						    : WORKSPACE_HEADROOM_PCT,
		.uuid_seed = o->seed,
		.warn = on_warn,
		.no_copy_range = o->no_copy_range,
		.owner_set = o->owner_set,
		.owner = (uid_t)o->owner,
	};
	struct workspace_result r;
	char *err = NULL;
	int64_t t0 = mono_us();
	int rc = workspace_build(o->from, &w, o->out, &r, &err);
	if (rc < 0) {
		fprintf(stderr, "ws-tool: build: %s (%s)\n", err ? err : bg_strerror(rc),
			bg_errname(rc));
		free(err);
		return 1;
	}
	printf("files=%llu dirs=%llu symlinks=%llu hardlinks=%llu skipped=%llu excluded=%llu "
	       "data_bytes=%llu image_bytes=%llu used_bytes=%llu uuid=%s s=%.3f\n",
	       (unsigned long long)r.files, (unsigned long long)r.dirs,
	       (unsigned long long)r.symlinks, (unsigned long long)r.hardlinks,
	       (unsigned long long)r.skipped, (unsigned long long)r.excluded,
	       (unsigned long long)r.data_bytes, (unsigned long long)r.image_bytes,
	       (unsigned long long)r.used_bytes, r.uuid, (double)(mono_us() - t0) / 1e6);
	return 0;
}

static int cmd_start(const struct opts *o)
{
	if (!o->run_dir || !o->kernel_dir || !o->rootfs)
		return usage();
	struct qemu_config c;
	memset(&c, 0, sizeof(c));
	char *k = xasprintf("%s/vmlinuz", o->kernel_dir), *i = xasprintf("%s/initrd", o->kernel_dir);
	char *app = o->cmdline_mount ? xasprintf("banger.mount=LABEL=%s:%s", WORKSPACE_LABEL,
						 o->cmdline_mount)
				     : NULL;
	c.name = "ws";
	c.run_dir = o->run_dir;
	c.kernel = k;
	c.initrd = i;
	c.rootfs = o->rootfs;
	c.extra_disk = o->workspace;
	c.memory_mb = o->mem > 0 ? (int)o->mem : 0;
	c.accel = QEMU_ACCEL_AUTO;
	c.append = app;
	struct qemu_vm *vm = NULL;
	struct agent_conn *conn = NULL;
	char *err = NULL;
	int64_t t0 = mono_us();
	int rc = qemu_start(&c, &vm, &err);
	if (rc == 0) {
		rc = qemu_wait_agent(vm, (int64_t)(o->timeout * 1e6), &conn, &err);
		if (rc < 0)
			qemu_kill(vm);
	}
	if (rc < 0) {
		fprintf(stderr, "ws-tool: start: %s\n", err ? err : bg_strerror(rc));
		free(err);
		qemu_destroy(vm);
		return 1;
	}
	printf("pid=%d boot_s=%.2f\n", (int)qemu_pid(vm), (double)(mono_us() - t0) / 1e6);
	agent_close(conn);
	qemu_destroy(vm);
	free(k);
	free(i);
	free(app);
	return 0;
}

static int conn_open(const struct opts *o, struct agent_conn **c)
{
	char *sock = o->sock ? xstrdup(o->sock)
			     : o->run_dir ? xasprintf("%s/agent.sock", o->run_dir) : NULL;
	char *err = NULL;
	if (!sock)
		return usage();
	int rc = agent_connect(sock, 15000000, -1, c, &err);
	free(sock);
	if (rc < 0) {
		fprintf(stderr, "ws-tool: connect: %s\n", err ? err : bg_strerror(rc));
		free(err);
		return 1;
	}
	return 0;
}

static int cmd_mount(const struct opts *o)
{
	struct agent_conn *c;
	if (!o->dev || !o->path)
		return usage();
	if (conn_open(o, &c))
		return 1;
	char *err = NULL;
	int rc = agent_mount(c, o->dev, o->path, NULL, o->ro, 30000000, &err);
	agent_close(c);
	if (rc < 0) {
		fprintf(stderr, "ws-tool: mount: %s (%s)\n", err ? err : bg_strerror(rc),
			bg_errname(rc));
		free(err);
		return 1;
	}
	printf("mounted %s on %s\n", o->dev, o->path);
	return 0;
}

static void ex_warn(void *arg, const char *path, const char *msg)
{
	fprintf(stderr, "warning: guest: '%s': %s\n", path, msg);
}

static int cmd_export(const struct opts *o, bool patch)
{
	struct agent_conn *c;
	if (!o->path || !o->to || !o->spec_dir)
		return usage();
	if (conn_open(o, &c))
		return 1;
	struct export_opts eo = {o->spec_dir, o->artifacts, o->max, 0, NULL};
	struct export_hooks h = {ex_warn, NULL, (int64_t)(o->timeout * 1e6), NULL};
	struct export_result r;
	char *err = NULL;
	int64_t t0 = mono_us();
	int rc = patch ? export_patch(c, o->path, o->base, o->to, &eo, &h, &r, &err)
		       : export_tar(c, o->path, o->to, &eo, &h, &r, &err);
	double s = (double)(mono_us() - t0) / 1e6;
	agent_close(c);
	if (rc < 0) {
		fprintf(stderr, "ws-tool: %s: %s (%s)\n", patch ? "patch" : "export",
			err ? err : bg_strerror(rc), bg_errname(rc));
		free(err);
		return 1;
	}
	printf("bytes=%llu sha256=%s entries=%llu data_bytes=%llu warnings=%llu s=%.3f "
	       "mbps=%.1f path=%s\n",
	       (unsigned long long)r.bytes, r.sha256, (unsigned long long)r.entries,
	       (unsigned long long)r.data_bytes, (unsigned long long)r.warnings, s,
	       s > 0 ? (double)r.bytes / 1048576.0 / s : 0.0, r.path);
	export_result_release(&r);
	return 0;
}

static int cmd_import(const struct opts *o)
{
	struct agent_conn *c;
	if (!o->from || !o->path)
		return usage();
	if (conn_open(o, &c))
		return 1;
	struct import_opts io = {
		.exclude = o->nexclude ? o->exclude : NULL,
		.owner_set = o->owner_set,
		.owner = (uid_t)o->owner,
		.warn = on_warn,
		.timeout_us = (int64_t)(o->timeout * 1e6),
	};
	struct import_result r;
	char *err = NULL;
	int64_t t0 = mono_us();
	int rc = import_dir(c, o->from, o->path, &io, &r, &err);
	double s = (double)(mono_us() - t0) / 1e6;
	agent_close(c);
	if (rc < 0) {
		fprintf(stderr, "ws-tool: import: %s (%s)\n", err ? err : bg_strerror(rc),
			bg_errname(rc));
		free(err);
		return 1;
	}
	printf("files=%llu dirs=%llu symlinks=%llu hardlinks=%llu skipped=%llu excluded=%llu "
	       "data_bytes=%llu entries=%llu s=%.3f mbps=%.1f\n",
	       (unsigned long long)r.files, (unsigned long long)r.dirs,
	       (unsigned long long)r.symlinks, (unsigned long long)r.hardlinks,
	       (unsigned long long)r.skipped, (unsigned long long)r.excluded,
	       (unsigned long long)r.data_bytes, (unsigned long long)r.entries, s,
	       s > 0 ? (double)r.data_bytes / 1048576.0 / s : 0.0);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("WS_TOOL_LOG") ? getenv("WS_TOOL_LOG") : "warn", 2);
	log_set_ident("ws-tool");
	if (argc < 2 || parse(argc, argv, &o) < 0)
		return usage();
	const char *c = argv[1];
	if (!strcmp(c, "build"))
		return cmd_build(&o);
	if (!strcmp(c, "start"))
		return cmd_start(&o);
	if (!strcmp(c, "mount"))
		return cmd_mount(&o);
	if (!strcmp(c, "export"))
		return cmd_export(&o, false);
	if (!strcmp(c, "patch"))
		return cmd_export(&o, true);
	if (!strcmp(c, "import"))
		return cmd_import(&o);
	return usage();
}
