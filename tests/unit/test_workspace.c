/*
 * test_workspace.c: unit tests for the workspace pieces: exclude patterns
 * (worker/workspace.c), the export writer's `to:` rules, size limit and
 * atomic commit (worker/export.c), the EXPORT stream's entry codec
 * (guest/agent_proto.c), and a small workspace_build with its warnings.
 * Images checked with e2fsprogs, the agent and VMs are
 * tests/integration/t_workspace.sh.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_proto.h"
#include "err.h"
#include "export.h"
#include "test.h"
#include "util.h"
#include "workspace.h"

TEST(workspace_exclude_patterns)
{
	static const struct {
		const char *pat, *path;
		bool dir, want;
	} cases[] = {
		{"node_modules", "node_modules", true, true},
		{"node_modules", "a/b/node_modules", true, true},
		{"node_modules", "a/node_modules_x", true, false},
		{"*.o", "src/x.o", false, true},
		{"*.o", "src/x.c", false, false},
		{".git/objects/pack/*.tmp", ".git/objects/pack/tmp_1.tmp", false, true},
		{".git/objects/pack/*.tmp", ".git/objects/pack/sub/x.tmp", false, false},
		{".git/objects/pack/*.tmp", "x/.git/objects/pack/a.tmp", false, false},
		{"/build", "build", true, true},
		{"/build", "src/build", true, false},
		{"out/", "out", true, true},
		{"out/", "out", false, false},
		{"out/", "a/out", true, true},
		{"**/cache/*.bin", "a/b/cache/x.bin", false, true},
		{"**/cache/*.bin", "cache/x.bin", false, true},
		{"**/cache/*.bin", "cache/y/x.bin", false, false},
		{"*", ".hidden", false, true},
		{"src/*", "src/a/b", false, false},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		bool got = workspace_exclude_match(cases[i].pat, cases[i].path, cases[i].dir);
		if (got != cases[i].want)
			test_fail(__FILE__, __LINE__, "'%s' vs '%s' (dir %d): got %d", cases[i].pat,
				  cases[i].path, cases[i].dir, got);
	}
	const char *why;
	CHECK(workspace_exclude_check("node_modules", &why) == 0);
	CHECK(workspace_exclude_check("", &why) == BG_ERR_INVAL);
	CHECK(workspace_exclude_check("!keep", &why) == BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "negated");
	CHECK(workspace_exclude_check("a/../b", &why) == BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "'..'");
}

TEST(workspace_entry_codec)
{
	struct ap_buf b;
	struct ap_entry e;
	const char *why;
	ap_buf_init(&b);
	ap_begin(&b, AP_T_ENTRY, 3);
	ap_put_str(&b, AP_F_PATH, "src/héllo.c");
	ap_put_int(&b, AP_F_TYPE, AP_E_REG);
	ap_put_int(&b, AP_F_MODE, 0755);
	ap_put_int(&b, AP_F_UID, 0);
	ap_put_int(&b, AP_F_GID, 0);
	ap_put_int(&b, AP_F_MTIME, 1714564800);
	ap_put_int(&b, AP_F_MTIME_NS, 5);
	ap_put_int(&b, AP_F_SIZE, 12345);
	REQUIRE(ap_end(&b) == 0);
	REQUIRE(ap_entry_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &e, &why) == 0);
	CHECK_EQ_STR(e.path, "src/héllo.c");
	CHECK_EQ_INT(e.size, 12345);
	CHECK_EQ_INT(e.mode, 0755);
	CHECK(e.link == NULL);
	ap_entry_release(&e);
	/* refusals: unclean paths, a symlink without target, a hardlink out */
	static const char *const bad_paths[] = {"../x", "/etc/passwd", "a//b", "a/./b", "a/", "",
						"a/.."};
	for (size_t i = 0; i < ARRAY_LEN(bad_paths); i++) {
		ap_begin(&b, AP_T_ENTRY, 3);
		ap_put_str(&b, AP_F_PATH, bad_paths[i]);
		ap_put_int(&b, AP_F_TYPE, AP_E_DIR);
		ap_put_int(&b, AP_F_MODE, 0755);
		ap_put_int(&b, AP_F_UID, 0);
		ap_put_int(&b, AP_F_GID, 0);
		ap_put_int(&b, AP_F_MTIME, 0);
		ap_put_int(&b, AP_F_MTIME_NS, 0);
		REQUIRE(ap_end(&b) == 0);
		CHECK(ap_entry_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &e, &why) ==
		      BG_ERR_PROTO);
	}
	ap_begin(&b, AP_T_ENTRY, 3);
	ap_put_str(&b, AP_F_PATH, "l");
	ap_put_int(&b, AP_F_TYPE, AP_E_HARDLINK);
	ap_put_int(&b, AP_F_MODE, 0644);
	ap_put_int(&b, AP_F_UID, 0);
	ap_put_int(&b, AP_F_GID, 0);
	ap_put_int(&b, AP_F_MTIME, 0);
	ap_put_int(&b, AP_F_MTIME_NS, 0);
	ap_put_str(&b, AP_F_LINK, "../../etc/shadow");
	REQUIRE(ap_end(&b) == 0);
	CHECK(ap_entry_decode(b.data + AP_HDR_LEN, b.len - AP_HDR_LEN, &e, &why) == BG_ERR_PROTO);
	CHECK_STR_CONTAINS(why, "hardlink");
	ap_buf_release(&b);
	CHECK(ap_path_clean("a/b/c"));
	CHECK(!ap_path_clean("a/../c"));
}

static bool exists(const char *dir, const char *name)
{
	char *p = xasprintf("%s/%s", dir, name);
	struct stat st;
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

TEST(export_to_rules_limit_and_commit)
{
	char *spec = xasprintf("%s/exp-spec", test_tmpdir());
	char *arts = xasprintf("%s/exp-arts", test_tmpdir());
	REQUIRE(mkdir_p(spec, 0755) == 0);
	REQUIRE(mkdir_p(arts, 0755) == 0);
	struct export_opts o = {spec, arts, 10, 0, NULL};
	struct export_file *f = NULL;
	char *err = NULL;
	CHECK(export_open("../x.tar", &o, &f, &err) == BG_ERR_PERM);
	CHECK_STR_CONTAINS(err, "'..'");
	CHECK(export_open("/etc/x.tar", &o, &f, &err) == BG_ERR_PERM);
	CHECK_STR_CONTAINS(err, "outside the spec's directory");
	CHECK(export_open("dir/", &o, &f, &err) == BG_ERR_INVAL);
	char *lnk = xasprintf("%s/l", spec);
	REQUIRE(symlink("/tmp", lnk) == 0);
	CHECK(export_open("l/x.tar", &o, &f, &err) == BG_ERR_PERM);
	CHECK_STR_CONTAINS(err, "is a symlink; refused");
	CHECK(export_open("l", &o, &f, &err) == BG_ERR_PERM);
	/* within the limit: committed, hashed, counted */
	REQUIRE(export_open("a/b/out.txt", &o, &f, &err) == 0);
	CHECK(export_write(f, "hello", 5, &err) == 0);
	struct export_result r;
	REQUIRE(export_commit(f, &r, &err) == 0);
	CHECK_EQ_INT(r.bytes, 5);
	CHECK_EQ_STR(r.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
	export_result_release(&r);
	/* over the limit: refused, the old file stays, no temporary left */
	char *dir = xasprintf("%s/a/b", spec);
	REQUIRE(export_open("a/b/out.txt", &o, &f, &err) == 0);
	CHECK(export_write(f, "0123456789", 10, &err) == 0);
	CHECK(export_write(f, "x", 1, &err) == BG_ERR_TOOBIG);
	CHECK_STR_CONTAINS(err, "larger than max_export_bytes (10 bytes)");
	export_abort(f);
	char *old = NULL;
	size_t n = 0;
	char *path = xasprintf("%s/out.txt", dir);
	REQUIRE(read_file(path, 100, &old, &n) == 0);
	CHECK_EQ_INT(n, 5);
	free(old);
	/* only out.txt in the directory */
	CHECK(exists(dir, "out.txt"));
	char *cmd = xasprintf("test \"$(ls -A '%s')\" = out.txt", dir);
	CHECK(system(cmd) == 0);
	/* an absolute path under the artifacts directory */
	char *abs = xasprintf("%s/x/y.tar", arts);
	REQUIRE(export_open(abs, &o, &f, &err) == 0);
	CHECK(strstr(export_temp_path(f), ".partial") != NULL);
	REQUIRE(export_commit(f, NULL, &err) == 0);
	CHECK(exists(arts, "x/y.tar"));
	/* a tagged temporary: its name is known before it exists, a leftover
	 * of that name is replaced, and export_discard removes it (and `to`
	 * when asked) without creating anything */
	struct export_opts ot = o;
	ot.temp_tag = "7-1";
	REQUIRE(export_open("t/out.tar", &ot, &f, &err) == 0);
	CHECK(strstr(export_temp_path(f), "/t/.out.tar.7-1.partial") != NULL);
	CHECK(exists(spec, "t/.out.tar.7-1.partial"));
	export_abort(f);
	REQUIRE(export_open("t/out.tar", &ot, &f, &err) == 0);
	CHECK(export_write(f, "ab", 2, &err) == 0);
	/* f stays open, as a crash would leave it: discard removes the file */
	CHECK(export_discard("t/out.tar", &ot, false, &err) == 0);
	CHECK(!exists(spec, "t/.out.tar.7-1.partial"));
	export_abort(f);
	REQUIRE(export_open("t/out.tar", &ot, &f, &err) == 0);
	REQUIRE(export_commit(f, NULL, &err) == 0);
	CHECK(exists(spec, "t/out.tar"));
	CHECK(export_discard("t/out.tar", &ot, true, &err) == 0);
	CHECK(!exists(spec, "t/out.tar"));
	CHECK(export_discard("never/made/out.tar", &ot, true, &err) == 0);
	CHECK(!exists(spec, "never"));
	CHECK(export_discard("l/x.tar", &ot, true, &err) == BG_ERR_PERM);
	free(err);
	free(cmd);
	free(abs);
	free(path);
	free(dir);
	free(lnk);
	free(spec);
	free(arts);
}

struct warns {
	int special, total;
};

static void count_warn(void *arg, enum workspace_skip kind, const char *path, const char *why)
{
	struct warns *w = arg;
	w->total++;
	if (kind == WORKSPACE_SKIP_SPECIAL)
		w->special++;
}

TEST(workspace_build_small)
{
	char *src = xasprintf("%s/ws-src", test_tmpdir());
	char *img = xasprintf("%s/ws.img", test_tmpdir());
	free(test_write_file("ws-src/a/b.txt", "hello\n"));
	free(test_write_file("ws-src/node_modules/x.js", "x\n"));
	char *fifo = xasprintf("%s/fifo", src);
	REQUIRE(mkfifo(fifo, 0644) == 0);
	char *ln = xasprintf("%s/a/out", src);
	REQUIRE(symlink("../../../etc/passwd", ln) == 0);
	const char *ex[] = {"node_modules", NULL};
	struct warns w = {0, 0};
	struct workspace_opts o = {.exclude = ex, .warn = count_warn, .arg = &w};
	struct workspace_result r;
	char *err = NULL;
	REQUIRE(workspace_build(src, &o, img, &r, &err) == 0);
	CHECK_EQ_INT(r.files, 1);
	CHECK_EQ_INT(r.symlinks, 1);
	CHECK_EQ_INT(r.excluded, 1);
	CHECK_EQ_INT(w.special, 1);
	CHECK_EQ_INT(r.skipped, 1);
	CHECK_EQ_INT(r.data_bytes, 6);
	struct workspace_result r2;
	char *img2 = xasprintf("%s/ws2.img", test_tmpdir());
	REQUIRE(workspace_build(src, &o, img2, &r2, &err) == 0);
	CHECK_EQ_STR(r.uuid, r2.uuid); /* same tree, same UUID */
	/* a bad pattern: refused, no output */
	const char *bad[] = {"!x", NULL};
	o.exclude = bad;
	unlink(img);
	CHECK(workspace_build(src, &o, img, &r, &err) == BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "exclude pattern '!x'");
	CHECK(access(img, F_OK) != 0);
	free(err);
	free(img2);
	free(ln);
	free(fifo);
	free(src);
	free(img);
}
