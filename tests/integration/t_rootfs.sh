# t_rootfs.sh: OCI layers into ext4 images with rootfs_build() (worker/rootfs.c),
# driven through build/mkrootfs and checked from outside with e2fsprogs
# (e2fsck -fn, debugfs stat/ls/dump/ea_list).  Layers are made here: by
# tests/rootfs/mklayers.py (python tarfile: whiteouts, opaque directories,
# hardlinks, symlinks, devices, fifos, owners, xattrs, gzip/zstd/plain) and
# by GNU tar from busybox-static.

MKROOTFS=$ROOT/build/mkrootfs
MKLAYERS=$ROOT/tests/rootfs/mklayers.py
CHECK=$ROOT/tests/rootfs/check_image.py

need_tools() {
	[ -x "$MKROOTFS" ] || fail "build/mkrootfs is missing (make -j2)"
	for t in e2fsck debugfs dumpe2fs python3 zstd gzip tar sha256sum; do
		command -v "$t" >/dev/null 2>&1 || { echo "skip: $t is not installed"; exit 77; }
	done
}

# fsck IMAGE: e2fsck -fn must find nothing
fsck_clean() {
	e2fsck -fn "$1" >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out" >&2; fail "e2fsck -fn $1 failed"; }
}

# dstat IMAGE PATH: debugfs stat output
dstat() {
	debugfs -R "stat \"$2\"" "$1" 2>&1
}

synth_layers() {
	python3 "$MKLAYERS" synth "$T/layers" "${1:---big-mb=24}" >/dev/null || fail "mklayers synth failed"
	L="$T/layers/l1.tar.gz:gzip $T/layers/l2.tar.zst:application/vnd.oci.image.layer.v1.tar+zstd $T/layers/l3.tar:tar"
}

# build_bad NAME...: mkrootfs must fail; prints stderr; leaves no file in $T/out
build_bad() {
	mkdir -p "$T/out"
	"$MKROOTFS" "$T/out/img.ext4" sha256:bad "$@" >"$T/bad.out" 2>"$T/bad.err"
	rc=$?
	[ $rc -eq 1 ] || fail "mkrootfs exit $rc for a bad build (want 1): $(cat "$T/bad.err")"
	left=$(ls -A "$T/out")
	[ -z "$left" ] || fail "a failed build left files behind: $left"
	cat "$T/bad.err"
}

test_rootfs_synthetic_layers_match_expected_tree() {
	need_tools
	synth_layers
	# shellcheck disable=SC2086
	must "$MKROOTFS" --headroom=16M "$T/img.ext4" sha256:synth $L >"$T/res"
	fsck_clean "$T/img.ext4"
	out=$(python3 "$CHECK" "$T/img.ext4" "$T/layers/expected.json") || fail "tree differs: $out"
	expect_contains "$out" "ok:"
	# The semantics, spelled out (check_image.py checks them all, against a
	# reference merge; these say what matters in words):
	# whiteouts remove lower files and directories
	dstat "$T/img.ext4" /etc/hostname | grep -q 'File not found' || fail "/etc/hostname survived its whiteout"
	dstat "$T/img.ext4" /var/old | grep -q 'File not found' || fail "/var/old survived its whiteout"
	# an opaque directory hides the lower contents, keeps its own
	dstat "$T/img.ext4" /opt/app/a | grep -q 'File not found' || fail "/opt/app/a survived the opaque dir"
	dstat "$T/img.ext4" /opt/app/new | grep -q 'Type: regular' || fail "/opt/app/new missing"
	# a whiteout after a same-layer entry still hides only the lower one
	debugfs -R 'cat /etc/motd' "$T/img.ext4" 2>/dev/null | grep -q 'new motd' || fail "/etc/motd is not layer 3's"
	# a parent path through a symlink lands where the symlink points
	dstat "$T/img.ext4" /usr/bin/extra | grep -q 'Type: regular' || fail "bin/extra did not land in /usr/bin"
	# hardlinks share an inode, across layers, and keep the old data when
	# the original name is replaced
	i1=$(dstat "$T/img.ext4" /share/doc/hl | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
	i2=$(dstat "$T/img.ext4" /share/doc/hl2 | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
	[ -n "$i1" ] && [ "$i1" = "$i2" ] || fail "hardlinks hl/hl2 are inodes '$i1' and '$i2'"
	dstat "$T/img.ext4" /share/doc/hl | grep -q 'Links: 2' || fail "hl does not have 2 links"
	# modes, owners, devices, xattrs
	dstat "$T/img.ext4" /usr/bin/su | grep -q 'Mode:  04755' || fail "setuid bit lost"
	dstat "$T/img.ext4" /tmp | grep -q 'Mode:  01777' || fail "sticky bit lost"
	dstat "$T/img.ext4" /srv/big | grep -q 'User: 70000   Group: 70001' || fail "32-bit owner lost"
	dstat "$T/img.ext4" /dev/null | grep -q 'major/minor number: 01:03' || fail "/dev/null is not 1:3"
	debugfs -R 'ea_list /usr/bin/ping' "$T/img.ext4" 2>/dev/null | grep -q 'security.capability (20)' ||
		fail "ping lost its capability xattr"
	# the large incompressible file, byte for byte
	debugfs -R "dump /data/big.bin $T/big.out" "$T/img.ext4" 2>/dev/null
	python3 - "$T/big.out" <<'EOF' || fail "/data/big.bin differs"
import random, sys
data = open(sys.argv[1], "rb").read()
sys.exit(0 if data == random.Random(4).randbytes(24 << 20) else 1)
EOF
	expect_contains "$(cat "$T/res")" "whiteouts=5"
	free=$(sed -n 's/^free_bytes=//p' "$T/res")
	[ "$free" -ge $((16 << 20)) ] || fail "headroom: $free bytes free, want at least 16 MiB"
}

test_rootfs_reproducible() {
	need_tools
	synth_layers --big-mb=2
	# shellcheck disable=SC2086
	must "$MKROOTFS" "$T/a.ext4" sha256:1111 $L >/dev/null
	sleep 1.1 # a different second must not change a byte
	# shellcheck disable=SC2086
	must "$MKROOTFS" "$T/b.ext4" sha256:1111 $L >/dev/null
	a=$(sha256sum <"$T/a.ext4")
	b=$(sha256sum <"$T/b.ext4")
	expect_eq "$b" "$a" "sha256 of the second build"
	# shellcheck disable=SC2086
	must "$MKROOTFS" "$T/c.ext4" sha256:2222 $L >"$T/c.res"
	c=$(sha256sum <"$T/c.ext4")
	[ "$c" != "$a" ] || fail "another manifest digest gave the same bytes"
	ua=$(dumpe2fs -h "$T/a.ext4" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
	uc=$(dumpe2fs -h "$T/c.ext4" 2>/dev/null | sed -n 's/^Filesystem UUID: *//p')
	[ -n "$ua" ] && [ "$ua" != "$uc" ] || fail "UUIDs '$ua' and '$uc' should differ"
	expect_contains "$(cat "$T/c.res")" "uuid=$uc"
	dumpe2fs -h "$T/a.ext4" 2>/dev/null | grep -q 'Filesystem created: *Sat Jan  1 00:00:00 2000' ||
		fail "filesystem time is not the fixed one"
}

test_rootfs_busybox_image() {
	need_tools
	# busybox-static installs a static /bin/busybox; a downloaded .deb of it
	# in apt's cache serves too
	bb=/bin/busybox
	static() { ldd "$1" 2>&1 | grep -q 'not a dynamic executable'; }
	if ! static "$bb"; then
		deb=$(ls /var/cache/apt/archives/busybox-static_*.deb 2>/dev/null | head -1)
		if [ -n "$deb" ]; then
			dpkg-deb -x "$deb" "$T/deb" || fail "dpkg-deb -x $deb"
			bb=$T/deb/bin/busybox
		fi
	fi
	[ -x "$bb" ] && static "$bb" || { echo "skip: no static busybox (apt-get install busybox-static)"; exit 77; }
	mkdir -p "$T/root/bin" "$T/root/etc"
	cp "$bb" "$T/root/bin/busybox"
	for a in $("$bb" --list); do
		[ "$a" = busybox ] || ln -s busybox "$T/root/bin/$a"
	done
	echo "root:x:0:0:root:/root:/bin/sh" >"$T/root/etc/passwd"
	tar -C "$T/root" --numeric-owner --owner=0 --group=0 -czf "$T/bb.tar.gz" . || fail "tar"
	must "$MKROOTFS" "$T/bb.ext4" sha256:busybox "$T/bb.tar.gz:application/vnd.docker.image.rootfs.diff.tar.gzip" >"$T/res"
	fsck_clean "$T/bb.ext4"
	st=$(dstat "$T/bb.ext4" /bin/busybox)
	expect_contains "$st" "Type: regular    Mode:  0755"
	expect_contains "$st" "Size: $(stat -c %s "$bb")"
	debugfs -R "dump /bin/busybox $T/bb.out" "$T/bb.ext4" 2>/dev/null
	cmp -s "$bb" "$T/bb.out" || fail "/bin/busybox differs from the original"
	sh_st=$(dstat "$T/bb.ext4" /bin/sh)
	expect_contains "$sh_st" 'Fast link dest: "busybox"'
	# /bin/sh -> busybox resolves inside the image: the target exists in /bin
	debugfs -R 'ls -p /bin' "$T/bb.ext4" 2>/dev/null | grep -q '/100755/0/0/busybox/' ||
		fail "the symlink target /bin/busybox is not a regular file in /bin"
	n=$("$bb" --list | grep -vc '^busybox$')
	expect_contains "$(cat "$T/res")" "symlinks=$n"
	# With root and a loop device, let the kernel have the last word:
	# mount read-only and run the image's /bin/sh through the symlink.
	if [ "$(id -u)" = 0 ] && mkdir -p "$T/mnt" && mount -o loop,ro "$T/bb.ext4" "$T/mnt" 2>/dev/null; then
		out=$(chroot "$T/mnt" /bin/sh -c 'echo hello from $(basename $(readlink /bin/sh))' 2>&1)
		umount "$T/mnt"
		expect_eq "$out" "hello from busybox" "chroot /bin/sh"
	fi
}

test_rootfs_journal_and_deep_extent_trees() {
	need_tools
	synth_layers --big-mb=8
	# --max-run=8: every 32 KiB of data is its own extent, so the 8 MiB file
	# needs an extent tree with leaf blocks
	# shellcheck disable=SC2086
	must "$MKROOTFS" --journal --max-run=8 "$T/j.ext4" sha256:journal $L >/dev/null
	fsck_clean "$T/j.ext4"
	dumpe2fs -h "$T/j.ext4" 2>/dev/null | grep -q '^Filesystem features:.*has_journal' || fail "no journal"
	dstat "$T/j.ext4" /data/big.bin | grep -q 'Level Entries' ||
		dstat "$T/j.ext4" /data/big.bin | grep -q '(ETB' || fail "big.bin has no extent tree blocks"
	out=$(python3 "$CHECK" "$T/j.ext4" "$T/layers/expected.json") || fail "tree differs: $out"
}

test_rootfs_unsafe_entries_refused() {
	need_tools
	python3 "$MKLAYERS" bad "$T/bad" || fail "mklayers bad"
	err=$(build_bad "$T/bad/dotdot.tar")
	expect_contains "$err" "layer 1 ($T/bad/dotdot.tar): entry '../etc/passwd': it has a '..' component"
	expect_contains "$err" "[INVAL]"
	err=$(build_bad "$T/bad/absdotdot.tar")
	expect_contains "$err" "entry '/../../etc/shadow': it has a '..' component"
	err=$(build_bad "$T/bad/hardlink-escape.tar")
	expect_contains "$err" "entry 'etc/shadow': its hardlink target '../../etc/shadow' is refused"
	err=$(build_bad "$T/bad/hardlink-missing.tar")
	expect_contains "$err" "entry 'etc/shadow': it is a hardlink to 'etc/nothere', which is not in this layer"
	err=$(build_bad "$T/bad/hardlink-dir.tar")
	expect_contains "$err" "it is a hardlink to the directory 'etc'"
	err=$(build_bad "$T/bad/longname.tar")
	expect_contains "$err" "longer than 255 bytes"
	err=$(build_bad "$T/bad/emptylink.tar")
	expect_contains "$err" "entry 'etc/empty': it is a symlink with an empty target"
	err=$(build_bad "$T/bad/notdir-parent.tar")
	expect_contains "$err" "'etc/passwd' is not a directory"
	# the bad layer is named by its position even when it is not the first
	err=$(build_bad "$T/bad/absolute-symlink-ok.tar" "$T/bad/dotdot.tar")
	expect_contains "$err" "layer 2 ("
	# an absolute symlink is fine: it is resolved inside the guest
	must "$MKROOTFS" "$T/ok.ext4" sha256:ok "$T/bad/absolute-symlink-ok.tar" >/dev/null
	fsck_clean "$T/ok.ext4"
	expect_contains "$(dstat "$T/ok.ext4" /etc/abs)" 'Fast link dest: "/etc/passwd"'
}

test_rootfs_corrupt_layers_refused() {
	need_tools
	python3 "$MKLAYERS" bad "$T/bad" || fail "mklayers bad"
	err=$(build_bad "$T/bad/corrupt.tar.gz:gzip")
	expect_contains "$err" "layer 1 ($T/bad/corrupt.tar.gz): the layer is corrupt or truncated"
	expect_contains "$err" "[IO]"
	err=$(build_bad "$T/bad/absolute-symlink-ok.tar" "$T/bad/trunc.tar.zst:zstd")
	expect_contains "$err" "layer 2 ($T/bad/trunc.tar.zst): the layer is corrupt or truncated"
	printf 'this is not a tar archive at all, just some text that goes on for a while\n%.0s' \
		$(seq 20) >"$T/junk"
	err=$(build_bad "$T/junk")
	expect_contains "$err" "layer 1 ($T/junk): cannot read"
}

test_rootfs_bad_arguments() {
	need_tools
	python3 "$MKLAYERS" bad "$T/bad" || fail "mklayers bad"
	err=$(build_bad "$T/bad/dotdot.tar:application/vnd.oci.image.layer.v1.tar+bzip2")
	expect_contains "$err" "media type 'application/vnd.oci.image.layer.v1.tar+bzip2' is not supported"
	expect_contains "$err" "[UNSUPPORTED]"
	err=$(build_bad "$T/nothere.tar.gz")
	expect_contains "$err" "layer 1 ($T/nothere.tar.gz): cannot read '$T/nothere.tar.gz': No such file"
	expect_contains "$err" "[NOENT]"
	"$MKROOTFS" "$T/out/x.ext4" "" "$T/bad/absolute-symlink-ok.tar" >/dev/null 2>"$T/err"
	expect_contains "$(cat "$T/err")" "no manifest digest given"
	[ ! -e "$T/out/x.ext4" ] || fail "a refused build left its output"
}

test_rootfs_cancel_removes_output() {
	need_tools
	synth_layers --big-mb=8
	mkdir -p "$T/out"
	# shellcheck disable=SC2086
	"$MKROOTFS" --cancel-after=30 "$T/out/img.ext4" sha256:c $L >/dev/null 2>"$T/err"
	[ $? -eq 1 ] || fail "a cancelled build did not fail"
	expect_contains "$(cat "$T/err")" "[CANCELED]"
	[ -z "$(ls -A "$T/out")" ] || fail "a cancelled build left files: $(ls -A "$T/out")"
}

test_rootfs_disk_full() {
	need_tools
	[ "$(id -u)" = 0 ] || { echo "skip: needs root to mount a small tmpfs"; exit 77; }
	synth_layers --big-mb=24
	mkdir -p "$T/small"
	mount -t tmpfs -o size=8m tmpfs "$T/small" || { echo "skip: cannot mount tmpfs"; exit 77; }
	# unmount whatever happens (one.sh's cleanup still runs)
	# shellcheck disable=SC2064
	trap "umount '$T/small' 2>/dev/null; cleanup" EXIT
	# checked before writing: fails at once with the sizes
	# shellcheck disable=SC2086
	"$MKROOTFS" "$T/small/img.ext4" sha256:full $L >/dev/null 2>"$T/err1"
	[ $? -eq 1 ] || fail "a build on a full disk did not fail"
	expect_contains "$(cat "$T/err1")" "not enough space for '$T/small/img.ext4'"
	expect_contains "$(cat "$T/err1")" "[NOSPC]"
	[ -z "$(ls -A "$T/small")" ] || fail "left behind: $(ls -A "$T/small")"
	# met while writing (the check skipped): same code, file removed
	# shellcheck disable=SC2086
	"$MKROOTFS" --no-space-check "$T/small/img.ext4" sha256:full $L >/dev/null 2>"$T/err2"
	[ $? -eq 1 ] || fail "a build that filled the disk did not fail"
	expect_contains "$(cat "$T/err2")" "no space left on the disk holding '$T/small/img.ext4'"
	expect_contains "$(cat "$T/err2")" "[NOSPC]"
	[ -z "$(ls -A "$T/small")" ] || fail "left behind: $(ls -A "$T/small")"
	umount "$T/small"
	trap cleanup EXIT
}
