/*
 * inventory.c: the `inventory` method: everything on this host (in the
 * helper's network namespace for links and NAT) that carries banger's
 * prefixes, so that bangerd can reclaim what no job owns after a crash:
 * taps ("bg" + hex) and bridges ("bgbr..."), loop devices backed by files
 * under banger's directories, dm devices ("bg-..."), NATed guest addresses,
 * and processes banger started (ops_proc.c's rule).  Read-only.
 */
#include "helper.h"
#include "mpk.h"

int op_inventory(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	msgpack_packer *pk = &r->pk;
	msgpack_pack_map(pk, 7);
	net_inventory(c, pk);  /* taps, bridges */
	loop_inventory(pk);    /* loops */
	dm_inventory(pk);      /* dms, dm_supported */
	nat_inventory(pk);     /* nat */
	proc_inventory(pk);    /* procs */
	return 0;
}
