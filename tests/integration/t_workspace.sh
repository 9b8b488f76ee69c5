# t_workspace.sh: workspaces (issue 6) at the level of their libraries:
# worker/workspace.c (a host directory to an ext4 image, checked from
# outside with e2fsck and debugfs), worker/export.c (the atomic, bounded,
# hashed `to:` writer and the tar built from the agent's entry stream) and
# the agent's MOUNT, EXPORT and IMPORT requests (worker/import.c), first against the agent in test
# mode (no VM), then in a real VM booted as t_vm.sh boots one (the Debian
# cloud kernel under TCG, banger's initramfs and agent, a busybox root) with
# the workspace image as its second disk.  Driven through build/ws-tool
# (tests/tools/ws_tool.c) until vm.create's `workspace:` and the
# workspace.export kind exist.  Tests that lack QEMU or the kernel package
# exit 77 saying why.

# the VM fixtures of t_vm.sh (kernel import cache, busybox root, vm_start,
# cleanup), without its tests
. "$ROOT/tests/integration/t_vm.sh"
for f in $(declare -F | awk '{print $3}' | grep '^test_'); do unset -f "$f"; done

WS=${BIN:-$ROOT/build}/ws-tool
MKTREE=$ROOT/tests/workspace/mktree.sh
EXCL="--exclude node_modules --exclude .git/objects/pack/*.tmp"

ws_need() {
	[ -x "$WS" ] || fail "build/ws-tool missing: run make"
	command -v debugfs >/dev/null && command -v e2fsck >/dev/null ||
		vm_skip "e2fsprogs (debugfs, e2fsck) is not installed"
}

# ws_tree BIG_MB: $T/tree
ws_tree() {
	sh "$MKTREE" "$T/tree" "$1" || fail "cannot make the test tree"
}

# dfs IMG CMD: debugfs -R CMD, quietly
dfs() {
	debugfs -R "$2" "$1" 2>/dev/null
}

# agent_test_mode: the agent serving $T/agent.sock (no VM)
agent_test_mode() {
	"$AGENT" --listen "$T/agent.sock" 2>"$T/agent.log" &
	echo $! >"$T/agent.pid"
	trap 'vm_cleanup; cleanup' EXIT
	i=0
	while [ ! -S "$T/agent.sock" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && fail "the agent did not listen"
		sleep 0.05
	done
}

# ---- the image builder ----

test_build_tree_checked_from_outside() {
	ws_need
	ws_tree 200
	# shellcheck disable=SC2086
	must "$WS" build --from "$T/tree" --out "$T/ws.img" $EXCL >"$T/out" 2>"$T/err"
	cat "$T/out"
	out=$(cat "$T/out")
	expect_contains "$out" "hardlinks=1"
	expect_contains "$out" "symlinks=4"
	if [ "$(id -u)" = 0 ]; then
		expect_contains "$(cat "$T/err")" "warning: special: 'a-fifo' is a fifo; skipped"
		expect_contains "$(cat "$T/err")" "warning: owner: 'not-mine.txt' belongs to uid 4242"
		expect_contains "$out" "skipped=2"
	fi
	e2fsck -fn "$T/ws.img" >"$T/fsck" 2>&1 || { cat "$T/fsck"; fail "e2fsck found errors"; }
	img=$T/ws.img
	# a 200 MB file, byte for byte
	dfs "$img" "dump /big.bin $T/big.out"
	cmp "$T/big.out" "$T/tree/big.bin" || fail "big.bin differs"
	dfs "$img" "dump /src/ünïcödé-файл.txt $T/u.out"
	cmp "$T/u.out" "$T/tree/src/ünïcödé-файл.txt" || fail "unicode file differs"
	dfs "$img" "ls -p /日本語" | grep -q 'テスト.md' || fail "unicode directory lost"
	# modes (executable bits), owner mapped to root
	expect_contains "$(dfs "$img" "stat /run.sh")" "Mode:  0755"
	expect_contains "$(dfs "$img" "stat /src/main.c")" "Mode:  0640"
	expect_contains "$(dfs "$img" "stat /src/main.c")" "User:     0   Group:     0"
	# symlinks stored as symlinks, never followed, also pointing outside
	expect_contains "$(dfs "$img" "stat /src/link-outside")" '"../../../../etc/passwd"'
	expect_contains "$(dfs "$img" "stat /out/link-abs")" '"/etc/hostname"'
	expect_contains "$(dfs "$img" "stat /dangling")" 'Type: symlink'
	# a hardlink is one inode with two names
	a=$(dfs "$img" "stat /src/hard-a" | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
	b=$(dfs "$img" "stat /src/lib/hard-b" | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
	[ -n "$a" ] && [ "$a" = "$b" ] || fail "hardlink: inodes '$a' and '$b'"
	expect_contains "$(dfs "$img" "stat /src/hard-a")" "Links: 2"
	# empty directories, .git kept, excludes applied
	dfs "$img" "ls -p /empty2" | grep -q '/inner/' || fail "empty directory lost"
	dfs "$img" "ls -p /.git" | grep -q '/HEAD/' || fail ".git not kept"
	dfs "$img" "ls -p /" | grep -q node_modules && fail "node_modules not excluded"
	dfs "$img" "ls -p /sub" | grep -q node_modules && fail "sub/node_modules not excluded"
	dfs "$img" "ls -p /.git/objects/pack" | grep -q tmp_pack && fail "pack/*.tmp not excluded"
	dfs "$img" "ls -p /" | grep -qE 'a-fifo|not-mine' && fail "a skipped entry is in the image"
	# mtimes kept
	expect_contains "$(dfs "$img" "stat /src/main.c")" "May  1 12:00:00 2024"
	# reproducible: the same tree gives the same bytes
	# shellcheck disable=SC2086
	must "$WS" build --from "$T/tree" --out "$T/ws2.img" $EXCL >/dev/null 2>&1
	cmp "$T/ws.img" "$T/ws2.img" || fail "two builds of the same tree differ"
	# the copy through user space gives the same image too
	# shellcheck disable=SC2086
	must "$WS" build --from "$T/tree" --out "$T/ws3.img" $EXCL --no-copy-range >/dev/null 2>&1
	cmp "$T/ws.img" "$T/ws3.img" || fail "copy_file_range and read/write images differ"
}

test_build_refusals_leave_nothing() {
	ws_need
	mkdir -p "$T/d"
	echo x >"$T/d/f"
	"$WS" build --from "$T/nope" --out "$T/a.img" >"$T/out" 2>&1 && fail "missing dir accepted"
	expect_contains "$(cat "$T/out")" "cannot open the workspace directory '$T/nope'"
	expect_contains "$(cat "$T/out")" "(NOENT)"
	[ -e "$T/a.img" ] && fail "a failed build left its output"
	"$WS" build --from "$T/d/f" --out "$T/a.img" >"$T/out" 2>&1 && fail "a file accepted"
	expect_contains "$(cat "$T/out")" "(INVAL)"
	"$WS" build --from "$T/d" --out "$T/a.img" --exclude '!keep' >"$T/out" 2>&1 &&
		fail "a negated pattern accepted"
	expect_contains "$(cat "$T/out")" "exclude pattern '!keep': negated exclude patterns"
	"$WS" build --from "$T/d" --out "$T/a.img" --exclude '../x' >"$T/out" 2>&1 &&
		fail "a '..' pattern accepted"
	[ -e "$T/a.img" ] && fail "a refused build left its output"
	"$WS" build --from "$T/d" --out "$T/nodir/a.img" >"$T/out" 2>&1 && fail "bad output accepted"
	expect_contains "$(cat "$T/out")" "cannot create '$T/nodir/a.img'"
	return 0
}

# ---- the export writer, against the agent in test mode ----

test_export_test_mode_round_trip_and_refusals() {
	ws_need
	vm_setup
	ws_tree 20
	agent_test_mode
	mkdir -p "$T/spec" "$T/arts"
	X="$WS export --sock $T/agent.sock --spec-dir $T/spec --artifacts $T/arts"
	must $X --path "$T/tree" --to artifacts/out.tar >"$T/out" 2>"$T/err"
	cat "$T/out"
	[ "$(id -u)" = 0 ] && expect_contains "$(cat "$T/err")" "'a-fifo': a fifo; skipped"
	sum=$(sed -n 's/.* sha256=\([0-9a-f]*\) .*/\1/p' "$T/out")
	expect_eq "$(sha256sum "$T/spec/artifacts/out.tar" | cut -d' ' -f1)" "$sum" "sha256"
	expect_eq "$(stat -c %s "$T/spec/artifacts/out.tar")" \
		"$(sed -n 's/^bytes=\([0-9]*\) .*/\1/p' "$T/out")" "size"
	tar tvf "$T/spec/artifacts/out.tar" >"$T/list"
	grep -q 'src/link-outside -> ../../../../etc/passwd' "$T/list" || fail "outside symlink"
	grep -q 'src/lib/hard-b link to src/hard-a' "$T/list" || fail "hardlink not kept"
	mkdir "$T/x"
	tar xf "$T/spec/artifacts/out.tar" -C "$T/x"
	diff -r --no-dereference "$T/tree" "$T/x" >"$T/diff" 2>&1
	grep -v -e 'a-fifo' "$T/diff" | grep . && fail "round trip differs: $(cat "$T/diff")"
	# an absolute `to` under the artifacts directory
	must $X --path "$T/tree/src" --to "$T/arts/sub/src.tar" >/dev/null 2>&1
	[ -s "$T/arts/sub/src.tar" ] || fail "absolute to under artifacts not written"
	# refusals: outside, '..', a symlink component, a symlink or directory at `to`
	$X --path "$T/tree" --to /etc/evil.tar >"$T/o" 2>&1 && fail "outside accepted"
	expect_contains "$(cat "$T/o")" "is outside the spec's directory"
	$X --path "$T/tree" --to ../evil.tar >"$T/o" 2>&1 && fail "'..' accepted"
	expect_contains "$(cat "$T/o")" "it has a '..' component"
	ln -s /tmp "$T/spec/lnk"
	$X --path "$T/tree" --to lnk/evil.tar >"$T/o" 2>&1 && fail "symlink component accepted"
	expect_contains "$(cat "$T/o")" "is a symlink; refused"
	ln -s /etc/passwd "$T/spec/target.tar"
	$X --path "$T/tree" --to target.tar >"$T/o" 2>&1 && fail "symlink at to accepted"
	expect_contains "$(cat "$T/o")" "exists and is a symlink"
	# a guest directory that does not exist: clear error, no file
	$X --path "$T/nope" --to artifacts/nope.tar >"$T/o" 2>&1 && fail "missing dir exported"
	expect_contains "$(cat "$T/o")" "'$T/nope' does not exist in the guest"
	$X --path "$T/tree/run.sh" --to artifacts/nope.tar >"$T/o" 2>&1 && fail "a file exported"
	expect_contains "$(cat "$T/o")" "is not a directory"
	# over the limit: clear error, the old file stays, no partial file
	$X --path "$T/tree" --to artifacts/out.tar --max 1000000 >"$T/o" 2>&1 &&
		fail "over the limit accepted"
	expect_contains "$(cat "$T/o")" "larger than max_export_bytes (1000000 bytes)"
	expect_eq "$(sha256sum "$T/spec/artifacts/out.tar" | cut -d' ' -f1)" "$sum" "old file"
	expect_eq "$(ls -A "$T/spec/artifacts")" "out.tar" "files left"
	ls -A "$T/spec" "$T/arts" "$T/arts/sub" | grep -q partial && fail "a partial file is left"
	return 0
}

test_export_patch_test_mode() {
	ws_need
	vm_setup
	command -v git >/dev/null || vm_skip "git is not installed"
	ws_tree 0
	agent_test_mode
	echo 'int changed;' >>"$T/tree/src/main.c"
	echo new >"$T/tree/src/new.txt"
	head -c 3000 /dev/urandom >"$T/tree/src/new.bin"
	mkdir -p "$T/spec"
	must "$WS" patch --sock "$T/agent.sock" --spec-dir "$T/spec" --path "$T/tree" \
		--to out.patch >"$T/out" 2>&1
	grep -q 'GIT binary patch' "$T/spec/out.patch" || fail "no binary patch in the diff"
	git clone -q "$T/tree" "$T/clone" 2>/dev/null || fail "clone"
	(cd "$T/clone" && git apply --check "$T/spec/out.patch") || fail "git apply --check failed"
	(cd "$T/clone" && git apply "$T/spec/out.patch") || fail "git apply failed"
	cmp "$T/clone/src/new.bin" "$T/tree/src/new.bin" || fail "binary file differs"
	"$WS" patch --sock "$T/agent.sock" --spec-dir "$T/spec" --path "$T/nope" \
		--to out2.patch >"$T/o" 2>&1 && fail "a missing checkout patched"
	[ -e "$T/spec/out2.patch" ] && fail "a failed patch left a file"
	return 0
}

# ---- import (a host tree into the guest), against the agent in test mode ----

# imp_check SRC DST: DST is SRC imported (contents, modes, symlinks, hardlinks)
imp_check() {
	diff -r --no-dereference "$1" "$2" >"$T/diff" 2>&1
	grep -v -e 'a-fifo' -e 'not-mine' "$T/diff" | grep . && fail "import differs: $(cat "$T/diff")"
	expect_eq "$(stat -c %a "$2/run.sh")" 755 "mode of run.sh"
	expect_eq "$(stat -c %a "$2/src/main.c")" 640 "mode of main.c"
	expect_eq "$(readlink "$2/src/link-outside")" ../../../../etc/passwd "outside symlink"
	[ -L "$2/src/link-outside" ] || fail "the outside symlink is not a symlink"
	expect_eq "$(readlink "$2/out/link-abs")" /etc/hostname "absolute symlink"
	expect_eq "$(stat -c %i "$2/src/hard-a")" "$(stat -c %i "$2/src/lib/hard-b")" "hardlink"
	expect_eq "$(cat "$2/日本語/テスト.md")" "japanese dir" "unicode names"
	[ -d "$2/empty2/inner" ] && [ -z "$(ls -A "$2/empty")" ] || fail "empty directories"
	expect_eq "$(stat -c %y "$2/src/main.c" | cut -c1-19)" "2024-05-01 12:00:00" "file mtime"
	expect_eq "$(stat -c %y "$2/src/lib" | cut -c1-19)" "2024-05-01 12:00:00" "directory mtime"
	expect_eq "$(stat -c %y "$2/src/link-outside" | cut -c1-19)" "2024-05-01 12:00:00" \
		"symlink mtime"
	find "$2" -name '.banger-import*' | grep . && fail "a temporary file is left"
	return 0
}

test_import_test_mode_round_trip() {
	ws_need
	vm_setup
	ws_tree 20
	agent_test_mode
	I="$WS import --sock $T/agent.sock"
	must $I --from "$T/tree" --path "$T/guest/new/dir" >"$T/out" 2>"$T/err"
	cat "$T/out"
	out=$(cat "$T/out")
	expect_contains "$out" "symlinks=4 hardlinks=1"
	if [ "$(id -u)" = 0 ]; then
		expect_contains "$(cat "$T/err")" "warning: special: 'a-fifo' is a fifo; skipped"
		expect_contains "$(cat "$T/err")" "warning: owner: 'not-mine.txt' belongs to uid 4242"
	fi
	imp_check "$T/tree" "$T/guest/new/dir"
	# again over the same tree: files replaced, hardlinks kept, nothing left over
	echo changed >"$T/guest/new/dir/src/main.c"
	must $I --from "$T/tree" --path "$T/guest/new/dir" >/dev/null 2>&1
	imp_check "$T/tree" "$T/guest/new/dir"
	# excludes, as the workspace disk applies them
	# shellcheck disable=SC2086
	must $I --from "$T/tree" --path "$T/guest/ex" $EXCL >"$T/out" 2>/dev/null
	[ -e "$T/guest/ex/node_modules" ] || [ -e "$T/guest/ex/sub/node_modules" ] &&
		fail "node_modules not excluded"
	[ -e "$T/guest/ex/src/main.c" ] || fail "an excluded import lost src/main.c"
	# one file: into an existing directory, onto a new name, over a symlink
	must $I --from "$T/tree/run.sh" --path "$T/guest/ex" >/dev/null 2>&1
	cmp "$T/tree/run.sh" "$T/guest/ex/run.sh" || fail "single file into a directory"
	must $I --from "$T/tree/src/main.c" --path "$T/guest/ex/renamed.c" >/dev/null 2>&1
	cmp "$T/tree/src/main.c" "$T/guest/ex/renamed.c" || fail "single file onto a name"
	expect_eq "$(stat -c %a "$T/guest/ex/renamed.c")" 640 "single file mode"
	echo keep >"$T/victim"
	ln -s "$T/victim" "$T/guest/ex/lnk"
	must $I --from "$T/tree/run.sh" --path "$T/guest/ex/lnk" >/dev/null 2>&1
	expect_eq "$(cat "$T/victim")" keep "a symlink at the destination was written through"
	[ -L "$T/guest/ex/lnk" ] && fail "the symlink at the destination was not replaced"
	return 0
}

test_import_test_mode_refusals() {
	ws_need
	vm_setup
	ws_tree 5
	agent_test_mode
	I="$WS import --sock $T/agent.sock"
	# a directory component in the guest is a symlink pointing outside:
	# refused naming it, nothing written outside
	mkdir -p "$T/outside" "$T/g"
	ln -s "$T/outside" "$T/g/src"
	$I --from "$T/tree" --path "$T/g" >"$T/o" 2>&1 && fail "import through a symlink accepted"
	expect_contains "$(cat "$T/o")" "'src' in '$T/g' is a symlink in the guest; refused"
	expect_contains "$(cat "$T/o")" "(PERM)"
	expect_eq "$(ls -A "$T/outside")" "" "files written outside the destination"
	[ -L "$T/g/src" ] || fail "the guest's symlink was replaced"
	find "$T/g" -name '.banger-import*' | grep . && fail "a temporary file is left"
	# the same one level deeper
	mkdir -p "$T/g2/src"
	ln -s "$T/outside" "$T/g2/src/lib"
	$I --from "$T/tree" --path "$T/g2" >"$T/o" 2>&1 && fail "deep symlink accepted"
	expect_contains "$(cat "$T/o")" "'src/lib' in '$T/g2' is a symlink in the guest; refused"
	expect_eq "$(ls -A "$T/outside")" "" "files written outside the destination"
	# bad destinations
	echo x >"$T/afile"
	$I --from "$T/tree" --path "$T/afile" >"$T/o" 2>&1 && fail "a file as destination"
	expect_contains "$(cat "$T/o")" "'$T/afile' exists in the guest and is not a directory"
	expect_contains "$(cat "$T/o")" "(INVAL)"
	$I --from "$T/tree" --path "$T/afile/sub" >"$T/o" 2>&1 && fail "a path under a file"
	expect_contains "$(cat "$T/o")" "is not a directory"
	$I --from "$T/tree" --path relative/dir >"$T/o" 2>&1 && fail "a relative destination"
	expect_contains "$(cat "$T/o")" "absolute guest path"
	$I --from "$T/tree/run.sh" --path "$T/nodir/x.sh" >"$T/o" 2>&1 && fail "missing directory"
	expect_contains "$(cat "$T/o")" "the directory of '$T/nodir/x.sh' does not exist in the guest"
	$I --from "$T/nope" --path "$T/g3" >"$T/o" 2>&1 && fail "a missing source"
	expect_contains "$(cat "$T/o")" "cannot open '$T/nope' to import it"
	[ -e "$T/g3" ] && fail "a refused import created its destination"
	$I --from "$T/tree" --path "$T/g3" --exclude '!x' >"$T/o" 2>&1 && fail "bad exclude"
	expect_contains "$(cat "$T/o")" "negated exclude patterns"
	# the agent is still usable after the refusals
	must $I --from "$T/tree/src" --path "$T/g4" >/dev/null 2>&1
	cmp "$T/tree/src/random.bin" "$T/g4/random.bin" || fail "import after refusals"
	return 0
}

# ---- in a real VM ----

ws_vm() {
	ws_need
	vm_need_qemu
	vm_kernel
	vm_rootfs root
}

# ws_start RUN IMG: boot with IMG as the workspace disk mounted at /workspace
ws_start() {
	"$WS" start --run-dir "$T/$1" --kernel-dir "$KDIR" --rootfs "$T/root.ext4" \
		--workspace "$2" --cmdline-mount /workspace --mem 512 --timeout "$VM_BOOT_TIMEOUT" \
		>"$T/$1.start" 2>"$T/$1.log" ||
		{
			cat "$T/$1.log"
			tail -5 "$T/$1/console.log" 2>/dev/null
			fail "boot of $1 failed"
		}
	echo "    $1: $(cat "$T/$1.start")"
}

test_vm_workspace_round_trip() {
	ws_vm
	ws_tree 200
	# shellcheck disable=SC2086
	must "$WS" build --from "$T/tree" --out "$T/ws.img" $EXCL >/dev/null 2>&1
	ws_start ws "$T/ws.img"
	vx ws --sh 'ls -la /workspace' >"$T/ls" 2>&1 || { cat "$T/ls"; fail "ls in the guest"; }
	cat "$T/ls"
	grep -q ' run.sh' "$T/ls" && grep -q 'rwxr-xr-x.* run.sh' "$T/ls" || fail "run.sh mode"
	grep -q 'dangling -> does/not/exist' "$T/ls" || fail "symlink in the guest"
	grep -q node_modules "$T/ls" && fail "excluded entry in the guest"
	vx ws --sh 'cd /workspace && sha256sum big.bin src/main.c src/random.bin "src/ünïcödé-файл.txt" && readlink src/link-outside && stat -c "%i %h" src/hard-a src/lib/hard-b' \
		>"$T/g" 2>&1 || { cat "$T/g"; fail "sha256sum in the guest"; }
	(cd "$T/tree" && sha256sum big.bin src/main.c src/random.bin "src/ünïcödé-файл.txt") >"$T/h"
	head -4 "$T/g" | diff - "$T/h" || fail "contents differ between host and guest"
	expect_eq "$(sed -n 5p "$T/g")" "../../../../etc/passwd" "outside symlink in the guest"
	[ "$(sed -n 6p "$T/g" | cut -d' ' -f1)" = "$(sed -n 7p "$T/g" | cut -d' ' -f1)" ] ||
		fail "hardlink split in the guest: $(sed -n 6,7p "$T/g")"
	# a second mount of the same disk by LABEL through a MOUNT request
	must "$WS" mount --run-dir "$T/ws" --dev LABEL=workspace --path /mnt/again/ws >/dev/null
	vx ws -- /bin/cat /mnt/again/ws/src/main.c >/dev/null || fail "MOUNT request"
	"$WS" mount --run-dir "$T/ws" --dev LABEL=nothere --path /mnt/x >"$T/o" 2>&1 &&
		fail "mount of a missing disk"
	expect_contains "$(cat "$T/o")" "disk 'LABEL=nothere' did not appear"
	# work in the guest, then export back and compare
	vx ws --sh 'mkdir -p /workspace/out/res && echo built >/workspace/out/res/r.txt && cp /workspace/big.bin /workspace/out/res/ && ln -s res/r.txt /workspace/out/latest && sync' ||
		fail "work in the guest"
	mkdir -p "$T/spec"
	must "$WS" export --run-dir "$T/ws" --path /workspace --to artifacts/ws.tar \
		--spec-dir "$T/spec" >"$T/exp" 2>&1
	cat "$T/exp"
	mkdir "$T/x"
	tar xf "$T/spec/artifacts/ws.tar" -C "$T/x" || fail "the exported tar does not extract"
	cmp "$T/x/out/res/big.bin" "$T/tree/big.bin" || fail "exported big.bin differs"
	expect_eq "$(cat "$T/x/out/res/r.txt")" built "result file"
	expect_eq "$(readlink "$T/x/out/latest")" res/r.txt "symlink made in the guest"
	diff -r --no-dereference "$T/tree" "$T/x" >"$T/diff" 2>&1
	grep -v -e 'Only in .*/x: lost+found' -e 'Only in .*/x/out: ' -e node_modules \
		-e tmp_pack -e a-fifo -e not-mine "$T/diff" | grep . &&
		fail "round trip differs: $(cat "$T/diff")"
	# a directory that does not exist: clear error, no file
	"$WS" export --run-dir "$T/ws" --path /workspace/nope --to artifacts/n.tar \
		--spec-dir "$T/spec" >"$T/o" 2>&1 && fail "missing dir exported"
	expect_contains "$(cat "$T/o")" "'/workspace/nope' does not exist in the guest"
	[ -e "$T/spec/artifacts/n.tar" ] && fail "a failed export left its file"
	# over the size limit: clear error, no partial file, the link still works
	"$WS" export --run-dir "$T/ws" --path /workspace --to artifacts/big.tar --max 50000000 \
		--spec-dir "$T/spec" >"$T/o" 2>&1 && fail "over the limit exported"
	expect_contains "$(cat "$T/o")" "larger than max_export_bytes (50000000 bytes)"
	expect_eq "$(ls -A "$T/spec/artifacts")" "ws.tar" "files left after the refusals"
	vx ws -- /bin/true || fail "the agent is not usable after a cancelled export"
	# patch mode in an image without git: a clear error
	"$WS" patch --run-dir "$T/ws" --path /workspace --to p.patch --spec-dir "$T/spec" \
		>"$T/o" 2>&1 && fail "patch without git"
	expect_contains "$(cat "$T/o")" "the image has no git"
	# a host tree into the running VM (IMPORT), checked in the guest
	must "$WS" import --run-dir "$T/ws" --from "$T/tree/src" --path /workspace/in/src \
		>"$T/imp" 2>&1
	echo "    import: $(cat "$T/imp")"
	must "$WS" import --run-dir "$T/ws" --from "$T/tree/big.bin" --path /workspace/in \
		>"$T/imp" 2>&1
	echo "    import of big.bin: $(cat "$T/imp")"
	vx ws --sh 'cd /workspace/in && sha256sum big.bin src/main.c src/random.bin "src/ünïcödé-файл.txt" && readlink src/link-outside && stat -c "%i %a" src/hard-a src/lib/hard-b src/main.c && find /workspace/in -name ".banger-import*" | wc -l' \
		>"$T/g" 2>&1 || { cat "$T/g"; fail "checking the import in the guest"; }
	(cd "$T/tree" && sha256sum big.bin src/main.c src/random.bin "src/ünïcödé-файл.txt") >"$T/h"
	head -4 "$T/g" | diff - "$T/h" || fail "imported contents differ between host and guest"
	expect_eq "$(sed -n 5p "$T/g")" "../../../../etc/passwd" "imported outside symlink"
	[ "$(sed -n 6p "$T/g" | cut -d' ' -f1)" = "$(sed -n 7p "$T/g" | cut -d' ' -f1)" ] ||
		fail "imported hardlink split: $(sed -n 6,7p "$T/g")"
	expect_eq "$(sed -n 8p "$T/g" | cut -d' ' -f2)" 640 "imported mode"
	expect_eq "$(sed -n 9p "$T/g" | tr -d ' ')" 0 "temporary files left in the guest"
	"$VMT" stop --run-dir "$T/ws" >/dev/null 2>&1
	return 0
}
