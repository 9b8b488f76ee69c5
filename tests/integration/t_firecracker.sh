# t_firecracker.sh: the Firecracker driver (worker/firecracker.c) through
# the driver interface (worker/hv.h, build/hv-tool), against a FAKE
# Firecracker: tests/tools/fake_firecracker.py.  No real Firecracker can run
# on this host (Debian does not package it and the host cannot download
# it), so every test here is named fake: what they show is that the driver
# speaks the published API (each request checked against the swagger's
# required fields and types by the fake, and recorded), reaches the agent
# through hybrid vsock the way docs/vsock.md describes, stops, adopts and
# reports errors; not that a real Firecracker boots banger's guest.  The
# fake's "guest" is build/banger-agent in its --listen test mode.

HVT=${BIN:-$ROOT/build}/hv-tool
FAKE=$ROOT/tests/tools/fake_firecracker.py
FAKE_AGENT=${BIN:-$ROOT/build}/banger-agent

fc_cleanup() {
	for f in "$T"/*/firecracker.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f")
		kill -KILL -- "-$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
	pkill -KILL -f "$T/" 2>/dev/null
	return 0
}

# fc_setup: a PATH whose firecracker is the fake, a kernel, an initramfs and
# a sparse 32 MiB raw root disk (contents never read by the fake)
fc_setup() {
	trap 'fc_cleanup; cleanup' EXIT
	[ -x "$HVT" ] && [ -x "$FAKE_AGENT" ] || fail "build/hv-tool or build/banger-agent missing: run make"
	command -v python3 >/dev/null || { echo "skip: python3 is not installed"; exit 77; }
	mkdir -p "$T/bin"
	ln -sf "$FAKE" "$T/bin/firecracker"
	export PATH="$T/bin:$PATH" FAKE_FC_AGENT="$FAKE_AGENT"
	echo kernel >"$T/vmlinux"
	echo initrd >"$T/initrd"
	truncate -s 32M "$T/root.raw"
	truncate -s 8M "$T/ws.raw"
}

# fc_start RUN [hv-tool start options...]
fc_start() {
	run=$1
	shift
	"$HVT" start --run-dir "$T/$run" --kernel "$T/vmlinux" --initrd "$T/initrd" \
		--name "$run" --timeout 20 "$@" >"$T/$run.start" 2>"$T/$run.err" ||
		{
			cat "$T/$run.err" "$T/$run/firecracker.log" 2>/dev/null
			fail "start of $run failed"
		}
	echo "    $run: $(cat "$T/$run.start")"
}

# req RUN PATH: the body of the recorded PUT of PATH (compact JSON)
req() {
	jq -c --arg p "$2" 'select(.method == "PUT" and .path == $p) | .body' "$T/$1/requests.jsonl"
}

gone() {
	[ ! -d "/proc/$1" ] || grep -qE '^[0-9]+ \(.*\) [ZX] ' "/proc/$1/stat" 2>/dev/null
}

wait_gone() {
	i=0
	while ! gone "$1"; do
		i=$((i + 1))
		[ $i -gt $(($2 * 10)) ] && return 1
		sleep 0.1
	done
}

# nothing of run RUN left: no process naming its directory
nothing_left() {
	pgrep -f "$T/$1/" >/dev/null && fail "processes of $1 left: $(pgrep -af "$T/$1/")"
	return 0
}

test_fake_firecracker_start_exec_stop() {
	fc_setup
	fc_start vm --rootfs "$T/root.raw" --disk "$T/ws.raw" --tap bg0000002a \
		--mac 52:54:00:00:00:2a --ip 10.9.0.2/24,10.9.0.1 --vcpus 2 --mem 384 \
		--append banger.hostname=vm
	expect_contains "$(cat "$T/vm.start")" "driver=firecracker accel=kvm"
	pid=$(cat "$T/vm/firecracker.pid")
	out=$("$HVT" exec --run-dir "$T/vm" --sh 'echo hello; echo oops >&2; exit 3' 2>"$T/err")
	expect_eq "$?" 3 "exit code through vsock"
	expect_eq "$out" hello stdout
	expect_contains "$(cat "$T/err")" oops
	out=$("$HVT" exec --run-dir "$T/vm" -- printf '%s|' 'a b' '$HOME')
	expect_eq "$out" 'a b|$HOME|' "argv"

	# the requests, in order, with the bodies the swagger asks for
	paths=$(jq -r 'select(.method == "PUT") | .path' "$T/vm/requests.jsonl" | tr '\n' ' ')
	expect_eq "$paths" "/logger /machine-config /boot-source /drives/rootfs /drives/workspace /network-interfaces/eth0 /vsock /actions " "PUT order"
	expect_eq "$(req vm /machine-config)" '{"mem_size_mib":384,"smt":false,"vcpu_count":2}' machine-config
	expect_eq "$(req vm /drives/rootfs)" "{\"drive_id\":\"rootfs\",\"is_read_only\":false,\"is_root_device\":false,\"path_on_host\":\"$T/root.raw\"}" "rootfs drive"
	expect_eq "$(req vm /drives/workspace | jq -r .path_on_host)" "$T/ws.raw" "workspace drive"
	expect_eq "$(req vm /network-interfaces/eth0)" '{"guest_mac":"52:54:00:00:00:2a","host_dev_name":"bg0000002a","iface_id":"eth0"}' nic
	expect_eq "$(req vm /vsock)" "{\"guest_cid\":3,\"uds_path\":\"$T/vm/vsock.sock\"}" vsock
	expect_eq "$(req vm /actions)" '{"action_type":"InstanceStart"}' start
	boot=$(req vm /boot-source)
	expect_eq "$(echo "$boot" | jq -r .kernel_image_path)" "$T/vmlinux" kernel
	expect_eq "$(echo "$boot" | jq -r .initrd_path)" "$T/initrd" initrd
	args=$(echo "$boot" | jq -r .boot_args)
	for p in console=ttyS0 banger.port=none banger.root=/dev/vda banger.ip=10.9.0.2/24,10.9.0.1 banger.hostname=vm; do
		expect_contains "$args" "$p" "boot_args"
	done
	expect_contains "$(cat "$T/vm/console.log")" "fake guest: booting"

	out=$("$HVT" stop --run-dir "$T/vm" --grace 10) || fail "stop failed: $out"
	expect_eq "$out" "graceful=1" "power-off through the agent"
	wait_gone "$pid" 5 || fail "the fake ($pid) still runs after stop"
	nothing_left vm
	# stopping again: nothing to adopt, said clearly
	out=$("$HVT" stop --run-dir "$T/vm" 2>&1) && fail "stop of a stopped vm succeeded"
	expect_contains "$out" "is not running"
}

test_fake_firecracker_adopt_after_restart() {
	fc_setup
	fc_start vm --rootfs "$T/root.raw"
	pid=$(cat "$T/vm/firecracker.pid")
	# every hv-tool command is a new process: this is bangerd after a restart
	expect_eq "$("$HVT" adopt --run-dir "$T/vm")" "pid=$pid driver=firecracker running=1" adopt
	out=$("$HVT" exec --run-dir "$T/vm" --sh 'echo again') || fail "exec after adopt"
	expect_eq "$out" again "exec after adopt"
	# a pidfile naming someone else's process (pid reuse) is refused
	sleep 30 &
	other=$!
	cp "$T/vm/firecracker.pid" "$T/pid.real"
	echo "$other" >"$T/vm/firecracker.pid"
	out=$("$HVT" adopt --run-dir "$T/vm" 2>&1) && fail "adopted a stranger"
	expect_contains "$out" "pid $other is not the firecracker of '$T/vm' (pid reused)"
	kill "$other"
	cp "$T/pid.real" "$T/vm/firecracker.pid"
	# kill: the whole process group (the fake and its agent) goes
	must "$HVT" kill --run-dir "$T/vm"
	wait_gone "$pid" 5 || fail "still running after kill"
	sleep 0.2
	nothing_left vm
	out=$("$HVT" adopt --run-dir "$T/vm" 2>&1) && fail "adopted a dead vm"
	expect_contains "$out" "firecracker (pid $pid) of '$T/vm' is not running"
}

test_fake_firecracker_api_error_propagates() {
	fc_setup
	export FAKE_FC_MODE=reject:/machine-config
	"$HVT" start --run-dir "$T/vm" --kernel "$T/vmlinux" --initrd "$T/initrd" --timeout 10 \
		>"$T/out" 2>"$T/err" && fail "start succeeded against a refusing api"
	err=$(cat "$T/err")
	expect_contains "$err" "firecracker refused PUT /machine-config (HTTP 400): fake: /machine-config refused by the test"
	# the fake checks bodies the way Firecracker does: a missing file is its 400 too
	unset FAKE_FC_MODE
	"$HVT" start --run-dir "$T/vm2" --kernel "$T/vmlinux" --initrd "$T/initrd" \
		--rootfs "$T/root.raw" --timeout 10 >"$T/out" 2>"$T/err" || fail "second start: $(cat "$T/err")"
	rm "$T/root.raw"
	"$HVT" start --run-dir "$T/vm3" --kernel "$T/vmlinux" --initrd "$T/initrd" \
		--rootfs "$T/root.raw" --timeout 10 >"$T/out" 2>"$T/err" && fail "start without its disk"
	expect_contains "$(cat "$T/err")" "disk '$T/root.raw' not found"
	must "$HVT" kill --run-dir "$T/vm2"
	sleep 0.3
	nothing_left vm
	nothing_left vm2
	nothing_left vm3
	[ -f "$T/vm/firecracker.pid" ] && fail "pidfile left after a failed start"
	return 0
}

test_fake_firecracker_exits_at_start() {
	fc_setup
	export FAKE_FC_MODE=exit-at-start
	t0=$(date +%s)
	"$HVT" start --run-dir "$T/vm" --kernel "$T/vmlinux" --initrd "$T/initrd" --timeout 30 \
		>"$T/out" 2>"$T/err" && fail "start succeeded"
	t1=$(date +%s)
	[ $((t1 - t0)) -le 5 ] || fail "the failure took $((t1 - t0)) s (the exit must end the wait)"
	expect_contains "$(cat "$T/err")" "firecracker exited at start with status 1"
	expect_contains "$(cat "$T/err")" "Error creating KVM object"
	# no firecracker at all: named
	PATH=/usr/bin:/bin "$HVT" start --run-dir "$T/vm2" --kernel "$T/vmlinux" --initrd "$T/initrd" \
		>"$T/out" 2>"$T/err" && fail "start without firecracker succeeded"
	expect_contains "$(cat "$T/err")" "cannot run 'firecracker': not found in PATH"
	nothing_left vm
}

test_fake_firecracker_stop_by_ctrl_alt_del() {
	fc_setup
	fc_start vm
	pid=$(cat "$T/vm/firecracker.pid")
	# the guest's agent is gone but the VMM runs: stop falls back to
	# PUT /actions SendCtrlAltDel (reboot=k: Firecracker exits)
	pkill -STOP -f "$T/vm/fake-agent.sock"
	out=$("$HVT" stop --run-dir "$T/vm" --grace 1 2>"$T/err") || fail "stop: $(cat "$T/err")"
	expect_eq "$out" "graceful=0" "not graceful"
	wait_gone "$pid" 5 || fail "still running"
	expect_eq "$(jq -c 'select(.path == "/actions") | .body.action_type' "$T/vm/requests.jsonl" | tr '\n' ' ')" \
		'"InstanceStart" "SendCtrlAltDel" ' actions
	pkill -KILL -f "$T/vm/fake-agent.sock"
	return 0
}

test_cowdisk_sparse_copy_tool() {
	fc_setup
	python3 -c "
f = open('$T/base.raw', 'wb'); f.truncate(64 << 20)
f.seek(0); f.write(b'A' * 8192); f.seek(40 << 20); f.write(b'B' * 4096); f.close()"
	before=$(sha256sum <"$T/base.raw")
	out=$("$HVT" cowdisk --base "$T/base.raw" --dest "$T/copy.raw") || fail "cowdisk: $out"
	case "$out" in method=reflink*|method=sparse*) ;; *) fail "method: $out" ;; esac
	cmp "$T/base.raw" "$T/copy.raw" || fail "copy differs"
	blocks=$(stat -c %b "$T/copy.raw")
	[ "$blocks" -lt 4096 ] || fail "holes were filled: $blocks blocks for 12 KiB of data"
	echo X | dd of="$T/copy.raw" conv=notrunc status=none
	expect_eq "$(sha256sum <"$T/base.raw")" "$before" "base unchanged"
	out=$("$HVT" cowdisk --base "$T/base.raw" --dest "$T/copy.raw" 2>&1) && fail "overwrote a disk"
	expect_contains "$out" "already exists"
}

test_fake_firecracker_doctor() {
	fc_setup
	# the doctor of a bangerd whose PATH has the fake and a stand-in jailer
	# (it only checks that they are executables and that kvm is usable)
	ln -sf /bin/true "$T/bin/jailer"
	start_daemon
	b doctor >"$T/doctor.out" 2>&1
	line=$(grep '^  firecracker' "$T/doctor.out")
	expect_contains "$line" "$FAKE"
	expect_contains "$line" "jailer /usr/bin/true"
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		expect_contains "$line" "firecracker  ok"
		expect_contains "$line" "vm.create does not choose this driver yet"
	else
		expect_contains "$line" "firecracker  no"
		expect_contains "$line" "/dev/kvm is not usable by this user"
	fi
	stop_daemon
	# without the jailer: not usable, saying so
	rm "$T/bin/jailer"
	command -v jailer >/dev/null && return 0 # a real one on this host
	start_daemon
	b doctor >"$T/doctor.out" 2>&1
	line=$(grep '^  firecracker' "$T/doctor.out")
	expect_contains "$line" "firecracker  no"
	expect_contains "$line" "no jailer in PATH"
	stop_daemon
}
