/*
 * imgsrc.c: from an image reference to verified blobs in the cache (see
 * imgsrc.h for the contract).
 *
 * The three sources share one tail: parse and check the manifest (refusing
 * schema 1, artifacts and foreign layers), resolve an index to the wanted
 * platform, fetch the config and check it agrees (platform, one diff_id per
 * layer), then fetch the layers.
 *
 * Downloads (registry blobs, OCI layout blobs) go through one driver
 * (struct dl): up to opts.parallel threads each take the next blob, open a
 * blobstore writer (which resumes a partial), stream into it and commit.
 * The calling thread only waits on a condition variable, polls
 * opts.cancelled every 100 ms (and tells the threads to stop through an
 * atomic flag that their transfers poll), and calls opts.progress from the
 * byte counters the threads keep.  So callbacks never run on another thread.
 * A download that was resumed and then fails its digest check is fetched
 * once more from byte 0 (the old partial may have come from a different
 * attempt); a fresh download that fails it is an error.
 *
 * docker-archive is read sequentially with libarchive on the calling thread:
 * one pass to find manifest.json, one to stream the config and layers into
 * the cache.  Its manifest is synthesised (OCI, deterministic), so the same
 * archive always yields the same manifest digest.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "imgsrc.h"
#include "util.h"

#define MANIFEST_MAX (4u << 20)
#define CONFIG_MAX (8u << 20)

#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MT_OCI_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define MT_DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar"
#define ANNOT_REF_NAME "org.opencontainers.image.ref.name"

/* ---------------------------------------------------------------------- */
/* references                                                              */

static const char *const other_transports[] = {
	"dir:", "containers-storage:", "docker-daemon:", "oci-archive:", "ostree:", "sif:",
	"tarball:", "atomic:",
};

int imgsrc_ref_parse(const char *s, struct imgsrc_ref *out, char **errmsg)
{
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	if (!s || !*s) {
		*errmsg = xstrdup("empty image reference");
		return BG_ERR_INVAL;
	}
	if (strncmp(s, "oci:", 4) == 0 || strncmp(s, "docker-archive:", 15) == 0) {
		bool oci = s[0] == 'o';
		const char *rest = s + (oci ? 4 : 15);
		const char *colon = strchr(rest, ':');
		size_t pl = colon ? (size_t)(colon - rest) : strlen(rest);
		if (pl == 0) {
			*errmsg = xasprintf("invalid image reference '%s': missing path after '%s'", s,
					    oci ? "oci:" : "docker-archive:");
			return BG_ERR_INVAL;
		}
		out->kind = oci ? IMGSRC_OCI : IMGSRC_DOCKER_ARCHIVE;
		out->path = xstrndup(rest, pl);
		if (colon) {
			const char *name = colon + 1;
			if (!*name) {
				*errmsg = xasprintf("invalid image reference '%s': empty %s after ':'", s,
						    oci ? "image name" : "name:tag");
				goto bad;
			}
			for (const char *p = name; *p; p++)
				if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f) {
					*errmsg = xasprintf("invalid image reference '%s': the name "
							    "contains whitespace or a non-ASCII character",
							    s);
					goto bad;
				}
			if (!oci) {
				struct reg_ref rr;
				char *e = NULL;
				if (!strchr(name, ':') || reg_ref_parse(name, &rr, &e) != 0) {
					*errmsg = xasprintf("invalid image reference '%s': after the path "
							    "give NAME:TAG as `docker save` recorded it%s%s%s",
							    s, e ? " (" : "", e ? e : "", e ? ")" : "");
					free(e);
					goto bad;
				}
			}
			out->name = xstrdup(name);
		}
		return 0;
	}
	for (size_t i = 0; i < ARRAY_LEN(other_transports); i++) {
		size_t l = strlen(other_transports[i]);
		if (strncmp(s, other_transports[i], l) == 0) {
			*errmsg = xasprintf("unsupported image source '%.*s' in '%s' (supported: a "
					    "registry reference, oci:PATH[:NAME], "
					    "docker-archive:PATH[:NAME:TAG])",
					    (int)l, other_transports[i], s);
			return BG_ERR_INVAL;
		}
	}
	if (strncmp(s, "docker://", 9) == 0)
		s += 9;
	out->kind = IMGSRC_REGISTRY;
	return reg_ref_parse(s, &out->reg, errmsg);
bad:
	free(out->path);
	out->path = NULL;
	return BG_ERR_INVAL;
}

void imgsrc_ref_release(struct imgsrc_ref *r)
{
	free(r->path);
	free(r->name);
	memset(r, 0, sizeof(*r));
}

static char *ref_format(const struct imgsrc_ref *r)
{
	switch (r->kind) {
	case IMGSRC_OCI:
		return r->name ? xasprintf("oci:%s:%s", r->path, r->name)
			       : xasprintf("oci:%s", r->path);
	case IMGSRC_DOCKER_ARCHIVE:
		return r->name ? xasprintf("docker-archive:%s:%s", r->path, r->name)
			       : xasprintf("docker-archive:%s", r->path);
	default:
		return reg_ref_format(&r->reg);
	}
}

const char *imgsrc_compression_name(enum imgsrc_compression c)
{
	switch (c) {
	case IMGSRC_GZIP: return "gzip";
	case IMGSRC_ZSTD: return "zstd";
	default: return "tar";
	}
}

bool imgsrc_err_permanent(int rc)
{
	switch (rc) {
	case BG_ERR_INVAL:
	case BG_ERR_NOENT:
	case BG_ERR_PERM:
	case BG_ERR_PROTO:
	case BG_ERR_UNSUPPORTED:
		return true;
	default:
		return false;
	}
}

void imgsrc_image_release(struct imgsrc_image *img)
{
	for (size_t i = 0; i < img->nlayers; i++) {
		free(img->layers[i].media_type);
		free(img->layers[i].path);
	}
	free(img->layers);
	free(img->ref);
	free(img->manifest_media_type);
	free(img->config_path);
	free(img->platform);
	memset(img, 0, sizeof(*img));
}

/* ---------------------------------------------------------------------- */
/* platforms                                                               */

struct platform {
	char os[32], arch[32], variant[32];
};

static bool platform_word(const char *p, size_t n)
{
	if (n == 0 || n >= 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_' ||
		      p[i] == '-' || p[i] == '.'))
			return false;
	return true;
}

static int platform_parse(const char *s, struct platform *p, char **errmsg)
{
	memset(p, 0, sizeof(*p));
	const char *a = strchr(s, '/');
	const char *v = a ? strchr(a + 1, '/') : NULL;
	size_t ol = a ? (size_t)(a - s) : 0;
	size_t al = a ? (v ? (size_t)(v - a - 1) : strlen(a + 1)) : 0;
	size_t vl = v ? strlen(v + 1) : 0;
	if (!a || !platform_word(s, ol) || !platform_word(a + 1, al) ||
	    (v && !platform_word(v + 1, vl))) {
		*errmsg = xasprintf("invalid platform '%s': expected OS/ARCH[/VARIANT], e.g. "
				    "linux/amd64 or linux/arm64/v8",
				    s);
		return BG_ERR_INVAL;
	}
	memcpy(p->os, s, ol);
	memcpy(p->arch, a + 1, al);
	if (v)
		memcpy(p->variant, v + 1, vl);
	return 0;
}

static char *platform_str(const char *os, const char *arch, const char *variant)
{
	if (variant && *variant)
		return xasprintf("%s/%s/%s", os, arch, variant);
	return xasprintf("%s/%s", os, arch);
}

/* ---------------------------------------------------------------------- */
/* manifests                                                               */

struct desc {
	char *media_type;
	char digest[BLOB_DIGEST_MAX];
	uint64_t size;
	bool has_platform;
	char os[32], arch[32], variant[32];
	char *ref_name;
	bool attestation;
	enum imgsrc_compression comp;
};

struct parsed {
	bool is_index;
	char *media_type;
	struct desc config;
	struct desc *items; /* layers, or an index's manifests */
	size_t n;
};

static void desc_release(struct desc *d)
{
	free(d->media_type);
	free(d->ref_name);
	memset(d, 0, sizeof(*d));
}

static void parsed_release(struct parsed *p)
{
	free(p->media_type);
	desc_release(&p->config);
	for (size_t i = 0; i < p->n; i++)
		desc_release(&p->items[i]);
	free(p->items);
	memset(p, 0, sizeof(*p));
}

static bool is_index_type(const char *mt)
{
	return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

static bool is_manifest_type(const char *mt)
{
	return strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_MANIFEST) == 0;
}

static bool is_v1_type(const char *mt)
{
	return strcmp(mt, MT_DOCKER_V1) == 0 || strcmp(mt, MT_DOCKER_V1_SIGNED) == 0;
}

static char *schema1_msg(const char *what)
{
	return xasprintf("%s is a Docker schema-1 manifest, which is not supported (it is "
			 "deprecated and unverifiable); push the image again with a current "
			 "client, e.g. `skopeo copy --format v2s2`",
			 what);
}

/* A descriptor object.  what: for messages ("layer 2 of manifest sha256:..."). */
static int parse_desc(json_t *o, const char *what, struct desc *d, char **errmsg)
{
	memset(d, 0, sizeof(*d));
	if (!json_is_object(o)) {
		*errmsg = xasprintf("%s is not a JSON object", what);
		return BG_ERR_PROTO;
	}
	const char *mt = json_string_value(json_object_get(o, "mediaType"));
	const char *dg = json_string_value(json_object_get(o, "digest"));
	json_t *sz = json_object_get(o, "size");
	if (!dg) {
		*errmsg = xasprintf("%s has no digest", what);
		return BG_ERR_PROTO;
	}
	if (!blobstore_digest_valid(dg)) {
		bool other = strchr(dg, ':') && strncmp(dg, "sha256:", 7) != 0;
		*errmsg = other ? xasprintf("%s has digest '%s': only sha256 is supported", what, dg)
				: xasprintf("%s has an invalid digest '%s'", what, dg);
		return other ? BG_ERR_UNSUPPORTED : BG_ERR_PROTO;
	}
	if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
		*errmsg = xasprintf("%s (%s) has no valid size", what, dg);
		return BG_ERR_PROTO;
	}
	d->media_type = xstrdup(mt ? mt : "");
	snprintf(d->digest, sizeof(d->digest), "%s", dg);
	d->size = (uint64_t)json_integer_value(sz);
	json_t *pl = json_object_get(o, "platform");
	if (json_is_object(pl)) {
		const char *os = json_string_value(json_object_get(pl, "os"));
		const char *arch = json_string_value(json_object_get(pl, "architecture"));
		const char *var = json_string_value(json_object_get(pl, "variant"));
		if (os && arch) {
			d->has_platform = true;
			snprintf(d->os, sizeof(d->os), "%s", os);
			snprintf(d->arch, sizeof(d->arch), "%s", arch);
			snprintf(d->variant, sizeof(d->variant), "%s", var ? var : "");
		}
	}
	json_t *an = json_object_get(o, "annotations");
	if (json_is_object(an)) {
		const char *rn = json_string_value(json_object_get(an, ANNOT_REF_NAME));
		if (rn)
			d->ref_name = xstrdup(rn);
		const char *rt = json_string_value(json_object_get(an, "vnd.docker.reference.type"));
		if (rt && strcmp(rt, "attestation-manifest") == 0)
			d->attestation = true;
	}
	return 0;
}

static int layer_compression(const struct desc *d, const char *what, enum imgsrc_compression *c,
			     char **errmsg)
{
	const char *mt = d->media_type;
	if (strcmp(mt, MT_OCI_LAYER) == 0 || strcmp(mt, MT_DOCKER_LAYER) == 0)
		*c = IMGSRC_TAR;
	else if (strcmp(mt, MT_OCI_LAYER_GZIP) == 0 || strcmp(mt, MT_DOCKER_LAYER_GZIP) == 0)
		*c = IMGSRC_GZIP;
	else if (strcmp(mt, MT_OCI_LAYER_ZSTD) == 0)
		*c = IMGSRC_ZSTD;
	else if (strstr(mt, "foreign") || strstr(mt, "nondistributable")) {
		*errmsg = xasprintf("%s (%s) is a foreign layer (%s), fetched from URLs outside "
				    "the registry; foreign layers are not supported",
				    what, d->digest, mt);
		return BG_ERR_UNSUPPORTED;
	} else {
		*errmsg = xasprintf("%s (%s) has media type '%s', which is not a container image "
				    "layer (supported: tar, tar+gzip, tar+zstd)",
				    what, d->digest, mt[0] ? mt : "(none)");
		return BG_ERR_UNSUPPORTED;
	}
	return 0;
}

/*
 * Parse a manifest or index.  hint: the Content-Type it came with (may be
 * "" or NULL).  what: how to name it in messages ("manifest sha256:...").
 */
static int parse_manifest(const char *data, size_t len, const char *hint, const char *what,
			  struct parsed *p, char **errmsg)
{
	memset(p, 0, sizeof(*p));
	if (hint && is_v1_type(hint)) {
		*errmsg = schema1_msg(what);
		return BG_ERR_UNSUPPORTED;
	}
	json_error_t je;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		*errmsg = xasprintf("%s is not valid JSON: line %d column %d: %s", what, je.line,
				    je.column, je.text);
		return BG_ERR_PROTO;
	}
	int rc = 0;
	if (!json_is_object(j)) {
		*errmsg = xasprintf("%s is not a JSON object", what);
		rc = BG_ERR_PROTO;
		goto out;
	}
	json_t *sv = json_object_get(j, "schemaVersion");
	if (json_is_integer(sv) && json_integer_value(sv) == 1) {
		*errmsg = schema1_msg(what);
		rc = BG_ERR_UNSUPPORTED;
		goto out;
	}
	if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
		*errmsg = xasprintf("%s has %s schemaVersion (expected 2)", what,
				    sv ? "an unsupported" : "no");
		rc = sv ? BG_ERR_UNSUPPORTED : BG_ERR_PROTO;
		goto out;
	}
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	if (!mt && hint && (is_index_type(hint) || is_manifest_type(hint)))
		mt = hint;
	if (!mt) {
		if (json_object_get(j, "manifests"))
			mt = MT_OCI_INDEX;
		else if (json_object_get(j, "config") || json_object_get(j, "layers"))
			mt = MT_OCI_MANIFEST;
		else
			mt = "";
	}
	if (is_v1_type(mt)) {
		*errmsg = schema1_msg(what);
		rc = BG_ERR_UNSUPPORTED;
		goto out;
	}
	if (!is_index_type(mt) && !is_manifest_type(mt)) {
		*errmsg = xasprintf("%s has media type '%s', which is neither an image manifest nor "
				    "an index",
				    what, mt);
		rc = BG_ERR_UNSUPPORTED;
		goto out;
	}
	p->media_type = xstrdup(mt);
	p->is_index = is_index_type(mt);
	json_t *arr = json_object_get(j, p->is_index ? "manifests" : "layers");
	if (!json_is_array(arr)) {
		*errmsg = xasprintf("%s has no \"%s\" array", what, p->is_index ? "manifests" : "layers");
		rc = BG_ERR_PROTO;
		goto out;
	}
	if (!p->is_index) {
		char *w = xasprintf("the config of %s", what);
		rc = parse_desc(json_object_get(j, "config"), w, &p->config, errmsg);
		free(w);
		if (rc)
			goto out;
		const char *cmt = p->config.media_type;
		if (strcmp(cmt, MT_OCI_CONFIG) != 0 && strcmp(cmt, MT_DOCKER_CONFIG) != 0) {
			*errmsg = xasprintf("%s is not a container image: its config has media type "
					    "'%s' (an OCI artifact?)",
					    what, cmt[0] ? cmt : "(none)");
			rc = BG_ERR_UNSUPPORTED;
			goto out;
		}
	}
	p->n = json_array_size(arr);
	p->items = xcalloc(p->n, sizeof(struct desc));
	for (size_t i = 0; i < p->n; i++) {
		char *w = xasprintf("%s %zu of %s", p->is_index ? "entry" : "layer", i + 1, what);
		rc = parse_desc(json_array_get(arr, i), w, &p->items[i], errmsg);
		if (rc == 0 && !p->is_index)
			rc = layer_compression(&p->items[i], w, &p->items[i].comp, errmsg);
		free(w);
		if (rc)
			goto out;
	}
out:
	json_decref(j);
	if (rc)
		parsed_release(p);
	return rc;
}

/* The index entry for platform pf, or an error listing what there is. */
static int pick_platform(const struct parsed *idx, const struct platform *pf, const char *what,
			 const struct desc **out, char **errmsg)
{
	const struct desc *best = NULL;
	for (size_t i = 0; i < idx->n; i++) {
		const struct desc *d = &idx->items[i];
		if (!d->has_platform || d->attestation)
			continue;
		if (strcmp(d->os, pf->os) != 0 || strcmp(d->arch, pf->arch) != 0)
			continue;
		if (pf->variant[0] && strcmp(d->variant, pf->variant) != 0)
			continue;
		if (!best || (best->variant[0] && !d->variant[0]))
			best = d;
	}
	if (best) {
		*out = best;
		return 0;
	}
	struct sb sb;
	sb_init(&sb);
	for (size_t i = 0; i < idx->n; i++) {
		const struct desc *d = &idx->items[i];
		if (d->attestation)
			continue;
		char *ps = d->has_platform ? platform_str(d->os, d->arch, d->variant)
					   : xstrdup("(no platform)");
		sb_addf(&sb, "%s%s", sb.len ? ", " : "", ps);
		free(ps);
	}
	char *want = platform_str(pf->os, pf->arch, pf->variant);
	*errmsg = xasprintf("%s has no %s image (it has: %s)", what, want,
			    sb.len ? sb.buf : "nothing");
	free(want);
	sb_release(&sb);
	return BG_ERR_NOENT;
}

/* ---------------------------------------------------------------------- */
/* the download driver                                                     */

struct dl_item {
	const char *digest;
	uint64_t size;
	bool report;
	atomic_uint_fast64_t done;
	atomic_int state; /* 0 waiting, 1 running, 2 done, 3 failed */
	/* calling thread only */
	uint64_t reported;
	bool reported_any, reported_end;
	int64_t last_report;
};

struct dl;
typedef int (*dl_fetch_fn)(struct dl *d, struct dl_item *it, const struct reg_sink *sink,
			   char **errmsg);

struct dl {
	struct blobstore *bs;
	struct dl_item *items;
	size_t n, next;
	dl_fetch_fn fetch;
	/* sources */
	struct reg_client *client;
	const struct reg_ref *rref;
	const char *layout;
	/* state */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_bool stop;
	int active;
	int rc;
	char *err;
	const char *err_digest;
	atomic_uint_fast64_t fetched_bytes;
	atomic_size_t fetched_blobs;
};

struct dl_sink {
	struct dl *d;
	struct dl_item *it;
	struct blobstore_writer *w;
};

static bool dl_stopped(void *arg)
{
	struct dl *d = arg;
	return atomic_load(&d->stop);
}

static bool sink_cancelled(void *arg)
{
	struct dl_sink *s = arg;
	return atomic_load(&s->d->stop);
}

static uint64_t sink_offset(void *arg)
{
	struct dl_sink *s = arg;
	return blobstore_writer_offset(s->w);
}

static int sink_write(void *arg, const void *p, size_t n)
{
	struct dl_sink *s = arg;
	int rc = blobstore_writer_write(s->w, p, n);
	if (rc == 0) {
		atomic_store(&s->it->done, blobstore_writer_offset(s->w));
		atomic_fetch_add(&s->d->fetched_bytes, n);
	}
	return rc;
}

static int sink_reset(void *arg)
{
	struct dl_sink *s = arg;
	int rc = blobstore_writer_reset(s->w);
	atomic_store(&s->it->done, 0);
	return rc;
}

/* Bring one blob into the cache. */
static int dl_one(struct dl *d, struct dl_item *it, char **errmsg)
{
	for (int round = 0;; round++) {
		struct blobstore_writer *w = NULL;
		bool present = false;
		int rc = blobstore_writer_open(d->bs, it->digest, (int64_t)it->size, dl_stopped, d, &w,
					       &present, errmsg);
		if (rc)
			return rc;
		if (present) {
			atomic_store(&it->done, it->size);
			return 0;
		}
		uint64_t start = blobstore_writer_offset(w);
		atomic_store(&it->done, start);
		struct dl_sink s = {d, it, w};
		struct reg_sink sink = {sink_offset, sink_write, sink_reset, sink_cancelled, &s};
		rc = d->fetch(d, it, &sink, errmsg);
		if (rc) {
			const char *we = blobstore_writer_error(w);
			if (we && rc != BG_ERR_CANCELED) {
				free(*errmsg);
				*errmsg = xasprintf("cannot store blob %s: %s", it->digest, we);
			}
			/* keep what arrived for a later resume, unless the source
			 * broke the protocol (then the bytes are suspect) */
			blobstore_writer_abort(w, rc != BG_ERR_PROTO);
			return rc;
		}
		rc = blobstore_writer_commit(w, NULL, errmsg);
		if (rc == BG_ERR_PROTO && start > 0 && round == 0) {
			/* a resumed download that does not verify: the old partial
			 * may be from elsewhere; fetch the whole blob once more */
			free(*errmsg);
			*errmsg = NULL;
			continue;
		}
		if (rc == 0)
			atomic_fetch_add(&d->fetched_blobs, 1);
		return rc;
	}
}

static void *dl_thread(void *arg)
{
	struct dl *d = arg;
	for (;;) {
		pthread_mutex_lock(&d->mu);
		if (atomic_load(&d->stop) || d->next >= d->n) {
			d->active--;
			pthread_cond_broadcast(&d->cv);
			pthread_mutex_unlock(&d->mu);
			return NULL;
		}
		struct dl_item *it = &d->items[d->next++];
		atomic_store(&it->state, 1);
		pthread_mutex_unlock(&d->mu);

		char *err = NULL;
		int rc = dl_one(d, it, &err);

		pthread_mutex_lock(&d->mu);
		atomic_store(&it->state, rc ? 3 : 2);
		if (rc && !d->rc) {
			d->rc = rc;
			d->err = err;
			d->err_digest = it->digest;
			err = NULL;
			atomic_store(&d->stop, true);
		}
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mu);
		free(err);
	}
}

static void dl_report(struct dl *d, const struct imgsrc_opts *o, int64_t interval, bool final)
{
	if (!o->progress)
		return;
	int64_t now = mono_us();
	for (size_t i = 0; i < d->n; i++) {
		struct dl_item *it = &d->items[i];
		if (!it->report || it->reported_end)
			continue;
		int st = atomic_load(&it->state);
		uint64_t done = atomic_load(&it->done);
		if (st == 2) {
			/* verified and published: the one report with done == total */
			o->progress(o->arg, it->digest, it->size, it->size);
			it->reported_end = true;
			continue;
		}
		if (st != 1 || final || done >= it->size)
			continue;
		if (!it->reported_any || (done != it->reported && now - it->last_report >= interval)) {
			o->progress(o->arg, it->digest, done, it->size);
			it->reported_any = true;
			it->reported = done;
			it->last_report = now;
		}
	}
}

/* Run the driver; the calling thread waits, polls and reports. */
static int dl_run(struct dl *d, const struct imgsrc_opts *o, char **errmsg)
{
	int par = o->parallel > 0 ? o->parallel : 4;
	if ((size_t)par > d->n)
		par = (int)d->n;
	int64_t interval = o->progress_interval_us > 0 ? o->progress_interval_us : 250000;
	pthread_mutex_init(&d->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_t *th = xcalloc((size_t)par + 1, sizeof(pthread_t));
	int started = 0;
	pthread_mutex_lock(&d->mu);
	for (int i = 0; i < par; i++) {
		if (pthread_create(&th[i], NULL, dl_thread, d) != 0)
			break;
		started++;
		d->active++;
	}
	pthread_mutex_unlock(&d->mu);
	if (started == 0 && d->n > 0) {
		d->rc = BG_ERR_NOMEM;
		d->err = xstrdup("cannot start download threads");
	}
	for (;;) {
		pthread_mutex_lock(&d->mu);
		if (d->active == 0) {
			pthread_mutex_unlock(&d->mu);
			break;
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		pthread_mutex_unlock(&d->mu);
		if (o->cancelled && !atomic_load(&d->stop) && o->cancelled(o->arg)) {
			pthread_mutex_lock(&d->mu);
			if (!d->rc) {
				d->rc = BG_ERR_CANCELED;
				d->err = xstrdup("cancelled");
			}
			atomic_store(&d->stop, true);
			pthread_mutex_unlock(&d->mu);
		}
		dl_report(d, o, interval, false);
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	dl_report(d, o, interval, true);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	if (d->rc) {
		*errmsg = d->err;
		d->err = NULL;
	}
	return d->rc;
}

static int fetch_from_registry(struct dl *d, struct dl_item *it, const struct reg_sink *sink,
			       char **errmsg)
{
	return reg_blob_get(d->client, d->rref, it->digest, it->size, sink, errmsg);
}

static int fetch_from_layout(struct dl *d, struct dl_item *it, const struct reg_sink *sink,
			     char **errmsg)
{
	char *p = xasprintf("%s/blobs/sha256/%s", d->layout, it->digest + 7);
	int rc = 0;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("blob %s is missing from the layout: cannot open %s: %s",
				    it->digest, p, strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size != it->size) {
		*errmsg = xasprintf("blob %s in the layout (%s) has %lld bytes, the manifest says "
				    "%llu",
				    it->digest, p, (long long)st.st_size, (unsigned long long)it->size);
		rc = BG_ERR_PROTO;
		goto out;
	}
	uint64_t off = sink->offset(sink->arg);
	if (lseek(fd, (off_t)off, SEEK_SET) < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot seek in %s: %s", p, strerror(errno));
		goto out;
	}
	size_t bufsz = 1 << 20;
	char *buf = xmalloc(bufsz);
	for (;;) {
		if (sink->cancelled && sink->cancelled(sink->arg)) {
			rc = BG_ERR_CANCELED;
			*errmsg = xstrdup("cancelled");
			break;
		}
		ssize_t n = read(fd, buf, bufsz);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = bg_errno(errno);
			*errmsg = xasprintf("cannot read %s: %s", p, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		rc = sink->write(sink->arg, buf, (size_t)n);
		if (rc) {
			*errmsg = xasprintf("cannot store blob %s: %s", it->digest, bg_strerror(rc));
			break;
		}
	}
	free(buf);
out:
	if (fd >= 0)
		close(fd);
	free(p);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* the shared tail: config, layers, result                                 */

struct fetch {
	struct blobstore *bs;
	const struct imgsrc_opts *o;
	struct platform pf;
	struct imgsrc_image *img;
	/* sources */
	struct reg_client *client;
	const struct reg_ref *rref;
	const char *layout;
};

static void dl_init(struct dl *d, struct fetch *f, size_t n)
{
	memset(d, 0, sizeof(*d));
	d->bs = f->bs;
	d->items = xcalloc(n, sizeof(struct dl_item));
	d->n = n;
	d->client = f->client;
	d->rref = f->rref;
	d->layout = f->layout;
	d->fetch = f->layout ? fetch_from_layout : fetch_from_registry;
}

static void dl_account(struct dl *d, struct fetch *f)
{
	f->img->fetched_bytes += atomic_load(&d->fetched_bytes);
	f->img->fetched_blobs += atomic_load(&d->fetched_blobs);
	free(d->items);
	d->items = NULL;
}

/* Check the config against the manifest and the wanted platform. */
static int check_config(struct fetch *f, const struct parsed *m, const char *cfg, size_t len,
			char **errmsg)
{
	json_error_t je;
	json_t *j = json_loadb(cfg, len, 0, &je);
	int rc = 0;
	if (!j || !json_is_object(j)) {
		*errmsg = j ? xasprintf("config %s is not a JSON object", f->img->config_digest)
			    : xasprintf("config %s is not valid JSON: line %d column %d: %s",
					f->img->config_digest, je.line, je.column, je.text);
		rc = BG_ERR_PROTO;
		goto out;
	}
	const char *os = json_string_value(json_object_get(j, "os"));
	const char *arch = json_string_value(json_object_get(j, "architecture"));
	const char *var = json_string_value(json_object_get(j, "variant"));
	if (os && arch) {
		f->img->platform = platform_str(os, arch, var);
		if (strcmp(os, f->pf.os) != 0 || strcmp(arch, f->pf.arch) != 0 ||
		    (f->pf.variant[0] && var && strcmp(var, f->pf.variant) != 0)) {
			char *want = platform_str(f->pf.os, f->pf.arch, f->pf.variant);
			*errmsg = xasprintf("manifest %s is an image for %s, not %s",
					    f->img->manifest_digest, f->img->platform, want);
			free(want);
			rc = BG_ERR_UNSUPPORTED;
			goto out;
		}
	} else {
		f->img->platform = platform_str(f->pf.os, f->pf.arch, f->pf.variant);
	}
	json_t *rootfs = json_object_get(j, "rootfs");
	json_t *ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(ids)) {
		*errmsg = xasprintf("config %s has no rootfs.diff_ids", f->img->config_digest);
		rc = BG_ERR_PROTO;
		goto out;
	}
	if (json_array_size(ids) != m->n) {
		*errmsg = xasprintf("config %s lists %zu layer diff_ids but manifest %s has %zu "
				    "layers",
				    f->img->config_digest, json_array_size(ids),
				    f->img->manifest_digest, m->n);
		rc = BG_ERR_PROTO;
		goto out;
	}
	for (size_t i = 0; i < m->n; i++) {
		const char *id = json_string_value(json_array_get(ids, i));
		if (!id || !blobstore_digest_valid(id)) {
			*errmsg = xasprintf("config %s has an invalid diff_id %zu: '%s'",
					    f->img->config_digest, i + 1, id ? id : "(not a string)");
			rc = BG_ERR_PROTO;
			goto out;
		}
		if (m->items[i].comp == IMGSRC_TAR && strcmp(id, m->items[i].digest) != 0) {
			*errmsg = xasprintf("layer %zu (%s) is an uncompressed tar, so its diff_id must "
					    "be its digest, but config %s says %s",
					    i + 1, m->items[i].digest, f->img->config_digest, id);
			rc = BG_ERR_PROTO;
			goto out;
		}
		snprintf(f->img->layers[i].diff_id, BLOB_DIGEST_MAX, "%s", id);
	}
out:
	if (j)
		json_decref(j);
	return rc;
}

/* Manifest m (digest in img) is chosen: fetch config, check, fetch layers. */
static int finish_image(struct fetch *f, const struct parsed *m, char **errmsg)
{
	struct imgsrc_image *img = f->img;
	int rc;
	img->manifest_media_type = xstrdup(m->media_type);
	snprintf(img->config_digest, sizeof(img->config_digest), "%s", m->config.digest);
	img->nlayers = m->n;
	img->layers = xcalloc(m->n ? m->n : 1, sizeof(struct imgsrc_layer));
	for (size_t i = 0; i < m->n; i++) {
		struct imgsrc_layer *l = &img->layers[i];
		snprintf(l->digest, sizeof(l->digest), "%s", m->items[i].digest);
		l->media_type = xstrdup(m->items[i].media_type);
		l->compression = m->items[i].comp;
		l->size = m->items[i].size;
		l->path = blobstore_path(f->bs, l->digest);
		img->layers_size += l->size;
	}
	if (m->config.size > CONFIG_MAX) {
		*errmsg = xasprintf("config %s is %llu bytes, more than the %u MiB allowed",
				    m->config.digest, (unsigned long long)m->config.size,
				    CONFIG_MAX >> 20);
		return BG_ERR_PROTO;
	}

	/* config first: a wrong image fails before any layer moves */
	struct dl d;
	dl_init(&d, f, 1);
	d.items[0].digest = m->config.digest;
	d.items[0].size = m->config.size;
	rc = dl_run(&d, f->o, errmsg);
	dl_account(&d, f);
	if (rc)
		return rc;
	char *cfg = NULL;
	size_t cfglen = 0;
	rc = blobstore_read(f->bs, m->config.digest, CONFIG_MAX, &cfg, &cfglen, errmsg);
	if (rc)
		return rc;
	img->config_path = blobstore_path(f->bs, m->config.digest);
	rc = check_config(f, m, cfg, cfglen, errmsg);
	free(cfg);
	if (rc)
		return rc;

	if (m->n == 0)
		return 0;
	dl_init(&d, f, m->n);
	for (size_t i = 0; i < m->n; i++) {
		d.items[i].digest = img->layers[i].digest;
		d.items[i].size = img->layers[i].size;
		d.items[i].report = true;
	}
	rc = dl_run(&d, f->o, errmsg);
	dl_account(&d, f);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* registry                                                                */

/* The manifest with this digest: from the cache, else from the registry
 * (then stored).  media_type gets the Content-Type when fetched. */
static int registry_manifest_by_digest(struct fetch *f, const char *digest, char **data,
				       size_t *len, char **media_type, char **errmsg)
{
	*media_type = NULL;
	char *e = NULL;
	int rc = blobstore_read(f->bs, digest, MANIFEST_MAX, data, len, &e);
	free(e);
	if (rc == 0)
		return 0;
	struct reg_ref r = *f->rref;
	snprintf(r.digest, sizeof(r.digest), "%s", digest);
	struct reg_manifest m;
	rc = reg_manifest_get(f->client, &r, &m, f->o->cancelled, f->o->arg, errmsg);
	if (rc)
		return rc;
	rc = blobstore_put(f->bs, m.digest, m.data, m.len, NULL, errmsg);
	if (rc == 0) {
		f->img->fetched_bytes += m.len;
		*data = m.data;
		*len = m.len;
		*media_type = m.media_type;
		m.data = m.media_type = NULL;
	}
	reg_manifest_release(&m);
	return rc;
}

static int fetch_registry(struct fetch *f, char **errmsg)
{
	const struct reg_ref *rr = f->rref;
	char top[BLOB_DIGEST_MAX] = "";
	char *data = NULL, *mt = NULL;
	size_t len = 0;
	int rc;
	if (rr->digest[0]) {
		snprintf(top, sizeof(top), "%s", rr->digest);
		rc = registry_manifest_by_digest(f, top, &data, &len, &mt, errmsg);
	} else {
		/* a tag: ask which digest it names now; that may be cached */
		char *e = NULL;
		rc = reg_manifest_head(f->client, rr, top, f->o->cancelled, f->o->arg, &e);
		if (rc == BG_ERR_CANCELED || rc == BG_ERR_IO || rc == BG_ERR_TIMEDOUT) {
			/* retried already; a GET would only wait as long again */
			*errmsg = e;
			return rc;
		}
		/* otherwise (404, 401, no digest header) the GET below tells the
		 * whole story: a HEAD answer has no error body */
		free(e);
		e = NULL;
		if (rc == 0 && blobstore_read(f->bs, top, MANIFEST_MAX, &data, &len, &e) == 0) {
			rc = 0;
		} else {
			free(e);
			struct reg_manifest m;
			rc = reg_manifest_get(f->client, rr, &m, f->o->cancelled, f->o->arg, errmsg);
			if (rc)
				return rc;
			rc = blobstore_put(f->bs, m.digest, m.data, m.len, NULL, errmsg);
			snprintf(top, sizeof(top), "%s", m.digest);
			f->img->fetched_bytes += m.len;
			data = m.data;
			len = m.len;
			mt = m.media_type;
			m.data = m.media_type = NULL;
			reg_manifest_release(&m);
		}
	}
	if (rc)
		goto out;
	char digest[BLOB_DIGEST_MAX];
	snprintf(digest, sizeof(digest), "%s", top);
	for (int depth = 0;; depth++) {
		struct parsed p;
		char *what = xasprintf("manifest %s", digest);
		rc = parse_manifest(data, len, mt, what, &p, errmsg);
		free(what);
		if (rc)
			goto out;
		if (!p.is_index) {
			snprintf(f->img->manifest_digest, BLOB_DIGEST_MAX, "%s", digest);
			rc = finish_image(f, &p, errmsg);
			parsed_release(&p);
			goto out;
		}
		if (depth == 0)
			snprintf(f->img->index_digest, BLOB_DIGEST_MAX, "%s", digest);
		const struct desc *pick = NULL;
		char *w = xasprintf("index %s", digest);
		rc = depth < 3 ? pick_platform(&p, &f->pf, w, &pick, errmsg) : BG_ERR_PROTO;
		if (depth >= 3)
			*errmsg = xasprintf("%s nests indexes more than 3 deep", w);
		free(w);
		if (rc == 0)
			snprintf(digest, sizeof(digest), "%s", pick->digest);
		parsed_release(&p);
		if (rc)
			goto out;
		free(data);
		free(mt);
		data = mt = NULL;
		rc = registry_manifest_by_digest(f, digest, &data, &len, &mt, errmsg);
		if (rc)
			goto out;
	}
out:
	free(data);
	free(mt);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* OCI layout                                                              */

/* A blob of the layout (manifest or index), verified and put in the cache. */
static int layout_read(struct fetch *f, const char *digest, char **data, size_t *len,
		       char **errmsg)
{
	char *p = xasprintf("%s/blobs/sha256/%s", f->layout, digest + 7);
	int rc = read_file(p, MANIFEST_MAX, data, len);
	if (rc) {
		*errmsg = xasprintf("cannot read %s (%s): %s", p, digest,
				    rc == BG_ERR_TOOBIG ? "larger than 4 MiB" : bg_strerror(rc));
		free(p);
		return rc;
	}
	free(p);
	rc = blobstore_put(f->bs, digest, *data, *len, NULL, errmsg);
	if (rc) {
		free(*data);
		*data = NULL;
	}
	return rc;
}

static int fetch_layout(struct fetch *f, const char *name, char **errmsg)
{
	char *p = xasprintf("%s/oci-layout", f->layout);
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(p, 65536, &buf, &len);
	if (rc) {
		struct stat st;
		if (stat(f->layout, &st) < 0)
			*errmsg = xasprintf("cannot open the OCI layout %s: %s", f->layout,
					    strerror(errno));
		else
			*errmsg = xasprintf("%s is not an OCI image layout (no readable oci-layout "
					    "file)",
					    f->layout);
		free(p);
		return rc == BG_ERR_NOENT ? BG_ERR_NOENT : rc;
	}
	free(p);
	json_t *j = json_loadb(buf, len, 0, NULL);
	const char *ver = json_string_value(json_object_get(j, "imageLayoutVersion"));
	if (!ver || strncmp(ver, "1.", 2) != 0) {
		*errmsg = xasprintf("%s/oci-layout: unsupported imageLayoutVersion '%s' (expected "
				    "1.x)",
				    f->layout, ver ? ver : "(none)");
		json_decref(j);
		free(buf);
		return BG_ERR_UNSUPPORTED;
	}
	json_decref(j);
	free(buf);

	p = xasprintf("%s/index.json", f->layout);
	rc = read_file(p, MANIFEST_MAX, &buf, &len);
	if (rc) {
		*errmsg = xasprintf("cannot read %s: %s", p, bg_strerror(rc));
		free(p);
		return rc;
	}
	struct parsed idx;
	rc = parse_manifest(buf, len, MT_OCI_INDEX, p, &idx, errmsg);
	free(buf);
	if (rc == 0 && !idx.is_index) {
		*errmsg = xasprintf("%s is not an image index", p);
		parsed_release(&idx);
		rc = BG_ERR_PROTO;
	}
	if (rc) {
		free(p);
		return rc;
	}
	/* choose by name; among several of that name (or none named), by platform */
	struct parsed sel = {0};
	sel.is_index = true;
	sel.items = xcalloc(idx.n ? idx.n : 1, sizeof(struct desc));
	for (size_t i = 0; i < idx.n; i++)
		if (!name || (idx.items[i].ref_name && strcmp(idx.items[i].ref_name, name) == 0))
			sel.items[sel.n++] = idx.items[i];
	const struct desc *pick = NULL;
	struct sb names;
	sb_init(&names);
	for (size_t i = 0; i < idx.n; i++)
		if (idx.items[i].ref_name)
			sb_addf(&names, "%s'%s'", names.len ? ", " : "", idx.items[i].ref_name);
	if (sel.n == 1) {
		pick = &sel.items[0];
	} else if (sel.n == 0) {
		*errmsg = name ? xasprintf("no image named '%s' in %s (names: %s)", name, f->layout,
					   names.len ? names.buf : "none")
			       : xasprintf("%s holds no image", f->layout);
		rc = BG_ERR_NOENT;
	} else {
		/* several entries: fine only when the platform tells them apart */
		bool platforms = true;
		size_t same = 0;
		for (size_t i = 0; i < sel.n; i++) {
			const struct desc *d = &sel.items[i];
			platforms = platforms && d->has_platform;
			if (d->has_platform && strcmp(d->os, f->pf.os) == 0 &&
			    strcmp(d->arch, f->pf.arch) == 0)
				same++;
		}
		if (platforms && same <= 1) {
			rc = pick_platform(&sel, &f->pf, p, &pick, errmsg);
		} else {
			*errmsg = name ? xasprintf("%s has %zu images named '%s'", f->layout, sel.n, name)
				       : xasprintf("%s holds %zu images; name one with oci:%s:NAME "
						   "(names: %s)",
						   f->layout, sel.n, f->layout,
						   names.len ? names.buf : "none");
			rc = BG_ERR_INVAL;
		}
	}
	sb_release(&names);
	char digest[BLOB_DIGEST_MAX] = "";
	if (pick)
		snprintf(digest, sizeof(digest), "%s", pick->digest);
	free(sel.items); /* the descs belong to idx */
	parsed_release(&idx);
	free(p);
	if (rc)
		return rc;

	char *data = NULL;
	for (int depth = 0;; depth++) {
		rc = layout_read(f, digest, &data, &len, errmsg);
		if (rc)
			return rc;
		struct parsed m;
		char *what = xasprintf("manifest %s", digest);
		rc = parse_manifest(data, len, NULL, what, &m, errmsg);
		free(what);
		free(data);
		data = NULL;
		if (rc)
			return rc;
		if (!m.is_index) {
			snprintf(f->img->manifest_digest, BLOB_DIGEST_MAX, "%s", digest);
			rc = finish_image(f, &m, errmsg);
			parsed_release(&m);
			return rc;
		}
		if (depth == 0)
			snprintf(f->img->index_digest, BLOB_DIGEST_MAX, "%s", digest);
		char *w = xasprintf("index %s", digest);
		rc = depth < 3 ? pick_platform(&m, &f->pf, w, &pick, errmsg) : BG_ERR_PROTO;
		if (depth >= 3)
			*errmsg = xasprintf("%s nests indexes more than 3 deep", w);
		free(w);
		if (rc == 0)
			snprintf(digest, sizeof(digest), "%s", pick->digest);
		parsed_release(&m);
		if (rc)
			return rc;
	}
}

/* ---------------------------------------------------------------------- */
/* docker-archive                                                          */

static struct archive *archive_open_path(const char *path, int *rc, char **errmsg)
{
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	archive_read_support_filter_all(a);
	if (archive_read_open_filename(a, path, 1 << 20) != ARCHIVE_OK) {
		struct stat st;
		bool exists = stat(path, &st) == 0;
		*rc = exists ? BG_ERR_PROTO : bg_errno(errno);
		*errmsg = exists ? xasprintf("%s is not a docker archive (a tar file): %s", path,
					     archive_error_string(a))
				 : xasprintf("cannot read the docker archive %s: %s", path,
					     strerror(errno));
		archive_read_free(a);
		return NULL;
	}
	return a;
}

/* Normalise an archive path: strip "./", resolve "." and ".." (not above
 * the root), no leading "/".  Caller frees. */
static char *arch_norm(const char *dir, const char *name)
{
	struct sb sb;
	sb_init(&sb);
	if (dir && name[0] != '/')
		sb_addf(&sb, "%s/", dir);
	sb_adds(&sb, name);
	char **parts = xcalloc(sb.len + 1, sizeof(char *));
	size_t np = 0;
	char *save = NULL;
	for (char *t = strtok_r(sb.buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (strcmp(t, ".") == 0)
			continue;
		if (strcmp(t, "..") == 0) {
			if (np > 0)
				np--;
			continue;
		}
		parts[np++] = t;
	}
	struct sb out;
	sb_init(&out);
	for (size_t i = 0; i < np; i++)
		sb_addf(&out, "%s%s", i ? "/" : "", parts[i]);
	free(parts);
	sb_release(&sb);
	return sb_detach(&out);
}

struct arch_link {
	char *name, *target;
};

/* The digest a file name in a docker archive promises, if any
 * ("<hex>.json", "<hex>.tar", "blobs/sha256/<hex>"). */
static bool arch_name_digest(const char *name, char out[BLOB_DIGEST_MAX])
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	size_t bl = strlen(base);
	char hex[65];
	if (bl == 64 && strstr(name, "sha256/"))
		memcpy(hex, base, 64);
	else if (bl == 69 && strcmp(base + 64, ".json") == 0)
		memcpy(hex, base, 64);
	else if (bl == 68 && strcmp(base + 64, ".tar") == 0)
		memcpy(hex, base, 64);
	else
		return false;
	hex[64] = '\0';
	snprintf(out, BLOB_DIGEST_MAX, "sha256:%s", hex);
	return blobstore_digest_valid(out);
}

static bool repotag_matches(const char *tag, const char *want)
{
	if (strcmp(tag, want) == 0)
		return true;
	struct reg_ref a, b;
	char *e1 = NULL, *e2 = NULL;
	bool ok = reg_ref_parse(tag, &a, &e1) == 0 && reg_ref_parse(want, &b, &e2) == 0 &&
		  strcmp(a.registry, b.registry) == 0 && strcmp(a.repository, b.repository) == 0 &&
		  strcmp(a.tag, b.tag) == 0;
	free(e1);
	free(e2);
	return ok;
}

struct arch_blob {
	char *name;   /* resolved archive path */
	char digest[BLOB_DIGEST_MAX];
	uint64_t size;
	enum imgsrc_compression comp;
	bool done;
	bool is_config;
};

static int fetch_archive(struct fetch *f, const char *path, const char *name, char **errmsg)
{
	const struct imgsrc_opts *o = f->o;
	int rc = 0;
	struct arch_link *links = NULL;
	size_t nlinks = 0;
	char *mjson = NULL;
	size_t mlen = 0;
	json_t *mj = NULL;
	struct arch_blob *blobs = NULL;
	size_t nblobs = 0;
	char *buf = NULL;
	struct archive *a = archive_open_path(path, &rc, errmsg);
	if (!a)
		return rc;

	/* pass 1: manifest.json and the links */
	struct archive_entry *e;
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		char *n = arch_norm(NULL, archive_entry_pathname(e));
		const char *sl = archive_entry_symlink(e);
		const char *hl = archive_entry_hardlink(e);
		if (sl || hl) {
			char *dir = xstrdup(n);
			char *s = strrchr(dir, '/');
			if (s)
				*s = '\0';
			else
				dir[0] = '\0';
			links = xrealloc(links, (nlinks + 1) * sizeof(*links));
			links[nlinks].name = n;
			links[nlinks].target = sl ? arch_norm(dir[0] ? dir : NULL, sl) : arch_norm(NULL, hl);
			nlinks++;
			free(dir);
			continue;
		}
		if (strcmp(n, "manifest.json") == 0 && !mjson) {
			int64_t sz = archive_entry_size(e);
			if (sz < 0 || sz > (int64_t)MANIFEST_MAX) {
				*errmsg = xasprintf("%s: manifest.json is larger than 4 MiB", path);
				free(n);
				rc = BG_ERR_PROTO;
				goto out;
			}
			mjson = xmalloc((size_t)sz + 1);
			int64_t got = 0;
			while (got < sz) {
				la_ssize_t k = archive_read_data(a, mjson + got, (size_t)(sz - got));
				if (k <= 0)
					break;
				got += k;
			}
			if (got != sz) {
				*errmsg = xasprintf("%s: cannot read manifest.json: %s", path,
						    archive_error_string(a));
				free(n);
				rc = BG_ERR_PROTO;
				goto out;
			}
			mjson[sz] = '\0';
			mlen = (size_t)sz;
		}
		free(n);
	}
	if (ar != ARCHIVE_EOF) {
		*errmsg = xasprintf("%s is not a readable tar archive: %s", path,
				    archive_error_string(a));
		rc = BG_ERR_PROTO;
		goto out;
	}
	archive_read_free(a);
	a = NULL;
	if (!mjson) {
		*errmsg = xasprintf("%s is not a docker archive: it has no manifest.json", path);
		rc = BG_ERR_PROTO;
		goto out;
	}
	json_error_t je;
	mj = json_loadb(mjson, mlen, 0, &je);
	if (!mj || !json_is_array(mj) || json_array_size(mj) == 0) {
		*errmsg = mj ? xasprintf("%s: manifest.json is not a non-empty array", path)
			     : xasprintf("%s: manifest.json is not valid JSON: line %d column %d: %s",
					 path, je.line, je.column, je.text);
		rc = BG_ERR_PROTO;
		goto out;
	}
	json_t *img = NULL;
	size_t i;
	json_t *ent;
	struct sb tags;
	sb_init(&tags);
	json_array_foreach(mj, i, ent)
	{
		json_t *rt = json_object_get(ent, "RepoTags");
		size_t k;
		json_t *t;
		bool match = false;
		json_array_foreach(rt, k, t)
		{
			const char *ts = json_string_value(t);
			if (!ts)
				continue;
			sb_addf(&tags, "%s%s", tags.len ? ", " : "", ts);
			if (name && repotag_matches(ts, name))
				match = true;
		}
		if (match && !img)
			img = ent;
	}
	if (!name && json_array_size(mj) == 1)
		img = json_array_get(mj, 0);
	if (!img) {
		if (name)
			*errmsg = xasprintf("%s has no image tagged '%s' (tags: %s)", path, name,
					    tags.len ? tags.buf : "none");
		else
			*errmsg = xasprintf("%s holds %zu images; name one with "
					    "docker-archive:%s:NAME:TAG (tags: %s)",
					    path, json_array_size(mj), path, tags.len ? tags.buf : "none");
		sb_release(&tags);
		rc = name ? BG_ERR_NOENT : BG_ERR_INVAL;
		goto out;
	}
	sb_release(&tags);
	const char *cfgname = json_string_value(json_object_get(img, "Config"));
	json_t *layers = json_object_get(img, "Layers");
	if (!cfgname || !json_is_array(layers)) {
		*errmsg = xasprintf("%s: manifest.json entry has no Config or Layers", path);
		rc = BG_ERR_PROTO;
		goto out;
	}
	nblobs = json_array_size(layers) + 1;
	blobs = xcalloc(nblobs, sizeof(*blobs));
	for (size_t b = 0; b < nblobs; b++) {
		const char *bn = b == 0 ? cfgname : json_string_value(json_array_get(layers, b - 1));
		if (!bn) {
			*errmsg = xasprintf("%s: manifest.json has a layer that is not a string", path);
			rc = BG_ERR_PROTO;
			goto out;
		}
		char *r = arch_norm(NULL, bn);
		for (int hops = 0; hops < 16; hops++) {
			bool moved = false;
			for (size_t l = 0; l < nlinks; l++)
				if (strcmp(links[l].name, r) == 0) {
					free(r);
					r = xstrdup(links[l].target);
					moved = true;
					break;
				}
			if (!moved)
				break;
		}
		blobs[b].name = r;
		blobs[b].is_config = b == 0;
	}

	/* pass 2: stream what is needed into the cache */
	a = archive_open_path(path, &rc, errmsg);
	if (!a)
		goto out;
	size_t bufsz = 1 << 20;
	buf = xmalloc(bufsz);
	int64_t interval = o->progress_interval_us > 0 ? o->progress_interval_us : 250000;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		char *n = arch_norm(NULL, archive_entry_pathname(e));
		struct arch_blob *first = NULL;
		for (size_t b = 0; b < nblobs; b++)
			if (!blobs[b].done && strcmp(blobs[b].name, n) == 0) {
				first = &blobs[b];
				break;
			}
		free(n);
		if (!first)
			continue;
		int64_t total = archive_entry_size(e);
		char named[BLOB_DIGEST_MAX];
		bool has_named = arch_name_digest(first->name, named);
		uint64_t cached = 0;
		struct blobstore_writer *w = NULL;
		char digest[BLOB_DIGEST_MAX];
		unsigned char magic[4] = {0};
		size_t nmagic = 0;
		if (has_named && blobstore_stat(f->bs, named, &cached) == 0 &&
		    (int64_t)cached == total) {
			/* cached: only the compression is needed, from its first bytes */
			char *bp = blobstore_path(f->bs, named);
			int fd = open(bp, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				ssize_t k = read(fd, magic, sizeof(magic));
				nmagic = k > 0 ? (size_t)k : 0;
				close(fd);
			}
			free(bp);
			snprintf(digest, sizeof(digest), "%s", named);
		} else {
			bool present;
			rc = blobstore_writer_open(f->bs, NULL, total, NULL, NULL, &w, &present, errmsg);
			if (rc)
				goto out;
			uint64_t done = 0, reported = 0;
			int64_t last = 0;
			for (;;) {
				if (o->cancelled && o->cancelled(o->arg)) {
					blobstore_writer_abort(w, false);
					*errmsg = xstrdup("cancelled");
					rc = BG_ERR_CANCELED;
					goto out;
				}
				la_ssize_t k = archive_read_data(a, buf, bufsz);
				if (k < 0) {
					blobstore_writer_abort(w, false);
					*errmsg = xasprintf("%s: cannot read %s: %s", path, first->name,
							    archive_error_string(a));
					rc = BG_ERR_PROTO;
					goto out;
				}
				if (k == 0)
					break;
				if (nmagic < sizeof(magic)) {
					size_t c = sizeof(magic) - nmagic;
					if ((size_t)k < c)
						c = (size_t)k;
					memcpy(magic + nmagic, buf, c);
					nmagic += c;
				}
				rc = blobstore_writer_write(w, buf, (size_t)k);
				if (rc) {
					*errmsg = xasprintf("cannot store %s from %s: %s", first->name,
							    path, blobstore_writer_error(w));
					blobstore_writer_abort(w, false);
					goto out;
				}
				done += (uint64_t)k;
				f->img->fetched_bytes += (uint64_t)k;
				if (!first->is_config && o->progress && mono_us() - last >= interval &&
				    done != reported && done < (uint64_t)total) {
					o->progress(o->arg, has_named ? named : first->name, done,
						    (uint64_t)total);
					reported = done;
					last = mono_us();
				}
			}
			rc = blobstore_writer_commit(w, digest, errmsg);
			if (rc)
				goto out;
			f->img->fetched_blobs++;
			if (has_named && strcmp(named, digest) != 0) {
				*errmsg = xasprintf("%s: %s should hash to %s but hashes to %s (the "
						    "archive is damaged)",
						    path, first->name, named, digest);
				rc = BG_ERR_PROTO;
				goto out;
			}
		}
		enum imgsrc_compression comp = IMGSRC_TAR;
		if (nmagic >= 2 && magic[0] == 0x1f && magic[1] == 0x8b)
			comp = IMGSRC_GZIP;
		else if (nmagic >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f &&
			 magic[3] == 0xfd)
			comp = IMGSRC_ZSTD;
		/* the same file may serve several layers */
		for (size_t b = 0; b < nblobs; b++)
			if (!blobs[b].done && strcmp(blobs[b].name, first->name) == 0) {
				snprintf(blobs[b].digest, sizeof(blobs[b].digest), "%s", digest);
				blobs[b].size = (uint64_t)total;
				blobs[b].comp = comp;
				blobs[b].done = true; /* finish_image reports it complete */
			}
	}
	if (ar != ARCHIVE_EOF) {
		*errmsg = xasprintf("%s: cannot read the archive: %s", path, archive_error_string(a));
		rc = BG_ERR_PROTO;
		goto out;
	}
	for (size_t b = 0; b < nblobs; b++)
		if (!blobs[b].done) {
			*errmsg = xasprintf("%s: %s, named in manifest.json, is not in the archive",
					    path, blobs[b].name);
			rc = BG_ERR_PROTO;
			goto out;
		}

	/* synthesise an OCI manifest, deterministic for the same archive */
	json_t *man = json_object();
	json_object_set_new(man, "schemaVersion", json_integer(2));
	json_object_set_new(man, "mediaType", json_string(MT_OCI_MANIFEST));
	json_t *cd = json_object();
	json_object_set_new(cd, "mediaType", json_string(MT_OCI_CONFIG));
	json_object_set_new(cd, "digest", json_string(blobs[0].digest));
	json_object_set_new(cd, "size", json_integer((json_int_t)blobs[0].size));
	json_object_set_new(man, "config", cd);
	json_t *la = json_array();
	for (size_t b = 1; b < nblobs; b++) {
		json_t *ld = json_object();
		const char *lmt = blobs[b].comp == IMGSRC_GZIP   ? MT_OCI_LAYER_GZIP
				  : blobs[b].comp == IMGSRC_ZSTD ? MT_OCI_LAYER_ZSTD
								 : MT_OCI_LAYER;
		json_object_set_new(ld, "mediaType", json_string(lmt));
		json_object_set_new(ld, "digest", json_string(blobs[b].digest));
		json_object_set_new(ld, "size", json_integer((json_int_t)blobs[b].size));
		json_array_append_new(la, ld);
	}
	json_object_set_new(man, "layers", la);
	char *ms = json_dumps(man, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(man);
	char mdigest[BLOB_DIGEST_MAX];
	rc = blobstore_put(f->bs, NULL, ms, strlen(ms), mdigest, errmsg);
	if (rc == 0) {
		struct parsed m;
		char *what = xasprintf("the manifest made for %s", path);
		rc = parse_manifest(ms, strlen(ms), MT_OCI_MANIFEST, what, &m, errmsg);
		free(what);
		if (rc == 0) {
			snprintf(f->img->manifest_digest, BLOB_DIGEST_MAX, "%s", mdigest);
			rc = finish_image(f, &m, errmsg); /* everything is cached: no transfer */
			parsed_release(&m);
		}
	}
	free(ms);
out:
	if (a)
		archive_read_free(a);
	free(buf);
	for (size_t l = 0; l < nlinks; l++) {
		free(links[l].name);
		free(links[l].target);
	}
	free(links);
	for (size_t b = 0; b < nblobs; b++)
		free(blobs[b].name);
	free(blobs);
	if (mj)
		json_decref(mj);
	free(mjson);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* the front door                                                          */

int imgsrc_fetch(const char *ref, struct blobstore *bs, const struct imgsrc_opts *opts,
		 struct imgsrc_image *out, char **errmsg)
{
	static const struct imgsrc_opts defaults = {0};
	memset(out, 0, sizeof(*out));
	*errmsg = NULL;
	if (!opts)
		opts = &defaults;
	struct imgsrc_ref r;
	struct reg_client *own = NULL;
	char *inner = NULL;
	int rc = imgsrc_ref_parse(ref, &r, errmsg);
	if (rc)
		return rc;
	struct fetch f = {0};
	f.bs = bs;
	f.o = opts;
	f.img = out;
	out->ref = ref_format(&r);
	rc = platform_parse(opts->platform ? opts->platform : "linux/amd64", &f.pf, &inner);
	if (rc)
		goto out;
	switch (r.kind) {
	case IMGSRC_REGISTRY:
		f.client = opts->client;
		if (!f.client) {
			rc = reg_client_create(opts->reg, &own, &inner);
			if (rc)
				goto out;
			f.client = own;
		}
		f.rref = &r.reg;
		rc = fetch_registry(&f, &inner);
		reg_client_destroy(own);
		break;
	case IMGSRC_OCI:
		f.layout = r.path;
		rc = fetch_layout(&f, r.name, &inner);
		break;
	case IMGSRC_DOCKER_ARCHIVE:
		rc = fetch_archive(&f, r.path, r.name, &inner);
		break;
	}
out:
	if (rc) {
		*errmsg = xasprintf("%s: %s", out->ref, inner ? inner : bg_strerror(rc));
		imgsrc_image_release(out);
	}
	free(inner);
	imgsrc_ref_release(&r);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* what an image uses                                                      */

static void add_digest(char ***v, size_t *n, const char *d)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*v)[i], d) == 0)
			return;
	*v = xrealloc(*v, (*n + 1) * sizeof(char *));
	(*v)[(*n)++] = xstrdup(d);
}

static int image_blobs(struct blobstore *bs, const char *digest, int depth, char ***v, size_t *n,
		       char **errmsg)
{
	char *data = NULL;
	size_t len = 0;
	int rc = blobstore_read(bs, digest, MANIFEST_MAX, &data, &len, errmsg);
	if (rc) {
		if (!*errmsg)
			*errmsg = xasprintf("manifest %s is not in the cache", digest);
		return rc;
	}
	struct parsed p;
	char *what = xasprintf("manifest %s", digest);
	rc = parse_manifest(data, len, NULL, what, &p, errmsg);
	free(what);
	free(data);
	if (rc)
		return rc;
	add_digest(v, n, digest);
	if (!p.is_index) {
		add_digest(v, n, p.config.digest);
		for (size_t i = 0; i < p.n; i++)
			add_digest(v, n, p.items[i].digest);
	} else if (depth < 3) {
		for (size_t i = 0; i < p.n && rc == 0; i++) {
			if (blobstore_stat(bs, p.items[i].digest, NULL) != 0)
				continue; /* never fetched: nothing to keep */
			rc = image_blobs(bs, p.items[i].digest, depth + 1, v, n, errmsg);
		}
	}
	parsed_release(&p);
	return rc;
}

int imgsrc_image_blobs(struct blobstore *bs, const char *manifest_digest, char ***digests,
		       size_t *n, char **errmsg)
{
	*digests = NULL;
	*n = 0;
	*errmsg = NULL;
	if (!blobstore_digest_valid(manifest_digest)) {
		*errmsg = xasprintf("invalid digest '%s'", manifest_digest);
		return BG_ERR_INVAL;
	}
	int rc = image_blobs(bs, manifest_digest, 0, digests, n, errmsg);
	if (rc) {
		for (size_t i = 0; i < *n; i++)
			free((*digests)[i]);
		free(*digests);
		*digests = NULL;
		*n = 0;
	}
	return rc;
}
