/*
 * agent.c: banger-agent, the guest's PID 1 and its request server.
 *
 * As PID 1 (inside a banger VM) it runs init.c's steps (mounts, modules, the
 * root switch, the network), then serves the protocol of agent_proto.h on
 * the virtio-serial port named banger.agent (found by reading the name
 * files under /sys/class/virtio-ports: there is no udev in the guest) and
 * on vsock port AP_VSOCK_PORT when the guest has a vsock device
 * (Firecracker).  Run as any
 * other pid with --listen PATH it serves a Unix socket instead and skips the
 * init steps: the tests use that to exercise the protocol without a VM.
 *
 * DESIGN.  One thread, one poll loop, no blocking I/O on the host link: the
 * agent always keeps reading requests, so the host can never deadlock it.
 * Each connection is a session with an input buffer and an output buffer;
 * while a session's output buffer holds more than TX_HIGH bytes the agent
 * stops reading the pipes of that session's commands, so a host that reads
 * slowly slows the commands down instead of filling the guest's memory.
 * Each command runs in its own session and process group (setsid); SIGNAL
 * goes to the group.  SIGCHLD arrives through a signalfd; every child is
 * reaped, commands and orphans alike.  A command's EXIT frame is sent after
 * its pipes are drained, so it always follows all of its output; output a
 * background grandchild writes after the command itself exited is dropped.
 * When the host goes away (or resyncs) the commands it started are killed:
 * nobody could collect their output or status any more.  An IMPORT is the
 * one place the loop blocks on purpose: each DATA frame is written to its
 * file before the next frame is parsed (a regular file's write), which is
 * how a slow guest disk backs pressure into the host; input is parsed at
 * most RX_BUDGET bytes per turn so the other sessions keep their turns.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent_proto.h"
#include "err.h"
#include "init.h"

#define AGENT_NAME "banger-agent 3"
#define TX_HIGH (1u << 20)
#define RX_MAX (AP_HDR_LEN + AP_MAX_PAYLOAD + AP_SYNC_LEN)
#define PORT_RECHECK_MS 25
#define RX_BUDGET (8u << 20) /* input parsed per turn of the loop (an import's data) */

enum sess_kind { S_PORT, S_STREAM };

struct xport;
struct import;

struct session {
	struct session *next;
	enum sess_kind kind;
	int fd;
	bool connected; /* port: the host has the other end open */
	bool discard;   /* after a bad frame: drop input until SYNC */
	bool dead;      /* stream closed; freed by the sweep */
	unsigned char *rx;
	size_t rxlen, rxcap;
	unsigned char *tx;
	size_t txoff, txlen, txcap;
	unsigned long bad_frames;
	bool busy;      /* an export is writing a DATA frame straight to fd */
	const void *busy_owner; /* ... this one */
};

struct exec {
	struct exec *next;
	struct session *s; /* NULL: orphaned, output dropped, no EXIT sent */
	uint32_t id;
	pid_t pid;         /* also the process group id */
	int in_fd, out_fd, err_fd;
	unsigned char *in;
	size_t inoff, inlen;
	bool in_close;     /* close stdin once the buffer is written */
	bool exited;
	int status;
	bool done;         /* freed by the sweep */
};

static struct session *sessions;
static struct exec *execs;
static struct xport *xports;

static struct xport *xport_find(struct session *s, uint32_t id);
static void xport_release(struct xport *x);
static void xport_signal(struct xport *x);
static void xport_pump(struct xport *x);
static bool xport_blocked(const struct xport *x);
static struct session *xport_session(const struct xport *x);
static bool xport_done(const struct xport *x);
static int sig_fd = -1;
static int vsock_fd = -1, unix_fd = -1;
static bool is_pid1;
static bool quitting;
static long long ready_ms;
static unsigned char iobuf[AP_CHUNK];

/* ---- output to the host ---- */

static void tx_add(struct session *s, const void *p, size_t n)
{
	if (!s || s->dead || (s->kind == S_PORT && !s->connected))
		return;
	if (s->txoff && s->txoff == s->txlen)
		s->txoff = s->txlen = 0;
	if (s->txlen + n > s->txcap) {
		if (s->txoff) {
			memmove(s->tx, s->tx + s->txoff, s->txlen - s->txoff);
			s->txlen -= s->txoff;
			s->txoff = 0;
		}
		if (s->txlen + n > s->txcap) {
			size_t cap = s->txcap ? s->txcap : 65536;
			while (cap < s->txlen + n)
				cap *= 2;
			unsigned char *t = realloc(s->tx, cap);
			if (!t) {
				agent_log("out of memory for output; dropping %zu bytes", n);
				return;
			}
			s->tx = t;
			s->txcap = cap;
		}
	}
	memcpy(s->tx + s->txlen, p, n);
	s->txlen += n;
}

static size_t tx_pending(const struct session *s)
{
	return s->txlen - s->txoff;
}

static void tx_buf(struct session *s, struct ap_buf *b)
{
	if (ap_end(b) == 0)
		tx_add(s, b->data, b->len);
	ap_buf_release(b);
}

static void send_raw(struct session *s, uint8_t type, uint32_t id, const void *p, size_t n)
{
	unsigned char h[AP_HDR_LEN];
	ap_hdr_pack(h, type, id, (uint32_t)n);
	tx_add(s, h, sizeof(h));
	tx_add(s, p, n);
}

static void send_error(struct session *s, uint32_t id, int req, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void send_error(struct session *s, uint32_t id, int req, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_ERROR, id);
	ap_put_int(&b, AP_F_REQ, req);
	ap_put_int(&b, AP_F_CODE, code);
	ap_put_str(&b, AP_F_MSG, msg);
	tx_buf(s, &b);
}

/* Write what can be written now; a write error means the host is gone. */
static void tx_flush(struct session *s)
{
	if (s->busy)
		return; /* a DATA frame is half written: nothing may come between */
	while (tx_pending(s)) {
		ssize_t n = write(s->fd, s->tx + s->txoff, tx_pending(s));
		if (n > 0) {
			s->txoff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		s->txoff = s->txlen = 0; /* host gone: nobody to read it */
		return;
	}
	s->txoff = s->txlen = 0;
}

/* Bounded blocking flush (before power-off). */
static void tx_drain(struct session *s, int ms)
{
	for (int waited = 0; tx_pending(s) && waited < ms; waited += 10) {
		tx_flush(s);
		if (!tx_pending(s))
			break;
		struct pollfd p = {s->fd, POLLOUT, 0};
		poll(&p, 1, 10);
	}
}

/* ---- commands ---- */

static struct exec *exec_find(struct session *s, uint32_t id)
{
	for (struct exec *e = execs; e; e = e->next)
		if (e->s == s && e->id == id && !e->done)
			return e;
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* The host can no longer see this command: kill its group, drop its output. */
static void exec_orphan(struct exec *e)
{
	if (!e->exited)
		kill(-e->pid, SIGKILL);
	e->s = NULL;
	close_fd(&e->in_fd);
}

static void session_lost(struct session *s);

static void session_drop_xports(struct session *s);
static void session_drop_imports(struct session *s);
static struct import *imp_find(struct session *s, uint32_t id);
static void imp_signal(struct import *x);

static void session_orphan_execs(struct session *s)
{
	for (struct exec *e = execs; e; e = e->next)
		if (e->s == s)
			exec_orphan(e);
	session_drop_xports(s);
	session_drop_imports(s);
}

/* Read one chunk of a command's output pipe; frame it unless orphaned.
 * Returns bytes read, 0 at EOF (the fd is then closed), -1 for EAGAIN. */
static ssize_t exec_read(struct exec *e, int *fd, uint8_t type)
{
	ssize_t n;
	do
		n = read(*fd, iobuf, sizeof(iobuf));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return -1;
	if (n <= 0) {
		close_fd(fd);
		return 0;
	}
	if (e->s)
		send_raw(e->s, type, e->id, iobuf, (size_t)n);
	return n;
}

static void exec_finish(struct exec *e)
{
	/* Everything the command wrote before it exited is in the pipes. */
	while (e->out_fd >= 0 && exec_read(e, &e->out_fd, AP_T_STDOUT) > 0) {
	}
	while (e->err_fd >= 0 && exec_read(e, &e->err_fd, AP_T_STDERR) > 0) {
	}
	close_fd(&e->out_fd);
	close_fd(&e->err_fd);
	close_fd(&e->in_fd);
	if (e->s) {
		struct ap_buf b;
		ap_buf_init(&b);
		ap_begin(&b, AP_T_EXIT, e->id);
		if (WIFSIGNALED(e->status))
			ap_put_int(&b, AP_F_SIGNO, WTERMSIG(e->status));
		else
			ap_put_int(&b, AP_F_CODE, WEXITSTATUS(e->status));
		tx_buf(e->s, &b);
	}
	e->done = true;
}

static const char *env_get(char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (; *env; env++)
		if (!strncmp(*env, name, n) && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

/* execvp with the PATH of the command's own environment.  Returns errno. */
static int exec_path(char *const *argv, char *const *env)
{
	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, env);
		return errno;
	}
	const char *path = env_get(env, "PATH");
	if (!path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	int err = ENOENT;
	char full[PATH_MAX];
	while (*path) {
		const char *end = strchr(path, ':');
		size_t dl = end ? (size_t)(end - path) : strlen(path);
		int n = snprintf(full, sizeof(full), "%.*s/%s", (int)dl, dl ? path : ".", argv[0]);
		if (n > 0 && (size_t)n < sizeof(full)) {
			execve(full, argv, env);
			if (errno == EACCES)
				err = EACCES;
			else if (errno != ENOENT && errno != ENOTDIR && err != EACCES)
				err = errno;
		}
		path += dl;
		if (*path == ':')
			path++;
	}
	return err;
}

/* The command's environment: defaults, overridden and extended by req. */
static char **build_env(const struct ap_exec_req *r)
{
	static const char *const defaults[] = {
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
	};
	size_t nd = sizeof(defaults) / sizeof(defaults[0]);
	char **env = calloc(nd + r->envc + 1, sizeof(char *));
	if (!env)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < nd; i++) {
		size_t kl = strcspn(defaults[i], "=") + 1;
		bool overridden = false;
		for (size_t j = 0; j < r->envc; j++)
			if (!strncmp(r->env[j], defaults[i], kl))
				overridden = true;
		if (!overridden)
			env[n++] = (char *)defaults[i];
	}
	for (size_t j = 0; j < r->envc; j++) {
		/* a later entry of the same name wins */
		size_t kl = strcspn(r->env[j], "=") + 1;
		bool later = false;
		for (size_t k = j + 1; k < r->envc; k++)
			if (!strncmp(r->env[k], r->env[j], kl))
				later = true;
		if (!later)
			env[n++] = r->env[j];
	}
	env[n] = NULL;
	return env;
}

struct spawn_err {
	int stage; /* 1 cwd, 2 exec, 3 setup */
	int err;
};

static void child_fail(int fd, int stage, int err)
{
	struct spawn_err se = {stage, err};
	if (write(fd, &se, sizeof(se)) < 0) {
		/* the parent will see EOF and a 127 exit */
	}
	_exit(127);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void exec_start(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	struct ap_exec_req r;
	const char *why;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1};
	char **env = NULL;
	struct exec *e = NULL;

	if (id == 0 || exec_find(s, id)) {
		send_error(s, id, AP_T_EXEC, EINVAL, "exec id %u is 0 or already in use", id);
		return;
	}
	int rc = ap_exec_decode(p, len, &r, &why);
	if (rc < 0) {
		send_error(s, id, AP_T_EXEC, rc == BG_ERR_NOMEM ? ENOMEM : EPROTO, "bad exec request: %s",
			   why ? why : "malformed");
		return;
	}
	env = build_env(&r);
	e = calloc(1, sizeof(*e));
	if (!env || !e) {
		send_error(s, id, AP_T_EXEC, ENOMEM, "out of memory");
		goto out;
	}
	if ((r.stdin_pipe && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
	    pipe2(err, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
		send_error(s, id, AP_T_EXEC, errno, "pipe: %s", strerror(errno));
		goto out;
	}
	pid_t pid = fork();
	if (pid < 0) {
		send_error(s, id, AP_T_EXEC, errno, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < 32; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				signal(sig, SIG_DFL);
		setsid();
		int in_fd = r.stdin_pipe ? in[0] : open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (in_fd < 0 || dup2(in_fd, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
			child_fail(ep[1], 3, errno);
		if (r.cwd && chdir(r.cwd) < 0)
			child_fail(ep[1], 1, errno);
		if (!r.cwd && chdir("/") < 0)
			child_fail(ep[1], 1, errno);
		child_fail(ep[1], 2, exec_path(r.argv, env));
	}
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&err[1]);
	close_fd(&ep[1]);
	struct spawn_err se;
	ssize_t n;
	do
		n = read(ep[0], &se, sizeof(se));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(se)) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
		}
		if (se.stage == 1)
			send_error(s, id, AP_T_EXEC, se.err, "cwd '%s': %s", r.cwd ? r.cwd : "/",
				   strerror(se.err));
		else if (se.stage == 2)
			send_error(s, id, AP_T_EXEC, se.err, "cannot run '%s': %s%s", r.argv[0],
				   strerror(se.err),
				   r.shell && se.err == ENOENT
					   ? " (the image has no shell: run an argv instead)"
					   : "");
		else
			send_error(s, id, AP_T_EXEC, se.err, "setting up the command: %s",
				   strerror(se.err));
		goto out;
	}
	e->s = s;
	e->id = id;
	e->pid = pid;
	e->in_fd = in[1];
	e->out_fd = out[0];
	e->err_fd = err[0];
	in[1] = out[0] = err[0] = -1;
	if (e->in_fd >= 0)
		set_nonblock(e->in_fd);
	set_nonblock(e->out_fd);
	set_nonblock(e->err_fd);
	e->next = execs;
	execs = e;
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_STARTED, id);
	ap_put_int(&b, AP_F_PID, pid);
	tx_buf(s, &b);
	e = NULL;
out:
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&ep[0]);
	close_fd(&ep[1]);
	free(e);
	free(env); /* the strings belong to r */
	ap_exec_req_release(&r);
}

static void exec_stdin(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	struct exec *e = exec_find(s, id);
	if (!e || e->in_fd < 0)
		return; /* ended, or its stdin is closed: the data has nowhere to go */
	if (len == 0) {
		e->in_close = true;
		return;
	}
	size_t pending = e->inlen - e->inoff;
	if (pending + len > AP_STDIN_BUFFER_MAX) {
		send_error(s, id, AP_T_STDIN, ENOBUFS,
			   "the command does not read its stdin fast enough (%u bytes buffered); "
			   "stdin closed",
			   AP_STDIN_BUFFER_MAX);
		close_fd(&e->in_fd);
		return;
	}
	if (e->inoff) {
		memmove(e->in, e->in + e->inoff, pending);
		e->inoff = 0;
		e->inlen = pending;
	}
	unsigned char *n = realloc(e->in, e->inlen + len);
	if (!n) {
		send_error(s, id, AP_T_STDIN, ENOMEM, "out of memory for stdin; stdin closed");
		close_fd(&e->in_fd);
		return;
	}
	e->in = n;
	memcpy(e->in + e->inlen, p, len);
	e->inlen += len;
}

static void exec_write_stdin(struct exec *e)
{
	while (e->in_fd >= 0 && e->inoff < e->inlen) {
		ssize_t n = write(e->in_fd, e->in + e->inoff, e->inlen - e->inoff);
		if (n > 0) {
			e->inoff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		close_fd(&e->in_fd); /* EPIPE: the command closed its stdin */
	}
	if (e->inoff == e->inlen) {
		free(e->in);
		e->in = NULL;
		e->inoff = e->inlen = 0;
		if (e->in_close)
			close_fd(&e->in_fd);
	}
}

static void exec_signal(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	int64_t sig;
	if (ap_get_int(p, len, AP_F_SIGNO, &sig) < 0 || sig < 1 || sig > 64) {
		send_error(s, id, AP_T_SIGNAL, EINVAL, "bad signal request");
		return;
	}
	struct xport *x = xport_find(s, id);
	if (x) {
		xport_signal(x);
		return;
	}
	struct import *im = imp_find(s, id);
	if (im) {
		imp_signal(im);
		return;
	}
	struct exec *e = exec_find(s, id);
	if (!e || e->exited) {
		send_error(s, id, AP_T_SIGNAL, ESRCH, "no running command with id %u", id);
		return;
	}
	if (kill(-e->pid, (int)sig) < 0)
		kill(e->pid, (int)sig);
}

/* ---- exports (EXPORT: a guest directory as an entry stream) ----
 *
 * One export is a depth-first walk (names sorted, one descriptor and one
 * name list per level, never following a symlink, not crossing into other
 * filesystems) that emits ENTRY frames through the session's buffer, and
 * for each regular file DATA frames written straight to the link: the
 * 12-byte header, then the payload moved from the file to the port with
 * splice(2) through a pipe (no copy in the guest; read/write when the
 * kernel refuses).  While a DATA frame is half written the session is busy
 * and tx_flush writes nothing else, so frames never interleave.  An export
 * makes progress only while the link takes its bytes (xport_pump returns
 * on EAGAIN and the loop polls for POLLOUT), and ENTRY frames stop at
 * TX_HIGH, so a slow host slows the walk instead of filling guest memory.
 */

#define XPORT_BUDGET (8u << 20) /* bytes per pump, so other sessions get turns */
#define XPORT_PIPE (1u << 20)
#define XPORT_MAX_DEPTH 512

struct xdir {
	int fd;
	char **names;
	size_t n, i;
	size_t plen; /* length of this directory's path (0: the root) */
	dev_t dev;
};

struct xhl {
	dev_t dev;
	ino_t ino;
	char *path;
};

struct xport {
	struct xport *next;
	struct session *s;
	uint32_t id;
	struct xdir *dirs;
	int depth, dcap;
	char path[8192];
	size_t plen;
	int file_fd;
	uint64_t file_left;
	int err;             /* errno of a file that failed mid-frame: ERROR after it */
	char errpath[512];
	int pipe_r, pipe_w;
	size_t in_pipe;
	bool splice_ok;
	unsigned char *cbuf; /* copy mode: bytes read and not yet written */
	size_t coff, clen;
	unsigned char hdr[AP_HDR_LEN];
	size_t hdr_off;
	size_t frame_left;
	bool frame_active;
	bool want_out;       /* blocked on the link: poll for POLLOUT */
	bool cancel, done;
	struct xhl *hl;
	size_t hlcap, hlcount;
	uint64_t entries, bytes;
};

static void xport_free_dirs(struct xport *x)
{
	for (int d = 0; d < x->depth; d++) {
		close_fd(&x->dirs[d].fd);
		for (size_t i = 0; i < x->dirs[d].n; i++)
			free(x->dirs[d].names[i]);
		free(x->dirs[d].names);
	}
	x->depth = 0;
}

/* End the export (its frames already sent, or the host gone). */
static void xport_finish(struct xport *x)
{
	xport_free_dirs(x);
	close_fd(&x->file_fd);
	close_fd(&x->pipe_r);
	close_fd(&x->pipe_w);
	if (x->frame_active && x->s && x->s->busy_owner == x)
		x->s->busy = false;
	x->frame_active = false;
	x->done = true;
}

static void xport_release(struct xport *x)
{
	for (size_t i = 0; i < x->hlcap; i++)
		free(x->hl[i].path);
	free(x->hl);
	free(x->dirs);
	free(x->cbuf);
	free(x);
}

static struct xport *xport_find(struct session *s, uint32_t id)
{
	for (struct xport *x = xports; x; x = x->next)
		if (x->s == s && x->id == id && !x->done)
			return x;
	return NULL;
}

static void session_drop_xports(struct session *s)
{
	for (struct xport *x = xports; x; x = x->next)
		if (x->s == s && !x->done) {
			xport_finish(x);
			x->s = NULL;
		}
	s->busy = false;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Push the directory fd (taken over) as a new level; -errno on failure. */
static int xport_push(struct xport *x, int fd, size_t plen)
{
	struct stat st;
	if (x->depth >= XPORT_MAX_DEPTH) {
		close(fd);
		return -ELOOP;
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	int dfd = dup(fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		close(fd);
		return -e;
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[n] = strdup(de->d_name)))
			break;
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_str);
	if (x->depth == x->dcap) {
		int ncap = x->dcap ? x->dcap * 2 : 16;
		struct xdir *nd = realloc(x->dirs, (size_t)ncap * sizeof(*nd));
		if (!nd) {
			for (size_t i = 0; i < n; i++)
				free(v[i]);
			free(v);
			close(fd);
			return -ENOMEM;
		}
		x->dirs = nd;
		x->dcap = ncap;
	}
	x->dirs[x->depth++] = (struct xdir){fd, v, n, 0, plen, st.st_dev};
	return 0;
}

static void xport_warn(struct xport *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xport_warn(struct xport *x, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_WARN, x->id);
	ap_put_str(&b, AP_F_PATH, x->path);
	ap_put_str(&b, AP_F_MSG, msg);
	tx_buf(x->s, &b);
}

static void xport_entry(struct xport *x, int type, const struct stat *st, const char *link)
{
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_ENTRY, x->id);
	ap_put_str(&b, AP_F_PATH, x->path);
	ap_put_int(&b, AP_F_TYPE, type);
	ap_put_int(&b, AP_F_MODE, st->st_mode & 07777);
	ap_put_int(&b, AP_F_UID, st->st_uid);
	ap_put_int(&b, AP_F_GID, st->st_gid);
	ap_put_int(&b, AP_F_MTIME, st->st_mtim.tv_sec);
	ap_put_int(&b, AP_F_MTIME_NS, st->st_mtim.tv_nsec);
	if (type == AP_E_REG)
		ap_put_int(&b, AP_F_SIZE, st->st_size);
	if (link)
		ap_put_str(&b, AP_F_LINK, link);
	tx_buf(x->s, &b);
	x->entries++;
}

/* The first path recorded for (dev, ino), or NULL after recording x->path. */
static const char *xport_hardlink(struct xport *x, dev_t dev, ino_t ino)
{
	if ((x->hlcount + 1) * 2 > x->hlcap) {
		size_t ncap = x->hlcap ? x->hlcap * 2 : 64;
		struct xhl *n = calloc(ncap, sizeof(*n));
		if (!n)
			return NULL; /* no memory: store it as a file of its own */
		for (size_t i = 0; i < x->hlcap; i++) {
			if (!x->hl[i].path)
				continue;
			size_t k = (size_t)(x->hl[i].ino * 2654435761u) & (ncap - 1);
			while (n[k].path)
				k = (k + 1) & (ncap - 1);
			n[k] = x->hl[i];
		}
		free(x->hl);
		x->hl = n;
		x->hlcap = ncap;
	}
	size_t k = (size_t)(ino * 2654435761u) & (x->hlcap - 1);
	for (; x->hl[k].path; k = (k + 1) & (x->hlcap - 1))
		if (x->hl[k].dev == dev && x->hl[k].ino == ino)
			return x->hl[k].path;
	char *p = strdup(x->path);
	if (p) {
		x->hl[k] = (struct xhl){dev, ino, p};
		x->hlcount++;
	}
	return NULL;
}

static void xport_end(struct xport *x)
{
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_END, x->id);
	ap_put_int(&b, AP_F_COUNT, (int64_t)x->entries);
	ap_put_int(&b, AP_F_BYTES, (int64_t)x->bytes);
	tx_buf(x->s, &b);
	xport_finish(x);
}

/* Emit the next entry (or END); may open a file to send. */
static void xport_next(struct xport *x)
{
	while (x->depth > 0) {
		struct xdir *d = &x->dirs[x->depth - 1];
		if (d->i == d->n) {
			close_fd(&d->fd);
			for (size_t i = 0; i < d->n; i++)
				free(d->names[i]);
			free(d->names);
			x->depth--;
			continue;
		}
		const char *name = d->names[d->i++];
		size_t nl = strlen(name);
		if (d->plen + 1 + nl >= sizeof(x->path) || d->plen + 1 + nl > AP_MAX_PATH) {
			x->plen = d->plen;
			x->path[x->plen] = 0;
			xport_warn(x, "a path under '%s' is longer than %u bytes; skipped",
				   d->plen ? x->path : ".", AP_MAX_PATH);
			continue;
		}
		x->plen = d->plen;
		if (x->plen)
			x->path[x->plen++] = '/';
		memcpy(x->path + x->plen, name, nl + 1);
		x->plen += nl;
		struct stat st;
		if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				xport_warn(x, "cannot stat: %s; skipped", strerror(errno));
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != d->dev) {
				xport_warn(x, "a mount point of another filesystem; skipped");
				continue;
			}
			int fd = openat(d->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int r = fd < 0 ? -errno : xport_push(x, fd, x->plen);
			if (r < 0) {
				xport_warn(x, "cannot read the directory: %s; skipped", strerror(-r));
				continue;
			}
			xport_entry(x, AP_E_DIR, &st, NULL);
			return;
		}
		if (S_ISLNK(st.st_mode)) {
			char t[AP_MAX_PATH + 2];
			ssize_t n = readlinkat(d->fd, name, t, sizeof(t));
			if (n <= 0 || (size_t)n > AP_MAX_PATH) {
				xport_warn(x, "cannot read the symlink; skipped");
				continue;
			}
			t[n] = 0;
			xport_entry(x, AP_E_SYMLINK, &st, t);
			return;
		}
		if (!S_ISREG(st.st_mode)) {
			xport_warn(x, "%s; skipped",
				   S_ISFIFO(st.st_mode)   ? "a fifo"
				   : S_ISSOCK(st.st_mode) ? "a socket"
							  : "a device");
			continue;
		}
		if (st.st_nlink > 1) {
			const char *first = xport_hardlink(x, st.st_dev, st.st_ino);
			if (first) {
				xport_entry(x, AP_E_HARDLINK, &st, first);
				return;
			}
		}
		int fd = openat(d->fd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
		if (fd < 0) {
			xport_warn(x, "cannot open: %s; skipped", strerror(errno));
			continue;
		}
		xport_entry(x, AP_E_REG, &st, NULL);
		if (st.st_size > 0) {
			x->file_fd = fd;
			x->file_left = (uint64_t)st.st_size;
		} else {
			close(fd);
		}
		return;
	}
	xport_end(x);
}

/* Fill the pipe or the copy buffer with up to want bytes of the file;
 * past an error or the file's end, zeros (the frame was promised). */
static void xport_fill(struct xport *x, size_t want)
{
	if (x->splice_ok && !x->err) {
		if (want > XPORT_PIPE)
			want = XPORT_PIPE;
		ssize_t n = splice(x->file_fd, NULL, x->pipe_w, NULL, want, SPLICE_F_MOVE);
		if (n > 0) {
			x->in_pipe = (size_t)n;
			return;
		}
		if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
			x->splice_ok = false; /* e.g. a filesystem without splice_read */
		} else {
			x->err = n == 0 ? ESTALE : errno;
			snprintf(x->errpath, sizeof(x->errpath), "%.480s", x->path);
		}
	}
	if (!x->cbuf && !(x->cbuf = malloc(AP_CHUNK))) {
		x->err = ENOMEM;
		snprintf(x->errpath, sizeof(x->errpath), "%.480s", x->path);
		return;
	}
	if (want > AP_CHUNK)
		want = AP_CHUNK;
	ssize_t n = 0;
	if (!x->err) {
		do
			n = read(x->file_fd, x->cbuf, want);
		while (n < 0 && errno == EINTR);
		if (n <= 0) {
			x->err = n == 0 ? ESTALE : errno;
			snprintf(x->errpath, sizeof(x->errpath), "%.480s", x->path);
		}
	}
	if (x->err) {
		memset(x->cbuf, 0, want);
		n = (ssize_t)want;
	}
	x->coff = 0;
	x->clen = (size_t)n;
}

/* Drive x until the link blocks, the budget is used or it ends. */
static void xport_pump(struct xport *x)
{
	struct session *s = x->s;
	size_t budget = XPORT_BUDGET;
	x->want_out = false;
	while (!x->done && budget) {
		if (x->frame_active) {
			ssize_t n;
			if (x->hdr_off < AP_HDR_LEN) {
				n = write(s->fd, x->hdr + x->hdr_off, AP_HDR_LEN - x->hdr_off);
			} else if (x->in_pipe) {
				n = splice(x->pipe_r, NULL, s->fd, NULL, x->in_pipe,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
				if (n < 0 && errno == EINVAL && x->hdr_off == AP_HDR_LEN) {
					/* the link cannot take spliced pages: move what is in the
					 * pipe through memory, copy from now on */
					x->splice_ok = false;
					if (!x->cbuf && !(x->cbuf = malloc(AP_CHUNK))) {
						x->err = ENOMEM;
						break;
					}
					size_t want = x->in_pipe < AP_CHUNK ? x->in_pipe : AP_CHUNK;
					n = read(x->pipe_r, x->cbuf, want);
					if (n > 0) {
						x->in_pipe -= (size_t)n;
						x->coff = 0;
						x->clen = (size_t)n;
					}
					continue;
				}
			} else if (x->coff < x->clen) {
				n = write(s->fd, x->cbuf + x->coff, x->clen - x->coff);
			} else {
				xport_fill(x, x->frame_left);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN) {
				x->want_out = true;
				return;
			}
			if (n <= 0) {
				session_lost(s); /* drops this export too */
				return;
			}
			if (x->hdr_off < AP_HDR_LEN) {
				x->hdr_off += (size_t)n;
				continue;
			}
			if (x->in_pipe)
				x->in_pipe -= (size_t)n;
			else
				x->coff += (size_t)n;
			x->frame_left -= (size_t)n;
			budget = (size_t)n < budget ? budget - (size_t)n : 0;
			if (!x->frame_left) {
				x->frame_active = false;
				s->busy = false;
				if (!x->file_left)
					close_fd(&x->file_fd);
			}
			continue;
		}
		if (x->err) {
			send_error(s, x->id, AP_T_EXPORT, x->err,
				   x->err == ESTALE ? "'%s' shrank while it was being exported"
						    : "reading '%s': %s",
				   x->errpath, strerror(x->err));
			xport_finish(x);
			return;
		}
		if (x->cancel) {
			send_error(s, x->id, AP_T_EXPORT, ECANCELED, "export cancelled by the host");
			xport_finish(x);
			return;
		}
		if (tx_pending(s) >= TX_HIGH)
			return; /* the loop polls POLLOUT for the session's buffer */
		if (x->file_fd >= 0 && x->file_left) {
			/* DATA bypasses the session buffer: it must be empty first,
			 * and no other export of the session may be mid-frame (two
			 * exports over one connection: frames never interleave) */
			if (s->busy && s->busy_owner != x) {
				x->want_out = true;
				return;
			}
			tx_flush(s);
			if (tx_pending(s)) {
				x->want_out = true;
				return;
			}
			size_t len = x->file_left < AP_MAX_PAYLOAD ? (size_t)x->file_left
								   : AP_MAX_PAYLOAD;
			ap_hdr_pack(x->hdr, AP_T_DATA, x->id, (uint32_t)len);
			x->hdr_off = 0;
			x->frame_left = len;
			x->file_left -= len;
			x->bytes += len;
			x->frame_active = true;
			s->busy = true;
			s->busy_owner = x;
			continue;
		}
		xport_next(x);
	}
}

static void xport_start(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	char *path = NULL;
	if (id == 0 || xport_find(s, id) || exec_find(s, id)) {
		send_error(s, id, AP_T_EXPORT, EINVAL, "export id %u is 0 or already in use", id);
		return;
	}
	if (ap_fields_check(p, len) < 0 || ap_get_str(p, len, AP_F_PATH, &path) < 0 ||
	    path[0] != '/') {
		send_error(s, id, AP_T_EXPORT, EINVAL, "bad export request: want an absolute PATH");
		free(path);
		return;
	}
	struct xport *x = calloc(1, sizeof(*x));
	if (!x) {
		send_error(s, id, AP_T_EXPORT, ENOMEM, "out of memory");
		free(path);
		return;
	}
	x->s = s;
	x->id = id;
	x->file_fd = x->pipe_r = x->pipe_w = -1;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = fd < 0 ? -errno : xport_push(x, fd, 0);
	if (r < 0) {
		if (r == -ENOENT)
			send_error(s, id, AP_T_EXPORT, ENOENT, "'%s' does not exist in the guest", path);
		else if (r == -ENOTDIR)
			send_error(s, id, AP_T_EXPORT, ENOTDIR, "'%s' is not a directory", path);
		else
			send_error(s, id, AP_T_EXPORT, -r, "cannot read '%s': %s", path, strerror(-r));
		free(path);
		xport_release(x);
		return;
	}
	free(path);
	int pp[2];
	if (pipe2(pp, O_CLOEXEC) == 0) {
		x->pipe_r = pp[0];
		x->pipe_w = pp[1];
		fcntl(x->pipe_w, F_SETPIPE_SZ, XPORT_PIPE);
		x->splice_ok = true;
	}
	x->next = xports;
	xports = x;
}

static void xport_signal(struct xport *x)
{
	x->cancel = true;
}

static bool xport_blocked(const struct xport *x)
{
	return x->want_out || (!x->frame_active && tx_pending(x->s) >= TX_HIGH);
}

static struct session *xport_session(const struct xport *x)
{
	return x->s;
}

static bool xport_done(const struct xport *x)
{
	return x->done;
}

/* ---- imports (IMPORT: a tree from the host into a guest directory) ----
 *
 * The reverse of an export, driven by the host's frames: IMPORT opens (or
 * creates) the destination, then each ENTRY creates one thing and each
 * DATA frame is written straight to the file being imported before the
 * next frame is parsed, so an import holds one frame in memory whatever
 * its size, and a slow disk slows the host down (the agent does not read
 * the link while a write blocks).  The agent never writes outside the
 * destination: every path is checked clean and relative by the codec, and
 * each directory on the way is opened from its parent's descriptor with
 * O_NOFOLLOW | O_DIRECTORY, so a symlink already in the guest tree is
 * never followed (the import fails naming it).  Files, symlinks and
 * hardlinks are made under a temporary name in their directory and
 * renamed over the final name: an existing file is replaced only by a
 * complete one, and a failed or cancelled import, or a host that goes
 * away, leaves no temporary (what was renamed into place before stays).
 * Directory modes and mtimes are applied at END (their contents change
 * their mtime while the import runs).  The first failure answers ERROR
 * naming the path and ends the import; the frames the host sent after it
 * are dropped (their id is no longer known).
 */

struct idir {
	char *path;
	uint32_t mode, uid, gid;
	int64_t mtime;
	uint32_t mtime_ns;
};

struct iino {
	dev_t dev;
	ino_t ino;
	bool used;
};

struct import {
	struct import *next;
	struct session *s;
	uint32_t id;
	char *dest;          /* as the host named it, for messages */
	int root_fd;
	bool single_mode;    /* TYPE=reg: one file */
	char *single;        /* single file onto this name in root_fd (not a directory) */
	char ppath[AP_MAX_PATH + 1]; /* the last parent directory resolved ... */
	int pfd;                     /* ... and its descriptor */
	int file_fd, file_dir;       /* the file being written, a dup of its directory */
	char tmp[64];
	struct ap_entry fe;          /* its entry */
	char *file_name;
	uint64_t left;
	unsigned seq;
	struct idir *dirs;
	size_t ndirs, dcap;
	struct iino *inos;           /* files written, for hardlinks */
	size_t icount, icap;
	uint64_t entries, bytes;
};

static struct import *imports;

static struct import *imp_find(struct session *s, uint32_t id)
{
	for (struct import *x = imports; x; x = x->next)
		if (x->s == s && x->id == id)
			return x;
	return NULL;
}

/* Unlink, close and free x; removes the file being written (if any). */
static void imp_destroy(struct import *x)
{
	for (struct import **px = &imports; *px; px = &(*px)->next) {
		if (*px == x) {
			*px = x->next;
			break;
		}
	}
	if (x->file_fd >= 0) {
		close_fd(&x->file_fd);
		unlinkat(x->file_dir, x->tmp, 0);
	}
	close_fd(&x->file_dir);
	close_fd(&x->pfd);
	close_fd(&x->root_fd);
	ap_entry_release(&x->fe);
	for (size_t i = 0; i < x->ndirs; i++)
		free(x->dirs[i].path);
	free(x->dirs);
	free(x->inos);
	free(x->file_name);
	free(x->single);
	free(x->dest);
	free(x);
}

static void imp_fail(struct import *x, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void imp_fail(struct import *x, int code, const char *fmt, ...)
{
	char msg[480];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	send_error(x->s, x->id, AP_T_IMPORT, code, "%s", msg);
	imp_destroy(x);
}

static void session_drop_imports(struct session *s)
{
	for (struct import *x = imports, *n; x; x = n) {
		n = x->next;
		if (x->s == s)
			imp_destroy(x);
	}
}

/* uid/gid as the host sent them; the agent in test mode is not root and
 * keeps its own where the kernel refuses. */
static bool imp_chown_ok(int r)
{
	return r == 0 || (errno == EPERM && geteuid() != 0);
}

static bool imp_ino_known(const struct import *x, dev_t dev, ino_t ino)
{
	if (!x->icap)
		return false;
	size_t k = (size_t)(ino * 2654435761u) & (x->icap - 1);
	for (; x->inos[k].used; k = (k + 1) & (x->icap - 1))
		if (x->inos[k].dev == dev && x->inos[k].ino == ino)
			return true;
	return false;
}

static void imp_ino_add(struct import *x, dev_t dev, ino_t ino)
{
	if ((x->icount + 1) * 2 > x->icap) {
		size_t ncap = x->icap ? x->icap * 2 : 256;
		struct iino *n = calloc(ncap, sizeof(*n));
		if (!n)
			return; /* a later hardlink to it fails with a clear message */
		for (size_t i = 0; i < x->icap; i++) {
			if (!x->inos[i].used)
				continue;
			size_t k = (size_t)(x->inos[i].ino * 2654435761u) & (ncap - 1);
			while (n[k].used)
				k = (k + 1) & (ncap - 1);
			n[k] = x->inos[i];
		}
		free(x->inos);
		x->inos = n;
		x->icap = ncap;
	}
	if (imp_ino_known(x, dev, ino))
		return;
	size_t k = (size_t)(ino * 2654435761u) & (x->icap - 1);
	while (x->inos[k].used)
		k = (k + 1) & (x->icap - 1);
	x->inos[k] = (struct iino){dev, ino, true};
	x->icount++;
}

/*
 * The directory that holds path (relative to the destination), opened
 * component by component from the destination with O_NOFOLLOW, and the
 * last component in *name.  Returns a descriptor x keeps (do not close),
 * or -errno with a message in why.
 */
static int imp_parent(struct import *x, const char *path, const char **name, char *why,
		      size_t wl)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		*name = path;
		return x->root_fd;
	}
	size_t plen = (size_t)(slash - path);
	*name = slash + 1;
	if (x->pfd >= 0 && strlen(x->ppath) == plen && !memcmp(x->ppath, path, plen))
		return x->pfd;
	close_fd(&x->pfd);
	int fd = dup(x->root_fd);
	if (fd < 0) {
		int e = errno;
		snprintf(why, wl, "'%s' in '%s': %s", path, x->dest, strerror(e));
		return -e;
	}
	size_t off = 0;
	while (off < plen) {
		char comp[256];
		size_t cl = strcspn(path + off, "/");
		if (cl > plen - off)
			cl = plen - off;
		memcpy(comp, path + off, cl); /* the codec allows 255 bytes per component */
		comp[cl] = 0;
		int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			int e = errno;
			struct stat st;
			int pl = (int)(off + cl);
			if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
				snprintf(why, wl, "'%.*s' in '%s' is a symlink in the guest; refused "
					 "(an import never follows a symlink)", pl, path, x->dest);
				e = ELOOP;
			} else if (e == ENOENT) {
				snprintf(why, wl, "'%.*s' in '%s' does not exist in the guest (the host "
					 "sends a directory before its contents)", pl, path, x->dest);
			} else if (e == ENOTDIR) {
				snprintf(why, wl, "'%.*s' in '%s' is not a directory in the guest", pl,
					 path, x->dest);
			} else {
				snprintf(why, wl, "cannot open '%.*s' in '%s': %s", pl, path, x->dest,
					 strerror(e));
			}
			close(fd);
			return -e;
		}
		close(fd);
		fd = nfd;
		off += cl + 1;
	}
	memcpy(x->ppath, path, plen);
	x->ppath[plen] = 0;
	x->pfd = fd;
	return fd;
}

/* The next temporary name (x->tmp): ".banger-import.ID.SEQ", short
 * enough for any directory; the caller creates it O_EXCL or with a call
 * that fails on EEXIST. */
static void imp_tmpname(struct import *x)
{
	x->seq++;
	snprintf(x->tmp, sizeof(x->tmp), ".banger-import.%u.%u", x->id, x->seq);
}

/* Rename the temporary over name; false (x failed and destroyed) on error. */
static bool imp_rename(struct import *x, int dfd, const char *name, const char *path)
{
	if (renameat(dfd, x->tmp, dfd, name) < 0) {
		int e = errno;
		unlinkat(dfd, x->tmp, 0);
		if (e == EISDIR || e == ENOTEMPTY || e == EEXIST)
			imp_fail(x, e, "'%s' in '%s' is a directory in the guest; refused to replace "
				 "it", path, x->dest);
		else
			imp_fail(x, e, "cannot rename '%s' into place in '%s': %s", path, x->dest,
				 strerror(e));
		return false;
	}
	/* renaming a hardlink over another name of the same file does nothing */
	unlinkat(dfd, x->tmp, 0);
	return true;
}

static void imp_file_done(struct import *x)
{
	const struct ap_entry *e = &x->fe;
	const char *path = e->path;
	struct timespec ts[2] = {{0, UTIME_OMIT}, {(time_t)e->mtime, (long)e->mtime_ns}};
	struct stat st;
	const char *what = "set the owner of";
	int r = fchown(x->file_fd, e->uid, e->gid);
	if (imp_chown_ok(r)) {
		what = "set the mode of";
		r = fchmod(x->file_fd, e->mode); /* after chown, which clears setuid */
		if (r == 0) {
			what = "set the mtime of";
			r = futimens(x->file_fd, ts);
		}
		if (r == 0) {
			what = "stat";
			r = fstat(x->file_fd, &st);
		}
	}
	if (r < 0) {
		imp_fail(x, errno, "cannot %s '%s' in '%s': %s", what, path, x->dest,
			 strerror(errno));
		return;
	}
	imp_ino_add(x, st.st_dev, st.st_ino);
	close_fd(&x->file_fd);
	if (!imp_rename(x, x->file_dir, x->file_name, path))
		return;
	close_fd(&x->file_dir);
	free(x->file_name);
	x->file_name = NULL;
	ap_entry_release(&x->fe);
}

static void imp_entry(struct import *x, const unsigned char *p, size_t len)
{
	struct ap_entry e;
	const char *why;
	char msg[480];
	if (x->file_fd >= 0) {
		imp_fail(x, EPROTO, "an entry came before the data of '%s' was complete",
			 x->fe.path);
		return;
	}
	if (ap_entry_decode(p, len, &e, &why) < 0) {
		imp_fail(x, EPROTO, "bad entry from the host: %s", why);
		return;
	}
	x->entries++;
	if (x->single_mode && (e.type != AP_E_REG || x->entries > 1 || strchr(e.path, '/'))) {
		imp_fail(x, EPROTO, "a single-file import carries exactly one file entry with a "
			 "plain name");
		ap_entry_release(&e);
		return;
	}
	const char *name;
	int dfd = x->single ? x->root_fd : imp_parent(x, e.path, &name, msg, sizeof(msg));
	if (x->single)
		name = x->single;
	if (dfd < 0) {
		imp_fail(x, -dfd, "%s", msg);
		ap_entry_release(&e);
		return;
	}
	struct timespec ts[2] = {{0, UTIME_OMIT}, {(time_t)e.mtime, (long)e.mtime_ns}};
	switch (e.type) {
	case AP_E_DIR: {
		if (mkdirat(dfd, name, 0700) < 0) {
			int err = errno;
			struct stat st;
			if (err != EEXIST || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				imp_fail(x, err, "cannot create the directory '%s' in '%s': %s", e.path,
					 x->dest, strerror(err));
				break;
			}
			if (S_ISLNK(st.st_mode)) {
				imp_fail(x, ELOOP, "'%s' in '%s' is a symlink in the guest; refused (an "
					 "import never follows a symlink)", e.path, x->dest);
				break;
			}
			if (!S_ISDIR(st.st_mode)) {
				imp_fail(x, ENOTDIR, "'%s' in '%s' exists in the guest and is not a "
					 "directory", e.path, x->dest);
				break;
			}
		}
		if (x->ndirs == x->dcap) {
			size_t ncap = x->dcap ? x->dcap * 2 : 64;
			struct idir *nd = realloc(x->dirs, ncap * sizeof(*nd));
			if (!nd) {
				imp_fail(x, ENOMEM, "out of memory");
				break;
			}
			x->dirs = nd;
			x->dcap = ncap;
		}
		x->dirs[x->ndirs++] = (struct idir){e.path, e.mode, e.uid, e.gid, e.mtime, e.mtime_ns};
		e.path = NULL; /* kept in dirs */
		break;
	}
	case AP_E_REG: {
		int fd = -1;
		for (int tries = 0; fd < 0 && tries < 100; tries++) {
			imp_tmpname(x);
			fd = openat(dfd, x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				    0600);
			if (fd < 0 && errno != EEXIST)
				break;
		}
		int dup_fd = fd >= 0 ? dup(dfd) : -1;
		x->file_name = strdup(name);
		if (fd < 0 || dup_fd < 0 || !x->file_name) {
			int err = fd < 0 || dup_fd < 0 ? errno : ENOMEM;
			if (fd >= 0) {
				close(fd);
				unlinkat(dfd, x->tmp, 0);
			}
			if (dup_fd >= 0)
				close(dup_fd);
			imp_fail(x, err, "cannot create '%s' in '%s': %s", e.path, x->dest,
				 strerror(err));
			break;
		}
		x->file_fd = fd;
		x->file_dir = dup_fd;
		x->left = e.size;
		x->fe = e;
		memset(&e, 0, sizeof(e)); /* owned by x->fe now */
		if (!x->left)
			imp_file_done(x);
		break;
	}
	case AP_E_SYMLINK: {
		imp_tmpname(x);
		int r = symlinkat(e.link, dfd, x->tmp);
		const char *what = "create the symlink";
		if (r == 0) {
			what = "set the owner of the symlink";
			r = fchownat(dfd, x->tmp, e.uid, e.gid, AT_SYMLINK_NOFOLLOW);
			if (imp_chown_ok(r)) {
				what = "set the mtime of the symlink";
				r = utimensat(dfd, x->tmp, ts, AT_SYMLINK_NOFOLLOW);
			}
			if (r < 0) {
				int err = errno;
				unlinkat(dfd, x->tmp, 0);
				errno = err;
			}
		}
		if (r < 0) {
			imp_fail(x, errno, "cannot %s '%s' in '%s': %s", what, e.path, x->dest,
				 strerror(errno));
			break;
		}
		imp_rename(x, dfd, name, e.path);
		break;
	}
	case AP_E_HARDLINK: {
		/* the earlier file: looked up the same way, never through a symlink */
		const char *sname;
		int sfd = imp_parent(x, e.link, &sname, msg, sizeof(msg));
		if (sfd < 0) {
			imp_fail(x, -sfd, "hardlink '%s': %s", e.path, msg);
			break;
		}
		struct stat st;
		int keep = dup(sfd);
		if (keep < 0 || fstatat(keep, sname, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || !imp_ino_known(x, st.st_dev, st.st_ino)) {
			if (keep >= 0)
				close(keep);
			imp_fail(x, EINVAL, "hardlink '%s' in '%s' names '%s', which is not a file "
				 "this import wrote", e.path, x->dest, e.link);
			break;
		}
		dfd = imp_parent(x, e.path, &name, msg, sizeof(msg));
		if (dfd < 0) {
			close(keep);
			imp_fail(x, -dfd, "%s", msg);
			break;
		}
		imp_tmpname(x);
		if (linkat(keep, sname, dfd, x->tmp, 0) < 0) {
			int err = errno;
			close(keep);
			imp_fail(x, err, "cannot link '%s' to '%s' in '%s': %s", e.path, e.link,
				 x->dest, strerror(err));
			break;
		}
		close(keep);
		imp_rename(x, dfd, name, e.path);
		break;
	}
	}
	ap_entry_release(&e);
}

static void imp_data(struct import *x, const unsigned char *p, size_t len)
{
	if (x->file_fd < 0 || len > x->left) {
		imp_fail(x, EPROTO, "file data beyond the size its entry gave");
		return;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(x->file_fd, p + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : ENOSPC;
			imp_fail(x, e, "writing '%s' in '%s': %s", x->fe.path, x->dest, strerror(e));
			return;
		}
		off += (size_t)n;
	}
	x->left -= len;
	x->bytes += len;
	if (!x->left)
		imp_file_done(x);
}

static void imp_end(struct import *x, const unsigned char *p, size_t len)
{
	int64_t n = -1, bytes = -1;
	char msg[480];
	if (x->file_fd >= 0) {
		imp_fail(x, EPROTO, "the import ended before the data of '%s' was complete",
			 x->fe.path);
		return;
	}
	ap_get_int(p, len, AP_F_COUNT, &n);
	ap_get_int(p, len, AP_F_BYTES, &bytes);
	if (n != (int64_t)x->entries || bytes != (int64_t)x->bytes) {
		imp_fail(x, EPROTO, "the host's end of the import (%lld entries, %lld bytes) does "
			 "not match what arrived (%llu, %llu)", (long long)n, (long long)bytes,
			 (unsigned long long)x->entries, (unsigned long long)x->bytes);
		return;
	}
	/* directories last, deepest first: their contents changed their mtimes */
	for (size_t i = x->ndirs; i-- > 0;) {
		const struct idir *d = &x->dirs[i];
		const char *name;
		int pfd = imp_parent(x, d->path, &name, msg, sizeof(msg));
		if (pfd < 0) {
			imp_fail(x, -pfd, "%s", msg);
			return;
		}
		int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct timespec ts[2] = {{0, UTIME_OMIT}, {(time_t)d->mtime, (long)d->mtime_ns}};
		int r = fd < 0 ? -1 : fchown(fd, d->uid, d->gid);
		if (fd >= 0 && imp_chown_ok(r))
			r = fchmod(fd, d->mode) < 0 || futimens(fd, ts) < 0 ? -1 : 0;
		if (r < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			imp_fail(x, e, "cannot set the mode, owner or mtime of the directory '%s' in "
				 "'%s': %s", d->path, x->dest, strerror(e));
			return;
		}
		close(fd);
	}
	syncfs(x->root_fd);
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_OK, x->id);
	ap_put_int(&b, AP_F_REQ, AP_T_IMPORT);
	ap_put_int(&b, AP_F_COUNT, (int64_t)x->entries);
	ap_put_int(&b, AP_F_BYTES, (int64_t)x->bytes);
	tx_buf(x->s, &b);
	imp_destroy(x);
}

/* SIGNAL to the id: the host cancels (its cancel callback, a timeout). */
static void imp_signal(struct import *x)
{
	imp_fail(x, ECANCELED, "the import into '%s' was cancelled by the host", x->dest);
}

/* ENTRY, DATA or END from the host.  Frames of an id that is not an
 * import (any more) are the tail of one that failed: dropped. */
static void imp_frame(struct session *s, const struct ap_hdr *h, const unsigned char *p)
{
	struct import *x = imp_find(s, h->id);
	if (!x)
		return;
	if (h->type == AP_T_ENTRY)
		imp_entry(x, p, h->len);
	else if (h->type == AP_T_DATA)
		imp_data(x, p, h->len);
	else
		imp_end(x, p, h->len);
}

static void imp_start(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	char *path = NULL;
	int64_t type = AP_E_DIR;
	if (id == 0 || imp_find(s, id) || xport_find(s, id) || exec_find(s, id)) {
		send_error(s, id, AP_T_IMPORT, EINVAL, "import id %u is 0 or already in use", id);
		return;
	}
	if (ap_fields_check(p, len) < 0 || ap_get_str(p, len, AP_F_PATH, &path) < 0 ||
	    path[0] != '/' || (ap_get_int(p, len, AP_F_TYPE, &type) == 0 && type != AP_E_DIR &&
			       type != AP_E_REG)) {
		send_error(s, id, AP_T_IMPORT, EINVAL,
			   "bad import request: want an absolute PATH and TYPE dir or reg");
		free(path);
		return;
	}
	struct import *x = calloc(1, sizeof(*x));
	if (!x) {
		send_error(s, id, AP_T_IMPORT, ENOMEM, "out of memory");
		free(path);
		return;
	}
	x->s = s;
	x->id = id;
	x->dest = path;
	x->root_fd = x->pfd = x->file_fd = x->file_dir = -1;
	x->single_mode = type == AP_E_REG;
	x->next = imports;
	imports = x;
	if (!x->single_mode) {
		int mk = init_mkdir_parents(path) < 0 ? errno : 0;
		x->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (x->root_fd < 0) {
			int e = errno;
			if (e == ENOTDIR || (mk == EEXIST && e == ENOENT))
				imp_fail(x, ENOTDIR, "'%s' exists in the guest and is not a directory",
					 path);
			else
				imp_fail(x, mk ? mk : e, "cannot create the directory '%s' in the guest: "
					 "%s", path, strerror(mk ? mk : e));
		}
		return;
	}
	/* one file: into PATH when it is a directory, else onto PATH */
	x->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (x->root_fd >= 0)
		return;
	int e = errno;
	size_t n = strlen(path);
	if ((e != ENOENT && e != ENOTDIR) || path[n - 1] == '/') {
		imp_fail(x, e == ENOENT ? ENOTDIR : e, "'%s' is not a directory in the guest%s", path,
			 e == ENOENT ? " (it does not exist)" : "");
		return;
	}
	char *slash = strrchr(path, '/');
	const char *base = slash + 1;
	if (!strcmp(base, ".") || !strcmp(base, "..")) {
		imp_fail(x, EINVAL, "'%s' does not name a file", path);
		return;
	}
	x->single = strdup(base);
	*slash = 0;
	x->root_fd = open(slash == path ? "/" : path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	e = errno;
	*slash = '/';
	if (!x->single) {
		imp_fail(x, ENOMEM, "out of memory");
	} else if (x->root_fd < 0) {
		imp_fail(x, e, "the directory of '%s' %s in the guest", path,
			 e == ENOENT ? "does not exist" : strerror(e));
	}
}

/* ---- MOUNT ---- */

static void mount_req(struct session *s, uint32_t id, const unsigned char *p, size_t len)
{
	char *dev = NULL, *path = NULL, *fs = NULL;
	int64_t ro = 0;
	if (ap_fields_check(p, len) < 0 || ap_get_str(p, len, AP_F_DEV, &dev) < 0 ||
	    ap_get_str(p, len, AP_F_PATH, &path) < 0) {
		send_error(s, id, AP_T_MOUNT, EINVAL, "bad mount request: want DEV and PATH");
		goto out;
	}
	if (ap_get_str(p, len, AP_F_FSTYPE, &fs) < 0)
		fs = NULL;
	ap_get_int(p, len, AP_F_RO, &ro);
	char why[300];
	int r = init_mount_disk(dev, path, fs, ro != 0, 5000, why, sizeof(why));
	if (r < 0) {
		send_error(s, id, AP_T_MOUNT, -r, "%s", why);
		goto out;
	}
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_OK, id);
	ap_put_int(&b, AP_F_REQ, AP_T_MOUNT);
	tx_buf(s, &b);
out:
	free(dev);
	free(path);
	free(fs);
}

/* ---- requests ---- */

static void reply_hello(struct session *s, uint32_t id)
{
	struct utsname u;
	struct ap_buf b;
	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "unknown");
	ap_buf_init(&b);
	ap_begin(&b, AP_T_HELLO_REPLY, id);
	ap_put_int(&b, AP_F_VERSION, AP_VERSION);
	ap_put_str(&b, AP_F_AGENT, AGENT_NAME);
	ap_put_str(&b, AP_F_KERNEL, u.release);
	ap_put_int(&b, AP_F_UPTIME_MS, ready_ms);
	tx_buf(s, &b);
}

static void kill_all_execs(void)
{
	for (struct exec *e = execs; e; e = e->next)
		if (!e->exited)
			kill(-e->pid, SIGKILL);
}

static void poweroff(struct session *s)
{
	struct ap_buf b;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_OK, 0);
	ap_put_int(&b, AP_F_REQ, AP_T_POWEROFF);
	if (!is_pid1) {
		tx_buf(s, &b);
		tx_drain(s, 1000);
		kill_all_execs();
		quitting = true;
		return;
	}
	agent_log("power-off requested");
	sync();
	tx_buf(s, &b);
	tx_drain(s, 1000);
	init_poweroff();
}

static void dispatch(struct session *s, const struct ap_hdr *h, const unsigned char *p)
{
	switch (h->type) {
	case AP_T_HELLO:
		reply_hello(s, h->id);
		break;
	case AP_T_EXEC:
		exec_start(s, h->id, p, h->len);
		break;
	case AP_T_STDIN:
		exec_stdin(s, h->id, p, h->len);
		break;
	case AP_T_SIGNAL:
		exec_signal(s, h->id, p, h->len);
		break;
	case AP_T_POWEROFF:
		poweroff(s);
		break;
	case AP_T_MOUNT:
		mount_req(s, h->id, p, h->len);
		break;
	case AP_T_EXPORT:
		xport_start(s, h->id, p, h->len);
		break;
	case AP_T_IMPORT:
		imp_start(s, h->id, p, h->len);
		break;
	case AP_T_ENTRY:
	case AP_T_DATA:
	case AP_T_END:
		imp_frame(s, h, p);
		break;
	default:
		/* a valid agent->host type sent to the agent */
		send_error(s, h->id, h->type, EPROTO, "frame type '%s' is not a request",
			   ap_type_name(h->type));
		break;
	}
}

/* A new host connection (SYNC): forget what the last one started. */
static void session_sync(struct session *s)
{
	session_orphan_execs(s);
	s->discard = false;
	tx_add(s, AP_SYNC, AP_SYNC_LEN);
}

static void bad_frame(struct session *s, const char *why)
{
	if (s->bad_frames++ < 10)
		agent_log("bad frame from the host (%s); discarding input until the next sync", why);
	send_error(s, 0, 0, EPROTO, "bad frame: %s; discarding input until sync", why);
	s->discard = true;
}

static void rx_consume(struct session *s, size_t n)
{
	memmove(s->rx, s->rx + n, s->rxlen - n);
	s->rxlen -= n;
}

static void session_parse(struct session *s)
{
	while (s->rxlen && !quitting) {
		if (s->discard) {
			size_t keep;
			long at = ap_sync_find(s->rx, s->rxlen, &keep);
			if (at < 0) {
				rx_consume(s, s->rxlen - keep);
				return;
			}
			rx_consume(s, (size_t)at + AP_SYNC_LEN);
			session_sync(s);
			continue;
		}
		if (s->rx[0] == AP_SYNC[0]) {
			size_t n = s->rxlen < AP_SYNC_LEN ? s->rxlen : AP_SYNC_LEN;
			if (memcmp(s->rx, AP_SYNC, n) != 0) {
				bad_frame(s, "bad sync marker");
				continue;
			}
			if (n < AP_SYNC_LEN)
				return;
			rx_consume(s, AP_SYNC_LEN);
			session_sync(s);
			continue;
		}
		if (s->rxlen < AP_HDR_LEN)
			return;
		struct ap_hdr h;
		const char *why;
		if (ap_hdr_parse(s->rx, &h, &why) < 0) {
			bad_frame(s, why);
			continue;
		}
		if (s->rxlen < AP_HDR_LEN + (size_t)h.len)
			return;
		dispatch(s, &h, s->rx + AP_HDR_LEN);
		rx_consume(s, AP_HDR_LEN + h.len);
	}
}

/* Host went away: its commands die, its queued output is dropped. */
static void session_lost(struct session *s)
{
	session_orphan_execs(s);
	s->rxlen = 0;
	s->txoff = s->txlen = 0;
	s->discard = false;
	if (s->kind == S_PORT) {
		s->connected = false;
	} else {
		close_fd(&s->fd);
		s->dead = true;
	}
}

static void session_read(struct session *s)
{
	size_t took = 0;
	for (;;) {
		if (took >= RX_BUDGET)
			return; /* let the loop serve the others; poll says POLLIN again */
		if (s->rxcap - s->rxlen < AP_CHUNK) {
			size_t cap = s->rxcap ? s->rxcap * 2 : 2 * AP_CHUNK;
			if (cap > RX_MAX + AP_CHUNK)
				cap = RX_MAX + AP_CHUNK;
			if (cap <= s->rxcap) {
				session_parse(s); /* full: a whole frame must be there */
				return;
			}
			unsigned char *n = realloc(s->rx, cap);
			if (!n)
				return;
			s->rx = n;
			s->rxcap = cap;
		}
		ssize_t n = read(s->fd, s->rx + s->rxlen, s->rxcap - s->rxlen);
		if (n > 0) {
			s->rxlen += (size_t)n;
			took += (size_t)n;
			session_parse(s);
			if (quitting || s->dead)
				return;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		/* 0: a virtio port whose host end is closed, or a closed socket */
		session_lost(s);
		return;
	}
}

static struct session *session_new(enum sess_kind kind, int fd)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return NULL;
	}
	s->kind = kind;
	s->fd = fd;
	s->connected = kind == S_STREAM;
	s->next = sessions;
	sessions = s;
	return s;
}

/* ---- the virtio-serial port and listeners ---- */

static int open_port(const char *name, int wait_ms)
{
	char path[320], buf[128];
	for (int waited = 0;; waited += 20) {
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n <= 0)
				continue;
			buf[n] = 0;
			buf[strcspn(buf, "\n")] = 0;
			if (strcmp(buf, name) != 0)
				continue;
			snprintf(path, sizeof(path), "/dev/%s", e->d_name);
			fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
			if (fd >= 0) {
				closedir(d);
				return fd;
			}
		}
		if (d)
			closedir(d);
		if (waited >= wait_ms)
			return -1;
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void listen_vsock(void)
{
	struct sockaddr_vm a;
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		agent_log("vsock: not available (%s)", strerror(errno));
		return;
	}
	memset(&a, 0, sizeof(a));
	a.svm_family = AF_VSOCK;
	a.svm_cid = VMADDR_CID_ANY;
	a.svm_port = AP_VSOCK_PORT;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0) {
		agent_log("vsock: not available (%s)", strerror(errno));
		close(fd);
		return;
	}
	vsock_fd = fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un a;
	if (strlen(path) >= sizeof(a.sun_path)) {
		agent_log("--listen: path too long");
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, path, strlen(path) + 1);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0) {
		agent_log("--listen %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void accept_on(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd >= 0)
		session_new(S_STREAM, fd);
}

/* ---- reaping ---- */

static void reap(void)
{
	struct signalfd_siginfo si;
	while (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
	}
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (struct exec *e = execs; e; e = e->next) {
			if (e->pid == pid && !e->exited) {
				e->exited = true;
				e->status = st;
				exec_finish(e);
				break;
			}
		}
	}
}

static void sweep(void)
{
	for (struct xport **px = &xports; *px;) {
		struct xport *x = *px;
		if (xport_done(x)) {
			*px = x->next;
			xport_release(x);
		} else {
			px = &x->next;
		}
	}
	for (struct exec **pe = &execs; *pe;) {
		struct exec *e = *pe;
		if (e->done) {
			*pe = e->next;
			free(e->in);
			free(e);
		} else {
			pe = &e->next;
		}
	}
	for (struct session **ps = &sessions; *ps;) {
		struct session *s = *ps;
		if (s->dead) {
			*ps = s->next;
			free(s->rx);
			free(s->tx);
			free(s);
		} else {
			ps = &s->next;
		}
	}
}

/* ---- the loop ---- */

enum { W_SIG, W_LISTEN, W_SESSION, W_OUT, W_ERR, W_IN };
struct watch {
	int what;
	void *ptr;
};

static void serve(void)
{
	size_t cap = 0;
	struct pollfd *pfd = NULL;
	struct watch *w = NULL;

	while (!quitting) {
		size_t n = 0, need = 3;
		bool recheck = false;
		for (struct session *s = sessions; s; s = s->next)
			need++;
		for (struct exec *e = execs; e; e = e->next)
			need += 3;
		if (need > cap) {
			cap = need * 2;
			struct pollfd *np = realloc(pfd, cap * sizeof(*pfd));
			if (np)
				pfd = np;
			struct watch *nw = realloc(w, cap * sizeof(*w));
			if (nw)
				w = nw;
			if (!np || !nw) {
				agent_log("out of memory in the poll loop");
				struct timespec ts = {0, 100 * 1000000L};
				nanosleep(&ts, NULL);
				cap = 0;
				continue;
			}
		}
#define WATCH(fd_, ev_, what_, ptr_)                                     \
	do {                                                             \
		pfd[n] = (struct pollfd){(fd_), (short)(ev_), 0};         \
		w[n] = (struct watch){(what_), (ptr_)};                  \
		n++;                                                     \
	} while (0)
		WATCH(sig_fd, POLLIN, W_SIG, NULL);
		if (vsock_fd >= 0)
			WATCH(vsock_fd, POLLIN, W_LISTEN, &vsock_fd);
		if (unix_fd >= 0)
			WATCH(unix_fd, POLLIN, W_LISTEN, &unix_fd);
		for (struct session *s = sessions; s; s = s->next) {
			if (s->dead)
				continue;
			if (s->kind == S_PORT && !s->connected) {
				recheck = true;
				continue;
			}
			bool out = tx_pending(s) > 0;
			for (struct xport *x = xports; x && !out; x = x->next)
				out = !xport_done(x) && xport_session(x) == s && xport_blocked(x);
			WATCH(s->fd, POLLIN | (out ? POLLOUT : 0), W_SESSION, s);
		}
		for (struct exec *e = execs; e; e = e->next) {
			if (e->done)
				continue;
			bool room = !e->s || tx_pending(e->s) < TX_HIGH;
			if (e->out_fd >= 0 && room)
				WATCH(e->out_fd, POLLIN, W_OUT, e);
			if (e->err_fd >= 0 && room)
				WATCH(e->err_fd, POLLIN, W_ERR, e);
			if (e->in_fd >= 0 && (e->inoff < e->inlen || e->in_close))
				WATCH(e->in_fd, POLLOUT, W_IN, e);
		}
#undef WATCH
		int tmo = recheck ? PORT_RECHECK_MS : -1;
		for (struct xport *x = xports; x; x = x->next)
			if (!xport_done(x) && xport_session(x) && !xport_blocked(x))
				tmo = 0; /* an export can go on at once */
		int r = poll(pfd, n, tmo);
		if (r < 0 && errno != EINTR) {
			agent_log("poll: %s", strerror(errno));
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		for (size_t i = 0; r > 0 && i < n && !quitting; i++) {
			short re = pfd[i].revents;
			if (!re)
				continue;
			switch (w[i].what) {
			case W_SIG:
				reap();
				break;
			case W_LISTEN:
				accept_on(*(int *)w[i].ptr);
				break;
			case W_SESSION: {
				struct session *s = w[i].ptr;
				if (s->dead || (s->kind == S_PORT && !s->connected))
					break;
				if (re & (POLLIN | POLLHUP | POLLERR))
					session_read(s);
				if (!s->dead && (re & POLLOUT))
					tx_flush(s);
				break;
			}
			case W_OUT:
			case W_ERR: {
				struct exec *e = w[i].ptr;
				int *fd = w[i].what == W_OUT ? &e->out_fd : &e->err_fd;
				if (!e->done && *fd == pfd[i].fd)
					exec_read(e, fd, w[i].what == W_OUT ? AP_T_STDOUT : AP_T_STDERR);
				break;
			}
			case W_IN: {
				struct exec *e = w[i].ptr;
				if (!e->done && e->in_fd == pfd[i].fd)
					exec_write_stdin(e);
				break;
			}
			}
		}
		/* Reconnection of the virtio port: POLLHUP while nobody is there. */
		for (struct session *s = sessions; s; s = s->next) {
			if (s->kind != S_PORT || s->connected)
				continue;
			struct pollfd p = {s->fd, POLLIN, 0};
			if (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP))
				s->connected = true;
		}
		/* Push out what was queued in this round, then let exports go on
		 * (each stops when its link blocks). */
		for (struct session *s = sessions; s; s = s->next)
			if (!s->dead && s->connected && tx_pending(s))
				tx_flush(s);
		for (struct xport *x = xports; x && !quitting; x = x->next) {
			struct session *s = xport_session(x);
			if (!xport_done(x) && s && !s->dead && s->connected)
				xport_pump(x);
		}
		sweep();
	}
	free(pfd);
	free(w);
}

static int setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	return sig_fd < 0 ? -1 : 0;
}

static int pid1_main(void)
{
	struct init_cmdline c;
	char line[4096] = "";

	init_early();
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, line, sizeof(line) - 1);
		line[n > 0 ? n : 0] = 0;
		close(fd);
	}
	init_parse_cmdline(line, &c);
	if (c.probe) {
		agent_log("probe ok");
		init_poweroff(); /* never returns */
	}
	setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
	int nmod = init_load_modules(c.modules);
	if (c.root[0] && init_switch_root(&c) == 0)
		init_late_mounts(&c);
	init_network(&c);
	if (setup_signals() < 0)
		agent_log("signalfd: %s", strerror(errno));
	/* banger.port=none: no virtio-serial port (Firecracker: vsock only) */
	int port = strcmp(c.port, "none") != 0 ? open_port(c.port, 10000) : -1;
	if (port < 0)
		agent_log("virtio-serial port '%s' not found", c.port);
	else
		session_new(S_PORT, port);
	listen_vsock();
	ready_ms = init_uptime_ms();
	agent_log("ready after %lld ms (%d modules, port %s%s)", ready_ms, nmod,
		  port >= 0 ? c.port : "none", vsock_fd >= 0 ? ", vsock" : "");
	for (;;) {
		serve(); /* returns only when quitting, which PID 1 never does */
		quitting = false;
	}
	return 0;
}

static int test_main(const char *path)
{
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (setup_signals() < 0) {
		agent_log("signalfd: %s", strerror(errno));
		return 1;
	}
	unix_fd = listen_unix(path);
	if (unix_fd < 0)
		return 1;
	ready_ms = init_uptime_ms();
	agent_log("ready (test mode, listening on %s)", path);
	serve();
	unlink(path);
	return 0;
}

int main(int argc, char **argv)
{
	/* fds 0-2 must be taken, or a pipe could land on them */
	int fd;
	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
	}
	if (fd > 2)
		close(fd);
	if (getpid() == 1) {
		is_pid1 = true;
		return pid1_main();
	}
	if (argc == 2 && !strcmp(argv[1], "--version")) {
		printf("%s (protocol %d)\n", AGENT_NAME, AP_VERSION);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--listen"))
		return test_main(argv[2]);
	fprintf(stderr,
		"usage: banger-agent --listen SOCKET   (test mode; as PID 1 it needs no arguments)\n"
		"       banger-agent --version\n");
	return 2;
}
