/*
 * agent_proto.h: the whole wire protocol between bangerd (worker/agent.c) and
 * banger-agent, the guest's PID 1 (guest/agent.c): frame layout, frame types,
 * field tags, limits, and the codec both sides link (agent_proto.c).
 *
 * The stream is a virtio-serial port (QEMU: a Unix socket on the host), a
 * vsock connection (Firecracker), or a Unix socket (the agent's test mode).
 * It carries:
 *
 *   SYNC marker   16 bytes, AP_SYNC below; starts with 0x00, so it can never
 *                 be mistaken for a frame (frames start with 'B')
 *   frame         12-byte header, then len payload bytes:
 *                   0  'B' 'A'      magic
 *                   2  u8  version  AP_WIRE_VERSION (the framing's version)
 *                   3  u8  type     AP_T_*
 *                   4  u32 id       exec id chosen by the host; 0 = the link
 *                   8  u32 len      payload length, <= the type's limit
 *                 all integers big-endian.
 *
 * Payloads of STDIN/STDOUT/STDERR frames are raw bytes.  Every other payload
 * is a list of self-describing fields: u8 tag, u32 len (big-endian), len
 * bytes.  Integers are 8-byte big-endian two's complement; strings carry no
 * NUL.  A field may repeat where the table says so (ARG, ENV); unknown tags
 * are skipped, so either side may add optional fields later.
 *
 * Connecting and resync.  A virtio-serial port is one byte stream that
 * outlives host connections, so the host begins every connection with SYNC
 * followed by HELLO, and may repeat both until it gets a HELLO back.  The
 * agent answers SYNC with SYNC (after whatever it had already queued), kills
 * the commands the previous connection started, and starts parsing afresh;
 * the host discards everything before the agent's SYNC.  A SYNC between
 * frames is otherwise ignored.  When the agent meets a malformed frame it
 * answers ERROR (id 0) and discards input until the next SYNC.
 *
 * Requests (host -> agent):
 *   HELLO     VERSION                       -> HELLO
 *   EXEC      (ARG+ | SHELL) ENV* CWD? STDIN?  -> STARTED, STDOUT/STDERR...,
 *                                                 EXIT; or ERROR(REQ=EXEC)
 *   STDIN     raw bytes; an empty frame closes the command's stdin
 *   SIGNAL    SIGNO                         -> nothing (ERROR if no such exec)
 *   POWEROFF  (none)                        -> OK(REQ=POWEROFF), then the
 *                                              guest syncs and powers off
 * Replies and events (agent -> host):
 *   HELLO     VERSION AGENT KERNEL UPTIME_MS
 *   STARTED   PID
 *   STDOUT, STDERR  raw output, in the order it was read
 *   EXIT      CODE | SIGNO: the command's end; always after all its output
 *   ERROR     REQ CODE (errno) MSG
 *   OK        REQ
 *
 * Workspaces (protocol 2, docs/workspaces.md):
 *   MOUNT     DEV PATH FSTYPE? RO?          -> OK(REQ=MOUNT) or ERROR(REQ=MOUNT)
 *             DEV is a device path, or LABEL=NAME / UUID=UUID of an ext4
 *             disk; PATH is created (with parents) when missing
 *   EXPORT    PATH                          -> ENTRY, DATA..., ENTRY, ...,
 *                                              END; or ERROR(REQ=EXPORT)
 *             streams the guest directory PATH: one ENTRY per file,
 *             directory, symlink or hardlink (depth first, names sorted),
 *             each regular file's ENTRY followed by DATA frames carrying
 *             exactly SIZE bytes; END closes a complete stream; an ERROR
 *             (for the id) ends it early.  SIGNAL to the id cancels it (it
 *             ends with ERROR, CODE=ECANCELED, at the next frame boundary).
 *             Special files are reported with WARN and skipped.
 *   IMPORT    PATH TYPE?                    -> (the host streams ENTRY, DATA...,
 *                                              END for the id) OK(REQ=IMPORT
 *                                              COUNT BYTES); or ERROR(REQ=IMPORT)
 *             (protocol 3) the reverse of EXPORT: the host sends the tree
 *             into the guest directory PATH (absolute; created with its
 *             parents when missing) as ENTRY frames, each regular file's
 *             followed by DATA frames carrying exactly SIZE bytes, then
 *             END COUNT BYTES.  TYPE AP_E_REG: a single file, exactly one
 *             ENTRY of type reg whose PATH is one name; it lands at
 *             PATH/NAME when PATH is an existing directory, else at PATH
 *             (whose directory must exist), like cp(1).  The agent writes
 *             each DATA frame straight to the file (no buffering: while a
 *             write blocks it does not read the link, which backs pressure
 *             into the host), never writes outside PATH (each component
 *             opened from its parent with O_NOFOLLOW; a symlink in the
 *             guest is never followed), writes files to a temporary name
 *             and renames them over, and answers once: OK after END, or
 *             ERROR naming the path at the first failure (frames of the id
 *             that follow an ERROR are dropped).  SIGNAL to the id cancels
 *             it (ERROR, CODE=ECANCELED).  What was written before a
 *             failure stays; no temporary file does.
 * Replies (agent -> host):
 *   ENTRY     PATH TYPE MODE UID GID MTIME MTIME_NS SIZE? LINK?
 *             PATH relative to the exported directory (no "..", no leading
 *             "/"); TYPE an AP_E_*; LINK: a symlink's target, or for
 *             AP_E_HARDLINK the PATH of an earlier AP_E_REG entry
 *   DATA      raw bytes of the last AP_E_REG entry
 *   WARN      PATH MSG
 *   END       COUNT (entries) BYTES (file data)
 *
 * ENTRY, DATA and END are the only frame types that travel both ways (agent
 * -> host for EXPORT, host -> agent for IMPORT); every other type below
 * 0x80 is a request, from 0x80 a reply.
 *
 * Versions.  The header's version byte (AP_WIRE_VERSION) changes only when
 * the framing does; an agent rejects frames of another wire version.  The
 * HELLO's VERSION field is the protocol level (AP_VERSION): it grows when
 * requests are added.  The host accepts agents from AP_MIN_VERSION up and
 * sends a request only to an agent whose level has it (IMPORT: 3; an older
 * agent would take the unknown frame type for garbage and drop the link
 * until the next SYNC).
 *
 * Flow control: the agent produces an export only while the link takes its
 * bytes (a full virtio port or socket stops it; it never buffers more than
 * one chunk of a file), and the host's queue limit per id backs pressure
 * into the guest, so neither side buffers without bound.  File data goes
 * from the page cache to the port with splice(2) where the kernel can.
 * STDIN is buffered by the agent up to AP_STDIN_BUFFER_MAX per command.
 * IMPORT is not buffered at all: one frame at a time, written to its file
 * before the next is read.
 */
#ifndef BANGER_AGENT_PROTO_H
#define BANGER_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AP_WIRE_VERSION 2   /* the header's version byte */
#define AP_VERSION 3        /* protocol level in HELLO: 3 added IMPORT */
#define AP_MIN_VERSION 2    /* the oldest agent the host talks to */
#define AP_IMPORT_VERSION 3 /* the first level with IMPORT */
#define AP_HDR_LEN 12
#define AP_SYNC_LEN 16
extern const unsigned char AP_SYNC[AP_SYNC_LEN];

/* Limits. */
#define AP_MAX_PAYLOAD (1u << 20)        /* any frame */
#define AP_MAX_CTL_PAYLOAD 4096u         /* HELLO, SIGNAL, POWEROFF, OK, STARTED, EXIT */
#define AP_CHUNK 65536u                  /* output/stdin chunk a sender uses */
#define AP_MAX_ARGS 4096                 /* ARG fields in one EXEC */
#define AP_MAX_ENV 4096                  /* ENV fields in one EXEC */
#define AP_STDIN_BUFFER_MAX (16u << 20)  /* stdin the agent holds per command */
#define AP_MAX_PATH 4095u                /* an ENTRY's PATH or LINK */

/* What the agent prints on the console when booted with banger.probe=1
 * (the QEMU driver's "can KVM boot this guest?" probe), and once ready. */
#define AP_PROBE_MARKER "banger-agent: probe ok"
#define AP_READY_MARKER "banger-agent: ready"

/* virtio-serial port name, vsock port. */
#define AP_PORT_NAME "banger.agent"
#define AP_VSOCK_PORT 52

/* Frame types.  Host -> agent below 0x80, agent -> host from 0x80. */
enum {
	AP_T_HELLO = 0x01,
	AP_T_EXEC = 0x02,
	AP_T_STDIN = 0x03,
	AP_T_SIGNAL = 0x04,
	AP_T_POWEROFF = 0x05,
	AP_T_MOUNT = 0x06,
	AP_T_EXPORT = 0x07,
	AP_T_IMPORT = 0x08,

	AP_T_HELLO_REPLY = 0x81,
	AP_T_STARTED = 0x82,
	AP_T_STDOUT = 0x83,
	AP_T_STDERR = 0x84,
	AP_T_EXIT = 0x85,
	AP_T_ERROR = 0x86,
	AP_T_OK = 0x87,
	AP_T_ENTRY = 0x88,
	AP_T_DATA = 0x89,
	AP_T_WARN = 0x8a,
	AP_T_END = 0x8b,
};

/* ENTRY types. */
enum {
	AP_E_REG = 1,
	AP_E_DIR = 2,
	AP_E_SYMLINK = 3,
	AP_E_HARDLINK = 4,
};

/* Field tags. */
enum {
	AP_F_VERSION = 1,   /* int */
	AP_F_ARG = 2,       /* str, repeated: argv in order */
	AP_F_SHELL = 3,     /* str: run as /bin/sh -c SHELL */
	AP_F_ENV = 4,       /* str "NAME=value", repeated; added to the defaults */
	AP_F_CWD = 5,       /* str */
	AP_F_STDIN = 6,     /* int 1: the host streams stdin; absent: /dev/null */
	AP_F_SIGNO = 7,     /* int */
	AP_F_PID = 8,       /* int */
	AP_F_CODE = 9,      /* int: exit code (EXIT) or errno (ERROR) */
	AP_F_MSG = 10,      /* str */
	AP_F_REQ = 11,      /* int: the request type an ERROR or OK answers */
	AP_F_AGENT = 12,    /* str: agent name and version */
	AP_F_KERNEL = 13,   /* str: guest kernel release */
	AP_F_UPTIME_MS = 14, /* int: guest uptime when the agent became ready */
	AP_F_PATH = 15,     /* str */
	AP_F_TYPE = 16,     /* int: AP_E_* (ENTRY; IMPORT: AP_E_DIR or AP_E_REG) */
	AP_F_MODE = 17,     /* int: permission bits (07777) */
	AP_F_UID = 18,      /* int */
	AP_F_GID = 19,      /* int */
	AP_F_MTIME = 20,    /* int: seconds */
	AP_F_MTIME_NS = 21, /* int */
	AP_F_SIZE = 22,     /* int: bytes */
	AP_F_LINK = 23,     /* str */
	AP_F_DEV = 24,      /* str */
	AP_F_FSTYPE = 25,   /* str */
	AP_F_RO = 26,       /* int 1: read-only */
	AP_F_COUNT = 27,    /* int */
	AP_F_BYTES = 28     /* int */
};

/* ---- frame headers ---- */

struct ap_hdr {
	uint8_t type;
	uint32_t id;
	uint32_t len;
};

void ap_hdr_pack(unsigned char out[AP_HDR_LEN], uint8_t type, uint32_t id, uint32_t len);
/* Check magic, version, that the type is known and that len is within the
 * type's limit.  0, BG_ERR_PROTO (bad magic/version/type) or BG_ERR_TOOBIG.
 * On error *why (may be NULL) points at a static description. */
int ap_hdr_parse(const unsigned char in[AP_HDR_LEN], struct ap_hdr *h, const char **why);
/* The payload limit for a type (0 for an unknown type). */
uint32_t ap_type_max(uint8_t type);
const char *ap_type_name(uint8_t type);

/* ---- building frames ---- */

/*
 * A frame being built: header then fields.  Errors are sticky: after one,
 * further puts do nothing and ap_end() returns it.  ap_buf_init/release for
 * an embedded buffer; ap_begin may be called again to reuse the storage.
 */
struct ap_buf {
	unsigned char *data;
	size_t len, cap;
	int err;
};
void ap_buf_init(struct ap_buf *b);
void ap_buf_release(struct ap_buf *b);
void ap_begin(struct ap_buf *b, uint8_t type, uint32_t id);
void ap_put_bytes(struct ap_buf *b, uint8_t tag, const void *p, size_t n);
void ap_put_str(struct ap_buf *b, uint8_t tag, const char *s);
void ap_put_int(struct ap_buf *b, uint8_t tag, int64_t v);
/* Raw payload bytes (for STDIN/STDOUT/STDERR frames). */
void ap_put_raw(struct ap_buf *b, const void *p, size_t n);
/* Patch the header's length.  0, BG_ERR_TOOBIG or BG_ERR_NOMEM. */
int ap_end(struct ap_buf *b);

/* ---- reading fields ---- */

struct ap_field {
	uint8_t tag;
	uint32_t len;
	const unsigned char *val;
};
struct ap_iter {
	const unsigned char *p;
	size_t left;
};
void ap_iter_init(struct ap_iter *it, const void *payload, size_t len);
/* 1 with *f filled, 0 at the end, BG_ERR_PROTO when a field is truncated. */
int ap_next(struct ap_iter *it, struct ap_field *f);
/* Field as an int (its length must be 8).  0 or BG_ERR_PROTO. */
int ap_field_int(const struct ap_field *f, int64_t *v);
/* Field as a newly allocated C string (no NUL allowed inside).  0,
 * BG_ERR_PROTO or BG_ERR_NOMEM; the caller frees *out. */
int ap_field_str(const struct ap_field *f, char **out);
/* Validate a whole field list: fields well formed, every field of a tag in
 * int_tags has length 8.  0 or BG_ERR_PROTO. */
int ap_fields_check(const void *payload, size_t len);

/* ---- typed messages ---- */

/* An EXEC request, decoded.  argv is NULL-terminated (SHELL is turned into
 * {"/bin/sh", "-c", SHELL}); env is NULL-terminated (maybe empty).  Owned
 * by the struct: ap_exec_req_release frees it. */
struct ap_exec_req {
	char **argv;
	size_t argc;
	char **env;
	size_t envc;
	char *cwd;        /* NULL: "/" */
	bool shell;       /* argv came from SHELL */
	bool stdin_pipe;
};
/* Encode an EXEC frame into b.  Exactly one of argv (NULL-terminated, at
 * least one element) and shell must be set; env may be NULL. */
int ap_exec_encode(struct ap_buf *b, uint32_t id, const char *const *argv, const char *shell,
		   const char *const *env, const char *cwd, bool stdin_pipe);
/* Decode and check an EXEC payload.  BG_ERR_PROTO with a static reason in
 * *why on any malformed or contradictory field; nothing to release then. */
int ap_exec_decode(const void *payload, size_t len, struct ap_exec_req *r, const char **why);
void ap_exec_req_release(struct ap_exec_req *r);

/* EXIT: exactly one of CODE (0..255) and SIGNO (1..64). */
int ap_exit_decode(const void *payload, size_t len, bool *signaled, int *value);
/* ERROR: REQ and CODE optional (0), MSG optional (NULL); *msg is allocated. */
int ap_error_decode(const void *payload, size_t len, int *req, int *code, char **msg);
/* One int field by tag (the first); BG_ERR_NOENT when absent. */
int ap_get_int(const void *payload, size_t len, uint8_t tag, int64_t *v);
/* One string field by tag (the first), allocated; BG_ERR_NOENT when absent. */
int ap_get_str(const void *payload, size_t len, uint8_t tag, char **out);

/* An ENTRY, decoded and checked (path clean and relative, type known,
 * sizes in range, LINK present exactly for symlinks and hardlinks).
 * Strings are allocated: ap_entry_release frees them. */
struct ap_entry {
	char *path;
	int type;       /* AP_E_* */
	uint32_t mode;  /* 07777 bits */
	uint32_t uid, gid;
	int64_t mtime;
	uint32_t mtime_ns;
	uint64_t size;  /* AP_E_REG only */
	char *link;     /* AP_E_SYMLINK target; AP_E_HARDLINK: the earlier entry's path */
};
int ap_entry_decode(const void *payload, size_t len, struct ap_entry *e, const char **why);
/* Encode e as an ENTRY frame for id into b.  BG_ERR_INVAL (with a static
 * reason in *why) for an entry ap_entry_decode would refuse. */
int ap_entry_encode(struct ap_buf *b, uint32_t id, const struct ap_entry *e, const char **why);
void ap_entry_release(struct ap_entry *e);
/* Whether p is a clean relative path: not empty, no leading or doubled
 * '/', no "." or ".." component, at most AP_MAX_PATH bytes. */
bool ap_path_clean(const char *p);

/* Find AP_SYNC in buf: offset of its first byte, or -1.  *keep tells how
 * many trailing bytes may be the start of a marker cut by the buffer's end
 * (the caller keeps them when it discards the rest). */
long ap_sync_find(const unsigned char *buf, size_t len, size_t *keep);

#endif
