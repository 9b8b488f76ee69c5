/*
 * test_imgsrc.c: unit tests for the image-source half of image.pull: the
 * reference parsers (registry.h, imgsrc.h), the WWW-Authenticate parser,
 * the credentials file rules, and the blob cache's verify / resume / prune
 * behaviour (blobstore.h).  The network paths are covered by
 * tests/integration/t_imgsrc.sh against a real registry.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobstore.h"
#include "err.h"
#include "imgsrc.h"
#include "registry.h"
#include "test.h"
#include "util.h"

static const char HEX64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* Parse s, expect success and these fields. */
static void ref_ok(const char *s, const char *reg, const char *repo, const char *tag,
		   const char *digest)
{
	struct reg_ref r;
	char *err = NULL;
	int rc = reg_ref_parse(s, &r, &err);
	if (!CHECK_EQ_INT(rc, 0)) {
		test_fail(__FILE__, __LINE__, "'%s': %s", s, err ? err : "?");
		free(err);
		return;
	}
	CHECK_EQ_STR(r.registry, reg);
	CHECK_EQ_STR(r.repository, repo);
	CHECK_EQ_STR(r.tag, tag);
	CHECK_EQ_STR(r.digest, digest);
}

/* Parse s, expect BG_ERR_INVAL and a message containing want. */
static void ref_bad(const char *s, const char *want)
{
	struct reg_ref r;
	char *err = NULL;
	int rc = reg_ref_parse(s, &r, &err);
	CHECK_EQ_INT(rc, BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, want);
	free(err);
}

TEST(imgsrc_ref_parse)
{
	char dg[80];
	snprintf(dg, sizeof(dg), "sha256:%s", HEX64);
	ref_ok("127.0.0.1:5000/ci/busybox:1", "127.0.0.1:5000", "ci/busybox", "1", "");
	ref_ok("127.0.0.1:5000/ci/busybox", "127.0.0.1:5000", "ci/busybox", "latest", "");
	ref_ok("localhost/x", "localhost", "x", "latest", "");
	ref_ok("localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000", "a/b/c", "v1.2-rc_3", "");
	ref_ok("registry.example/team/builder@sha256:" "0123456789abcdef0123456789abcdef"
	       "0123456789abcdef0123456789abcdef",
	       "registry.example", "team/builder", "", dg);
	ref_ok("host.example:443/r:tag@sha256:" "0123456789abcdef0123456789abcdef"
	       "0123456789abcdef0123456789abcdef",
	       "host.example:443", "r", "tag", dg);
	ref_ok("[::1]:5000/ci/x:2", "[::1]:5000", "ci/x", "2", "");
	/* Docker Hub shorthand, as every container tool reads it */
	ref_ok("debian:12", "docker.io", "library/debian", "12", "");
	ref_ok("busybox", "docker.io", "library/busybox", "latest", "");
	ref_ok("team/app:1", "docker.io", "team/app", "1", "");
	ref_ok("docker.io/library/debian", "docker.io", "library/debian", "latest", "");
	/* separators inside path components */
	ref_ok("h.io/a.b_c__d-e---f/g", "h.io", "a.b_c__d-e---f/g", "latest", "");

	struct reg_ref r;
	char *err = NULL;
	REQUIRE(reg_ref_parse("127.0.0.1:5000/ci/busybox:1", &r, &err) == 0);
	char *s = reg_ref_format(&r);
	CHECK_EQ_STR(s, "127.0.0.1:5000/ci/busybox:1");
	free(s);
}

TEST(imgsrc_ref_errors)
{
	ref_bad("", "empty reference");
	ref_bad("127.0.0.1:5000/CI/busybox", "lowercase");
	ref_bad("127.0.0.1:5000/ci//busybox", "empty path component");
	ref_bad("127.0.0.1:5000/ci/busybox:", "empty tag");
	ref_bad("127.0.0.1:5000/ci/busybox:-x", "tag must start");
	ref_bad("127.0.0.1:5000/ci/busybox:a+b", "tag may only contain");
	ref_bad("127.0.0.1:5000/ci/bu..sy", "single separators");
	ref_bad("127.0.0.1:5000/ci/_busybox", "start and end");
	ref_bad("127.0.0.1:99999/ci/busybox", "port out of range");
	ref_bad("127.0.0.1:50x0/ci/busybox", "bad port");
	ref_bad("-bad.host/ci/busybox", "registry host labels");
	ref_bad("host.example/", "missing repository name");
	ref_bad("h.io/x@sha256:abc", "64 hex digits");
	ref_bad("h.io/x@sha512:" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"unsupported digest algorithm 'sha512'");
	ref_bad("h.io/x@sha256:" "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
		"lowercase hex");
	ref_bad("h.io/x@@sha256:1", "more than one '@'");
	ref_bad("h.io/x y", "whitespace");
	ref_bad("@sha256:" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"missing repository name");
	char *tag129 = xasprintf("h.io/x:%0129d", 0);
	ref_bad(tag129, "longer than 128");
	free(tag129);
	struct sb longname;
	sb_init(&longname);
	sb_adds(&longname, "h.io/");
	for (int i = 0; i < 60; i++)
		sb_adds(&longname, "abcd/");
	sb_adds(&longname, "x");
	ref_bad(longname.buf, "longer than 255");
	sb_release(&longname);
}

TEST(imgsrc_source_refs)
{
	struct imgsrc_ref r;
	char *err = NULL;
	REQUIRE(imgsrc_ref_parse("oci:/some/dir:v1", &r, &err) == 0);
	CHECK_EQ_INT(r.kind, IMGSRC_OCI);
	CHECK_EQ_STR(r.path, "/some/dir");
	CHECK_EQ_STR(r.name, "v1");
	imgsrc_ref_release(&r);

	REQUIRE(imgsrc_ref_parse("oci:rel/dir", &r, &err) == 0);
	CHECK_EQ_STR(r.path, "rel/dir");
	CHECK(r.name == NULL);
	imgsrc_ref_release(&r);

	REQUIRE(imgsrc_ref_parse("docker-archive:/tmp/x.tar", &r, &err) == 0);
	CHECK_EQ_INT(r.kind, IMGSRC_DOCKER_ARCHIVE);
	CHECK_EQ_STR(r.path, "/tmp/x.tar");
	imgsrc_ref_release(&r);

	REQUIRE(imgsrc_ref_parse("docker-archive:/tmp/x.tar:ci/app:3", &r, &err) == 0);
	CHECK_EQ_STR(r.name, "ci/app:3");
	imgsrc_ref_release(&r);

	REQUIRE(imgsrc_ref_parse("docker://127.0.0.1:5000/a:1", &r, &err) == 0);
	CHECK_EQ_INT(r.kind, IMGSRC_REGISTRY);
	CHECK_EQ_STR(r.reg.registry, "127.0.0.1:5000");
	imgsrc_ref_release(&r);

	CHECK_EQ_INT(imgsrc_ref_parse("oci:", &r, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "missing path");
	free(err);
	CHECK_EQ_INT(imgsrc_ref_parse("oci:/d:", &r, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "empty image name");
	free(err);
	CHECK_EQ_INT(imgsrc_ref_parse("docker-archive:/x.tar:notag", &r, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "NAME:TAG");
	free(err);
	CHECK_EQ_INT(imgsrc_ref_parse("dir:/x", &r, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "unsupported image source 'dir:'");
	free(err);
	CHECK_EQ_INT(imgsrc_ref_parse("containers-storage:x", &r, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "containers-storage:");
	free(err);
}

TEST(imgsrc_www_authenticate)
{
	struct reg_challenge ch[4];
	int n = reg_www_auth_parse("Bearer realm=\"http://127.0.0.1:5001/token\","
				   "service=\"registry\",scope=\"repository:ci/bb:pull\"",
				   ch, 4);
	REQUIRE(n == 1);
	CHECK_EQ_STR(ch[0].scheme, "bearer");
	CHECK_EQ_STR(ch[0].realm, "http://127.0.0.1:5001/token");
	CHECK_EQ_STR(ch[0].service, "registry");
	CHECK_EQ_STR(ch[0].scope, "repository:ci/bb:pull");
	CHECK(ch[0].error == NULL);
	reg_challenge_release(&ch[0]);

	n = reg_www_auth_parse("Basic realm=\"Registry Realm\"", ch, 4);
	REQUIRE(n == 1);
	CHECK_EQ_STR(ch[0].scheme, "basic");
	CHECK_EQ_STR(ch[0].realm, "Registry Realm");
	reg_challenge_release(&ch[0]);

	/* several challenges, mixed case, spaces, token values, a comma and an
	 * escaped quote inside a quoted value, unknown params, error= */
	n = reg_www_auth_parse("Negotiate abc==, BASIC realm=simple , bearer  REALM = "
			       "\"https://a/t\" , service=\"x,y\", scope=\"s \\\"q\\\"\", "
			       "foo=bar, error=\"insufficient_scope\"",
			       ch, 4);
	REQUIRE(n == 3);
	CHECK_EQ_STR(ch[0].scheme, "negotiate");
	CHECK_EQ_STR(ch[1].scheme, "basic");
	CHECK_EQ_STR(ch[1].realm, "simple");
	CHECK_EQ_STR(ch[2].scheme, "bearer");
	CHECK_EQ_STR(ch[2].realm, "https://a/t");
	CHECK_EQ_STR(ch[2].service, "x,y");
	CHECK_EQ_STR(ch[2].scope, "s \"q\"");
	CHECK_EQ_STR(ch[2].error, "insufficient_scope");
	for (int i = 0; i < n; i++)
		reg_challenge_release(&ch[i]);

	/* more challenges than room: the first max are kept */
	n = reg_www_auth_parse("A, B, C realm=x", ch, 2);
	REQUIRE(n == 2);
	CHECK_EQ_STR(ch[1].scheme, "b");
	reg_challenge_release(&ch[0]);
	reg_challenge_release(&ch[1]);

	/* a scheme alone */
	n = reg_www_auth_parse("Bearer", ch, 4);
	REQUIRE(n == 1);
	CHECK(ch[0].realm == NULL);
	reg_challenge_release(&ch[0]);

	CHECK_EQ_INT(reg_www_auth_parse("", ch, 4), BG_ERR_INVAL);
	CHECK_EQ_INT(reg_www_auth_parse("   ,  ", ch, 4), BG_ERR_INVAL);
	CHECK_EQ_INT(reg_www_auth_parse("Bearer realm=\"unterminated", ch, 4), BG_ERR_INVAL);
	CHECK_EQ_INT(reg_www_auth_parse("\"quoted\" realm=x", ch, 4), BG_ERR_INVAL);
	CHECK_EQ_INT(reg_www_auth_parse("Bearer realm=\"a\" junk\"", ch, 4), BG_ERR_INVAL);
	CHECK_EQ_INT(reg_www_auth_parse("=x", ch, 4), BG_ERR_INVAL);
}

static char *write_creds(const char *name, const char *text, unsigned mode)
{
	char *p = test_write_file(name, text);
	chmod(p, mode);
	return p;
}

TEST(imgsrc_credentials_file)
{
	char *user = NULL, *pass = NULL, *err = NULL;
	/* base64("alice:pa:ss") */
	char *p = write_creds("creds/ok.json",
			      "{\"auths\": {\"127.0.0.1:5000\": {\"auth\": \"YWxpY2U6cGE6c3M=\"},"
			      " \"https://reg.example/v1/\": {\"username\": \"bob\", "
			      "\"password\": \"pw\"}}}",
			      0600);
	CHECK_EQ_INT(reg_creds_lookup(p, "127.0.0.1:5000", &user, &pass, &err), 0);
	CHECK_EQ_STR(user, "alice");
	CHECK_EQ_STR(pass, "pa:ss");
	free(user);
	free(pass);
	CHECK_EQ_INT(reg_creds_lookup(p, "reg.example", &user, &pass, &err), 0);
	CHECK_EQ_STR(user, "bob");
	CHECK_EQ_STR(pass, "pw");
	free(user);
	free(pass);
	/* no entry: anonymous, no error */
	CHECK_EQ_INT(reg_creds_lookup(p, "other:1", &user, &pass, &err), 0);
	CHECK(user == NULL && pass == NULL && err == NULL);

	/* readable by others: refused, and the message says how to fix it */
	chmod(p, 0644);
	CHECK_EQ_INT(reg_creds_lookup(p, "127.0.0.1:5000", &user, &pass, &err), BG_ERR_PERM);
	CHECK_STR_CONTAINS(err, "mode 0644");
	CHECK_STR_CONTAINS(err, "chmod 600");
	CHECK(user == NULL);
	free(err);
	chmod(p, 0640);
	CHECK_EQ_INT(reg_creds_lookup(p, "127.0.0.1:5000", &user, &pass, &err), BG_ERR_PERM);
	free(err);
	free(p);

	/* a missing file means no credentials */
	char *missing = xasprintf("%s/creds/none.json", test_tmpdir());
	CHECK_EQ_INT(reg_creds_lookup(missing, "x", &user, &pass, &err), 0);
	CHECK(user == NULL && err == NULL);
	free(missing);
	CHECK_EQ_INT(reg_creds_lookup(NULL, "x", &user, &pass, &err), 0);

	p = write_creds("creds/bad.json", "{\"auths\": {\n  \"h\": }", 0600);
	CHECK_EQ_INT(reg_creds_lookup(p, "h", &user, &pass, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "bad.json:2:");
	free(err);
	free(p);
	p = write_creds("creds/b64.json", "{\"auths\": {\"h\": {\"auth\": \"!!!\"}}}", 0600);
	CHECK_EQ_INT(reg_creds_lookup(p, "h", &user, &pass, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "not base64");
	free(err);
	free(p);
	p = write_creds("creds/helper.json", "{\"credsStore\": \"desktop\"}", 0600);
	CHECK_EQ_INT(reg_creds_lookup(p, "h", &user, &pass, &err), BG_ERR_UNSUPPORTED);
	CHECK_STR_CONTAINS(err, "credential helpers");
	free(err);
	free(p);
}

TEST(imgsrc_loopback_hosts)
{
	CHECK(reg_host_is_loopback("127.0.0.1:5000"));
	CHECK(reg_host_is_loopback("127.1.2.3"));
	CHECK(reg_host_is_loopback("localhost:80"));
	CHECK(reg_host_is_loopback("[::1]:5000"));
	CHECK(!reg_host_is_loopback("128.0.0.1:5000"));
	CHECK(!reg_host_is_loopback("127.0.0.1.evil.example"));
	CHECK(!reg_host_is_loopback("localhost.example"));
	CHECK(!reg_host_is_loopback("[::2]:5000"));
}

static void digest_of(const char *data, size_t n, char out[BLOB_DIGEST_MAX])
{
	unsigned char md[32];
	unsigned int l = 0;
	EVP_Digest(data, n, md, &l, EVP_sha256(), NULL);
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

TEST(imgsrc_blobstore_verify_and_resume)
{
	char *dir = xasprintf("%s/blobs1", test_tmpdir());
	struct blobstore *bs;
	char *err = NULL;
	REQUIRE(blobstore_open(dir, &bs, &err) == 0);
	const char data[] = "hello, layer bytes";
	size_t n = sizeof(data) - 1;
	char dg[BLOB_DIGEST_MAX];
	digest_of(data, n, dg);

	/* write part, stop (keep), reopen: the partial is rehashed and resumed */
	struct blobstore_writer *w;
	bool present;
	REQUIRE(blobstore_writer_open(bs, dg, (int64_t)n, NULL, NULL, &w, &present, &err) == 0);
	CHECK(!present);
	CHECK_EQ_INT(blobstore_writer_write(w, data, 5), 0);
	blobstore_writer_abort(w, true);
	REQUIRE(blobstore_writer_open(bs, dg, (int64_t)n, NULL, NULL, &w, &present, &err) == 0);
	CHECK_EQ_INT(blobstore_writer_offset(w), 5);
	CHECK_EQ_INT(blobstore_writer_write(w, data + 5, n - 5), 0);
	char got[BLOB_DIGEST_MAX];
	CHECK_EQ_INT(blobstore_writer_commit(w, got, &err), 0);
	CHECK_EQ_STR(got, dg);
	uint64_t size = 0;
	CHECK_EQ_INT(blobstore_stat(bs, dg, &size), 0);
	CHECK_EQ_INT(size, n);
	/* now present */
	REQUIRE(blobstore_writer_open(bs, dg, (int64_t)n, NULL, NULL, &w, &present, &err) == 0);
	CHECK(present && w == NULL);

	/* wrong bytes: mismatch names both digests, the partial is gone */
	char other[BLOB_DIGEST_MAX];
	digest_of("other", 5, other);
	REQUIRE(blobstore_writer_open(bs, other, 5, NULL, NULL, &w, &present, &err) == 0);
	CHECK_EQ_INT(blobstore_writer_write(w, "OTHER", 5), 0);
	CHECK_EQ_INT(blobstore_writer_commit(w, NULL, &err), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(err, "is corrupt: expected digest sha256:");
	CHECK_STR_CONTAINS(err, other);
	CHECK_STR_CONTAINS(err, "deleted the partial download");
	free(err);
	char *partial = xasprintf("%s/tmp/%s.partial", dir, other + 7);
	CHECK(access(partial, F_OK) != 0);
	free(partial);
	CHECK_EQ_INT(blobstore_stat(bs, other, NULL), BG_ERR_NOENT);

	/* wrong size */
	REQUIRE(blobstore_writer_open(bs, other, 5, NULL, NULL, &w, &present, &err) == 0);
	CHECK_EQ_INT(blobstore_writer_write(w, "oth", 3), 0);
	CHECK_EQ_INT(blobstore_writer_commit(w, NULL, &err), BG_ERR_PROTO);
	CHECK_STR_CONTAINS(err, "expected 5 bytes, got 3");
	free(err);

	/* anonymous (digest learnt at commit), and reading back verifies */
	REQUIRE(blobstore_writer_open(bs, NULL, -1, NULL, NULL, &w, &present, &err) == 0);
	CHECK_EQ_INT(blobstore_writer_write(w, "other", 5), 0);
	CHECK_EQ_INT(blobstore_writer_commit(w, got, &err), 0);
	CHECK_EQ_STR(got, other);
	char *back = NULL;
	size_t blen = 0;
	CHECK_EQ_INT(blobstore_read(bs, other, 100, &back, &blen, &err), 0);
	CHECK_EQ_INT(blen, 5);
	free(back);

	/* a blob damaged on disk is noticed on read and removed */
	char *bp = blobstore_path(bs, other);
	chmod(bp, 0644);
	FILE *fp = fopen(bp, "w");
	REQUIRE(fp != NULL);
	fputs("OTHER", fp);
	fclose(fp);
	CHECK_EQ_INT(blobstore_read(bs, other, 100, &back, &blen, &err), BG_ERR_NOENT);
	CHECK_STR_CONTAINS(err, "damaged");
	free(err);
	CHECK(access(bp, F_OK) != 0);
	free(bp);

	CHECK_EQ_INT(blobstore_writer_open(bs, "sha256:xyz", 1, NULL, NULL, &w, &present, &err),
		     BG_ERR_INVAL);
	free(err);
	blobstore_close(bs);
	free(dir);
}

static int nremoved;
static void count_removed(void *arg, const char *digest, uint64_t size)
{
	(void)arg, (void)digest, (void)size;
	nremoved++;
}

TEST(imgsrc_blobstore_prune)
{
	char *dir = xasprintf("%s/blobs2", test_tmpdir());
	struct blobstore *bs;
	char *err = NULL;
	REQUIRE(blobstore_open(dir, &bs, &err) == 0);
	char a[BLOB_DIGEST_MAX], b[BLOB_DIGEST_MAX], c[BLOB_DIGEST_MAX];
	REQUIRE(blobstore_put(bs, NULL, "aaa", 3, a, &err) == 0);
	REQUIRE(blobstore_put(bs, NULL, "bbbb", 4, b, &err) == 0);
	REQUIRE(blobstore_put(bs, NULL, "ccccc", 5, c, &err) == 0);
	/* a stale partial nobody writes */
	char *stale = xasprintf("%s/tmp/%s.partial", dir, HEX64);
	int fd = open(stale, O_WRONLY | O_CREAT, 0600);
	REQUIRE(fd >= 0);
	close(fd);

	const char *keep[] = {b};
	struct blobstore_prune_stats st;
	/* dry run: counts, removes nothing */
	nremoved = 0;
	CHECK_EQ_INT(blobstore_prune(bs, keep, 1, 0, true, count_removed, NULL, &st, &err), 0);
	CHECK_EQ_INT(st.removed, 2);
	CHECK_EQ_INT(st.removed_bytes, 8);
	CHECK_EQ_INT(nremoved, 2);
	CHECK_EQ_INT(blobstore_stat(bs, a, NULL), 0);
	/* a grace period keeps what was just published */
	CHECK_EQ_INT(blobstore_prune(bs, keep, 1, 3600LL * 1000000, false, NULL, NULL, &st, &err),
		     0);
	CHECK_EQ_INT(st.removed, 0);
	CHECK_EQ_INT(st.kept, 3);
	/* for real */
	CHECK_EQ_INT(blobstore_prune(bs, keep, 1, 0, false, NULL, NULL, &st, &err), 0);
	CHECK_EQ_INT(st.removed, 2);
	CHECK_EQ_INT(st.kept, 1);
	CHECK_EQ_INT(st.partials_removed, 1);
	CHECK_EQ_INT(blobstore_stat(bs, a, NULL), BG_ERR_NOENT);
	CHECK_EQ_INT(blobstore_stat(bs, b, NULL), 0);
	CHECK_EQ_INT(blobstore_stat(bs, c, NULL), BG_ERR_NOENT);
	CHECK(access(stale, F_OK) != 0);
	free(stale);
	/* a bad keep set is refused before anything is removed */
	const char *bad[] = {"sha256:nothex"};
	CHECK_EQ_INT(blobstore_prune(bs, bad, 1, 0, false, NULL, NULL, &st, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "sha256:nothex");
	free(err);
	CHECK_EQ_INT(blobstore_stat(bs, b, NULL), 0);
	blobstore_close(bs);
	free(dir);
}
