# t_daemon.sh: the daemon's life: one per state directory, schema versions,
# draining on SIGTERM, tails across restarts, a locked or full database.

test_second_daemon_refused() {
	start_daemon
	out=$("$BANGERD" --state-dir "$T/state" --runtime-dir "$T/run2" 2>&1)
	expect_eq $? 1 "exit status of a second daemon"
	expect_contains "$out" "another bangerd (pid $DAEMON_PID) is already running on state directory"
	b ping >/dev/null || fail "first daemon disturbed"
	[ -S "$T/run/bangerd.sock" ] || fail "first daemon's socket removed"
	must sqlite3 "$T/state/queue.db" "PRAGMA integrity_check" >/dev/null
}

test_newer_schema_refused() {
	start_daemon
	stop_daemon
	sqlite3 "$T/state/queue.db" "PRAGMA user_version = 99"
	out=$("$BANGERD" --state-dir "$T/state" --runtime-dir "$T/run" 2>&1)
	expect_eq $? 1 "exit status"
	expect_contains "$out" "database schema version 99 is newer than this banger"
	expect_eq "$(sqlite3 "$T/state/queue.db" "PRAGMA user_version")" 99 "user_version untouched"
}

test_sigterm_drains_and_resumes() {
	start_daemon
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  m: { kind: test.marker, dir: $T/m, sleep: 600ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	i=0
	while [ ! -e "$T/m/1-s1" ]; do i=$((i+1)); [ $i -gt 100 ] && fail "s1 never ran"; sleep 0.05; done
	stop_daemon
	# s2 was running when SIGTERM came: it finished, then the job was checkpointed
	[ -e "$T/m/1-s2" ] || fail "the running step did not finish before the daemon stopped"
	[ ! -e "$T/m/1-s3" ] || fail "a new step started while draining"
	expect_eq "$(sqlite3 "$T/state/queue.db" "SELECT state || ' ' || failures FROM jobs WHERE id=1")" \
		"queued 0" "job after the drain"
	grep -q '"msg":"bangerd stopped cleanly"' "$T/daemon.log" || fail "no clean stop logged"
	start_daemon
	expect_eq "$(WAIT=10 wait_final 1)" succeeded "after restart"
	expect_eq "$(jfield 1 attempts)" 1 "attempts (a drain is not a failed attempt)"
	b oplog 1 --json >"$T/op.json"
	expect_eq "$(jq '.attempts[0].epochs | length' "$T/op.json")" 2 "claims of attempt 1"
	expect_eq "$(jq -r '[.attempts[0].steps[].state] | join(",")' "$T/op.json")" "done,done,done" steps
	[ -z "$(ls "$T/m/undone" 2>/dev/null)" ] || fail "something was undone"
}

test_tail_survives_daemon_restart() {
	start_daemon
	mkdir "$T/m"
	spec s.yaml <<EOF2
jobs:
  m: { kind: test.marker, dir: $T/m, sleep: 500ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	b job tail 1 --json >"$T/tail.json" 2>"$T/tail.err" &
	tail_pid=$!
	sleep 0.7
	stop_daemon
	start_daemon
	wait_exit $tail_pid 30 || fail "tail did not end"
	wait $tail_pid
	expect_eq $? 0 "tail exit status"
	# every event exactly once, in order, across the restart
	seqs=$(jq -s -r 'map(.seq) | join(",")' "$T/tail.json")
	want=$(b job tail 1 --json --no-follow | jq -s -r 'map(.seq) | join(",")')
	expect_eq "$seqs" "$want" "events seen by the tail across the restart"
	grep -q reconnect "$T/tail.err" || fail "tail did not say it reconnected"
}

test_locked_database_waits_then_proceeds() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  a: { kind: test.echo }
EOF2
	sqlite3 "$T/state/queue.db" "BEGIN EXCLUSIVE; SELECT 1;" ".shell sleep 1" "COMMIT;" >/dev/null &
	lock_pid=$!
	sleep 0.2
	b job submit "$T/s.yaml" >/dev/null || fail "submit while another process held the lock for 1s"
	wait $lock_pid
	expect_eq "$(WAIT=10 wait_final 1)" succeeded state
	must sqlite3 "$T/state/queue.db" "PRAGMA integrity_check" >/dev/null
}

test_disk_full_fails_cleanly() {
	[ "$(id -u)" = 0 ] || { echo "needs root for a small tmpfs"; exit 77; }
	mkdir -p "$T/small"
	mount -t tmpfs -o size=12m tmpfs "$T/small" || { echo "cannot mount tmpfs"; exit 77; }
	trap 'kill -KILL $(cat $T/daemon.pid 2>/dev/null) 2>/dev/null; sleep 0.2; umount -l "$T/small"' EXIT
	mkdir "$T/m"
	"$BANGERD" --state-dir "$T/small/state" --runtime-dir "$T/run" >>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	echo $DAEMON_PID >"$T/daemon.pid"
	i=0; while ! b ping >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && fail "no daemon"; sleep 0.05; done
	spec s.yaml <<EOF2
jobs:
  m: { kind: test.marker, dir: $T/m, sleep: 400ms }
EOF2
	b job submit "$T/s.yaml" >/dev/null || fail submit
	i=0
	while [ ! -e "$T/m/1-s1" ]; do i=$((i+1)); [ $i -gt 100 ] && fail "s1 never ran"; sleep 0.05; done
	# fill the filesystem while the job runs
	dd if=/dev/zero of="$T/small/filler" bs=64k 2>/dev/null
	sleep 1.5
	# new submissions are refused with a clear error, not a crash
	out=$(b job submit "$T/s.yaml" 2>&1)
	[ $? -ne 0 ] || fail "submit succeeded on a full disk"
	expect_contains "$out" "space"
	kill -0 $DAEMON_PID || fail "daemon died on a full disk"
	rm -f "$T/small/filler"
	st=$(WAIT=20 wait_final 1)
	case "$st" in
	succeeded) [ -e "$T/m/1-s3" ] || fail "succeeded without its markers" ;;
	*) [ -z "$(ls "$T/m" | grep -v undone | grep -v attempts)" ] || fail "markers left: $(ls "$T/m")" ;;
	esac
	must sqlite3 "$T/small/state/queue.db" "PRAGMA integrity_check" >/dev/null
	expect_eq "$(sqlite3 "$T/small/state/queue.db" "PRAGMA integrity_check")" ok integrity
	kill -TERM $DAEMON_PID; wait_exit $DAEMON_PID 30
}

test_logs_carry_op_ids() {
	start_daemon
	spec s.yaml <<'EOF2'
jobs:
  a: { kind: test.echo, exit: 1 }
EOF2
	b job submit "$T/s.yaml" >/dev/null
	WAIT=10 wait_final 1 >/dev/null
	grep '"op":"job-1-1"' "$T/daemon.log" | grep -q "failed" || fail "no log line with the attempt's op id"
	jq -e . "$T/daemon.log" >/dev/null || fail "daemon log is not JSON lines"
	grep -q '"op":"cli-' "$T/daemon.log" || fail "no log line with the CLI's op id"
}
