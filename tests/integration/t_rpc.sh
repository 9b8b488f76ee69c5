# t_rpc.sh: the socket protocol under hostile input, and who may connect.

poke() {
	python3 "$ROOT/tests/integration/rpcpoke.py" "$T/run/bangerd.sock" "$1"
}

alive() {
	b ping >/dev/null || fail "bangerd stopped answering after: $1"
}

test_rpc_hostile_frames() {
	start_daemon
	out=$(poke garbage)
	expect_contains "$out" "PROTO" "reply to garbage"
	expect_contains "$out" "closed" "connection after garbage"
	alive garbage
	out=$(poke oversize)
	expect_contains "$out" "TOOBIG" "reply to an oversized frame"
	expect_contains "$out" "closed" "connection after an oversized frame"
	alive oversize
	expect_contains "$(poke zero)" "PROTO" "reply to an empty frame"
	alive zero
	expect_contains "$(poke notmap)" "not a msgpack map" "reply to a non-map"
	alive notmap
	poke truncated >/dev/null
	alive "a client that disconnects mid-frame"
	expect_contains "$(poke badparams)" "'params' must be a map"
	out=$(poke unknown_then_ping)
	expect_contains "$out" "unknown method"
	expect_contains "$out" "|| " 
	expect_contains "${out#*||}" "version" "ping on the same connection after an error"
	out=$(poke pipelined)
	expect_eq "$(echo "$out" | grep -o 'id' | wc -l)" 3 "replies to three pipelined requests"
	kill -0 "$DAEMON_PID" || fail "daemon died"
}

test_rpc_other_uid_refused() {
	start_daemon
	chmod 0755 "$T" "$T/run"
	chmod 0666 "$T/run/bangerd.sock"
	out=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
		env BANGER_RUNTIME_DIR="$T/run" "$BANGER" ping 2>&1)
	[ $? -ne 0 ] || fail "uid 65534 was served"
	expect_contains "$out" "uid 65534 may not use this bangerd"
	grep -q 'refused a connection from uid 65534' "$T/daemon.log" || fail "refusal not logged"
	alive "a refused connection"
}

test_socket_mode_is_private() {
	start_daemon
	expect_eq "$(stat -c %a "$T/run/bangerd.sock")" 600 "socket mode"
}
