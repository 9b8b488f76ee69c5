/*
 * firecracker.h: the Firecracker driver as a library, written to
 * Firecracker's published API (src/firecracker/swagger/firecracker.yaml,
 * docs/vsock.md, docs/jailer.md).  Most callers want worker/hv.h, which puts
 * this driver and QEMU's behind one interface.
 *
 * Firecracker is started (directly, or through its jailer when a jailer is
 * configured) in a process group of its own with a pidfd kept; it is then
 * configured over its API socket with libcurl (CURLOPT_UNIX_SOCKET_PATH),
 * bodies built with jansson, every request bounded by a timeout, and booted
 * with PUT /actions InstanceStart.  The guest's agent is reached through
 * Firecracker's hybrid vsock: connect to the vsock's Unix socket, send
 * "CONNECT 52\n", read "OK <port>\n", and the stream is the agent's.
 *
 * Files of one VM in its run directory (the same run directory QEMU uses):
 *   fc.sock          the API socket (without jailer)
 *   vsock.sock       the vsock's Unix socket (without jailer)
 *   console.log      Firecracker's stdout: the guest's serial console
 *   firecracker.log  Firecracker's stderr and its logger (PUT /logger)
 *   firecracker.pid  written by this driver after the spawn
 *   fc.jail          with a jailer: the chroot and the jail id (for adopt)
 * With a jailer the sockets, the logger's file and hard links (or copies) of
 * the kernel, initramfs and disks live in the jail's chroot,
 * CHROOT_BASE/<exec file name>/<name>/root/, and every path given to the API
 * is relative to it (docs/jailer.md).
 *
 * Not tested against a real Firecracker: none can run on the host this was
 * written on (no package, no download).  tests/tools/fake_firecracker.py
 * stands in for it (docs/vms.md, "Drivers").
 *
 * Blocking: everything here blocks (pool threads, tools).  Errors: 0 or
 * BG_ERR_*, with a message naming what is wrong in *errmsg (allocated; the
 * caller frees; errmsg may be NULL).
 */
#ifndef BANGER_FIRECRACKER_H
#define BANGER_FIRECRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct agent_conn;

#define FC_GUEST_CID 3
#define FC_MAX_REQUESTS 10
#define FC_MAX_LINKS 4

struct fc_config {
	const char *fc_bin;      /* NULL: firecracker from PATH */
	const char *name;        /* VM name; the jail id with a jailer; required */
	const char *run_dir;     /* required; created 0700 if missing */
	const char *kernel;      /* required: an uncompressed vmlinux or a bzImage */
	const char *initrd;      /* required: banger's initramfs with the agent */
	const char *rootfs;      /* NULL or a raw disk (Firecracker has no qcow2): /dev/vda */
	bool rootfs_readonly;
	const char *extra_disk;  /* NULL or a raw disk (the workspace): /dev/vdb */
	const char *tap;         /* NULL or a tap device: eth0 */
	const char *mac;         /* NULL: Firecracker's choice */
	const char *guest_ip;    /* banger.ip= value: ADDR/PREFIX[,GW[,IFACE]] */
	int vcpus;               /* 0: 1; at most 32 */
	int memory_mb;           /* 0: 256 */
	const char *append;      /* more kernel parameters; NULL for none */
	/* the jailer, when jailer_bin is set (bangerd must then run as root) */
	const char *jailer_bin;
	unsigned jail_uid, jail_gid;
	const char *chroot_base; /* NULL: /srv/jailer, the jailer's default */
	int64_t api_timeout_us;  /* per API request; 0: 5 s */
	int64_t start_timeout_us; /* the API socket must answer within; 0: 5 s */
};

/* One PUT of the configuration, in order. */
struct fc_request {
	char *path; /* "/machine-config" */
	char *body; /* compact JSON */
};

/* A file the jail needs: src hard-linked (or copied) to dst. */
struct fc_link {
	char *src, *dst;
	bool chown; /* a disk the VM writes: owned by the jail's uid/gid */
};

/* Everything fc_start will do, computed without touching anything (so the
 * unit tests can check it). */
struct fc_plan {
	char **argv;        /* NULL-terminated */
	char *api_sock;     /* host paths */
	char *vsock_uds;
	char *logger_path;  /* the logger's file, host path (created before start) */
	char *chroot;       /* the jail's root directory; NULL without jailer */
	char *jail_id;      /* NULL without jailer */
	struct fc_request req[FC_MAX_REQUESTS];
	size_t nreq;
	struct fc_link links[FC_MAX_LINKS];
	size_t nlinks;
};

/* Build the plan for cfg (fc_bin and jailer_bin are used as given: resolve
 * them with fc_which first).  0, or BG_ERR_INVAL naming the bad field. */
int fc_plan_build(const struct fc_config *cfg, struct fc_plan *plan, char **errmsg);
void fc_plan_release(struct fc_plan *plan);

/* The executable name (a path, or a name looked up in $PATH): its absolute
 * path, or NULL when there is no such executable.  Caller frees. */
char *fc_which(const char *name);

/* The kernel command line Firecracker will be given.  Caller frees. */
char *fc_boot_args(const struct fc_config *cfg);

/*
 * One request on an API socket: method "PUT"/"GET"/..., path "/vsock", body
 * JSON or NULL.  0 for a 2xx answer (*reply, may be NULL, gets its body);
 * BG_ERR_INVAL for a 4xx with Firecracker's fault_message in *errmsg;
 * BG_ERR_IO / BG_ERR_TIMEDOUT / BG_ERR_CLOSED when it cannot be asked.
 */
int fc_api(const char *api_sock, const char *method, const char *path, const char *body,
	   int64_t timeout_us, char **reply, char **errmsg);

struct fc_vm;

/* Start Firecracker, configure it, InstanceStart.  On failure everything
 * started is killed and the error says which request or what failed (a
 * Firecracker that exits: its status and the end of firecracker.log). */
int fc_start(const struct fc_config *cfg, struct fc_vm **out, char **errmsg);
/* Re-attach after a daemon restart: pidfile, pidfd, and the process's
 * command line must name this run directory's API socket (or, jailed, the
 * jail id recorded in fc.jail).  BG_ERR_NOENT when it is not running. */
int fc_adopt(const char *run_dir, struct fc_vm **out, char **errmsg);
/* Connect to the guest's agent over hybrid vsock, retrying within
 * timeout_us while the guest is not listening yet; the pidfd ends the wait
 * when Firecracker exits (BG_ERR_CLOSED, the console's end in *errmsg). */
int fc_wait_agent(struct fc_vm *vm, int64_t timeout_us, struct agent_conn **out, char **errmsg);
/* One hybrid-vsock connection to guest port: the connected fd in *fd. */
int fc_vsock_connect(const char *uds_path, unsigned port, int64_t timeout_us, int *fd,
		     char **errmsg);
/* Stop: agent power-off when conn is given, wait up to grace_us; then PUT
 * /actions SendCtrlAltDel, wait 2 s; then SIGKILL the process group. */
int fc_stop(struct fc_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	    char **errmsg);
int fc_kill(struct fc_vm *vm);
int fc_wait_exit(struct fc_vm *vm, int64_t timeout_us);
bool fc_running(struct fc_vm *vm);
pid_t fc_pid(const struct fc_vm *vm);
int fc_pidfd(const struct fc_vm *vm);
const char *fc_console_log(const struct fc_vm *vm);
const char *fc_api_sock(const struct fc_vm *vm);
/* Free the handle; does not stop Firecracker (see qemu_destroy). */
void fc_destroy(struct fc_vm *vm);
/* Remove what the driver put outside the run directory (the jail's
 * chroot); the run directory itself is the caller's.  Idempotent. */
int fc_cleanup(const char *run_dir, char **errmsg);

#endif
