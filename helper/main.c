/*
 * main.c: banger-helper, the small root process that performs banger's
 * privileged steps for bangerd (docs/privileges.md).
 *
 *   banger-helper [--config FILE] [--runtime-dir DIR] [--state-dir DIR] [--check]
 *
 * Start-up, in this order, before any thread exists: load and check the
 * install config (owner_uid is required); open the runtime and state
 * directories refusing symlinks in every component (creating them owned by
 * the owner when missing) and hold them open; bind the socket as the owner
 * (setfsuid) with umask 0177 so that it is born 0600 and owner-owned; then
 * accept.  Each accepted connection is checked with SO_PEERCRED (owner or
 * root, else refused and logged) and served by its own thread (server.c).
 * SIGTERM/SIGINT: stop accepting, let requests in flight finish (5 s at
 * most), remove the socket, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "failpoint.h"
#include "helper.h"
#include "log.h"
#include "proto.h"
#include "util.h"

struct helper H = {.runtime_fd = -1, .state_fd = -1};

static int listen_fd = -1;
static atomic_bool stopping;
static ino_t sock_ino;

static void usage(FILE *f)
{
	fputs("usage: banger-helper [--config FILE] [--runtime-dir DIR] [--state-dir DIR] [--check]\n"
	      "\n"
	      "banger's root helper: performs banger's privileged steps (taps, bridge, NAT,\n"
	      "loop and dm devices, signals, chown) for the owner user named in the install\n"
	      "config, and refuses everything else.  See docs/privileges.md.\n"
	      "\n"
	      "  --config FILE       install config (default: $BANGER_CONFIG, /etc/banger/banger.yaml)\n"
	      "  --runtime-dir DIR   override runtime_dir (the socket lives here)\n"
	      "  --state-dir DIR     override state_dir\n"
	      "  --check             check the config and the directories, then exit\n",
	      f);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("banger-helper: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/*
 * Open one of banger's directories, creating it (and missing parents, root
 * 0755) when absent; the directory itself must end up owned by the owner and
 * not writable by group or others.  Symlinks in any component are refused.
 */
static int prepare_dir(const char *what, const char *path, int *out)
{
	char err[512];
	int fd;
	int rc = sp_open_abs_dir(path, &fd, err, sizeof(err));
	if (rc == BG_ERR_NOENT) {
		char *parent = xstrdup(path);
		*strrchr(parent, '/') = '\0';
		if (*parent)
			mkdir_p(parent, 0755);
		free(parent);
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			die("cannot create %s '%s': %s", what, path, strerror(errno));
		rc = sp_open_abs_dir(path, &fd, err, sizeof(err));
		if (rc == 0) {
			struct stat st;
			/* just made by us, 0700 root: nobody else can have swapped it */
			if (fstat(fd, &st) == 0 && st.st_uid == 0 &&
			    fchownat(fd, "", H.owner_uid, H.owner_gid, AT_EMPTY_PATH) < 0)
				die("cannot give %s '%s' to uid %u: %s", what, path,
				    (unsigned)H.owner_uid, strerror(errno));
		}
	}
	if (rc)
		die("%s '%s': %s", what, path, err);
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("%s '%s': %s", what, path, strerror(errno));
	if (st.st_uid != H.owner_uid)
		die("%s '%s' is owned by uid %u, not by the owner (uid %u): chown it, or remove it "
		    "and let banger-helper create it",
		    what, path, (unsigned)st.st_uid, (unsigned)H.owner_uid);
	if (st.st_mode & 022)
		die("%s '%s' is writable by group or others (mode %04o)", what, path,
		    (unsigned)(st.st_mode & 07777));
	*out = fd;
	return 0;
}

/* Bind the socket inside the runtime directory as the owner (fsuid): the
 * kernel creates it owner-owned, 0600 (umask), and the path is resolved with
 * the owner's rights only. */
static void bind_socket(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, HP_SOCKET_NAME, sizeof(HP_SOCKET_NAME));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (fchdir(H.runtime_fd) < 0)
		die("cannot enter runtime_dir '%s': %s", H.pol.runtime_dir, strerror(errno));
	mode_t old = umask(0177);
	setfsgid(H.owner_gid);
	setfsuid(H.owner_uid);

	/* Someone serving already?  Then leave their socket alone. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		die("another banger-helper is already listening on '%s'", H.sock_path);
	if (probe >= 0)
		close(probe);
	if (unlinkat(AT_FDCWD, HP_SOCKET_NAME, 0) < 0 && errno != ENOENT)
		die("cannot remove stale socket '%s': %s", H.sock_path, strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind '%s': %s", H.sock_path, strerror(errno));

	setfsuid(0);
	setfsgid(0);
	umask(old);
	if (chdir("/") < 0)
		die("chdir /: %s", strerror(errno));
	struct stat st;
	if (fstatat(H.runtime_fd, HP_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISSOCK(st.st_mode) || st.st_uid != H.owner_uid || (st.st_mode & 0177))
		die("socket '%s' did not come out owner-owned and 0600", H.sock_path);
	sock_ino = st.st_ino;
	if (listen(fd, 256) < 0)
		die("listen: %s", strerror(errno));
	listen_fd = fd;
}

static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;
	while (sigwait(set, &sig) == 0) {
		if (sig == SIGTERM || sig == SIGINT) {
			log_info(NULL, 0, "signal %d: stopping", sig);
			atomic_store(&stopping, true);
			shutdown(listen_fd, SHUT_RDWR);
			return NULL;
		}
	}
	return NULL;
}

/* Remove our socket, but only if it is still the one we bound. */
static void remove_socket(void)
{
	struct stat st;
	if (fstatat(H.runtime_fd, HP_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_ino == sock_ino && S_ISSOCK(st.st_mode))
		unlinkat(H.runtime_fd, HP_SOCKET_NAME, 0);
}

int main(int argc, char **argv)
{
	const char *config = NULL, *runtime_dir = NULL, *state_dir = NULL;
	bool check = false;
	char *errmsg = NULL;

	log_set_ident("banger-helper");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = !strcmp(a, "--config")        ? &config
				    : !strcmp(a, "--runtime-dir") ? &runtime_dir
				    : !strcmp(a, "--state-dir")   ? &state_dir
								  : NULL;
		if (slot) {
			if (i + 1 >= argc) {
				fprintf(stderr, "banger-helper: %s needs a value\n", a);
				return 2;
			}
			*slot = argv[++i];
		} else if (!strcmp(a, "--check")) {
			check = true;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "banger-helper: unknown argument '%s'\n\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (geteuid() != 0)
		die("must run as root (it performs banger's privileged steps for bangerd)");
	if (failpoint_init(&errmsg))
		die("BANGER_FAILPOINTS: %s", errmsg);
	if (config_load(config, &H.cfg, &errmsg))
		die("%s", errmsg);
	if (runtime_dir) {
		free(H.cfg.runtime_dir);
		H.cfg.runtime_dir = xstrdup(runtime_dir);
	}
	if (state_dir) {
		free(H.cfg.state_dir);
		H.cfg.state_dir = xstrdup(state_dir);
	}
	if (H.cfg.owner_uid < 0)
		die("%s: 'owner_uid' is not set: banger-helper serves root and the owner user "
		    "only (`banger system install --owner USER` writes it)",
		    H.cfg.path ? H.cfg.path : "config");
	H.owner_uid = (uid_t)H.cfg.owner_uid;
	H.owner_gid = (gid_t)H.cfg.owner_gid;
	H.nat = H.cfg.nat;
	H.nat_iptables = !strcmp(H.cfg.nat_backend, "iptables");
	if (proto_policy_init(&H.pol, &H.cfg, &errmsg))
		die("%s: %s", H.cfg.path ? H.cfg.path : "config", errmsg);
	if (log_init(H.cfg.log_level, 2))
		die("bad log level");
	prepare_dir("runtime_dir", H.pol.runtime_dir, &H.runtime_fd);
	prepare_dir("state_dir", H.pol.state_dir, &H.state_fd);
	H.sock_path = xasprintf("%s/%s", H.pol.runtime_dir, HP_SOCKET_NAME);
	if (strlen(H.sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		die("socket path '%s' is too long for a Unix socket", H.sock_path);
	if (check) {
		printf("config %s: ok (owner uid %u, bridge %s, range %s, nat %s)\n",
		       H.cfg.path ? H.cfg.path : "(defaults)", (unsigned)H.owner_uid, H.pol.bridge,
		       H.cfg.net_range, H.nat ? H.cfg.nat_backend : "off");
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	bind_socket();
	pthread_t st;
	if (pthread_create(&st, NULL, signal_thread, &set) != 0)
		die("cannot start the signal thread");
	pthread_detach(st);

	log_info(NULL, 0, "banger-helper %d listening on %s for uid %u and root", (int)getpid(),
		 H.sock_path, (unsigned)H.owner_uid);
	server_run(listen_fd, &stopping);
	server_drain(5000);
	remove_socket();
	log_info(NULL, 0, "banger-helper stopped");
	return 0;
}
