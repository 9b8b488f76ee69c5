# t_vm.sh: the VM foundation (issue 5) against the real thing: the Debian
# cloud kernel imported from its .deb, banger's initramfs and static agent,
# QEMU (TCG on this host: its KVM cannot boot a stock kernel, which the
# driver's probe detects), a root filesystem built from busybox-static.
# Driven through build/kernel-tool and build/vm-tool (worker/kernel.c,
# worker/qemu.c, worker/agent.c) until vm.create/vm.exec/vm.delete exist.
#
# The kernel package is fetched once with apt-get download into
# $BANGER_TEST_CACHE (default /var/cache/banger-test) and imported once per
# agent build (kstate-<hash>/); a test that cannot have it, or QEMU, exits
# 77 (skip) saying why.  Every wait is bounded; every QEMU a test started is
# killed when the test ends, whatever happened.
#
# Vsock and Firecracker cannot be tested on this host (no vhost-vsock, no
# Firecracker): the agent's vsock listener is built but untested here.

VM_BIN=${BIN:-$ROOT/build} # BANGER_BIN_DIR (lib.sh) may point elsewhere
VMT=$VM_BIN/vm-tool
KT=$VM_BIN/kernel-tool
AGENT=$VM_BIN/banger-agent
VM_CACHE=${BANGER_TEST_CACHE:-/var/cache/banger-test}
VM_BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-120}

vm_skip() {
	echo "skip: $*"
	exit 77
}

vm_cleanup() {
	for f in "$T"/*/qemu.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f")
		kill -KILL -- "-$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	[ -f "$T/agent.pid" ] && kill -KILL "$(cat "$T/agent.pid")" 2>/dev/null
	return 0
}

vm_setup() {
	trap 'vm_cleanup; cleanup' EXIT
	[ -x "$VMT" ] && [ -x "$KT" ] && [ -x "$AGENT" ] ||
		fail "build/vm-tool, build/kernel-tool or build/banger-agent missing: run make"
	export VM_TOOL_LOG=info
}

vm_need_qemu() {
	vm_setup
	command -v qemu-system-x86_64 >/dev/null ||
		vm_skip "qemu-system-x86_64 is not installed (ci/deps/vm.txt)"
	command -v busybox >/dev/null || vm_skip "busybox-static is not installed"
	command -v mkfs.ext4 >/dev/null || vm_skip "mkfs.ext4 (e2fsprogs) is not installed"
}

# vm_deb: sets DEB to the cached Debian cloud kernel package (skip if none)
vm_deb() {
	DEB=$(sh "$ROOT/tests/vm/kernel-deb.sh" "$VM_CACHE" 2>"$T/kernel-deb.err") ||
		vm_skip "no Debian cloud kernel package: $(cat "$T/kernel-deb.err")"
}

# vm_kernel: sets KDIR to an imported kernel (vmlinuz, initrd) carrying the
# current agent; imported once per agent and kernel-tool build, cached
vm_kernel() {
	vm_deb
	sum=$(cat "$AGENT" "$KT" "$DEB" | sha256sum | cut -c1-16)
	st=$VM_CACHE/kstate-$sum
	if ! ls "$st"/kernels/*/metadata.json >/dev/null 2>&1; then
		rm -rf "$st.tmp.$$"
		"$KT" import --state "$st.tmp.$$" --agent "$AGENT" "$DEB" >"$T/import.out" 2>&1 ||
			{ cat "$T/import.out"; fail "kernel import failed"; }
		for old in "$VM_CACHE"/kstate-*; do
			case "$old" in "$st.tmp.$$") ;; *) rm -rf "$old" ;; esac
		done
		mv "$st.tmp.$$" "$st" 2>/dev/null || rm -rf "$st.tmp.$$"
	fi
	KDIR=$(ls -d "$st"/kernels/* | head -1)
	[ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/initrd" ] || fail "no kernel in $st"
}

# vm_rootfs NAME [noshell]: $T/NAME.ext4 from busybox-static
vm_rootfs() {
	sh "$ROOT/tests/vm/busybox-rootfs.sh" "$T/$1.ext4" ${2:-} >"$T/$1.mkfs" 2>&1 ||
		{ cat "$T/$1.mkfs"; fail "cannot build the test root filesystem"; }
}

# vm_start RUN [vm-tool start options...]: boot, wait for the agent; the
# start line (pid=... accel=... boot_s=...) is in $T/RUN.start
vm_start() {
	run=$1
	shift
	"$VMT" start --run-dir "$T/$run" --kernel-dir "$KDIR" --timeout "$VM_BOOT_TIMEOUT" \
		--name "$run" "$@" >"$T/$run.start" 2>"$T/$run.log" ||
		{
			cat "$T/$run.log" "$T/$run.start"
			tail -5 "$T/$run/console.log" 2>/dev/null
			fail "boot of $run failed"
		}
	echo "    $run: $(cat "$T/$run.start")"
}

# vx RUN [vm-tool exec options...]: run a command in the guest
vx() {
	run=$1
	shift
	"$VMT" exec --run-dir "$T/$run" "$@"
}

# vm_gone PID: the process no longer exists (a zombie awaiting its reaper
# counts as gone: it has exited)
vm_gone() {
	[ ! -d "/proc/$1" ] || grep -qE '^[0-9]+ \(.*\) [ZX] ' "/proc/$1/stat" 2>/dev/null
}

# wait_gone PID SECONDS
wait_gone() {
	i=0
	while ! vm_gone "$1"; do
		i=$((i + 1))
		[ $i -gt $(($2 * 10)) ] && return 1
		sleep 0.1
	done
	return 0
}

# ---- kernels ----

test_kernel_import_deb_and_dir() {
	vm_setup
	vm_deb
	must "$KT" import --state "$T/state" --agent "$AGENT" "$DEB" >"$T/out" 2>&1
	expect_contains "$(cat "$T/out")" "imported"
	name=$(ls "$T/state/kernels")
	ver=$name
	k=$T/state/kernels/$name
	[ -s "$k/vmlinuz" ] && [ -s "$k/initrd" ] && [ -s "$k/metadata.json" ] ||
		fail "incomplete kernel dir: $(ls "$k")"
	expect_eq "$(jq -r .modular "$k/metadata.json")" true modular
	expect_eq "$(jq -r .agent_sha256 "$k/metadata.json")" "$(sha256sum "$AGENT" | cut -d' ' -f1)" \
		agent_sha256
	expect_contains "$("$KT" list --state "$T/state")" "$name"
	# no staging left behind
	expect_eq "$(ls -A "$T/state/kernels" | grep -c '^\.')" 0 "leftover staging dirs"

	# the initramfs: the agent as /init, dev/console, the modules and their list
	(cd "$T" && cpio -it <"$k/initrd" 2>/dev/null) >"$T/cpio.list"
	for f in init dev/console lib/banger/modules.list \
		"lib/modules/$ver/virtio_blk.ko" "lib/modules/$ver/virtio_console.ko" \
		"lib/modules/$ver/virtio_mmio.ko"; do
		grep -qx "$f" "$T/cpio.list" || fail "initrd lacks $f"
	done
	(cd "$T" && cpio -i --to-stdout init <"$k/initrd" 2>/dev/null) | cmp - "$AGENT" ||
		fail "initrd's /init is not the agent"

	# module order: every dependency depmod finds comes first
	mkdir -p "$T/x"
	must dpkg-deb -x "$DEB" "$T/x"
	if command -v depmod >/dev/null; then
		must depmod -b "$T/x" "$ver"
		sed 's/-/_/g' "$T/x/lib/modules/$ver/modules.dep" >"$T/deps"
		order=$(jq -r '.modules[]' "$k/metadata.json")
		pos=0
		for m in $order; do
			pos=$((pos + 1))
			line=$(grep -E "/$m\.ko[^:]*:" "$T/deps" | head -1)
			[ -n "$line" ] || fail "depmod does not know $m"
			for dep in ${line#*:}; do
				d=$(basename "$dep" | sed 's/\.ko.*//')
				dpos=$(echo "$order" | grep -nx "$d" | cut -d: -f1)
				[ -n "$dpos" ] || fail "$m needs $d (depmod), which the initrd lacks"
				[ "$dpos" -lt "$pos" ] || fail "$d must load before $m"
			done
		done
	else
		echo "    depmod not installed: module order not cross-checked"
	fi

	# the same kernel from the extracted directory, under another name
	must "$KT" import --state "$T/state" --agent "$AGENT" --name fromdir "$T/x" >/dev/null
	expect_eq "$(jq -c .modules "$T/state/kernels/fromdir/metadata.json")" \
		"$(jq -c .modules "$k/metadata.json")" "modules from the directory"
	cmp "$T/state/kernels/fromdir/vmlinuz" "$k/vmlinuz" || fail "vmlinuz differs"

	# same name again: refused, then replaced on request
	out=$("$KT" import --state "$T/state" --agent "$AGENT" --name fromdir "$T/x" 2>&1) &&
		fail "a second import under the same name succeeded"
	expect_contains "$out" "exists"
	must "$KT" import --state "$T/state" --agent "$AGENT" --name fromdir --replace "$T/x" >/dev/null
	must "$KT" rm --state "$T/state" fromdir
	[ ! -e "$T/state/kernels/fromdir" ] || fail "kernel rm left the directory"
	out=$("$KT" rm --state "$T/state" fromdir 2>&1) && fail "removing a missing kernel succeeded"
	expect_contains "$out" "no kernel named 'fromdir'"
	expect_eq "$("$KT" list --state "$T/state" | wc -l)" 1 "kernels left"
}

test_kernel_import_bare_and_refusals() {
	vm_setup
	vm_deb
	mkdir -p "$T/x"
	must dpkg-deb -x "$DEB" "$T/x"
	img=$(ls "$T"/x/boot/vmlinuz-*)
	# a bare image (bzImage; drivers assumed built in): agent only
	must "$KT" import --state "$T/state" --agent "$AGENT" "$img" >/dev/null
	name=$(ls "$T/state/kernels")
	expect_eq "$name" "${img##*/vmlinuz-}" "name from the bzImage header"
	expect_eq "$(jq -r .modular "$T/state/kernels/$name/metadata.json")" false modular
	(cd "$T" && cpio -it <"$T/state/kernels/$name/initrd" 2>/dev/null) >"$T/cpio.list"
	grep -qx init "$T/cpio.list" || fail "bare initrd lacks init"
	grep -q '\.ko$' "$T/cpio.list" && fail "bare initrd carries modules"

	# refusals, each with a reason a person can act on, nothing stored
	head -c 65536 /dev/urandom >"$T/garbage"
	out=$("$KT" import --state "$T/state" --agent "$AGENT" "$T/garbage" 2>&1) &&
		fail "garbage imported"
	expect_contains "$out" "is not a Debian kernel package"
	out=$("$KT" import --state "$T/state" --agent "$AGENT" "$T/nonexistent" 2>&1) &&
		fail "missing file imported"
	expect_contains "$out" "No such file"
	echo 2.0 >"$T/debian-binary"
	(cd "$T" && ar rc notkernel.deb debian-binary) || fail "ar failed"
	out=$("$KT" import --state "$T/state" --agent "$AGENT" "$T/notkernel.deb" 2>&1) &&
		fail "a package without data imported"
	expect_contains "$out" "no data.tar"
	out=$("$KT" import --state "$T/state" --agent "$AGENT" --name ../evil "$img" 2>&1) &&
		fail "a bad name was accepted"
	expect_contains "$out" "is not 1-64 of"
	rm -rf "$T/x/lib/modules"/*/kernel/drivers/block
	out=$("$KT" import --state "$T/state" --agent "$AGENT" --name nodisk "$T/x" 2>&1) &&
		fail "a kernel without virtio_blk imported"
	expect_contains "$out" "no 'virtio_blk' driver"
	out=$("$KT" import --state "$T/state" --agent "$T/nonexistent" --name x "$img" 2>&1) &&
		fail "import without an agent succeeded"
	expect_contains "$out" "cannot read the agent"
	out=$("$KT" import --state "$T/state" --agent /bin/sh --name x "$img" 2>&1) &&
		fail "a dynamically linked agent was accepted"
	expect_contains "$out" "dynamically linked"
	expect_eq "$(ls -A "$T/state/kernels")" "$name" "what the refusals left"
}

# ---- the agent alone (no VM: its test mode on a Unix socket) ----

test_agent_local_protocol() {
	vm_setup
	"$AGENT" --listen "$T/a.sock" 2>"$T/agent.log" &
	echo $! >"$T/agent.pid"
	i=0
	while [ ! -S "$T/a.sock" ]; do
		i=$((i + 1))
		[ $i -gt 50 ] && fail "the agent did not listen"
		sleep 0.1
	done
	S="--sock $T/a.sock"
	out=$("$VMT" exec $S --sh 'echo hello; echo oops >&2; exit 3' 2>"$T/err")
	expect_eq "$?" 3 "exit code"
	expect_eq "$out" hello stdout
	expect_contains "$(cat "$T/err")" oops
	out=$("$VMT" exec $S -- printf '%s|' 'a b' '$HOME' '*')
	expect_eq "$out" 'a b|$HOME|*|' "argv passes through untouched"
	out=$("$VMT" exec $S --env A=1 --env HOME=/x --cwd "$T" --sh 'echo $A $HOME $(pwd)')
	expect_eq "$out" "1 /x $T" "env and cwd"
	printf 'line one\nline two\n' >"$T/in"
	out=$("$VMT" exec $S --stdin-file "$T/in" -- wc -l)
	expect_eq "$out" 2 "stdin"
	out=$("$VMT" exec $S -- /no/such/program 2>&1)
	expect_eq "$?" 125 "exit code for a program that cannot run"
	expect_contains "$out" "cannot run '/no/such/program'"
	"$VMT" exec $S --signal-after 300:15 --sh 'sleep 30 & sleep 30' >/dev/null 2>&1
	expect_eq "$?" 143 "SIGTERM to the group"
	"$VMT" exec $S --timeout 0.5 -- sleep 30 >/dev/null 2>&1
	expect_eq "$?" 124 "timeout"
	pgrep -f "sleep 30" -P "$(cat "$T/agent.pid")" && fail "the group survived"
	must "$VMT" parallel $S --n 16 --sh 'sleep 0.5; echo out-$I; exit $I' >"$T/par"
	expect_contains "$(cat "$T/par")" "16 of 16 ok"
	sum=$("$VMT" exec $S --sh 'head -c 20971520 /dev/urandom | tee '"$T"'/big | sha256sum >&2; ' \
		2>&1 >/dev/null | cut -d' ' -f1)
	got=$("$VMT" exec $S -- cat "$T/big" | sha256sum | cut -d' ' -f1)
	expect_eq "$got" "$sum" "20 MB of output"
	for kind in random badmagic toolong badexec badsync hosttype truncated; do
		"$VMT" garbage $S --kind "$kind" >"$T/g.$kind" || fail "garbage $kind"
		out=$("$VMT" exec $S -- echo alive) || fail "agent dead after garbage '$kind'"
		expect_eq "$out" alive "after garbage '$kind'"
	done
	expect_contains "$(cat "$T/g.badexec")" "argument contains a NUL byte"
	expect_contains "$(cat "$T/g.toolong")" "longer than its type allows"
	kill -0 "$(cat "$T/agent.pid")" || fail "agent died"
}

# ---- VMs ----

test_vm_boot_exec_stop() {
	vm_need_qemu
	vm_kernel
	vm_rootfs root
	# auto: KVM only if it can boot the guest (the probe), else TCG with one
	# clear line in the log
	vm_start vm --rootfs "$T/root.ext4" --accel auto --probe-cache "$T/probe"
	accel=$(sed -n 's/.*accel=\([a-z]*\).*/\1/p' "$T/vm.start")
	if [ "$accel" = tcg ] && [ -e /dev/kvm ]; then
		expect_contains "$(cat "$T/vm.log")" "kvm cannot boot guests on this host"
		expect_eq "$(grep -c 'kvm cannot boot' "$T/vm.log")" 1 "fallback log lines"
	fi
	out=$(vx vm --sh 'echo hello; uname -r; exit 3')
	expect_eq "$?" 3 "exit code"
	expect_eq "$out" "hello
$(jq -r .version "$KDIR/metadata.json")" "output"
	out=$(vx vm -- /bin/busybox printf '%s|' 'a b' '$HOME')
	expect_eq "$out" 'a b|$HOME|' "argv"
	out=$(vx vm -- /bin/nope 2>&1)
	expect_eq "$?" 125 "missing program"
	expect_contains "$out" "cannot run '/bin/nope'"
	out=$(vx vm --env GREETING=hi --cwd /tmp --sh 'echo $GREETING $(pwd); cat /proc/1/comm')
	expect_eq "$out" "hi /tmp
init" "env, cwd, PID 1"
	# orphans are reaped by PID 1: no zombies after their parents exit
	vx vm --sh '(sleep 0.2 &) ; (true &) ; exit 0' || fail "orphans"
	sleep 1
	z=$(vx vm --sh 'for s in /proc/[0-9]*/stat; do read -r l <$s; set -- $l; echo $3; done | grep -c Z')
	expect_eq "$z" 0 "zombies"
	expect_eq "$("$VMT" status --run-dir "$T/vm")" running "QMP status"
	pid=$(cat "$T/vm/qemu.pid")
	out=$("$VMT" stop --run-dir "$T/vm" --grace 30) || fail "stop failed: $out"
	expect_contains "$out" "graceful=1"
	wait_gone "$pid" 10 || fail "qemu $pid still there after stop"
	expect_contains "$(cat "$T/vm/console.log")" "power-off requested"
}

test_vm_output_concurrency_signals() {
	vm_need_qemu
	vm_kernel
	vm_rootfs root
	vm_start vm --rootfs "$T/root.ext4" --accel tcg --vcpus 2
	# 10 MB of output: every byte arrives, in order
	sum=$(vx vm --sh 'head -c 10485760 /dev/urandom >/tmp/big; sha256sum /tmp/big >&2' 2>&1 |
		cut -d' ' -f1)
	got=$(vx vm -- cat /tmp/big | tee "$T/big" | sha256sum | cut -d' ' -f1)
	expect_eq "$(stat -c %s "$T/big")" 10485760 "bytes received"
	expect_eq "$got" "$sum" "sha256 of 10 MB of guest output"
	# many commands at once over one connection
	out=$("$VMT" parallel --run-dir "$T/vm" --n 8 --sh 'sleep 2; echo out-$I; exit $I') ||
		fail "parallel: $out"
	expect_contains "$out" "8 of 8 ok"
	secs=$(echo "$out" | sed -n 's/.* in \([0-9.]*\) s/\1/p')
	[ "$(echo "$secs < 16" | bc)" = 1 ] || fail "8 x 2 s commands took $secs s: not concurrent"
	# signals go to the command's process group
	vx vm --signal-after 1500:15 --sh 'sleep 60 & sleep 60; echo not-reached' >"$T/sig" 2>&1
	expect_eq "$?" 143 "killed by SIGTERM"
	[ -s "$T/sig" ] && fail "output after the signal: $(cat "$T/sig")"
	left=$(vx vm --sh 'ps -o comm | grep -c "^sleep" || true')
	expect_eq "$left" 0 "sleeps left in the group"
	vx vm --signal-after 1000:2 -- /bin/sleep 60
	expect_eq "$?" 130 "SIGINT to an argv command"
	# a timeout kills the command and says so
	out=$(vx vm --timeout 1 -- sleep 60 2>&1)
	expect_eq "$?" 124 "timeout"
	expect_contains "$out" "timed out"
	# stdin
	seq 1 1000 >"$T/in"
	out=$(vx vm --stdin-file "$T/in" --sh 'wc -l; echo done')
	expect_eq "$out" "1000
done" "stdin"
	# the host going away mid-command (bangerd killed): the agent kills the
	# command, since nobody can collect its output or status any more
	"$VMT" exec --run-dir "$T/vm" -- /bin/sleep 300 >/dev/null 2>&1 &
	hp=$!
	sleep 2
	kill -KILL "$hp"
	wait "$hp" 2>/dev/null
	i=0
	while [ "$(vx vm --sh 'ps -o comm | grep -c "^sleep" || true')" != 0 ]; do
		i=$((i + 1))
		[ $i -gt 20 ] && fail "the command of a vanished host is still running"
		sleep 0.5
	done
	# killing QEMU (no agent power-off): gone, nothing left
	pid=$(cat "$T/vm/qemu.pid")
	must "$VMT" kill --run-dir "$T/vm" >/dev/null
	wait_gone "$pid" 10 || fail "qemu $pid survived kill"
	out=$(vx vm --connect-timeout 2 -- true 2>&1) && fail "exec on a killed VM succeeded"
	expect_contains "$out" "connect"
}

test_vm_no_shell_image_and_network() {
	vm_need_qemu
	vm_kernel
	vm_rootfs bare noshell
	# an image with no shell and no init: argv works, a shell line says why
	# not; QEMU's user-mode NIC (no root, no tap) checks banger.ip; and the
	# q35 machine (virtio over PCI) instead of microvm
	vm_start vm --rootfs "$T/bare.ext4" --accel tcg --machine q35 --user-net \
		--ip 10.0.2.15/24,10.0.2.2 --append "banger.hostname=box1"
	expect_contains "$(vx vm -- /bin/busybox cat /proc/modules)" "virtio_pci"
	out=$(vx vm -- /bin/busybox ip -4 addr show eth0)
	expect_contains "$out" "inet 10.0.2.15/24"
	out=$(vx vm -- /bin/busybox ip route)
	expect_contains "$out" "default via 10.0.2.2 dev eth0"
	expect_eq "$(vx vm -- /bin/busybox hostname)" box1 hostname
	vx vm -- /bin/busybox ping -c 1 -W 5 10.0.2.2 >"$T/ping" 2>&1 ||
		fail "ping the user-mode gateway: $(cat "$T/ping")"
	out=$(vx vm --sh 'echo hi' 2>&1)
	expect_eq "$?" 125 "a shell line without a shell"
	expect_contains "$out" "the image has no shell"
	must "$VMT" stop --run-dir "$T/vm" >/dev/null
}

test_vm_never_boots() {
	vm_need_qemu
	vm_kernel
	vm_rootfs root
	# a kernel QEMU cannot load: it exits, and the error says what it said
	head -c 1048576 /dev/urandom >"$T/garbage.vmlinuz"
	start=$(date +%s)
	out=$("$VMT" start --run-dir "$T/g" --kernel "$T/garbage.vmlinuz" --initrd "$KDIR/initrd" \
		--rootfs "$T/root.ext4" --accel tcg --timeout 60 2>&1) && fail "garbage kernel booted"
	expect_contains "$out" "qemu exited with status 1 before the guest's agent answered"
	[ $(($(date +%s) - start)) -lt 30 ] || fail "a dead qemu took the whole timeout"
	[ -f "$T/g/qemu.pid" ] && ! vm_gone "$(cat "$T/g/qemu.pid")" && fail "qemu left behind"
	# a guest that boots and never answers: the bounded wait, then no qemu
	sh "$ROOT/tests/vm/hang-initrd.sh" "$T/hang.cpio" || fail "hang initrd"
	start=$(date +%s)
	out=$("$VMT" start --run-dir "$T/h" --kernel "$KDIR/vmlinuz" --initrd "$T/hang.cpio" \
		--accel tcg --timeout 10 2>&1) && fail "a guest without agent answered"
	el=$(($(date +%s) - start))
	expect_contains "$out" "the guest's agent did not answer within 10 s"
	expect_contains "$out" "never answering" # the console tail in the error
	[ $el -ge 10 ] && [ $el -lt 40 ] || fail "the bounded wait took $el s"
	pid=$(cat "$T/h/qemu.pid")
	wait_gone "$pid" 10 || fail "qemu $pid left running after the failed boot"
}

test_vm_agent_survives_garbage() {
	vm_need_qemu
	vm_kernel
	vm_rootfs root
	vm_start vm --rootfs "$T/root.ext4" --accel tcg
	for kind in random badmagic toolong badexec badsync hosttype truncated; do
		"$VMT" garbage --run-dir "$T/vm" --kind "$kind" >"$T/g.$kind" 2>&1 ||
			fail "garbage $kind: $(cat "$T/g.$kind")"
		out=$(vx vm -- /bin/echo alive 2>&1) || fail "after garbage '$kind': $out"
		expect_eq "$out" alive "exec after garbage '$kind'"
	done
	expect_contains "$(cat "$T/g.random")" "bad frame"
	expect_contains "$(cat "$T/g.badexec")" "exec carries both argv and a shell line"
	grep -q "Kernel panic\|Attempted to kill init" "$T/vm/console.log" && fail "the guest panicked"
	expect_contains "$(cat "$T/vm/console.log")" "bad frame from the host"
	expect_eq "$("$VMT" status --run-dir "$T/vm")" running "QMP status"
	must "$VMT" stop --run-dir "$T/vm" >/dev/null
}
