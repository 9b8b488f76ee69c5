# t_jobs.sh: queue semantics seen through the CLI: dependencies, exit codes,
# retries, dead jobs, priorities, delays, cancel, timeout, per-kind limits.

test_submit_follow_dag() {
	start_daemon
	mkdir "$T/m"
	spec s.yaml <<EOF2
name: demo
jobs:
  a: { kind: test.marker, dir: $T/m }
  b: { kind: test.echo, needs: [a], text: "hello from b\n", exit: 3 }
  c: { kind: test.marker, needs: [b], dir: $T/m }
  d: { kind: test.echo, needs: [b], when: always, text: "cleanup ran\n" }
EOF2
	out=$(b job submit "$T/s.yaml" --follow 2>&1)
	rc=$?
	expect_eq "$rc" 3 "exit status of submit --follow (b exits 3)"
	expect_contains "$out" "hello from b"
	expect_contains "$out" "cleanup ran"
	expect_eq "$(jfield 1 state)" succeeded "a"
	expect_eq "$(jfield 2 state)" failed "b"
	expect_eq "$(jfield 2 exit_code)" 3 "b exit code"
	expect_eq "$(jfield 3 state)" skipped "c (needs failed b)"
	expect_eq "$(jfield 4 state)" succeeded "d (when: always)"
	# b failed for good (a non-zero exit is not retried)
	expect_eq "$(jfield 2 attempts)" 1 "b attempts"
	[ -e "$T/m/1-s3" ] || fail "a's markers should stay: it succeeded"
	[ ! -e "$T/m/3-s1" ] || fail "c must not have run"
}

test_tail_exit_status_and_json() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  x: { kind: test.echo, text: "line one\nline two\n", exit: 7 }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	WAIT=10 wait_final 1 >/dev/null
	b job tail 1 >"$T/out" 2>&1
	expect_eq $? 7 "tail exit status"
	expect_contains "$(cat "$T/out")" "line two"
	n=$(b job tail 1 --json | jq -s 'map(select(.stream=="stdout")) | length')
	expect_eq "$n" 1 "stdout events in --json"
	# reattach from a sequence number: only later events
	last=$(b job tail 1 --json | jq -s 'map(.seq) | max')
	from=$(b job tail 1 --json --from "$last" | jq -s 'map(.seq) | min')
	expect_eq "$from" "$last" "first seq after --from"
	b job tail 1 --no-follow >/dev/null
	expect_eq $? 7 "tail --no-follow of a final job"
}

# The engine gathers a job's output chunks into fewer events (worker/engine.c,
# OUT_EVENT_MAX): every byte of each stream arrives, in order, for a follower
# attached while the job runs and for a tail afterwards, stdout and stderr
# each in order, all before the final state.
test_output_coalesced_in_order() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  o: { kind: test.echo, lines: 20000 }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	b job tail 1 --json >"$T/live.json" || fail "tail --json (following)"
	b job tail 1 --no-follow --json >"$T/after.json" || fail "tail --no-follow --json"
	awk 'BEGIN { for (i = 1; i <= 20000; i++) { printf "out %d\n", i
		if (i % 100 == 0) { for (j = 1; j < 3000; j++) printf "b"; printf "\n" } } }' >"$T/want.out"
	awk 'BEGIN { for (i = 1000; i <= 20000; i += 1000) printf "err %d\n", i }' >"$T/want.err"
	for f in live after; do
		jq -j 'select(.stream == "stdout") | .data' "$T/$f.json" >"$T/$f.out"
		jq -j 'select(.stream == "stderr") | .data' "$T/$f.json" >"$T/$f.err"
		cmp -s "$T/$f.out" "$T/want.out" ||
			fail "$f: stdout differs: $(cmp "$T/$f.out" "$T/want.out" 2>&1), $(wc -c <"$T/$f.out") bytes"
		cmp -s "$T/$f.err" "$T/want.err" || fail "$f: stderr differs: $(head -c 300 "$T/$f.err")"
	done
	# fewer events than writes (the 20000 lines were 20400 writes), none over 64 KiB
	n=$(jq -s 'map(select(.stream == "stdout")) | length' "$T/after.json")
	[ "$n" -gt 0 ] && [ "$n" -lt 2000 ] || fail "$n stdout events for 20400 writes"
	jq -s -e 'map(select(.stream == "stdout" or .stream == "stderr") | .data | length) | max <= 65536' \
		"$T/after.json" >/dev/null || fail "an output event over 64 KiB"
	# seq strictly increasing, output before the final state
	jq -s -e '(map(.seq) | . == sort and . == unique) and
		((map(select(.stream == "stdout" or .stream == "stderr")) | last | .seq) <
		 (map(select(.stream == "state" and .data.state == "succeeded")) | first | .seq))' \
		"$T/after.json" >/dev/null || fail "events out of order"
}

# A small write is not held back until the step ends: it reaches tail while
# the job still runs (the engine's flush timer).
test_output_small_write_shown_live() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  o: { kind: test.echo, text: "early\n", for: 120s }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	i=0
	until b job tail 1 --no-follow --json 2>/dev/null | jq -s -e \
		'map(select(.stream == "stdout") | .data) | join("") == "early\n"' >/dev/null; do
		i=$((i + 1))
		[ $i -lt 300 ] || fail "the output did not reach tail while the job ran"
		sleep 0.05
	done
	expect_eq "$(jfield 1 state)" running "state when the output was there"
	b job cancel 1 >/dev/null || fail cancel
	WAIT=20 wait_final 1 >/dev/null
}

test_retry_with_backoff_then_success() {
	cat >"$T/conf.yaml" <<'EOF2'
retry_base: 100ms
retry_max: 200ms
EOF2
	start_daemon --config "$T/conf.yaml"
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  flaky: { kind: test.marker, dir: $T/m, fail_times: 2, max_attempts: 3 }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	expect_eq "$(WAIT=20 wait_final 1)" succeeded "flaky after two failures"
	expect_eq "$(jfield 1 attempts)" 3 attempts
	# the op log shows three attempts; the first two rolled back every step
	b oplog 1 --json >"$T/oplog.json"
	expect_eq "$(jq '.attempts | length' "$T/oplog.json")" 3 "attempts in the op log"
	expect_eq "$(jq -r '.attempts[0].outcome' "$T/oplog.json")" failed "attempt 1 outcome"
	expect_eq "$(jq -r '[.attempts[0].steps[].state] | join(",")' "$T/oplog.json")" \
		"undone,undone,undone" "attempt 1 steps after rollback"
	expect_eq "$(jq -r '[.attempts[2].steps[].state] | join(",")' "$T/oplog.json")" \
		"done,done,done" "attempt 3 steps"
	# attempt 2 started at least retry_base/2 after attempt 1 ended
	gap=$(jq '.attempts[1].started - .attempts[0].finished' "$T/oplog.json")
	[ "$gap" -ge 50000 ] || fail "backoff gap ${gap}us is shorter than 50ms"
	[ "$(ls "$T/m/undone" | wc -l)" -eq 6 ] || fail "expected 6 undone markers: $(ls "$T/m/undone")"
}

test_attempts_spent_is_dead() {
	cat >"$T/conf.yaml" <<'EOF2'
retry_base: 50ms
retry_max: 50ms
EOF2
	start_daemon --config "$T/conf.yaml"
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  bad: { kind: test.marker, dir: $T/m, fail_times: 9, max_attempts: 2 }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	expect_eq "$(WAIT=20 wait_final 1)" dead state
	expect_contains "$(jfield 1 error)" "all 2 attempts failed"
	[ -z "$(ls "$T/m" | grep -v undone | grep -v attempts)" ] || fail "markers left: $(ls "$T/m")"
	# retry gives it a fresh budget
	expect_eq "$(b job retry 1)" "job 1: queued" "job retry"
	WAIT=20 wait_final 1 >/dev/null
	expect_eq "$(jfield 1 attempts)" 4 "attempt numbers go on after a retry"
}

test_priority_order() {
	start_daemon --max-running 1
	spec s.yaml <<'EOF2'
jobs:
  gate: { kind: test.echo, for: 300ms }
  low:  { kind: test.echo, priority: -5 }
  mid:  { kind: test.echo }
  high: { kind: test.echo, priority: 10 }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	for j in 1 2 3 4; do WAIT=10 wait_final $j >/dev/null; done
	s2=$(jfield 2 started) s3=$(jfield 3 started) s4=$(jfield 4 started)
	[ "$s4" -lt "$s3" ] && [ "$s3" -lt "$s2" ] || fail "start order not by priority: high=$s4 mid=$s3 low=$s2"
}

test_delay_and_cancel_queued() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  later: { kind: test.echo, delay: 1s }
  soon:  { kind: test.echo, delay: 300ms }
  after: { kind: test.echo, needs: [later] }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	expect_eq "$(jfield 1 state)" queued "delayed job right after submit"
	expect_eq "$(b job cancel 1)" "job 1: cancelled" "cancel of a queued job"
	expect_eq "$(jfield 1 state)" cancelled state
	expect_eq "$(WAIT=5 wait_final 3)" skipped "dependent of a cancelled job"
	expect_eq "$(WAIT=5 wait_final 2)" succeeded "delayed job"
	created=$(jfield 2 created) started=$(jfield 2 started)
	[ $((started - created)) -ge 290000 ] || fail "delayed job started after $((started - created))us"
	b job cancel 1 >/dev/null 2>&1 && fail "cancelling a cancelled job should fail"
	true
}

test_cancel_running_rolls_back() {
	start_daemon
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  m: { kind: test.marker, dir: $T/m, sleep: 400ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	i=0
	while [ ! -e "$T/m/1-s1" ]; do i=$((i+1)); [ $i -gt 100 ] && fail "s1 never ran"; sleep 0.05; done
	b job cancel 1 >/dev/null || fail cancel
	expect_eq "$(WAIT=10 wait_final 1)" cancelled state
	[ -z "$(ls "$T/m" | grep -v undone)" ] || fail "markers left after cancel: $(ls "$T/m")"
	b job tail 1 >/dev/null 2>&1
	expect_eq $? 1 "tail exit status of a cancelled job"
}

test_timeout_fails_job() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  slow: { kind: test.echo, for: 60s, timeout: 500ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	expect_eq "$(WAIT=10 wait_final 1)" failed state
	expect_contains "$(jfield 1 error)" "timed out"
	fin=$(jfield 1 finished) st=$(jfield 1 started)
	[ $((fin - st)) -lt 5000000 ] || fail "timeout took $((fin - st))us"
}

test_per_kind_limit() {
	cat >"$T/conf.yaml" <<'EOF2'
kind_limits:
  test.echo: 1
EOF2
	start_daemon --config "$T/conf.yaml"
	spec s.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, for: 200ms }
  b: { kind: test.echo, for: 200ms }
  c: { kind: test.echo, for: 200ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	for j in 1 2 3; do WAIT=10 wait_final $j >/dev/null; done
	b job list --json | jq -r '.jobs[].id' >/dev/null
	prev_end=0
	for j in $(for j in 1 2 3; do echo "$(jfield $j started) $j"; done | sort -n | awk '{print $2}'); do
		s=$(jfield $j started) e=$(jfield $j finished)
		[ "$s" -ge "$prev_end" ] || fail "job $j started before the previous test.echo ended"
		prev_end=$e
	done
}

test_idempotency_key() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, delay: 1h }
  b: { kind: test.echo, delay: 1h }
EOF2
	o1=$(b job submit "$T/s.yaml" --key pipeline-77 | head -1)
	o2=$(b job submit "$T/s.yaml" --key pipeline-77 | head -1)
	expect_eq "$o2" "$o1 (existing)" "second submit with the same key"
	expect_eq "$(b job list --json | jq '.jobs | length')" 2 "jobs queued"
	o3=$(b job submit "$T/s.yaml" --key other | head -1)
	[ "$o3" != "$o1" ] || fail "another key must make another submission"
}
