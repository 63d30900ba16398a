#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what is missing, starts the local PostgreSQL and Kafka,
# builds twice (a normal build for the integration tests, an ASan+UBSan build for the C tests), then runs:
#   0. the layer check (tests/layers.sh: no include points up the layers), before everything else
#   1. ctest under the sanitizers (C unit tests, and C tests against the real broker and database)
#   2. the libFuzzer target on the event decoder for a bounded time (FB_FUZZ_SECONDS, default 60)
#   3. pytest: the Python codec, the integration tests (real services, real binaries), two at a time; then the
#      two that kill or freeze the S3 server, alone; then
#      one test that crashes PostgreSQL, alone
#   4. pytest: the Django app on the newest Django, on Django 3.2 and on Fusion's own Django 3.1.5
# Exits non-zero if any step fails, after running them all, and prints a summary.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
FB_HOME="${FB_HOME:-$HOME/.cache/fusion-backup}"
export FB_HOME
BUILD="${FB_BUILD_DIR:-$REPO/build}"
ASAN_BUILD="$REPO/build-asan"
FUZZ_BUILD="$REPO/build-fuzz"
JOBS="$(nproc)"
failed=()
passed=0
say() { printf '\n=== %s\n' "$*"; }
run_step() { # name, command...
  local name="$1"; shift
  say "$name"
  local t0=$SECONDS
  if "$@"; then echo "--- $name: ok ($((SECONDS - t0)) s)"; passed=$((passed + 1)); else echo "--- $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

# First, in milliseconds and before anything is built: no include points up the layers (tests/layers.sh).
run_step "layer check (tests/layers.sh)" tests/layers.sh

say "install dependencies and start services"
deploy/local/install-deps.sh || { echo "install-deps.sh failed: see above"; exit 1; }
deploy/local/services.sh start || { echo "services.sh start failed: see above"; exit 1; }
# shellcheck disable=SC1091
. "$FB_HOME/env.sh"
export FB_BUILD_DIR="$BUILD"

build() { # dir, cmake args...
  local dir="$1"; shift
  cmake -S "$REPO" -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j "$JOBS" 2>&1 | grep -E 'error|warning|Error' ; return "${PIPESTATUS[0]}"
}
say "build (release and sanitizers)"
build "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo || { echo "build failed"; exit 1; }
build "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=Debug -DFB_SANITIZE=ON || { echo "sanitizer build failed"; exit 1; }
# The development signing keys env.sh names (FB_SIGN_KEY, FB_TRUSTED_*): made once, for commands run by hand and
# the demo; the tests make their own per session (tests/integration/conftest.py).
deploy/local/keys.sh "$BUILD" || { echo "keys.sh failed: see above"; exit 1; }

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
run_step "C tests (ctest, ASan+UBSan)" ctest --test-dir "$ASAN_BUILD" --output-on-failure -j 2

fuzz() {
  CC=clang cmake -S "$REPO" -B "$FUZZ_BUILD" -DFB_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    cmake --build "$FUZZ_BUILD" --target fuzz_event_decode -j "$JOBS" >/dev/null || return 1
  local corpus="$FUZZ_BUILD/corpus"
  mkdir -p "$corpus"
  cp schemas/vectors/valid/*.msgpack schemas/vectors/invalid/*.msgpack "$corpus"/
  "$FUZZ_BUILD/fuzz_event_decode" -max_total_time="${FB_FUZZ_SECONDS:-60}" -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
  return "${PIPESTATUS[0]}"
}
run_step "fuzz the event decoder (${FB_FUZZ_SECONDS:-60} s)" fuzz

fuzz_index() {
  cmake --build "$FUZZ_BUILD" --target fuzz_index_parse -j "$JOBS" >/dev/null || return 1
  local corpus="$FUZZ_BUILD/corpus-index"
  mkdir -p "$corpus"
  cp tests/fuzz/index_seeds/* "$corpus"/
  "$FUZZ_BUILD/fuzz_index_parse" -max_total_time="${FB_FUZZ_SECONDS:-60}" -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
  return "${PIPESTATUS[0]}"
}
run_step "fuzz the chain index parser (${FB_FUZZ_SECONDS:-60} s)" fuzz_index

PY="$FB_VENV/bin/python"
# The integration tests mostly wait (on the broker, on workers, on PostgreSQL), so two run at once (pytest-xdist):
# each has its own database, topic prefix and consumer group. The tests that crash and restart the local
# PostgreSQL in the middle (FB_TEST_RESTART_PG=1) run alone afterwards, when nothing else is using the server;
# set FB_TEST_RESTART_PG=0 while sharing the server with other work.
# The same for the two tests that kill (SIGKILL) or freeze (SIGSTOP) the shared S3 server mid-upload: beside
# them, any other test's S3 request fails, so they run alone afterwards too.
CRASH_TESTS=("tests/integration/test_incremental.py::test_full_incrementals_differential_each_restore_exactly"
             "tests/integration/test_pitr_load.py")
S3_KILL_TESTS=("tests/integration/test_s3.py::test_server_killed_mid_upload_leaves_nothing_that_looks_complete"
               "tests/integration/test_s3.py::test_a_stalled_server_is_retried_and_the_backup_completes")
run_step "Python codec, deploy manifests and integration tests (pytest, 2 at a time)" \
  env FB_TEST_RESTART_PG=0 "$PY" -m pytest -q -p no:cacheprovider -n "${FB_TEST_PARALLEL:-2}" --durations=10 \
  --deselect "${CRASH_TESTS[0]}" --deselect "${CRASH_TESTS[1]}" \
  --deselect "${S3_KILL_TESTS[0]}" --deselect "${S3_KILL_TESTS[1]}" \
  tests/python tests/deploy tests/integration
run_step "integration tests that kill or freeze the S3 server (pytest, alone)" \
  env FB_TEST_RESTART_PG=0 "$PY" -m pytest -q -p no:cacheprovider "${S3_KILL_TESTS[@]}"
run_step "integration tests with a PostgreSQL crash in the middle (pytest, alone)" \
  env FB_TEST_RESTART_PG="${FB_TEST_RESTART_PG:-1}" "$PY" -m pytest -q -p no:cacheprovider "${CRASH_TESTS[@]}"
if [ -d producer/tests ]; then
  # A test database of this run's own, so a concurrent run on the same server cannot pull it away.
  run_step "Django app, newest Django (pytest)" bash -c "cd producer && FB_DJANGO_TEST_DB=test_fbp_$$_new '$PY' -m pytest -q -p no:cacheprovider tests"
  run_step "Django app, Django 3.2 (pytest)" bash -c "cd producer && FB_DJANGO_TEST_DB=test_fbp_$$_dj32 '$FB_VENV_DJ32/bin/python' -m pytest -q -p no:cacheprovider tests"
  run_step "Django app, Django 3.1 (pytest)" bash -c "cd producer && FB_DJANGO_TEST_DB=test_fbp_$$_dj31 '${FB_VENV_DJ31:-$FB_HOME/venv-dj31}/bin/python' -m pytest -q -p no:cacheprovider tests"
fi

say "summary"
[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
echo "steps: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
