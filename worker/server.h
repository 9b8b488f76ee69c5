/*
 * server.h: bangerd's RPC server on the Unix socket (protocol.h): accepts
 * connections, checks SO_PEERCRED, reads frames, dispatches methods, streams
 * job events to tails.  Loop thread only.
 */
#ifndef BANGER_SERVER_H
#define BANGER_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct queue;

struct server_opts {
	const char *socket_path;
	const char *node;
	const char *state_dir;
	const char *db_desc;
	unsigned owner_uid;
};

int server_start(uv_loop_t *loop, struct queue *q, const struct server_opts *o, char **errmsg);
/* Stop accepting; close every connection. */
void server_stop(void);
/* New durable events for job: wake the tails following it. */
void server_notify(int64_t job);
bool server_has_subscribers(void);

#endif
