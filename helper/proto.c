/*
 * proto.c: the checks every helper request passes before anything happens
 * (see proto.h): frame length, envelope, exact field sets, types, and each
 * value against banger's prefixes, directories and address range.
 *
 * Linked into banger-helper (which refuses what fails here) and into bangerd
 * (whose stubs pack requests with proto_pack_params) and the fuzz target.
 * Pure functions over their arguments: no I/O, no globals besides the
 * constant tables, safe from any thread.  Nothing here follows a path on the
 * file system: the helper does that with openat2 when it acts (safepath.c).
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "mpk.h"
#include "proto.h"
#include "rpc.h"
#include "util.h"

const struct hp_method hp_methods[HP_M_COUNT_] = {
#define X(id, name, fields, inverse) {HP_M_##id, name, fields, HP_M_##inverse},
	HP_METHODS(X)
#undef X
};

static const struct {
	const char *name;
	msgpack_object_type type;
} fields[HF_COUNT_] = {
#define X(id, name, type) {name, type},
	HP_FIELDS(X)
#undef X
};

const struct hp_method *proto_method(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_LEN(hp_methods); i++)
		if (strlen(hp_methods[i].name) == len && memcmp(hp_methods[i].name, name, len) == 0)
			return &hp_methods[i];
	return NULL;
}

const char *proto_field_name(unsigned bit)
{
	for (int i = 0; i < HF_COUNT_; i++)
		if (bit == 1u << i)
			return fields[i].name;
	return "?";
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return BG_ERR_INVAL;
}

/* A value quoted for a message: printable ASCII only, at most 40 bytes. */
static const char *quote(char *buf, size_t size, const char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == 40) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
			buf[o++] = (char)c;
		} else {
			snprintf(buf + o, size - o, "\\x%02x", c);
			o += 4;
		}
	}
	buf[o] = '\0';
	return buf;
}

int64_t proto_frame_len(const unsigned char hdr[4])
{
	int64_t n = rpc_frame_len(hdr);
	if (n > 0 && n > HP_MAX_FRAME)
		return BG_ERR_TOOBIG;
	return n;
}

int proto_decode(const void *body, size_t len, msgpack_unpacked *out)
{
	/* rpc_decode checks the bytes with mpk_prescan before msgpack-c
	 * allocates anything */
	return rpc_decode(body, len, out);
}

/* ---- single values ---- */

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_alnum_lower(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z');
}

int proto_check_tap(const char *s, size_t n, char *err, size_t errlen)
{
	char q[200];
	if (n < 3 || n > 15 || s[0] != 'b' || s[1] != 'g')
		return fail(err, errlen, "'%s' is not a banger tap name ('bg' and 1 to 13 hex digits)",
			    quote(q, sizeof(q), s, n));
	for (size_t i = 2; i < n; i++)
		if (!is_hex(s[i]))
			return fail(err, errlen,
				    "'%s' is not a banger tap name ('bg' and 1 to 13 hex digits)",
				    quote(q, sizeof(q), s, n));
	return 0;
}

bool proto_is_tap_name(const char *name)
{
	char err[8];
	return proto_check_tap(name, strlen(name), err, sizeof(err)) == 0;
}

bool proto_is_bridge_name(const char *s)
{
	size_t n = strlen(s);
	if (n > 15 || strncmp(s, "bgbr", 4) != 0)
		return false;
	for (size_t i = 4; i < n; i++)
		if (!is_alnum_lower(s[i]))
			return false;
	return true;
}

int proto_check_bridge(const struct hp_policy *p, const char *s, size_t n, char *err,
		       size_t errlen)
{
	char q[200];
	if (n != strlen(p->bridge) || memcmp(s, p->bridge, n) != 0)
		return fail(err, errlen, "'%s' is not banger's bridge (the install config names '%s')",
			    quote(q, sizeof(q), s, n), p->bridge);
	return 0;
}

int proto_check_addr(const struct hp_policy *p, const char *s, size_t n, uint32_t *out,
		     char *err, size_t errlen)
{
	char q[200], buf[16];
	struct in_addr a;
	/* inet_pton accepts exactly the dotted quad, no leading zeros tricks
	 * beyond what it parses; the length bound keeps buf safe. */
	if (n == 0 || n >= sizeof(buf))
		return fail(err, errlen, "'%s' is not an IPv4 address", quote(q, sizeof(q), s, n));
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		return fail(err, errlen, "'%s' is not an IPv4 address", quote(q, sizeof(q), s, n));
	uint32_t h = ntohl(a.s_addr);
	uint32_t mask = ~0u << (32 - p->prefix);
	uint32_t bcast = p->net | ~mask;
	if ((h & mask) != p->net)
		return fail(err, errlen, "%s is outside banger's range %u.%u.%u.%u/%d", buf,
			    p->net >> 24, (p->net >> 16) & 255, (p->net >> 8) & 255, p->net & 255,
			    p->prefix);
	if (h == p->net || h == bcast || h == proto_gateway(p))
		return fail(err, errlen,
			    "%s is the network, broadcast or gateway address of banger's range", buf);
	*out = h;
	return 0;
}

uint32_t proto_gateway(const struct hp_policy *p)
{
	return p->net + 1;
}

/* Lexically: absolute, normalized, no control bytes. */
static int path_shape(const char *s, size_t n, char *err, size_t errlen)
{
	char q[200];
	if (n == 0 || s[0] != '/')
		return fail(err, errlen, "'%s' is not an absolute path", quote(q, sizeof(q), s, n));
	if (n > HP_PATH_MAX)
		return fail(err, errlen, "path is %zu bytes, more than %u", n, HP_PATH_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return fail(err, errlen, "'%s' contains a control character",
				    quote(q, sizeof(q), s, n));
	if (n > 1 && s[n - 1] == '/')
		return fail(err, errlen, "'%s' ends with '/'", quote(q, sizeof(q), s, n));
	/* every component: not empty, not ".", not ".." */
	size_t i = 1;
	while (i <= n) {
		size_t j = i;
		while (j < n && s[j] != '/')
			j++;
		size_t len = j - i;
		if (len == 0 && n > 1)
			return fail(err, errlen, "'%s' contains '//'", quote(q, sizeof(q), s, n));
		if (len == 2 && s[i] == '.' && s[i + 1] == '.')
			return fail(err, errlen, "'%s' contains '..'", quote(q, sizeof(q), s, n));
		if (len == 1 && s[i] == '.')
			return fail(err, errlen, "'%s' contains a '.' component",
				    quote(q, sizeof(q), s, n));
		i = j + 1;
	}
	return 0;
}

/* s strictly under dir (both normalized): the offset of the rest, or 0. */
static size_t under(const char *dir, const char *s, size_t n)
{
	size_t dl = strlen(dir);
	if (dl == 1) /* "/" is never a banger directory: policy_check refuses it */
		return 0;
	if (n > dl + 1 && memcmp(s, dir, dl) == 0 && s[dl] == '/')
		return dl + 1;
	return 0;
}

int proto_check_path(const struct hp_policy *p, unsigned bases, const char *s, size_t n,
		     int *base, size_t *rel_off, char *err, size_t errlen)
{
	char q[200];
	int rc = path_shape(s, n, err, errlen);
	if (rc)
		return rc;
	size_t off;
	if ((bases & HP_BASE_STATE) && (off = under(p->state_dir, s, n))) {
		*base = HP_BASE_STATE;
		*rel_off = off;
		return 0;
	}
	if ((bases & HP_BASE_RUNTIME) && (off = under(p->runtime_dir, s, n))) {
		*base = HP_BASE_RUNTIME;
		*rel_off = off;
		return 0;
	}
	if (bases == HP_BASE_STATE)
		return fail(err, errlen, "'%s' is not under banger's state directory '%s'",
			    quote(q, sizeof(q), s, n), p->state_dir);
	return fail(err, errlen, "'%s' is not under banger's runtime directory '%s' or state "
		    "directory '%s'", quote(q, sizeof(q), s, n), p->runtime_dir, p->state_dir);
}

int proto_check_dm(const char *s, size_t n, char *err, size_t errlen)
{
	char q[200];
	bool ok = n >= 4 && n <= 3 + 60 && memcmp(s, "bg-", 3) == 0;
	for (size_t i = 3; ok && i < n; i++)
		ok = is_alnum_lower(s[i]) || s[i] == '-';
	if (!ok)
		return fail(err, errlen,
			    "'%s' is not a banger dm name ('bg-' and 1 to 60 of a-z, 0-9, '-')",
			    quote(q, sizeof(q), s, n));
	return 0;
}

bool proto_is_dm_name(const char *name)
{
	char err[8];
	return proto_check_dm(name, strlen(name), err, sizeof(err)) == 0;
}

int proto_check_loopdev(const char *s, size_t n, int *minor, char *err, size_t errlen)
{
	char q[200];
	static const char pfx[] = "/dev/loop";
	size_t pl = sizeof(pfx) - 1;
	bool ok = n > pl && n <= pl + 7 && memcmp(s, pfx, pl) == 0 && !(s[pl] == '0' && n > pl + 1);
	int v = 0;
	for (size_t i = pl; ok && i < n; i++) {
		ok = s[i] >= '0' && s[i] <= '9';
		v = v * 10 + (s[i] - '0');
	}
	if (!ok || v >= (1 << 20))
		return fail(err, errlen, "'%s' is not a loop device ('/dev/loopN')",
			    quote(q, sizeof(q), s, n));
	*minor = v;
	return 0;
}

static const struct {
	const char *name;
	int sig;
} signals[] = {{"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT}, {"HUP", SIGHUP}};

int proto_check_signal(const char *s, size_t n, int *sig, char *err, size_t errlen)
{
	char q[200];
	for (size_t i = 0; i < ARRAY_LEN(signals); i++)
		if (strlen(signals[i].name) == n && memcmp(signals[i].name, s, n) == 0) {
			*sig = signals[i].sig;
			return 0;
		}
	return fail(err, errlen, "signal '%s' is not allowed (TERM, KILL, INT or HUP)",
		    quote(q, sizeof(q), s, n));
}

/* ---- policy ---- */

static bool dir_ok(const char *d)
{
	size_t n = strlen(d);
	char err[8];
	return n > 1 && path_shape(d, n, err, sizeof(err)) == 0;
}

int proto_policy_check(const struct hp_policy *p, char **errmsg)
{
	if (!dir_ok(p->runtime_dir)) {
		*errmsg = xasprintf("runtime_dir '%s' must be an absolute, normalized path other "
				    "than '/'", p->runtime_dir);
		return BG_ERR_INVAL;
	}
	if (!dir_ok(p->state_dir)) {
		*errmsg = xasprintf("state_dir '%s' must be an absolute, normalized path other "
				    "than '/'", p->state_dir);
		return BG_ERR_INVAL;
	}
	size_t rl = strlen(p->runtime_dir), sl = strlen(p->state_dir);
	if ((rl <= sl && memcmp(p->runtime_dir, p->state_dir, rl) == 0 &&
	     (p->state_dir[rl] == '/' || p->state_dir[rl] == '\0')) ||
	    (sl <= rl && memcmp(p->state_dir, p->runtime_dir, sl) == 0 &&
	     (p->runtime_dir[sl] == '/' || p->runtime_dir[sl] == '\0'))) {
		*errmsg = xasprintf("runtime_dir '%s' and state_dir '%s' must not contain each other",
				    p->runtime_dir, p->state_dir);
		return BG_ERR_INVAL;
	}
	if (!p->bridge || !proto_is_bridge_name(p->bridge)) {
		*errmsg = xasprintf("bridge '%s' is not a banger bridge name",
				    p->bridge ? p->bridge : "");
		return BG_ERR_INVAL;
	}
	if (p->prefix < 16 || p->prefix > 29 || (p->net & ~(~0u << (32 - p->prefix)))) {
		*errmsg = xasprintf("net_range must be a /16 to /29 network");
		return BG_ERR_INVAL;
	}
	return 0;
}

int proto_policy_init(struct hp_policy *p, const struct bg_config *cfg, char **errmsg)
{
	p->runtime_dir = cfg->runtime_dir;
	p->state_dir = cfg->state_dir;
	p->bridge = cfg->bridge;
	p->net = cfg->net_addr;
	p->prefix = cfg->net_prefix;
	return proto_policy_check(p, errmsg);
}

/* ---- envelope and params ---- */

static bool op_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

/* Non-string keys or a key twice: a message, else NULL. */
static char *map_keys_problem(const msgpack_object *map, const char *what)
{
	char q[200];
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type != MSGPACK_OBJECT_STR)
			return xasprintf("%s keys must be strings", what);
		for (uint32_t j = 0; j < i; j++) {
			const msgpack_object *o = &map->via.map.ptr[j].key;
			if (o->via.str.size == k->via.str.size &&
			    memcmp(o->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0)
				return xasprintf("%s key '%s' appears twice", what,
						 quote(q, sizeof(q), k->via.str.ptr,
						       k->via.str.size));
		}
	}
	return NULL;
}

int proto_parse_envelope(const msgpack_object *root, struct hp_request *r, char **errmsg)
{
	char q[200];
	memset(r, 0, sizeof(*r));
	if (root->type != MSGPACK_OBJECT_MAP) {
		*errmsg = xstrdup("a request must be a msgpack map");
		return BG_ERR_PROTO;
	}
	/* the id first, so that even a bad request is answered with it */
	const msgpack_object *id = NULL, *method = NULL, *op = NULL, *params = NULL;
	const msgpack_object *unknown = NULL;
	if ((*errmsg = map_keys_problem(root, "request")))
		return BG_ERR_PROTO;
	for (uint32_t i = 0; i < root->via.map.size; i++) {
		const msgpack_object *k = &root->via.map.ptr[i].key;
		const msgpack_object *v = &root->via.map.ptr[i].val;
		if (mpk_str_eq(k, "id"))
			id = v;
		else if (mpk_str_eq(k, "method"))
			method = v;
		else if (mpk_str_eq(k, "op"))
			op = v;
		else if (mpk_str_eq(k, "params"))
			params = v;
		else if (!unknown)
			unknown = k;
	}
	if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		r->id = id->via.u64;
		r->has_id = true;
	}
	if (unknown) {
		*errmsg = xasprintf("unknown request field '%s' (a request has id, method, op and "
				    "params)",
				    quote(q, sizeof(q), unknown->via.str.ptr, unknown->via.str.size));
		return BG_ERR_PROTO;
	}
	if (!r->has_id) {
		*errmsg = xstrdup(id ? "'id' must be an unsigned integer" : "missing 'id'");
		return BG_ERR_PROTO;
	}
	if (!op || op->type != MSGPACK_OBJECT_STR) {
		*errmsg = xstrdup(op ? "'op' must be a string" : "missing 'op': every request "
				  "carries the op id that caused it");
		return BG_ERR_PROTO;
	}
	if (op->via.str.size == 0 || op->via.str.size > HP_OP_MAX) {
		*errmsg = xasprintf("'op' must be 1 to %d bytes", HP_OP_MAX);
		return BG_ERR_PROTO;
	}
	for (uint32_t i = 0; i < op->via.str.size; i++)
		if (!op_char_ok(op->via.str.ptr[i])) {
			*errmsg = xasprintf("'op' '%s' may hold only A-Z a-z 0-9 . _ : -",
					    quote(q, sizeof(q), op->via.str.ptr, op->via.str.size));
			return BG_ERR_PROTO;
		}
	memcpy(r->op, op->via.str.ptr, op->via.str.size);
	r->op[op->via.str.size] = '\0';
	if (!method || method->type != MSGPACK_OBJECT_STR) {
		*errmsg = xstrdup(method ? "'method' must be a string" : "missing 'method'");
		return BG_ERR_PROTO;
	}
	if (!params || params->type != MSGPACK_OBJECT_MAP) {
		*errmsg = xstrdup(params ? "'params' must be a map" : "missing 'params'");
		return BG_ERR_PROTO;
	}
	r->params = params;
	r->method = proto_method(method->via.str.ptr, method->via.str.size);
	if (!r->method) {
		*errmsg = xasprintf("unknown method '%s'",
				    quote(q, sizeof(q), method->via.str.ptr, method->via.str.size));
		return BG_ERR_INVAL;
	}
	return 0;
}

static const char *type_name(msgpack_object_type t)
{
	switch (t) {
	case MSGPACK_OBJECT_STR: return "a string";
	case MSGPACK_OBJECT_BOOLEAN: return "true or false";
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return "an unsigned integer";
	default: return "?";
	}
}

/* Check one field's value into a. */
static int check_field(int f, const struct hp_method *m, const struct hp_policy *p,
		       const msgpack_object *v, struct hp_args *a, char *err, size_t errlen)
{
	const char *s = v->via.str.ptr;
	size_t n = v->type == MSGPACK_OBJECT_STR ? v->via.str.size : 0;
	size_t off;
	switch (1u << f) {
	case HF_TAP:
		if (proto_check_tap(s, n, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->tap, s, n);
		a->tap[n] = '\0';
		return 0;
	case HF_BRIDGE:
		if (proto_check_bridge(p, s, n, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->bridge, s, n);
		a->bridge[n] = '\0';
		return 0;
	case HF_ADDR:
		if (proto_check_addr(p, s, n, &a->addr_n, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->addr, s, n);
		a->addr[n] = '\0';
		return 0;
	case HF_PATH: {
		unsigned bases = m->id == HP_M_FS_CHOWN ? HP_BASE_STATE | HP_BASE_RUNTIME
							: HP_BASE_STATE;
		if (proto_check_path(p, bases, s, n, &a->base, &off, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->path, s, n);
		a->path[n] = '\0';
		a->rel = a->path + off;
		return 0;
	}
	case HF_RO:
		a->ro = v->via.boolean;
		return 0;
	case HF_DM:
		if (proto_check_dm(s, n, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->dm, s, n);
		a->dm[n] = '\0';
		return 0;
	case HF_ORIGIN:
	case HF_COW: {
		int minor;
		if (proto_check_loopdev(s, n, &minor, err, errlen))
			return BG_ERR_INVAL;
		char *dst = (1u << f) == HF_ORIGIN ? a->origin : a->cow;
		memcpy(dst, s, n);
		dst[n] = '\0';
		*((1u << f) == HF_ORIGIN ? &a->origin_minor : &a->cow_minor) = minor;
		return 0;
	}
	case HF_PID:
		if (v->via.u64 < 1 || v->via.u64 > HP_PID_MAX)
			return fail(err, errlen, "pid %llu is not between 1 and %d",
				    (unsigned long long)v->via.u64, HP_PID_MAX);
		a->pid = (int64_t)v->via.u64;
		return 0;
	case HF_SIGNAL:
		if (proto_check_signal(s, n, &a->sig, err, errlen))
			return BG_ERR_INVAL;
		memcpy(a->signame, s, n);
		a->signame[n] = '\0';
		return 0;
	}
	return fail(err, errlen, "unknown field");
}

int proto_check_params(const struct hp_method *m, const struct hp_policy *p,
		       const msgpack_object *params, struct hp_args *a, char **errmsg)
{
	char q[200], err[600];
	memset(a, 0, sizeof(*a));
	if (!params || params->type != MSGPACK_OBJECT_MAP) {
		*errmsg = xstrdup("'params' must be a map");
		return BG_ERR_INVAL;
	}
	if ((*errmsg = map_keys_problem(params, "params")))
		return BG_ERR_INVAL;
	for (uint32_t i = 0; i < params->via.map.size; i++) {
		const msgpack_object *k = &params->via.map.ptr[i].key;
		const msgpack_object *v = &params->via.map.ptr[i].val;
		int f = -1;
		for (int j = 0; j < HF_COUNT_ && f < 0; j++)
			if ((m->fields & (1u << j)) && mpk_str_eq(k, fields[j].name))
				f = j;
		if (f < 0) {
			*errmsg = xasprintf("%s takes no field '%s'", m->name,
					    quote(q, sizeof(q), k->via.str.ptr, k->via.str.size));
			return BG_ERR_INVAL;
		}
		if (v->type != fields[f].type) {
			*errmsg = xasprintf("'%s' must be %s", fields[f].name,
					    type_name(fields[f].type));
			return BG_ERR_INVAL;
		}
		if (check_field(f, m, p, v, a, err, sizeof(err))) {
			*errmsg = xasprintf("'%s': %s", fields[f].name, err);
			return BG_ERR_INVAL;
		}
		a->present |= 1u << f;
	}
	unsigned missing = m->fields & ~a->present;
	if (missing) {
		*errmsg = xasprintf("%s needs field '%s'", m->name,
				    proto_field_name(missing & -missing));
		return BG_ERR_INVAL;
	}
	if ((m->fields & HF_ORIGIN) && a->origin_minor == a->cow_minor) {
		*errmsg = xasprintf("'origin' and 'cow' must be different loop devices");
		return BG_ERR_INVAL;
	}
	return 0;
}

void proto_pack_params(msgpack_packer *pk, const struct hp_method *m, const struct hp_args *a)
{
	msgpack_pack_map(pk, (size_t)__builtin_popcount(m->fields));
	for (int f = 0; f < HF_COUNT_; f++) {
		if (!(m->fields & (1u << f)))
			continue;
		switch (1u << f) {
		case HF_TAP: mpk_kv_str(pk, "tap", a->tap); break;
		case HF_BRIDGE: mpk_kv_str(pk, "bridge", a->bridge); break;
		case HF_ADDR: mpk_kv_str(pk, "addr", a->addr); break;
		case HF_PATH: mpk_kv_str(pk, "path", a->path); break;
		case HF_RO: mpk_kv_bool(pk, "ro", a->ro); break;
		case HF_DM: mpk_kv_str(pk, "dm", a->dm); break;
		case HF_ORIGIN: mpk_kv_str(pk, "origin", a->origin); break;
		case HF_COW: mpk_kv_str(pk, "cow", a->cow); break;
		case HF_PID:
			mpk_pack_str(pk, "pid");
			msgpack_pack_uint64(pk, (uint64_t)a->pid);
			break;
		case HF_SIGNAL: mpk_kv_str(pk, "signal", a->signame); break;
		}
	}
}
