#!/usr/bin/env bash
# Puts Prometheus' `promtool` into $FB_HOME/bin, for the tests that check and unit-test the alert rules in
# deploy/prometheus/. It comes from Debian's own `prometheus` package, downloaded and unpacked (only the promtool
# binary is kept): installing the package itself would also install and try to start a Prometheus server, which
# a developer machine or CI does not want. Idempotent: skipped when $FB_HOME/bin/promtool already runs.
set -euo pipefail

FB_SCRIPT="install-promtool.sh"
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

dest="$FB_HOME/bin/promtool"
if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$FB_HOME/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
t0="$(fb_now_ms)"
# `apt-get download` needs the package lists; a fresh machine may have none yet.
if ! (cd "$work" && apt-get download -q prometheus >"$work/log" 2>&1); then
  apt-get update -q >>"$work/log" 2>&1 || true
  (cd "$work" && apt-get download -q prometheus >>"$work/log" 2>&1) ||
    fb_die "could not download Debian's prometheus package (for promtool): $(tail -n 3 "$work/log")" \
      "check the network to the Debian mirror (apt-get update), then rerun $0"
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
install -m 0755 "$work/x/usr/bin/promtool" "$dest"
fb_say "promtool $("$dest" --version 2>&1 | head -n 1 | awk '{print $3}') in $dest ($(($(fb_now_ms) - t0)) ms)"
