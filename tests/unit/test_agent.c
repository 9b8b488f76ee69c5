/*
 * test_agent.c: unit tests for the agent protocol: the frame codec
 * (guest/agent_proto.c) and the host side (worker/agent.c) talking to a
 * scripted fake agent over a socketpair, including an agent that sends
 * garbage, hangs up, or never answers.  No VM needed: the real agent is
 * exercised by tests/integration/t_vm.sh.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "err.h"
#include "test.h"
#include "util.h"

/* ---- the codec ---- */

TEST(agent_proto_exec_roundtrip)
{
	struct ap_buf b;
	struct ap_exec_req r;
	const char *why;
	const char *argv[] = {"/bin/echo", "a b", "", "$HOME", NULL};
	const char *env[] = {"A=1", "EMPTY=", NULL};
	ap_buf_init(&b);
	REQUIRE(ap_exec_encode(&b, 42, argv, NULL, env, "/tmp", true) == 0);
	struct ap_hdr h;
	REQUIRE(ap_hdr_parse(b.data, &h, NULL) == 0);
	CHECK_EQ_INT(h.type, AP_T_EXEC);
	CHECK_EQ_INT(h.id, 42);
	CHECK_EQ_INT(h.len, b.len - AP_HDR_LEN);
	REQUIRE(ap_exec_decode(b.data + AP_HDR_LEN, h.len, &r, &why) == 0);
	CHECK_EQ_INT(r.argc, 4);
	CHECK_EQ_STR(r.argv[0], "/bin/echo");
	CHECK_EQ_STR(r.argv[1], "a b");
	CHECK_EQ_STR(r.argv[2], "");
	CHECK_EQ_STR(r.argv[3], "$HOME");
	CHECK(r.argv[4] == NULL);
	CHECK_EQ_INT(r.envc, 2);
	CHECK_EQ_STR(r.env[1], "EMPTY=");
	CHECK(r.env[2] == NULL);
	CHECK_EQ_STR(r.cwd, "/tmp");
	CHECK(r.stdin_pipe);
	CHECK(!r.shell);
	ap_exec_req_release(&r);

	REQUIRE(ap_exec_encode(&b, 7, NULL, "echo hi; exit 3", NULL, NULL, false) == 0);
	REQUIRE(ap_exec_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &r, &why) == 0);
	CHECK(r.shell);
	CHECK_EQ_STR(r.argv[0], "/bin/sh");
	CHECK_EQ_STR(r.argv[1], "-c");
	CHECK_EQ_STR(r.argv[2], "echo hi; exit 3");
	CHECK(r.argv[3] == NULL);
	CHECK(r.cwd == NULL);
	CHECK(!r.stdin_pipe);
	ap_exec_req_release(&r);

	/* encoder refuses what the decoder would */
	const char *bad_env[] = {"NOEQUALS", NULL};
	const char *empty[] = {NULL};
	CHECK_EQ_INT(ap_exec_encode(&b, 1, argv, "x", NULL, NULL, false), BG_ERR_INVAL);
	CHECK_EQ_INT(ap_exec_encode(&b, 1, NULL, NULL, NULL, NULL, false), BG_ERR_INVAL);
	CHECK_EQ_INT(ap_exec_encode(&b, 1, empty, NULL, NULL, NULL, false), BG_ERR_INVAL);
	CHECK_EQ_INT(ap_exec_encode(&b, 1, argv, NULL, bad_env, NULL, false), BG_ERR_INVAL);
	ap_buf_release(&b);
}

TEST(agent_proto_header_checks)
{
	unsigned char h[AP_HDR_LEN];
	struct ap_hdr hd;
	const char *why;
	ap_hdr_pack(h, AP_T_STDOUT, 1, AP_MAX_PAYLOAD);
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), 0);
	ap_hdr_pack(h, AP_T_STDOUT, 1, AP_MAX_PAYLOAD + 1);
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_TOOBIG);
	ap_hdr_pack(h, AP_T_EXIT, 1, AP_MAX_CTL_PAYLOAD + 1); /* control frames are small */
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_TOOBIG);
	ap_hdr_pack(h, AP_T_HELLO, 0, 0xffffffffu);
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_TOOBIG);
	ap_hdr_pack(h, 0x42, 1, 0);
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "unknown frame type");
	ap_hdr_pack(h, AP_T_EXEC, 1, 0);
	h[0] = 'X';
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "magic");
	ap_hdr_pack(h, AP_T_EXEC, 1, 0);
	h[2] = AP_WIRE_VERSION + 1;
	CHECK_EQ_INT(ap_hdr_parse(h, &hd, &why), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "version");
}

/* Decode a hand-built EXEC payload; returns the decoder's code and why. */
static int decode_raw(const unsigned char *p, size_t n, const char **why)
{
	struct ap_exec_req r;
	int rc = ap_exec_decode(p, n, &r, why);
	if (rc == 0)
		ap_exec_req_release(&r);
	return rc;
}

TEST(agent_proto_exec_refusals)
{
	struct ap_buf b;
	const char *why;
	ap_buf_init(&b);

	/* a field claims more bytes than there are */
	unsigned char trunc[] = {AP_F_ARG, 0, 0, 0, 9, 'l', 's'};
	CHECK_EQ_INT(decode_raw(trunc, sizeof(trunc), &why), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "truncated");
	/* a field header cut short */
	CHECK_EQ_INT(decode_raw(trunc, 3, &why), BG_ERR_PROTO);
	/* nothing to run */
	CHECK_EQ_INT(decode_raw(trunc, 0, &why), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "neither");

#define BUILD(...)                                  \
	do {                                        \
		ap_begin(&b, AP_T_EXEC, 1);         \
		__VA_ARGS__;                        \
		REQUIRE(ap_end(&b) == 0);           \
	} while (0)
#define DEC() decode_raw(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &why)

	BUILD(ap_put_bytes(&b, AP_F_ARG, "a\0b", 3));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "NUL");
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, AP_F_SHELL, "ls"));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "both");
	BUILD(ap_put_str(&b, AP_F_SHELL, "a"); ap_put_str(&b, AP_F_SHELL, "b"));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, AP_F_ENV, "NOVALUE"));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "NAME=value");
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, AP_F_ENV, "=x"));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, AP_F_CWD, "/"); ap_put_str(&b, AP_F_CWD, "/"));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, AP_F_CWD, ""));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	BUILD(ap_put_str(&b, AP_F_ARG, ""));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "empty program");
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_bytes(&b, AP_F_STDIN, "x", 1));
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	/* unknown optional fields are skipped */
	BUILD(ap_put_str(&b, AP_F_ARG, "ls"); ap_put_str(&b, 200, "future"));
	CHECK_EQ_INT(DEC(), 0);
	/* too many arguments */
	ap_begin(&b, AP_T_EXEC, 1);
	for (int i = 0; i <= AP_MAX_ARGS; i++)
		ap_put_str(&b, AP_F_ARG, "x");
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(DEC(), BG_ERR_PROTO);
	/* a frame cannot grow past the protocol's limit */
	ap_begin(&b, AP_T_EXEC, 1);
	char *big = xcalloc(1, AP_MAX_PAYLOAD);
	ap_put_bytes(&b, AP_F_ARG, big, AP_MAX_PAYLOAD);
	CHECK_EQ_INT(ap_end(&b), BG_ERR_TOOBIG);
	free(big);
#undef BUILD
#undef DEC
	ap_buf_release(&b);
}

TEST(agent_proto_exit_and_error)
{
	struct ap_buf b;
	bool sig;
	int val, req, code;
	char *msg;
	ap_buf_init(&b);

	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_int(&b, AP_F_CODE, 3);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val), 0);
	CHECK(!sig);
	CHECK_EQ_INT(val, 3);
	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_int(&b, AP_F_SIGNO, 15);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val), 0);
	CHECK(sig);
	CHECK_EQ_INT(val, 15);
	/* both, neither, out of range, wrong width */
	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_int(&b, AP_F_SIGNO, 15);
	ap_put_int(&b, AP_F_CODE, 1);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val),
		     BG_ERR_PROTO);
	CHECK_EQ_INT(ap_exit_decode("", 0, &sig, &val), BG_ERR_PROTO);
	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_int(&b, AP_F_CODE, 256);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val),
		     BG_ERR_PROTO);
	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_int(&b, AP_F_SIGNO, -1);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val),
		     BG_ERR_PROTO);
	ap_begin(&b, AP_T_EXIT, 1);
	ap_put_bytes(&b, AP_F_CODE, "\1", 1);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_exit_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &sig, &val),
		     BG_ERR_PROTO);

	ap_begin(&b, AP_T_ERROR, 1);
	ap_put_int(&b, AP_F_REQ, AP_T_EXEC);
	ap_put_int(&b, AP_F_CODE, ENOENT);
	ap_put_str(&b, AP_F_MSG, "cannot run 'x'");
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_error_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &req, &code, &msg), 0);
	CHECK_EQ_INT(req, AP_T_EXEC);
	CHECK_EQ_INT(code, ENOENT);
	CHECK_EQ_STR(msg, "cannot run 'x'");
	free(msg);
	ap_begin(&b, AP_T_ERROR, 1);
	ap_put_int(&b, AP_F_CODE, 1 << 20);
	REQUIRE(ap_end(&b) == 0);
	CHECK_EQ_INT(ap_error_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &req, &code, &msg),
		     BG_ERR_PROTO);
	ap_buf_release(&b);
}

TEST(agent_proto_sync_find)
{
	unsigned char buf[64];
	size_t keep;
	memset(buf, 'x', sizeof(buf));
	CHECK_EQ_INT(ap_sync_find(buf, sizeof(buf), &keep), -1);
	CHECK_EQ_INT(keep, 0);
	memcpy(buf + 10, AP_SYNC, AP_SYNC_LEN);
	CHECK_EQ_INT(ap_sync_find(buf, sizeof(buf), &keep), 10);
	/* a marker cut by the end of the buffer: keep its first bytes */
	memset(buf, 'x', sizeof(buf));
	memcpy(buf + 60, AP_SYNC, 4);
	CHECK_EQ_INT(ap_sync_find(buf, sizeof(buf), &keep), -1);
	CHECK_EQ_INT(keep, 4);
	/* a 0x00 that does not start a marker is skipped */
	buf[5] = 0;
	CHECK_EQ_INT(ap_sync_find(buf, 20, &keep), -1);
	CHECK_EQ_INT(keep, 0);
}

TEST(agent_proto_fuzz)
{
	/* Random bytes through every decoder: refusals, never a crash (the ASan
	 * build of the unit tests makes a bad read fatal). */
	unsigned seed = 12345;
	unsigned char buf[512];
	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = (unsigned char)rand_r(&seed);
		/* bias towards plausible field headers */
		if (n > 5 && round % 2) {
			buf[0] = (unsigned char)(rand_r(&seed) % 16);
			buf[1] = buf[2] = 0;
			buf[3] = 0;
			buf[4] = (unsigned char)(rand_r(&seed) % 16);
		}
		struct ap_exec_req r;
		const char *why;
		if (ap_exec_decode(buf, n, &r, &why) == 0)
			ap_exec_req_release(&r);
		bool sig;
		int v, req, code;
		char *msg = NULL;
		ap_exit_decode(buf, n, &sig, &v);
		if (ap_error_decode(buf, n, &req, &code, &msg) == 0)
			free(msg);
		else
			free(msg);
		struct ap_hdr h;
		if (n >= AP_HDR_LEN)
			ap_hdr_parse(buf, &h, &why);
		size_t keep;
		ap_sync_find(buf, n, &keep);
		CHECK(keep <= n);
	}
}

/* ---- the host side against a scripted fake agent ---- */

struct fake {
	int fd;
	int script;
	int64_t sleep_ms;
	/* what an IMPORT brought (read by the test after the join) */
	char dest[64];
	int64_t dest_type;
	uint64_t entries, bytes, data_frames;
	uint32_t max_data;
	bool signalled;
};

/* Read one frame from the host, skipping SYNC markers.  0, or -1 at EOF. */
static int fake_read(int fd, struct ap_hdr *h, unsigned char *payload, size_t cap)
{
	unsigned char hdr[AP_HDR_LEN];
	for (;;) {
		size_t got = 0;
		while (got < 1) {
			ssize_t n = read(fd, hdr, 1);
			if (n <= 0)
				return -1;
			got = 1;
		}
		if (hdr[0] == 0) {
			unsigned char rest[AP_SYNC_LEN - 1];
			size_t r = 0;
			while (r < sizeof(rest)) {
				ssize_t n = read(fd, rest + r, sizeof(rest) - r);
				if (n <= 0)
					return -1;
				r += (size_t)n;
			}
			continue;
		}
		while (got < AP_HDR_LEN) {
			ssize_t n = read(fd, hdr + got, AP_HDR_LEN - got);
			if (n <= 0)
				return -1;
			got += (size_t)n;
		}
		if (ap_hdr_parse(hdr, h, NULL) < 0 || h->len > cap)
			return -1;
		size_t r = 0;
		while (r < h->len) {
			ssize_t n = read(fd, payload + r, h->len - r);
			if (n <= 0)
				return -1;
			r += (size_t)n;
		}
		return 0;
	}
}

static void fake_send(int fd, struct ap_buf *b)
{
	if (ap_end(b) == 0 && write(fd, b->data, b->len) != (ssize_t)b->len) {
		/* the host went away: the test checks what it saw */
	}
}

static void fake_hello(int fd, int64_t version)
{
	struct ap_buf b;
	ap_buf_init(&b);
	if (write(fd, AP_SYNC, AP_SYNC_LEN) != AP_SYNC_LEN)
		return;
	ap_begin(&b, AP_T_HELLO_REPLY, 0);
	ap_put_int(&b, AP_F_VERSION, version);
	ap_put_str(&b, AP_F_AGENT, "fake-agent");
	ap_put_str(&b, AP_F_KERNEL, "6.1.0-test");
	ap_put_int(&b, AP_F_UPTIME_MS, 1234);
	fake_send(fd, &b);
	ap_buf_release(&b);
}

enum {
	SCRIPT_EXEC_OK,     /* STARTED, output, EXIT 3 */
	SCRIPT_GARBAGE,     /* STARTED then bytes that are no frame */
	SCRIPT_BAD_EXIT,    /* EXIT with both CODE and SIGNO */
	SCRIPT_HUGE,        /* an output frame header claiming 2 GiB */
	SCRIPT_HANGUP,      /* STARTED, then close */
	SCRIPT_SILENT,      /* never answers HELLO */
	SCRIPT_STALE,       /* junk before the SYNC answer */
	SCRIPT_KILLABLE,    /* STARTED; on SIGNAL 9, EXIT signo 9 */
	SCRIPT_NOT_FOUND,   /* ERROR for the EXEC */
	SCRIPT_OLD_AGENT,   /* protocol 2: no IMPORT */
	SCRIPT_IMPORT,      /* takes an import, OK with its counts at END */
	SCRIPT_IMPORT_REFUSE, /* ERROR(REQ=IMPORT) at the second entry */
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct ap_hdr h;
	struct ap_buf b;
	unsigned char *p = xmalloc(AP_MAX_PAYLOAD);
	ap_buf_init(&b);
	if (f->script == SCRIPT_SILENT) {
		while (fake_read(f->fd, &h, p, AP_MAX_PAYLOAD) == 0) {
		}
		goto out;
	}
	if (fake_read(f->fd, &h, p, AP_MAX_PAYLOAD) < 0 || h.type != AP_T_HELLO)
		goto out;
	if (f->script == SCRIPT_STALE) {
		static const char junk[] = "BA\001\x83 torn frame from an earlier connection";
		if (write(f->fd, junk, sizeof(junk)) < 0)
			goto out;
	}
	fake_hello(f->fd, f->script == SCRIPT_OLD_AGENT ? 2 : AP_VERSION);
	while (fake_read(f->fd, &h, p, AP_MAX_PAYLOAD) == 0) {
		if (h.type == AP_T_EXEC) {
			uint32_t id = h.id;
			if (f->script == SCRIPT_NOT_FOUND) {
				ap_begin(&b, AP_T_ERROR, id);
				ap_put_int(&b, AP_F_REQ, AP_T_EXEC);
				ap_put_int(&b, AP_F_CODE, ENOENT);
				ap_put_str(&b, AP_F_MSG, "cannot run 'nope': No such file or directory");
				fake_send(f->fd, &b);
				continue;
			}
			ap_begin(&b, AP_T_STARTED, id);
			ap_put_int(&b, AP_F_PID, 77);
			fake_send(f->fd, &b);
			if (f->script == SCRIPT_EXEC_OK) {
				ap_begin(&b, AP_T_STDOUT, id);
				ap_put_raw(&b, "hello\n", 6);
				fake_send(f->fd, &b);
				ap_begin(&b, AP_T_STDERR, id);
				ap_put_raw(&b, "oops\n", 5);
				fake_send(f->fd, &b);
				ap_begin(&b, AP_T_STDOUT, id);
				ap_put_raw(&b, "6.1.0\n", 6);
				fake_send(f->fd, &b);
				ap_begin(&b, AP_T_EXIT, id);
				ap_put_int(&b, AP_F_CODE, 3);
				fake_send(f->fd, &b);
			} else if (f->script == SCRIPT_GARBAGE) {
				static const char g[] = "\x13\x37 this is not a frame at all";
				if (write(f->fd, g, sizeof(g)) < 0)
					break;
			} else if (f->script == SCRIPT_BAD_EXIT) {
				ap_begin(&b, AP_T_EXIT, id);
				ap_put_int(&b, AP_F_CODE, 1);
				ap_put_int(&b, AP_F_SIGNO, 9);
				fake_send(f->fd, &b);
			} else if (f->script == SCRIPT_HUGE) {
				unsigned char hh[AP_HDR_LEN];
				ap_hdr_pack(hh, AP_T_STDOUT, id, 0x7fffffff);
				if (write(f->fd, hh, sizeof(hh)) < 0)
					break;
			} else if (f->script == SCRIPT_HANGUP) {
				break;
			}
		} else if (h.type == AP_T_SIGNAL && f->script == SCRIPT_KILLABLE) {
			int64_t sig = 0;
			ap_get_int(p, h.len, AP_F_SIGNO, &sig);
			ap_begin(&b, AP_T_EXIT, h.id);
			ap_put_int(&b, AP_F_SIGNO, sig);
			fake_send(f->fd, &b);
		} else if (h.type == AP_T_IMPORT) {
			char *d = NULL;
			ap_get_str(p, h.len, AP_F_PATH, &d);
			snprintf(f->dest, sizeof(f->dest), "%s", d ? d : "");
			free(d);
			ap_get_int(p, h.len, AP_F_TYPE, &f->dest_type);
		} else if (h.type == AP_T_ENTRY) {
			f->entries++;
			if (f->script == SCRIPT_IMPORT_REFUSE && f->entries == 2) {
				ap_begin(&b, AP_T_ERROR, h.id);
				ap_put_int(&b, AP_F_REQ, AP_T_IMPORT);
				ap_put_int(&b, AP_F_CODE, ELOOP);
				ap_put_str(&b, AP_F_MSG, "'d' in '/dst' is a symlink in the guest; refused");
				fake_send(f->fd, &b);
			}
		} else if (h.type == AP_T_DATA) {
			f->data_frames++;
			f->bytes += h.len;
			if (h.len > f->max_data)
				f->max_data = h.len;
		} else if (h.type == AP_T_END) {
			ap_begin(&b, AP_T_OK, h.id);
			ap_put_int(&b, AP_F_REQ, AP_T_IMPORT);
			ap_put_int(&b, AP_F_COUNT, (int64_t)f->entries);
			ap_put_int(&b, AP_F_BYTES, (int64_t)f->bytes);
			fake_send(f->fd, &b);
		} else if (h.type == AP_T_SIGNAL && f->script == SCRIPT_IMPORT_REFUSE) {
			f->signalled = true;
		} else if (h.type == AP_T_POWEROFF) {
			ap_begin(&b, AP_T_OK, 0);
			ap_put_int(&b, AP_F_REQ, AP_T_POWEROFF);
			fake_send(f->fd, &b);
		}
	}
out:
	close(f->fd);
	ap_buf_release(&b);
	free(p);
	return NULL;
}

struct sess {
	struct fake f;
	pthread_t th;
	struct agent_conn *conn;
	struct sb out, err;
};

static int sess_start(struct sess *s, int script, int64_t timeout_us, char **errmsg)
{
	int sv[2];
	memset(s, 0, sizeof(*s));
	sb_init(&s->out);
	sb_init(&s->err);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return BG_ERR_IO;
	s->f.fd = sv[1];
	s->f.script = script;
	pthread_create(&s->th, NULL, fake_main, &s->f);
	return agent_connect_fd(sv[0], timeout_us, -1, &s->conn, errmsg);
}

static void sess_end(struct sess *s)
{
	agent_close(s->conn); /* NULL-safe; shuts the socket, so the fake ends */
	pthread_join(s->th, NULL);
	sb_release(&s->out);
	sb_release(&s->err);
}

static int collect(void *arg, int stream, const void *data, size_t len)
{
	struct sess *s = arg;
	sb_add(stream == 1 ? &s->out : &s->err, data, len);
	return 0;
}

static int run_one(struct sess *s, struct agent_exit *st, char **errmsg, int64_t timeout_us)
{
	const char *argv[] = {"/bin/true", NULL};
	struct agent_exec_req req = {.argv = argv};
	struct agent_wait_opts o = {collect, s, timeout_us, NULL};
	return agent_run(s->conn, &req, NULL, 0, &o, st, errmsg);
}

TEST(agent_host_exec_stream_and_exit)
{
	struct sess s;
	struct agent_exit st;
	char *err = NULL;
	REQUIRE(sess_start(&s, SCRIPT_EXEC_OK, 5000000, &err) == 0);
	CHECK_EQ_STR(agent_info(s.conn)->agent, "fake-agent");
	CHECK_EQ_STR(agent_info(s.conn)->kernel, "6.1.0-test");
	CHECK_EQ_INT(agent_info(s.conn)->uptime_ms, 1234);
	CHECK_EQ_INT(run_one(&s, &st, &err, 5000000), 0);
	CHECK_EQ_STR(s.out.buf, "hello\n6.1.0\n");
	CHECK_EQ_STR(s.err.buf, "oops\n");
	CHECK(!st.signaled);
	CHECK_EQ_INT(st.value, 3);
	CHECK_EQ_INT(st.pid, 77);
	/* the link stays usable for the next command */
	sb_release(&s.out);
	sb_init(&s.out);
	CHECK_EQ_INT(run_one(&s, &st, &err, 5000000), 0);
	CHECK_EQ_STR(s.out.buf, "hello\n6.1.0\n");
	CHECK_EQ_INT(agent_poweroff(s.conn, 2000000, &err), 0);
	free(err);
	sess_end(&s);
}

TEST(agent_host_start_error)
{
	struct sess s;
	struct agent_exit st;
	char *err = NULL;
	REQUIRE(sess_start(&s, SCRIPT_NOT_FOUND, 5000000, &err) == 0);
	CHECK_EQ_INT(run_one(&s, &st, &err, 5000000), BG_ERR_NOENT);
	CHECK_STR_CONTAINS(err, "cannot run 'nope'");
	CHECK_EQ_INT(agent_conn_error(s.conn), 0);
	free(err);
	sess_end(&s);
}

/* Each of these agents misbehaves after the handshake: the host must
 * refuse with BG_ERR_PROTO (or CLOSED), promptly, and not crash. */
TEST(agent_host_refuses_garbage)
{
	static const struct {
		int script, want;
		const char *msg;
	} cases[] = {
		{SCRIPT_GARBAGE, BG_ERR_PROTO, "malformed frame"},
		{SCRIPT_BAD_EXIT, BG_ERR_PROTO, "malformed exit"},
		{SCRIPT_HUGE, BG_ERR_PROTO, "malformed frame"},
		{SCRIPT_HANGUP, BG_ERR_CLOSED, "closed"},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct sess s;
		struct agent_exit st;
		char *err = NULL;
		REQUIRE(sess_start(&s, cases[i].script, 5000000, &err) == 0);
		int64_t t0 = mono_us();
		CHECK_EQ_INT(run_one(&s, &st, &err, 10000000), cases[i].want);
		CHECK(mono_us() - t0 < 5000000);
		CHECK_STR_CONTAINS(err, cases[i].msg);
		CHECK_EQ_INT(agent_conn_error(s.conn), cases[i].want);
		/* a broken link refuses new commands at once */
		struct agent_exec *e = NULL;
		const char *argv[] = {"x", NULL};
		struct agent_exec_req req = {.argv = argv};
		CHECK(agent_exec_start(s.conn, &req, &e, &err) < 0);
		free(err);
		sess_end(&s);
	}
}

TEST(agent_host_handshake)
{
	struct sess s;
	char *err = NULL;
	/* stale bytes before the agent's SYNC are skipped */
	REQUIRE(sess_start(&s, SCRIPT_STALE, 5000000, &err) == 0);
	CHECK_EQ_STR(agent_info(s.conn)->agent, "fake-agent");
	sess_end(&s);
	/* an agent that never answers: a bounded wait, then TIMEDOUT */
	int64_t t0 = mono_us();
	CHECK_EQ_INT(sess_start(&s, SCRIPT_SILENT, 300000, &err), BG_ERR_TIMEDOUT);
	CHECK(mono_us() - t0 < 3000000);
	CHECK_STR_CONTAINS(err, "did not answer");
	free(err);
	sess_end(&s);
}

TEST(agent_host_timeout_kills)
{
	struct sess s;
	struct agent_exit st;
	char *err = NULL;
	REQUIRE(sess_start(&s, SCRIPT_KILLABLE, 5000000, &err) == 0);
	CHECK_EQ_INT(run_one(&s, &st, &err, 200000), BG_ERR_TIMEDOUT);
	CHECK(st.signaled);
	CHECK_EQ_INT(st.value, SIGKILL);
	CHECK_STR_CONTAINS(err, "timed out");
	free(err);
	sess_end(&s);
}

/* ---- IMPORT ---- */

TEST(agent_proto_entry_encode)
{
	struct ap_buf b;
	struct ap_entry e, d;
	const char *why;
	ap_buf_init(&b);
	e = (struct ap_entry){.path = "src/ünï", .type = AP_E_REG, .mode = 04755, .uid = 1,
			      .gid = 2, .mtime = -5, .mtime_ns = 999999999, .size = 1ull << 40};
	REQUIRE(ap_entry_encode(&b, 9, &e, &why) == 0);
	struct ap_hdr h;
	REQUIRE(ap_hdr_parse(b.data, &h, NULL) == 0);
	CHECK_EQ_INT(h.type, AP_T_ENTRY);
	CHECK_EQ_INT(h.id, 9);
	REQUIRE(ap_entry_decode(b.data + AP_HDR_LEN, h.len, &d, &why) == 0);
	CHECK_EQ_STR(d.path, "src/ünï");
	CHECK_EQ_INT(d.mode, 04755);
	CHECK_EQ_INT(d.mtime, -5);
	CHECK_EQ_INT(d.size, 1ull << 40);
	CHECK(d.link == NULL);
	ap_entry_release(&d);
	e = (struct ap_entry){.path = "l", .type = AP_E_SYMLINK, .link = "../../../etc/passwd"};
	REQUIRE(ap_entry_encode(&b, 9, &e, &why) == 0);
	REQUIRE(ap_entry_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &d, &why) == 0);
	CHECK_EQ_STR(d.link, "../../../etc/passwd"); /* a symlink's target is its bytes */
	ap_entry_release(&d);
	/* what the decoder would refuse is never sent */
	static const struct {
		const char *path, *link;
		int type;
	} bad[] = {
		{"../x", NULL, AP_E_REG},      {"/etc/x", NULL, AP_E_REG}, {"a//b", NULL, AP_E_DIR},
		{"a/./b", NULL, AP_E_DIR},     {"a/", NULL, AP_E_DIR},     {"", NULL, AP_E_DIR},
		{"h", "../out", AP_E_HARDLINK}, {"h", "/etc/passwd", AP_E_HARDLINK},
		{"s", NULL, AP_E_SYMLINK},     {"s", "", AP_E_SYMLINK},    {"x", NULL, 9},
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		e = (struct ap_entry){.path = (char *)bad[i].path, .type = bad[i].type,
				      .link = (char *)bad[i].link};
		CHECK_EQ_INT(ap_entry_encode(&b, 1, &e, &why), BG_ERR_INVAL);
		CHECK(why != NULL);
	}
	e = (struct ap_entry){.path = "m", .type = AP_E_DIR, .mode = 010000};
	CHECK_EQ_INT(ap_entry_encode(&b, 1, &e, &why), BG_ERR_INVAL);
	ap_buf_release(&b);
}

/* A scripted import source: a directory, a 3 MiB file, a symlink. */
struct src3 {
	int i;
	uint64_t size, left;
	unsigned char chunk[65536];
};

static int src3_next(void *arg, struct ap_entry *e, char **errmsg)
{
	struct src3 *s = arg;
	switch (s->i++) {
	case 0:
		*e = (struct ap_entry){.path = "d", .type = AP_E_DIR, .mode = 0755};
		return 1;
	case 1:
		*e = (struct ap_entry){.path = "d/f", .type = AP_E_REG, .mode = 0644,
				       .size = s->size ? s->size : 3u << 20};
		s->left = e->size;
		return 1;
	case 2:
		*e = (struct ap_entry){.path = "l", .type = AP_E_SYMLINK, .link = "../outside"};
		return 1;
	default:
		return 0;
	}
}

static int64_t src3_read(void *arg, void *buf, size_t cap, char **errmsg)
{
	struct src3 *s = arg;
	size_t n = cap > s->left ? (size_t)s->left : cap;
	for (size_t off = 0; off < n; off += sizeof(s->chunk))
		memcpy((char *)buf + off, s->chunk, n - off < sizeof(s->chunk) ? n - off : sizeof(s->chunk));
	s->left -= n;
	return (int64_t)n;
}

TEST(agent_host_import)
{
	struct sess s;
	struct src3 src;
	struct agent_import_stats st;
	char *err = NULL;
	memset(&src, 0, sizeof(src));
	struct agent_import_ops ops = {.next = src3_next, .read = src3_read, .arg = &src,
				       .timeout_us = 10000000};
	REQUIRE(sess_start(&s, SCRIPT_IMPORT, 5000000, &err) == 0);
	CHECK_EQ_INT(agent_import(s.conn, "/dst", &ops, &st, &err), 0);
	CHECK(err == NULL);
	CHECK_EQ_INT(st.entries, 3);
	CHECK_EQ_INT(st.bytes, 3u << 20);
	/* a relative destination is refused before anything is sent */
	CHECK_EQ_INT(agent_import(s.conn, "dst", &ops, &st, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "not an absolute guest path");
	free(err);
	err = NULL;
	sess_end(&s);
	CHECK_EQ_STR(s.f.dest, "/dst");
	CHECK_EQ_INT(s.f.dest_type, AP_E_DIR);
	CHECK_EQ_INT(s.f.entries, 3);
	CHECK_EQ_INT(s.f.bytes, 3u << 20);
	CHECK_EQ_INT(s.f.max_data, AP_MAX_PAYLOAD); /* 1 MiB frames, never more */
	CHECK_EQ_INT(s.f.data_frames, 3);
}

TEST(agent_host_import_refusals)
{
	struct sess s;
	struct src3 src;
	char *err = NULL;
	memset(&src, 0, sizeof(src));
	struct agent_import_ops ops = {.next = src3_next, .read = src3_read, .arg = &src,
				       .timeout_us = 10000000};
	/* an agent older than protocol 3: refused with a clear message, nothing sent */
	REQUIRE(sess_start(&s, SCRIPT_OLD_AGENT, 5000000, &err) == 0);
	CHECK_EQ_INT(agent_info(s.conn)->version, 2);
	CHECK_EQ_INT(agent_import(s.conn, "/dst", &ops, NULL, &err), BG_ERR_UNSUPPORTED);
	CHECK_STR_CONTAINS(err, "speaks protocol 2, which has no IMPORT");
	CHECK_EQ_INT(agent_conn_error(s.conn), 0);
	sess_end(&s);
	CHECK_EQ_STR(s.f.dest, "");
	CHECK_EQ_INT(s.f.entries, 0);
	/* the agent refuses mid-stream: its message, the host stops sending,
	 * the link stays usable */
	memset(&src, 0, sizeof(src));
	src.size = 256u << 20;
	REQUIRE(sess_start(&s, SCRIPT_IMPORT_REFUSE, 5000000, &err) == 0);
	CHECK_EQ_INT(agent_import(s.conn, "/dst", &ops, NULL, &err), BG_ERR_PERM);
	CHECK_STR_CONTAINS(err, "is a symlink in the guest; refused");
	CHECK_EQ_INT(agent_conn_error(s.conn), 0);
	free(err);
	sess_end(&s);
	CHECK(s.f.entries >= 2);
	CHECK(s.f.bytes < 256u << 20); /* stopped before the whole file went */
	CHECK(!s.f.signalled);       /* the agent had ended it: no cancel needed */
}
