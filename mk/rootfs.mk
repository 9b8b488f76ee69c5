# mk/rootfs.mk: the rootfs half of image.pull (issue 4): the test tool
# build/mkrootfs (tests/tools/mkrootfs.c), never installed.  It links only
# the rootfs objects and common/, so it builds even while other worker/
# parts are in progress.
#
# mk/*.mk are read before the Makefile's `all:` rule, so the first rule in
# them would become the default goal; keep it `all`.
.DEFAULT_GOAL := all

ROOTFS_OBJ := $(call obj,worker/rootfs.c worker/rootfs_tree.c worker/ext4w.c)

BINS += $(B)/mkrootfs

$(B)/mkrootfs: $(call obj,tests/tools/mkrootfs.c) $(ROOTFS_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
