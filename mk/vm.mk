# mk/vm.mk: the VM pieces (issue 5): the static guest agent, and the test
# tools that drive kernels, QEMU and the agent from the integration tests.
#
# guest/agent_proto.c is the protocol codec both sides link: the static
# agent, and bangerd (worker/agent.c), so it joins CORE_OBJ.  The agent
# itself links libc only, statically: it runs as PID 1 in images that have
# no libc of their own.

GUEST_SRC := $(wildcard guest/*.c)
CFLAGS    += -Iguest
CORE_OBJ  += $(call obj,guest/agent_proto.c)

BINS += $(B)/banger-agent $(B)/kernel-tool $(B)/vm-tool

$(B)/banger-agent: $(call obj,$(GUEST_SRC))
	$(CC) -static -o $@ $^

$(B)/kernel-tool: $(call obj,tests/tools/kernel_tool.c $(TKIND_SRC)) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/vm-tool: $(call obj,tests/tools/vm_tool.c $(TKIND_SRC)) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# hv-tool: both hypervisor drivers through worker/hv.h, and cowdisk; run by
# tests/integration/t_firecracker.sh against tests/tools/fake_firecracker.py
BINS += $(B)/hv-tool

$(B)/hv-tool: $(call obj,tests/tools/hv_tool.c $(TKIND_SRC)) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
