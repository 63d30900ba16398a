#!/usr/bin/env bash
# Small-job throughput and latency for 1, 2 and 3 worker processes (see bench_jobs.py and README.md).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$REPO/deploy/local/install-deps.sh" >/dev/null
"$REPO/deploy/local/services.sh" start >/dev/null
# shellcheck disable=SC1091
. "${FB_HOME:-$HOME/.cache/fusion-backup}/env.sh"
cmake -S "$REPO" -B "$REPO/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$REPO/build" -j "$(nproc)" >/dev/null
FB_BUILD_DIR="$REPO/build" exec "$FB_VENV/bin/python" "$REPO/bench/jobs/bench_jobs.py"
