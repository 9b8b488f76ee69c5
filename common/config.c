/*
 * config.c: banger's configuration (see config.h; every key, its type and
 * its range are in keys[] below).
 *
 * Order: built-in defaults, then the YAML file, then the environment
 * (BANGER_STATE_DIR, BANGER_RUNTIME_DIR); command-line flags are the caller's.
 * Everything is parsed into a fresh struct and validated whole before it is
 * handed out (mako's reload_config): on any problem the caller gets every
 * message, `file:line:col: ...` one per line, and a zeroed struct.  No globals;
 * reads the environment, so call it before starting threads that change it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "err.h"
#include "suggest.h"
#include "util.h"

#define CONFIG_MAX_BYTES (1024 * 1024)
#define CONFIG_MAX_ERRORS 20
#define CONFIG_NAME "banger/banger.yaml"
#define SEC 1000000LL
#define DAY (86400 * SEC)

enum ctype {
	CT_PATH, CT_DB, CT_INT, CT_DURATION, CT_LIMITS, CT_LEVEL,
	CT_ID,     /* a uid or gid: int64, lo..hi */
	CT_BRIDGE, /* a bridge name under banger's prefix */
	CT_CIDR,   /* IPv4 a.b.c.d/n, host bits zero, n in lo..hi */
	CT_BOOL,   /* true/false, yes/no, on/off */
	CT_BACKEND, /* "nft" | "iptables" */
	CT_SIZE     /* "10G", "512M", bytes: int64 lo..hi */
};

struct ckey {
	const char *name;
	enum ctype type;
	size_t off; /* of the member in struct bg_config */
	int64_t lo, hi;
};

#define OFF(m) offsetof(struct bg_config, m)
static const struct ckey keys[] = {
	{"state_dir", CT_PATH, OFF(state_dir), 0, 0},
	{"runtime_dir", CT_PATH, OFF(runtime_dir), 0, 0},
	{"db", CT_DB, OFF(db), 0, 0},
	{"workers", CT_INT, OFF(workers), 1, 256},
	{"max_running", CT_INT, OFF(max_running), 1, 100000},
	{"lease_ttl", CT_DURATION, OFF(lease_ttl_us), 10000, DAY},
	{"max_crashes", CT_INT, OFF(max_crashes), 1, 100},
	{"drain_timeout", CT_DURATION, OFF(drain_timeout_us), 0, DAY},
	{"retry_base", CT_DURATION, OFF(retry_base_us), 0, DAY},
	{"retry_max", CT_DURATION, OFF(retry_max_us), 0, 30 * DAY},
	{"kind_limits", CT_LIMITS, 0, 0, 100000},
	{"log_level", CT_LEVEL, OFF(log_level), 0, 0},
	{"owner_uid", CT_ID, OFF(owner_uid), 0, 4294967294LL},
	{"owner_gid", CT_ID, OFF(owner_gid), 0, 4294967294LL},
	{"bridge", CT_BRIDGE, OFF(bridge), 0, 0},
	{"net_range", CT_CIDR, OFF(net_range), 16, 29},
	{"nat", CT_BOOL, OFF(nat), 0, 0},
	{"nat_backend", CT_BACKEND, OFF(nat_backend), 0, 0},
	{"helper_socket", CT_PATH, OFF(helper_socket), 0, 0},
	{"agent_path", CT_PATH, OFF(agent_path), 0, 0},
	{"firecracker_path", CT_PATH, OFF(firecracker_path), 0, 0},
	{"jailer_path", CT_PATH, OFF(jailer_path), 0, 0},
	{"max_export_bytes", CT_SIZE, OFF(max_export_bytes), 0, INT64_MAX},
	{"artifacts_dir", CT_PATH, OFF(artifacts_dir), 0, 0},
};
#undef OFF

static const char *const levels[] = {"debug", "info", "warn", "error"};
static const char *const backends[] = {"nft", "iptables"};

/* banger's bridge names (the helper checks the same rule, helper/proto.c):
 * "bgbr" and up to 11 of [a-z0-9], 15 bytes in all (IFNAMSIZ - 1). */
static bool bridge_name_ok(const char *v)
{
	size_t n = strlen(v);
	if (n > 15 || strncmp(v, "bgbr", 4) != 0)
		return false;
	for (size_t i = 4; i < n; i++)
		if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9')))
			return false;
	return true;
}

/* "a.b.c.d/n" with lo <= n <= hi and no host bits set: network address (host
 * order) and prefix; false otherwise. */
static bool parse_cidr(const char *v, int64_t lo, int64_t hi, uint32_t *net, int *prefix)
{
	char ip[16];
	const char *slash = strchr(v, '/');
	int64_t n;
	struct in_addr a;
	if (!slash || (size_t)(slash - v) >= sizeof(ip))
		return false;
	memcpy(ip, v, (size_t)(slash - v));
	ip[slash - v] = '\0';
	if (inet_pton(AF_INET, ip, &a) != 1 || slash[1] < '0' || slash[1] > '9')
		return false;
	char *end;
	errno = 0;
	n = strtoll(slash + 1, &end, 10);
	if (errno || *end || n < lo || n > hi)
		return false;
	uint32_t h = ntohl(a.s_addr), mask = n ? ~0u << (32 - n) : 0;
	if (h & ~mask)
		return false;
	*net = h;
	*prefix = (int)n;
	return true;
}

/* Loading state: where each key was found, and the problems so far. */
struct loader {
	const char *path;
	yaml_document_t *doc;
	int line[ARRAY_LEN(keys)]; /* 0: not in the file */
	int col[ARRAY_LEN(keys)];
	struct sb msgs;
	int nmsgs;
};

static void problem(struct loader *ld, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* One problem; where is "file:line:col" or the variable's name. */
static void problem(struct loader *ld, const char *where, const char *fmt, ...)
{
	if (ld->nmsgs++ >= CONFIG_MAX_ERRORS)
		return;
	sb_addf(&ld->msgs, "%s%s: ", ld->nmsgs > 1 ? "\n" : "", where);
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&ld->msgs, fmt, ap);
	va_end(ap);
}

/* "file:line:col" of a node, into buf. */
static const char *at(const struct loader *ld, const yaml_node_t *n, char *buf, size_t size)
{
	snprintf(buf, size, "%s:%zu:%zu", ld->path, n->start_mark.line + 1,
		 n->start_mark.column + 1);
	return buf;
}

/* The text of a scalar that carries a value: not a list or mapping, not an
 * empty plain scalar.  NULL otherwise. */
static const char *text_of(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE)
		return NULL;
	if (n->data.scalar.length == 0 && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

/* What a node holds, for "got ..." in messages. */
static const char *shown(const yaml_node_t *n, char *buf)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return "a list";
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (!text_of(n))
		return "nothing";
	char q[SUGGEST_QUOTE_MAX + 4];
	snprintf(buf, SUGGEST_QUOTE_MAX + 8, "'%s'",
		 suggest_quote(q, (const char *)n->data.scalar.value, n->data.scalar.length));
	return buf;
}

static bool to_int(const char *s, int64_t *out)
{
	char *end;
	if (!s || !*s || (*s != '-' && *s != '+' && (*s < '0' || *s > '9')))
		return false;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static void set_int(const struct ckey *k, struct bg_config *c, int64_t v)
{
	if (k->type == CT_INT)
		*(int *)((char *)c + k->off) = (int)v;
	else
		*(int64_t *)((char *)c + k->off) = v;
}

static void set_str(const struct ckey *k, struct bg_config *c, const char *v)
{
	char **slot = (char **)((char *)c + k->off);
	free(*slot);
	*slot = xstrdup(v);
}

static void take_limits(struct loader *ld, struct bg_config *c, const struct ckey *k,
			const yaml_node_t *map)
{
	char where[512], got[SUGGEST_QUOTE_MAX + 8], q[SUGGEST_QUOTE_MAX + 4];
	if (map->type != YAML_MAPPING_NODE) {
		if (text_of(map) || map->type != YAML_SCALAR_NODE)
			problem(ld, at(ld, map, where, sizeof(where)),
				"'kind_limits' must be a mapping of kind names to limits, got %s",
				shown(map, got));
		return;
	}
	const yaml_node_pair_t *p = map->data.mapping.pairs.start;
	size_t n = (size_t)(map->data.mapping.pairs.top - p);
	c->kind_limits = xcalloc(n ? n : 1, sizeof(*c->kind_limits));
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *kn = yaml_document_get_node(ld->doc, p[i].key);
		const yaml_node_t *vn = yaml_document_get_node(ld->doc, p[i].value);
		const char *kind = text_of(kn), *v = text_of(vn);
		int64_t lim;
		if (!kind) {
			problem(ld, at(ld, kn, where, sizeof(where)),
				"'kind_limits' keys must be kind names, got %s", shown(kn, got));
			continue;
		}
		bool dup = false;
		for (int j = 0; j < c->nkind_limits && !dup; j++)
			dup = strcmp(c->kind_limits[j].kind, kind) == 0;
		if (dup) {
			problem(ld, at(ld, kn, where, sizeof(where)),
				"duplicate kind '%s' in 'kind_limits'",
				suggest_quote(q, kind, strlen(kind)));
			continue;
		}
		if (!to_int(v, &lim) || lim < k->lo || lim > k->hi) {
			problem(ld, at(ld, vn, where, sizeof(where)),
				"limit for kind '%s' must be an integer between %lld and %lld, got %s",
				suggest_quote(q, kind, strlen(kind)), (long long)k->lo,
				(long long)k->hi, shown(vn, got));
			continue;
		}
		c->kind_limits[c->nkind_limits].kind = xstrdup(kind);
		c->kind_limits[c->nkind_limits++].limit = (int)lim;
	}
}

/* One key's value from the file. */
static void take(struct loader *ld, struct bg_config *c, const struct ckey *k,
		 const yaml_node_t *vn)
{
	char where[512], got[SUGGEST_QUOTE_MAX + 8];
	const char *v = text_of(vn);
	int64_t num;
	at(ld, vn, where, sizeof(where));
	switch (k->type) {
	case CT_PATH:
		if (v && v[0] == '/')
			set_str(k, c, v);
		else
			problem(ld, where, "'%s' must be an absolute path, got %s", k->name,
				shown(vn, got));
		break;
	case CT_DB:
		if (v && (!strcmp(v, "sqlite") || !strncmp(v, "postgresql://", 13) ||
			  !strncmp(v, "postgres://", 11)))
			set_str(k, c, v);
		else
			problem(ld, where, "'db' must be 'sqlite' or a postgresql:// url, got %s",
				shown(vn, got));
		break;
	case CT_LEVEL: {
		const char *s = v ? suggest_closest(v, levels, ARRAY_LEN(levels)) : NULL;
		if (s && !strcmp(s, v))
			set_str(k, c, v);
		else if (s)
			problem(ld, where,
				"'log_level' must be debug, info, warn or error, got %s (did you mean '%s'?)",
				shown(vn, got), s);
		else
			problem(ld, where, "'log_level' must be debug, info, warn or error, got %s",
				shown(vn, got));
		break;
	}
	case CT_INT:
		if (to_int(v, &num) && num >= k->lo && num <= k->hi)
			set_int(k, c, num);
		else
			problem(ld, where, "'%s' must be an integer between %lld and %lld, got %s",
				k->name, (long long)k->lo, (long long)k->hi, shown(vn, got));
		break;
	case CT_DURATION:
		if (v && parse_duration_us(v, &num) == 0 && num >= k->lo && num <= k->hi)
			set_int(k, c, num);
		else if (v && parse_duration_us(v, &num) == 0)
			problem(ld, where, "'%s' must be between %lldms and %lldh, got %s", k->name,
				(long long)(k->lo / 1000), (long long)(k->hi / (3600 * SEC)),
				shown(vn, got));
		else
			problem(ld, where, "'%s' must be a duration such as '30s' or '5m', got %s",
				k->name, shown(vn, got));
		break;
	case CT_SIZE:
		if (v && parse_size_bytes(v, strlen(v), &num) == 0 && num >= k->lo && num <= k->hi)
			set_int(k, c, num);
		else
			problem(ld, where, "'%s' must be a size such as '10G' or '512M' (0: no limit), "
				"got %s", k->name, shown(vn, got));
		break;
	case CT_LIMITS: take_limits(ld, c, k, vn); break;
	case CT_ID:
		if (to_int(v, &num) && num >= k->lo && num <= k->hi)
			*(int64_t *)((char *)c + k->off) = num;
		else
			problem(ld, where, "'%s' must be a numeric id between %lld and %lld, got %s",
				k->name, (long long)k->lo, (long long)k->hi, shown(vn, got));
		break;
	case CT_BRIDGE:
		if (v && bridge_name_ok(v))
			set_str(k, c, v);
		else
			problem(ld, where,
				"'%s' must be 'bgbr' followed by up to 11 of a-z and 0-9, got %s",
				k->name, shown(vn, got));
		break;
	case CT_CIDR:
		if (v && parse_cidr(v, k->lo, k->hi, &c->net_addr, &c->net_prefix))
			set_str(k, c, v);
		else
			problem(ld, where,
				"'%s' must be an IPv4 network such as '10.213.0.0/24' (prefix %lld to "
				"%lld, no host bits set), got %s",
				k->name, (long long)k->lo, (long long)k->hi, shown(vn, got));
		break;
	case CT_BOOL:
		if (v && (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")))
			*(bool *)((char *)c + k->off) = true;
		else if (v && (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")))
			*(bool *)((char *)c + k->off) = false;
		else
			problem(ld, where, "'%s' must be true or false, got %s", k->name,
				shown(vn, got));
		break;
	case CT_BACKEND: {
		const char *s = v ? suggest_closest(v, backends, ARRAY_LEN(backends)) : NULL;
		if (s && !strcmp(s, v))
			set_str(k, c, v);
		else
			problem(ld, where, "'%s' must be nft or iptables, got %s%s%s%s", k->name,
				shown(vn, got), s ? " (did you mean '" : "", s ? s : "",
				s ? "'?)" : "");
		break;
	}
	}
}

static int key_index(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(keys); i++)
		if (!strcmp(keys[i].name, name))
			return (int)i;
	return -1;
}

/* Apply the file's text to c; problems go to ld. */
static void apply_file(struct loader *ld, struct bg_config *c, const char *text, size_t len)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	char where[512], got[SUGGEST_QUOTE_MAX + 8], q[SUGGEST_QUOTE_MAX + 4];
	if (!yaml_parser_initialize(&parser)) {
		problem(ld, ld->path, "out of memory");
		return;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		char *msg = suggest_yaml_error(&parser, ld->path, text, len);
		sb_addf(&ld->msgs, "%s%s", ld->nmsgs++ ? "\n" : "", msg);
		free(msg);
		yaml_parser_delete(&parser);
		return;
	}
	ld->doc = &doc;
	const yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root || (root->type == YAML_SCALAR_NODE && !text_of(root))) {
		/* an empty file: every default stands */
	} else if (root->type != YAML_MAPPING_NODE) {
		problem(ld, at(ld, root, where, sizeof(where)),
			"the config must be a mapping of settings, got %s", shown(root, got));
	} else {
		const yaml_node_pair_t *p = root->data.mapping.pairs.start;
		for (; p < root->data.mapping.pairs.top; p++) {
			const yaml_node_t *kn = yaml_document_get_node(&doc, p->key);
			const yaml_node_t *vn = yaml_document_get_node(&doc, p->value);
			const char *name = text_of(kn);
			int i = name ? key_index(name) : -1;
			at(ld, kn, where, sizeof(where));
			if (!name) {
				problem(ld, where, "keys must be setting names, got %s", shown(kn, got));
			} else if (i < 0) {
				const char *names[ARRAY_LEN(keys)];
				for (size_t j = 0; j < ARRAY_LEN(keys); j++)
					names[j] = keys[j].name;
				const char *s = suggest_closest(name, names, ARRAY_LEN(names));
				problem(ld, where, "unknown key '%s'%s%s%s",
					suggest_quote(q, name, strlen(name)),
					s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
			} else if (ld->line[i]) {
				problem(ld, where, "duplicate key '%s' (first at line %d)", name,
					ld->line[i]);
			} else {
				ld->line[i] = (int)kn->start_mark.line + 1;
				ld->col[i] = (int)kn->start_mark.column + 1;
				take(ld, c, &keys[i], vn);
			}
		}
	}
	ld->doc = NULL;
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
}

/* $VAR/sub when $VAR is an absolute path (XDG ignores relative ones). */
static char *under_env(const char *var, const char *sub)
{
	const char *v = getenv(var);
	return v && v[0] == '/' ? xasprintf("%s/%s", v, sub) : NULL;
}

/* ~/sub from $HOME, or NULL. */
static char *under_home(const char *sub)
{
	return under_env("HOME", sub);
}

/* The file to read, or NULL when none was asked for and none exists.  An
 * explicit file (argument or $BANGER_CONFIG) must exist: *explicit is set. */
static char *find_file(const char *file, bool *explicit)
{
	const char *env = getenv("BANGER_CONFIG");
	*explicit = true;
	if (file)
		return xstrdup(file);
	if (env && *env)
		return xstrdup(env);
	*explicit = false;
	if (geteuid() == 0 && access("/etc/" CONFIG_NAME, F_OK) == 0)
		return xstrdup("/etc/" CONFIG_NAME);
	char *p = under_env("XDG_CONFIG_HOME", CONFIG_NAME);
	if (!p)
		p = under_home(".config/" CONFIG_NAME);
	if (p && access(p, F_OK) == 0)
		return p;
	free(p);
	return NULL;
}

static void defaults(struct bg_config *c)
{
	c->db = xstrdup("sqlite");
	c->workers = 4;
	c->max_running = 64;
	c->lease_ttl_us = 30 * SEC;
	c->max_crashes = 3;
	c->drain_timeout_us = 30 * SEC;
	c->retry_base_us = 1 * SEC;
	c->retry_max_us = 300 * SEC;
	c->log_level = xstrdup("info");
	c->owner_uid = -1;
	c->owner_gid = -1;
	c->bridge = xstrdup("bgbr0");
	c->net_range = xstrdup("10.213.0.0/24");
	c->net_addr = (10u << 24) | (213u << 16);
	c->net_prefix = 24;
	c->nat = true;
	c->nat_backend = xstrdup("nft");
	c->max_export_bytes = 10LL << 30;
}

/* owner_gid when only owner_uid was given: the owner's primary group, or the
 * same number when the uid has no passwd entry. */
static void default_owner_gid(struct bg_config *c)
{
	if (c->owner_uid < 0 || c->owner_gid >= 0)
		return;
	struct passwd pw, *res = NULL;
	char buf[4096];
	if (getpwuid_r((uid_t)c->owner_uid, &pw, buf, sizeof(buf), &res) == 0 && res)
		c->owner_gid = res->pw_gid;
	else
		c->owner_gid = c->owner_uid;
}

/* Directories nobody set: the defaults for root or for a user. */
static void default_dirs(struct loader *ld, struct bg_config *c)
{
	bool root = geteuid() == 0;
	if (!c->state_dir) {
		c->state_dir = root ? xstrdup("/var/lib/banger") : under_env("XDG_STATE_HOME", "banger");
		if (!c->state_dir)
			c->state_dir = under_home(".local/state/banger");
		if (!c->state_dir)
			problem(ld, "state_dir",
				"cannot choose a state directory: set HOME, XDG_STATE_HOME or "
				"BANGER_STATE_DIR");
	}
	if (!c->runtime_dir) {
		c->runtime_dir = root ? xstrdup("/run/banger") : under_env("XDG_RUNTIME_DIR", "banger");
		if (!c->runtime_dir)
			c->runtime_dir = xasprintf("/tmp/banger-%u", (unsigned)getuid());
	}
}

static void env_dir(struct loader *ld, const char *var, char **slot)
{
	const char *v = getenv(var);
	char q[SUGGEST_QUOTE_MAX + 4];
	if (!v || !*v)
		return;
	if (v[0] != '/') {
		problem(ld, var, "must be an absolute path, got '%s'", suggest_quote(q, v, strlen(v)));
		return;
	}
	free(*slot);
	*slot = xstrdup(v);
}

/* Checks across keys, once every source is applied. */
static void validate(struct loader *ld, const struct bg_config *c)
{
	if (c->retry_max_us < c->retry_base_us) {
		char where[512];
		int k = key_index(ld->line[key_index("retry_max")] ? "retry_max" : "retry_base");
		snprintf(where, sizeof(where), "%s:%d:%d", ld->path ? ld->path : "config",
			 ld->line[k], ld->col[k]);
		problem(ld, where, "'retry_max' (%lldms) must not be less than 'retry_base' (%lldms)",
			(long long)(c->retry_max_us / 1000), (long long)(c->retry_base_us / 1000));
	}
	int g = key_index("owner_gid");
	if (ld->line[g] && c->owner_uid < 0) {
		char where[512];
		snprintf(where, sizeof(where), "%s:%d:%d", ld->path ? ld->path : "config",
			 ld->line[g], ld->col[g]);
		problem(ld, where, "'owner_gid' is set but 'owner_uid' is not");
	}
}

int config_load(const char *file, struct bg_config *out, char **errmsg)
{
	struct bg_config c = {0};
	struct loader ld = {0};
	bool explicit;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	sb_init(&ld.msgs);
	defaults(&c);
	c.path = find_file(file, &explicit);
	ld.path = c.path;
	if (c.path) {
		char *text;
		size_t len;
		rc = read_file(c.path, CONFIG_MAX_BYTES, &text, &len);
		if (rc == 0) {
			apply_file(&ld, &c, text, len);
			free(text);
		} else if (rc == BG_ERR_NOENT && !explicit) {
			free(c.path); /* gone since we looked: as if never there */
			c.path = NULL;
			ld.path = NULL;
			rc = 0;
		} else {
			problem(&ld, c.path, "cannot read config: %s", bg_strerror(rc));
		}
	}
	env_dir(&ld, "BANGER_STATE_DIR", &c.state_dir);
	env_dir(&ld, "BANGER_RUNTIME_DIR", &c.runtime_dir);
	default_dirs(&ld, &c);
	if (ld.nmsgs == 0)
		validate(&ld, &c);
	if (ld.nmsgs == 0)
		default_owner_gid(&c);
	if (ld.nmsgs > 0) {
		*errmsg = sb_detach(&ld.msgs);
		config_release(&c);
		return rc ? rc : BG_ERR_INVAL;
	}
	sb_release(&ld.msgs);
	*out = c;
	return 0;
}

void config_release(struct bg_config *c)
{
	free(c->path);
	free(c->state_dir);
	free(c->runtime_dir);
	free(c->db);
	for (int i = 0; i < c->nkind_limits; i++)
		free(c->kind_limits[i].kind);
	free(c->kind_limits);
	free(c->log_level);
	free(c->bridge);
	free(c->net_range);
	free(c->nat_backend);
	free(c->helper_socket);
	free(c->agent_path);
	free(c->firecracker_path);
	free(c->jailer_path);
	free(c->artifacts_dir);
	memset(c, 0, sizeof(*c));
}

int config_kind_limit(const struct bg_config *c, const char *kind)
{
	for (int i = 0; i < c->nkind_limits; i++)
		if (!strcmp(c->kind_limits[i].kind, kind))
			return c->kind_limits[i].limit;
	return 0;
}
