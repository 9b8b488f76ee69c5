/*
 * test_cowdisk.c: worker/cowdisk.c on this host's scratch filesystem (tmpfs
 * or ext4: no FICLONE there, so the sparse copy runs; with
 * COWDISK_NO_REFLINK it runs on any filesystem).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cowdisk.h"
#include "err.h"
#include "test.h"
#include "util.h"

#define MIB (1024 * 1024)

/* A 64 MiB file with data at 0, 20 MiB and its last 4 KiB: holes between. */
static char *make_base(const char *name)
{
	char *p = xasprintf("%s/%s", test_tmpdir(), name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	char buf[8192];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	if (fd < 0 || pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) ||
	    pwrite(fd, buf, sizeof(buf), 20 * MIB) != (ssize_t)sizeof(buf) ||
	    pwrite(fd, buf, 4096, 64 * MIB - 4096) != 4096) {
		free(p);
		p = NULL;
	}
	if (fd >= 0)
		close(fd);
	return p;
}

static bool same_bytes(const char *a, const char *b)
{
	char *x = NULL, *y = NULL;
	size_t nx = 0, ny = 0;
	bool r = read_file(a, 128 * MIB, &x, &nx) == 0 && read_file(b, 128 * MIB, &y, &ny) == 0 &&
		 nx == ny && memcmp(x, y, nx) == 0;
	free(x);
	free(y);
	return r;
}

TEST(cowdisk_sparse_copy_keeps_holes)
{
	char *base = make_base("base.ext4");
	REQUIRE(base);
	char *dest = xasprintf("%s/vm1.raw", test_tmpdir());
	struct stat b0, b1, d;
	REQUIRE(stat(base, &b0) == 0);
	struct cowdisk_result r;
	char *err = NULL;
	int rc = cowdisk_create(base, dest, COWDISK_NO_REFLINK, &r, &err);
	CHECK_EQ_INT(rc, 0);
	CHECK(err == NULL);
	CHECK_EQ_INT(r.method, COWDISK_SPARSE);
	CHECK_EQ_STR(cowdisk_method_name(r.method), "sparse");
	CHECK_EQ_INT(r.size, 64 * MIB);
	REQUIRE(stat(dest, &d) == 0);
	CHECK_EQ_INT(d.st_size, 64 * MIB);
	CHECK_EQ_INT(d.st_mode & 0777, 0600);
	/* holes stayed holes: about what the base allocates, far below 64 MiB */
	CHECK(d.st_blocks * 512 <= b0.st_blocks * 512 + 256 * 1024);
	CHECK(d.st_blocks * 512 < 4 * MIB);
	CHECK(r.copied <= 4 * MIB);
	CHECK(same_bytes(base, dest));
	/* writing the copy leaves the base alone */
	int fd = open(dest, O_WRONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	CHECK(pwrite(fd, "XXXX", 4, 0) == 4);
	close(fd);
	REQUIRE(stat(base, &b1) == 0);
	CHECK(!same_bytes(base, dest));
	CHECK_EQ_INT(b1.st_mtim.tv_sec, b0.st_mtim.tv_sec);
	CHECK_EQ_INT(b1.st_mtim.tv_nsec, b0.st_mtim.tv_nsec);
	char head[4] = "";
	fd = open(base, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	CHECK(pread(fd, head, 4, 0) == 4);
	close(fd);
	CHECK(memcmp(head, "abcd", 4) == 0);
	free(err);
	free(base);
	free(dest);
}

TEST(cowdisk_reflink_or_clean_fallback)
{
	/* without COWDISK_NO_REFLINK: FICLONE where the filesystem has it,
	 * else (tmpfs, ext4) the failure falls back to the sparse copy */
	char *base = make_base("base2.ext4");
	REQUIRE(base);
	char *dest = xasprintf("%s/vm2.raw", test_tmpdir());
	struct cowdisk_result r;
	char *err = NULL;
	CHECK_EQ_INT(cowdisk_create(base, dest, 0, &r, &err), 0);
	CHECK(r.method == COWDISK_REFLINK || r.method == COWDISK_SPARSE);
	if (r.method == COWDISK_REFLINK)
		CHECK_EQ_INT(r.copied, 0);
	CHECK(same_bytes(base, dest));
	/* no temporary file left next to it */
	char *cmd = xasprintf("ls %s | grep -q tmp-", test_tmpdir());
	CHECK(system(cmd) != 0);
	free(cmd);
	free(err);
	free(base);
	free(dest);
}

TEST(cowdisk_refusals)
{
	char *base = make_base("base3.ext4");
	REQUIRE(base);
	char *dest = xasprintf("%s/vm3.raw", test_tmpdir());
	char *err = NULL;
	REQUIRE(cowdisk_create(base, dest, 0, NULL, &err) == 0);
	CHECK_EQ_INT(cowdisk_create(base, dest, 0, NULL, &err), BG_ERR_EXIST);
	CHECK_STR_CONTAINS(err, "already exists");
	CHECK_STR_CONTAINS(err, dest);
	char *missing = xasprintf("%s/nope.ext4", test_tmpdir());
	char *d2 = xasprintf("%s/vm4.raw", test_tmpdir());
	CHECK_EQ_INT(cowdisk_create(missing, d2, 0, NULL, &err), BG_ERR_NOENT);
	CHECK_STR_CONTAINS(err, "cannot open base image");
	CHECK_STR_CONTAINS(err, missing);
	CHECK(access(d2, F_OK) != 0);
	char *d3 = xasprintf("%s/no/such/dir/vm5.raw", test_tmpdir());
	CHECK(cowdisk_create(base, d3, 0, NULL, &err) < 0);
	CHECK_STR_CONTAINS(err, "cannot create a disk next to");
	CHECK_EQ_INT(cowdisk_create(test_tmpdir(), d2, 0, NULL, &err), BG_ERR_INVAL);
	CHECK_STR_CONTAINS(err, "is not a regular file");
	free(err);
	free(base);
	free(dest);
	free(missing);
	free(d2);
	free(d3);
}
