/*
 * kind_vm.c: the VM job kinds (docs/vms.md):
 *
 *   vm.create  reserve  name and address; the vms row (record hook, state
 *                       creating).  Undo: the row is recorded deleted.
 *              disk     STATE/vms/ID/root.qcow2, a qcow2 overlay over the
 *                       image's rootfs.ext4 (qemu-img; the base is never
 *                       written).  Undo: remove it.
 *              tap      bgHEX(ID) on banger's bridge, through the helper
 *                       (net.bridge.ensure, net.tap.create; `network: none`
 *                       skips it).  Undo: net.tap.remove (helper_undo).
 *              start    QEMU in its own process group, run directory
 *                       RUNTIME/vms/ID (pidfile, sockets, console).  Undo:
 *                       kill it (pidfd; through the helper's proc.signal
 *                       when it is not ours to signal), remove the directory.
 *              wait     the guest's agent answers, bounded; the row becomes
 *                       running (record hook).
 *   vm.exec    exec     argv or a shell line in the guest; output chunks
 *                       become job events as they arrive; the exit code is
 *                       the job's; not resumable (a restart mid-exec rolls
 *                       the job back: interrupted).
 *   vm.delete  stop     power off through the agent, bounded, then kill;
 *                       row stopped (record hook).
 *              teardown the create job's own undo records, newest first
 *                       (start, tap, disk); row deleted (record hook), kept.
 *
 * The VM id is its vm.create job's id; every resource is named from it, so
 * an undo record and recovery can always find what a VM holds.
 *
 * THREADS.  plan and record hooks run on the loop thread and may use the
 * queue (the only thread that may); step bodies and undos run in pool
 * threads and may block.  What a plan decides (a name and an address, the
 * VM an exec runs in) reaches its step body through a note kept here
 * (notes are per job and step; a crash loses them, and then the step's plan
 * runs again before its body does).  A pool thread that must change a row
 * (an undo, a hypervisor found dead) posts the change to the loop thread
 * (post_state); recovery repairs rows whose change a crash lost.
 *
 * Running VMs this daemon holds are kept in `live` entries: the QEMU handle
 * (pidfd; a child of ours is reaped through it) and one agent connection
 * per VM, shared by every exec in it (the agent kills the commands of a
 * connection that closes).  Entries are reference-counted: a delete may
 * remove one while an exec still uses it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "client.h"
#include "config.h"
#include "engine.h"
#include "err.h"
#include "kernel.h"
#include "kind.h"
#include "log.h"
#include "mpk.h"
#include "cowdisk.h"
#include "hv.h"
#include "qemu.h"
#include "queue.h"
#include "util.h"
#include "vm.h"
#include "workspace.h"

extern char **environ;

#define RESV_TTL_US (600 * 1000000LL)      /* an unused reservation expires */
#define CONNECT_TIMEOUT_US (10 * 1000000LL) /* agent of a running VM */
#define TOOL_TIMEOUT_US (60 * 1000000LL)    /* qemu-img */
#define KILL_WAIT_US (10 * 1000000LL)

/* ---- module state ---------------------------------------------------------- */

struct note {
	struct note *next;
	int64_t job;
	int seq;
	int64_t at;
	char *data;
	size_t len;
};

/* A name and address a plan handed out that no row holds yet. */
struct resv {
	struct resv *next;
	int64_t job;
	char name[VM_NAME_MAX + 1];
	uint32_t addr; /* 0: no NIC */
	int64_t at;
};

struct live {
	struct live *next;
	int64_t id;
	int refs;      /* the list's one, plus each user's */
	bool unlinked; /* no longer in the list */
	pthread_mutex_t mu; /* connecting, stopping */
	struct hv_vm *hv;
	struct agent_conn *conn;
	struct agent_conn **old; /* broken connections, closed at the end */
	size_t nold;
};

struct post {
	struct post *next;
	int64_t vm, job;
	char state[16];
	char *error;
};

static struct {
	bool ready;
	uv_loop_t *loop;
	struct queue *q;
	char *state_dir, *runtime_dir, *vms_run, *vms_state, *node;
	char *helper_sock, *agent_path, *bridge, *probe_cache;
	uint32_t net, mask;
	int prefix;
	int64_t max_export_bytes;
	char *artifacts_dir;
	char *firecracker_bin, *jailer_bin;
	pthread_mutex_t mu; /* notes, resvs, lives, posts */
	struct note *notes;
	struct resv *resvs;
	struct live *lives;
	struct post *posts;
	uv_async_t post_async;
} V = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- names, addresses, paths ------------------------------------------------ */

bool vm_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > VM_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* "<job name>-<submission>" made a DNS label: '_' and '.' become '-', the
 * job part cut so the whole fits. */
static void default_name(char *out, size_t size, const char *job, int64_t submission)
{
	char suffix[32];
	snprintf(suffix, sizeof(suffix), "-%lld", (long long)submission);
	size_t room = VM_NAME_MAX - strlen(suffix), n = 0;
	for (const char *p = job; *p && n < room; p++)
		out[n++] = (*p == '_' || *p == '.') ? '-' : *p;
	while (n > 0 && out[n - 1] == '-')
		n--;
	if (n == 0)
		out[n++] = 'v';
	out[n] = '\0';
	snprintf(out + n, size - n, "%s", suffix);
}

static void addr_str(uint32_t a, char out[16])
{
	snprintf(out, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static uint32_t addr_parse(const char *s)
{
	unsigned a, b, c, d;
	if (!s || sscanf(s, "%u.%u.%u.%u", &a, &b, &c, &d) != 4 || a > 255 || b > 255 ||
	    c > 255 || d > 255)
		return 0;
	return a << 24 | b << 16 | c << 8 | d;
}

/* Pack the value of key in map (nil when absent). */
static void pack_copy(msgpack_packer *pk, const msgpack_object *map, const char *key)
{
	const msgpack_object *v = mpk_get(map, key);
	if (v)
		msgpack_pack_object(pk, *v);
	else
		msgpack_pack_nil(pk);
}

static char *tap_name(int64_t id)
{
	return xasprintf("bg%08llx", (unsigned long long)id);
}

static char *run_dir_of(int64_t id)
{
	return xasprintf("%s/%lld", V.vms_run, (long long)id);
}

static char *disk_dir_of(int64_t id)
{
	return xasprintf("%s/%lld", V.vms_state, (long long)id);
}

/* ---- notes: what a plan decided, for its step body --------------------------- */

/* Loop thread.  Takes the packed bytes (sbuffer released). */
static void note_put(int64_t job, int seq, msgpack_sbuffer *sb)
{
	struct note *n = xcalloc(1, sizeof(*n));
	n->job = job;
	n->seq = seq;
	n->at = mono_us();
	n->len = sb->size;
	n->data = msgpack_sbuffer_release(sb);
	pthread_mutex_lock(&V.mu);
	for (struct note **p = &V.notes; *p;) {
		struct note *o = *p;
		if ((o->job == job && o->seq == seq) || n->at - o->at > RESV_TTL_US) {
			*p = o->next;
			free(o->data);
			free(o);
		} else {
			p = &o->next;
		}
	}
	n->next = V.notes;
	V.notes = n;
	pthread_mutex_unlock(&V.mu);
}

/* A note taken by its step body: the unpacked tree refers into data. */
struct note_buf {
	msgpack_unpacked u;
	char *data;
};

/* Pool thread: take the note of this step (note_done releases it);
 * BG_ERR_NOENT when there is none. */
static int note_get(struct step_ctx *ctx, struct note_buf *nb)
{
	int rc = BG_ERR_NOENT;
	msgpack_unpacked_init(&nb->u);
	nb->data = NULL;
	pthread_mutex_lock(&V.mu);
	for (struct note **p = &V.notes; *p; p = &(*p)->next) {
		struct note *n = *p;
		if (n->job != ctx->job_id || n->seq != ctx->seq)
			continue;
		*p = n->next;
		size_t off = 0;
		nb->data = n->data;
		if (msgpack_unpack_next(&nb->u, n->data, n->len, &off) == MSGPACK_UNPACK_SUCCESS) {
			rc = 0;
		} else {
			free(n->data);
			nb->data = NULL;
		}
		free(n);
		break;
	}
	pthread_mutex_unlock(&V.mu);
	return rc;
}

static void note_done(struct note_buf *nb)
{
	msgpack_unpacked_destroy(&nb->u);
	free(nb->data);
	nb->data = NULL;
}

static int no_note(struct step_ctx *ctx)
{
	return step_fail(ctx, BG_ERR_STATE, false, "internal: the step's plan left no note");
}

/* ---- reservations --------------------------------------------------------------- */

static void resv_drop(int64_t job)
{
	pthread_mutex_lock(&V.mu);
	for (struct resv **p = &V.resvs; *p;) {
		struct resv *r = *p;
		if (r->job == job || mono_us() - r->at > RESV_TTL_US) {
			*p = r->next;
			free(r);
		} else {
			p = &r->next;
		}
	}
	pthread_mutex_unlock(&V.mu);
}

/* ---- pool -> loop: row changes ------------------------------------------------------ */

static void post_state(int64_t vm, const char *state, const char *error, int64_t job)
{
	if (!V.ready)
		return;
	struct post *p = xcalloc(1, sizeof(*p));
	p->vm = vm;
	p->job = job;
	snprintf(p->state, sizeof(p->state), "%s", state);
	p->error = error ? xstrdup(error) : NULL;
	pthread_mutex_lock(&V.mu);
	p->next = V.posts;
	V.posts = p;
	pthread_mutex_unlock(&V.mu);
	uv_async_send(&V.post_async);
}

static void on_post(uv_async_t *h)
{
	pthread_mutex_lock(&V.mu);
	struct post *list = V.posts;
	V.posts = NULL;
	pthread_mutex_unlock(&V.mu);
	while (list) {
		struct post *p = list;
		list = p->next;
		struct q_vm vm;
		/* never resurrect a deleted row, never undelete */
		if (V.q->ops->vm_get(V.q, p->vm, &vm) == 0) {
			if (strcmp(vm.state, VS_DELETED) != 0) {
				int rc = V.q->ops->vm_set_state(V.q, p->vm, p->state, -1, p->error, p->job,
								now_us());
				if (rc)
					log_warn(NULL, p->vm, "cannot record vm %lld as %s: %s",
						 (long long)p->vm, p->state, bg_strerror(rc));
			}
			q_vm_release(&vm);
		}
		free(p->error);
		free(p);
	}
}

/* ---- live VMs ----------------------------------------------------------------------- */

static void live_free(struct live *l)
{
	if (l->conn)
		agent_close(l->conn);
	for (size_t i = 0; i < l->nold; i++)
		agent_close(l->old[i]);
	free(l->old);
	if (l->hv)
		hv_destroy(l->hv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

static void live_put(struct live *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&V.mu);
	bool last = --l->refs == 0;
	pthread_mutex_unlock(&V.mu);
	if (last)
		live_free(l);
}

/* Unlink the entry of id (the list's reference goes). */
static void live_remove(int64_t id)
{
	struct live *gone = NULL;
	pthread_mutex_lock(&V.mu);
	for (struct live **p = &V.lives; *p; p = &(*p)->next)
		if ((*p)->id == id) {
			gone = *p;
			*p = gone->next;
			gone->unlinked = true;
			break;
		}
	pthread_mutex_unlock(&V.mu);
	if (gone)
		live_put(gone);
}

/* Hold qemu (taken) as the VM id's; returns the entry with a reference for
 * the caller. */
static struct live *live_add(int64_t id, struct hv_vm *hv)
{
	live_remove(id);
	struct live *l = xcalloc(1, sizeof(*l));
	l->id = id;
	l->refs = 2;
	l->hv = hv;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_lock(&V.mu);
	l->next = V.lives;
	V.lives = l;
	pthread_mutex_unlock(&V.mu);
	return l;
}

static struct live *live_get(int64_t id)
{
	struct live *l;
	pthread_mutex_lock(&V.mu);
	for (l = V.lives; l; l = l->next)
		if (l->id == id) {
			l->refs++;
			break;
		}
	pthread_mutex_unlock(&V.mu);
	return l;
}

/* The entry of id, re-adopting its QEMU from run_dir when this daemon does
 * not hold it (after a restart).  BG_ERR_NOENT when no QEMU runs there. */
static int live_find(int64_t id, const char *run_dir, struct live **out, char **err)
{
	struct live *l = live_get(id);
	if (l) {
		*out = l;
		return 0;
	}
	struct hv_vm *qv;
	int rc = hv_adopt(run_dir, &qv, err);
	if (rc)
		return rc;
	*out = live_add(id, qv);
	return 0;
}

/* The VM's agent connection, connecting (bounded) when there is none or it
 * broke.  Valid while the caller holds l. */
static int live_conn(struct live *l, int64_t timeout_us, struct agent_conn **out, char **err)
{
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	if (l->conn && agent_conn_error(l->conn) != 0) {
		/* others may still hold it: closed with the entry */
		l->old = xrealloc(l->old, (l->nold + 1) * sizeof(*l->old));
		l->old[l->nold++] = l->conn;
		l->conn = NULL;
	}
	if (!l->conn) {
		if (!hv_running(l->hv))
			rc = BG_ERR_CLOSED;
		else
			rc = hv_connect_agent(l->hv, timeout_us, &l->conn, err);
	}
	*out = l->conn;
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* ---- processes ----------------------------------------------------------------------- */

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Read /proc/PID/cmdline with NULs as spaces; NULL when gone. */
static char *cmdline_of(pid_t pid)
{
	char *path = xasprintf("/proc/%d/cmdline", (int)pid), *s = NULL;
	size_t n;
	int rc = read_file(path, 1 << 20, &s, &n);
	free(path);
	if (rc) {
		free(s);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!s[i])
			s[i] = ' ';
	return s;
}

/* Every process whose command line contains needle: pids into *out (caller
 * frees), count returned.  Our own pid is skipped. */
static size_t procs_naming(const char *needle, pid_t **out)
{
	size_t n = 0, cap = 0;
	*out = NULL;
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 1 || pid == getpid())
			continue;
		char *cmd = cmdline_of((pid_t)pid);
		if (cmd && strstr(cmd, needle)) {
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				*out = xrealloc(*out, cap * sizeof(**out));
			}
			(*out)[n++] = (pid_t)pid;
		}
		free(cmd);
	}
	closedir(d);
	return n;
}

/* SIGKILL a process that names needle on its command line, through a pidfd
 * (a reused pid is never signalled); through the helper's proc.signal when
 * it is not ours to signal.  Waits (bounded) until it is gone.  0 when it is
 * gone (or was). */
static int kill_named(pid_t pid, const char *needle, const char *op, char **err)
{
	int fd = pidfd_open_(pid);
	if (fd < 0)
		return 0; /* gone */
	char *cmd = cmdline_of(pid);
	bool ours = cmd && strstr(cmd, needle);
	free(cmd);
	if (!ours) {
		close(fd);
		return 0;
	}
	kill(-pid, SIGKILL); /* its process group: QEMU leads its own */
	if (syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) < 0 && errno == EPERM) {
		struct helper_client hc;
		char *e = NULL;
		int rc = helper_connect(V.helper_sock, &hc, &e);
		if (rc == 0) {
			rc = helper_proc_signal(&hc, op, pid, "KILL", NULL, &e);
			helper_close(&hc);
		}
		if (rc) {
			*err = xasprintf("cannot kill pid %d (not ours to signal, and the helper "
					 "said: %s)", (int)pid, e ? e : bg_strerror(rc));
			free(e);
			close(fd);
			return rc;
		}
		free(e);
	}
	struct pollfd p = {fd, POLLIN, 0};
	int r = poll(&p, 1, (int)(KILL_WAIT_US / 1000));
	close(fd);
	/* a child of ours: reap it (if not, waitpid fails: someone else's) */
	waitpid(pid, NULL, WNOHANG);
	if (r <= 0) {
		*err = xasprintf("pid %d survived SIGKILL for %lld s", (int)pid,
				 (long long)(KILL_WAIT_US / 1000000));
		return BG_ERR_TIMEDOUT;
	}
	return 0;
}

/* Kill every QEMU whose command line names run_dir. */
static int kill_run_dir(const char *run_dir, const char *op, char **err)
{
	char *needle = xasprintf("%s/", run_dir);
	pid_t *pids;
	size_t n = procs_naming(needle, &pids);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		char *e = NULL;
		int r = kill_named(pids[i], needle, op, &e);
		if (r && !rc) {
			rc = r;
			*err = e;
		} else {
			free(e);
		}
	}
	free(pids);
	free(needle);
	return rc;
}

/* rm -r of a directory banger owns (no symlinks followed); ENOENT is fine. */
static int remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : bg_errno(errno);
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? bg_errno(errno) : 0;
	DIR *d = opendir(path);
	if (!d)
		return bg_errno(errno);
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *sub = xasprintf("%s/%s", path, e->d_name);
		int r = remove_tree(sub);
		if (r && !rc)
			rc = r;
		free(sub);
	}
	closedir(d);
	if (rmdir(path) < 0 && errno != ENOENT && !rc)
		rc = bg_errno(errno);
	return rc;
}

/*
 * Run a tool (argv, no shell) in its own process group, registered with the
 * step so a cancel kills it; bounded by timeout_us.  Its stdout and stderr
 * (the first 8 KiB) into *out (caller frees).  0 when it exited 0.
 */
static int run_tool(struct step_ctx *ctx, char *const argv[], int64_t timeout_us, char **out)
{
	int pfd[2];
	*out = NULL;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return bg_errno(errno);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&at);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(pfd[1]);
	if (rc) {
		close(pfd[0]);
		*out = xasprintf("cannot run '%s': %s", argv[0], strerror(rc));
		return bg_errno(rc);
	}
	step_set_pgid(ctx, pid);
	struct sb sb;
	sb_init(&sb);
	int64_t deadline = mono_us() + timeout_us;
	bool eof = false, killed = false;
	while (!eof) {
		struct pollfd p = {pfd[0], POLLIN, 0};
		int left = (int)((deadline - mono_us()) / 1000);
		if (left <= 0 || step_cancelled(ctx)) {
			kill(-pid, SIGKILL);
			killed = true;
			break;
		}
		if (poll(&p, 1, left < 100 ? left : 100) <= 0)
			continue;
		char buf[4096];
		ssize_t r = read(pfd[0], buf, sizeof(buf));
		if (r > 0 && sb.len < 8192)
			sb_add(&sb, buf, (size_t)r);
		eof = r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
	}
	close(pfd[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	step_set_pgid(ctx, 0);
	while (sb.len && (sb.buf[sb.len - 1] == '\n' || sb.buf[sb.len - 1] == ' '))
		sb.buf[--sb.len] = '\0';
	*out = sb_detach(&sb);
	if (killed)
		return step_cancelled(ctx) ? BG_ERR_CANCELED : BG_ERR_TIMEDOUT;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : BG_ERR_IO;
}

/* ---- resolving `vm:` (loop thread) --------------------------------------------------- */

struct find_job {
	const char *name;
	int64_t id;
	char kind[32];
};

static int find_job_cb(const struct q_job *j, void *arg)
{
	struct find_job *f = arg;
	if (strcmp(j->name, f->name) == 0) {
		f->id = j->id;
		snprintf(f->kind, sizeof(f->kind), "%s", j->kind);
		return 1;
	}
	return 0;
}

/*
 * The VM `ref` names for the job running ctx: the VM made by the vm.create
 * job of that name in the same submission, else the VM of that name.
 * *created_by is set to the vm.create job when ref names one (its VM may
 * not exist: BG_ERR_NOENT with *created_by set).  Messages in *why.
 */
static int resolve_vm(struct step_ctx *ctx, const char *ref, struct q_vm *out,
		      int64_t *created_by, char **why)
{
	struct q_job self;
	*created_by = 0;
	if (V.q->ops->job_get(V.q, ctx->job_id, &self) == 0) {
		struct q_list_filter f = {.submission = self.submission, .limit = 1000000};
		struct find_job fj = {.name = ref};
		V.q->ops->job_list(V.q, &f, find_job_cb, &fj);
		q_job_release(&self);
		if (fj.id && strcmp(fj.kind, "vm.create") == 0) {
			*created_by = fj.id;
			if (V.q->ops->vm_get(V.q, fj.id, out) == 0)
				return 0;
			*why = xasprintf("the vm.create job '%s' (job %lld) made no vm", ref,
					 (long long)fj.id);
			return BG_ERR_NOENT;
		}
	}
	if (V.q->ops->vm_find(V.q, ref, out) == 0)
		return 0;
	*why = xasprintf("no vm '%s' (neither a vm.create job of this submission nor the name of "
			 "a vm; see 'banger vm list')", ref);
	return BG_ERR_NOENT;
}

/* ---- vm.create: the workspace field ------------------------------------------------------ */

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

#define WS_DEFAULT_TO "/workspace"

struct ws_spec {
	char *from; /* absolute */
	char *to;   /* the mount point in the guest */
	char **exclude; /* NULL-terminated */
};

static void ws_spec_release(struct ws_spec *w)
{
	free(w->from);
	free(w->to);
	strv_free(w->exclude);
	memset(w, 0, sizeof(*w));
}

/* A mount point banger puts on the kernel command line and in a MOUNT
 * request: absolute, clean, not "/", of [A-Za-z0-9._+@/-]. */
static const char *ws_to_bad(const char *to)
{
	if (to[0] != '/')
		return "it is not an absolute path";
	if (!strcmp(to, "/"))
		return "it is the guest's root";
	if (strlen(to) > 255)
		return "it is longer than 255 bytes";
	for (const char *c = to; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || strchr("._+@/-", *c)))
			return "use only letters, digits and . _ + @ / -";
	for (const char *c = to; *c;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return "it has a '.' or '..' component";
		c += n;
	}
	return NULL;
}

static char *obj_str(const msgpack_object *o)
{
	return o && o->type == MSGPACK_OBJECT_STR ? xstrndup(o->via.str.ptr, o->via.str.size)
						  : NULL;
}

/* The `workspace:` field: 0 with *present false when there is none; a
 * permanent step failure naming what is wrong. */
static int ws_parse(struct step_ctx *ctx, struct ws_spec *w, bool *present)
{
	memset(w, 0, sizeof(*w));
	*present = false;
	const msgpack_object *m = mpk_get(ctx->params, "workspace");
	if (!m || m->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (m->type != MSGPACK_OBJECT_MAP)
		return step_fail(ctx, BG_ERR_INVAL, true,
				 "'workspace' must be a mapping: {from: DIR, to: /workspace, "
				 "exclude: [PATTERN, ...]}");
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key;
		if (k->type != MSGPACK_OBJECT_STR ||
		    !(mpk_str_eq(k, "from") || mpk_str_eq(k, "to") || mpk_str_eq(k, "exclude")))
			return step_fail(ctx, BG_ERR_INVAL, true,
					 "'workspace' has an unknown key '%.*s' (it takes from, to "
					 "and exclude)",
					 k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 1,
					 k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "?");
	}
	int rc = 0;
	char *from = obj_str(mpk_get(m, "from"));
	const msgpack_object *to = mpk_get(m, "to");
	if (!from || !*from) {
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "'workspace' needs 'from': the host directory to bring in (relative "
			       "to the spec's directory)");
		goto fail;
	}
	if ((rc = step_host_path(ctx, "workspace: from", from, &w->from)))
		goto fail;
	w->to = to && to->type != MSGPACK_OBJECT_NIL ? obj_str(to) : xstrdup(WS_DEFAULT_TO);
	const char *bad = w->to ? ws_to_bad(w->to) : "it is not a string";
	if (bad) {
		rc = step_fail(ctx, BG_ERR_INVAL, true, "'workspace: to: %.200s' is refused: %s",
			       w->to ? w->to : "?", bad);
		goto fail;
	}
	if ((rc = step_excludes(ctx, "workspace: exclude", mpk_get(m, "exclude"), &w->exclude)))
		goto fail;
	free(from);
	*present = true;
	return 0;
fail:
	free(from);
	ws_spec_release(w);
	return rc;
}

/* ---- vm.create: reserve ---------------------------------------------------------------- */

struct used_addrs {
	uint32_t *v;
	size_t n, cap;
	const char *name;  /* a name to look for */
	int64_t name_owner; /* its VM, when a live one has it */
};

static int used_cb(const struct q_vm *vm, void *arg)
{
	struct used_addrs *u = arg;
	uint32_t a = addr_parse(vm->address);
	if (a) {
		if (u->n == u->cap) {
			u->cap = u->cap ? u->cap * 2 : 32;
			u->v = xrealloc(u->v, u->cap * sizeof(*u->v));
		}
		u->v[u->n++] = a;
	}
	if (u->name && strcmp(vm->name, u->name) == 0)
		u->name_owner = vm->id;
	return 0;
}

static bool addr_used(const struct used_addrs *u, uint32_t a)
{
	for (size_t i = 0; i < u->n; i++)
		if (u->v[i] == a)
			return true;
	for (struct resv *r = V.resvs; r; r = r->next)
		if (r->addr == a)
			return true;
	return false;
}

static int64_t host_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	return pages > 0 && psize > 0 ? (int64_t)pages * psize : 0;
}

static char *size_text(int64_t b)
{
	if (b >= (1LL << 30) && b % (1LL << 30) == 0)
		return xasprintf("%lldG", (long long)(b >> 30));
	if (b >= (1LL << 20) && b % (1LL << 20) == 0)
		return xasprintf("%lldM", (long long)(b >> 20));
	return xasprintf("%lld bytes", (long long)b);
}

static int reserve_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	if (!V.ready)
		return step_fail(ctx, BG_ERR_STATE, true, "this daemon was not set up to run VMs");
	char *vm_name = mpk_dup_str(ctx->params, "vm_name");
	char *image = mpk_dup_str(ctx->params, "image");
	char *network = mpk_dup_str(ctx->params, "network");
	char *hyp = mpk_dup_str(ctx->params, "hypervisor");
	enum hv_driver driver = HV_QEMU;
	char name[VM_NAME_MAX + 1];
	int64_t vcpus = VM_DEFAULT_VCPUS, memory = VM_DEFAULT_MEMORY;
	struct q_image img = {0};
	struct used_addrs used = {0};
	int rc = 0;

	mpk_get_int(ctx->params, "vcpus", &vcpus);
	mpk_get_int(ctx->params, "memory", &memory);
	if (vm_name) {
		if (!vm_name_ok(vm_name)) {
			rc = step_fail(ctx, BG_ERR_INVAL, true,
				       "vm name '%.64s' is not a DNS label: use 1 to %d of a-z, 0-9 and "
				       "'-', not starting or ending with '-'",
				       vm_name, VM_NAME_MAX);
			goto out;
		}
		snprintf(name, sizeof(name), "%s", vm_name);
	} else {
		struct q_job self;
		if ((rc = V.q->ops->job_get(V.q, ctx->job_id, &self))) {
			rc = step_fail(ctx, rc, false, "cannot read job %lld", (long long)ctx->job_id);
			goto out;
		}
		default_name(name, sizeof(name), self.name, self.submission);
		q_job_release(&self);
	}
	if (vcpus < 1 || vcpus > VM_MAX_VCPUS) {
		rc = step_fail(ctx, BG_ERR_INVAL, true, "vcpus %lld is out of range (1 to %d)",
			       (long long)vcpus, VM_MAX_VCPUS);
		goto out;
	}
	int64_t hostmem = host_memory();
	if (memory < VM_MIN_MEMORY || memory % (1 << 20) != 0 ||
	    (hostmem > 0 && memory > hostmem)) {
		char *m = size_text(memory), *h = size_text(hostmem & ~((1LL << 20) - 1));
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "memory %s is out of range (64M up to this host's %s, in whole MiB)", m,
			       h);
		free(m);
		free(h);
		goto out;
	}
	if (hyp && hv_driver_parse(hyp, &driver) != 0) {
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "hypervisor '%.64s' is not 'qemu' (the default) or 'firecracker'", hyp);
		goto out;
	}
	/* a bad `workspace:` fails here, before anything is made */
	struct ws_spec ws;
	bool has_ws;
	if ((rc = ws_parse(ctx, &ws, &has_ws)))
		goto out;
	ws_spec_release(&ws);
	if (network && strcmp(network, "tap") != 0 && strcmp(network, "none") != 0) {
		rc = step_fail(ctx, BG_ERR_INVAL, true,
			       "network '%.64s' is not 'tap' (a NIC on banger's bridge, the default) "
			       "or 'none'",
			       network);
		goto out;
	}
	bool nic = !network || strcmp(network, "tap") == 0;
	if (!image || V.q->ops->image_get(V.q, image, &img) != 0) {
		rc = step_fail(ctx, BG_ERR_NOENT, true,
			       "no image '%.200s': pull it first (an image.pull job this one needs, "
			       "or see 'banger image list')",
			       image ? image : "");
		goto out;
	}
	/* the name, among live VMs and names handed out but not yet recorded */
	used.name = name;
	V.q->ops->vm_list(V.q, false, used_cb, &used);
	if (used.name_owner && used.name_owner != ctx->job_id) {
		rc = step_fail(ctx, BG_ERR_EXIST, true,
			       "a vm named '%s' already exists (vm %lld): delete it first or choose "
			       "another vm_name",
			       name, (long long)used.name_owner);
		goto out;
	}
	resv_drop(ctx->job_id); /* a re-run of this plan (recovery) */
	pthread_mutex_lock(&V.mu);
	for (struct resv *r = V.resvs; r; r = r->next)
		if (strcmp(r->name, name) == 0) {
			pthread_mutex_unlock(&V.mu);
			rc = step_fail(ctx, BG_ERR_EXIST, true,
				       "the vm name '%s' is being taken by job %lld", name,
				       (long long)r->job);
			goto out;
		}
	uint32_t addr = 0;
	if (nic) {
		uint32_t bcast = V.net | ~V.mask;
		for (uint32_t a = V.net + 2; a < bcast; a++)
			if (!addr_used(&used, a)) {
				addr = a;
				break;
			}
		if (!addr) {
			pthread_mutex_unlock(&V.mu);
			char net[16];
			addr_str(V.net, net);
			rc = step_fail(ctx, BG_ERR_NOSPC, false,
				       "no free address in %s/%d: every one is taken by a vm", net,
				       V.prefix);
			goto out;
		}
	}
	struct resv *r = xcalloc(1, sizeof(*r));
	r->job = ctx->job_id;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->addr = addr;
	r->at = mono_us();
	r->next = V.resvs;
	V.resvs = r;
	pthread_mutex_unlock(&V.mu);

	char a[16] = "";
	if (addr)
		addr_str(addr, a);
	/* what the step body needs, and the undo record naming the row */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 8);
	mpk_kv_str(&pk, "name", name);
	mpk_kv_str(&pk, "driver", hv_driver_name(driver));
	mpk_kv_str(&pk, "address", addr ? a : NULL);
	mpk_kv_str(&pk, "image", img.digest);
	mpk_kv_str(&pk, "rootfs", img.rootfs);
	mpk_kv_int(&pk, "vcpus", vcpus);
	mpk_kv_int(&pk, "memory", memory);
	mpk_kv_bool(&pk, "nic", nic);
	note_put(ctx->job_id, ctx->seq, &sb);

	msgpack_pack_map(undo, 3);
	mpk_kv_int(undo, "vm", ctx->job_id);
	mpk_kv_str(undo, "name", name);
	mpk_kv_str(undo, "address", addr ? a : NULL);
out:
	free(used.v);
	q_image_release(&img);
	free(vm_name);
	free(image);
	free(network);
	free(hyp);
	return rc;
}

/* The kernel the spec names, else the one named "default", else the one most
 * recently imported. */
static int pick_kernel(struct step_ctx *ctx, const char *want, struct kernel_info *out)
{
	char *err = NULL;
	int rc;
	if (want) {
		if (!kernel_name_ok(want))
			return step_fail(ctx, BG_ERR_INVAL, true, "'%.64s' is not a kernel name", want);
		rc = kernel_get(ctx->state_dir, want, out, &err);
		if (rc == BG_ERR_NOENT) {
			free(err);
			return step_fail(ctx, rc, true,
					 "no kernel '%s': see 'banger kernel list', or import it with "
					 "'banger kernel import PATH --name %s'",
					 want, want);
		}
		if (rc) {
			rc = step_fail(ctx, rc, false, "kernel '%s': %s", want, err ? err : "?");
			free(err);
		}
		return rc;
	}
	struct kernel_info *v = NULL;
	size_t n = 0;
	if ((rc = kernel_list(ctx->state_dir, &v, &n, &err))) {
		rc = step_fail(ctx, rc, false, "cannot list kernels: %s", err ? err : "?");
		free(err);
		return rc;
	}
	if (n == 0) {
		kernel_list_free(v, n);
		return step_fail(ctx, BG_ERR_NOENT, true,
				 "no kernel imported: run 'banger kernel import --deb "
				 "linux-image-VERSION-cloud-amd64_*.deb' (apt-get download "
				 "linux-image-cloud-amd64 names it; see docs/vms.md)");
	}
	size_t best = 0;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(v[i].name, "default")) {
			best = i;
			break;
		}
		if (v[i].created > v[best].created)
			best = i;
	}
	*out = v[best];
	memset(&v[best], 0, sizeof(v[best]));
	kernel_list_free(v, n);
	if (n > 1)
		step_logf(ctx, "%zu kernels imported; using '%s' (name one with 'kernel:')", n,
			  out->name);
	return 0;
}

static int reserve_do(struct step_ctx *ctx)
{
	struct note_buf note;
	if (note_get(ctx, &note))
		return no_note(ctx);
	const msgpack_object *n = &note.u.data;
	char *kname = mpk_dup_str(ctx->params, "kernel");
	struct kernel_info ki = {0};
	int rc = pick_kernel(ctx, kname, &ki);
	free(kname);
	if (rc) {
		note_done(&note);
		return rc;
	}
	int64_t id = ctx->job_id, vcpus = 1, memory = 0, boot = VM_DEFAULT_BOOT_TIMEOUT_US;
	bool nic = false;
	mpk_get_int(n, "vcpus", &vcpus);
	mpk_get_int(n, "memory", &memory);
	mpk_get_bool(n, "nic", &nic);
	mpk_get_int(ctx->params, "boot_timeout", &boot);
	char *run_dir = run_dir_of(id), *dir = disk_dir_of(id);
	char *drv = mpk_dup_str(n, "driver");
	bool fc = drv && !strcmp(drv, "firecracker");
	/* QEMU: a qcow2 overlay; Firecracker takes raw disks only */
	char *overlay = xasprintf("%s/%s", dir, fc ? "root.raw" : "root.qcow2");
	char *tap = nic ? tap_name(id) : NULL;
	msgpack_packer *pk = &ctx->result;
	msgpack_pack_map(pk, 17);
	mpk_kv_int(pk, "vm", id);
	mpk_kv_str(pk, "driver", drv ? drv : "qemu");
	mpk_pack_str(pk, "name");
	pack_copy(pk, n, "name");
	mpk_pack_str(pk, "address");
	pack_copy(pk, n, "address");
	mpk_pack_str(pk, "image");
	pack_copy(pk, n, "image");
	mpk_pack_str(pk, "rootfs");
	pack_copy(pk, n, "rootfs");
	mpk_kv_str(pk, "kernel", ki.name);
	mpk_kv_str(pk, "vmlinuz", ki.vmlinuz);
	mpk_kv_str(pk, "initrd", ki.initrd);
	mpk_kv_int(pk, "vcpus", vcpus);
	mpk_kv_int(pk, "memory", memory);
	mpk_kv_str(pk, "tap", tap);
	mpk_kv_str(pk, "overlay", overlay);
	mpk_kv_str(pk, "disk_dir", dir);
	mpk_kv_str(pk, "run_dir", run_dir);
	mpk_kv_int(pk, "boot_timeout", boot);
	mpk_kv_str(pk, "node", V.node);
	char *nm = mpk_dup_str(n, "name"), *ad = mpk_dup_str(n, "address");
	step_logf(ctx, "vm '%s' (id %lld): %s, kernel %s, %lld vcpu(s), %lld MiB%s%s", nm,
		  (long long)id, ad ? ad : "no network", ki.name, (long long)vcpus,
		  (long long)(memory >> 20), tap ? ", tap " : "", tap ? tap : "");
	free(nm);
	free(ad);
	free(run_dir);
	free(dir);
	free(overlay);
	free(tap);
	free(drv);
	kernel_info_release(&ki);
	note_done(&note);
	return 0;
}

static int reserve_record(struct step_ctx *ctx, struct queue *q, const msgpack_object *res)
{
	struct q_vm vm = {0};
	int64_t v = 0;
	vm.id = ctx->job_id;
	vm.name = mpk_dup_str(res, "name");
	vm.state = xstrdup(VS_CREATING);
	vm.image = mpk_dup_str(res, "image");
	vm.rootfs = mpk_dup_str(res, "rootfs");
	vm.kernel = mpk_dup_str(res, "kernel");
	mpk_get_int(res, "vcpus", &v);
	vm.vcpus = (int)v;
	mpk_get_int(res, "memory", &vm.memory);
	vm.address = mpk_dup_str(res, "address");
	vm.tap = mpk_dup_str(res, "tap");
	vm.overlay = mpk_dup_str(res, "overlay");
	vm.run_dir = mpk_dup_str(res, "run_dir");
	vm.node = V.node ? xstrdup(V.node) : NULL;
	vm.created = now_us();
	vm.created_by = ctx->job_id;
	int rc = BG_ERR_INVAL;
	if (vm.name && vm.image && vm.rootfs && vm.kernel && vm.overlay && vm.run_dir)
		rc = q->ops->vm_put(q, &vm);
	if (rc == BG_ERR_EXIST)
		step_fail(ctx, rc, true, "%s", q->errmsg);
	else if (rc == BG_ERR_INVAL)
		step_fail(ctx, rc, false, "internal: the reserve step's result is incomplete");
	q_vm_release(&vm);
	resv_drop(ctx->job_id); /* the row holds the name and address now */
	return rc;
}

static int reserve_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	int64_t id = 0;
	resv_drop(ctx->job_id);
	if (mpk_get_int(rec, "vm", &id) == 0 && id > 0)
		post_state(id, VS_DELETED, NULL, 0);
	return 0;
}

/* ---- vm.create: disk --------------------------------------------------------------------- */

static const msgpack_object *reserved(struct step_ctx *ctx)
{
	return step_result(ctx, 1);
}

/* The workspace step's result ({image, to, ...}), or NULL when the VM has
 * no workspace (its position in vm_create_steps). */
static const msgpack_object *ws_made(struct step_ctx *ctx)
{
	const msgpack_object *r = step_result(ctx, 3);
	return r && r->type == MSGPACK_OBJECT_MAP && mpk_get(r, "image") ? r : NULL;
}

static int disk_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	const msgpack_object *r = reserved(ctx);
	msgpack_pack_map(undo, 2);
	mpk_pack_str(undo, "overlay");
	pack_copy(undo, r, "overlay");
	mpk_pack_str(undo, "dir");
	pack_copy(undo, r, "disk_dir");
	return 0;
}

static int disk_do(struct step_ctx *ctx)
{
	const msgpack_object *r = reserved(ctx);
	char *overlay = mpk_dup_str(r, "overlay"), *dir = mpk_dup_str(r, "disk_dir");
	char *rootfs = mpk_dup_str(r, "rootfs"), *out = NULL;
	int rc;
	struct stat st;
	if (!overlay || !dir || !rootfs) {
		rc = step_fail(ctx, BG_ERR_INVAL, true, "the reserve step gave no disk paths");
		goto done;
	}
	if (stat(rootfs, &st) < 0) {
		rc = step_fail(ctx, BG_ERR_NOENT, true,
			       "the image's root filesystem '%s' is gone: %s (pull the image again)",
			       rootfs, strerror(errno));
		goto done;
	}
	if ((rc = mkdir_p(dir, 0700))) {
		rc = step_fail(ctx, rc, false, "cannot create '%s': %s", dir, bg_strerror(rc));
		goto done;
	}
	unlink(overlay); /* a half-made one from before a crash */
	const msgpack_object *drv = mpk_get(r, "driver");
	if (mpk_str_eq(drv, "firecracker")) {
		/* raw: a reflink where the file system has them, else a sparse
		 * copy (dm-snapshot needs device-mapper: docs/vms.md) */
		struct cowdisk_result cr;
		if ((rc = cowdisk_create(rootfs, overlay, 0, &cr, &out))) {
			rc = step_fail(ctx, rc, rc == BG_ERR_NOENT, "%s", out ? out : bg_strerror(rc));
			goto done;
		}
		step_logf(ctx, "root disk %s: %s of the image (%llu MiB copied)", overlay,
			  cr.method == COWDISK_REFLINK ? "a reflink" : "a sparse copy",
			  (unsigned long long)(cr.copied >> 20));
	} else {
		char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
				rootfs, overlay, NULL};
		rc = run_tool(ctx, argv, TOOL_TIMEOUT_US, &out);
		if (rc) {
			rc = step_fail(ctx, rc, rc != BG_ERR_CANCELED && rc != BG_ERR_TIMEDOUT,
				       "qemu-img create of '%s' failed: %s", overlay,
				       out && *out ? out : bg_strerror(rc));
			goto done;
		}
	}
	msgpack_pack_map(&ctx->result, 1);
	mpk_kv_str(&ctx->result, "overlay", overlay);
done:
	free(out);
	free(overlay);
	free(dir);
	free(rootfs);
	return rc;
}

static int disk_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	char *overlay = mpk_dup_str(rec, "overlay"), *dir = mpk_dup_str(rec, "dir");
	int rc = 0;
	if (overlay && unlink(overlay) < 0 && errno != ENOENT)
		rc = step_fail(ctx, bg_errno(errno), false, "cannot remove '%s': %s", overlay,
			       strerror(errno));
	if (!rc && dir) {
		int r = remove_tree(dir);
		if (r)
			rc = step_fail(ctx, r, false, "cannot remove '%s': %s", dir, bg_strerror(r));
	}
	free(overlay);
	free(dir);
	return rc;
}

/* ---- vm.create: workspace ------------------------------------------------------------------ */

static char *ws_image_of(int64_t id)
{
	return xasprintf("%s/%lld/workspace.img", V.vms_state, (long long)id);
}

static int ws_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	struct ws_spec w;
	bool present;
	int rc = ws_parse(ctx, &w, &present);
	if (rc)
		return rc;
	if (!present) {
		msgpack_pack_nil(undo);
		return 0;
	}
	char *img = ws_image_of(ctx->job_id), *tmp = xasprintf("%s.tmp", img);
	msgpack_pack_map(undo, 2);
	mpk_kv_str(undo, "image", img);
	mpk_kv_str(undo, "tmp", tmp);
	free(img);
	free(tmp);
	ws_spec_release(&w);
	return 0;
}

static void ws_warn(void *arg, enum workspace_skip kind, const char *path, const char *why)
{
	step_warnf(arg, "workspace: '%s' %s", path, why);
}

static bool ws_cancelled(void *arg)
{
	return step_cancelled(arg);
}

static int ws_do(struct step_ctx *ctx)
{
	struct ws_spec w;
	bool present;
	int rc = ws_parse(ctx, &w, &present);
	if (rc || !present)
		return rc;
	char *img = ws_image_of(ctx->job_id), *tmp = xasprintf("%s.tmp", img), *err = NULL;
	char *from = realpath(w.from, NULL);
	struct stat st;
	if (!from || stat(from, &st) != 0 || !S_ISDIR(st.st_mode)) {
		int e = from ? ENOTDIR : errno;
		rc = step_fail(ctx, e == ENOENT || e == ENOTDIR ? BG_ERR_NOENT : bg_errno(e), true,
			       "workspace: '%s' is not a directory this daemon can read: %s", w.from,
			       strerror(e));
		goto out;
	}
	struct workspace_opts o = {
		.exclude = (const char *const *)w.exclude,
		.headroom_bytes = WORKSPACE_HEADROOM_BYTES,
		.headroom_pct = WORKSPACE_HEADROOM_PCT,
		.warn = ws_warn,
		.cancelled = ws_cancelled,
		.arg = ctx,
	};
	struct workspace_result r;
	int64_t t0 = mono_us();
	unlink(tmp); /* a crashed attempt's */
	rc = workspace_build(from, &o, tmp, &r, &err);
	if (rc == 0 && rename(tmp, img) < 0) {
		rc = bg_errno(errno);
		err = xasprintf("cannot rename '%s' to '%s': %s", tmp, img, strerror(errno));
		unlink(tmp);
	}
	if (rc) {
		rc = step_fail(ctx, rc, rc == BG_ERR_INVAL || rc == BG_ERR_NOENT || rc == BG_ERR_PERM,
			       "workspace: %s", err ? err : bg_strerror(rc));
		goto out;
	}
	int64_t ms = (mono_us() - t0) / 1000;
	step_logf(ctx, "workspace: %s -> %s: %llu files, %llu dirs, %llu symlinks, %.1f MiB in "
		  "%.2f s%s",
		  from, w.to, (unsigned long long)r.files, (unsigned long long)r.dirs,
		  (unsigned long long)r.symlinks, r.data_bytes / 1048576.0, ms / 1000.0,
		  r.skipped ? " (some entries skipped: see the warnings)" : "");
	msgpack_packer *pk = &ctx->result;
	msgpack_pack_map(pk, 10);
	mpk_kv_str(pk, "image", img);
	mpk_kv_str(pk, "from", from);
	mpk_kv_str(pk, "to", w.to);
	mpk_kv_int(pk, "files", (int64_t)r.files);
	mpk_kv_int(pk, "dirs", (int64_t)r.dirs);
	mpk_kv_int(pk, "symlinks", (int64_t)r.symlinks);
	mpk_kv_int(pk, "data_bytes", (int64_t)r.data_bytes);
	mpk_kv_int(pk, "skipped", (int64_t)r.skipped);
	mpk_kv_int(pk, "excluded", (int64_t)r.excluded);
	mpk_kv_int(pk, "duration_ms", ms);
out:
	free(from);
	free(err);
	free(img);
	free(tmp);
	ws_spec_release(&w);
	return rc;
}

static int ws_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	if (!rec || rec->type != MSGPACK_OBJECT_MAP)
		return 0; /* no workspace */
	const char *keys[] = {"tmp", "image"};
	for (int i = 0; i < 2; i++) {
		char *p = mpk_dup_str(rec, keys[i]);
		if (p && unlink(p) < 0 && errno != ENOENT) {
			int rc = step_fail(ctx, bg_errno(errno), false, "cannot remove '%s': %s", p,
					   strerror(errno));
			free(p);
			return rc;
		}
		free(p);
	}
	return 0;
}

/* ---- vm.create: tap ------------------------------------------------------------------------ */

static int tap_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	char *tap = mpk_dup_str(reserved(ctx), "tap");
	if (!tap) {
		msgpack_pack_nil(undo); /* network: none */
		return 0;
	}
	struct hp_args a;
	memset(&a, 0, sizeof(a));
	a.present = HF_TAP | HF_BRIDGE;
	snprintf(a.tap, sizeof(a.tap), "%s", tap);
	snprintf(a.bridge, sizeof(a.bridge), "%s", V.bridge);
	helper_plan(undo, HP_M_TAP_CREATE, &a);
	free(tap);
	return 0;
}

static int helper_open(struct step_ctx *ctx, struct helper_client *hc)
{
	char *err = NULL;
	int rc = helper_connect(V.helper_sock, hc, &err);
	if (rc) {
		rc = step_fail(ctx, rc, rc == BG_ERR_PERM,
			       "cannot reach banger-helper at '%s': %s (start it, see "
			       "docs/privileges.md; or give the vm 'network: none')",
			       V.helper_sock, err ? err : bg_strerror(rc));
		free(err);
	}
	return rc;
}

static int tap_do(struct step_ctx *ctx)
{
	char *tap = mpk_dup_str(reserved(ctx), "tap");
	if (!tap)
		return 0;
	struct helper_client hc;
	char *err = NULL;
	int rc = helper_open(ctx, &hc);
	if (rc) {
		free(tap);
		return rc;
	}
	if ((rc = helper_bridge_ensure(&hc, ctx->op, V.bridge, &err)) == 0)
		rc = helper_tap_create(&hc, ctx->op, tap, V.bridge, &err);
	helper_close(&hc);
	if (rc)
		rc = step_fail(ctx, rc, rc == BG_ERR_INVAL || rc == BG_ERR_PERM || rc == BG_ERR_EXIST,
			       "cannot make tap '%s' on bridge '%s': %s", tap, V.bridge,
			       err ? err : bg_strerror(rc));
	else {
		msgpack_pack_map(&ctx->result, 2);
		mpk_kv_str(&ctx->result, "tap", tap);
		mpk_kv_str(&ctx->result, "bridge", V.bridge);
	}
	free(err);
	free(tap);
	return rc;
}

static int tap_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	if (!rec || rec->type != MSGPACK_OBJECT_MAP)
		return 0; /* network: none */
	struct helper_client hc;
	char *err = NULL;
	int rc = helper_connect(V.helper_sock, &hc, &err);
	if (rc == 0) {
		rc = helper_undo(&hc, ctx->op, rec, &err);
		helper_close(&hc);
	}
	if (rc)
		rc = step_fail(ctx, rc, false, "cannot remove the tap through banger-helper at '%s': %s",
			       V.helper_sock, err ? err : bg_strerror(rc));
	free(err);
	return rc;
}

/* ---- vm.create: start ------------------------------------------------------------------------ */

static int start_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	const msgpack_object *r = reserved(ctx);
	msgpack_pack_map(undo, 2);
	mpk_kv_int(undo, "vm", ctx->job_id);
	mpk_pack_str(undo, "run_dir");
	pack_copy(undo, r, "run_dir");
	return 0;
}

static int start_do(struct step_ctx *ctx)
{
	const msgpack_object *r = reserved(ctx);
	int64_t id = ctx->job_id, vcpus = 1, memory = VM_DEFAULT_MEMORY;
	char *run_dir = mpk_dup_str(r, "run_dir"), *name = mpk_dup_str(r, "name");
	char *vmlinuz = mpk_dup_str(r, "vmlinuz"), *initrd = mpk_dup_str(r, "initrd");
	char *overlay = mpk_dup_str(r, "overlay"), *tap = mpk_dup_str(r, "tap");
	char *address = mpk_dup_str(r, "address");
	char *ws_image = ws_made(ctx) ? mpk_dup_str(ws_made(ctx), "image") : NULL;
	enum hv_driver driver = mpk_str_eq(mpk_get(r, "driver"), "firecracker") ? HV_FIRECRACKER
										 : HV_QEMU;
	char *ip = NULL, *append = NULL, *err = NULL, *mac = NULL;
	struct hv_vm *qv = NULL;
	struct live *l = NULL;
	int rc;
	mpk_get_int(r, "vcpus", &vcpus);
	mpk_get_int(r, "memory", &memory);
	if (!run_dir || !name || !vmlinuz || !initrd || !overlay) {
		rc = step_fail(ctx, BG_ERR_INVAL, true, "the reserve step gave no run directory");
		goto out;
	}
	/* resumed after a crash: the QEMU it started may still run */
	if (hv_adopt(run_dir, &qv, &err) == 0) {
		step_logf(ctx, "the %s of vm '%s' still runs (pid %d): keeping it",
			  hv_driver_name(hv_driver_of(qv)), name, (int)hv_pid(qv));
		l = live_add(id, qv);
		goto started;
	}
	free(err);
	err = NULL;
	/* a QEMU without a pidfile yet, from before a crash */
	kill_run_dir(run_dir, ctx->op, &err);
	free(err);
	err = NULL;
	if (address) {
		char gw[16];
		addr_str(V.net + 1, gw);
		ip = xasprintf("%s/%d,%s", address, V.prefix, gw);
	}
	mac = xasprintf("52:54:00:%02x:%02x:%02x", (unsigned)((id >> 16) & 255),
			(unsigned)((id >> 8) & 255), (unsigned)(id & 255));
	append = xasprintf("banger.hostname=%s", name);
	struct hv_config cfg = {
		.driver = driver,
		.name = name,
		.run_dir = run_dir,
		.kernel = vmlinuz,
		.initrd = initrd,
		.rootfs = overlay,
		.rootfs_format = driver == HV_FIRECRACKER ? "raw" : "qcow2",
		.extra_disk = ws_image,
		.tap = tap,
		.mac = tap ? mac : NULL,
		.guest_ip = ip,
		.vcpus = (int)vcpus,
		.memory_mb = (int)(memory >> 20),
		.machine = QEMU_MICROVM,
		.accel = QEMU_ACCEL_AUTO,
		.probe_cache = V.probe_cache,
		.append = append,
		.firecracker_bin = V.firecracker_bin,
		.jailer_bin = V.jailer_bin,
		.jail_uid = (unsigned)getuid(),
		.jail_gid = (unsigned)getgid(),
	};
	if ((rc = hv_start(&cfg, &qv, &err))) {
		rc = step_fail(ctx, rc, rc == BG_ERR_INVAL || rc == BG_ERR_NOENT, "%s",
			       err ? err : bg_strerror(rc));
		goto out;
	}
	l = live_add(id, qv);
	step_logf(ctx, "%s started (pid %d, %s)", hv_driver_name(driver), (int)hv_pid(qv),
		  hv_accel_name(qv));
started:
	msgpack_pack_map(&ctx->result, 2);
	mpk_kv_int(&ctx->result, "pid", hv_pid(l->hv));
	mpk_kv_str(&ctx->result, "accel", hv_accel_name(l->hv));
	live_put(l);
	rc = 0;
out:
	free(err);
	free(run_dir);
	free(name);
	free(vmlinuz);
	free(initrd);
	free(overlay);
	free(tap);
	free(address);
	free(ws_image);
	free(ip);
	free(append);
	free(mac);
	return rc;
}

/* Stop holding the VM and make sure no QEMU of it runs; remove its run
 * directory. */
static int start_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	int64_t id = 0;
	char *run_dir = mpk_dup_str(rec, "run_dir"), *err = NULL;
	int rc = 0;
	mpk_get_int(rec, "vm", &id);
	if (!run_dir)
		return 0;
	struct live *l = live_get(id);
	if (l) {
		pthread_mutex_lock(&l->mu);
		hv_kill(l->hv);
		pthread_mutex_unlock(&l->mu);
		live_remove(id);
		live_put(l);
	}
	rc = kill_run_dir(run_dir, ctx->op, &err);
	if (rc) {
		rc = step_fail(ctx, rc, false, "cannot stop the qemu of '%s': %s", run_dir,
			       err ? err : bg_strerror(rc));
		free(err);
		free(run_dir);
		return rc;
	}
	if ((rc = hv_cleanup(run_dir, &err))) {
		rc = step_fail(ctx, rc, false, "cannot clean up after the hypervisor of '%s': %s",
			       run_dir, err ? err : bg_strerror(rc));
		free(err);
		free(run_dir);
		return rc;
	}
	int r = remove_tree(run_dir);
	if (r)
		rc = step_fail(ctx, r, false, "cannot remove '%s': %s", run_dir, bg_strerror(r));
	free(run_dir);
	return rc;
}

/* ---- vm.create: wait ----------------------------------------------------------------------------- */

static int wait_do(struct step_ctx *ctx)
{
	const msgpack_object *r = reserved(ctx);
	int64_t id = ctx->job_id, boot = VM_DEFAULT_BOOT_TIMEOUT_US;
	char *run_dir = mpk_dup_str(r, "run_dir"), *err = NULL;
	struct live *l = NULL;
	int rc;
	mpk_get_int(r, "boot_timeout", &boot);
	if (!run_dir)
		return step_fail(ctx, BG_ERR_INVAL, true, "the reserve step gave no run directory");
	if ((rc = live_find(id, run_dir, &l, &err))) {
		rc = step_fail(ctx, BG_ERR_CLOSED, true, "the vm's qemu is not running: %s",
			       err ? err : bg_strerror(rc));
		goto out;
	}
	int64_t t0 = mono_us();
	pthread_mutex_lock(&l->mu);
	if (l->conn) {
		agent_close(l->conn);
		l->conn = NULL;
	}
	rc = hv_wait_agent(l->hv, boot, &l->conn, &err);
	struct agent_conn *conn = l->conn;
	pthread_mutex_unlock(&l->mu);
	if (rc) {
		rc = step_fail(ctx, rc, rc == BG_ERR_CLOSED, "%s", err ? err : bg_strerror(rc));
		goto out;
	}
	const struct agent_info *ai = agent_info(conn);
	int64_t boot_ms = (mono_us() - t0) / 1000;
	char *ws_to = ws_made(ctx) ? mpk_dup_str(ws_made(ctx), "to") : NULL;
	bool ws = ws_to != NULL;
	if (ws_to) {
		/* BG_ERR_BUSY: mounted by this step before a crash */
		rc = agent_mount(conn, "LABEL=" WORKSPACE_LABEL, ws_to, NULL, false, boot, &err);
		if (rc && rc != BG_ERR_BUSY) {
			rc = step_fail(ctx, rc, false, "cannot mount the workspace at '%s' in the "
				       "guest: %s", ws_to, err ? err : bg_strerror(rc));
			free(ws_to);
			goto out;
		}
		rc = 0;
		step_logf(ctx, "workspace mounted at %s", ws_to);
		free(ws_to);
	}
	step_logf(ctx, "the guest's agent answered after %.2f s (guest uptime %lld ms, kernel %s)",
		  boot_ms / 1000.0, (long long)ai->uptime_ms, ai->kernel);
	msgpack_packer *pk = &ctx->result;
	msgpack_pack_map(pk, 8 + ws);
	mpk_kv_int(pk, "vm", id);
	if (ws) {
		mpk_pack_str(pk, "workspace");
		pack_copy(pk, ws_made(ctx), "to");
	}
	mpk_pack_str(pk, "name");
	pack_copy(pk, r, "name");
	mpk_pack_str(pk, "address");
	pack_copy(pk, r, "address");
	mpk_kv_int(pk, "pid", hv_pid(l->hv));
	mpk_kv_str(pk, "accel", hv_accel_name(l->hv));
	mpk_kv_int(pk, "wait_ms", boot_ms);
	mpk_kv_int(pk, "guest_uptime_ms", ai->uptime_ms);
	mpk_kv_str(pk, "guest_kernel", ai->kernel);
out:
	live_put(l);
	free(err);
	free(run_dir);
	return rc;
}

static int wait_record(struct step_ctx *ctx, struct queue *q, const msgpack_object *res)
{
	int64_t pid = 0;
	mpk_get_int(res, "pid", &pid);
	return q->ops->vm_set_state(q, ctx->job_id, VS_RUNNING, pid, NULL, 0, now_us());
}

/* ---- vm.exec ---------------------------------------------------------------------------------- */

/* The VM of `vm:` for an exec or a delete; a plan failure when it cannot be
 * used.  Packs {vm, name, run_dir, state, pid, created_by} into a note. */
static int vm_note(struct step_ctx *ctx, bool for_delete)
{
	if (!V.ready)
		return step_fail(ctx, BG_ERR_STATE, true, "this daemon was not set up to run VMs");
	char *ref = mpk_dup_str(ctx->params, "vm"), *why = NULL;
	struct q_vm vm = {0};
	int64_t created_by = 0;
	int rc = ref ? resolve_vm(ctx, ref, &vm, &created_by, &why) : BG_ERR_INVAL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (rc == BG_ERR_NOENT && for_delete && created_by) {
		/* its create job made nothing (failed early): nothing to delete */
		step_logf(ctx, "%s: nothing to delete", why);
		msgpack_pack_map(&pk, 1);
		mpk_kv_bool(&pk, "skip", true);
		note_put(ctx->job_id, ctx->seq, &sb);
		rc = 0;
		goto out;
	}
	if (rc) {
		rc = step_fail(ctx, rc, true, "%s", why ? why : "missing 'vm'");
		goto out;
	}
	bool deleted = !strcmp(vm.state, VS_DELETED);
	if (deleted && for_delete) {
		step_logf(ctx, "vm '%s' was already deleted%s: nothing to do", vm.name,
			  vm.deleted_by ? "" : " (its vm.create job was rolled back)");
		msgpack_pack_map(&pk, 1);
		mpk_kv_bool(&pk, "skip", true);
		note_put(ctx->job_id, ctx->seq, &sb);
		goto out;
	}
	if (deleted) {
		if (vm.deleted_by)
			rc = step_fail(ctx, BG_ERR_STATE, true, "vm '%s' was deleted (by job %lld)",
				       vm.name, (long long)vm.deleted_by);
		else
			rc = step_fail(ctx, BG_ERR_STATE, true,
				       "vm '%s' was deleted (its vm.create job %lld was rolled back)",
				       vm.name, (long long)vm.created_by);
		goto out;
	}
	if (!strcmp(vm.state, VS_CREATING) && vm.created_by != ctx->job_id) {
		rc = step_fail(ctx, BG_ERR_STATE, true,
			       "vm '%s' is still being created by job %lld%s", vm.name,
			       (long long)vm.created_by,
			       for_delete ? ": cancel that job instead" : "");
		goto out;
	}
	if (!for_delete && strcmp(vm.state, VS_RUNNING) != 0) {
		if (vm.error)
			rc = step_fail(ctx, BG_ERR_STATE, true, "vm '%s' is %s (%s): delete it",
				       vm.name, vm.state, vm.error);
		else
			rc = step_fail(ctx, BG_ERR_STATE, true, "vm '%s' is %s: delete it", vm.name,
				       vm.state);
		goto out;
	}
	msgpack_pack_map(&pk, 6);
	mpk_kv_int(&pk, "vm", vm.id);
	mpk_kv_str(&pk, "name", vm.name);
	mpk_kv_str(&pk, "run_dir", vm.run_dir);
	mpk_kv_str(&pk, "state", vm.state);
	mpk_kv_int(&pk, "pid", vm.pid);
	mpk_kv_int(&pk, "created_by", vm.created_by);
	note_put(ctx->job_id, ctx->seq, &sb);
out:
	msgpack_sbuffer_destroy(&sb);
	q_vm_release(&vm);
	free(ref);
	free(why);
	return rc;
}

static int exec_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	const msgpack_object *run = mpk_get(ctx->params, "run");
	const msgpack_object *argv = mpk_get(ctx->params, "argv");
	if ((run != NULL) == (argv != NULL))
		return step_fail(ctx, BG_ERR_INVAL, true,
				 "vm.exec needs exactly one of 'run' (a shell line) and 'argv' (a "
				 "list: the program and its arguments)");
	if (argv && (argv->type != MSGPACK_OBJECT_ARRAY || argv->via.array.size == 0))
		return step_fail(ctx, BG_ERR_INVAL, true, "'argv' must be a list that is not empty");
	return vm_note(ctx, false);
}

struct exec_out {
	struct step_ctx *ctx;
	uint64_t bytes;
};

static int exec_output(void *arg, int stream, const void *data, size_t len)
{
	struct exec_out *o = arg;
	o->bytes += len;
	step_emit(o->ctx, stream == 2 ? "stderr" : "stdout", data, len);
	return 0;
}

static bool exec_cancelled(void *arg)
{
	return step_cancelled(((struct exec_out *)arg)->ctx);
}

/* "NAME=value" strings from `env:` (a mapping, or a list of NAME=value). */
static int exec_env(struct step_ctx *ctx, char ***out)
{
	const msgpack_object *e = mpk_get(ctx->params, "env");
	*out = NULL;
	if (!e || e->type == MSGPACK_OBJECT_NIL)
		return 0;
	size_t n = e->type == MSGPACK_OBJECT_MAP ? e->via.map.size
		   : e->type == MSGPACK_OBJECT_ARRAY ? e->via.array.size : 0;
	if (e->type != MSGPACK_OBJECT_MAP && e->type != MSGPACK_OBJECT_ARRAY)
		return step_fail(ctx, BG_ERR_INVAL, true,
				 "'env' must be a mapping of names to values or a list of NAME=value");
	char **v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *k = NULL, *val = NULL;
		if (e->type == MSGPACK_OBJECT_MAP) {
			k = &e->via.map.ptr[i].key;
			val = &e->via.map.ptr[i].val;
		} else {
			val = &e->via.array.ptr[i];
		}
		if ((k && k->type != MSGPACK_OBJECT_STR) || val->type != MSGPACK_OBJECT_STR) {
			for (size_t j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return step_fail(ctx, BG_ERR_INVAL, true, "'env' entries must be strings");
		}
		if (k)
			v[i] = xasprintf("%.*s=%.*s", (int)k->via.str.size, k->via.str.ptr,
					 (int)val->via.str.size, val->via.str.ptr);
		else
			v[i] = xstrndup(val->via.str.ptr, val->via.str.size);
		const char *eq = strchr(v[i], '=');
		if (!eq || eq == v[i]) {
			int rc = step_fail(ctx, BG_ERR_INVAL, true,
					   "'env' entry '%.64s' is not NAME=value", v[i]);
			for (size_t j = 0; j <= i; j++)
				free(v[j]);
			free(v);
			return rc;
		}
	}
	*out = v;
	return 0;
}

/* Why a connection broke: the hypervisor's end, when it ended. */
static char *gone_reason(struct live *l, int64_t vm, const char *name)
{
	/* QEMU closes its sockets while it exits: give the exit a moment */
	if (hv_wait_exit(l->hv, 2000000) != 0)
		return NULL;
	char *why = xasprintf("the vm's hypervisor (%s, pid %d) exited",
			      hv_driver_name(hv_driver_of(l->hv)), (int)hv_pid(l->hv));
	post_state(vm, VS_STOPPED, why, 0);
	return why;
}

/* ---- using a running VM (vm.exec, and the workspace kinds through vm.h) ------------------ */

int vm_use_plan(struct step_ctx *ctx)
{
	return vm_note(ctx, false);
}

int vm_use_open(struct step_ctx *ctx, struct vm_use *u)
{
	memset(u, 0, sizeof(*u));
	struct note_buf note;
	if (note_get(ctx, &note))
		return no_note(ctx);
	const msgpack_object *n = &note.u.data;
	mpk_get_int(n, "vm", &u->vm);
	u->name = mpk_dup_str(n, "name");
	char *run_dir = mpk_dup_str(n, "run_dir"), *err = NULL;
	note_done(&note);
	int rc = live_find(u->vm, run_dir, &u->l, &err);
	if (rc) {
		rc = step_fail(ctx, BG_ERR_CLOSED, true, "vm '%s' is not running: %s", u->name,
			       err ? err : bg_strerror(rc));
		post_state(u->vm, VS_STOPPED, "its hypervisor was not running", 0);
	} else if ((rc = live_conn(u->l, CONNECT_TIMEOUT_US, &u->conn, &err))) {
		char *why = gone_reason(u->l, u->vm, u->name);
		rc = step_fail(ctx, rc, why != NULL, "cannot reach the agent of vm '%s': %s", u->name,
			       why ? why : err ? err : bg_strerror(rc));
		free(why);
	}
	free(err);
	free(run_dir);
	return rc;
}

int vm_use_broke(struct step_ctx *ctx, struct vm_use *u, int rc, const char *what,
		 const char *err)
{
	if (rc != BG_ERR_CLOSED && rc != BG_ERR_PROTO)
		return rc;
	char *why = u->l ? gone_reason(u->l, u->vm, u->name) : NULL;
	rc = step_fail(ctx, rc, true, "%s while %s ran%s%s",
		       why ? why : "the connection to the guest's agent broke", what,
		       why || !err ? "" : ": ", why || !err ? "" : err);
	free(why);
	return rc;
}

void vm_use_close(struct vm_use *u)
{
	live_put(u->l);
	free(u->name);
	memset(u, 0, sizeof(*u));
}

static int exec_do(struct step_ctx *ctx)
{
	struct vm_use u;
	char *shell = mpk_dup_str(ctx->params, "run"), *cwd = mpk_dup_str(ctx->params, "cwd");
	char **argv = NULL, **env = NULL, *err = NULL;
	struct agent_exec *ex = NULL;
	const char *stdin_data = NULL;
	size_t stdin_len = 0;
	bool has_stdin = mpk_get_str(ctx->params, "stdin", &stdin_data, &stdin_len) == 0;
	int rc;

	if ((rc = vm_use_open(ctx, &u)))
		goto out;
	const char *name = u.name;
	if ((rc = exec_env(ctx, &env)))
		goto out;
	const msgpack_object *av = mpk_get(ctx->params, "argv");
	if (av && av->type == MSGPACK_OBJECT_ARRAY) {
		argv = xcalloc(av->via.array.size + 1, sizeof(*argv));
		for (uint32_t i = 0; i < av->via.array.size; i++) {
			const msgpack_object *a = &av->via.array.ptr[i];
			if (a->type != MSGPACK_OBJECT_STR) {
				rc = step_fail(ctx, BG_ERR_INVAL, true, "'argv' entries must be strings");
				goto out;
			}
			argv[i] = xstrndup(a->via.str.ptr, a->via.str.size);
		}
	}
	struct agent_exec_req req = {
		.argv = (const char *const *)argv,
		.shell = argv ? NULL : shell,
		.env = (const char *const *)env,
		.cwd = cwd,
		.stdin_pipe = has_stdin,
	};
	if ((rc = agent_exec_start(u.conn, &req, &ex, &err))) {
		rc = step_fail(ctx, rc, false, "cannot start the command in vm '%s': %s", name,
			       err ? err : bg_strerror(rc));
		goto out;
	}
	/* stdin: the spec's text, then end of file (the agent holds up to
	 * AP_STDIN_BUFFER_MAX of it while the command does not read) */
	if (has_stdin && ((stdin_len && (rc = agent_exec_stdin(ex, stdin_data, stdin_len))) ||
			  (rc = agent_exec_stdin(ex, NULL, 0)))) {
		if (rc == BG_ERR_CLOSED || rc == BG_ERR_PROTO)
			rc = vm_use_broke(ctx, &u, rc, "the command's input was sent", NULL);
		else
			rc = step_fail(ctx, rc, false, "cannot send the command's input: %s",
				       bg_strerror(rc));
		goto out;
	}
	struct exec_out eo = {.ctx = ctx};
	struct agent_wait_opts wo = {
		.on_output = exec_output, .arg = &eo, .cancelled = exec_cancelled};
	struct agent_exit st;
	int64_t t0 = mono_us();
	rc = agent_exec_wait(ex, &wo, &st, &err);
	int64_t ms = (mono_us() - t0) / 1000;
	if (rc == BG_ERR_CANCELED) {
		/* the engine says why (cancel or the job's timeout); the agent
		 * killed the command's process group */
		rc = step_fail(ctx, rc, false, "the command was killed in the guest");
		goto out;
	}
	if (rc == BG_ERR_CLOSED || rc == BG_ERR_PROTO) {
		rc = vm_use_broke(ctx, &u, rc, "the command", err);
		goto out;
	}
	if (rc) {
		/* could not start: no such program, bad cwd, ... */
		rc = step_fail(ctx, rc, true, "%s", err ? err : bg_strerror(rc));
		goto out;
	}
	int code = st.signaled ? 128 + st.value : st.value;
	msgpack_pack_map(&ctx->result, 4);
	mpk_kv_int(&ctx->result, "exit_code", code);
	mpk_kv_int(&ctx->result, "signal", st.signaled ? st.value : 0);
	mpk_kv_int(&ctx->result, "output_bytes", (int64_t)eo.bytes);
	mpk_kv_int(&ctx->result, "duration_ms", ms);
	step_set_exit(ctx, code);
	if (st.signaled)
		rc = step_fail(ctx, BG_ERR_STEP, true, "the command was killed by signal %d (%s)",
			       st.value, strsignal(st.value));
	else if (st.value != 0)
		rc = step_fail(ctx, BG_ERR_STEP, true, "the command exited with status %d", st.value);
out:
	if (ex)
		agent_exec_destroy(ex);
	vm_use_close(&u);
	strv_free(argv);
	strv_free(env);
	free(err);
	free(shell);
	free(cwd);
	return rc;
}

/* ---- vm.delete: stop ---------------------------------------------------------------------------- */

static int stop_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	return vm_note(ctx, true);
}

static int stop_do(struct step_ctx *ctx)
{
	struct note_buf note;
	if (note_get(ctx, &note))
		return no_note(ctx);
	const msgpack_object *n = &note.u.data;
	bool skip = false;
	mpk_get_bool(n, "skip", &skip);
	msgpack_packer *pk = &ctx->result;
	if (skip) {
		msgpack_pack_map(pk, 1);
		mpk_kv_bool(pk, "skipped", true);
		note_done(&note);
		return 0;
	}
	int64_t vm = 0, grace = VM_DEFAULT_GRACE_US;
	mpk_get_int(n, "vm", &vm);
	mpk_get_int(ctx->params, "grace", &grace);
	char *name = mpk_dup_str(n, "name"), *run_dir = mpk_dup_str(n, "run_dir"), *err = NULL;
	struct live *l = NULL;
	bool graceful = false, was_running = false;
	int rc = 0;
	if (live_find(vm, run_dir, &l, &err) == 0) {
		pthread_mutex_lock(&l->mu);
		was_running = hv_running(l->hv);
		struct agent_conn *conn = l->conn && agent_conn_error(l->conn) == 0 ? l->conn : NULL;
		if (was_running && !conn && hv_connect_agent(l->hv, 2000000, &l->conn, NULL) == 0)
			conn = l->conn;
		if (was_running)
			rc = hv_stop(l->hv, conn, grace, &graceful, &err);
		pthread_mutex_unlock(&l->mu);
		live_remove(vm);
		live_put(l);
	}
	free(err);
	err = NULL;
	/* whatever QEMU still names the run directory (not ours to signal:
	 * through the helper) */
	int r = kill_run_dir(run_dir, ctx->op, &err);
	if (r) {
		rc = step_fail(ctx, r, false, "cannot stop vm '%s': %s", name, err);
		goto out;
	}
	rc = 0;
	if (was_running)
		step_logf(ctx, "vm '%s' %s", name,
			  graceful ? "powered off" : "did not power off in time: killed");
	else
		step_logf(ctx, "vm '%s': its hypervisor was not running", name);
	msgpack_pack_map(pk, 4);
	mpk_kv_int(pk, "vm", vm);
	mpk_kv_str(pk, "name", name);
	mpk_kv_bool(pk, "was_running", was_running);
	mpk_kv_bool(pk, "graceful", graceful);
out:
	free(err);
	free(name);
	free(run_dir);
	note_done(&note);
	return rc;
}

static int stop_record(struct step_ctx *ctx, struct queue *q, const msgpack_object *res)
{
	int64_t vm = 0;
	if (mpk_get_int(res, "vm", &vm) != 0)
		return 0; /* skipped */
	return q->ops->vm_set_state(q, vm, VS_STOPPED, -1, NULL, 0, now_us());
}

/* ---- vm.delete: teardown ------------------------------------------------------------------------ */

/* The create job's undo records of start, tap and disk (the steps that hold
 * something), from its op log; rebuilt from the row when the log has none. */
static int teardown_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	int64_t vm = 0;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (mpk_get_int(step_result(ctx, 1), "vm", &vm) != 0) {
		msgpack_pack_map(&pk, 1);
		mpk_kv_bool(&pk, "skip", true);
		note_put(ctx->job_id, ctx->seq, &sb);
		return 0;
	}
	struct q_vm row = {0};
	if (V.q->ops->vm_get(V.q, vm, &row) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return step_fail(ctx, BG_ERR_NOENT, true, "vm %lld vanished", (long long)vm);
	}
	static const char *const names[] = {"start", "tap", "disk"};
	const char *recs[3] = {0};
	size_t lens[3] = {0};
	struct q_job job = {0};
	struct q_step *steps = NULL;
	size_t nsteps = 0;
	if (V.q->ops->job_get(V.q, row.created_by, &job) == 0 &&
	    V.q->ops->steps(V.q, job.id, job.attempt, &steps, &nsteps) == 0) {
		for (size_t i = 0; i < nsteps; i++)
			for (int k = 0; k < 3; k++)
				if (!strcmp(steps[i].name, names[k]) && steps[i].undo) {
					recs[k] = steps[i].undo;
					lens[k] = steps[i].undo_len;
				}
	}
	msgpack_pack_map(&pk, 5);
	mpk_kv_int(&pk, "vm", vm);
	mpk_kv_str(&pk, "name", row.name);
	for (int k = 0; k < 3; k++) {
		mpk_pack_str(&pk, names[k]);
		if (recs[k]) {
			msgpack_sbuffer_write(&sb, recs[k], lens[k]);
		} else if (k == 0) { /* start */
			msgpack_pack_map(&pk, 2);
			mpk_kv_int(&pk, "vm", vm);
			mpk_kv_str(&pk, "run_dir", row.run_dir);
		} else if (k == 1 && row.tap) {
			struct hp_args a;
			memset(&a, 0, sizeof(a));
			a.present = HF_TAP | HF_BRIDGE;
			snprintf(a.tap, sizeof(a.tap), "%s", row.tap);
			snprintf(a.bridge, sizeof(a.bridge), "%s", V.bridge);
			helper_plan(&pk, HP_M_TAP_CREATE, &a);
		} else if (k == 2) {
			char *dir = disk_dir_of(vm);
			msgpack_pack_map(&pk, 2);
			mpk_kv_str(&pk, "overlay", row.overlay);
			mpk_kv_str(&pk, "dir", dir);
			free(dir);
		} else {
			msgpack_pack_nil(&pk);
		}
	}
	note_put(ctx->job_id, ctx->seq, &sb);
	for (size_t i = 0; i < nsteps; i++)
		q_step_release(&steps[i]);
	free(steps);
	q_job_release(&job);
	q_vm_release(&row);
	return 0;
}

static int teardown_do(struct step_ctx *ctx)
{
	struct note_buf note;
	if (note_get(ctx, &note))
		return no_note(ctx);
	const msgpack_object *n = &note.u.data;
	bool skip = false;
	int rc = 0;
	mpk_get_bool(n, "skip", &skip);
	if (skip) {
		msgpack_pack_map(&ctx->result, 1);
		mpk_kv_bool(&ctx->result, "skipped", true);
		goto out;
	}
	/* newest first, as a rollback of the create would */
	if ((rc = start_undo(ctx, mpk_get(n, "start"))) || (rc = tap_undo(ctx, mpk_get(n, "tap"))) ||
	    (rc = disk_undo(ctx, mpk_get(n, "disk"))))
		goto out;
	int64_t vm = 0;
	mpk_get_int(n, "vm", &vm);
	char *name = mpk_dup_str(n, "name");
	step_logf(ctx, "vm '%s': hypervisor, run directory, tap and disks are gone", name);
	msgpack_pack_map(&ctx->result, 2);
	mpk_kv_int(&ctx->result, "vm", vm);
	mpk_kv_str(&ctx->result, "name", name);
	free(name);
out:
	note_done(&note);
	return rc;
}

static int teardown_record(struct step_ctx *ctx, struct queue *q, const msgpack_object *res)
{
	int64_t vm = 0;
	if (mpk_get_int(res, "vm", &vm) != 0)
		return 0;
	return q->ops->vm_set_state(q, vm, VS_DELETED, -1, NULL, ctx->job_id, now_us());
}

/* ---- the kinds ------------------------------------------------------------------------------------ */

static const struct kind_field vm_create_fields[] = {
	{"image", FT_STR, true},
	{"kernel", FT_STR, false},
	{"vcpus", FT_INT, false},
	{"memory", FT_SIZE, false},
	{"vm_name", FT_STR, false},
	{"network", FT_STR, false},
	{"boot_timeout", FT_DURATION, false},
	{"workspace", FT_ANY, false},
	{"hypervisor", FT_STR, false},
	{NULL},
};

static const struct step_def vm_create_steps[] = {
	{.name = "reserve", .plan = reserve_plan, .do_ = reserve_do, .undo = reserve_undo,
	 .resumable = true, .record = reserve_record},
	{.name = "disk", .plan = disk_plan, .do_ = disk_do, .undo = disk_undo, .resumable = true},
	{.name = "workspace", .plan = ws_plan, .do_ = ws_do, .undo = ws_undo, .resumable = true},
	{.name = "tap", .plan = tap_plan, .do_ = tap_do, .undo = tap_undo, .resumable = true},
	{.name = "start", .plan = start_plan, .do_ = start_do, .undo = start_undo,
	 .resumable = true},
	{.name = "wait", .do_ = wait_do, .resumable = true, .record = wait_record},
};

const struct kind kind_vm_create = {
	.name = "vm.create",
	.summary = "boot a microVM from a pulled image and wait for its agent",
	.fields = vm_create_fields,
	.steps = vm_create_steps,
	.nsteps = ARRAY_LEN(vm_create_steps),
	.retry_interrupted = true,
	.wants_dir = true,
};

static const struct kind_field vm_exec_fields[] = {
	{"vm", FT_STR, true},
	{"run", FT_STR, false},
	{"argv", FT_STRLIST, false},
	{"env", FT_ANY, false},
	{"cwd", FT_STR, false},
	{"stdin", FT_STR, false},
	{NULL},
};

static const struct step_def vm_exec_steps[] = {
	{.name = "exec", .plan = exec_plan, .do_ = exec_do, .resumable = false},
};

const struct kind kind_vm_exec = {
	.name = "vm.exec",
	.summary = "run a command in a VM; its output streams into the job's events",
	.fields = vm_exec_fields,
	.steps = vm_exec_steps,
	.nsteps = ARRAY_LEN(vm_exec_steps),
	.retry_interrupted = false,
};

static const struct kind_field vm_delete_fields[] = {
	{"vm", FT_STR, true},
	{"grace", FT_DURATION, false},
	{NULL},
};

static const struct step_def vm_delete_steps[] = {
	{.name = "stop", .plan = stop_plan, .do_ = stop_do, .resumable = true,
	 .record = stop_record},
	{.name = "teardown", .plan = teardown_plan, .do_ = teardown_do, .resumable = true,
	 .record = teardown_record},
};

const struct kind kind_vm_delete = {
	.name = "vm.delete",
	.summary = "stop a VM and remove everything it held",
	.fields = vm_delete_fields,
	.steps = vm_delete_steps,
	.nsteps = ARRAY_LEN(vm_delete_steps),
	.retry_interrupted = true,
};

/* ---- setup -------------------------------------------------------------------------------------------- */

static char *exe_dir_file(const char *file)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		return xstrdup(file);
	buf[n] = '\0';
	char *slash = strrchr(buf, '/');
	if (slash)
		*slash = '\0';
	return xasprintf("%s/%s", buf, file);
}

int vms_init(uv_loop_t *loop, struct queue *q, const struct bg_config *cfg, const char *node)
{
	V.loop = loop;
	V.q = q;
	V.state_dir = xstrdup(cfg->state_dir);
	V.runtime_dir = xstrdup(cfg->runtime_dir);
	V.vms_run = xasprintf("%s/vms", cfg->runtime_dir);
	V.vms_state = xasprintf("%s/vms", cfg->state_dir);
	V.node = node ? xstrdup(node) : NULL;
	V.helper_sock = cfg->helper_socket ? xstrdup(cfg->helper_socket)
					   : helper_socket_path(cfg->runtime_dir);
	V.agent_path = cfg->agent_path ? xstrdup(cfg->agent_path) : exe_dir_file("banger-agent");
	V.bridge = xstrdup(cfg->bridge ? cfg->bridge : "bgbr0");
	V.probe_cache = xasprintf("%s/kvm-probe", cfg->runtime_dir);
	V.max_export_bytes = cfg->max_export_bytes;
	V.artifacts_dir = cfg->artifacts_dir ? xstrdup(cfg->artifacts_dir) : NULL;
	V.firecracker_bin = cfg->firecracker_path ? xstrdup(cfg->firecracker_path) : NULL;
	V.jailer_bin = cfg->jailer_path ? xstrdup(cfg->jailer_path) : NULL;
	V.prefix = cfg->net_prefix;
	V.mask = cfg->net_prefix ? ~0u << (32 - cfg->net_prefix) : 0;
	V.net = cfg->net_addr & V.mask;
	mkdir_p(V.vms_run, 0700);
	mkdir_p(V.vms_state, 0700);
	uv_async_init(loop, &V.post_async, on_post);
	uv_unref((uv_handle_t *)&V.post_async);
	V.ready = true;
	return 0;
}

const char *vms_agent_path(void)
{
	return V.agent_path;
}

const char *vms_helper_socket(void)
{
	return V.helper_sock;
}

const char *vms_probe_cache(void)
{
	return V.probe_cache;
}

int64_t vms_max_export_bytes(void)
{
	return V.max_export_bytes;
}

const char *vms_artifacts_dir(void)
{
	return V.artifacts_dir;
}

/* ---- recovery ------------------------------------------------------------------------------------------ */

struct owned {
	struct q_vm *v;
	size_t n, cap;
};

static int collect_vm(const struct q_vm *vm, void *arg)
{
	struct owned *o = arg;
	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 16;
		o->v = xrealloc(o->v, o->cap * sizeof(*o->v));
	}
	struct q_vm *c = &o->v[o->n++];
	memset(c, 0, sizeof(*c));
	c->id = vm->id;
	c->state = xstrdup(vm->state);
	c->name = xstrdup(vm->name);
	c->run_dir = vm->run_dir ? xstrdup(vm->run_dir) : NULL;
	c->node = vm->node ? xstrdup(vm->node) : NULL;
	c->created_by = vm->created_by;
	return 0;
}

static bool owned_has(const struct owned *o, int64_t id)
{
	for (size_t i = 0; i < o->n; i++)
		if (o->v[i].id == id && strcmp(o->v[i].state, VS_DELETED) != 0)
			return true;
	return false;
}

/* Ids of the numeric entries of dir. */
static size_t dir_ids(const char *dir, int64_t **out)
{
	size_t n = 0, cap = 0;
	*out = NULL;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long long id = strtoll(e->d_name, &end, 10);
		if (*end || id <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			*out = xrealloc(*out, cap * sizeof(**out));
		}
		(*out)[n++] = id;
	}
	closedir(d);
	return n;
}

static void reclaim(const struct owned *o)
{
	const char *op = "recovery";
	char *err = NULL;
	/* hypervisors naming a run directory of a VM nobody owns */
	char *needle = xasprintf("%s/", V.vms_run);
	pid_t *pids;
	size_t np = procs_naming(needle, &pids);
	for (size_t i = 0; i < np; i++) {
		char *cmd = cmdline_of(pids[i]);
		const char *p = cmd ? strstr(cmd, needle) : NULL;
		int64_t id = p ? strtoll(p + strlen(needle), NULL, 10) : 0;
		free(cmd);
		if (id <= 0 || owned_has(o, id))
			continue;
		log_info(NULL, 0, "recovery: killing qemu pid %d of vm %lld, which no vm owns",
			 (int)pids[i], (long long)id);
		if (kill_named(pids[i], needle, op, &err))
			log_warn(NULL, 0, "recovery: %s", err);
		free(err);
		err = NULL;
	}
	free(pids);
	free(needle);
	/* run directories and root disks */
	const char *bases[] = {V.vms_run, V.vms_state};
	for (int b = 0; b < 2; b++) {
		int64_t *ids;
		size_t n = dir_ids(bases[b], &ids);
		for (size_t i = 0; i < n; i++) {
			if (owned_has(o, ids[i]))
				continue;
			char *path = xasprintf("%s/%lld", bases[b], (long long)ids[i]);
			log_info(NULL, 0, "recovery: removing '%s', which no vm owns", path);
			int rc = remove_tree(path);
			if (rc)
				log_warn(NULL, 0, "recovery: cannot remove '%s': %s", path,
					 bg_strerror(rc));
			free(path);
		}
		free(ids);
	}
	/* taps, from the helper's inventory */
	struct helper_client hc;
	if (helper_connect(V.helper_sock, &hc, &err) != 0) {
		log_info(NULL, 0, "recovery: taps not checked: banger-helper not reachable at '%s' "
			 "(%s)", V.helper_sock, err ? err : "?");
		free(err);
		return;
	}
	msgpack_unpacked reply;
	const msgpack_object *inv;
	if (helper_inventory(&hc, op, &reply, &inv, &err) == 0) {
		const msgpack_object *taps = mpk_get(inv, "taps");
		for (uint32_t i = 0; taps && taps->type == MSGPACK_OBJECT_ARRAY &&
				     i < taps->via.array.size; i++) {
			char *t = mpk_dup_str(&taps->via.array.ptr[i], "name");
			int64_t id = t && !strncmp(t, "bg", 2) ? strtoll(t + 2, NULL, 16) : 0;
			if (id > 0 && !owned_has(o, id)) {
				log_info(NULL, 0, "recovery: removing tap '%s', which no vm owns", t);
				if (helper_tap_remove(&hc, op, t, &err))
					log_warn(NULL, 0, "recovery: cannot remove tap '%s': %s", t,
						 err ? err : "?");
				free(err);
				err = NULL;
			}
			free(t);
		}
		msgpack_unpacked_destroy(&reply);
	} else {
		log_warn(NULL, 0, "recovery: helper inventory failed: %s", err ? err : "?");
		free(err);
	}
	helper_close(&hc);
}

void vms_recover(void)
{
	if (!V.ready)
		return;
	struct owned o = {0};
	V.q->ops->vm_list(V.q, false, collect_vm, &o);
	int64_t now = now_us();
	for (size_t i = 0; i < o.n; i++) {
		struct q_vm *vm = &o.v[i];
		if (vm->node && V.node && strcmp(vm->node, V.node) != 0)
			continue; /* another node's */
		if (!strcmp(vm->state, VS_CREATING)) {
			struct q_job j;
			if (V.q->ops->job_get(V.q, vm->created_by, &j) == 0) {
				/* queued with its attempt open: drained mid-create, it
				 * resumes; queued with it closed: rolled back, to retry */
				bool over = job_state_final(j.state) ||
					    (!strcmp(j.state, JS_QUEUED) && !j.attempt_open);
				if (over) {
					log_info(NULL, vm->created_by, "recovery: vm '%s' was never finished "
						 "(its vm.create job is %s): recorded deleted", vm->name,
						 j.state);
					V.q->ops->vm_set_state(V.q, vm->id, VS_DELETED, -1, NULL, 0, now);
					free(vm->state);
					vm->state = xstrdup(VS_DELETED);
				}
				q_job_release(&j);
			}
			continue;
		}
		char *err = NULL;
		struct hv_vm *qv;
		if (vm->run_dir && hv_adopt(vm->run_dir, &qv, &err) == 0) {
			log_info(NULL, 0, "recovery: re-adopted vm '%s' (%s pid %d)", vm->name,
				 hv_driver_name(hv_driver_of(qv)), (int)hv_pid(qv));
			live_put(live_add(vm->id, qv));
			if (strcmp(vm->state, VS_RUNNING) != 0)
				V.q->ops->vm_set_state(V.q, vm->id, VS_RUNNING, hv_pid(qv), NULL, 0,
						       now);
		} else if (!strcmp(vm->state, VS_RUNNING)) {
			log_warn(NULL, 0, "recovery: vm '%s' is not running any more (%s): recorded "
				 "stopped", vm->name, err ? err : "?");
			V.q->ops->vm_set_state(V.q, vm->id, VS_STOPPED, -1,
					       "its hypervisor was gone when bangerd restarted", 0,
					       now);
		}
		free(err);
	}
	reclaim(&o);
	for (size_t i = 0; i < o.n; i++)
		q_vm_release(&o.v[i]);
	free(o.v);
}
