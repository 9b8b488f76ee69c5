/*
 * cmd_vm.c: `banger vm list | show | rm | exec`: the VMs vm.create made.
 *
 * list and show are one call each (vm.list, vm.show).  rm and exec are
 * jobs, like everything that changes a VM: they submit a vm.delete or
 * vm.exec job through job.submit and follow it.  rm prints the job's events
 * as `job tail` does; exec prints only the command's output (stdout and
 * stderr as the guest wrote them) and exits with its exit code, so it
 * stands in for the command in scripts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd.h"
#include "err.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "tail.h"
#include "util.h"

/* ---- list, show ----------------------------------------------------------------- */

enum { LIST_ALL, LIST_JSON };

static const struct args_opt list_opts[] = {
	[LIST_ALL] = {"all", 'a', NULL, "deleted VMs too (their rows are kept)"},
	[LIST_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static char *mem_text(const msgpack_object *vm)
{
	int64_t v;
	char buf[32];
	if (mpk_get_int(vm, "memory", &v) != 0 || v < 0)
		return xstrdup("?");
	out_size(buf, sizeof(buf), (uint64_t)v);
	return xstrdup(buf);
}

static int list_run(struct cli *cli, const struct args *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_bool(&pk, "all", a->val[LIST_ALL] != NULL);
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_VM_LIST, &sb, "vm list", &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	const msgpack_object *vms = mpk_get(result, "vms");
	if (!vms || vms->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("vm list: malformed reply from bangerd (no vms)");
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	if (a->val[LIST_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	struct out_table t;
	static const char *const head[] = {"ID", "NAME", "STATE", "ADDRESS", "VCPUS", "MEMORY",
					   "KERNEL", "AGE"};
	out_table_init(&t, ARRAY_LEN(head));
	for (size_t i = 0; i < ARRAY_LEN(head); i++)
		out_table_add(&t, xstrdup(head[i]));
	for (uint32_t i = 0; i < vms->via.array.size; i++) {
		const msgpack_object *vm = &vms->via.array.ptr[i];
		out_table_add(&t, out_field(vm, "id", OUT_INT));
		out_table_add(&t, out_field(vm, "name", OUT_STR));
		out_table_add(&t, out_field(vm, "state", OUT_STR));
		out_table_add(&t, out_field(vm, "address", OUT_STR));
		out_table_add(&t, out_field(vm, "vcpus", OUT_INT));
		out_table_add(&t, mem_text(vm));
		out_table_add(&t, out_field(vm, "kernel", OUT_STR));
		out_table_add(&t, out_field(vm, "created", OUT_AGE));
	}
	if (vms->via.array.size)
		out_table_print(&t, stdout, NULL);
	else
		printf("no vms%s\n", a->val[LIST_ALL] ? "" : " (--all shows deleted ones)");
	out_table_release(&t);
	msgpack_unpacked_destroy(&reply);
	return 0;
}

enum { SHOW_JSON };

static const struct args_opt show_opts[] = {
	[SHOW_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static void line(const char *label, char *owned)
{
	printf("%-12s %s\n", label, owned);
	free(owned);
}

static int show_run(struct cli *cli, const struct args *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_str(&pk, "vm", a->pos[0]);
	msgpack_unpacked reply;
	const msgpack_object *vm;
	int st = cli_call(cli, BG_M_VM_SHOW, &sb, "vm show", &reply, &vm);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	if (a->val[SHOW_JSON]) {
		st = out_json_print(vm, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	line("id:", out_field(vm, "id", OUT_INT));
	line("name:", out_field(vm, "name", OUT_STR));
	line("state:", out_field(vm, "state", OUT_STR));
	if (out_has(vm, "error"))
		line("error:", out_field(vm, "error", OUT_STR));
	line("address:", out_field(vm, "address", OUT_STR));
	line("tap:", out_field(vm, "tap", OUT_STR));
	line("vcpus:", out_field(vm, "vcpus", OUT_INT));
	line("memory:", mem_text(vm));
	line("image:", out_field(vm, "image", OUT_STR));
	line("kernel:", out_field(vm, "kernel", OUT_STR));
	line("pid:", out_field(vm, "pid", OUT_INT));
	line("node:", out_field(vm, "node", OUT_STR));
	line("root disk:", out_field(vm, "overlay", OUT_STR));
	line("run dir:", out_field(vm, "run_dir", OUT_STR));
	line("created:", out_field(vm, "created", OUT_TIME));
	line("created by:", out_field(vm, "created_by", OUT_INT));
	if (out_has(vm, "deleted")) {
		line("deleted:", out_field(vm, "deleted", OUT_TIME));
		line("deleted by:", out_field(vm, "deleted_by", OUT_INT));
	}
	msgpack_unpacked_destroy(&reply);
	return 0;
}

/* ---- jobs: rm, exec ------------------------------------------------------------------- */

/* Submit one job (a JOBDEF packed by the caller after its name and kind:
 * nfields more key/value pairs follow via fill) and return its id. */
/* submit_one with the directory relative paths are resolved against (dir
 * NULL: none). */
static int submit_in(struct cli *cli, const char *what, const char *dir, const char *kind,
		     uint32_t nfields, void (*fill)(msgpack_packer *pk, const void *arg),
		     const void *arg, int64_t *job)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2 + (dir != NULL));
	mpk_kv_str(&pk, "path", what);
	if (dir)
		mpk_kv_str(&pk, "dir", dir);
	mpk_pack_str(&pk, "jobs");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3 + nfields);
	mpk_kv_str(&pk, "name", strchr(kind, '.') + 1);
	mpk_kv_str(&pk, "kind", kind);
	/* a command is run once: a retry would run it again */
	mpk_kv_int(&pk, "max_attempts", 1);
	fill(&pk, arg);
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_JOB_SUBMIT, &sb, what, &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	const msgpack_object *jobs = mpk_get(result, "jobs");
	if (!jobs || jobs->type != MSGPACK_OBJECT_ARRAY || jobs->via.array.size != 1 ||
	    mpk_get_int(&jobs->via.array.ptr[0], "id", job) != 0) {
		cli_error("%s: malformed reply from bangerd (no job)", what);
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	msgpack_unpacked_destroy(&reply);
	return 0;
}

static int submit_one(struct cli *cli, const char *what, const char *kind, uint32_t nfields,
		      void (*fill)(msgpack_packer *pk, const void *arg), const void *arg,
		      int64_t *job)
{
	return submit_in(cli, what, NULL, kind, nfields, fill, arg, job);
}

enum { RM_GRACE, RM_JSON };

static const struct args_opt rm_opts[] = {
	[RM_GRACE] = {"grace", 0, "DURATION", "how long the guest may take to power off before it "
					      "is killed (default 10s)"},
	[RM_JSON] = {"json", 0, NULL, "print the job's events as JSON lines"},
	{NULL, 0, NULL, NULL},
};

static void rm_fill(msgpack_packer *pk, const void *arg)
{
	const struct args *a = arg;
	mpk_kv_str(pk, "vm", a->pos[0]);
	if (a->val[RM_GRACE])
		mpk_kv_str(pk, "grace", a->val[RM_GRACE]);
}

static int rm_run(struct cli *cli, const struct args *a)
{
	int64_t job;
	int st = submit_one(cli, "vm rm", "vm.delete", 1 + (a->val[RM_GRACE] != NULL), rm_fill, a,
			    &job);
	if (st)
		return st;
	struct tail_req req = {.id = job, .from = 1, .follow = true, .json = a->val[RM_JSON] != NULL};
	return tail_run(cli, &req);
}

enum { EXEC_CWD, EXEC_ENV, EXEC_TIMEOUT, EXEC_JSON };

static const struct args_opt exec_opts[] = {
	[EXEC_CWD] = {"cwd", 0, "DIR", "directory to run the command in (default /)"},
	[EXEC_ENV] = {"env", 'e', "NAME=VALUE", "set a variable in the command's environment"},
	[EXEC_TIMEOUT] = {"timeout", 't', "DURATION", "kill the command after this long (e.g. 30s, "
						      "5m)"},
	[EXEC_JSON] = {"json", 0, NULL, "print the job's events as JSON lines"},
	{NULL, 0, NULL, NULL},
};

static void exec_fill(msgpack_packer *pk, const void *arg)
{
	const struct args *a = arg;
	mpk_kv_str(pk, "vm", a->pos[0]);
	mpk_pack_str(pk, "argv");
	msgpack_pack_array(pk, (uint32_t)(a->npos - 1));
	for (int i = 1; i < a->npos; i++)
		mpk_pack_str(pk, a->pos[i]);
	if (a->val[EXEC_CWD])
		mpk_kv_str(pk, "cwd", a->val[EXEC_CWD]);
	if (a->val[EXEC_ENV]) {
		mpk_pack_str(pk, "env");
		msgpack_pack_array(pk, 1);
		mpk_pack_str(pk, a->val[EXEC_ENV]);
	}
	if (a->val[EXEC_TIMEOUT])
		mpk_kv_str(pk, "timeout", a->val[EXEC_TIMEOUT]);
}

struct exec_follow {
	struct out_events out;
	bool json;
	char *error; /* the last state event's error */
	bool has_exit;
};

static int exec_event(const msgpack_object *ev, void *arg)
{
	struct exec_follow *f = arg;
	if (f->json) {
		out_event(&f->out, ev);
		return 0;
	}
	const msgpack_object *stream = mpk_get(ev, "stream");
	if (mpk_str_eq(stream, "stdout") || mpk_str_eq(stream, "stderr")) {
		out_event(&f->out, ev);
	} else if (mpk_str_eq(stream, "state")) {
		const msgpack_object *d = mpk_get(ev, "data");
		char *e = mpk_dup_str(d, "error");
		if (e) {
			free(f->error);
			f->error = e;
		}
		int64_t code;
		if (mpk_get_int(d, "exit_code", &code) == 0)
			f->has_exit = true;
	}
	return 0;
}

static int exec_run(struct cli *cli, const struct args *a)
{
	if (a->npos < 2) {
		cli_error("vm exec: missing the command (banger vm exec NAME -- CMD [ARGS...])");
		return CLI_EXIT_USAGE;
	}
	if (a->val[EXEC_ENV] && !strchr(a->val[EXEC_ENV], '=')) {
		cli_error("vm exec: --env wants NAME=VALUE, got '%s'", a->val[EXEC_ENV]);
		return CLI_EXIT_USAGE;
	}
	int64_t job;
	int nf = 2 + (a->val[EXEC_CWD] != NULL) + (a->val[EXEC_ENV] != NULL) +
		 (a->val[EXEC_TIMEOUT] != NULL);
	int st = submit_one(cli, "vm exec", "vm.exec", (uint32_t)nf, exec_fill, a, &job);
	if (st)
		return st;
	/* follow the job: one connection; a daemon restart interrupts the
	 * command anyway */
	struct rpc_client rc;
	int bgerr;
	if ((st = cli_connect(cli, &rc, false, &bgerr)))
		return st;
	struct exec_follow f = {.json = a->val[EXEC_JSON] != NULL};
	out_events_init(&f.out, f.json);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	mpk_kv_int(&pk, "job", job);
	mpk_kv_int(&pk, "from", 1);
	mpk_kv_bool(&pk, "follow", true);
	msgpack_unpacked reply;
	char *errmsg = NULL;
	int r = rpc_call(&rc, BG_M_JOB_TAIL, cli->op, sb.data, sb.size, exec_event, &f, &reply,
			 &errmsg);
	msgpack_sbuffer_destroy(&sb);
	rpc_close(&rc);
	out_events_finish(&f.out);
	fflush(stdout);
	if (r) {
		char subject[48];
		snprintf(subject, sizeof(subject), "vm exec (job %lld)", (long long)job);
		st = cli_report(r, subject, errmsg);
		free(errmsg);
		free(f.error);
		return st;
	}
	const msgpack_object *res = mpk_get(&reply.data, "result");
	st = tail_job_status(res, false);
	/* a command that exited non-zero speaks for itself; anything else
	 * (no such vm, killed, timed out) is said */
	int64_t code;
	bool exited = mpk_get_int(res, "exit_code", &code) == 0;
	if (st && !f.json && f.error && (!exited || code > 128))
		cli_error("vm exec: %s", f.error);
	free(f.error);
	msgpack_unpacked_destroy(&reply);
	return st;
}

const struct args_cmd cmd_vm_list = {
	.name = "vm list",
	.synopsis = "[--all] [--json]",
	.summary = "List the VMs (not the deleted ones, unless --all).",
	.opts = list_opts,
	.run = list_run,
};

const struct args_cmd cmd_vm_show = {
	.name = "vm show",
	.synopsis = "NAME [--json]",
	.summary = "Show one VM: state, address, resources, the jobs that made and removed it.",
	.opts = show_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = show_run,
};

/* ---- cp ---------------------------------------------------------------------------------- */

enum { CP_JSON };

static const struct args_opt cp_opts[] = {
	[CP_JSON] = {"json", 0, NULL, "print the job's events as JSON lines"},
	{NULL, 0, NULL, NULL},
};

/* "NAME:/path": the VM side of a copy.  *name and *path point into s
 * (name not terminated: *nlen). */
static bool vm_side(const char *s, const char **name, size_t *nlen, const char **path)
{
	const char *colon = strchr(s, ':');
	if (!colon || colon == s || colon[1] != '/')
		return false;
	for (const char *c = s; c < colon; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
			return false;
	*name = s;
	*nlen = (size_t)(colon - s);
	*path = colon + 1;
	return true;
}

struct cp_req {
	char *vm, *guest, *host_dir, *host_name, *host_path;
};

static void cp_out_fill(msgpack_packer *pk, const void *arg)
{
	const struct cp_req *r = arg;
	mpk_kv_str(pk, "vm", r->vm);
	mpk_kv_str(pk, "path", r->guest);
	mpk_kv_str(pk, "to", r->host_name);
}

static void cp_in_fill(msgpack_packer *pk, const void *arg)
{
	const struct cp_req *r = arg;
	mpk_kv_str(pk, "vm", r->vm);
	mpk_kv_str(pk, "from", r->host_path);
	mpk_kv_str(pk, "to", r->guest);
}

static int cp_run(struct cli *cli, const struct args *a)
{
	const char *name, *gpath, *src = a->pos[0], *dst = a->pos[1];
	size_t nlen;
	bool out = vm_side(src, &name, &nlen, &gpath), in = vm_side(dst, &name, &nlen, &gpath);
	if (out == in) {
		cli_error("vm cp: give exactly one side as NAME:/path (a VM and an absolute path "
			  "in it): banger vm cp ./dir NAME:/path, or banger vm cp NAME:/path ./file.tar");
		return CLI_EXIT_USAGE;
	}
	if (out)
		vm_side(src, &name, &nlen, &gpath);
	struct cp_req r = {.vm = xstrndup(name, nlen), .guest = xstrdup(gpath)};
	const char *local = out ? dst : src;
	int st = 0;
	struct stat sb;
	if (out) {
		/* into a directory: NAME.tar there; else the file named */
		char *base = xstrdup(gpath);
		char *slash;
		while ((slash = strrchr(base, '/')) && slash[1] == '\0' && slash != base)
			*slash = '\0';
		slash = strrchr(base, '/');
		const char *last = slash && slash[1] ? slash + 1 : "root";
		if (stat(local, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			r.host_dir = realpath(local, NULL);
			r.host_name = xasprintf("%s.tar", last);
		} else {
			char *copy = xstrdup(local);
			char *ls = strrchr(copy, '/');
			const char *dir = ls ? (ls == copy ? "/" : copy) : ".";
			if (ls)
				*ls = '\0';
			r.host_dir = realpath(dir, NULL);
			r.host_name = xstrdup(ls ? ls + 1 : local);
			free(copy);
		}
		free(base);
		if (!r.host_dir) {
			cli_error("vm cp: the directory of '%s' does not exist: %s", local,
				  strerror(errno));
			st = CLI_EXIT_USAGE;
		}
	} else {
		r.host_path = realpath(local, NULL);
		r.host_dir = realpath(".", NULL);
		if (!r.host_path) {
			cli_error("vm cp: '%s': %s", local, strerror(errno));
			st = CLI_EXIT_USAGE;
		}
	}
	int64_t job = 0;
	if (!st) {
		st = submit_in(cli, "vm cp", r.host_dir, out ? "workspace.export" : "workspace.import",
			       3, out ? cp_out_fill : cp_in_fill, &r, &job);
	}
	if (!st) {
		struct tail_req req = {
			.id = job, .from = 1, .follow = true, .json = a->val[CP_JSON] != NULL};
		st = tail_run(cli, &req);
	}
	free(r.vm);
	free(r.guest);
	free(r.host_dir);
	free(r.host_name);
	free(r.host_path);
	return st;
}

const struct args_cmd cmd_vm_rm = {
	.name = "vm rm",
	.synopsis = "NAME [--grace DURATION] [--json]",
	.summary = "Delete a VM: submits a vm.delete job and follows it.",
	.details = "The guest is asked to sync and power off; after --grace it is killed.\n"
		   "Its tap, root disk and run directory are removed; its row is kept as\n"
		   "deleted (banger vm list --all).  Exits with the job's status.\n",
	.opts = rm_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = rm_run,
};

const struct args_cmd cmd_vm_cp = {
	.name = "vm cp",
	.synopsis = "SRC DST [--json]",
	.summary = "Copy a directory or file into a VM, or a VM's directory out as a tar archive.",
	.details = "One side is NAME:/path, a VM and an absolute path in it.\n"
		   "  banger vm cp ./dir NAME:/path   a workspace.import job: ./dir (or a file)\n"
		   "                                  lands at /path in the guest, as cp -r does\n"
		   "  banger vm cp NAME:/path out.tar a workspace.export job: the guest directory\n"
		   "                                  as a tar archive (into a directory: NAME.tar)\n"
		   "Follows the job as 'job tail' does and exits with its status.\n",
	.opts = cp_opts,
	.min_pos = 2,
	.max_pos = 2,
	.run = cp_run,
};

const struct args_cmd cmd_vm_exec = {
	.name = "vm exec",
	.synopsis = "NAME [--cwd DIR] [--env NAME=VALUE] [--timeout D] -- CMD [ARGS...]",
	.summary = "Run a command in a VM (a vm.exec job) and exit with its exit code.",
	.details = "Submits a vm.exec job with the command as argv (no shell: use\n"
		   "-- sh -c 'LINE' for one) and prints its output as the guest writes it.\n"
		   "Exits with the command's exit code (128+N when a signal N killed it);\n"
		   "1 with a message when it could not run.  The job stays in\n"
		   "'banger job list' with its output.\n",
	.opts = exec_opts,
	.min_pos = 1,
	.max_pos = ARGS_MAX_POS - 1,
	.run = exec_run,
};
