/*
 * qemu.h: the QEMU driver as a library: the command line, starting QEMU as
 * a child in its own process group (a pidfd kept), waiting for the guest's
 * agent, QMP, and stopping (graceful power-off through the agent, bounded
 * waits, then kill).
 *
 * Every file of one VM lives in its run directory: agent.sock (the
 * virtio-serial port), qmp.sock, console.log (the guest's serial console),
 * qemu.log (QEMU's own stderr) and qemu.pid (written by QEMU).  Unix socket
 * paths are limited to 107 bytes, so run directories must be short.
 *
 * Accelerator: QEMU_ACCEL_AUTO uses KVM only when KVM can actually boot the
 * guest.  Having /dev/kvm is not enough (nested setups such as this host's
 * run real-mode code and then hang), so qemu_accel_resolve() boots the
 * kernel and initramfs once under KVM with banger.probe=1 and waits, with a
 * bound, for the agent's probe marker on the console; without it, TCG, with
 * one clear log line.  The answer is cached per host boot.
 *
 * Blocking: everything here blocks (pool threads, tools); nothing takes
 * locks of bangerd's.  Errors: 0 or BG_ERR_*, with a message a person can act
 * on in *errmsg (allocated; the caller frees).
 */
#ifndef BANGER_QEMU_H
#define BANGER_QEMU_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct agent_conn;

enum qemu_machine { QEMU_MICROVM, QEMU_Q35 };
enum qemu_accel { QEMU_ACCEL_AUTO, QEMU_ACCEL_KVM, QEMU_ACCEL_TCG };

struct qemu_config {
	const char *qemu_bin;     /* NULL: qemu-system-x86_64 from PATH */
	const char *name;         /* VM name, for -name and logs; required */
	const char *run_dir;      /* required; created 0700 if missing */
	const char *kernel;       /* required */
	const char *initrd;       /* required: banger's initramfs with the agent */
	const char *rootfs;       /* NULL: no root disk (the agent stays in the initramfs) */
	const char *rootfs_format; /* "raw" (default) or "qcow2" */
	bool rootfs_readonly;
	const char *extra_disk;   /* NULL or a second disk (e.g. the workspace), raw */
	const char *tap;          /* NULL or a tap device for a virtio-net NIC */
	bool user_net;            /* QEMU user-mode NIC instead (tests; no root needed) */
	const char *mac;          /* NULL: QEMU's default */
	const char *guest_ip;     /* banger.ip= value: ADDR/PREFIX[,GW[,IFACE]] */
	int vcpus;                /* 0: 1 */
	int memory_mb;            /* 0: 256 */
	enum qemu_machine machine;
	enum qemu_accel accel;
	const char *probe_cache;  /* file caching the KVM probe's answer; NULL: memory only */
	int64_t probe_timeout_us; /* 0: 6 s */
	const char *append;       /* more kernel parameters; NULL for none */
};

struct qemu_vm;

/* The argv QEMU would be started with for accel (AUTO is not allowed here).
 * *argv is NULL-terminated; free with qemu_argv_free. */
int qemu_build_argv(const struct qemu_config *cfg, enum qemu_accel accel, char ***argv,
		    char **errmsg);
void qemu_argv_free(char **argv);

/* AUTO -> KVM or TCG as described above; KVM/TCG are returned as they are.
 * Logs one line when KVM exists but cannot boot the guest. */
int qemu_accel_resolve(const struct qemu_config *cfg, enum qemu_accel *out, char **errmsg);

/* The host's TSC frequency in kHz (for tsc_early_khz=), 0 if unknown. */
long qemu_host_tsc_khz(void);

/*
 * Resolve the accelerator, then start QEMU in its own process group.
 * Returns once QEMU runs (not once the guest is up: see qemu_wait_agent).
 * *out is the caller's; qemu_destroy frees it without stopping QEMU.
 */
int qemu_start(const struct qemu_config *cfg, struct qemu_vm **out, char **errmsg);

/* Take hold of a QEMU started earlier (by this or another process) from its
 * run directory: pidfile, pidfd, and a check that the process's command
 * line names this run directory.  BG_ERR_NOENT when it is not running. */
int qemu_adopt(const char *run_dir, struct qemu_vm **out, char **errmsg);

/* Connect to the guest's agent, bounded by timeout_us.  Fails early with
 * BG_ERR_CLOSED when QEMU exits first, with the end of the console and of
 * QEMU's log in *errmsg, so a guest that never boots says why. */
int qemu_wait_agent(struct qemu_vm *vm, int64_t timeout_us, struct agent_conn **out,
		    char **errmsg);

/* One QMP command (e.g. "query-status", "quit") on a fresh QMP connection,
 * bounded by timeout_us.  *reply gets the JSON text of "return" (may be
 * NULL). */
int qemu_qmp(struct qemu_vm *vm, const char *command, int64_t timeout_us, char **reply,
	     char **errmsg);
/* QMP query-status: "running", "paused", "shutdown", ... into *status. */
int qemu_status(struct qemu_vm *vm, char **status, char **errmsg);

/*
 * Stop: power off through the agent when conn is given (the guest syncs),
 * wait up to grace_us for QEMU to exit; then QMP quit, wait 2 s; then
 * SIGKILL the process group.  Returns 0 once QEMU is gone; *graceful (may be
 * NULL) tells whether the guest powered itself off.
 */
int qemu_stop(struct qemu_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	      char **errmsg);
/* SIGKILL QEMU's process group and wait (bounded) until it is gone.
 * Idempotent: 0 when it already is. */
int qemu_kill(struct qemu_vm *vm);
/* Wait up to timeout_us for QEMU to exit: 0, or BG_ERR_TIMEDOUT. */
int qemu_wait_exit(struct qemu_vm *vm, int64_t timeout_us);
bool qemu_running(struct qemu_vm *vm);
pid_t qemu_pid(const struct qemu_vm *vm);
int qemu_pidfd(const struct qemu_vm *vm);
enum qemu_accel qemu_vm_accel(const struct qemu_vm *vm);
const char *qemu_agent_sock(const struct qemu_vm *vm);
const char *qemu_console_log(const struct qemu_vm *vm);
/* Free the handle (fds, memory).  Does not stop QEMU, and does not reap it:
 * a QEMU started by this process that exits later stays a zombie until
 * someone waits for it, so keep the handle for the VM's life (bangerd) or
 * let the process end (the test tools). */
void qemu_destroy(struct qemu_vm *vm);

const char *qemu_accel_name(enum qemu_accel a);

#endif
