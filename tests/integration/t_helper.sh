# t_helper.sh: banger-helper for real, as root.  Every test that touches
# networking runs the helper inside a network namespace of its own (ip netns
# add; ip netns exec) and checks what it did from outside with ip, bridge,
# nft and iptables in that namespace; traffic never leaves loopback or the
# namespace.  Loop devices are global: backing files live under $T, and
# every test detaches what it attached (autoclear also releases them when
# the last descriptor closes).  Device-mapper does not exist in this kernel:
# the dm tests check validation and the clear UNSUPPORTED answer only.
#
# Tests skip (exit 77) when not run as root or when namespaces cannot be
# made.

HBIN=${BIN:-$ROOT/build}
HELPER=$HBIN/banger-helper
HCALL=$HBIN/hcall
OWNER=4242     # the owner uid in the install config (no passwd entry needed)
STRANGER=65534 # nobody

hskip() {
	echo "$*"
	exit 77
}

# hsetup: root, tools and a namespace of our own; config in $T/helper.yaml
# (extra lines from the arguments).  Sets NS, S.
hsetup() {
	[ "$(id -u)" = 0 ] || hskip "needs root (banger-helper is the root helper)"
	[ -x "$HELPER" ] && [ -x "$HCALL" ] || hskip "build/banger-helper or build/hcall missing: run make"
	NS=bgt$$
	ip netns add "$NS" 2>/dev/null || hskip "cannot create a network namespace here"
	echo "$NS" >"$T/netns"
	ip netns exec "$NS" ip link set lo up
	{
		echo "owner_uid: $OWNER"
		echo "state_dir: $T/state"
		echo "runtime_dir: $T/run"
		echo "bridge: bgbr0"
		echo "net_range: 10.213.0.0/24"
		for l in "$@"; do echo "$l"; done
	} >"$T/helper.yaml"
	S=$T/run/banger-helper.sock
	trap 'hcleanup; cleanup' EXIT
}

# hstart [env assignments...]: start the helper in $NS; wait for a ping.
hstart() {
	env "$@" ip netns exec "$NS" "$HELPER" --config "$T/helper.yaml" >>"$T/helper.log" 2>&1 &
	HPID=$!
	echo "$HPID" >"$T/helper.pid"
	i=0
	until [ -S "$S" ] && hc ping >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$HPID" 2>/dev/null; then
			cat "$T/helper.log" >&2
			fail "banger-helper did not come up"
		fi
		sleep 0.05
	done
}

hstop() {
	[ -n "${HPID:-}" ] || return 0
	kill -TERM "$HPID" 2>/dev/null
	wait_exit "$HPID" 10 || kill -KILL "$HPID" 2>/dev/null
	HPID=
}

# Everything a test may have left: processes it started, the helper, loop
# devices backed by files under $T, the namespace (and its links and rules).
hcleanup() {
	for p in $(cat "$T/pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	hstop
	losetup -l -n -O NAME,BACK-FILE 2>/dev/null | while read -r dev back; do
		case "$back" in "$T"/*) losetup -d "$dev" 2>/dev/null ;; esac
	done
	[ -n "${NS:-}" ] && ip netns del "$NS" 2>/dev/null
	[ -d "$T/cg" ] && rmdir "$T"/cg/*/bangerd.service "$T"/cg/* 2>/dev/null
	return 0
}

# hc ARGS...: hcall on our socket inside the namespace
hc() {
	ip netns exec "$NS" "$HCALL" "$S" "$@"
}

inns() {
	ip netns exec "$NS" "$@"
}

# expect_ok OUT [what] / expect_err OUT CODE [what]
expect_ok() {
	case "$1" in *'"ok":true'*) ;; *) fail "${2:-reply}: expected ok, got: $1" ;; esac
}
expect_err() {
	case "$1" in *"\"code\":\"$2\""*) ;; *) fail "${3:-reply}: expected error $2, got: $1" ;; esac
}

# links in the namespace (names only), for "nothing changed" checks
links() {
	inns ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' '
}

# ---------------------------------------------------------------------------

test_helper_needs_owner_in_config() {
	[ "$(id -u)" = 0 ] || hskip "needs root"
	printf 'state_dir: %s/state\nruntime_dir: %s/run\n' "$T" "$T" >"$T/noowner.yaml"
	out=$("$HELPER" --config "$T/noowner.yaml" 2>&1)
	expect_eq $? 1 "exit status without owner_uid"
	expect_contains "$out" "'owner_uid' is not set"
	[ ! -e "$T/run/banger-helper.sock" ] || fail "a socket was made without an owner"
	out=$(setpriv --reuid $STRANGER --regid $STRANGER --clear-groups "$HELPER" --config "$T/noowner.yaml" 2>&1)
	expect_contains "$out" "must run as root"
}

test_helper_socket_owner_mode_and_restart() {
	hsetup
	hstart
	expect_eq "$(stat -c '%u %a' "$S")" "$OWNER 600" "socket uid and mode"
	expect_eq "$(stat -c '%u %a' "$T/run")" "$OWNER 700" "runtime dir"
	expect_eq "$(stat -c '%u %a' "$T/state")" "$OWNER 700" "state dir"
	out=$(ip netns exec "$NS" "$HELPER" --config "$T/helper.yaml" 2>&1)
	expect_eq $? 1 "a second helper's exit status"
	expect_contains "$out" "another banger-helper is already listening"
	expect_ok "$(hc ping)" "first helper after the second was refused"
	hstop
	[ ! -e "$S" ] || fail "socket left behind after SIGTERM"
	grep -q '"msg":"banger-helper stopped"' "$T/helper.log" || fail "no clean stop logged"
	# a runtime dir that is somebody else's is refused at start
	rm -rf "$T/run"
	mkdir -m 700 "$T/run"
	out=$(ip netns exec "$NS" "$HELPER" --config "$T/helper.yaml" 2>&1)
	expect_eq $? 1 "exit status with a root-owned runtime dir"
	expect_contains "$out" "is owned by uid 0, not by the owner (uid $OWNER)"
	# a symlink in the path of a banger directory is refused at start
	rm -rf "$T/run"
	mkdir -p "$T/real"
	ln -s "$T/real" "$T/run"
	out=$(ip netns exec "$NS" "$HELPER" --config "$T/helper.yaml" 2>&1)
	expect_eq $? 1 "exit status with a symlinked runtime dir"
	expect_contains "$out" "a component is a symbolic link"
}

test_helper_refuses_non_owner_serves_owner() {
	hsetup
	hstart
	# the socket is 0600 inside a 0700 directory: open both wide so that the
	# peer check itself is what refuses the stranger
	chmod 0755 "$T"
	chmod 0711 "$T/run"
	chmod 0666 "$S"
	out=$(ip netns exec "$NS" \
		setpriv --reuid $STRANGER --regid $STRANGER --clear-groups "$HCALL" "$S" --peer-check 2>&1)
	expect_contains "$out" '"code":"PERM"' "reply to uid $STRANGER"
	expect_contains "$out" "uid $STRANGER may not use banger-helper"
	grep -q "\"event\":\"refused\",\"uid\":$STRANGER" "$T/helper.log" ||
		fail "the refusal is not in the log"
	out=$(ip netns exec "$NS" \
		setpriv --reuid $STRANGER --regid $STRANGER --clear-groups "$HCALL" "$S" net.bridge.ensure '{"bridge":"bgbr0"}' 2>&1)
	expect_contains "$out" "PERM" "a stranger's request"
	inns ip link show bgbr0 >/dev/null 2>&1 && fail "a stranger's request made a bridge"
	# the owner is served, and root is
	out=$(ip netns exec "$NS" \
		setpriv --reuid $OWNER --regid $OWNER --clear-groups "$HCALL" "$S" ping 2>&1)
	expect_ok "$out" "the owner's ping"
	grep -q "\"uid\":$OWNER,.*\"outcome\":\"ok\"\\|\"outcome\":\"ok\".*\"uid\":$OWNER" "$T/helper.log" ||
		fail "the owner's request is not in the log"
	expect_ok "$(hc ping)" "root's ping"
}

test_helper_bridge_ensure_remove() {
	hsetup
	hstart
	out=$(hc net.bridge.ensure '{"bridge":"bgbr0"}')
	expect_ok "$out"
	expect_contains "$out" '"created":true'
	expect_contains "$out" '"address":"10.213.0.1/24"'
	inns ip -d link show bgbr0 | grep -q 'bridge ' || fail "bgbr0 is not a bridge"
	inns ip link show bgbr0 | grep -q '[<,]UP[,>]' || fail "bgbr0 is not up"
	inns ip -4 addr show bgbr0 | grep -q 'inet 10.213.0.1/24' || fail "bgbr0 lacks 10.213.0.1/24"
	out=$(hc net.bridge.ensure '{"bridge":"bgbr0"}')
	expect_contains "$out" '"created":false' "ensure again"
	expect_eq "$(inns ip -4 -o addr show bgbr0 | wc -l)" 1 "addresses after a second ensure"
	# not while a port is attached
	expect_ok "$(hc net.tap.create '{"tap":"bg01","bridge":"bgbr0"}')"
	out=$(hc net.bridge.remove '{"bridge":"bgbr0"}')
	expect_err "$out" BUSY "remove with a port"
	expect_contains "$out" "bg01"
	inns ip link show bgbr0 >/dev/null || fail "a busy bridge was removed"
	expect_ok "$(hc net.tap.remove '{"tap":"bg01"}')"
	out=$(hc net.bridge.remove '{"bridge":"bgbr0"}')
	expect_contains "$out" '"removed":true'
	inns ip link show bgbr0 >/dev/null 2>&1 && fail "bgbr0 still there after remove"
	out=$(hc net.bridge.remove '{"bridge":"bgbr0"}')
	expect_contains "$out" '"removed":false' "remove what is gone"
	# only the configured bridge, by banger's name
	expect_err "$(hc net.bridge.ensure '{"bridge":"bgbr1"}')" INVAL "another banger-looking bridge"
	expect_err "$(hc net.bridge.ensure '{"bridge":"br0"}')" INVAL "a foreign bridge name"
	inns ip link show bgbr1 >/dev/null 2>&1 && fail "bgbr1 was made"
	# a link of that name that is not a bridge: refused, untouched
	inns ip link add bgbr0 type veth peer name bgvx0
	expect_err "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')" EXIST "ensure over a veth"
	expect_err "$(hc net.bridge.remove '{"bridge":"bgbr0"}')" EXIST "remove of a veth"
	inns ip -d link show bgbr0 | grep -q veth || fail "the veth was changed"
}

test_helper_tap_create_remove() {
	hsetup
	hstart
	expect_err "$(hc net.tap.create '{"tap":"bg0a","bridge":"bgbr0"}')" NOENT "tap without its bridge"
	inns ip link show bg0a >/dev/null 2>&1 && fail "a tap was made without a bridge"
	expect_ok "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')"
	out=$(hc net.tap.create '{"tap":"bg0a","bridge":"bgbr0"}')
	expect_ok "$out"
	expect_contains "$out" '"created":true'
	d=$(inns ip -d link show bg0a)
	expect_contains "$d" "tun type tap" "tap kind"
	expect_contains "$d" "user $OWNER" "tap owner"
	expect_contains "$d" "master bgbr0" "tap master"
	expect_contains "$d" "isolated on" "isolated bridge port"
	expect_contains "$d" "persist on" "persistent"
	inns ip link show bg0a | grep -q '[<,]UP[,>]' || fail "tap not up"
	expect_eq "$(inns bridge -d link show dev bg0a | grep -c 'isolated on')" 1 "bridge says isolated"
	out=$(hc net.tap.create '{"tap":"bg0a","bridge":"bgbr0"}')
	expect_contains "$out" '"created":false' "create again"
	# the owner can open it as a hypervisor would; a stranger cannot.  This
	# host's /dev/net/tun is 0600 (Debian's is 0666): in a private mount
	# namespace, a 0666 node of the same device stands in for it, so that
	# what is checked is the tap's owner, not the node's mode.
	mkdir -p "$T/devtun"
	opentap() {
		ip netns exec "$NS" unshare -m sh -c "
			mount -t tmpfs tmpfs '$T/devtun' && mknod -m 666 '$T/devtun/tun' c 10 200 &&
			mount --bind '$T/devtun/tun' /dev/net/tun &&
			exec setpriv --reuid $1 --regid $1 --clear-groups '$HCALL' --open-tap bg0a"
	}
	out=$(opentap $OWNER)
	expect_contains "$out" "opened tap bg0a as uid $OWNER" "owner opens the tap"
	out=$(opentap $STRANGER)
	expect_contains "$out" "cannot open tap bg0a as uid $STRANGER: Operation not permitted" \
		"a stranger opens the tap"
	# names: banger's prefix, hex, within IFNAMSIZ
	before=$(links)
	for n in eth0 bgzz bg bg0123456789abcd bgbr0 "bg0a/../x" BG0A; do
		expect_err "$(hc net.tap.create "{\"tap\":\"$n\",\"bridge\":\"bgbr0\"}")" INVAL "tap name '$n'"
	done
	expect_err "$(hc net.tap.create '{"tap":"bg0b","bridge":"bgbr7"}')" INVAL "tap on another bridge"
	expect_eq "$(links)" "$before" "links after refused requests"
	# a link of a tap's name that is not a tap is refused and left alone
	inns ip link add bg0c type veth peer name bgx0c
	expect_err "$(hc net.tap.remove '{"tap":"bg0c"}')" EXIST "remove a veth named like a tap"
	expect_err "$(hc net.tap.create '{"tap":"bg0c","bridge":"bgbr0"}')" EXIST "create over a veth"
	inns ip -d link show bg0c | grep -q veth || fail "the veth was changed"
	out=$(hc net.tap.remove '{"tap":"bg0a"}')
	expect_contains "$out" '"removed":true'
	inns ip link show bg0a >/dev/null 2>&1 && fail "tap still there after remove"
	expect_contains "$(hc net.tap.remove '{"tap":"bg0a"}')" '"removed":false' "remove what is gone"
}

test_helper_nat_nft() {
	hsetup "nat_backend: nft"
	command -v nft >/dev/null || hskip "nft is not installed"
	hstart
	expect_ok "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')"
	out=$(hc net.nat.ensure '{"addr":"10.213.0.5"}')
	expect_ok "$out"
	expect_contains "$out" '"backend":"nft"'
	r=$(inns nft list table ip banger)
	expect_contains "$r" "elements = { 10.213.0.5 }" "NATed guests"
	expect_contains "$r" "ip saddr @nat_guests ip daddr != 10.213.0.0/24 masquerade" "masquerade"
	expect_contains "$r" 'iifname "bgbr0" ip daddr 169.254.0.0/16 drop' "metadata blocked"
	expect_contains "$r" 'iifname "bgbr0" ip daddr 10.213.0.0/24 drop' "guests blocked from guests"
	expect_eq "$(inns cat /proc/sys/net/ipv4/ip_forward)" 1 "ip_forward in the namespace"
	expect_ok "$(hc net.nat.ensure '{"addr":"10.213.0.5"}')" "ensure again"
	expect_ok "$(hc net.nat.ensure '{"addr":"10.213.0.6"}')"
	expect_eq "$(inns nft list table ip banger | grep -c masquerade)" 1 "rules not duplicated"
	out=$(hc net.nat.clear '{"addr":"10.213.0.5"}')
	expect_contains "$out" '"removed":true'
	r=$(inns nft list set ip banger nat_guests)
	case "$r" in *10.213.0.5*) fail "10.213.0.5 still NATed" ;; esac
	expect_contains "$r" "10.213.0.6" "the other guest"
	expect_contains "$(hc net.nat.clear '{"addr":"10.213.0.5"}')" '"removed":false' "clear again"
	# addresses: inside the range, not network, gateway or broadcast
	for a in 10.214.0.5 10.213.1.5 10.213.0.0 10.213.0.1 10.213.0.255 169.254.169.254 \
		"10.213.0.5; flush ruleset" 10.213.0.05x "" 1.2.3.4.5; do
		expect_err "$(hc net.nat.ensure "{\"addr\":\"$a\"}")" INVAL "addr '$a'"
	done
	inns nft list ruleset | grep -q 'table ip banger' || fail "the table went away"
}

test_helper_nat_iptables() {
	hsetup "nat_backend: iptables"
	command -v iptables >/dev/null || hskip "iptables is not installed"
	hstart
	out=$(hc net.nat.ensure '{"addr":"10.213.0.7"}')
	expect_ok "$out"
	expect_contains "$out" '"backend":"iptables"'
	expect_contains "$(inns iptables -w -t nat -S BANGER-POSTROUTING)" \
		"-A BANGER-POSTROUTING -s 10.213.0.7/32 ! -d 10.213.0.0/24 -j MASQUERADE" "masquerade rule"
	f=$(inns iptables -w -S BANGER-FORWARD)
	expect_contains "$f" "-A BANGER-FORWARD -d 169.254.0.0/16 -i bgbr0 -j DROP" "metadata blocked"
	expect_contains "$f" "-A BANGER-FORWARD -d 10.213.0.0/24 -i bgbr0 -j DROP" "guests blocked"
	expect_contains "$(inns iptables -w -S BANGER-GUESTS)" "-A BANGER-GUESTS -s 10.213.0.7/32 -j ACCEPT"
	expect_contains "$(inns iptables -w -t nat -S POSTROUTING)" "-j BANGER-POSTROUTING" "jump"
	expect_ok "$(hc net.nat.ensure '{"addr":"10.213.0.7"}')" "ensure again"
	expect_eq "$(inns iptables -w -t nat -S BANGER-POSTROUTING | grep -c 10.213.0.7)" 1 "no duplicate"
	expect_eq "$(inns iptables -w -S FORWARD | grep -c BANGER-FORWARD)" 1 "one jump"
	expect_contains "$(hc net.nat.clear '{"addr":"10.213.0.7"}')" '"removed":true'
	inns iptables -w -t nat -S BANGER-POSTROUTING | grep -q 10.213.0.7 && fail "rule left after clear"
	expect_contains "$(hc net.nat.clear '{"addr":"10.213.0.7"}')" '"removed":false' "clear again"
}

test_helper_nat_off() {
	hsetup "nat: false"
	hstart
	out=$(hc net.nat.ensure '{"addr":"10.213.0.5"}')
	expect_err "$out" UNSUPPORTED "ensure with nat off"
	expect_contains "$out" "nat is off"
	expect_ok "$(hc net.nat.clear '{"addr":"10.213.0.5"}')" "clear with nat off"
	inns nft list tables 2>/dev/null | grep -q banger && fail "a table was made with nat off"
	return 0
}

# an owner-owned sparse file under $T/state
mkimg() {
	mkdir -p "$(dirname "$1")"
	truncate -s "${2:-4M}" "$1"
	chown "$OWNER:$OWNER" "$1" "$(dirname "$1")"
}

# loop devices backed by FILE (names)
loops_of() {
	losetup -n -O NAME -j "$1" 2>/dev/null | tr '\n' ' '
}

# wait_no_loops FILE WHAT: until no loop device is backed by FILE (2 s)
wait_no_loops() {
	i=0
	while [ -n "$(loops_of "$1")" ]; do
		i=$((i + 1))
		[ $i -gt 40 ] && fail "$2: $(loops_of "$1")still attached"
		sleep 0.05
	done
}

test_helper_loop_attach_detach() {
	command -v losetup >/dev/null || hskip "losetup is not installed"
	hsetup
	[ -e /dev/loop-control ] || hskip "no /dev/loop-control"
	hstart
	mkimg "$T/state/images/base.ext4"
	mkimg "$T/state/jobs/1/cow.img"
	# read-only: the device exists while the descriptor from the reply is held
	out=$(hc loop.attach "{\"path\":\"$T/state/images/base.ext4\",\"ro\":true}" --then sh -c "
		losetup -n -O RO,AUTOCLEAR,BACK-FILE -j '$T/state/images/base.ext4' >'$T/ro.txt'
		'$HCALL' '$S' loop.attach '{\"path\":\"$T/state/images/base.ext4\",\"ro\":true}' >'$T/again.txt'
		'$HCALL' '$S' loop.attach '{\"path\":\"$T/state/images/base.ext4\",\"ro\":false}' >'$T/rw.txt'
		")
	expect_ok "$out" "attach ro"
	dev=$(echo "$out" | sed -n 's/.*"device":"\([^"]*\)".*/\1/p')
	expect_contains "$out" "\"fd\":\"$dev\"" "the reply passes the device"
	expect_eq "$(tr -s ' ' <"$T/ro.txt" | sed 's/^ //')" "1 1 $T/state/images/base.ext4" "ro, autoclear, backing file"
	expect_contains "$(cat "$T/again.txt")" "\"device\":\"$dev\"" "attach again: same device"
	expect_contains "$(cat "$T/again.txt")" '"created":false'
	expect_err "$(cat "$T/rw.txt")" BUSY "read-write while attached read-only"
	# the last descriptor closed with hcall: autoclear released it
	wait_no_loops "$T/state/images/base.ext4" "after its last descriptor closed"
	# read-write, then detach by backing file while held: cleared when let go
	out=$(hc loop.attach "{\"path\":\"$T/state/jobs/1/cow.img\",\"ro\":false}" --then sh -c "
		losetup -n -O RO -j '$T/state/jobs/1/cow.img' >'$T/rwflag.txt'
		'$HCALL' '$S' loop.detach '{\"path\":\"$T/state/jobs/1/cow.img\"}' >'$T/detach.txt'
		")
	expect_ok "$out" "attach rw"
	expect_eq "$(tr -d ' ' <"$T/rwflag.txt")" 0 "read-write"
	expect_contains "$(cat "$T/detach.txt")" '"detached":1' "detach while in use"
	wait_no_loops "$T/state/jobs/1/cow.img" "cow.img after detach and close"
	expect_contains "$(hc loop.detach "{\"path\":\"$T/state/jobs/1/cow.img\"}")" '"detached":0' "detach again"
	# a device someone attached by hand (no autoclear) is detached for real
	d=$(losetup -f --show "$T/state/jobs/1/cow.img") || fail "losetup"
	expect_contains "$(hc loop.detach "{\"path\":\"$T/state/jobs/1/cow.img\"}")" '"detached":1'
	wait_no_loops "$T/state/jobs/1/cow.img" "a plain device ($d) after detach"

	# refused: not the owner's, outside the state dir, traversal, symlinks,
	# not a regular file, empty
	truncate -s 1M "$T/state/images/rootowned.img"
	chown 0:0 "$T/state/images/rootowned.img"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/images/rootowned.img\",\"ro\":true}")" PERM "root's file"
	mkdir -p "$T/elsewhere"; mkimg "$T/elsewhere/x.img"
	expect_err "$(hc loop.attach "{\"path\":\"$T/elsewhere/x.img\",\"ro\":true}")" INVAL "outside the state dir"
	mkimg "$T/run/x.img"
	expect_err "$(hc loop.attach "{\"path\":\"$T/run/x.img\",\"ro\":true}")" INVAL "in the runtime dir"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/../elsewhere/x.img\",\"ro\":true}")" INVAL ".."
	expect_err "$(hc loop.attach "{\"path\":\"$T/state//images/base.ext4\",\"ro\":true}")" INVAL "//"
	expect_err "$(hc loop.attach "{\"path\":\"state/images/base.ext4\",\"ro\":true}")" INVAL "relative"
	ln -s "$T/elsewhere" "$T/state/link"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/link/x.img\",\"ro\":true}")" PERM "symlink component"
	ln -s "$T/elsewhere/x.img" "$T/state/images/final-link.img"
	out=$(hc loop.attach "{\"path\":\"$T/state/images/final-link.img\",\"ro\":true}")
	expect_err "$out" PERM "symlink as the last component"
	expect_contains "$out" "symbolic link"
	mkfifo "$T/state/images/fifo"; chown $OWNER "$T/state/images/fifo"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/images/fifo\",\"ro\":true}")" INVAL "a fifo"
	: >"$T/state/images/empty.img"; chown $OWNER "$T/state/images/empty.img"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/images/empty.img\",\"ro\":true}")" INVAL "empty file"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/images/base.ext4\"}")" INVAL "missing ro"
	expect_err "$(hc loop.attach "{\"path\":\"$T/state/images/base.ext4\",\"ro\":1}")" INVAL "ro as int"
	expect_eq "$(losetup -l -n -O BACK-FILE | grep -c "^$T/")" 0 "loop devices of this test left"
}

test_helper_dm_snapshot_unsupported_on_this_kernel() {
	hsetup
	hstart
	grep -q ' device-mapper$' /proc/misc && hskip "this kernel has device-mapper: the real dm test is not written yet"
	out=$(hc dm.snapshot.create '{"dm":"bg-vm1","origin":"/dev/loop0","cow":"/dev/loop1"}')
	expect_err "$out" UNSUPPORTED "dm.snapshot.create without device-mapper"
	expect_contains "$out" "no device-mapper"
	expect_err "$(hc dm.snapshot.remove '{"dm":"bg-vm1"}')" UNSUPPORTED "dm.snapshot.remove"
	# validation comes first, whatever the kernel has
	expect_err "$(hc dm.snapshot.create '{"dm":"root","origin":"/dev/loop0","cow":"/dev/loop1"}')" INVAL "dm name"
	expect_err "$(hc dm.snapshot.create '{"dm":"bg-vm1","origin":"/dev/sda","cow":"/dev/loop1"}')" INVAL "origin"
	expect_err "$(hc dm.snapshot.create '{"dm":"bg-vm1","origin":"/dev/loop0","cow":"/dev/loop0"}')" INVAL "same device"
	expect_err "$(hc dm.snapshot.create '{"dm":"bg-vm1","origin":"/dev/loop01","cow":"/dev/loop1"}')" INVAL "leading zero"
	expect_err "$(hc dm.snapshot.remove '{"dm":"bg-"}')" INVAL "empty dm suffix"
	expect_contains "$(hc inventory)" '"dm_supported":false' "inventory says so"
}

test_helper_proc_signal() {
	hsetup
	hstart
	mkdir -p "$T/run/vms/x"
	# "a hypervisor": its command line names a path under the runtime dir
	bash -c "exec -a '$T/run/vms/x/hypervisor' sleep 60" &
	vm=$!
	echo "$vm" >>"$T/pids"
	sleep 0.1
	for s in STOP SEGV SIGTERM term 9 ""; do
		expect_err "$(hc proc.signal "{\"pid\":$vm,\"signal\":\"$s\"}")" INVAL "signal '$s'"
	done
	kill -0 $vm || fail "a refused signal reached the process"
	expect_err "$(hc proc.signal "{\"pid\":$$,\"signal\":\"KILL\"}")" PERM "the test's own pid"
	expect_err "$(hc proc.signal '{"pid":1,"signal":"KILL"}')" PERM "pid 1"
	expect_err "$(hc proc.signal "{\"pid\":$HPID,\"signal\":\"KILL\"}")" PERM "the helper (ip netns exec)"
	hp=$(pgrep -f "banger-helper --config $T/helper.yaml" | head -1)
	expect_err "$(hc proc.signal "{\"pid\":$hp,\"signal\":\"TERM\"}")" PERM "the helper itself"
	expect_err "$(hc proc.signal '{"pid":0,"signal":"TERM"}')" INVAL "pid 0"
	expect_err "$(hc proc.signal '{"pid":-5,"signal":"TERM"}')" INVAL "negative pid"
	expect_err "$(hc proc.signal '{"pid":"12","signal":"TERM"}')" INVAL "pid as a string"
	# a look-alike: the path only starts like the runtime dir
	bash -c "exec -a '${T}/runx/vm' sleep 60" &
	other=$!
	echo "$other" >>"$T/pids"
	sleep 0.1
	expect_err "$(hc proc.signal "{\"pid\":$other,\"signal\":\"TERM\"}")" PERM "a look-alike path"
	kill -0 $other || fail "the look-alike was signalled"
	out=$(hc proc.signal "{\"pid\":$vm,\"signal\":\"TERM\"}")
	expect_contains "$out" '"signalled":true' "TERM to banger's process"
	wait_exit $vm 5 || fail "the process did not die of TERM"
	expect_contains "$(hc proc.signal "{\"pid\":$vm,\"signal\":\"KILL\"}")" '"signalled":false' "a gone process"
	# banger's by cgroup: under a bangerd.service cgroup (v2), any command line
	cg=/sys/fs/cgroup/unified
	[ -w "$cg" ] || cg=/sys/fs/cgroup
	if mkdir -p "$cg/banger-test-$$/bangerd.service" 2>/dev/null &&
		[ -e "$cg/banger-test-$$/bangerd.service/cgroup.procs" ]; then
		mkdir -p "$T/cg" && ln -s "$cg/banger-test-$$" "$T/cg/g"
		sleep 60 &
		cp=$!
		echo "$cp" >>"$T/pids"
		echo "$cp" >"$cg/banger-test-$$/bangerd.service/cgroup.procs" || fail "cannot move into the cgroup"
		expect_contains "$(hc proc.signal "{\"pid\":$cp,\"signal\":\"KILL\"}")" '"signalled":true' "by cgroup"
		wait_exit $cp 5 || fail "the cgroup process did not die"
		rmdir "$cg/banger-test-$$/bangerd.service" "$cg/banger-test-$$"
		rm -rf "$T/cg"
	else
		echo "note: no writable cgroup v2 here; the cgroup rule was not exercised"
	fi
	kill $other 2>/dev/null
	return 0
}

test_helper_fs_chown() {
	hsetup
	hstart
	mkdir -p "$T/run/vms/a" "$T/outside"
	: >"$T/run/vms/a/serial.log"
	: >"$T/outside/secret"
	out=$(hc fs.chown "{\"path\":\"$T/run/vms/a/serial.log\"}")
	expect_contains "$out" '"changed":true'
	expect_eq "$(stat -c '%u:%g' "$T/run/vms/a/serial.log")" "$OWNER:$OWNER" "owner after chown"
	expect_contains "$(hc fs.chown "{\"path\":\"$T/run/vms/a/serial.log\"}")" '"changed":false' "again"
	python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$T/state/api.sock"
	expect_ok "$(hc fs.chown "{\"path\":\"$T/state/api.sock\"}")" "a socket in the state dir"
	expect_eq "$(stat -c '%u' "$T/state/api.sock")" "$OWNER" "socket owner"
	# refused, the target untouched each time
	ln -s "$T/outside" "$T/run/vms/link"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/link/secret\"}")" PERM "symlink component"
	ln -s "$T/outside/secret" "$T/run/vms/a/final"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/a/final\"}")" PERM "final symlink"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/../outside/secret\"}")" INVAL ".."
	expect_err "$(hc fs.chown "{\"path\":\"$T/outside/secret\"}")" INVAL "outside banger's dirs"
	expect_err "$(hc fs.chown '{"path":"/etc/shadow"}')" INVAL "/etc/shadow"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run\"}")" INVAL "the runtime dir itself"
	ln "$T/outside/secret" "$T/run/vms/a/hardlink"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/a/hardlink\"}")" PERM "a hard link"
	mkfifo "$T/run/vms/a/fifo"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/a/fifo\"}")" INVAL "a fifo"
	expect_eq "$(stat -c '%u' "$T/outside/secret")" 0 "the outside file's owner"
	expect_eq "$(stat -c '%u' "$T/run/vms/a/fifo")" 0 "the fifo's owner"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/a/missing\"}")" NOENT "missing file"
	expect_err "$(hc fs.chown "{\"path\":\"$T/run/vms/a/serial.log\",\"uid\":0}")" INVAL "a uid field"
}

# The path is valid when checked; a symlink is swapped in before the helper
# opens it (a failpoint holds the helper between the two).
test_helper_symlink_swapped_in_after_validation() {
	hsetup
	hstart BANGER_FAILPOINTS='helper/fs.chown/validated=sleep:2500,helper/loop.attach/validated=sleep:2500'
	mkdir -p "$T/run/d" "$T/outside"
	: >"$T/run/d/f"
	: >"$T/outside/f"
	hc fs.chown "{\"path\":\"$T/run/d/f\"}" >"$T/chown.out" &
	c=$!
	sleep 0.5
	mv "$T/run/d" "$T/run/d.real"
	ln -s "$T/outside" "$T/run/d"
	wait $c
	out=$(cat "$T/chown.out")
	expect_err "$out" PERM "chown after a directory became a symlink"
	expect_contains "$out" "symbolic link"
	expect_eq "$(stat -c '%u' "$T/outside/f")" 0 "the file the symlink points at"
	# the last component swapped for a symlink to an owner-owned file outside
	mkimg "$T/state/img/base.ext4"
	mkimg "$T/outside/other.img"
	hc loop.attach "{\"path\":\"$T/state/img/base.ext4\",\"ro\":true}" >"$T/loop.out" &
	c=$!
	sleep 0.5
	mv "$T/state/img/base.ext4" "$T/state/img/base.real"
	ln -s "$T/outside/other.img" "$T/state/img/base.ext4"
	wait $c
	expect_err "$(cat "$T/loop.out")" PERM "loop.attach after the file became a symlink"
	expect_eq "$(loops_of "$T/outside/other.img")" "" "loop devices on the outside file"
}

test_helper_malformed_requests_change_nothing() {
	hsetup
	hstart
	expect_ok "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')"
	before=$(links)
	expect_err "$(hc net.tap.destroy '{"tap":"bg01"}')" INVAL "unknown method"
	expect_contains "$(hc sh '{"c":"reboot"}')" "unknown method 'sh'"
	expect_err "$(hc net.tap.create '{"tap":5,"bridge":"bgbr0"}')" INVAL "tap as an int"
	expect_contains "$(hc net.tap.create '{"tap":5,"bridge":"bgbr0"}')" "'tap' must be a string"
	expect_err "$(hc net.tap.create '{"tap":["bg01"],"bridge":"bgbr0"}')" INVAL "tap as a list"
	expect_err "$(hc net.tap.create '{"tap":null,"bridge":"bgbr0"}')" INVAL "tap null"
	out=$(hc net.tap.create '{"tap":"bg01"}')
	expect_err "$out" INVAL "missing field"
	expect_contains "$out" "needs field 'bridge'"
	out=$(hc net.tap.create '{"tap":"bg01","bridge":"bgbr0","owner":0}')
	expect_err "$out" INVAL "extra field"
	expect_contains "$out" "takes no field 'owner'"
	expect_err "$(hc net.tap.create '[1,2]')" PROTO "params not a map"
	expect_err "$(hc - '{}')" PROTO "no method"
	expect_err "$(hc ping '{}' --op '')" PROTO "no op id"
	expect_err "$(hc ping '{}' --op 'x y')" PROTO "op id with a space"
	expect_err "$(hc ping '{}' --op "$(printf 'o%.0s' $(seq 65))")" PROTO "op id too long"
	expect_err "$(hc ping '{"x":1}')" INVAL "ping with a field"
	expect_contains "$(hc --raw garbage)" '"code":"PROTO"' "garbage"
	out=$(hc --raw oversize)
	expect_contains "$out" '"code":"TOOBIG"' "a frame over the limit"
	expect_contains "$out" "closed" "connection after an oversized frame"
	expect_contains "$(hc --raw zero)" '"code":"PROTO"' "empty frame"
	expect_eq "$(hc --raw truncated)" closed "a truncated frame"
	expect_eq "$(hc --raw hdr-only)" closed "a truncated header"
	expect_contains "$(hc --raw notmap)" '"code":"PROTO"' "not a map"
	expect_contains "$(hc --raw trailing)" "not exactly one msgpack map" "trailing bytes"
	out=$(hc --raw dupkey)
	expect_contains "$out" "key 'tap' appears twice" "duplicate key"
	expect_contains "$(hc --raw extrakey)" "unknown request field 'sudo'" "extra envelope field"
	expect_contains "$(hc --raw noop)" "missing 'op'" "no op"
	expect_contains "$(hc --raw nomethod-type)" "'method' must be a string" "method not a string"
	expect_eq "$(links)" "$before" "links after malformed requests"
	expect_ok "$(hc ping)" "the helper after all of it"
	# each request above got exactly one audit line
	expect_eq "$(grep -c '"method":"net.tap.create"' "$T/helper.log")" 6 \
		"audit lines for the six refused net.tap.create requests"
}

test_helper_client_disconnects_mid_request() {
	hsetup
	hstart
	expect_ok "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')"
	HCALL_BRIDGE=bgbr0 ip netns exec "$NS" "$HCALL" "$S" --raw hang-up >/dev/null
	i=0
	until grep -q '"op":"t-hangup"' "$T/helper.log"; do
		i=$((i + 1)); [ $i -gt 100 ] && fail "no log line for the abandoned request"
		sleep 0.05
	done
	# the request ran to its end (idempotent); the helper serves on
	expect_ok "$(hc ping)" "after a client hung up"
	inns ip link show bgdead01 >/dev/null || fail "the abandoned create did not complete"
	expect_contains "$(hc net.tap.remove '{"tap":"bgdead01"}')" '"removed":true' "undo of it"
	for i in 1 2 3 4 5; do hc --raw truncated >/dev/null; done
	expect_ok "$(hc ping)" "after clients that left mid-frame"
	kill -0 "$HPID" || fail "the helper died"
}

test_helper_audit_log() {
	hsetup
	hstart
	hc ping '{}' --op job-42-1 >/dev/null
	hc net.tap.create '{"tap":"bg01","bridge":"bgbr0"}' --op job-42-2 >/dev/null
	hc --raw garbage >/dev/null
	expect_eq "$(grep -c '"op":"job-42-1"' "$T/helper.log")" 1 "lines for op job-42-1"
	l=$(grep '"op":"job-42-1"' "$T/helper.log")
	expect_contains "$l" '"method":"ping"'
	expect_contains "$l" '"outcome":"ok"'
	expect_contains "$l" '"duration_us":'
	expect_contains "$l" '"uid":0'
	l=$(grep '"op":"job-42-2"' "$T/helper.log")
	expect_contains "$l" '"outcome":"error"'
	expect_contains "$l" '"code":"NOENT"'
	expect_contains "$l" "call net.bridge.ensure first"
	l=$(grep 'not exactly one msgpack map' "$T/helper.log")
	expect_contains "$l" '"op":null'
	expect_contains "$l" '"code":"PROTO"'
	# every line is JSON
	jq -e . "$T/helper.log" >/dev/null || fail "a log line is not JSON"
}

test_helper_inventory_lists_banger_things() {
	hsetup
	hstart
	expect_ok "$(hc net.bridge.ensure '{"bridge":"bgbr0"}')"
	expect_ok "$(hc net.tap.create '{"tap":"bg1234","bridge":"bgbr0"}')"
	inns ip link add bgnothex type veth peer name veth0 # not banger names: not listed
	expect_ok "$(hc net.nat.ensure '{"addr":"10.213.0.9"}')"
	mkimg "$T/state/i.img"
	bash -c "exec -a '$T/run/vm/hv' sleep 60" &
	echo $! >>"$T/pids"
	sleep 0.1
	hc loop.attach "{\"path\":\"$T/state/i.img\",\"ro\":true}" --then sh -c "'$HCALL' '$S' inventory >'$T/inv.json'" >/dev/null
	inv=$(cat "$T/inv.json")
	expect_eq "$(echo "$inv" | jq -c '.result.taps')" "[{\"master\":\"bgbr0\",\"name\":\"bg1234\",\"owner\":$OWNER}]" taps
	expect_eq "$(echo "$inv" | jq -c '.result.bridges')" '[{"name":"bgbr0"}]' bridges
	expect_eq "$(echo "$inv" | jq -c '.result.nat')" '[{"addr":"10.213.0.9"}]' nat
	expect_eq "$(echo "$inv" | jq -r '.result.loops[0].backing')" "$T/state/i.img" loops
	expect_eq "$(echo "$inv" | jq -r '.result.procs[] | select(.cmd == "'"$T/run/vm/hv"'") | .cmd')" "$T/run/vm/hv" procs
	expect_eq "$(echo "$inv" | jq -c '.result.dms')" '[]' dms
}

test_helper_stubs_and_undo_records() {
	hsetup
	hstart
	[ -x "$HBIN/hstub" ] || hskip "build/hstub missing"
	mkimg "$T/state/s.img"
	out=$(inns "$HBIN/hstub" "$S" bgbr0 bg5eed 10.213.0.77 "$T/state/s.img" 2>&1)
	echo "$out"
	expect_contains "$out" "hstub: all ok"
	expect_eq "$(links)" "lo " "links left by the stubs"
}

test_helper_fuzz_smoke() {
	[ -x "$HBIN/fuzz-helper" ] || [ -x "$ROOT/build/fuzz-helper" ] ||
		hskip "build/fuzz-helper not built (needs clang with libFuzzer)"
	f=$HBIN/fuzz-helper
	[ -x "$f" ] || f=$ROOT/build/fuzz-helper
	mkdir -p "$T/corpus"
	cp "$ROOT"/tests/fuzz/corpus/* "$T/corpus/" 2>/dev/null
	"$f" -runs=30000 -seed=1 -timeout=5 -max_len=4096 -artifact_prefix="$T/" "$T/corpus" >"$T/fuzz.log" 2>&1 ||
		{ tail -30 "$T/fuzz.log"; fail "the fuzzer found something (see $T/fuzz.log)"; }
	grep -q "Done 30000 runs" "$T/fuzz.log" || { tail -5 "$T/fuzz.log"; fail "fuzzer did not finish its runs"; }
}

test_helper_system_install_writes_units_and_config() {
	[ -x "$BANGER" ] || hskip "build/banger missing"
	r=$T/root
	out=$("$BANGER" system install --root "$r" --owner nobody --bin-dir /opt/banger/bin \
		--state-dir /srv/banger/state --runtime-dir /run/banger-ci --dry-run)
	expect_contains "$out" "==> $r/etc/banger/banger.yaml"
	[ ! -e "$r" ] || fail "--dry-run wrote files"
	out=$("$BANGER" system install --root "$r" --owner nobody --bin-dir /opt/banger/bin \
		--state-dir /srv/banger/state --runtime-dir /run/banger-ci --net-range 10.77.0.0/24)
	expect_eq $? 0 "install status"
	expect_contains "$out" "wrote $r/etc/systemd/system/banger-helper.service"
	u=$(cat "$r/etc/systemd/system/bangerd.service")
	expect_contains "$u" "User=nobody"
	expect_contains "$u" "ExecStart=/opt/banger/bin/bangerd"
	expect_contains "$u" "KillMode=process"
	expect_contains "$u" "NoNewPrivileges=yes"
	expect_contains "$u" "CapabilityBoundingSet="$'\n'
	expect_contains "$u" "ReadWritePaths=-/srv/banger/state -/run/banger-ci"
	h=$(cat "$r/etc/systemd/system/banger-helper.service")
	expect_contains "$h" "ExecStart=/opt/banger/bin/banger-helper"
	expect_contains "$h" "ProtectSystem=strict"
	expect_contains "$h" "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN"
	case "$h" in *"User="*) fail "the helper unit sets a User" ;; esac
	c=$(cat "$r/etc/banger/banger.yaml")
	expect_contains "$c" "owner_uid: $(id -u nobody)"
	expect_contains "$c" "net_range: 10.77.0.0/24"
	expect_contains "$(cat "$r/etc/tmpfiles.d/banger.conf")" "d /srv/banger/state 0700 nobody"
	# the helper accepts the config it wrote (directories overridden: --check
	# creates them)
	out=$("$HELPER" --config "$r/etc/banger/banger.yaml" --state-dir "$T/st" --runtime-dir "$T/rn" --check 2>&1)
	expect_contains "$out" "ok (owner uid $(id -u nobody), bridge bgbr0, range 10.77.0.0/24, nat nft)"
	# again: unchanged; a config edited by hand is kept unless --force
	out=$("$BANGER" system install --root "$r" --owner nobody --bin-dir /opt/banger/bin \
		--state-dir /srv/banger/state --runtime-dir /run/banger-ci --net-range 10.77.0.0/24)
	expect_contains "$out" "unchanged $r/etc/banger/banger.yaml"
	echo "log_level: debug" >>"$r/etc/banger/banger.yaml"
	out=$("$BANGER" system install --root "$r" --owner nobody 2>&1)
	expect_eq $? 1 "status over an edited config"
	expect_contains "$out" "exists and differs: use --force"
	grep -q "log_level: debug" "$r/etc/banger/banger.yaml" || fail "the edited config was replaced"
	out=$("$BANGER" system install --root "$r" --owner nobody --force)
	expect_eq $? 0 "status with --force"
	# systemd itself accepts the units (where systemd-analyze exists)
	if command -v systemd-analyze >/dev/null; then
		"$BANGER" system install --root "$T/root3" --owner nobody --bin-dir "$HBIN" >/dev/null ||
			fail "install into root3"
		out=$(systemd-analyze verify "$T/root3/etc/systemd/system/bangerd.service" \
			"$T/root3/etc/systemd/system/banger-helper.service" 2>&1)
		expect_eq $? 0 "systemd-analyze verify: $out"
	fi
	# bad values are refused before anything is written
	out=$("$BANGER" system install --root "$T/root2" --owner nobody --bridge br0 2>&1)
	expect_eq $? 2 "status with a bad bridge"
	expect_contains "$out" "'bridge' must be 'bgbr' followed by"
	[ ! -e "$T/root2" ] || fail "files written for a bad config"
	out=$("$BANGER" system install --root "$T/root2" --owner root 2>&1)
	expect_contains "$out" "the owner must not be root"
}
