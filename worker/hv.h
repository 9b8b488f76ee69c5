/*
 * hv.h: hypervisor drivers behind one interface: QEMU (worker/qemu.h) and
 * Firecracker (worker/firecracker.h).  A VM is a `struct hv_vm *`; which
 * driver runs it is chosen once, by hv_config.driver at start, and found
 * again from the run directory at adopt.  Everything else is the same call
 * whatever the driver.
 *
 * How kind_vm.c uses it (replacing its direct qemu_* calls one for one):
 *
 *   start step     struct hv_config cfg = { .driver = HV_QEMU, .name, .run_dir,
 *                      .kernel, .initrd, .rootfs, .rootfs_format, .extra_disk,
 *                      .tap, .mac, .guest_ip, .vcpus, .memory_mb, .append,
 *                      .accel = QEMU_ACCEL_AUTO, .probe_cache };
 *                  first hv_adopt(run_dir) (a resumed step keeps the VM that
 *                  still runs), else hv_start(&cfg, &vm, &err);
 *                  log hv_driver_name(hv_driver_of(vm)), hv_pid(vm),
 *                  hv_accel_name(vm).  For HV_FIRECRACKER the root disk must
 *                  be raw (rootfs_format "raw": a dm-snapshot device from the
 *                  helper, else a cowdisk_create() copy; never the image).
 *   wait step      hv_wait_agent(vm, boot_timeout, &conn, &err)
 *   live_conn      hv_connect_agent(vm, timeout, &conn, &err) when there is
 *                  no connection or it broke (replaces agent_connect on
 *                  qemu_agent_sock + qemu_pidfd)
 *   vm.exec        hv_wait_exit / hv_running / hv_pid as qemu_* before
 *   stop step      hv_stop(vm, conn, grace, &graceful, &err)
 *   start undo     hv_kill(vm) if a handle is at hand; then hv_cleanup(run_dir)
 *                  before the run directory is removed (a jail's chroot)
 *   vms_recover    hv_adopt(run_dir, &vm, &err) for every VM recorded running
 *   teardown       hv_destroy(vm) when the VM leaves the live table
 *
 * Ownership: hv_start/hv_adopt return a handle the caller hv_destroy()s;
 * destroying neither stops nor reaps the hypervisor (keep the handle for the
 * VM's life).  A handle is not locked: one thread at a time (kind_vm.c holds
 * its live entry's mutex).  Strings returned point into the handle.
 *
 * Blocking: every call may block (pool threads, tools), bounded by the
 * timeouts given.  Errors: 0 or BG_ERR_*, with a message naming the
 * problem in *errmsg (allocated; the caller frees; errmsg may be NULL).
 */
#ifndef BANGER_HV_H
#define BANGER_HV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "qemu.h"

struct agent_conn;

enum hv_driver { HV_QEMU, HV_FIRECRACKER };

struct hv_config {
	enum hv_driver driver;
	/* both drivers: what kind_vm.c's start step passes to qemu_start today */
	const char *name;          /* VM name; required */
	const char *run_dir;       /* required; short (Unix socket paths) */
	const char *kernel;        /* required */
	const char *initrd;        /* required: banger's initramfs with the agent */
	const char *rootfs;        /* NULL: no root disk */
	const char *rootfs_format; /* "raw" (default) or "qcow2" (QEMU only) */
	bool rootfs_readonly;
	const char *extra_disk;    /* NULL or the workspace disk, raw */
	const char *tap;           /* NULL or a tap device */
	const char *mac;           /* NULL: the hypervisor's default */
	const char *guest_ip;      /* banger.ip= value */
	int vcpus;                 /* 0: 1 */
	int memory_mb;             /* 0: 256 */
	const char *append;        /* more kernel parameters */
	/* QEMU only */
	enum qemu_accel accel;     /* AUTO: the KVM probe decides */
	const char *probe_cache;
	enum qemu_machine machine; /* default QEMU_MICROVM */
	const char *qemu_bin;
	bool user_net;
	/* Firecracker only */
	const char *firecracker_bin; /* NULL: firecracker from PATH */
	const char *jailer_bin;      /* NULL: no jailer */
	unsigned jail_uid, jail_gid;
	const char *chroot_base;     /* NULL: /srv/jailer */
	int64_t api_timeout_us;      /* per API request; 0: 5 s */
};

struct hv_vm;

const char *hv_driver_name(enum hv_driver d); /* "qemu", "firecracker" */
/* "qemu" / "firecracker" (also "fc") to a driver: 0, or BG_ERR_INVAL. */
int hv_driver_parse(const char *s, enum hv_driver *out);

/* Start the VM (it boots; the agent is not waited for).  On failure nothing
 * is left running. */
int hv_start(const struct hv_config *cfg, struct hv_vm **out, char **errmsg);
/* Re-attach to the hypervisor of run_dir after a restart: its pidfile
 * (firecracker.pid, else qemu.pid), a pidfd, and /proc/PID/cmdline naming
 * the run directory.  BG_ERR_NOENT when none runs. */
int hv_adopt(const char *run_dir, struct hv_vm **out, char **errmsg);
/* Wait (bounded) for the guest's agent after a start; the hypervisor
 * exiting ends the wait at once (BG_ERR_CLOSED, the console's end in the
 * message).  *out is the caller's (agent_close). */
int hv_wait_agent(struct hv_vm *vm, int64_t timeout_us, struct agent_conn **out, char **errmsg);
/* A new connection to the agent of a VM that runs (same as hv_wait_agent;
 * named for what the caller means). */
int hv_connect_agent(struct hv_vm *vm, int64_t timeout_us, struct agent_conn **out,
		     char **errmsg);
/* Graceful power-off through conn (may be NULL), waiting grace_us; then the
 * driver's own stop (QMP quit / SendCtrlAltDel); then SIGKILL to the process
 * group.  0 once it is gone; *graceful (may be NULL) tells which. */
int hv_stop(struct hv_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	    char **errmsg);
/* SIGKILL the process group, wait (bounded).  0 when already gone. */
int hv_kill(struct hv_vm *vm);
/* 0 once it exited, BG_ERR_TIMEDOUT after timeout_us. */
int hv_wait_exit(struct hv_vm *vm, int64_t timeout_us);
bool hv_running(struct hv_vm *vm);
pid_t hv_pid(const struct hv_vm *vm);
int hv_pidfd(const struct hv_vm *vm);
enum hv_driver hv_driver_of(const struct hv_vm *vm);
/* "kvm" or "tcg" (QEMU), "kvm" (Firecracker always runs on KVM). */
const char *hv_accel_name(const struct hv_vm *vm);
const char *hv_console_log(const struct hv_vm *vm);
void hv_destroy(struct hv_vm *vm);
/* Remove what a driver keeps outside the run directory (Firecracker's
 * jail); idempotent; the run directory itself stays the caller's. */
int hv_cleanup(const char *run_dir, char **errmsg);

#endif
