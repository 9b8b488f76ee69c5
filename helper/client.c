/*
 * client.c: the blocking stubs bangerd's steps use to ask banger-helper for
 * privileged work, and the undo records that call the inverse methods (see
 * client.h for the rules, proto.h for the protocol).
 *
 * Frames are read with recvmsg so that a descriptor passed with a reply
 * (loop.attach, dm.snapshot.create) is received close-on-exec; replies are
 * bounded by HP_MAX_FRAME like requests.  Nothing here keeps global state.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "mpk.h"
#include "proto.h"
#include "rpc.h"
#include "util.h"

#define CLIENT_TIMEOUT_S 120 /* the helper bounds its own work well below this */

char *helper_socket_path(const char *runtime_dir)
{
	return xasprintf("%s/%s", runtime_dir, HP_SOCKET_NAME);
}

static int failf(char **errmsg, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char **errmsg, int rc, const char *fmt, ...)
{
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	*errmsg = sb_detach(&sb);
	return rc;
}

int helper_connect(const char *sock_path, struct helper_client *c, char **errmsg)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	c->fd = -1;
	c->next_id = 1;
	*errmsg = NULL;
	if (strlen(sock_path) >= sizeof(sa.sun_path))
		return failf(errmsg, BG_ERR_INVAL, "socket path '%s' is too long", sock_path);
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return failf(errmsg, bg_errno(errno), "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return failf(errmsg, e == EACCES ? BG_ERR_PERM : BG_ERR_CONN,
			     "cannot connect to banger-helper at '%s': %s", sock_path, strerror(e));
	}
	struct timeval tv = {.tv_sec = CLIENT_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	c->fd = fd;
	return 0;
}

void helper_close(struct helper_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Read exactly n bytes; the first read collects a passed descriptor. */
static int recv_exact(int fd, void *buf, size_t n, int *passed)
{
	size_t got = 0;
	while (got < n) {
		union {
			char b[CMSG_SPACE(sizeof(int) * 4)];
			struct cmsghdr align;
		} u;
		struct iovec iov = {(char *)buf + got, n - got};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		if (passed) {
			mh.msg_control = u.b;
			mh.msg_controllen = sizeof(u.b);
		}
		ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? BG_ERR_TIMEDOUT : bg_errno(errno);
		if (passed) {
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
				if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int f;
					memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
					if (*passed < 0)
						*passed = f;
					else
						close(f); /* one descriptor per reply at most */
				}
			}
		}
		if (r == 0)
			return got == 0 ? BG_ERR_CLOSED : BG_ERR_PROTO;
		got += (size_t)r;
	}
	return 0;
}

static int read_reply(int fd, msgpack_unpacked *reply, int *passed)
{
	unsigned char hdr[4];
	int rc = recv_exact(fd, hdr, 4, passed);
	if (rc)
		return rc;
	int64_t n = proto_frame_len(hdr);
	if (n < 0)
		return (int)n;
	char *body = xmalloc((size_t)n);
	rc = recv_exact(fd, body, (size_t)n, passed);
	if (rc == 0)
		rc = proto_decode(body, (size_t)n, reply);
	free(body);
	return rc;
}

int helper_call(struct helper_client *c, const char *op, const struct hp_method *m,
		const struct hp_args *a, msgpack_unpacked *reply, const msgpack_object **result,
		int *fd, char **errmsg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int passed = -1, rc;
	uint32_t id = c->next_id++;
	*errmsg = NULL;
	if (fd)
		*fd = -1;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	mpk_kv_int(&pk, "id", id);
	mpk_kv_str(&pk, "method", m->name);
	mpk_kv_str(&pk, "op", op);
	mpk_pack_str(&pk, "params");
	proto_pack_params(&pk, m, a);
	if (sb.size > HP_MAX_FRAME) {
		msgpack_sbuffer_destroy(&sb);
		return failf(errmsg, BG_ERR_TOOBIG, "%s: request larger than %u bytes", m->name,
			     HP_MAX_FRAME);
	}
	rc = rpc_write_frame(c->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	/* A helper that refused us wrote an error frame first: read it even
	 * when our write failed. */
	int rrc = read_reply(c->fd, reply, &passed);
	if (rrc) {
		if (passed >= 0)
			close(passed);
		return failf(errmsg, rc ? rc : rrc, "%s: %s banger-helper: %s", m->name,
			     rc ? "sending to" : "reading from",
			     rrc == BG_ERR_CLOSED ? "connection closed" : bg_strerror(rc ? rc : rrc));
	}
	const msgpack_object *root = &reply->data;
	bool ok = false;
	int64_t rid = -1;
	mpk_get_bool(root, "ok", &ok);
	mpk_get_int(root, "id", &rid);
	if (!ok) {
		const msgpack_object *e = mpk_get(root, "error");
		char *code = mpk_dup_str(e, "code");
		char *msg = mpk_dup_str(e, "message");
		rc = code ? bg_errcode(code) : BG_ERR_PROTO;
		*errmsg = xasprintf("%s: %s", m->name, msg ? msg : "malformed error reply");
		free(code);
		free(msg);
		msgpack_unpacked_destroy(reply);
		if (passed >= 0)
			close(passed);
		return rc;
	}
	const msgpack_object *res = mpk_get(root, "result");
	if (rid != (int64_t)id || !res || res->type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(reply);
		if (passed >= 0)
			close(passed);
		return failf(errmsg, BG_ERR_PROTO, "%s: malformed reply from banger-helper", m->name);
	}
	*result = res;
	if (fd)
		*fd = passed;
	else if (passed >= 0)
		close(passed);
	return 0;
}

/* ---- stubs ---- */

/* Copy s into a fixed field; too long is refused here, as the helper would. */
static int put(char *dst, size_t size, const char *s, const char *field, char **errmsg)
{
	size_t n = strlen(s);
	if (n >= size)
		return failf(errmsg, BG_ERR_INVAL, "'%s': value too long (%zu bytes)", field, n);
	memcpy(dst, s, n + 1);
	return 0;
}

/* Call and drop the reply. */
static int simple(struct helper_client *c, const char *op, enum hp_method_id id,
		  const struct hp_args *a, char **errmsg)
{
	msgpack_unpacked reply;
	const msgpack_object *res;
	int rc = helper_call(c, op, &hp_methods[id], a, &reply, &res, NULL, errmsg);
	if (rc == 0)
		msgpack_unpacked_destroy(&reply);
	return rc;
}

int helper_ping(struct helper_client *c, const char *op, char **errmsg)
{
	struct hp_args a = {0};
	return simple(c, op, HP_M_PING, &a, errmsg);
}

int helper_bridge_ensure(struct helper_client *c, const char *op, const char *bridge,
			 char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.bridge, sizeof(a.bridge), bridge, "bridge", errmsg);
	return rc ? rc : simple(c, op, HP_M_BRIDGE_ENSURE, &a, errmsg);
}

int helper_bridge_remove(struct helper_client *c, const char *op, const char *bridge,
			 char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.bridge, sizeof(a.bridge), bridge, "bridge", errmsg);
	return rc ? rc : simple(c, op, HP_M_BRIDGE_REMOVE, &a, errmsg);
}

int helper_tap_create(struct helper_client *c, const char *op, const char *tap,
		      const char *bridge, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.tap, sizeof(a.tap), tap, "tap", errmsg);
	if (!rc)
		rc = put(a.bridge, sizeof(a.bridge), bridge, "bridge", errmsg);
	return rc ? rc : simple(c, op, HP_M_TAP_CREATE, &a, errmsg);
}

int helper_tap_remove(struct helper_client *c, const char *op, const char *tap, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.tap, sizeof(a.tap), tap, "tap", errmsg);
	return rc ? rc : simple(c, op, HP_M_TAP_REMOVE, &a, errmsg);
}

int helper_nat_ensure(struct helper_client *c, const char *op, const char *addr, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.addr, sizeof(a.addr), addr, "addr", errmsg);
	return rc ? rc : simple(c, op, HP_M_NAT_ENSURE, &a, errmsg);
}

int helper_nat_clear(struct helper_client *c, const char *op, const char *addr, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.addr, sizeof(a.addr), addr, "addr", errmsg);
	return rc ? rc : simple(c, op, HP_M_NAT_CLEAR, &a, errmsg);
}

/* A string result into a fixed buffer. */
static int result_str(const msgpack_object *res, const char *key, char *out, size_t size,
		      const char *method, char **errmsg)
{
	const char *s;
	size_t n;
	if (mpk_get_str(res, key, &s, &n) != 0 || n >= size)
		return failf(errmsg, BG_ERR_PROTO, "%s: reply without a usable '%s'", method, key);
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

/* Call a method that answers a device and passes its descriptor. */
static int device_call(struct helper_client *c, const char *op, enum hp_method_id id,
		       const struct hp_args *a, char *device, size_t size, int *fd, char **errmsg)
{
	msgpack_unpacked reply;
	const msgpack_object *res;
	int got = -1;
	int rc = helper_call(c, op, &hp_methods[id], a, &reply, &res, &got, errmsg);
	if (rc)
		return rc;
	rc = result_str(res, "device", device, size, hp_methods[id].name, errmsg);
	msgpack_unpacked_destroy(&reply);
	if (rc == 0 && got < 0)
		rc = failf(errmsg, BG_ERR_PROTO, "%s: no descriptor came with the reply",
			   hp_methods[id].name);
	if (rc) {
		if (got >= 0)
			close(got);
		return rc;
	}
	*fd = got;
	return 0;
}

int helper_loop_attach(struct helper_client *c, const char *op, const char *path, bool ro,
		       char device[HP_DEV_MAX], int *fd, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.path, sizeof(a.path), path, "path", errmsg);
	a.ro = ro;
	return rc ? rc : device_call(c, op, HP_M_LOOP_ATTACH, &a, device, HP_DEV_MAX, fd, errmsg);
}

int helper_loop_detach(struct helper_client *c, const char *op, const char *path, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.path, sizeof(a.path), path, "path", errmsg);
	return rc ? rc : simple(c, op, HP_M_LOOP_DETACH, &a, errmsg);
}

int helper_dm_snapshot_create(struct helper_client *c, const char *op, const char *dm,
			      const char *origin, const char *cow, char device[96], int *fd,
			      char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.dm, sizeof(a.dm), dm, "dm", errmsg);
	if (!rc)
		rc = put(a.origin, sizeof(a.origin), origin, "origin", errmsg);
	if (!rc)
		rc = put(a.cow, sizeof(a.cow), cow, "cow", errmsg);
	return rc ? rc : device_call(c, op, HP_M_DM_CREATE, &a, device, 96, fd, errmsg);
}

int helper_dm_snapshot_remove(struct helper_client *c, const char *op, const char *dm,
			      char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.dm, sizeof(a.dm), dm, "dm", errmsg);
	return rc ? rc : simple(c, op, HP_M_DM_REMOVE, &a, errmsg);
}

int helper_proc_signal(struct helper_client *c, const char *op, int64_t pid, const char *signal,
		       bool *signalled, char **errmsg)
{
	struct hp_args a = {0};
	msgpack_unpacked reply;
	const msgpack_object *res;
	int rc = put(a.signame, sizeof(a.signame), signal, "signal", errmsg);
	if (rc)
		return rc;
	a.pid = pid;
	rc = helper_call(c, op, &hp_methods[HP_M_PROC_SIGNAL], &a, &reply, &res, NULL, errmsg);
	if (rc)
		return rc;
	bool s = false;
	mpk_get_bool(res, "signalled", &s);
	if (signalled)
		*signalled = s;
	msgpack_unpacked_destroy(&reply);
	return 0;
}

int helper_fs_chown(struct helper_client *c, const char *op, const char *path, char **errmsg)
{
	struct hp_args a = {0};
	int rc = put(a.path, sizeof(a.path), path, "path", errmsg);
	return rc ? rc : simple(c, op, HP_M_FS_CHOWN, &a, errmsg);
}

int helper_inventory(struct helper_client *c, const char *op, msgpack_unpacked *reply,
		     const msgpack_object **result, char **errmsg)
{
	struct hp_args a = {0};
	return helper_call(c, op, &hp_methods[HP_M_INVENTORY], &a, reply, result, NULL, errmsg);
}

/* ---- undo records ---- */

const struct hp_method *helper_inverse(const struct hp_method *m)
{
	return m && m->inverse != HP_M_NONE ? &hp_methods[m->inverse] : NULL;
}

void helper_plan(msgpack_packer *pk, enum hp_method_id m, const struct hp_args *a)
{
	msgpack_pack_map(pk, 2);
	mpk_kv_str(pk, "helper", hp_methods[m].name);
	mpk_pack_str(pk, "params");
	proto_pack_params(pk, &hp_methods[m], a);
}

/* Fill the fields inv needs from a record's params (strings and bools only:
 * every inverse takes strings). */
static int args_from(const struct hp_method *inv, const msgpack_object *params,
		     struct hp_args *a, char **errmsg)
{
	memset(a, 0, sizeof(*a));
	for (int f = 0; f < HF_COUNT_; f++) {
		if (!(inv->fields & (1u << f)))
			continue;
		const char *name = proto_field_name(1u << f), *s;
		size_t n;
		char *dst = NULL;
		size_t size = 0;
		switch (1u << f) {
		case HF_TAP: dst = a->tap, size = sizeof(a->tap); break;
		case HF_BRIDGE: dst = a->bridge, size = sizeof(a->bridge); break;
		case HF_ADDR: dst = a->addr, size = sizeof(a->addr); break;
		case HF_PATH: dst = a->path, size = sizeof(a->path); break;
		case HF_DM: dst = a->dm, size = sizeof(a->dm); break;
		default:
			return failf(errmsg, BG_ERR_INVAL, "undo of %s: field '%s' unsupported",
				     inv->name, name);
		}
		if (mpk_get_str(params, name, &s, &n) != 0 || n >= size)
			return failf(errmsg, BG_ERR_INVAL, "undo record lacks a usable '%s'", name);
		memcpy(dst, s, n);
		dst[n] = '\0';
	}
	return 0;
}

int helper_undo(struct helper_client *c, const char *op, const msgpack_object *record,
		char **errmsg)
{
	const char *name;
	size_t n;
	*errmsg = NULL;
	if (mpk_get_str(record, "helper", &name, &n) != 0)
		return failf(errmsg, BG_ERR_INVAL, "undo record names no helper method");
	const struct hp_method *m = proto_method(name, n);
	const struct hp_method *inv = helper_inverse(m);
	if (!inv)
		return failf(errmsg, BG_ERR_INVAL, "helper method '%.*s' has no inverse", (int)n,
			     name);
	struct hp_args a;
	int rc = args_from(inv, mpk_get(record, "params"), &a, errmsg);
	return rc ? rc : simple(c, op, inv->id, &a, errmsg);
}
