/*
 * registry.h: a client for the OCI distribution API v2 (what Docker calls
 * "registry v2"), on libcurl: manifests by tag or digest, blobs with resume,
 * and the three ways a registry lets you in (anonymous, basic, bearer token).
 *
 * What it does not do: parse manifests (imgsrc.c) or store blobs
 * (blobstore.c).  It moves bytes and gets the caller past authentication.
 *
 * Transport: HTTPS, verified against the system CA store or reg_opts.ca_file.
 * A registry on loopback (localhost, 127.0.0.0/8, [::1]) or listed in
 * reg_opts.insecure may also be reached over plain HTTP: HTTPS is tried first
 * and, when the server does not speak TLS, the client falls back to HTTP and
 * remembers it for that registry.  Registries listed insecure are also not
 * held to a verified certificate (as Docker's "insecure-registries").
 *
 * Auth: a 401 carries a WWW-Authenticate challenge.  Basic: the credentials
 * for that registry are sent (and from then on sent up front).  Bearer: a
 * token is fetched from the challenge's realm (with the credentials, if any)
 * and cached per registry and scope until it expires.  Credentials come from
 * a docker-style auth file (reg_creds_lookup) that only its owner may read.
 *
 * Failures: connection errors, timeouts, 5xx and 429 are retried with
 * exponential backoff (reg_opts.attempts in all); other 4xx are not.  Every
 * error message names the URL, the HTTP status and the registry's own error
 * JSON when it sent one.
 *
 * Threads: one reg_client may be used by any number of threads at once (its
 * token cache and connection pool are locked).  Each call blocks its thread;
 * the cancel callback is polled at least once a second on that thread.
 */
#ifndef BANGER_REGISTRY_H
#define BANGER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "sha256:" + 64 hex + NUL */
#define REG_DIGEST_MAX 72

/* Media types this client asks for in Accept (most preferred first). */
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1+json"
#define MT_DOCKER_V1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

/*
 * A registry reference, parsed strictly (the grammar of
 * distribution/reference): [HOST[:PORT]/]PATH[:TAG][@sha256:HEX].
 * Without a host the reference means Docker Hub, as everywhere else
 * ("debian:12" is docker.io/library/debian:12).  Without tag or digest the
 * tag is "latest".  With both, the digest decides and the tag is kept only
 * for display.
 */
struct reg_ref {
	char registry[256];   /* "127.0.0.1:5000", "[::1]:5000", "docker.io" */
	char repository[256]; /* "ci/busybox" */
	char tag[129];        /* "" when only a digest was given */
	char digest[REG_DIGEST_MAX]; /* "sha256:<64 hex>" or "" */
};

/* 0, or BG_ERR_INVAL with *errmsg (caller frees) saying what is wrong and
 * where, e.g. "invalid reference 'Foo/bar': repository names are lowercase". */
int reg_ref_parse(const char *s, struct reg_ref *out, char **errmsg);
/* "registry/repository[:tag][@digest]"; the caller frees. */
char *reg_ref_format(const struct reg_ref *r);
/* true for localhost, 127.0.0.0/8 and ::1 (host with or without :port). */
bool reg_host_is_loopback(const char *hostport);

/*
 * One challenge of a WWW-Authenticate header (RFC 7235).  A header may carry
 * several ("Basic realm=x, Bearer realm=y"); reg_www_auth_parse fills up to
 * max of them, in order, and returns how many, or BG_ERR_INVAL when the header
 * cannot be parsed.  Strings are owned by the challenge: release each one.
 */
struct reg_challenge {
	char *scheme; /* lowercased: "basic", "bearer", ... */
	char *realm, *service, *scope, *error; /* NULL when absent */
};
int reg_www_auth_parse(const char *value, struct reg_challenge *out, size_t max);
void reg_challenge_release(struct reg_challenge *c);

/*
 * Credentials for registry from a docker-style auth file:
 *   {"auths": {"127.0.0.1:5000": {"auth": "base64(user:password)"}}}
 * ({"username": ..., "password": ...} in an entry works too; keys may be
 * written as URLs, "https://host/v1/").  The file must belong to the current
 * user and must not be readable by group or others: otherwise BG_ERR_PERM and
 * a message saying how to fix it.  A file that does not exist, or has no entry
 * for registry, gives 0 with *user = *pass = NULL.  Bad JSON: BG_ERR_INVAL
 * with file:line:col.  The caller frees *user, *pass and *errmsg.
 */
int reg_creds_lookup(const char *auth_file, const char *registry, char **user, char **pass,
		     char **errmsg);

struct reg_opts {
	const char *auth_file;       /* credentials (see above); NULL: anonymous only */
	const char *const *insecure; /* NULL-terminated "host[:port]" list; may be NULL */
	const char *ca_file;         /* CA bundle used instead of the system's; NULL: system */
	int attempts;                /* tries per request on 5xx/429/connection errors; 0: 5 */
	int64_t backoff_us;          /* wait before the first retry, doubling, at most 10 s; 0: 500 ms */
	int64_t connect_timeout_us;  /* 0: 10 s */
	int64_t stall_timeout_us;    /* abort a transfer idle this long (then retry); 0: 30 s */
	int64_t request_timeout_us;  /* whole manifest/token request (not blobs); 0: 60 s */
	const char *user_agent;      /* NULL: "banger" */
};

struct reg_client;

/* The client copies what it needs from o (which may be NULL for defaults).
 * 0, or BG_ERR_* with *errmsg (e.g. an unreadable CA file). */
int reg_client_create(const struct reg_opts *o, struct reg_client **out, char **errmsg);
void reg_client_destroy(struct reg_client *c);

/* Polled between chunks, at least once a second, on the calling thread;
 * returning true stops the request with BG_ERR_CANCELED. */
typedef bool (*reg_cancel_fn)(void *arg);

/* A manifest as the registry served it; the caller releases it. */
struct reg_manifest {
	char *data; /* the bytes (NUL-terminated for convenience) */
	size_t len;
	char *media_type;              /* Content-Type without parameters; "" when none */
	char digest[REG_DIGEST_MAX];   /* sha256 of data */
};
void reg_manifest_release(struct reg_manifest *m);

/*
 * GET /v2/REPO/manifests/REFERENCE, reference being ref's digest when it has
 * one, else its tag.  Accept lists OCI and Docker schema-2 manifests and
 * indexes (schema 1 is not asked for; judging what came back is the
 * caller's job).  Verifies the body against the requested digest, or
 * against Docker-Content-Digest when fetching by tag.  At most 4 MiB.
 * Errors: BG_ERR_NOENT (404), BG_ERR_PERM (401/403), BG_ERR_PROTO (digest
 * mismatch, too big), BG_ERR_IO / BG_ERR_TIMEDOUT (after retries),
 * BG_ERR_CANCELED; *errmsg says which URL answered what.
 */
int reg_manifest_get(struct reg_client *c, const struct reg_ref *ref, struct reg_manifest *out,
		     reg_cancel_fn cancelled, void *arg, char **errmsg);

/* HEAD for a tag: the digest the registry would serve (Docker-Content-Digest)
 * in digest.  BG_ERR_NOENT when the registry gives no digest header or
 * answers anything but 2xx (call reg_manifest_get for the full story). */
int reg_manifest_head(struct reg_client *c, const struct reg_ref *ref,
		      char digest[REG_DIGEST_MAX], reg_cancel_fn cancelled, void *arg,
		      char **errmsg);

/*
 * Where a blob's bytes go.  Before each attempt offset() says how many bytes
 * are already held; when non-zero the request asks for the rest with
 * "Range: bytes=N-".  A server that ignores the range (200) makes the client
 * call reset() and take the whole blob.  write() appends; a non-zero return
 * stops the download for good with that code (disk full is not retried).
 */
struct reg_sink {
	uint64_t (*offset)(void *arg);
	int (*write)(void *arg, const void *p, size_t n);
	int (*reset)(void *arg);
	reg_cancel_fn cancelled; /* may be NULL */
	void *arg;
};

/*
 * GET /v2/REPO/blobs/DIGEST into sink, resuming after connection errors,
 * timeouts and 5xx with a Range request from sink->offset().  Redirects (to
 * a CDN) are followed; credentials are not sent to another host.  size is
 * the descriptor's size: more bytes than that is BG_ERR_PROTO and stops at
 * once.  0 when the transfer ended with size bytes held.  Checking the
 * digest is the sink's business (blobstore_writer_commit).
 */
int reg_blob_get(struct reg_client *c, const struct reg_ref *ref, const char *digest,
		 uint64_t size, const struct reg_sink *sink, char **errmsg);

#endif
