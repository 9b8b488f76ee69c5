/*
 * init.c: banger-agent's PID 1 duties before it serves (see init.h): early
 * mounts, the kernel command line, modules, the root switch, the network,
 * and the final power-off.
 *
 * There is no udev, no shell and no libc name service in the guest: devices
 * come from devtmpfs, the network is set with ioctls, and every wait for a
 * device is bounded.  A step that fails is logged to the console and the
 * agent carries on, so the host can still reach it and read the reason.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init.h"

#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

void agent_log(const char *fmt, ...)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "banger-agent: ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	if (write(2, line, len) < 0) {
		/* no console: nothing to do */
	}
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

long long init_uptime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void try_mount(const char *src, const char *dst, const char *fs, unsigned long flags,
		      const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, fs, flags, data) < 0 && errno != EBUSY)
		agent_log("mount %s on %s (%s): %s", src, dst, fs, strerror(errno));
}

void init_early(void)
{
	try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		for (int i = 0; i < 3; i++)
			if (fd != i)
				dup2(fd, i);
		if (fd > 2)
			close(fd);
	}
}

/* Copy a value into a fixed field; over-long values are refused (empty). */
static void setval(char *dst, size_t cap, const char *v, size_t n, const char *key)
{
	if (n >= cap) {
		agent_log("%s: value too long, ignored", key);
		dst[0] = 0;
		return;
	}
	memcpy(dst, v, n);
	dst[n] = 0;
}

static void parse_ip(struct init_cmdline *c, const char *v, size_t n)
{
	/* ADDR/PREFIX[,GW[,IFACE]] */
	char tmp[160];
	if (n >= sizeof(tmp)) {
		agent_log("banger.ip: value too long, ignored");
		return;
	}
	memcpy(tmp, v, n);
	tmp[n] = 0;
	char *save = NULL;
	char *a = strtok_r(tmp, ",", &save);
	char *g = a ? strtok_r(NULL, ",", &save) : NULL;
	char *i = g ? strtok_r(NULL, ",", &save) : NULL;
	if (a)
		setval(c->ip, sizeof(c->ip), a, strlen(a), "banger.ip");
	if (g)
		setval(c->gw, sizeof(c->gw), g, strlen(g), "banger.ip gateway");
	if (i)
		setval(c->iface, sizeof(c->iface), i, strlen(i), "banger.ip interface");
}

static void parse_mount(struct init_cmdline *c, const char *v, size_t n)
{
	char tmp[320];
	if (c->nmounts >= AGENT_MAX_MOUNTS || n >= sizeof(tmp)) {
		agent_log("banger.mount: too many or too long, ignored");
		return;
	}
	memcpy(tmp, v, n);
	tmp[n] = 0;
	char *save = NULL;
	char *dev = strtok_r(tmp, ":", &save);
	char *path = dev ? strtok_r(NULL, ":", &save) : NULL;
	char *fs = path ? strtok_r(NULL, ":", &save) : NULL;
	if (!dev || !path || path[0] != '/') {
		agent_log("banger.mount: want DEV:PATH[:FSTYPE], ignored");
		return;
	}
	int k = c->nmounts;
	setval(c->mounts[k].dev, sizeof(c->mounts[k].dev), dev, strlen(dev), "banger.mount");
	setval(c->mounts[k].path, sizeof(c->mounts[k].path), path, strlen(path), "banger.mount");
	setval(c->mounts[k].fstype, sizeof(c->mounts[k].fstype), fs ? fs : "ext4",
	       strlen(fs ? fs : "ext4"), "banger.mount");
	if (c->mounts[k].dev[0] && c->mounts[k].path[0] && c->mounts[k].fstype[0])
		c->nmounts++;
}

void init_parse_cmdline(const char *line, struct init_cmdline *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->rootfstype, sizeof(c->rootfstype), "ext4");
	snprintf(c->iface, sizeof(c->iface), "eth0");
	snprintf(c->port, sizeof(c->port), "%s", "banger.agent");
	const char *p = line;
	while (*p) {
		while (*p == ' ' || *p == '\n' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *tok = p;
		while (*p && *p != ' ' && *p != '\n' && *p != '\t')
			p++;
		size_t tl = (size_t)(p - tok);
		const char *eq = memchr(tok, '=', tl);
		if (!eq || tl < 8 || strncmp(tok, "banger.", 7) != 0)
			continue;
		size_t kl = (size_t)(eq - tok);
		const char *v = eq + 1;
		size_t vl = tl - kl - 1;
#define KEY(s) (kl == sizeof(s) - 1 && memcmp(tok, s, kl) == 0)
		if (KEY("banger.root"))
			setval(c->root, sizeof(c->root), v, vl, "banger.root");
		else if (KEY("banger.rootfstype"))
			setval(c->rootfstype, sizeof(c->rootfstype), v, vl, "banger.rootfstype");
		else if (KEY("banger.ro"))
			c->ro = vl > 0 && v[0] == '1';
		else if (KEY("banger.ip"))
			parse_ip(c, v, vl);
		else if (KEY("banger.mtu"))
			c->mtu = atoi(v);
		else if (KEY("banger.dns"))
			setval(c->dns, sizeof(c->dns), v, vl, "banger.dns");
		else if (KEY("banger.hostname"))
			setval(c->hostname, sizeof(c->hostname), v, vl, "banger.hostname");
		else if (KEY("banger.port"))
			setval(c->port, sizeof(c->port), v, vl, "banger.port");
		else if (KEY("banger.modules"))
			setval(c->modules, sizeof(c->modules), v, vl, "banger.modules");
		else if (KEY("banger.probe"))
			c->probe = vl > 0 && v[0] == '1';
		else if (KEY("banger.mount"))
			parse_mount(c, v, vl);
		else
			agent_log("unknown parameter '%.*s', ignored", (int)kl, tok);
#undef KEY
	}
}

#define MAX_MODULES 256

struct modline {
	char name[64];
	char path[256];
	char deps[256];
	bool want;
};

static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; *p;) {
		size_t l = strcspn(p, ",");
		if (l == n && !strncmp(p, name, n))
			return true;
		p += l;
		if (*p == ',')
			p++;
	}
	return false;
}

int init_load_modules(const char *wanted)
{
	static struct modline m[MAX_MODULES];
	FILE *f = fopen(AGENT_MODULES_LIST, "re");
	if (!f)
		return 0; /* a kernel with built-in drivers */
	char line[640];
	int n = 0, loaded = 0;
	while (n < MAX_MODULES && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = 0;
		if (!line[0] || line[0] == '#')
			continue;
		/* NAME PATH DEPS ("-" for none) */
		if (sscanf(line, "%63s %255s %255s", m[n].name, m[n].path, m[n].deps) != 3)
			continue;
		if (!strcmp(m[n].deps, "-"))
			m[n].deps[0] = 0;
		m[n].want = !wanted || !wanted[0] || in_list(wanted, m[n].name);
		n++;
	}
	fclose(f);
	/* The list is in load order, so each module comes after its
	 * dependencies: walking it backwards, a wanted module makes its
	 * dependencies wanted before they are reached. */
	for (int i = n - 1; i >= 0; i--)
		if (m[i].want)
			for (int j = 0; j < i; j++)
				if (in_list(m[i].deps, m[j].name))
					m[j].want = true;
	for (int i = 0; i < n; i++) {
		if (!m[i].want)
			continue;
		int fd = open(m[i].path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			agent_log("module %s: %s", m[i].path, strerror(errno));
			continue;
		}
		if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
			agent_log("module %s: %s", m[i].name, strerror(errno));
		else
			loaded++;
		close(fd);
	}
	return loaded;
}

/* Wait (bounded) until path exists. */
static int wait_path(const char *path, long ms)
{
	struct stat st;
	for (long waited = 0;; waited += 10) {
		if (stat(path, &st) == 0)
			return 0;
		if (waited >= ms)
			return -1;
		sleep_ms(10);
	}
}

/* Delete everything on the initramfs (the device of "/"), not crossing into
 * other mounts, so its memory is freed (switch_root does the same). */
static void remove_tree(int dirfd, dev_t rootdev)
{
	DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (st.st_dev != rootdev)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (sub >= 0)
				remove_tree(sub, rootdev);
			unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dirfd, e->d_name, 0);
		}
	}
	closedir(d);
}

int init_switch_root(const struct init_cmdline *c)
{
	static const char *const moved[] = {"/dev", "/proc", "/sys"};
	char target[64];
	if (!c->root[0])
		return -1;
	if (wait_path(c->root, 5000) < 0) {
		agent_log("root disk %s did not appear within 5 s", c->root);
		return -1;
	}
	mkdir("/newroot", 0755);
	unsigned long flags = MS_NOATIME | (c->ro ? MS_RDONLY : 0);
	if (mount(c->root, "/newroot", c->rootfstype, flags, NULL) < 0) {
		agent_log("mount %s (%s) on /newroot: %s", c->root, c->rootfstype, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
		snprintf(target, sizeof(target), "/newroot%s", moved[i]);
		mkdir(target, 0755);
		if (mount(moved[i], target, NULL, MS_MOVE, NULL) < 0) {
			agent_log("move %s to the new root: %s", moved[i], strerror(errno));
			/* the new root may be read-only without the directory: mount
			 * nothing there; the old mount is lost with the initramfs */
		}
	}
	struct statfs sfs;
	struct stat rootst;
	if (statfs("/", &sfs) == 0 &&
	    ((unsigned long)sfs.f_type == (unsigned long)RAMFS_MAGIC ||
	     (unsigned long)sfs.f_type == (unsigned long)TMPFS_MAGIC) &&
	    stat("/", &rootst) == 0) {
		int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0)
			remove_tree(fd, rootst.st_dev);
	}
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0) {
		agent_log("switch to the new root: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void init_late_mounts(const struct init_cmdline *c)
{
	struct stat st;
	try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
	try_mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	if (stat("/run", &st) == 0 && S_ISDIR(st.st_mode))
		try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	symlink("/proc/self/fd", "/dev/fd");
	symlink("/proc/self/fd/0", "/dev/stdin");
	symlink("/proc/self/fd/1", "/dev/stdout");
	symlink("/proc/self/fd/2", "/dev/stderr");
	for (int i = 0; i < c->nmounts; i++) {
		char why[256];
		if (init_mount_disk(c->mounts[i].dev, c->mounts[i].path, c->mounts[i].fstype, false,
				    5000, why, sizeof(why)) < 0)
			agent_log("%s", why);
	}
}

/* ext2/3/4 superblock: at byte 1024; magic at 0x38, UUID at 0x68, label at
 * 0x78 (16 bytes, NUL-padded). */
static bool sb_matches(const char *devpath, const char *label, const unsigned char *uuid)
{
	unsigned char sb[1024];
	int fd = open(devpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = pread(fd, sb, sizeof(sb), 1024);
	close(fd);
	if (n != (ssize_t)sizeof(sb) || sb[0x38] != 0x53 || sb[0x39] != 0xef)
		return false;
	if (label) {
		char l[17];
		memcpy(l, sb + 0x78, 16);
		l[16] = 0;
		return strcmp(l, label) == 0;
	}
	return memcmp(sb + 0x68, uuid, 16) == 0;
}

static int parse_uuid(const char *s, unsigned char out[16])
{
	int k = 0;
	for (const char *p = s; *p; p++) {
		if (*p == '-')
			continue;
		int hi = *p, lo = p[1];
		if (!lo || k == 16)
			return -1;
		char pair[3] = {(char)hi, (char)lo, 0};
		char *end;
		long v = strtol(pair, &end, 16);
		if (*end)
			return -1;
		out[k++] = (unsigned char)v;
		p++;
	}
	return k == 16 ? 0 : -1;
}

/* LABEL=/UUID= to /dev/NAME of a whole disk or partition; 0 or -1. */
static int find_by_sb(const char *spec, char *out, size_t outlen)
{
	const char *label = NULL;
	unsigned char uuid[16];
	if (!strncmp(spec, "LABEL=", 6))
		label = spec + 6;
	else if (strncmp(spec, "UUID=", 5) != 0 || parse_uuid(spec + 5, uuid) < 0)
		return -1;
	DIR *d = opendir("/sys/class/block");
	if (!d)
		return -1;
	struct dirent *e;
	int rc = -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[300];
		snprintf(p, sizeof(p), "/dev/%s", e->d_name);
		if (sb_matches(p, label, uuid)) {
			snprintf(out, outlen, "%s", p);
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

int init_mkdir_parents(const char *path)
{
	char p[4096];
	if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	if (mkdir(p, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int init_mount_disk(const char *dev, const char *path, const char *fstype, bool ro, long wait_ms,
		    char *why, size_t whylen)
{
	char devpath[300];
	bool by_sb = !strncmp(dev, "LABEL=", 6) || !strncmp(dev, "UUID=", 5);
	if (path[0] != '/') {
		snprintf(why, whylen, "mount point '%s' is not an absolute path", path);
		return -EINVAL;
	}
	for (long waited = 0;; waited += 20) {
		struct stat st;
		if (by_sb ? find_by_sb(dev, devpath, sizeof(devpath)) == 0
			  : (snprintf(devpath, sizeof(devpath), "%s", dev), stat(dev, &st) == 0))
			break;
		if (waited >= wait_ms) {
			snprintf(why, whylen, "disk '%s' did not appear within %ld ms", dev, wait_ms);
			return -ENOENT;
		}
		sleep_ms(20);
	}
	if (init_mkdir_parents(path) < 0) {
		int e = errno;
		snprintf(why, whylen, "cannot create the mount point '%s': %s", path, strerror(e));
		return -e;
	}
	if (mount(devpath, path, fstype && *fstype ? fstype : "ext4",
		  MS_NOATIME | (ro ? MS_RDONLY : 0), NULL) < 0) {
		int e = errno;
		snprintf(why, whylen, "mount %s on '%s': %s", devpath, path, strerror(e));
		return -e;
	}
	return 0;
}

/* 0, or -1 when the name does not fit (the kernel's limit is IFNAMSIZ). */
static int set_ifname(struct ifreq *ifr, const char *name)
{
	size_t n = strlen(name);
	memset(ifr, 0, sizeof(*ifr));
	if (n >= sizeof(ifr->ifr_name)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(ifr->ifr_name, name, n);
	return 0;
}

static int if_up(int s, const char *name, int mtu)
{
	struct ifreq ifr;
	if (set_ifname(&ifr, name) < 0)
		return -1;
	if (mtu > 0) {
		ifr.ifr_mtu = mtu;
		if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
			agent_log("%s: mtu %d: %s", name, mtu, strerror(errno));
	}
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr = a;
	memcpy(sa, &sin, sizeof(sin));
}

void init_network(const struct init_cmdline *c)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		agent_log("socket: %s", strerror(errno));
		return;
	}
	if (if_up(s, "lo", 0) < 0)
		agent_log("lo up: %s", strerror(errno));
	if (c->hostname[0] && sethostname(c->hostname, strlen(c->hostname)) < 0)
		agent_log("hostname: %s", strerror(errno));
	if (!c->ip[0])
		goto out;

	char addr[64];
	snprintf(addr, sizeof(addr), "%s", c->ip);
	int prefix = 24;
	char *slash = strchr(addr, '/');
	if (slash) {
		*slash = 0;
		prefix = atoi(slash + 1);
	}
	struct in_addr a, gw, mask;
	if (inet_pton(AF_INET, addr, &a) != 1 || prefix < 0 || prefix > 32) {
		agent_log("banger.ip: bad address '%s'", c->ip);
		goto out;
	}
	mask.s_addr = prefix ? htonl(0xffffffffu << (32 - prefix)) : 0;
	char path[96];
	snprintf(path, sizeof(path), "/sys/class/net/%s", c->iface);
	if (wait_path(path, 3000) < 0) {
		agent_log("interface %s did not appear within 3 s", c->iface);
		goto out;
	}
	struct ifreq ifr;
	if (set_ifname(&ifr, c->iface) < 0) {
		agent_log("banger.ip: interface name '%s' too long", c->iface);
		goto out;
	}
	set_sin(&ifr.ifr_addr, a);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
		agent_log("%s: address: %s", c->iface, strerror(errno));
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
		agent_log("%s: netmask: %s", c->iface, strerror(errno));
	if (if_up(s, c->iface, c->mtu) < 0)
		agent_log("%s up: %s", c->iface, strerror(errno));
	if (c->gw[0]) {
		if (inet_pton(AF_INET, c->gw, &gw) != 1) {
			agent_log("banger.ip: bad gateway '%s'", c->gw);
			goto out;
		}
		struct rtentry rt;
		struct in_addr any = {0};
		memset(&rt, 0, sizeof(rt));
		set_sin(&rt.rt_dst, any);
		set_sin(&rt.rt_genmask, any);
		set_sin(&rt.rt_gateway, gw);
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = (char *)c->iface;
		if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
			agent_log("default route via %s: %s", c->gw, strerror(errno));
	}
	if (c->dns[0]) {
		FILE *f = fopen("/etc/resolv.conf", "we");
		if (f) {
			fprintf(f, "nameserver %s\n", c->dns);
			fclose(f);
		}
	}
out:
	close(s);
}

static void reap_for(long ms)
{
	for (long waited = 0; waited < ms; waited += 20) {
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
		if (kill(-1, 0) < 0 && errno == ESRCH)
			return; /* nobody left */
		sleep_ms(20);
	}
}

void init_poweroff(void)
{
	sync();
	kill(-1, SIGTERM);
	reap_for(1000);
	kill(-1, SIGKILL);
	reap_for(500);
	sync();
	/* Best effort: unmount other disks, make the root read-only. */
	FILE *f = fopen("/proc/mounts", "re");
	if (f) {
		char dev[256], dir[256];
		char tail[256];
		while (fscanf(f, "%255s %255s %255[^\n]", dev, dir, tail) == 3)
			if (!strncmp(dev, "/dev/vd", 7) && strcmp(dir, "/") != 0)
				umount2(dir, MNT_DETACH);
		fclose(f);
	}
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	sync();
	reboot(RB_POWER_OFF);
	/* Without a way to power off, a reboot makes QEMU (-no-reboot) exit. */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}
