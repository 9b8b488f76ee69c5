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

if [ -z "$pattern" ] || [ "$pattern" = unit ]; then
	out=$("$ROOT/build/unit-tests" 2>&1)
	echo "$out" | grep -v -e '^ok ' -e '^unit: ' || true
	line=$(echo "$out" | grep -E '^unit: [0-9]+ passed, [0-9]+ failed' | tail -1)
	if [ -z "$line" ]; then
		echo "FAIL unit-tests: no summary line"
		failed=$((failed + 1))
	else
		p=$(echo "$line" | sed -E 's/unit: ([0-9]+) passed.*/\1/')
		f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed.*/\1/')
		pass=$((pass + p))
		failed=$((failed + f))
		echo "unit tests: $p of $((p + f)) passed"
	fi
fi

for file in "$ROOT"/tests/integration/t_*.sh; do
	fns=$(bash -c ". '$file'; declare -F" | awk '{print $3}' | grep '^test_')
	for fn in $fns; do
		name="$(basename "$file" .sh):$fn"
		if [ -n "$pattern" ] && [ "$pattern" != unit ]; then
			case "$name" in *$pattern*) ;; *) continue ;; esac
		elif [ "$pattern" = unit ]; then
			continue
		fi
		T=$(mktemp -d /tmp/banger-test.XXXXXX)
		start=$(date +%s.%N)
		timeout -k 5 180 env T="$T" bash "$ROOT/tests/integration/one.sh" "$file" "$fn" \
			>"$T/test.out" 2>&1
		rc=$?
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

[ -n "$failures" ] && echo "failed:$failures"
if [ $skipped -gt 0 ]; then
	echo "$pass passed, $failed failed, $skipped skipped"
else
	echo "$pass passed, $failed failed"
fi
[ $failed -eq 0 ]
