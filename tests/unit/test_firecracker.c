/*
 * test_firecracker.c: the Firecracker driver's plan (worker/firecracker.c):
 * argv, the API bodies against the published swagger's required fields,
 * the jail's paths.  Pure: nothing is started (no Firecracker can run here;
 * tests/integration/t_firecracker.sh drives the driver against a fake).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "firecracker.h"
#include "hv.h"
#include "test.h"
#include "util.h"

static const struct fc_request *find(const struct fc_plan *p, const char *path)
{
	for (size_t i = 0; i < p->nreq; i++)
		if (!strcmp(p->req[i].path, path))
			return &p->req[i];
	return NULL;
}

static json_t *body(const struct fc_plan *p, const char *path)
{
	const struct fc_request *r = find(p, path);
	return r ? json_loads(r->body, 0, NULL) : NULL;
}

static const char *jstr(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k));
}

TEST(fc_plan_bodies)
{
	struct fc_config c = {
		.fc_bin = "/opt/fc/firecracker", .name = "box-7", .run_dir = "/run/b/vms/7",
		.kernel = "/k/vmlinux", .initrd = "/k/initrd", .rootfs = "/s/root.raw",
		.extra_disk = "/s/ws.raw", .tap = "bg00000007", .mac = "52:54:00:00:00:07",
		.guest_ip = "10.0.0.2/24,10.0.0.1", .vcpus = 2, .memory_mb = 512,
		.append = "banger.hostname=box-7",
	};
	struct fc_plan p;
	char *err = NULL;
	REQUIRE(fc_plan_build(&c, &p, &err) == 0);
	CHECK_EQ_STR(p.argv[0], "/opt/fc/firecracker");
	CHECK_EQ_STR(p.argv[1], "--api-sock");
	CHECK_EQ_STR(p.argv[2], "/run/b/vms/7/fc.sock");
	CHECK_EQ_STR(p.argv[3], "--id");
	CHECK_EQ_STR(p.argv[4], "box-7");
	CHECK(p.argv[5] == NULL);
	CHECK_EQ_STR(p.api_sock, "/run/b/vms/7/fc.sock");
	CHECK_EQ_STR(p.vsock_uds, "/run/b/vms/7/vsock.sock");
	CHECK(p.chroot == NULL);
	CHECK_EQ_INT(p.nlinks, 0);
	/* order: logger first, InstanceStart last */
	REQUIRE(p.nreq == 8);
	CHECK_EQ_STR(p.req[0].path, "/logger");
	CHECK_EQ_STR(p.req[p.nreq - 1].path, "/actions");
	CHECK_EQ_STR(p.req[p.nreq - 1].body, "{\"action_type\":\"InstanceStart\"}");

	json_t *j = body(&p, "/machine-config");
	REQUIRE(j);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "vcpu_count")), 2);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "mem_size_mib")), 512);
	json_decref(j);
	j = body(&p, "/boot-source");
	REQUIRE(j);
	CHECK_EQ_STR(jstr(j, "kernel_image_path"), "/k/vmlinux");
	CHECK_EQ_STR(jstr(j, "initrd_path"), "/k/initrd");
	const char *args = jstr(j, "boot_args");
	CHECK_STR_CONTAINS(args, "console=ttyS0");
	CHECK_STR_CONTAINS(args, "banger.port=none");
	CHECK_STR_CONTAINS(args, "banger.root=/dev/vda");
	CHECK_STR_CONTAINS(args, "banger.ip=10.0.0.2/24,10.0.0.1");
	CHECK_STR_CONTAINS(args, "vmw_vsock_virtio_transport,virtio_net");
	CHECK_STR_CONTAINS(args, " banger.hostname=box-7");
	json_decref(j);
	j = body(&p, "/drives/rootfs");
	REQUIRE(j);
	CHECK_EQ_STR(jstr(j, "drive_id"), "rootfs");
	CHECK_EQ_STR(jstr(j, "path_on_host"), "/s/root.raw");
	CHECK(json_is_false(json_object_get(j, "is_root_device")));
	CHECK(json_is_false(json_object_get(j, "is_read_only")));
	json_decref(j);
	j = body(&p, "/drives/workspace");
	REQUIRE(j);
	CHECK_EQ_STR(jstr(j, "path_on_host"), "/s/ws.raw");
	json_decref(j);
	j = body(&p, "/network-interfaces/eth0");
	REQUIRE(j);
	CHECK_EQ_STR(jstr(j, "iface_id"), "eth0");
	CHECK_EQ_STR(jstr(j, "host_dev_name"), "bg00000007");
	CHECK_EQ_STR(jstr(j, "guest_mac"), "52:54:00:00:00:07");
	json_decref(j);
	j = body(&p, "/vsock");
	REQUIRE(j);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "guest_cid")), 3);
	CHECK_EQ_STR(jstr(j, "uds_path"), "/run/b/vms/7/vsock.sock");
	json_decref(j);
	j = body(&p, "/logger");
	REQUIRE(j);
	CHECK_EQ_STR(jstr(j, "log_path"), "/run/b/vms/7/firecracker.log");
	json_decref(j);
	fc_plan_release(&p);
	free(err);
}

TEST(fc_plan_minimal_and_refusals)
{
	struct fc_config c = {.name = "a", .run_dir = "/r", .kernel = "/k", .initrd = "/i"};
	struct fc_plan p;
	char *err = NULL;
	REQUIRE(fc_plan_build(&c, &p, &err) == 0);
	CHECK_EQ_STR(p.argv[0], "firecracker");
	CHECK(find(&p, "/drives/rootfs") == NULL);
	CHECK(find(&p, "/network-interfaces/eth0") == NULL);
	json_t *j = body(&p, "/machine-config");
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "vcpu_count")), 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "mem_size_mib")), 256);
	json_decref(j);
	j = body(&p, "/boot-source");
	CHECK(strstr(jstr(j, "boot_args"), "banger.root") == NULL);
	CHECK(strstr(jstr(j, "boot_args"), "virtio_net") == NULL);
	json_decref(j);
	fc_plan_release(&p);

	c.vcpus = 33;
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "vcpus 33");
	c.vcpus = 1;
	c.guest_ip = "1.2.3.4/24 x";
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "guest address");
	c.guest_ip = NULL;
	c.kernel = NULL;
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "kernel");
	c.kernel = "/k";
	char longdir[120];
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = 0;
	c.run_dir = longdir;
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "too long for a Unix socket path");
	free(err);
}

TEST(fc_plan_jailer_argv_and_paths)
{
	struct fc_config c = {
		.fc_bin = "/usr/local/bin/firecracker", .name = "box-7", .run_dir = "/run/b/vms/7",
		.kernel = "/k/vmlinux", .initrd = "/k/initrd", .rootfs = "/s/root.raw",
		.extra_disk = "/s/ws.raw", .jailer_bin = "/usr/local/bin/jailer",
		.jail_uid = 123, .jail_gid = 456, .chroot_base = "/srv/jl",
	};
	struct fc_plan p;
	char *err = NULL;
	REQUIRE(fc_plan_build(&c, &p, &err) == 0);
	static const char *const want[] = {
		"/usr/local/bin/jailer", "--id", "box-7", "--exec-file",
		"/usr/local/bin/firecracker", "--uid", "123", "--gid", "456",
		"--chroot-base-dir", "/srv/jl", "--", "--api-sock", "/fc.sock", NULL};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (!want[i]) {
			CHECK(p.argv[i] == NULL);
			break;
		}
		REQUIRE(p.argv[i]);
		CHECK_EQ_STR(p.argv[i], want[i]);
	}
	/* docs/jailer.md: <chroot_base>/<exec_file_name>/<id>/root */
	CHECK_EQ_STR(p.chroot, "/srv/jl/firecracker/box-7/root");
	CHECK_EQ_STR(p.api_sock, "/srv/jl/firecracker/box-7/root/fc.sock");
	CHECK_EQ_STR(p.vsock_uds, "/srv/jl/firecracker/box-7/root/vsock.sock");
	REQUIRE(p.nlinks == 4);
	CHECK_EQ_STR(p.links[0].src, "/k/vmlinux");
	CHECK_EQ_STR(p.links[0].dst, "/srv/jl/firecracker/box-7/root/vmlinux");
	CHECK(!p.links[0].chown);
	CHECK_EQ_STR(p.links[2].dst, "/srv/jl/firecracker/box-7/root/rootfs.raw");
	CHECK(p.links[2].chown);
	/* the API is given paths inside the chroot */
	json_t *j = body(&p, "/boot-source");
	CHECK_EQ_STR(jstr(j, "kernel_image_path"), "/vmlinux");
	CHECK_EQ_STR(jstr(j, "initrd_path"), "/initrd");
	json_decref(j);
	j = body(&p, "/drives/workspace");
	CHECK_EQ_STR(jstr(j, "path_on_host"), "/workspace.raw");
	json_decref(j);
	j = body(&p, "/vsock");
	CHECK_EQ_STR(jstr(j, "uds_path"), "/vsock.sock");
	json_decref(j);
	fc_plan_release(&p);

	c.name = "bad_id";
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "jail id 'bad_id'");
	c.name = "ok";
	c.fc_bin = "firecracker";
	CHECK_EQ_INT(fc_plan_build(&c, &p, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "absolute path");
	free(err);
}

TEST(hv_driver_names_and_qcow2_refused)
{
	enum hv_driver d;
	CHECK(hv_driver_parse("firecracker", &d) == 0 && d == HV_FIRECRACKER);
	CHECK(hv_driver_parse("qemu", &d) == 0 && d == HV_QEMU);
	CHECK_EQ_INT(hv_driver_parse("xen", &d), BG_ERR_INVAL);
	CHECK_EQ_STR(hv_driver_name(HV_FIRECRACKER), "firecracker");
	struct hv_config c = {.driver = HV_FIRECRACKER, .name = "a", .run_dir = "/nonexistent/r",
			      .kernel = "/k", .initrd = "/i", .rootfs = "/r.qcow2",
			      .rootfs_format = "qcow2"};
	struct hv_vm *vm = NULL;
	char *err = NULL;
	CHECK_EQ_INT(hv_start(&c, &vm, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "raw disks only");
	CHECK(vm == NULL);
	free(err);
}
