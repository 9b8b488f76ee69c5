# t_crash.sh: SIGKILL the daemon at every failpoint of a multi-step job with
# undo records, restart it, and check what recovery did: the job succeeded
# with all its markers, or it was rolled back with every begun step undone
# exactly once (each marker moved to undone/ once, none left behind).
#
# test.marker's steps are resumable: a crash anywhere ends in success.
# test.marker_once's are not: a crash inside a step rolls the job back
# (rolled_back, since it does not retry after an interruption).
# With fail_at: 3 the job fails at its last step and rolls back; crashing
# inside that rollback must still end failed, with every step undone once
# (the failure is durable before the first undo runs).

# crash_case KIND FAILPOINT FAIL_AT(0=none) EXPECTED_STATE [NTH_HIT]
crash_case() {
	kind=$1 fp=$2 fail_at=$3 expected=$4
	mkdir -p "$T/m"
	extra=${CASE_EXTRA:-}
	[ "$fail_at" != 0 ] && extra="$extra, fail_at: $fail_at"
	spec s.yaml <<EOF2
jobs:
  j: { kind: $kind, dir: $T/m, max_attempts: 1$extra }
EOF2
	act=crash
	[ -n "${5:-}" ] && act="$5*crash"
	BANGER_FAILPOINTS="$fp=$act" start_daemon
	b job submit "$T/s.yaml" >/dev/null 2>&1
	wait_exit "$DAEMON_PID" 10 || fail "failpoint $fp was never hit"
	grep -q "failpoint .*: crash" "$T/daemon.log" || fail "daemon died without hitting $fp"
	DAEMON_PID=
	start_daemon
	st=$(WAIT=20 wait_final 1)
	expect_eq "$st" "$expected" "state after a crash at $fp"
	live=$(ls "$T/m" | grep -v -e undone -e attempts | sort | tr '\n' ' ')
	undone=$(ls "$T/m/undone" 2>/dev/null | sort | tr '\n' ' ')
	b oplog 1 --json >"$T/op.json"
	if [ "$expected" = succeeded ]; then
		expect_eq "$live" "1-s1 1-s2 1-s3 " "markers after success"
		expect_eq "$undone" "" "undone markers after success"
	else
		expect_eq "$live" "" "markers left after rollback"
		# every step that ran was undone: each step of the last attempt is undone
		states=$(jq -r '[.attempts[-1].steps[].state] | unique | join(",")' "$T/op.json")
		expect_eq "$states" undone "op log step states after rollback"
		# each marker that was created was moved away exactly once
		for f in $undone; do
			n=$(jq --arg p "$T/m/${f%.a*}" '[.attempts[].steps[] | select(.undo.path == $p)] | length' "$T/op.json")
			[ "$n" -ge 1 ] || fail "undone marker $f has no undo record"
		done
	fi
	must sqlite3 "$T/state/queue.db" "PRAGMA integrity_check" >/dev/null
	stop_daemon
}

for _k in test.marker test.marker_once; do
	for _s in s1 s2 s3; do
		for _p in before after; do
			_exp=succeeded
			[ $_k = test.marker_once ] && _exp=rolled_back
			_fn="test_crash_${_k#test.}_${_s}_${_p}"
			eval "$_fn() { crash_case $_k '$_k/$_s:$_p' 0 $_exp; }"
		done
		for _p in undo-before undo-after; do
			_fn="test_crash_${_k#test.}_${_s}_${_p/-/_}_during_rollback"
			eval "$_fn() { crash_case $_k '$_k/$_s:$_p' 3 failed; }"
		done
	done
	# a crash before the end is written loses the last step's `done` too (same
	# group commit): a resumable step re-runs, a non-resumable one rolls back
	_exp=succeeded
	[ $_k = test.marker_once ] && _exp=rolled_back
	eval "test_crash_${_k#test.}_finish() { crash_case $_k '$_k:finish' 0 $_exp; }"
	# delayed, so that the claim is a transaction of its own after the submit
	eval "test_crash_${_k#test.}_after_claim() { CASE_EXTRA=', delay: 200ms' crash_case $_k 'engine:claim' 0 succeeded; }"
done
# engine:synced fires at every fsync; the Nth hit lands at different points of the job
for _n in 3 4 5 6; do
	eval "test_crash_marker_at_sync_$_n() { crash_case test.marker 'engine:synced' 0 succeeded '$_n'; }"
done

test_crash_counter_marks_dead() {
	cat >"$T/conf.yaml" <<'EOF2'
max_crashes: 2
EOF2
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  j: { kind: test.marker, dir: $T/m, sleep: 2s }
EOF2
	start_daemon --config "$T/conf.yaml"
	b job submit "$T/s.yaml" >/dev/null || fail submit
	for round in 1 2; do
		i=0
		while [ "$(jfield 1 state)" != running ]; do i=$((i+1)); [ $i -gt 100 ] && fail "not running"; sleep 0.05; done
		sleep 0.3
		kill_daemon
		start_daemon --config "$T/conf.yaml"
	done
	expect_eq "$(WAIT=20 wait_final 1)" dead "after 2 crashes in a row"
	expect_contains "$(jfield 1 error)" "crashed 2 times in a row"
	[ -z "$(ls "$T/m" | grep -v -e undone -e attempts)" ] || fail "markers left: $(ls "$T/m")"
}

test_error_failpoint_fails_job() {
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  j: { kind: test.marker, dir: $T/m, max_attempts: 1 }
EOF2
	BANGER_FAILPOINTS="test.marker/s2:error=error" start_daemon
	b job submit "$T/s.yaml" >/dev/null || fail submit
	expect_eq "$(WAIT=10 wait_final 1)" failed state
	expect_contains "$(jfield 1 error)" "failpoint"
	expect_eq "$(ls "$T/m/undone" | sort | tr '\n' ' ')" "1-s1.a1 1-s2.a1 " "undone markers"
}

test_failpoints_are_listed() {
	out=$("$BANGERD" --failpoints)
	expect_contains "$out" "test.marker/s2:before"
	expect_contains "$out" "test.marker_once/s3:undo-after"
	expect_contains "$out" "engine:claim"
	out=$(BANGER_FAILPOINTS="x" "$BANGERD" --state-dir "$T/s" --runtime-dir "$T/r" 2>&1)
	expect_eq $? 2 "exit status for a malformed BANGER_FAILPOINTS"
	expect_contains "$out" "BANGER_FAILPOINTS"
}
