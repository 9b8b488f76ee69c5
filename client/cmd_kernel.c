/*
 * cmd_kernel.c: `banger kernel import | list | rm`: the guest kernels VMs
 * boot (STATE/kernels/NAME: the kernel, banger's initramfs with the guest
 * agent, metadata).  bangerd does the work (kernel.import reads the file as
 * bangerd's user), so paths are made absolute here first.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "util.h"

enum { IMP_DEB, IMP_NAME, IMP_REPLACE, IMP_JSON };

static const struct args_opt import_opts[] = {
	[IMP_DEB] = {"deb", 0, "PKG.deb", "a Debian kernel package (linux-image-*-cloud-amd64), as "
					 "apt-get download leaves it"},
	[IMP_NAME] = {"name", 0, "NAME", "name to store it under (default: the kernel's version)"},
	[IMP_REPLACE] = {"replace", 0, NULL, "replace a kernel of the same name"},
	[IMP_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static int import_run(struct cli *cli, const struct args *a)
{
	const char *src = a->val[IMP_DEB] ? a->val[IMP_DEB] : (a->npos ? a->pos[0] : NULL);
	if (!src || (a->val[IMP_DEB] && a->npos)) {
		cli_error("kernel import: give one of PATH and --deb PKG.deb");
		return CLI_EXIT_USAGE;
	}
	char abs[PATH_MAX];
	if (!realpath(src, abs)) {
		cli_error("kernel import: cannot read '%s': %s", src, strerror(errno));
		return CLI_EXIT_FAIL;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2 + (a->val[IMP_NAME] != NULL));
	mpk_kv_str(&pk, "source", abs);
	mpk_kv_bool(&pk, "replace", a->val[IMP_REPLACE] != NULL);
	if (a->val[IMP_NAME])
		mpk_kv_str(&pk, "name", a->val[IMP_NAME]);
	msgpack_unpacked reply;
	const msgpack_object *k;
	int st = cli_call(cli, BG_M_KERNEL_IMPORT, &sb, "kernel import", &reply, &k);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	if (a->val[IMP_JSON]) {
		st = out_json_print(k, true);
	} else {
		char *name = out_field(k, "name", OUT_STR), *ver = out_field(k, "version", OUT_STR);
		const msgpack_object *mods = mpk_get(k, "modules");
		printf("imported kernel '%s' (linux %s, %u module%s in its initramfs)\n", name, ver,
		       mods && mods->type == MSGPACK_OBJECT_ARRAY ? mods->via.array.size : 0,
		       mods && mods->type == MSGPACK_OBJECT_ARRAY && mods->via.array.size == 1 ? ""
													 : "s");
		free(name);
		free(ver);
	}
	msgpack_unpacked_destroy(&reply);
	return st;
}

enum { K_JSON };

static const struct args_opt json_opts[] = {
	[K_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static int list_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_KERNEL_LIST, NULL, "kernel list", &reply, &result);
	if (st)
		return st;
	const msgpack_object *ks = mpk_get(result, "kernels");
	if (!ks || ks->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("kernel list: malformed reply from bangerd (no kernels)");
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	if (a->val[K_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	if (ks->via.array.size == 0) {
		printf("no kernels: import one with 'banger kernel import --deb PKG.deb'\n");
		msgpack_unpacked_destroy(&reply);
		return 0;
	}
	struct out_table t;
	static const char *const head[] = {"NAME", "VERSION", "MODULES", "SOURCE"};
	out_table_init(&t, ARRAY_LEN(head));
	for (size_t i = 0; i < ARRAY_LEN(head); i++)
		out_table_add(&t, xstrdup(head[i]));
	for (uint32_t i = 0; i < ks->via.array.size; i++) {
		const msgpack_object *k = &ks->via.array.ptr[i];
		const msgpack_object *mods = mpk_get(k, "modules");
		out_table_add(&t, out_field(k, "name", OUT_STR));
		out_table_add(&t, out_field(k, "version", OUT_STR));
		out_table_addf(&t, "%u", mods && mods->type == MSGPACK_OBJECT_ARRAY
						 ? mods->via.array.size
						 : 0);
		out_table_add(&t, out_field(k, "source", OUT_STR));
	}
	out_table_print(&t, stdout, NULL);
	out_table_release(&t);
	msgpack_unpacked_destroy(&reply);
	return 0;
}

static int rm_run(struct cli *cli, const struct args *a)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_str(&pk, "name", a->pos[0]);
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_KERNEL_RM, &sb, "kernel rm", &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	if (a->val[K_JSON]) {
		st = out_json_print(result, true);
	} else {
		char *n = out_field(result, "name", OUT_STR);
		printf("removed kernel '%s'\n", n);
		free(n);
	}
	msgpack_unpacked_destroy(&reply);
	return st;
}

const struct args_cmd cmd_kernel_import = {
	.name = "kernel import",
	.synopsis = "PATH | --deb PKG.deb [--name NAME] [--replace] [--json]",
	.summary = "Import a guest kernel: a .deb, an extracted package, or a bare image.",
	.details = "PATH is a Debian kernel package (linux-image-VERSION-cloud-amd64_*.deb:\n"
		   "`apt-get download linux-image-cloud-amd64` names it), a directory holding\n"
		   "an extracted one, or a kernel image (bzImage/vmlinux) with its virtio\n"
		   "drivers built in.  bangerd builds an initramfs with the virtio modules in\n"
		   "load order and banger-agent; it reads PATH as its own user.\n",
	.opts = import_opts,
	.max_pos = 1,
	.run = import_run,
};

const struct args_cmd cmd_kernel_list = {
	.name = "kernel list",
	.synopsis = "[--json]",
	.summary = "List the imported guest kernels.",
	.opts = json_opts,
	.run = list_run,
};

const struct args_cmd cmd_kernel_rm = {
	.name = "kernel rm",
	.synopsis = "NAME [--json]",
	.summary = "Remove a guest kernel (refused while a VM booted from it exists).",
	.opts = json_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = rm_run,
};
