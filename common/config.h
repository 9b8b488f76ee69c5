/*
 * config.h: banger's configuration: defaults, then the config file, then the
 * environment (BANGER_STATE_DIR, BANGER_RUNTIME_DIR), then command-line flags
 * (applied by the caller).  Parsed into a fresh struct and validated whole
 * before anyone uses it.
 */
#ifndef BANGER_CONFIG_H
#define BANGER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct kind_limit {
	char *kind;
	int limit;
};

struct bg_config {
	char *path;          /* the file read, or NULL when none existed */
	char *state_dir;     /* queue database, job directories */
	char *runtime_dir;   /* sockets, pid files */
	char *db;            /* "sqlite" (default: STATE_DIR/queue.db) or a postgresql:// URL */
	int workers;         /* pool threads for blocking step bodies; default 4 */
	int max_running;     /* jobs running at once on this node; default 64 */
	int64_t lease_ttl_us;     /* default 30 s; heartbeat every third of it */
	int max_crashes;          /* consecutive crash-interrupted attempts before dead; 3 */
	int64_t drain_timeout_us; /* SIGTERM: wait this long for steps; 30 s */
	int64_t retry_base_us;    /* backoff base; 1 s */
	int64_t retry_max_us;     /* backoff cap; 5 min */
	struct kind_limit *kind_limits;
	int nkind_limits;
	char *log_level;     /* "debug" | "info" | "warn" | "error"; "info" */

	/* The root helper (helper/, docs/privileges.md).  It serves root and
	 * owner_uid only, and acts only on the names, directories and addresses
	 * these keys describe. */
	int64_t owner_uid;   /* the user bangerd runs as; -1 when not set */
	int64_t owner_gid;   /* group given by fs.chown; default: owner's primary group
			      * (passwd), else owner_uid */
	char *bridge;        /* banger's bridge: "bgbr" + up to 11 [a-z0-9]; "bgbr0" */
	char *net_range;     /* IPv4 CIDR of the guests, /16../29; "10.213.0.0/24" */
	uint32_t net_addr;   /* net_range's network address, host byte order */
	int net_prefix;      /* and its prefix length */
	bool nat;            /* masquerade guests out (net.nat.*); true */
	char *nat_backend;   /* "nft" | "iptables"; "nft" */

	/* VMs (docs/vms.md). */
	char *helper_socket; /* the helper's socket as bangerd reaches it; NULL:
			      * RUNTIME_DIR/banger-helper.sock (of the runtime
			      * directory bangerd ends up with, flags included) */
	char *agent_path;    /* the static banger-agent that kernel import puts in
			      * initramfses; NULL: banger-agent next to bangerd */
	char *firecracker_path; /* Firecracker's binary; NULL: firecracker from PATH */
	char *jailer_path;   /* its jailer; NULL: jailer from PATH */

	/* Workspaces (docs/workspaces.md). */
	int64_t max_export_bytes; /* a workspace.export's file at most; 0: no limit; 10G */
	char *artifacts_dir;      /* an absolute export `to:` may be under it; NULL: none */
};

/*
 * Load: file is the explicit path (--config), or NULL to use $BANGER_CONFIG,
 * else /etc/banger/banger.yaml when it exists (running as root), else
 * $XDG_CONFIG_HOME/banger/banger.yaml (~/.config/...) when it exists.
 * Defaults when no file: state_dir /var/lib/banger (root) or
 * $XDG_STATE_HOME/banger (~/.local/state/banger); runtime_dir /run/banger
 * (root) or $XDG_RUNTIME_DIR/banger or /tmp/banger-UID.
 * Errors (BG_ERR_INVAL) set *errmsg as "file:line:col: message".
 */
int config_load(const char *file, struct bg_config *out, char **errmsg);
void config_release(struct bg_config *c);

/* Limit for a kind (0 = no per-kind limit). */
int config_kind_limit(const struct bg_config *c, const char *kind);

#endif
