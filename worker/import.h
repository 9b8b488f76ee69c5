/*
 * import.h: copy a host directory (or one file) into a running VM through
 * its agent (the IMPORT request, guest/agent_proto.h): the library behind
 * `banger vm cp ./here NAME:/path` and the workspace.import kind.
 *
 * The host side walks the source like workspace_build does (worker/
 * workspace.h): every directory and file opened relative to its parent's
 * descriptor with O_NOFOLLOW, symlinks sent as symlinks with their target
 * bytes and never followed (also when they point outside the tree),
 * hardlinks as hardlinks, names as their bytes; devices, fifos, sockets,
 * anything owned by a user other than opts->owner, mount points of other
 * filesystems and unreadable entries skipped with a warn callback;
 * exclude patterns (workspace_exclude_match) applied before anything is
 * read, an excluded directory not entered.  The rules apply to what is
 * under the source; the source itself (the path the caller names, resolved
 * like workspace_build's `from`) is the caller's choice.  File data is read
 * from each file's descriptor in 1 MiB chunks, one frame at a time: never a
 * whole file in memory.  In the guest, the agent writes nothing outside the
 * destination and follows no symlink under it (see docs/workspaces.md,
 * "Copying into a running VM").
 *
 * Semantics, like cp(1):
 *
 *   source          destination in the guest     result
 *   directory D     missing                      created with its parents,
 *                                                then D's contents in it
 *   directory D     an existing directory        D's contents merged into
 *                                                it (`cp -a D/. DEST`)
 *   directory D     anything else                BG_ERR_INVAL
 *   file F          an existing directory        DEST/basename(F)
 *   file F          a file, or missing           DEST (replaced), its
 *                                                directory must exist
 *   file F          missing, ending in '/'       BG_ERR_INVAL
 *
 * An existing file is replaced only by a complete one (temporary name,
 * rename); an existing directory is kept and its mode, owner and mtime
 * set; a symlink in the guest where the source has a directory fails the
 * import (BG_ERR_PERM); where the source has a file or symlink, the
 * symlink itself is replaced (never written through).  A failed import
 * leaves what was already written, but no temporary file.
 *
 * Blocking, in the caller's thread (a step body in a pool thread); the
 * callbacks run in that thread.  Reentrant.
 */
#ifndef BANGER_IMPORT_H
#define BANGER_IMPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "workspace.h"

struct agent_conn;

struct import_opts {
	/* Exclude patterns (workspace_exclude_match); NULL-terminated, may be
	 * NULL; checked before anything is sent.  Ignored for a single file. */
	const char *const *exclude;
	/* Owner of everything in the guest; default (both 0) root, like the
	 * workspace disk (so `git` run as root does not call it dubious). */
	uint32_t uid, gid;
	/* Entries owned by another uid are skipped.  owner_set false: the
	 * effective uid of the process. */
	bool owner_set;
	uid_t owner;
	/* Each skipped entry, with its path relative to the source and a
	 * lowercase reason; may be NULL. */
	void (*warn)(void *arg, enum workspace_skip kind, const char *path, const char *why);
	/* Polled before every frame (at least once per MiB) and while waiting
	 * for the agent; true stops with BG_ERR_CANCELED.  May be NULL. */
	bool (*cancelled)(void *arg);
	/* > 0: the whole import must end within this (BG_ERR_TIMEDOUT). */
	int64_t timeout_us;
	void *arg;
};

struct import_result {
	uint64_t files, dirs, symlinks, hardlinks; /* entries sent, by type */
	uint64_t skipped;    /* reported through warn */
	uint64_t excluded;   /* entries (a directory counts once) excluded */
	uint64_t data_bytes; /* file data sent */
	uint64_t entries;    /* entries the agent confirmed */
};

/*
 * Copy host_path (a directory or a regular file) into the VM behind c at
 * guest_dest (absolute), with the semantics above.  0 once the agent
 * confirmed every entry and byte; otherwise:
 *
 *   BG_ERR_INVAL        a bad exclude pattern; host_path is neither a
 *                       directory nor a regular file; guest_dest is not
 *                       absolute, or not a directory where one is needed
 *   BG_ERR_NOENT        host_path does not exist; (single file) the
 *                       destination's directory does not exist
 *   BG_ERR_PERM         host_path cannot be read; a symlink in the guest
 *                       on the way (refused, never followed)
 *   BG_ERR_UNSUPPORTED  the VM's agent is older than protocol 3
 *   BG_ERR_IO           a read error on the host, or a file that shrank
 *                       while it was sent
 *   BG_ERR_NOSPC        the guest's disk is full
 *   BG_ERR_CANCELED, BG_ERR_TIMEDOUT, BG_ERR_CLOSED (VM or link gone),
 *   BG_ERR_PROTO        (an agent that broke the protocol)
 *
 * *errmsg (errmsg may be NULL) gets a message naming the path; the caller
 * frees it; NULL on success.  res may be NULL; it is filled also on
 * failure (what was sent until then).
 */
int import_dir(struct agent_conn *c, const char *host_path, const char *guest_dest,
	       const struct import_opts *o, struct import_result *res, char **errmsg);

#endif
