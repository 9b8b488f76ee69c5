#!/bin/bash
# one.sh FILE FUNCTION: run one integration test in a fresh directory $T.
# Kills every daemon the test started when it ends, whatever happened.
set -u
export ROOT T
. "$ROOT/tests/integration/lib.sh"
. "$1"
cleanup() {
	for f in "$T"/daemon.pid "$T"/*/daemon.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	return 0
}
trap cleanup EXIT
"$2"
