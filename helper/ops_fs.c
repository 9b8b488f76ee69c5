/*
 * ops_fs.c: fs.chown, and ping.
 *
 * fs.chown gives a socket, directory or single-link regular file under the
 * runtime or state directory to the owner (owner_uid:owner_gid; the client
 * cannot choose another uid).  The path is opened O_PATH|O_NOFOLLOW beneath
 * the directory held since start-up (safepath.c: no symlink in any component,
 * even one swapped in after validation), checked with fstat, and changed
 * through that descriptor (fchownat AT_EMPTY_PATH): the name is never
 * followed again.  A file with several links is refused: it could be a hard
 * link to a file that is not banger's.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "mpk.h"

int op_ping(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	msgpack_pack_map(&r->pk, 2);
	mpk_kv_int(&r->pk, "version", HP_PROTOCOL_VERSION);
	mpk_kv_int(&r->pk, "pid", getpid());
	return 0;
}

int op_fs_chown(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	char err[HP_PATH_MAX + 128];
	int fd, rc = sp_open_beneath(sp_base_fd(a->base), a->rel, a->path, O_PATH, &fd, err,
				     sizeof(err));
	if (rc)
		return hfail(r, rc, "%s", err);
	struct stat st;
	bool changed = false;
	if (fstat(fd, &st) < 0) {
		rc = hfail(r, bg_errno(errno), "'%s': %s", a->path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISSOCK(st.st_mode)) {
		rc = hfail(r, BG_ERR_INVAL, "'%s' is not a regular file, directory or socket",
			   a->path);
		goto out;
	}
	if (!S_ISDIR(st.st_mode) && st.st_nlink != 1) {
		rc = hfail(r, BG_ERR_PERM, "'%s' has %lu links: refused (a hard link may point at "
			   "a file that is not banger's)", a->path, (unsigned long)st.st_nlink);
		goto out;
	}
	if (st.st_uid != H.owner_uid || st.st_gid != H.owner_gid) {
		if (fchownat(fd, "", H.owner_uid, H.owner_gid, AT_EMPTY_PATH) < 0) {
			rc = hfail(r, bg_errno(errno), "cannot chown '%s': %s", a->path,
				   strerror(errno));
			goto out;
		}
		changed = true;
	}
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "changed", changed);
out:
	close(fd);
	return rc;
}
