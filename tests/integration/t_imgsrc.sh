# t_imgsrc.sh: the image-source half of image.pull against Debian's real
# docker-registry on 127.0.0.1 (tests/fixtures/registry.sh), with images
# built from busybox-static and synthetic layers (tests/fixtures/mkimage.sh)
# and pushed with skopeo.  build/imgfetch drives the C API the way the
# image.pull step will: it prints the fetched image as JSON, or
# "imgfetch: CODE: message" and exits 1.
#
# Faults come from tests/fixtures/httpfault.py, a proxy in front of the
# registry (cut or stalled blob downloads, injected 5xx/4xx, canned bad
# manifests).  Only loopback traffic.  Every server a test starts keeps its
# pid in $T/<name>/daemon.pid, so one.sh kills it whatever happens.

FIX=$ROOT/tests/fixtures
IMGFETCH=$ROOT/build/imgfetch
. "$FIX/registry.sh"

skip() {
	echo "skip: $*"
	exit 77
}

need() {
	local t
	for t in docker-registry skopeo busybox htpasswd openssl curl python3 jq zstd sha256sum; do
		command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (see ci/deps/imgsrc.txt)"
	done
	[ -x "$IMGFETCH" ] || skip "build/imgfetch is not built (make)"
}

# fetch ARGS...: imgfetch with the test's cache; JSON in $T/out.json,
# stderr in $T/err; returns imgfetch's status
fetch() {
	"$IMGFETCH" --cache "$T/cache" --backoff-ms 100 "$@" >"$T/out.json" 2>"$T/err"
}

must_fetch() {
	fetch "$@" || fail "imgfetch $* failed: $(cat "$T/err")"
}

# must_fail CODE TEXT ARGS...: imgfetch fails with CODE and a message holding TEXT
must_fail() {
	local code=$1 text=$2
	shift 2
	if fetch "$@"; then
		fail "imgfetch $* succeeded, expected $code"
	fi
	expect_contains "$(cat "$T/err")" "imgfetch: $code: " "error"
	expect_contains "$(cat "$T/err")" "$text" "error"
}

out() { jq -r "$1" "$T/out.json"; }

# every layer path exists and hashes to its digest
check_layers() {
	local n i d p
	n=$(out '.layers | length')
	[ "$n" -gt 0 ] || fail "no layers in $(cat "$T/out.json")"
	for i in $(seq 0 $((n - 1))); do
		d=$(out ".layers[$i].digest")
		p=$(out ".layers[$i].path")
		[ -f "$p" ] || fail "layer $d: $p missing"
		expect_eq "sha256:$(sha256sum "$p" | cut -d' ' -f1)" "$d" "sha256 of $p"
		expect_eq "$(out ".layers[$i].size")" "$(stat -c %s "$p")" "size of $p"
	done
}

no_partials() {
	local left
	left=$(ls -A "$T/cache/tmp" 2>/dev/null)
	[ -z "$left" ] || fail "partial files left in the cache: $left"
}

# a two-layer linux/amd64 image "bb" in $T/oci; BB is its manifest digest
make_bb() {
	BB=$("$FIX/mkimage.sh" layout "$T/oci" bb busybox --compress zstd text:etc/banger=hello) ||
		fail "mkimage failed"
}

start_reg() {
	need
	registry_start "$T/reg" "${1:-plain}" || fail "registry did not start"
}

push() {
	"$FIX/mkimage.sh" push "$@" >"$T/push.log" 2>&1 || fail "push $*: $(cat "$T/push.log")"
}

blob_gets() { # how many blob GETs the registry served so far
	grep -c '"GET /v2/[^ ]*/blobs/' "$T/reg/registry.log"
}

test_pull_by_tag_digest_and_warm_cache() {
	start_reg
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1"
	must_fetch --progress "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest"
	expect_eq "$(out .index_digest)" "" "index digest"
	expect_eq "$(out .platform)" "linux/amd64" "platform"
	expect_eq "$(out '.layers | length')" 2 "layers"
	expect_eq "$(out '[.layers[].compression] | join(",")')" "gzip,zstd" "compression"
	expect_eq "$(out .fetched_blobs)" 3 "blobs fetched (config + 2 layers)"
	check_layers
	# the diff_ids are the sha256 of the uncompressed layers
	expect_eq "$(out '.layers[0].diff_id')" \
		"sha256:$(gzip -dc "$(out '.layers[0].path')" | sha256sum | cut -d' ' -f1)" "diff_id"
	jq -e .rootfs "$(out .config_path)" >/dev/null || fail "config_path is not the config"
	# progress reported done == total exactly once per layer
	for d in $(out '.layers[].digest'); do
		expect_eq "$(grep -c "^progress $d \([0-9]*\) \1$" "$T/err")" 1 "final progress lines for $d"
	done
	no_partials

	# by digest, into a fresh cache: the same image
	rm -rf "$T/cache"
	must_fetch "$REG_ADDR/ci/busybox@$BB"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest by digest"
	check_layers

	# warm: nothing transferred, no blob requested (only the tag's HEAD)
	before=$(blob_gets)
	must_fetch "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .fetched_bytes)" 0 "bytes fetched when warm"
	expect_eq "$(out .fetched_blobs)" 0 "blobs fetched when warm"
	expect_eq "$(blob_gets)" "$before" "blob GETs when warm"
	must_fetch "$REG_ADDR/ci/busybox@$BB"
	expect_eq "$(out .fetched_bytes)" 0 "bytes fetched when warm, by digest"
}

test_docker_schema2_manifest() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" v2 busybox text:a=b >/dev/null || fail mkimage
	push "$T/oci:v2" "$REG_ADDR/ci/v2:1" --v2s2
	must_fetch "$REG_ADDR/ci/v2:1"
	expect_eq "$(out .manifest_media_type)" "application/vnd.docker.distribution.manifest.v2+json" "media type"
	expect_eq "$(out '.layers[0].media_type')" "application/vnd.docker.image.rootfs.diff.tar.gzip" "layer type"
	check_layers
}

test_index_picks_linux_amd64() {
	start_reg
	make_bb
	ARM=$("$FIX/mkimage.sh" layout "$T/oci" arm --platform linux/arm64/v8 text:arch=arm64) || fail mkimage
	IDX=$("$FIX/mkimage.sh" index "$T/oci" multi arm bb) || fail mkimage
	push "$T/oci:multi" "$REG_ADDR/ci/multi:1"
	must_fetch "$REG_ADDR/ci/multi:1"
	expect_eq "$(out .index_digest)" "$IDX" "index digest"
	expect_eq "$(out .manifest_digest)" "$BB" "amd64 manifest chosen"
	check_layers
	must_fetch --platform linux/arm64 "$REG_ADDR/ci/multi:1"
	expect_eq "$(out .manifest_digest)" "$ARM" "arm64 manifest chosen"
	expect_eq "$(out .platform)" "linux/arm64/v8" "platform"
	# by the index's digest too
	must_fetch "$REG_ADDR/ci/multi@$IDX"
	expect_eq "$(out .manifest_digest)" "$BB" "amd64 manifest chosen by index digest"
}

test_index_without_linux_amd64() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" arm --platform linux/arm64 text:a=1 >/dev/null || fail mkimage
	"$FIX/mkimage.sh" layout "$T/oci" s390 --platform linux/s390x text:a=2 >/dev/null || fail mkimage
	IDX=$("$FIX/mkimage.sh" index "$T/oci" noamd arm s390) || fail mkimage
	push "$T/oci:noamd" "$REG_ADDR/ci/noamd:1"
	must_fail NOENT "index $IDX has no linux/amd64 image (it has: linux/arm64, linux/s390x)" \
		"$REG_ADDR/ci/noamd:1"
	expect_contains "$(cat "$T/err")" "$REG_ADDR/ci/noamd:1: " "error names the ref"
	# nothing but the index itself was stored
	expect_eq "$(ls "$T/cache/sha256")" "${IDX#sha256:}" "cache content"
	must_fail INVAL "invalid platform 'amd64'" --platform amd64 "$REG_ADDR/ci/noamd:1"
}

test_basic_auth() {
	start_reg basic
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1" --creds "$REG_USER:$REG_PASS"
	registry_auth_file "$T/auth.json"
	must_fetch --auth "$T/auth.json" "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest"
	check_layers

	rm -rf "$T/cache"
	registry_auth_file "$T/wrong.json" "$REG_USER" not-the-password
	must_fail PERM "registry $REG_ADDR refused the credentials of user '$REG_USER' (from $T/wrong.json): HTTP 401" \
		--auth "$T/wrong.json" "$REG_ADDR/ci/busybox:1"
	expect_contains "$(cat "$T/err")" "UNAUTHORIZED" "registry's error code"
	must_fail PERM "requires a user name and password" "$REG_ADDR/ci/busybox:1"
	chmod 644 "$T/auth.json"
	must_fail PERM "has mode 0644: group and others must have no access to it (run: chmod 600 $T/auth.json)" \
		--auth "$T/auth.json" "$REG_ADDR/ci/busybox:1"
	[ -z "$(ls -A "$T/cache/sha256")" ] || fail "refused pulls stored blobs"
}

test_bearer_token_flow() {
	start_reg token
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1" --creds "$REG_USER:$REG_PASS"
	: >"$REG_TOKEN_LOG"
	registry_auth_file "$T/auth.json"
	must_fetch --auth "$T/auth.json" "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest"
	check_layers
	# one token for the whole pull (manifest + config + layers): it is cached
	expect_eq "$(grep -c ' -> 200' "$REG_TOKEN_LOG")" 1 "token requests"
	grep -q "user=$REG_USER scope=repository:ci/busybox:pull service=banger-test-registry" \
		"$REG_TOKEN_LOG" || fail "token request: $(cat "$REG_TOKEN_LOG")"

	rm -rf "$T/cache"
	registry_auth_file "$T/wrong.json" "$REG_USER" nope
	must_fail PERM "token server refused the credentials of user '$REG_USER' (from $T/wrong.json)" \
		--auth "$T/wrong.json" "$REG_ADDR/ci/busybox:1"
	expect_contains "$(cat "$T/err")" "HTTP 401 from $REG_TOKEN_URL" "token URL in the error"
	expect_contains "$(cat "$T/err")" "bad user name or password" "token server's error"
	must_fail PERM "token server refused anonymous access to repository:ci/busybox:pull" \
		"$REG_ADDR/ci/busybox:1"
}

test_https_registry() {
	start_reg tls
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1"
	must_fetch --ca "$REG_CA" "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest over HTTPS"
	grep -q '"GET /v2/ci/busybox/manifests/1 HTTP/' "$T/reg/registry.log" || fail "no GET in the registry log"
	rm -rf "$T/cache"
	# an untrusted certificate is an error, not a silent fall back to HTTP
	must_fail IO "cannot verify the TLS certificate of $REG_ADDR" "$REG_ADDR/ci/busybox:1"
	# unless the registry is listed as insecure
	must_fetch --insecure "$REG_ADDR" "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest, insecure"
}

test_unknown_tag_is_404_not_retried() {
	start_reg
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" || fail "proxy did not start"
	must_fail NOENT "manifest 'nope' not found in $FAULT_ADDR/ci/busybox: HTTP 404 from http://$FAULT_ADDR/v2/ci/busybox/manifests/nope (MANIFEST_UNKNOWN: manifest unknown" \
		"$FAULT_ADDR/ci/busybox:nope"
	# 4xx: asked once (HEAD, then GET for the error body), never retried
	expect_eq "$(grep -c '^GET /v2/ci/busybox/manifests/nope ' "$FAULT_LOG")" 1 "GETs of the unknown tag"
	expect_eq "$(grep -c '^HEAD /v2/ci/busybox/manifests/nope ' "$FAULT_LOG")" 1 "HEADs of the unknown tag"
	must_fail NOENT "HTTP 404" "$REG_ADDR/ci/nosuchrepo:1"
	must_fail NOENT "MANIFEST_UNKNOWN" "$REG_ADDR/ci/busybox@sha256:$(printf 'x' | sha256sum | cut -d' ' -f1)"
	must_fail INVAL "invalid reference '$REG_ADDR/CI/busybox:1': repository names must be lowercase" \
		"$REG_ADDR/CI/busybox:1"
}

test_malformed_and_unsupported_manifests() {
	need
	printf '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {' \
		>"$T/broken.json"
	cat >"$T/schema1.json" <<'EOF'
{"schemaVersion": 1, "name": "ci/old", "tag": "1", "architecture": "amd64", "fsLayers": [], "history": []}
EOF
	cat >"$T/artifact.json" <<'EOF'
{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
 "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "size": 2,
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
 "layers": []}
EOF
	registry_fault_start "$T/fake" \
		--serve "/v2/ci/bad/manifests/1=$T/broken.json=application/vnd.oci.image.manifest.v1+json" \
		--serve "/v2/ci/old/manifests/1=$T/schema1.json=application/vnd.docker.distribution.manifest.v1+prettyjws" \
		--serve "/v2/ci/helm/manifests/1=$T/artifact.json=application/vnd.oci.image.manifest.v1+json" ||
		fail "fake registry did not start"
	bad=sha256:$(sha256sum "$T/broken.json" | cut -d' ' -f1)
	must_fail PROTO "$FAULT_ADDR/ci/bad:1: manifest $bad is not valid JSON: line 1 column" "$FAULT_ADDR/ci/bad:1"
	must_fail UNSUPPORTED "is a Docker schema-1 manifest, which is not supported" "$FAULT_ADDR/ci/old:1"
	must_fail UNSUPPORTED "is not a container image: its config has media type 'application/vnd.cncf.helm.config.v1+json'" \
		"$FAULT_ADDR/ci/helm:1"
	must_fail NOENT "NAME_UNKNOWN" "$FAULT_ADDR/ci/none:1"
}

test_corrupt_blob_in_registry() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big random:data/blob.bin=3M >/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	layer=$(jq -r '.layers[0].digest' "$T/oci/blobs/sha256/$(jq -r '.manifests[0].digest' "$T/oci/index.json" | cut -d: -f2)")
	f=$(registry_blob_path "$layer")
	[ -f "$f" ] || fail "no blob at $f"
	# flip bytes in the middle, same size
	printf 'CORRUPTED' | dd of="$f" bs=1 seek=1000000 conv=notrunc status=none
	actual=sha256:$(sha256sum "$f" | cut -d' ' -f1)
	must_fail PROTO "blob $layer is corrupt: expected digest $layer, got $actual" "$REG_ADDR/ci/big:1"
	expect_contains "$(cat "$T/err")" "$REG_ADDR/ci/big:1: " "error names the ref"
	expect_contains "$(cat "$T/err")" "deleted the partial download" "error"
	no_partials
	[ ! -e "$T/cache/sha256/${layer#sha256:}" ] || fail "corrupt blob was published"
}

test_truncated_download_resumes_with_range() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/blob.bin=3M >/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" --cut-after 1000000 ||
		fail "proxy did not start"
	must_fetch "$FAULT_ADDR/ci/big:1"
	check_layers
	layer=$(out '.layers[0].digest')
	grep -q "^GET /v2/ci/big/blobs/$layer range=- -> 200 cut after 1000000 bytes" "$FAULT_LOG" ||
		fail "the download was not cut: $(cat "$FAULT_LOG")"
	grep -q "^GET /v2/ci/big/blobs/$layer range=bytes=1000000- -> 206" "$FAULT_LOG" ||
		fail "no Range request resumed it: $(cat "$FAULT_LOG")"
	# nothing was transferred twice: manifest + config + layer, once each
	msize=$(stat -c %s "$T/cache/sha256/$(out .manifest_digest | cut -d: -f2)")
	csize=$(stat -c %s "$(out .config_path)")
	expect_eq "$(out .fetched_bytes)" $(($(out .layers_size) + msize + csize)) "bytes transferred"
	no_partials
}

test_server_without_range_support_restarts() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/blob.bin=2M >/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" --cut-after 500000 --no-range ||
		fail "proxy did not start"
	must_fetch "$FAULT_ADDR/ci/big:1"
	check_layers
	layer=$(out '.layers[0].digest')
	# asked for the rest, got the whole blob (200): started over
	grep -q "^GET /v2/ci/big/blobs/$layer range=bytes=500000- -> 200" "$FAULT_LOG" ||
		fail "no retry: $(cat "$FAULT_LOG")"
	no_partials
}

# a download interrupted (cancelled, or the process killed) keeps its
# partial; the next pull resumes after the bytes it holds
interrupted_then_resumed() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/blob.bin=3M >/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" --stall-after 1200000 ||
		fail "proxy did not start"
	layer=$(jq -r '.layers[0].digest' "$T/oci/blobs/sha256/$(jq -r '.manifests[0].digest' "$T/oci/index.json" | cut -d: -f2)")
	partial=$T/cache/tmp/${layer#sha256:}.partial
	if [ "$1" = cancel ]; then
		must_fail CANCELED "cancelled" --cancel-after-ms 1500 "$FAULT_ADDR/ci/big:1"
	else
		"$IMGFETCH" --cache "$T/cache" "$FAULT_ADDR/ci/big:1" >"$T/out.json" 2>"$T/err" &
		pid=$!
		i=0
		while [ "$(stat -c %s "$partial" 2>/dev/null || echo 0)" -lt 1200000 ]; do
			i=$((i + 1))
			[ $i -gt 400 ] && fail "the download never reached the stall point"
			sleep 0.05
		done
		kill -KILL $pid
		wait $pid 2>/dev/null
	fi
	expect_eq "$(stat -c %s "$partial" 2>/dev/null)" 1200000 "partial kept"
	must_fetch "$FAULT_ADDR/ci/big:1"
	check_layers
	grep -q "^GET /v2/ci/big/blobs/$layer range=bytes=1200000- -> 206" "$FAULT_LOG" ||
		fail "not resumed with Range: $(cat "$FAULT_LOG")"
	no_partials
}

test_cancel_keeps_partial_then_resumes() {
	interrupted_then_resumed cancel
}

test_crash_keeps_partial_then_resumes() {
	interrupted_then_resumed crash
}

test_stalled_download_times_out_and_resumes() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/blob.bin=2M >/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	registry_fault_start "$T/fault" --upstream "http://$REG_ADDR" --stall-after 700000 ||
		fail "proxy did not start"
	must_fetch --stall-s 2 "$FAULT_ADDR/ci/big:1"
	check_layers
	layer=$(out '.layers[0].digest')
	grep -q "^GET /v2/ci/big/blobs/$layer range=- -> 200 stall after 700000 bytes" "$FAULT_LOG" ||
		fail "no stall: $(cat "$FAULT_LOG")"
	grep -q "^GET /v2/ci/big/blobs/$layer range=bytes=700000- -> 206" "$FAULT_LOG" ||
		fail "not resumed after the stall: $(cat "$FAULT_LOG")"
	no_partials
}

test_retry_on_5xx_not_on_4xx() {
	start_reg
	make_bb
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1"
	registry_fault_start "$T/f503" --upstream "http://$REG_ADDR" --fail-blobs 2 --fail-status 503 ||
		fail "proxy did not start"
	must_fetch --parallel 1 "$FAULT_ADDR/ci/busybox:1"
	check_layers
	expect_eq "$(grep -c ' -> 503 injected' "$FAULT_LOG")" 2 "injected 503s"
	rm -rf "$T/cache"
	registry_fault_start "$T/f403" --upstream "http://$REG_ADDR" --fail-blobs 1 --fail-status 403 ||
		fail "proxy did not start"
	must_fail PERM "HTTP 403 from http://$FAULT_ADDR/v2/ci/busybox/blobs/" --parallel 1 "$FAULT_ADDR/ci/busybox:1"
	expect_contains "$(cat "$T/err")" "UNAVAILABLE: injected failure" "registry error text"
	expect_eq "$(grep -c '^GET /v2/ci/busybox/blobs/' "$FAULT_LOG")" 1 "blob GETs after a 403"
	# 5xx that never ends: bounded attempts, then an error naming them
	registry_fault_start "$T/f500" --upstream "http://$REG_ADDR" --fail-blobs 100 --fail-status 500 ||
		fail "proxy did not start"
	must_fail IO "HTTP 500 from http://$FAULT_ADDR/v2/ci/busybox/blobs/" --attempts 3 --parallel 1 \
		"$FAULT_ADDR/ci/busybox:1"
	expect_contains "$(cat "$T/err")" "(3 attempts)" "attempts"
	# nothing listening: connection errors are retried, then reported
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	must_fail IO "127.0.0.1:$port" --attempts 2 "127.0.0.1:$port/ci/busybox:1"
}

test_oci_layout_source() {
	need
	make_bb
	"$FIX/mkimage.sh" layout "$T/oci" other text:x=y >/dev/null || fail mkimage
	must_fetch --progress "oci:$T/oci:bb"
	expect_eq "$(out .ref)" "oci:$T/oci:bb" "ref"
	expect_eq "$(out .manifest_digest)" "$BB" "manifest digest"
	check_layers
	l0=$(out '.layers[0].digest')
	must_fetch "oci:$T/oci:bb"
	expect_eq "$(out .fetched_bytes)" 0 "warm"
	must_fail INVAL "holds 2 images; name one with oci:$T/oci:NAME (names: 'bb', 'other')" "oci:$T/oci"
	must_fail NOENT "no image named 'nope' in $T/oci" "oci:$T/oci:nope"
	must_fail NOENT "cannot open the OCI layout $T/nowhere" "oci:$T/nowhere"
	mkdir -p "$T/notlayout"
	must_fail NOENT "$T/notlayout is not an OCI image layout" "oci:$T/notlayout"
	# a damaged blob in the layout is caught by its digest
	rm -rf "$T/cache"
	chmod u+w "$T/oci/blobs/sha256/${l0#sha256:}"
	printf 'X' | dd of="$T/oci/blobs/sha256/${l0#sha256:}" bs=1 seek=100 conv=notrunc status=none
	must_fail PROTO "blob $l0 is corrupt: expected digest $l0" "oci:$T/oci:bb"
	no_partials
}

test_docker_archive_source() {
	need
	# (a docker archive cannot hold zstd layers)
	BB=$("$FIX/mkimage.sh" layout "$T/oci" bb busybox text:etc/banger=hello) || fail mkimage
	"$FIX/mkimage.sh" archive "$T/oci:bb" "$T/bb.tar" ci/busybox:1 >"$T/skopeo.log" 2>&1 ||
		fail "skopeo: $(cat "$T/skopeo.log")"
	must_fetch "docker-archive:$T/bb.tar"
	check_layers
	expect_eq "$(out '.layers | length')" 2 "layers"
	# docker-archive layers are uncompressed tars: digest == diff_id, and the
	# same content as the OCI image's layers
	oci_ids=$(jq -r '.rootfs.diff_ids | join(",")' "$T/oci/blobs/sha256/$(jq -r .config.digest "$T/oci/blobs/sha256/${BB#sha256:}" | cut -d: -f2)")
	expect_eq "$(out '[.layers[].diff_id] | join(",")')" "$oci_ids" "diff_ids"
	expect_eq "$(out '[.layers[].digest] | join(",")')" "$oci_ids" "digests"
	expect_eq "$(out '[.layers[].compression] | join(",")')" "tar,tar" "compression"
	first=$(out .manifest_digest)
	must_fetch "docker-archive:$T/bb.tar:ci/busybox:1"
	expect_eq "$(out .manifest_digest)" "$first" "same archive, same manifest digest"
	expect_eq "$(out .fetched_blobs)" 0 "warm"
	must_fail NOENT "has no image tagged 'ci/busybox:2' (tags: docker.io/ci/busybox:1)" \
		"docker-archive:$T/bb.tar:ci/busybox:2"
	printf 'not a tar' >"$T/junk.tar"
	must_fail PROTO "$T/junk.tar is not a docker archive (a tar file)" "docker-archive:$T/junk.tar"
	must_fail NOENT "cannot read the docker archive $T/none.tar: No such file" "docker-archive:$T/none.tar"
}

test_concurrent_pulls_share_the_cache() {
	start_reg
	"$FIX/mkimage.sh" layout "$T/oci" big --compress none random:data/a.bin=4M random:data/b.bin=4M \
		>/dev/null || fail mkimage
	push "$T/oci:big" "$REG_ADDR/ci/big:1"
	"$IMGFETCH" --cache "$T/cache" "$REG_ADDR/ci/big:1" >"$T/a.json" 2>"$T/a.err" &
	a=$!
	"$IMGFETCH" --cache "$T/cache" "$REG_ADDR/ci/big:1" >"$T/b.json" 2>"$T/b.err" &
	b=$!
	wait $a || fail "first pull: $(cat "$T/a.err")"
	wait $b || fail "second pull: $(cat "$T/b.err")"
	expect_eq "$(jq -r .manifest_digest "$T/a.json")" "$(jq -r .manifest_digest "$T/b.json")" "digests"
	cp "$T/a.json" "$T/out.json"
	check_layers
	no_partials
}

test_prune_keeps_what_images_use() {
	start_reg
	make_bb
	OTHER=$("$FIX/mkimage.sh" layout "$T/oci" other busybox text:etc/other=1) || fail mkimage
	push "$T/oci:bb" "$REG_ADDR/ci/busybox:1"
	push "$T/oci:other" "$REG_ADDR/ci/other:1"
	must_fetch "$REG_ADDR/ci/busybox:1"
	must_fetch "$REG_ADDR/ci/other:1"
	other_only=$(out '.layers[1].digest')
	shared=$(out '.layers[0].digest')
	"$IMGFETCH" --cache "$T/cache" --blobs "$BB" >"$T/blobs.txt" || fail "--blobs failed"
	expect_eq "$(wc -l <"$T/blobs.txt")" 4 "blobs of bb (manifest, config, 2 layers)"
	"$IMGFETCH" --cache "$T/cache" --prune --dry-run "$BB" >"$T/dry.txt" || fail "dry run failed"
	expect_eq "$(tail -1 "$T/dry.txt" | jq -r .removed)" 3 "would remove"
	[ -f "$T/cache/sha256/${other_only#sha256:}" ] || fail "dry run removed a blob"
	"$IMGFETCH" --cache "$T/cache" --prune "$BB" >"$T/prune.txt" || fail "prune failed"
	grep -q "^removed $other_only " "$T/prune.txt" || fail "other's layer not removed: $(cat "$T/prune.txt")"
	grep -q "^removed $OTHER " "$T/prune.txt" || fail "other's manifest not removed"
	[ -f "$T/cache/sha256/${shared#sha256:}" ] || fail "a layer bb uses was removed"
	must_fetch "$REG_ADDR/ci/busybox:1"
	expect_eq "$(out .fetched_bytes)" 0 "bb still complete after prune"
}
