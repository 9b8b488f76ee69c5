/*
 * agent.h: bangerd's side of the guest agent protocol (guest/agent_proto.h):
 * one connection per VM, many commands at once, blocking calls meant for
 * step bodies in pool threads.
 *
 * Threading.  A connection owns one reader thread that reads every frame,
 * checks it, and queues it on the command it belongs to; the calling thread
 * of agent_exec_wait() takes its command's frames off that queue and runs the
 * output callback itself, so callbacks run in the caller's thread (a step
 * body can call step_emit from them).  Writes are serialized by a mutex.
 * Any number of threads may use one connection; each command belongs to the
 * thread that waits on it.
 *
 * Trust.  The guest is not trusted: a frame with a bad header, a length over
 * the protocol's limit, a malformed field, or a type the host does not
 * expect breaks the connection with BG_ERR_PROTO (every waiter gets it); it
 * never crashes bangerd, and never makes it allocate more than one frame
 * (AP_MAX_PAYLOAD) plus the per-command queue limit.
 *
 * Ownership.  agent_connect* return a connection the caller destroys with
 * agent_close(); commands are agent_exec_destroy()ed by their caller (before
 * or after agent_close: the connection is reference-counted).  Every
 * errmsg argument may be NULL; *errmsg must be NULL or a string an earlier
 * call left there (it is replaced), and is the caller's to free.
 */
#ifndef BANGER_AGENT_H
#define BANGER_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent_conn;
struct agent_exec;

struct agent_info {
	int version;        /* protocol version the agent speaks */
	char agent[64];     /* "banger-agent 1" */
	char kernel[128];   /* guest `uname -r` */
	int64_t uptime_ms;  /* guest uptime when the agent became ready */
};

/*
 * Connect to the Unix socket that carries the agent's stream (QEMU's
 * chardev socket of the virtio-serial port, or `banger-agent --listen`),
 * send SYNC + HELLO (again every second until answered), and wait for the
 * agent's HELLO.  Bounded by timeout_us: BG_ERR_TIMEDOUT.  While the socket
 * does not exist yet or refuses, keeps retrying within the bound.
 * watch_fd >= 0 (e.g. the hypervisor's pidfd): when it becomes readable the
 * wait ends with BG_ERR_CLOSED.  Blocks; any thread.
 */
int agent_connect(const char *sock_path, int64_t timeout_us, int watch_fd,
		  struct agent_conn **out, char **errmsg);
/* The same over an already connected stream socket (ownership of fd moves
 * to the connection, also on failure). */
int agent_connect_fd(int fd, int64_t timeout_us, int watch_fd, struct agent_conn **out,
		     char **errmsg);
/* What the agent said about itself in its HELLO. */
const struct agent_info *agent_info(const struct agent_conn *c);
/* 0 while usable; the error that broke the connection otherwise. */
int agent_conn_error(struct agent_conn *c);
/* Shut the socket, stop the reader, drop the caller's reference.  Commands
 * still waiting get BG_ERR_CLOSED. */
void agent_close(struct agent_conn *c);

struct agent_exec_req {
	const char *const *argv; /* NULL-terminated; or NULL when shell is set */
	const char *shell;       /* run as /bin/sh -c SHELL in the guest */
	const char *const *env;  /* "NAME=value", NULL-terminated; may be NULL */
	const char *cwd;         /* NULL: / */
	bool stdin_pipe;         /* true: feed it with agent_exec_stdin */
};

struct agent_exit {
	bool signaled; /* true: killed by signal `value`; false: exit code */
	int value;
	int64_t pid;   /* guest pid, 0 if the command never started */
};

/* Output callback: stream 1 (stdout) or 2 (stderr).  Return 0 to go on;
 * anything else stops the wait, which kills the command's process group and
 * returns that value. */
typedef int (*agent_output_fn)(void *arg, int stream, const void *data, size_t len);

struct agent_wait_opts {
	agent_output_fn on_output; /* may be NULL: output is dropped */
	void *arg;
	/* > 0: after this long, SIGKILL the command's process group and return
	 * BG_ERR_TIMEDOUT (the exit is still collected, within a grace period). */
	int64_t timeout_us;
	/* Polled about every 100 ms; true: kill the group, BG_ERR_CANCELED. */
	bool (*cancelled)(void *arg);
};

/* Send an EXEC.  Returns as soon as the request is written; a command that
 * cannot start is reported by agent_exec_wait.  *out is the caller's. */
int agent_exec_start(struct agent_conn *c, const struct agent_exec_req *req,
		     struct agent_exec **out, char **errmsg);
/* Feed stdin (len 0: close it).  Blocks while the socket is full. */
int agent_exec_stdin(struct agent_exec *e, const void *data, size_t len);
/* Send a signal to the command's process group in the guest. */
int agent_exec_signal(struct agent_exec *e, int signo);
/*
 * Wait for the command to end, calling o->on_output for each chunk in this
 * thread, in the order the guest read them.  0 with *st filled; BG_ERR_NOENT
 * / BG_ERR_PERM / ... when the command could not start (the agent's reason
 * in *errmsg); BG_ERR_TIMEDOUT, BG_ERR_CANCELED, BG_ERR_CLOSED (guest or
 * link gone), BG_ERR_PROTO (garbage from the guest).  May be called once.
 */
int agent_exec_wait(struct agent_exec *e, const struct agent_wait_opts *o,
		    struct agent_exit *st, char **errmsg);
void agent_exec_destroy(struct agent_exec *e);

/* start + (stdin_data, then EOF, when req->stdin_pipe) + wait + destroy. */
int agent_run(struct agent_conn *c, const struct agent_exec_req *req, const void *stdin_data,
	      size_t stdin_len, const struct agent_wait_opts *o, struct agent_exit *st,
	      char **errmsg);

/* ---- workspaces (protocol 2) ---- */

struct ap_entry; /* guest/agent_proto.h */

/*
 * Mount a disk in the guest: dev is a device path or LABEL=NAME / UUID=UUID
 * of an ext4 disk (the workspace image carries the label "workspace"); path
 * is created with its parents; fstype NULL: ext4.  Waits (bounded) for the
 * agent's answer: 0, or the agent's errno mapped (BG_ERR_NOENT for a disk
 * that is not there...) with its message in *errmsg.
 */
int agent_mount(struct agent_conn *c, const char *dev, const char *path, const char *fstype,
		bool readonly, int64_t timeout_us, char **errmsg);

struct agent_export_ops {
	/* Each entry, depth first with names sorted; path relative to the
	 * exported directory, already checked (clean, relative, type known,
	 * hardlinks naming an earlier file).  For AP_E_REG, data() calls follow
	 * carrying exactly e->size bytes.  Return 0 to go on; anything else
	 * cancels the export in the guest and agent_export returns that value. */
	int (*entry)(void *arg, const struct ap_entry *e);
	int (*data)(void *arg, const void *p, size_t n);
	/* A guest file that was skipped (a special file, unreadable); may be NULL. */
	void (*warn)(void *arg, const char *path, const char *msg);
	/* Polled about every 100 ms; true: cancel, BG_ERR_CANCELED.  May be NULL. */
	bool (*cancelled)(void *arg);
	/* > 0: the whole export must end within this, else BG_ERR_TIMEDOUT. */
	int64_t timeout_us;
	void *arg;
};

struct agent_export_stats {
	uint64_t entries, bytes, warnings;
};

/*
 * Stream the guest directory guest_path (absolute) through the callbacks,
 * in this thread.  0 once the guest's END arrived and matched what was
 * received; BG_ERR_NOENT / BG_ERR_INVAL (not a directory) ... with the
 * agent's message ("'/x' does not exist in the guest"); BG_ERR_PROTO for a
 * stream that breaks the rules (the connection is then broken too);
 * BG_ERR_TIMEDOUT, BG_ERR_CANCELED, BG_ERR_CLOSED; or a callback's value.
 * Memory: one frame at a time plus the connection's per-command queue
 * (8 MiB), whatever the directory's size.  st may be NULL.
 */
int agent_export(struct agent_conn *c, const char *guest_path, const struct agent_export_ops *ops,
		 struct agent_export_stats *st, char **errmsg);

/* ---- IMPORT (protocol 3): a tree from the host into the guest ---- */

/*
 * Where agent_import takes the tree from (worker/import.c walks a host
 * directory; a test can script one).  Callbacks run in agent_import's
 * thread.
 */
struct agent_import_ops {
	/* The next entry: 1 with *e filled (its strings stay the source's
	 * until the next call), 0 when the tree is complete, or a negative
	 * BG_ERR_* with a message in *errmsg (may be left NULL), which cancels
	 * the import in the guest and is returned.  Order: a directory before
	 * anything in it, a hardlink after the file it names (e->link: that
	 * file's path); paths relative to the destination, clean. */
	int (*next)(void *arg, struct ap_entry *e, char **errmsg);
	/* Data of the current AP_E_REG entry: at most cap bytes into buf;
	 * the count (> 0), or a negative BG_ERR_* (message in *errmsg).
	 * Called until e->size bytes came (not at all for an empty file). */
	int64_t (*read)(void *arg, void *buf, size_t cap, char **errmsg);
	/* Polled before every frame and about every 100 ms while waiting;
	 * true: cancel, BG_ERR_CANCELED.  May be NULL. */
	bool (*cancelled)(void *arg);
	/* > 0: the whole import must end within this, else BG_ERR_TIMEDOUT. */
	int64_t timeout_us;
	/* The source is one regular file (exactly one AP_E_REG entry whose
	 * path is a plain name): in the guest it lands at DEST/NAME when DEST
	 * is an existing directory, else at DEST itself (replaced if it is a
	 * file; its directory must exist), like cp(1). */
	bool single_file;
	void *arg;
};

struct agent_import_stats {
	uint64_t entries, bytes; /* sent, and confirmed by the agent's OK */
};

/*
 * Send the tree from ops into the guest directory guest_dest (absolute;
 * created with its parents when missing, unless single_file).  Blocks
 * until the agent confirmed it (OK with the counts the host sent): 0.
 * Failures: BG_ERR_UNSUPPORTED (an agent older than protocol 3, nothing
 * sent: "the agent in the guest speaks protocol 2, which has no IMPORT
 * ..."); the agent's error with its message naming the path (BG_ERR_PERM
 * for a symlink in the guest where a directory is needed, BG_ERR_INVAL
 * for a destination that is not a directory, BG_ERR_NOSPC, ...);
 * BG_ERR_TIMEDOUT, BG_ERR_CANCELED, BG_ERR_CLOSED; or a callback's value.
 * On every failure after the request was sent, the agent has stopped
 * (a cancel is confirmed before this returns, bounded by a few seconds)
 * and removed its temporary file; what it had renamed into place stays.
 * Memory: one 1 MiB frame buffer.  st may be NULL.
 */
int agent_import(struct agent_conn *c, const char *guest_dest, const struct agent_import_ops *ops,
		 struct agent_import_stats *st, char **errmsg);

/* Ask the guest to sync and power off; waits (bounded) for its OK or for
 * the link to close.  0 when the agent acknowledged or went away. */
int agent_poweroff(struct agent_conn *c, int64_t timeout_us, char **errmsg);

#endif
