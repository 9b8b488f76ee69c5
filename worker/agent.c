/*
 * agent.c: the host side of the guest agent protocol (see agent.h for the
 * threading and trust rules, guest/agent_proto.h for the wire format).
 *
 * Locking: conn->mu guards the command list, every command's frame queue,
 * the connection's error and the power-off flag; conn->wmu serializes
 * whole-frame writes.  The reader thread never holds mu while it reads the
 * socket, and never runs a caller's callback.  A command's queue holds at
 * most QUEUE_MAX bytes: past that the reader waits for the command's thread
 * to drain it, which slows the guest (the agent stops reading that
 * command's pipes) instead of growing bangerd's memory.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "err.h"
#include "log.h"
#include "util.h"

#define QUEUE_MAX (8u << 20)
#define RBUF_CAP (AP_HDR_LEN + AP_MAX_PAYLOAD + 65536u)
#define HELLO_RESEND_US 1000000
#define KILL_GRACE_US 5000000
#define SEND_TIMEOUT_S 30
#define SCAN_MAX (64u << 20) /* stale bytes skipped before the agent's SYNC */

struct qframe {
	struct qframe *next;
	uint8_t type;
	uint32_t len;
	unsigned char data[];
};

struct agent_exec {
	struct agent_conn *c;
	struct agent_exec *next; /* in c->execs while registered */
	uint32_t id;
	bool registered;
	bool waited;
	struct qframe *head, *tail;
	size_t queued;
	pthread_cond_t cond;
	int64_t pid;
};

struct agent_conn {
	int fd;
	pthread_mutex_t mu, wmu;
	pthread_cond_t cond; /* queue space, power-off OK, connection death */
	pthread_t reader;
	bool reader_started;
	int refs;
	int err;
	char *errmsg;
	bool poweroff_ok;
	struct agent_exec *execs;
	uint32_t next_id;
	struct agent_info info;
	unsigned char *buf; /* read buffer: handshake, then the reader thread */
	size_t len;
};

/* ---- small helpers ---- */

static void abs_deadline(struct timespec *ts, int64_t us_from_now)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	int64_t ns = ts->tv_nsec + (us_from_now % 1000000) * 1000;
	ts->tv_sec += us_from_now / 1000000 + ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
}

static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

static void conn_unref(struct agent_conn *c)
{
	pthread_mutex_lock(&c->mu);
	bool last = --c->refs == 0;
	pthread_mutex_unlock(&c->mu);
	if (!last)
		return;
	if (c->fd >= 0)
		close(c->fd);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->wmu);
	pthread_cond_destroy(&c->cond);
	free(c->errmsg);
	free(c->buf);
	free(c);
}

/* Break the connection (first reason wins).  Caller holds mu. */
static void conn_fail_locked(struct agent_conn *c, int rc, const char *msg)
{
	if (c->err)
		return;
	c->err = rc;
	c->errmsg = xstrdup(msg);
	for (struct agent_exec *e = c->execs; e; e = e->next)
		pthread_cond_broadcast(&e->cond);
	pthread_cond_broadcast(&c->cond);
}

static void conn_fail(struct agent_conn *c, int rc, const char *msg)
{
	pthread_mutex_lock(&c->mu);
	conn_fail_locked(c, rc, msg);
	pthread_mutex_unlock(&c->mu);
}

/* Write one whole buffer; breaks the connection on failure. */
static int conn_write(struct agent_conn *c, const void *p, size_t n)
{
	const unsigned char *b = p;
	int rc = 0;
	pthread_mutex_lock(&c->wmu);
	while (n) {
		ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
		if (w > 0) {
			b += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		rc = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? BG_ERR_TIMEDOUT
									: BG_ERR_CLOSED;
		break;
	}
	pthread_mutex_unlock(&c->wmu);
	if (rc)
		conn_fail(c, rc,
			  rc == BG_ERR_TIMEDOUT ? "the agent stopped reading (write timed out)"
						: "the link to the agent is closed");
	return rc;
}

/* ---- frame checks (the guest is not trusted) ---- */

/* Is this an agent->host frame we can accept, with a well-formed payload? */
static const char *check_frame(const struct ap_hdr *h, const unsigned char *p)
{
	int64_t v;
	bool sig;
	int val, req, code;
	char *msg = NULL;
	switch (h->type) {
	case AP_T_HELLO_REPLY:
	case AP_T_OK:
	case AP_T_END:
	case AP_T_WARN:
		return ap_fields_check(p, h->len) < 0 ? "malformed fields" : NULL;
	case AP_T_ENTRY: {
		struct ap_entry en;
		const char *why;
		if (h->id == 0 || ap_entry_decode(p, h->len, &en, &why) < 0)
			return "malformed entry frame";
		ap_entry_release(&en);
		return NULL;
	}
	case AP_T_DATA:
		return h->id == 0 ? "data frame without an export id" : NULL;
	case AP_T_STARTED:
		if (h->id == 0 || ap_fields_check(p, h->len) < 0 ||
		    ap_get_int(p, h->len, AP_F_PID, &v) < 0 || v <= 0 || v > INT32_MAX)
			return "malformed started frame";
		return NULL;
	case AP_T_STDOUT:
	case AP_T_STDERR:
		return h->id == 0 ? "output frame without a command id" : NULL;
	case AP_T_EXIT:
		if (h->id == 0 || ap_exit_decode(p, h->len, &sig, &val) < 0)
			return "malformed exit frame";
		return NULL;
	case AP_T_ERROR:
		if (ap_error_decode(p, h->len, &req, &code, &msg) < 0)
			return "malformed error frame";
		free(msg);
		return NULL;
	default:
		return "frame type the host does not accept";
	}
}

/* Parse the frames at the front of c->buf (after the handshake).  Returns
 * bytes consumed so far; *bad is set to a reason on a malformed frame. */
typedef int (*frame_fn)(struct agent_conn *c, const struct ap_hdr *h, const unsigned char *p);

static size_t parse_frames(struct agent_conn *c, frame_fn fn, const char **bad, int *stop)
{
	size_t off = 0;
	*bad = NULL;
	*stop = 0;
	while (c->len - off > 0) {
		unsigned char *p = c->buf + off;
		size_t left = c->len - off;
		if (p[0] == AP_SYNC[0]) { /* a repeated SYNC answer: skip it */
			size_t n = left < AP_SYNC_LEN ? left : AP_SYNC_LEN;
			if (memcmp(p, AP_SYNC, n) != 0) {
				*bad = "bad sync marker";
				return off;
			}
			if (n < AP_SYNC_LEN)
				return off;
			off += AP_SYNC_LEN;
			continue;
		}
		if (left < AP_HDR_LEN)
			return off;
		struct ap_hdr h;
		if (ap_hdr_parse(p, &h, bad) < 0)
			return off;
		if (left < AP_HDR_LEN + (size_t)h.len)
			return off;
		if ((*bad = check_frame(&h, p + AP_HDR_LEN)))
			return off;
		off += AP_HDR_LEN + h.len;
		if ((*stop = fn(c, &h, p + AP_HDR_LEN)))
			return off;
	}
	return off;
}

static void buf_consume(struct agent_conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

/* ---- the reader thread ---- */

static struct agent_exec *find_exec(struct agent_conn *c, uint32_t id)
{
	for (struct agent_exec *e = c->execs; e; e = e->next)
		if (e->id == id)
			return e;
	return NULL;
}

static int dispatch(struct agent_conn *c, const struct ap_hdr *h, const unsigned char *p)
{
	pthread_mutex_lock(&c->mu);
	if (h->type == AP_T_HELLO_REPLY) {
		/* a late answer to a repeated HELLO */
	} else if (h->type == AP_T_OK && (h->id == 0 || !find_exec(c, h->id))) {
		int64_t req = 0;
		ap_get_int(p, h->len, AP_F_REQ, &req);
		if (req == AP_T_POWEROFF) {
			c->poweroff_ok = true;
			pthread_cond_broadcast(&c->cond);
		}
	} else if (h->id == 0) {
		/* The agent could not read one of our frames: it now discards our
		 * input until a SYNC, so this link is of no more use. */
		int req, code;
		char *msg = NULL;
		ap_error_decode(p, h->len, &req, &code, &msg);
		char *m = xasprintf("the agent refused a frame: %s", msg ? msg : "?");
		conn_fail_locked(c, BG_ERR_PROTO, m);
		free(m);
		free(msg);
	} else {
		struct agent_exec *e;
		while ((e = find_exec(c, h->id)) && e->queued + h->len > QUEUE_MAX && e->queued &&
		       !c->err)
			pthread_cond_wait(&c->cond, &c->mu);
		if (e && !c->err) {
			struct qframe *q = xmalloc(sizeof(*q) + h->len);
			q->next = NULL;
			q->type = h->type;
			q->len = h->len;
			memcpy(q->data, p, h->len);
			if (e->tail)
				e->tail->next = q;
			else
				e->head = q;
			e->tail = q;
			e->queued += h->len;
			pthread_cond_signal(&e->cond);
		}
		/* no such command: it was destroyed; its frames are dropped */
	}
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static void *reader_main(void *arg)
{
	struct agent_conn *c = arg;
	const char *bad = NULL;
	int stop;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		size_t used = parse_frames(c, dispatch, &bad, &stop);
		buf_consume(c, used);
		if (bad) {
			log_warn(NULL, 0, "agent: garbage from the guest (%s); closing the link", bad);
			char *m = xasprintf("the agent sent a malformed frame (%s)", bad);
			conn_fail(c, BG_ERR_PROTO, m);
			free(m);
			break;
		}
		pthread_mutex_lock(&c->mu);
		bool dead = c->err != 0;
		pthread_mutex_unlock(&c->mu);
		if (dead)
			break;
		ssize_t n = read(c->fd, c->buf + c->len, RBUF_CAP - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			conn_fail(c, BG_ERR_CLOSED,
				  n == 0 ? "the agent closed the link (guest gone?)"
					 : "reading from the agent failed");
			break;
		}
		c->len += (size_t)n;
	}
	shutdown(c->fd, SHUT_RDWR);
	return NULL;
}

/* ---- connecting ---- */

static int send_hello(struct agent_conn *c)
{
	unsigned char f[AP_SYNC_LEN + 64];
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_HELLO, 0);
	ap_put_int(&b, AP_F_VERSION, AP_VERSION);
	int rc = ap_end(&b);
	if (rc == 0 && b.len <= sizeof(f) - AP_SYNC_LEN) {
		memcpy(f, AP_SYNC, AP_SYNC_LEN);
		memcpy(f + AP_SYNC_LEN, b.data, b.len);
		rc = conn_write(c, f, AP_SYNC_LEN + b.len);
	}
	ap_buf_release(&b);
	return rc;
}

static int on_hello(struct agent_conn *c, const struct ap_hdr *h, const unsigned char *p)
{
	if (h->type != AP_T_HELLO_REPLY)
		return 0; /* stale frames from an earlier connection: skip */
	int64_t v = 0;
	char *s = NULL;
	ap_get_int(p, h->len, AP_F_VERSION, &v);
	c->info.version = (int)v;
	if (ap_get_str(p, h->len, AP_F_AGENT, &s) == 0) {
		snprintf(c->info.agent, sizeof(c->info.agent), "%s", s);
		free(s);
	}
	if (ap_get_str(p, h->len, AP_F_KERNEL, &s) == 0) {
		snprintf(c->info.kernel, sizeof(c->info.kernel), "%s", s);
		free(s);
	}
	if (ap_get_int(p, h->len, AP_F_UPTIME_MS, &v) == 0)
		c->info.uptime_ms = v;
	return 1;
}

static int handshake(struct agent_conn *c, int64_t deadline, int watch_fd, char **errmsg)
{
	bool synced = false;
	size_t skipped = 0;
	int64_t next_send = 0;
	for (;;) {
		int64_t now = mono_us();
		if (now >= next_send) {
			if (send_hello(c) < 0) {
				errmsg_set(errmsg, "cannot write to the agent's socket");
				return BG_ERR_CLOSED;
			}
			next_send = now + HELLO_RESEND_US;
		}
		if (now >= deadline) {
			errmsg_set(errmsg, "the agent did not answer in time");
			return BG_ERR_TIMEDOUT;
		}
		int64_t until = next_send < deadline ? next_send : deadline;
		struct pollfd p[2] = {{c->fd, POLLIN, 0}, {watch_fd, POLLIN, 0}};
		int r = poll(p, watch_fd >= 0 ? 2 : 1, (int)((until - now + 999) / 1000));
		if (r < 0 && errno != EINTR) {
			errmsg_set(errmsg, "poll: %s", strerror(errno));
			return BG_ERR_IO;
		}
		if (watch_fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			errmsg_set(errmsg, "the hypervisor exited before the agent answered");
			return BG_ERR_CLOSED;
		}
		if (r <= 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t n = read(c->fd, c->buf + c->len, RBUF_CAP - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errmsg_set(errmsg, "the agent's socket closed before the agent answered");
			return BG_ERR_CLOSED;
		}
		c->len += (size_t)n;
		if (!synced) {
			size_t keep;
			long at = ap_sync_find(c->buf, c->len, &keep);
			if (at < 0) {
				skipped += c->len - keep;
				buf_consume(c, c->len - keep);
				if (skipped > SCAN_MAX) {
					errmsg_set(errmsg, "no sync from the agent in %zu bytes", skipped);
					return BG_ERR_PROTO;
				}
				continue;
			}
			buf_consume(c, (size_t)at);
			synced = true;
		}
		const char *bad;
		int got;
		size_t used = parse_frames(c, on_hello, &bad, &got);
		buf_consume(c, used);
		if (got)
			return 0;
		if (bad) {
			/* stale or torn bytes: look for the next SYNC answer */
			log_debug(NULL, 0, "agent: during the handshake: %s; rescanning", bad);
			synced = false;
			if (c->len)
				buf_consume(c, 1);
		}
	}
}

int agent_connect_fd(int fd, int64_t timeout_us, int watch_fd, struct agent_conn **out,
		     char **errmsg)
{
	struct agent_conn *c = xcalloc(1, sizeof(*c));
	int rc;
	c->fd = fd;
	c->refs = 1;
	c->next_id = 1;
	c->buf = xmalloc(RBUF_CAP);
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->wmu, NULL);
	cond_init_mono(&c->cond);
	struct timeval tv = {SEND_TIMEOUT_S, 0};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

	rc = handshake(c, mono_us() + timeout_us, watch_fd, errmsg);
	if (rc < 0)
		goto fail;
	if (c->info.version < AP_MIN_VERSION || c->info.version > AP_VERSION) {
		errmsg_set(errmsg, "the agent speaks protocol %d, bangerd %d to %d: re-import the kernel",
			c->info.version, AP_MIN_VERSION, AP_VERSION);
		rc = BG_ERR_PROTO;
		goto fail;
	}
	c->refs++; /* the reader's */
	if (pthread_create(&c->reader, NULL, reader_main, c) != 0) {
		c->refs--;
		errmsg_set(errmsg, "cannot start the agent reader thread");
		rc = BG_ERR_NOMEM;
		goto fail;
	}
	c->reader_started = true;
	*out = c;
	return 0;
fail:
	conn_unref(c);
	return rc;
}

int agent_connect(const char *sock_path, int64_t timeout_us, int watch_fd,
		  struct agent_conn **out, char **errmsg)
{
	struct sockaddr_un a;
	int64_t deadline = mono_us() + timeout_us;
	if (strlen(sock_path) >= sizeof(a.sun_path)) {
		errmsg_set(errmsg, "socket path '%s' is too long", sock_path);
		return BG_ERR_INVAL;
	}
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			errmsg_set(errmsg, "socket: %s", strerror(errno));
			return bg_errno(errno);
		}
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return agent_connect_fd(fd, deadline - mono_us(), watch_fd, out, errmsg);
		int e = errno;
		close(fd);
		if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) {
			errmsg_set(errmsg, "connect to '%s': %s", sock_path, strerror(e));
			return bg_errno(e);
		}
		if (mono_us() >= deadline) {
			errmsg_set(errmsg, "nobody listens on '%s' (%s)", sock_path, strerror(e));
			return BG_ERR_TIMEDOUT;
		}
		if (watch_fd >= 0) {
			struct pollfd p = {watch_fd, POLLIN, 0};
			if (poll(&p, 1, 20) > 0) {
				errmsg_set(errmsg, "the hypervisor exited before its socket appeared");
				return BG_ERR_CLOSED;
			}
		} else {
			struct timespec ts = {0, 20 * 1000000L};
			nanosleep(&ts, NULL);
		}
	}
}

const struct agent_info *agent_info(const struct agent_conn *c)
{
	return &c->info;
}

int agent_conn_error(struct agent_conn *c)
{
	pthread_mutex_lock(&c->mu);
	int rc = c->err;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void agent_close(struct agent_conn *c)
{
	if (!c)
		return;
	conn_fail(c, BG_ERR_CLOSED, "the link to the agent was closed by bangerd");
	shutdown(c->fd, SHUT_RDWR);
	if (c->reader_started) {
		pthread_join(c->reader, NULL);
		conn_unref(c); /* the reader's reference */
	}
	conn_unref(c);
}

/* ---- commands ---- */

static void exec_unregister_locked(struct agent_exec *e)
{
	if (!e->registered)
		return;
	for (struct agent_exec **pe = &e->c->execs; *pe; pe = &(*pe)->next) {
		if (*pe == e) {
			*pe = e->next;
			break;
		}
	}
	e->registered = false;
	while (e->head) {
		struct qframe *q = e->head;
		e->head = q->next;
		free(q);
	}
	e->tail = NULL;
	e->queued = 0;
	pthread_cond_broadcast(&e->c->cond); /* a reader waiting for space */
}

int agent_exec_start(struct agent_conn *c, const struct agent_exec_req *req,
		     struct agent_exec **out, char **errmsg)
{
	struct ap_buf b;
	struct agent_exec *e;
	int rc;

	pthread_mutex_lock(&c->mu);
	if (c->err) {
		rc = c->err;
		errmsg_set(errmsg, "%s", c->errmsg);
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	e = xcalloc(1, sizeof(*e));
	e->c = c;
	cond_init_mono(&e->cond);
	e->id = c->next_id++;
	if (c->next_id == 0)
		c->next_id = 1;
	e->registered = true;
	e->next = c->execs;
	c->execs = e;
	c->refs++;
	pthread_mutex_unlock(&c->mu);

	ap_buf_init(&b);
	rc = ap_exec_encode(&b, e->id, req->argv, req->shell, req->env, req->cwd,
			    req->stdin_pipe);
	if (rc < 0) {
		errmsg_set(errmsg, "%s", rc == BG_ERR_TOOBIG ? "the command line or environment is too large"
							 : "invalid command: give argv or a shell line, "
							   "and NAME=value environment entries");
	} else if ((rc = conn_write(c, b.data, b.len)) < 0) {
		errmsg_set(errmsg, "cannot send the command to the agent");
	}
	ap_buf_release(&b);
	if (rc < 0) {
		agent_exec_destroy(e);
		return rc;
	}
	*out = e;
	return 0;
}

static int send_small(struct agent_exec *e, uint8_t type, const void *raw, size_t len,
		      int64_t signo)
{
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, type, e->id);
	if (type == AP_T_SIGNAL)
		ap_put_int(&b, AP_F_SIGNO, signo);
	else
		ap_put_raw(&b, raw, len);
	int rc = ap_end(&b);
	if (rc == 0)
		rc = conn_write(e->c, b.data, b.len);
	ap_buf_release(&b);
	return rc;
}

int agent_exec_stdin(struct agent_exec *e, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (len == 0)
		return send_small(e, AP_T_STDIN, NULL, 0, 0);
	while (len) {
		size_t n = len < AP_CHUNK ? len : AP_CHUNK;
		int rc = send_small(e, AP_T_STDIN, p, n, 0);
		if (rc < 0)
			return rc;
		p += n;
		len -= n;
	}
	return 0;
}

int agent_exec_signal(struct agent_exec *e, int signo)
{
	if (signo < 1 || signo > 64)
		return BG_ERR_INVAL;
	return send_small(e, AP_T_SIGNAL, NULL, 0, signo);
}

int agent_exec_wait(struct agent_exec *e, const struct agent_wait_opts *o,
		    struct agent_exit *st, char **errmsg)
{
	static const struct agent_wait_opts none = {0};
	struct agent_conn *c = e->c;
	int64_t start = mono_us();
	int64_t kill_deadline = 0; /* after a kill: how long we still wait for EXIT */
	int reason = 0;            /* why we killed it */
	int rc = 1;                /* 1: still waiting */

	if (!o)
		o = &none;
	memset(st, 0, sizeof(*st));
	if (e->waited)
		return BG_ERR_STATE;
	e->waited = true;

	pthread_mutex_lock(&c->mu);
	while (rc == 1) {
		struct qframe *q = e->head;
		if (q) {
			e->head = q->next;
			if (!e->head)
				e->tail = NULL;
			if (e->queued >= QUEUE_MAX / 2)
				pthread_cond_broadcast(&c->cond); /* the reader may wait for room */
			e->queued -= q->len;
			pthread_mutex_unlock(&c->mu);

			bool sig;
			int val, req, code, cb;
			int64_t v;
			char *msg = NULL;
			switch (q->type) {
			case AP_T_STARTED:
				if (ap_get_int(q->data, q->len, AP_F_PID, &v) == 0)
					e->pid = st->pid = v;
				break;
			case AP_T_STDOUT:
			case AP_T_STDERR:
				if (reason || !o->on_output)
					break;
				cb = o->on_output(o->arg, q->type == AP_T_STDOUT ? 1 : 2, q->data, q->len);
				if (cb) {
					reason = cb;
					errmsg_set(errmsg, "output consumer stopped the command");
					agent_exec_signal(e, SIGKILL);
					kill_deadline = mono_us() + KILL_GRACE_US;
				}
				break;
			case AP_T_EXIT:
				ap_exit_decode(q->data, q->len, &sig, &val);
				st->signaled = sig;
				st->value = val;
				rc = reason ? reason : 0;
				break;
			case AP_T_ERROR:
				ap_error_decode(q->data, q->len, &req, &code, &msg);
				if (req == AP_T_EXEC) {
					rc = code ? bg_errno(code) : BG_ERR_IO;
					errmsg_set(errmsg, "%s", msg ? msg : "the command could not start");
				} else {
					log_debug(NULL, 0, "agent: exec %u: %s", e->id, msg ? msg : "?");
				}
				free(msg);
				break;
			default:
				break;
			}
			free(q);
			pthread_mutex_lock(&c->mu);
			continue;
		}
		if (c->err) {
			rc = reason ? reason : c->err;
			if (!reason)
				errmsg_set(errmsg, "%s", c->errmsg);
			break;
		}
		int64_t now = mono_us();
		if (!reason) {
			bool timed_out = o->timeout_us > 0 && now - start >= o->timeout_us;
			bool cancelled = o->cancelled && o->cancelled(o->arg);
			if (timed_out || cancelled) {
				reason = timed_out ? BG_ERR_TIMEDOUT : BG_ERR_CANCELED;
				if (timed_out)
					errmsg_set(errmsg, "the command timed out after %.1f s and was killed",
						(double)o->timeout_us / 1e6);
				else
					errmsg_set(errmsg, "cancelled; the command was killed");
				pthread_mutex_unlock(&c->mu);
				agent_exec_signal(e, SIGKILL);
				pthread_mutex_lock(&c->mu);
				kill_deadline = mono_us() + KILL_GRACE_US;
				continue;
			}
		} else if (now >= kill_deadline) {
			rc = reason; /* killed, but no exit came back in the grace period */
			break;
		}
		int64_t wait = 100000;
		if (!reason && o->timeout_us > 0 && start + o->timeout_us - now < wait)
			wait = start + o->timeout_us - now;
		if (reason && kill_deadline - now < wait)
			wait = kill_deadline - now;
		if (wait < 1000)
			wait = 1000;
		struct timespec ts;
		abs_deadline(&ts, wait);
		pthread_cond_timedwait(&e->cond, &c->mu, &ts);
	}
	exec_unregister_locked(e);
	pthread_mutex_unlock(&c->mu);
	if (rc == 0 && errmsg) {
		free(*errmsg);
		*errmsg = NULL;
	}
	return rc;
}

void agent_exec_destroy(struct agent_exec *e)
{
	if (!e)
		return;
	struct agent_conn *c = e->c;
	pthread_mutex_lock(&c->mu);
	exec_unregister_locked(e);
	pthread_mutex_unlock(&c->mu);
	pthread_cond_destroy(&e->cond);
	free(e);
	conn_unref(c);
}

int agent_run(struct agent_conn *c, const struct agent_exec_req *req, const void *stdin_data,
	      size_t stdin_len, const struct agent_wait_opts *o, struct agent_exit *st,
	      char **errmsg)
{
	struct agent_exec *e;
	int rc = agent_exec_start(c, req, &e, errmsg);
	if (rc < 0)
		return rc;
	if (req->stdin_pipe) {
		/* The agent buffers stdin, so this cannot deadlock with output. */
		if (stdin_len)
			agent_exec_stdin(e, stdin_data, stdin_len);
		agent_exec_stdin(e, NULL, 0);
	}
	rc = agent_exec_wait(e, o, st, errmsg);
	agent_exec_destroy(e);
	return rc;
}

/* ---- workspaces: MOUNT and EXPORT ---- */

/* Register a request id, like agent_exec_start, and send frame (built by
 * the caller with id 0 in its header, which is patched here, and ended
 * here: too_long is the message when it does not fit a frame). */
static int request_start(struct agent_conn *c, struct ap_buf *b, const char *too_long,
			 struct agent_exec **out, char **errmsg)
{
	int rc = ap_end(b);
	if (rc < 0) {
		errmsg_set(errmsg, "%s", too_long);
		return rc;
	}
	pthread_mutex_lock(&c->mu);
	if (c->err) {
		rc = c->err;
		errmsg_set(errmsg, "%s", c->errmsg);
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	struct agent_exec *e = xcalloc(1, sizeof(*e));
	e->c = c;
	cond_init_mono(&e->cond);
	e->id = c->next_id++;
	if (c->next_id == 0)
		c->next_id = 1;
	e->registered = true;
	e->waited = true;
	e->next = c->execs;
	c->execs = e;
	c->refs++;
	pthread_mutex_unlock(&c->mu);
	b->data[4] = (unsigned char)(e->id >> 24);
	b->data[5] = (unsigned char)(e->id >> 16);
	b->data[6] = (unsigned char)(e->id >> 8);
	b->data[7] = (unsigned char)e->id;
	rc = conn_write(c, b->data, b->len);
	if (rc < 0) {
		errmsg_set(errmsg, "cannot send the request to the agent");
		agent_exec_destroy(e);
		return rc;
	}
	*out = e;
	return 0;
}

/* The next frame of e, waiting until deadline (0: none) and polling
 * cancelled; 0 with *out (the caller frees it), or a BG_ERR_*. */
static int request_take(struct agent_exec *e, int64_t deadline, bool (*cancelled)(void *),
			void *arg, struct qframe **out, char **errmsg)
{
	struct agent_conn *c = e->c;
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		struct qframe *q = e->head;
		if (q) {
			e->head = q->next;
			if (!e->head)
				e->tail = NULL;
			if (e->queued >= QUEUE_MAX / 2)
				pthread_cond_broadcast(&c->cond);
			e->queued -= q->len;
			*out = q;
			break;
		}
		if (c->err) {
			rc = c->err;
			errmsg_set(errmsg, "%s", c->errmsg);
			break;
		}
		int64_t now = mono_us();
		if (deadline && now >= deadline) {
			rc = BG_ERR_TIMEDOUT;
			break;
		}
		if (cancelled && cancelled(arg)) {
			rc = BG_ERR_CANCELED;
			break;
		}
		int64_t wait = 100000;
		if (deadline && deadline - now < wait)
			wait = deadline - now < 1000 ? 1000 : deadline - now;
		struct timespec ts;
		abs_deadline(&ts, wait);
		pthread_cond_timedwait(&e->cond, &c->mu, &ts);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* An ERROR frame for a request as a BG_ERR_* with the agent's message. */
static int request_error(const struct qframe *q, const char *what, char **errmsg)
{
	int req, code;
	char *msg = NULL;
	ap_error_decode(q->data, q->len, &req, &code, &msg);
	errmsg_set(errmsg, "%s", msg ? msg : what);
	free(msg);
	if (code == ENOTDIR)
		return BG_ERR_INVAL;
	if (code == ECANCELED)
		return BG_ERR_CANCELED;
	if (code == ELOOP)
		return BG_ERR_PERM; /* a symlink the import refused to follow */
	if (code == EPROTO)
		return BG_ERR_PROTO;
	return code ? bg_errno(code) : BG_ERR_IO;
}

int agent_mount(struct agent_conn *c, const char *dev, const char *path, const char *fstype,
		bool readonly, int64_t timeout_us, char **errmsg)
{
	if (!dev || !*dev || !path || path[0] != '/') {
		errmsg_set(errmsg, "mount: want a device and an absolute path");
		return BG_ERR_INVAL;
	}
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_MOUNT, 0);
	ap_put_str(&b, AP_F_DEV, dev);
	ap_put_str(&b, AP_F_PATH, path);
	if (fstype)
		ap_put_str(&b, AP_F_FSTYPE, fstype);
	if (readonly)
		ap_put_int(&b, AP_F_RO, 1);
	struct agent_exec *e = NULL;
	int rc = request_start(c, &b, "mount: the device or path is too long", &e, errmsg);
	ap_buf_release(&b);
	if (rc < 0)
		return rc;
	int64_t deadline = mono_us() + (timeout_us > 0 ? timeout_us : 30000000);
	for (;;) {
		struct qframe *q = NULL;
		rc = request_take(e, deadline, NULL, NULL, &q, errmsg);
		if (rc == BG_ERR_TIMEDOUT)
			errmsg_set(errmsg, "the agent did not answer the mount of '%s' in time", dev);
		if (rc < 0)
			break;
		if (q->type == AP_T_OK) {
			free(q);
			break;
		}
		if (q->type == AP_T_ERROR) {
			rc = request_error(q, "mount failed", errmsg);
			free(q);
			break;
		}
		free(q); /* nothing else belongs to a mount */
	}
	agent_exec_destroy(e);
	return rc;
}

/* Tell the guest to stop an export (at its next frame boundary). */
static void export_cancel(struct agent_exec *e)
{
	send_small(e, AP_T_SIGNAL, NULL, 0, SIGTERM);
}

int agent_export(struct agent_conn *c, const char *guest_path, const struct agent_export_ops *ops,
		 struct agent_export_stats *st, char **errmsg)
{
	struct agent_export_stats local;
	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	if (!guest_path || guest_path[0] != '/') {
		errmsg_set(errmsg, "export: '%s' is not an absolute guest path", guest_path ? guest_path : "");
		return BG_ERR_INVAL;
	}
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_EXPORT, 0);
	ap_put_str(&b, AP_F_PATH, guest_path);
	struct agent_exec *e = NULL;
	int rc = request_start(c, &b, "export: the guest path is too long", &e, errmsg);
	ap_buf_release(&b);
	if (rc < 0)
		return rc;
	int64_t deadline = ops->timeout_us > 0 ? mono_us() + ops->timeout_us : 0;
	uint64_t data_left = 0;
	bool have_file = false;
	for (;;) {
		struct qframe *q = NULL;
		rc = request_take(e, deadline, ops->cancelled, ops->arg, &q, errmsg);
		if (rc == BG_ERR_TIMEDOUT || rc == BG_ERR_CANCELED) {
			errmsg_set(errmsg, rc == BG_ERR_TIMEDOUT ? "the export of '%s' timed out"
							      : "the export of '%s' was cancelled",
				guest_path);
			export_cancel(e);
		}
		if (rc < 0)
			break;
		const char *bad = NULL;
		int cb = 0;
		if (q->type == AP_T_ENTRY) {
			struct ap_entry en;
			const char *why;
			if (data_left) {
				bad = "an entry came before the previous file's data was complete";
			} else if (ap_entry_decode(q->data, q->len, &en, &why) < 0) {
				bad = why;
			} else {
				st->entries++;
				have_file = en.type == AP_E_REG;
				data_left = have_file ? en.size : 0;
				cb = ops->entry ? ops->entry(ops->arg, &en) : 0;
				ap_entry_release(&en);
			}
		} else if (q->type == AP_T_DATA) {
			if (!have_file || q->len > data_left) {
				bad = "file data beyond the size its entry gave";
			} else {
				data_left -= q->len;
				st->bytes += q->len;
				cb = ops->data && q->len ? ops->data(ops->arg, q->data, q->len) : 0;
			}
		} else if (q->type == AP_T_WARN) {
			char *path = NULL, *msg = NULL;
			ap_get_str(q->data, q->len, AP_F_PATH, &path);
			ap_get_str(q->data, q->len, AP_F_MSG, &msg);
			st->warnings++;
			if (ops->warn)
				ops->warn(ops->arg, path ? path : "?", msg ? msg : "skipped");
			free(path);
			free(msg);
		} else if (q->type == AP_T_END) {
			int64_t n = -1, bytes = -1;
			ap_get_int(q->data, q->len, AP_F_COUNT, &n);
			ap_get_int(q->data, q->len, AP_F_BYTES, &bytes);
			if (data_left || n != (int64_t)st->entries || bytes != (int64_t)st->bytes)
				bad = "the end of the export does not match what was sent";
			free(q);
			if (!bad)
				break;
			q = NULL;
		} else if (q->type == AP_T_ERROR) {
			rc = request_error(q, "the export failed", errmsg);
			free(q);
			break;
		} else {
			bad = "a frame that does not belong to an export";
		}
		free(q);
		if (bad) {
			char *m = xasprintf("the agent broke the export protocol (%s)", bad);
			errmsg_set(errmsg, "%s", m);
			conn_fail(c, BG_ERR_PROTO, m);
			free(m);
			rc = BG_ERR_PROTO;
			break;
		}
		if (cb) {
			export_cancel(e);
			rc = cb;
			break;
		}
	}
	agent_exec_destroy(e);
	return rc;
}

/* ---- IMPORT ---- */

/* A frame of e if one is queued (*out, the caller frees it; NULL if
 * none); the connection's error otherwise.  Never waits. */
static int request_poll(struct agent_exec *e, struct qframe **out, char **errmsg)
{
	struct agent_conn *c = e->c;
	int rc = 0;
	*out = NULL;
	pthread_mutex_lock(&c->mu);
	struct qframe *q = e->head;
	if (q) {
		e->head = q->next;
		if (!e->head)
			e->tail = NULL;
		e->queued -= q->len;
		*out = q;
	} else if (c->err) {
		rc = c->err;
		errmsg_set(errmsg, "%s", c->errmsg);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* An answer of the agent to an import: 0 for OK (counts in *n, *bytes),
 * the agent's error, or BG_ERR_PROTO for anything else (the link is then
 * broken: the agent sends nothing else for an import id). */
static int import_answer(struct agent_conn *c, struct qframe *q, int64_t *n, int64_t *bytes,
			 char **errmsg)
{
	int rc;
	if (q->type == AP_T_OK) {
		*n = *bytes = -1;
		ap_get_int(q->data, q->len, AP_F_COUNT, n);
		ap_get_int(q->data, q->len, AP_F_BYTES, bytes);
		rc = 0;
	} else if (q->type == AP_T_ERROR) {
		rc = request_error(q, "the import failed", errmsg);
	} else {
		char *m = xasprintf("the agent broke the import protocol (a '%s' frame for an import)",
				    ap_type_name(q->type));
		errmsg_set(errmsg, "%s", m);
		conn_fail(c, BG_ERR_PROTO, m);
		free(m);
		rc = BG_ERR_PROTO;
	}
	free(q);
	return rc;
}

/* Cancel the import in the guest and wait (bounded) for its ERROR, so the
 * agent has removed its temporary file when agent_import returns. */
static void import_cancel(struct agent_exec *e)
{
	if (send_small(e, AP_T_SIGNAL, NULL, 0, SIGTERM) < 0)
		return;
	int64_t deadline = mono_us() + KILL_GRACE_US;
	for (;;) {
		struct qframe *q = NULL;
		if (request_take(e, deadline, NULL, NULL, &q, NULL) < 0)
			return;
		bool last = q->type == AP_T_ERROR || q->type == AP_T_OK;
		free(q);
		if (last)
			return;
	}
}

int agent_import(struct agent_conn *c, const char *guest_dest, const struct agent_import_ops *ops,
		 struct agent_import_stats *st, char **errmsg)
{
	struct agent_import_stats local;
	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	if (!guest_dest || guest_dest[0] != '/') {
		errmsg_set(errmsg, "import: '%s' is not an absolute guest path",
			   guest_dest ? guest_dest : "");
		return BG_ERR_INVAL;
	}
	if (c->info.version < AP_IMPORT_VERSION) {
		errmsg_set(errmsg, "the agent in the guest (%s) speaks protocol %d, which has no "
			   "IMPORT (protocol %d has it): re-import the kernel and boot the VM again "
			   "to get a newer agent", c->info.agent[0] ? c->info.agent : "banger-agent",
			   c->info.version, AP_IMPORT_VERSION);
		return BG_ERR_UNSUPPORTED;
	}
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_IMPORT, 0);
	ap_put_str(&b, AP_F_PATH, guest_dest);
	ap_put_int(&b, AP_F_TYPE, ops->single_file ? AP_E_REG : AP_E_DIR);
	struct agent_exec *e = NULL;
	int rc = request_start(c, &b, "import: the guest path is too long", &e, errmsg);
	if (rc < 0) {
		ap_buf_release(&b);
		return rc;
	}
	int64_t deadline = ops->timeout_us > 0 ? mono_us() + ops->timeout_us : 0;
	unsigned char *buf = xmalloc(AP_HDR_LEN + AP_MAX_PAYLOAD);
	bool answered = false; /* the agent ended the import (its ERROR) */
	uint64_t left = 0;     /* data of the current file still to send */
	for (;;) {
		/* the agent stops at its first failure: look before each frame */
		struct qframe *q = NULL;
		int64_t n, bytes;
		rc = request_poll(e, &q, errmsg);
		if (rc < 0)
			break;
		if (q) {
			answered = true;
			rc = import_answer(c, q, &n, &bytes, errmsg);
			if (rc == 0) {
				rc = BG_ERR_PROTO;
				errmsg_set(errmsg, "the agent confirmed the import into '%s' before it "
					   "was complete", guest_dest);
				conn_fail(c, rc, "the agent confirmed an import before its end");
			}
			break;
		}
		if (deadline && mono_us() >= deadline) {
			rc = BG_ERR_TIMEDOUT;
			errmsg_set(errmsg, "the import into '%s' timed out after %.1f s", guest_dest,
				   (double)ops->timeout_us / 1e6);
			break;
		}
		if (ops->cancelled && ops->cancelled(ops->arg)) {
			rc = BG_ERR_CANCELED;
			errmsg_set(errmsg, "the import into '%s' was cancelled", guest_dest);
			break;
		}
		char *serr = NULL;
		if (left) {
			size_t want = left < AP_MAX_PAYLOAD ? (size_t)left : AP_MAX_PAYLOAD;
			int64_t got = ops->read(ops->arg, buf + AP_HDR_LEN, want, &serr);
			if (got <= 0 || (uint64_t)got > want) {
				rc = got < 0 ? (int)got : BG_ERR_IO;
				errmsg_set(errmsg, "%s", serr ? serr : "the import source gave no data");
				free(serr);
				break;
			}
			ap_hdr_pack(buf, AP_T_DATA, e->id, (uint32_t)got);
			rc = conn_write(c, buf, AP_HDR_LEN + (size_t)got);
			if (rc < 0) {
				errmsg_set(errmsg, "cannot send file data to the agent");
				break;
			}
			left -= (uint64_t)got;
			st->bytes += (uint64_t)got;
			continue;
		}
		struct ap_entry en;
		memset(&en, 0, sizeof(en));
		int r = ops->next(ops->arg, &en, &serr);
		if (r < 0) {
			rc = r;
			errmsg_set(errmsg, "%s", serr ? serr : bg_strerror(r));
			free(serr);
			break;
		}
		if (r == 0) {
			ap_begin(&b, AP_T_END, e->id);
			ap_put_int(&b, AP_F_COUNT, (int64_t)st->entries);
			ap_put_int(&b, AP_F_BYTES, (int64_t)st->bytes);
			rc = ap_end(&b);
			if (rc == 0)
				rc = conn_write(c, b.data, b.len);
			if (rc < 0)
				errmsg_set(errmsg, "cannot send the end of the import to the agent");
			break;
		}
		const char *why;
		rc = ap_entry_encode(&b, e->id, &en, &why);
		if (rc < 0) {
			errmsg_set(errmsg, "import: '%s': %s", en.path ? en.path : "", why ? why : "too long");
			break;
		}
		rc = conn_write(c, b.data, b.len);
		if (rc < 0) {
			errmsg_set(errmsg, "cannot send an entry to the agent");
			break;
		}
		st->entries++;
		left = en.type == AP_E_REG ? en.size : 0;
	}
	free(buf);
	ap_buf_release(&b);
	if (rc == 0) {
		/* END sent: the agent's answer, after it applied the directories
		 * and synced the filesystem */
		struct qframe *q = NULL;
		rc = request_take(e, deadline, ops->cancelled, ops->arg, &q, errmsg);
		if (rc == BG_ERR_TIMEDOUT || rc == BG_ERR_CANCELED)
			errmsg_set(errmsg, rc == BG_ERR_TIMEDOUT ? "the import into '%s' timed out"
								 : "the import into '%s' was cancelled",
				   guest_dest);
		if (rc == 0) {
			int64_t n, bytes;
			answered = true;
			rc = import_answer(c, q, &n, &bytes, errmsg);
			if (rc == 0 && (n != (int64_t)st->entries || bytes != (int64_t)st->bytes)) {
				rc = BG_ERR_PROTO;
				errmsg_set(errmsg, "the agent confirmed %lld entries and %lld bytes, the "
					   "host sent %llu and %llu", (long long)n, (long long)bytes,
					   (unsigned long long)st->entries, (unsigned long long)st->bytes);
			}
		}
	}
	if (rc < 0 && !answered && agent_conn_error(c) == 0)
		import_cancel(e);
	agent_exec_destroy(e);
	if (rc == 0 && errmsg) {
		free(*errmsg);
		*errmsg = NULL;
	}
	return rc;
}

int agent_poweroff(struct agent_conn *c, int64_t timeout_us, char **errmsg)
{
	unsigned char h[AP_HDR_LEN];
	ap_hdr_pack(h, AP_T_POWEROFF, 0, 0);
	int rc = conn_write(c, h, sizeof(h));
	if (rc < 0 && rc != BG_ERR_CLOSED) {
		errmsg_set(errmsg, "cannot send power-off to the agent");
		return rc;
	}
	struct timespec ts;
	abs_deadline(&ts, timeout_us);
	pthread_mutex_lock(&c->mu);
	rc = 0;
	while (!c->poweroff_ok && !c->err) {
		if (pthread_cond_timedwait(&c->cond, &c->mu, &ts) == ETIMEDOUT) {
			rc = BG_ERR_TIMEDOUT;
			errmsg_set(errmsg, "the agent did not acknowledge power-off in time");
			break;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}
