/*
 * main.c: bangerd, the daemon.  Parses flags and config, takes the state and
 * runtime directory locks (a second daemon on the same state directory is
 * refused), opens the queue, recovers, then serves the socket and runs jobs
 * on one libuv loop until SIGTERM/SIGINT drain it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <uv.h>

#include "commit.h"
#include "config.h"
#include "engine.h"
#include "err.h"
#include "failpoint.h"
#include "kind.h"
#include "log.h"
#include "protocol.h"
#include "queue.h"
#include "server.h"
#include "util.h"
#include "vm.h"
#include "vmrpc.h"

static uv_loop_t *loop;
static uv_signal_t sig_term, sig_int;
static uv_timer_t drain_timer;
static struct queue *q;
static char *node;
static bool stopping;
static bool clean_stop;
static uint64_t drain_timeout_ms;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bangerd [options]\n"
		"  --state-dir DIR      queue database and job directories (BANGER_STATE_DIR)\n"
		"  --runtime-dir DIR    socket and pid file (BANGER_RUNTIME_DIR)\n"
		"  --config FILE        config file (BANGER_CONFIG)\n"
		"  --workers N          pool threads for blocking steps (default 4)\n"
		"  --max-running N      jobs running at once (default 64)\n"
		"  --log-level LEVEL    debug, info, warn or error\n"
		"  --failpoints         list the failpoint names and exit\n"
		"  --version            print the version and exit\n"
		"bangerd runs in the foreground; logs are JSON lines on stderr.\n");
}

static void stop_loop(void)
{
	server_stop();
	uv_close((uv_handle_t *)&sig_term, NULL);
	uv_close((uv_handle_t *)&sig_int, NULL);
	uv_close((uv_handle_t *)&drain_timer, NULL);
	engine_close();
	commit_close();
	uv_stop(loop);
}

static void drained(void)
{
	log_info(NULL, 0, "drained: no job is running; stopping");
	clean_stop = true;
	stop_loop();
}

static void on_drain_timeout(uv_timer_t *t)
{
	log_warn(NULL, 0, "drain timeout: %d job(s) still running; they recover at the next "
		 "start", engine_running());
	stop_loop();
}

static void on_signal(uv_signal_t *h, int signum)
{
	if (stopping) {
		log_warn(NULL, 0, "second signal: stopping now");
		stop_loop();
		return;
	}
	stopping = true;
	log_info(NULL, 0, "%s: draining (running jobs finish their current step)",
		 signum == SIGTERM ? "SIGTERM" : "SIGINT");
	server_stop();
	uv_timer_start(&drain_timer, on_drain_timeout, drain_timeout_ms, 0);
	engine_drain(drained);
}

static void print_fp(const char *name, void *arg)
{
	printf("%s\n", name);
}

/* Lock DIR/bangerd.lock; the holder's pid is written in it. */
static int lock_dir(const char *dir, const char *what, char **errmsg)
{
	char *path = xasprintf("%s/bangerd.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		*errmsg = xasprintf("cannot open '%s': %s", path, strerror(errno));
		free(path);
		return BG_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		char buf[32] = "";
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		*errmsg = xasprintf("another bangerd (pid %s) is already running on %s '%s'",
				    buf[0] ? buf : "?", what, dir);
		close(fd);
		free(path);
		return BG_ERR_BUSY;
	}
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) < 0) {
		/* the lock is what matters */
	}
	free(path);
	return 0; /* fd stays open: the lock lives as long as the process */
}

/* The node id is stable across restarts of the same state directory, so
 * recovery finds the jobs this daemon held. */
static char *load_node_id(const char *state_dir)
{
	char *path = xasprintf("%s/node-id", state_dir);
	char *data = NULL;
	size_t len = 0;
	if (read_file(path, 256, &data, &len) == 0 && len > 0) {
		data[strcspn(data, "\n")] = '\0';
		free(path);
		return data;
	}
	free(data);
	char host[64] = "host", hex[9];
	gethostname(host, sizeof(host) - 1);
	rand_hex(hex, 4);
	char *id = xasprintf("%s-%s", host, hex);
	char *line = xasprintf("%s\n", id);
	write_file_atomic(path, line, strlen(line), 0600);
	free(line);
	free(path);
	return id;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"state-dir", required_argument, NULL, 's'},
		{"runtime-dir", required_argument, NULL, 'r'},
		{"config", required_argument, NULL, 'c'},
		{"workers", required_argument, NULL, 'w'},
		{"max-running", required_argument, NULL, 'm'},
		{"log-level", required_argument, NULL, 'l'},
		{"failpoints", no_argument, NULL, 'F'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *state_dir = NULL, *runtime_dir = NULL, *config = NULL, *level = NULL;
	int workers = 0, max_running = 0;
	bool list_fp = false;
	int c;
	char *err = NULL;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': state_dir = optarg; break;
		case 'r': runtime_dir = optarg; break;
		case 'c': config = optarg; break;
		case 'w': workers = atoi(optarg); break;
		case 'm': max_running = atoi(optarg); break;
		case 'l': level = optarg; break;
		case 'F': list_fp = true; break;
		case 'V': printf("bangerd protocol %d, schema %d\n", BG_PROTOCOL_VERSION,
				 queue_schema_version());
			return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bangerd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	kinds_register_all();
	if (list_fp) {
		engine_list_failpoints(print_fp, NULL);
		return 0;
	}
	if (failpoint_init(&err)) {
		fprintf(stderr, "bangerd: %s\n", err);
		return 2;
	}
	struct bg_config cfg;
	if (config_load(config, &cfg, &err)) {
		fprintf(stderr, "bangerd: %s\n", err);
		return 2;
	}
	if (state_dir) {
		free(cfg.state_dir);
		cfg.state_dir = xstrdup(state_dir);
	}
	if (runtime_dir) {
		free(cfg.runtime_dir);
		cfg.runtime_dir = xstrdup(runtime_dir);
	}
	if (workers > 0)
		cfg.workers = workers;
	if (max_running > 0)
		cfg.max_running = max_running;
	if (workers < 0 || max_running < 0 || cfg.workers > 256) {
		fprintf(stderr, "bangerd: --workers must be 1..256 and --max-running positive\n");
		return 2;
	}
	if (log_init(level ? level : cfg.log_level, 2)) {
		fprintf(stderr, "bangerd: unknown log level '%s' (debug, info, warn, error)\n",
			level ? level : cfg.log_level);
		return 2;
	}
	log_set_ident("bangerd");
	signal(SIGPIPE, SIG_IGN);
	/* Bursts (recovery of thousands of jobs, big batches) free and regrow
	 * the heap constantly; keep freed memory instead of trimming it back
	 * to the kernel each time. */
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	mallopt(M_TOP_PAD, 16 << 20);

	int rc;
	if ((rc = mkdir_p(cfg.state_dir, 0700)) || (rc = mkdir_p(cfg.runtime_dir, 0700))) {
		fprintf(stderr, "bangerd: cannot create '%s' or '%s': %s\n", cfg.state_dir,
			cfg.runtime_dir, bg_strerror(rc));
		return 1;
	}
	if (lock_dir(cfg.state_dir, "state directory", &err) ||
	    lock_dir(cfg.runtime_dir, "runtime directory", &err)) {
		fprintf(stderr, "bangerd: %s\n", err);
		return 1;
	}
	char threads[16];
	snprintf(threads, sizeof(threads), "%d", cfg.workers);
	setenv("UV_THREADPOOL_SIZE", threads, 1);

	if ((rc = queue_open(cfg.db, cfg.state_dir, &q, &err))) {
		fprintf(stderr, "bangerd: %s\n", err);
		return 1;
	}
	node = load_node_id(cfg.state_dir);
	loop = uv_default_loop();
	bool was_clean = true;
	if ((rc = q->ops->node_start(q, node, (int)getpid(), now_us(), &was_clean))) {
		fprintf(stderr, "bangerd: cannot register node: %s (%s)\n", bg_strerror(rc),
			q->errmsg);
		return 1;
	}
	commit_init(loop, q);
	struct engine_opts eo = {
		.node = node,
		.state_dir = cfg.state_dir,
		.max_running = cfg.max_running,
		.lease_ttl_us = cfg.lease_ttl_us,
		.max_crashes = cfg.max_crashes,
		.retry_base_us = cfg.retry_base_us,
		.retry_max_us = cfg.retry_max_us,
		.cfg = &cfg,
	};
	engine_init(loop, q, &eo);
	vms_init(loop, q, &cfg, node);
	vmrpc_init(loop, q, cfg.state_dir, cfg.runtime_dir);
	vmrpc_set_firecracker(cfg.firecracker_path, cfg.jailer_path);
	if ((rc = engine_start(was_clean))) {
		fprintf(stderr, "bangerd: recovery failed: %s (%s)\n", bg_strerror(rc), q->errmsg);
		return 1;
	}
	/* VMs: re-adopt running hypervisors, reclaim what no VM owns (before
	 * the loop runs, so nothing new is claimed meanwhile) */
	vms_recover();
	char *sock = xasprintf("%s/%s", cfg.runtime_dir, BG_SOCKET_NAME);
	char *db_desc = cfg.db ? xstrdup(cfg.db) : xasprintf("%s/queue.db", cfg.state_dir);
	struct server_opts so = {
		.socket_path = sock,
		.node = node,
		.state_dir = cfg.state_dir,
		.db_desc = db_desc,
		.owner_uid = (unsigned)geteuid(),
	};
	if ((rc = server_start(loop, q, &so, &err))) {
		fprintf(stderr, "bangerd: %s\n", err);
		return 1;
	}
	uv_signal_init(loop, &sig_term);
	uv_signal_init(loop, &sig_int);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_timer_init(loop, &drain_timer);
	drain_timeout_ms = (uint64_t)(cfg.drain_timeout_us / 1000);
	log_info(NULL, 0, "bangerd ready: node %s, socket %s, database %s, %d workers, "
		 "max %d running", node, sock, db_desc, cfg.workers, cfg.max_running);

	uv_run(loop, UV_RUN_DEFAULT);
	/* everything committed so far becomes durable before we go */
	commit_flush_sync();
	if (clean_stop) {
		q->ops->node_stop(q, node, now_us());
		commit_flush_sync();
	}
	unlink(sock);
	q->ops->close(q);
	log_info(NULL, 0, "bangerd stopped%s", clean_stop ? " cleanly" : "");
	free(sock);
	free(db_desc);
	free(node);
	config_release(&cfg);
	return 0;
}
