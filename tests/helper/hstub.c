/*
 * hstub.c: drives banger-helper through bangerd's stubs and undo records
 * (helper/client.c) the way a step would: plan (pack the undo record), do
 * (the stub), undo (helper_undo with the stored record), undo again (must
 * still succeed).  Each stage is checked through the inventory method.
 *
 *   hstub SOCK BRIDGE TAP ADDR BACKING-FILE
 *
 * Prints one line per stage; exits 0 when every check held.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "err.h"
#include "mpk.h"
#include "rpc.h"
#include "util.h"

static struct helper_client c;
static int failures;

#define CHECK(cond, ...)                                          \
	do {                                                      \
		if (!(cond)) {                                    \
			printf("FAIL: " __VA_ARGS__);             \
			printf("\n");                             \
			failures++;                               \
		}                                                 \
	} while (0)

static void must(int rc, char *err, const char *what)
{
	if (rc) {
		printf("FAIL: %s: %s\n", what, err ? err : "?");
		exit(1);
	}
	printf("ok %s\n", what);
}

/* Is there an entry in inventory array `key` whose `field` equals value? */
static bool listed(const char *key, const char *field, const char *value)
{
	msgpack_unpacked reply;
	const msgpack_object *res;
	char *err = NULL;
	if (helper_inventory(&c, "hstub-inv", &reply, &res, &err)) {
		printf("FAIL: inventory: %s\n", err);
		exit(1);
	}
	const msgpack_object *arr = mpk_get(res, key);
	bool found = false;
	for (uint32_t i = 0; arr && arr->type == MSGPACK_OBJECT_ARRAY && i < arr->via.array.size;
	     i++) {
		char *v = mpk_dup_str(&arr->via.array.ptr[i], field);
		found |= v && !strcmp(v, value);
		free(v);
	}
	msgpack_unpacked_destroy(&reply);
	return found;
}

/* Plan a call into a record the way a step's plan does (msgpack bytes),
 * then decode it back as the engine hands it to undo. */
static void plan(enum hp_method_id m, const struct hp_args *a, msgpack_unpacked *rec)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	helper_plan(&pk, m, a);
	if (rpc_decode(sb.data, sb.size, rec) != 0) { /* copies: sb can go */
		printf("FAIL: plan did not decode\n");
		exit(1);
	}
	msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: hstub SOCK BRIDGE TAP ADDR BACKING-FILE\n");
		return 2;
	}
	const char *bridge = argv[2], *tap = argv[3], *addr = argv[4], *file = argv[5];
	char *err = NULL;
	msgpack_unpacked rec;
	struct hp_args a;
	if (helper_connect(argv[1], &c, &err)) {
		printf("FAIL: %s\n", err);
		return 1;
	}
	must(helper_ping(&c, "hstub-1", &err), err, "ping");
	must(helper_bridge_ensure(&c, "hstub-1", bridge, &err), err, "bridge.ensure");

	/* tap: plan, do, undo, undo again */
	memset(&a, 0, sizeof(a));
	snprintf(a.tap, sizeof(a.tap), "%s", tap);
	snprintf(a.bridge, sizeof(a.bridge), "%s", bridge);
	plan(HP_M_TAP_CREATE, &a, &rec);
	must(helper_tap_create(&c, "hstub-1", tap, bridge, &err), err, "tap.create");
	CHECK(listed("taps", "name", tap), "tap %s not in the inventory after create", tap);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo tap.create");
	CHECK(!listed("taps", "name", tap), "tap %s still there after undo", tap);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo tap.create again");

	msgpack_unpacked_destroy(&rec);

	/* nat */
	memset(&a, 0, sizeof(a));
	snprintf(a.addr, sizeof(a.addr), "%s", addr);
	plan(HP_M_NAT_ENSURE, &a, &rec);
	must(helper_nat_ensure(&c, "hstub-1", addr, &err), err, "nat.ensure");
	CHECK(listed("nat", "addr", addr), "%s not NATed after ensure", addr);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo nat.ensure");
	CHECK(!listed("nat", "addr", addr), "%s still NATed after undo", addr);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo nat.ensure again");

	msgpack_unpacked_destroy(&rec);

	/* loop: the undo record names the backing file, not the device */
	memset(&a, 0, sizeof(a));
	snprintf(a.path, sizeof(a.path), "%s", file);
	a.ro = true;
	plan(HP_M_LOOP_ATTACH, &a, &rec);
	char dev[HP_DEV_MAX];
	int fd = -1;
	must(helper_loop_attach(&c, "hstub-1", file, true, dev, &fd, &err), err, "loop.attach");
	CHECK(fd >= 0, "no descriptor with loop.attach");
	CHECK(listed("loops", "device", dev), "%s not in the inventory", dev);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo loop.attach");
	/* we still hold the device: cleared when we close it (autoclear) */
	close(fd);
	for (int i = 0; i < 50 && listed("loops", "device", dev); i++)
		usleep(20000);
	CHECK(!listed("loops", "device", dev), "%s still attached after undo and close", dev);
	must(helper_undo(&c, "hstub-1", &rec.data, &err), err, "undo loop.attach again");

	msgpack_unpacked_destroy(&rec);

	/* a process that is gone: signalled false, not an error */
	bool sig = true;
	must(helper_proc_signal(&c, "hstub-1", 4194000, "TERM", &sig, &err), err,
	     "proc.signal (gone)");
	CHECK(!sig, "a missing process was reported signalled");

	/* no inverse: refused clearly */
	msgpack_unpacked bad;
	memset(&a, 0, sizeof(a));
	plan(HP_M_PING, &a, &bad);
	int rc = helper_undo(&c, "hstub-1", &bad.data, &err);
	CHECK(rc == BG_ERR_INVAL, "undo of ping: %d", rc);
	free(err);
	err = NULL;
	msgpack_unpacked_destroy(&bad);
	must(helper_bridge_remove(&c, "hstub-1", bridge, &err), err, "bridge.remove");
	helper_close(&c);
	printf("%s\n", failures ? "hstub: FAILED" : "hstub: all ok");
	return failures ? 1 : 0;
}
