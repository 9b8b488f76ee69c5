/*
 * imgfetch.c: a test tool (never installed) that drives the image-source
 * API (worker/imgsrc.h, blobstore.h) the way image.pull will, so the
 * integration tests can check what a user would see.
 *
 *   imgfetch --cache DIR [options] REF
 *       fetch REF into the cache, print the image as one JSON object:
 *       {ref, manifest_digest, index_digest, config_digest, config_path,
 *        manifest_media_type, platform, layers_size, fetched_bytes,
 *        fetched_blobs, layers: [{digest, diff_id, media_type, compression,
 *        size, path}]}
 *     --platform OS/ARCH[/VARIANT]   --auth FILE   --insecure HOST (repeat)
 *     --ca FILE   --parallel N   --attempts N   --backoff-ms N
 *     --stall-s N   --connect-timeout-s N
 *     --progress            print "progress DIGEST DONE TOTAL" lines on stderr
 *     --cancel-after-ms N   report "cancelled" to the fetch after N ms
 *
 *   imgfetch --cache DIR --blobs MANIFEST_DIGEST
 *       print the digests the cached image uses, one per line
 *
 *   imgfetch --cache DIR --prune [--dry-run] [--grace-s N] [MANIFEST_DIGEST...]
 *       remove every blob not used by the listed images; prints
 *       "removed DIGEST SIZE" lines, then {kept, removed, removed_bytes,
 *       partials_removed} as JSON
 *
 * Errors: "imgfetch: NAME: message" on stderr (NAME from err.h), exit 1;
 * usage errors exit 2.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobstore.h"
#include "err.h"
#include "imgsrc.h"
#include "util.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: imgfetch --cache DIR [--platform P] [--auth FILE] [--insecure HOST]...\n"
		"                [--ca FILE] [--parallel N] [--attempts N] [--backoff-ms N]\n"
		"                [--stall-s N] [--connect-timeout-s N] [--progress]\n"
		"                [--cancel-after-ms N] REF\n"
		"       imgfetch --cache DIR --blobs MANIFEST_DIGEST\n"
		"       imgfetch --cache DIR --prune [--dry-run] [--grace-s N] [MANIFEST_DIGEST...]\n");
	exit(2);
}

static int64_t cancel_at;

static bool cancelled(void *arg)
{
	(void)arg;
	return cancel_at > 0 && mono_us() >= cancel_at;
}

static void progress(void *arg, const char *digest, uint64_t done, uint64_t total)
{
	(void)arg;
	fprintf(stderr, "progress %s %llu %llu\n", digest, (unsigned long long)done,
		(unsigned long long)total);
}

static void removed(void *arg, const char *digest, uint64_t size)
{
	(void)arg;
	printf("removed %s %llu\n", digest, (unsigned long long)size);
}

static int fail(int rc, char *msg)
{
	fprintf(stderr, "imgfetch: %s: %s\n", bg_errname(rc), msg ? msg : bg_strerror(rc));
	free(msg);
	return 1;
}

static long num(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < 0)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	const char *cache = NULL, *blobs = NULL;
	bool prune = false, dry = false, want_progress = false;
	long grace_s = 0, cancel_ms = 0;
	const char *insecure[16] = {0};
	int ninsecure = 0;
	struct reg_opts ro = {0};
	struct imgsrc_opts o = {0};
	const char **pos = xcalloc((size_t)argc + 1, sizeof(char *));
	int npos = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
#define ARG() (has ? argv[++i] : (usage(), ""))
		if (strcmp(a, "--cache") == 0)
			cache = ARG();
		else if (strcmp(a, "--platform") == 0)
			o.platform = ARG();
		else if (strcmp(a, "--auth") == 0)
			ro.auth_file = ARG();
		else if (strcmp(a, "--insecure") == 0) {
			if (ninsecure == 15)
				usage();
			insecure[ninsecure++] = ARG();
		} else if (strcmp(a, "--ca") == 0)
			ro.ca_file = ARG();
		else if (strcmp(a, "--parallel") == 0)
			o.parallel = (int)num(ARG());
		else if (strcmp(a, "--attempts") == 0)
			ro.attempts = (int)num(ARG());
		else if (strcmp(a, "--backoff-ms") == 0)
			ro.backoff_us = num(ARG()) * 1000;
		else if (strcmp(a, "--stall-s") == 0)
			ro.stall_timeout_us = num(ARG()) * 1000000;
		else if (strcmp(a, "--connect-timeout-s") == 0)
			ro.connect_timeout_us = num(ARG()) * 1000000;
		else if (strcmp(a, "--progress") == 0)
			want_progress = true;
		else if (strcmp(a, "--cancel-after-ms") == 0)
			cancel_ms = num(ARG());
		else if (strcmp(a, "--blobs") == 0)
			blobs = ARG();
		else if (strcmp(a, "--prune") == 0)
			prune = true;
		else if (strcmp(a, "--dry-run") == 0)
			dry = true;
		else if (strcmp(a, "--grace-s") == 0)
			grace_s = num(ARG());
		else if (a[0] == '-' && a[1] == '-')
			usage();
		else
			pos[npos++] = a;
#undef ARG
	}
	if (!cache || (!prune && !blobs && npos != 1))
		usage();
	ro.insecure = insecure;

	struct blobstore *bs;
	char *err = NULL;
	int rc = blobstore_open(cache, &bs, &err);
	if (rc)
		return fail(rc, err);

	if (blobs) {
		char **v;
		size_t n;
		rc = imgsrc_image_blobs(bs, blobs, &v, &n, &err);
		if (rc) {
			blobstore_close(bs);
			return fail(rc, err);
		}
		for (size_t i = 0; i < n; i++) {
			printf("%s\n", v[i]);
			free(v[i]);
		}
		free(v);
		blobstore_close(bs);
		free(pos);
		return 0;
	}

	if (prune) {
		char **keep = NULL;
		size_t nkeep = 0;
		for (int i = 0; i < npos; i++) {
			char **v;
			size_t n;
			rc = imgsrc_image_blobs(bs, pos[i], &v, &n, &err);
			if (rc) {
				blobstore_close(bs);
				return fail(rc, err);
			}
			keep = xrealloc(keep, (nkeep + n + 1) * sizeof(char *));
			for (size_t k = 0; k < n; k++)
				keep[nkeep++] = v[k];
			free(v);
		}
		struct blobstore_prune_stats st;
		rc = blobstore_prune(bs, (const char *const *)keep, nkeep, grace_s * 1000000, dry,
				     removed, NULL, &st, &err);
		for (size_t k = 0; k < nkeep; k++)
			free(keep[k]);
		free(keep);
		blobstore_close(bs);
		free(pos);
		if (rc)
			return fail(rc, err);
		printf("{\"kept\": %zu, \"removed\": %zu, \"removed_bytes\": %llu, "
		       "\"partials_removed\": %zu}\n",
		       st.kept, st.removed, (unsigned long long)st.removed_bytes,
		       st.partials_removed);
		return 0;
	}

	o.reg = &ro;
	if (want_progress)
		o.progress = progress;
	if (cancel_ms > 0) {
		cancel_at = mono_us() + cancel_ms * 1000;
		o.cancelled = cancelled;
	}
	struct imgsrc_image img;
	rc = imgsrc_fetch(pos[0], bs, &o, &img, &err);
	blobstore_close(bs);
	free(pos);
	if (rc)
		return fail(rc, err);

	json_t *j = json_object();
	json_object_set_new(j, "ref", json_string(img.ref));
	json_object_set_new(j, "manifest_digest", json_string(img.manifest_digest));
	json_object_set_new(j, "index_digest", json_string(img.index_digest));
	json_object_set_new(j, "config_digest", json_string(img.config_digest));
	json_object_set_new(j, "config_path", json_string(img.config_path));
	json_object_set_new(j, "manifest_media_type", json_string(img.manifest_media_type));
	json_object_set_new(j, "platform", json_string(img.platform));
	json_object_set_new(j, "layers_size", json_integer((json_int_t)img.layers_size));
	json_object_set_new(j, "fetched_bytes", json_integer((json_int_t)img.fetched_bytes));
	json_object_set_new(j, "fetched_blobs", json_integer((json_int_t)img.fetched_blobs));
	json_t *ls = json_array();
	for (size_t i = 0; i < img.nlayers; i++) {
		const struct imgsrc_layer *l = &img.layers[i];
		json_t *lj = json_object();
		json_object_set_new(lj, "digest", json_string(l->digest));
		json_object_set_new(lj, "diff_id", json_string(l->diff_id));
		json_object_set_new(lj, "media_type", json_string(l->media_type));
		json_object_set_new(lj, "compression",
				    json_string(imgsrc_compression_name(l->compression)));
		json_object_set_new(lj, "size", json_integer((json_int_t)l->size));
		json_object_set_new(lj, "path", json_string(l->path));
		json_array_append_new(ls, lj);
	}
	json_object_set_new(j, "layers", ls);
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	printf("%s\n", s);
	free(s);
	json_decref(j);
	imgsrc_image_release(&img);
	return 0;
}
