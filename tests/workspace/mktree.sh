#!/bin/sh
# mktree.sh DIR [BIG_MB]: the workspace test tree: nested directories, a
# BIG_MB MiB file (default 200; 0 for none), small files, an executable, a
# setuid-free script, symlinks (relative, absolute, one pointing outside the
# tree, one dangling), a hardlink pair, unicode names, empty directories, a
# .git checkout (when git is there), excluded paths (node_modules,
# .git/objects/pack/*.tmp), and, as root, a fifo and a file owned by uid
# 4242 (skipped with warnings).  Fixed mtimes so builds are reproducible.
set -eu
d=$1
big=${2:-200}
rm -rf "$d"
mkdir -p "$d/src/lib/deep/er/still" "$d/empty" "$d/empty2/inner" "$d/node_modules/pkg" \
	"$d/sub/node_modules" "$d/out"
echo 'int main(void) { return 0; }' >"$d/src/main.c"
printf 'line 1\nline 2\n' >"$d/src/lib/deep/er/still/file.txt"
printf '#!/bin/sh\necho run\n' >"$d/run.sh"
chmod 755 "$d/run.sh"
chmod 640 "$d/src/main.c"
echo module >"$d/node_modules/pkg/index.js"
echo nested >"$d/sub/node_modules/x.js"
printf 'héllo wörld\n' >"$d/src/ünïcödé-файл.txt"
mkdir -p "$d/日本語"
echo 'japanese dir' >"$d/日本語/テスト.md"
ln -s ../src/main.c "$d/out/link-rel"
ln -s /etc/hostname "$d/out/link-abs"
ln -s ../../../../etc/passwd "$d/src/link-outside"
ln -s does/not/exist "$d/dangling"
echo shared >"$d/src/hard-a"
ln "$d/src/hard-a" "$d/src/lib/hard-b"
head -c 100000 /dev/urandom >"$d/src/random.bin"
if [ "$big" -gt 0 ]; then
	# not all zeros, so a sparse copy would be noticed
	dd if=/dev/urandom of="$d/big.bin" bs=1M count=1 2>/dev/null
	dd if=/dev/zero bs=1M count=$((big - 1)) 2>/dev/null >>"$d/big.bin"
	printf 'tail' >>"$d/big.bin"
fi
if command -v git >/dev/null; then
	(cd "$d" && git init -q && git add -A src run.sh && \
		git -c user.email=t@t -c user.name=t commit -qm init) >/dev/null 2>&1 || true
	mkdir -p "$d/.git/objects/pack"
	echo junk >"$d/.git/objects/pack/tmp_pack_1.tmp"
fi
if [ "$(id -u)" = 0 ]; then
	mkfifo "$d/a-fifo"
	echo other >"$d/not-mine.txt"
	chown 4242:4242 "$d/not-mine.txt"
fi
find "$d" -exec touch -h -d '2024-05-01 12:00:00' {} + 2>/dev/null || true
