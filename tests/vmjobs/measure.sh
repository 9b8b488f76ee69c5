# tests/vmjobs/measure.sh: figures for docs/vms.md, with the same setup as
# the tests (unprivileged bangerd, the helper, TCG).  Not a test:
#   T=$(mktemp -d) ROOT=$PWD bash tests/integration/one.sh tests/vmjobs/measure.sh measure
VJ_BIN=${BIN:-$ROOT/build}
VJ_OWNER=4242
VJ_CACHE=${BANGER_TEST_CACHE:-/var/cache/banger-test}
VJ_BOOT=90s
. "$ROOT/tests/vmjobs/lib.sh"

secs() { echo "$(date +%s.%N) - $1" | bc; }

measure() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	for i in 1 2 3; do
		cat >"$T/ce.yaml" <<EOF2
jobs:
  b$i: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, boot_timeout: $VJ_BOOT }
  t$i: { kind: vm.exec, needs: [b$i], vm: b$i, argv: ["true"] }
EOF2
		t0=$(date +%s.%N)
		b job submit "$T/ce.yaml" --follow >/dev/null 2>&1 || fail "create+exec"
		ce=$(secs "$t0")
		id=$(b job list --json | jq '[.jobs[] | select(.kind == "vm.create") | .id] | max')
		echo "create-to-exec $i: ${ce}s (agent answered after $(jfield "$id" result.wait_ms) ms, guest uptime $(jfield "$id" result.guest_uptime_ms) ms)"
	done
	name=$(jfield "$id" result.name)
	: >"$T/rt"
	for i in $(seq 30); do
		t0=$(date +%s.%N)
		b vm exec "$name" -- true || fail "exec"
		echo "$(secs "$t0")" >>"$T/rt"
	done
	sort -n "$T/rt" >"$T/rt.s"
	echo "banger vm exec true (submit, claim, exec, follow), 30 runs: p50 $(sed -n 15p "$T/rt.s")s, p99/max $(tail -1 "$T/rt.s")s"
	cat >"$T/big.yaml" <<EOF2
jobs:
  big: { kind: vm.exec, vm: $name, run: "yes 0123456789abcde | head -c 100000000" }
EOF2
	b job submit "$T/big.yaml" --follow >/dev/null 2>&1 || fail big
	j=$(b job list --json | jq '[.jobs[].id] | max')
	ms=$(jfield "$j" result.duration_ms)
	echo "100 MB of guest stdout into job events: ${ms} ms ($(echo "100000 / $ms" | bc) MB/s)"
	t0=$(date +%s.%N)
	b job tail "$j" --no-follow >/dev/null
	echo "banger job tail of those 100 MB: $(secs "$t0")s"
	t0=$(date +%s.%N)
	b vm rm "$name" >/dev/null || fail rm
	echo "vm rm (graceful power-off, teardown): $(secs "$t0")s"
}

# where the time of 100 MB goes: the guest making it, or the way out
measure_out() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	vj_create m
	t0=$(date +%s.%N)
	b vm exec m -- sh -c 'time sh -c "head -c 100000000 /dev/zero | wc -c"' 2>&1 | tail -4
	echo "guest-only head /dev/zero: $(secs "$t0")s"
	cat >"$T/z.yaml" <<EOF2
jobs:
  z: { kind: vm.exec, vm: m, run: "head -c 100000000 /dev/zero" }
EOF2
	b job submit "$T/z.yaml" >/dev/null 2>&1 || fail z
	j=$(b job list --json | jq '[.jobs[].id] | max')
	WAIT=200 wait_final $j >/dev/null
	echo "no follower: $(jfield "$j" result.duration_ms) ms, $(b job tail $j --no-follow --json | wc -l) events"
	for cmd in "head -c 100000000 /dev/zero" "yes 0123456789abcde | head -c 100000000"; do
		cat >"$T/z.yaml" <<EOF2
jobs:
  z: { kind: vm.exec, vm: m, run: "$cmd" }
EOF2
		b job submit "$T/z.yaml" --follow >/dev/null 2>&1 || fail z
		j=$(b job list --json | jq '[.jobs[].id] | max')
		echo "$cmd: $(jfield "$j" result.duration_ms) ms"
	done
}
