#!/usr/bin/env bash
# deploy/local/keys.sh BUILD_DIR: the development signing keys (schemas/SPEC.md, "Signed messages"), one Ed25519
# key pair per party in $FB_HOME/keys: django (requests from the app), ops (requests replayed by the CLI) and
# worker (status events, dead letters). Made with `BUILD_DIR/fusion-backup keygen --sign` when missing, never
# overwritten. env.sh (services.sh) already points the programs at them: FB_SIGN_KEY (the CLI signs as ops),
# FB_TRUSTED_REQUESTERS (django, ops), FB_TRUSTED_SIGNERS (worker); a worker is given --sign-key worker.key and
# the demo's Django settings read django.key. Development keys only: a deployment makes its own on the machine of
# each party (deploy/README.md, "Signing keys").
set -euo pipefail
FB_SCRIPT=keys.sh
# shellcheck source=deploy/local/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
bin="${1:?usage: deploy/local/keys.sh BUILD_DIR (the folder holding fusion-backup)}/fusion-backup"
[ -x "$bin" ] || fb_die "$bin not found: build first (cmake --build build)"
mkdir -p "$FB_SIGNING_KEYS"
chmod 700 "$FB_SIGNING_KEYS"
for party in django ops worker; do
  if [ ! -s "$FB_SIGNING_KEYS/$party.key" ] || [ ! -s "$FB_SIGNING_KEYS/$party.pub" ]; then
    rm -f "$FB_SIGNING_KEYS/$party.key" "$FB_SIGNING_KEYS/$party.pub"   # a half-made pair is remade whole
    "$bin" keygen --sign --out "$FB_SIGNING_KEYS/$party" >/dev/null
    fb_say "made the $party signing key pair in $FB_SIGNING_KEYS"
  fi
done
