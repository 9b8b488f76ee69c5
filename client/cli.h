/*
 * cli.h: one invocation of the banger CLI: global options, the operation id,
 * finding and talking to bangerd, and the error and exit-status conventions
 * every command follows.
 *
 * Exit statuses: 0 success; 1 failure (daemon error, transport, I/O); 2 usage
 * or spec error.  Commands that follow jobs (tail, submit --follow) exit with
 * the jobs' status instead (see tail.h).
 */
#ifndef BANGER_CLIENT_CLI_H
#define BANGER_CLIENT_CLI_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "rpc.h"

#ifndef BANGER_VERSION
#define BANGER_VERSION "0.1.0"
#endif

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

struct cli {
	const char *runtime_dir_opt; /* --runtime-dir, or NULL */
	const char *config_opt;      /* --config, or NULL */
	bool verbose;                /* --verbose */
	char op[16];                 /* "cli-" + 8 hex: sent as "op" with every request */
	char *sock_path;             /* resolved on first use; owned */
};

/* Fill in a fresh operation id; the options are set by the caller. */
void cli_init(struct cli *cli);
void cli_release(struct cli *cli);

/* Print "banger: MESSAGE" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The daemon's socket: --runtime-dir, else $BANGER_RUNTIME_DIR, else the
 * runtime_dir of the configuration (config_load with --config), joined with
 * BG_SOCKET_NAME.  On failure prints why and returns CLI_EXIT_FAIL.  The
 * string stays owned by cli.
 */
int cli_socket_path(struct cli *cli, const char **path);

/*
 * Connect.  On failure returns an exit status; unless quiet, the reason is
 * printed (with "(is bangerd running?)" when nobody listens).  *bgerr, when
 * not NULL, receives the BG_ERR_* code.
 */
int cli_connect(struct cli *cli, struct rpc_client *c, bool quiet, int *bgerr);

/*
 * One request and its reply on a fresh connection.  params is a packed
 * msgpack map (NULL for none).  On success returns 0, *reply holds the frame
 * (the caller msgpack_unpacked_destroy()s it) and *result points into it (never
 * NULL: a reply without a result is reported as a protocol error).  On failure
 * prints "banger: SUBJECT: MESSAGE" and returns CLI_EXIT_FAIL; a SPEC error's
 * message is printed verbatim (it already reads "file:line:col: ...") and 2
 * is returned.
 */
int cli_call(struct cli *cli, const char *method, const msgpack_sbuffer *params,
	     const char *subject, msgpack_unpacked *reply, const msgpack_object **result);

/* Print a failed call's message as cli_call does; returns the exit status. */
int cli_report(int bgerr, const char *subject, const char *errmsg);

/* Parse a positive decimal id ("42").  On failure prints
 * "banger: invalid WHAT 'S'" and returns CLI_EXIT_USAGE. */
int cli_parse_id(const char *s, const char *what, int64_t *out);

#endif
