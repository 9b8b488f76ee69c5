/*
 * mkrootfs.c: a test tool (never installed) that calls rootfs_build() the way
 * the image.pull step will, so tests/integration/t_rootfs.sh and the
 * measurements can drive the rootfs writer without a registry or a daemon.
 *
 *   mkrootfs [options] OUT.ext4 DIGEST LAYER[:MEDIATYPE]...
 *
 *   --headroom=SIZE|PCT%   free space after the content (repeatable: one of
 *                          each adds up); SIZE takes K, M, G suffixes
 *   --inodes=N             free inodes beyond the content's
 *   --journal              add an ext4 journal
 *   --label=LABEL          volume label
 *   --fs-time=SECONDS      time for filesystem metadata
 *   --max-run=BLOCKS       cap each data extent (forces deep extent trees)
 *   --no-space-check       skip the free-space check (meet ENOSPC mid-write)
 *   --progress             progress lines on stderr
 *   --cancel-after=N       report "cancelled" from the Nth poll on
 *
 * MEDIATYPE is an OCI/Docker layer media type or tar, gzip, zstd; without it
 * the compression is detected.  On success prints key=value lines (size,
 * counts, uuid); on failure prints "mkrootfs: MESSAGE [ERRNAME]" on stderr
 * and exits 1 (2 for a bad command line).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "rootfs.h"
#include "util.h"

static long cancel_after = -1;
static long polls;

static bool cancel_cb(void *arg)
{
	(void)arg;
	polls++;
	return cancel_after >= 0 && polls >= cancel_after;
}

static void progress_cb(void *arg, const struct rootfs_progress *p)
{
	(void)arg;
	fprintf(stderr, "progress %s layer %zu %llu/%llu\n",
		p->phase == ROOTFS_SCAN ? "scan" : "write", p->layer + 1,
		(unsigned long long)p->done, (unsigned long long)p->total);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	uint64_t mul = 1;
	switch (*end) {
	case 'K': case 'k': mul = 1ull << 10; end++; break;
	case 'M': case 'm': mul = 1ull << 20; end++; break;
	case 'G': case 'g': mul = 1ull << 30; end++; break;
	case 'T': case 't': mul = 1ull << 40; end++; break;
	default: break;
	}
	if (*end)
		return -1;
	*out = v * mul;
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: mkrootfs [--headroom=SIZE|PCT%%] [--inodes=N] [--journal] "
			"[--label=L] [--fs-time=S] [--max-run=N] [--no-space-check] "
			"[--progress] [--cancel-after=N] OUT.ext4 DIGEST LAYER[:MEDIATYPE]...\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct rootfs_opts o;
	memset(&o, 0, sizeof(o));
	o.cancelled = cancel_cb;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *a = argv[i];
		const char *v = strchr(a, '=');
		v = v ? v + 1 : "";
		uint64_t n;
		if (strncmp(a, "--headroom=", 11) == 0) {
			size_t l = strlen(v);
			if (l && v[l - 1] == '%') {
				char *end;
				unsigned long pct = strtoul(v, &end, 10);
				if (end != v + l - 1 || pct > 10000)
					return usage();
				o.headroom_pct = (unsigned)pct;
			} else if (parse_size(v, &o.headroom_bytes) < 0) {
				return usage();
			}
		} else if (strncmp(a, "--inodes=", 9) == 0) {
			if (parse_size(v, &o.extra_inodes) < 0)
				return usage();
		} else if (strcmp(a, "--journal") == 0) {
			o.journal = true;
		} else if (strncmp(a, "--label=", 8) == 0) {
			o.label = v;
		} else if (strncmp(a, "--fs-time=", 10) == 0) {
			o.fs_time = strtoll(v, NULL, 10);
		} else if (strncmp(a, "--max-run=", 10) == 0) {
			if (parse_size(v, &n) < 0 || n > 32768)
				return usage();
			o.max_run_blocks = (uint32_t)n;
		} else if (strcmp(a, "--no-space-check") == 0) {
			o.no_space_check = true;
		} else if (strcmp(a, "--progress") == 0) {
			o.progress = progress_cb;
		} else if (strncmp(a, "--cancel-after=", 15) == 0) {
			cancel_after = strtol(v, NULL, 10);
		} else {
			return usage();
		}
	}
	if (argc - i < 2)
		return usage();
	const char *out = argv[i++];
	o.manifest_digest = argv[i++];
	size_t n = (size_t)(argc - i);
	struct rootfs_layer *layers = xcalloc(n ? n : 1, sizeof(*layers));
	for (size_t k = 0; k < n; k++) {
		char *arg = argv[i + (int)k];
		char *colon = strrchr(arg, ':');
		enum rootfs_compression c;
		if (colon && colon[1] && rootfs_media_type(colon + 1, &c) == 0) {
			*colon = '\0';
			layers[k].media_type = colon + 1;
		} else if (colon && colon[1] && strchr(colon + 1, '/')) {
			*colon = '\0'; /* a media type rootfs_build will refuse */
			layers[k].media_type = colon + 1;
		}
		layers[k].path = arg;
	}
	struct rootfs_result r;
	char *err = NULL;
	int rc = rootfs_build(layers, n, &o, out, &r, &err);
	free(layers);
	if (rc < 0) {
		fprintf(stderr, "mkrootfs: %s [%s]\n", err ? err : bg_strerror(rc), bg_errname(rc));
		free(err);
		return 1;
	}
	printf("image_bytes=%llu\nused_bytes=%llu\nfree_bytes=%llu\nblocks=%llu\n"
	       "block_size=%u\ninodes=%llu\ninodes_used=%llu\nfiles=%llu\ndirs=%llu\n"
	       "symlinks=%llu\nhardlinks=%llu\nspecials=%llu\nwhiteouts=%llu\n"
	       "data_bytes=%llu\nuuid=%s\n",
	       (unsigned long long)r.image_bytes, (unsigned long long)r.used_bytes,
	       (unsigned long long)r.free_bytes, (unsigned long long)r.blocks, r.block_size,
	       (unsigned long long)r.inodes, (unsigned long long)r.inodes_used,
	       (unsigned long long)r.files, (unsigned long long)r.dirs,
	       (unsigned long long)r.symlinks, (unsigned long long)r.hardlinks,
	       (unsigned long long)r.specials, (unsigned long long)r.whiteouts,
	       (unsigned long long)r.data_bytes, r.uuid);
	return 0;
}
