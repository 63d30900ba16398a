"""fusion_events.sign against the signed-message golden vectors (schemas/vectors/signed/, SPEC.md "Signed
messages"), which the C side (tests/c/test_sign_vectors.c) passes too; and the signer's own round trip."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fusion_events import sign

SIGNED = Path(__file__).resolve().parents[2] / "schemas" / "vectors" / "signed"
INDEX = json.loads((SIGNED / "INDEX.json").read_text(encoding="utf-8"))
# RFC 8032 test 1: the vectors' trusted key (schemas/vectors/README.md).
TRUSTED_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def headers_of(name: str) -> list:
    text = (SIGNED / f"{name}.headers").read_text(encoding="ascii")
    return [tuple(line.split("\t", 1)) for line in text.splitlines()]


def test_the_index_has_every_case():
    assert {v["expect"] for v in INDEX} == {"ok", "untrusted"}
    reasons = {v["reason_contains"] for v in INDEX if v["expect"] == "untrusted"}
    assert reasons == {"bad signature", "not trusted", "missing", "duplicate", "malformed"}


@pytest.mark.parametrize("v", INDEX, ids=[v["name"] for v in INDEX])
def test_signed_vector(v):
    keyring = sign.Keyring.from_files([SIGNED / "trusted.pub"])
    key = None if v["key"] is None else v["key"].encode()
    value = (SIGNED / f"{v['name']}.value").read_bytes()
    hdrs = [(n, val.encode()) for n, val in headers_of(v["name"])]
    if v["expect"] == "ok":
        assert sign.verify(keyring, v["topic"], key, value, hdrs) == hdrs[[n for n, _ in hdrs].index("fb-key-id")][1].decode()
    else:
        with pytest.raises(sign.Untrusted) as e:
            sign.verify(keyring, v["topic"], key, value, hdrs)
        assert v["reason_contains"] in str(e.value), f"{v['name']} ({v['why']}): {e.value}"


def test_our_signer_writes_the_vectors_headers():
    """Ed25519 is deterministic: sign.py's headers for ok_request are the generator's, byte for byte."""
    s = sign.Signer(TRUSTED_SEED)
    want = [(n, val.encode()) for n, val in headers_of("ok_request")]
    v = next(v for v in INDEX if v["name"] == "ok_request")
    assert sign.sign_headers(s, v["topic"], v["key"].encode(), (SIGNED / "ok_request.value").read_bytes()) == want


def test_key_files_round_trip(tmp_path):
    """The text files of `fusion-backup keygen --sign`: a secret key readable by others is refused, a public key
    is not taken for a secret one."""
    seed = os.urandom(32)
    key = tmp_path / "k.key"
    key.write_text(f"# comment\ned25519-seed {seed.hex()}\n")
    key.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        sign.Signer.from_file(key)
    key.chmod(0o600)
    s = sign.Signer.from_file(key)
    pub = tmp_path / "k.pub"
    pub.write_text(f"ed25519-public {s.public_key.hex()}\n")
    with pytest.raises(ValueError, match="not a fusion-backup secret signing key"):
        sign.Signer.from_file(pub)
    kr = sign.Keyring.from_files([pub])
    hdrs = sign.sign_headers(s, "p.jobs.completed", "k", b"v")
    assert sign.verify(kr, "p.jobs.completed", b"k", b"v", hdrs) == s.key_id
    with pytest.raises(sign.Untrusted, match="bad signature"):
        sign.verify(kr, "p.backup.requested", b"k", b"v", hdrs)
