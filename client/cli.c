/*
 * cli.c: the invocation context of the banger CLI (see cli.h): where the
 * daemon's socket is, connecting to it, one-shot calls and the way failures
 * are reported.
 *
 * Everything here blocks; the CLI is single-threaded.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "err.h"
#include "mpk.h"
#include "protocol.h"
#include "util.h"

void cli_init(struct cli *cli)
{
	memset(cli, 0, sizeof(*cli));
	memcpy(cli->op, "cli-", 4);
	rand_hex(cli->op + 4, 4);
}

void cli_release(struct cli *cli)
{
	free(cli->sock_path);
	cli->sock_path = NULL;
}

void cli_error(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fputs("banger: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static char *join_socket(const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	return xasprintf("%.*s/%s", (int)n, dir, BG_SOCKET_NAME);
}

int cli_socket_path(struct cli *cli, const char **path)
{
	if (cli->sock_path) {
		*path = cli->sock_path;
		return 0;
	}
	/* A flag given on this command line wins over the environment, which
	 * wins over the configuration file (the order config.h documents). */
	const char *env = getenv("BANGER_RUNTIME_DIR");
	if (cli->runtime_dir_opt && *cli->runtime_dir_opt) {
		cli->sock_path = join_socket(cli->runtime_dir_opt);
	} else if (env && *env) {
		cli->sock_path = join_socket(env);
	} else {
		struct bg_config cfg;
		char *errmsg = NULL;
		memset(&cfg, 0, sizeof(cfg));
		int rc = config_load(cli->config_opt, &cfg, &errmsg);
		if (rc) {
			/* "file:line:col: ..." lines, like a spec error: verbatim. */
			if (errmsg && strchr(errmsg, '\n')) {
				fflush(stdout);
				fprintf(stderr, "%s\n", errmsg);
			} else {
				cli_error("%s", errmsg ? errmsg : bg_strerror(rc));
			}
			free(errmsg);
			return CLI_EXIT_FAIL;
		}
		if (!cfg.runtime_dir || !*cfg.runtime_dir) {
			cli_error("configuration '%s' gives no runtime_dir",
				  cfg.path ? cfg.path : "(defaults)");
			config_release(&cfg);
			return CLI_EXIT_FAIL;
		}
		cli->sock_path = join_socket(cfg.runtime_dir);
		config_release(&cfg);
	}
	if (cli->verbose)
		cli_error("op %s, socket '%s'", cli->op, cli->sock_path);
	*path = cli->sock_path;
	return 0;
}

int cli_connect(struct cli *cli, struct rpc_client *c, bool quiet, int *bgerr)
{
	const char *path;
	char *errmsg = NULL;
	int st = cli_socket_path(cli, &path);
	if (st) {
		if (bgerr)
			*bgerr = BG_ERR_INVAL;
		return st;
	}
	int rc = rpc_connect(path, c, &errmsg);
	if (bgerr)
		*bgerr = rc;
	if (rc == 0)
		return 0;
	if (!quiet) {
		if (rc == BG_ERR_CONN)
			cli_error("%s (is bangerd running?)", errmsg);
		else
			cli_error("%s", errmsg);
	}
	free(errmsg);
	return CLI_EXIT_FAIL;
}

/* True when msg already names subject ("no job 42" for "job 42"), so that
 * prefixing it would say it twice. */
static bool mentions(const char *msg, const char *subject)
{
	size_t n = strlen(subject);
	for (const char *p = strstr(msg, subject); p; p = strstr(p + 1, subject)) {
		char after = p[n];
		bool word_end = !(after >= '0' && after <= '9') && !(after >= 'a' && after <= 'z') &&
				!(after >= 'A' && after <= 'Z') && after != '_';
		if (word_end && (p == msg || p[-1] == ' ' || p[-1] == '\''))
			return true;
	}
	return false;
}

int cli_report(int bgerr, const char *subject, const char *errmsg)
{
	if (!errmsg || !*errmsg)
		errmsg = bg_strerror(bgerr);
	if (bgerr == BG_ERR_SPEC) {
		size_t n = strlen(errmsg);
		fflush(stdout);
		fputs(errmsg, stderr);
		if (n && errmsg[n - 1] != '\n')
			fputc('\n', stderr);
		return CLI_EXIT_USAGE;
	}
	if (subject && !mentions(errmsg, subject))
		cli_error("%s: %s", subject, errmsg);
	else
		cli_error("%s", errmsg);
	return CLI_EXIT_FAIL;
}

int cli_call(struct cli *cli, const char *method, const msgpack_sbuffer *params,
	     const char *subject, msgpack_unpacked *reply, const msgpack_object **result)
{
	struct rpc_client c;
	char *errmsg = NULL;
	int st = cli_connect(cli, &c, false, NULL);
	if (st)
		return st;
	int rc = rpc_call(&c, method, cli->op, params ? params->data : NULL, params ? params->size : 0,
			  NULL, NULL, reply, &errmsg);
	rpc_close(&c);
	if (rc) {
		st = cli_report(rc, subject, errmsg);
		free(errmsg);
		return st;
	}
	*result = mpk_get(&reply->data, "result");
	if (!*result) {
		msgpack_unpacked_destroy(reply);
		cli_error("%s: malformed reply from bangerd (no result)", subject ? subject : method);
		return CLI_EXIT_FAIL;
	}
	return 0;
}

int cli_parse_id(const char *s, const char *what, int64_t *out)
{
	int64_t v = 0;
	const char *p = s;
	if (!*p)
		goto bad;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			goto bad;
		if (v > (INT64_MAX - (*p - '0')) / 10)
			goto bad;
		v = v * 10 + (*p - '0');
	}
	if (v <= 0)
		goto bad;
	*out = v;
	return 0;
bad:
	cli_error("invalid %s '%s' (expected a positive number)", what, s);
	return CLI_EXIT_USAGE;
}
