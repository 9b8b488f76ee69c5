/*
 * protocol.h: the whole wire protocol between `banger` (and any other client)
 * and `bangerd`, in one place.
 *
 * Transport: a Unix stream socket, BG_SOCKET_NAME inside the runtime directory.
 * The daemon checks SO_PEERCRED on accept: only the owner uid and root are
 * served; anyone else gets one error frame and the connection is closed.
 *
 * Framing: every message is a 4-byte big-endian length N followed by N bytes
 * holding one msgpack map.  N must be 1..BG_RPC_MAX_FRAME; a larger length is
 * answered with an error frame (code TOOBIG) and the connection is closed,
 * without reading the body.
 *
 * Request:   { "id": uint, "method": str, "op": str?, "params": map? }
 *              "op" is the caller's operation id; the daemon makes one when it
 *              is absent, and it appears in every log line the request causes.
 * Reply:     { "id": uint, "ok": true,  "result": any }
 *            { "id": uint, "ok": false, "error": { "code": str, "message": str } }
 *              code is an error name from common/err.h (e.g. "SPEC", "NOENT").
 * Event:     { "id": uint, "event": EVENT }   (streamed before the final reply
 *              of BG_M_JOB_TAIL)
 *
 * A request a client cannot follow with another on the same connection until
 * its reply arrives is not required: requests are answered in order per
 * connection, except that a tail holds the connection until it ends.
 *
 * Timestamps are microseconds since the Unix epoch (int).
 */
#ifndef BANGER_PROTOCOL_H
#define BANGER_PROTOCOL_H

#define BG_PROTOCOL_VERSION 1
#define BG_SOCKET_NAME "bangerd.sock"
#define BG_RPC_MAX_FRAME (16u * 1024 * 1024)
/* A spec file larger than this is refused by the client before sending. */
#define BG_SPEC_MAX_BYTES (8u * 1024 * 1024)

/* ---- methods ------------------------------------------------------------ */

/* ping {} -> { version: int, node: str, pid: int, state_dir: str, db: str } */
#define BG_M_PING "ping"

/*
 * job.submit
 *   params: { spec: str       YAML text of a spec (see docs/spec.md)
 *             path: str       the spec's file name, used in error messages
 *             dir: str?       the absolute directory relative paths in the
 *                             spec are resolved against (a workspace's
 *                             `from:`, an export's `to:`); default: the
 *                             directory of path when path is absolute
 *             key: str?       idempotency key: a second submit with the same
 *                             key returns the first submission
 *             jobs: [JOBDEF]? instead of spec: jobs as maps (programmatic
 *                             clients); each JOBDEF has the same keys as a
 *                             job in a spec plus "name" }
 *   result: { submission: int, existing: bool, jobs: [JOBSUMMARY] }
 *   Errors: SPEC with message "file:line:col: ..." (one line per problem).
 */
#define BG_M_JOB_SUBMIT "job.submit"

/* job.list { state: str?, submission: int?, limit: int? (default 100),
 *            after: int? (ids greater than) } -> { jobs: [JOBSUMMARY] } */
#define BG_M_JOB_LIST "job.list"

/* job.show { job: int } -> JOB */
#define BG_M_JOB_SHOW "job.show"

/* job.cancel { job: int } -> { state: str }  (queued: cancelled at once;
 * running: stopped and rolled back, reply once the request is durable) */
#define BG_M_JOB_CANCEL "job.cancel"

/* job.retry { job: int } -> { state: str }   (a job in a final state other
 * than succeeded goes back to queued with a fresh attempt budget) */
#define BG_M_JOB_RETRY "job.retry"

/*
 * job.tail { job: int? | submission: int?, from: int? (first seq to send,
 *            default 1), follow: bool? (default true) }
 *   streams Event frames in seq order, then the reply
 *   { state: str, exit_code: int? } for a job, or
 *   { jobs: [JOBSUMMARY] } for a submission, once every job is final
 *   (or at once when follow is false and the backlog is sent).
 */
#define BG_M_JOB_TAIL "job.tail"

/* job.stats {} -> { states: { STATE: int, ... }, running_here: int }
 * (how many jobs are in each state; running_here counts this node's runs) */
#define BG_M_JOB_STATS "job.stats"

/* image.list {} -> { images: [IMAGE] }
 * image.show { image: str (ref or sha256: digest) } -> IMAGE
 * image.rm { image: str } -> { digest: str }  (refused while a VM uses it;
 *   removes the row, its refs and the rootfs file) */
#define BG_M_IMAGE_LIST "image.list"
#define BG_M_IMAGE_SHOW "image.show"
#define BG_M_IMAGE_RM "image.rm"

/*
 * image.prune { dry_run: bool? (default false) }
 *   -> { removed: [{digest: str, size: int}], freed: int, kept: int,
 *        partials: int, orphans: [{path: str, size: int}] }
 *   Frees what no image row uses: cached blobs outside every image's
 *   manifest, config and layers (removed; kept counts the blobs left),
 *   partial downloads no writer holds (partials), and directories under
 *   STATE/images/ that no image row names (orphans: left by a crash between
 *   a build's rename and its commit, or by image.rm).  freed is the bytes of
 *   the removed blobs plus the disk space of the orphans.  dry_run: the same
 *   answer, nothing removed.  Refused with BUSY while an image.pull job runs
 *   on this node, or while another prune runs.  Blobs and image directories
 *   changed after the request arrived are kept.
 */
#define BG_M_IMAGE_PRUNE "image.prune"

/* oplog { job: int } -> { job: JOB, attempts: [ATTEMPT] } */
#define BG_M_OPLOG "oplog"

/*
 * VMs (docs/vms.md).  They are made and removed by jobs (vm.create,
 * vm.delete); `banger vm exec` and `vm rm` submit jobs through job.submit.
 * vm.list { all: bool? (default false: not the deleted ones) } -> { vms: [VM] }
 * vm.show { vm: str (name, or id) } -> VM
 */
#define BG_M_VM_LIST "vm.list"
#define BG_M_VM_SHOW "vm.show"

/*
 * Guest kernels (STATE/kernels/NAME), handled in a pool thread.
 * kernel.import { source: str (absolute path of a linux-image .deb, an
 *                 extracted package directory, or a bare kernel image),
 *                 name: str?, replace: bool? } -> KERNEL
 * kernel.list {} -> { kernels: [KERNEL] }
 * kernel.rm { name: str } -> { name: str }  (refused while a VM that is not
 *                 deleted was booted from it)
 */
#define BG_M_KERNEL_IMPORT "kernel.import"
#define BG_M_KERNEL_LIST "kernel.list"
#define BG_M_KERNEL_RM "kernel.rm"

/*
 * doctor {} -> { drivers: [{name, usable: bool, accel: str?, detail: str}],
 *                kvm: {present: bool, usable: bool, detail},
 *                tun: {usable: bool, detail}, helper: {socket, reachable, detail},
 *                agent: {path, present}, kernels: [str], qemu_img: bool }
 *   What this host can run: the QEMU driver with the accelerator its probe
 *   picks (KVM only when KVM can boot the guest), Firecracker (its binary,
 *   usable KVM, its jailer: usable only when all three hold).
 */
#define BG_M_DOCTOR "doctor"

/* ---- shapes --------------------------------------------------------------
 * JOBSUMMARY { id, submission, name, kind, state, priority, attempts,
 *              max_attempts, created, exit_code? }
 * JOB        JOBSUMMARY + { epoch, run_after, timeout, started?, finished?,
 *              error?, result?, needs: [int], when: str, lease_owner?,
 *              lease_expires?, params: map, key? }
 * EVENT      { job: int, seq: int, ts: int, stream: str, data: any }
 *              stream "state": data { state, error?, exit_code? }
 *              stream "step":  data { attempt, seq, name, phase, error? }
 *                 phase: begin | done | failed | undo | undone | undo_failed
 *              stream "stdout" / "stderr": data bin (raw output bytes)
 *              stream "log":   data str
 *              stream "progress": data map (kind-specific)
 * IMAGE      { digest, refs: [str], rootfs: str, size: int (bytes of rootfs.ext4),
 *              content: int (bytes of the layers), config: str?, layers: [str],
 *              source: str, created: int, job: int?, used_by: [str] (VM names) }
 * VM         { id (= its vm.create job), name, state (creating | running |
 *              stopped | deleted), image (digest), kernel, vcpus, memory (bytes),
 *              address?, tap?, pid?, node?, error?, overlay, run_dir, created,
 *              deleted?, created_by, deleted_by? }
 * KERNEL     { name, version, source, modular: bool, modules: [str], created
 *              (Unix seconds), dir }
 * ATTEMPT    { attempt, epochs: [int], op, node, started, finished?, outcome?,
 *              error?, steps: [STEP] }
 * STEP       { seq, name, state, undo: any, result: any, error?, started,
 *              finished?, undo_started?, undo_finished?, undo_error? }
 *   step state: begun | done | failed | undoing | undone | undo_failed
 */

#endif
