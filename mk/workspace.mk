# mk/workspace.mk: the workspace pieces (issue 6): the test tool
# build/ws-tool (tests/tools/ws_tool.c) over worker/workspace.c,
# worker/export.c and the agent's MOUNT/EXPORT requests.  Never installed.
# worker/*.c join CORE_OBJ through the Makefile's wildcard.
#
# mk/*.mk are read before the Makefile's `all:` rule, so the first rule in
# them would become the default goal; keep it `all`.
.DEFAULT_GOAL := all

BINS += $(B)/ws-tool

$(B)/ws-tool: $(call obj,tests/tools/ws_tool.c) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
