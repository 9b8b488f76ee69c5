/*
 * blobstore.c: the content-addressed blob cache (see blobstore.h).
 *
 * Durability: a blob appears under sha256/ only by rename(2) of a partial
 * that was verified and fsynced, followed by an fsync of the directory, so
 * after a crash every name in sha256/ holds exactly its bytes.  A partial
 * left by a crash is rehashed when the next writer opens it; if its bytes
 * turn out wrong the digest check at commit catches it.
 *
 * Locking: the writer of a partial holds flock(LOCK_EX) on it for as long as
 * it writes.  Whoever takes the lock must check that the file it locked is
 * still the one at that path (a finishing writer renames it away; prune
 * unlinks stale ones), and start over if not.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blobstore.h"
#include "err.h"
#include "util.h"

struct blobstore {
	char *dir;
	char *sha_dir;
	char *tmp_dir;
	int sha_fd; /* for fsync after a rename */
};

struct blobstore_writer {
	struct blobstore *bs;
	char digest[BLOB_DIGEST_MAX]; /* expected; "" when named at commit */
	int64_t size;                 /* expected; < 0 when not known */
	int fd;
	char *path;
	EVP_MD_CTX *md;
	uint64_t off;
	char *err;
};

static const char hexd[] = "0123456789abcdef";

bool blobstore_digest_valid(const char *d)
{
	if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
		return false;
	for (int i = 7; i < 71; i++)
		if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
			return false;
	return true;
}

int blobstore_open(const char *dir, struct blobstore **out, char **errmsg)
{
	*out = NULL;
	*errmsg = NULL;
	struct blobstore *bs = xcalloc(1, sizeof(*bs));
	bs->dir = xstrdup(dir);
	bs->sha_dir = xasprintf("%s/sha256", dir);
	bs->tmp_dir = xasprintf("%s/tmp", dir);
	bs->sha_fd = -1;
	int rc = mkdir_p(bs->sha_dir, 0755);
	if (rc == 0)
		rc = mkdir_p(bs->tmp_dir, 0700);
	if (rc) {
		*errmsg = xasprintf("cannot create the blob cache in %s: %s", dir, bg_strerror(rc));
		blobstore_close(bs);
		return rc;
	}
	bs->sha_fd = open(bs->sha_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bs->sha_fd < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot open %s: %s", bs->sha_dir, strerror(errno));
		blobstore_close(bs);
		return rc;
	}
	*out = bs;
	return 0;
}

void blobstore_close(struct blobstore *bs)
{
	if (!bs)
		return;
	if (bs->sha_fd >= 0)
		close(bs->sha_fd);
	free(bs->dir);
	free(bs->sha_dir);
	free(bs->tmp_dir);
	free(bs);
}

const char *blobstore_dir(const struct blobstore *bs)
{
	return bs->dir;
}

char *blobstore_path(const struct blobstore *bs, const char *digest)
{
	const char *hex = strncmp(digest, "sha256:", 7) == 0 ? digest + 7 : digest;
	return xasprintf("%s/%s", bs->sha_dir, hex);
}

int blobstore_stat(const struct blobstore *bs, const char *digest, uint64_t *size)
{
	if (!blobstore_digest_valid(digest))
		return BG_ERR_INVAL;
	char *p = blobstore_path(bs, digest);
	struct stat st;
	int rc = stat(p, &st);
	free(p);
	if (rc < 0)
		return bg_errno(errno);
	if (size)
		*size = (uint64_t)st.st_size;
	return 0;
}

static void md_hex(EVP_MD_CTX *md, char out[BLOB_DIGEST_MAX])
{
	unsigned char b[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_DigestFinal_ex(md, b, &n);
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++) {
		out[7 + 2 * i] = hexd[b[i] >> 4];
		out[8 + 2 * i] = hexd[b[i] & 15];
	}
	out[71] = '\0';
}

int blobstore_read(const struct blobstore *bs, const char *digest, size_t max, char **data,
		   size_t *len, char **errmsg)
{
	*errmsg = NULL;
	*data = NULL;
	if (!blobstore_digest_valid(digest)) {
		*errmsg = xasprintf("invalid digest '%s'", digest);
		return BG_ERR_INVAL;
	}
	char *p = blobstore_path(bs, digest);
	int rc = read_file(p, max, data, len);
	if (rc) {
		if (rc != BG_ERR_NOENT)
			*errmsg = xasprintf("cannot read %s: %s", p, bg_strerror(rc));
		free(p);
		return rc;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, *data, *len);
	char got[BLOB_DIGEST_MAX];
	md_hex(md, got);
	EVP_MD_CTX_free(md);
	if (strcmp(got, digest) != 0) {
		/* damaged on disk: drop it so the next pull fetches it again */
		unlink(p);
		*errmsg = xasprintf("cached blob %s was damaged (its content hashes to %s); "
				    "removed it",
				    digest, got);
		free(*data);
		*data = NULL;
		free(p);
		return BG_ERR_NOENT;
	}
	free(p);
	return 0;
}

/* ---- writers ---- */

static void writer_free(struct blobstore_writer *w)
{
	if (w->fd >= 0)
		close(w->fd); /* releases the lock */
	EVP_MD_CTX_free(w->md);
	free(w->path);
	free(w->err);
	free(w);
}

static void writer_seterr(struct blobstore_writer *w, const char *what, int e)
{
	free(w->err);
	w->err = xasprintf("%s %s: %s", what, w->path, strerror(e));
}

/* Take the partial at path, locked; same file as the path when we return. */
static int lock_partial(const char *path, bool (*cancelled)(void *), void *arg, int *fdout,
			char **errmsg)
{
	for (;;) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			int e = errno;
			*errmsg = xasprintf("cannot create %s: %s", path, strerror(e));
			return bg_errno(e);
		}
		while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EWOULDBLOCK) {
				int e = errno;
				close(fd);
				*errmsg = xasprintf("cannot lock %s: %s", path, strerror(e));
				return bg_errno(e);
			}
			if (cancelled && cancelled(arg)) {
				close(fd);
				*errmsg = xstrdup("cancelled while waiting for another download of the "
						  "same blob");
				return BG_ERR_CANCELED;
			}
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		struct stat a, b;
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino) {
			*fdout = fd;
			return 0;
		}
		close(fd); /* renamed or unlinked while we waited: start over */
	}
}

static int rehash(struct blobstore_writer *w)
{
	EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
	w->off = 0;
	if (lseek(w->fd, 0, SEEK_SET) < 0)
		return bg_errno(errno);
	size_t bufsz = 1 << 20;
	char *buf = xmalloc(bufsz);
	int rc = 0;
	for (;;) {
		ssize_t n = read(w->fd, buf, bufsz);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			writer_seterr(w, "cannot read", errno);
			rc = bg_errno(errno);
			break;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(w->md, buf, (size_t)n);
		w->off += (uint64_t)n;
	}
	free(buf);
	return rc;
}

int blobstore_writer_reset(struct blobstore_writer *w)
{
	if (ftruncate(w->fd, 0) < 0 || lseek(w->fd, 0, SEEK_SET) < 0) {
		writer_seterr(w, "cannot truncate", errno);
		return bg_errno(errno);
	}
	EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
	w->off = 0;
	return 0;
}

int blobstore_writer_open(struct blobstore *bs, const char *digest, int64_t size,
			  bool (*cancelled)(void *arg), void *arg, struct blobstore_writer **out,
			  bool *present, char **errmsg)
{
	*out = NULL;
	*present = false;
	*errmsg = NULL;
	if (digest && !blobstore_digest_valid(digest)) {
		*errmsg = xasprintf("invalid digest '%s'", digest);
		return BG_ERR_INVAL;
	}
	struct blobstore_writer *w = xcalloc(1, sizeof(*w));
	w->bs = bs;
	w->fd = -1;
	w->size = size;
	w->md = EVP_MD_CTX_new();
	if (!w->md)
		abort();
	int rc = 0;
	if (!digest) {
		char rnd[17];
		rand_hex(rnd, 8);
		w->path = xasprintf("%s/anon-%s.partial", bs->tmp_dir, rnd);
		w->fd = open(w->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd < 0 || flock(w->fd, LOCK_EX) < 0) {
			rc = bg_errno(errno);
			*errmsg = xasprintf("cannot create %s: %s", w->path, strerror(errno));
			goto fail;
		}
		EVP_DigestInit_ex(w->md, EVP_sha256(), NULL);
		*out = w;
		return 0;
	}
	snprintf(w->digest, sizeof(w->digest), "%s", digest);
	char *final = blobstore_path(bs, digest);
	struct stat st;
	if (stat(final, &st) == 0) {
		if (size < 0 || (uint64_t)st.st_size == (uint64_t)size) {
			free(final);
			*present = true;
			writer_free(w);
			return 0;
		}
		/* the sizes disagree: either the cached file was damaged, or the
		 * caller's size (a manifest) is wrong; the content decides */
		char got[BLOB_DIGEST_MAX] = "";
		int fd = open(final, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			struct blobstore_writer tmp = {.fd = fd, .md = w->md, .path = final};
			if (rehash(&tmp) == 0)
				md_hex(w->md, got);
			free(tmp.err);
			close(fd);
		}
		if (strcmp(got, digest) == 0) {
			*errmsg = xasprintf("blob %s has %lld bytes, not the %lld its descriptor says",
					    digest, (long long)st.st_size, (long long)size);
			free(final);
			writer_free(w);
			return BG_ERR_PROTO;
		}
		unlink(final); /* damaged on disk: fetch it again */
	}
	w->path = xasprintf("%s/%s.partial", bs->tmp_dir, digest + 7);
	rc = lock_partial(w->path, cancelled, arg, &w->fd, errmsg);
	if (rc) {
		free(final);
		goto fail;
	}
	if (stat(final, &st) == 0) {
		/* another writer finished it while we waited */
		free(final);
		unlink(w->path);
		*present = true;
		writer_free(w);
		return 0;
	}
	free(final);
	rc = rehash(w);
	if (rc == 0 && size >= 0 && w->off > (uint64_t)size)
		rc = blobstore_writer_reset(w);
	if (rc) {
		*errmsg = xstrdup(w->err ? w->err : bg_strerror(rc));
		goto fail;
	}
	*out = w;
	return 0;
fail:
	if (w->fd >= 0 && !w->digest[0])
		unlink(w->path);
	writer_free(w);
	return rc;
}

uint64_t blobstore_writer_offset(const struct blobstore_writer *w)
{
	return w->off;
}

const char *blobstore_writer_error(const struct blobstore_writer *w)
{
	return w->err;
}

int blobstore_writer_write(struct blobstore_writer *w, const void *p, size_t n)
{
	const char *c = p;
	size_t left = n;
	while (left > 0) {
		ssize_t k = write(w->fd, c, left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;
			writer_seterr(w, "cannot write", e);
			return bg_errno(e);
		}
		c += k;
		left -= (size_t)k;
	}
	EVP_DigestUpdate(w->md, p, n);
	w->off += n;
	return 0;
}

int blobstore_writer_commit(struct blobstore_writer *w, char digest_out[BLOB_DIGEST_MAX],
			    char **errmsg)
{
	*errmsg = NULL;
	char got[BLOB_DIGEST_MAX];
	md_hex(w->md, got);
	int rc = 0;
	char *final = NULL;
	if (w->digest[0] && w->size >= 0 && w->off != (uint64_t)w->size) {
		*errmsg = xasprintf("blob %s: expected %lld bytes, got %llu (digest %s); deleted "
				    "the partial download",
				    w->digest, (long long)w->size, (unsigned long long)w->off, got);
		rc = BG_ERR_PROTO;
		goto discard;
	}
	if (w->digest[0] && strcmp(got, w->digest) != 0) {
		*errmsg = xasprintf("blob %s is corrupt: expected digest %s, got %s (%llu bytes); "
				    "deleted the partial download",
				    w->digest, w->digest, got, (unsigned long long)w->off);
		rc = BG_ERR_PROTO;
		goto discard;
	}
	if (fsync(w->fd) < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot fsync %s: %s", w->path, strerror(errno));
		goto discard;
	}
	fchmod(w->fd, 0444);
	final = blobstore_path(w->bs, got);
	struct stat st;
	if (!w->digest[0] && stat(final, &st) == 0 && (uint64_t)st.st_size == w->off) {
		unlink(w->path); /* same content already cached */
	} else if (rename(w->path, final) < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot publish %s as %s: %s", w->path, final, strerror(errno));
		goto discard;
	}
	if (fsync(w->bs->sha_fd) < 0) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot fsync %s: %s", w->bs->sha_dir, strerror(errno));
	}
	if (digest_out)
		memcpy(digest_out, got, BLOB_DIGEST_MAX);
	free(final);
	writer_free(w);
	return rc;
discard:
	unlink(w->path);
	free(final);
	writer_free(w);
	return rc;
}

void blobstore_writer_abort(struct blobstore_writer *w, bool keep)
{
	if (!w)
		return;
	if (!keep || !w->digest[0])
		unlink(w->path);
	writer_free(w);
}

int blobstore_put(struct blobstore *bs, const char *digest, const void *data, size_t len,
		  char digest_out[BLOB_DIGEST_MAX], char **errmsg)
{
	struct blobstore_writer *w;
	bool present;
	int rc = blobstore_writer_open(bs, digest, (int64_t)len, NULL, NULL, &w, &present, errmsg);
	if (rc)
		return rc;
	if (present) {
		if (digest_out)
			snprintf(digest_out, BLOB_DIGEST_MAX, "%s", digest);
		return 0;
	}
	if (blobstore_writer_offset(w) > 0)
		blobstore_writer_reset(w);
	rc = blobstore_writer_write(w, data, len);
	if (rc) {
		*errmsg = xstrdup(blobstore_writer_error(w));
		blobstore_writer_abort(w, false);
		return rc;
	}
	return blobstore_writer_commit(w, digest_out, errmsg);
}

/* ---- prune ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool is_hex64(const char *s)
{
	if (strlen(s) != 64)
		return false;
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int blobstore_prune(struct blobstore *bs, const char *const *keep, size_t nkeep,
		    int64_t grace_us, bool dry_run,
		    void (*each)(void *arg, const char *digest, uint64_t size), void *arg,
		    struct blobstore_prune_stats *st, char **errmsg)
{
	*errmsg = NULL;
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < nkeep; i++) {
		if (!blobstore_digest_valid(keep[i])) {
			*errmsg = xasprintf("invalid digest '%s' in the set of blobs in use", keep[i]);
			return BG_ERR_INVAL;
		}
	}
	const char **sorted = xcalloc(nkeep + 1, sizeof(char *));
	for (size_t i = 0; i < nkeep; i++)
		sorted[i] = keep[i];
	qsort(sorted, nkeep, sizeof(char *), cmp_str);

	int rc = 0;
	DIR *d = opendir(bs->sha_dir);
	if (!d) {
		rc = bg_errno(errno);
		*errmsg = xasprintf("cannot list %s: %s", bs->sha_dir, strerror(errno));
		free(sorted);
		return rc;
	}
	int64_t now = now_us();
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!is_hex64(de->d_name))
			continue;
		char digest[BLOB_DIGEST_MAX];
		/* is_hex64: exactly 64 hex digits, so it fits */
		snprintf(digest, sizeof(digest), "sha256:%.64s", de->d_name);
		const char *key = digest;
		struct stat sst;
		if (fstatat(dirfd(d), de->d_name, &sst, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		int64_t t = (int64_t)sst.st_ctim.tv_sec * 1000000 + sst.st_ctim.tv_nsec / 1000;
		int64_t m = (int64_t)sst.st_mtim.tv_sec * 1000000 + sst.st_mtim.tv_nsec / 1000;
		if (m > t)
			t = m;
		if (bsearch(&key, sorted, nkeep, sizeof(char *), cmp_str) ||
		    (grace_us > 0 && now - t < grace_us)) {
			st->kept++;
			st->kept_bytes += (uint64_t)sst.st_size;
			continue;
		}
		if (!dry_run && unlinkat(dirfd(d), de->d_name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			rc = bg_errno(errno);
			*errmsg = xasprintf("cannot remove %s/%s: %s", bs->sha_dir, de->d_name,
					    strerror(errno));
			break;
		}
		st->removed++;
		st->removed_bytes += (uint64_t)sst.st_size;
		if (each)
			each(arg, digest, (uint64_t)sst.st_size);
	}
	closedir(d);
	free(sorted);
	if (rc)
		return rc;
	if (!dry_run) {
		int dfd = open(bs->sha_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}

	/* partial downloads nobody is writing */
	d = opendir(bs->tmp_dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n < 9 || strcmp(de->d_name + n - 8, ".partial") != 0)
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			struct stat a, b;
			int64_t m = 0;
			if (fstat(fd, &a) == 0)
				m = (int64_t)a.st_mtim.tv_sec * 1000000 + a.st_mtim.tv_nsec / 1000;
			bool young = grace_us > 0 && now - m < grace_us;
			if (!young && fstatat(dirfd(d), de->d_name, &b, 0) == 0 &&
			    a.st_ino == b.st_ino) {
				if (dry_run || unlinkat(dirfd(d), de->d_name, 0) == 0)
					st->partials_removed++;
			}
		}
		close(fd);
	}
	closedir(d);
	return 0;
}
