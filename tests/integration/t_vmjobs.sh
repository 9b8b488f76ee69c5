# t_vmjobs.sh: the VM job kinds (vm.create, vm.exec, vm.delete) end to end,
# through the real CLI, with everything real: bangerd (test build) running
# as an unprivileged user (uid $VJ_OWNER), banger-helper as root making the
# taps, QEMU (TCG on this host) booting the Debian cloud kernel with
# banger's initramfs and agent, on images pulled by image.pull from a real
# docker-registry.  That proves the privilege split: bangerd never has
# root; the taps come from the helper.
#
# Isolation: each test makes a network namespace; the helper, bangerd (and
# so QEMU) and the registry all run in it, so the bridge, the taps and the
# guests' addresses never touch the host's network.  bangerd also runs in a
# private mount namespace where /dev/net/tun is a 0666 node made by the
# test: the host's is 0600 (root only), and QEMU, running as bangerd's user,
# opens the helper's taps through it (docs/privileges.md).
#
# The kernel package comes from tests/vm/kernel-deb.sh (cached); the kernel
# imported from it (with the current agent) is cached too.  A test that
# cannot have root, namespaces, QEMU, the package or the registry tools
# exits 77 saying why.  Every wait is bounded.  tests/vmjobs/ holds the
# pieces the tests share.

VJ_BIN=${BIN:-$ROOT/build}
VJ_OWNER=4242
VJ_CACHE=${BANGER_TEST_CACHE:-/var/cache/banger-test}
VJ_BOOT=${VJ_BOOT:-90s} # boot_timeout in specs: TCG boots take 3-7 s here, more under load
. "$ROOT/tests/vmjobs/lib.sh"

# ---- the spec of the issue --------------------------------------------------

test_vmjobs_end_to_end_unprivileged() {
	vj_setup
	vj_start
	vj_kernel_import
	spec e2e.yaml <<EOF
jobs:
  pull: { kind: image.pull, ref: $REG_ADDR/ci/busybox:1 }
  box:  { kind: vm.create, needs: [pull], image: $REG_ADDR/ci/busybox:1, vcpus: 1, memory: 256M }
  test: { kind: vm.exec, needs: [box], vm: box, run: "echo hello; uname -r; exit 3", timeout: 5m }
  done: { kind: vm.delete, needs: [test], vm: box, when: always }
EOF
	t0=$(date +%s.%N)
	b job submit "$T/e2e.yaml" --follow >"$T/follow.out" 2>&1
	st=$?
	t1=$(date +%s.%N)
	expect_eq $st 3 "exit status of submit --follow (output: $(tail -5 "$T/follow.out"))"
	grep -qx hello "$T/follow.out" || fail "no 'hello' in the followed output"
	grep -qx "$VJ_KVER" "$T/follow.out" || fail "no guest kernel release '$VJ_KVER' in the output"
	expect_eq "$(jfield 2 state)" succeeded "vm.create"
	expect_eq "$(jfield 3 state)" failed "vm.exec"
	expect_eq "$(jfield 3 exit_code)" 3 "vm.exec exit code"
	expect_eq "$(jfield 4 state)" succeeded "vm.delete"
	expect_contains "$(jfield 3 error)" "exited with status 3"
	# streamed: the stdout events come before the job's final state event
	b job tail 3 --json >"$T/tail3.json"
	jq -s -e '
		(map(select(.stream == "stdout")) | length > 0) and
		((map(select(.stream == "stdout")) | last | .seq) <
		 (map(select(.stream == "state" and .data.state == "failed")) | first | .seq))' \
		"$T/tail3.json" >/dev/null || fail "stdout events do not precede the final state: $(cat "$T/tail3.json")"
	expect_eq "$(jq -s -r 'map(select(.stream=="stdout") | .data) | join("")' "$T/tail3.json")" \
		"hello
$VJ_KVER" "stdout of the exec job"
	# the VM had a NIC on the helper's tap, and an address from net_range
	expect_eq "$(jfield 2 result.address)" 10.213.0.2 "the vm's address"
	expect_eq "$(jfield 2 result.accel)" tcg "accelerator (bangerd's user cannot open /dev/kvm)"
	vm=$(b vm list --all --json | jq -c '.vms[0]')
	expect_eq "$(echo "$vm" | jq -r .state)" deleted "vm row after vm.delete"
	expect_eq "$(echo "$vm" | jq -r .deleted_by)" 4 "deleted_by"
	expect_eq "$(echo "$vm" | jq -r .tap)" bg00000002 "tap named from the vm id"
	# undo records: the tap step's names the helper call that undoes it
	b oplog 2 --json | jq -e '.attempts[0].steps[3].undo.helper == "net.tap.create" and
		.attempts[0].steps[3].undo.params.tap == "bg00000002"' >/dev/null ||
		fail "tap step's undo record: $(b oplog 2 --json | jq -c '.attempts[0].steps[3].undo')"
	vj_nothing_left
	# bangerd ran as the owner, and asked the root helper for the tap
	expect_eq "$(stat -c %u "$T/state/queue.db")" $VJ_OWNER "owner of the queue database"
	grep '"method":"net.tap.create"' "$T/helper.log" | grep -q "\"uid\":$VJ_OWNER" ||
		fail "the helper made no tap for uid $VJ_OWNER: $(cat "$T/helper.log")"
	grep '"method":"net.tap.remove"' "$T/helper.log" | grep -q '"outcome":"ok"' ||
		fail "the helper removed no tap"
	grep -q 'no usable /dev/kvm (Permission denied)): using tcg' "$T/daemon.log" ||
		fail "no line saying why tcg is used"
	echo "    end to end: $(echo "$t1 - $t0" | bc) s (pull, boot, exec, power-off); boot: $(jfield 2 result.wait_ms) ms to agent, guest uptime $(jfield 2 result.guest_uptime_ms) ms"
}

# ---- names, networking, the CLI -----------------------------------------------

test_vmjobs_cli_network_and_names() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	spec web.yaml <<EOF
jobs:
  web: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vm_name: web, boot_timeout: $VJ_BOOT, memory: 192M, vcpus: 2 }
  net: { kind: vm.exec, needs: [web], vm: web, run: "ping -c 1 -W 5 10.213.0.1 && hostname && nproc && cat /etc/banger" }
EOF
	b job submit "$T/web.yaml" --follow >"$T/web.out" 2>&1 || fail "create + ping: $(tail -20 "$T/web.out")"
	grep -q '1 packets received' "$T/web.out" || fail "the guest cannot ping the bridge: $(cat "$T/web.out")"
	grep -qx web "$T/web.out" || fail "hostname is not the vm name"
	grep -qx 2 "$T/web.out" || fail "nproc is not 2"
	grep -qx hello "$T/web.out" || fail "the image's /etc/banger is not in the guest"
	# the host sees the guest through the bridge, too
	vj_ns busybox ping -c 1 -W 5 10.213.0.2 >/dev/null || fail "the host cannot ping the guest"
	expect_contains "$(b vm list)" "web"
	expect_eq "$(b vm show web --json | jq -r '.state + " " + .address + " " + (.memory|tostring)')" \
		"running 10.213.0.2 201326592" "vm show"
	# a second VM may not take the name
	spec dup.yaml <<EOF
jobs:
  again: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vm_name: web, max_attempts: 1 }
EOF
	b job submit "$T/dup.yaml" --follow >/dev/null 2>&1
	expect_contains "$(jfield "$(vj_last_job)" error)" "a vm named 'web' already exists"
	# its image is its root disk's base: not removable while it exists
	b image rm "$REG_ADDR/ci/busybox:1" >"$T/o" 2>&1
	expect_eq $? 1 "image rm of an image in use"
	expect_contains "$(cat "$T/o")" "is the root disk of 1 vm"
	expect_eq "$(b image list --json | jq -r '.images[0].used_by[0]')" web "image used_by"
	# so is its kernel
	expect_contains "$(b kernel list)" "$VJ_KVER"
	b kernel rm "$VJ_KVER" >"$T/o" 2>&1
	expect_eq $? 1 "kernel rm of a kernel in use"
	expect_contains "$(cat "$T/o")" "is in use by 1 vm ('web')"
	# banger vm exec: argv, exit codes, stderr, env, cwd
	out=$(b vm exec web -- echo from-argv)
	expect_eq "$?$out" "0from-argv" "vm exec output and status"
	b vm exec web -- sh -c 'echo to-stderr >&2; exit 7' >"$T/o" 2>"$T/e"
	expect_eq $? 7 "vm exec exit status"
	expect_eq "$(cat "$T/e")" to-stderr "vm exec stderr"
	expect_eq "$(b vm exec web --env GREETING=hi --cwd /etc -- sh -c 'echo $GREETING; pwd')" "hi
/etc" "vm exec env and cwd"
	b vm exec web -- /no/such/program >"$T/o" 2>"$T/e"
	expect_eq $? 1 "vm exec of a missing program"
	expect_contains "$(cat "$T/e")" "No such file or directory"
	# vm rm, then everything about it is refused clearly
	b vm rm web >"$T/rm.out" 2>&1 || fail "vm rm: $(cat "$T/rm.out")"
	expect_eq "$(b vm show web --json | jq -r .state)" deleted "state after vm rm"
	b vm exec web -- true >"$T/o" 2>"$T/e"
	expect_eq $? 1 "exec on a deleted vm"
	expect_contains "$(cat "$T/e")" "vm 'web' was deleted (by job"
	b vm rm nosuchvm >"$T/o" 2>&1
	expect_eq $? 1 "vm rm of an unknown vm"
	expect_contains "$(cat "$T/o")" "no vm 'nosuchvm'"
	vj_nothing_left
	# doctor, as bangerd's user sees the host
	b doctor >"$T/doctor.out" 2>&1
	expect_eq $? 0 "doctor's status (output: $(cat "$T/doctor.out"))"
	expect_contains "$(cat "$T/doctor.out")" "qemu         ok   accel tcg"
	expect_contains "$(cat "$T/doctor.out")" "firecracker  no   not installed"
	expect_contains "$(cat "$T/doctor.out")" "helper         ok"
	expect_contains "$(cat "$T/doctor.out")" "/dev/kvm       no   /dev/kvm cannot be opened by this user"
}

# ---- bad input ------------------------------------------------------------------

test_vmjobs_bad_input_refused_clearly() {
	vj_setup
	vj_start
	vj_pull
	# no kernel imported yet
	spec nokernel.yaml <<EOF
jobs:
  a: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, max_attempts: 1 }
EOF
	b job submit "$T/nokernel.yaml" --follow >/dev/null 2>&1
	expect_contains "$(jfield 2 error)" "no kernel imported: run 'banger kernel import"
	vj_kernel_copy
	spec bad.yaml <<EOF
jobs:
  image:   { kind: vm.create, image: $REG_ADDR/ci/nope:1, max_attempts: 1 }
  kernel:  { kind: vm.create, image: $REG_ADDR/ci/busybox:1, kernel: no-such-kernel, max_attempts: 1 }
  cpu0:    { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vcpus: 0, max_attempts: 1 }
  cpu65:   { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vcpus: 65, max_attempts: 1 }
  memlow:  { kind: vm.create, image: $REG_ADDR/ci/busybox:1, memory: 1M, max_attempts: 1 }
  memhigh: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, memory: 100T, max_attempts: 1 }
  name:    { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vm_name: Not_A-Label, max_attempts: 1 }
  net:     { kind: vm.create, image: $REG_ADDR/ci/busybox:1, network: bridged, max_attempts: 1 }
  exec:    { kind: vm.exec, vm: ghost, run: "true", max_attempts: 1 }
  both:    { kind: vm.exec, vm: ghost, run: "true", argv: [true], max_attempts: 1 }
  del:     { kind: vm.delete, vm: ghost, max_attempts: 1 }
EOF
	b job submit "$T/bad.yaml" --follow >"$T/bad.out" 2>&1
	expect_eq $? 1 "status of a submission whose jobs all fail"
	e() { b job list --json | jq -r ".jobs[] | select(.name == \"$1\") | .id" | xargs -I{} sh -c "BANGER_RUNTIME_DIR=$T/run $VJ_BIN/banger job show {} --json" | jq -r .error; }
	expect_contains "$(e image)" "no image '$REG_ADDR/ci/nope:1': pull it first"
	expect_contains "$(e kernel)" "no kernel 'no-such-kernel'"
	expect_contains "$(e cpu0)" "vcpus 0 is out of range (1 to 64)"
	expect_contains "$(e cpu65)" "vcpus 65 is out of range (1 to 64)"
	expect_contains "$(e memlow)" "memory 1M is out of range"
	expect_contains "$(e memhigh)" "memory 102400G is out of range"
	expect_contains "$(e name)" "vm name 'Not_A-Label' is not a DNS label"
	expect_contains "$(e net)" "network 'bridged' is not 'tap'"
	expect_contains "$(e exec)" "no vm 'ghost'"
	expect_contains "$(e both)" "needs exactly one of 'run'"
	expect_contains "$(e del)" "no vm 'ghost'"
	# every one failed at once, for good (no retries), and made nothing
	[ "$(b job list --json | jq '[.jobs[] | select(.state == "failed")] | length')" = 12 ] ||
		fail "not every bad job failed: $(b job list)"
	expect_eq "$(b vm list --all --json | jq '.vms | length')" 0 "vms made from bad input"
	vj_nothing_left
}

# ---- output, timeouts, a guest that never boots, a hypervisor that dies ----------

test_vmjobs_100mb_of_output_arrives_whole() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	vj_create box
	spec big.yaml <<EOF
jobs:
  big: { kind: vm.exec, vm: box, run: "yes 0123456789abcde | head -c 100000000", max_attempts: 1 }
EOF
	t0=$(date +%s.%N)
	b job submit "$T/big.yaml" --follow >/dev/null 2>&1 || fail "the 100 MB exec failed: $(jfield "$(vj_last_job)" error)"
	t1=$(date +%s.%N)
	job=$(vj_last_job)
	expect_eq "$(jfield $job result.output_bytes)" 100000000 "bytes the exec step counted"
	want=$(yes 0123456789abcde | head -c 100000000 | sha256sum | cut -d' ' -f1)
	b job tail $job --no-follow | grep -v '^\[job ' >"$T/big.out"
	expect_eq "$(stat -c %s "$T/big.out")" 100000000 "bytes in the job's stdout events"
	expect_eq "$(sha256sum <"$T/big.out" | cut -d' ' -f1)" "$want" "sha256 of the output"
	echo "    100 MB of guest stdout into events: $(echo "$t1 - $t0" | bc) s"
	vj_delete box
	vj_nothing_left
}

test_vmjobs_exec_timeout_kills_the_command() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	# a vm without a NIC: no tap, no address, and exec works the same
	vj_create box ", network: none"
	expect_eq "$(b vm show box --json | jq -c '[.address, .tap]')" "[null,null]" "a vm without a NIC"
	vj_ns ip -o link show | grep -q 'bg[0-9a-f]\{8\}' && fail "a tap was made for network: none"
	spec slow.yaml <<EOF
jobs:
  slow: { kind: vm.exec, vm: box, run: "echo started; sleep 1000; echo never", timeout: 3s }
EOF
	t0=$(date +%s)
	b job submit "$T/slow.yaml" --follow >"$T/slow.out" 2>&1
	st=$?
	took=$(($(date +%s) - t0))
	expect_eq $st 1 "status of a timed-out exec"
	[ $took -lt 20 ] || fail "the timeout took ${took}s"
	expect_eq "$(jfield 3 state)" failed "state"
	expect_contains "$(jfield 3 error)" "timed out after 3s in step 'exec'"
	grep -qx started "$T/slow.out" || fail "output before the timeout is lost"
	! grep -q never "$T/slow.out" || fail "the command went on"
	# the guest's command and its process group are gone; the VM still works
	out=$(b vm exec box -- sh -c 'ps | grep -c "[s]leep 1000"')
	expect_eq "$out" 0 "sleep processes left in the guest"
	# cancel kills the command too
	spec cancel.yaml <<EOF
jobs:
  c: { kind: vm.exec, vm: box, run: "sleep 1000" }
EOF
	b job submit "$T/cancel.yaml" >/dev/null
	job=$(vj_last_job)
	WAIT=30 wait_state $job running
	sleep 1
	b job cancel $job >/dev/null
	WAIT=30 wait_state $job cancelled
	out=$(b vm exec box -- sh -c 'ps | grep -c "[s]leep 1000"')
	expect_eq "$out" 0 "sleep processes left after cancel"
	vj_delete box
	vj_nothing_left
}

test_vmjobs_guest_that_never_boots_is_torn_down() {
	vj_setup
	vj_kernel
	vj_hang_kernel
	vj_start
	vj_pull
	spec hang.yaml <<EOF
jobs:
  box: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, kernel: hang, boot_timeout: 8s, max_attempts: 1 }
EOF
	t0=$(date +%s)
	b job submit "$T/hang.yaml" --follow >"$T/hang.out" 2>&1
	took=$(($(date +%s) - t0))
	expect_eq "$(jfield 2 state)" failed "state"
	expect_contains "$(jfield 2 error)" "the guest's agent did not answer within 8 s"
	expect_contains "$(jfield 2 error)" "hang-initrd: up, and never answering"
	[ $took -lt 60 ] || fail "the bounded wait took ${took}s"
	# rolled back: every step undone, the row deleted, nothing left
	b oplog 2 --json | jq -e '[.attempts[0].steps[] | select(.state == "undone")] | length == 6' \
		>/dev/null || fail "steps not undone: $(b oplog 2)"
	expect_eq "$(b vm list --all --json | jq -r '.vms[0].state')" deleted "row"
	vj_nothing_left
}

test_vmjobs_hypervisor_killed_mid_exec() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	spec k.yaml <<EOF
jobs:
  box:  { kind: vm.create, image: $REG_ADDR/ci/busybox:1, boot_timeout: $VJ_BOOT }
  long: { kind: vm.exec, needs: [box], vm: box, run: "echo running; sleep 1000", max_attempts: 1 }
EOF
	b job submit "$T/k.yaml" >/dev/null || fail submit
	WAIT=120 wait_state 3 running
	i=0
	until b job tail 3 --no-follow 2>/dev/null | grep -q running; do
		i=$((i + 1))
		[ $i -gt 100 ] && fail "the command never started"
		sleep 0.1
	done
	pid=$(jfield 2 result.pid)
	expect_eq "$(b vm show "$(jfield 2 result.name)" --json | jq -r .pid)" "$pid" "pid in vm show"
	kill -KILL "$pid"
	WAIT=60 wait_final 3 >/dev/null
	expect_eq "$(jfield 3 state)" failed "the exec"
	expect_contains "$(jfield 3 error)" "the vm's hypervisor (qemu, pid $pid) exited while the command ran"
	# the vm is recorded stopped: exec is refused, delete cleans up
	name=$(jfield 2 result.name)
	expect_eq "$(b vm show "$name" --json | jq -r .state)" stopped "state after its qemu died"
	b vm exec "$name" -- true >"$T/o" 2>"$T/e"
	expect_eq $? 1 "exec on a stopped vm"
	expect_contains "$(cat "$T/e")" "vm '$name' is stopped (the vm's hypervisor (qemu, pid $pid) exited): delete it"
	vj_delete "$name"
	vj_nothing_left
}

# ---- restarts and crashes -----------------------------------------------------------

test_vmjobs_daemon_restart_mid_exec_keeps_the_vm() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	vj_create box
	pid=$(b vm show box --json | jq -r .pid)
	spec long.yaml <<EOF
jobs:
  long: { kind: vm.exec, vm: box, run: "echo up; sleep 1000" }
EOF
	b job submit "$T/long.yaml" >/dev/null
	until b job tail 3 --no-follow 2>/dev/null | grep -qx up; do sleep 0.1; done
	kill_daemon
	vj_start
	WAIT=30 wait_final 3 >/dev/null
	expect_eq "$(jfield 3 state)" rolled_back "an exec cut by a restart (not retried)"
	expect_contains "$(jfield 3 error)" "interrupted by a daemon restart during step 'exec'"
	# the VM kept running, was re-adopted, and still works
	kill -0 "$pid" || fail "qemu died with bangerd"
	grep -q "re-adopted vm 'box' (qemu pid $pid)" "$T/daemon.log" || fail "no re-adoption logged"
	expect_eq "$(b vm exec box -- echo again)" again "exec after the restart"
	# the interrupted command was killed in the guest (its connection went)
	expect_eq "$(b vm exec box -- sh -c 'ps | grep -c "[s]leep 1000"')" 0 "old command left"
	# with retry: true the exec runs again after the restart
	spec again.yaml <<EOF
jobs:
  again: { kind: vm.exec, vm: box, run: "echo try; sleep 2; echo finished", retry: true }
EOF
	job=$(b job submit "$T/again.yaml" --json | jq '.jobs[0].id')
	until b job tail "$job" --no-follow 2>/dev/null | grep -qx try; do sleep 0.1; done
	kill_daemon
	vj_start
	s=$(WAIT=60 wait_final "$job")
	expect_eq "$s" succeeded "an interrupted exec with retry: true"
	expect_eq "$(b job tail "$job" --no-follow | grep -c '^try$')" 2 "runs of the retried command"
	vj_delete box
	vj_nothing_left
}

test_vmjobs_crash_at_vm_create_before_after() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	stop_daemon
	vj_crash_each create vm.create/reserve:before vm.create/reserve:after \
		vm.create/disk:before vm.create/disk:after vm.create/tap:before vm.create/tap:after \
		vm.create/start:before vm.create/start:after vm.create/wait:before vm.create/wait:after \
		vm.create:finish
}

test_vmjobs_crash_at_vm_create_undo() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	stop_daemon
	# the wait step fails for good (one attempt), so every step is undone;
	# crash at each undo: after the restart the rollback carries on
	VJ_SPEC_EXTRA=", max_attempts: 1" VJ_EXTRA_FP="vm.create/wait:error=error" vj_crash_each create \
		vm.create/wait:undo-before vm.create/wait:undo-after vm.create/start:undo-before \
		vm.create/start:undo-after \
		vm.create/tap:undo-before vm.create/tap:undo-after vm.create/disk:undo-before \
		vm.create/disk:undo-after vm.create/reserve:undo-before vm.create/reserve:undo-after
}

test_vmjobs_crash_at_vm_delete() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	stop_daemon
	vj_crash_each delete vm.delete/stop:before vm.delete/stop:after \
		vm.delete/teardown:before vm.delete/teardown:after vm.delete:finish
}

test_vmjobs_recovery_reclaims_what_no_vm_owns() {
	vj_setup
	vj_kernel
	vj_start
	stop_daemon
	# leftovers with banger's names and no vm row: a run directory with a
	# process naming it (root's: only the helper's proc.signal may kill it),
	# a root disk directory, a tap
	mkdir -p "$T/run/vms/77" "$T/state/vms/77"
	: >"$T/state/vms/77/root.qcow2"
	: >"$T/run/vms/77/console.log"
	chown -R $VJ_OWNER:$VJ_OWNER "$T/run/vms" "$T/state/vms"
	ip netns exec "$NS" tail -f "$T/run/vms/77/console.log" >/dev/null 2>&1 &
	stray=$!
	echo $stray >>"$T/pids"
	vj_hcall net.bridge.ensure '{"bridge":"bgbr0"}' >/dev/null
	vj_hcall net.tap.create '{"tap":"bg0000004d","bridge":"bgbr0"}' | grep -q '"ok":true' ||
		fail "cannot make the stray tap"
	vj_start
	wait_exit $stray 15 || fail "the stray process naming a run directory was not killed"
	[ ! -e "$T/run/vms/77" ] || fail "run directory 77 left"
	[ ! -e "$T/state/vms/77" ] || fail "root disk directory 77 left"
	! vj_ns ip link show bg0000004d >/dev/null 2>&1 || fail "tap bg0000004d left"
	grep -q "recovery: removing tap 'bg0000004d'" "$T/daemon.log" || fail "tap reclaim not logged"
}

# vm.create with `hypervisor: firecracker` through the whole daemon, against
# tests/tools/fake_firecracker.py: no Firecracker can run on this host (not
# packaged, no download), so this proves the wiring (raw root disk copy,
# the API calls, hybrid vsock to the agent, stop, teardown), not a boot:
# the fake runs the agent in its test mode on the host.
test_vmjobs_fake_firecracker_create_exec_delete() {
	vj_setup
	vj_kernel
	printf 'firecracker_path: %s\n' "$ROOT/tests/tools/fake_firecracker.py" >>"$T/bangerd.yaml"
	vj_start FAKE_FC_AGENT="$VJ_AGENT" FAKE_FC_RECORD="$T/home/fc.jsonl"
	vj_pull
	spec fc.yaml <<EOF
jobs:
  box:  { kind: vm.create, image: $REG_ADDR/ci/busybox:1, hypervisor: firecracker, network: none, vm_name: fcbox }
  test: { kind: vm.exec, needs: [box], vm: box, run: "echo from-\$((6 * 7))" }
  done: { kind: vm.delete, needs: [test], vm: box, when: always }
EOF
	b job submit "$T/fc.yaml" --follow >"$T/fc.out" 2>&1 || fail "firecracker pipeline: $(tail -20 "$T/fc.out")"
	out=$(cat "$T/fc.out")
	expect_contains "$out" "from-42"
	expect_contains "$out" "root.raw: a sparse copy of the image"
	expect_contains "$out" "firecracker started"
	expect_eq "$(jfield 2 result.accel)" kvm "accelerator reported for firecracker"
	rec=$T/home/fc.jsonl
	jq -s -e 'map(select(.path == "/drives/rootfs")) | .[0].body |
		(.path_on_host | endswith("/root.raw")) and .is_read_only == false' "$rec" >/dev/null ||
		fail "the root drive: $(grep drives "$rec")"
	jq -s -e 'map(select(.path == "/actions")) | .[0].body.action_type == "InstanceStart"' "$rec" \
		>/dev/null || fail "no InstanceStart: $(cat "$rec")"
	expect_eq "$(b vm list --all --json | jq -r '.vms[0].state')" deleted "the vm after vm.delete"
	bad=$(b vm list --all --json | jq -r '.vms[0].overlay')
	[ ! -e "$bad" ] || fail "the raw root disk is left: $bad"
	vj_nothing_left
	# a driver that does not exist is refused before anything is made
	spec bad.yaml <<EOF
jobs:
  box: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, hypervisor: xen }
EOF
	b job submit "$T/bad.yaml" --follow >"$T/bad.out" 2>&1 && fail "hypervisor: xen accepted"
	expect_contains "$(cat "$T/bad.out")" "hypervisor 'xen' is not 'qemu' (the default) or 'firecracker'"
}

# vm.exec's `stdin:` reaches the command, then end of file
test_vmjobs_exec_stdin() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	vj_create box ", network: none"
	spec in.yaml <<EOF
jobs:
  count: { kind: vm.exec, vm: box, argv: [wc, -l], stdin: "one\ntwo\nthree\n" }
  sum:   { kind: vm.exec, vm: box, run: "sha256sum | cut -c1-64", stdin: "banger\n" }
  none:  { kind: vm.exec, vm: box, run: "cat; echo eof" }
EOF
	b job submit "$T/in.yaml" --follow >"$T/in.out" 2>&1 || fail "stdin jobs: $(tail -5 "$T/in.out")"
	ids=$(b job list --json | jq -r '[.jobs[] | select(.kind == "vm.exec")] | sort_by(.id) | .[].id')
	set -- $ids
	expect_eq "$(b job tail "$1" --no-follow --json | jq -s -r 'map(select(.stream=="stdout") | .data) | join("") | gsub("\\s"; "")')" 3 "wc -l of the stdin"
	expect_eq "$(b job tail "$2" --no-follow --json | jq -s -r 'map(select(.stream=="stdout") | .data) | join("")')" \
		"$(printf 'banger\n' | sha256sum | cut -c1-64)" "sha256 of the stdin"
	expect_eq "$(b job tail "$3" --no-follow --json | jq -s -r 'map(select(.stream=="stdout") | .data) | join("")')" \
		"eof" "no stdin: /dev/null"
	vj_delete box
	vj_nothing_left
}
