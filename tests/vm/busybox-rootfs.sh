#!/bin/sh
# busybox-rootfs.sh OUT.ext4 [noshell]: a small root filesystem built from
# busybox-static with mkfs.ext4 -d (no mount, no loop device): /bin/busybox,
# every applet linked to it in /bin, /tmp, /etc, /root, and empty /proc,
# /sys, /dev, /run for the agent's mounts.  With noshell, only
# /bin/busybox: an image with no shell and no init at all, as some minimal
# images are.
set -eu
out=$1
mode=${2:-}
bb=$(command -v busybox)
[ -n "$bb" ] || { echo "busybox-static is not installed" >&2; exit 1; }
dpkg -s busybox-static >/dev/null 2>&1 ||
	{ echo "$bb is not the static busybox (install busybox-static)" >&2; exit 1; }
d=$out.d
rm -rf "$d"
mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root" "$d/proc" "$d/sys" "$d/dev" "$d/run"
chmod 1777 "$d/tmp"
cp "$bb" "$d/bin/busybox"
if [ "$mode" != noshell ]; then
	for a in $("$bb" --list); do
		[ "$a" = busybox ] || ln -s busybox "$d/bin/$a"
	done
fi
echo "root:x:0:0:root:/root:/bin/sh" >"$d/etc/passwd"
mkfs.ext4 -q -F -L banger-test -d "$d" "$out" 64M
rm -rf "$d"
