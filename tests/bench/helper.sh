#!/bin/bash
# helper.sh: banger-helper's benchmark table (hooked into `make bench` by the
# lead).  Runs the real helper as root inside a network namespace of its own
# and measures through bangerd's own stubs (build/hbench, helper/client.c):
#
#   - no-op RPC (ping) round trip, p50/p99, on one connection and with a new
#     connection per call (goal: p50 under 100 us);
#   - tap create+remove round trip, p50/p99;
#   - 64 taps created one after another vs in parallel (64 connections),
#     and removed the same two ways (goal: parallel at least 4x faster).
#
# Exits 0 when every figure was measured, even if a goal was missed (a
# benchmark reports; tests assert); non-zero when something could not be
# measured.  Needs root and `ip netns`; prints why and exits 0 otherwise.
#
#   HBENCH_PINGS=20000 HBENCH_RT=200 HBENCH_TAPS=64   sizes
set -u
cd "$(dirname "$0")/../.." || exit 2
B=${BANGER_BIN_DIR:-build}
HELPER=$B/banger-helper
HBENCH=$B/hbench
PINGS=${HBENCH_PINGS:-20000}
RT=${HBENCH_RT:-200}
TAPS=${HBENCH_TAPS:-64}

if [ "$(id -u)" != 0 ]; then
	echo "helper bench: skipped (needs root: banger-helper is the root helper)"
	exit 0
fi
for f in "$HELPER" "$HBENCH" "$B/hcall"; do
	[ -x "$f" ] || { echo "helper.sh: $f is missing: run 'make' first" >&2; exit 2; }
done
DIR=$(mktemp -d /tmp/banger-hbench.XXXXXX) || exit 2
NS=bgbench$$
HPID=
cleanup() {
	if [ -n "$HPID" ]; then
		kill -TERM "$HPID" 2>/dev/null
		wait "$HPID" 2>/dev/null
	fi
	ip netns del "$NS" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if ! ip netns add "$NS" 2>/dev/null; then
	echo "helper bench: skipped (cannot create a network namespace)"
	exit 0
fi
cat >"$DIR/helper.yaml" <<EOC
owner_uid: 4242
state_dir: $DIR/state
runtime_dir: $DIR/run
bridge: bgbr0
net_range: 10.213.0.0/24
log_level: warn
EOC
S=$DIR/run/banger-helper.sock
# the audit log goes to a file: one line per request is part of the cost
ip netns exec "$NS" "$HELPER" --config "$DIR/helper.yaml" >"$DIR/helper.log" 2>&1 &
HPID=$!
i=0
until [ -S "$S" ] && ip netns exec "$NS" "$HBENCH" "$S" ping 1 >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$HPID" 2>/dev/null; then
		cat "$DIR/helper.log" >&2
		echo "helper.sh: banger-helper did not come up" >&2
		exit 1
	fi
	sleep 0.05
done

run() {
	ip netns exec "$NS" "$HBENCH" "$S" "$@" || { echo "helper.sh: hbench $* failed" >&2; exit 1; }
}
# key=value from a line of hbench output
val() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }
us() { awk -v u="$1" 'BEGIN { if (u >= 10000) printf "%.1f ms", u / 1000; else printf "%d us", u }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", (b > 0 ? a / b : 0) }'; }

ping=$(run ping "$PINGS")
pingc=$(run ping-connect $((PINGS / 10)))
ip netns exec "$NS" "$B/hcall" "$S" net.bridge.ensure '{"bridge":"bgbr0"}' >/dev/null ||
	{ echo "helper.sh: net.bridge.ensure failed" >&2; exit 1; }
rt=$(run tap-rt "$RT" bgbr0)
taps=$(run taps "$TAPS" bgbr0)
line() { echo "$taps" | grep "^$1 "; }
cs=$(val "$(line taps-create-seq)" wall_us)
cp=$(val "$(line taps-create-par)" wall_us)
rs=$(val "$(line taps-remove-seq)" wall_us)
rp=$(val "$(line taps-remove-par)" wall_us)
p50=$(val "$ping" p50_us)

echo "banger-helper benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus, kernel $(uname -r)"
echo "(the helper runs in network namespace $NS; audit log to a file)"
echo
printf '%-44s %7s %10s %10s  %s\n' figure n p50 p99 goal
printf '%-44s %7s %10s %10s  %s\n' "no-op RPC (ping), one connection" "$(val "$ping" n)" \
	"$(us "$p50")" "$(us "$(val "$ping" p99_us)")" \
	"p50 < 100 us: $([ "$p50" -lt 100 ] && echo met || echo MISSED)"
printf '%-44s %7s %10s %10s\n' "no-op RPC, a new connection per call" "$(val "$pingc" n)" \
	"$(us "$(val "$pingc" p50_us)")" "$(us "$(val "$pingc" p99_us)")"
printf '%-44s %7s %10s %10s\n' "tap create+remove round trip" "$(val "$rt" n)" \
	"$(us "$(val "$rt" p50_us)")" "$(us "$(val "$rt" p99_us)")"
echo
printf '%-44s %12s %12s %9s  %s\n' "$TAPS taps" "one by one" "parallel" speedup goal
sp=$(ratio "$cs" "$cp")
printf '%-44s %12s %12s %9s  %s\n' "create" "$(ms "$cs")" "$(ms "$cp")" "$sp" \
	">= 4x: $(awk -v a="$cs" -v b="$cp" 'BEGIN { print (a >= 4 * b ? "met" : "MISSED") }')"
printf '%-44s %12s %12s %9s\n' "remove" "$(ms "$rs")" "$(ms "$rp")" "$(ratio "$rs" "$rp")"
printf '%-44s %12s %12s %9s\n' "create + remove" "$(ms $((cs + rs)))" "$(ms $((cp + rp)))" \
	"$(ratio $((cs + rs)) $((cp + rp)))"
