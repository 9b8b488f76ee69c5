# banger: top-level build.  `make` builds everything into build/;
# `make test` installs what is missing, then runs unit, integration and
# crash tests; `make bench` prints the
# benchmark table; `make demo` sets up and runs the example (README).

CC      ?= cc
PKGS    := libuv msgpack sqlite3 yaml-0.1 jansson libcurl openssl libarchive ext2fs \
           libnl-3.0 libnl-route-3.0 devmapper
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wmissing-prototypes -Wvla -Wno-unused-parameter
OPT     ?= -O2 -g
# SANFLAGS: sanitizers for the test variant (make asan)
SANFLAGS ?=
CFLAGS  ?=
CFLAGS  += $(OPT) $(SANFLAGS) -std=c11 -D_GNU_SOURCE $(WARN) -include common/banned.h \
           -Icommon -Iqueue -Iworker -Ihelper -Ibuild/gen $(PKG_CFLAGS) -MMD -MP
LDFLAGS += -Wl,--as-needed $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm

B := build

COMMON_SRC := $(wildcard common/*.c)
QUEUE_SRC  := $(wildcard queue/*.c)
WORKER_SRC := $(filter-out worker/main.c worker/kinds_shipped.c,$(wildcard worker/*.c))
CLIENT_SRC := $(wildcard client/*.c)
TKIND_SRC  := $(wildcard tests/kinds/*.c)
UNIT_SRC   := $(wildcard tests/unit/*.c)
BENCH_SRC  := $(wildcard tests/bench/*.c)
# helper/: banger-helper (root) is helper/*.c; helper/client_*.c and
# helper/proto*.c are the parts bangerd links too (see helper/README.md)
HELPER_SRC := $(wildcard helper/*.c)
HELPER_SHARED_SRC := $(wildcard helper/proto*.c helper/client*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

COMMON_OBJ := $(call obj,$(COMMON_SRC))
QUEUE_OBJ  := $(call obj,$(QUEUE_SRC)) $(B)/obj/gen/migrations.o
WORKER_OBJ := $(call obj,$(WORKER_SRC) $(HELPER_SHARED_SRC))
CORE_OBJ   := $(WORKER_OBJ) $(QUEUE_OBJ) $(COMMON_OBJ)

BINS := $(B)/bangerd $(B)/banger $(B)/bangerd-test $(B)/unit-tests
ifneq ($(BENCH_SRC),)
BINS += $(B)/bench-queue
endif
ifneq ($(wildcard helper/main.c),)
BINS += $(B)/banger-helper
endif

.DEFAULT_GOAL := all

# Each subsystem with targets of its own (the helper's fuzzer, the guest
# agent, ...) keeps them in mk/NAME.mk; they may append to BINS and TEST_DEPS.
-include $(wildcard mk/*.mk)

all: $(BINS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/gen/migrations.c: $(wildcard schema/*.sql) schema/embed.sh
	@mkdir -p $(dir $@)
	sh schema/embed.sh schema $@

$(B)/obj/gen/migrations.o: $(B)/gen/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/bangerd: $(call obj,worker/main.c worker/kinds_shipped.c) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The test daemon: the same daemon with the test kinds (tests/kinds/) added
# through the same registry.  Never installed.
$(B)/bangerd-test: $(call obj,worker/main.c $(TKIND_SRC)) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/banger: $(call obj,$(CLIENT_SRC)) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/unit-tests: $(call obj,$(UNIT_SRC) $(TKIND_SRC)) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/banger-helper: $(call obj,$(filter-out $(wildcard helper/client*.c),$(HELPER_SRC))) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bench-queue: $(call obj,$(BENCH_SRC)) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# test, bench and demo install missing packages first (a no-op when
# everything is there), so each works as one command on a fresh machine.
test: deps
	$(MAKE) all
	$(MAKE) asan
	bash tests/run.sh

bench: deps
	$(MAKE) all
	bash tests/bench/run.sh
	@for b in tests/bench/*.sh; do [ "$$b" = tests/bench/run.sh ] || bash "$$b"; done

demo: deps
	$(MAKE) all
	bash ci/demo.sh

deps:
	sh ci/install-deps.sh

# The same daemon, CLI, root helper and unit tests built with ASan and
# UBSan into build/asan/; `make test` runs the unit tests and the core, VM
# and workspace integration tests against them too (hcall: the VM tests'
# helper client).
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_BINS := bangerd-test banger banger-helper hcall unit-tests $(ASAN_EXTRA)
asan:
	$(MAKE) B=build/asan OPT="-O1 -g" SANFLAGS="$(ASAN_FLAGS)" \
		$(addprefix build/asan/,$(ASAN_BINS))

clean:
	rm -rf $(B)

.PHONY: all test bench demo deps clean asan

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
