/*
 * rpc.c: frame encoding and the blocking client (see rpc.h, protocol.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "err.h"
#include "mpk.h"
#include "protocol.h"
#include "rpc.h"
#include "util.h"

int64_t rpc_frame_len(const unsigned char hdr[4])
{
	uint32_t n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
		     ((uint32_t)hdr[2] << 8) | (uint32_t)hdr[3];
	if (n == 0)
		return BG_ERR_PROTO;
	if (n > BG_RPC_MAX_FRAME)
		return BG_ERR_TOOBIG;
	return n;
}

void rpc_frame_hdr(unsigned char hdr[4], uint32_t len)
{
	hdr[0] = (unsigned char)(len >> 24);
	hdr[1] = (unsigned char)(len >> 16);
	hdr[2] = (unsigned char)(len >> 8);
	hdr[3] = (unsigned char)len;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return bg_errno(errno);
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *p, size_t n, int eof_rc)
{
	char *c = p;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, c + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return bg_errno(errno);
		if (r == 0)
			return got == 0 ? eof_rc : BG_ERR_PROTO;
		got += (size_t)r;
	}
	return 0;
}

int rpc_write_frame(int fd, const void *body, size_t len)
{
	if (len == 0 || len > BG_RPC_MAX_FRAME)
		return BG_ERR_TOOBIG;
	unsigned char hdr[4];
	rpc_frame_hdr(hdr, (uint32_t)len);
	int rc = write_all(fd, hdr, 4);
	if (rc == 0)
		rc = write_all(fd, body, len);
	return rc;
}

int rpc_read_frame(int fd, char **body, size_t *len)
{
	unsigned char hdr[4];
	int rc = read_all(fd, hdr, 4, BG_ERR_CLOSED);
	if (rc)
		return rc;
	int64_t n = rpc_frame_len(hdr);
	if (n < 0)
		return (int)n;
	char *b = xmalloc((size_t)n);
	rc = read_all(fd, b, (size_t)n, BG_ERR_PROTO);
	if (rc) {
		free(b);
		return rc;
	}
	*body = b;
	*len = (size_t)n;
	return 0;
}

int rpc_connect(const char *sock_path, struct rpc_client *c, char **errmsg)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	c->fd = -1;
	c->next_id = 1;
	if (strlen(sock_path) >= sizeof(sa.sun_path)) {
		*errmsg = xasprintf("socket path '%s' is too long", sock_path);
		return BG_ERR_INVAL;
	}
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*errmsg = xasprintf("socket: %s", strerror(errno));
		return bg_errno(errno);
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		*errmsg = xasprintf("cannot connect to bangerd at '%s': %s", sock_path, strerror(e));
		return e == EACCES ? BG_ERR_PERM : BG_ERR_CONN;
	}
	c->fd = fd;
	return 0;
}

void rpc_close(struct rpc_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int rpc_decode(const void *body, size_t len, msgpack_unpacked *out)
{
	/* msgpack's unpacker points str/bin objects into its input: copy the
	 * body into the zone so the tree outlives the caller's buffer. */
	msgpack_unpacked_init(out);
	if (mpk_prescan(body, len) != 0)
		return BG_ERR_PROTO;
	out->zone = msgpack_zone_new(len + 256);
	if (!out->zone)
		return BG_ERR_NOMEM;
	void *copy = msgpack_zone_malloc(out->zone, len);
	if (!copy) {
		msgpack_unpacked_destroy(out);
		return BG_ERR_NOMEM;
	}
	memcpy(copy, body, len);
	size_t off = 0;
	msgpack_unpack_return r = msgpack_unpack(copy, len, &off, out->zone, &out->data);
	if (r != MSGPACK_UNPACK_SUCCESS || off != len || out->data.type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(out);
		return BG_ERR_PROTO;
	}
	return 0;
}

static int error_from_reply(const msgpack_object *root, char **errmsg)
{
	const msgpack_object *e = mpk_get(root, "error");
	char *code = mpk_dup_str(e, "code");
	char *msg = mpk_dup_str(e, "message");
	int rc = code ? bg_errcode(code) : BG_ERR_PROTO;
	*errmsg = msg ? msg : xstrdup("malformed error reply from bangerd");
	free(code);
	return rc;
}

int rpc_call(struct rpc_client *c, const char *method, const char *op, const void *params,
	     size_t plen, rpc_event_fn on_event, void *arg, msgpack_unpacked *reply,
	     char **errmsg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t id = c->next_id++;
	int rc;

	*errmsg = NULL;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3 + (op != NULL));
	mpk_kv_int(&pk, "id", id);
	mpk_kv_str(&pk, "method", method);
	if (op)
		mpk_kv_str(&pk, "op", op);
	mpk_pack_str(&pk, "params");
	if (params && plen)
		msgpack_sbuffer_write(&sb, params, plen);
	else
		msgpack_pack_map(&pk, 0);
	if (sb.size > BG_RPC_MAX_FRAME) {
		msgpack_sbuffer_destroy(&sb);
		*errmsg = xasprintf("request is %zu bytes, larger than the %u-byte frame limit",
				    sb.size, BG_RPC_MAX_FRAME);
		return BG_ERR_TOOBIG;
	}
	rc = rpc_write_frame(c->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	if (rc) {
		/* The daemon may have refused us with an error frame before it
		 * closed the connection (a uid it does not serve): show that. */
		char *body;
		size_t len;
		if (rpc_read_frame(c->fd, &body, &len) == 0) {
			int drc = rpc_decode(body, len, reply);
			free(body);
			if (drc == 0 && mpk_get(&reply->data, "error")) {
				rc = error_from_reply(&reply->data, errmsg);
				msgpack_unpacked_destroy(reply);
				return rc;
			}
			if (drc == 0)
				msgpack_unpacked_destroy(reply);
		}
		*errmsg = xasprintf("sending to bangerd: %s", bg_strerror(rc));
		return rc;
	}
	for (;;) {
		char *body;
		size_t len;
		rc = rpc_read_frame(c->fd, &body, &len);
		if (rc) {
			*errmsg = xasprintf("reading from bangerd: %s",
					    rc == BG_ERR_CLOSED ? "connection closed by bangerd"
								: bg_strerror(rc));
			return rc;
		}
		rc = rpc_decode(body, len, reply);
		free(body);
		if (rc) {
			*errmsg = xstrdup("malformed frame from bangerd");
			return BG_ERR_PROTO;
		}
		const msgpack_object *ev = mpk_get(&reply->data, "event");
		if (ev) {
			int stop = on_event ? on_event(ev, arg) : 0;
			msgpack_unpacked_destroy(reply);
			if (stop)
				return stop;
			continue;
		}
		bool ok = false;
		mpk_get_bool(&reply->data, "ok", &ok);
		if (ok)
			return 0;
		rc = error_from_reply(&reply->data, errmsg);
		msgpack_unpacked_destroy(reply);
		return rc;
	}
}
