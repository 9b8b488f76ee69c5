/*
 * ops_nat.c: net.nat.ensure / net.nat.clear, with nftables or iptables
 * (install config `nat_backend`), run by absolute path with an argv built
 * only from checked values (an address inside banger's range, banger's
 * bridge and range from the install config): never a shell.
 *
 * The rules, per backend, installed once (the first ensure) and then only
 * the per-guest part changes:
 *
 *   nft: table ip banger (comment names range and bridge)
 *          set nat_guests { ipv4_addr }               <- one element per guest
 *          postrouting (nat):   saddr @nat_guests, daddr outside range: masquerade
 *          forward (filter):    from the bridge: to 169.254.0.0/16 drop, to
 *                               the range drop, saddr @nat_guests accept, drop
 *          input (filter):      from the bridge to 169.254.0.0/16 drop
 *   iptables: nat BANGER-POSTROUTING (one MASQUERADE per guest), filter
 *          BANGER-FORWARD (the fixed rules above, jumping to BANGER-GUESTS,
 *          one ACCEPT per guest), BANGER-INPUT; jumps from POSTROUTING,
 *          FORWARD and INPUT.
 *
 * So guests are blocked from the link-local metadata range and from each
 * other whether or not they are NATed, and only NATed guests leave the host.
 * ensure also sets net.ipv4.ip_forward=1 (in the helper's namespace).  One
 * mutex serializes NAT changes: check-then-act on the ruleset is then safe
 * against the helper's other threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "mpk.h"
#include "util.h"

static pthread_mutex_t nat_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const nft_paths[] = {"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", NULL};
static const char *const ipt_paths[] = {"/usr/sbin/iptables", "/sbin/iptables",
					"/usr/bin/iptables", NULL};

static void range_str(char *buf, size_t size)
{
	uint32_t n = H.pol.net;
	snprintf(buf, size, "%u.%u.%u.%u/%d", n >> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255,
		 H.pol.prefix);
}

static int tool(const char *const paths[], const char **out, struct hreply *r)
{
	*out = run_find(paths);
	if (!*out)
		return hfail(r, BG_ERR_UNSUPPORTED, "%s is not installed (looked in %s)",
			     paths == nft_paths ? "nft" : "iptables",
			     paths == nft_paths ? "/usr/sbin, /sbin, /usr/bin"
						: "/usr/sbin, /sbin, /usr/bin");
	return 0;
}

/* Run argv; a non-zero exit is an error with the tool's message. */
static int must(const char *const argv[], const char *input, struct hreply *r)
{
	char *out = NULL;
	int rc = run_argv(argv, input, &out);
	if (rc == 0) {
		free(out);
		return 0;
	}
	int code = rc < 0 ? rc : BG_ERR_IO;
	if (rc < 0)
		hfail(r, code, "%s: %s", argv[0], out && *out ? out : bg_strerror(rc));
	else
		hfail(r, code, "%s exited with status %d: %s", argv[0], rc,
		      out && *out ? out : "no output");
	free(out);
	return code;
}

/* Exit status only (for checks such as iptables -C): 0 yes, 1 no. */
static int status(const char *const argv[])
{
	int rc = run_argv(argv, NULL, NULL);
	return rc;
}

static int ip_forward_on(struct hreply *r)
{
	int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1\n", 2) != 2) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return hfail(r, bg_errno(e), "cannot set net.ipv4.ip_forward: %s", strerror(e));
	}
	close(fd);
	return 0;
}

/* ---- nftables ---- */

/* 0 with the table's comment matching our config, 1 absent, 2 stale (made
 * for another range or bridge), negative on error. */
static int nft_table_state(const char *nft)
{
	/* nft 1.0.6's JSON leaves table comments out: read the text */
	const char *argv[] = {nft, "list", "table", "ip", "banger", NULL};
	char *out = NULL;
	int rc = run_argv(argv, NULL, &out);
	if (rc != 0) {
		free(out);
		return rc < 0 ? rc : 1;
	}
	char range[32], want[128];
	range_str(range, sizeof(range));
	snprintf(want, sizeof(want), "comment \"banger range %s bridge %s\"", range, H.pol.bridge);
	int state = strstr(out, want) ? 0 : 2;
	free(out);
	return state;
}

static int nft_install(const char *nft, bool replace, struct hreply *r)
{
	char range[32];
	range_str(range, sizeof(range));
	const char *b = H.pol.bridge;
	char *script = xasprintf(
		"%s"
		"table ip banger {\n"
		"\tcomment \"banger range %s bridge %s\"\n"
		"\tset nat_guests { type ipv4_addr; }\n"
		"\tchain postrouting {\n"
		"\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
		"\t\tip saddr @nat_guests ip daddr != %s masquerade\n"
		"\t}\n"
		"\tchain forward {\n"
		"\t\ttype filter hook forward priority filter; policy accept;\n"
		"\t\tiifname \"%s\" ip daddr 169.254.0.0/16 drop\n"
		"\t\tiifname \"%s\" ip daddr %s drop\n"
		"\t\tiifname \"%s\" ip saddr @nat_guests accept\n"
		"\t\tiifname \"%s\" drop\n"
		"\t}\n"
		"\tchain input {\n"
		"\t\ttype filter hook input priority filter; policy accept;\n"
		"\t\tiifname \"%s\" ip daddr 169.254.0.0/16 drop\n"
		"\t}\n"
		"}\n",
		replace ? "delete table ip banger\n" : "", range, b, range, b, b, range, b, b, b);
	const char *argv[] = {nft, "-f", "-", NULL};
	int rc = must(argv, script, r);
	free(script);
	return rc;
}

static int nft_ensure(const struct hp_args *a, struct hreply *r)
{
	const char *nft;
	int rc = tool(nft_paths, &nft, r);
	if (rc)
		return rc;
	int st = nft_table_state(nft);
	if (st < 0)
		return hfail(r, st, "cannot list nft table ip banger: %s", bg_strerror(st));
	if (st != 0) {
		/* A table made for another range or bridge is replaced; its
		 * guests must be ensured again (they are the old range's). */
		rc = nft_install(nft, st == 2, r);
		if (rc)
			return rc;
	}
	char elem[40];
	snprintf(elem, sizeof(elem), "{ %s }", a->addr);
	const char *argv[] = {nft, "add", "element", "ip", "banger", "nat_guests", elem, NULL};
	return must(argv, NULL, r);
}

static int nft_clear(const struct hp_args *a, bool *removed, struct hreply *r)
{
	const char *nft;
	int rc = tool(nft_paths, &nft, r);
	if (rc)
		return rc;
	*removed = false;
	int st = nft_table_state(nft);
	if (st == 1)
		return 0; /* no table: nothing to clear */
	if (st < 0)
		return hfail(r, st, "cannot list nft table ip banger: %s", bg_strerror(st));
	/* present? (for the reply; the delete below is idempotent either way) */
	const char *get[] = {nft, "get", "element", "ip", "banger", "nat_guests", NULL, NULL};
	char elem[40];
	snprintf(elem, sizeof(elem), "{ %s }", a->addr);
	get[6] = elem;
	*removed = status(get) == 0;
	/* "add then delete" in one transaction: succeeds whether or not the
	 * element was there. */
	char *cmd = xasprintf("add element ip banger nat_guests %s; "
			      "delete element ip banger nat_guests %s",
			      elem, elem);
	const char *argv[] = {nft, cmd, NULL};
	rc = must(argv, NULL, r);
	free(cmd);
	return rc;
}

/* ---- iptables ---- */

/* iptables -w [-t table] ARGS...: builds argv in buf. */
#define IPT(...)                                                             \
	(const char *const[])                                                \
	{                                                                    \
		ipt, "-w", __VA_ARGS__, NULL                                 \
	}

static int ipt_chain(const char *ipt, const char *table, const char *chain, bool *created,
		     struct hreply *r)
{
	*created = false;
	if (status(IPT("-t", table, "-S", chain)) == 0)
		return 0;
	*created = true;
	return must(IPT("-t", table, "-N", chain), NULL, r);
}

/* Append a rule unless it is there (-C). */
static int ipt_ensure_rule(const char *const check[], const char *const add[], struct hreply *r)
{
	if (status(check) == 0)
		return 0;
	return must(add, NULL, r);
}

static int ipt_base(const char *ipt, struct hreply *r)
{
	char range[32];
	range_str(range, sizeof(range));
	const char *b = H.pol.bridge;
	bool c1, c2, c3, c4;
	int rc = ipt_chain(ipt, "nat", "BANGER-POSTROUTING", &c1, r);
	if (!rc)
		rc = ipt_chain(ipt, "filter", "BANGER-GUESTS", &c2, r);
	if (!rc)
		rc = ipt_chain(ipt, "filter", "BANGER-FORWARD", &c3, r);
	if (!rc)
		rc = ipt_chain(ipt, "filter", "BANGER-INPUT", &c4, r);
	if (rc)
		return rc;
	if (c3) {
		const char *const *rules[] = {
			IPT("-A", "BANGER-FORWARD", "-i", b, "-d", "169.254.0.0/16", "-j", "DROP"),
			IPT("-A", "BANGER-FORWARD", "-i", b, "-d", range, "-j", "DROP"),
			IPT("-A", "BANGER-FORWARD", "-i", b, "-j", "BANGER-GUESTS"),
			IPT("-A", "BANGER-FORWARD", "-i", b, "-j", "DROP"),
		};
		for (size_t i = 0; i < ARRAY_LEN(rules) && !rc; i++)
			rc = must(rules[i], NULL, r);
	}
	if (!rc && c4)
		rc = must(IPT("-A", "BANGER-INPUT", "-i", b, "-d", "169.254.0.0/16", "-j", "DROP"),
			  NULL, r);
	if (!rc)
		rc = ipt_ensure_rule(IPT("-t", "nat", "-C", "POSTROUTING", "-j", "BANGER-POSTROUTING"),
				     IPT("-t", "nat", "-A", "POSTROUTING", "-j", "BANGER-POSTROUTING"),
				     r);
	if (!rc)
		rc = ipt_ensure_rule(IPT("-C", "FORWARD", "-j", "BANGER-FORWARD"),
				     IPT("-I", "FORWARD", "1", "-j", "BANGER-FORWARD"), r);
	if (!rc)
		rc = ipt_ensure_rule(IPT("-C", "INPUT", "-j", "BANGER-INPUT"),
				     IPT("-I", "INPUT", "1", "-j", "BANGER-INPUT"), r);
	return rc;
}

static int ipt_ensure(const struct hp_args *a, struct hreply *r)
{
	const char *ipt;
	char range[32];
	int rc = tool(ipt_paths, &ipt, r);
	if (rc)
		return rc;
	range_str(range, sizeof(range));
	rc = ipt_base(ipt, r);
	if (!rc)
		rc = ipt_ensure_rule(IPT("-t", "nat", "-C", "BANGER-POSTROUTING", "-s", a->addr, "!",
					 "-d", range, "-j", "MASQUERADE"),
				     IPT("-t", "nat", "-A", "BANGER-POSTROUTING", "-s", a->addr, "!",
					 "-d", range, "-j", "MASQUERADE"),
				     r);
	if (!rc)
		rc = ipt_ensure_rule(IPT("-C", "BANGER-GUESTS", "-s", a->addr, "-j", "ACCEPT"),
				     IPT("-A", "BANGER-GUESTS", "-s", a->addr, "-j", "ACCEPT"), r);
	return rc;
}

static int ipt_clear(const struct hp_args *a, bool *removed, struct hreply *r)
{
	const char *ipt;
	char range[32];
	int rc = tool(ipt_paths, &ipt, r);
	if (rc)
		return rc;
	range_str(range, sizeof(range));
	*removed = false;
	/* while present, delete (a rule added twice by hand goes too) */
	for (int i = 0; i < 16 && !rc; i++) {
		if (status(IPT("-t", "nat", "-C", "BANGER-POSTROUTING", "-s", a->addr, "!", "-d",
			       range, "-j", "MASQUERADE")) != 0)
			break;
		*removed = true;
		rc = must(IPT("-t", "nat", "-D", "BANGER-POSTROUTING", "-s", a->addr, "!", "-d", range,
			      "-j", "MASQUERADE"),
			  NULL, r);
	}
	for (int i = 0; i < 16 && !rc; i++) {
		if (status(IPT("-C", "BANGER-GUESTS", "-s", a->addr, "-j", "ACCEPT")) != 0)
			break;
		*removed = true;
		rc = must(IPT("-D", "BANGER-GUESTS", "-s", a->addr, "-j", "ACCEPT"), NULL, r);
	}
	return rc;
}

/* ---- handlers ---- */

int op_nat_ensure(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	if (!H.nat)
		return hfail(r, BG_ERR_UNSUPPORTED,
			     "nat is off in the install config: guests get no way out");
	pthread_mutex_lock(&nat_lock);
	int rc = ip_forward_on(r);
	if (!rc)
		rc = H.nat_iptables ? ipt_ensure(a, r) : nft_ensure(a, r);
	pthread_mutex_unlock(&nat_lock);
	if (rc)
		return rc;
	msgpack_pack_map(&r->pk, 2);
	mpk_kv_str(&r->pk, "addr", a->addr);
	mpk_kv_str(&r->pk, "backend", H.nat_iptables ? "iptables" : "nft");
	return 0;
}

int op_nat_clear(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	bool removed = false;
	int rc = 0;
	/* with nat off there is nothing of ours to clear unless an older config
	 * made it: clear anyway, it is idempotent */
	pthread_mutex_lock(&nat_lock);
	rc = H.nat_iptables ? ipt_clear(a, &removed, r) : nft_clear(a, &removed, r);
	pthread_mutex_unlock(&nat_lock);
	if (rc == BG_ERR_UNSUPPORTED && !H.nat) {
		free(r->errmsg); /* no tool, nat off: nothing can be there */
		r->errmsg = NULL;
		rc = 0;
	}
	if (rc)
		return rc;
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "removed", removed);
	return 0;
}

/* The NATed guests: nft set elements or iptables MASQUERADE sources. */
int nat_inventory(msgpack_packer *pk)
{
	struct sb addrs; /* NUL-separated */
	size_t n = 0;
	sb_init(&addrs);
	pthread_mutex_lock(&nat_lock);
	if (!H.nat_iptables) {
		const char *nft = run_find(nft_paths);
		const char *argv[] = {nft, "-j", "list", "set", "ip", "banger", "nat_guests", NULL};
		char *out = NULL;
		if (nft && run_argv(argv, NULL, &out) == 0) {
			json_t *root = json_loads(out, 0, NULL);
			size_t i, j;
			json_t *v, *e;
			json_array_foreach(json_object_get(root, "nftables"), i, v)
			{
				json_t *set = json_object_get(v, "set");
				json_array_foreach(json_object_get(set, "elem"), j, e)
				{
					if (json_is_string(e)) {
						sb_add(&addrs, json_string_value(e),
						       strlen(json_string_value(e)) + 1);
						n++;
					}
				}
			}
			json_decref(root);
		}
		free(out);
	} else {
		const char *ipt = run_find(ipt_paths);
		char *out = NULL;
		if (ipt && run_argv(IPT("-t", "nat", "-S", "BANGER-POSTROUTING"), NULL, &out) == 0) {
			char *save = NULL;
			for (char *line = strtok_r(out, "\n", &save); line;
			     line = strtok_r(NULL, "\n", &save)) {
				char *s = strstr(line, " -s ");
				if (!s)
					continue;
				s += 4;
				size_t len = strcspn(s, "/ ");
				sb_add(&addrs, s, len);
				sb_add(&addrs, "", 1);
				n++;
			}
		}
		free(out);
	}
	pthread_mutex_unlock(&nat_lock);
	mpk_pack_str(pk, "nat");
	msgpack_pack_array(pk, n);
	const char *p = addrs.buf;
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_map(pk, 1);
		mpk_kv_str(pk, "addr", p);
		p += strlen(p) + 1;
	}
	sb_release(&addrs);
	return 0;
}
