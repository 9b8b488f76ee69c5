/*
 * spec.h: parsing and validating a spec (YAML, libyaml) into jobs to queue.
 *
 * A spec is a set of named jobs with `needs:` dependencies.  Everything is
 * checked before anything is queued: YAML syntax, unknown keys (with a "did
 * you mean" suggestion), types, unknown kinds, required fields, unknown
 * `needs:` names, cycles.  Errors read `path:line:col: message`, one per line.
 * See docs/spec.md.
 */
#ifndef BANGER_SPEC_H
#define BANGER_SPEC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spec_job {
	char *name;
	char *kind;
	char **needs; /* job names within the same spec */
	size_t nneeds;
	bool when_always;    /* `when: always`: runs even when a need failed */
	int64_t priority;    /* default 0; higher first; -1000..1000 */
	int max_attempts;    /* default 3; 1..100 */
	int64_t timeout_us;  /* default 0 = none */
	int64_t delay_us;    /* default 0: run_after = submit time + delay */
	int retry;           /* -1 unset, 0 false, 1 true (see kind.h) */
	char *params;        /* msgpack map of the kind's fields, normalized */
	size_t params_len;
	int line, col;       /* where the job's key is, for messages */
};

struct spec {
	char *name;            /* `name:` or the file's base name without .yaml */
	struct spec_job *jobs; /* in topological order: needs before dependents */
	size_t njobs;
};

/*
 * Parse YAML text.  path is used only in messages.  On failure returns
 * BG_ERR_SPEC and sets *errmsg (caller frees; one line per problem, at most
 * 20 lines) and *out is left empty.  On success the caller spec_release()s.
 */
int spec_parse(const char *text, size_t len, const char *path, struct spec *out, char **errmsg);

/*
 * Build a spec from an array of JOBDEF maps (protocol.h): the same keys as in
 * YAML plus "name".  Same checks and errors, with "jobs[i]" in place of
 * line:col.
 */
int spec_from_msgpack(const msgpack_object *jobs, const char *name, struct spec *out,
		      char **errmsg);

void spec_release(struct spec *s);

/*
 * Give the jobs whose kind wants it (kind.wants_dir) the spec's directory
 * as the parameter SPEC_DIR_FIELD.  dir must be absolute and clean (no "."
 * or ".." components): BG_ERR_INVAL with *errmsg otherwise.
 */
int spec_set_dir(struct spec *s, const char *dir, char **errmsg);

#endif
