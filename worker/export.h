/*
 * export.h: the host writer behind workspace.export: bring a guest
 * directory out of a VM as a tar archive (or a git patch) and store it at
 * the spec's `to:` safely.
 *
 * Safety rules (docs/workspaces.md):
 *   - `to:` is relative to the spec's directory, or absolute under the
 *     artifacts directory; after that it may not leave its root: no ".."
 *     component, and no symlink anywhere on the way (each directory is
 *     opened from its parent with O_NOFOLLOW; missing ones are created
 *     0755 the same way).  An existing `to:` that is a symlink or a
 *     directory is refused.
 *   - The bytes go to a temporary file in the same directory
 *     (".NAME.XXXXXX.partial", mode 0600 until committed), hashed (sha256,
 *     OpenSSL EVP) and counted as they are written; commit fsyncs it,
 *     renames it over `to:` and fsyncs the directory.  So an existing file
 *     is replaced only by a complete export, and a failed, cancelled or
 *     oversized export leaves no file (export_abort removes the temporary).
 *     A crash leaves at most the temporary, which export_temp_path names
 *     for the step's undo record.
 *   - max_bytes: the first write that would pass it fails with
 *     BG_ERR_TOOBIG; nothing is stored.
 *   - Symlinks in the archive are stored as symlinks (tar entries); nothing
 *     is extracted on the host, so nothing in the archive is ever followed.
 *
 * Blocking; for step bodies in pool threads and for tools.  Errors are 0 or
 * a negative BG_ERR_* with a lowercase message in *errmsg (the caller frees;
 * errmsg may be NULL).
 */
#ifndef BANGER_EXPORT_H
#define BANGER_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent_conn;

struct export_opts {
	const char *spec_dir;      /* required: a relative `to:` is under it */
	const char *artifacts_dir; /* may be NULL: an absolute `to:` may be under it */
	uint64_t max_bytes;        /* 0: no limit (the config's max_export_bytes) */
	unsigned mode;             /* of the stored file; 0: 0644 */
	/* NULL: the temporary is ".NAME.<random>.partial".  Otherwise
	 * ".NAME.<temp_tag>.partial", a name an undo record can hold before the
	 * export starts (a job id and attempt); one left by an earlier attempt
	 * is removed first. */
	const char *temp_tag;
};

struct export_result {
	char *path;          /* where it was stored (root + relative), the caller frees */
	uint64_t bytes;      /* size of the stored file */
	char sha256[65];     /* hex */
	uint64_t entries;    /* tar: entries in the archive; patch: 0 */
	uint64_t data_bytes; /* tar: bytes of file data; patch: bytes */
	uint64_t warnings;   /* guest files skipped (special files, unreadable) */
};

void export_result_release(struct export_result *r);

/* ---- the atomic, bounded, hashed file ---- */

struct export_file;

/* Resolve `to` under the allowed roots (creating missing directories) and
 * create the temporary file.  *out is the caller's: export_commit or
 * export_abort ends it. */
int export_open(const char *to, const struct export_opts *o, struct export_file **out,
		char **errmsg);
/* Append bytes: BG_ERR_TOOBIG past max_bytes, BG_ERR_NOSPC, BG_ERR_IO. */
int export_write(struct export_file *f, const void *p, size_t n, char **errmsg);
/* fsync, rename over `to`, fsync the directory; f is freed (on failure the
 * temporary is removed).  res may be NULL. */
int export_commit(struct export_file *f, struct export_result *res, char **errmsg);
/* Remove the temporary and free f.  NULL is fine. */
void export_abort(struct export_file *f);
/* The temporary's full path (for an undo record); valid while f lives. */
const char *export_temp_path(const struct export_file *f);
/* The rules on `to` that need no file system (a root it is under, no
 * "..", a file name): 0, or what export_open would refuse it with. */
int export_check_to(const char *to, const struct export_opts *o, char **errmsg);
/* Undo: remove the temporary named by o->temp_tag next to `to`, and `to`
 * itself (a regular file only) when remove_to.  Resolves `to` like
 * export_open but creates nothing; a directory on the way that does not
 * exist means nothing was written (0). */
int export_discard(const char *to, const struct export_opts *o, bool remove_to, char **errmsg);
/* Bytes written so far. */
uint64_t export_size(const struct export_file *f);

/* ---- from a VM ---- */

struct export_hooks {
	/* A guest file that was skipped; may be NULL. */
	void (*warn)(void *arg, const char *path, const char *msg);
	bool (*cancelled)(void *arg); /* may be NULL */
	int64_t timeout_us;           /* > 0: bound on the whole export */
	void *arg;
};

/*
 * workspace.export: stream the guest directory guest_path through the
 * agent (agent_export) into a pax tar archive written with libarchive, and
 * store it at `to` as above.  Entries keep their mode, owner (numeric),
 * mtime, symlink targets and hardlinks.  0 with *res filled; otherwise
 * nothing is stored: BG_ERR_NOENT / BG_ERR_INVAL for a guest directory that
 * does not exist or is not one (the agent's words), BG_ERR_TOOBIG past
 * max_bytes, BG_ERR_PERM for a `to` outside the allowed roots, ...
 */
int export_tar(struct agent_conn *c, const char *guest_path, const char *to,
	       const struct export_opts *o, const struct export_hooks *h,
	       struct export_result *res, char **errmsg);

/*
 * mode: patch: run `git add -A -N` then `git diff --binary BASE` in the guest
 * checkout guest_path (an exec of the image's git; BASE NULL: HEAD) and
 * store its stdout at `to`, for `git apply` on the host.  BG_ERR_NOENT when
 * the image has no git; BG_ERR_IO with git's stderr when git fails.
 */
int export_patch(struct agent_conn *c, const char *guest_path, const char *base, const char *to,
		 const struct export_opts *o, const struct export_hooks *h,
		 struct export_result *res, char **errmsg);

#endif
