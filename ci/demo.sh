#!/bin/bash
# make demo: banger's main job on this host with the embedded default
# (SQLite): start a private bangerd, a loopback OCI registry holding a
# busybox image built from Debian's busybox-static, import the Debian cloud
# kernel (apt-get download), then run examples/ci.yaml through the real CLI:
# image.pull -> vm.create (QEMU; TCG where KVM cannot boot guests) with
# examples/checkout as its workspace -> vm.exec building in the guest with
# live output (exits 3) -> workspace.export of the results -> vm.delete, and
# show the op log.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /tmp/banger-demo.XXXXXX)
chmod 755 "$D"
export BANGER_RUNTIME_DIR="$D/run"
B="$ROOT/build/banger"
FIX="$ROOT/tests/fixtures"
pid=""
. "$FIX/registry.sh"
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	registry_stop "$D/reg" >/dev/null 2>&1
}
trap cleanup EXIT INT TERM
die() {
	echo "demo: $*" >&2
	exit 1
}

echo "== a loopback registry with ci/busybox:1 (busybox-static from Debian)"
registry_start "$D/reg" plain || die "the registry did not start"
"$FIX/mkimage.sh" layout "$D/oci" bb busybox "text:etc/motd=built by banger's demo" >/dev/null ||
	die "building the image failed"
"$FIX/mkimage.sh" push "$D/oci:bb" "$REG_ADDR/ci/busybox:1" >"$D/push.log" 2>&1 ||
	die "push failed: $(cat "$D/push.log")"
echo "$REG_ADDR/ci/busybox:1"

echo "== the guest kernel (Debian's cloud kernel package)"
deb=$(sh "$ROOT/tests/vm/kernel-deb.sh" /var/cache/banger-demo) || die "no kernel package"
echo "$deb"

echo "== bangerd (state and logs in $D)"
"$ROOT/build/bangerd" --state-dir "$D/state" --runtime-dir "$D/run" --log-level warn \
	2>>"$D/bangerd.log" &
pid=$!
i=0
until "$B" ping >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 100 ] && { cat "$D/bangerd.log"; die "bangerd did not start"; }
	sleep 0.05
done
"$B" kernel import --deb "$deb" || die "kernel import failed"

echo
echo "== banger job submit examples/ci.yaml --follow"
sed "s|REGISTRY|$REG_ADDR|g" "$ROOT/examples/ci.yaml" >"$D/ci.yaml"
cp -r "$ROOT/examples/checkout" "$D/checkout"
"$B" job submit "$D/ci.yaml" --follow
echo "submit --follow exited with $? (the guest command's exit status)"
echo
echo "== the results workspace.export brought out: $D/artifacts/out.tar"
tar -tvf "$D/artifacts/out.tar" || die "no results archive"
echo
"$B" job list
echo
"$B" vm list --all
echo
echo "== op log of the VM job"
"$B" oplog 2
echo
echo "state, logs and database are in $D"
exit 0
