/*
 * proto.h: the whole wire protocol of banger-helper, in one place: the
 * socket, the framing, the envelope, every method with its fields and their
 * limits, what each method answers, and which method undoes which.
 *
 * Transport: a Unix stream socket HP_SOCKET_NAME in banger's runtime
 * directory, mode 0600, owned by the owner uid (install config `owner_uid`).
 * SO_PEERCRED is checked on accept: only the owner uid and root are served;
 * anyone else gets one error frame (code PERM) and the connection is closed.
 *
 * Framing: a 4-byte big-endian length N, then N bytes holding one msgpack map.
 * N must be 1..HP_MAX_FRAME: a larger length is answered with an error frame
 * (TOOBIG) and the connection is closed without reading the body.  A frame
 * that is not exactly one msgpack map (garbage, trailing bytes), or a
 * connection that ends inside a frame, also ends the connection (PROTO).
 *
 * Request:  { "id": uint, "method": str, "op": str, "params": map }
 *             exactly these four keys, each present once.  "op" is the op id
 *             of the job attempt (or CLI call) that caused the request:
 *             1..HP_OP_MAX bytes of [A-Za-z0-9._:-]; it is in the helper's
 *             log line for the request.
 * Reply:    { "id": uint, "ok": true,  "result": map }
 *           { "id": uint, "ok": false, "error": { "code": str, "message": str } }
 *             code is an error name from common/err.h.  A reply may carry one
 *             file descriptor (SCM_RIGHTS, on its first byte): the methods
 *             below say when.
 *
 * Params are strict: every field a method lists is required, no other field
 * is accepted, no key may appear twice, and each value must have its type and
 * pass its check (the table of fields below) before the helper touches
 * anything.  Problems with params are INVAL and keep the connection open.
 * Requests on one connection are answered in order; a client may open many
 * connections (the helper serves each in its own thread).
 *
 * Every method is idempotent: ensuring what exists is success, removing what
 * is gone is success.
 */
#ifndef BANGER_HELPER_PROTO_H
#define BANGER_HELPER_PROTO_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HP_PROTOCOL_VERSION 1
#define HP_SOCKET_NAME "banger-helper.sock"
#define HP_MAX_FRAME (64u * 1024)  /* requests and replies (inventory included) */
#define HP_OP_MAX 64               /* bytes of an op id */
#define HP_PATH_MAX 1024           /* bytes of a path field */
#define HP_PID_MAX 4194304         /* PID_MAX_LIMIT */

/* ---- fields --------------------------------------------------------------
 * Every field any method takes: name, type, and the check its value must
 * pass.  "Banger's prefixes" are the only names the helper will create,
 * change or remove.
 *
 *   tap     str  "bg" + 1..13 lowercase hex digits (<= 15 bytes, IFNAMSIZ - 1)
 *   bridge  str  the configured bridge (install config `bridge`, itself
 *                "bgbr" + up to 11 of [a-z0-9])
 *   addr    str  dotted-quad IPv4 inside `net_range`, not its network,
 *                broadcast or gateway (first host) address
 *   path    str  absolute, <= HP_PATH_MAX bytes, no "." or ".." component, no
 *                "//", no trailing "/", no NUL or control byte, strictly under
 *                the state directory (loop.attach, loop.detach) or under the
 *                runtime or state directory (fs.chown).  When the helper
 *                opens it, it resolves it beneath the directory it held open
 *                since start-up with openat2(RESOLVE_BENEATH |
 *                RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV):
 *                a symlink in any component, even one swapped in after
 *                validation, is refused (PERM).
 *   ro      bool
 *   dm      str  "bg-" + 1..60 of [a-z0-9-]
 *   origin  str  "/dev/loopN" (N decimal, no leading zero, < 2^20), a loop
 *   cow     str    device whose backing file is under the state directory
 *   pid     uint 1..HP_PID_MAX
 *   signal  str  one of TERM, KILL, INT, HUP
 */
#define HP_FIELDS(X)                                 \
	X(TAP, "tap", MSGPACK_OBJECT_STR)            \
	X(BRIDGE, "bridge", MSGPACK_OBJECT_STR)      \
	X(ADDR, "addr", MSGPACK_OBJECT_STR)          \
	X(PATH, "path", MSGPACK_OBJECT_STR)          \
	X(RO, "ro", MSGPACK_OBJECT_BOOLEAN)          \
	X(DM, "dm", MSGPACK_OBJECT_STR)              \
	X(ORIGIN, "origin", MSGPACK_OBJECT_STR)      \
	X(COW, "cow", MSGPACK_OBJECT_STR)            \
	X(PID, "pid", MSGPACK_OBJECT_POSITIVE_INTEGER) \
	X(SIGNAL, "signal", MSGPACK_OBJECT_STR)

enum hp_field {
#define X(id, name, type) HF_##id##_,
	HP_FIELDS(X)
#undef X
	HF_COUNT_
};
#define X(id, name, type) HF_##id = 1u << HF_##id##_,
enum { HP_FIELDS(X) HF_NONE = 0 };
#undef X

/* ---- methods --------------------------------------------------------------
 *
 * ping {} -> { version: int, pid: int }
 *     does nothing; for health checks and the RPC benchmark
 * net.bridge.ensure { bridge } -> { bridge, address: "a.b.c.d/n", created: bool }
 *     the bridge exists, is up and has the gateway address (first host of
 *     net_range); an existing link of that name that is not a bridge: EXIST
 * net.bridge.remove { bridge } -> { removed: bool }
 *     refused (BUSY) while ports are attached
 * net.tap.create { tap, bridge } -> { tap, ifindex: int, created: bool }
 *     a persistent tap owned by owner_uid (so the hypervisor opens it without
 *     privileges), attached to the bridge as an isolated port (guests cannot
 *     reach each other), up; the bridge must exist (NOENT otherwise)
 * net.tap.remove { tap } -> { removed: bool }
 *     a link of that name that is not a tap: EXIST, nothing removed
 * net.nat.ensure { addr } -> { addr, backend: "nft"|"iptables" }
 *     masquerade addr out; guests on the bridge are always blocked from
 *     169.254.0.0/16 and from other guests, and only NATed addresses may
 *     leave through the host; UNSUPPORTED when `nat` is off
 * net.nat.clear { addr } -> { removed: bool }
 * loop.attach { path, ro } -> { device: "/dev/loopN", created: bool } + fd
 *     path: a regular file owned by owner_uid under the state directory;
 *     LOOP_CTL_GET_FREE + LOOP_CONFIGURE with LO_FLAGS_AUTOCLEAR (and
 *     READ_ONLY when ro).  The reply carries an open descriptor of the device
 *     (read-only when ro): with autoclear the device goes away when its last
 *     descriptor closes, so the caller keeps it for as long as it uses the
 *     device.  The same file already attached with the same ro: that device.
 * loop.detach { path } -> { detached: int }
 *     every loop device whose backing file is path: cleared now, or when its
 *     last user closes it
 * dm.snapshot.create { dm, origin, cow } -> { dm, device: str, created } + fd
 *     a dm "snapshot" target over two loop devices (libdevmapper).
 *     UNSUPPORTED where the kernel has no device-mapper (this test host)
 * dm.snapshot.remove { dm } -> { removed: bool }
 *     UNSUPPORTED likewise
 * proc.signal { pid, signal } -> { signalled: bool }
 *     only a process banger started: its command line names a path under
 *     the runtime directory, or its cgroup path has a "bangerd.service"
 *     component; never pid 1 or the helper.  Checked through a pidfd opened
 *     first, so a reused pid is never signalled.  signalled false: it was gone
 * fs.chown { path } -> { changed: bool }
 *     to owner_uid:owner_gid; path under the runtime or state directory,
 *     opened O_PATH|O_NOFOLLOW, a socket, directory or regular file with a
 *     single link
 * inventory {} -> { taps: [{name, master?, owner}], bridges: [{name}],
 *                   loops: [{device, backing}], dms: [{name}],
 *                   dm_supported: bool, nat: [{addr}], procs: [{pid, cmd}] }
 *     everything with banger's prefixes, to reclaim leaks after a crash
 */
#define HP_METHODS(X)                                                            \
	X(PING, "ping", HF_NONE, NONE)                                           \
	X(BRIDGE_ENSURE, "net.bridge.ensure", HF_BRIDGE, BRIDGE_REMOVE)          \
	X(BRIDGE_REMOVE, "net.bridge.remove", HF_BRIDGE, NONE)                   \
	X(TAP_CREATE, "net.tap.create", HF_TAP | HF_BRIDGE, TAP_REMOVE)          \
	X(TAP_REMOVE, "net.tap.remove", HF_TAP, NONE)                            \
	X(NAT_ENSURE, "net.nat.ensure", HF_ADDR, NAT_CLEAR)                      \
	X(NAT_CLEAR, "net.nat.clear", HF_ADDR, NONE)                             \
	X(LOOP_ATTACH, "loop.attach", HF_PATH | HF_RO, LOOP_DETACH)              \
	X(LOOP_DETACH, "loop.detach", HF_PATH, NONE)                             \
	X(DM_CREATE, "dm.snapshot.create", HF_DM | HF_ORIGIN | HF_COW, DM_REMOVE) \
	X(DM_REMOVE, "dm.snapshot.remove", HF_DM, NONE)                          \
	X(PROC_SIGNAL, "proc.signal", HF_PID | HF_SIGNAL, NONE)                  \
	X(FS_CHOWN, "fs.chown", HF_PATH, NONE)                                   \
	X(INVENTORY, "inventory", HF_NONE, NONE)

enum hp_method_id {
	HP_M_NONE = -1,
#define X(id, name, fields, inverse) HP_M_##id,
	HP_METHODS(X)
#undef X
	HP_M_COUNT_
};

struct hp_method {
	enum hp_method_id id;
	const char *name;
	unsigned fields;           /* HF_* bits: every one required, no other */
	enum hp_method_id inverse; /* the method that undoes this one, or NONE;
				    * its fields are a subset of this one's */
};

/* The table (proto.c), indexed by enum hp_method_id. */
extern const struct hp_method hp_methods[HP_M_COUNT_];
/* By name; NULL when unknown. */
const struct hp_method *proto_method(const char *name, size_t len);
/* A field's name ("tap") for a HF_* bit. */
const char *proto_field_name(unsigned bit);

/* ---- what requests are checked against ---------------------------------- */

/* The helper's policy: built from the install config (proto_policy_init), or
 * by hand in tests.  Strings are borrowed. */
struct hp_policy {
	const char *runtime_dir; /* absolute, normalized, no trailing '/' */
	const char *state_dir;
	const char *bridge;
	uint32_t net;            /* network address, host order */
	int prefix;              /* 16..29 */
};

struct bg_config;
/* Fill p from a loaded config (pointers into cfg) and check it: directories
 * normalized and distinct, bridge name, range.  BG_ERR_INVAL with *errmsg
 * (caller frees). */
int proto_policy_init(struct hp_policy *p, const struct bg_config *cfg, char **errmsg);
int proto_policy_check(const struct hp_policy *p, char **errmsg);
/* The gateway address (first host of the range), host order. */
uint32_t proto_gateway(const struct hp_policy *p);

/* ---- parsed requests ----------------------------------------------------- */

#define HP_DEV_MAX 24 /* "/dev/loop1048575" and NUL, with room */
#define HP_DM_MAX 63

/* The checked params of one request: strings NUL-terminated copies. */
struct hp_args {
	unsigned present; /* HF_* bits */
	char tap[16];
	char bridge[16];
	char addr[16];
	uint32_t addr_n;  /* addr, host order */
	char path[HP_PATH_MAX + 1];
	int base;         /* path: HP_BASE_STATE or HP_BASE_RUNTIME */
	const char *rel;  /* path relative to its base directory (into path) */
	bool ro;
	char dm[HP_DM_MAX + 1];
	char origin[HP_DEV_MAX];
	char cow[HP_DEV_MAX];
	int origin_minor, cow_minor;
	int64_t pid;
	int sig;          /* SIGTERM, ... */
	char signame[8];
};

enum { HP_BASE_STATE = 1, HP_BASE_RUNTIME = 2 };

/* A request's envelope.  method is NULL when the method name is unknown;
 * params points into the decoded tree. */
struct hp_request {
	uint64_t id;
	bool has_id;
	char op[HP_OP_MAX + 1];
	const struct hp_method *method;
	const msgpack_object *params;
};

/*
 * Frame length from a header: 1..HP_MAX_FRAME, else BG_ERR_TOOBIG (too long)
 * or BG_ERR_PROTO (zero).
 */
int64_t proto_frame_len(const unsigned char hdr[4]);

/*
 * Decode a frame body that must hold exactly one msgpack map, after checking
 * without allocating that no container claims more elements than the body
 * has bytes (so a small frame cannot make the decoder reserve gigabytes).
 * On success *out owns a copy of everything (msgpack_unpacked_destroy);
 * BG_ERR_PROTO otherwise.
 */
int proto_decode(const void *body, size_t len, msgpack_unpacked *out);

/*
 * Check a decoded frame's envelope (see "Request" above).  On failure returns
 * BG_ERR_PROTO (malformed envelope: the connection should end) or
 * BG_ERR_INVAL (unknown method: answer and go on), with *errmsg (caller
 * frees); r->id/has_id are set whenever an id could be read.
 */
int proto_parse_envelope(const msgpack_object *root, struct hp_request *r, char **errmsg);

/*
 * Check params against method m and policy p: exactly m's fields, each of
 * its type, each value passing its check.  Fills *a.  0, or BG_ERR_INVAL with
 * *errmsg (caller frees) naming the field: "'tap': ...".
 */
int proto_check_params(const struct hp_method *m, const struct hp_policy *p,
		       const msgpack_object *params, struct hp_args *a, char **errmsg);

/* The single-value checks, for the daemon side and the tests.  Each returns
 * 0 or BG_ERR_INVAL with a message into err (size errlen). */
int proto_check_tap(const char *s, size_t n, char *err, size_t errlen);
int proto_check_bridge(const struct hp_policy *p, const char *s, size_t n, char *err,
		       size_t errlen);
int proto_check_addr(const struct hp_policy *p, const char *s, size_t n, uint32_t *out,
		     char *err, size_t errlen);
/* bases: HP_BASE_* bits allowed; *base and *rel_off (offset of the part
 * below the base directory) on success. */
int proto_check_path(const struct hp_policy *p, unsigned bases, const char *s, size_t n,
		     int *base, size_t *rel_off, char *err, size_t errlen);
int proto_check_dm(const char *s, size_t n, char *err, size_t errlen);
int proto_check_loopdev(const char *s, size_t n, int *minor, char *err, size_t errlen);
int proto_check_signal(const char *s, size_t n, int *sig, char *err, size_t errlen);
/* True when name carries banger's tap prefix rule (for the inventory). */
bool proto_is_tap_name(const char *name);
bool proto_is_bridge_name(const char *name);
bool proto_is_dm_name(const char *name);

/* Pack params for method m from a (the fields m lists), as a map. */
void proto_pack_params(msgpack_packer *pk, const struct hp_method *m, const struct hp_args *a);

#endif
