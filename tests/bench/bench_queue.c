/*
 * bench_queue.c: banger's queue benchmark (`make bench` runs it through
 * tests/bench/run.sh; docs/benchmarks.md explains every figure).
 *
 *   bench-queue --daemon build/bangerd-test --dir DIR [--only NAME]...
 *
 * Each figure starts a fresh bangerd-test in a fresh directory under DIR
 * (file-backed SQLite queue, the daemon's default durability), drives it
 * through the real RPC protocol (common/rpc.h) and stops it with SIGTERM (kill
 * -9 if it has not exited after 30 s).  A naive durable queue (one SQLite
 * insert per WAL transaction, synchronous=FULL) is measured in the same run
 * so that ratios survive a noisy machine.  Prints one table: figure | value |
 * target | ok/MISSED.  A missed target is reported, never hidden; the exit
 * status is 0 unless the benchmark itself could not run.
 *
 * PROCESSES.  Daemons are children of this process's main thread.  They die
 * with it (PR_SET_PDEATHSIG), are killed on SIGINT/SIGTERM/SIGHUP and at exit,
 * and each writes its pid to DIR/FIGURE/daemon.pid for run.sh's trap.  Only
 * the 8-client submit figure uses threads; each owns its connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "mpk.h"
#include "protocol.h"
#include "rpc.h"
#include "util.h"

#define HOUR_US 3600000000LL /* delay / sleep that keeps a job out of the way */

/* ---- the figures' sizes and targets (the numbers) ---- */
#define E2E_JOBS 100000
#define E2E_BATCH 10000
#define E2E_TARGET 20000.0 /* jobs/s */
#define E2E_TIMEOUT_US (80 * 1000000LL)
#define CONC_CLIENTS 8
#define CONC_JOBS 40000
#define CONC_TARGET 20000.0
#define SEQ_JOBS 10000
#define SEQ_TARGET 5000.0
#define BATCH_RPCS 10
#define BATCH_JOBS 10000
#define BATCH_TARGET 100000.0
#define PICKUP_JOBS 1000
#define PICKUP_P50_MS 1.0
#define PICKUP_P99_MS 5.0
#define RECOVER_JOBS 10000
#define RECOVER_TARGET_S 2.0
#define BASE_ROWS 2000

/* Wall-clock bounds that keep the whole run under 3 minutes: past one, the
 * figure is reported from what was measured by then, marked as partial, and
 * the run moves on. */
#define SUBMIT_BOUND_US (20 * 1000000LL)  /* 2a, 2b */
#define FIGURE_TIMEOUT_US (30 * 1000000LL) /* pickup, recovery waits */

static const char *daemon_bin;
static const char *base_dir;

/* ---- results table ---- */

struct row {
	int seq; /* order of measurement, to keep a figure's rows together */
	char fig[64];
	char value[48];
	char target[24];
	char ok[16];
};
static struct row rows[32];
static int nrows;
static char notes[4096];
static size_t notes_len;

static void add_row(const char *fig, const char *ok, const char *target, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void add_row(const char *fig, const char *ok, const char *target, const char *fmt, ...)
{
	if (nrows >= (int)ARRAY_LEN(rows))
		return;
	struct row *r = &rows[nrows];
	va_list ap;
	r->seq = nrows++;
	snprintf(r->fig, sizeof(r->fig), "%s", fig);
	snprintf(r->target, sizeof(r->target), "%s", target);
	snprintf(r->ok, sizeof(r->ok), "%s", ok);
	va_start(ap, fmt);
	vsnprintf(r->value, sizeof(r->value), fmt, ap);
	va_end(ap);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	if (notes_len >= sizeof(notes) - 2)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(notes + notes_len, sizeof(notes) - notes_len - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	notes_len += (size_t)n;
	if (notes_len > sizeof(notes) - 2)
		notes_len = sizeof(notes) - 2;
	notes[notes_len++] = '\n';
	notes[notes_len] = '\0';
}

/* Rows in figure order (a label starts with its figure's number: "2a. ";
 * the ratios come last), then in the order they were measured. */
static void row_key(const struct row *r, char key[8])
{
	size_t n = strcspn(r->fig, ". ");
	if (r->fig[0] < '0' || r->fig[0] > '9' || n >= 8)
		snprintf(key, 8, "~");
	else
		snprintf(key, 8, "%.*s", (int)n, r->fig);
}

static int cmp_row(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	char kx[8], ky[8];
	row_key(x, kx);
	row_key(y, ky);
	int c = strcmp(kx, ky);
	return c ? c : x->seq - y->seq;
}

static const char *okif(bool ok)
{
	return ok ? "ok" : "MISSED";
}

static void sleep_us(int64_t us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- daemons ---- */

struct daemon {
	pid_t pid;
	char dir[512], state[560], run[560], sock[600], log[560];
};

static pid_t live[4];

static void live_add(pid_t p)
{
	for (size_t i = 0; i < ARRAY_LEN(live); i++)
		if (live[i] == 0) {
			live[i] = p;
			return;
		}
}

static void live_del(pid_t p)
{
	for (size_t i = 0; i < ARRAY_LEN(live); i++)
		if (live[i] == p)
			live[i] = 0;
}

/* Async-signal-safe: SIGKILL every daemon still running. */
static void kill_live(void)
{
	for (size_t i = 0; i < ARRAY_LEN(live); i++)
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
}

static void on_fatal_signal(int sig)
{
	kill_live();
	_exit(128 + sig);
}

/* Make DIR/NAME with state/ and run/ below it; fills d's paths. */
static int daemon_dirs(struct daemon *d, const char *name)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s/%s", base_dir, name);
	snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
	snprintf(d->run, sizeof(d->run), "%s/run", d->dir);
	snprintf(d->sock, sizeof(d->sock), "%s/%s", d->run, BG_SOCKET_NAME);
	snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
	if (mkdir(d->dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "bench-queue: cannot create '%s': %s\n", d->dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* fork + exec the daemon; returns at once (see daemon_connect). */
static int daemon_spawn(struct daemon *d, int workers, int max_running)
{
	char w[16], m[16];
	snprintf(w, sizeof(w), "%d", workers);
	snprintf(m, sizeof(m), "%d", max_running);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "bench-queue: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int nul = open("/dev/null", O_RDWR);
		if (fd < 0 || nul < 0)
			_exit(127);
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(fd, 2);
		/* no user config file: the daemon's defaults, our directories */
		unsetenv("BANGER_CONFIG");
		setenv("XDG_CONFIG_HOME", d->dir, 1);
		execl(daemon_bin, daemon_bin, "--state-dir", d->state, "--runtime-dir", d->run,
		      "--workers", w, "--max-running", m, (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	live_add(pid);
	char pidfile[600], buf[32];
	snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", d->dir);
	int fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		int n = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
		if (write(fd, buf, (size_t)n) != n) {
			/* run.sh's trap is a fallback; PDEATHSIG covers us */
		}
		close(fd);
	}
	return 0;
}

/* Connect to d's socket, retrying every 1 ms until it answers or timeout. */
static int daemon_connect(struct daemon *d, struct rpc_client *c, int64_t timeout_us)
{
	int64_t end = mono_us() + timeout_us;
	for (;;) {
		char *err = NULL;
		if (rpc_connect(d->sock, c, &err) == 0)
			return 0;
		free(err);
		int st;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			live_del(d->pid);
			d->pid = 0;
			fprintf(stderr, "bench-queue: bangerd exited at start (see %s)\n", d->log);
			return -1;
		}
		if (mono_us() > end) {
			fprintf(stderr, "bench-queue: bangerd did not listen on '%s' in time\n",
				d->sock);
			return -1;
		}
		sleep_us(1000);
	}
}

static int daemon_start(struct daemon *d, int workers, int max_running, struct rpc_client *c)
{
	if (daemon_spawn(d, workers, max_running))
		return -1;
	return daemon_connect(d, c, 20 * 1000000LL);
}

/* SIGTERM, wait up to 30 s, then SIGKILL.  Returns the seconds it took, or
 * -1 when it had to be killed. */
static double daemon_stop(struct daemon *d)
{
	if (d->pid <= 0)
		return 0;
	int64_t t0 = mono_us();
	kill(d->pid, SIGTERM);
	for (;;) {
		int st;
		pid_t r = waitpid(d->pid, &st, WNOHANG);
		if (r == d->pid || (r < 0 && errno == ECHILD))
			break;
		if (mono_us() - t0 > 30 * 1000000LL) {
			fprintf(stderr, "bench-queue: bangerd %d ignored SIGTERM for 30 s: killing it\n",
				(int)d->pid);
			kill(d->pid, SIGKILL);
			waitpid(d->pid, NULL, 0);
			live_del(d->pid);
			d->pid = 0;
			return -1;
		}
		sleep_us(2000);
	}
	live_del(d->pid);
	d->pid = 0;
	return (double)(mono_us() - t0) / 1e6;
}

static void daemon_kill9(struct daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	live_del(d->pid);
	d->pid = 0;
}

/* Stop a figure's daemon and say so when it did not stop cleanly. */
static void figure_end(struct daemon *d, struct rpc_client *c, const char *fig)
{
	rpc_close(c);
	double s = daemon_stop(d);
	if (s < 0)
		note("%s: bangerd did not stop within 30 s of SIGTERM and was killed", fig);
	else if (s > 2)
		note("%s: bangerd took %.1f s to stop after SIGTERM", fig, s);
}

/* ---- RPC helpers ---- */

/* One call; on failure prints why and returns the error. */
static int call(struct rpc_client *c, const char *method, const msgpack_sbuffer *params,
		msgpack_unpacked *reply)
{
	char *err = NULL;
	int rc = rpc_call(c, method, NULL, params ? params->data : NULL, params ? params->size : 0,
			  NULL, NULL, reply, &err);
	if (rc) {
		fprintf(stderr, "bench-queue: %s: %s (%s)\n", method, err ? err : "?",
			bg_errname(rc));
		free(err);
	}
	return rc;
}

struct stats {
	int64_t queued, running, rolling_back, succeeded, rolled_back, other, total;
};

static int get_stats(struct rpc_client *c, struct stats *s)
{
	msgpack_unpacked reply;
	memset(s, 0, sizeof(*s));
	int rc = call(c, BG_M_JOB_STATS, NULL, &reply);
	if (rc)
		return rc;
	const msgpack_object *st = mpk_get(mpk_get(&reply.data, "result"), "states");
	if (st && st->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < st->via.map.size; i++) {
			const msgpack_object *k = &st->via.map.ptr[i].key;
			int64_t n = 0;
			if (!mpk_as_int(&st->via.map.ptr[i].val, &n))
				continue;
			s->total += n;
			if (mpk_str_eq(k, "queued"))
				s->queued = n;
			else if (mpk_str_eq(k, "running"))
				s->running = n;
			else if (mpk_str_eq(k, "rolling_back"))
				s->rolling_back = n;
			else if (mpk_str_eq(k, "succeeded"))
				s->succeeded = n;
			else if (mpk_str_eq(k, "rolled_back"))
				s->rolled_back = n;
			else
				s->other += n;
		}
	}
	msgpack_unpacked_destroy(&reply);
	return 0;
}

/*
 * Pack job.submit params { path: "bench", jobs: [JOBDEF x count] } into sb
 * (initialized by the caller).  Jobs are named j<first+i>; delay and sleep_for
 * (test.echo's `for`) are µs, 0 for none.
 */
static void pack_submit(msgpack_sbuffer *sb, const char *kind, long first, long count,
			int64_t delay, int64_t sleep_for)
{
	msgpack_packer pk;
	char name[32];
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	mpk_kv_str(&pk, "path", "bench");
	mpk_pack_str(&pk, "jobs");
	msgpack_pack_array(&pk, (size_t)count);
	for (long i = 0; i < count; i++) {
		snprintf(name, sizeof(name), "j%ld", first + i);
		msgpack_pack_map(&pk, 2 + (delay > 0) + (sleep_for > 0));
		mpk_kv_str(&pk, "name", name);
		mpk_kv_str(&pk, "kind", kind);
		if (delay > 0)
			mpk_kv_int(&pk, "delay", delay);
		if (sleep_for > 0)
			mpk_kv_int(&pk, "for", sleep_for);
	}
}

/* Submit prepared params; *first_id gets the first job's id when asked. */
static int submit(struct rpc_client *c, const msgpack_sbuffer *params, int64_t *first_id)
{
	msgpack_unpacked reply;
	int rc = call(c, BG_M_JOB_SUBMIT, params, &reply);
	if (rc)
		return rc;
	if (first_id) {
		const msgpack_object *jobs = mpk_get(mpk_get(&reply.data, "result"), "jobs");
		*first_id = 0;
		if (jobs && jobs->type == MSGPACK_OBJECT_ARRAY && jobs->via.array.size > 0)
			mpk_get_int(&jobs->via.array.ptr[0], "id", first_id);
	}
	msgpack_unpacked_destroy(&reply);
	return 0;
}

/* ---- 5. baseline: the naive durable queue ---- */

/*
 * One row per transaction into a fresh SQLite file in WAL mode with
 * synchronous=FULL: what "durable before reply" costs without any batching.
 * Measured right before each figure it is compared with (the disk of a busy
 * shared machine varies from minute to minute).  Returns rows/s, 0 on error.
 */
static double baseline(const char *label)
{
	char path[600], fig[64];
	sqlite3 *db = NULL;
	sqlite3_stmt *ins = NULL;
	char *err = NULL;
	double rate = 0;
	snprintf(fig, sizeof(fig), "5. baseline %s (rows/s)", label);
	snprintf(path, sizeof(path), "%s/baseline-%s.db", base_dir, label);
	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
			     "CREATE TABLE q(id INTEGER PRIMARY KEY, name TEXT, kind TEXT, "
			     "state TEXT, created INTEGER)",
			     NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO q(name, kind, state, created) "
				   "VALUES (?1, 'test.noop', 'queued', ?2)",
			       -1, &ins, NULL) != SQLITE_OK) {
		fprintf(stderr, "bench-queue: baseline: %s\n", err ? err : sqlite3_errmsg(db));
		add_row(fig, "ERROR", "-", "-");
		goto out;
	}
	int64_t t0 = mono_us();
	for (int i = 0; i < BASE_ROWS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "j%d", i);
		sqlite3_bind_text(ins, 1, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(ins, 2, now_us());
		if (sqlite3_step(ins) != SQLITE_DONE) {
			fprintf(stderr, "bench-queue: baseline insert: %s\n", sqlite3_errmsg(db));
			add_row(fig, "ERROR", "-", "-");
			goto out;
		}
		sqlite3_reset(ins);
	}
	double s = (double)(mono_us() - t0) / 1e6;
	rate = BASE_ROWS / s;
	add_row(fig, "info", "-", "%.0f", rate);
	note("baseline %s: %d single-row WAL transactions, synchronous=FULL: %.3f ms each", label,
	     BASE_ROWS, s * 1000 / BASE_ROWS);
out:
	sqlite3_free(err);
	sqlite3_finalize(ins);
	sqlite3_close(db);
	return rate;
}

static double baseline_e2e, baseline_seq;

static void fig_baseline_e2e(void)
{
	baseline_e2e = baseline("before 1");
}

static void fig_baseline_seq(void)
{
	baseline_seq = baseline("before 2b");
}

static int job_param(msgpack_sbuffer *sb, int64_t job, bool follow);

/* ---- 1. end to end ---- */

static double e2e_jobs_s;

static void fig_e2e(void)
{
	const char *fig = "1. end-to-end 100k test.noop (jobs/s)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	msgpack_sbuffer req[E2E_JOBS / E2E_BATCH];
	size_t nreq = ARRAY_LEN(req);
	for (size_t i = 0; i < nreq; i++) {
		msgpack_sbuffer_init(&req[i]);
		pack_submit(&req[i], "test.noop", (long)(i * E2E_BATCH), E2E_BATCH, 0, 0);
	}
	if (daemon_dirs(&d, "e2e") || daemon_start(&d, 4, 512, &c)) {
		add_row(fig, "ERROR", ">= 20000", "-");
		goto out;
	}
	int64_t t0 = mono_us(), t_sub = 0, t_done = 0, last_first = 0;
	for (size_t i = 0; i < nreq; i++)
		if (submit(&c, &req[i], &last_first)) {
			add_row(fig, "ERROR", ">= 20000", "-");
			goto stop;
		}
	t_sub = mono_us();
	/* Completion: follow the last job submitted (claims go in id order, so
	 * it is among the last to end) with job.tail, which costs the daemon
	 * nothing while it waits; then job.stats until every job is final.
	 * Polling job.stats all along would count 100k rows every few ms and
	 * slow the daemon it measures. */
	{
		msgpack_sbuffer tp;
		msgpack_unpacked tr;
		job_param(&tp, last_first + E2E_BATCH - 1, true);
		if (call(&c, BG_M_JOB_TAIL, &tp, &tr) == 0)
			msgpack_unpacked_destroy(&tr);
		msgpack_sbuffer_destroy(&tp);
	}
	/* then job.stats every 20 ms */
	int64_t next = t_sub, stat_sum = 0, stat_max = 0, nstat = 0;
	struct stats s = {0};
	for (;;) {
		int64_t a = mono_us();
		if (get_stats(&c, &s)) {
			add_row(fig, "ERROR", ">= 20000", "-");
			goto stop;
		}
		int64_t b = mono_us(), dt = b - a;
		stat_sum += dt;
		nstat++;
		if (dt > stat_max)
			stat_max = dt;
		if (s.succeeded + s.other + s.rolled_back >= E2E_JOBS) {
			t_done = b;
			break;
		}
		if (b - t0 > E2E_TIMEOUT_US)
			break;
		next += 20000;
		if (next > b)
			sleep_us(next - b);
		else
			next = b;
	}
	if (t_done) {
		e2e_jobs_s = E2E_JOBS / ((double)(t_done - t0) / 1e6);
		add_row(fig, okif(e2e_jobs_s >= E2E_TARGET && s.succeeded == E2E_JOBS), ">= 20000",
			"%.0f", e2e_jobs_s);
		if (s.succeeded != E2E_JOBS)
			note("e2e: only %lld of %d jobs succeeded", (long long)s.succeeded, E2E_JOBS);
	} else {
		double el = (double)(mono_us() - t0) / 1e6;
		add_row(fig, "MISSED", ">= 20000", "%.0f (timeout)", (double)s.succeeded / el);
		note("e2e: timed out after %.0f s with %lld of %d jobs succeeded", el,
		     (long long)s.succeeded, E2E_JOBS);
	}
	note("e2e: submitting the 100k jobs (10 RPCs) took %.2f s (%.0f jobs/s); running them "
	     "all took %.2f s in total",
	     (double)(t_sub - t0) / 1e6, E2E_JOBS / ((double)(t_sub - t0) / 1e6),
	     (double)((t_done ? t_done : mono_us()) - t0) / 1e6);
	note("e2e: job.stats round trip while 100k jobs exist: mean %.2f ms, max %.2f ms (%lld "
	     "polls)",
	     nstat ? (double)stat_sum / (double)nstat / 1000 : 0.0, (double)stat_max / 1000,
	     (long long)nstat);
stop:
	figure_end(&d, &c, "e2e");
out:
	for (size_t i = 0; i < nreq; i++)
		msgpack_sbuffer_destroy(&req[i]);
}

/* ---- 2. submit throughput ---- */

struct client_arg {
	const char *sock;
	int index, njobs;
	pthread_barrier_t *start;
	int64_t t_end;
	int rc;
};

static void *client_main(void *p)
{
	struct client_arg *a = p;
	struct rpc_client c;
	char *err = NULL;
	a->rc = rpc_connect(a->sock, &c, &err);
	if (a->rc) {
		fprintf(stderr, "bench-queue: client %d: %s\n", a->index, err);
		free(err);
	}
	pthread_barrier_wait(a->start);
	if (a->rc)
		return NULL;
	int64_t deadline = mono_us() + SUBMIT_BOUND_US;
	for (int i = 0; i < a->njobs; i++) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		pack_submit(&sb, "test.noop", (long)a->index * a->njobs + i, 1, HOUR_US, 0);
		a->rc = submit(&c, &sb, NULL);
		msgpack_sbuffer_destroy(&sb);
		if (a->rc)
			break;
		if (mono_us() > deadline) {
			a->rc = BG_ERR_TIMEDOUT;
			a->njobs = i + 1;
			break;
		}
	}
	a->t_end = mono_us();
	rpc_close(&c);
	return NULL;
}

static double seq_jobs_s;

static void fig_submit_concurrent(void)
{
	const char *fig = "2a. submit, 8 clients, 1 job/RPC (jobs/s)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	if (daemon_dirs(&d, "submit-8") || daemon_start(&d, 4, 64, &c)) {
		add_row(fig, "ERROR", ">= 20000", "-");
		return;
	}
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, CONC_CLIENTS + 1);
	struct client_arg args[CONC_CLIENTS];
	pthread_t th[CONC_CLIENTS];
	for (int i = 0; i < CONC_CLIENTS; i++) {
		args[i] = (struct client_arg){.sock = d.sock, .index = i,
					      .njobs = CONC_JOBS / CONC_CLIENTS, .start = &start};
		pthread_create(&th[i], NULL, client_main, &args[i]);
	}
	pthread_barrier_wait(&start);
	int64_t t0 = mono_us(), t1 = t0;
	long done = 0;
	int bounded = 0;
	bool failed = false;
	for (int i = 0; i < CONC_CLIENTS; i++) {
		pthread_join(th[i], NULL);
		if (args[i].t_end > t1)
			t1 = args[i].t_end;
		done += args[i].njobs;
		failed |= args[i].rc != 0 && args[i].rc != BG_ERR_TIMEDOUT;
		bounded += args[i].rc == BG_ERR_TIMEDOUT;
	}
	pthread_barrier_destroy(&start);
	double r = (double)done / ((double)(t1 - t0) / 1e6);
	struct stats s;
	if (!failed && get_stats(&c, &s) == 0 && s.queued != done) {
		note("2a: %ld jobs submitted but %lld queued", done, (long long)s.queued);
		failed = true;
	}
	if (failed)
		add_row(fig, "ERROR", ">= 20000", "-");
	else if (bounded)
		add_row(fig, "MISSED", ">= 20000", "%.0f (partial)", r);
	else
		add_row(fig, okif(r >= CONC_TARGET), ">= 20000", "%.0f", r);
	if (bounded)
		note("2a: partial: the clients stopped at the %lld s bound with %ld of %d jobs "
		     "submitted (the rate falls as the queue grows, so the full run would be "
		     "slower still)",
		     (long long)(SUBMIT_BOUND_US / 1000000), done, CONC_JOBS);
	figure_end(&d, &c, "2a");
}

static void fig_submit_sequential(void)
{
	const char *fig = "2b. submit, 1 client, 1 job/RPC (jobs/s)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	if (daemon_dirs(&d, "submit-1") || daemon_start(&d, 4, 64, &c)) {
		add_row(fig, "ERROR", ">= 5000", "-");
		return;
	}
	int64_t t0 = mono_us(), deadline = t0 + SUBMIT_BOUND_US;
	int n = 0;
	int64_t *t_at = xcalloc(SEQ_JOBS + 1, sizeof(*t_at)); /* t_at[k]: k jobs done */
	t_at[0] = t0;
	for (; n < SEQ_JOBS; n++) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		pack_submit(&sb, "test.noop", n, 1, HOUR_US, 0);
		int rc = submit(&c, &sb, NULL);
		msgpack_sbuffer_destroy(&sb);
		if (rc) {
			add_row(fig, "ERROR", ">= 5000", "-");
			goto stop;
		}
		t_at[n + 1] = mono_us();
		if (t_at[n + 1] > deadline) {
			n++;
			note("2b: partial: stopped at the %lld s bound with %d of %d jobs submitted "
			     "(the rate falls as the queue grows)",
			     (long long)(SUBMIT_BOUND_US / 1000000), n, SEQ_JOBS);
			break;
		}
	}
	int64_t t1 = mono_us();
	seq_jobs_s = n / ((double)(t1 - t0) / 1e6);
	if (n == SEQ_JOBS)
		add_row(fig, okif(seq_jobs_s >= SEQ_TARGET), ">= 5000", "%.0f", seq_jobs_s);
	else
		add_row(fig, "MISSED", ">= 5000", "%.0f (partial)", seq_jobs_s);
	note("2b: mean submit round trip %.3f ms", (double)(t1 - t0) / n / 1000);
	if (n >= 2000)
		note("2b: the first 1,000 submits ran at %.0f jobs/s, the last 1,000 at %.0f "
		     "jobs/s (%d delayed jobs queued by then)",
		     1000 / ((double)(t_at[1000] - t_at[0]) / 1e6),
		     1000 / ((double)(t_at[n] - t_at[n - 1000]) / 1e6), n - 1000);
stop:
	free(t_at);
	figure_end(&d, &c, "2b");
}

static void fig_submit_batch(void)
{
	const char *fig = "2c. submit, 10 RPCs x 10k jobs (jobs/s)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	msgpack_sbuffer req[BATCH_RPCS];
	for (int i = 0; i < BATCH_RPCS; i++) {
		msgpack_sbuffer_init(&req[i]);
		pack_submit(&req[i], "test.noop", (long)i * BATCH_JOBS, BATCH_JOBS, HOUR_US, 0);
	}
	if (daemon_dirs(&d, "submit-batch") || daemon_start(&d, 4, 64, &c)) {
		add_row(fig, "ERROR", ">= 100000", "-");
		goto out;
	}
	int64_t t0 = mono_us(), slowest = 0, fastest = INT64_MAX;
	for (int i = 0; i < BATCH_RPCS; i++) {
		int64_t a = mono_us();
		if (submit(&c, &req[i], NULL)) {
			add_row(fig, "ERROR", ">= 100000", "-");
			goto stop;
		}
		int64_t dt = mono_us() - a;
		if (dt > slowest)
			slowest = dt;
		if (dt < fastest)
			fastest = dt;
	}
	double r = (double)BATCH_RPCS * BATCH_JOBS / ((double)(mono_us() - t0) / 1e6);
	add_row(fig, okif(r >= BATCH_TARGET), ">= 100000", "%.0f", r);
	note("2c: one 10k-job submit took %.1f ms at best, %.1f ms at worst", fastest / 1000.0,
	     slowest / 1000.0);
stop:
	figure_end(&d, &c, "2c");
out:
	for (int i = 0; i < BATCH_RPCS; i++)
		msgpack_sbuffer_destroy(&req[i]);
}

/* ---- 3. pickup latency ---- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static int64_t pct(const int64_t *v, size_t n, double p)
{
	size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static int job_param(msgpack_sbuffer *sb, int64_t job, bool follow)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, follow ? 2 : 1);
	mpk_kv_int(&pk, "job", job);
	if (follow)
		mpk_kv_bool(&pk, "follow", true);
	return 0;
}

static void fig_pickup(void)
{
	const char *f50 = "3. pickup latency p50 (ms)", *f99 = "3. pickup latency p99 (ms)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	int64_t *lat = xcalloc(PICKUP_JOBS, sizeof(*lat));
	size_t n = 0;
	int negative = 0;
	int64_t rtt_sum = 0;
	if (daemon_dirs(&d, "pickup") || daemon_start(&d, 4, 64, &c)) {
		add_row(f50, "ERROR", "< 1", "-");
		free(lat);
		return;
	}
	int64_t deadline = mono_us() + FIGURE_TIMEOUT_US;
	for (int i = 0; i < PICKUP_JOBS && mono_us() < deadline; i++) {
		msgpack_sbuffer sb;
		msgpack_unpacked reply;
		int64_t id = 0, started = 0;
		msgpack_sbuffer_init(&sb);
		pack_submit(&sb, "test.noop", i, 1, 0, 0);
		int64_t a = mono_us();
		int rc = submit(&c, &sb, &id);
		int64_t t_reply = now_us();
		rtt_sum += mono_us() - a;
		msgpack_sbuffer_destroy(&sb);
		if (rc || id <= 0)
			break;
		/* wait until it is final: job.tail with follow */
		job_param(&sb, id, true);
		rc = call(&c, BG_M_JOB_TAIL, &sb, &reply);
		msgpack_sbuffer_destroy(&sb);
		if (rc)
			break;
		bool ok = mpk_str_eq(mpk_get(mpk_get(&reply.data, "result"), "state"), "succeeded");
		msgpack_unpacked_destroy(&reply);
		if (!ok) {
			fprintf(stderr, "bench-queue: pickup: job %lld did not succeed\n",
				(long long)id);
			break;
		}
		job_param(&sb, id, false);
		rc = call(&c, BG_M_JOB_SHOW, &sb, &reply);
		msgpack_sbuffer_destroy(&sb);
		if (rc)
			break;
		rc = mpk_get_int(mpk_get(mpk_get(&reply.data, "result"), "result"), "started",
				 &started);
		msgpack_unpacked_destroy(&reply);
		if (rc) {
			fprintf(stderr, "bench-queue: pickup: job %lld has no result.started (is "
				"test.noop the benchmark's version?)\n", (long long)id);
			break;
		}
		int64_t l = started - t_reply;
		if (l < 0) {
			negative++;
			l = 0;
		}
		lat[n++] = l;
	}
	if (n < PICKUP_JOBS) {
		note("3: only %zu of %d jobs measured", n, PICKUP_JOBS);
		if (n == 0) {
			add_row(f50, "ERROR", "< 1", "-");
			goto stop;
		}
	}
	qsort(lat, n, sizeof(*lat), cmp_i64);
	double p50 = (double)pct(lat, n, 50) / 1000, p99 = (double)pct(lat, n, 99) / 1000;
	add_row(f50, okif(p50 < PICKUP_P50_MS && n == PICKUP_JOBS), "< 1", "%.3f", p50);
	add_row(f99, okif(p99 < PICKUP_P99_MS && n == PICKUP_JOBS), "< 5", "%.3f", p99);
	note("3: %d of %zu steps started before the submit reply reached the client (counted "
	     "as 0); max %.3f ms; mean submit round trip %.3f ms",
	     negative, n, (double)lat[n - 1] / 1000, (double)rtt_sum / (double)n / 1000);
stop:
	free(lat);
	figure_end(&d, &c, "3");
}

/* ---- 4. recovery ---- */

static void fig_recovery(void)
{
	const char *fig = "4. recovery after kill -9, 10k running (s)";
	struct daemon d;
	struct rpc_client c = {.fd = -1};
	struct stats s;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	pack_submit(&sb, "test.echo", 0, RECOVER_JOBS, 0, HOUR_US);
	if (daemon_dirs(&d, "recovery") || daemon_start(&d, 4, RECOVER_JOBS, &c)) {
		add_row(fig, "ERROR", "< 2", "-");
		goto out;
	}
	if (submit(&c, &sb, NULL)) {
		add_row(fig, "ERROR", "< 2", "-");
		goto stop;
	}
	int64_t t0 = mono_us();
	for (;;) {
		if (get_stats(&c, &s)) {
			add_row(fig, "ERROR", "< 2", "-");
			goto stop;
		}
		if (s.running >= RECOVER_JOBS)
			break;
		if (mono_us() - t0 > FIGURE_TIMEOUT_US) {
			add_row(fig, "ERROR", "< 2", "-");
			note("4: only %lld of %d jobs were running after %lld s", (long long)s.running,
			     RECOVER_JOBS, (long long)(FIGURE_TIMEOUT_US / 1000000));
			goto stop;
		}
		sleep_us(20000);
	}
	note("4: all %d jobs were running %.2f s after the submit", RECOVER_JOBS,
	     (double)(mono_us() - t0) / 1e6);
	rpc_close(&c);
	daemon_kill9(&d);

	/* restart: the clock starts at the exec */
	int64_t r0 = mono_us(), r_listen = 0, r_done = 0;
	if (daemon_spawn(&d, 4, RECOVER_JOBS) || daemon_connect(&d, &c, FIGURE_TIMEOUT_US)) {
		add_row(fig, "ERROR", "< 2", "-");
		goto stop;
	}
	r_listen = mono_us();
	for (;;) {
		if (get_stats(&c, &s)) {
			add_row(fig, "ERROR", "< 2", "-");
			goto stop;
		}
		if (s.running == 0 && s.rolling_back == 0) {
			r_done = mono_us();
			break;
		}
		if (mono_us() - r0 > FIGURE_TIMEOUT_US)
			break;
		sleep_us(5000);
	}
	if (r_done) {
		double secs = (double)(r_done - r0) / 1e6;
		add_row(fig, okif(secs < RECOVER_TARGET_S), "< 2", "%.3f", secs);
	} else {
		add_row(fig, "MISSED", "< 2", "> %lld (timeout)",
			(long long)(FIGURE_TIMEOUT_US / 1000000));
	}
	add_row("4. recovery: jobs rolled_back", s.rolled_back == RECOVER_JOBS ? "ok" : "MISSED",
		"10000", "%lld", (long long)s.rolled_back);
	note("4: the restarted daemon answered on its socket %.3f s after exec (recovery runs "
	     "before it listens)",
	     (double)(r_listen - r0) / 1e6);
	if (s.rolled_back != RECOVER_JOBS)
		note("4: states after recovery: rolled_back %lld, running %lld, rolling_back %lld, "
		     "queued %lld, succeeded %lld, other %lld",
		     (long long)s.rolled_back, (long long)s.running, (long long)s.rolling_back,
		     (long long)s.queued, (long long)s.succeeded, (long long)s.other);
stop:
	figure_end(&d, &c, "4");
out:
	msgpack_sbuffer_destroy(&sb);
}

/* ---- main ---- */

static const struct figure {
	const char *name;
	void (*fn)(void);
} figures[] = {
	{"baseline-1", fig_baseline_e2e},
	{"e2e", fig_e2e},
	{"submit-8", fig_submit_concurrent},
	{"baseline-2b", fig_baseline_seq},
	{"submit-1", fig_submit_sequential},
	{"submit-batch", fig_submit_batch},
	{"pickup", fig_pickup},
	{"recovery", fig_recovery},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: bench-queue --daemon PATH --dir DIR [--only FIGURE]...\n"
		   "  --daemon PATH  the test daemon (build/bangerd-test)\n"
		   "  --dir DIR      an existing, empty directory for the figures' daemons\n"
		   "  --only NAME    run only this figure (repeatable):");
	for (size_t i = 0; i < ARRAY_LEN(figures); i++)
		fprintf(f, " %s", figures[i].name);
	fprintf(f, "\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"daemon", required_argument, NULL, 'd'},
		{"dir", required_argument, NULL, 'D'},
		{"only", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	bool only[ARRAY_LEN(figures)] = {false}, any_only = false;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': daemon_bin = optarg; break;
		case 'D': base_dir = optarg; break;
		case 'o': {
			size_t i = 0;
			while (i < ARRAY_LEN(figures) && strcmp(figures[i].name, optarg) != 0)
				i++;
			if (i == ARRAY_LEN(figures)) {
				fprintf(stderr, "bench-queue: unknown figure '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			only[i] = any_only = true;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!daemon_bin || !base_dir || optind < argc) {
		usage(stderr);
		return 2;
	}
	if (access(daemon_bin, X_OK) != 0) {
		fprintf(stderr, "bench-queue: cannot run '%s': %s (run make first)\n", daemon_bin,
			strerror(errno));
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_fatal_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_live);

	for (size_t i = 0; i < ARRAY_LEN(figures); i++) {
		if (any_only && !only[i])
			continue;
		fprintf(stderr, "bench-queue: %s ...\n", figures[i].name);
		int64_t t = mono_us();
		figures[i].fn();
		fprintf(stderr, "bench-queue: %s took %.1f s\n", figures[i].name,
			(double)(mono_us() - t) / 1e6);
	}
	if (baseline_seq > 0 && seq_jobs_s > 0)
		add_row("ratio: 2b sequential submit / baseline", "info", "-", "%.2f",
			seq_jobs_s / baseline_seq);
	if (baseline_e2e > 0 && e2e_jobs_s > 0)
		add_row("ratio: 1 end-to-end / baseline", "info", "-", "%.2f",
			e2e_jobs_s / baseline_e2e);

	qsort(rows, (size_t)nrows, sizeof(rows[0]), cmp_row);
	int w = (int)strlen("figure");
	for (int i = 0; i < nrows; i++)
		if ((int)strlen(rows[i].fig) > w)
			w = (int)strlen(rows[i].fig);
	printf("%-*s | %-16s | %-10s | %s\n", w, "figure", "value", "target", "ok/MISSED");
	for (int i = 0; i < w + 46; i++)
		putchar('-');
	putchar('\n');
	for (int i = 0; i < nrows; i++)
		printf("%-*s | %-16s | %-10s | %s\n", w, rows[i].fig, rows[i].value, rows[i].target,
		       rows[i].ok);
	if (notes_len)
		printf("\nnotes:\n%s", notes);
	int errors = 0;
	for (int i = 0; i < nrows; i++)
		errors += strcmp(rows[i].ok, "ERROR") == 0;
	return errors ? 1 : 0;
}
