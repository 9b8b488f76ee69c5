/*
 * safepath.c: how banger-helper opens paths a client named: never by string
 * alone.  The runtime and state directories are opened once at start-up
 * (refusing a symlink in any component) and held; every later path is opened
 * beneath one of them with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), so a symlink anywhere in it,
 * ".." or a mount crossing fails in the kernel, in the same call that opens,
 * even when the tree was changed after the request was validated.  Callers
 * then act on the descriptor (fstat, fchownat AT_EMPTY_PATH, LOOP_CONFIGURE),
 * never on the name again.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"

static int openat2_(int dirfd, const char *path, int flags, unsigned long long resolve)
{
	struct open_how how = {.flags = (unsigned long long)flags, .resolve = resolve};
	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

static int map_err(int e, const char *shown, char *err, size_t errlen)
{
	switch (e) {
	case ELOOP:
		snprintf(err, errlen, "'%s': a component is a symbolic link (refused)", shown);
		return BG_ERR_PERM;
	case EXDEV:
		snprintf(err, errlen, "'%s' leaves banger's directory or crosses a mount (refused)",
			 shown);
		return BG_ERR_PERM;
	case ENOENT:
		snprintf(err, errlen, "'%s' does not exist", shown);
		return BG_ERR_NOENT;
	case ENOTDIR:
		snprintf(err, errlen, "'%s': a component is not a directory", shown);
		return BG_ERR_INVAL;
	default:
		snprintf(err, errlen, "'%s': %s", shown, strerror(e));
		return bg_errno(e);
	}
}

int sp_open_abs_dir(const char *path, int *fd, char *err, size_t errlen)
{
	/* no O_NOFOLLOW: a symlink as the last component is then ELOOP too */
	int f = openat2_(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC,
			 RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	if (f < 0)
		return map_err(errno, path, err, errlen);
	*fd = f;
	return 0;
}

int sp_open_beneath(int dirfd, const char *rel, const char *shown, int flags, int *fd, char *err,
		    size_t errlen)
{
	int f = -1;
	for (int tries = 0; tries < 8; tries++) {
		/* openat2 refuses with O_PATH any flag but O_DIRECTORY,
		 * O_NOFOLLOW and O_CLOEXEC */
		int extra = (flags & O_PATH) ? 0 : O_NOCTTY;
		f = openat2_(dirfd, rel, flags | O_CLOEXEC | O_NOFOLLOW | extra,
			     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
				     RESOLVE_NO_XDEV);
		if (f >= 0 || errno != EAGAIN) /* EAGAIN: a rename raced the lookup */
			break;
	}
	if (f < 0)
		return map_err(errno, shown, err, errlen);
	/* O_PATH|O_NOFOLLOW opens a trailing symlink itself: refuse it here */
	struct stat st;
	if ((flags & O_PATH) && fstat(f, &st) == 0 && S_ISLNK(st.st_mode)) {
		close(f);
		return map_err(ELOOP, shown, err, errlen);
	}
	*fd = f;
	return 0;
}

int sp_base_fd(int base)
{
	return base == HP_BASE_RUNTIME ? H.runtime_fd : H.state_fd;
}

bool path_under(const char *path, const char *dir)
{
	size_t dl = strlen(dir);
	return strlen(path) > dl + 1 && strncmp(path, dir, dl) == 0 && path[dl] == '/';
}
