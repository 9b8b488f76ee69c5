/*
 * firecracker.c: the Firecracker driver (see firecracker.h): the plan (argv,
 * API bodies, jail paths), the process, the API over its Unix socket with
 * libcurl, hybrid vsock to the guest's agent, stop.
 *
 * The process is handled as qemu.c handles QEMU (worker/child.h):
 * posix_spawn in a process group of its own, stdin /dev/null, every other
 * descriptor closed, a pidfd
 * for every wait (so an adopted Firecracker that is not our child is waited
 * for the same way, and a recycled pid is never signalled).  The jailer,
 * without --daemonize, execs Firecracker in the same process, so the pid
 * and pidfd stay valid across that exec.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "agent.h"
#include "agent_proto.h"
#include "cowdisk.h"
#include "child.h"
#include "err.h"
#include "firecracker.h"
#include "log.h"
#include "util.h"


#define SUN_MAX 107
#define DEFAULT_API_US 5000000
#define DEFAULT_START_US 5000000

struct fc_vm {
	struct child ch;
	int64_t api_timeout_us;
	char *run_dir, *api_sock, *vsock_uds, *console_log, *fc_log, *pidfile;
};

/* ---- the plan ---- */

static bool param_ok(const char *s)
{
	for (; *s; s++)
		if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '"')
			return false;
	return true;
}

static bool jail_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-'))
			return false;
	return true;
}

char *fc_boot_args(const struct fc_config *cfg)
{
	struct sb sb;
	sb_init(&sb);
	/* reboot=k: a guest reboot (or SendCtrlAltDel) ends Firecracker;
	 * pci=off: its devices are virtio-mmio, which it adds to this line */
	sb_adds(&sb, "console=ttyS0 reboot=k panic=1 pci=off quiet");
	/* the agent speaks over vsock here: no virtio-serial port to wait for;
	 * the same banger.* parameters as QEMU's (qemu.c) otherwise */
	sb_adds(&sb, " banger.port=none");
	sb_addf(&sb, " banger.modules=virtio_mmio,virtio_blk,ext4,vmw_vsock_virtio_transport%s",
		cfg->tap ? ",virtio_net" : "");
	if (cfg->rootfs)
		sb_addf(&sb, " banger.root=/dev/vda%s", cfg->rootfs_readonly ? " banger.ro=1" : "");
	if (cfg->guest_ip)
		sb_addf(&sb, " banger.ip=%s", cfg->guest_ip);
	if (cfg->append && cfg->append[0])
		sb_addf(&sb, " %s", cfg->append);
	return sb_detach(&sb);
}

static void argv_add(char ***v, size_t *n, const char *s)
{
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = xstrdup(s);
	(*v)[*n] = NULL;
}

static void req_add(struct fc_plan *p, const char *path, json_t *body)
{
	p->req[p->nreq].path = xstrdup(path);
	p->req[p->nreq].body = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	p->nreq++;
	json_decref(body);
}

/* The path the API is given for a file: itself, or its name in the jail
 * (then a link is planned). */
static char *jail_file(struct fc_plan *p, const char *src, const char *name, bool chown_it)
{
	if (!p->chroot)
		return xstrdup(src);
	struct fc_link *l = &p->links[p->nlinks++];
	l->src = xstrdup(src);
	l->dst = xasprintf("%s/%s", p->chroot, name);
	l->chown = chown_it;
	return xasprintf("/%s", name);
}

void fc_plan_release(struct fc_plan *p)
{
	if (p->argv)
		for (char **a = p->argv; *a; a++)
			free(*a);
	free(p->argv);
	free(p->api_sock);
	free(p->vsock_uds);
	free(p->logger_path);
	free(p->chroot);
	free(p->jail_id);
	for (size_t i = 0; i < p->nreq; i++) {
		free(p->req[i].path);
		free(p->req[i].body);
	}
	for (size_t i = 0; i < p->nlinks; i++) {
		free(p->links[i].src);
		free(p->links[i].dst);
	}
	memset(p, 0, sizeof(*p));
}

int fc_plan_build(const struct fc_config *cfg, struct fc_plan *p, char **errmsg)
{
	memset(p, 0, sizeof(*p));
	if (!cfg->name || !cfg->run_dir || !cfg->kernel || !cfg->initrd) {
		errmsg_set(errmsg, "firecracker: name, run directory, kernel and initramfs are required");
		return BG_ERR_INVAL;
	}
	int vcpus = cfg->vcpus > 0 ? cfg->vcpus : 1;
	int mem = cfg->memory_mb > 0 ? cfg->memory_mb : 256;
	if (vcpus > 32) {
		errmsg_set(errmsg, "firecracker: vcpus %d is over Firecracker's limit of 32", vcpus);
		return BG_ERR_INVAL;
	}
	if (cfg->guest_ip && !param_ok(cfg->guest_ip)) {
		errmsg_set(errmsg, "guest address '%s' contains spaces or quotes", cfg->guest_ip);
		return BG_ERR_INVAL;
	}
	if (cfg->append && strchr(cfg->append, '"')) {
		errmsg_set(errmsg, "kernel parameters '%s' contain a quote", cfg->append);
		return BG_ERR_INVAL;
	}
	const char *fc = cfg->fc_bin ? cfg->fc_bin : "firecracker";
	const char *base = cfg->chroot_base ? cfg->chroot_base : "/srv/jailer";
	const char *sock_dir = cfg->run_dir;
	char *api_in, *vsock_in, *log_in;
	if (cfg->jailer_bin) {
		if (!jail_id_ok(cfg->name)) {
			errmsg_set(errmsg, "jail id '%s' must be 1-64 of A-Z a-z 0-9 -", cfg->name);
			return BG_ERR_INVAL;
		}
		if (fc[0] != '/') {
			errmsg_set(errmsg, "the jailer needs an absolute path to firecracker, not '%s'",
				   fc);
			return BG_ERR_INVAL;
		}
		char *copy = xstrdup(fc);
		p->chroot = xasprintf("%s/%s/%s/root", base, basename(copy), cfg->name);
		free(copy);
		p->jail_id = xstrdup(cfg->name);
		sock_dir = p->chroot;
		api_in = xstrdup("/fc.sock");
		vsock_in = xstrdup("/vsock.sock");
		log_in = xstrdup("/firecracker.log");
	} else {
		api_in = xasprintf("%s/fc.sock", cfg->run_dir);
		vsock_in = xasprintf("%s/vsock.sock", cfg->run_dir);
		log_in = xasprintf("%s/firecracker.log", cfg->run_dir);
	}
	p->api_sock = xasprintf("%s/fc.sock", sock_dir);
	p->vsock_uds = xasprintf("%s/vsock.sock", sock_dir);
	p->logger_path = xasprintf("%s/firecracker.log", sock_dir);
	if (strlen(p->vsock_uds) > SUN_MAX) {
		errmsg_set(errmsg, "'%s' is too long for a Unix socket path (%d bytes)", p->vsock_uds,
			   SUN_MAX);
		free(api_in);
		free(vsock_in);
		free(log_in);
		fc_plan_release(p);
		return BG_ERR_INVAL;
	}

	size_t n = 0;
	if (cfg->jailer_bin) {
		char num[24];
		argv_add(&p->argv, &n, cfg->jailer_bin);
		argv_add(&p->argv, &n, "--id");
		argv_add(&p->argv, &n, cfg->name);
		argv_add(&p->argv, &n, "--exec-file");
		argv_add(&p->argv, &n, fc);
		argv_add(&p->argv, &n, "--uid");
		snprintf(num, sizeof(num), "%u", cfg->jail_uid);
		argv_add(&p->argv, &n, num);
		argv_add(&p->argv, &n, "--gid");
		snprintf(num, sizeof(num), "%u", cfg->jail_gid);
		argv_add(&p->argv, &n, num);
		argv_add(&p->argv, &n, "--chroot-base-dir");
		argv_add(&p->argv, &n, base);
		argv_add(&p->argv, &n, "--");
		argv_add(&p->argv, &n, "--api-sock");
		argv_add(&p->argv, &n, api_in);
	} else {
		argv_add(&p->argv, &n, fc);
		argv_add(&p->argv, &n, "--api-sock");
		argv_add(&p->argv, &n, api_in);
		argv_add(&p->argv, &n, "--id");
		argv_add(&p->argv, &n, cfg->name);
	}

	req_add(p, "/logger",
		json_pack("{s:s, s:s, s:b}", "log_path", log_in, "level", "Info", "show_level", 1));
	req_add(p, "/machine-config",
		json_pack("{s:i, s:i, s:b}", "vcpu_count", vcpus, "mem_size_mib", mem, "smt", 0));
	char *kernel = jail_file(p, cfg->kernel, "vmlinux", false);
	char *initrd = jail_file(p, cfg->initrd, "initrd", false);
	char *args = fc_boot_args(cfg);
	req_add(p, "/boot-source",
		json_pack("{s:s, s:s, s:s}", "kernel_image_path", kernel, "initrd_path", initrd,
			  "boot_args", args));
	free(kernel);
	free(initrd);
	free(args);
	/* banger's initramfs mounts the root itself (banger.root=): no disk is
	 * Firecracker's root device, so none adds root= to the command line,
	 * and the drives are vda, vdb in the order they are added */
	if (cfg->rootfs) {
		char *path = jail_file(p, cfg->rootfs, "rootfs.raw", true);
		req_add(p, "/drives/rootfs",
			json_pack("{s:s, s:s, s:b, s:b}", "drive_id", "rootfs", "path_on_host", path,
				  "is_root_device", 0, "is_read_only", cfg->rootfs_readonly));
		free(path);
	}
	if (cfg->extra_disk) {
		char *path = jail_file(p, cfg->extra_disk, "workspace.raw", true);
		req_add(p, "/drives/workspace",
			json_pack("{s:s, s:s, s:b, s:b}", "drive_id", "workspace", "path_on_host",
				  path, "is_root_device", 0, "is_read_only", 0));
		free(path);
	}
	if (cfg->tap) {
		json_t *j = json_pack("{s:s, s:s}", "iface_id", "eth0", "host_dev_name", cfg->tap);
		if (cfg->mac)
			json_object_set_new(j, "guest_mac", json_string(cfg->mac));
		req_add(p, "/network-interfaces/eth0", j);
	}
	req_add(p, "/vsock", json_pack("{s:i, s:s}", "guest_cid", FC_GUEST_CID, "uds_path", vsock_in));
	req_add(p, "/actions", json_pack("{s:s}", "action_type", "InstanceStart"));
	free(api_in);
	free(vsock_in);
	free(log_in);
	return 0;
}

char *fc_which(const char *name)
{
	if (!name || !*name)
		return NULL;
	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? realpath(name, NULL) : NULL;
	const char *path = getenv("PATH");
	char *copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin"), *save = NULL;
	char *found = NULL;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char *p = xasprintf("%s/%s", d, name);
		struct stat st;
		if (access(p, X_OK) == 0 && stat(p, &st) == 0 && S_ISREG(st.st_mode))
			found = realpath(p, NULL);
		free(p);
	}
	free(copy);
	return found;
}

/* ---- the API ---- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct sb *sb = arg;
	if (sb->len + size * n > (1u << 20))
		return 0; /* far more than any answer of Firecracker's */
	sb_add(sb, data, size * n);
	return size * n;
}

int fc_api(const char *api_sock, const char *method, const char *path, const char *body,
	   int64_t timeout_us, char **reply, char **errmsg)
{
	struct sb in;
	struct curl_slist *hdr = NULL;
	int rc = 0;
	long code = 0;
	if (reply)
		*reply = NULL;
	CURL *c = curl_easy_init();
	if (!c) {
		errmsg_set(errmsg, "firecracker api: cannot make a curl handle");
		return BG_ERR_NOMEM;
	}
	sb_init(&in);
	char *url = xasprintf("http://localhost%s", path);
	hdr = curl_slist_append(hdr, "Accept: application/json");
	if (body)
		hdr = curl_slist_append(hdr, "Content-Type: application/json");
	hdr = curl_slist_append(hdr, "Expect:");
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, api_sock);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)((timeout_us > 0 ? timeout_us : DEFAULT_API_US) / 1000));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &in);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	CURLcode cr = curl_easy_perform(c);
	if (cr != CURLE_OK) {
		rc = cr == CURLE_OPERATION_TIMEDOUT ? BG_ERR_TIMEDOUT
		     : cr == CURLE_COULDNT_CONNECT  ? BG_ERR_CLOSED
						    : BG_ERR_IO;
		errmsg_set(errmsg, "firecracker api: %s %s on '%s': %s", method, path, api_sock,
			   curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	if (code < 200 || code > 299) {
		json_t *j = in.len ? json_loadb(in.buf, in.len, 0, NULL) : NULL;
		const char *fault = j ? json_string_value(json_object_get(j, "fault_message")) : NULL;
		errmsg_set(errmsg, "firecracker refused %s %s (HTTP %ld): %s", method, path, code,
			   fault ? fault : in.len ? in.buf : "(no fault_message)");
		json_decref(j);
		rc = code >= 400 && code < 500 ? BG_ERR_INVAL : BG_ERR_IO;
		goto out;
	}
	if (reply)
		*reply = sb_detach(&in);
out:
	sb_release(&in);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	free(url);
	return rc;
}

/* ---- the process ---- */

static struct fc_vm *vm_new(const char *run_dir, const char *api_sock, const char *vsock_uds)
{
	struct fc_vm *vm = xcalloc(1, sizeof(*vm));
	child_init(&vm->ch);
	vm->ch.pid = -1;
	vm->run_dir = xstrdup(run_dir);
	vm->api_sock = xstrdup(api_sock);
	vm->vsock_uds = xstrdup(vsock_uds);
	vm->console_log = xasprintf("%s/console.log", run_dir);
	vm->fc_log = xasprintf("%s/firecracker.log", run_dir);
	vm->pidfile = xasprintf("%s/firecracker.pid", run_dir);
	vm->api_timeout_us = DEFAULT_API_US;
	return vm;
}

void fc_destroy(struct fc_vm *vm)
{
	if (!vm)
		return;
	child_close(&vm->ch);
	free(vm->run_dir);
	free(vm->api_sock);
	free(vm->vsock_uds);
	free(vm->console_log);
	free(vm->fc_log);
	free(vm->pidfile);
	free(vm);
}

pid_t fc_pid(const struct fc_vm *vm) { return vm->ch.pid; }
int fc_pidfd(const struct fc_vm *vm) { return vm->ch.pidfd; }
const char *fc_console_log(const struct fc_vm *vm) { return vm->console_log; }
const char *fc_api_sock(const struct fc_vm *vm) { return vm->api_sock; }

bool fc_running(struct fc_vm *vm)
{
	return child_running(&vm->ch);
}

int fc_wait_exit(struct fc_vm *vm, int64_t timeout_us)
{
	return child_wait_exit(&vm->ch, timeout_us);
}

int fc_kill(struct fc_vm *vm)
{
	return child_kill(&vm->ch);
}

/* Last lines of a file, one line, for error messages ("" when absent). */
static char *tail_text(const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return xstrdup("");
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > (off_t)max ? size - (off_t)max : 0;
	char *s = xmalloc(max + 1);
	ssize_t got = pread(fd, s, max, from);
	close(fd);
	size_t n = got > 0 ? (size_t)got : 0, j = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] && s[i] != '\r')
			s[j++] = s[i] == '\n' ? ' ' : s[i];
	while (j > 0 && s[j - 1] == ' ')
		j--;
	s[j] = 0;
	return s;
}

/* Wait until the API socket answers GET /, bounded; the pidfd ends it. */
static int wait_api(struct fc_vm *vm, int64_t timeout_us, char **errmsg)
{
	int64_t deadline = mono_us() + timeout_us;
	for (;;) {
		char *err = NULL;
		struct stat st;
		if (stat(vm->api_sock, &st) == 0 &&
		    fc_api(vm->api_sock, "GET", "/", NULL, 1000000, NULL, &err) == 0)
			return 0;
		free(err);
		if (!fc_running(vm)) {
			char how[48];
			child_exit_how(&vm->ch, how, sizeof(how));
			char *t = tail_text(vm->fc_log, 600);
			errmsg_set(errmsg, "firecracker exited at start%s before its api socket '%s' "
					"answered; it said: %s",
				   how, vm->api_sock, t[0] ? t : "(nothing)");
			free(t);
			return BG_ERR_CLOSED;
		}
		if (mono_us() >= deadline) {
			errmsg_set(errmsg, "firecracker's api socket '%s' did not answer within %.1f s",
				   vm->api_sock, (double)timeout_us / 1e6);
			return BG_ERR_TIMEDOUT;
		}
		struct pollfd p = {vm->ch.pidfd, POLLIN, 0};
		poll(&p, 1, 20);
	}
}

/* Put the jail's files in place: hard links, else copies (another
 * filesystem); disks chowned to the jail's user. */
static int link_files(const struct fc_config *cfg, const struct fc_plan *p, char **errmsg)
{
	int rc = mkdir_p(p->chroot, 0755);
	if (rc < 0) {
		errmsg_set(errmsg, "cannot create the jail '%s': %s", p->chroot, bg_strerror(rc));
		return rc;
	}
	for (size_t i = 0; i < p->nlinks; i++) {
		const struct fc_link *l = &p->links[i];
		unlink(l->dst);
		if (link(l->src, l->dst) < 0) {
			char *err = NULL;
			if (errno != EXDEV || (rc = cowdisk_create(l->src, l->dst, 0, NULL, &err)) < 0) {
				rc = rc < 0 ? rc : bg_errno(errno);
				errmsg_set(errmsg, "cannot put '%s' in the jail as '%s': %s", l->src,
					   l->dst, err ? err : strerror(errno));
				free(err);
				return rc;
			}
		}
		if (l->chown && geteuid() == 0 && chown(l->dst, cfg->jail_uid, cfg->jail_gid) < 0) {
			rc = bg_errno(errno);
			errmsg_set(errmsg, "cannot chown '%s' to %u:%u: %s", l->dst, cfg->jail_uid,
				   cfg->jail_gid, strerror(errno));
			return rc;
		}
	}
	return 0;
}

int fc_start(const struct fc_config *cfg, struct fc_vm **out, char **errmsg)
{
	struct fc_plan p;
	struct fc_config c = *cfg;
	char *fc_bin = NULL, *jailer = NULL;
	struct fc_vm *vm = NULL;
	struct stat st;
	int rc;

	if (!cfg->run_dir) {
		errmsg_set(errmsg, "firecracker: a run directory is required");
		return BG_ERR_INVAL;
	}
	fc_bin = fc_which(cfg->fc_bin ? cfg->fc_bin : "firecracker");
	if (!fc_bin) {
		errmsg_set(errmsg, "cannot run '%s': not found%s",
			   cfg->fc_bin ? cfg->fc_bin : "firecracker",
			   cfg->fc_bin ? "" : " in PATH (Firecracker is not packaged by Debian: "
					      "install its release binary)");
		return BG_ERR_NOENT;
	}
	c.fc_bin = fc_bin;
	if (cfg->jailer_bin) {
		if (!(jailer = fc_which(cfg->jailer_bin))) {
			errmsg_set(errmsg, "cannot run the jailer '%s': not found", cfg->jailer_bin);
			free(fc_bin);
			return BG_ERR_NOENT;
		}
		c.jailer_bin = jailer;
	}
	if (stat(cfg->kernel ? cfg->kernel : "", &st) < 0 ||
	    stat(cfg->initrd ? cfg->initrd : "", &st) < 0) {
		errmsg_set(errmsg, "kernel '%s' or initramfs '%s' not found",
			   cfg->kernel ? cfg->kernel : "", cfg->initrd ? cfg->initrd : "");
		rc = BG_ERR_NOENT;
		goto out_bins;
	}
	const char *disks[2] = {cfg->rootfs, cfg->extra_disk};
	for (int i = 0; i < 2; i++)
		if (disks[i] && stat(disks[i], &st) < 0) {
			errmsg_set(errmsg, "disk '%s' not found", disks[i]);
			rc = BG_ERR_NOENT;
			goto out_bins;
		}
	if ((rc = fc_plan_build(&c, &p, errmsg)) < 0)
		goto out_bins;
	if ((rc = mkdir_p(cfg->run_dir, 0700)) < 0) {
		errmsg_set(errmsg, "cannot create '%s': %s", cfg->run_dir, bg_strerror(rc));
		goto out_plan;
	}
	vm = vm_new(cfg->run_dir, p.api_sock, p.vsock_uds);
	if (cfg->api_timeout_us > 0)
		vm->api_timeout_us = cfg->api_timeout_us;
	unlink(vm->api_sock);
	unlink(vm->vsock_uds);
	unlink(vm->pidfile);
	unlink(vm->console_log);
	if (p.chroot) {
		if ((rc = link_files(&c, &p, errmsg)) < 0)
			goto fail;
		char *jail = xasprintf("%s\n%s\n", p.chroot, p.jail_id);
		char *jf = xasprintf("%s/fc.jail", cfg->run_dir);
		write_file_atomic(jf, jail, strlen(jail), 0600);
		free(jail);
		free(jf);
	}
	/* the logger's file must exist before PUT /logger */
	int lfd = open(p.logger_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (lfd >= 0) {
		if (p.chroot && geteuid() == 0 && fchown(lfd, c.jail_uid, c.jail_gid) < 0)
			log_warn(NULL, 0, "firecracker: cannot chown '%s': %s", p.logger_path,
				 strerror(errno));
		close(lfd);
	}
	if ((rc = child_spawn(&vm->ch, p.argv, false, vm->console_log, vm->fc_log, errmsg)) < 0)
		goto fail;
	char pid[24];
	snprintf(pid, sizeof(pid), "%d\n", (int)vm->ch.pid);
	if ((rc = write_file_atomic(vm->pidfile, pid, strlen(pid), 0600)) < 0) {
		errmsg_set(errmsg, "cannot write '%s': %s", vm->pidfile, bg_strerror(rc));
		goto fail;
	}
	if ((rc = wait_api(vm, cfg->start_timeout_us > 0 ? cfg->start_timeout_us : DEFAULT_START_US,
			   errmsg)) < 0)
		goto fail;
	for (size_t i = 0; i < p.nreq; i++) {
		char *err = NULL;
		rc = fc_api(vm->api_sock, "PUT", p.req[i].path, p.req[i].body, vm->api_timeout_us,
			    NULL, &err);
		if (rc < 0) {
			if (!fc_running(vm)) {
				char how[48];
				child_exit_how(&vm->ch, how, sizeof(how));
				char *t = tail_text(vm->fc_log, 600);
				errmsg_set(errmsg, "firecracker exited%s during PUT %s: %s", how,
					   p.req[i].path, t[0] ? t : "(nothing)");
				free(t);
			} else {
				errmsg_set(errmsg, "%s", err);
			}
			free(err);
			goto fail;
		}
	}
	log_info(NULL, 0, "firecracker: started %s (pid %d%s)", cfg->name, (int)vm->ch.pid,
		 p.chroot ? ", jailed" : "");
	*out = vm;
	vm = NULL;
	rc = 0;
	goto out_plan;
fail:
	if (vm->ch.pidfd >= 0)
		fc_kill(vm);
	unlink(vm->pidfile);
	fc_destroy(vm);
out_plan:
	fc_plan_release(&p);
out_bins:
	free(fc_bin);
	free(jailer);
	return rc;
}

/* The jail recorded in RUN/fc.jail: chroot and id (both NULL without). */
static void read_jail(const char *run_dir, char **chroot, char **id)
{
	char *jf = xasprintf("%s/fc.jail", run_dir), *s = NULL;
	size_t n;
	*chroot = *id = NULL;
	if (read_file(jf, 8192, &s, &n) == 0) {
		char *nl = strchr(s, '\n');
		if (nl) {
			*chroot = xstrndup(s, (size_t)(nl - s));
			*id = xstrndup(nl + 1, strcspn(nl + 1, "\n"));
		}
		free(s);
	}
	free(jf);
}

int fc_adopt(const char *run_dir, struct fc_vm **out, char **errmsg)
{
	char *chroot, *id, *s = NULL, *cmd = NULL;
	size_t n;
	read_jail(run_dir, &chroot, &id);
	const char *dir = chroot ? chroot : run_dir;
	char *api = xasprintf("%s/fc.sock", dir), *vs = xasprintf("%s/vsock.sock", dir);
	struct fc_vm *vm = vm_new(run_dir, api, vs);
	int rc = BG_ERR_NOENT;
	free(api);
	free(vs);
	if (read_file(vm->pidfile, 64, &s, &n) < 0) {
		errmsg_set(errmsg, "no firecracker pidfile in '%s'", run_dir);
		goto fail;
	}
	pid_t pid = (pid_t)atol(s);
	if (pid <= 1) {
		errmsg_set(errmsg, "bad firecracker pidfile in '%s'", run_dir);
		goto fail;
	}
	if (child_adopt(&vm->ch, pid) < 0) {
		errmsg_set(errmsg, "firecracker (pid %d) of '%s' is not running", (int)vm->ch.pid,
			   run_dir);
		goto fail;
	}
	/* the pidfd pins the process; now check it is ours */
	char *proc = xasprintf("/proc/%d/cmdline", (int)vm->ch.pid);
	int r = read_file(proc, 1 << 20, &cmd, &n);
	free(proc);
	bool ours = false;
	if (r == 0) {
		/* NUL-separated arguments: one whole argument must match */
		for (size_t i = 0; i < n && !ours; i += strlen(cmd + i) + 1) {
			const char *a = cmd + i;
			if (id)
				ours = !strcmp(a, id) || (!strncmp(a, "--id=", 5) && !strcmp(a + 5, id));
			else
				ours = !strcmp(a, vm->api_sock);
		}
	}
	if (!ours) {
		errmsg_set(errmsg, "pid %d is not the firecracker of '%s' (pid reused)", (int)vm->ch.pid,
			   run_dir);
		goto fail;
	}
	free(s);
	free(cmd);
	free(chroot);
	free(id);
	*out = vm;
	return 0;
fail:
	free(s);
	free(cmd);
	free(chroot);
	free(id);
	fc_destroy(vm);
	return rc;
}

/* ---- hybrid vsock ---- */

int fc_vsock_connect(const char *uds_path, unsigned port, int64_t timeout_us, int *out,
		     char **errmsg)
{
	struct sockaddr_un a;
	int64_t deadline = mono_us() + timeout_us;
	int rc;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	if (strlen(uds_path) >= sizeof(a.sun_path)) {
		errmsg_set(errmsg, "vsock socket path '%s' is too long", uds_path);
		return BG_ERR_INVAL;
	}
	memcpy(a.sun_path, uds_path, strlen(uds_path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bg_errno(errno);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot connect to the vsock socket '%s': %s", uds_path,
			   strerror(errno));
		close(fd);
		return rc;
	}
	char req[32];
	int len = snprintf(req, sizeof(req), "CONNECT %u\n", port);
	if (write(fd, req, (size_t)len) != len) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot write to the vsock socket '%s': %s", uds_path,
			   strerror(errno));
		close(fd);
		return rc;
	}
	/* "OK <host port>\n", read a byte at a time: what follows is the
	 * agent's and stays in the socket */
	char line[64];
	size_t n = 0;
	for (;;) {
		int64_t left = deadline - mono_us();
		if (left <= 0) {
			errmsg_set(errmsg, "no answer to CONNECT %u on '%s'", port, uds_path);
			close(fd);
			return BG_ERR_TIMEDOUT;
		}
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, (int)(left / 1000) + 1) <= 0)
			continue;
		ssize_t r = read(fd, line + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* Firecracker closes when nothing listens on the guest port */
			errmsg_set(errmsg, "CONNECT %u on '%s' was closed (nothing listens on guest "
					"port %u yet)",
				   port, uds_path, port);
			close(fd);
			return BG_ERR_CLOSED;
		}
		if (line[n] == '\n')
			break;
		if (++n >= sizeof(line) - 1) {
			errmsg_set(errmsg, "CONNECT %u on '%s': answer too long", port, uds_path);
			close(fd);
			return BG_ERR_PROTO;
		}
	}
	line[n] = 0;
	if (strncmp(line, "OK ", 3) != 0) {
		errmsg_set(errmsg, "CONNECT %u on '%s' answered '%s', not OK", port, uds_path, line);
		close(fd);
		return BG_ERR_PROTO;
	}
	*out = fd;
	return 0;
}

int fc_wait_agent(struct fc_vm *vm, int64_t timeout_us, struct agent_conn **out, char **errmsg)
{
	int64_t t0 = mono_us(), deadline = t0 + timeout_us;
	char *err = NULL;
	int rc;
	for (;;) {
		int fd = -1;
		int64_t left = deadline - mono_us();
		free(err);
		err = NULL;
		if (left <= 0) {
			rc = BG_ERR_TIMEDOUT;
			break;
		}
		if (!fc_running(vm)) {
			rc = BG_ERR_CLOSED;
			break;
		}
		rc = fc_vsock_connect(vm->vsock_uds, AP_VSOCK_PORT, left < 2000000 ? left : 2000000,
				      &fd, &err);
		if (rc == 0) {
			left = deadline - mono_us();
			rc = agent_connect_fd(fd, left > 0 ? left : 1, vm->ch.pidfd, out, &err);
			if (rc == 0) {
				log_info(NULL, 0,
					 "firecracker: agent of pid %d answered after %.2f s (guest "
					 "uptime %lld ms)",
					 (int)vm->ch.pid, (double)(mono_us() - t0) / 1e6,
					 (long long)agent_info(*out)->uptime_ms);
				return 0;
			}
			if (rc != BG_ERR_CLOSED)
				break;
		} else if (rc == BG_ERR_PROTO || rc == BG_ERR_INVAL) {
			break; /* not Firecracker's vsock: retrying will not help */
		}
		/* not there yet, refused, closed: the guest is still booting */
		struct pollfd p = {vm->ch.pidfd, POLLIN, 0};
		poll(&p, 1, 100);
	}
	if (rc != BG_ERR_TIMEDOUT)
		fc_wait_exit(vm, 2000000);
	char *con = tail_text(vm->console_log, 400);
	if (!fc_running(vm)) {
		char how[48];
		child_exit_how(&vm->ch, how, sizeof(how));
		char *fl = tail_text(vm->fc_log, 400);
		errmsg_set(errmsg, "firecracker exited%s before the guest's agent answered; "
				"firecracker said: %s; console: %s",
			   how, fl[0] ? fl : "(nothing)", con[0] ? con : "(nothing)");
		free(fl);
		rc = BG_ERR_CLOSED;
	} else if (rc == BG_ERR_TIMEDOUT) {
		errmsg_set(errmsg, "the guest's agent did not answer on vsock port %d within %.0f s "
				"(%s); console: %s",
			   AP_VSOCK_PORT, (double)timeout_us / 1e6, err ? err : "no answer",
			   con[0] ? con : "(nothing)");
	} else {
		errmsg_set(errmsg, "cannot reach the guest's agent: %s; console: %s",
			   err ? err : bg_strerror(rc), con[0] ? con : "(nothing)");
	}
	free(con);
	free(err);
	return rc;
}

/* ---- stop ---- */

int fc_stop(struct fc_vm *vm, struct agent_conn *conn, int64_t grace_us, bool *graceful,
	    char **errmsg)
{
	if (graceful)
		*graceful = false;
	if (!fc_running(vm))
		return 0;
	if (conn) {
		char *err = NULL;
		int64_t ack = grace_us < 5000000 ? grace_us : 5000000;
		if (agent_poweroff(conn, ack, &err) < 0)
			log_warn(NULL, 0, "firecracker: pid %d: %s", (int)vm->ch.pid,
				 err ? err : "power-off failed");
		free(err);
		if (fc_wait_exit(vm, grace_us) == 0) {
			if (graceful)
				*graceful = true;
			return 0;
		}
		log_warn(NULL, 0, "firecracker: pid %d did not power off within %.0f s; sending "
				  "ctrl-alt-del",
			 (int)vm->ch.pid, (double)grace_us / 1e6);
	}
	char *err = NULL;
	if (fc_api(vm->api_sock, "PUT", "/actions", "{\"action_type\":\"SendCtrlAltDel\"}",
		   2000000, NULL, &err) == 0 &&
	    fc_wait_exit(vm, 2000000) == 0) {
		free(err);
		return 0;
	}
	free(err);
	int rc = fc_kill(vm);
	if (rc < 0)
		errmsg_set(errmsg, "firecracker (pid %d) survived SIGKILL for 10 s", (int)vm->ch.pid);
	return rc;
}

int fc_cleanup(const char *run_dir, char **errmsg)
{
	char *chroot, *id;
	read_jail(run_dir, &chroot, &id);
	if (!chroot)
		return 0;
	static const char *const files[] = {"vmlinux", "initrd", "rootfs.raw", "workspace.raw",
					     "fc.sock", "vsock.sock", "firecracker.log"};
	for (size_t i = 0; i < ARRAY_LEN(files); i++) {
		char *f = xasprintf("%s/%s", chroot, files[i]);
		unlink(f);
		free(f);
	}
	int rc = 0;
	if (rmdir(chroot) < 0 && errno != ENOENT) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot remove the jail '%s': %s", chroot, strerror(errno));
	} else {
		/* CHROOT_BASE/<exec>/<id>: the jailer's own level */
		char *parent = xstrdup(chroot);
		char *slash = strrchr(parent, '/');
		if (slash) {
			*slash = 0;
			rmdir(parent);
		}
		free(parent);
	}
	free(chroot);
	free(id);
	return rc;
}
