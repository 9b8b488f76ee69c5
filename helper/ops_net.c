/*
 * ops_net.c: net.bridge.ensure/remove and net.tap.create/remove, through
 * rtnetlink (libnl-route-3) and the tun driver's ioctls; plus the taps and
 * bridges of the inventory.
 *
 * Everything acts in the network namespace the helper runs in (the tests run
 * it inside their own with `ip netns exec`).  Each connection has its own
 * netlink socket (libnl sockets are not thread-safe); the kernel serializes
 * link changes under its rtnl lock, so two requests for the same name cannot
 * half-apply each other's work, and every handler re-reads the link and
 * converges on the wanted state (idempotent).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>

#include "err.h"
#include "helper.h"
#include "mpk.h"
#include "util.h"

struct nl_sock *net_sock(struct hconn *c, char *err, size_t errlen)
{
	if (c->nl)
		return c->nl;
	struct nl_sock *sk = nl_socket_alloc();
	if (!sk) {
		snprintf(err, errlen, "out of memory for a netlink socket");
		return NULL;
	}
	int rc = nl_connect(sk, NETLINK_ROUTE);
	if (rc < 0) {
		snprintf(err, errlen, "netlink: %s", nl_geterror(rc));
		nl_socket_free(sk);
		return NULL;
	}
	c->nl = sk;
	return sk;
}

static int nl_code(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case NLE_EXIST: return BG_ERR_EXIST;
	case NLE_OBJ_NOTFOUND:
	case NLE_NODEV: return BG_ERR_NOENT;
	case NLE_PERM:
	case NLE_NOACCESS: return BG_ERR_PERM;
	case NLE_BUSY: return BG_ERR_BUSY;
	case NLE_NOMEM: return BG_ERR_NOMEM;
	case NLE_INVAL:
	case NLE_RANGE: return BG_ERR_INVAL;
	default: return BG_ERR_IO;
	}
}

/* The link called name, or NULL (*rc 0 when it simply does not exist). */
static struct rtnl_link *link_get(struct nl_sock *sk, const char *name, int *rc)
{
	struct rtnl_link *l = NULL;
	int e = rtnl_link_get_kernel(sk, 0, name, &l);
	*rc = 0;
	if (e < 0) {
		if (e != -NLE_OBJ_NOTFOUND && e != -NLE_NODEV)
			*rc = e;
		return NULL;
	}
	return l;
}

static const char *link_kind(struct rtnl_link *l)
{
	const char *t = rtnl_link_get_type(l);
	return t ? t : "";
}

#define NET_SOCK(c, r)                                                       \
	char nlerr_[256];                                                    \
	struct nl_sock *sk = net_sock(c, nlerr_, sizeof(nlerr_));            \
	if (!sk)                                                             \
		return hfail(r, BG_ERR_IO, "%s", nlerr_)

/* ---- bridge ---- */

static int bridge_address(struct nl_sock *sk, int ifindex, struct hreply *r)
{
	uint32_t gw = htonl(proto_gateway(&H.pol));
	struct nl_addr *local = nl_addr_build(AF_INET, &gw, 4);
	struct rtnl_addr *a = rtnl_addr_alloc();
	int rc = 0;
	if (!local || !a) {
		rc = hfail(r, BG_ERR_NOMEM, "out of memory");
		goto out;
	}
	nl_addr_set_prefixlen(local, H.pol.prefix);
	rtnl_addr_set_ifindex(a, ifindex);
	rtnl_addr_set_local(a, local);
	rtnl_addr_set_prefixlen(a, H.pol.prefix);
	int e = rtnl_addr_add(sk, a, NLM_F_REPLACE);
	if (e < 0)
		rc = hfail(r, nl_code(e), "cannot give bridge '%s' its address: %s", H.pol.bridge,
			   nl_geterror(e));
out:
	if (a)
		rtnl_addr_put(a);
	if (local)
		nl_addr_put(local);
	return rc;
}

int op_bridge_ensure(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	NET_SOCK(c, r);
	int e;
	bool created = false;
	struct rtnl_link *l = link_get(sk, a->bridge, &e);
	if (e)
		return hfail(r, nl_code(e), "reading link '%s': %s", a->bridge, nl_geterror(e));
	if (l && strcmp(link_kind(l), "bridge") != 0) {
		hfail(r, BG_ERR_EXIST, "'%s' exists and is not a bridge (it is '%s'): not touched",
		      a->bridge, link_kind(l));
		rtnl_link_put(l);
		return BG_ERR_EXIST;
	}
	if (!l) {
		struct rtnl_link *nl = rtnl_link_alloc();
		rtnl_link_set_name(nl, a->bridge);
		rtnl_link_set_type(nl, "bridge");
		e = rtnl_link_add(sk, nl, NLM_F_CREATE | NLM_F_EXCL);
		rtnl_link_put(nl);
		if (e < 0 && e != -NLE_EXIST)
			return hfail(r, nl_code(e), "cannot create bridge '%s': %s", a->bridge,
				     nl_geterror(e));
		created = e == 0;
		l = link_get(sk, a->bridge, &e);
		if (!l)
			return hfail(r, BG_ERR_IO, "bridge '%s' vanished after it was created",
				     a->bridge);
	}
	int ifindex = rtnl_link_get_ifindex(l);
	int rc = bridge_address(sk, ifindex, r);
	if (rc == 0 && !(rtnl_link_get_flags(l) & IFF_UP)) {
		struct rtnl_link *ch = rtnl_link_alloc();
		rtnl_link_set_flags(ch, IFF_UP);
		e = rtnl_link_change(sk, l, ch, 0);
		rtnl_link_put(ch);
		if (e < 0)
			rc = hfail(r, nl_code(e), "cannot bring bridge '%s' up: %s", a->bridge,
				   nl_geterror(e));
	}
	rtnl_link_put(l);
	if (rc)
		return rc;
	uint32_t gw = proto_gateway(&H.pol);
	char addr[32];
	snprintf(addr, sizeof(addr), "%u.%u.%u.%u/%d", gw >> 24, (gw >> 16) & 255, (gw >> 8) & 255,
		 gw & 255, H.pol.prefix);
	msgpack_pack_map(&r->pk, 3);
	mpk_kv_str(&r->pk, "bridge", a->bridge);
	mpk_kv_str(&r->pk, "address", addr);
	mpk_kv_bool(&r->pk, "created", created);
	return 0;
}

/* Names of the links whose master is ifindex, into sb (", "-separated). */
static int ports_of(struct nl_sock *sk, int ifindex, struct sb *sb)
{
	struct nl_cache *cache;
	int e = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache);
	if (e < 0)
		return e;
	for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
		struct rtnl_link *l = (struct rtnl_link *)o;
		if (rtnl_link_get_master(l) == ifindex)
			sb_addf(sb, "%s%s", sb->len ? ", " : "", rtnl_link_get_name(l));
	}
	nl_cache_free(cache);
	return 0;
}

int op_bridge_remove(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	NET_SOCK(c, r);
	int e;
	struct rtnl_link *l = link_get(sk, a->bridge, &e);
	if (e)
		return hfail(r, nl_code(e), "reading link '%s': %s", a->bridge, nl_geterror(e));
	if (l && strcmp(link_kind(l), "bridge") != 0) {
		hfail(r, BG_ERR_EXIST, "'%s' is not a bridge (it is '%s'): not removed", a->bridge,
		      link_kind(l));
		rtnl_link_put(l);
		return BG_ERR_EXIST;
	}
	bool removed = false;
	if (l) {
		struct sb ports;
		sb_init(&ports);
		e = ports_of(sk, rtnl_link_get_ifindex(l), &ports);
		if (e == 0 && ports.len) {
			hfail(r, BG_ERR_BUSY, "bridge '%s' still has ports (%s): remove them first",
			      a->bridge, ports.buf);
			sb_release(&ports);
			rtnl_link_put(l);
			return BG_ERR_BUSY;
		}
		sb_release(&ports);
		e = rtnl_link_delete(sk, l);
		rtnl_link_put(l);
		if (e < 0 && e != -NLE_OBJ_NOTFOUND && e != -NLE_NODEV)
			return hfail(r, nl_code(e), "cannot remove bridge '%s': %s", a->bridge,
				     nl_geterror(e));
		removed = e == 0;
	}
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "removed", removed);
	return 0;
}

/* ---- tap ---- */

/* A number from /sys/class/net/NAME/FILE (decimal or 0x hex); -1 if absent. */
static long long sysfs_num(const char *name, const char *file)
{
	char path[128], buf[64];
	snprintf(path, sizeof(path), "/sys/class/net/%s/%s", name, file);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtoll(buf, NULL, 0);
}

/* Put an isolated flag on a bridge port (libnl 3.7 cannot say it): an
 * AF_BRIDGE RTM_SETLINK with IFLA_PROTINFO { IFLA_BRPORT_ISOLATED = 1 }. */
static int set_isolated(struct nl_sock *sk, int ifindex)
{
	struct ifinfomsg ifi = {.ifi_family = AF_BRIDGE, .ifi_index = ifindex};
	struct nl_msg *m = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST);
	if (!m)
		return -NLE_NOMEM;
	int e = nlmsg_append(m, &ifi, sizeof(ifi), NLMSG_ALIGNTO);
	struct nlattr *pi = e < 0 ? NULL : nla_nest_start(m, IFLA_PROTINFO | NLA_F_NESTED);
	if (!pi || nla_put_u8(m, IFLA_BRPORT_ISOLATED, 1) < 0) {
		nlmsg_free(m);
		return -NLE_NOMEM;
	}
	nla_nest_end(m, pi);
	return nl_send_sync(sk, m); /* frees m */
}

int op_tap_create(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	NET_SOCK(c, r);
	int e, rc = 0;
	struct rtnl_link *br = link_get(sk, a->bridge, &e);
	if (!br || strcmp(link_kind(br), "bridge") != 0) {
		if (br)
			rtnl_link_put(br);
		return hfail(r, e ? nl_code(e) : BG_ERR_NOENT,
			     "bridge '%s' does not exist: call net.bridge.ensure first", a->bridge);
	}
	int br_index = rtnl_link_get_ifindex(br);
	rtnl_link_put(br);

	struct rtnl_link *l = link_get(sk, a->tap, &e);
	bool existed = l != NULL;
	if (l && strcmp(link_kind(l), "tun") != 0) {
		hfail(r, BG_ERR_EXIST, "'%s' exists and is not a tap (it is '%s'): not touched",
		      a->tap, link_kind(l));
		rtnl_link_put(l);
		return BG_ERR_EXIST;
	}
	if (l && !(sysfs_num(a->tap, "tun_flags") & IFF_TAP)) {
		rtnl_link_put(l);
		return hfail(r, BG_ERR_EXIST, "'%s' exists and is a tun, not a tap: not touched",
			     a->tap);
	}
	if (l)
		rtnl_link_put(l);

	/* Make it (or take hold of the existing one) and set owner and persist. */
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return hfail(r, bg_errno(errno), "cannot open /dev/net/tun: %s", strerror(errno));
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, a->tap, strlen(a->tap) + 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int err = errno;
		close(fd);
		/* In use by its hypervisor: fine if it is the owner's. */
		long long owner = sysfs_num(a->tap, "owner");
		if (!(existed && err == EBUSY && owner == (long long)H.owner_uid))
			return hfail(r, err == EBUSY ? BG_ERR_BUSY : bg_errno(err),
				     "cannot create tap '%s': %s", a->tap, strerror(err));
	} else {
		if (ioctl(fd, TUNSETOWNER, (unsigned long)H.owner_uid) < 0 ||
		    ioctl(fd, TUNSETPERSIST, 1UL) < 0) {
			int err = errno;
			close(fd);
			if (!existed) {
				struct rtnl_link *gone = link_get(sk, a->tap, &e);
				if (gone) {
					rtnl_link_delete(sk, gone);
					rtnl_link_put(gone);
				}
			}
			return hfail(r, bg_errno(err), "cannot set owner of tap '%s': %s", a->tap,
				     strerror(err));
		}
		close(fd);
	}

	l = link_get(sk, a->tap, &e);
	if (!l)
		return hfail(r, BG_ERR_IO, "tap '%s' vanished after it was created", a->tap);
	int ifindex = rtnl_link_get_ifindex(l);
	if (rtnl_link_get_master(l) != br_index || !(rtnl_link_get_flags(l) & IFF_UP)) {
		struct rtnl_link *ch = rtnl_link_alloc();
		rtnl_link_set_master(ch, br_index);
		rtnl_link_set_flags(ch, IFF_UP);
		e = rtnl_link_change(sk, l, ch, 0);
		rtnl_link_put(ch);
		if (e < 0)
			rc = hfail(r, nl_code(e), "cannot attach tap '%s' to '%s': %s", a->tap,
				   a->bridge, nl_geterror(e));
	}
	rtnl_link_put(l);
	if (rc == 0 && (e = set_isolated(sk, ifindex)) < 0)
		rc = hfail(r, nl_code(e), "cannot isolate bridge port '%s': %s", a->tap,
			   nl_geterror(e));
	if (rc)
		return rc;
	msgpack_pack_map(&r->pk, 3);
	mpk_kv_str(&r->pk, "tap", a->tap);
	mpk_kv_int(&r->pk, "ifindex", ifindex);
	mpk_kv_bool(&r->pk, "created", !existed);
	return 0;
}

int op_tap_remove(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	NET_SOCK(c, r);
	int e;
	struct rtnl_link *l = link_get(sk, a->tap, &e);
	if (e)
		return hfail(r, nl_code(e), "reading link '%s': %s", a->tap, nl_geterror(e));
	bool removed = false;
	if (l) {
		if (strcmp(link_kind(l), "tun") != 0) {
			hfail(r, BG_ERR_EXIST, "'%s' is not a tap (it is '%s'): not removed", a->tap,
			      link_kind(l));
			rtnl_link_put(l);
			return BG_ERR_EXIST;
		}
		e = rtnl_link_delete(sk, l);
		rtnl_link_put(l);
		if (e < 0 && e != -NLE_OBJ_NOTFOUND && e != -NLE_NODEV)
			return hfail(r, nl_code(e), "cannot remove tap '%s': %s", a->tap,
				     nl_geterror(e));
		removed = e == 0;
	}
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "removed", removed);
	return 0;
}

/* ---- inventory: taps and bridges with banger's prefixes ---- */

int net_inventory(struct hconn *c, msgpack_packer *pk)
{
	char err[256];
	struct nl_sock *sk = net_sock(c, err, sizeof(err));
	struct nl_cache *cache = NULL;
	if (sk && rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache) < 0)
		cache = NULL;
	/* two passes per array: count, then pack */
	for (int kind = 0; kind < 2; kind++) {
		size_t n = 0;
		for (int pass = 0; pass < 2; pass++) {
			if (pass == 1) {
				mpk_pack_str(pk, kind == 0 ? "taps" : "bridges");
				msgpack_pack_array(pk, n);
			}
			if (!cache)
				continue;
			for (struct nl_object *o = nl_cache_get_first(cache); o;
			     o = nl_cache_get_next(o)) {
				struct rtnl_link *l = (struct rtnl_link *)o;
				const char *name = rtnl_link_get_name(l);
				bool want = kind == 0 ? proto_is_tap_name(name) &&
								!strcmp(link_kind(l), "tun")
						      : proto_is_bridge_name(name);
				if (!want)
					continue;
				if (pass == 0) {
					n++;
					continue;
				}
				if (kind == 1) {
					msgpack_pack_map(pk, 1);
					mpk_kv_str(pk, "name", name);
					continue;
				}
				int m = rtnl_link_get_master(l);
				struct rtnl_link *ml = m ? rtnl_link_get(cache, m) : NULL;
				msgpack_pack_map(pk, 3);
				mpk_kv_str(pk, "name", name);
				mpk_kv_str(pk, "master", ml ? rtnl_link_get_name(ml) : NULL);
				mpk_kv_int(pk, "owner", sysfs_num(name, "owner"));
				if (ml)
					rtnl_link_put(ml);
			}
		}
	}
	if (cache)
		nl_cache_free(cache);
	return 0;
}
