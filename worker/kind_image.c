/*
 * kind_image.c: the image.pull job kind: a reference to a bootable
 * rootfs.ext4 (docs/images.md).
 *
 *   fetch    resolve the ref and bring the manifest, config and layers into
 *            the verified blob cache (imgsrc); resumable: a re-run resumes
 *            partial downloads.  Undo: nothing (the cache is shared, and
 *            partial downloads are kept for the next try).
 *   build    STATE/images/HEX/rootfs.ext4 from the layers (rootfs_build),
 *            written under a temp name named in the undo record, then
 *            renamed into place.  An image already published is reused: a
 *            second pull of the same digest waits on the image's lock and
 *            does nothing.  Undo: remove the temp file.
 *   publish  the images row and the ref, written (record hook) in the same
 *            transaction as the step's done: a row never names a half image.
 *
 * Everything blocking runs in the pool thread; the plan and record hooks run
 * on the loop thread and only read the results of earlier steps.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobstore.h"
#include "engine.h"
#include "err.h"
#include "imgsrc.h"
#include "kind.h"
#include "mpk.h"
#include "queue.h"
#include "registry.h"
#include "rootfs.h"
#include "util.h"

/* Where the credentials for registries live: $BANGER_AUTH_FILE, else
 * CONFIG_DIR/banger/auth.json (docker's config.json format; owner-only). */
static char *auth_file(void)
{
	const char *env = getenv("BANGER_AUTH_FILE");
	if (env && *env)
		return xstrdup(env);
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *p;
	if (geteuid() == 0)
		p = xstrdup("/etc/banger/auth.json");
	else if (xdg && *xdg)
		p = xasprintf("%s/banger/auth.json", xdg);
	else
		p = xasprintf("%s/.config/banger/auth.json", home ? home : "/nonexistent");
	if (access(p, F_OK) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

/*
 * One registry client for every pull this daemon makes: it keeps what it
 * learnt about each registry (the scheme a loopback registry speaks, bearer
 * tokens, open connections), so a warm pull by tag costs one HEAD and no
 * TLS attempt.  Thread-safe (registry.c); made on first use, never freed.
 */
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reg_client *shared_client;
static char *shared_auth;

static struct reg_client *registry_client(char **errmsg)
{
	pthread_mutex_lock(&shared_mu);
	if (!shared_client) {
		shared_auth = auth_file();
		struct reg_opts ro = {.auth_file = shared_auth};
		if (reg_client_create(&ro, &shared_client, errmsg) != 0)
			shared_client = NULL;
	}
	struct reg_client *c = shared_client;
	pthread_mutex_unlock(&shared_mu);
	return c;
}

static bool cancelled_cb(void *arg)
{
	return step_cancelled(arg);
}

static void progress_cb(void *arg, const char *digest, uint64_t done, uint64_t total)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	mpk_kv_str(&pk, "what", "download");
	mpk_kv_str(&pk, "layer", digest);
	mpk_kv_int(&pk, "done", (int64_t)done);
	mpk_kv_int(&pk, "total", (int64_t)total);
	step_emit(arg, "progress", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* STATE/images/HEX for a sha256:HEX digest (caller frees); NULL if odd. */
static char *image_dir(struct step_ctx *ctx, const char *digest)
{
	if (!digest || strncmp(digest, "sha256:", 7) != 0 || !blobstore_digest_valid(digest))
		return NULL;
	return xasprintf("%s/images/%s", ctx->state_dir, digest + 7);
}

/* ---- fetch ---- */

static int fetch_do(struct step_ctx *ctx)
{
	char *ref = mpk_dup_str(ctx->params, "ref");
	char *platform = mpk_dup_str(ctx->params, "platform");
	char *blobs = xasprintf("%s/blobs", ctx->state_dir);
	char *auth = auth_file();
	struct blobstore *bs = NULL;
	struct imgsrc_image img;
	char *err = NULL;
	int rc;

	memset(&img, 0, sizeof(img));
	if ((rc = blobstore_open(blobs, &bs, &err))) {
		rc = step_fail(ctx, rc, false, "%s", err);
		goto out;
	}
	struct reg_opts ro = {.auth_file = auth};
	char *cerr = NULL;
	struct reg_client *shared = registry_client(&cerr);
	free(cerr); /* without the shared client, imgsrc makes one for this call */
	struct imgsrc_opts o = {
		.platform = platform,
		.reg = &ro,
		.client = shared,
		.cancelled = cancelled_cb,
		.progress = progress_cb,
		.arg = ctx,
	};
	if ((rc = imgsrc_fetch(ref, bs, &o, &img, &err))) {
		rc = step_fail(ctx, rc, imgsrc_err_permanent(rc), "%s", err ? err : bg_strerror(rc));
		goto out;
	}
	if (img.fetched_blobs)
		step_logf(ctx, "%s: %zu blob(s), %llu bytes downloaded", img.ref, img.fetched_blobs,
			  (unsigned long long)img.fetched_bytes);
	else
		step_logf(ctx, "%s: every blob was in the cache", img.ref);

	msgpack_packer *pk = &ctx->result;
	msgpack_pack_map(pk, 6);
	mpk_kv_str(pk, "ref", ref);
	mpk_kv_str(pk, "source", img.ref);
	mpk_kv_str(pk, "digest", img.manifest_digest);
	mpk_kv_str(pk, "config", img.config_digest);
	mpk_kv_int(pk, "content", (int64_t)img.layers_size);
	mpk_pack_str(pk, "layers");
	msgpack_pack_array(pk, img.nlayers);
	for (size_t i = 0; i < img.nlayers; i++) {
		msgpack_pack_map(pk, 3);
		mpk_kv_str(pk, "digest", img.layers[i].digest);
		mpk_kv_str(pk, "media_type", img.layers[i].media_type);
		mpk_kv_str(pk, "path", img.layers[i].path);
	}
out:
	imgsrc_image_release(&img);
	if (bs)
		blobstore_close(bs);
	free(err);
	free(ref);
	free(platform);
	free(blobs);
	free(auth);
	return rc;
}

/* ---- build ---- */

static int build_plan(struct step_ctx *ctx, msgpack_packer *undo)
{
	const msgpack_object *fetched = step_result(ctx, 1);
	char *digest = mpk_dup_str(fetched, "digest");
	char *dir = image_dir(ctx, digest);
	free(digest);
	if (!dir)
		return step_fail(ctx, BG_ERR_INVAL, true, "the fetch step gave no usable digest");
	/* the temp name is the job's: a crashed build is found and removed */
	char *tmp = xasprintf("%s/rootfs.ext4.tmp-%lld", dir, (long long)ctx->job_id);
	msgpack_pack_map(undo, 1);
	mpk_kv_str(undo, "tmp", tmp);
	free(tmp);
	free(dir);
	return 0;
}

static void build_progress(void *arg, const struct rootfs_progress *p)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	mpk_kv_str(&pk, "what", p->phase == ROOTFS_SCAN ? "scan" : "write");
	mpk_kv_int(&pk, "layer", (int64_t)p->layer);
	mpk_kv_int(&pk, "done", (int64_t)p->done);
	mpk_kv_int(&pk, "total", (int64_t)p->total);
	step_emit(arg, "progress", sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static int build_do(struct step_ctx *ctx)
{
	const msgpack_object *fetched = step_result(ctx, 1);
	char *digest = mpk_dup_str(fetched, "digest");
	char *dir = image_dir(ctx, digest);
	char *final = dir ? xasprintf("%s/rootfs.ext4", dir) : NULL;
	char *tmp = dir ? xasprintf("%s/rootfs.ext4.tmp-%lld", dir, (long long)ctx->job_id) : NULL;
	char *lockp = dir ? xasprintf("%s/.lock", dir) : NULL;
	struct rootfs_layer *layers = NULL;
	char *err = NULL;
	int lock = -1, rc = 0;
	bool cached = false;
	struct rootfs_result res;
	memset(&res, 0, sizeof(res));

	if (!dir) {
		rc = step_fail(ctx, BG_ERR_INVAL, true, "the fetch step gave no usable digest");
		goto out;
	}
	if ((rc = mkdir_p(dir, 0755))) {
		rc = step_fail(ctx, rc, false, "cannot create '%s': %s", dir, bg_strerror(rc));
		goto out;
	}
	/* One build per image: a second pull of the same digest waits here,
	 * then finds the image published. */
	lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	while (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK || step_sleep(ctx, 50000) != 0) {
			rc = step_fail(ctx, BG_ERR_CANCELED, false, "cancelled while waiting for "
				       "another pull of the same image");
			goto out;
		}
	}
	struct stat st;
	if (stat(final, &st) == 0) {
		cached = true;
		step_logf(ctx, "%s is already built: reusing it", digest);
		goto done;
	}
	const msgpack_object *ls = mpk_get(fetched, "layers");
	size_t n = ls && ls->type == MSGPACK_OBJECT_ARRAY ? ls->via.array.size : 0;
	layers = xcalloc(n + 1, sizeof(*layers));
	char **strs = xcalloc(3 * n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *l = &ls->via.array.ptr[i];
		layers[i].path = strs[3 * i] = mpk_dup_str(l, "path");
		layers[i].media_type = strs[3 * i + 1] = mpk_dup_str(l, "media_type");
		layers[i].digest = strs[3 * i + 2] = mpk_dup_str(l, "digest");
	}
	int64_t headroom = 0;
	mpk_get_int(ctx->params, "headroom", &headroom);
	struct rootfs_opts o = {
		.manifest_digest = digest,
		.headroom_bytes = headroom > 0 ? (uint64_t)headroom : 0,
		.cancelled = cancelled_cb,
		.progress = build_progress,
		.arg = ctx,
	};
	rc = rootfs_build(layers, n, &o, tmp, &res, &err);
	for (size_t i = 0; i < 3 * n; i++)
		free(strs[i]);
	free(strs);
	if (rc) {
		rc = step_fail(ctx, rc, rc == BG_ERR_INVAL || rc == BG_ERR_UNSUPPORTED, "%s",
			       err ? err : bg_strerror(rc));
		goto out;
	}
	/* publish: the rename is atomic, and durable once the directory is */
	if (rename(tmp, final) < 0) {
		rc = step_fail(ctx, bg_errno(errno), false, "cannot publish '%s': %s", final,
			       strerror(errno));
		unlink(tmp);
		goto out;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	step_logf(ctx, "built %s: %llu files, %llu bytes", final,
		  (unsigned long long)res.files, (unsigned long long)res.image_bytes);
done:
	if (stat(final, &st) < 0) {
		rc = step_fail(ctx, bg_errno(errno), false, "'%s' vanished: %s", final,
			       strerror(errno));
		goto out;
	}
	msgpack_pack_map(&ctx->result, 3);
	mpk_kv_str(&ctx->result, "rootfs", final);
	mpk_kv_int(&ctx->result, "size", (int64_t)st.st_size);
	mpk_kv_bool(&ctx->result, "cached", cached);
out:
	if (lock >= 0)
		close(lock);
	free(layers);
	free(err);
	free(digest);
	free(dir);
	free(final);
	free(tmp);
	free(lockp);
	return rc;
}

static int build_undo(struct step_ctx *ctx, const msgpack_object *rec)
{
	char *tmp = mpk_dup_str(rec, "tmp");
	if (tmp && unlink(tmp) < 0 && errno != ENOENT) {
		int rc = step_fail(ctx, bg_errno(errno), false, "cannot remove '%s': %s", tmp,
				   strerror(errno));
		free(tmp);
		return rc;
	}
	free(tmp);
	return 0;
}

/* ---- publish ---- */

static int publish_do(struct step_ctx *ctx)
{
	const msgpack_object *fetched = step_result(ctx, 1);
	const msgpack_object *built = step_result(ctx, 2);
	msgpack_packer *pk = &ctx->result;
	msgpack_pack_map(pk, 5);
	mpk_pack_str(pk, "ref");
	const msgpack_object *v = mpk_get(fetched, "ref");
	v ? msgpack_pack_object(pk, *v) : msgpack_pack_nil(pk);
	mpk_pack_str(pk, "digest");
	v = mpk_get(fetched, "digest");
	v ? msgpack_pack_object(pk, *v) : msgpack_pack_nil(pk);
	mpk_pack_str(pk, "rootfs");
	v = mpk_get(built, "rootfs");
	v ? msgpack_pack_object(pk, *v) : msgpack_pack_nil(pk);
	mpk_pack_str(pk, "size");
	v = mpk_get(built, "size");
	v ? msgpack_pack_object(pk, *v) : msgpack_pack_nil(pk);
	mpk_pack_str(pk, "cached");
	v = mpk_get(built, "cached");
	v ? msgpack_pack_object(pk, *v) : msgpack_pack_nil(pk);
	return 0;
}

static int publish_record(struct step_ctx *ctx, struct queue *q, const msgpack_object *result)
{
	const msgpack_object *fetched = step_result(ctx, 1);
	struct q_image img;
	memset(&img, 0, sizeof(img));
	char *ref = mpk_dup_str(fetched, "ref");
	img.digest = mpk_dup_str(fetched, "digest");
	img.config = mpk_dup_str(fetched, "config");
	img.source = mpk_dup_str(fetched, "source");
	img.rootfs = mpk_dup_str(result, "rootfs");
	mpk_get_int(result, "size", &img.size);
	mpk_get_int(fetched, "content", &img.content);
	img.job = ctx->job_id;
	img.created = now_us();
	/* the layer digests, as a msgpack array */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	const msgpack_object *ls = mpk_get(fetched, "layers");
	size_t n = ls && ls->type == MSGPACK_OBJECT_ARRAY ? ls->via.array.size : 0;
	msgpack_pack_array(&pk, n);
	for (size_t i = 0; i < n; i++) {
		const msgpack_object *d = mpk_get(&ls->via.array.ptr[i], "digest");
		d ? msgpack_pack_object(&pk, *d) : msgpack_pack_nil(&pk);
	}
	img.layers = sb.data;
	img.layers_len = sb.size;
	int rc = BG_ERR_INVAL;
	if (img.digest && img.rootfs && img.source)
		rc = q->ops->image_put(q, &img, ref, img.created);
	msgpack_sbuffer_destroy(&sb);
	img.layers = NULL;
	q_image_release(&img);
	free(ref);
	return rc;
}

static const struct kind_field image_pull_fields[] = {
	{"ref", FT_STR, true},
	{"platform", FT_STR, false},
	{"headroom", FT_SIZE, false},
	{NULL},
};

static const struct step_def image_pull_steps[] = {
	{.name = "fetch", .do_ = fetch_do, .resumable = true},
	{.name = "build", .plan = build_plan, .do_ = build_do, .undo = build_undo,
	 .resumable = true},
	{.name = "publish", .do_ = publish_do, .resumable = true, .record = publish_record},
};

const struct kind kind_image_pull = {
	.name = "image.pull",
	.summary = "pull an OCI image into a bootable rootfs.ext4",
	.fields = image_pull_fields,
	.steps = image_pull_steps,
	.nsteps = ARRAY_LEN(image_pull_steps),
	.retry_interrupted = true,
};
