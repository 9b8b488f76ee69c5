/*
 * vmrpc.c: the vm.*, kernel.* and doctor RPCs (see vmrpc.h and
 * common/protocol.h).
 *
 * vm.list and vm.show read the vms table on the loop thread.  kernel.*
 * touch tens of megabytes (import) or the disk, and doctor probes KVM
 * (booting the kernel once, up to 6 s) and the helper: those run in a pool
 * thread (uv_queue_work) and answer from the after-work callback, holding
 * the connection meanwhile (server_hold), like image.prune in server.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "kernel.h"
#include "log.h"
#include "mpk.h"
#include "qemu.h"
#include "queue.h"
#include "server.h"
#include "util.h"
#include "firecracker.h"
#include "vm.h"
#include "vmrpc.h"

static struct {
	uv_loop_t *loop;
	struct queue *q;
	char *state_dir, *runtime_dir;
	char *firecracker_path, *jailer_path; /* config; NULL: from PATH */
} R;

void vmrpc_init(uv_loop_t *loop, struct queue *q, const char *state_dir, const char *runtime_dir)
{
	R.loop = loop;
	R.q = q;
	R.state_dir = xstrdup(state_dir);
	R.runtime_dir = xstrdup(runtime_dir);
}

void vmrpc_set_firecracker(const char *firecracker_path, const char *jailer_path)
{
	free(R.firecracker_path);
	free(R.jailer_path);
	R.firecracker_path = firecracker_path ? xstrdup(firecracker_path) : NULL;
	R.jailer_path = jailer_path ? xstrdup(jailer_path) : NULL;
}

/* Answer with a packed result and free it. */
static void send_packed(struct conn *c, uint32_t id, msgpack_sbuffer *sb)
{
	server_reply(c, id, sb->data, sb->size);
	msgpack_sbuffer_destroy(sb);
}

/* ---- vm.list, vm.show ------------------------------------------------------ */

static void pack_vm(msgpack_packer *pk, const struct q_vm *vm)
{
	msgpack_pack_map(pk, 19);
	mpk_kv_int(pk, "id", vm->id);
	mpk_kv_str(pk, "name", vm->name);
	mpk_kv_str(pk, "state", vm->state);
	mpk_kv_str(pk, "image", vm->image);
	mpk_kv_str(pk, "kernel", vm->kernel);
	mpk_kv_int(pk, "vcpus", vm->vcpus);
	mpk_kv_int(pk, "memory", vm->memory);
	mpk_kv_str(pk, "address", vm->address);
	mpk_kv_str(pk, "tap", vm->tap);
	if (vm->pid)
		mpk_kv_int(pk, "pid", vm->pid);
	else
		mpk_kv_nil(pk, "pid");
	mpk_kv_str(pk, "node", vm->node);
	mpk_kv_str(pk, "error", vm->error);
	mpk_kv_str(pk, "overlay", vm->overlay);
	mpk_kv_str(pk, "run_dir", vm->run_dir);
	mpk_kv_int(pk, "created", vm->created);
	if (vm->deleted)
		mpk_kv_int(pk, "deleted", vm->deleted);
	else
		mpk_kv_nil(pk, "deleted");
	mpk_kv_int(pk, "created_by", vm->created_by);
	if (vm->deleted_by)
		mpk_kv_int(pk, "deleted_by", vm->deleted_by);
	else
		mpk_kv_nil(pk, "deleted_by");
	mpk_kv_str(pk, "rootfs", vm->rootfs);
}

struct vm_pack {
	msgpack_packer *pk;
	size_t n;
};

static int count_vm_cb(const struct q_vm *vm, void *arg)
{
	((struct vm_pack *)arg)->n++;
	return 0;
}

static int pack_vm_cb(const struct q_vm *vm, void *arg)
{
	pack_vm(((struct vm_pack *)arg)->pk, vm);
	return 0;
}

void vmrpc_vm_list(struct conn *c, uint32_t id, const msgpack_object *params)
{
	bool all = false;
	if (mpk_get_bool(params, "all", &all) == BG_ERR_INVAL) {
		server_reply_error(c, id, BG_ERR_INVAL, "'all' must be true or false");
		return;
	}
	struct vm_pack vp = {0};
	int rc = R.q->ops->vm_list(R.q, all, count_vm_cb, &vp);
	if (rc) {
		server_reply_error(c, id, rc, "cannot list vms: %s", R.q->errmsg);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	vp.pk = &pk;
	msgpack_pack_map(&pk, 1);
	mpk_pack_str(&pk, "vms");
	msgpack_pack_array(&pk, vp.n);
	R.q->ops->vm_list(R.q, all, pack_vm_cb, &vp);
	send_packed(c, id, &sb);
}

void vmrpc_vm_show(struct conn *c, uint32_t id, const msgpack_object *params)
{
	char *key = mpk_dup_str(params, "vm");
	struct q_vm vm;
	int rc;
	if (!key || !*key) {
		server_reply_error(c, id, BG_ERR_INVAL, "missing 'vm' (a vm name or id)");
		free(key);
		return;
	}
	char *end;
	long long n = strtoll(key, &end, 10);
	rc = *end == '\0' && n > 0 ? R.q->ops->vm_get(R.q, n, &vm) : R.q->ops->vm_find(R.q, key, &vm);
	if (rc) {
		server_reply_error(c, id, rc, "no vm '%s'", key);
		free(key);
		return;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_vm(&pk, &vm);
	send_packed(c, id, &sb);
	q_vm_release(&vm);
	free(key);
}

/* ---- work in the pool --------------------------------------------------------- */

enum pool_kind { PK_IMPORT, PK_LIST, PK_RM, PK_DOCTOR };

struct pool_op {
	uv_work_t work;
	struct conn *c;
	uint32_t id;
	enum pool_kind kind;
	char op[64];
	char *source, *name;
	bool replace;
	int rc;
	char *err;
	msgpack_sbuffer out;
	msgpack_packer pk;
};

static void pack_kernel(msgpack_packer *pk, const struct kernel_info *k)
{
	msgpack_pack_map(pk, 7);
	mpk_kv_str(pk, "name", k->name);
	mpk_kv_str(pk, "version", k->version);
	mpk_kv_str(pk, "source", k->source);
	mpk_kv_bool(pk, "modular", k->modular);
	mpk_pack_str(pk, "modules");
	msgpack_pack_array(pk, k->nmodules);
	for (size_t i = 0; i < k->nmodules; i++)
		mpk_pack_str(pk, k->modules[i]);
	mpk_kv_int(pk, "created", k->created);
	mpk_kv_str(pk, "dir", k->dir);
}

/* Is there an executable file called name in $PATH?  Its path, or NULL. */
static char *in_path(const char *name)
{
	const char *path = getenv("PATH");
	char *copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin"), *save = NULL;
	char *found = NULL;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char *p = xasprintf("%s/%s", d, name);
		if (access(p, X_OK) == 0)
			found = p;
		else
			free(p);
	}
	free(copy);
	return found;
}

static void doctor(struct pool_op *op)
{
	msgpack_packer *pk = &op->pk;
	struct kernel_info *ks = NULL;
	size_t nk = 0;
	char *err = NULL;
	kernel_list(R.state_dir, &ks, &nk, &err);
	free(err);
	err = NULL;
	msgpack_pack_map(pk, 7);

	/* drivers */
	char *qemu = in_path("qemu-system-x86_64");
	/* the QEMU driver's KVM probe, when it ran: can KVM boot a guest here? */
	bool kvm_probed = false, kvm_boots = false;
	mpk_pack_str(pk, "drivers");
	msgpack_pack_array(pk, 2);
	msgpack_pack_map(pk, 4);
	mpk_kv_str(pk, "name", "qemu");
	if (!qemu) {
		mpk_kv_bool(pk, "usable", false);
		mpk_kv_nil(pk, "accel");
		mpk_kv_str(pk, "detail", "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)");
	} else {
		/* the probe boots a kernel: without one, say what it would need */
		char *run = xasprintf("%s/doctor", R.runtime_dir);
		struct qemu_config cfg = {.name = "doctor", .run_dir = run, .accel = QEMU_ACCEL_AUTO,
					  .probe_cache = vms_probe_cache()};
		bool kvm_open = access("/dev/kvm", R_OK | W_OK) == 0;
		if (nk > 0) {
			cfg.kernel = ks[0].vmlinuz;
			cfg.initrd = ks[0].initrd;
		}
		enum qemu_accel acc = QEMU_ACCEL_TCG;
		bool known = nk > 0 || !kvm_open;
		if (nk > 0) {
			mkdir_p(run, 0700);
			qemu_accel_resolve(&cfg, &acc, &err);
			rmdir(run);
		}
		mpk_kv_bool(pk, "usable", true);
		kvm_probed = nk > 0 && kvm_open;
		kvm_boots = acc == QEMU_ACCEL_KVM;
		if (known)
			mpk_kv_str(pk, "accel", qemu_accel_name(acc));
		else
			mpk_kv_nil(pk, "accel");
		char *d;
		if (!known)
			d = xasprintf("%s; the accelerator is chosen by booting a kernel under kvm "
				      "once: import a kernel first", qemu);
		else if (acc == QEMU_ACCEL_KVM)
			d = xasprintf("%s, kvm: hardware acceleration", qemu);
		else if (!kvm_open)
			d = xasprintf("%s, tcg (software emulation, several times slower): /dev/kvm "
				      "is not usable by this user", qemu);
		else
			d = xasprintf("%s, tcg (software emulation, several times slower): kvm cannot "
				      "boot guests on this host (the probe's answer is cached in %s)",
				      qemu, vms_probe_cache());
		mpk_kv_str(pk, "detail", d);
		free(d);
		free(run);
		free(err);
		err = NULL;
	}
	/* Firecracker: its binary, KVM (it has no emulation), its jailer */
	char *fc = fc_which(R.firecracker_path ? R.firecracker_path : "firecracker");
	char *jl = fc_which(R.jailer_path ? R.jailer_path : "jailer");
	bool fc_kvm = access("/dev/kvm", R_OK | W_OK) == 0 && (!kvm_probed || kvm_boots);
	msgpack_pack_map(pk, 4);
	mpk_kv_str(pk, "name", "firecracker");
	mpk_kv_bool(pk, "usable", fc && fc_kvm && jl);
	if (fc && fc_kvm && jl)
		mpk_kv_str(pk, "accel", "kvm");
	else
		mpk_kv_nil(pk, "accel");
	struct sb fd_;
	sb_init(&fd_);
	if (fc)
		sb_addf(&fd_, "%s", fc);
	else if (R.firecracker_path)
		sb_addf(&fd_, "'%s' (firecracker_path) is not an executable", R.firecracker_path);
	else
		sb_adds(&fd_, "not installed: firecracker is not in PATH (not packaged by Debian: "
			      "install its release binary, or set firecracker_path)");
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		sb_adds(&fd_, "; /dev/kvm is not usable by this user (firecracker needs kvm)");
	else if (kvm_probed && !kvm_boots)
		sb_adds(&fd_, "; kvm cannot boot guests on this host (the qemu driver's probe)");
	else if (!kvm_probed)
		sb_adds(&fd_, "; /dev/kvm opens (whether it boots a guest is known once a kernel "
			      "is imported)");
	else
		sb_adds(&fd_, "; kvm boots guests");
	if (jl)
		sb_addf(&fd_, "; jailer %s", jl);
	else if (R.jailer_path)
		sb_addf(&fd_, "; '%s' (jailer_path) is not an executable", R.jailer_path);
	else
		sb_adds(&fd_, "; no jailer in PATH");
	if (fc && fc_kvm && jl)
		sb_adds(&fd_, " (vm.create does not choose this driver yet)");
	mpk_kv_str(pk, "detail", fd_.buf);
	sb_release(&fd_);
	free(jl);

	/* /dev/kvm */
	mpk_pack_str(pk, "kvm");
	msgpack_pack_map(pk, 3);
	struct stat st;
	bool present = stat("/dev/kvm", &st) == 0;
	int fd = present ? open("/dev/kvm", O_RDWR | O_CLOEXEC) : -1;
	int e = errno;
	mpk_kv_bool(pk, "present", present);
	mpk_kv_bool(pk, "usable", fd >= 0);
	char *kd = !present ? xstrdup("no /dev/kvm: guests run under tcg")
		   : fd >= 0 ? xasprintf("/dev/kvm opens (mode %04o)", (unsigned)st.st_mode & 07777)
			     : xasprintf("/dev/kvm cannot be opened by this user (mode %04o): %s",
					 (unsigned)st.st_mode & 07777, strerror(e));
	mpk_kv_str(pk, "detail", kd);
	free(kd);
	if (fd >= 0)
		close(fd);

	/* /dev/net/tun: QEMU opens the helper's taps through it */
	mpk_pack_str(pk, "tun");
	msgpack_pack_map(pk, 2);
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	e = errno;
	mpk_kv_bool(pk, "usable", fd >= 0);
	char *td = fd >= 0 ? xstrdup("/dev/net/tun opens: qemu can attach to banger's taps")
			   : xasprintf("/dev/net/tun cannot be opened by this user: %s (vms need "
				       "'network: none', or the device mode 0666: docs/privileges.md)",
				       strerror(e));
	mpk_kv_str(pk, "detail", td);
	free(td);
	if (fd >= 0)
		close(fd);

	/* the helper */
	mpk_pack_str(pk, "helper");
	msgpack_pack_map(pk, 3);
	mpk_kv_str(pk, "socket", vms_helper_socket());
	struct helper_client hc;
	int rc = helper_connect(vms_helper_socket(), &hc, &err);
	if (rc == 0) {
		rc = helper_ping(&hc, op->op, &err);
		helper_close(&hc);
	}
	mpk_kv_bool(pk, "reachable", rc == 0);
	char *hd = rc == 0 ? xstrdup("banger-helper answers: taps can be made")
			   : xasprintf("%s (vms need 'network: none' until banger-helper runs: "
				       "docs/privileges.md)", err ? err : bg_strerror(rc));
	mpk_kv_str(pk, "detail", hd);
	free(hd);
	free(err);
	err = NULL;

	/* the agent and the kernels */
	mpk_pack_str(pk, "agent");
	msgpack_pack_map(pk, 2);
	mpk_kv_str(pk, "path", vms_agent_path());
	mpk_kv_bool(pk, "present", access(vms_agent_path(), R_OK) == 0);
	mpk_pack_str(pk, "kernels");
	msgpack_pack_array(pk, nk);
	for (size_t i = 0; i < nk; i++)
		mpk_pack_str(pk, ks[i].name);
	char *qimg = in_path("qemu-img");
	mpk_kv_bool(pk, "qemu_img", qimg != NULL);
	free(qimg);
	free(qemu);
	free(fc);
	kernel_list_free(ks, nk);
}

static void pool_work(uv_work_t *w)
{
	struct pool_op *op = w->data;
	struct kernel_info ki = {0};
	switch (op->kind) {
	case PK_IMPORT: {
		struct kernel_import_opts o = {
			.state_dir = R.state_dir,
			.source = op->source,
			.name = op->name,
			.agent_path = vms_agent_path(),
			.replace = op->replace,
		};
		int64_t t0 = mono_us();
		op->rc = kernel_import(&o, &ki, &op->err);
		if (op->rc == 0) {
			log_info(op->op, 0, "kernel '%s' imported from '%s' in %.1f s", ki.name,
				 op->source, (double)(mono_us() - t0) / 1e6);
			pack_kernel(&op->pk, &ki);
			kernel_info_release(&ki);
		}
		break;
	}
	case PK_LIST: {
		struct kernel_info *v = NULL;
		size_t n = 0;
		op->rc = kernel_list(R.state_dir, &v, &n, &op->err);
		if (op->rc == 0) {
			msgpack_pack_map(&op->pk, 1);
			mpk_pack_str(&op->pk, "kernels");
			msgpack_pack_array(&op->pk, n);
			for (size_t i = 0; i < n; i++)
				pack_kernel(&op->pk, &v[i]);
			kernel_list_free(v, n);
		}
		break;
	}
	case PK_RM:
		op->rc = kernel_remove(R.state_dir, op->name, &op->err);
		if (op->rc == 0) {
			log_info(op->op, 0, "kernel '%s' removed", op->name);
			msgpack_pack_map(&op->pk, 1);
			mpk_kv_str(&op->pk, "name", op->name);
		}
		break;
	case PK_DOCTOR:
		doctor(op);
		op->rc = 0;
		break;
	}
}

static void pool_op_free(struct pool_op *op)
{
	msgpack_sbuffer_destroy(&op->out);
	free(op->source);
	free(op->name);
	free(op->err);
	free(op);
}

static void pool_done(uv_work_t *w, int status)
{
	struct pool_op *op = w->data;
	if (status < 0 && op->rc == 0)
		op->rc = BG_ERR_CANCELED;
	if (server_unhold(op->c)) {
		if (op->rc)
			server_reply_error(op->c, op->id, op->rc, "%s", op->err ? op->err : bg_strerror(op->rc));
		else
			server_reply(op->c, op->id, op->out.data, op->out.size);
	}
	pool_op_free(op);
}

static struct pool_op *pool_op_new(struct conn *c, uint32_t id, enum pool_kind kind)
{
	struct pool_op *op = xcalloc(1, sizeof(*op));
	op->c = c;
	op->id = id;
	op->kind = kind;
	snprintf(op->op, sizeof(op->op), "%s", server_op(c));
	msgpack_sbuffer_init(&op->out);
	msgpack_packer_init(&op->pk, &op->out, msgpack_sbuffer_write);
	return op;
}

static void pool_start(struct pool_op *op)
{
	op->work.data = op;
	if (uv_queue_work(R.loop, &op->work, pool_work, pool_done) != 0) {
		/* its callback never fires */
		server_reply_error(op->c, op->id, BG_ERR_NOMEM, "cannot start the work in the pool");
		pool_op_free(op);
		return;
	}
	server_hold(op->c);
}

/* ---- kernel.* and doctor --------------------------------------------------------- */

void vmrpc_kernel_import(struct conn *c, uint32_t id, const msgpack_object *params)
{
	char *source = mpk_dup_str(params, "source"), *name = mpk_dup_str(params, "name");
	bool replace = false;
	if (!source || source[0] != '/') {
		server_reply_error(c, id, BG_ERR_INVAL, "'source' must be the absolute path of a kernel package, "
		       "directory or image");
		free(source);
		free(name);
		return;
	}
	if (name && !kernel_name_ok(name)) {
		server_reply_error(c, id, BG_ERR_INVAL, "invalid kernel name '%.64s': use 1 to 64 of A-Z, a-z, "
		       "0-9, '.', '_', '+' and '-', not starting with '.' or '-'", name);
		free(source);
		free(name);
		return;
	}
	if (mpk_get_bool(params, "replace", &replace) == BG_ERR_INVAL) {
		server_reply_error(c, id, BG_ERR_INVAL, "'replace' must be true or false");
		free(source);
		free(name);
		return;
	}
	struct pool_op *op = pool_op_new(c, id, PK_IMPORT);
	op->source = source;
	op->name = name;
	op->replace = replace;
	pool_start(op);
}

void vmrpc_kernel_list(struct conn *c, uint32_t id, const msgpack_object *params)
{
	pool_start(pool_op_new(c, id, PK_LIST));
}

struct kernel_users {
	const char *name;
	struct sb names;
	size_t n;
};

static int kernel_user_cb(const struct q_vm *vm, void *arg)
{
	struct kernel_users *u = arg;
	if (vm->kernel && !strcmp(vm->kernel, u->name)) {
		sb_addf(&u->names, "%s'%s'", u->n ? ", " : "", vm->name);
		u->n++;
	}
	return 0;
}

void vmrpc_kernel_rm(struct conn *c, uint32_t id, const msgpack_object *params)
{
	char *name = mpk_dup_str(params, "name");
	if (!name || !kernel_name_ok(name)) {
		server_reply_error(c, id, BG_ERR_INVAL, "missing or invalid 'name' (a kernel name)");
		free(name);
		return;
	}
	struct kernel_users u = {.name = name};
	sb_init(&u.names);
	R.q->ops->vm_list(R.q, false, kernel_user_cb, &u);
	if (u.n) {
		server_reply_error(c, id, BG_ERR_BUSY, "kernel '%s' is in use by %zu vm%s (%s): delete %s first",
		       name, u.n, u.n == 1 ? "" : "s", u.names.buf, u.n == 1 ? "it" : "them");
		sb_release(&u.names);
		free(name);
		return;
	}
	sb_release(&u.names);
	struct pool_op *op = pool_op_new(c, id, PK_RM);
	op->name = name;
	pool_start(op);
}

void vmrpc_doctor(struct conn *c, uint32_t id, const msgpack_object *params)
{
	pool_start(pool_op_new(c, id, PK_DOCTOR));
}
