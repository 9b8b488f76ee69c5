/*
 * blobstore.h: the content-addressed blob cache, STATE_DIR/blobs.
 *
 *   blobs/sha256/<hex>        verified blobs (manifests, configs, layers),
 *                             read-only, published by rename: a name there
 *                             always holds exactly the bytes it names
 *   blobs/tmp/<hex>.partial   a download in progress or interrupted; locked
 *                             (flock) by its writer, kept for resume
 *   blobs/tmp/anon-*.partial  a blob whose digest is not known in advance
 *                             (docker-archive layers), named when committed
 *
 * Writing: blobstore_writer_open() takes the partial file and its lock
 * (waiting while another thread or process writes the same blob), rehashes
 * what it already holds so the download can resume after it, and hashes
 * every byte written (OpenSSL EVP sha256).  blobstore_writer_commit() checks
 * size and digest, fsyncs, renames into sha256/ and fsyncs the directory; on
 * a mismatch it deletes the partial and says what was expected and found.
 *
 * Threads: a struct blobstore may be shared by any number of threads; a
 * writer belongs to one thread at a time.  Several processes may share one
 * cache directory (the locks are flock on the partial files).
 */
#ifndef BANGER_BLOBSTORE_H
#define BANGER_BLOBSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOB_DIGEST_MAX 72 /* "sha256:" + 64 hex + NUL */

struct blobstore;

/* Open the cache rooted at dir, creating dir/sha256 and dir/tmp.
 * 0 or BG_ERR_* with *errmsg (caller frees).  Destroy with blobstore_close. */
int blobstore_open(const char *dir, struct blobstore **out, char **errmsg);
void blobstore_close(struct blobstore *bs);
const char *blobstore_dir(const struct blobstore *bs);

/* "sha256:" followed by 64 lowercase hex digits. */
bool blobstore_digest_valid(const char *digest);
/* Where the blob lives (present or not); the caller frees. */
char *blobstore_path(const struct blobstore *bs, const char *digest);
/* 0 and *size when the blob is in the cache; BG_ERR_NOENT when not. */
int blobstore_stat(const struct blobstore *bs, const char *digest, uint64_t *size);
/* Read a whole cached blob of at most max bytes (manifests, configs) and
 * check its digest again.  *data is NUL-terminated; the caller frees it. */
int blobstore_read(const struct blobstore *bs, const char *digest, size_t max, char **data,
		   size_t *len, char **errmsg);
/* Store bytes already in memory under their digest (verified against
 * digest when it is not NULL); digest_out (may be NULL) gets the digest. */
int blobstore_put(struct blobstore *bs, const char *digest, const void *data, size_t len,
		  char digest_out[BLOB_DIGEST_MAX], char **errmsg);

/* ---- writing a blob ---- */

struct blobstore_writer;

/*
 * Begin writing the blob digest of size bytes (size < 0: not known), or,
 * with digest NULL, a blob named by its content at commit.  For a known
 * digest, the partial file is locked first (polling cancelled, which may be
 * NULL, every 100 ms while another writer holds it); if the blob is then
 * already in the cache, *present is true and *out NULL: nothing to write.
 * Otherwise the bytes the partial already holds are rehashed and
 * blobstore_writer_offset() says where to resume (a partial longer than
 * size is emptied).  0, or BG_ERR_* with *errmsg.
 */
int blobstore_writer_open(struct blobstore *bs, const char *digest, int64_t size,
			  bool (*cancelled)(void *arg), void *arg, struct blobstore_writer **out,
			  bool *present, char **errmsg);
uint64_t blobstore_writer_offset(const struct blobstore_writer *w);
/* Append n bytes (hashing them).  0 or BG_ERR_* (BG_ERR_NOSPC when the disk
 * is full); the message is kept for blobstore_writer_error(). */
int blobstore_writer_write(struct blobstore_writer *w, const void *p, size_t n);
/* Empty the partial and start again from byte 0. */
int blobstore_writer_reset(struct blobstore_writer *w);
/* The message of the last failed write or reset, or NULL. */
const char *blobstore_writer_error(const struct blobstore_writer *w);
/*
 * Check the size and digest, fsync, publish atomically into sha256/.
 * digest_out (may be NULL) receives the digest.  A mismatch deletes the
 * partial and gives BG_ERR_PROTO with "expected sha256:..., got sha256:...".
 * Destroys w whatever happens.
 */
int blobstore_writer_commit(struct blobstore_writer *w, char digest_out[BLOB_DIGEST_MAX],
			    char **errmsg);
/* Stop writing.  keep: leave the partial for a later resume (anonymous
 * partials are always deleted).  Destroys w. */
void blobstore_writer_abort(struct blobstore_writer *w, bool keep);

/* ---- pruning ---- */

struct blobstore_prune_stats {
	size_t kept, removed, partials_removed;
	uint64_t kept_bytes, removed_bytes;
};

/*
 * Delete every blob not in keep (nkeep digests: what the images still in use
 * reference; imgsrc_image_blobs() lists an image's), and partial downloads no
 * writer holds.  Blobs published (and partials written) less than grace_us
 * ago are kept, so a pull
 * that has not yet recorded its image does not lose its blobs (callers should
 * still not prune while pulls run).  dry_run: only count.  each (may be NULL)
 * is called for every blob removed (or that would be).  0, or BG_ERR_* with
 * *errmsg (an invalid digest in keep is BG_ERR_INVAL, and nothing is removed).
 */
int blobstore_prune(struct blobstore *bs, const char *const *keep, size_t nkeep,
		    int64_t grace_us, bool dry_run,
		    void (*each)(void *arg, const char *digest, uint64_t size), void *arg,
		    struct blobstore_prune_stats *st, char **errmsg);

#endif
