/*
 * rpc.h: framing for banger's Unix-socket protocol (see protocol.h) and a
 * small blocking client used by the CLI, the tests and the benchmarks.
 *
 * The daemon side (non-blocking, libuv) lives in worker/server.c and uses
 * rpc_frame_len() to parse headers; everything else here blocks.
 */
#ifndef BANGER_RPC_H
#define BANGER_RPC_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Parse a 4-byte frame header; returns the body length or BG_ERR_TOOBIG /
 * BG_ERR_PROTO (zero length). */
int64_t rpc_frame_len(const unsigned char hdr[4]);
/* Put the header for a body of len bytes. */
void rpc_frame_hdr(unsigned char hdr[4], uint32_t len);

/* Blocking whole-frame I/O on fd.  rpc_read_frame allocates *body (caller
 * frees); BG_ERR_CLOSED on EOF before a header. */
int rpc_write_frame(int fd, const void *body, size_t len);
int rpc_read_frame(int fd, char **body, size_t *len);

/* Decode one frame body that must hold exactly one msgpack map.  On success
 * *out owns a copy of everything (msgpack_unpacked_destroy frees it). */
int rpc_decode(const void *body, size_t len, msgpack_unpacked *out);

struct rpc_client {
	int fd;
	uint32_t next_id;
};

/* Connect to the daemon's socket.  BG_ERR_CONN with errno-derived detail in
 * *errmsg (caller frees) when nobody listens. */
int rpc_connect(const char *sock_path, struct rpc_client *c, char **errmsg);
void rpc_close(struct rpc_client *c);

/* Called for each Event frame of a streaming call; return nonzero to stop
 * (the call then returns that value and the connection must be closed). */
typedef int (*rpc_event_fn)(const msgpack_object *event, void *arg);

/*
 * One request/reply.  params is a pre-encoded msgpack map (NULL for none).
 * On success returns 0 and *reply holds the whole reply frame: the result is
 * mpk_get(&reply->data, "result"); the caller must msgpack_unpacked_destroy it.
 * On an error reply returns the code named in it and sets *errmsg (caller
 * frees).  Transport failures return BG_ERR_CLOSED / BG_ERR_PROTO / ... with
 * *errmsg set too.
 */
int rpc_call(struct rpc_client *c, const char *method, const char *op, const void *params,
	     size_t plen, rpc_event_fn on_event, void *arg, msgpack_unpacked *reply,
	     char **errmsg);

#endif
