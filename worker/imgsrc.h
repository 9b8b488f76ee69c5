/*
 * imgsrc.h: the front door from an image reference to verified layer blobs
 * in the local cache (blobstore.h).  What image.pull calls before it builds
 * a root filesystem.
 *
 * Sources:
 *   127.0.0.1:5000/ci/busybox:1         a registry (registry.h), by tag
 *   host/repo@sha256:<hex>              ... or by digest
 *   oci:PATH[:NAME]                     an OCI image layout directory; NAME is
 *                                       its org.opencontainers.image.ref.name
 *                                       (optional when it holds one image);
 *                                       PATH ends at the first ':'
 *   docker-archive:PATH[:NAME:TAG]      a `docker save` tarball (libarchive);
 *                                       NAME:TAG picks one of several images
 *
 * Every source ends the same way: manifest, config and layers are in the
 * cache, each verified against its sha256, and an index (manifest list) has
 * been resolved to the manifest for one platform (linux/amd64 unless told
 * otherwise).  Schema-1 manifests, non-image artifacts and foreign layers are
 * refused with a message saying so.
 *
 * Calling it from a step body: imgsrc_fetch() blocks; it polls
 * opts.cancelled, and reports per-layer progress through opts.progress, both
 * only ever on the calling thread (downloads run on up to opts.parallel
 * threads of their own, which the calling thread waits for).  Errors are
 * negative BG_ERR_* codes with a message that starts with the reference and
 * names the digest, URL, HTTP status and the registry's error text.
 */
#ifndef BANGER_IMGSRC_H
#define BANGER_IMGSRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blobstore.h"
#include "registry.h"

enum imgsrc_kind {
	IMGSRC_REGISTRY,
	IMGSRC_OCI,
	IMGSRC_DOCKER_ARCHIVE,
};

/* A parsed source reference; release with imgsrc_ref_release. */
struct imgsrc_ref {
	enum imgsrc_kind kind;
	struct reg_ref reg; /* IMGSRC_REGISTRY */
	char *path;         /* IMGSRC_OCI, IMGSRC_DOCKER_ARCHIVE */
	char *name;         /* oci: ref name; docker-archive: "name:tag"; NULL when not given */
};

/* 0, or BG_ERR_INVAL with *errmsg (caller frees). */
int imgsrc_ref_parse(const char *s, struct imgsrc_ref *out, char **errmsg);
void imgsrc_ref_release(struct imgsrc_ref *r);

enum imgsrc_compression {
	IMGSRC_TAR,  /* uncompressed */
	IMGSRC_GZIP,
	IMGSRC_ZSTD,
};
/* "tar", "gzip", "zstd" */
const char *imgsrc_compression_name(enum imgsrc_compression c);

struct imgsrc_layer {
	char digest[BLOB_DIGEST_MAX];  /* of the blob as stored (compressed) */
	char diff_id[BLOB_DIGEST_MAX]; /* of the uncompressed tar, from the config's
				        * rootfs.diff_ids: the rootfs builder may check it */
	char *media_type;
	enum imgsrc_compression compression;
	uint64_t size;
	char *path; /* the verified blob in the cache */
};

/* The result; strings owned by it, freed by imgsrc_image_release. */
struct imgsrc_image {
	char *ref;                              /* canonical source reference */
	char manifest_digest[BLOB_DIGEST_MAX];  /* the platform's image manifest */
	char index_digest[BLOB_DIGEST_MAX];     /* the index it came from, or "" */
	char config_digest[BLOB_DIGEST_MAX];
	char *manifest_media_type;
	char *config_path;                      /* the config JSON in the cache */
	char *platform;                         /* "linux/amd64" as the config says */
	size_t nlayers;
	struct imgsrc_layer *layers;            /* in order, bottom first */
	uint64_t layers_size;                   /* sum of the layer sizes */
	uint64_t fetched_bytes;                 /* bytes transferred by this call */
	size_t fetched_blobs;                   /* blobs not already in the cache */
};
void imgsrc_image_release(struct imgsrc_image *img);

struct imgsrc_opts {
	const char *platform;        /* "os/arch[/variant]"; NULL: "linux/amd64" */
	const struct reg_opts *reg;  /* registry transport and auth; NULL: defaults */
	struct reg_client *client;   /* optional: a client shared across calls (its
				      * tokens are reused); NULL: one per call from reg */
	int parallel;                /* blobs downloaded at once; 0: 4 */
	/* Polled on the calling thread about every 100 ms; true cancels the
	 * fetch (BG_ERR_CANCELED).  Partial downloads are kept for resume. */
	bool (*cancelled)(void *arg);
	/* On the calling thread, per layer digest: at most every
	 * progress_interval_us while its bytes move, and exactly once with
	 * done == total when it is verified and in the cache (at once for a
	 * layer already cached).  The config is not reported.  (A docker-archive layer whose
	 * member name does not carry its digest is reported under that name
	 * until it is complete.) */
	void (*progress)(void *arg, const char *digest, uint64_t done, uint64_t total);
	void *arg;
	int64_t progress_interval_us; /* 0: 250 ms */
};

/*
 * Resolve ref and bring its manifest, config and layers into bs.  On
 * success *out is filled (release it); on failure it is empty and *errmsg
 * (caller frees) explains.  A second call for the same image moves no layer
 * bytes (a registry tag still costs one HEAD request).
 */
int imgsrc_fetch(const char *ref, struct blobstore *bs, const struct imgsrc_opts *opts,
		 struct imgsrc_image *out, char **errmsg);

/*
 * Every blob a cached image uses: the manifest itself, its config and its
 * layers (for an index: the index, and each of its manifests that is cached
 * with their blobs).  What blobstore_prune's keep set is made of.  *digests
 * is an array of *n strings; free each and the array.
 */
int imgsrc_image_blobs(struct blobstore *bs, const char *manifest_digest, char ***digests,
		       size_t *n, char **errmsg);

/* Whether retrying the same fetch cannot help (bad reference, 404, refused
 * credentials, corrupt or unsupported image) as opposed to a transient
 * failure (network, 5xx after retries, timeouts, disk full). */
bool imgsrc_err_permanent(int rc);

#endif
