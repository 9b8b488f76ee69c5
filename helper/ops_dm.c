/*
 * ops_dm.c: dm.snapshot.create / dm.snapshot.remove (libdevmapper), and the
 * dm devices of the inventory.
 *
 * A VM's copy-on-write root disk: a dm "snapshot" target whose origin is the
 * image's (read-only) loop device and whose exception store is a per-VM loop
 * device, both of which must be loop devices backed by files under the state
 * directory.  Devices are named "bg-..." and carry the uuid "BANGER-<name>":
 * remove and create-when-present act only on devices with that uuid.
 *
 * Where the kernel has no device-mapper (no "device-mapper" in /proc/misc:
 * this test host) both methods answer UNSUPPORTED after validation, and the
 * inventory says dm_supported: false.  This path could not be run here; the
 * tests cover validation and the UNSUPPORTED answer only.
 *
 * libdevmapper is not thread-safe: one mutex around every use.  udev sync is
 * off; libdevmapper makes /dev/mapper nodes itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <libdevmapper.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "err.h"
#include "helper.h"
#include "log.h"
#include "mpk.h"
#include "util.h"

static pthread_mutex_t dm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t dm_once = PTHREAD_ONCE_INIT;

static void dm_log(int level, const char *file, int line, int e, const char *f, ...)
	__attribute__((format(printf, 5, 6)));
static void dm_log(int level, const char *file, int line, int e, const char *f, ...)
{
	if (level > 3) /* errors and warnings only */
		return;
	struct sb sb;
	va_list ap;
	sb_init(&sb);
	va_start(ap, f);
	sb_vaddf(&sb, f, ap);
	va_end(ap);
	log_warn(NULL, 0, "libdevmapper: %s", sb.buf ? sb.buf : "");
	sb_release(&sb);
}

static void dm_setup(void)
{
	dm_log_with_errno_init(dm_log);
	dm_udev_set_sync_support(0);
}

/* Does this kernel have device-mapper at all? */
static bool dm_available(void)
{
	char buf[4096];
	int fd = open("/proc/misc", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strstr(buf, " device-mapper\n") != NULL;
}

static int unsupported(struct hreply *r)
{
	return hfail(r, BG_ERR_UNSUPPORTED,
		     "this kernel has no device-mapper (no 'device-mapper' in /proc/misc): "
		     "dm.snapshot is not available on this host");
}

/* Info about dm device name: *exists, and whether its uuid is banger's. */
static int dm_info_of(const char *name, bool *exists, bool *ours)
{
	struct dm_task *t = dm_task_create(DM_DEVICE_INFO);
	struct dm_info info;
	int rc = BG_ERR_IO;
	*exists = *ours = false;
	if (!t)
		return BG_ERR_NOMEM;
	if (dm_task_set_name(t, name) && dm_task_run(t) && dm_task_get_info(t, &info)) {
		*exists = info.exists;
		const char *uuid = info.exists ? dm_task_get_uuid(t) : NULL;
		*ours = uuid && !strncmp(uuid, "BANGER-", 7) && !strcmp(uuid + 7, name);
		rc = 0;
	}
	dm_task_destroy(t);
	return rc;
}

/* A loop device banger may build on: bound, backing file under state_dir. */
static int check_loop(int minor, const char *dev, struct hreply *r)
{
	char back[HP_PATH_MAX + 64];
	if (loop_backing(minor, back, sizeof(back)) != 0)
		return hfail(r, BG_ERR_NOENT, "%s is not attached", dev);
	if (!path_under(back, H.pol.state_dir))
		return hfail(r, BG_ERR_PERM, "%s is backed by '%s', not a file under banger's state "
			     "directory", dev, back);
	return 0;
}

static int open_mapper(const char *name, int *fd, struct hreply *r)
{
	char path[128];
	snprintf(path, sizeof(path), "/dev/mapper/%s", name);
	*fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0)
		return hfail(r, bg_errno(errno), "cannot open %s: %s", path, strerror(errno));
	return 0;
}

static int create_locked(const struct hp_args *a, struct hreply *r)
{
	bool exists, ours, created = false;
	int rc = dm_info_of(a->dm, &exists, &ours), fd = -1;
	if (rc)
		return hfail(r, rc, "cannot query dm device '%s'", a->dm);
	if (exists && !ours)
		return hfail(r, BG_ERR_EXIST, "dm device '%s' exists and is not banger's", a->dm);
	if (!exists) {
		if ((rc = check_loop(a->origin_minor, a->origin, r)) ||
		    (rc = check_loop(a->cow_minor, a->cow, r)))
			return rc;
		int ofd = open(a->origin, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		uint64_t bytes = 0;
		if (ofd < 0 || ioctl(ofd, BLKGETSIZE64, &bytes) < 0) {
			rc = hfail(r, bg_errno(errno), "cannot size %s: %s", a->origin,
				   strerror(errno));
			if (ofd >= 0)
				close(ofd);
			return rc;
		}
		close(ofd);
		char params[64], uuid[80];
		snprintf(params, sizeof(params), "%s %s N 8", a->origin, a->cow);
		snprintf(uuid, sizeof(uuid), "BANGER-%s", a->dm);
		struct dm_task *t = dm_task_create(DM_DEVICE_CREATE);
		if (!t)
			return hfail(r, BG_ERR_NOMEM, "out of memory");
		bool ok = dm_task_set_name(t, a->dm) && dm_task_set_uuid(t, uuid) &&
			  dm_task_add_target(t, 0, bytes / 512, "snapshot", params) &&
			  dm_task_set_add_node(t, DM_ADD_NODE_ON_CREATE) && dm_task_run(t);
		dm_task_destroy(t);
		dm_task_update_nodes();
		if (!ok)
			return hfail(r, BG_ERR_IO, "cannot create dm snapshot '%s' over %s and %s",
				     a->dm, a->origin, a->cow);
		created = true;
	}
	rc = open_mapper(a->dm, &fd, r);
	if (rc)
		return rc;
	char dev[128];
	snprintf(dev, sizeof(dev), "/dev/mapper/%s", a->dm);
	msgpack_pack_map(&r->pk, 3);
	mpk_kv_str(&r->pk, "dm", a->dm);
	mpk_kv_str(&r->pk, "device", dev);
	mpk_kv_bool(&r->pk, "created", created);
	r->fd = fd;
	return 0;
}

int op_dm_create(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	if (!dm_available())
		return unsupported(r);
	pthread_once(&dm_once, dm_setup);
	pthread_mutex_lock(&dm_lock);
	int rc = create_locked(a, r);
	pthread_mutex_unlock(&dm_lock);
	return rc;
}

static int remove_locked(const struct hp_args *a, struct hreply *r)
{
	bool exists, ours;
	int rc = dm_info_of(a->dm, &exists, &ours);
	if (rc)
		return hfail(r, rc, "cannot query dm device '%s'", a->dm);
	if (exists && !ours)
		return hfail(r, BG_ERR_EXIST, "dm device '%s' is not banger's: not removed", a->dm);
	if (exists) {
		struct dm_task *t = dm_task_create(DM_DEVICE_REMOVE);
		if (!t)
			return hfail(r, BG_ERR_NOMEM, "out of memory");
		bool ok = dm_task_set_name(t, a->dm) && dm_task_retry_remove(t) && dm_task_run(t);
		dm_task_destroy(t);
		dm_task_update_nodes();
		if (!ok && (dm_info_of(a->dm, &exists, &ours) || exists))
			return hfail(r, BG_ERR_BUSY, "cannot remove dm device '%s' (in use?)", a->dm);
	}
	msgpack_pack_map(&r->pk, 1);
	mpk_kv_bool(&r->pk, "removed", exists);
	return 0;
}

int op_dm_remove(struct hconn *c, const struct hp_args *a, struct hreply *r)
{
	if (!dm_available())
		return unsupported(r);
	pthread_once(&dm_once, dm_setup);
	pthread_mutex_lock(&dm_lock);
	int rc = remove_locked(a, r);
	pthread_mutex_unlock(&dm_lock);
	return rc;
}

int dm_inventory(msgpack_packer *pk)
{
	bool avail = dm_available();
	struct dm_task *t = NULL;
	struct dm_names *names = NULL;
	size_t n = 0;
	if (avail) {
		pthread_once(&dm_once, dm_setup);
		pthread_mutex_lock(&dm_lock);
		t = dm_task_create(DM_DEVICE_LIST);
		if (t && dm_task_run(t))
			names = dm_task_get_names(t);
		if (names && names->dev)
			for (struct dm_names *p = names;;
			     p = (struct dm_names *)((char *)p + p->next)) {
				n += proto_is_dm_name(p->name);
				if (!p->next)
					break;
			}
	}
	mpk_pack_str(pk, "dms");
	msgpack_pack_array(pk, n);
	if (n)
		for (struct dm_names *p = names;; p = (struct dm_names *)((char *)p + p->next)) {
			if (proto_is_dm_name(p->name)) {
				msgpack_pack_map(pk, 1);
				mpk_kv_str(pk, "name", p->name);
			}
			if (!p->next)
				break;
		}
	if (avail) {
		if (t)
			dm_task_destroy(t);
		pthread_mutex_unlock(&dm_lock);
	}
	mpk_kv_bool(pk, "dm_supported", avail);
	return 0;
}
