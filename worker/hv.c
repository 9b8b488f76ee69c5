/*
 * hv.c: the driver interface of hv.h, dispatched on the handle's driver to
 * worker/qemu.c or worker/firecracker.c.  No logic of its own beyond
 * translating one config into the other and choosing the driver at adopt.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "err.h"
#include "firecracker.h"
#include "hv.h"
#include "qemu.h"
#include "util.h"

struct hv_vm {
	enum hv_driver driver;
	struct qemu_vm *q;
	struct fc_vm *f;
};

const char *hv_driver_name(enum hv_driver d)
{
	return d == HV_FIRECRACKER ? "firecracker" : "qemu";
}

int hv_driver_parse(const char *s, enum hv_driver *out)
{
	if (s && !strcmp(s, "qemu"))
		*out = HV_QEMU;
	else if (s && (!strcmp(s, "firecracker") || !strcmp(s, "fc")))
		*out = HV_FIRECRACKER;
	else
		return BG_ERR_INVAL;
	return 0;
}

static struct hv_vm *wrap(enum hv_driver d, struct qemu_vm *q, struct fc_vm *f)
{
	struct hv_vm *vm = xcalloc(1, sizeof(*vm));
	vm->driver = d;
	vm->q = q;
	vm->f = f;
	return vm;
}

int hv_start(const struct hv_config *cfg, struct hv_vm **out, char **errmsg)
{
	int rc;
	if (cfg->driver == HV_FIRECRACKER) {
		if (cfg->rootfs_format && strcmp(cfg->rootfs_format, "raw") != 0) {
			errmsg_set(errmsg, "firecracker reads raw disks only, not '%s' (root disk '%s')",
				   cfg->rootfs_format, cfg->rootfs ? cfg->rootfs : "");
			return BG_ERR_INVAL;
		}
		struct fc_config fc = {
			.fc_bin = cfg->firecracker_bin,
			.name = cfg->name,
			.run_dir = cfg->run_dir,
			.kernel = cfg->kernel,
			.initrd = cfg->initrd,
			.rootfs = cfg->rootfs,
			.rootfs_readonly = cfg->rootfs_readonly,
			.extra_disk = cfg->extra_disk,
			.tap = cfg->tap,
			.mac = cfg->mac,
			.guest_ip = cfg->guest_ip,
			.vcpus = cfg->vcpus,
			.memory_mb = cfg->memory_mb,
			.append = cfg->append,
			.jailer_bin = cfg->jailer_bin,
			.jail_uid = cfg->jail_uid,
			.jail_gid = cfg->jail_gid,
			.chroot_base = cfg->chroot_base,
			.api_timeout_us = cfg->api_timeout_us,
		};
		struct fc_vm *f;
		if ((rc = fc_start(&fc, &f, errmsg)) < 0)
			return rc;
		*out = wrap(HV_FIRECRACKER, NULL, f);
		return 0;
	}
	struct qemu_config qc = {
		.qemu_bin = cfg->qemu_bin,
		.name = cfg->name,
		.run_dir = cfg->run_dir,
		.kernel = cfg->kernel,
		.initrd = cfg->initrd,
		.rootfs = cfg->rootfs,
		.rootfs_format = cfg->rootfs_format,
		.rootfs_readonly = cfg->rootfs_readonly,
		.extra_disk = cfg->extra_disk,
		.tap = cfg->tap,
		.user_net = cfg->user_net,
		.mac = cfg->mac,
		.guest_ip = cfg->guest_ip,
		.vcpus = cfg->vcpus,
		.memory_mb = cfg->memory_mb,
		.machine = cfg->machine,
		.accel = cfg->accel,
		.probe_cache = cfg->probe_cache,
		.append = cfg->append,
	};
	struct qemu_vm *q;
	if ((rc = qemu_start(&qc, &q, errmsg)) < 0)
		return rc;
	*out = wrap(HV_QEMU, q, NULL);
	return 0;
}

int hv_adopt(const char *run_dir, struct hv_vm **out, char **errmsg)
{
	int rc;
	char *fpid = xasprintf("%s/firecracker.pid", run_dir);
	bool fc = access(fpid, F_OK) == 0;
	free(fpid);
	if (fc) {
		struct fc_vm *f;
		if ((rc = fc_adopt(run_dir, &f, errmsg)) < 0)
			return rc;
		*out = wrap(HV_FIRECRACKER, NULL, f);
		return 0;
	}
	struct qemu_vm *q;
	if ((rc = qemu_adopt(run_dir, &q, errmsg)) < 0)
		return rc;
	*out = wrap(HV_QEMU, q, NULL);
	return 0;
}

int hv_wait_agent(struct hv_vm *vm, int64_t timeout_us, struct agent_conn **out, char **errmsg)
{
	return vm->f ? fc_wait_agent(vm->f, timeout_us, out, errmsg)
		     : qemu_wait_agent(vm->q, timeout_us, out, errmsg);
}

int hv_connect_agent(struct hv_vm *vm, int64_t timeout_us, struct agent_conn **out,
		     char **errmsg)
{
	if (vm->f)
		return fc_wait_agent(vm->f, timeout_us, out, errmsg);
	if (!qemu_running(vm->q)) {
		errmsg_set(errmsg, "qemu (pid %d) is not running", (int)qemu_pid(vm->q));
		return BG_ERR_CLOSED;
	}
	return agent_connect(qemu_agent_sock(vm->q), timeout_us, qemu_pidfd(vm->q), out, errmsg);
}

int hv_stop(struct hv_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	    char **errmsg)
{
	return vm->f ? fc_stop(vm->f, conn, grace_us, graceful, errmsg)
		     : qemu_stop(vm->q, conn, grace_us, graceful, errmsg);
}

int hv_kill(struct hv_vm *vm) { return vm->f ? fc_kill(vm->f) : qemu_kill(vm->q); }

int hv_wait_exit(struct hv_vm *vm, int64_t timeout_us)
{
	return vm->f ? fc_wait_exit(vm->f, timeout_us) : qemu_wait_exit(vm->q, timeout_us);
}

bool hv_running(struct hv_vm *vm) { return vm->f ? fc_running(vm->f) : qemu_running(vm->q); }
pid_t hv_pid(const struct hv_vm *vm) { return vm->f ? fc_pid(vm->f) : qemu_pid(vm->q); }
int hv_pidfd(const struct hv_vm *vm) { return vm->f ? fc_pidfd(vm->f) : qemu_pidfd(vm->q); }
enum hv_driver hv_driver_of(const struct hv_vm *vm) { return vm->driver; }

const char *hv_accel_name(const struct hv_vm *vm)
{
	return vm->f ? "kvm" : qemu_accel_name(qemu_vm_accel(vm->q));
}

const char *hv_console_log(const struct hv_vm *vm)
{
	return vm->f ? fc_console_log(vm->f) : qemu_console_log(vm->q);
}

void hv_destroy(struct hv_vm *vm)
{
	if (!vm)
		return;
	fc_destroy(vm->f);
	qemu_destroy(vm->q);
	free(vm);
}

int hv_cleanup(const char *run_dir, char **errmsg)
{
	return fc_cleanup(run_dir, errmsg);
}
