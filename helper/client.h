/*
 * client.h: bangerd's side of banger-helper: blocking stubs, one per method
 * of proto.h, and the undo records that let every step that calls the
 * helper undo itself through the inverse method.
 *
 * Blocking: call from step bodies (pool threads) or tools, never from the
 * loop thread.  A struct helper_client is one connection; it is not
 * thread-safe: one per thread (or per step) - connecting costs one connect(2)
 * and the helper serves connections in parallel.
 *
 * Every stub returns 0 or a negative BG_ERR_* (the code the helper answered,
 * or a transport error), with *errmsg set on failure (caller frees).  Ops are
 * the op id of the job attempt that caused the call ("job-42-1"); the helper
 * logs it.
 *
 * Undo: a step's plan calls helper_plan() with the forward method and its
 * arguments; that record is what the engine stores before the step runs.
 * The step's undo calls helper_undo() with the stored record: it calls the
 * inverse (tap.create -> tap.remove, bridge.ensure -> bridge.remove,
 * nat.ensure -> nat.clear, loop.attach -> loop.detach (by backing file, so
 * the undo needs nothing the forward call returned), dm.snapshot.create ->
 * dm.snapshot.remove).  The inverses are idempotent: an undo after a crash,
 * run twice, or of a call that never happened is success.
 */
#ifndef BANGER_HELPER_CLIENT_H
#define BANGER_HELPER_CLIENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

struct helper_client {
	int fd;
	uint32_t next_id;
};

/* RUNTIME_DIR/banger-helper.sock; the caller frees it. */
char *helper_socket_path(const char *runtime_dir);
/* Connect.  BG_ERR_CONN when nobody listens, BG_ERR_PERM when the helper
 * refused this uid (its message in *errmsg). */
int helper_connect(const char *sock_path, struct helper_client *c, char **errmsg);
void helper_close(struct helper_client *c);

/*
 * One request: method m with the fields m lists taken from a.  On success
 * *reply owns the frame (msgpack_unpacked_destroy) and *result points at its
 * result map; *fd (when not NULL) receives a passed descriptor or -1 - the
 * caller owns it.  A descriptor that arrives when fd is NULL is closed.
 */
int helper_call(struct helper_client *c, const char *op, const struct hp_method *m,
		const struct hp_args *a, msgpack_unpacked *reply, const msgpack_object **result,
		int *fd, char **errmsg);

/* ---- stubs ---- */
int helper_ping(struct helper_client *c, const char *op, char **errmsg);
int helper_bridge_ensure(struct helper_client *c, const char *op, const char *bridge,
			 char **errmsg);
int helper_bridge_remove(struct helper_client *c, const char *op, const char *bridge,
			 char **errmsg);
int helper_tap_create(struct helper_client *c, const char *op, const char *tap,
		      const char *bridge, char **errmsg);
int helper_tap_remove(struct helper_client *c, const char *op, const char *tap, char **errmsg);
int helper_nat_ensure(struct helper_client *c, const char *op, const char *addr, char **errmsg);
int helper_nat_clear(struct helper_client *c, const char *op, const char *addr, char **errmsg);
/* device: "/dev/loopN" (HP_DEV_MAX bytes); *fd: the device, open (read-only
 * when ro).  Keep *fd open while the device is in use: the loop device is
 * released (autoclear) when its last descriptor closes. */
int helper_loop_attach(struct helper_client *c, const char *op, const char *path, bool ro,
		       char device[HP_DEV_MAX], int *fd, char **errmsg);
int helper_loop_detach(struct helper_client *c, const char *op, const char *path, char **errmsg);
/* device: "/dev/mapper/NAME" (96 bytes); *fd as for loop devices. */
int helper_dm_snapshot_create(struct helper_client *c, const char *op, const char *dm,
			      const char *origin, const char *cow, char device[96], int *fd,
			      char **errmsg);
int helper_dm_snapshot_remove(struct helper_client *c, const char *op, const char *dm,
			      char **errmsg);
/* signal: "TERM", "KILL", "INT" or "HUP".  *signalled (may be NULL) false
 * when the process was already gone. */
int helper_proc_signal(struct helper_client *c, const char *op, int64_t pid, const char *signal,
		       bool *signalled, char **errmsg);
int helper_fs_chown(struct helper_client *c, const char *op, const char *path, char **errmsg);
/* *reply owns the frame; *result the inventory map (see proto.h). */
int helper_inventory(struct helper_client *c, const char *op, msgpack_unpacked *reply,
		     const msgpack_object **result, char **errmsg);

/* ---- undo records ---- */

/* Pack the record naming a forward call: { helper: METHOD, params: {...} }. */
void helper_plan(msgpack_packer *pk, enum hp_method_id m, const struct hp_args *a);
/* Run the inverse of the call a record names.  A record whose method has no
 * inverse, or that is malformed: BG_ERR_INVAL. */
int helper_undo(struct helper_client *c, const char *op, const msgpack_object *record,
		char **errmsg);
/* The inverse of a method, or NULL. */
const struct hp_method *helper_inverse(const struct hp_method *m);

#endif
