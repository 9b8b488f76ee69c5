/*
 * cmd_doctor.c: `banger doctor`: what this host can run, as bangerd sees it
 * (doctor RPC): which hypervisor drivers are usable and with which
 * accelerator, /dev/kvm and /dev/net/tun, the root helper, the guest agent,
 * the imported kernels.  Exits 1 when no driver is usable or no kernel is
 * imported: VMs cannot start then.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "util.h"

enum { DOC_JSON };

static const struct args_opt doctor_opts[] = {
	[DOC_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static bool flag(const msgpack_object *m, const char *key)
{
	bool b = false;
	mpk_get_bool(m, key, &b);
	return b;
}

static void line(const char *label, bool ok, char *detail)
{
	printf("%-14s %-4s %s\n", label, ok ? "ok" : "no", detail);
	free(detail);
}

static int doctor_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *r;
	int st = cli_call(cli, BG_M_DOCTOR, NULL, "doctor", &reply, &r);
	if (st)
		return st;
	const msgpack_object *drivers = mpk_get(r, "drivers"), *ks = mpk_get(r, "kernels");
	bool usable = false;
	for (uint32_t i = 0; drivers && drivers->type == MSGPACK_OBJECT_ARRAY &&
			     i < drivers->via.array.size; i++)
		usable |= flag(&drivers->via.array.ptr[i], "usable");
	uint32_t nk = ks && ks->type == MSGPACK_OBJECT_ARRAY ? ks->via.array.size : 0;
	if (a->val[DOC_JSON]) {
		st = out_json_print(r, true);
		msgpack_unpacked_destroy(&reply);
		return st ? st : (usable && nk ? 0 : CLI_EXIT_FAIL);
	}
	printf("drivers:\n");
	for (uint32_t i = 0; drivers && drivers->type == MSGPACK_OBJECT_ARRAY &&
			     i < drivers->via.array.size; i++) {
		const msgpack_object *d = &drivers->via.array.ptr[i];
		char *name = out_field(d, "name", OUT_STR), *detail = out_field(d, "detail", OUT_STR);
		char label[64];
		snprintf(label, sizeof(label), "  %s", name);
		if (out_has(d, "accel")) {
			char *acc = out_field(d, "accel", OUT_STR);
			char *both = xasprintf("accel %s: %s", acc, detail);
			free(acc);
			free(detail);
			detail = both;
		}
		line(label, flag(d, "usable"), detail);
		free(name);
	}
	const msgpack_object *kvm = mpk_get(r, "kvm"), *tun = mpk_get(r, "tun");
	const msgpack_object *helper = mpk_get(r, "helper"), *agent = mpk_get(r, "agent");
	line("/dev/kvm", flag(kvm, "usable"), out_field(kvm, "detail", OUT_STR));
	line("/dev/net/tun", flag(tun, "usable"), out_field(tun, "detail", OUT_STR));
	line("helper", flag(helper, "reachable"), out_field(helper, "detail", OUT_STR));
	line("agent", flag(agent, "present"), out_field(agent, "path", OUT_STR));
	line("qemu-img", flag(r, "qemu_img"),
	     xstrdup(flag(r, "qemu_img") ? "makes the copy-on-write root disks"
					 : "not installed (Debian: qemu-utils): vm.create needs it"));
	struct sb names;
	sb_init(&names);
	for (uint32_t i = 0; i < nk; i++) {
		const msgpack_object *k = &ks->via.array.ptr[i];
		if (k->type == MSGPACK_OBJECT_STR) {
			sb_adds(&names, i ? ", " : "");
			sb_add(&names, k->via.str.ptr, k->via.str.size);
		}
	}
	line("kernels", nk > 0, nk ? sb_detach(&names)
				  : xstrdup("none: banger kernel import --deb PKG.deb"));
	sb_release(&names);
	msgpack_unpacked_destroy(&reply);
	return usable && nk ? 0 : CLI_EXIT_FAIL;
}

const struct args_cmd cmd_doctor = {
	.name = "doctor",
	.synopsis = "[--json]",
	.summary = "Say what this host can run: hypervisor drivers, KVM, taps, kernels.",
	.details = "Asks bangerd, so it reports what bangerd's user can do.  Exits 1 when\n"
		   "no hypervisor driver is usable or no kernel is imported.\n",
	.opts = doctor_opts,
	.run = doctor_run,
};
