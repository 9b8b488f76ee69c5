/*
 * kernel.c: importing guest kernels, module dependencies from .modinfo, and
 * banger's initramfs (see kernel.h for the store's layout and the sources).
 *
 * Nothing here trusts its input: archive member names are checked before
 * anything is written (no absolute paths, no "..", regular files only), ELF
 * section tables are bounds-checked before they are read, and every
 * dependency chain is checked for cycles.  The guest agent is copied into
 * the initramfs as it is; it must be the static banger-agent.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "err.h"
#include "kernel.h"
#include "log.h"
#include "util.h"

#define MODULE_MAX (64u << 20)  /* one decompressed module */
#define META_FORMAT 1

/* The drivers banger's guests need: virtio transports (mmio for microvm
 * and Firecracker, pci for q35), disk, agent port, network, entropy,
 * vsock, and the root filesystem. */
static const struct {
	const char *name;
	bool required;
} roots[] = {
	{"virtio_mmio", false}, {"virtio_pci", false},  {"virtio_blk", true},
	{"virtio_console", true}, {"virtio_net", false}, {"virtio_rng", false},
	{"vmw_vsock_virtio_transport", false}, {"ext4", true},
};

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

void kernel_modules_free(struct kernel_module *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].name);
		free(m[i].path);
		free(m[i].deps);
	}
	free(m);
}

bool kernel_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '+' || c == '-'))
			return false;
	}
	return true;
}

/* ---- files ---- */

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : bg_errno(errno);
	return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) < 0 ? bg_errno(errno) : 0;
}

static int copy_file(const char *from, const char *to, unsigned mode, char **errmsg)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		errmsg_set(errmsg, "cannot read '%s': %s", from, strerror(errno));
		return bg_errno(errno);
	}
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (out < 0) {
		int e = errno;
		close(in);
		errmsg_set(errmsg, "cannot write '%s': %s", to, strerror(e));
		return bg_errno(e);
	}
	char buf[65536];
	ssize_t n;
	int rc = 0;
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		if (write(out, buf, (size_t)n) != n) {
			rc = BG_ERR_IO;
			break;
		}
	}
	if (n < 0 || rc || fsync(out) < 0) {
		rc = rc ? rc : bg_errno(errno);
		errmsg_set(errmsg, "copying '%s' to '%s' failed", from, to);
	}
	close(in);
	if (close(out) < 0 && !rc)
		rc = bg_errno(errno);
	return rc;
}

static int sha256_file(const char *path, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bg_errno(errno);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (n < 0)
		return BG_ERR_IO;
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Read a module, decompressing .xz/.zst/.gz through libarchive's raw
 * reader.  *buf is the caller's. */
static int load_module(const char *path, unsigned char **buf, size_t *len, char **errmsg)
{
	struct archive *a = archive_read_new();
	struct sb sb;
	int rc = 0;
	archive_read_support_filter_all(a);
	archive_read_support_format_raw(a);
	sb_init(&sb);
	struct archive_entry *ent;
	if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK ||
	    archive_read_next_header(a, &ent) != ARCHIVE_OK) {
		errmsg_set(errmsg, "cannot read module '%s': %s", path, archive_error_string(a));
		rc = BG_ERR_IO;
		goto out;
	}
	char chunk[65536];
	la_ssize_t n;
	while ((n = archive_read_data(a, chunk, sizeof(chunk))) > 0) {
		if (sb.len + (size_t)n > MODULE_MAX) {
			errmsg_set(errmsg, "module '%s' is larger than %u MiB", path, MODULE_MAX >> 20);
			rc = BG_ERR_TOOBIG;
			goto out;
		}
		sb_add(&sb, chunk, (size_t)n);
	}
	if (n < 0) {
		errmsg_set(errmsg, "cannot decompress module '%s': %s", path, archive_error_string(a));
		rc = BG_ERR_IO;
		goto out;
	}
	*len = sb.len;
	*buf = (unsigned char *)sb_detach(&sb);
out:
	sb_release(&sb);
	archive_read_free(a);
	return rc;
}

/* ---- .modinfo ---- */

static uint64_t rd(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* The .modinfo section of an ELF64 little-endian object, or NULL. */
static const unsigned char *modinfo_section(const unsigned char *b, size_t len, size_t *outlen)
{
	if (len < 64 || memcmp(b, "\177ELF", 4) != 0 || b[4] != 2 || b[5] != 1)
		return NULL;
	uint64_t shoff = rd(b + 0x28, 8);
	uint64_t shentsize = rd(b + 0x3a, 2), shnum = rd(b + 0x3c, 2), shstrndx = rd(b + 0x3e, 2);
	if (shentsize < 64 || shnum == 0 || shstrndx >= shnum || shoff > len ||
	    shnum * shentsize > len - shoff)
		return NULL;
	const unsigned char *strsh = b + shoff + shstrndx * shentsize;
	uint64_t stroff = rd(strsh + 0x18, 8), strsize = rd(strsh + 0x20, 8);
	if (stroff > len || strsize > len - stroff)
		return NULL;
	for (uint64_t i = 0; i < shnum; i++) {
		const unsigned char *sh = b + shoff + i * shentsize;
		uint64_t name = rd(sh, 4), off = rd(sh + 0x18, 8), size = rd(sh + 0x20, 8);
		if (name >= strsize || off > len || size > len - off)
			continue;
		const char *nm = (const char *)b + stroff + name;
		size_t maxn = (size_t)(strsize - name);
		if (strnlen(nm, maxn) == 8 && !memcmp(nm, ".modinfo", 8)) {
			*outlen = (size_t)size;
			return b + off;
		}
	}
	return NULL;
}

/* Module name from a file name: strip .ko[.xz|.zst|.gz], '-' -> '_'. */
static char *modname_of(const char *file)
{
	const char *base = strrchr(file, '/');
	base = base ? base + 1 : file;
	const char *ko = strstr(base, ".ko");
	if (!ko || !(ko[3] == 0 || !strcmp(ko + 3, ".xz") || !strcmp(ko + 3, ".zst") ||
		     !strcmp(ko + 3, ".gz")))
		return NULL;
	char *n = xstrndup(base, (size_t)(ko - base));
	for (char *p = n; *p; p++)
		if (*p == '-')
			*p = '_';
	return n;
}

static void norm(char *s)
{
	for (; *s; s++)
		if (*s == '-')
			*s = '_';
}

struct mod {
	char *name;
	char *path;
	char **deps; /* NULL-terminated, after reading .modinfo */
	int state;   /* 0 new, 1 visiting, 2 done */
};

struct modset {
	struct mod *m;
	size_t n, cap;
	char **builtin;
	size_t nbuiltin;
	const char *moddir;
	/* result */
	struct kernel_module *out;
	size_t nout;
};

static struct mod *mod_find(struct modset *ms, const char *name)
{
	for (size_t i = 0; i < ms->n; i++)
		if (!strcmp(ms->m[i].name, name))
			return &ms->m[i];
	return NULL;
}

static bool is_builtin(struct modset *ms, const char *name)
{
	for (size_t i = 0; i < ms->nbuiltin; i++)
		if (!strcmp(ms->builtin[i], name))
			return true;
	return false;
}

static struct modset *cur_ms; /* for the nftw callback; kernel_module_order is serialized */

static int index_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	if (flag != FTW_F)
		return 0;
	char *name = modname_of(path);
	if (!name)
		return 0;
	struct modset *ms = cur_ms;
	if (mod_find(ms, name)) { /* a second copy (updates/ vs kernel/): keep the first */
		free(name);
		return 0;
	}
	if (ms->n == ms->cap) {
		ms->cap = ms->cap ? ms->cap * 2 : 1024;
		ms->m = xrealloc(ms->m, ms->cap * sizeof(*ms->m));
	}
	ms->m[ms->n++] = (struct mod){name, xstrdup(path), NULL, 0};
	return 0;
}

static int strcmp_p(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Split a list of module names (separated by any of seps) into *out. */
static void add_names(struct sb *acc, const char *s, size_t n, const char *seps)
{
	char *t = xstrndup(s, n);
	char *save = NULL;
	for (char *w = strtok_r(t, seps, &save); w; w = strtok_r(NULL, seps, &save)) {
		norm(w);
		sb_adds(acc, w);
		sb_add(acc, "", 1);
	}
	free(t);
}

static int read_deps(struct mod *m, char **errmsg)
{
	unsigned char *b = NULL;
	size_t len = 0, ilen = 0;
	int rc = load_module(m->path, &b, &len, errmsg);
	if (rc < 0)
		return rc;
	const unsigned char *mi = modinfo_section(b, len, &ilen);
	struct sb acc;
	sb_init(&acc);
	size_t i = 0;
	while (mi && i < ilen) {
		const char *s = (const char *)mi + i;
		size_t sl = strnlen(s, ilen - i);
		if (sl > 8 && !strncmp(s, "depends=", 8)) {
			add_names(&acc, s + 8, sl - 8, ",");
		} else if (sl > 8 && !strncmp(s, "softdep=", 8)) {
			/* "pre: a b post: c": only the pre: ones must load first */
			const char *pre = strstr(s + 8, "pre:");
			if (pre && pre < s + sl) {
				pre += 4;
				const char *end = strstr(pre, "post:");
				size_t pl = end && end < s + sl ? (size_t)(end - pre)
								: (size_t)(s + sl - pre);
				add_names(&acc, pre, pl, " \t");
			}
		}
		i += sl + 1;
	}
	free(b);
	if (!mi) {
		sb_release(&acc);
		errmsg_set(errmsg, "'%s' is not a kernel module (no .modinfo)", m->path);
		return BG_ERR_INVAL;
	}
	/* acc holds NUL-separated names */
	size_t cnt = 0;
	for (size_t k = 0; k < acc.len; k++)
		cnt += acc.buf[k] == 0;
	m->deps = xcalloc(cnt + 1, sizeof(char *));
	size_t j = 0;
	for (size_t k = 0; k < acc.len; k += strlen(acc.buf + k) + 1)
		m->deps[j++] = xstrdup(acc.buf + k);
	qsort(m->deps, j, sizeof(char *), strcmp_p);
	sb_release(&acc);
	return 0;
}

static int visit(struct modset *ms, struct mod *m, char **errmsg)
{
	if (m->state == 2)
		return 0;
	if (m->state == 1) {
		errmsg_set(errmsg, "module dependency cycle through '%s'", m->name);
		return BG_ERR_INVAL;
	}
	m->state = 1;
	int rc = read_deps(m, errmsg);
	if (rc < 0)
		return rc;
	for (char **d = m->deps; *d; d++) {
		struct mod *dm = mod_find(ms, *d);
		if (!dm) {
			if (is_builtin(ms, *d))
				continue;
			errmsg_set(errmsg, "module '%s' needs '%s', which is neither a module in '%s' nor built in",
				m->name, *d, ms->moddir);
			return BG_ERR_NOENT;
		}
		if ((rc = visit(ms, dm, errmsg)) < 0)
			return rc;
	}
	m->state = 2;
	struct sb deps;
	sb_init(&deps);
	for (char **d = m->deps; *d; d++)
		if (mod_find(ms, *d))
			sb_addf(&deps, "%s%s", deps.len ? "," : "", *d);
	ms->out = xrealloc(ms->out, (ms->nout + 1) * sizeof(*ms->out));
	ms->out[ms->nout].name = xstrdup(m->name);
	ms->out[ms->nout].path = xstrdup(m->path);
	ms->out[ms->nout].deps = sb_detach(&deps);
	ms->nout++;
	return 0;
}

static void load_builtin(struct modset *ms)
{
	char *path = xasprintf("%s/modules.builtin", ms->moddir);
	char *s = NULL;
	size_t n;
	if (read_file(path, 16 << 20, &s, &n) == 0) {
		char *save = NULL;
		for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char *name = modname_of(l);
			if (!name)
				continue;
			ms->builtin = xrealloc(ms->builtin, (ms->nbuiltin + 1) * sizeof(char *));
			ms->builtin[ms->nbuiltin++] = name;
		}
		free(s);
	}
	free(path);
}

int kernel_module_order(const char *moddir, struct kernel_module **mods, size_t *n,
			char **errmsg)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	struct modset ms = {0};
	int rc = 0;
	ms.moddir = moddir;
	load_builtin(&ms);

	pthread_mutex_lock(&mu);
	cur_ms = &ms;
	int fr = nftw(moddir, index_cb, 32, FTW_PHYS);
	cur_ms = NULL;
	pthread_mutex_unlock(&mu);
	if (fr < 0) {
		errmsg_set(errmsg, "cannot read module directory '%s': %s", moddir, strerror(errno));
		rc = bg_errno(errno);
		goto out;
	}
	bool transport = false;
	for (size_t i = 0; i < ARRAY_LEN(roots); i++) {
		struct mod *m = mod_find(&ms, roots[i].name);
		bool bi = is_builtin(&ms, roots[i].name);
		if (m || bi)
			transport |= !strcmp(roots[i].name, "virtio_mmio") ||
				     !strcmp(roots[i].name, "virtio_pci");
		if (!m && !bi && roots[i].required) {
			errmsg_set(errmsg, "this kernel has no '%s' driver (neither a module in '%s' nor built in)",
				roots[i].name, moddir);
			rc = BG_ERR_NOENT;
			goto out;
		}
		if (m && (rc = visit(&ms, m, errmsg)) < 0)
			goto out;
	}
	if (!transport) {
		errmsg_set(errmsg, "this kernel has neither virtio_mmio nor virtio_pci");
		rc = BG_ERR_NOENT;
		goto out;
	}
	*mods = ms.out;
	*n = ms.nout;
	ms.out = NULL;
	ms.nout = 0;
out:
	for (size_t i = 0; i < ms.n; i++) {
		free(ms.m[i].name);
		free(ms.m[i].path);
		strv_free(ms.m[i].deps);
	}
	free(ms.m);
	for (size_t i = 0; i < ms.nbuiltin; i++)
		free(ms.builtin[i]);
	free(ms.builtin);
	kernel_modules_free(ms.out, ms.nout);
	return rc;
}

/* ---- the initramfs ---- */

/* The agent runs as PID 1 of images that may have no libc: it must be a
 * 64-bit ELF executable without a PT_INTERP program header (static). */
static int check_agent(const char *path, const char *data, size_t len, char **errmsg)
{
	const unsigned char *u = (const unsigned char *)data;
	if (len < 64 || memcmp(u, "\177ELF", 4) != 0 || u[4] != 2) {
		errmsg_set(errmsg, "the agent '%s' is not a 64-bit ELF executable", path);
		return BG_ERR_INVAL;
	}
	uint64_t phoff = rd(u + 0x20, 8), phentsize = rd(u + 0x36, 2), phnum = rd(u + 0x38, 2);
	if (phentsize < 4 || phoff >= len)
		return 0;
	for (uint64_t i = 0; i < phnum && i * phentsize <= len - phoff - 4; i++) {
		if (rd(u + phoff + i * phentsize, 4) == 3 /* PT_INTERP */) {
			errmsg_set(errmsg, "the agent '%s' is dynamically linked: it must be static "
					"(build/banger-agent is)",
				path);
			return BG_ERR_INVAL;
		}
	}
	return 0;
}

static int cpio_add(struct archive *a, const char *path, unsigned type, unsigned mode,
		    const void *data, size_t len, unsigned rmaj, unsigned rmin, int64_t ino)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, mode);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_nlink(e, type == AE_IFDIR ? 2 : 1);
	archive_entry_set_ino64(e, ino);
	archive_entry_set_mtime(e, 0, 0);
	archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)len : 0);
	if (type == AE_IFCHR)
		archive_entry_set_rdev(e, (dev_t)((rmaj << 8) | rmin));
	if (type == AE_IFCHR) {
		archive_entry_set_rdevmajor(e, rmaj);
		archive_entry_set_rdevminor(e, rmin);
	}
	int rc = archive_write_header(a, e) == ARCHIVE_OK ? 0 : BG_ERR_IO;
	if (rc == 0 && type == AE_IFREG && len &&
	    archive_write_data(a, data, len) != (la_ssize_t)len)
		rc = BG_ERR_IO;
	archive_entry_free(e);
	return rc;
}

int kernel_write_initramfs(const char *out, const char *agent_path, const char *version,
			   const struct kernel_module *mods, size_t n, char **errmsg)
{
	static const char *const dirs[] = {"dev", "proc", "sys", "newroot", "lib", "lib/banger",
					   "lib/modules"};
	struct archive *a = archive_write_new();
	char *agent = NULL, *p = NULL;
	size_t alen = 0;
	struct sb list;
	int rc = 0;
	int64_t ino = 1;

	sb_init(&list);
	if (read_file(agent_path, 64 << 20, &agent, &alen) < 0) {
		errmsg_set(errmsg, "cannot read the agent '%s' (build it: make build/banger-agent)",
			agent_path);
		rc = BG_ERR_NOENT;
		goto out;
	}
	if ((rc = check_agent(agent_path, agent, alen, errmsg)) < 0)
		goto out;
	archive_write_set_format_cpio_newc(a);
	archive_write_add_filter_none(a);
	if (archive_write_open_filename(a, out) != ARCHIVE_OK) {
		errmsg_set(errmsg, "cannot write '%s': %s", out, archive_error_string(a));
		rc = BG_ERR_IO;
		goto out;
	}
	for (size_t i = 0; i < ARRAY_LEN(dirs) && !rc; i++)
		rc = cpio_add(a, dirs[i], AE_IFDIR, 0755, NULL, 0, 0, 0, ino++);
	if (!rc)
		rc = cpio_add(a, "dev/console", AE_IFCHR, 0600, NULL, 0, 5, 1, ino++);
	if (!rc)
		rc = cpio_add(a, "init", AE_IFREG, 0755, agent, alen, 0, 0, ino++);
	if (!rc && n) {
		p = xasprintf("lib/modules/%s", version);
		rc = cpio_add(a, p, AE_IFDIR, 0755, NULL, 0, 0, 0, ino++);
		free(p);
		p = NULL;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		unsigned char *m = NULL;
		size_t mlen = 0;
		if ((rc = load_module(mods[i].path, &m, &mlen, errmsg)) < 0)
			break;
		p = xasprintf("lib/modules/%s/%s.ko", version, mods[i].name);
		rc = cpio_add(a, p, AE_IFREG, 0644, m, mlen, 0, 0, ino++);
		sb_addf(&list, "%s /%s %s\n", mods[i].name, p, mods[i].deps[0] ? mods[i].deps : "-");
		free(p);
		p = NULL;
		free(m);
	}
	if (!rc)
		rc = cpio_add(a, "lib/banger/modules.list", AE_IFREG, 0644, list.buf, list.len, 0, 0,
			      ino++);
	if (archive_write_close(a) != ARCHIVE_OK && !rc)
		rc = BG_ERR_IO;
	if (rc < 0 && errmsg && !*errmsg)
		errmsg_set(errmsg, "writing the initramfs '%s' failed: %s", out,
			archive_error_string(a) ? archive_error_string(a) : bg_strerror(rc));
out:
	archive_write_free(a);
	sb_release(&list);
	free(agent);
	return rc;
}

/* ---- reading a .deb ---- */

struct nested {
	struct archive *outer;
	char buf[65536];
};

static la_ssize_t nested_read(struct archive *a, void *arg, const void **out)
{
	struct nested *n = arg;
	*out = n->buf;
	return archive_read_data(n->outer, n->buf, sizeof(n->buf));
}

/* Is p (from the archive) a path we keep, made safe?  Returns a normalized
 * copy ("boot/...", "lib/modules/...", "usr/lib/modules/...") or NULL. */
static char *keep_path(const char *p)
{
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	while (*p == '/')
		p++;
	if (strncmp(p, "boot/vmlinuz-", 13) != 0 && strncmp(p, "lib/modules/", 12) != 0 &&
	    strncmp(p, "usr/lib/modules/", 16) != 0)
		return NULL;
	/* no "..", no empty components */
	const char *c = p;
	while (*c) {
		size_t l = strcspn(c, "/");
		if (l == 0 || (l == 2 && c[0] == '.' && c[1] == '.') || (l == 1 && c[0] == '.'))
			return NULL;
		c += l;
		if (*c == '/')
			c++;
	}
	const char *base = strrchr(p, '/');
	base = base ? base + 1 : p;
	/* the kernel, modules, and the lists we read; the rest (firmware
	 * lists, symbol maps) is not needed */
	if (!strncmp(p, "boot/", 5) || !strcmp(base, "modules.builtin") ||
	    !strcmp(base, "modules.order"))
		return xstrdup(p);
	char *mn = modname_of(p);
	if (!mn)
		return NULL;
	free(mn);
	return xstrdup(p);
}

static int extract_deb(const char *deb, const char *tree, char **errmsg)
{
	struct archive *outer = archive_read_new(), *inner = NULL;
	struct archive_entry *e;
	struct nested *nst = NULL;
	int rc = BG_ERR_INVAL;
	bool found = false;
	archive_read_support_format_ar(outer);
	if (archive_read_open_filename(outer, deb, 65536) != ARCHIVE_OK) {
		errmsg_set(errmsg, "cannot read '%s': %s", deb, archive_error_string(outer));
		goto out;
	}
	while (archive_read_next_header(outer, &e) == ARCHIVE_OK) {
		if (!strncmp(archive_entry_pathname(e), "data.tar", 8)) {
			found = true;
			break;
		}
	}
	if (!found) {
		errmsg_set(errmsg, "'%s' is not a Debian package (no data.tar member)", deb);
		goto out;
	}
	nst = xmalloc(sizeof(*nst));
	nst->outer = outer;
	inner = archive_read_new();
	archive_read_support_filter_all(inner);
	archive_read_support_format_tar(inner);
	if (archive_read_open(inner, nst, NULL, nested_read, NULL) != ARCHIVE_OK) {
		errmsg_set(errmsg, "cannot read the data of '%s': %s", deb, archive_error_string(inner));
		goto out;
	}
	int r;
	while ((r = archive_read_next_header(inner, &e)) == ARCHIVE_OK) {
		if (archive_entry_filetype(e) != AE_IFREG)
			continue;
		char *rel = keep_path(archive_entry_pathname(e));
		if (!rel)
			continue;
		char *dst = xasprintf("%s/%s", tree, rel);
		char *slash = strrchr(dst, '/');
		*slash = 0;
		mkdir_p(dst, 0755);
		*slash = '/';
		int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0) {
			errmsg_set(errmsg, "cannot write '%s': %s", dst, strerror(errno));
			rc = bg_errno(errno);
			free(dst);
			free(rel);
			goto out;
		}
		rc = archive_read_data_into_fd(inner, fd) == ARCHIVE_OK ? 0 : BG_ERR_IO;
		if (close(fd) < 0 && !rc)
			rc = BG_ERR_IO;
		if (rc < 0)
			errmsg_set(errmsg, "cannot extract '%s' from '%s': %s", rel, deb,
				archive_error_string(inner));
		free(dst);
		free(rel);
		if (rc < 0)
			goto out;
	}
	if (r != ARCHIVE_EOF) {
		errmsg_set(errmsg, "'%s' is damaged: %s", deb, archive_error_string(inner));
		rc = BG_ERR_IO;
		goto out;
	}
	rc = 0;
out:
	if (inner)
		archive_read_free(inner);
	archive_read_free(outer);
	free(nst);
	return rc;
}

/* ---- finding things in a tree ---- */

/* The one boot/vmlinuz-VERSION in tree: *kpath, *version. */
static int find_vmlinuz(const char *tree, char **kpath, char **version, char **errmsg)
{
	char *boot = xasprintf("%s/boot", tree);
	DIR *d = opendir(boot);
	int found = 0;
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strncmp(e->d_name, "vmlinuz-", 8) != 0 || !e->d_name[8])
				continue;
			if (found++) {
				errmsg_set(errmsg, "'%s' holds more than one kernel: import one at a time",
					boot);
				free(*kpath);
				free(*version);
				*kpath = *version = NULL;
				break;
			}
			*kpath = xasprintf("%s/%s", boot, e->d_name);
			*version = xstrdup(e->d_name + 8);
		}
		closedir(d);
	}
	free(boot);
	if (found == 1)
		return 0;
	if (found == 0)
		errmsg_set(errmsg, "no boot/vmlinuz-VERSION in '%s'", tree);
	return BG_ERR_NOENT;
}

static char *find_moddir(const char *tree, const char *version)
{
	static const char *const where[] = {"lib/modules", "usr/lib/modules"};
	for (size_t i = 0; i < ARRAY_LEN(where); i++) {
		char *p = xasprintf("%s/%s/%s", tree, where[i], version);
		struct stat st;
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
			return p;
		free(p);
	}
	return NULL;
}

/* Version of a bare kernel image: the bzImage header's kernel_version
 * string, or "Linux version X" inside an ELF vmlinux.  NULL if unknown. */
static char *image_version(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	unsigned char h[1024];
	char *v = NULL;
	ssize_t n = pread(fd, h, sizeof(h), 0);
	if (n >= 0x210 && !memcmp(h + 0x202, "HdrS", 4)) {
		unsigned off = (unsigned)(h[0x20e] | h[0x20f] << 8) + 0x200;
		char s[256];
		ssize_t m = pread(fd, s, sizeof(s) - 1, off);
		if (m > 0) {
			s[m] = 0;
			s[strcspn(s, " ")] = 0;
			if (s[0])
				v = xstrdup(s);
		}
	} else if (n >= 4 && !memcmp(h, "\177ELF", 4)) {
		static const char tag[] = "Linux version ";
		char *buf = xmalloc((1 << 20) + 256);
		off_t pos = 0;
		ssize_t m;
		while (!v && (m = pread(fd, buf, (1 << 20) + 255, pos)) > 0) {
			buf[m] = 0;
			for (ssize_t i = 0; i + (ssize_t)sizeof(tag) < m; i++) {
				if (buf[i] == 'L' && !memcmp(buf + i, tag, sizeof(tag) - 1)) {
					char *s = buf + i + sizeof(tag) - 1;
					size_t l = strcspn(s, " ");
					if (l > 0 && l < 128 && s[0] >= '0' && s[0] <= '9') {
						v = xstrndup(s, l);
						break;
					}
				}
			}
			if (m < (1 << 20) + 255)
				break;
			pos += 1 << 20;
		}
		free(buf);
	}
	close(fd);
	return v;
}

/* ---- metadata ---- */

static int write_meta(const char *dir, const struct kernel_info *ki)
{
	json_t *mods = json_array();
	for (size_t i = 0; i < ki->nmodules; i++)
		json_array_append_new(mods, json_string(ki->modules[i]));
	json_t *j = json_pack("{s:i,s:s,s:s,s:s,s:b,s:o,s:s,s:I}", "format", META_FORMAT, "name",
			      ki->name, "version", ki->version, "source", ki->source, "modular",
			      ki->modular, "modules", mods, "agent_sha256", ki->agent_sha256,
			      "created", (json_int_t)ki->created);
	char *txt = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	char *path = xasprintf("%s/metadata.json", dir);
	int rc = write_file_atomic(path, txt, strlen(txt), 0644);
	free(path);
	free(txt);
	return rc;
}

static int read_meta(const char *state_dir, const char *name, struct kernel_info *ki,
		     char **errmsg)
{
	memset(ki, 0, sizeof(*ki));
	char *dir = xasprintf("%s/kernels/%s", state_dir, name);
	char *path = xasprintf("%s/metadata.json", dir);
	json_error_t jerr;
	json_t *j = json_load_file(path, 0, &jerr);
	int rc = 0;
	if (!j) {
		struct stat st;
		rc = stat(dir, &st) < 0 ? BG_ERR_NOENT : BG_ERR_IO;
		if (rc == BG_ERR_NOENT)
			errmsg_set(errmsg, "no kernel named '%s'", name);
		else
			errmsg_set(errmsg, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		goto out;
	}
	const char *s;
	ki->name = xstrdup(name);
	ki->version = xstrdup((s = json_string_value(json_object_get(j, "version"))) ? s : "");
	ki->source = xstrdup((s = json_string_value(json_object_get(j, "source"))) ? s : "");
	ki->agent_sha256 =
		xstrdup((s = json_string_value(json_object_get(j, "agent_sha256"))) ? s : "");
	ki->modular = json_is_true(json_object_get(j, "modular"));
	ki->created = json_integer_value(json_object_get(j, "created"));
	json_t *mods = json_object_get(j, "modules");
	ki->nmodules = json_is_array(mods) ? json_array_size(mods) : 0;
	ki->modules = xcalloc(ki->nmodules + 1, sizeof(char *));
	for (size_t i = 0; i < ki->nmodules; i++)
		ki->modules[i] = xstrdup((s = json_string_value(json_array_get(mods, i))) ? s : "");
	ki->dir = dir;
	ki->vmlinuz = xasprintf("%s/vmlinuz", dir);
	ki->initrd = xasprintf("%s/initrd", dir);
	dir = NULL;
	json_decref(j);
out:
	free(dir);
	free(path);
	return rc;
}

void kernel_info_release(struct kernel_info *ki)
{
	if (!ki)
		return;
	free(ki->name);
	free(ki->version);
	free(ki->source);
	strv_free(ki->modules);
	free(ki->agent_sha256);
	free(ki->dir);
	free(ki->vmlinuz);
	free(ki->initrd);
	memset(ki, 0, sizeof(*ki));
}

/* ---- import ---- */

enum src_kind { SRC_DEB, SRC_DIR, SRC_IMAGE };

static int classify(const char *src, enum src_kind *k, char **errmsg)
{
	struct stat st;
	if (stat(src, &st) < 0) {
		errmsg_set(errmsg, "'%s': %s", src, strerror(errno));
		return bg_errno(errno);
	}
	if (S_ISDIR(st.st_mode)) {
		*k = SRC_DIR;
		return 0;
	}
	unsigned char h[0x210];
	int fd = open(src, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? pread(fd, h, sizeof(h), 0) : -1;
	if (fd >= 0)
		close(fd);
	if (n >= 8 && !memcmp(h, "!<arch>\n", 8)) {
		*k = SRC_DEB;
		return 0;
	}
	if ((n >= 4 && !memcmp(h, "\177ELF", 4)) ||
	    (n >= 0x206 && !memcmp(h + 0x202, "HdrS", 4))) {
		*k = SRC_IMAGE;
		return 0;
	}
	errmsg_set(errmsg,
		"'%s' is not a Debian kernel package, an extracted package directory, or a kernel "
		"image (bzImage or ELF vmlinux)",
		src);
	return BG_ERR_INVAL;
}

int kernel_import(const struct kernel_import_opts *o, struct kernel_info *out, char **errmsg)
{
	struct kernel_info ki = {0};
	enum src_kind kind = SRC_IMAGE;
	char *kdir = NULL, *stage = NULL, *tree = NULL, *kpath = NULL, *moddir = NULL;
	char *dst = NULL, *p = NULL, *old = NULL;
	struct kernel_module *mods = NULL;
	size_t nmods = 0;
	char sha[65];
	int rc;

	if (!o->state_dir || !o->source || !o->agent_path) {
		errmsg_set(errmsg, "kernel import: state directory, source and agent are required");
		return BG_ERR_INVAL;
	}
	if (o->name && !kernel_name_ok(o->name)) {
		errmsg_set(errmsg, "kernel name '%s' is not 1-64 of [A-Za-z0-9._+-]", o->name);
		return BG_ERR_INVAL;
	}
	char *agent = NULL;
	size_t alen = 0;
	if (read_file(o->agent_path, 64 << 20, &agent, &alen) < 0) {
		errmsg_set(errmsg, "cannot read the agent '%s' (build it: make build/banger-agent)",
			o->agent_path);
		return BG_ERR_NOENT;
	}
	rc = check_agent(o->agent_path, agent, alen, errmsg);
	free(agent);
	if (rc < 0)
		return rc;
	if ((rc = sha256_file(o->agent_path, sha)) < 0) {
		errmsg_set(errmsg, "cannot read the agent '%s'", o->agent_path);
		return rc;
	}
	if ((rc = classify(o->source, &kind, errmsg)) < 0)
		return rc;

	kdir = xasprintf("%s/kernels", o->state_dir);
	if ((rc = mkdir_p(kdir, 0755)) < 0) {
		errmsg_set(errmsg, "cannot create '%s': %s", kdir, bg_strerror(rc));
		goto out;
	}
	char rnd[17];
	rand_hex(rnd, 8);
	stage = xasprintf("%s/.import-%s", kdir, rnd);
	if (mkdir(stage, 0755) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot create '%s': %s", stage, strerror(errno));
		goto out;
	}

	if (kind == SRC_DEB) {
		tree = xasprintf("%s/tree", stage);
		mkdir(tree, 0755);
		if ((rc = extract_deb(o->source, tree, errmsg)) < 0)
			goto out;
	} else if (kind == SRC_DIR) {
		tree = xstrdup(o->source);
	}
	if (kind == SRC_IMAGE) {
		kpath = xstrdup(o->source);
		ki.version = image_version(o->source);
		if (!ki.version && !o->name) {
			errmsg_set(errmsg, "cannot tell the version of '%s': give it a name", o->source);
			rc = BG_ERR_INVAL;
			goto out;
		}
		if (!ki.version)
			ki.version = xstrdup("unknown");
	} else {
		if ((rc = find_vmlinuz(tree, &kpath, &ki.version, errmsg)) < 0)
			goto out;
		moddir = find_moddir(tree, ki.version);
	}
	ki.name = xstrdup(o->name ? o->name : ki.version);
	if (!kernel_name_ok(ki.name)) {
		errmsg_set(errmsg, "kernel version '%s' is not a usable name: give one", ki.name);
		rc = BG_ERR_INVAL;
		goto out;
	}
	if (moddir) {
		if ((rc = kernel_module_order(moddir, &mods, &nmods, errmsg)) < 0)
			goto out;
	} else if (kind != SRC_IMAGE) {
		log_warn(NULL, 0, "kernel %s: no module directory: its virtio drivers must be built in",
			 ki.version);
	}
	ki.modular = nmods > 0;
	ki.nmodules = nmods;
	ki.modules = xcalloc(nmods + 1, sizeof(char *));
	for (size_t i = 0; i < nmods; i++)
		ki.modules[i] = xstrdup(mods[i].name);
	ki.source = xstrdup(o->source);
	ki.agent_sha256 = xstrdup(sha);
	ki.created = (int64_t)time(NULL);

	p = xasprintf("%s/vmlinuz", stage);
	if ((rc = copy_file(kpath, p, 0644, errmsg)) < 0)
		goto out;
	free(p);
	p = xasprintf("%s/initrd", stage);
	if ((rc = kernel_write_initramfs(p, o->agent_path, ki.version, mods, nmods, errmsg)) < 0)
		goto out;
	if ((rc = write_meta(stage, &ki)) < 0) {
		errmsg_set(errmsg, "cannot write the kernel's metadata: %s", bg_strerror(rc));
		goto out;
	}
	if (kind == SRC_DEB)
		rm_rf(tree);

	dst = xasprintf("%s/%s", kdir, ki.name);
	struct stat st;
	if (lstat(dst, &st) == 0) {
		if (!o->replace) {
			errmsg_set(errmsg, "a kernel named '%s' exists (remove it first, or replace it)",
				ki.name);
			rc = BG_ERR_EXIST;
			goto out;
		}
		old = xasprintf("%s/.old-%s", kdir, rnd);
		if (rename(dst, old) < 0) {
			rc = bg_errno(errno);
			errmsg_set(errmsg, "cannot replace '%s': %s", dst, strerror(errno));
			goto out;
		}
	}
	if (rename(stage, dst) < 0) {
		rc = bg_errno(errno);
		errmsg_set(errmsg, "cannot publish '%s': %s", dst, strerror(errno));
		if (old)
			rename(old, dst);
		goto out;
	}
	int dfd = open(kdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	if (old)
		rm_rf(old);
	log_info(NULL, 0, "kernel %s (%s) imported from %s with %zu modules", ki.name, ki.version,
		 o->source, nmods);
	if (out) {
		rc = read_meta(o->state_dir, ki.name, out, errmsg);
	} else {
		rc = 0;
	}
out:
	if (stage)
		rm_rf(stage); /* gone already after a successful rename */
	kernel_info_release(&ki);
	kernel_modules_free(mods, nmods);
	free(kdir);
	free(stage);
	free(tree);
	free(kpath);
	free(moddir);
	free(dst);
	free(p);
	free(old);
	return rc;
}

int kernel_get(const char *state_dir, const char *name, struct kernel_info *out, char **errmsg)
{
	if (!kernel_name_ok(name)) {
		errmsg_set(errmsg, "no kernel named '%s'", name);
		return BG_ERR_NOENT;
	}
	return read_meta(state_dir, name, out, errmsg);
}

static int ki_cmp(const void *a, const void *b)
{
	return strcmp(((const struct kernel_info *)a)->name, ((const struct kernel_info *)b)->name);
}

int kernel_list(const char *state_dir, struct kernel_info **out, size_t *n, char **errmsg)
{
	char *kdir = xasprintf("%s/kernels", state_dir);
	DIR *d = opendir(kdir);
	struct kernel_info *v = NULL;
	size_t cnt = 0;
	*out = NULL;
	*n = 0;
	if (!d) {
		int e = errno;
		free(kdir);
		if (e == ENOENT)
			return 0;
		errmsg_set(errmsg, "cannot read '%s/kernels': %s", state_dir, strerror(e));
		return bg_errno(e);
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !kernel_name_ok(e->d_name))
			continue;
		struct kernel_info ki;
		if (read_meta(state_dir, e->d_name, &ki, NULL) < 0)
			continue; /* a half-removed or foreign entry */
		v = xrealloc(v, (cnt + 1) * sizeof(*v));
		v[cnt++] = ki;
	}
	closedir(d);
	free(kdir);
	if (cnt)
		qsort(v, cnt, sizeof(*v), ki_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

void kernel_list_free(struct kernel_info *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kernel_info_release(&v[i]);
	free(v);
}

int kernel_remove(const char *state_dir, const char *name, char **errmsg)
{
	if (!kernel_name_ok(name)) {
		errmsg_set(errmsg, "no kernel named '%s'", name);
		return BG_ERR_NOENT;
	}
	char *dir = xasprintf("%s/kernels/%s", state_dir, name);
	char rnd[17];
	rand_hex(rnd, 8);
	char *trash = xasprintf("%s/kernels/.rm-%s", state_dir, rnd);
	int rc = 0;
	if (rename(dir, trash) < 0) {
		rc = bg_errno(errno);
		if (errno == ENOENT)
			errmsg_set(errmsg, "no kernel named '%s'", name);
		else
			errmsg_set(errmsg, "cannot remove '%s': %s", dir, strerror(errno));
	} else {
		rc = rm_rf(trash);
	}
	free(dir);
	free(trash);
	return rc;
}
