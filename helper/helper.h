/*
 * helper.h: banger-helper's internals, shared by its files (never linked
 * into bangerd: the daemon side is proto.h and client.h).
 *
 * Threads: main.c sets up `H` once, before any thread starts, and never
 * changes it afterwards; every connection then runs in its own thread
 * (server.c) with its own struct hconn.  Handlers (ops_*.c) may block; they
 * share nothing but H and the few mutexes their files keep.
 */
#ifndef BANGER_HELPER_H
#define BANGER_HELPER_H

#include <msgpack.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"
#include "proto.h"

struct helper {
	struct bg_config cfg;
	struct hp_policy pol;
	uid_t owner_uid;
	gid_t owner_gid;
	int runtime_fd;        /* O_PATH|O_DIRECTORY, held from start-up */
	int state_fd;
	char *sock_path;
	bool nat;
	bool nat_iptables;     /* nat_backend is iptables */
};
extern struct helper H;

/* One client connection (server.c); a handler may use nl (created on first
 * use by net_sock(), freed when the connection ends). */
struct hconn {
	int fd;
	struct ucred peer;
	struct nl_sock *nl;
};

/* What a handler answers: pack exactly one map into pk on success; on
 * failure return the code from hfail() with its message.  fd: a descriptor
 * to pass with the reply (the server closes it after sending). */
struct hreply {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char *errmsg;
	int fd;
};

/* Set r's message (printf format) and return rc. */
int hfail(struct hreply *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef int (*hp_handler)(struct hconn *c, const struct hp_args *a, struct hreply *r);

/* ---- handlers, one per method (proto.h says what each does) ---- */
int op_ping(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_bridge_ensure(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_bridge_remove(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_tap_create(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_tap_remove(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_nat_ensure(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_nat_clear(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_loop_attach(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_loop_detach(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_dm_create(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_dm_remove(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_proc_signal(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_fs_chown(struct hconn *c, const struct hp_args *a, struct hreply *r);
int op_inventory(struct hconn *c, const struct hp_args *a, struct hreply *r);

/* ---- pieces the handlers share ---- */

/* safepath.c: open a directory given by absolute path, refusing symlinks in
 * every component (O_PATH|O_DIRECTORY); and open rel beneath a directory fd
 * with openat2(RESOLVE_BENEATH | NO_SYMLINKS | NO_MAGICLINKS | NO_XDEV).
 * Errors: PERM for a symlink or an escape (message in err), NOENT, ... */
int sp_open_abs_dir(const char *path, int *fd, char *err, size_t errlen);
int sp_open_beneath(int dirfd, const char *rel, const char *shown, int flags, int *fd, char *err,
		    size_t errlen);
/* The base directory fd for an hp_args path. */
int sp_base_fd(int base);

/* run.c: run a tool by absolute path with argv, no shell, a clean
 * environment, stdin from `input` (NULL: /dev/null); stdout and stderr
 * together into *out (caller frees; may be NULL), at most 64 KiB.  Bounded
 * to 20 s.  Returns the exit status (0..255), or a negative BG_ERR_*. */
int run_argv(const char *const argv[], const char *input, char **out);
/* The first of the candidate absolute paths that is executable, or NULL. */
const char *run_find(const char *const candidates[]);

/* net.c: this connection's rtnetlink socket (NULL only on failure). */
struct nl_sock *net_sock(struct hconn *c, char *err, size_t errlen);
/* inventory helpers: pack the arrays (each one key and its array). */
int net_inventory(struct hconn *c, msgpack_packer *pk);       /* taps, bridges */
int nat_inventory(msgpack_packer *pk);                        /* nat */
int loop_inventory(msgpack_packer *pk);                       /* loops */
int dm_inventory(msgpack_packer *pk);                         /* dms, dm_supported */
int proc_inventory(msgpack_packer *pk);                       /* procs */

/* loop.c: the backing file of /dev/loop<minor> as the kernel reports it
 * (" (deleted)" stripped) into buf; NOENT when the device is not bound. */
int loop_backing(int minor, char *buf, size_t size);
/* True when an absolute path is strictly under dir. */
bool path_under(const char *path, const char *dir);

/* proc.c: true when pid looks like a process banger started (its command
 * line names a path under the runtime directory, or its cgroup has a
 * bangerd.service component); procfd is an open /proc/<pid> directory. */
bool proc_is_bangers(int procfd, char *why, size_t whylen);

/* server.c: accept and serve until *stopping (each connection in its own
 * thread); then wait up to ms for requests in flight. */
void server_run(int listen_fd, atomic_bool *stopping);
void server_drain(int ms);

/* audit.c: one JSON line per request and per refused peer, on stderr. */
void audit_request(const char *op, const char *method, int rc, const char *errmsg,
		   int64_t duration_us, const struct ucred *peer, uint64_t id);
void audit_refused(const struct ucred *peer, const char *why);

#endif
