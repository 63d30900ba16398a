#!/usr/bin/env bash
# Builds SeaweedFS (Apache-2.0), the S3-compatible server that deploy/local/s3.sh runs for the tests and the
# demo, into $FB_HOME/seaweedfs/weed-$FB_SEAWEEDFS_VERSION (outside the repository).
#
# Why from source: SeaweedFS is a Go module, but `go install .../weed@VERSION` is refused because its go.mod has
# replace directives. Building inside the module's own downloaded source (`go mod download -json`, copied to a
# writable folder) honours them. The build costs about 4.5 minutes of two cores, so it runs once: the script exits
# at once while the pinned version's binary is present and runs.
set -euo pipefail

FB_SCRIPT="install-seaweedfs.sh"
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

dest="$FB_SEAWEEDFS_BIN"
if [ -x "$dest" ] && "$dest" version >/dev/null 2>&1; then
  exit 0
fi
command -v go >/dev/null || fb_die "go not found (needed to build SeaweedFS, the local S3 server)" \
  "install Go 1.26 or newer from https://go.dev/dl (this SeaweedFS's go.mod asks for go 1.26.6; Debian's golang is older), then rerun $0"
mkdir -p "$(dirname "$dest")"
work="$(mktemp -d "$(dirname "$dest")/build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
t0="$(fb_now_ms)"
fb_say "building SeaweedFS $FB_SEAWEEDFS_MODULE@$FB_SEAWEEDFS_VERSION (about 4.5 min on 2 cores; once)"
(cd "$work" && go mod download -json "$FB_SEAWEEDFS_MODULE@$FB_SEAWEEDFS_VERSION" >"$work/download.json" 2>"$work/log") ||
  fb_die "go mod download $FB_SEAWEEDFS_MODULE@$FB_SEAWEEDFS_VERSION failed: $(tail -n 3 "$work/log")" \
    "check that the Go module proxy is reachable (go env GOPROXY), then rerun $0"
src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$work/download.json" | head -n 1)"
[ -d "$src" ] || fb_die "go mod download gave no source folder (see $work/download.json)" "rerun $0"
# The module cache is read-only; the build needs its own copy to write go.sum updates into.
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
if ! (cd "$work/src" && GOFLAGS=-buildvcs=false go build -p "${FB_BUILD_JOBS:-2}" -o "$work/weed" ./weed \
  >"$work/build.log" 2>&1); then
  cp "$work/build.log" "$(dirname "$dest")/build-failed.log"
  fb_die "go build of SeaweedFS failed: $(tail -n 3 "$work/build.log")" \
    "full log in $(dirname "$dest")/build-failed.log; fix the cause (Go version, disk space), then rerun $0"
fi
mv "$work/weed" "$dest"
fb_say "SeaweedFS $("$dest" version 2>&1 | head -n 1) in $dest ($(($(fb_now_ms) - t0)) ms)"
