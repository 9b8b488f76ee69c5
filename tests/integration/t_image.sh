# t_image.sh: the image.pull kind end to end: the real bangerd (test build),
# the real CLI, Debian's docker-registry on 127.0.0.1 with images built from
# busybox-static and pushed with skopeo; results checked with e2fsprogs.

FIX=$ROOT/tests/fixtures
. "$FIX/registry.sh"

need() {
	for t in docker-registry skopeo busybox python3 jq debugfs e2fsck; do
		command -v "$t" >/dev/null 2>&1 || { echo "skip: $t is not installed"; exit 77; }
	done
}

# a registry with busybox (plus one text file) at ci/busybox:1; sets BB
setup_registry() {
	need
	registry_start "$T/reg" plain || fail "registry did not start"
	BB=$("$FIX/mkimage.sh" layout "$T/oci" bb busybox text:etc/banger=hello) || fail "mkimage"
	"$FIX/mkimage.sh" push "$T/oci:bb" "$REG_ADDR/ci/busybox:1" >"$T/push.log" 2>&1 ||
		fail "push: $(cat "$T/push.log")"
}

pull_spec() {
	spec "$1" <<EOF2
jobs:
  pull: { kind: image.pull, ref: "$2" }
EOF2
}

test_image_pull_builds_a_bootable_rootfs() {
	setup_registry
	start_daemon
	pull_spec pull.yaml "$REG_ADDR/ci/busybox:1"
	out=$(b job submit "$T/pull.yaml" --follow 2>&1)
	expect_eq $? 0 "submit --follow of an image.pull (output: $out)"
	expect_eq "$(jfield 1 result.digest)" "$BB" "the job's result digest"
	b image list --json >"$T/images.json"
	expect_eq "$(jq -r '.images[0].refs[0]' "$T/images.json")" "$REG_ADDR/ci/busybox:1" ref
	expect_eq "$(jq -r '.images[0].digest' "$T/images.json")" "$BB" digest
	rootfs=$(jq -r '.images[0].rootfs' "$T/images.json")
	[ -f "$rootfs" ] || fail "rootfs $rootfs missing"
	expect_eq "$(jq -r '.images[0].size' "$T/images.json")" "$(stat -c %s "$rootfs")" "size"
	e2fsck -fn "$rootfs" >"$T/fsck.log" 2>&1 || fail "e2fsck: $(cat "$T/fsck.log")"
	debugfs -R 'stat /bin/busybox' "$rootfs" 2>/dev/null | grep -q 'Mode:  0755' ||
		fail "/bin/busybox is not 0755 in the image"
	debugfs -R 'dump /etc/banger '"$T/banger.txt" "$rootfs" >/dev/null 2>&1
	expect_eq "$(cat "$T/banger.txt")" hello "/etc/banger in the image"
	# no temp files next to the image
	expect_eq "$(ls "$(dirname "$rootfs")" | grep -c tmp)" 0 "temp files left"
	# the op log names the temp file the build step would have removed
	b oplog 1 --json | jq -e '.attempts[0].steps[1].undo.tmp | test("rootfs.ext4.tmp-1$")' >/dev/null ||
		fail "build step's undo record does not name its temp file"
	b job tail 1 --json | jq -s -e 'map(select(.stream=="progress")) | length > 0' >/dev/null ||
		fail "no progress events"
}

test_image_pull_warm_cache_and_concurrent_pulls() {
	setup_registry
	start_daemon
	spec two.yaml <<EOF2
jobs:
  a: { kind: image.pull, ref: "$REG_ADDR/ci/busybox:1" }
  b: { kind: image.pull, ref: "$REG_ADDR/ci/busybox:1" }
EOF2
	b job submit "$T/two.yaml" --follow >/dev/null 2>&1 || fail "two concurrent pulls"
	# one built it, the other reused it
	c1=$(jfield 1 result.cached) c2=$(jfield 2 result.cached)
	[ "$c1$c2" = truefalse ] || [ "$c1$c2" = falsetrue ] ||
		fail "expected exactly one build, got cached=$c1/$c2"
	expect_eq "$(b image list --json | jq '.images | length')" 1 "images"
	# a third pull is a cache hit: nothing downloaded, nothing built
	pull_spec again.yaml "$REG_ADDR/ci/busybox:1"
	b job submit "$T/again.yaml" --follow >/dev/null 2>&1 || fail "warm pull"
	expect_eq "$(jfield 3 result.cached)" true "warm pull reused the image"
	b job tail 3 --json | jq -s -r 'map(select(.stream=="log") | .data) | join("\n")' |
		grep -q "every blob was in the cache" || fail "warm pull downloaded something"
}

test_image_pull_unknown_tag_fails_cleanly() {
	setup_registry
	start_daemon
	pull_spec nope.yaml "$REG_ADDR/ci/busybox:nope"
	b job submit "$T/nope.yaml" --follow >/dev/null 2>&1 && fail "pull of an unknown tag succeeded"
	expect_eq "$(jfield 1 state)" failed "state (a 404 is permanent: no retries)"
	expect_eq "$(jfield 1 attempts)" 1 attempts
	expect_contains "$(jfield 1 error)" "not found"
	expect_eq "$(b image list --json | jq '.images | length')" 0 "images"
	[ -z "$(ls "$T/state/images" 2>/dev/null)" ] || fail "something left in images/: $(ls -R "$T/state/images")"
}

test_image_rm() {
	setup_registry
	start_daemon
	pull_spec pull.yaml "$REG_ADDR/ci/busybox:1"
	b job submit "$T/pull.yaml" --follow >/dev/null 2>&1 || fail pull
	rootfs=$(b image show "$REG_ADDR/ci/busybox:1" --json | jq -r .rootfs)
	[ -f "$rootfs" ] || fail "no rootfs"
	expect_contains "$(b image rm "$REG_ADDR/ci/busybox:1")" "removed $BB"
	[ ! -e "$rootfs" ] || fail "rootfs still there after image rm"
	b image show "$BB" >/dev/null 2>&1 && fail "image still listed"
	true
}

# SIGKILL the daemon inside each step of image.pull: every step resumes
test_image_pull_crash_at_every_step_resumes() {
	setup_registry
	n=0
	for fp in image.pull/fetch:after image.pull/build:before image.pull/build:after \
		image.pull/publish:after image.pull:finish; do
		n=$((n + 1))
		pull_spec "p$n.yaml" "$REG_ADDR/ci/busybox:1"
		BANGER_FAILPOINTS="$fp=crash" start_daemon
		b job submit "$T/p$n.yaml" >/dev/null 2>&1
		wait_exit "$DAEMON_PID" 30 || fail "failpoint $fp never hit"
		DAEMON_PID=
		start_daemon
		expect_eq "$(WAIT=60 wait_final $n)" succeeded "pull after a crash at $fp"
		expect_eq "$(b image list --json | jq '.images | length')" 1 "images after $fp"
		rootfs=$(b image list --json | jq -r '.images[0].rootfs')
		e2fsck -fn "$rootfs" >/dev/null 2>&1 || fail "image not valid after a crash at $fp"
		expect_eq "$(ls "$(dirname "$rootfs")" | grep -c tmp)" 0 "temp files after $fp"
		stop_daemon
		# next round starts from nothing
		rm -rf "$T/state/images"
		sqlite3 "$T/state/queue.db" "DELETE FROM images; DELETE FROM image_refs"
	done
}
