/*
 * hv_tool.c: a test tool over worker/hv.h (both drivers) and
 * worker/cowdisk.h, for tests/integration/t_firecracker.sh.  Never
 * installed.  Each command is one process; a VM started by `start` keeps
 * running after the tool exits and later commands adopt it from its run
 * directory, as bangerd does after a restart.
 *
 *   hv-tool start --run-dir D --kernel K --initrd I [--driver qemu|firecracker]
 *                 [--rootfs R] [--ro] [--disk W] [--tap T] [--mac M] [--ip ADDR/P,GW]
 *                 [--vcpus N] [--mem MB] [--append P] [--name N] [--timeout S]
 *                 [--firecracker BIN] [--jailer BIN --uid U --gid G --chroot-base DIR]
 *                 [--accel auto|kvm|tcg]
 *        starts, waits for the agent (bounded); prints
 *        "pid=P driver=D accel=A boot_s=S guest_uptime_ms=U"; on failure kills
 *        what it started and exits 1 with the error on stderr.
 *   hv-tool adopt --run-dir D          prints "pid=P driver=D running=1"
 *   hv-tool exec  --run-dir D [--timeout S] (--sh LINE | -- ARGV...)
 *        exit code as vm-tool's: the command's, 128+N on signal N, 125 when it
 *        could not run.
 *   hv-tool stop  --run-dir D [--grace S]   prints "graceful=0|1"
 *   hv-tool kill  --run-dir D
 *   hv-tool cowdisk --base B --dest D [--no-reflink]   prints "method=M copied=N"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "cowdisk.h"
#include "err.h"
#include "hv.h"
#include "log.h"
#include "util.h"

static int die(const char *what, int rc, char *msg)
{
	fprintf(stderr, "hv-tool: %s: %s\n", what, msg ? msg : bg_strerror(rc));
	free(msg);
	return 1;
}

static int on_output(void *arg, int stream, const void *data, size_t len)
{
	fwrite(data, 1, len, stream == 2 ? stderr : stdout);
	fflush(stream == 2 ? stderr : stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct hv_config c = {.driver = HV_FIRECRACKER, .accel = QEMU_ACCEL_AUTO};
	const char *base = NULL, *dest = NULL, *sh = NULL;
	double timeout = 30, grace = 10;
	bool no_reflink = false;
	char **rest = NULL;
	char *err = NULL;
	int rc;
	if (argc < 2) {
		fprintf(stderr, "usage: hv-tool start|adopt|exec|stop|kill|cowdisk [options] "
				"(see tests/tools/hv_tool.c)\n");
		return 2;
	}
	const char *cmd = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(o, name) && v && ++i)
		if (!strcmp(o, "--")) {
			rest = argv + i + 1;
			break;
		} else if (!strcmp(o, "--ro"))
			c.rootfs_readonly = true;
		else if (!strcmp(o, "--no-reflink"))
			no_reflink = true;
		else if (OPT("--driver")) {
			if (hv_driver_parse(v, &c.driver) < 0) {
				fprintf(stderr, "hv-tool: unknown driver '%s'\n", v);
				return 2;
			}
		} else if (OPT("--run-dir"))
			c.run_dir = v;
		else if (OPT("--kernel"))
			c.kernel = v;
		else if (OPT("--initrd"))
			c.initrd = v;
		else if (OPT("--rootfs"))
			c.rootfs = v;
		else if (OPT("--disk"))
			c.extra_disk = v;
		else if (OPT("--tap"))
			c.tap = v;
		else if (OPT("--mac"))
			c.mac = v;
		else if (OPT("--ip"))
			c.guest_ip = v;
		else if (OPT("--vcpus"))
			c.vcpus = atoi(v);
		else if (OPT("--mem"))
			c.memory_mb = atoi(v);
		else if (OPT("--append"))
			c.append = v;
		else if (OPT("--name"))
			c.name = v;
		else if (OPT("--firecracker"))
			c.firecracker_bin = v;
		else if (OPT("--jailer"))
			c.jailer_bin = v;
		else if (OPT("--uid"))
			c.jail_uid = (unsigned)atoi(v);
		else if (OPT("--gid"))
			c.jail_gid = (unsigned)atoi(v);
		else if (OPT("--chroot-base"))
			c.chroot_base = v;
		else if (OPT("--accel"))
			c.accel = !strcmp(v, "kvm") ? QEMU_ACCEL_KVM
				  : !strcmp(v, "tcg") ? QEMU_ACCEL_TCG
						      : QEMU_ACCEL_AUTO;
		else if (OPT("--timeout"))
			timeout = atof(v);
		else if (OPT("--grace"))
			grace = atof(v);
		else if (OPT("--sh"))
			sh = v;
		else if (OPT("--base"))
			base = v;
		else if (OPT("--dest"))
			dest = v;
		else {
			fprintf(stderr, "hv-tool: unknown option '%s'\n", o);
			return 2;
		}
#undef OPT
	}
	log_init(getenv("HV_TOOL_LOG") ? getenv("HV_TOOL_LOG") : "warn", 2);
	int64_t tmo = (int64_t)(timeout * 1e6), grace_us = (int64_t)(grace * 1e6);

	if (!strcmp(cmd, "cowdisk")) {
		struct cowdisk_result r;
		if (!base || !dest)
			return die("cowdisk", BG_ERR_INVAL, xstrdup("--base and --dest are required"));
		rc = cowdisk_create(base, dest, no_reflink ? COWDISK_NO_REFLINK : 0, &r, &err);
		if (rc < 0)
			return die("cowdisk", rc, err);
		printf("method=%s copied=%llu\n", cowdisk_method_name(r.method),
		       (unsigned long long)r.copied);
		return 0;
	}
	if (!c.run_dir)
		return die(cmd, BG_ERR_INVAL, xstrdup("--run-dir is required"));
	struct hv_vm *vm = NULL;
	if (!strcmp(cmd, "start")) {
		if (!c.name)
			c.name = "hv-tool";
		int64_t t0 = mono_us();
		if ((rc = hv_start(&c, &vm, &err)) < 0)
			return die("start", rc, err);
		struct agent_conn *conn = NULL;
		if ((rc = hv_wait_agent(vm, tmo, &conn, &err)) < 0) {
			hv_kill(vm);
			hv_destroy(vm);
			return die("start", rc, err);
		}
		printf("pid=%d driver=%s accel=%s boot_s=%.2f guest_uptime_ms=%lld\n", (int)hv_pid(vm),
		       hv_driver_name(hv_driver_of(vm)), hv_accel_name(vm),
		       (double)(mono_us() - t0) / 1e6, (long long)agent_info(conn)->uptime_ms);
		agent_close(conn);
		hv_destroy(vm);
		return 0;
	}
	if ((rc = hv_adopt(c.run_dir, &vm, &err)) < 0)
		return die(cmd, rc, err);
	if (!strcmp(cmd, "adopt")) {
		printf("pid=%d driver=%s running=%d\n", (int)hv_pid(vm),
		       hv_driver_name(hv_driver_of(vm)), hv_running(vm));
		hv_destroy(vm);
		return 0;
	}
	if (!strcmp(cmd, "kill")) {
		rc = hv_kill(vm);
		hv_destroy(vm);
		return rc < 0 ? die("kill", rc, NULL) : 0;
	}
	struct agent_conn *conn = NULL;
	if (!strcmp(cmd, "stop")) {
		bool graceful = false;
		if (hv_connect_agent(vm, 2000000, &conn, &err) < 0) {
			fprintf(stderr, "hv-tool: stop without the agent: %s\n", err ? err : "?");
			free(err);
			err = NULL;
		}
		rc = hv_stop(vm, conn, grace_us, &graceful, &err);
		if (conn)
			agent_close(conn);
		hv_destroy(vm);
		if (rc < 0)
			return die("stop", rc, err);
		printf("graceful=%d\n", graceful);
		return 0;
	}
	if (!strcmp(cmd, "exec")) {
		if ((rc = hv_connect_agent(vm, tmo, &conn, &err)) < 0) {
			hv_destroy(vm);
			return die("exec", rc, err);
		}
		struct agent_exec_req req = {.shell = sh, .argv = sh ? NULL : (const char *const *)rest};
		struct agent_wait_opts wo = {.on_output = on_output};
		struct agent_exit st;
		rc = agent_run(conn, &req, NULL, 0, &wo, &st, &err);
		agent_close(conn);
		hv_destroy(vm);
		if (rc < 0) {
			die("exec", rc, err);
			return 125;
		}
		return st.signaled ? 128 + st.value : st.value;
	}
	hv_destroy(vm);
	fprintf(stderr, "hv-tool: unknown command '%s'\n", cmd);
	return 2;
}
