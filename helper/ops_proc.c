/*
 * ops_proc.c: proc.signal, and the processes of the inventory.
 *
 * A process is banger's when its command line names a path under the
 * runtime directory (a hypervisor started by bangerd is given its sockets
 * and pid file there: `-chardev socket,path=/run/banger/vms/x/serial.sock`),
 * or when its cgroup path has a "bangerd.service" component (started by the
 * daemon under systemd, which keeps them there with KillMode=process).  The
 * helper itself and pid 1 are never signalled.
 *
 * The pid is pinned first with pidfd_open; /proc/<pid> is read after that;
 * the signal goes through the pidfd.  If the process died and its pid was
 * reused in between, the pidfd still names the dead one and the signal
 * fails with ESRCH, so a stranger can never be hit.  Only TERM, KILL, INT
 * and HUP get through validation (proto.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "mpk.h"
#include "util.h"

#define CMDLINE_MAX (64 * 1024)

/* Read a /proc file below procfd (at most max bytes); length or -1. */
static ssize_t read_proc(int procfd, const char *name, char *buf, size_t max)
{
	int fd = openat(procfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t got = 0;
	while (got < max) {
		ssize_t n = read(fd, buf + got, max - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (ssize_t)got;
}

/* dir appears in arg at the start or after '=', ',' or ':', followed by '/'. */
static bool arg_names_dir(const char *arg, size_t len, const char *dir)
{
	size_t dl = strlen(dir);
	for (size_t i = 0; i + dl < len; i++) {
		if (i > 0 && arg[i - 1] != '=' && arg[i - 1] != ',' && arg[i - 1] != ':')
			continue;
		if (memcmp(arg + i, dir, dl) == 0 && arg[i + dl] == '/')
			return true;
	}
	return false;
}

bool proc_is_bangers(int procfd, char *why, size_t whylen)
{
	char *buf = xmalloc(CMDLINE_MAX + 1);
	bool yes = false;
	ssize_t n = read_proc(procfd, "cmdline", buf, CMDLINE_MAX);
	if (n > 0) {
		for (ssize_t i = 0; i < n && !yes;) {
			size_t len = strnlen(buf + i, (size_t)(n - i));
			if (arg_names_dir(buf + i, len, H.pol.runtime_dir)) {
				yes = true;
				snprintf(why, whylen, "its command line names a path under %s",
					 H.pol.runtime_dir);
			}
			i += (ssize_t)len + 1;
		}
	}
	if (!yes) {
		n = read_proc(procfd, "cgroup", buf, CMDLINE_MAX);
		buf[n > 0 ? n : 0] = '\0';
		char *save = NULL;
		for (char *line = strtok_r(buf, "\n", &save); line && !yes;
		     line = strtok_r(NULL, "\n", &save)) {
			/* "ID:CONTROLLERS:/PATH", v2 ("0::/a/b") and v1 alike */
			char *c1 = strchr(line, ':');
			char *path = c1 ? strchr(c1 + 1, ':') : NULL;
			if (!path || path[1] != '/')
				continue;
			char *s2 = NULL;
			for (char *comp = strtok_r(path + 2, "/", &s2); comp && !yes;
			     comp = strtok_r(NULL, "/", &s2))
				yes = !strcmp(comp, "bangerd.service");
			if (yes)
				snprintf(why, whylen, "it is in bangerd.service's cgroup");
		}
	}
	free(buf);
	return yes;
}

/* argv[0] of a process, for messages and the inventory. */
static void proc_name(int procfd, char *out, size_t size)
{
	ssize_t n = read_proc(procfd, "cmdline", out, size - 1);
	out[n > 0 ? n : 0] = '\0';
	if (n <= 0) {
		n = read_proc(procfd, "comm", out, size - 1);
		out[n > 0 ? n : 0] = '\0';
		char *nl = strchr(out, '\n');
		if (nl)
			*nl = '\0';
	}
}

int op_proc_signal(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	pid_t pid = (pid_t)a->pid;
	char why[256], name[256], path[64];
	if (pid == getpid())
		return hfail(r, BG_ERR_PERM, "pid %d is banger-helper itself", (int)pid);
	if (pid == 1)
		return hfail(r, BG_ERR_PERM, "pid 1 is not a process banger started");
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		if (errno == ESRCH)
			goto gone;
		return hfail(r, errno == EINVAL ? BG_ERR_INVAL : bg_errno(errno),
			     "pid %d: %s", (int)pid,
			     errno == EINVAL ? "not a process (a thread id?)" : strerror(errno));
	}
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	int procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (procfd < 0) {
		close(pidfd);
		goto gone;
	}
	bool ours = proc_is_bangers(procfd, why, sizeof(why));
	proc_name(procfd, name, sizeof(name));
	close(procfd);
	if (!ours) {
		close(pidfd);
		return hfail(r, BG_ERR_PERM,
			     "pid %d ('%s') is not a process banger started: its command line names "
			     "nothing under %s and it is not in bangerd.service's cgroup",
			     (int)pid, name, H.pol.runtime_dir);
	}
	int rc = (int)syscall(SYS_pidfd_send_signal, pidfd, a->sig, NULL, 0);
	int e = errno;
	close(pidfd);
	if (rc < 0 && e == ESRCH)
		goto gone;
	if (rc < 0)
		return hfail(r, bg_errno(e), "cannot signal pid %d: %s", (int)pid, strerror(e));
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "signalled", true);
	return 0;
gone:
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "signalled", false);
	return 0;
}

int proc_inventory(msgpack_packer *pk)
{
	struct {
		int pid;
		char name[128];
	} *v = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir("/proc");
	struct dirent *de;
	char why[256];
	while (d && (de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 1 || pid == getpid())
			continue;
		int fd = openat(dirfd(d), de->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (proc_is_bangers(fd, why, sizeof(why))) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				v = xrealloc(v, cap * sizeof(*v));
			}
			v[n].pid = (int)pid;
			proc_name(fd, v[n].name, sizeof(v[n].name));
			n++;
		}
		close(fd);
	}
	if (d)
		closedir(d);
	mpk_pack_str(pk, "procs");
	msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_map(pk, 2);
		mpk_kv_int(pk, "pid", v[i].pid);
		mpk_kv_str(pk, "cmd", v[i].name);
	}
	free(v);
	return 0;
}
