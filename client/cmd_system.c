/*
 * cmd_system.c: `banger system install`: writes what a host needs to run
 * banger as a service: the install config (/etc/banger/banger.yaml, which
 * names the owner user banger-helper serves), the systemd units of bangerd
 * (the owner, no capabilities) and banger-helper (root, a bounded capability
 * set), and a tmpfiles.d entry for the owner's directories.
 *
 * The units are conf/bangerd.service and conf/banger-helper.service, embedded
 * at build time (mk/helper.mk) and adjusted for the owner, the directories
 * and the binary directory given here.  The config text is checked with the
 * same loader bangerd and the helper use before anything is written.
 * --root DIR writes under DIR instead of / (packaging, tests); --dry-run
 * prints every file and writes nothing.  Starting the services is left to
 * the administrator (the command prints how).
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd.h"
#include "config.h"
#include "err.h"
#include "helper_units.h"
#include "util.h"

enum {
	SI_OWNER,
	SI_ROOT,
	SI_BIN_DIR,
	SI_STATE_DIR,
	SI_RUNTIME_DIR,
	SI_BRIDGE,
	SI_NET_RANGE,
	SI_NAT_BACKEND,
	SI_NO_NAT,
	SI_DRY_RUN,
	SI_FORCE,
};

static const struct args_opt install_opts[] = {
	[SI_OWNER] = {"owner", 0, "USER", "the user bangerd runs as and banger-helper serves "
					  "(default: $SUDO_USER, else you)"},
	[SI_ROOT] = {"root", 0, "DIR", "write under DIR instead of / (default /)"},
	[SI_BIN_DIR] = {"bin-dir", 0, "DIR", "where bangerd and banger-helper are installed "
					     "(default /usr/local/bin)"},
	[SI_STATE_DIR] = {"state-dir", 0, "DIR", "state directory (default /var/lib/banger)"},
	[SI_RUNTIME_DIR] = {"runtime-dir", 0, "DIR", "runtime directory (default /run/banger)"},
	[SI_BRIDGE] = {"bridge", 0, "NAME", "banger's bridge (default bgbr0)"},
	[SI_NET_RANGE] = {"net-range", 0, "CIDR", "the guests' IPv4 range (default 10.213.0.0/24)"},
	[SI_NAT_BACKEND] = {"nat-backend", 0, "nft|iptables", "how NAT rules are made (default nft)"},
	[SI_NO_NAT] = {"no-nat", 0, NULL, "give guests no way out (nat: false)"},
	[SI_DRY_RUN] = {"dry-run", 'n', NULL, "print the files, write nothing"},
	[SI_FORCE] = {"force", 'f', NULL, "replace an existing install config that differs"},
	{NULL, 0, NULL, NULL},
};

/* The owner: a user name or a numeric uid.  Fills names for User=/Group=. */
static int resolve_owner(const char *spec, uid_t *uid, gid_t *gid, char **user, char **group)
{
	struct passwd *pw = NULL;
	char *end;
	errno = 0;
	unsigned long v = strtoul(spec, &end, 10);
	bool numeric = *spec && !*end && errno == 0 && v < 4294967295UL;
	pw = numeric ? getpwuid((uid_t)v) : getpwnam(spec);
	if (!pw && !numeric) {
		cli_error("system install: no user '%s' (create it first, e.g. useradd --system "
			  "--create-home %s)",
			  spec, spec);
		return CLI_EXIT_USAGE;
	}
	*uid = pw ? pw->pw_uid : (uid_t)v;
	*gid = pw ? pw->pw_gid : (gid_t)v;
	*user = pw ? xstrdup(pw->pw_name) : xasprintf("%lu", v);
	struct group *gr = getgrgid(*gid);
	*group = gr ? xstrdup(gr->gr_name) : xasprintf("%u", (unsigned)*gid);
	return 0;
}

/* s with every "from" replaced by "to"; the caller frees. */
static char *replace_all(const char *s, const char *from, const char *to)
{
	struct sb sb;
	size_t fl = strlen(from);
	sb_init(&sb);
	for (const char *p = s;;) {
		const char *q = strstr(p, from);
		if (!q) {
			sb_adds(&sb, p);
			break;
		}
		sb_add(&sb, p, (size_t)(q - p));
		sb_adds(&sb, to);
		p = q + fl;
	}
	return sb_detach(&sb);
}

static char *subst(const char *unit, const char *const pairs[][2], size_t n)
{
	char *cur = xstrdup(unit);
	for (size_t i = 0; i < n; i++) {
		char *next = replace_all(cur, pairs[i][0], pairs[i][1]);
		free(cur);
		cur = next;
	}
	return cur;
}

static bool abs_dir_ok(const char *what, const char *d)
{
	if (d[0] != '/' || strstr(d, "//") || strstr(d, "/../") || strstr(d, "/./") ||
	    (strlen(d) > 1 && d[strlen(d) - 1] == '/') || strchr(d, ' ') || strchr(d, '\n')) {
		cli_error("system install: %s '%s' must be an absolute, normalized path without "
			  "spaces",
			  what, d);
		return false;
	}
	return true;
}

/* Check the config text with the loader the daemon and the helper use. */
static int check_config(const char *text)
{
	char tmp[] = "/tmp/banger-install-XXXXXX";
	int fd = mkstemp(tmp);
	if (fd < 0) {
		cli_error("system install: cannot check the config: %s", strerror(errno));
		return CLI_EXIT_FAIL;
	}
	size_t n = strlen(text);
	bool ok = write(fd, text, n) == (ssize_t)n;
	close(fd);
	struct bg_config c;
	char *err = NULL;
	int rc = ok ? config_load(tmp, &c, &err) : BG_ERR_IO;
	unlink(tmp);
	if (rc) {
		char *shown = err ? replace_all(err, tmp, "banger.yaml") : xstrdup(bg_strerror(rc));
		cli_error("system install: the install config would be invalid:\n%s", shown);
		free(shown);
		free(err);
		return CLI_EXIT_USAGE;
	}
	config_release(&c);
	return 0;
}

struct out_file {
	const char *path; /* below the root */
	char *text;
	unsigned mode;
	bool is_config;
};

static int write_one(const char *root, const struct out_file *f, bool force)
{
	char *full = xasprintf("%s%s", strcmp(root, "/") ? root : "", f->path);
	char *dir = xstrdup(full);
	char *old = NULL;
	size_t oldlen;
	int st = 0;
	*strrchr(dir, '/') = '\0';
	if (read_file(full, 1 << 20, &old, &oldlen) == 0) {
		if (oldlen == strlen(f->text) && memcmp(old, f->text, oldlen) == 0) {
			printf("unchanged %s\n", full);
			goto out;
		}
		if (f->is_config && !force) {
			cli_error("system install: %s exists and differs: use --force to replace it",
				  full);
			st = CLI_EXIT_FAIL;
			goto out;
		}
	}
	int rc = mkdir_p(dir, 0755);
	if (rc == 0)
		rc = write_file_atomic(full, f->text, strlen(f->text), f->mode);
	if (rc) {
		cli_error("system install: cannot write %s: %s", full, bg_strerror(rc));
		st = CLI_EXIT_FAIL;
		goto out;
	}
	chmod(full, f->mode);
	printf("wrote %s\n", full);
out:
	free(old);
	free(dir);
	free(full);
	return st;
}

static bool under_home(const char *d)
{
	return !strncmp(d, "/home/", 6) || !strncmp(d, "/root/", 6) || !strcmp(d, "/root");
}

static int install_run(struct cli *cli, const struct args *a)
{
	const char *owner = a->val[SI_OWNER];
	const char *root = a->val[SI_ROOT] ? a->val[SI_ROOT] : "/";
	const char *bin = a->val[SI_BIN_DIR] ? a->val[SI_BIN_DIR] : "/usr/local/bin";
	const char *state = a->val[SI_STATE_DIR] ? a->val[SI_STATE_DIR] : "/var/lib/banger";
	const char *run = a->val[SI_RUNTIME_DIR] ? a->val[SI_RUNTIME_DIR] : "/run/banger";
	const char *bridge = a->val[SI_BRIDGE] ? a->val[SI_BRIDGE] : "bgbr0";
	const char *range = a->val[SI_NET_RANGE] ? a->val[SI_NET_RANGE] : "10.213.0.0/24";
	const char *backend = a->val[SI_NAT_BACKEND] ? a->val[SI_NAT_BACKEND] : "nft";
	bool dry = a->val[SI_DRY_RUN] != NULL, force = a->val[SI_FORCE] != NULL;
	char *user = NULL, *group = NULL, ownerbuf[32];
	uid_t uid;
	gid_t gid;
	int st;

	if (!owner) {
		owner = getenv("SUDO_USER");
		if (!owner || !*owner) {
			snprintf(ownerbuf, sizeof(ownerbuf), "%u", (unsigned)getuid());
			owner = ownerbuf;
		}
	}
	if (!abs_dir_ok("--root", root) || !abs_dir_ok("--bin-dir", bin) ||
	    !abs_dir_ok("--state-dir", state) || !abs_dir_ok("--runtime-dir", run))
		return CLI_EXIT_USAGE;
	if ((st = resolve_owner(owner, &uid, &gid, &user, &group)))
		return st;
	if (uid == 0) {
		cli_error("system install: the owner must not be root: bangerd runs unprivileged "
			  "(pass --owner USER)");
		st = CLI_EXIT_USAGE;
		goto out;
	}

	char *config = xasprintf(
		"# banger install config, written by `banger system install`.\n"
		"# banger-helper serves root and owner_uid only, and acts only on the\n"
		"# directories, bridge and range below (docs/privileges.md).\n"
		"owner_uid: %u\n"
		"owner_gid: %u\n"
		"state_dir: %s\n"
		"runtime_dir: %s\n"
		"bridge: %s\n"
		"net_range: %s\n"
		"nat: %s\n"
		"nat_backend: %s\n",
		(unsigned)uid, (unsigned)gid, state, run, bridge, range,
		a->val[SI_NO_NAT] ? "false" : "true", backend);
	if ((st = check_config(config))) {
		free(config);
		goto out;
	}
	char *bin_slash = xasprintf("%s/", bin);
	char *user_line = xasprintf("User=%s", user), *group_line = xasprintf("Group=%s", group);
	const char *home = under_home(state) || under_home(run) ? "ProtectHome=no"
								  : NULL;
	const char *const pairs[][2] = {
		{"/usr/local/bin/", bin_slash},   {"/var/lib/banger", state},
		{"/run/banger", run},             {"User=banger", user_line},
		{"Group=banger", group_line},
		{"ProtectHome=yes", home ? home : "ProtectHome=yes"},
		{"ProtectHome=read-only", home ? home : "ProtectHome=read-only"},
	};
	char *tmpfiles = xasprintf("# banger's directories, owned by its owner "
				   "(written by `banger system install`)\n"
				   "d %s 0700 %s %s -\n"
				   "d %s 0700 %s %s -\n",
				   state, user, group, run, user, group);
	struct out_file files[] = {
		{"/etc/banger/banger.yaml", config, 0644, true},
		{"/etc/systemd/system/bangerd.service", subst(unit_bangerd, pairs, ARRAY_LEN(pairs)),
		 0644, false},
		{"/etc/systemd/system/banger-helper.service",
		 subst(unit_banger_helper, pairs, ARRAY_LEN(pairs)), 0644, false},
		{"/etc/tmpfiles.d/banger.conf", tmpfiles, 0644, false},
	};
	for (size_t i = 0; i < ARRAY_LEN(files) && !st; i++) {
		if (dry)
			printf("==> %s%s (mode %04o) <==\n%s\n", strcmp(root, "/") ? root : "",
			       files[i].path, files[i].mode, files[i].text);
		else
			st = write_one(root, &files[i], force);
	}
	if (!st && !dry && !strcmp(root, "/"))
		printf("\nnext: install bangerd and banger-helper into %s, then\n"
		       "  systemctl daemon-reload\n"
		       "  systemctl enable --now banger-helper.service bangerd.service\n",
		       bin);
	for (size_t i = 0; i < ARRAY_LEN(files); i++)
		free(files[i].text);
	free(bin_slash);
	free(user_line);
	free(group_line);
out:
	free(user);
	free(group);
	return st;
}

const struct args_cmd cmd_system_install = {
	.name = "system install",
	.synopsis = "[--owner USER] [--root DIR] [--dry-run]",
	.summary = "Write the install config and the systemd units of bangerd and banger-helper.",
	.details = "Writes /etc/banger/banger.yaml (the owner user banger-helper serves, the\n"
		   "directories, bridge and address range it may act on),\n"
		   "/etc/systemd/system/bangerd.service (runs as the owner, no capabilities),\n"
		   "/etc/systemd/system/banger-helper.service (root, a bounded capability set)\n"
		   "and /etc/tmpfiles.d/banger.conf.  Starts nothing.  See docs/privileges.md.",
	.opts = install_opts,
	.min_pos = 0,
	.max_pos = 0,
	.run = install_run,
};
