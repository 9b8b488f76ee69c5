#!/bin/sh
# hang-initrd.sh OUT.cpio: an initramfs whose /init boots and then never
# answers (a guest that "never boots" as far as banger can tell), built
# from busybox-static with cpio.
set -eu
out=$1
d=$out.d
rm -rf "$d"
mkdir -p "$d/bin" "$d/dev"
cp "$(command -v busybox)" "$d/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox echo "hang-initrd: up, and never answering"\nexec /bin/busybox sleep 1000000\n' >"$d/init"
chmod 755 "$d/init"
(cd "$d" && find . | cpio -o -H newc 2>/dev/null) >"$out"
rm -rf "$d"
