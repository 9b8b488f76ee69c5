/*
 * test_rootfs.c: unit tests for the pure pieces of the rootfs writer: tar
 * entry path normalization and its refusals, whiteout names, media types
 * (worker/rootfs.c), and the merged tree's rules (worker/rootfs_tree.c):
 * whiteouts, opaque directories, hardlinks, symlinked parents confined to the
 * root, replacement, and numbering.  The whole pipeline, with real layers and
 * e2fsprogs, is tests/integration/t_rootfs.sh.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "rootfs.h"
#include "rootfs_tree.h"
#include "test.h"
#include "util.h"

/* rootfs_path_clean into a static buffer; NULL when refused (*why set). */
static const char *clean(const char *in, const char **why)
{
	static char out[8192];
	*why = NULL;
	return rootfs_path_clean(in, out, sizeof(out), why) == 0 ? out : NULL;
}

TEST(rootfs_path_clean_ok)
{
	static const char *const cases[][2] = {
		{"etc/passwd", "etc/passwd"},   {"./etc/passwd", "etc/passwd"},
		{"/etc/passwd", "etc/passwd"},  {".//usr//bin/./x", "usr/bin/x"},
		{"usr/bin/", "usr/bin"},        {"./", ""},
		{".", ""},                      {"/", ""},
		{"", ""},                       {"a/.wh..wh..opq", "a/.wh..wh..opq"},
		{"...", "..."},                 {"..a/b..", "..a/b.."},
	};
	const char *why;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const char *got = clean(cases[i][0], &why);
		CHECK_EQ_STR(got, cases[i][1]);
	}
	char name[256];
	memset(name, 'n', 255);
	name[255] = '\0';
	CHECK_EQ_STR(clean(name, &why), name);
}

TEST(rootfs_path_clean_refused)
{
	const char *why;
	static const char *const dotdot[] = {"../etc/passwd", "a/../b", "/..", "a/..",
					     "/../../etc/shadow", "./.."};
	for (size_t i = 0; i < ARRAY_LEN(dotdot); i++) {
		CHECK(clean(dotdot[i], &why) == NULL);
		CHECK_STR_CONTAINS(why, "'..' component");
	}
	char name[300];
	memset(name, 'x', 256);
	name[256] = '\0';
	CHECK(clean(name, &why) == NULL);
	CHECK_STR_CONTAINS(why, "longer than 255 bytes");
	/* 20 components of 250 bytes: every name fine, the path too long */
	struct sb s;
	sb_init(&s);
	for (int i = 0; i < 20; i++) {
		sb_add(&s, name, 250);
		sb_adds(&s, "/");
	}
	CHECK(clean(s.buf, &why) == NULL);
	CHECK_STR_CONTAINS(why, "longer than 4095 bytes");
	sb_release(&s);
	char small[4];
	CHECK_EQ_INT(rootfs_path_clean("abcdef", small, sizeof(small), &why), BG_ERR_INVAL);
}

TEST(rootfs_whiteout_names)
{
	const char *t = NULL;
	CHECK_EQ_INT(rootfs_whiteout_parse("passwd", &t), ROOTFS_WH_NONE);
	CHECK_EQ_INT(rootfs_whiteout_parse(".whfoo", &t), ROOTFS_WH_NONE);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh", &t), ROOTFS_WH_NONE);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh.foo", &t), ROOTFS_WH_FILE);
	CHECK_EQ_STR(t, "foo");
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh..foo", &t), ROOTFS_WH_FILE);
	CHECK_EQ_STR(t, ".foo");
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh..wh..opq", &t), ROOTFS_WH_OPAQUE);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh..wh.plnk", &t), ROOTFS_WH_META);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh..wh..opqx", &t), ROOTFS_WH_META);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh.", &t), ROOTFS_WH_INVALID);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh..", &t), ROOTFS_WH_INVALID);
	CHECK_EQ_INT(rootfs_whiteout_parse(".wh...", &t), ROOTFS_WH_INVALID);
}

TEST(rootfs_media_types)
{
	enum rootfs_compression c;
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.layer.v1.tar+gzip", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_GZIP);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.layer.v1.tar+zstd", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_ZSTD);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.layer.v1.tar", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_NONE);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_GZIP);
	CHECK_EQ_INT(rootfs_media_type("zstd", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_ZSTD);
	CHECK_EQ_INT(rootfs_media_type(NULL, &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_AUTO);
	CHECK_EQ_INT(rootfs_media_type("", &c), 0);
	CHECK_EQ_INT(c, ROOTFS_COMP_AUTO);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.layer.v1.tar+bzip2", &c),
		     BG_ERR_UNSUPPORTED);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.layer.v1.tar+encrypted", &c),
		     BG_ERR_UNSUPPORTED);
	CHECK_EQ_INT(rootfs_media_type("application/vnd.oci.image.manifest.v1+json", &c),
		     BG_ERR_UNSUPPORTED);
}

/* ---- the tree ---- */

static int add(struct rtree *t, const char *path, uint32_t mode, uint32_t layer)
{
	char *why = NULL;
	struct rt_inode *in = rtree_inode_new(mode);
	if (S_ISLNK(mode))
		in->link = xstrdup("unused");
	int rc = rtree_add(t, path, in, layer, &why);
	free(why);
	return rc;
}

static int add_link(struct rtree *t, const char *path, const char *target, uint32_t layer)
{
	struct rt_inode *in = rtree_inode_new(S_IFLNK | 0777);
	in->link = xstrdup(target);
	char *why = NULL;
	int rc = rtree_add(t, path, in, layer, &why);
	free(why);
	return rc;
}

static bool is(struct rtree *t, const char *path, uint32_t type)
{
	struct rt_dentry *d = rtree_lookup(t, path);
	return d && (d->inode->mode & S_IFMT) == type;
}

TEST(rootfs_tree_whiteouts_and_opaque)
{
	struct rtree t;
	rtree_init(&t);
	CHECK_EQ_INT(add(&t, "etc/a", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "etc/b", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "opt/app/x/y", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "opt/app/z", S_IFREG | 0644, 0), 0);
	CHECK(is(&t, "etc", S_IFDIR)); /* made implicitly */
	CHECK(rtree_lookup(&t, "etc")->inode->implicit);

	CHECK(rtree_whiteout(&t, "etc", "a", 1));
	CHECK(!rtree_lookup(&t, "etc/a"));
	CHECK(is(&t, "etc/b", S_IFREG));
	CHECK(!rtree_whiteout(&t, "etc", "a", 1));       /* already gone */
	CHECK(!rtree_whiteout(&t, "nothere", "a", 1));   /* missing directory */
	CHECK(rtree_whiteout(&t, "opt/app", "x", 1));    /* a whole directory */
	CHECK(!rtree_lookup(&t, "opt/app/x/y"));

	CHECK(rtree_opaque(&t, "opt/app", 1));
	CHECK(is(&t, "opt/app", S_IFDIR));
	CHECK(!rtree_lookup(&t, "opt/app/z"));
	CHECK(!rtree_opaque(&t, "opt/app", 1)); /* nothing left to hide */
	rtree_release(&t);
}

/* Whiteouts hide only lower layers' content, wherever they sit in the tar:
 * the layer's own entries (applied before its whiteouts) stay. */
TEST(rootfs_tree_whiteouts_spare_their_own_layer)
{
	struct rtree t;
	rtree_init(&t);
	CHECK_EQ_INT(add(&t, "etc/motd", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "opt/x/old", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "d/sub/old", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "d/gone", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "w/keep/old", S_IFREG | 0644, 0), 0);
	/* layer 1 */
	CHECK_EQ_INT(add(&t, "etc/motd", S_IFREG | 0600, 1), 0);
	CHECK_EQ_INT(add(&t, "opt/x/new", S_IFREG | 0644, 1), 0);
	CHECK_EQ_INT(add(&t, "d/sub/new", S_IFREG | 0644, 1), 0);
	CHECK_EQ_INT(add(&t, "w/keep/new", S_IFREG | 0644, 1), 0);
	CHECK(!rtree_whiteout(&t, "etc", "motd", 1)); /* layer 1's own motd */
	CHECK(is(&t, "etc/motd", S_IFREG));
	CHECK_EQ_INT(rtree_lookup(&t, "etc/motd")->inode->mode, S_IFREG | 0600);
	CHECK(rtree_opaque(&t, "opt/x", 1));
	CHECK(!rtree_lookup(&t, "opt/x/old"));
	CHECK(is(&t, "opt/x/new", S_IFREG));
	/* an opaque directory also empties the lower part of subdirectories
	 * the layer only put something into */
	CHECK(rtree_opaque(&t, "d", 1));
	CHECK(!rtree_lookup(&t, "d/gone"));
	CHECK(!rtree_lookup(&t, "d/sub/old"));
	CHECK(is(&t, "d/sub/new", S_IFREG));
	/* a whiteout of a directory the layer put something into: the same */
	CHECK(rtree_whiteout(&t, "w", "keep", 1));
	CHECK(!rtree_lookup(&t, "w/keep/old"));
	CHECK(is(&t, "w/keep/new", S_IFREG));
	/* a whiteout in the first layer hides nothing */
	rtree_release(&t);
	rtree_init(&t);
	CHECK_EQ_INT(add(&t, "a", S_IFREG | 0644, 0), 0);
	CHECK(!rtree_whiteout(&t, "", "a", 0));
	CHECK(is(&t, "a", S_IFREG));
	rtree_release(&t);
}

TEST(rootfs_tree_replace_rules)
{
	struct rtree t;
	rtree_init(&t);
	struct rt_inode *d = rtree_inode_new(S_IFDIR | 0700);
	d->uid = 5;
	char *why = NULL;
	CHECK_EQ_INT(rtree_add(&t, "var", d, 0, &why), 0);
	CHECK_EQ_INT(add(&t, "var/keep", S_IFREG | 0644, 0), 0);
	/* a directory over a directory: new metadata, children kept */
	struct rt_inode *d2 = rtree_inode_new(S_IFDIR | 0755);
	d2->uid = 7;
	CHECK_EQ_INT(rtree_add(&t, "var", d2, 1, &why), 0);
	struct rt_dentry *v = rtree_lookup(&t, "var");
	REQUIRE(v);
	CHECK_EQ_INT(v->inode->uid, 7);
	CHECK_EQ_INT(v->inode->mode, S_IFDIR | 0755);
	CHECK(is(&t, "var/keep", S_IFREG));
	/* a file over a directory: the subtree goes */
	CHECK_EQ_INT(add(&t, "var", S_IFREG | 0644, 2), 0);
	CHECK(is(&t, "var", S_IFREG));
	CHECK(!rtree_lookup(&t, "var/keep"));
	/* a directory over a file */
	CHECK_EQ_INT(add(&t, "var", S_IFDIR | 0755, 3), 0);
	CHECK(is(&t, "var", S_IFDIR));
	/* something under a file is refused, with the path */
	CHECK_EQ_INT(add(&t, "etc/passwd", S_IFREG | 0644, 0), 0);
	struct rt_inode *f = rtree_inode_new(S_IFREG | 0644);
	CHECK_EQ_INT(rtree_add(&t, "etc/passwd/x", f, 0, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "'etc/passwd' is not a directory");
	free(why);
	why = NULL;
	/* the root stays a directory */
	f = rtree_inode_new(S_IFREG | 0644);
	CHECK_EQ_INT(rtree_add(&t, "", f, 0, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "not a directory");
	free(why);
	rtree_release(&t);
}

TEST(rootfs_tree_symlinked_parents_stay_inside)
{
	struct rtree t;
	rtree_init(&t);
	CHECK_EQ_INT(add(&t, "usr/bin/ls", S_IFREG | 0755, 0), 0);
	CHECK_EQ_INT(add_link(&t, "bin", "usr/bin", 0), 0);
	CHECK_EQ_INT(add(&t, "bin/extra", S_IFREG | 0755, 1), 0);
	CHECK(is(&t, "usr/bin/extra", S_IFREG));
	CHECK(is(&t, "bin", S_IFLNK)); /* the link itself is kept */
	/* absolute targets start at the image root */
	CHECK_EQ_INT(add_link(&t, "lib", "/usr/lib", 0), 0);
	CHECK_EQ_INT(add(&t, "lib/libc.so", S_IFREG | 0644, 1), 0);
	CHECK(is(&t, "usr/lib/libc.so", S_IFREG));
	/* ".." cannot climb out of the root: /../../etc is /etc */
	CHECK_EQ_INT(add_link(&t, "up", "../../..", 0), 0);
	CHECK_EQ_INT(add(&t, "up/etc/escaped", S_IFREG | 0644, 1), 0);
	CHECK(is(&t, "etc/escaped", S_IFREG));
	/* a loop is an error, not a hang */
	CHECK_EQ_INT(add_link(&t, "loop1", "loop2", 0), 0);
	CHECK_EQ_INT(add_link(&t, "loop2", "loop1", 0), 0);
	struct rt_inode *f = rtree_inode_new(S_IFREG | 0644);
	char *why = NULL;
	CHECK_EQ_INT(rtree_add(&t, "loop1/x", f, 1, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "too many levels of symbolic links");
	free(why);
	/* whiteouts follow the same parents */
	CHECK(rtree_whiteout(&t, "bin", "extra", 2));
	CHECK(!rtree_lookup(&t, "usr/bin/extra"));
	rtree_release(&t);
}

TEST(rootfs_tree_hardlinks)
{
	struct rtree t;
	rtree_init(&t);
	char *why = NULL;
	CHECK_EQ_INT(add(&t, "a/orig", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(rtree_link(&t, "b/hl", "a/orig", 0, &why), 0);
	struct rt_dentry *o = rtree_lookup(&t, "a/orig"), *h = rtree_lookup(&t, "b/hl");
	REQUIRE(o && h);
	CHECK(o->inode == h->inode);
	CHECK_EQ_INT(o->inode->nlink, 2);
	CHECK_EQ_INT(rtree_link(&t, "b/hl", "a/orig", 1, &why), 0); /* same link again */
	CHECK_EQ_INT(o->inode->nlink, 2);
	/* replacing the original name leaves the link with the old inode */
	struct rt_inode *old = o->inode;
	CHECK_EQ_INT(add(&t, "a/orig", S_IFREG | 0600, 1), 0);
	h = rtree_lookup(&t, "b/hl");
	REQUIRE(h);
	CHECK(h->inode == old);
	CHECK_EQ_INT(old->nlink, 1);
	/* a link whose target's directory is replaced keeps the file alive */
	CHECK_EQ_INT(add(&t, "c/f", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(rtree_link(&t, "c", "c/f", 1, &why), 0);
	CHECK(is(&t, "c", S_IFREG));
	CHECK_EQ_INT(rtree_lookup(&t, "c")->inode->nlink, 1);

	CHECK_EQ_INT(rtree_link(&t, "x", "nothere", 0, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "which is not in this layer");
	free(why);
	why = NULL;
	CHECK_EQ_INT(rtree_link(&t, "x", "a", 0, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "hardlink to the directory 'a'");
	free(why);
	why = NULL;
	CHECK_EQ_INT(rtree_link(&t, "x", "", 0, &why), BG_ERR_INVAL);
	free(why);
	rtree_release(&t);
}

TEST(rootfs_tree_finish_numbers_and_lost_found)
{
	struct rtree t;
	rtree_init(&t);
	char *why = NULL;
	CHECK_EQ_INT(add(&t, "zeta", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(add(&t, "alpha/one", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(rtree_link(&t, "alpha/two", "zeta", 0, &why), 0);
	CHECK_EQ_INT(rtree_finish(&t, 11, &why), 0);
	CHECK(is(&t, "lost+found", S_IFDIR));
	CHECK_EQ_INT(rtree_lookup(&t, "lost+found")->inode->mode, S_IFDIR | 0700);
	CHECK_EQ_INT(t.root->inode->ino, 2);
	/* breadth-first in name order: alpha, lost+found, zeta, then alpha's */
	CHECK_EQ_INT(rtree_lookup(&t, "alpha")->inode->ino, 11);
	CHECK_EQ_INT(rtree_lookup(&t, "lost+found")->inode->ino, 12);
	CHECK_EQ_INT(rtree_lookup(&t, "zeta")->inode->ino, 13);
	CHECK_EQ_INT(rtree_lookup(&t, "alpha/one")->inode->ino, 14);
	CHECK_EQ_INT(rtree_lookup(&t, "alpha/two")->inode->ino, 13);
	CHECK_EQ_INT(t.norder, 4);
	CHECK_EQ_INT(t.files, 2);
	CHECK_EQ_INT(t.dirs, 3);
	CHECK_EQ_INT(t.hardlinks, 1);
	REQUIRE(t.root->nkids == 3);
	CHECK_EQ_STR(t.root->kids[0]->name, "alpha");
	CHECK_EQ_STR(t.root->kids[2]->name, "zeta");
	rtree_release(&t);

	rtree_init(&t);
	CHECK_EQ_INT(add(&t, "lost+found", S_IFREG | 0644, 0), 0);
	CHECK_EQ_INT(rtree_finish(&t, 11, &why), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(why, "'lost+found' at the root is not a directory");
	free(why);
	rtree_release(&t);
}
