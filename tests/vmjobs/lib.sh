# tests/vmjobs/lib.sh: what the VM job tests (tests/integration/t_vmjobs.sh)
# share: a network namespace with banger-helper (root) and a registry in it,
# bangerd (test build) started as the unprivileged owner in that namespace,
# guest kernels (imported once per agent build and cached), and the checks
# that nothing is left behind.  Sourced by t_vmjobs.sh; uses lib.sh's b,
# fail, must, wait_exit, expect_*.

vj_skip() {
	echo "skip: $*"
	exit 77
}

# Everything a test may leave: QEMUs and processes naming its run
# directory, the helper, the registry (one.sh kills $T/reg/daemon.pid too),
# the namespace with its bridge and taps.
vj_cleanup() {
	for p in $(cat "$T/pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	for p in $(pgrep -f "$T/run/vms/" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	[ -n "${DAEMON_PID:-}" ] && kill -KILL "$DAEMON_PID" 2>/dev/null
	if [ -n "${HPID:-}" ] && kill -TERM "$HPID" 2>/dev/null; then
		wait_exit "$HPID" 10 || kill -KILL "$HPID" 2>/dev/null
	fi
	[ -f "$T/reg/daemon.pid" ] && kill -KILL "$(cat "$T/reg/daemon.pid")" 2>/dev/null
	[ -n "${NS:-}" ] && ip netns del "$NS" 2>/dev/null
	return 0
}

vj_ns() {
	ip netns exec "$NS" "$@"
}

# vj_hcall METHOD JSON: one helper request (build/hcall) in the namespace
vj_hcall() {
	vj_ns "$VJ_BIN/hcall" "$T/run/banger-helper.sock" "$@"
}

# vj_setup: root, tools, the kernel package, the namespace, the owner's
# directories, the helper, /dev/net/tun for the owner, a registry holding
# ci/busybox:1 (REG_ADDR, inside the namespace)
vj_setup() {
	[ "$(id -u)" = 0 ] || vj_skip "needs root (the helper runs as root; bangerd as uid $VJ_OWNER)"
	for t in qemu-system-x86_64 qemu-img docker-registry skopeo busybox jq bc setpriv unshare \
		ip mknod python3; do
		command -v "$t" >/dev/null 2>&1 || vj_skip "$t is not installed (ci/deps/vm.txt)"
	done
	for f in bangerd-test banger banger-helper hcall; do
		[ -x "$VJ_BIN/$f" ] || fail "$VJ_BIN/$f missing: run make"
	done
	# the static agent is not rebuilt with sanitizers: an ASan run
	# (BANGER_BIN_DIR=build/asan) uses build/'s, through agent_path
	VJ_AGENT=$VJ_BIN/banger-agent
	[ -x "$VJ_AGENT" ] || VJ_AGENT=$ROOT/build/banger-agent
	[ -x "$VJ_AGENT" ] || fail "build/banger-agent missing: run make"
	VJ_DEB=$(sh "$ROOT/tests/vm/kernel-deb.sh" "$VJ_CACHE" 2>"$T/kernel-deb.err") ||
		vj_skip "no Debian cloud kernel package: $(cat "$T/kernel-deb.err")"
	trap 'vj_cleanup; cleanup' EXIT
	NS=bgv$$
	ip netns add "$NS" 2>/dev/null || vj_skip "cannot create a network namespace here"
	vj_ns ip link set lo up
	# the owner must reach its directories under $T (mktemp made it 0700)
	chmod 711 "$T"
	mkdir -p "$T/state" "$T/run" "$T/home"
	chown $VJ_OWNER:$VJ_OWNER "$T/state" "$T/run" "$T/home"
	chmod 700 "$T/state" "$T/run"
	printf 'agent_path: %s\n' "$VJ_AGENT" >"$T/bangerd.yaml"
	chmod 644 "$T/bangerd.yaml"
	cat >"$T/helper.yaml" <<EOF2
owner_uid: $VJ_OWNER
state_dir: $T/state
runtime_dir: $T/run
bridge: bgbr0
net_range: 10.213.0.0/24
EOF2
	# not through vj_ns: $! must be the helper itself (ip netns exec execs it)
	ip netns exec "$NS" "$VJ_BIN/banger-helper" --config "$T/helper.yaml" >>"$T/helper.log" 2>&1 &
	HPID=$!
	i=0
	until vj_hcall ping >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$HPID" 2>/dev/null; then
			cat "$T/helper.log" >&2
			fail "banger-helper did not come up"
		fi
		sleep 0.05
	done
	# a tun node the owner may open, bind-mounted over /dev/net/tun in
	# bangerd's private mount namespace only
	mknod -m 0666 "$T/tun" c 10 200 || vj_skip "cannot make a tun device node"
	# the registry and the image, in the namespace (bangerd pulls from there)
	vj_ns bash -c ". '$ROOT/tests/fixtures/registry.sh' && registry_start '$T/reg' plain >/dev/null &&
		'$ROOT/tests/fixtures/mkimage.sh' layout '$T/oci' bb busybox text:etc/banger=hello >/dev/null &&
		'$ROOT/tests/fixtures/mkimage.sh' push '$T/oci:bb' \"\$REG_ADDR/ci/busybox:1\" >'$T/push.log' 2>&1 &&
		echo \"\$REG_ADDR\" >'$T/reg.addr'" >"$T/reg.log" 2>&1 ||
		fail "registry: $(cat "$T/reg.log" "$T/push.log" 2>/dev/null | tail -5)"
	REG_ADDR=$(cat "$T/reg.addr")
}

# vj_start [VAR=VALUE...]: bangerd as the owner, in the namespace, with the
# 0666 tun node over /dev/net/tun; waits (bounded) until it answers
vj_start() {
	env "$@" ip netns exec "$NS" unshare -m sh -c "mount --bind '$T/tun' /dev/net/tun &&
		exec setpriv --reuid $VJ_OWNER --regid $VJ_OWNER --clear-groups env HOME='$T/home' \
		'$VJ_BIN/bangerd-test' --config '$T/bangerd.yaml' --state-dir '$T/state' \
		--runtime-dir '$T/run'" \
		>>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	echo "$DAEMON_PID" >"$T/daemon.pid"
	i=0
	while ! b ping >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			tail -20 "$T/daemon.log" >&2
			fail "bangerd did not come up"
		fi
		sleep 0.05
	done
}

vj_restart_with() {
	stop_daemon
	vj_start "$@"
}

# vj_wait_crash FP: the daemon hit its crash failpoint and is gone
vj_wait_crash() {
	wait_exit "$DAEMON_PID" 150 || fail "bangerd did not crash at $1 within 150 s"
	DAEMON_PID=
	grep -q "failpoint $1" "$T/daemon.log" 2>/dev/null || true
}

vj_reset_daemon_state() {
	[ -z "${DAEMON_PID:-}" ] || stop_daemon
}

# ---- kernels ----

vj_kernel_cache_dir() {
	sum=$(cat "$VJ_AGENT" "$VJ_DEB" | sha256sum | cut -c1-16)
	echo "$VJ_CACHE/vmjobs-kernel-$sum"
}

# vj_kernel_import: `banger kernel import --deb` through bangerd (as the
# owner), and keep the result for the other tests; sets VJ_KVER
vj_kernel_import() {
	b kernel import --deb "$VJ_DEB" >"$T/import.out" 2>&1 ||
		fail "kernel import: $(cat "$T/import.out")"
	expect_contains "$(cat "$T/import.out")" "imported kernel"
	VJ_KVER=$(ls "$T/state/kernels")
	c=$(vj_kernel_cache_dir)
	if [ ! -d "$c" ]; then
		rm -rf "$c.tmp.$$" && mkdir -p "$c.tmp.$$" &&
			cp -a "$T/state/kernels/$VJ_KVER" "$c.tmp.$$/" &&
			mv "$c.tmp.$$" "$c" 2>/dev/null || rm -rf "$c.tmp.$$"
		for old in "$VJ_CACHE"/vmjobs-kernel-*; do
			[ "$old" = "$c" ] || rm -rf "$old"
		done
	fi
}

# vj_kernel_copy: the cached kernel into STATE/kernels (importing it once
# when there is none); sets VJ_KVER.  Needs a running daemon only then.
vj_kernel_copy() {
	c=$(vj_kernel_cache_dir)
	if [ ! -d "$c" ]; then
		vj_kernel_import
		return
	fi
	mkdir -p "$T/state/kernels"
	cp -a "$c"/* "$T/state/kernels/"
	chown -R $VJ_OWNER:$VJ_OWNER "$T/state/kernels"
	VJ_KVER=$(ls "$T/state/kernels" | grep -v '^hang$' | head -1)
}

# vj_kernel: a kernel for a test that is not about importing one
vj_kernel() {
	c=$(vj_kernel_cache_dir)
	if [ -d "$c" ]; then
		vj_kernel_copy
	else
		vj_start
		vj_kernel_import
		stop_daemon
	fi
}

# vj_hang_kernel: kernel 'hang': the real kernel with an initramfs that
# boots and never answers (tests/vm/hang-initrd.sh)
vj_hang_kernel() {
	k=$T/state/kernels/hang
	mkdir -p "$k"
	cp "$T/state/kernels/$VJ_KVER/vmlinuz" "$k/"
	sh "$ROOT/tests/vm/hang-initrd.sh" "$k/initrd" || fail "hang initrd"
	jq '.name = "hang"' "$T/state/kernels/$VJ_KVER/metadata.json" >"$k/metadata.json"
	chown -R $VJ_OWNER:$VJ_OWNER "$k"
}

# ---- jobs ----

vj_pull() {
	cat >"$T/pull.yaml" <<EOF2
jobs:
  pull: { kind: image.pull, ref: $REG_ADDR/ci/busybox:1 }
EOF2
	b job submit "$T/pull.yaml" --follow >"$T/pull.out" 2>&1 || fail "pull: $(tail -5 "$T/pull.out")"
}

# vj_create NAME [FIELDS]: a running VM named NAME; FIELDS are more spec
# fields (", network: none")
vj_create() {
	cat >"$T/create-$1.yaml" <<EOF2
jobs:
  $1: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vm_name: $1, boot_timeout: $VJ_BOOT${2:-} }
EOF2
	b job submit "$T/create-$1.yaml" --follow >"$T/create-$1.out" 2>&1 ||
		fail "create $1: $(tail -5 "$T/create-$1.out")"
}

vj_delete() {
	b vm rm "$1" >"$T/rm-$1.out" 2>&1 || fail "vm rm $1: $(tail -5 "$T/rm-$1.out")"
}

# vj_nothing_left [WHEN]: no QEMU or other process names a run directory,
# no tap of banger's in the namespace, no root disk, no run directory
vj_nothing_left() {
	w=${1:-at the end}
	p=$(pgrep -f "$T/run/vms/" | tr '\n' ' ')
	[ -z "$p" ] || fail "$w: processes left: $(ps -o pid,args -p ${p// /,} 2>/dev/null | tail -n +2)"
	taps=$(vj_ns ip -o link show 2>/dev/null | grep -oE 'bg[0-9a-f]{8}' | sort -u | tr '\n' ' ')
	[ -z "$taps" ] || fail "$w: taps left: $taps"
	[ -z "$(ls -A "$T/state/vms" 2>/dev/null)" ] || fail "$w: root disks left: $(ls "$T/state/vms")"
	[ -z "$(ls -A "$T/run/vms" 2>/dev/null)" ] || fail "$w: run directories left: $(ls "$T/run/vms")"
}

# the newest job's id
vj_last_job() {
	b job list --json | jq '[.jobs[].id] | max'
}

# crash bangerd at each failpoint in the list, then restart it: the job must
# end succeeded (then a delete leaves nothing) or with nothing left at all
vj_crash_each() {
	kind=$1
	shift
	for fp in "$@"; do
		vj_reset_daemon_state
		case "$kind" in
		create)
			vj_start "BANGER_FAILPOINTS=$fp=crash${VJ_EXTRA_FP:+;$VJ_EXTRA_FP}"
			spec c.yaml <<EOF
jobs:
  box: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, vm_name: box, boot_timeout: $VJ_BOOT${VJ_SPEC_EXTRA:-} }
EOF
			job=$(b job submit "$T/c.yaml" --json | jq '.jobs[0].id')
			;;
		delete)
			vj_start
			vj_create box
			vj_restart_with "BANGER_FAILPOINTS=$fp=crash"
			spec d.yaml <<EOF
jobs:
  rm: { kind: vm.delete, vm: box }
EOF
			job=$(b job submit "$T/d.yaml" --json | jq '.jobs[0].id')
			;;
		esac
		[ -n "$job" ] && [ "$job" != null ] || fail "submit ($fp)"
		vj_wait_crash "$fp"
		vj_start
		s=$(WAIT=150 wait_final "$job")
		case "$kind/$s" in
		create/succeeded)
			expect_eq "$(b vm exec box -- echo alive)" alive "vm after a crash at $fp"
			vj_delete box
			;;
		create/*)
			expect_eq "$(b vm list --all --json | jq -r '[.vms[] | select(.created_by == '"$job"')][0].state')" \
				deleted "the row of a vm whose create rolled back ($fp)"
			;;
		delete/succeeded) ;;
		*) fail "$fp: the job ended $s: $(jfield "$job" error)" ;;
		esac
		vj_nothing_left "after a crash at $fp (job $s)"
		echo "    $fp: $s, nothing left"
		stop_daemon
	done
}
