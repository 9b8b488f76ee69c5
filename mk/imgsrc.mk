# mk/imgsrc.mk: the image-source half of image.pull (issue 4): the test tool
# build/imgfetch (tests/tools/imgfetch.c), never installed.  It links only
# the image-source objects and common/, so it builds even while other
# worker/ parts are in progress.
#
# mk/*.mk are read before the Makefile's `all:` rule, so the first rule in
# them would become the default goal; keep it `all`.
.DEFAULT_GOAL := all

IMGSRC_OBJ := $(call obj,worker/registry.c worker/blobstore.c worker/imgsrc.c)

BINS += $(B)/imgfetch

$(B)/imgfetch: $(call obj,tests/tools/imgfetch.c) $(IMGSRC_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
