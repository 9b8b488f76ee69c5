/*
 * vm_tool.c: a test tool over worker/qemu.c and worker/agent.c, so the
 * integration tests (tests/integration/t_vm.sh) can boot a guest, run
 * commands in it and stop it before vm.create/vm.exec/vm.delete exist.
 * Never installed.
 *
 *   vm-tool start  --run-dir D (--kernel-dir KD | --kernel K --initrd I)
 *                  [--rootfs R] [--ro] [--accel auto|kvm|tcg] [--machine microvm|q35]
 *                  [--mem MB] [--vcpus N] [--timeout S] [--user-net] [--ip ADDR/P,GW]
 *                  [--append PARAMS] [--probe-cache F] [--name N]
 *        boots, waits for the agent (bounded), leaves QEMU running; prints
 *        "pid=P accel=A boot_s=S guest_uptime_ms=U kernel=R".  On failure
 *        QEMU is killed before the tool exits 1.
 *   vm-tool argv   (the options of start): prints QEMU's argv, one per line
 *   vm-tool exec   (--run-dir D | --sock S) [--timeout S] [--connect-timeout S]
 *                  [--env K=V]... [--cwd DIR]
 *                  [--stdin-file F] [--signal-after MS:SIG] (--sh LINE | -- ARGV...)
 *        streams the guest's stdout/stderr to its own; exits with the
 *        command's code, 128+N when killed by signal N, 124 on timeout, 125
 *        when the command could not run (message on stderr).
 *   vm-tool parallel (--run-dir D | --sock S) --n N --sh LINE
 *        N commands at once on one connection, each with I=0..N-1 in its
 *        environment; each must print "out-$I" and exit $I.
 *   vm-tool rtt    (--run-dir D | --sock S) --n N
 *        runs `true` N times over one connection; prints p50/p99 in ms
 *   vm-tool garbage (--run-dir D | --sock S) --kind K
 *        sends one kind of garbage (random, badmagic, toolong, badexec,
 *        badsync, hosttype, truncated), prints the agent's error replies.
 *   vm-tool stop   --run-dir D [--grace S]   power off through the agent
 *   vm-tool kill   --run-dir D
 *   vm-tool status --run-dir D               QMP query-status
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "err.h"
#include "log.h"
#include "qemu.h"
#include "util.h"

struct opts {
	const char *run_dir, *sock, *kernel_dir, *kernel, *initrd, *rootfs, *ip, *append;
	const char *probe_cache, *name, *cwd, *stdin_file, *sh, *kind, *signal_after;
	enum qemu_accel accel;
	enum qemu_machine machine;
	int mem, vcpus, n;
	bool user_net, ro;
	double timeout, grace, connect_timeout;
	const char *env[64];
	int nenv;
	char **argv;
};

static int usage(void)
{
	fprintf(stderr, "usage: vm-tool start|argv|exec|parallel|rtt|garbage|stop|kill|status "
			"[options] (see tests/tools/vm_tool.c)\n");
	return 2;
}

static int die(const char *what, int rc, char *msg)
{
	fprintf(stderr, "vm-tool: %s: %s\n", what, msg ? msg : bg_strerror(rc));
	free(msg);
	return 1;
}

static int parse(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->timeout = -1;
	o->grace = 10;
	o->connect_timeout = 15;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, field)                      \
	if (!strcmp(a, name)) {               \
		if (!v)                       \
			return -1;            \
		o->field = v;                 \
		i++;                          \
		continue;                     \
	}
		OPT("--run-dir", run_dir)
		OPT("--sock", sock)
		OPT("--kernel-dir", kernel_dir)
		OPT("--kernel", kernel)
		OPT("--initrd", initrd)
		OPT("--rootfs", rootfs)
		OPT("--ip", ip)
		OPT("--append", append)
		OPT("--probe-cache", probe_cache)
		OPT("--name", name)
		OPT("--cwd", cwd)
		OPT("--stdin-file", stdin_file)
		OPT("--sh", sh)
		OPT("--kind", kind)
		OPT("--signal-after", signal_after)
#undef OPT
		if (!strcmp(a, "--accel") && v) {
			o->accel = !strcmp(v, "kvm") ? QEMU_ACCEL_KVM
				   : !strcmp(v, "tcg") ? QEMU_ACCEL_TCG
						       : QEMU_ACCEL_AUTO;
			i++;
		} else if (!strcmp(a, "--machine") && v) {
			o->machine = !strcmp(v, "q35") ? QEMU_Q35 : QEMU_MICROVM;
			i++;
		} else if (!strcmp(a, "--mem") && v) {
			o->mem = atoi(v);
			i++;
		} else if (!strcmp(a, "--vcpus") && v) {
			o->vcpus = atoi(v);
			i++;
		} else if (!strcmp(a, "--n") && v) {
			o->n = atoi(v);
			i++;
		} else if (!strcmp(a, "--timeout") && v) {
			o->timeout = atof(v);
			i++;
		} else if (!strcmp(a, "--connect-timeout") && v) {
			o->connect_timeout = atof(v);
			i++;
		} else if (!strcmp(a, "--grace") && v) {
			o->grace = atof(v);
			i++;
		} else if (!strcmp(a, "--env") && v && o->nenv < 63) {
			o->env[o->nenv++] = v;
			i++;
		} else if (!strcmp(a, "--user-net")) {
			o->user_net = true;
		} else if (!strcmp(a, "--ro")) {
			o->ro = true;
		} else if (!strcmp(a, "--")) {
			o->argv = argv + i + 1;
			break;
		} else {
			fprintf(stderr, "vm-tool: unknown option '%s'\n", a);
			return -1;
		}
	}
	o->env[o->nenv] = NULL;
	return 0;
}

static char *sock_of(const struct opts *o)
{
	if (o->sock)
		return xstrdup(o->sock);
	if (o->run_dir)
		return xasprintf("%s/agent.sock", o->run_dir);
	return NULL;
}

/* ---- start / argv ---- */

static void fill_config(const struct opts *o, struct qemu_config *c, char **k, char **i)
{
	memset(c, 0, sizeof(*c));
	if (o->kernel_dir) {
		*k = xasprintf("%s/vmlinuz", o->kernel_dir);
		*i = xasprintf("%s/initrd", o->kernel_dir);
	} else {
		*k = o->kernel ? xstrdup(o->kernel) : NULL;
		*i = o->initrd ? xstrdup(o->initrd) : NULL;
	}
	c->name = o->name ? o->name : "test";
	c->run_dir = o->run_dir;
	c->kernel = *k;
	c->initrd = *i;
	c->rootfs = o->rootfs;
	c->rootfs_readonly = o->ro;
	c->user_net = o->user_net;
	c->guest_ip = o->ip;
	c->vcpus = o->vcpus;
	c->memory_mb = o->mem;
	c->machine = o->machine;
	c->accel = o->accel;
	c->probe_cache = o->probe_cache;
	c->append = o->append;
}

static int cmd_argv(const struct opts *o)
{
	struct qemu_config c;
	char *k = NULL, *i = NULL, *err = NULL, **argv = NULL;
	enum qemu_accel acc;
	fill_config(o, &c, &k, &i);
	int rc = qemu_accel_resolve(&c, &acc, &err);
	if (rc == 0)
		rc = qemu_build_argv(&c, acc, &argv, &err);
	if (rc < 0)
		return die("argv", rc, err);
	for (char **p = argv; *p; p++)
		printf("%s\n", *p);
	qemu_argv_free(argv);
	free(k);
	free(i);
	return 0;
}

static int cmd_start(const struct opts *o)
{
	struct qemu_config c;
	struct qemu_vm *vm = NULL;
	struct agent_conn *conn = NULL;
	char *k = NULL, *i = NULL, *err = NULL;
	if (!o->run_dir)
		return usage();
	fill_config(o, &c, &k, &i);
	int64_t t0 = mono_us();
	int rc = qemu_start(&c, &vm, &err);
	if (rc < 0)
		return die("start", rc, err);
	int64_t limit = (int64_t)((o->timeout > 0 ? o->timeout : 60) * 1e6);
	rc = qemu_wait_agent(vm, limit, &conn, &err);
	if (rc < 0) {
		qemu_kill(vm);
		qemu_destroy(vm);
		return die("start", rc, err);
	}
	const struct agent_info *ai = agent_info(conn);
	printf("pid=%d accel=%s boot_s=%.2f guest_uptime_ms=%lld kernel=%s\n", (int)qemu_pid(vm),
	       qemu_accel_name(qemu_vm_accel(vm)), (double)(mono_us() - t0) / 1e6,
	       (long long)ai->uptime_ms, ai->kernel);
	fflush(stdout);
	agent_close(conn);
	qemu_destroy(vm); /* QEMU keeps running */
	free(k);
	free(i);
	return 0;
}

/* ---- exec ---- */

static int write_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int on_output(void *arg, int stream, const void *data, size_t len)
{
	return write_all(stream == 1 ? 1 : 2, data, len) < 0 ? BG_ERR_IO : 0;
}

struct sigafter {
	struct agent_exec *e;
	int ms, sig;
};

static void *sig_thread(void *arg)
{
	struct sigafter *s = arg;
	usleep((useconds_t)s->ms * 1000);
	agent_exec_signal(s->e, s->sig);
	return NULL;
}

static int connect_opts(const struct opts *o, struct agent_conn **conn)
{
	char *sock = sock_of(o), *err = NULL;
	if (!sock)
		return usage();
	int rc = agent_connect(sock, (int64_t)(o->connect_timeout * 1e6), -1, conn, &err);
	free(sock);
	if (rc < 0) {
		die("connect", rc, err);
		return rc;
	}
	return 0;
}

static int cmd_exec(const struct opts *o)
{
	struct agent_conn *conn;
	struct agent_exec *e;
	struct agent_exit st;
	char *err = NULL, *in = NULL;
	size_t inlen = 0;
	pthread_t th;
	struct sigafter sa = {0};
	bool sig_started = false;

	if (!o->sh && !o->argv)
		return usage();
	if (o->stdin_file && read_file(o->stdin_file, 1u << 30, &in, &inlen) < 0) {
		fprintf(stderr, "vm-tool: cannot read '%s'\n", o->stdin_file);
		return 125;
	}
	if (connect_opts(o, &conn) < 0)
		return 125;
	struct agent_exec_req req = {
		.argv = o->sh ? NULL : (const char *const *)o->argv,
		.shell = o->sh,
		.env = o->nenv ? o->env : NULL,
		.cwd = o->cwd,
		.stdin_pipe = o->stdin_file != NULL,
	};
	int rc = agent_exec_start(conn, &req, &e, &err);
	if (rc < 0) {
		die("exec", rc, err);
		agent_close(conn);
		return 125;
	}
	if (in) {
		agent_exec_stdin(e, in, inlen);
		agent_exec_stdin(e, NULL, 0);
	}
	if (o->signal_after && sscanf(o->signal_after, "%d:%d", &sa.ms, &sa.sig) == 2) {
		sa.e = e;
		sig_started = pthread_create(&th, NULL, sig_thread, &sa) == 0;
	}
	struct agent_wait_opts w = {on_output, NULL,
				    o->timeout > 0 ? (int64_t)(o->timeout * 1e6) : 0, NULL};
	rc = agent_exec_wait(e, &w, &st, &err);
	if (sig_started)
		pthread_join(th, NULL);
	agent_exec_destroy(e);
	agent_close(conn);
	free(in);
	if (rc == BG_ERR_TIMEDOUT) {
		fprintf(stderr, "vm-tool: %s\n", err ? err : "timed out");
		free(err);
		return 124;
	}
	if (rc < 0) {
		fprintf(stderr, "vm-tool: %s (%s)\n", err ? err : bg_strerror(rc), bg_errname(rc));
		free(err);
		return 125;
	}
	free(err);
	return st.signaled ? 128 + st.value : st.value;
}

/* ---- parallel ---- */

struct par {
	struct agent_conn *conn;
	const char *sh;
	int i;
	struct sb out;
	struct agent_exit st;
	int rc;
	char *err;
};

static int par_output(void *arg, int stream, const void *data, size_t len)
{
	struct par *p = arg;
	if (stream == 1)
		sb_add(&p->out, data, len);
	return 0;
}

static void *par_thread(void *arg)
{
	struct par *p = arg;
	char env0[32];
	snprintf(env0, sizeof(env0), "I=%d", p->i);
	const char *env[] = {env0, NULL};
	struct agent_exec_req req = {.shell = p->sh, .env = env};
	struct agent_wait_opts w = {par_output, p, 120000000, NULL};
	p->rc = agent_run(p->conn, &req, NULL, 0, &w, &p->st, &p->err);
	return NULL;
}

static int cmd_parallel(const struct opts *o)
{
	struct agent_conn *conn;
	if (!o->sh || o->n <= 0 || o->n > 256)
		return usage();
	if (connect_opts(o, &conn) < 0)
		return 1;
	struct par *ps = xcalloc((size_t)o->n, sizeof(*ps));
	pthread_t *th = xcalloc((size_t)o->n, sizeof(*th));
	int64_t t0 = mono_us();
	for (int i = 0; i < o->n; i++) {
		ps[i].conn = conn;
		ps[i].sh = o->sh;
		ps[i].i = i;
		sb_init(&ps[i].out);
		pthread_create(&th[i], NULL, par_thread, &ps[i]);
	}
	int bad = 0;
	for (int i = 0; i < o->n; i++) {
		pthread_join(th[i], NULL);
		char want[32];
		snprintf(want, sizeof(want), "out-%d\n", i);
		if (ps[i].rc < 0 || ps[i].st.signaled || ps[i].st.value != i % 256 ||
		    strcmp(ps[i].out.buf ? ps[i].out.buf : "", want) != 0) {
			fprintf(stderr, "parallel: exec %d: rc=%d (%s) exit=%d output='%s'\n", i,
				ps[i].rc, ps[i].err ? ps[i].err : "", ps[i].st.value,
				ps[i].out.buf ? ps[i].out.buf : "");
			bad++;
		}
		sb_release(&ps[i].out);
		free(ps[i].err);
	}
	printf("parallel: %d of %d ok in %.2f s\n", o->n - bad, o->n,
	       (double)(mono_us() - t0) / 1e6);
	free(ps);
	free(th);
	agent_close(conn);
	return bad ? 1 : 0;
}

/* ---- round trips ---- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmd_rtt(const struct opts *o)
{
	struct agent_conn *conn;
	if (o->n <= 0)
		return usage();
	if (connect_opts(o, &conn) < 0)
		return 1;
	int64_t *t = xcalloc((size_t)o->n, sizeof(*t));
	const char *argv[] = {"true", NULL};
	struct agent_exec_req req = {.argv = argv};
	for (int i = 0; i < o->n; i++) {
		struct agent_exit st;
		char *err = NULL;
		int64_t t0 = mono_us();
		int rc = agent_run(conn, &req, NULL, 0, NULL, &st, &err);
		t[i] = mono_us() - t0;
		if (rc < 0 || st.value != 0) {
			fprintf(stderr, "vm-tool: rtt: %s\n", err ? err : bg_strerror(rc));
			free(err);
			free(t);
			agent_close(conn);
			return 1;
		}
	}
	qsort(t, (size_t)o->n, sizeof(*t), cmp_i64);
	printf("rtt: n=%d p50=%.1f ms p99=%.1f ms max=%.1f ms\n", o->n, (double)t[o->n / 2] / 1e3,
	       (double)t[(o->n * 99) / 100 < o->n ? (o->n * 99) / 100 : o->n - 1] / 1e3,
	       (double)t[o->n - 1] / 1e3);
	free(t);
	agent_close(conn);
	return 0;
}

/* ---- garbage ---- */

static int raw_connect(const char *path)
{
	struct sockaddr_un a;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a.sun_path))
		return -1;
	memcpy(a.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int cmd_garbage(const struct opts *o)
{
	char *sock = sock_of(o);
	if (!sock || !o->kind)
		return usage();
	int fd = raw_connect(sock);
	free(sock);
	if (fd < 0) {
		fprintf(stderr, "vm-tool: garbage: cannot connect\n");
		return 1;
	}
	struct ap_buf b;
	unsigned char g[4096];
	size_t glen = 0;
	ap_buf_init(&b);
	/* start like a host: SYNC, so the agent is in a known state */
	memcpy(g, AP_SYNC, AP_SYNC_LEN);
	glen = AP_SYNC_LEN;
	if (!strcmp(o->kind, "random")) {
		FILE *r = fopen("/dev/urandom", "re");
		size_t n = r ? fread(g + glen, 1, 2048, r) : 0;
		if (r)
			fclose(r);
		g[glen] = 'X'; /* not a SYNC or a frame start */
		glen += n;
	} else if (!strcmp(o->kind, "badmagic")) {
		memcpy(g + glen, "XY\001\002\000\000\000\001\000\000\000\000", 12);
		glen += 12;
	} else if (!strcmp(o->kind, "toolong")) {
		ap_hdr_pack(g + glen, AP_T_EXEC, 1, 0x7fffffff);
		glen += AP_HDR_LEN;
	} else if (!strcmp(o->kind, "badexec")) {
		/* a well-framed EXEC whose field claims more bytes than the frame has */
		unsigned char p[] = {AP_F_ARG, 0, 0, 0x10, 0, 'l', 's'};
		ap_hdr_pack(g + glen, AP_T_EXEC, 7, sizeof(p));
		memcpy(g + glen + AP_HDR_LEN, p, sizeof(p));
		glen += AP_HDR_LEN + sizeof(p);
		/* and one with NUL inside an argument and argv+shell together */
		ap_begin(&b, AP_T_EXEC, 8);
		ap_put_bytes(&b, AP_F_ARG, "a\0b", 3);
		ap_end(&b);
		memcpy(g + glen, b.data, b.len);
		glen += b.len;
		ap_begin(&b, AP_T_EXEC, 9);
		ap_put_str(&b, AP_F_ARG, "/bin/true");
		ap_put_str(&b, AP_F_SHELL, "true");
		ap_end(&b);
		memcpy(g + glen, b.data, b.len);
		glen += b.len;
		ap_begin(&b, AP_T_SIGNAL, 9);
		ap_put_int(&b, AP_F_SIGNO, 999);
		ap_end(&b);
		memcpy(g + glen, b.data, b.len);
		glen += b.len;
	} else if (!strcmp(o->kind, "badsync")) {
		memcpy(g + glen, "\0BANGER-NOPE....", 16);
		glen += 16;
	} else if (!strcmp(o->kind, "hosttype")) {
		ap_begin(&b, AP_T_EXIT, 3); /* an agent->host frame sent to the agent */
		ap_put_int(&b, AP_F_CODE, 0);
		ap_end(&b);
		memcpy(g + glen, b.data, b.len);
		glen += b.len;
	} else if (!strcmp(o->kind, "truncated")) {
		ap_hdr_pack(g + glen, AP_T_EXEC, 5, 100);
		glen += AP_HDR_LEN + 10; /* then hang up mid-frame */
		memset(g + glen - 10, 'z', 10);
	} else {
		close(fd);
		return usage();
	}
	ap_buf_release(&b);
	if (write_all(fd, g, glen) < 0) {
		fprintf(stderr, "vm-tool: garbage: write failed\n");
		close(fd);
		return 1;
	}
	/* print what comes back until the agent is quiet for 0.5 s (3 s at
	 * most): ERROR frames as "error id=N: MSG" */
	struct timeval tv = {0, 500000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	unsigned char buf[65536];
	size_t len = 0;
	ssize_t n;
	int64_t until = mono_us() + 3000000;
	while (len < sizeof(buf) && mono_us() < until &&
	       (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)n;
	size_t off = 0;
	while (off < len) {
		if (buf[off] == 0 && len - off >= AP_SYNC_LEN && !memcmp(buf + off, AP_SYNC, AP_SYNC_LEN)) {
			printf("sync\n");
			off += AP_SYNC_LEN;
			continue;
		}
		struct ap_hdr h;
		if (len - off < AP_HDR_LEN || ap_hdr_parse(buf + off, &h, NULL) < 0 ||
		    len - off < AP_HDR_LEN + h.len)
			break;
		if (h.type == AP_T_ERROR) {
			int req, code;
			char *msg = NULL;
			ap_error_decode(buf + off + AP_HDR_LEN, h.len, &req, &code, &msg);
			printf("error id=%u: %s\n", h.id, msg ? msg : "?");
			free(msg);
		} else {
			printf("%s id=%u\n", ap_type_name(h.type), h.id);
		}
		off += AP_HDR_LEN + h.len;
	}
	close(fd);
	return 0;
}

/* ---- stop / kill / status ---- */

static int cmd_stop(const struct opts *o, bool force)
{
	struct qemu_vm *vm;
	struct agent_conn *conn = NULL;
	char *err = NULL;
	bool graceful = false;
	if (!o->run_dir)
		return usage();
	int rc = qemu_adopt(o->run_dir, &vm, &err);
	if (rc == BG_ERR_NOENT) {
		printf("not running: %s\n", err ? err : "");
		free(err);
		return 0;
	}
	if (rc < 0)
		return die("stop", rc, err);
	int64_t t0 = mono_us();
	if (force) {
		rc = qemu_kill(vm);
	} else {
		if (agent_connect(qemu_agent_sock(vm), 5000000, qemu_pidfd(vm), &conn, &err) < 0) {
			fprintf(stderr, "vm-tool: stop: agent unreachable (%s); stopping without it\n",
				err ? err : "?");
			free(err);
			err = NULL;
		}
		rc = qemu_stop(vm, conn, (int64_t)(o->grace * 1e6), &graceful, &err);
		agent_close(conn);
	}
	if (rc < 0) {
		qemu_destroy(vm);
		return die("stop", rc, err);
	}
	printf("stopped pid=%d graceful=%d s=%.2f\n", (int)qemu_pid(vm), graceful,
	       (double)(mono_us() - t0) / 1e6);
	qemu_destroy(vm);
	return 0;
}

static int cmd_status(const struct opts *o)
{
	struct qemu_vm *vm;
	char *err = NULL, *st = NULL;
	if (!o->run_dir)
		return usage();
	int rc = qemu_adopt(o->run_dir, &vm, &err);
	if (rc < 0)
		return die("status", rc, err);
	rc = qemu_status(vm, &st, &err);
	qemu_destroy(vm);
	if (rc < 0)
		return die("status", rc, err);
	printf("%s\n", st);
	free(st);
	return 0;
}


int main(int argc, char **argv)
{
	struct opts o;
	signal(SIGPIPE, SIG_IGN);
	log_init(getenv("VM_TOOL_LOG") ? getenv("VM_TOOL_LOG") : "info", 2);
	log_set_ident("vm-tool");
	if (argc < 2 || parse(argc, argv, &o) < 0)
		return usage();
	const char *c = argv[1];
	if (!strcmp(c, "start"))
		return cmd_start(&o);
	if (!strcmp(c, "argv"))
		return cmd_argv(&o);
	if (!strcmp(c, "exec"))
		return cmd_exec(&o);
	if (!strcmp(c, "parallel"))
		return cmd_parallel(&o);
	if (!strcmp(c, "rtt"))
		return cmd_rtt(&o);
	if (!strcmp(c, "garbage"))
		return cmd_garbage(&o);
	if (!strcmp(c, "stop"))
		return cmd_stop(&o, false);
	if (!strcmp(c, "kill"))
		return cmd_stop(&o, true);
	if (!strcmp(c, "status"))
		return cmd_status(&o);
	return usage();
}
