/*
 * init.h: what banger-agent does as the guest's PID 1 before it serves
 * requests (guest/init.c): early mounts, the kernel command line, module
 * loading, mounting the root disk and switching into it, the network.
 *
 * Kernel command line parameters (all optional; dotted names are never
 * passed to init as arguments or environment by the kernel):
 *   banger.root=/dev/vda        root disk; absent: stay in the initramfs
 *   banger.rootfstype=ext4      its filesystem (default ext4)
 *   banger.ro=1                 mount it read-only
 *   banger.mount=DEV:PATH[:FS]  another disk (e.g. the workspace); repeatable
 *   banger.ip=ADDR/PREFIX[,GW[,IFACE]]   static IPv4 (IFACE default eth0)
 *   banger.mtu=N                that interface's MTU
 *   banger.dns=ADDR             written to /etc/resolv.conf when possible
 *   banger.hostname=NAME
 *   banger.port=NAME            virtio-serial port name (default banger.agent)
 *   banger.modules=A,B          load only these modules (and what they need)
 *                               from the initramfs; absent: all of them
 *   banger.probe=1              print AP_PROBE_MARKER and power off at once
 *                               (the QEMU driver's "can KVM boot this?" probe)
 * Single-threaded; every step logs its failure to the console and goes on
 * when the guest can still be useful without it.
 */
#ifndef BANGER_GUEST_INIT_H
#define BANGER_GUEST_INIT_H

#include <stdbool.h>
#include <stddef.h>

#define AGENT_MODULES_LIST "/lib/banger/modules.list"
#define AGENT_MAX_MOUNTS 8

struct init_cmdline {
	char root[128];
	char rootfstype[32];
	bool ro;
	char ip[64];     /* ADDR/PREFIX */
	char gw[64];
	char iface[32];
	int mtu;
	char dns[64];
	char hostname[64];
	char port[64];
	char modules[256]; /* banger.modules= */
	bool probe;
	int nmounts;
	struct {
		char dev[128], path[128], fstype[32];
	} mounts[AGENT_MAX_MOUNTS];
};

/* printf-style line to the console, prefixed "banger-agent: ". */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Mount /proc, /sys, /dev (devtmpfs) and put fds 0-2 on /dev/console. */
void init_early(void);
/* Parse a command line (the contents of /proc/cmdline). */
void init_parse_cmdline(const char *line, struct init_cmdline *c);
/* finit_module the modules of AGENT_MODULES_LIST ("NAME PATH DEPS" lines,
 * in load order): those named in wanted (comma-separated) and what they
 * depend on, or all of them when wanted is NULL or empty.  Returns how many
 * are loaded. */
int init_load_modules(const char *wanted);
/* Mount the root disk and switch into it, staying PID 1.  0 or -1 (the
 * agent then serves from the initramfs, which has no commands). */
int init_switch_root(const struct init_cmdline *c);
/* /dev/pts, /dev/shm, /dev/fd links, /run: after the switch. */
void init_late_mounts(const struct init_cmdline *c);
/* mkdir -p with mode 0755: 0, or -1 with errno (ENAMETOOLONG past 4095
 * bytes).  A component that exists as something else is left to the
 * caller's open to report (ENOTDIR). */
int init_mkdir_parents(const char *path);
/*
 * Mount a disk for the workspace (banger.mount= and the MOUNT request).
 * dev is a device path, or LABEL=NAME / UUID=UUID of an ext2/3/4 disk
 * (found by reading the superblock of each disk under /sys/class/block: no udev
 * or blkid in the guest); waits up to wait_ms for it to appear.  path is
 * created with its parents.  fstype NULL: ext4.  0, or -errno with a
 * message in why (whylen bytes).
 */
int init_mount_disk(const char *dev, const char *path, const char *fstype, bool ro, long wait_ms,
		    char *why, size_t whylen);

/* Loopback up; the banger.ip address and route; DNS; hostname. */
void init_network(const struct init_cmdline *c);
/* sync, SIGTERM then SIGKILL every other process, remount read-only, power
 * off.  Never returns when PID 1. */
void init_poweroff(void) __attribute__((noreturn));
/* Milliseconds since the guest booted (CLOCK_BOOTTIME). */
long long init_uptime_ms(void);

#endif
