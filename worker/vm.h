/*
 * vm.h: the VM job kinds' side of bangerd (kind_vm.c): vm.create, vm.exec
 * and vm.delete, the VMs this daemon holds while they run (hypervisor
 * handle, agent connection), and recovery at start.  docs/vms.md has the
 * steps, their undo records and the naming rules.
 *
 * Threads: vms_init and vms_recover run on the loop thread before the loop
 * serves anything; everything else the kinds do runs in their step bodies
 * (pool threads) and plan/record hooks (loop thread).
 */
#ifndef BANGER_VM_H
#define BANGER_VM_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct queue;
struct bg_config;

/* Defaults and limits of vm.create (checked by its reserve step). */
#define VM_DEFAULT_VCPUS 1
#define VM_MAX_VCPUS 64
#define VM_DEFAULT_MEMORY (256LL << 20)
#define VM_MIN_MEMORY (64LL << 20)
#define VM_DEFAULT_BOOT_TIMEOUT_US (60 * 1000000LL)
#define VM_DEFAULT_GRACE_US (10 * 1000000LL)
#define VM_NAME_MAX 63

/*
 * Take the settings the kinds need (directories, helper socket, bridge,
 * range, agent) from the config as bangerd ended up with it (flags applied),
 * and the queue and loop (loop thread).  Until it is called, the VM kinds
 * fail every job with a clear message (unit tests, tools).
 */
int vms_init(uv_loop_t *loop, struct queue *q, const struct bg_config *cfg, const char *node);

/*
 * Recovery, after engine_start() and before the loop runs (loop thread;
 * blocks for as long as it takes to kill and remove leftovers, bounded):
 *   - VMs recorded running or stopped on this node: their hypervisor is
 *     re-adopted (pidfile, pidfd, command line) or, when it is gone, the VM
 *     is recorded stopped with the reason;
 *   - VMs still 'creating' whose vm.create job ended without succeeding
 *     (rolled back: the engine undid its steps) are recorded deleted;
 *   - resources with banger's names that no VM still owns are reclaimed:
 *     hypervisors whose command line names RUNTIME/vms/ID/, run directories
 *     RUNTIME/vms/ID, root disks STATE/vms/ID, and taps bgHEX (from the
 *     helper's inventory; skipped with a warning when it is unreachable).
 * VMs of jobs this node is still recovering (creating, or being deleted)
 * are owned and left to their jobs.
 */
void vms_recover(void);

/* The static banger-agent kernel import uses: the agent_path setting, else
 * banger-agent next to this executable.  Never NULL once vms_init ran. */
const char *vms_agent_path(void);
/* The helper's socket: helper_socket, else RUNTIME_DIR/banger-helper.sock. */
const char *vms_helper_socket(void);
/* Where the KVM probe's answer is cached for this host boot. */
const char *vms_probe_cache(void);

/* A DNS label banger accepts as a VM name: 1-63 of [a-z0-9-], not starting
 * or ending with '-'. */
bool vm_name_ok(const char *name);

/*
 * For other kinds whose step works inside a running VM (workspace.export,
 * workspace.import): the same `vm:` resolution, refusals and connection
 * handling vm.exec has.
 *
 *   plan (loop thread):   return vm_use_plan(ctx);  (fails the step when
 *                         `vm:` names no running VM)
 *   do (pool thread):     struct vm_use u;
 *                         if ((rc = vm_use_open(ctx, &u))) return rc;
 *                         ... agent requests on u.conn ...
 *                         rc = vm_use_broke(ctx, &u, rc, err);  (for CLOSED/PROTO)
 *                         vm_use_close(&u);
 */
struct step_ctx;
struct agent_conn;
struct vm_use {
	int64_t vm;
	char *name;
	struct agent_conn *conn;
	struct live *l; /* kind_vm.c's */
};
int vm_use_plan(struct step_ctx *ctx);
/* The VM's agent connection (connecting, bounded); a step failure naming
 * the VM otherwise.  u is always safe to vm_use_close. */
int vm_use_open(struct step_ctx *ctx, struct vm_use *u);
/* rc was BG_ERR_CLOSED/BG_ERR_PROTO: fail the step saying why (the
 * hypervisor exited, recorded stopped; or the link broke), with what as
 * the action ("the export").  Other rc: returned as it is. */
int vm_use_broke(struct step_ctx *ctx, struct vm_use *u, int rc, const char *what,
		 const char *err);
void vm_use_close(struct vm_use *u);

/*
 * Fields of the VM and workspace kinds (kind_workspace.c), each a permanent
 * step failure naming `field` when it is wrong:
 *   step_host_path  an absolute host path, or one relative to the spec's
 *                   directory (SPEC_DIR_FIELD), into *out (allocated);
 *   step_excludes   exclude patterns (one string, or a list; nil: none),
 *                   checked, into *out (NULL-terminated; the caller frees
 *                   each and the vector).
 */
int step_host_path(struct step_ctx *ctx, const char *field, const char *path, char **out);
int step_excludes(struct step_ctx *ctx, const char *field, const msgpack_object *ex,
		  char ***out);

/* What vms_init read from the configuration for workspace.export. */
int64_t vms_max_export_bytes(void);
const char *vms_artifacts_dir(void);

#endif
