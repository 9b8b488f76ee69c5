/*
 * cmd_image.c: `banger image list|show|rm`: the images image.pull made, and
 * `banger image cache prune`: free the cached blobs no image uses.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd.h"
#include "mpk.h"
#include "output.h"
#include "protocol.h"
#include "util.h"

enum { IMG_JSON };

static const struct args_opt image_opts[] = {
	[IMG_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

/* Call method with {image: NAME}. */
static int call_image(struct cli *cli, const char *method, const char *name, const char *what,
		      msgpack_unpacked *reply, const msgpack_object **result)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_str(&pk, "image", name);
	int st = cli_call(cli, method, &sb, what, reply, result);
	msgpack_sbuffer_destroy(&sb);
	return st;
}

/* The refs of an image joined with ", " (or "-"); the caller frees. */
static char *refs_text(const msgpack_object *img)
{
	const msgpack_object *refs = mpk_get(img, "refs");
	struct sb sb;
	sb_init(&sb);
	for (uint32_t i = 0; refs && refs->type == MSGPACK_OBJECT_ARRAY && i < refs->via.array.size;
	     i++) {
		const msgpack_object *r = &refs->via.array.ptr[i];
		if (r->type != MSGPACK_OBJECT_STR)
			continue;
		if (sb.len)
			sb_adds(&sb, ", ");
		sb_add(&sb, r->via.str.ptr, r->via.str.size);
	}
	if (!sb.len)
		sb_adds(&sb, "-");
	return sb_detach(&sb);
}

static char *size_text(const msgpack_object *img, const char *key)
{
	int64_t v;
	char buf[32];
	if (mpk_get_int(img, key, &v) != 0 || v < 0)
		return xstrdup("?");
	out_size(buf, sizeof(buf), (uint64_t)v);
	return xstrdup(buf);
}

static int list_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_IMAGE_LIST, NULL, "image list", &reply, &result);
	if (st)
		return st;
	const msgpack_object *imgs = mpk_get(result, "images");
	if (!imgs || imgs->type != MSGPACK_OBJECT_ARRAY) {
		cli_error("image list: malformed reply from bangerd (no images)");
		msgpack_unpacked_destroy(&reply);
		return CLI_EXIT_FAIL;
	}
	if (a->val[IMG_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	struct out_table t;
	out_table_init(&t, 5);
	static const char *const head[] = {"REF", "DIGEST", "SIZE", "USED BY", "AGE"};
	for (size_t i = 0; i < ARRAY_LEN(head); i++)
		out_table_add(&t, xstrdup(head[i]));
	for (uint32_t i = 0; i < imgs->via.array.size; i++) {
		const msgpack_object *img = &imgs->via.array.ptr[i];
		out_table_add(&t, refs_text(img));
		char *d = out_field(img, "digest", OUT_STR);
		/* sha256: and 12 hex digits, as people quote them */
		out_table_addf(&t, "%.19s", d);
		free(d);
		out_table_add(&t, size_text(img, "size"));
		const msgpack_object *used = mpk_get(img, "used_by");
		out_table_addf(&t, "%u", used && used->type == MSGPACK_OBJECT_ARRAY
						 ? used->via.array.size
						 : 0);
		out_table_add(&t, out_field(img, "created", OUT_AGE));
	}
	out_table_print(&t, stdout, NULL);
	out_table_release(&t);
	msgpack_unpacked_destroy(&reply);
	return 0;
}

static void line(const char *label, char *owned)
{
	printf("%-9s %s\n", label, owned);
	free(owned);
}

static int show_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *img;
	int st = call_image(cli, BG_M_IMAGE_SHOW, a->pos[0], "image show", &reply, &img);
	if (st)
		return st;
	if (a->val[IMG_JSON]) {
		st = out_json_print(img, true);
	} else {
		line("digest:", out_field(img, "digest", OUT_STR));
		line("refs:", refs_text(img));
		line("source:", out_field(img, "source", OUT_STR));
		line("rootfs:", out_field(img, "rootfs", OUT_STR));
		line("size:", size_text(img, "size"));
		line("layers:", size_text(img, "content"));
		line("config:", out_field(img, "config", OUT_STR));
		line("created:", out_field(img, "created", OUT_TIME));
		line("job:", out_field(img, "job", OUT_INT));
		line("used by:", out_field(img, "used_by", OUT_JSON));
	}
	msgpack_unpacked_destroy(&reply);
	return st;
}

static int rm_run(struct cli *cli, const struct args *a)
{
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = call_image(cli, BG_M_IMAGE_RM, a->pos[0], "image rm", &reply, &result);
	if (st)
		return st;
	char *d = out_field(result, "digest", OUT_STR);
	printf("removed %s\n", d);
	free(d);
	msgpack_unpacked_destroy(&reply);
	return 0;
}

enum { PRUNE_DRY_RUN, PRUNE_JSON };

static const struct args_opt prune_opts[] = {
	[PRUNE_DRY_RUN] = {"dry-run", 'n', NULL, "list what would be removed; remove nothing"},
	[PRUNE_JSON] = {"json", 0, NULL, "print the result as JSON"},
	{NULL, 0, NULL, NULL},
};

static int64_t int_field(const msgpack_object *map, const char *key)
{
	int64_t v;
	return mpk_get_int(map, key, &v) == 0 && v >= 0 ? v : 0;
}

/* One "removed ..." line per item of the array at key. */
static size_t print_items(const msgpack_object *result, const char *key, const char *name_key,
			  const char *verb, const char *what)
{
	const msgpack_object *arr = mpk_get(result, key);
	if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
		return 0;
	for (uint32_t i = 0; i < arr->via.array.size; i++) {
		const msgpack_object *it = &arr->via.array.ptr[i];
		char *name = out_field(it, name_key, OUT_STR);
		char *size = size_text(it, "size");
		printf("%s %s%s (%s)\n", verb, what, name, size);
		free(name);
		free(size);
	}
	return arr->via.array.size;
}

static int prune_run(struct cli *cli, const struct args *a)
{
	bool dry = a->val[PRUNE_DRY_RUN] != NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mpk_kv_bool(&pk, "dry_run", dry);
	msgpack_unpacked reply;
	const msgpack_object *result;
	int st = cli_call(cli, BG_M_IMAGE_PRUNE, &sb, "image cache prune", &reply, &result);
	msgpack_sbuffer_destroy(&sb);
	if (st)
		return st;
	if (a->val[PRUNE_JSON]) {
		st = out_json_print(result, true);
		msgpack_unpacked_destroy(&reply);
		return st;
	}
	const char *verb = dry ? "would remove" : "removed";
	size_t nblobs = print_items(result, "removed", "digest", verb, "");
	size_t ndirs = print_items(result, "orphans", "path", verb, "image directory ");
	int64_t partials = int_field(result, "partials");
	char freed[32];
	out_size(freed, sizeof(freed), (uint64_t)int_field(result, "freed"));
	printf("%s %s: %zu blob%s, %lld partial download%s, %zu image director%s; "
	       "%lld blob%s kept\n",
	       dry ? "would free" : "freed", freed, nblobs, nblobs == 1 ? "" : "s",
	       (long long)partials, partials == 1 ? "" : "s", ndirs, ndirs == 1 ? "y" : "ies",
	       (long long)int_field(result, "kept"), int_field(result, "kept") == 1 ? "" : "s");
	msgpack_unpacked_destroy(&reply);
	return 0;
}

const struct args_cmd cmd_image_list = {
	.name = "image list",
	.synopsis = "[--json]",
	.summary = "List the images image.pull made: refs, digest, size, users.",
	.opts = image_opts,
	.run = list_run,
};

const struct args_cmd cmd_image_show = {
	.name = "image show",
	.synopsis = "REF|DIGEST [--json]",
	.summary = "Show one image: digest, refs, source, rootfs path, sizes.",
	.opts = image_opts,
	.min_pos = 1,
	.max_pos = 1,
	.run = show_run,
};

const struct args_cmd cmd_image_rm = {
	.name = "image rm",
	.synopsis = "REF|DIGEST",
	.summary = "Remove an image and its rootfs (refused while a VM uses it).",
	.min_pos = 1,
	.max_pos = 1,
	.run = rm_run,
};

const struct args_cmd cmd_image_cache_prune = {
	.name = "image cache prune",
	.synopsis = "[--dry-run] [--json]",
	.summary = "Free the cached blobs no image uses (refused while a pull runs).",
	.details = "Removes the cached blobs (manifests, configs, layers) that no image\n"
		   "in 'banger image list' uses, partial downloads nobody is writing, and\n"
		   "image directories no image names (left by a crash).  Refused while an\n"
		   "image.pull job runs on this node.\n",
	.opts = prune_opts,
	.run = prune_run,
};
