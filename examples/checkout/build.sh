#!/bin/sh
# The demo's "build": runs in the guest, in the workspace banger brought in
# from the host, and leaves its results in out/ for workspace.export.
set -e
mkdir -p out
wc -l src/*.txt >out/report.txt
sha256sum src/*.txt >>out/report.txt
echo "built in the guest on $(uname -r)" >>out/report.txt
cat out/report.txt
