#!/bin/sh
# kernel-deb.sh CACHE_DIR: print the path of a Debian cloud kernel package
# (linux-image-<version>-cloud-amd64_*.deb) in CACHE_DIR, fetching it with
# `apt-get download` the first time.  linux-image-cloud-amd64 is a
# metapackage: the versioned package it depends on is the one with the
# kernel.  Exits 1 (with the reason on stderr) when it cannot be had.
set -eu
cache=$1
mkdir -p "$cache"
find_deb() {
	ls "$cache"/linux-image-*-cloud-amd64_*_amd64.deb 2>/dev/null | sort -V | tail -1
}
deb=$(find_deb)
if [ -z "$deb" ]; then
	pkg() {
		apt-cache depends linux-image-cloud-amd64 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
	}
	p=$(pkg)
	if [ -z "$p" ]; then
		apt-get update -qq >/dev/null 2>&1 || true
		p=$(pkg)
	fi
	[ -n "$p" ] || { echo "apt knows no linux-image-cloud-amd64" >&2; exit 1; }
	(cd "$cache" && apt-get download -q "$p" >/dev/null 2>&1) ||
		{ echo "apt-get download $p failed" >&2; exit 1; }
	deb=$(find_deb)
	[ -n "$deb" ] || { echo "apt-get download $p left no .deb in $cache" >&2; exit 1; }
fi
echo "$deb"
