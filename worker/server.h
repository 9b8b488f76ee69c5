/*
 * server.h: bangerd's RPC server on the Unix socket (protocol.h): accepts
 * connections, checks SO_PEERCRED, reads frames, dispatches methods, streams
 * job events to tails.  Loop thread only.
 */
#ifndef BANGER_SERVER_H
#define BANGER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
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

/*
 * For methods served outside this file (vmrpc.c: vm.*, kernel.*, doctor),
 * listed in the dispatch table here.  A handler answers exactly once, at
 * once or later on the loop thread: server_reply with the packed result, or
 * server_reply_error.  While an answer is pending (work in the pool) it
 * holds the connection (server_hold) and lets go (server_unhold) before
 * answering: false means the client went away, and then nothing is sent.
 */
struct conn;
void server_reply(struct conn *c, uint32_t id, const void *result, size_t len);
void server_reply_error(struct conn *c, uint32_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void server_hold(struct conn *c);
bool server_unhold(struct conn *c);
/* The op id of the connection's current request. */
const char *server_op(const struct conn *c);

#endif
