/*
 * qemu.c: the QEMU driver (see qemu.h): command line, process, KVM probe,
 * agent wait, QMP, stop.
 *
 * QEMU is started with posix_spawn in a process group of its own (so a
 * signal to bangerd's group never reaches it and a kill reaches all of its
 * threads and helpers), stdin on /dev/null, stdout and stderr appended to
 * RUN/qemu.log, every other descriptor closed.  A pidfd tracks it: waits
 * poll the pidfd, so they work for an adopted QEMU that is not our child,
 * and a recycled pid can never be signalled by mistake.
 *
 * Facts this relies on (measured on the Debian hosts banger targets; see
 * docs/vms.md): microvm needs tsc_early_khz= or about 15% of boots hang
 * silently; every wait is bounded for the rest; KVM can exist and still
 * hang a stock kernel right after real mode, hence the boot probe.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <x86intrin.h>
#endif

#include "agent.h"
#include "agent_proto.h"
#include "child.h"
#include "err.h"
#include "log.h"
#include "qemu.h"
#include "util.h"


#define DEFAULT_PROBE_US 6000000
#define SUN_MAX 107

struct qemu_vm {
	struct child ch;
	enum qemu_accel accel;
	char *run_dir, *agent_sock, *qmp_sock, *console_log, *qemu_log, *pidfile;
};

const char *qemu_accel_name(enum qemu_accel a)
{
	switch (a) {
	case QEMU_ACCEL_KVM: return "kvm";
	case QEMU_ACCEL_TCG: return "tcg";
	default: return "auto";
	}
}

/* ---- the host TSC ---- */

#if defined(__x86_64__) || defined(__i386__)
static long tsc_measure(void)
{
	long best = 0;
	long samples[3];
	for (int i = 0; i < 3; i++) {
		struct timespec a, b, d = {0, 20 * 1000000L};
		clock_gettime(CLOCK_MONOTONIC_RAW, &a);
		uint64_t t0 = __rdtsc();
		nanosleep(&d, NULL);
		uint64_t t1 = __rdtsc();
		clock_gettime(CLOCK_MONOTONIC_RAW, &b);
		int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
		samples[i] = ns > 0 ? (long)((double)(t1 - t0) * 1e6 / (double)ns) : 0;
	}
	/* median of three */
	long x = samples[0], y = samples[1], z = samples[2];
	best = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
	/* TSCs tick at round rates: round to 1 MHz when within 0.05% of one */
	long mhz = (best + 500) / 1000 * 1000;
	if (labs(best - mhz) * 2000 < mhz)
		best = mhz;
	return best;
}
#endif

long qemu_host_tsc_khz(void)
{
	static long cached = -1;
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mu);
	if (cached >= 0)
		goto out;
	cached = 0;
	char *s = NULL;
	size_t n;
	if (read_file("/sys/devices/system/cpu/cpu0/tsc_freq_khz", 64, &s, &n) == 0) {
		cached = atol(s);
		free(s);
		if (cached > 0)
			goto out;
	}
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;
	if (__get_cpuid(0, &a, &b, &c, &d) && a >= 0x15) {
		__cpuid_count(0x15, 0, a, b, c, d);
		if (a && b && c) {
			cached = (long)((uint64_t)c * b / a / 1000);
			goto out;
		}
	}
	/* hypervisor timing leaf (VMware/KVM convention) */
	__cpuid(0x40000000, a, b, c, d);
	if (a >= 0x40000010) {
		__cpuid(0x40000010, a, b, c, d);
		if (a > 0) {
			cached = (long)a;
			goto out;
		}
	}
	cached = tsc_measure();
#endif
out:;
	long r = cached;
	pthread_mutex_unlock(&mu);
	return r;
}

/* ---- argv ---- */

struct argv_b {
	char **v;
	size_t n, cap;
};

static void add(struct argv_b *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 64;
		a->v = xrealloc(a->v, a->cap * sizeof(char *));
	}
	a->v[a->n++] = xstrdup(s);
	a->v[a->n] = NULL;
}

static void addf(struct argv_b *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct argv_b *a, const char *fmt, ...)
{
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vaddf(&sb, fmt, ap);
	va_end(ap);
	add(a, sb.buf);
	sb_release(&sb);
}

/* QEMU option values escape ',' as ",,". Returns a new string. */
static char *qesc(const char *s)
{
	struct sb sb;
	sb_init(&sb);
	for (; *s; s++) {
		if (*s == ',')
			sb_adds(&sb, ",,");
		else
			sb_add(&sb, s, 1);
	}
	return sb_detach(&sb);
}

void qemu_argv_free(char **argv)
{
	if (!argv)
		return;
	for (char **p = argv; *p; p++)
		free(*p);
	free(argv);
}

static bool param_ok(const char *s)
{
	for (; *s; s++)
		if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '"')
			return false;
	return true;
}

int qemu_build_argv(const struct qemu_config *cfg, enum qemu_accel accel, char ***argv,
		    char **errmsg)
{
	struct argv_b a = {0};
	struct sb app;
	bool mvm = cfg->machine == QEMU_MICROVM;
	const char *bus = mvm ? "device" : "pci";

	if (!cfg->name || !cfg->run_dir || !cfg->kernel || !cfg->initrd) {
		errmsg_set(errmsg, "qemu: name, run directory, kernel and initramfs are required");
		return BG_ERR_INVAL;
	}
	if (accel == QEMU_ACCEL_AUTO) {
		errmsg_set(errmsg, "qemu: resolve the accelerator first");
		return BG_ERR_INVAL;
	}
	if (strlen(cfg->run_dir) + sizeof("/agent.sock") > SUN_MAX) {
		errmsg_set(errmsg, "run directory '%s' is too long for a Unix socket path (%d bytes)",
			cfg->run_dir, SUN_MAX);
		return BG_ERR_INVAL;
	}
	if (cfg->guest_ip && !param_ok(cfg->guest_ip)) {
		errmsg_set(errmsg, "guest address '%s' contains spaces or quotes", cfg->guest_ip);
		return BG_ERR_INVAL;
	}
	int mem = cfg->memory_mb > 0 ? cfg->memory_mb : 256;
	int cpus = cfg->vcpus > 0 ? cfg->vcpus : 1;
	char *e_run = qesc(cfg->run_dir);

	add(&a, cfg->qemu_bin ? cfg->qemu_bin : "qemu-system-x86_64");
	char *e_name = qesc(cfg->name);
	addf(&a, "-name");
	addf(&a, "guest=%s", e_name);
	free(e_name);
	add(&a, "-accel");
	add(&a, accel == QEMU_ACCEL_KVM ? "kvm" : "tcg");
	add(&a, "-M");
	add(&a, mvm ? "microvm" : "q35");
	add(&a, "-cpu");
	add(&a, accel == QEMU_ACCEL_KVM ? "host" : "max");
	add(&a, "-m");
	addf(&a, "%d", mem);
	add(&a, "-smp");
	addf(&a, "%d", cpus);
	add(&a, "-nodefaults");
	add(&a, "-no-user-config");
	add(&a, "-display");
	add(&a, "none");
	add(&a, "-no-reboot");
	add(&a, "-chardev");
	addf(&a, "file,id=con0,path=%s/console.log", e_run);
	add(&a, "-serial");
	add(&a, "chardev:con0");

	char *e = qesc(cfg->kernel);
	add(&a, "-kernel");
	add(&a, e);
	free(e);
	e = qesc(cfg->initrd);
	add(&a, "-initrd");
	add(&a, e);
	free(e);

	sb_init(&app);
	sb_adds(&app, "console=ttyS0 quiet panic=-1");
	long khz = mvm ? qemu_host_tsc_khz() : 0;
	if (khz > 0)
		sb_addf(&app, " tsc_early_khz=%ld", khz);
	/* only the drivers this machine's devices need (the initramfs of a
	 * modular kernel has more: pci for q35, vsock for Firecracker) */
	sb_addf(&app, " banger.modules=%s,virtio_blk,virtio_console,ext4%s",
		mvm ? "virtio_mmio" : "virtio_pci", cfg->tap || cfg->user_net ? ",virtio_net" : "");
	if (cfg->rootfs)
		sb_addf(&app, " banger.root=/dev/vda%s", cfg->rootfs_readonly ? " banger.ro=1" : "");
	if (cfg->guest_ip)
		sb_addf(&app, " banger.ip=%s", cfg->guest_ip);
	if (cfg->append && cfg->append[0])
		sb_addf(&app, " %s", cfg->append);
	add(&a, "-append");
	add(&a, app.buf);
	sb_release(&app);

	if (cfg->rootfs) {
		const char *fmt = cfg->rootfs_format ? cfg->rootfs_format : "raw";
		if (strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0) {
			errmsg_set(errmsg, "root disk format '%s' is not raw or qcow2", fmt);
			free(e_run);
			qemu_argv_free(a.v);
			return BG_ERR_INVAL;
		}
		e = qesc(cfg->rootfs);
		add(&a, "-drive");
		addf(&a, "id=root,file=%s,format=%s,if=none,discard=unmap%s", e, fmt,
		     cfg->rootfs_readonly ? ",readonly=on" : "");
		free(e);
		add(&a, "-device");
		addf(&a, "virtio-blk-%s,drive=root", bus);
	}
	if (cfg->extra_disk) {
		e = qesc(cfg->extra_disk);
		add(&a, "-drive");
		addf(&a, "id=disk1,file=%s,format=raw,if=none,discard=unmap", e);
		free(e);
		add(&a, "-device");
		addf(&a, "virtio-blk-%s,drive=disk1", bus);
	}
	add(&a, "-device");
	addf(&a, "virtio-serial-%s", bus);
	add(&a, "-chardev");
	addf(&a, "socket,id=agent,path=%s/agent.sock,server=on,wait=off", e_run);
	add(&a, "-device");
	add(&a, "virtserialport,chardev=agent,name=" AP_PORT_NAME);
	if (cfg->tap || cfg->user_net) {
		add(&a, "-netdev");
		if (cfg->tap) {
			e = qesc(cfg->tap);
			addf(&a, "tap,id=n0,ifname=%s,script=no,downscript=no", e);
			free(e);
		} else {
			add(&a, "user,id=n0");
		}
		add(&a, "-device");
		if (cfg->mac)
			addf(&a, "virtio-net-%s,netdev=n0,mac=%s", bus, cfg->mac);
		else
			addf(&a, "virtio-net-%s,netdev=n0", bus);
	}
	add(&a, "-qmp");
	addf(&a, "unix:%s/qmp.sock,server=on,wait=off", e_run);
	add(&a, "-pidfile");
	addf(&a, "%s/qemu.pid", cfg->run_dir);
	free(e_run);
	*argv = a.v;
	return 0;
}

/* ---- process ---- */

static struct qemu_vm *vm_new(const char *run_dir)
{
	struct qemu_vm *vm = xcalloc(1, sizeof(*vm));
	child_init(&vm->ch);
	vm->ch.pid = -1;
	vm->run_dir = xstrdup(run_dir);
	vm->agent_sock = xasprintf("%s/agent.sock", run_dir);
	vm->qmp_sock = xasprintf("%s/qmp.sock", run_dir);
	vm->console_log = xasprintf("%s/console.log", run_dir);
	vm->qemu_log = xasprintf("%s/qemu.log", run_dir);
	vm->pidfile = xasprintf("%s/qemu.pid", run_dir);
	return vm;
}

void qemu_destroy(struct qemu_vm *vm)
{
	if (!vm)
		return;
	child_close(&vm->ch);
	free(vm->run_dir);
	free(vm->agent_sock);
	free(vm->qmp_sock);
	free(vm->console_log);
	free(vm->qemu_log);
	free(vm->pidfile);
	free(vm);
}

pid_t qemu_pid(const struct qemu_vm *vm) { return vm->ch.pid; }
int qemu_pidfd(const struct qemu_vm *vm) { return vm->ch.pidfd; }
enum qemu_accel qemu_vm_accel(const struct qemu_vm *vm) { return vm->accel; }
const char *qemu_agent_sock(const struct qemu_vm *vm) { return vm->agent_sock; }
const char *qemu_console_log(const struct qemu_vm *vm) { return vm->console_log; }

bool qemu_running(struct qemu_vm *vm)
{
	return child_running(&vm->ch);
}

int qemu_wait_exit(struct qemu_vm *vm, int64_t timeout_us)
{
	return child_wait_exit(&vm->ch, timeout_us);
}

int qemu_kill(struct qemu_vm *vm)
{
	return child_kill(&vm->ch);
}

/* Last lines of a file, for error messages ("" when absent). */
static char *tail_lines(const char *path, int lines)
{
	char *s = NULL;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return xstrdup("");
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > 4096 ? size - 4096 : 0;
	s = xmalloc(4097);
	ssize_t got = pread(fd, s, 4096, from);
	n = got > 0 ? (size_t)got : 0;
	close(fd);
	s[n] = 0;
	/* drop NULs and the \r of the serial console */
	size_t j = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] && s[i] != '\r')
			s[j++] = s[i];
	s[j] = 0;
	while (j > 0 && s[j - 1] == '\n')
		s[--j] = 0;
	char *p = s + j;
	int seen = 0;
	while (p > s) {
		if (p[-1] == '\n' && ++seen == lines)
			break;
		p--;
	}
	char *r = xstrdup(p);
	free(s);
	return r;
}

static bool file_contains(const char *path, const char *needle)
{
	char *s = NULL;
	size_t n;
	if (read_file(path, 1 << 20, &s, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!s[i])
			s[i] = ' ';
	bool r = strstr(s, needle) != NULL;
	free(s);
	return r;
}

static int start_argv(const char *run_dir, char **argv, enum qemu_accel accel,
		      struct qemu_vm **out, char **errmsg)
{
	struct qemu_vm *vm = vm_new(run_dir);
	unlink(vm->agent_sock);
	unlink(vm->qmp_sock);
	unlink(vm->pidfile);
	unlink(vm->console_log);
	int rc = child_spawn(&vm->ch, argv, true, vm->qemu_log, NULL, errmsg);
	if (rc < 0) {
		if (rc == BG_ERR_NOENT && errmsg && *errmsg) {
			char *m = xasprintf("%s (install qemu-system-x86)", *errmsg);
			free(*errmsg);
			*errmsg = m;
		}
		qemu_destroy(vm);
		return rc;
	}
	vm->accel = accel;
	*out = vm;
	return 0;
}

/* ---- the KVM probe ---- */

static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER;
static int probe_answer = -1; /* -1 unknown, else enum qemu_accel */
static bool probe_logged;

static char *boot_id(void)
{
	char *s = NULL;
	size_t n;
	if (read_file("/proc/sys/kernel/random/boot_id", 128, &s, &n) < 0)
		return xstrdup("unknown");
	s[strcspn(s, "\n")] = 0;
	return s;
}

static int probe_kvm(const struct qemu_config *cfg, char **why)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		*why = xasprintf("no usable /dev/kvm (%s)", strerror(errno));
		return QEMU_ACCEL_TCG;
	}
	close(fd);

	struct qemu_config pc = *cfg;
	char *dir = xasprintf("%s/probe", cfg->run_dir);
	char **argv = NULL;
	char *err = NULL;
	struct qemu_vm *vm = NULL;
	int answer = QEMU_ACCEL_TCG;
	int64_t limit = cfg->probe_timeout_us > 0 ? cfg->probe_timeout_us : DEFAULT_PROBE_US;

	mkdir_p(dir, 0700);
	pc.run_dir = dir;
	pc.rootfs = NULL;
	pc.extra_disk = NULL;
	pc.tap = NULL;
	pc.user_net = false;
	pc.guest_ip = NULL;
	pc.memory_mb = 128;
	pc.vcpus = 1;
	pc.append = "banger.probe=1";
	if (qemu_build_argv(&pc, QEMU_ACCEL_KVM, &argv, &err) < 0 ||
	    start_argv(dir, argv, QEMU_ACCEL_KVM, &vm, &err) < 0) {
		*why = xasprintf("the probe could not start qemu: %s", err ? err : "?");
		goto out;
	}
	int64_t deadline = mono_us() + limit;
	for (;;) {
		if (file_contains(vm->console_log, AP_PROBE_MARKER)) {
			answer = QEMU_ACCEL_KVM;
			break;
		}
		if (!qemu_running(vm)) {
			if (file_contains(vm->console_log, AP_PROBE_MARKER)) {
				answer = QEMU_ACCEL_KVM; /* it powered off right after */
				break;
			}
			char *t = tail_lines(vm->qemu_log, 2);
			*why = xasprintf("qemu -accel kvm exited without booting the guest: %s", t);
			free(t);
			break;
		}
		if (mono_us() >= deadline) {
			*why = xasprintf("under -accel kvm the guest showed no sign of life within "
					 "%.0f s",
					 (double)limit / 1e6);
			break;
		}
		struct pollfd p = {vm->ch.pidfd, POLLIN, 0};
		poll(&p, 1, 50);
	}
out:
	if (vm) {
		qemu_kill(vm);
		qemu_destroy(vm);
	}
	char *f;
	static const char *const files[] = {"console.log", "qemu.log", "qemu.pid", "agent.sock",
					     "qmp.sock"};
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		f = xasprintf("%s/%s", dir, files[i]);
		unlink(f);
		free(f);
	}
	rmdir(dir);
	free(dir);
	free(err);
	qemu_argv_free(argv);
	return answer;
}

int qemu_accel_resolve(const struct qemu_config *cfg, enum qemu_accel *out, char **errmsg)
{
	if (cfg->accel != QEMU_ACCEL_AUTO) {
		*out = cfg->accel;
		return 0;
	}
	pthread_mutex_lock(&probe_mu);
	char *bid = boot_id();
	char *why = NULL;
	if (probe_answer < 0 && cfg->probe_cache) {
		char *s = NULL;
		size_t n;
		if (read_file(cfg->probe_cache, 4096, &s, &n) == 0) {
			char id[128], acc[16];
			if (sscanf(s, "%127s %15s", id, acc) == 2 && !strcmp(id, bid))
				probe_answer = !strcmp(acc, "kvm") ? QEMU_ACCEL_KVM : QEMU_ACCEL_TCG;
			char *nl = strchr(s, '\n');
			if (probe_answer == QEMU_ACCEL_TCG && nl && nl[1])
				why = xstrndup(nl + 1, strcspn(nl + 1, "\n"));
			free(s);
		}
	}
	if (probe_answer < 0) {
		int64_t t0 = mono_us();
		probe_answer = probe_kvm(cfg, &why);
		log_info(NULL, 0, "kvm probe: %s after %.1f s", qemu_accel_name(probe_answer),
			 (double)(mono_us() - t0) / 1e6);
		if (cfg->probe_cache) {
			char *line = xasprintf("%s %s\n%s\n", bid, qemu_accel_name(probe_answer),
					       why ? why : "");
			write_file_atomic(cfg->probe_cache, line, strlen(line), 0600);
			free(line);
		}
	}
	if (probe_answer == QEMU_ACCEL_TCG && !probe_logged) {
		log_warn(NULL, 0,
			 "kvm cannot boot guests on this host (%s): using tcg, software emulation, "
			 "several times slower",
			 why ? why : "probe cached for this boot");
		probe_logged = true;
	}
	*out = (enum qemu_accel)probe_answer;
	free(why);
	free(bid);
	pthread_mutex_unlock(&probe_mu);
	return 0;
}

int qemu_start(const struct qemu_config *cfg, struct qemu_vm **out, char **errmsg)
{
	enum qemu_accel accel;
	char **argv = NULL;
	int rc;
	if (!cfg->run_dir) {
		errmsg_set(errmsg, "qemu: a run directory is required");
		return BG_ERR_INVAL;
	}
	if ((rc = mkdir_p(cfg->run_dir, 0700)) < 0) {
		errmsg_set(errmsg, "cannot create '%s': %s", cfg->run_dir, bg_strerror(rc));
		return rc;
	}
	struct stat st;
	if (stat(cfg->kernel ? cfg->kernel : "", &st) < 0 ||
	    stat(cfg->initrd ? cfg->initrd : "", &st) < 0) {
		errmsg_set(errmsg, "kernel '%s' or initramfs '%s' not found",
			cfg->kernel ? cfg->kernel : "", cfg->initrd ? cfg->initrd : "");
		return BG_ERR_NOENT;
	}
	if (cfg->rootfs && stat(cfg->rootfs, &st) < 0) {
		errmsg_set(errmsg, "root disk '%s' not found", cfg->rootfs);
		return BG_ERR_NOENT;
	}
	if ((rc = qemu_accel_resolve(cfg, &accel, errmsg)) < 0)
		return rc;
	if ((rc = qemu_build_argv(cfg, accel, &argv, errmsg)) < 0)
		return rc;
	rc = start_argv(cfg->run_dir, argv, accel, out, errmsg);
	if (rc == 0)
		log_info(NULL, 0, "qemu: started %s (pid %d, %s)", cfg->name, (int)(*out)->ch.pid,
			 qemu_accel_name(accel));
	qemu_argv_free(argv);
	return rc;
}

int qemu_adopt(const char *run_dir, struct qemu_vm **out, char **errmsg)
{
	struct qemu_vm *vm = vm_new(run_dir);
	char *s = NULL, *cmd = NULL;
	size_t n;
	int rc = BG_ERR_NOENT;
	if (read_file(vm->pidfile, 64, &s, &n) < 0) {
		errmsg_set(errmsg, "no qemu pidfile in '%s'", run_dir);
		goto fail;
	}
	pid_t pid = (pid_t)atol(s);
	if (pid <= 1) {
		errmsg_set(errmsg, "bad qemu pidfile in '%s'", run_dir);
		goto fail;
	}
	if (child_adopt(&vm->ch, pid) < 0) {
		errmsg_set(errmsg, "qemu (pid %d) of '%s' is not running", (int)vm->ch.pid, run_dir);
		goto fail;
	}
	/* The pidfd pins the process; now check it is ours. */
	char *proc = xasprintf("/proc/%d/cmdline", (int)vm->ch.pid);
	int r = read_file(proc, 1 << 20, &cmd, &n);
	free(proc);
	bool ours = false;
	if (r == 0) {
		for (size_t i = 0; i < n; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		ours = strstr(cmd, vm->agent_sock) != NULL;
	}
	if (!ours) {
		errmsg_set(errmsg, "pid %d is not the qemu of '%s' (pid reused)", (int)vm->ch.pid, run_dir);
		goto fail;
	}
	vm->accel = cmd && strstr(cmd, "-accel kvm") ? QEMU_ACCEL_KVM : QEMU_ACCEL_TCG;
	free(s);
	free(cmd);
	*out = vm;
	return 0;
fail:
	free(s);
	free(cmd);
	qemu_destroy(vm);
	return rc;
}

int qemu_wait_agent(struct qemu_vm *vm, int64_t timeout_us, struct agent_conn **out,
		    char **errmsg)
{
	char *err = NULL;
	int64_t t0 = mono_us();
	int rc = agent_connect(vm->agent_sock, timeout_us, vm->ch.pidfd, out, &err);
	if (rc == 0) {
		log_info(NULL, 0, "qemu: agent of pid %d answered after %.2f s (guest uptime %lld ms)",
			 (int)vm->ch.pid, (double)(mono_us() - t0) / 1e6,
			 (long long)agent_info(*out)->uptime_ms);
		return 0;
	}
	/* QEMU closes its sockets while it exits: give the exit a moment to
	 * land so the error names the real cause */
	if (rc != BG_ERR_TIMEDOUT)
		qemu_wait_exit(vm, 2000000);
	char *con = tail_lines(vm->console_log, 6);
	if (!qemu_running(vm)) {
		char *ql = tail_lines(vm->qemu_log, 3);
		char status[64] = "";
		child_exit_how(&vm->ch, status, sizeof(status));
		errmsg_set(errmsg, "qemu exited%s before the guest's agent answered; qemu said: %s; "
				"console: %s",
			status, ql[0] ? ql : "(nothing)", con[0] ? con : "(nothing)");
		free(ql);
		rc = BG_ERR_CLOSED;
	} else if (rc == BG_ERR_TIMEDOUT) {
		errmsg_set(errmsg, "the guest's agent did not answer within %.0f s (%s); console: %s",
			(double)timeout_us / 1e6, vm->accel == QEMU_ACCEL_TCG ? "tcg" : "kvm",
			con[0] ? con : "(nothing)");
	} else {
		errmsg_set(errmsg, "cannot reach the guest's agent: %s; console: %s", err ? err : "?",
			con[0] ? con : "(nothing)");
	}
	free(con);
	free(err);
	return rc;
}

/* ---- QMP ---- */

static int qmp_read_line(int fd, struct sb *in, char **line)
{
	for (;;) {
		char *nl = memchr(in->buf, '\n', in->len);
		if (nl) {
			size_t n = (size_t)(nl - in->buf);
			*line = xstrndup(in->buf, n);
			memmove(in->buf, nl + 1, in->len - n - 1);
			in->len -= n + 1;
			in->buf[in->len] = 0;
			return 0;
		}
		if (in->len > (1u << 20))
			return BG_ERR_TOOBIG;
		char b[4096];
		ssize_t r = read(fd, b, sizeof(b));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? BG_ERR_TIMEDOUT : bg_errno(errno);
		if (r == 0)
			return BG_ERR_CLOSED;
		sb_add(in, b, (size_t)r);
	}
}

/* Read until a reply (not an event); *ret owns the parsed reply. */
static int qmp_reply(int fd, struct sb *in, json_t **ret)
{
	for (;;) {
		char *line = NULL;
		int rc = qmp_read_line(fd, in, &line);
		if (rc < 0)
			return rc;
		json_t *j = json_loads(line, 0, NULL);
		free(line);
		if (!j)
			return BG_ERR_PROTO;
		if (json_object_get(j, "return") || json_object_get(j, "error")) {
			*ret = j;
			return 0;
		}
		json_decref(j); /* greeting or event */
	}
}

int qemu_qmp(struct qemu_vm *vm, const char *command, int64_t timeout_us, char **reply,
	     char **errmsg)
{
	struct sockaddr_un a;
	struct sb in;
	json_t *j = NULL;
	int rc;
	if (reply)
		*reply = NULL;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (strlen(vm->qmp_sock) >= sizeof(a.sun_path))
		return BG_ERR_INVAL;
	memcpy(a.sun_path, vm->qmp_sock, strlen(vm->qmp_sock) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bg_errno(errno);
	struct timeval tv = {timeout_us / 1000000, timeout_us % 1000000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	sb_init(&in);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "qmp: connect '%s': %s", vm->qmp_sock, strerror(errno));
		goto out;
	}
	/* greeting, then capabilities negotiation */
	char *line = NULL;
	if ((rc = qmp_read_line(fd, &in, &line)) < 0) {
		errmsg_set(errmsg, "qmp: no greeting: %s", bg_strerror(rc));
		goto out;
	}
	free(line);
	static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
	if (write(fd, caps, sizeof(caps) - 1) != (ssize_t)sizeof(caps) - 1 ||
	    (rc = qmp_reply(fd, &in, &j)) < 0) {
		rc = rc ? rc : BG_ERR_IO;
		errmsg_set(errmsg, "qmp: capabilities negotiation failed");
		goto out;
	}
	json_decref(j);
	j = NULL;
	json_t *req = json_pack("{s:s}", "execute", command);
	char *txt = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	struct sb out;
	sb_init(&out);
	sb_adds(&out, txt);
	sb_adds(&out, "\n");
	free(txt);
	ssize_t w = write(fd, out.buf, out.len);
	bool sent = w == (ssize_t)out.len;
	sb_release(&out);
	if (!sent) {
		rc = BG_ERR_IO;
		errmsg_set(errmsg, "qmp: cannot send '%s'", command);
		goto out;
	}
	rc = qmp_reply(fd, &in, &j);
	if (rc == BG_ERR_CLOSED && !strcmp(command, "quit")) {
		rc = 0; /* QEMU may close before answering quit */
		goto out;
	}
	if (rc < 0) {
		errmsg_set(errmsg, "qmp: no answer to '%s': %s", command, bg_strerror(rc));
		goto out;
	}
	json_t *err = json_object_get(j, "error");
	if (err) {
		errmsg_set(errmsg, "qmp: '%s' failed: %s", command,
			json_string_value(json_object_get(err, "desc"))
				? json_string_value(json_object_get(err, "desc"))
				: "?");
		rc = BG_ERR_IO;
		goto out;
	}
	if (reply)
		*reply = json_dumps(json_object_get(j, "return"), JSON_COMPACT | JSON_ENCODE_ANY);
out:
	json_decref(j);
	sb_release(&in);
	close(fd);
	return rc;
}

int qemu_status(struct qemu_vm *vm, char **status, char **errmsg)
{
	char *r = NULL;
	int rc = qemu_qmp(vm, "query-status", 5000000, &r, errmsg);
	if (rc < 0)
		return rc;
	json_t *j = json_loads(r, 0, NULL);
	free(r);
	const char *s = j ? json_string_value(json_object_get(j, "status")) : NULL;
	*status = xstrdup(s ? s : "unknown");
	json_decref(j);
	return 0;
}

int qemu_stop(struct qemu_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	      char **errmsg)
{
	if (graceful)
		*graceful = false;
	if (!qemu_running(vm))
		return 0;
	if (conn) {
		char *err = NULL;
		int64_t ack = grace_us < 5000000 ? grace_us : 5000000;
		if (agent_poweroff(conn, ack, &err) < 0)
			log_warn(NULL, 0, "qemu: pid %d: %s", (int)vm->ch.pid, err ? err : "power-off failed");
		free(err);
		if (qemu_wait_exit(vm, grace_us) == 0) {
			if (graceful)
				*graceful = true;
			return 0;
		}
		log_warn(NULL, 0, "qemu: pid %d did not power off within %.0f s; quitting it",
			 (int)vm->ch.pid, (double)grace_us / 1e6);
	}
	char *err = NULL;
	if (qemu_qmp(vm, "quit", 2000000, NULL, &err) == 0 && qemu_wait_exit(vm, 2000000) == 0) {
		free(err);
		return 0;
	}
	free(err);
	int rc = qemu_kill(vm);
	if (rc < 0)
		errmsg_set(errmsg, "qemu (pid %d) survived SIGKILL for 10 s", (int)vm->ch.pid);
	return rc;
}
