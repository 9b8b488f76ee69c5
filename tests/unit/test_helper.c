/*
 * test_helper.c: unit tests for the root helper's protocol checks
 * (helper/proto.c) and bangerd's side of it (helper/client.c): frame
 * lengths, the allocation-free pre-scan, the envelope, exact field sets,
 * every value check, the policy, and the undo records' inverse table.
 * The helper itself is tested for real in tests/integration/t_helper.sh.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "err.h"
#include "mpk.h"
#include "proto.h"
#include "test.h"
#include "util.h"

static const struct hp_policy pol = {
	.runtime_dir = "/run/banger",
	.state_dir = "/var/lib/banger",
	.bridge = "bgbr0",
	.net = (10u << 24) | (213u << 16),
	.prefix = 24,
};

TEST(helper_frame_len)
{
	unsigned char h[4] = {0, 0, 0, 0};
	CHECK_EQ_INT(proto_frame_len(h), BG_ERR_PROTO);
	h[2] = 1; /* 256 */
	CHECK_EQ_INT(proto_frame_len(h), 256);
	h[1] = 1, h[2] = 0, h[3] = 0; /* 65536: the limit itself */
	CHECK_EQ_INT(proto_frame_len(h), HP_MAX_FRAME);
	h[3] = 1; /* one more */
	CHECK_EQ_INT(proto_frame_len(h), BG_ERR_TOOBIG);
	h[0] = 0xff; /* more than bangerd's own limit too */
	CHECK_EQ_INT(proto_frame_len(h), BG_ERR_TOOBIG);
}

/* Decode bytes given as a string literal of n bytes. */
static int dec(const char *b, size_t n)
{
	msgpack_unpacked up;
	int rc = proto_decode(b, n, &up);
	if (rc == 0)
		msgpack_unpacked_destroy(&up);
	return rc;
}

TEST(helper_prescan_bounds_allocation)
{
	/* {"a": array32 claiming 2^32-1 elements} in 8 bytes */
	CHECK_EQ_INT(dec("\x81\xa1" "a\xdd\xff\xff\xff\xff", 8), BG_ERR_PROTO);
	CHECK_EQ_INT(dec("\x81\xa1" "a\xdf\x7f\xff\xff\xff", 8), BG_ERR_PROTO); /* map32 */
	CHECK_EQ_INT(dec("\x81\xa1" "a\xdb\xff\xff\xff\xff", 8), BG_ERR_PROTO); /* str32 */
	CHECK_EQ_INT(dec("\x81\xa1" "a\x92\x01", 5), BG_ERR_PROTO);     /* short array */
	CHECK_EQ_INT(dec("\x81\xa1" "a\x92\x01\x02", 6), 0);
	CHECK_EQ_INT(dec("\x81\xa1" "a\x01\x00", 5), BG_ERR_PROTO);     /* trailing byte */
	CHECK_EQ_INT(dec("\x81\xa1" "a\xc1", 4), BG_ERR_PROTO);         /* never-used byte */
	CHECK_EQ_INT(dec("\x93\x01\x02\x03", 4), BG_ERR_PROTO);          /* not a map */
	CHECK_EQ_INT(dec("\x81\xa1" "a\xcb\x00\x00\x00\x00\x00\x00\xf0\x3f", 12), 0); /* float64 */
	CHECK_EQ_INT(dec("\x81\xa1" "a\xd8\x01" "0123456789abcdef", 21), 0); /* fixext16 */
	/* deep nesting within bounds decodes (msgpack-c's own depth limit aside) */
	char deep[40];
	deep[0] = (char)0x81, deep[1] = (char)0xa1, deep[2] = 'a';
	for (int i = 3; i < 19; i++)
		deep[i] = (char)0x91;
	deep[19] = 0x01;
	CHECK_EQ_INT(dec(deep, 20), 0);
}

TEST(helper_tap_names)
{
	char err[256];
	const char *ok[] = {"bg0", "bg0a1b2c3d", "bg0123456789abc"};
	const char *bad[] = {"", "bg", "b", "eth0", "BG01", "bg0A", "bgg1", "bgbr0",
			     "bg0123456789abcd", "bg-01", "bg 1", "bg01\n"};
	for (size_t i = 0; i < ARRAY_LEN(ok); i++)
		CHECK_EQ_INT(proto_check_tap(ok[i], strlen(ok[i]), err, sizeof(err)), 0);
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		CHECK_EQ_INT(proto_check_tap(bad[i], strlen(bad[i]), err, sizeof(err)),
			     BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_tap("bg0\0x", 5, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "'bg0\\x00x' is not a banger tap name");
	CHECK(proto_is_tap_name("bg01"));
	CHECK(!proto_is_tap_name("bgbr0"));
}

TEST(helper_bridge_and_dm_names)
{
	char err[256];
	CHECK_EQ_INT(proto_check_bridge(&pol, "bgbr0", 5, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_bridge(&pol, "bgbr1", 5, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "is not banger's bridge (the install config names 'bgbr0')");
	CHECK_EQ_INT(proto_check_bridge(&pol, "bgbr0\0", 6, err, sizeof(err)), BG_ERR_INVAL);
	CHECK(proto_is_bridge_name("bgbr0"));
	CHECK(proto_is_bridge_name("bgbr"));
	CHECK(proto_is_bridge_name("bgbrabcdefghijk"));
	CHECK(!proto_is_bridge_name("bgbrabcdefghijkl"));
	CHECK(!proto_is_bridge_name("bgbr-0"));
	CHECK(!proto_is_bridge_name("br0"));
	CHECK_EQ_INT(proto_check_dm("bg-vm-1", 7, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_dm("bg-", 3, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_dm("root", 4, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_dm("bg-VM", 5, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_dm("bg-a/b", 6, err, sizeof(err)), BG_ERR_INVAL);
	char longname[80];
	memset(longname, 'a', sizeof(longname));
	memcpy(longname, "bg-", 3);
	CHECK_EQ_INT(proto_check_dm(longname, 63, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_dm(longname, 64, err, sizeof(err)), BG_ERR_INVAL);
}

TEST(helper_addresses_in_range)
{
	char err[256];
	uint32_t a;
	CHECK_EQ_INT(proto_check_addr(&pol, "10.213.0.2", 10, &a, err, sizeof(err)), 0);
	CHECK_EQ_INT(a, (10u << 24) | (213u << 16) | 2);
	CHECK_EQ_INT(proto_check_addr(&pol, "10.213.0.254", 12, &a, err, sizeof(err)), 0);
	const char *bad[] = {"10.213.0.0", "10.213.0.1", "10.213.0.255", "10.213.1.2",
			     "10.214.0.2", "169.254.169.254", "10.213.0.2 ", " 10.213.0.2",
			     "10.213.0", "10.213.0.2.1", "::1", "", "10.213.0.256",
			     "010.213.0.2"};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		CHECK_EQ_INT(proto_check_addr(&pol, bad[i], strlen(bad[i]), &a, err, sizeof(err)),
			     BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_addr(&pol, "10.214.0.2", 10, &a, err, sizeof(err)), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "10.214.0.2 is outside banger's range 10.213.0.0/24");
	struct hp_policy small = pol;
	small.net = (192u << 24) | (168u << 16) | (7u << 8) | 8;
	small.prefix = 29; /* .8 - .15: .9 gateway, .15 broadcast */
	CHECK_EQ_INT(proto_check_addr(&small, "192.168.7.10", 12, &a, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_addr(&small, "192.168.7.14", 12, &a, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_addr(&small, "192.168.7.9", 11, &a, err, sizeof(err)),
		     BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_addr(&small, "192.168.7.15", 12, &a, err, sizeof(err)),
		     BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_addr(&small, "192.168.7.16", 12, &a, err, sizeof(err)),
		     BG_ERR_INVAL);
}

static int path(unsigned bases, const char *p, int *base, size_t *off)
{
	char err[2048];
	return proto_check_path(&pol, bases, p, strlen(p), base, off, err, sizeof(err));
}

TEST(helper_paths_under_bangers_dirs)
{
	int base;
	size_t off;
	const unsigned both = HP_BASE_STATE | HP_BASE_RUNTIME;
	CHECK_EQ_INT(path(HP_BASE_STATE, "/var/lib/banger/images/a.ext4", &base, &off), 0);
	CHECK_EQ_INT(base, HP_BASE_STATE);
	CHECK_EQ_INT(off, strlen("/var/lib/banger/"));
	CHECK_EQ_INT(path(both, "/run/banger/vms/x/serial.sock", &base, &off), 0);
	CHECK_EQ_INT(base, HP_BASE_RUNTIME);
	const char *bad[] = {
		"/run/banger/x",              /* runtime, but only state allowed */
		"/var/lib/banger",            /* the directory itself */
		"/var/lib/banger/",           /* trailing slash */
		"/var/lib/banger2/x",         /* a sibling that starts the same */
		"/var/lib/banger/../../etc/shadow",
		"/var/lib/banger/a/..",
		"/var/lib/banger/./a",
		"/var/lib/banger//a",
		"var/lib/banger/a",
		"",
		"/var/lib/banger/a\nb",
		"/etc/shadow",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		int rc = path(HP_BASE_STATE, bad[i], &base, &off);
		if (rc != BG_ERR_INVAL)
			test_fail(__FILE__, __LINE__, "path '%s' accepted", bad[i]);
	}
	char err[2048];
	CHECK_EQ_INT(proto_check_path(&pol, HP_BASE_STATE, "/var/lib/banger/a\0b", 18, &base, &off,
				      err, sizeof(err)),
		     BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "control character");
	char *longp = xcalloc(1, HP_PATH_MAX + 2);
	memcpy(longp, "/var/lib/banger/", 16);
	memset(longp + 16, 'a', HP_PATH_MAX - 15);
	CHECK_EQ_INT(path(HP_BASE_STATE, longp, &base, &off), BG_ERR_INVAL);
	longp[HP_PATH_MAX] = '\0';
	CHECK_EQ_INT(path(HP_BASE_STATE, longp, &base, &off), 0);
	free(longp);
}

TEST(helper_devices_and_signals)
{
	char err[256];
	int minor, sig;
	CHECK_EQ_INT(proto_check_loopdev("/dev/loop0", 10, &minor, err, sizeof(err)), 0);
	CHECK_EQ_INT(minor, 0);
	CHECK_EQ_INT(proto_check_loopdev("/dev/loop1048575", 16, &minor, err, sizeof(err)), 0);
	CHECK_EQ_INT(minor, 1048575);
	const char *bad[] = {"/dev/loop", "/dev/loop01", "/dev/loop1048576", "/dev/sda",
			     "/dev/loop-control", "/dev/loop1 ", "/dev/../dev/loop1"};
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		CHECK_EQ_INT(proto_check_loopdev(bad[i], strlen(bad[i]), &minor, err, sizeof(err)),
			     BG_ERR_INVAL);
	CHECK_EQ_INT(proto_check_signal("TERM", 4, &sig, err, sizeof(err)), 0);
	CHECK_EQ_INT(sig, SIGTERM);
	CHECK_EQ_INT(proto_check_signal("KILL", 4, &sig, err, sizeof(err)), 0);
	CHECK_EQ_INT(sig, SIGKILL);
	CHECK_EQ_INT(proto_check_signal("INT", 3, &sig, err, sizeof(err)), 0);
	CHECK_EQ_INT(proto_check_signal("HUP", 3, &sig, err, sizeof(err)), 0);
	const char *nsig[] = {"STOP", "SIGTERM", "term", "9", "", "TERMX", "TER"};
	for (size_t i = 0; i < ARRAY_LEN(nsig); i++)
		CHECK_EQ_INT(proto_check_signal(nsig[i], strlen(nsig[i]), &sig, err, sizeof(err)),
			     BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "is not allowed (TERM, KILL, INT or HUP)");
}

/* Pack a request map from (key, kind, value) triples: kind 's' str, 'u'
 * uint, 'm' empty map, 'n' nil, 'a' array of one. */
static msgpack_sbuffer *build(int n, const char *const kv[][3])
{
	msgpack_sbuffer *sb = msgpack_sbuffer_new();
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (size_t)n);
	for (int i = 0; i < n; i++) {
		mpk_pack_str(&pk, kv[i][0]);
		switch (kv[i][1][0]) {
		case 's': mpk_pack_str(&pk, kv[i][2]); break;
		case 'u': msgpack_pack_uint64(&pk, strtoull(kv[i][2], NULL, 10)); break;
		case 'm': msgpack_pack_map(&pk, 0); break;
		case 'n': msgpack_pack_nil(&pk); break;
		case 'a': msgpack_pack_array(&pk, 1), mpk_pack_str(&pk, kv[i][2]); break;
		}
	}
	return sb;
}

/* Envelope of a request: rc, with the message into msg (caller frees). */
static int envelope(int n, const char *const kv[][3], struct hp_request *r, char **msg)
{
	msgpack_sbuffer *sb = build(n, kv);
	msgpack_unpacked up;
	int rc = proto_decode(sb->data, sb->size, &up);
	*msg = NULL;
	if (rc == 0) {
		rc = proto_parse_envelope(&up.data, r, msg);
		msgpack_unpacked_destroy(&up);
	}
	msgpack_sbuffer_free(sb);
	return rc;
}

TEST(helper_envelope_strict)
{
	struct hp_request r;
	char *msg;
	const char *const good[][3] = {
		{"id", "u", "7"}, {"method", "s", "ping"}, {"op", "s", "job-42-1"}, {"params", "m", ""}};
	CHECK_EQ_INT(envelope(4, good, &r, &msg), 0);
	CHECK_EQ_INT(r.id, 7);
	CHECK_EQ_STR(r.op, "job-42-1");
	REQUIRE(r.method != NULL);
	CHECK_EQ_STR(r.method->name, "ping");

	const char *const noop[][3] = {{"id", "u", "7"}, {"method", "s", "ping"}, {"params", "m", ""}};
	CHECK_EQ_INT(envelope(3, noop, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "missing 'op'");
	CHECK_EQ_INT(r.id, 7); /* the error reply can name the request */
	free(msg);

	const char *const extra[][3] = {{"id", "u", "8"}, {"method", "s", "ping"}, {"op", "s", "o"},
					{"params", "m", ""}, {"sudo", "s", "yes"}};
	CHECK_EQ_INT(envelope(5, extra, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "unknown request field 'sudo'");
	CHECK_EQ_INT(r.id, 8);
	free(msg);

	const char *const dup[][3] = {{"id", "u", "1"}, {"method", "s", "ping"}, {"op", "s", "o"},
				      {"params", "m", ""}, {"method", "s", "inventory"}};
	CHECK_EQ_INT(envelope(5, dup, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "key 'method' appears twice");
	free(msg);

	const char *const badop[][3] = {
		{"id", "u", "1"}, {"method", "s", "ping"}, {"op", "s", "job 42"}, {"params", "m", ""}};
	CHECK_EQ_INT(envelope(4, badop, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "may hold only");
	free(msg);

	const char *const unknown[][3] = {
		{"id", "u", "3"}, {"method", "s", "exec"}, {"op", "s", "o"}, {"params", "m", ""}};
	CHECK_EQ_INT(envelope(4, unknown, &r, &msg), BG_ERR_INVAL); /* answered, connection kept */
	CHECK_STR_CONTAINS(msg, "unknown method 'exec'");
	free(msg);

	const char *const noparams[][3] = {
		{"id", "u", "3"}, {"method", "s", "ping"}, {"op", "s", "o"}, {"params", "n", ""}};
	CHECK_EQ_INT(envelope(4, noparams, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "'params' must be a map");
	free(msg);

	const char *const strid[][3] = {
		{"id", "s", "3"}, {"method", "s", "ping"}, {"op", "s", "o"}, {"params", "m", ""}};
	CHECK_EQ_INT(envelope(4, strid, &r, &msg), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(msg, "'id' must be an unsigned integer");
	free(msg);
}

/* Check params (a map built from kv) for method name. */
static int params(const char *method, int n, const char *const kv[][3], struct hp_args *a,
		  char **msg)
{
	msgpack_sbuffer *sb = build(n, kv);
	msgpack_unpacked up;
	int rc = proto_decode(sb->data, sb->size, &up);
	*msg = NULL;
	const struct hp_method *m = proto_method(method, strlen(method));
	if (rc == 0) {
		if (m)
			rc = proto_check_params(m, &pol, &up.data, a, msg);
		msgpack_unpacked_destroy(&up);
	}
	msgpack_sbuffer_free(sb);
	return m ? rc : BG_ERR_NOENT;
}

TEST(helper_params_exact_fields)
{
	struct hp_args a;
	char *msg;
	const char *const tap[][3] = {{"tap", "s", "bg0a"}, {"bridge", "s", "bgbr0"}};
	CHECK_EQ_INT(params("net.tap.create", 2, tap, &a, &msg), 0);
	CHECK_EQ_STR(a.tap, "bg0a");
	CHECK_EQ_STR(a.bridge, "bgbr0");

	CHECK_EQ_INT(params("net.tap.create", 1, tap, &a, &msg), BG_ERR_INVAL);
	CHECK_EQ_STR(msg, "net.tap.create needs field 'bridge'");
	free(msg);

	const char *const extra[][3] = {{"tap", "s", "bg0a"}, {"bridge", "s", "bgbr0"},
					{"owner", "u", "0"}};
	CHECK_EQ_INT(params("net.tap.create", 3, extra, &a, &msg), BG_ERR_INVAL);
	CHECK_EQ_STR(msg, "net.tap.create takes no field 'owner'");
	free(msg);

	const char *const wrong[][3] = {{"tap", "u", "5"}, {"bridge", "s", "bgbr0"}};
	CHECK_EQ_INT(params("net.tap.create", 2, wrong, &a, &msg), BG_ERR_INVAL);
	CHECK_EQ_STR(msg, "'tap' must be a string");
	free(msg);

	const char *const list[][3] = {{"tap", "a", "bg0a"}, {"bridge", "s", "bgbr0"}};
	CHECK_EQ_INT(params("net.tap.create", 2, list, &a, &msg), BG_ERR_INVAL);
	free(msg);

	const char *const dup[][3] = {{"tap", "s", "bg0a"}, {"tap", "s", "eth0"}};
	CHECK_EQ_INT(params("net.tap.remove", 2, dup, &a, &msg), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(msg, "key 'tap' appears twice");
	free(msg);

	const char *const sig[][3] = {{"pid", "u", "0"}, {"signal", "s", "TERM"}};
	CHECK_EQ_INT(params("proc.signal", 2, sig, &a, &msg), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(msg, "pid 0 is not between 1 and");
	free(msg);

	const char *const loop[][3] = {{"path", "s", "/run/banger/x.img"}, {"ro", "s", "true"}};
	CHECK_EQ_INT(params("loop.attach", 2, loop, &a, &msg), BG_ERR_INVAL);
	free(msg);

	const char *const chown[][3] = {{"path", "s", "/run/banger/vms/a/s.sock"}};
	CHECK_EQ_INT(params("fs.chown", 1, chown, &a, &msg), 0);
	CHECK_EQ_INT(a.base, HP_BASE_RUNTIME);
	CHECK_EQ_STR(a.rel, "vms/a/s.sock");
	CHECK_EQ_INT(params("loop.detach", 1, chown, &a, &msg), BG_ERR_INVAL); /* state only */
	free(msg);

	const char *const dm[][3] = {{"dm", "s", "bg-x"}, {"origin", "s", "/dev/loop3"},
				     {"cow", "s", "/dev/loop3"}};
	CHECK_EQ_INT(params("dm.snapshot.create", 3, dm, &a, &msg), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(msg, "different loop devices");
	free(msg);

	CHECK_EQ_INT(params("ping", 0, tap, &a, &msg), 0);
	CHECK_EQ_INT(params("inventory", 1, tap, &a, &msg), BG_ERR_INVAL);
	free(msg);
}

TEST(helper_policy_checked)
{
	char *msg = NULL;
	CHECK_EQ_INT(proto_policy_check(&pol, &msg), 0);
	struct hp_policy p = pol;
	p.runtime_dir = "/var/lib/banger/run";
	CHECK_EQ_INT(proto_policy_check(&p, &msg), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(msg, "must not contain each other");
	free(msg);
	p = pol;
	p.state_dir = "/";
	CHECK_EQ_INT(proto_policy_check(&p, &msg), BG_ERR_INVAL);
	free(msg);
	p = pol;
	p.state_dir = "/var/lib/../banger";
	CHECK_EQ_INT(proto_policy_check(&p, &msg), BG_ERR_INVAL);
	free(msg);
	p = pol;
	p.bridge = "br0";
	CHECK_EQ_INT(proto_policy_check(&p, &msg), BG_ERR_INVAL);
	free(msg);
	p = pol;
	p.net |= 1;
	CHECK_EQ_INT(proto_policy_check(&p, &msg), BG_ERR_INVAL);
	free(msg);
	CHECK_EQ_INT(proto_gateway(&pol), (10u << 24) | (213u << 16) | 1);
}

TEST(helper_inverse_table)
{
	/* every method with an inverse: the inverse takes a subset of its fields
	 * and has no inverse itself */
	int with = 0;
	for (int i = 0; i < HP_M_COUNT_; i++) {
		const struct hp_method *m = &hp_methods[i];
		CHECK_EQ_INT(m->id, i);
		const struct hp_method *inv = helper_inverse(m);
		if (!inv)
			continue;
		with++;
		if ((inv->fields & ~m->fields) != 0)
			test_fail(__FILE__, __LINE__, "%s needs fields %s does not have", inv->name,
				  m->name);
		CHECK(helper_inverse(inv) == NULL);
	}
	CHECK_EQ_INT(with, 5);
	CHECK_EQ_STR(helper_inverse(&hp_methods[HP_M_TAP_CREATE])->name, "net.tap.remove");
	CHECK_EQ_STR(helper_inverse(&hp_methods[HP_M_LOOP_ATTACH])->name, "loop.detach");
	CHECK_EQ_STR(helper_inverse(&hp_methods[HP_M_NAT_ENSURE])->name, "net.nat.clear");
	CHECK_EQ_STR(helper_inverse(&hp_methods[HP_M_BRIDGE_ENSURE])->name, "net.bridge.remove");
	CHECK_EQ_STR(helper_inverse(&hp_methods[HP_M_DM_CREATE])->name, "dm.snapshot.remove");
	CHECK(helper_inverse(&hp_methods[HP_M_PROC_SIGNAL]) == NULL);
}

TEST(helper_plan_record)
{
	struct hp_args a;
	memset(&a, 0, sizeof(a));
	memcpy(a.path, "/var/lib/banger/jobs/4/cow.img", 31);
	a.ro = false;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	helper_plan(&pk, HP_M_LOOP_ATTACH, &a);
	msgpack_unpacked up;
	REQUIRE(proto_decode(sb.data, sb.size, &up) == 0);
	char *m = mpk_dup_str(&up.data, "helper");
	CHECK_EQ_STR(m, "loop.attach");
	free(m);
	const msgpack_object *p = mpk_get(&up.data, "params");
	char *path = mpk_dup_str(p, "path");
	CHECK_EQ_STR(path, "/var/lib/banger/jobs/4/cow.img");
	free(path);
	bool ro = true;
	CHECK_EQ_INT(mpk_get_bool(p, "ro", &ro), 0);
	CHECK(!ro);
	/* and the record's params pass the helper's own check */
	struct hp_args back;
	char *msg = NULL;
	CHECK_EQ_INT(proto_check_params(&hp_methods[HP_M_LOOP_ATTACH], &pol, p, &back, &msg), 0);
	free(msg);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
}
