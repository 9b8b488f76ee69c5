#!/bin/bash
# tests/run.sh [PATTERN]: banger's whole test suite.  Unit tests, then the
# integration and crash tests (tests/integration/t_*.sh), each test in its
# own directory with its own daemon.  Ends with "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ROOT
pattern=${1:-}
pass=0
failed=0
skipped=0
failures=""

# run_unit BINARY LABEL: a unit-test binary's own summary, added in
run_unit() {
	out=$("$1" 2>&1)
	echo "$out" | grep -v -e '^ok ' -e '^unit: ' || true
	line=$(echo "$out" | grep -E '^unit: [0-9]+ passed, [0-9]+ failed' | tail -1)
	if [ -z "$line" ]; then
		echo "FAIL $2: no summary line"
		failed=$((failed + 1))
		failures="$failures $2"
		return
	fi
	p=$(echo "$line" | sed -E 's/unit: ([0-9]+) passed.*/\1/')
	f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed.*/\1/')
	pass=$((pass + p))
	failed=$((failed + f))
	[ "$f" -gt 0 ] && failures="$failures $2"
	echo "$2: $p of $((p + f)) passed"
}

if [ -z "$pattern" ] || [ "$pattern" = unit ]; then
	run_unit "$ROOT/build/unit-tests" "unit tests"
	if [ -x "$ROOT/build/asan/unit-tests" ]; then
		run_unit "$ROOT/build/asan/unit-tests" "unit tests (asan)"
	fi
fi

# run_integration PREFIX FILES...: every test_* function of each file
run_integration() {
prefix=$1
shift
for file in "$@"; do
	fns=$(bash -c ". '$file'; declare -F" | awk '{print $3}' | grep '^test_')
	for fn in $fns; do
		name="$prefix$(basename "$file" .sh):$fn"
		if [ -n "$pattern" ] && [ "$pattern" != unit ]; then
			case "$name" in *$pattern*) ;; *) continue ;; esac
		elif [ "$pattern" = unit ]; then
			continue
		fi
		T=$(mktemp -d /tmp/banger-test.XXXXXX)
		start=$(date +%s.%N)
		timeout -k 5 300 env T="$T" bash "$ROOT/tests/integration/one.sh" "$file" "$fn" \
			>"$T/test.out" 2>&1
		rc=$?
		# a sanitizer report from any daemon or tool the test ran fails it
		if [ $rc -eq 0 ] && grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
			"$T"/*.log "$T"/*/*.log "$T/test.out" >/dev/null 2>&1; then
			echo "    sanitizer report in the logs" >>"$T/test.out"
			rc=1
		fi
		secs=$(echo "$(date +%s.%N) - $start" | bc)
		if [ $rc -eq 0 ]; then
			printf 'ok   %s (%.1fs)\n' "$name" "$secs"
			pass=$((pass + 1))
			rm -rf "$T"
		elif [ $rc -eq 77 ]; then
			printf 'skip %s: %s\n' "$name" "$(tail -1 "$T/test.out")"
			skipped=$((skipped + 1))
			rm -rf "$T"
		else
			printf 'FAIL %s (%.1fs, exit %d); output and logs in %s:\n' "$name" "$secs" $rc "$T"
			tail -25 "$T/test.out" | sed 's/^/    /'
			[ -f "$T/daemon.log" ] && tail -8 "$T/daemon.log" | sed 's/^/    log: /'
			failed=$((failed + 1))
			failures="$failures $name"
		fi
	done
done
}

run_integration "" "$ROOT"/tests/integration/t_*.sh
# The core suites, the VM kinds and the workspace kinds again against the
# ASan/UBSan build (make asan): any sanitizer report in a daemon's log fails
# the test.
if [ -x "$ROOT/build/asan/bangerd-test" ]; then
	BANGER_BIN_DIR=$ROOT/build/asan ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 \
		run_integration "asan/" "$ROOT"/tests/integration/t_jobs.sh \
		"$ROOT"/tests/integration/t_spec.sh "$ROOT"/tests/integration/t_rpc.sh \
		"$ROOT"/tests/integration/t_daemon.sh "$ROOT"/tests/integration/t_vmjobs.sh \
		"$ROOT"/tests/integration/t_wsjobs.sh
fi

[ -n "$failures" ] && echo "failed:$failures"
if [ $skipped -gt 0 ]; then
	echo "$pass passed, $failed failed, $skipped skipped"
else
	echo "$pass passed, $failed failed"
fi
[ $failed -eq 0 ]
