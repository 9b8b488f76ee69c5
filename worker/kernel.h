/*
 * kernel.h: guest kernels: importing them, the initramfs banger boots them
 * with, and the store under STATE/kernels/<name>/:
 *
 *   vmlinuz        the kernel image QEMU boots (-kernel)
 *   initrd         banger's initramfs (newc cpio, uncompressed): the agent
 *                  as /init, dev/console, the virtio modules in load order
 *                  (listed in /lib/banger/modules.list)
 *   metadata.json  {format, name, version, source, modular, modules,
 *                   agent_sha256, created}
 *
 * Sources kernel_import() takes:
 *   - a Debian kernel package (linux-image-*-cloud-amd64 .deb): read with
 *     libarchive (ar, then data.tar.*), no dpkg needed;
 *   - a directory holding an extracted package (boot/vmlinuz-VERSION and
 *     lib/modules/VERSION or usr/lib/modules/VERSION);
 *   - a bare kernel image (bzImage or ELF vmlinux) with its virtio drivers
 *     built in, as Firecracker uses: the initramfs then holds the agent only.
 *
 * Module order comes from each module's own .modinfo (depends=, softdep
 * pre:), which is what depmod reads too, so no depmod run and no
 * modules.dep are needed (Debian's packages ship none).  Modules built into
 * the kernel (modules.builtin) are skipped.
 *
 * Import is atomic: it builds in STATE/kernels/.import-XXXX and renames.
 * Blocking (reads and writes tens of MB); any thread.  Errors: 0 or BG_ERR_*,
 * with a message for a person in *errmsg (allocated; the caller frees).
 */
#ifndef BANGER_KERNEL_H
#define BANGER_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kernel_info {
	char *name;
	char *version;
	char *source;        /* what it was imported from */
	bool modular;        /* the initramfs carries modules */
	char **modules;      /* names in load order; NULL-terminated */
	size_t nmodules;
	char *agent_sha256;  /* the agent baked into the initramfs */
	int64_t created;     /* Unix seconds */
	char *dir;           /* STATE/kernels/NAME */
	char *vmlinuz;       /* DIR/vmlinuz */
	char *initrd;        /* DIR/initrd */
};
/* Free what a kernel_info holds (not the struct itself). */
void kernel_info_release(struct kernel_info *ki);

struct kernel_import_opts {
	const char *state_dir;  /* required */
	const char *source;     /* .deb, directory, or kernel image; required */
	const char *name;       /* NULL: the kernel's version */
	const char *agent_path; /* the static banger-agent; required */
	bool replace;           /* replace a kernel of the same name */
};

/* Import; on success *out (may be NULL) describes the stored kernel. */
int kernel_import(const struct kernel_import_opts *o, struct kernel_info *out, char **errmsg);
/* Every stored kernel, sorted by name.  *out is an array the caller frees
 * with kernel_list_free. */
int kernel_list(const char *state_dir, struct kernel_info **out, size_t *n, char **errmsg);
void kernel_list_free(struct kernel_info *v, size_t n);
/* One stored kernel; BG_ERR_NOENT if there is none of that name. */
int kernel_get(const char *state_dir, const char *name, struct kernel_info *out, char **errmsg);
/* Remove one; BG_ERR_NOENT if there is none of that name. */
int kernel_remove(const char *state_dir, const char *name, char **errmsg);
/* 1-64 of [A-Za-z0-9._+-], not starting with '.' or '-'. */
bool kernel_name_ok(const char *name);

/* One module of banger's initramfs. */
struct kernel_module {
	char *name; /* "virtio_blk" */
	char *path; /* the file under the module directory (maybe .ko.xz) */
	char *deps; /* the modules it needs first, comma-separated ("" for none) */
};
void kernel_modules_free(struct kernel_module *m, size_t n);

/*
 * The modules banger's initramfs needs from a module directory
 * (lib/modules/VERSION), with their dependencies, in an order in which each
 * can be loaded.  *mods is an array of *n the caller frees with
 * kernel_modules_free; *n may be 0 (every driver is built in).
 * BG_ERR_NOENT when a required driver is neither a module nor built in.
 */
int kernel_module_order(const char *moddir, struct kernel_module **mods, size_t *n,
			char **errmsg);

/*
 * Write banger's initramfs to out: agent as /init, dev/console, and the
 * modules (decompressed if they are .ko.xz/.zst/.gz) under
 * lib/modules/VERSION, with /lib/banger/modules.list: one line per module
 * in load order, "NAME PATH DEPS" (DEPS comma-separated, "-" for none), so
 * the agent can load only the ones a VM's devices need (banger.modules=).
 */
int kernel_write_initramfs(const char *out, const char *agent_path, const char *version,
			   const struct kernel_module *mods, size_t n, char **errmsg);

#endif
