#!/bin/bash
# measure.sh [MB]: time and peak memory of rootfs_build() (build/mkrootfs) on a
# synthetic five-layer gzip image of about MB megabytes (default 400), against
# the pipeline a user would otherwise script in the same run: unpack the
# layers into a directory applying whiteouts (GNU tar), then mkfs.ext4 -d.
# Not a test (nothing is asserted): it prints a table.  Needs build/mkrootfs,
# python3, GNU tar, e2fsprogs and /usr/bin/time; scratch in $MEASURE_DIR
# (default /tmp/banger-rootfs-measure), removed at the end unless KEEP=1;
# REUSE=1 keeps layers a KEEP=1 run left there (generating takes a minute).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MB=${1:-400}
D=${MEASURE_DIR:-/tmp/banger-rootfs-measure}
if [ "${REUSE:-0}" = 1 ] && [ -f "$D/layers/l5.tar.gz" ]; then
	rm -rf "$D/tree" "$D"/*.ext4
else
	rm -rf "$D"
	mkdir -p "$D"
	echo "generating ~$MB MB in 5 gzip layers..." >&2
	python3 "$ROOT/tests/rootfs/mklayers.py" bench "$D/layers" --mb="$MB" >/dev/null
fi
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$D"' EXIT
LAYERS=$(ls "$D"/layers/l*.tar.gz)
cat $LAYERS >/dev/null # warm the page cache for both sides alike

# run NAME CMD...: /usr/bin/time -v; keeps wall seconds and max RSS (KiB)
run() {
	name=$1
	shift
	/usr/bin/time -v "$@" >"$D/$name.out" 2>"$D/$name.time"
	wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$D/$name.time" |
		awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$D/$name.time")
	printf '%-28s %8.2f s %8.1f MiB\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)"
}

unpack() {
	mkdir -p "$D/tree"
	for l in $LAYERS; do
		# whiteouts first: they hide what the layers below hold
		tar -tzf "$l" | grep -E '(^|/)\.wh\.' | while read -r w; do
			dir=${w%/*}
			base=${w##*/}
			if [ "$base" = .wh..wh..opq ]; then
				[ -d "$D/tree/$dir" ] && find "$D/tree/$dir" -mindepth 1 -delete
			else
				rm -rf "${D:?}/tree/$dir/${base#.wh.}"
			fi
		done
		tar -xzf "$l" -C "$D/tree" --numeric-owner --exclude='.wh.*' --exclude='*/.wh.*'
	done
}

echo "layers: $(du -ch $LAYERS | tail -1 | cut -f1) compressed" >&2
printf '%-28s %10s %12s\n' step wall "peak RSS"
run banger-mkrootfs "$ROOT/build/mkrootfs" --headroom=20% "$D/banger.ext4" sha256:bench $LAYERS
size=$(sed -n 's/^image_bytes=//p' "$D/banger-mkrootfs.out")
export -f unpack
export D LAYERS
run pipeline-unpack bash -c unpack
run pipeline-mkfs.ext4-d mkfs.ext4 -q -F -b 4096 -d "$D/tree" "$D/mkfs.ext4" "$((size / 1024))k"
u=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$D/pipeline-unpack.time")
echo
echo "banger image: $(cat "$D/banger-mkrootfs.out" | tr '\n' ' ')"
echo "files in the unpacked tree: $(find "$D/tree" -type f | wc -l), $(du -sh "$D/tree" | cut -f1)"
e2fsck -fn "$D/banger.ext4" >/dev/null 2>&1 && echo "e2fsck -fn banger.ext4: clean" || echo "e2fsck -fn banger.ext4: ERRORS"
e2fsck -fn "$D/mkfs.ext4" 2>/dev/null | tail -1
e2fsck -fn "$D/banger.ext4" 2>/dev/null | tail -1
