#!/bin/sh
# make demo: build, start a private bangerd, and run examples/demo.yaml end
# to end through the real CLI, then show the op log of the failed job.
#
# The shipped bangerd carries no job kinds yet (image.pull and vm.* land with
# their issues), so the demo first shows the shipped daemon answering, then
# runs the pipeline on the test daemon: the same daemon with the test kinds.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /tmp/banger-demo.XXXXXX)
mkdir -p /tmp/banger-demo/markers
export BANGER_RUNTIME_DIR="$D/run"
B="$ROOT/build/banger"
pid=""
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
}
trap cleanup EXIT INT TERM
start() {
	"$1" --state-dir "$D/state-$2" --runtime-dir "$D/run" --log-level warn 2>>"$D/bangerd.log" &
	pid=$!
	i=0
	until "$B" ping >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -gt 100 ] && { cat "$D/bangerd.log"; exit 1; }
		sleep 0.05
	done
}

echo "== the shipped bangerd answers"
start "$ROOT/build/bangerd" shipped
"$B" ping
"$B" job submit "$ROOT/examples/demo.yaml"
echo "(expected: the shipped daemon has no kinds yet, and refuses the spec before queueing anything)"
cleanup; pid=""

echo
echo "== the pipeline on the test daemon (same daemon + test kinds)"
start "$ROOT/build/bangerd-test" test
"$B" job submit "$ROOT/examples/demo.yaml" --follow
echo "submit --follow exited with $? (the exit code of the failed test job)"
echo
"$B" job list
echo
echo "== op log of the failed job"
"$B" oplog 3
echo
echo "state, logs and database are in $D"
exit 0
