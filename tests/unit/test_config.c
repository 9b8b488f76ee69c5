/*
 * test_config.c: unit tests for common/config.c: defaults, file values, where
 * the file is looked for, the environment, and the messages for bad files.
 *
 * Each test starts from a known environment (env_begin) and puts the
 * caller's environment back at the end (env_end).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "test.h"
#include "util.h"

static const char *const env_vars[] = {
	"BANGER_CONFIG",   "BANGER_STATE_DIR", "BANGER_RUNTIME_DIR", "XDG_CONFIG_HOME",
	"XDG_STATE_HOME", "XDG_RUNTIME_DIR",  "HOME",
};
static char *env_saved[ARRAY_LEN(env_vars)];

/* Save the environment, then set a known one: no BANGER_*, XDG dirs under
 * the scratch directory (the config one empty). */
static void env_begin(void)
{
	for (size_t i = 0; i < ARRAY_LEN(env_vars); i++) {
		const char *v = getenv(env_vars[i]);
		env_saved[i] = v ? xstrdup(v) : NULL;
		unsetenv(env_vars[i]);
	}
	char *p = xasprintf("%s/home", test_tmpdir());
	setenv("HOME", p, 1);
	free(p);
	p = xasprintf("%s/no-config", test_tmpdir());
	setenv("XDG_CONFIG_HOME", p, 1);
	free(p);
	setenv("XDG_STATE_HOME", "/tmp/xdg-state-test", 1);
	setenv("XDG_RUNTIME_DIR", "/tmp/xdg-run-test", 1);
}

static void env_end(void)
{
	for (size_t i = 0; i < ARRAY_LEN(env_vars); i++) {
		if (env_saved[i])
			setenv(env_vars[i], env_saved[i], 1);
		else
			unsetenv(env_vars[i]);
		free(env_saved[i]);
		env_saved[i] = NULL;
	}
}

/* True when the machine's own /etc file would be read (running as root). */
static bool etc_config_exists(void)
{
	return geteuid() == 0 && access("/etc/banger/banger.yaml", F_OK) == 0;
}

static bool all_zero(const struct bg_config *c)
{
	static const struct bg_config zero;
	return memcmp(c, &zero, sizeof(zero)) == 0;
}

/* Load file; expect BG_ERR_INVAL, exactly the message want_at (in which
 * each '@' stands for the file's path) and a zeroed struct. */
static void expect_config_error(const char *file, const char *want_at, int line)
{
	struct bg_config c;
	char *err = NULL;
	struct sb want;
	sb_init(&want);
	for (const char *p = want_at; *p; p++) {
		if (*p == '@')
			sb_adds(&want, file);
		else
			sb_add(&want, p, 1);
	}
	int rc = config_load(file, &c, &err);
	if (!test_eq_int(__FILE__, line, "rc", "BG_ERR_INVAL", rc, BG_ERR_INVAL) ||
	    !test_eq_str(__FILE__, line, "err", "want", err, want.buf) ||
	    !all_zero(&c))
		test_fail(__FILE__, line, "config error not as expected");
	free(err);
	sb_release(&want);
}

TEST(config_defaults)
{
	env_begin();
	if (etc_config_exists()) {
		/* this machine has a real config: defaults cannot be observed */
		env_end();
		return;
	}
	struct bg_config c;
	char *err = NULL;
	int rc = config_load(NULL, &c, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	CHECK(c.path == NULL);
	if (geteuid() == 0) {
		CHECK_EQ_STR(c.state_dir, "/var/lib/banger");
		CHECK_EQ_STR(c.runtime_dir, "/run/banger");
	} else {
		CHECK_EQ_STR(c.state_dir, "/tmp/xdg-state-test/banger");
		CHECK_EQ_STR(c.runtime_dir, "/tmp/xdg-run-test/banger");
	}
	CHECK_EQ_STR(c.db, "sqlite");
	CHECK_EQ_INT(c.workers, 4);
	CHECK_EQ_INT(c.max_running, 64);
	CHECK_EQ_INT(c.lease_ttl_us, 30000000);
	CHECK_EQ_INT(c.max_crashes, 3);
	CHECK_EQ_INT(c.drain_timeout_us, 30000000);
	CHECK_EQ_INT(c.retry_base_us, 1000000);
	CHECK_EQ_INT(c.retry_max_us, 300000000);
	CHECK_EQ_INT(c.nkind_limits, 0);
	CHECK_EQ_STR(c.log_level, "info");
	CHECK_EQ_INT(config_kind_limit(&c, "anything"), 0);
	config_release(&c);
	CHECK(all_zero(&c));

	if (geteuid() != 0) {
		/* without XDG: under HOME, and /tmp/banger-UID */
		unsetenv("XDG_STATE_HOME");
		unsetenv("XDG_RUNTIME_DIR");
		CHECK_EQ_INT(config_load(NULL, &c, &err), 0);
		char *want = xasprintf("%s/home/.local/state/banger", test_tmpdir());
		CHECK_EQ_STR(c.state_dir, want);
		free(want);
		want = xasprintf("/tmp/banger-%u", (unsigned)getuid());
		CHECK_EQ_STR(c.runtime_dir, want);
		free(want);
		config_release(&c);
	}
	/* an empty file changes nothing */
	char *path = test_write_file("cfg/empty.yaml", "# nothing\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_STR(c.path, path);
	CHECK_EQ_INT(c.workers, 4);
	config_release(&c);
	free(path);
	env_end();
}

TEST(config_file_values)
{
	env_begin();
	char *path = test_write_file("cfg/full.yaml", "state_dir: /srv/banger/state\n"
						      "runtime_dir: /srv/banger/run\n"
						      "db: postgresql://ci@db/banger\n"
						      "workers: 8\n"
						      "max_running: 200\n"
						      "lease_ttl: 10s\n"
						      "max_crashes: 5\n"
						      "drain_timeout: 1m\n"
						      "retry_base: 2s\n"
						      "retry_max: 10m\n"
						      "kind_limits:\n"
						      "  vm.firecracker: 4\n"
						      "  unit.box: 0\n"
						      "log_level: debug\n");
	struct bg_config c;
	char *err = NULL;
	int rc = config_load(path, &c, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	REQUIRE(rc == 0);
	CHECK_EQ_STR(c.path, path);
	CHECK_EQ_STR(c.state_dir, "/srv/banger/state");
	CHECK_EQ_STR(c.runtime_dir, "/srv/banger/run");
	CHECK_EQ_STR(c.db, "postgresql://ci@db/banger");
	CHECK_EQ_INT(c.workers, 8);
	CHECK_EQ_INT(c.max_running, 200);
	CHECK_EQ_INT(c.lease_ttl_us, 10000000);
	CHECK_EQ_INT(c.max_crashes, 5);
	CHECK_EQ_INT(c.drain_timeout_us, 60000000);
	CHECK_EQ_INT(c.retry_base_us, 2000000);
	CHECK_EQ_INT(c.retry_max_us, 600000000);
	CHECK_EQ_INT(c.nkind_limits, 2);
	CHECK_EQ_INT(config_kind_limit(&c, "vm.firecracker"), 4);
	CHECK_EQ_INT(config_kind_limit(&c, "unit.box"), 0);
	CHECK_EQ_INT(config_kind_limit(&c, "vm"), 0);
	CHECK_EQ_STR(c.log_level, "debug");
	config_release(&c);
	free(path);
	env_end();
}

TEST(config_discovery)
{
	env_begin();
	struct bg_config c;
	char *err = NULL;
	/* $BANGER_CONFIG */
	char *path = test_write_file("cfg/env.yaml", "workers: 7\n");
	setenv("BANGER_CONFIG", path, 1);
	CHECK_EQ_INT(config_load(NULL, &c, &err), 0);
	CHECK_EQ_STR(c.path, path);
	CHECK_EQ_INT(c.workers, 7);
	config_release(&c);
	/* an explicit file wins over $BANGER_CONFIG */
	char *other = test_write_file("cfg/flag.yaml", "workers: 6\n");
	CHECK_EQ_INT(config_load(other, &c, &err), 0);
	CHECK_EQ_INT(c.workers, 6);
	config_release(&c);
	unsetenv("BANGER_CONFIG");
	free(other);
	free(path);
	if (etc_config_exists()) {
		env_end();
		return;
	}
	/* $XDG_CONFIG_HOME/banger/banger.yaml */
	path = test_write_file("xdg/banger/banger.yaml", "workers: 9\n");
	char *xdg = xasprintf("%s/xdg", test_tmpdir());
	setenv("XDG_CONFIG_HOME", xdg, 1);
	CHECK_EQ_INT(config_load(NULL, &c, &err), 0);
	CHECK_EQ_STR(c.path, path);
	CHECK_EQ_INT(c.workers, 9);
	config_release(&c);
	free(path);
	free(xdg);
	/* ~/.config/banger/banger.yaml without XDG_CONFIG_HOME */
	unsetenv("XDG_CONFIG_HOME");
	path = test_write_file("home/.config/banger/banger.yaml", "workers: 11\n");
	CHECK_EQ_INT(config_load(NULL, &c, &err), 0);
	CHECK_EQ_STR(c.path, path);
	CHECK_EQ_INT(c.workers, 11);
	config_release(&c);
	free(path);
	env_end();
}

TEST(config_env_override)
{
	env_begin();
	char *path = test_write_file("cfg/dirs.yaml", "state_dir: /from/file/state\n"
						      "runtime_dir: /from/file/run\n");
	struct bg_config c;
	char *err = NULL;
	setenv("BANGER_STATE_DIR", "/from/env/state", 1);
	setenv("BANGER_RUNTIME_DIR", "/from/env/run", 1);
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_STR(c.state_dir, "/from/env/state");
	CHECK_EQ_STR(c.runtime_dir, "/from/env/run");
	config_release(&c);

	setenv("BANGER_RUNTIME_DIR", "", 1); /* empty: not set */
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_STR(c.runtime_dir, "/from/file/run");
	config_release(&c);

	setenv("BANGER_STATE_DIR", "rel/dir", 1);
	CHECK_EQ_INT(config_load(path, &c, &err), BG_ERR_INVAL);
	CHECK_EQ_STR(err, "BANGER_STATE_DIR: must be an absolute path, got 'rel/dir'");
	CHECK(all_zero(&c));
	free(err);
	free(path);
	env_end();
}

TEST(config_unknown_key)
{
	env_begin();
	char *path = test_write_file("cfg/unknown.yaml", "workers: 2\n"
							 "worker: 4\n"
							 "retry_bas: 1s\n"
							 "frobnicate: 1\n"
							 "workers: 3\n");
	expect_config_error(path,
			    "@:2:1: unknown key 'worker' (did you mean 'workers'?)\n"
			    "@:3:1: unknown key 'retry_bas' (did you mean 'retry_base'?)\n"
			    "@:4:1: unknown key 'frobnicate'\n"
			    "@:5:1: duplicate key 'workers' (first at line 1)",
			    __LINE__);
	free(path);
	env_end();
}

TEST(config_bad_values)
{
	env_begin();
	char *path = test_write_file("cfg/bad.yaml", "workers: 0\n"
						     "max_running: lots\n"
						     "lease_ttl: soon\n"
						     "log_level: infoo\n"
						     "db: mysql://x\n"
						     "state_dir: rel/dir\n"
						     "kind_limits:\n"
						     "  vm: -1\n"
						     "  vm: 2\n"
						     "max_crashes: [1]\n"
						     "drain_timeout: 2d\n"
						     "runtime_dir:\n");
	expect_config_error(
		path,
		"@:1:10: 'workers' must be an integer between 1 and 256, got '0'\n"
		"@:2:14: 'max_running' must be an integer between 1 and 100000, got 'lots'\n"
		"@:3:12: 'lease_ttl' must be a duration such as '30s' or '5m', got 'soon'\n"
		"@:4:12: 'log_level' must be debug, info, warn or error, got 'infoo' (did you mean 'info'?)\n"
		"@:5:5: 'db' must be 'sqlite' or a postgresql:// url, got 'mysql://x'\n"
		"@:6:12: 'state_dir' must be an absolute path, got 'rel/dir'\n"
		"@:8:7: limit for kind 'vm' must be an integer between 0 and 100000, got '-1'\n"
		"@:10:14: 'max_crashes' must be an integer between 1 and 100, got a list\n"
		"@:11:16: 'drain_timeout' must be between 0ms and 24h, got '2d'\n"
		"@:12:13: 'runtime_dir' must be an absolute path, got nothing",
		__LINE__);
	free(path);

	path = test_write_file("cfg/dupkind.yaml", "kind_limits:\n  vm: 1\n  vm: 2\n");
	expect_config_error(path, "@:3:3: duplicate kind 'vm' in 'kind_limits'", __LINE__);
	free(path);

	path = test_write_file("cfg/retry.yaml", "retry_base: 10s\nretry_max: 5s\n");
	expect_config_error(path,
			    "@:2:1: 'retry_max' (5000ms) must not be less than 'retry_base' (10000ms)",
			    __LINE__);
	free(path);

	path = test_write_file("cfg/syntax.yaml", "workers: [1\n");
	expect_config_error(path,
			    "@:2:1: did not find expected ',' or ']' (while parsing a flow sequence)",
			    __LINE__);
	free(path);

	path = test_write_file("cfg/list.yaml", "- workers\n");
	expect_config_error(path, "@:1:1: the config must be a mapping of settings, got a list",
			    __LINE__);
	free(path);
	env_end();
}

TEST(config_missing_file)
{
	env_begin();
	struct bg_config c;
	char *err = NULL;
	CHECK_EQ_INT(config_load("/nonexistent/banger.yaml", &c, &err), BG_ERR_NOENT);
	CHECK_EQ_STR(err, "/nonexistent/banger.yaml: cannot read config: not found");
	CHECK(all_zero(&c));
	free(err);
	setenv("BANGER_CONFIG", "/nonexistent/env.yaml", 1);
	CHECK_EQ_INT(config_load(NULL, &c, &err), BG_ERR_NOENT);
	CHECK_EQ_STR(err, "/nonexistent/env.yaml: cannot read config: not found");
	free(err);
	env_end();
}

/* The root helper's keys (helper/, docs/privileges.md). */
TEST(config_helper_keys)
{
	env_begin();
	struct bg_config c;
	char *err = NULL;
	char *path = test_write_file("cfg/helper-default.yaml", "workers: 2\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.owner_uid, -1);
	CHECK_EQ_INT(c.owner_gid, -1);
	CHECK_EQ_STR(c.bridge, "bgbr0");
	CHECK_EQ_STR(c.net_range, "10.213.0.0/24");
	CHECK_EQ_INT(c.net_addr, 0x0ad50000);
	CHECK_EQ_INT(c.net_prefix, 24);
	CHECK(c.nat);
	CHECK_EQ_STR(c.nat_backend, "nft");
	config_release(&c);
	free(path);

	path = test_write_file("cfg/helper.yaml", "owner_uid: 4242\n"
						  "owner_gid: 4343\n"
						  "bridge: bgbrtest7\n"
						  "net_range: 172.30.8.0/22\n"
						  "nat: off\n"
						  "nat_backend: iptables\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.owner_uid, 4242);
	CHECK_EQ_INT(c.owner_gid, 4343);
	CHECK_EQ_STR(c.bridge, "bgbrtest7");
	CHECK_EQ_STR(c.net_range, "172.30.8.0/22");
	CHECK_EQ_INT(c.net_addr, (172u << 24) | (30u << 16) | (8u << 8));
	CHECK_EQ_INT(c.net_prefix, 22);
	CHECK(!c.nat);
	CHECK_EQ_STR(c.nat_backend, "iptables");
	config_release(&c);
	free(path);

	/* owner_gid defaults to root's primary group for uid 0 (passwd), and to
	 * the uid itself for a uid without a passwd entry */
	path = test_write_file("cfg/helper-root.yaml", "owner_uid: 0\nnat: yes\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.owner_gid, 0);
	CHECK(c.nat);
	config_release(&c);
	free(path);
	path = test_write_file("cfg/helper-nopw.yaml", "owner_uid: 3999999\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.owner_gid, 3999999);
	config_release(&c);
	free(path);
	env_end();
}

TEST(config_helper_bad_values)
{
	env_begin();
	char *path = test_write_file("cfg/helper-bad.yaml", "owner_uid: -1\n"
							    "bridge: br0\n"
							    "net_range: 10.213.0.1/24\n"
							    "nat: maybe\n"
							    "nat_backend: nftt\n");
	expect_config_error(
		path,
		"@:1:12: 'owner_uid' must be a numeric id between 0 and 4294967294, got '-1'\n"
		"@:2:9: 'bridge' must be 'bgbr' followed by up to 11 of a-z and 0-9, got 'br0'\n"
		"@:3:12: 'net_range' must be an IPv4 network such as '10.213.0.0/24' (prefix 16 to 29, "
		"no host bits set), got '10.213.0.1/24'\n"
		"@:4:6: 'nat' must be true or false, got 'maybe'\n"
		"@:5:14: 'nat_backend' must be nft or iptables, got 'nftt' (did you mean 'nft'?)",
		__LINE__);
	free(path);

	path = test_write_file("cfg/helper-bad2.yaml", "bridge: bgbr_toolongname0\n"
							     "net_range: 10.0.0.0/8\n"
							     "owner_uid: ci\n");
	expect_config_error(
		path,
		"@:1:9: 'bridge' must be 'bgbr' followed by up to 11 of a-z and 0-9, got "
		"'bgbr_toolongname0'\n"
		"@:2:12: 'net_range' must be an IPv4 network such as '10.213.0.0/24' (prefix 16 to 29, "
		"no host bits set), got '10.0.0.0/8'\n"
		"@:3:12: 'owner_uid' must be a numeric id between 0 and 4294967294, got 'ci'",
		__LINE__);
	free(path);

	path = test_write_file("cfg/helper-gid.yaml", "owner_gid: 10\n");
	expect_config_error(path, "@:1:1: 'owner_gid' is set but 'owner_uid' is not", __LINE__);
	free(path);
	env_end();
}

TEST(config_vm_keys)
{
	env_begin();
	struct bg_config c;
	char *err = NULL;
	char *path = test_write_file("cfg/vm-default.yaml", "workers: 2\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK(c.helper_socket == NULL); /* bangerd derives it from its runtime dir */
	CHECK(c.agent_path == NULL);
	CHECK(c.firecracker_path == NULL);
	config_release(&c);
	free(path);

	path = test_write_file("cfg/vm.yaml", "helper_socket: /run/banger/banger-helper.sock\n"
					      "agent_path: /usr/lib/banger/banger-agent\n"
					      "firecracker_path: /opt/fc/firecracker\n"
					      "jailer_path: /opt/fc/jailer\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_STR(c.helper_socket, "/run/banger/banger-helper.sock");
	CHECK_EQ_STR(c.agent_path, "/usr/lib/banger/banger-agent");
	CHECK_EQ_STR(c.firecracker_path, "/opt/fc/firecracker");
	CHECK_EQ_STR(c.jailer_path, "/opt/fc/jailer");
	config_release(&c);
	free(path);

	path = test_write_file("cfg/vm-bad.yaml", "helper_socket: run/helper.sock\n");
	CHECK_EQ_INT(config_load(path, &c, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err ? err : "", "vm-bad.yaml:1:16: 'helper_socket' must be an absolute path");
	free(err);
	err = NULL;
	free(path);
	/* workspace exports: a size, and an absolute directory */
	path = test_write_file("cfg/ws.yaml", "max_export_bytes: 512M\nartifacts_dir: /srv/artifacts\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.max_export_bytes, 512LL << 20);
	CHECK_EQ_STR(c.artifacts_dir, "/srv/artifacts");
	config_release(&c);
	free(path);
	path = test_write_file("cfg/ws-default.yaml", "workers: 2\n");
	CHECK_EQ_INT(config_load(path, &c, &err), 0);
	CHECK_EQ_INT(c.max_export_bytes, 10LL << 30);
	CHECK(c.artifacts_dir == NULL);
	config_release(&c);
	free(path);
	path = test_write_file("cfg/ws-bad.yaml", "max_export_bytes: lots\n");
	CHECK_EQ_INT(config_load(path, &c, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err ? err : "", "ws-bad.yaml:1:19: 'max_export_bytes' must be a size such as '10G'");
	free(err);
	err = NULL;
	free(path);
	path = test_write_file("cfg/vm-typo.yaml", "agent-path: /x\n");
	CHECK_EQ_INT(config_load(path, &c, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err ? err : "", "(did you mean 'agent_path'?)");
	free(err);
	free(path);
	env_end();
}
