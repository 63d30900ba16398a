#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine needs to build the workers and run the local
# services and tests. Idempotent, and fast when there is nothing to do:
#   1. apt packages (skipped when dpkg-query says all are installed)
#   2. the Kafka broker's jars, fetched by Maven into $FB_KAFKA_LIBS (outside the repo; skipped
#      while kafka/pom.xml is unchanged)
#   3. three Python virtualenvs: $FB_HOME/venv (newest Django 5.x), $FB_HOME/venv-dj32 (Django 3.2)
#      and $FB_HOME/venv-dj31 (Fusion's pinned Django 3.1.5 + psycopg2-binary 2.8.6); pip is skipped
#      while requirements*.txt are unchanged
#   4. promtool, for the alert rules' tests (install-promtool.sh; skipped when present)
# Works as root or, for the apt step, through sudo; needs no stdin (CI=true).
set -euo pipefail

FB_SCRIPT="install-deps.sh"
# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

APT_PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  librdkafka-dev libpq-dev libmsgpack-dev libzstd-dev libsodium-dev
  postgresql-15 postgresql-contrib
  openjdk-17-jre-headless maven
  zstd python3 python3-venv
  ca-certificates util-linux acl openssl
  libcurl4-openssl-dev
)

step_start=0
step() { step_start="$(fb_now_ms)"; fb_say "$*"; }
step_done() { fb_say "  done in $(($(fb_now_ms) - step_start)) ms${1:+ ($1)}"; }

# --- 1. apt ------------------------------------------------------------------------------------

install_apt() {
  step "apt packages"
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    step_done "all ${#APT_PACKAGES[@]} installed"
    return
  fi
  fb_say "  missing: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
      fb_die "apt packages missing (${missing[*]}) and this is not root (no passwordless sudo)" \
        "run this script as root once, or: sudo apt-get install ${missing[*]}"
    fi
    sudo=(sudo -n)
  fi
  local log="$FB_HOME/apt-install.log"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fb_die "apt-get update failed (log: $log)" "check the network to the Debian mirror, then rerun $0"
  fi
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    fb_die "apt-get install ${missing[*]} failed (log: $log)" "fix the cause shown above, then rerun $0"
  fi
  step_done "installed ${missing[*]}"
}

# --- 2. Kafka jars -----------------------------------------------------------------------------

file_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }

fetch_kafka() {
  step "Kafka jars into $FB_KAFKA_LIBS"
  local pom="$FB_LOCAL_DIR/kafka/pom.xml" stamp="$FB_KAFKA_LIBS/.fb-pom.sha256" want
  want="$(file_hash "$pom")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && compgen -G "$FB_KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    step_done "already fetched"
    return
  fi
  command -v mvn >/dev/null || fb_die "mvn not found" "install maven (apt-get install maven) and rerun $0"
  # Fetch into a fresh folder and swap it in, so a pom change never leaves two Kafka versions mixed.
  local tmp="$FB_KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$FB_KAFKA_LIBS")"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" \
    -DincludeScope=runtime >"$FB_HOME/mvn-fetch.log" 2>&1; then
    tail -n 30 "$FB_HOME/mvn-fetch.log" >&2
    rm -rf "$tmp"
    fb_die "Maven could not fetch the Kafka jars (log: $FB_HOME/mvn-fetch.log)" \
      "check that Maven Central is reachable (mvn -v; ~/.m2/settings.xml), then rerun $0"
  fi
  rm -rf "$FB_KAFKA_LIBS"
  mv "$tmp" "$FB_KAFKA_LIBS"
  echo "$want" >"$stamp"
  step_done "$(find "$FB_KAFKA_LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$FB_KAFKA_LIBS" | cut -f1)"
}

# --- 3. Python virtualenvs -----------------------------------------------------------------------

# The main venv uses Debian's python3 (installed above with python3-venv) unless FB_PYTHON says
# otherwise. Django 3.2 supports Python up to 3.10, so venv-dj32 takes a python3.10 when one is
# present (pyenv on the standard image), else the same python3 (Django 3.2 runs there, untested).
pick_python() {
  if [ -n "${FB_PYTHON:-}" ]; then echo "$FB_PYTHON"; return; fi
  if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; return; fi
  command -v python3 || fb_die "no python3 found" "apt-get install python3 python3-venv, or set FB_PYTHON"
}

pick_python_dj32() {
  if [ -n "${FB_PYTHON_DJ32:-}" ]; then echo "$FB_PYTHON_DJ32"; return; fi
  local c
  for c in $(command -v python3.10 2>/dev/null || true) "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do
    [ -x "$c" ] && "$c" -c 'import venv, ensurepip' 2>/dev/null && { echo "$c"; return; }
  done
  pick_python
}

# Django 3.1 supports Python 3.6-3.9, and psycopg2-binary 2.8.6 (Fusion's pin) has wheels only up to cp39: on
# Debian's 3.11 pip builds it from source against libpq-dev, but the module then fails to import ("SystemError:
# initialization of _psycopg raised unreported exception"). So take a python3.9 (pyenv on the standard image);
# without one there is no honest Fusion stack to test: say so.
pick_python_dj31() {
  if [ -n "${FB_PYTHON_DJ31:-}" ]; then echo "$FB_PYTHON_DJ31"; return; fi
  local c
  for c in $(command -v python3.9 2>/dev/null || true) "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9; do
    [ -x "$c" ] && "$c" -c 'import venv, ensurepip' 2>/dev/null && { echo "$c"; return; }
  done
  fb_die "no python3.9 for the Django 3.1 venv (Django 3.1.5 and psycopg2-binary 2.8.6 need Python <= 3.9)" \
    "install one (pyenv install 3.9) or set FB_PYTHON_DJ31 to a Python 3.8/3.9, then rerun $0"
}

make_venv() {
  local dir="$1" python="$2" req="$3" stamp="$1/.fb-requirements.sha256" want
  step "Python venv $dir ($req, $("$python" -c 'import sys; print("python %d.%d.%d" % sys.version_info[:3])'))"
  want="$(file_hash "$FB_LOCAL_DIR"/requirements*.txt "$FB_LOCAL_DIR"/../requirements-validate.txt <(echo "$req" "$python"))"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c '' 2>/dev/null && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step_done "requirements unchanged"
    return
  fi
  local clear=()
  # A venv whose python no longer runs (its base interpreter was removed) is rebuilt from scratch.
  if [ -d "$dir" ] && ! "$dir/bin/python" -c '' 2>/dev/null; then clear=(--clear); fi
  "$python" -m venv "${clear[@]}" "$dir" ||
    fb_die "could not create the venv $dir with $python" "apt-get install python3-venv (or set FB_PYTHON), then rerun $0"
  rm -f "$stamp"
  if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    -r "$FB_LOCAL_DIR/$req" >"$dir/pip-install.log" 2>&1; then
    tail -n 30 "$dir/pip-install.log" >&2
    fb_die "pip install -r $req into $dir failed (log: $dir/pip-install.log)" \
      "check that PyPI is reachable; a version conflict needs a change in deploy/local/$req"
  fi
  echo "$want" >"$stamp"
  step_done "$("$dir/bin/python" -c 'import django, confluent_kafka, psycopg2; print("Django", django.get_version(), "| confluent-kafka", confluent_kafka.version() if isinstance(confluent_kafka.version(), str) else confluent_kafka.version()[0], "| librdkafka", confluent_kafka.libversion()[0], "| psycopg2", psycopg2.__version__.split()[0])')"
}

# --- main --------------------------------------------------------------------------------------

t0="$(fb_now_ms)"
mkdir -p "$FB_HOME"
install_apt
if ! command -v java >/dev/null || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
  fb_die "Java 17 or newer is needed for the Kafka broker" "apt-get install openjdk-17-jre-headless"
fi
fetch_kafka
make_venv "$FB_VENV" "$(pick_python)" requirements.txt
make_venv "$FB_VENV_DJ32" "$(pick_python_dj32)" requirements-dj32.txt
py_dj31="$(pick_python_dj31)" || exit 1  # it says why (no python3.9)
make_venv "$FB_VENV_DJ31" "$py_dj31" requirements-dj31.txt
"$(dirname "${BASH_SOURCE[0]}")/install-promtool.sh"  # the alert rules' checker (tests/deploy/test_alerts.py)
"$(dirname "${BASH_SOURCE[0]}")/install-seaweedfs.sh"  # the local S3 server (deploy/local/s3.sh); built once, ~4.5 min
fb_say "all dependencies ready in $(($(fb_now_ms) - t0)) ms (FB_HOME=$FB_HOME); next: deploy/local/services.sh start"
