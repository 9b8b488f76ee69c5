/*
 * agent_proto.c: the frame codec of the agent protocol (agent_proto.h),
 * linked by both the static guest agent and bangerd.
 *
 * Depends on libc only (plus the BG_ERR_* codes of common/err.h, which are
 * constants), so that the agent stays a small static binary.  Every decoder
 * checks lengths before it reads; none of them trusts the peer.
 */
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"
#include "err.h"

const unsigned char AP_SYNC[AP_SYNC_LEN] = {0x00, 'B', 'A', 'N', 'G', 'E', 'R', '-',
					    'S',  'Y', 'N', 'C', 0x00, 0xff, 0xa5, 0x01};

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void ap_hdr_pack(unsigned char out[AP_HDR_LEN], uint8_t type, uint32_t id, uint32_t len)
{
	out[0] = 'B';
	out[1] = 'A';
	out[2] = AP_WIRE_VERSION;
	out[3] = type;
	put32(out + 4, id);
	put32(out + 8, len);
}

uint32_t ap_type_max(uint8_t type)
{
	switch (type) {
	case AP_T_HELLO:
	case AP_T_SIGNAL:
	case AP_T_POWEROFF:
	case AP_T_HELLO_REPLY:
	case AP_T_STARTED:
	case AP_T_EXIT:
	case AP_T_ERROR:
	case AP_T_OK:
	case AP_T_END:
		return AP_MAX_CTL_PAYLOAD;
	case AP_T_MOUNT:
	case AP_T_EXPORT:
	case AP_T_IMPORT:
	case AP_T_ENTRY:
	case AP_T_WARN:
		return 3 * AP_MAX_PATH + 512; /* two paths and small fields */
	case AP_T_EXEC:
	case AP_T_STDIN:
	case AP_T_STDOUT:
	case AP_T_STDERR:
	case AP_T_DATA:
		return AP_MAX_PAYLOAD;
	default:
		return 0;
	}
}

const char *ap_type_name(uint8_t type)
{
	switch (type) {
	case AP_T_HELLO: return "hello";
	case AP_T_EXEC: return "exec";
	case AP_T_STDIN: return "stdin";
	case AP_T_SIGNAL: return "signal";
	case AP_T_POWEROFF: return "poweroff";
	case AP_T_HELLO_REPLY: return "hello-reply";
	case AP_T_STARTED: return "started";
	case AP_T_STDOUT: return "stdout";
	case AP_T_STDERR: return "stderr";
	case AP_T_EXIT: return "exit";
	case AP_T_ERROR: return "error";
	case AP_T_OK: return "ok";
	case AP_T_MOUNT: return "mount";
	case AP_T_EXPORT: return "export";
	case AP_T_IMPORT: return "import";
	case AP_T_ENTRY: return "entry";
	case AP_T_DATA: return "data";
	case AP_T_WARN: return "warn";
	case AP_T_END: return "end";
	default: return "unknown";
	}
}

int ap_hdr_parse(const unsigned char in[AP_HDR_LEN], struct ap_hdr *h, const char **why)
{
	const char *w = NULL;
	int rc = 0;
	if (in[0] != 'B' || in[1] != 'A') {
		w = "bad magic";
		rc = BG_ERR_PROTO;
	} else if (in[2] != AP_WIRE_VERSION) {
		w = "unsupported protocol version";
		rc = BG_ERR_PROTO;
	} else if (ap_type_max(in[3]) == 0) {
		w = "unknown frame type";
		rc = BG_ERR_PROTO;
	} else {
		h->type = in[3];
		h->id = get32(in + 4);
		h->len = get32(in + 8);
		if (h->len > ap_type_max(h->type)) {
			w = "frame longer than its type allows";
			rc = BG_ERR_TOOBIG;
		}
	}
	if (why)
		*why = w;
	return rc;
}

/* ---- building ---- */

void ap_buf_init(struct ap_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}

void ap_buf_release(struct ap_buf *b)
{
	free(b->data);
	ap_buf_init(b);
}

static void reserve(struct ap_buf *b, size_t n)
{
	if (b->err)
		return;
	if (b->len + n > AP_HDR_LEN + (size_t)AP_MAX_PAYLOAD) {
		b->err = BG_ERR_TOOBIG;
		return;
	}
	if (b->len + n <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	unsigned char *d = realloc(b->data, cap);
	if (!d) {
		b->err = BG_ERR_NOMEM;
		return;
	}
	b->data = d;
	b->cap = cap;
}

void ap_begin(struct ap_buf *b, uint8_t type, uint32_t id)
{
	b->len = 0;
	b->err = 0;
	reserve(b, AP_HDR_LEN);
	if (b->err)
		return;
	ap_hdr_pack(b->data, type, id, 0);
	b->len = AP_HDR_LEN;
}

void ap_put_raw(struct ap_buf *b, const void *p, size_t n)
{
	reserve(b, n);
	if (b->err || n == 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void ap_put_bytes(struct ap_buf *b, uint8_t tag, const void *p, size_t n)
{
	if (n > AP_MAX_PAYLOAD) {
		if (!b->err)
			b->err = BG_ERR_TOOBIG;
		return;
	}
	reserve(b, 5 + n);
	if (b->err)
		return;
	b->data[b->len] = tag;
	put32(b->data + b->len + 1, (uint32_t)n);
	b->len += 5;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

void ap_put_str(struct ap_buf *b, uint8_t tag, const char *s)
{
	ap_put_bytes(b, tag, s, strlen(s));
}

void ap_put_int(struct ap_buf *b, uint8_t tag, int64_t v)
{
	unsigned char x[8];
	uint64_t u = (uint64_t)v;
	for (int i = 7; i >= 0; i--) {
		x[i] = (unsigned char)u;
		u >>= 8;
	}
	ap_put_bytes(b, tag, x, 8);
}

int ap_end(struct ap_buf *b)
{
	if (b->err)
		return b->err;
	if (b->len < AP_HDR_LEN)
		return BG_ERR_INVAL;
	uint32_t len = (uint32_t)(b->len - AP_HDR_LEN);
	if (len > ap_type_max(b->data[3]))
		return BG_ERR_TOOBIG;
	put32(b->data + 8, len);
	return 0;
}

/* ---- reading ---- */

void ap_iter_init(struct ap_iter *it, const void *payload, size_t len)
{
	it->p = payload;
	it->left = len;
}

int ap_next(struct ap_iter *it, struct ap_field *f)
{
	if (it->left == 0)
		return 0;
	if (it->left < 5)
		return BG_ERR_PROTO;
	uint32_t n = get32(it->p + 1);
	if (n > it->left - 5)
		return BG_ERR_PROTO;
	f->tag = it->p[0];
	f->len = n;
	f->val = it->p + 5;
	it->p += 5 + (size_t)n;
	it->left -= 5 + (size_t)n;
	return 1;
}

int ap_field_int(const struct ap_field *f, int64_t *v)
{
	if (f->len != 8)
		return BG_ERR_PROTO;
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u = u << 8 | f->val[i];
	*v = (int64_t)u;
	return 0;
}

int ap_field_str(const struct ap_field *f, char **out)
{
	if (memchr(f->val, 0, f->len))
		return BG_ERR_PROTO;
	char *s = malloc((size_t)f->len + 1);
	if (!s)
		return BG_ERR_NOMEM;
	memcpy(s, f->val, f->len);
	s[f->len] = 0;
	*out = s;
	return 0;
}

static bool is_int_tag(uint8_t tag)
{
	switch (tag) {
	case AP_F_VERSION:
	case AP_F_STDIN:
	case AP_F_SIGNO:
	case AP_F_PID:
	case AP_F_CODE:
	case AP_F_REQ:
	case AP_F_UPTIME_MS:
	case AP_F_TYPE:
	case AP_F_MODE:
	case AP_F_UID:
	case AP_F_GID:
	case AP_F_MTIME:
	case AP_F_MTIME_NS:
	case AP_F_SIZE:
	case AP_F_RO:
	case AP_F_COUNT:
	case AP_F_BYTES:
		return true;
	default:
		return false;
	}
}

int ap_fields_check(const void *payload, size_t len)
{
	struct ap_iter it;
	struct ap_field f;
	int r;
	ap_iter_init(&it, payload, len);
	while ((r = ap_next(&it, &f)) == 1)
		if (is_int_tag(f.tag) && f.len != 8)
			return BG_ERR_PROTO;
	return r;
}

int ap_get_int(const void *payload, size_t len, uint8_t tag, int64_t *v)
{
	struct ap_iter it;
	struct ap_field f;
	int r;
	ap_iter_init(&it, payload, len);
	while ((r = ap_next(&it, &f)) == 1)
		if (f.tag == tag)
			return ap_field_int(&f, v);
	return r < 0 ? r : BG_ERR_NOENT;
}

int ap_get_str(const void *payload, size_t len, uint8_t tag, char **out)
{
	struct ap_iter it;
	struct ap_field f;
	int r;
	ap_iter_init(&it, payload, len);
	while ((r = ap_next(&it, &f)) == 1)
		if (f.tag == tag)
			return ap_field_str(&f, out);
	return r < 0 ? r : BG_ERR_NOENT;
}

/* ---- EXEC ---- */

int ap_exec_encode(struct ap_buf *b, uint32_t id, const char *const *argv, const char *shell,
		   const char *const *env, const char *cwd, bool stdin_pipe)
{
	if ((argv == NULL) == (shell == NULL) || (argv && !argv[0]))
		return BG_ERR_INVAL;
	ap_begin(b, AP_T_EXEC, id);
	if (shell) {
		ap_put_str(b, AP_F_SHELL, shell);
	} else {
		size_t n = 0;
		for (; argv[n]; n++)
			ap_put_str(b, AP_F_ARG, argv[n]);
		if (n > AP_MAX_ARGS)
			return BG_ERR_TOOBIG;
	}
	if (env) {
		size_t n = 0;
		for (; env[n]; n++) {
			if (!strchr(env[n], '=') || env[n][0] == '=')
				return BG_ERR_INVAL;
			ap_put_str(b, AP_F_ENV, env[n]);
		}
		if (n > AP_MAX_ENV)
			return BG_ERR_TOOBIG;
	}
	if (cwd)
		ap_put_str(b, AP_F_CWD, cwd);
	if (stdin_pipe)
		ap_put_int(b, AP_F_STDIN, 1);
	return ap_end(b);
}

static void free_vec(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void ap_exec_req_release(struct ap_exec_req *r)
{
	free_vec(r->argv, r->argc);
	free_vec(r->env, r->envc);
	free(r->cwd);
	memset(r, 0, sizeof(*r));
}

int ap_exec_decode(const void *payload, size_t len, struct ap_exec_req *r, const char **why)
{
	struct ap_iter it;
	struct ap_field f;
	size_t nargs = 0, nenv = 0, nshell = 0;
	int rc;

	memset(r, 0, sizeof(*r));
	*why = NULL;
	/* Pass 1: shape and counts, so the vectors are allocated once. */
	ap_iter_init(&it, payload, len);
	while ((rc = ap_next(&it, &f)) == 1) {
		switch (f.tag) {
		case AP_F_ARG: nargs++; break;
		case AP_F_ENV: nenv++; break;
		case AP_F_SHELL: nshell++; break;
		case AP_F_STDIN:
			if (f.len != 8) {
				*why = "malformed stdin field";
				return BG_ERR_PROTO;
			}
			break;
		default: break;
		}
	}
	if (rc < 0) {
		*why = "truncated field";
		return BG_ERR_PROTO;
	}
	if (nshell > 1 || (nshell == 1 && nargs > 0)) {
		*why = "exec carries both argv and a shell line";
		return BG_ERR_PROTO;
	}
	if (nshell == 0 && nargs == 0) {
		*why = "exec carries neither argv nor a shell line";
		return BG_ERR_PROTO;
	}
	if (nargs > AP_MAX_ARGS || nenv > AP_MAX_ENV) {
		*why = "too many arguments or environment entries";
		return BG_ERR_PROTO;
	}
	r->argv = calloc((nshell ? 3 : nargs) + 1, sizeof(char *));
	r->env = calloc(nenv + 1, sizeof(char *));
	if (!r->argv || !r->env) {
		rc = BG_ERR_NOMEM;
		goto fail;
	}
	if (nshell) {
		r->shell = true;
		r->argv[0] = strdup("/bin/sh");
		r->argv[1] = strdup("-c");
		r->argc = 2;
		if (!r->argv[0] || !r->argv[1]) {
			rc = BG_ERR_NOMEM;
			goto fail;
		}
	}
	ap_iter_init(&it, payload, len);
	while (ap_next(&it, &f) == 1) {
		char *s = NULL;
		int64_t v = 0;
		switch (f.tag) {
		case AP_F_ARG:
		case AP_F_SHELL:
			if ((rc = ap_field_str(&f, &s)) < 0) {
				*why = "argument contains a NUL byte";
				goto fail;
			}
			r->argv[r->argc++] = s;
			break;
		case AP_F_ENV:
			if ((rc = ap_field_str(&f, &s)) < 0) {
				*why = "environment entry contains a NUL byte";
				goto fail;
			}
			r->env[r->envc++] = s;
			if (s[0] == '=' || !strchr(s, '=')) {
				*why = "environment entry is not NAME=value";
				rc = BG_ERR_PROTO;
				goto fail;
			}
			break;
		case AP_F_CWD:
			if (r->cwd || (rc = ap_field_str(&f, &s)) < 0) {
				*why = "bad or repeated cwd";
				rc = BG_ERR_PROTO;
				goto fail;
			}
			r->cwd = s;
			if (!s[0]) {
				*why = "empty cwd";
				rc = BG_ERR_PROTO;
				goto fail;
			}
			break;
		case AP_F_STDIN:
			ap_field_int(&f, &v);
			r->stdin_pipe = v != 0;
			break;
		default:
			break; /* unknown optional field */
		}
	}
	if (r->argv[0][0] == 0) {
		*why = "empty program name";
		rc = BG_ERR_PROTO;
		goto fail;
	}
	return 0;
fail:
	if (rc == BG_ERR_NOMEM && !*why)
		*why = "out of memory";
	ap_exec_req_release(r);
	return rc == BG_ERR_NOMEM ? rc : BG_ERR_PROTO;
}

/* ---- EXIT, ERROR ---- */

int ap_exit_decode(const void *payload, size_t len, bool *signaled, int *value)
{
	int64_t code, sig;
	if (ap_fields_check(payload, len) < 0)
		return BG_ERR_PROTO;
	int hc = ap_get_int(payload, len, AP_F_CODE, &code);
	int hs = ap_get_int(payload, len, AP_F_SIGNO, &sig);
	if ((hc == 0) == (hs == 0))
		return BG_ERR_PROTO;
	if (hc == 0) {
		if (code < 0 || code > 255)
			return BG_ERR_PROTO;
		*signaled = false;
		*value = (int)code;
	} else {
		if (sig < 1 || sig > 64)
			return BG_ERR_PROTO;
		*signaled = true;
		*value = (int)sig;
	}
	return 0;
}

int ap_error_decode(const void *payload, size_t len, int *req, int *code, char **msg)
{
	int64_t v;
	*req = 0;
	*code = 0;
	*msg = NULL;
	if (ap_fields_check(payload, len) < 0)
		return BG_ERR_PROTO;
	if (ap_get_int(payload, len, AP_F_REQ, &v) == 0) {
		if (v < 0 || v > 255)
			return BG_ERR_PROTO;
		*req = (int)v;
	}
	if (ap_get_int(payload, len, AP_F_CODE, &v) == 0) {
		if (v < 0 || v > 4095)
			return BG_ERR_PROTO;
		*code = (int)v;
	}
	int r = ap_get_str(payload, len, AP_F_MSG, msg);
	if (r < 0 && r != BG_ERR_NOENT)
		return BG_ERR_PROTO;
	return 0;
}

/* ---- ENTRY ---- */

bool ap_path_clean(const char *p)
{
	size_t n = strlen(p);
	if (n == 0 || n > AP_MAX_PATH || p[0] == '/' || p[n - 1] == '/')
		return false;
	while (*p) {
		size_t len = strcspn(p, "/");
		if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.') ||
		    len > 255)
			return false;
		p += len;
		if (*p == '/')
			p++;
	}
	return true;
}

void ap_entry_release(struct ap_entry *e)
{
	free(e->path);
	free(e->link);
	memset(e, 0, sizeof(*e));
}

int ap_entry_decode(const void *payload, size_t len, struct ap_entry *e, const char **why)
{
	int64_t v;
	memset(e, 0, sizeof(*e));
	*why = "malformed fields";
	if (ap_fields_check(payload, len) < 0)
		return BG_ERR_PROTO;
	*why = "entry without a path";
	if (ap_get_str(payload, len, AP_F_PATH, &e->path) < 0)
		goto fail;
	*why = "entry path is not a clean relative path";
	if (!ap_path_clean(e->path))
		goto fail;
	*why = "entry of an unknown type";
	if (ap_get_int(payload, len, AP_F_TYPE, &v) < 0 || v < AP_E_REG || v > AP_E_HARDLINK)
		goto fail;
	e->type = (int)v;
	*why = "entry with a bad mode, owner or time";
	if (ap_get_int(payload, len, AP_F_MODE, &v) < 0 || v < 0 || v > 07777)
		goto fail;
	e->mode = (uint32_t)v;
	if (ap_get_int(payload, len, AP_F_UID, &v) < 0 || v < 0 || v > UINT32_MAX)
		goto fail;
	e->uid = (uint32_t)v;
	if (ap_get_int(payload, len, AP_F_GID, &v) < 0 || v < 0 || v > UINT32_MAX)
		goto fail;
	e->gid = (uint32_t)v;
	if (ap_get_int(payload, len, AP_F_MTIME, &e->mtime) < 0)
		goto fail;
	if (ap_get_int(payload, len, AP_F_MTIME_NS, &v) < 0 || v < 0 || v > 999999999)
		goto fail;
	e->mtime_ns = (uint32_t)v;
	if (e->type == AP_E_REG) {
		*why = "file entry with a bad size";
		if (ap_get_int(payload, len, AP_F_SIZE, &v) < 0 || v < 0)
			goto fail;
		e->size = (uint64_t)v;
	}
	int r = ap_get_str(payload, len, AP_F_LINK, &e->link);
	if (r < 0 && r != BG_ERR_NOENT) {
		*why = "malformed link";
		goto fail;
	}
	if (e->type == AP_E_SYMLINK || e->type == AP_E_HARDLINK) {
		*why = "link entry without a target, or one that is too long";
		if (!e->link || !e->link[0] || strlen(e->link) > AP_MAX_PATH)
			goto fail;
		*why = "hardlink to a path that is not clean and relative";
		if (e->type == AP_E_HARDLINK && !ap_path_clean(e->link))
			goto fail;
	} else if (e->link) {
		*why = "link target on an entry that is not a link";
		goto fail;
	}
	*why = NULL;
	return 0;
fail:
	ap_entry_release(e);
	return BG_ERR_PROTO;
}

int ap_entry_encode(struct ap_buf *b, uint32_t id, const struct ap_entry *e, const char **why)
{
	*why = "entry path is not a clean relative path";
	if (!e->path || !ap_path_clean(e->path))
		return BG_ERR_INVAL;
	*why = "entry of an unknown type";
	if (e->type < AP_E_REG || e->type > AP_E_HARDLINK)
		return BG_ERR_INVAL;
	*why = "entry with a bad mode or time";
	if (e->mode > 07777 || e->mtime_ns > 999999999)
		return BG_ERR_INVAL;
	bool link = e->type == AP_E_SYMLINK || e->type == AP_E_HARDLINK;
	*why = "link entry without a target, or one that is too long";
	if (link && (!e->link || !e->link[0] || strlen(e->link) > AP_MAX_PATH))
		return BG_ERR_INVAL;
	*why = "hardlink to a path that is not clean and relative";
	if (e->type == AP_E_HARDLINK && !ap_path_clean(e->link))
		return BG_ERR_INVAL;
	*why = "file entry with a bad size";
	if (e->type == AP_E_REG && e->size > INT64_MAX)
		return BG_ERR_INVAL;
	*why = NULL;
	ap_begin(b, AP_T_ENTRY, id);
	ap_put_str(b, AP_F_PATH, e->path);
	ap_put_int(b, AP_F_TYPE, e->type);
	ap_put_int(b, AP_F_MODE, e->mode);
	ap_put_int(b, AP_F_UID, e->uid);
	ap_put_int(b, AP_F_GID, e->gid);
	ap_put_int(b, AP_F_MTIME, e->mtime);
	ap_put_int(b, AP_F_MTIME_NS, e->mtime_ns);
	if (e->type == AP_E_REG)
		ap_put_int(b, AP_F_SIZE, (int64_t)e->size);
	if (link)
		ap_put_str(b, AP_F_LINK, e->link);
	return ap_end(b);
}

long ap_sync_find(const unsigned char *buf, size_t len, size_t *keep)
{
	*keep = 0;
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != AP_SYNC[0])
			continue;
		size_t n = len - i < AP_SYNC_LEN ? len - i : AP_SYNC_LEN;
		if (memcmp(buf + i, AP_SYNC, n) != 0)
			continue;
		if (n == AP_SYNC_LEN)
			return (long)i;
		*keep = n; /* a prefix of the marker at the very end */
		return -1;
	}
	return -1;
}
