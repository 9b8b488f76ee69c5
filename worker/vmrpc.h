/*
 * vmrpc.h: bangerd's RPCs about VMs, guest kernels and what this host can
 * run (common/protocol.h: vm.list, vm.show, kernel.import, kernel.list,
 * kernel.rm, doctor), dispatched from server.c's table.  Loop thread; work
 * that blocks (kernel import, the KVM probe, the helper) runs in the pool
 * and answers from its after-work callback.
 */
#ifndef BANGER_VMRPC_H
#define BANGER_VMRPC_H

#include <msgpack.h>
#include <stdint.h>
#include <uv.h>

struct conn;
struct queue;

/* Before the server starts: the loop, the queue, the state directory. */
void vmrpc_init(uv_loop_t *loop, struct queue *q, const char *state_dir,
		const char *runtime_dir);

/* The config's firecracker_path and jailer_path (NULL: looked up in PATH),
 * for doctor.  Before the server starts. */
void vmrpc_set_firecracker(const char *firecracker_path, const char *jailer_path);

void vmrpc_vm_list(struct conn *c, uint32_t id, const msgpack_object *params);
void vmrpc_vm_show(struct conn *c, uint32_t id, const msgpack_object *params);
void vmrpc_kernel_import(struct conn *c, uint32_t id, const msgpack_object *params);
void vmrpc_kernel_list(struct conn *c, uint32_t id, const msgpack_object *params);
void vmrpc_kernel_rm(struct conn *c, uint32_t id, const msgpack_object *params);
void vmrpc_doctor(struct conn *c, uint32_t id, const msgpack_object *params);

#endif
