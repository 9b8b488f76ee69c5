# t_wsjobs.sh: workspaces through the job kinds (issue 6), end to end with
# everything real, set up as t_vmjobs.sh is: bangerd (test build) as the
# unprivileged uid $VJ_OWNER in a network namespace, banger-helper as root,
# QEMU (TCG here) booting the Debian cloud kernel with banger's initramfs
# and agent, a busybox image pulled from a real docker-registry.
#
# vm.create's `workspace:` (the checkout becomes the VM's second disk,
# mounted at `to:`), workspace.export (tar and patch), `banger vm cp`, the
# refusals, and crashes: bangerd SIGKILLed while an export streams and at
# the workspace step of vm.create.
#
# The checkout belongs to $VJ_OWNER (the daemon's user): files of other
# users are skipped with a warning, as the issue asks.

VJ_BIN=${BIN:-$ROOT/build}
VJ_OWNER=4242
VJ_CACHE=${BANGER_TEST_CACHE:-/var/cache/banger-test}
VJ_BOOT=${VJ_BOOT:-90s}
. "$ROOT/tests/vmjobs/lib.sh"

# ws_ci: $T/ci, the pipeline's directory (the owner's): a checkout made by
# tests/workspace/mktree.sh with a BIG_MB file, plus a file of root's and
# a fifo, which the daemon's user must skip
ws_ci() {
	CI=$T/ci
	mkdir -p "$CI"
	sh "$ROOT/tests/workspace/mktree.sh" "$CI/checkout" "${1:-8}" >/dev/null 2>&1 ||
		fail "cannot make the checkout"
	chown -R $VJ_OWNER:$VJ_OWNER "$CI"
	[ -e "$CI/checkout/not-mine.txt" ] || echo other >"$CI/checkout/not-mine.txt"
	chown 0:0 "$CI/checkout/not-mine.txt"
	[ -p "$CI/checkout/a-fifo" ] || mkfifo "$CI/checkout/a-fifo"
	chown -h $VJ_OWNER:$VJ_OWNER "$CI/checkout/a-fifo"
}

# ws_config LINE...: more bangerd configuration
ws_config() {
	printf '%s\n' "$@" >>"$T/bangerd.yaml"
}

# no_partials DIR: no export temporary left under DIR
no_partials() {
	p=$(find "$1" -name '.*.partial' 2>/dev/null)
	[ -z "$p" ] || fail "export temporaries left: $p"
}

test_wsjobs_checkout_in_build_results_out() {
	vj_setup
	vj_kernel
	ws_ci 8
	vj_start
	spec ci/pipeline.yaml <<EOF
jobs:
  pull: { kind: image.pull, ref: $REG_ADDR/ci/busybox:1 }
  box:
    kind: vm.create
    needs: [pull]
    image: $REG_ADDR/ci/busybox:1
    boot_timeout: $VJ_BOOT
    network: none
    workspace: { from: checkout, to: /workspace, exclude: [node_modules, ".git/objects/pack/*.tmp"] }
  build:
    kind: vm.exec
    needs: [box]
    vm: box
    run: |
      cd /workspace
      sha256sum big.bin src/main.c
      ls -l run.sh | cut -c1-10
      readlink src/link-outside
      test ! -e node_modules && test ! -e sub/node_modules && echo excluded
      test ! -e not-mine.txt && test ! -e a-fifo && echo skipped
      mkdir -p out/results && echo built >out/results/report.txt && cp run.sh out/results/
      ln -s report.txt out/results/latest
  results: { kind: workspace.export, needs: [build], vm: box, path: /workspace/out, to: artifacts/out.tar }
  # at the same time over the VM's one agent connection: frames never interleave
  whole: { kind: workspace.export, needs: [build], vm: box, path: /workspace, to: artifacts/whole.tar }
  again: { kind: workspace.export, needs: [build], vm: box, path: /workspace, to: artifacts/again.tar }
  done: { kind: vm.delete, needs: [results, whole, again], vm: box, when: always }
EOF
	chown $VJ_OWNER:$VJ_OWNER "$T/ci/pipeline.yaml"
	b job submit "$T/ci/pipeline.yaml" --follow >"$T/follow.out" 2>&1 ||
		fail "the pipeline failed: $(tail -20 "$T/follow.out")"
	out=$(cat "$T/follow.out")
	# the checkout arrived byte for byte, with its modes and symlinks
	expect_contains "$out" "$(cd "$T/ci/checkout" && sha256sum big.bin | cut -c1-64)  big.bin"
	expect_contains "$out" "$(cd "$T/ci/checkout" && sha256sum src/main.c | cut -c1-64)  src/main.c"
	expect_contains "$out" "-rwxr-xr-x"
	expect_contains "$out" "../../../../etc/passwd"
	expect_contains "$out" "excluded"
	expect_contains "$out" "skipped"
	# what was skipped, said as warning events
	expect_contains "$out" "warning: workspace: 'not-mine.txt'"
	expect_contains "$out" "warning: workspace: 'a-fifo'"
	expect_contains "$out" "workspace mounted at /workspace"
	# the results, as a tar at `to:` relative to the spec's directory
	tarf=$T/ci/artifacts/out.tar
	[ -f "$tarf" ] || fail "no $tarf: $(ls -la "$T/ci" "$T/ci/artifacts" 2>&1)"
	tar -tvf "$tarf" >"$T/tar.list" || fail "not a tar archive"
	grep -q ' results/report.txt$' "$T/tar.list" || fail "report.txt missing: $(cat "$T/tar.list")"
	grep -q '^-rwxr-xr-x .* results/run.sh$' "$T/tar.list" || fail "run.sh lost its mode: $(cat "$T/tar.list")"
	grep -q 'results/latest -> report.txt' "$T/tar.list" || fail "symlink not kept: $(cat "$T/tar.list")"
	grep -q 'link-abs -> /etc/hostname' "$T/tar.list" || fail "absolute symlink: $(cat "$T/tar.list")"
	expect_eq "$(tar -xOf "$tarf" results/report.txt)" built "report.txt"
	id=$(b job list --json | jq '[.jobs[] | select(.name == "results")][0].id')
	expect_eq "$(jfield "$id" result.sha256)" "$(sha256sum "$tarf" | cut -c1-64)" "sha256 in the result"
	expect_eq "$(jfield "$id" result.bytes)" "$(stat -c %s "$tarf")" "bytes in the result"
	expect_eq "$(stat -c %u "$tarf")" $VJ_OWNER "owner of the export"
	for f in whole again; do
		expect_eq "$(tar -xOf "$T/ci/artifacts/$f.tar" big.bin | sha256sum | cut -c1-64)" \
			"$(sha256sum "$T/ci/checkout/big.bin" | cut -c1-64)" "big.bin in $f.tar"
	done
	expect_eq "$(tar -xOf "$T/ci/artifacts/whole.tar" out/results/report.txt)" built \
		"the build's output in the whole export"
	no_partials "$T/ci"
	# the create job's result says what came in
	cid=$(b job list --json | jq '[.jobs[] | select(.name == "box")][0].id')
	expect_eq "$(jfield "$cid" result.workspace)" /workspace "workspace in the result"
	vj_nothing_left
}

test_wsjobs_bad_input_refused_clearly() {
	vj_setup
	vj_kernel
	ws_ci 0
	ws_config "max_export_bytes: 64K"
	vj_start
	vj_pull
	# vm.create: each refused with words naming what is wrong; nothing left
	n=0
	for case in "from: nothere|is not a directory this daemon can read" \
		"from: checkout, to: work|'workspace: to: work' is refused: it is not an absolute path" \
		"from: checkout, to: '/a b'|use only letters" \
		"from: checkout, exclude: ['!keep']|negated exclude patterns" \
		"to: /w|'workspace' needs 'from'" \
		"from: checkout, size: 1G|'workspace' has an unknown key 'size'"; do
		n=$((n + 1))
		fields=${case%%|*}
		want=${case#*|}
		spec ci/bad$n.yaml <<EOF
jobs:
  box: { kind: vm.create, image: $REG_ADDR/ci/busybox:1, network: none, workspace: { $fields } }
EOF
		b job submit "$T/ci/bad$n.yaml" --follow >"$T/bad$n.out" 2>&1 && fail "'$fields' was accepted"
		expect_contains "$(cat "$T/bad$n.out")" "$want" "vm.create with workspace { $fields }"
	done
	vj_nothing_left "after the refused creates"
	# workspace.export against a running VM
	vj_create box ", network: none"
	b vm exec box -- sh -c 'mkdir -p /tmp/big && head -c 200000 /dev/zero >/tmp/big/f' ||
		fail "exec"
	mkdir -p "$T/ci/artifacts"
	echo old >"$T/ci/artifacts/keep.tar"
	chown -R $VJ_OWNER:$VJ_OWNER "$T/ci"
	n=0
	for case in "path: /nope, to: a.tar|'/nope' does not exist in the guest" \
		"path: /tmp/big, to: ../escape.tar|'..'" \
		"path: /tmp/big, to: /etc/x.tar|is outside the spec's directory" \
		"path: tmp, to: a.tar|'path' must be an absolute path in the guest" \
		"path: /tmp/big, to: artifacts/keep.tar|larger than max_export_bytes" \
		"path: /tmp/big, to: p.patch, mode: patch|git" \
		"path: /tmp/big, to: p.patch, mode: zip|mode 'zip' is not 'tar'" \
		"path: /tmp/big, to: a.tar, vm: nobox|no vm 'nobox'"; do
		n=$((n + 1))
		fields=${case%%|*}
		want=${case#*|}
		case "$fields" in *vm:*) vmf="" ;; *) vmf="vm: box, " ;; esac
		spec ci/ex$n.yaml <<EOF
jobs:
  ex: { kind: workspace.export, $vmf$fields }
EOF
		b job submit "$T/ci/ex$n.yaml" --follow >"$T/ex$n.out" 2>&1 && fail "'$fields' was accepted"
		expect_contains "$(cat "$T/ex$n.out")" "$want" "workspace.export { $fields }"
	done
	# nothing stored by the refused exports, the old file untouched
	expect_eq "$(cat "$T/ci/artifacts/keep.tar")" old "the file an oversized export would replace"
	[ ! -e "$T/escape.tar" ] || fail "an export escaped the spec's directory"
	[ ! -e "$T/ci/a.tar" ] && [ ! -e "$T/ci/p.patch" ] || fail "a failed export left its file"
	no_partials "$T/ci"
	vj_delete box
	vj_nothing_left
}

test_wsjobs_crash_during_export_rolls_back_then_completes() {
	vj_setup
	vj_kernel
	vj_start
	vj_pull
	vj_create box ", network: none, memory: 512M"
	# on a tmpfs: the image's root disk has little room
	b vm exec box -- sh -c 'mkdir -p /big && mount -t tmpfs -o size=200m tmpfs /big &&
		mkdir /big/out && head -c 100000000 /dev/zero >/big/out/big' || fail "exec"
	mkdir -p "$T/ci"
	chown $VJ_OWNER:$VJ_OWNER "$T/ci"
	vj_restart_with "BANGER_FAILPOINTS=workspace.export/export:streaming=3*crash"
	spec ci/ex.yaml <<EOF
jobs:
  ex: { kind: workspace.export, vm: box, path: /big/out, to: out.tar }
EOF
	job=$(b job submit "$T/ci/ex.yaml" --json | jq '.jobs[0].id')
	vj_wait_crash workspace.export/export:streaming
	# killed mid-stream: only the temporary the undo record names is there
	ls -A "$T/ci" | grep -qx ".out.tar.$job-1.partial" ||
		fail "no temporary at the crash: $(ls -A "$T/ci")"
	[ ! -e "$T/ci/out.tar" ] || fail "out.tar exists after a crash mid-export"
	vj_start
	s=$(WAIT=150 wait_final "$job")
	expect_eq "$s" succeeded "the export after the restart ($(jfield "$job" error))"
	b oplog "$job" --json >"$T/op.json"
	expect_eq "$(jq -r '.attempts[0].steps[0].state' "$T/op.json")" undone \
		"attempt 1 (interrupted) rolled back"
	expect_eq "$(jq -r '.attempts[-1].steps[0].state' "$T/op.json")" done "the last attempt"
	expect_eq "$(jq -r '.attempts[0].steps[0].undo.tag' "$T/op.json")" "$job-1" \
		"the undo record names the temporary"
	no_partials "$T/ci"
	expect_eq "$(tar -tvf "$T/ci/out.tar" | awk '{print $3, $6}')" "100000000 big" "the archive"
	expect_eq "$(jfield "$job" result.sha256)" "$(sha256sum "$T/ci/out.tar" | cut -c1-64)" sha256
	vj_delete box
	vj_nothing_left
}

test_wsjobs_crash_at_the_workspace_step() {
	vj_setup
	vj_kernel
	ws_ci 1
	vj_start
	vj_pull
	stop_daemon
	VJ_SPEC_EXTRA=", network: none, workspace: { from: ci/checkout }" vj_crash_each create \
		vm.create/workspace:before vm.create/workspace:after
	VJ_SPEC_EXTRA=", network: none, max_attempts: 1, workspace: { from: ci/checkout }" \
		VJ_EXTRA_FP="vm.create/wait:error=error" vj_crash_each create \
		vm.create/workspace:undo-before
}

test_wsjobs_vm_cp_both_ways() {
	vj_setup
	vj_kernel
	ws_ci 2
	vj_start
	vj_pull
	vj_create box ", network: none"
	cd "$T/ci" || fail cd
	# in: a directory, then a single file
	b vm cp checkout box:/srv/co >"$T/cp1.out" 2>&1 || fail "vm cp in: $(tail -5 "$T/cp1.out")"
	expect_eq "$(b vm exec box -- sha256sum /srv/co/big.bin | cut -c1-64)" \
		"$(sha256sum checkout/big.bin | cut -c1-64)" "big.bin copied in"
	expect_eq "$(b vm exec box -- readlink /srv/co/src/link-outside)" "../../../../etc/passwd" \
		"symlink copied in as a symlink"
	b vm cp checkout/run.sh box:/srv/one.sh >"$T/cp2.out" 2>&1 || fail "vm cp file: $(tail -5 "$T/cp2.out")"
	expect_eq "$(b vm exec box -- /srv/one.sh)" run "a single file copied in, executable"
	# out: as a tar next to us
	b vm exec box -- sh -c 'mkdir -p /srv/res && echo r >/srv/res/r.txt' || fail exec
	b vm cp box:/srv/res res.tar >"$T/cp3.out" 2>&1 || fail "vm cp out: $(tail -5 "$T/cp3.out")"
	expect_eq "$(tar -xOf res.tar r.txt)" r "copied out"
	# refusals
	b vm cp checkout nobox:/x >"$T/cp4.out" 2>&1 && fail "cp to a vm that does not exist"
	expect_contains "$(cat "$T/cp4.out")" "no vm 'nobox'"
	b vm cp a b >"$T/cp5.out" 2>&1 && fail "cp with no vm side"
	expect_contains "$(cat "$T/cp5.out")" "NAME:/path"
	no_partials "$T/ci"
	cd "$T" || true
	vj_delete box
	vj_nothing_left
}
