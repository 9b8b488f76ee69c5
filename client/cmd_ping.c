/*
 * cmd_ping.c: `banger ping`: is bangerd there, and which one is it.
 */
#include <stdlib.h>

#include "cli.h"
#include "cmd.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"

enum { PING_JSON };

static const struct args_opt ping_opts[] = {
	[PING_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static void kv(const char *label, char *owned)
{
	printf("%-10s %s\n", label, owned);
	free(owned);
}

static int ping_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	const char *sock;
	int64_t version;
	int st = cli_call(cli, BG_M_PING, NULL, "ping", &reply, &result);
	if (st)
		return st;
	if (a->val[PING_JSON]) {
		st = out_json_print(result, true);
	} else {
		cli_socket_path(cli, &sock); /* resolved by the call already */
		kv("version:", out_field(result, "version", OUT_INT));
		kv("node:", out_field(result, "node", OUT_STR));
		kv("pid:", out_field(result, "pid", OUT_INT));
		kv("state_dir:", out_field(result, "state_dir", OUT_STR));
		kv("db:", out_field(result, "db", OUT_STR));
		printf("%-10s %s\n", "socket:", sock);
	}
	if (mpk_get_int(result, "version", &version) == 0 && version != BG_PROTOCOL_VERSION)
		cli_error("warning: bangerd speaks protocol %lld, this banger speaks %d",
			  (long long)version, BG_PROTOCOL_VERSION);
	msgpack_unpacked_destroy(&reply);
	return st;
}

const struct args_cmd cmd_ping = {
	.name = "ping",
	.synopsis = "[--json]",
	.summary = "Check that bangerd answers; print its version, node and pid.",
	.details = NULL,
	.opts = ping_opts,
	.min_pos = 0,
	.max_pos = 0,
	.run = ping_run,
};
