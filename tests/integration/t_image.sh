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

# ---- banger image cache prune ----

# a second image at ci/other:1 sharing the busybox layer with ci/busybox:1;
# sets OTHER and OTHER_BLOBS (its manifest, config and layers, one a line)
setup_other() {
	OTHER=$("$FIX/mkimage.sh" layout "$T/oci" other busybox text:etc/other=world) || fail "mkimage other"
	"$FIX/mkimage.sh" push "$T/oci:other" "$REG_ADDR/ci/other:1" >"$T/push2.log" 2>&1 ||
		fail "push other: $(cat "$T/push2.log")"
	OTHER_BLOBS=$( (echo "$OTHER"; jq -r '.config.digest, .layers[].digest' \
		"$T/oci/blobs/sha256/${OTHER#sha256:}") | sort)
}

# the blobs of an image in the test's OCI layout (manifest digest $1), sorted
layout_blobs() {
	(echo "$1"; jq -r '.config.digest, .layers[].digest' "$T/oci/blobs/sha256/${1#sha256:}") | sort
}

cached_blobs() {
	ls "$T/state/blobs/sha256" 2>/dev/null | sed 's/^/sha256:/' | sort
}

pull_both() {
	spec both.yaml <<EOF2
jobs:
  bb: { kind: image.pull, ref: "$REG_ADDR/ci/busybox:1" }
  other: { kind: image.pull, ref: "$REG_ADDR/ci/other:1" }
EOF2
	b job submit "$T/both.yaml" --follow >"$T/both.out" 2>&1 || fail "pulls: $(cat "$T/both.out")"
}

test_image_cache_prune_keeps_the_blobs_of_every_image() {
	setup_registry
	setup_other
	start_daemon
	pull_both
	before=$(cached_blobs)
	expect_eq "$(echo "$before" | wc -l)" 7 "blobs cached (2 manifests, 2 configs, the busybox layer they share, 2 text layers)"
	out=$(b image cache prune --json) || fail "prune: $out"
	expect_eq "$(echo "$out" | jq '.removed | length')" 0 "blobs removed while every image uses them"
	expect_eq "$(echo "$out" | jq '.kept')" 7 kept
	expect_eq "$(echo "$out" | jq '.freed')" 0 freed
	expect_eq "$(echo "$out" | jq '.orphans | length')" 0 "orphan image directories"
	expect_eq "$(cached_blobs)" "$before" "the cache after a prune with nothing to free"
	expect_eq "$(b image list --json | jq '.images | length')" 2 images
	for r in busybox other; do
		rootfs=$(b image show "$REG_ADDR/ci/$r:1" --json | jq -r .rootfs)
		e2fsck -fn "$rootfs" >/dev/null 2>&1 || fail "image $r damaged by a prune"
	done
	expect_contains "$(b image cache prune)" "freed 0 bytes: 0 blobs, 0 partial downloads, 0 image directories; 7 blobs kept"
}

test_image_cache_prune_removes_the_blobs_of_a_removed_image() {
	setup_registry
	setup_other
	start_daemon
	pull_both
	other_dir=$(dirname "$(b image show "$REG_ADDR/ci/other:1" --json | jq -r .rootfs)")
	b image rm "$REG_ADDR/ci/other:1" >/dev/null || fail "image rm"
	# only other's own blobs: the busybox layer is busybox:1's too
	shared=$(layout_blobs "$BB")
	only_other=$(comm -23 <(echo "$OTHER_BLOBS") <(echo "$shared"))
	expect_eq "$(echo "$only_other" | wc -l)" 3 "blobs only other:1 uses"
	sleep 0.2 # the image directory image rm just changed is older than the request
	out=$(b image cache prune --json) || fail "prune: $out"
	expect_eq "$(echo "$out" | jq -r '.removed[].digest' | sort)" "$only_other" "removed blobs"
	expect_eq "$(echo "$out" | jq '.kept')" 4 "kept (busybox:1's manifest, config, 2 layers)"
	sum=$(echo "$out" | jq '[.removed[].size] | add')
	expect_eq "$(echo "$out" | jq '.freed >= '"$sum")" true "freed counts the removed blobs"
	# image rm left the directory (its build lock): an orphan, now gone
	expect_eq "$(echo "$out" | jq -r '.orphans[].path')" "$other_dir" "orphan image directory"
	[ ! -e "$other_dir" ] || fail "$other_dir still there"
	expect_eq "$(cached_blobs)" "$shared" "the cache holds exactly busybox:1's blobs"
	rootfs=$(b image show "$REG_ADDR/ci/busybox:1" --json | jq -r .rootfs)
	e2fsck -fn "$rootfs" >/dev/null 2>&1 || fail "busybox:1 damaged by the prune"
	# a second prune finds nothing
	expect_eq "$(b image cache prune --json | jq '.removed | length')" 0 "second prune"
	# other:1 pulls again: its blobs are downloaded again, the shared layer is not
	pull_spec again.yaml "$REG_ADDR/ci/other:1"
	b job submit "$T/again.yaml" --follow >/dev/null 2>&1 || fail "pull after prune"
	b job tail 3 --json | jq -s -r 'map(select(.stream=="log") | .data) | join("\n")' |
		grep -q "2 blob(s), .* bytes downloaded" || fail "pull after prune: expected its config and layer downloaded: $(b job tail 3)"
	expect_eq "$(b image list --json | jq '.images | length')" 2 images
}

test_image_cache_prune_dry_run_lists_and_removes_nothing() {
	setup_registry
	setup_other
	start_daemon
	pull_both
	b image rm "$OTHER" >/dev/null || fail "image rm"
	# a crash between a build's rename and its commit leaves a whole image
	# directory no row names
	orphan=$T/state/images/$(printf 'ab%.0s' $(seq 32))
	mkdir -p "$orphan"
	head -c 65536 /dev/urandom >"$orphan/rootfs.ext4"
	: >"$orphan/.lock"
	mkdir -p "$T/state/images/not-an-image"
	# an orphan whose build lock someone holds (a build starting) is not touched
	locked=$T/state/images/$(printf 'cd%.0s' $(seq 32))
	mkdir -p "$locked"
	: >"$locked/.lock"
	mkdir -p "$T/locker" # one.sh kills $T/*/daemon.pid when the test ends
	flock -n "$locked/.lock" sh -c 'echo $$ >"$1"; exec sleep 30' sh "$T/locker/daemon.pid" &
	lockpid=$!
	i=0
	until [ -s "$T/locker/daemon.pid" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && fail "flock did not take the lock"
		sleep 0.05
	done
	sleep 0.2
	before=$(cached_blobs)
	out=$(b image cache prune --dry-run --json) || fail "dry run: $out"
	expect_eq "$(echo "$out" | jq '.removed | length')" 3 "blobs a dry run lists"
	expect_eq "$(echo "$out" | jq '.orphans | length')" 2 "orphans a dry run lists"
	echo "$out" | jq -r '.orphans[].path' | grep -qx "$orphan" || fail "dry run does not list $orphan"
	expect_eq "$(cached_blobs)" "$before" "the cache after a dry run"
	[ -f "$orphan/rootfs.ext4" ] || fail "a dry run removed $orphan"
	human=$(b image cache prune -n)
	expect_contains "$human" "would remove $(echo "$out" | jq -r '.removed[0].digest')"
	expect_contains "$human" "would remove image directory $orphan (64.0 KiB)"
	expect_contains "$human" "would free"
	# then for real: the same list, and everything in it gone
	out2=$(b image cache prune --json) || fail "prune: $out2"
	expect_eq "$(echo "$out2" | jq -c '[.removed[].digest] | sort')" \
		"$(echo "$out" | jq -c '[.removed[].digest] | sort')" "what the prune removed"
	[ ! -e "$orphan" ] || fail "$orphan survived the prune"
	[ -d "$T/state/images/not-an-image" ] || fail "a directory banger did not make was removed"
	[ -f "$locked/.lock" ] || fail "an image directory whose lock is held was removed"
	kill "$(cat "$T/locker/daemon.pid")" 2>/dev/null
	wait "$lockpid" 2>/dev/null
	expect_eq "$(cached_blobs)" "$(layout_blobs "$BB")" "the cache after the prune"
}

test_image_cache_prune_refused_while_a_pull_runs() {
	setup_registry
	setup_other
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/blob.bin=3M >/dev/null || fail mkimage
	"$FIX/mkimage.sh" push "$T/oci:big" "$REG_ADDR/ci/big:1" >/dev/null 2>&1 || fail "push big"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" --stall-after 1200000 ||
		fail "proxy did not start"
	start_daemon
	pull_both
	b image rm "$OTHER" >/dev/null || fail "image rm"
	# a pull that hangs in its download
	pull_spec big.yaml "$FAULT_ADDR/ci/big:1"
	b job submit "$T/big.yaml" >/dev/null || fail "submit"
	wait_state 3 running
	i=0
	until grep -q "stall after" "$FAULT_LOG" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 200 ] && fail "the download never stalled: $(cat "$FAULT_LOG")"
		sleep 0.05
	done
	before=$(cached_blobs) # other:1's blobs, unused, and big:1's manifest and config
	out=$(b image cache prune 2>&1) && fail "prune succeeded while a pull runs: $out"
	expect_contains "$out" "refusing to prune the image cache: 1 'image.pull' job is running on this node"
	out=$(b image cache prune --dry-run 2>&1) && fail "dry run succeeded while a pull runs: $out"
	expect_eq "$(cached_blobs)" "$before" "the cache after a refused prune"
	[ -n "$(ls "$T/state/images")" ] || fail "image directories gone after a refused prune"
	# once the pull is over, the same prune goes ahead: the stalled download's
	# partial goes too (nobody writes it any more)
	b job cancel 3 >/dev/null || fail cancel
	expect_eq "$(wait_final 3)" cancelled "the stalled pull"
	[ -n "$(ls "$T/state/blobs/tmp/"*.partial 2>/dev/null)" ] || fail "no partial download to prune"
	sleep 0.2
	out=$(b image cache prune --json) || fail "prune after the pull: $out"
	expect_eq "$(echo "$out" | jq '.removed | length')" 5 "removed: other:1's 3 blobs, big:1's manifest and config"
	expect_eq "$(echo "$out" | jq '.partials')" 1 "partial downloads removed"
	expect_eq "$(ls "$T/state/blobs/tmp/" | grep -c partial)" 0 "partials left"
	kill "$FAULT_PID" 2>/dev/null
	true
}
