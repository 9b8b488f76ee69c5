#!/bin/sh
# Install what banger needs to build and test on Debian 12: the libraries
# (through their -dev packages, found with pkg-config) and the tools the
# tests drive (sqlite3, jq, python3, setpriv).  Idempotent: installs only
# what is missing.  Needs root (or sudo).
set -eu
PKGS="build-essential pkg-config libuv1-dev libmsgpack-dev libsqlite3-dev libyaml-dev
libjansson-dev libcurl4-openssl-dev libssl-dev libarchive-dev libext2fs-dev libnl-3-dev
libnl-route-3-dev libdevmapper-dev sqlite3 jq python3 bc util-linux procps"
# subsystems list what they need beyond this in ci/deps/*.txt (one package
# per line, # comments)
dir=$(dirname "$0")
for f in "$dir"/deps/*.txt; do
	[ -f "$f" ] && PKGS="$PKGS $(sed 's/#.*//' "$f")"
done
missing=""
for p in $PKGS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
