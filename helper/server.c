/*
 * server.c: banger-helper's connections: peer check, framing, the dispatch
 * table, replies (with an optional descriptor) and the audit line.
 *
 * One thread per connection; each reads one frame at a time (so a client can
 * make it hold at most HP_MAX_FRAME bytes), checks it fully (proto.c), runs
 * the handler and answers before reading the next.  The length is checked
 * before the body is read; a body must arrive within BODY_TIMEOUT_MS of its
 * header.  Malformed frames end the connection; requests with bad params are
 * answered and the connection goes on.  A client that goes away while its
 * request runs does not stop it: every method is idempotent, and the daemon's
 * undo record already names what it asked for.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <netlink/socket.h>

#include "err.h"
#include "failpoint.h"
#include "helper.h"
#include "log.h"
#include "mpk.h"
#include "proto.h"
#include "rpc.h"
#include "util.h"

#define MAX_CONNS 256
#define BODY_TIMEOUT_MS 10000

typedef int (*hp_validator)(const struct hp_method *m, const struct hp_policy *p,
			    const msgpack_object *params, struct hp_args *a, char **errmsg);

/*
 * The dispatch table: {method, validator, handler}, one row per method of
 * proto.h.  The validator checks the exact field set, the types and every
 * value (proto_check_params, driven by the method's fields in proto.h); the
 * handler runs only after it passed.  A method without a row here cannot be
 * called (the envelope check refuses names not in proto.h).
 */
static const struct dispatch {
	enum hp_method_id method;
	hp_validator validate;
	hp_handler handle;
} dispatch[HP_M_COUNT_] = {
	{HP_M_PING, proto_check_params, op_ping},
	{HP_M_BRIDGE_ENSURE, proto_check_params, op_bridge_ensure},
	{HP_M_BRIDGE_REMOVE, proto_check_params, op_bridge_remove},
	{HP_M_TAP_CREATE, proto_check_params, op_tap_create},
	{HP_M_TAP_REMOVE, proto_check_params, op_tap_remove},
	{HP_M_NAT_ENSURE, proto_check_params, op_nat_ensure},
	{HP_M_NAT_CLEAR, proto_check_params, op_nat_clear},
	{HP_M_LOOP_ATTACH, proto_check_params, op_loop_attach},
	{HP_M_LOOP_DETACH, proto_check_params, op_loop_detach},
	{HP_M_DM_CREATE, proto_check_params, op_dm_create},
	{HP_M_DM_REMOVE, proto_check_params, op_dm_remove},
	{HP_M_PROC_SIGNAL, proto_check_params, op_proc_signal},
	{HP_M_FS_CHOWN, proto_check_params, op_fs_chown},
	{HP_M_INVENTORY, proto_check_params, op_inventory},
};

static atomic_int nconns;
static atomic_int inflight;

int hfail(struct hreply *r, int rc, const char *fmt, ...)
{
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	free(r->errmsg);
	r->errmsg = sb_detach(&sb);
	return rc;
}

/* Read n bytes.  timeout_ms < 0: wait as long as it takes.  BG_ERR_CLOSED on
 * EOF before the first byte, BG_ERR_PROTO on EOF after it, BG_ERR_TIMEDOUT. */
static int read_exact(int fd, void *buf, size_t n, int timeout_ms)
{
	char *p = buf;
	size_t got = 0;
	int64_t deadline = timeout_ms < 0 ? 0 : mono_us() + (int64_t)timeout_ms * 1000;
	while (got < n) {
		if (timeout_ms >= 0) {
			int64_t left = (deadline - mono_us()) / 1000;
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			if (left <= 0)
				return BG_ERR_TIMEDOUT;
			int pr = poll(&pfd, 1, (int)left);
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr == 0)
				return BG_ERR_TIMEDOUT;
		}
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == ECONNRESET ? (got ? BG_ERR_PROTO : BG_ERR_CLOSED) : bg_errno(errno);
		if (r == 0)
			return got == 0 ? BG_ERR_CLOSED : BG_ERR_PROTO;
		got += (size_t)r;
	}
	return 0;
}

/* One frame; pass_fd >= 0 rides on its first byte (SCM_RIGHTS). */
static int send_frame(int fd, const void *body, size_t len, int pass_fd)
{
	unsigned char hdr[4];
	rpc_frame_hdr(hdr, (uint32_t)len);
	struct iovec iov[2] = {{hdr, 4}, {(void *)body, len}};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	if (pass_fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	ssize_t w;
	do
		w = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return bg_errno(errno);
	size_t sent = (size_t)w, total = 4 + len;
	while (sent < total) {
		const char *p = sent < 4 ? (const char *)hdr + sent : (const char *)body + (sent - 4);
		size_t n = sent < 4 ? 4 - sent : total - sent;
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return bg_errno(errno);
		sent += (size_t)w;
	}
	return 0;
}

static int send_error(int fd, uint64_t id, int rc, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	mpk_pack_str(&pk, "id");
	msgpack_pack_uint64(&pk, id);
	mpk_kv_bool(&pk, "ok", false);
	mpk_pack_str(&pk, "error");
	msgpack_pack_map(&pk, 2);
	mpk_kv_str(&pk, "code", bg_errname(rc));
	mpk_kv_str(&pk, "message", msg ? msg : bg_strerror(rc));
	rc = send_frame(fd, sb.data, sb.size, -1);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static int send_result(int fd, uint64_t id, struct hreply *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	mpk_pack_str(&pk, "id");
	msgpack_pack_uint64(&pk, id);
	mpk_kv_bool(&pk, "ok", true);
	if (r->sb.size)
		mpk_kv_raw(&pk, "result", r->sb.data, r->sb.size);
	else {
		mpk_pack_str(&pk, "result");
		msgpack_pack_map(&pk, 0);
	}
	int rc;
	if (sb.size > HP_MAX_FRAME)
		rc = send_error(fd, id, BG_ERR_TOOBIG, "the reply is larger than the frame limit");
	else
		rc = send_frame(fd, sb.data, sb.size, r->fd);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* One decoded frame: answer it.  false: end the connection. */
static bool handle(struct hconn *c, const char *body, size_t len, int64_t t0)
{
	msgpack_unpacked up;
	struct hp_request req;
	char *err = NULL;
	bool keep = true;
	int rc = proto_decode(body, len, &up);
	if (rc) {
		send_error(c->fd, 0, BG_ERR_PROTO, "frame is not exactly one msgpack map");
		audit_request(NULL, NULL, BG_ERR_PROTO, "frame is not exactly one msgpack map",
			      mono_us() - t0, &c->peer, 0);
		return false;
	}
	rc = proto_parse_envelope(&up.data, &req, &err);
	if (rc) {
		send_error(c->fd, req.id, rc, err);
		audit_request(req.op[0] ? req.op : NULL, req.method ? req.method->name : NULL, rc,
			      err, mono_us() - t0, &c->peer, req.id);
		free(err);
		msgpack_unpacked_destroy(&up);
		return rc != BG_ERR_PROTO;
	}
	const struct dispatch *d = &dispatch[req.method->id];
	struct hp_args a;
	rc = d->validate(req.method, &H.pol, req.params, &a, &err);
	if (rc == 0 && failpoint_enabled()) {
		rc = failpoint_hitf("helper/%s/validated", req.method->name);
		if (rc)
			err = xasprintf("failpoint helper/%s/validated", req.method->name);
	}
	if (rc == 0) {
		struct hreply r = {.fd = -1};
		msgpack_sbuffer_init(&r.sb);
		msgpack_packer_init(&r.pk, &r.sb, msgpack_sbuffer_write);
		rc = d->handle(c, &a, &r);
		if (rc == 0 && send_result(c->fd, req.id, &r) != 0)
			keep = false; /* the client left; what was done stays done */
		if (rc)
			err = r.errmsg ? r.errmsg : xstrdup(bg_strerror(rc));
		else
			free(r.errmsg);
		if (r.fd >= 0)
			close(r.fd);
		msgpack_sbuffer_destroy(&r.sb);
	}
	if (rc)
		send_error(c->fd, req.id, rc, err);
	audit_request(req.op, req.method->name, rc, err, mono_us() - t0, &c->peer, req.id);
	free(err);
	msgpack_unpacked_destroy(&up);
	return keep;
}

static void *conn_main(void *arg)
{
	struct hconn *c = arg;
	for (;;) {
		unsigned char hdr[4];
		int rc = read_exact(c->fd, hdr, 4, -1);
		if (rc == BG_ERR_CLOSED)
			break;
		int64_t t0 = mono_us();
		if (rc) {
			audit_request(NULL, NULL, rc, "connection ended inside a frame header", 0,
				      &c->peer, 0);
			break;
		}
		int64_t n = proto_frame_len(hdr);
		if (n < 0) {
			uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
				       ((uint32_t)hdr[2] << 8) | hdr[3];
			char *msg = n == BG_ERR_TOOBIG
					    ? xasprintf("a frame of %u bytes is larger than the "
							"%u-byte limit", len, HP_MAX_FRAME)
					    : xstrdup("empty frame");
			send_error(c->fd, 0, (int)n, msg);
			audit_request(NULL, NULL, (int)n, msg, mono_us() - t0, &c->peer, 0);
			free(msg);
			break;
		}
		char *body = xmalloc((size_t)n);
		rc = read_exact(c->fd, body, (size_t)n, BODY_TIMEOUT_MS);
		if (rc) {
			const char *msg = rc == BG_ERR_TIMEDOUT ? "a frame's body did not arrive in time"
								: "connection ended inside a frame";
			if (rc == BG_ERR_TIMEDOUT)
				send_error(c->fd, 0, rc, msg);
			audit_request(NULL, NULL, rc == BG_ERR_CLOSED ? BG_ERR_PROTO : rc, msg,
				      mono_us() - t0, &c->peer, 0);
			free(body);
			break;
		}
		atomic_fetch_add(&inflight, 1);
		bool keep = handle(c, body, (size_t)n, t0);
		atomic_fetch_sub(&inflight, 1);
		free(body);
		if (!keep)
			break;
	}
	if (c->nl)
		nl_socket_free(c->nl);
	close(c->fd);
	free(c);
	atomic_fetch_sub(&nconns, 1);
	return NULL;
}

void server_run(int listen_fd, atomic_bool *stopping)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	while (!atomic_load(stopping)) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (atomic_load(stopping))
				break;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				log_error(NULL, 0, "accept: %s", strerror(errno));
				usleep(100000);
				continue;
			}
			log_error(NULL, 0, "accept: %s", strerror(errno));
			break;
		}
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
			log_error(NULL, 0, "SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		if (cred.uid != H.owner_uid && cred.uid != 0) {
			char *msg = xasprintf("uid %u may not use banger-helper (it serves banger's "
					      "owner, uid %u, and root)",
					      (unsigned)cred.uid, (unsigned)H.owner_uid);
			audit_refused(&cred, msg);
			send_error(fd, 0, BG_ERR_PERM, msg);
			free(msg);
			close(fd);
			continue;
		}
		if (atomic_fetch_add(&nconns, 1) >= MAX_CONNS) {
			atomic_fetch_sub(&nconns, 1);
			send_error(fd, 0, BG_ERR_BUSY, "too many connections to banger-helper");
			audit_refused(&cred, "too many connections");
			close(fd);
			continue;
		}
		struct hconn *c = xcalloc(1, sizeof(*c));
		c->fd = fd;
		c->peer = cred;
		pthread_t t;
		if (pthread_create(&t, &attr, conn_main, c) != 0) {
			log_error(NULL, 0, "cannot start a connection thread");
			atomic_fetch_sub(&nconns, 1);
			close(fd);
			free(c);
		}
	}
	pthread_attr_destroy(&attr);
}

void server_drain(int ms)
{
	int64_t deadline = mono_us() + (int64_t)ms * 1000;
	while (atomic_load(&inflight) > 0 && mono_us() < deadline)
		usleep(10000);
}
