#!/bin/sh
# run.sh: banger's benchmark table (`make bench`).  Builds nothing: it runs
# build/bench-queue (tests/bench/bench_queue.c) against build/bangerd-test in
# a fresh temporary directory on the same filesystem as the checkout's queue
# would live (/var/tmp unless BENCH_TMPDIR says otherwise; not a tmpfs), prints
# the machine it ran on and one table, and removes the directory.
#
# Exits 0 when every figure was measured, even when targets are missed (a
# benchmark reports; the tests assert).  Non-zero only when a figure could not
# be measured at all (daemon did not start, an RPC failed).
#
#   BENCH_TMPDIR=DIR   parent of the temporary directory (default /var/tmp)
#   BENCH_KEEP=1       keep the directory (daemon logs, databases) afterwards
#   BENCH_ONLY="e2e pickup"   run only these figures (see bench-queue --help)
set -u

cd "$(dirname "$0")/../.." || exit 2
BENCH=build/bench-queue
DAEMON=build/bangerd-test
for f in "$BENCH" "$DAEMON"; do
	if [ ! -x "$f" ]; then
		echo "run.sh: $f is missing: run 'make' first" >&2
		exit 2
	fi
done

DIR=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/banger-bench.XXXXXX") || exit 2
BPID=

# Stop what we started: the benchmark (it kills its daemons on SIGTERM), then
# any daemon whose pid file it left and that still runs from our directory.
cleanup() {
	if [ -n "$BPID" ] && kill -0 "$BPID" 2>/dev/null; then
		kill -TERM "$BPID" 2>/dev/null
		wait "$BPID" 2>/dev/null
	fi
	for pf in "$DIR"/*/daemon.pid; do
		[ -f "$pf" ] || continue
		pid=$(cat "$pf")
		case "$pid" in '' | *[!0-9]*) continue ;; esac
		if grep -qaF "$DIR" "/proc/$pid/cmdline" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "run.sh: kept $DIR" >&2
	else
		rm -rf "$DIR"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo "banger benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "nproc:      $(nproc)"
echo "cpu:        $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "kernel:     $(uname -sr)"
fs=$(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$DIR" 2>/dev/null ||
	stat -f -c '%T (device unknown)' "$DIR")
echo "temp dir:   $DIR"
echo "filesystem: $fs"
echo "sqlite:     $(sqlite3 --version 2>/dev/null | cut -d' ' -f1 || echo '?') (sqlite3 CLI; the daemon links libsqlite3)"
echo

only=
for f in ${BENCH_ONLY:-}; do
	only="$only --only $f"
done
# The figures bound themselves (about 2.5 minutes in all); this is the
# backstop: SIGTERM makes bench-queue kill its daemons and exit.
# shellcheck disable=SC2086
timeout -k 10 300 "$BENCH" --daemon "$DAEMON" --dir "$DIR" $only &
BPID=$!
wait "$BPID"
rc=$?
BPID=
if [ "$rc" -ne 0 ]; then
	echo "run.sh: bench-queue exited with status $rc (a figure could not be measured;" \
		"BENCH_KEEP=1 keeps the daemon logs)" >&2
fi
exit "$rc"
