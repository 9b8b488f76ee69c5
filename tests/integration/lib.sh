# lib.sh: helpers for banger's integration tests (sourced by tests/run.sh).
#
# Each test is a shell function named test_*.  It runs in its own subshell
# with a fresh directory $T; the real build/bangerd-test (the daemon plus the
# test kinds) and the real build/banger CLI talk over a real Unix socket to a
# real SQLite file.  A test fails by calling fail (or by any command it
# checks with `must`); daemons it started are killed when it ends.

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${BANGER_BIN_DIR:-$ROOT/build}
BANGER=$BIN/banger
BANGERD=$BIN/bangerd-test

fail() {
	echo "    FAIL: $*" >&2
	exit 1
}

# must CMD...: run, fail the test when it exits non-zero
must() {
	"$@" || fail "command failed ($?): $*"
}

b() {
	BANGER_RUNTIME_DIR=$T/run "$BANGER" "$@"
}

# start_daemon [bangerd args...]: start on $T/state + $T/run, wait until it
# answers a ping (bounded).  Extra environment (BANGER_FAILPOINTS...) passes
# through.  Log in $T/daemon.log (appended across restarts).
start_daemon() {
	"$BANGERD" --state-dir "$T/state" --runtime-dir "$T/run" "$@" >>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	echo "$DAEMON_PID" >"$T/daemon.pid"
	i=0
	while ! b ping >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			cat "$T/daemon.log" >&2
			fail "bangerd did not come up"
		fi
		sleep 0.05
	done
}

# wait_exit PID SECONDS: wait for a process to end (bounded); 0 if it ended
wait_exit() {
	i=0
	while kill -0 "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt $(($2 * 20)) ] && return 1
		sleep 0.05
	done
	wait "$1" 2>/dev/null
	return 0
}

stop_daemon() {
	[ -n "${DAEMON_PID:-}" ] || return 0
	kill -TERM "$DAEMON_PID" 2>/dev/null
	wait_exit "$DAEMON_PID" 30 || { kill -KILL "$DAEMON_PID"; fail "bangerd did not drain in 30 s"; }
	DAEMON_PID=
}

kill_daemon() {
	kill -KILL "$DAEMON_PID" 2>/dev/null
	wait_exit "$DAEMON_PID" 10
	DAEMON_PID=
}

# jfield JOB FIELD: one field of `banger job show --json`
jfield() {
	b job show "$1" --json | jq -r ".$2"
}

# wait_state JOB STATE... [timeout seconds via WAIT=]: until the job is in one of the states
wait_state() {
	job=$1
	shift
	i=0
	limit=$(( ${WAIT:-20} * 20 ))
	while :; do
		s=$(jfield "$job" state 2>/dev/null)
		for want in "$@"; do
			[ "$s" = "$want" ] && return 0
		done
		i=$((i + 1))
		[ $i -gt $limit ] && fail "job $job is '$s', wanted one of: $*"
		sleep 0.05
	done
}

# wait_final JOB: until the job is in a final state; prints it
wait_final() {
	wait_state "$1" succeeded failed dead cancelled rolled_back skipped >/dev/null
	jfield "$1" state
}

expect_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$2', got '$1'"
}

expect_contains() {
	case "$1" in
	*"$2"*) ;;
	*) fail "${3:-output} does not contain '$2': $1" ;;
	esac
}

# write a spec: spec NAME <<EOF ... EOF
spec() {
	cat >"$T/$1"
}
