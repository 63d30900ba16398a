"""Signed Kafka messages (schemas/SPEC.md, "Signed messages"): the Python side of worker/src/kafka/kfk_sign.c.

    from fusion_events.sign import Signer, Keyring, sign_headers, verify, Untrusted

    signer = Signer.from_file("/etc/fusion-backup/django.key")        # the `fusion-backup keygen --sign` files
    producer.produce(topic, key=key, value=value, headers=sign_headers(signer, topic, key, value))
    keyring = Keyring.from_files(["worker.pub"])
    key_id = verify(keyring, msg.topic(), msg.key(), msg.value(), msg.headers())   # raises Untrusted(reason)

A message is signed over its full topic name, key and value (never its other headers), so the value keeps its
bytes and a message cannot be moved to another topic. Ed25519 through PyNaCl (libsodium, as the C side).
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import nacl.exceptions
import nacl.signing

DOMAIN = b"fusion-backup signature v1"
CONTEXT = b"message"
HEADER_KEY_ID = "fb-key-id"
HEADER_SIG = "fb-sig"
NULL_KEY_LEN = 0xFFFFFFFF
TAG_PUBLIC = "ed25519-public"
TAG_SEED = "ed25519-seed"
_HEX = re.compile(rb"\A[0-9a-f]*\Z")

Header = Tuple[str, Union[bytes, str, None]]


class Untrusted(Exception):
    """The message is unsigned, signed by a key that is not trusted, or its signature does not verify. The text
    says which (it contains one of: missing, duplicate, malformed, not trusted, bad signature)."""


def _as_bytes(v: Union[bytes, str, None]) -> Optional[bytes]:
    return v.encode() if isinstance(v, str) else v


def message_digest(topic: str, key: Union[bytes, str, None], value: Optional[bytes]) -> bytes:
    """BLAKE2b-256 of u32le len(topic) || topic || u32le len(key) || key || u64le len(value) || value; a null key
    is the length 0xFFFFFFFF with no bytes."""
    h = hashlib.blake2b(digest_size=32)
    t = topic.encode()
    h.update(struct.pack("<I", len(t)) + t)
    k = _as_bytes(key)
    h.update(struct.pack("<I", NULL_KEY_LEN) if k is None else struct.pack("<I", len(k)) + k)
    v = value or b""
    h.update(struct.pack("<Q", len(v)))
    h.update(v)
    return h.digest()


def _signed_bytes(digest: bytes) -> bytes:
    return DOMAIN + b"\0" + CONTEXT + b"\0" + digest


def key_id(public_key: bytes) -> str:
    """16 lowercase hex digits: the first 8 bytes of BLAKE2b-256 of the public key."""
    return hashlib.blake2b(public_key, digest_size=32).digest()[:8].hex()


def _read_key_file(path: Union[str, os.PathLike], tag: str, secret: bool) -> bytes:
    with open(path, "r", encoding="ascii") as f:
        text = f.read()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    kind = "secret signing" if secret else "public signing"
    if not lines or not lines[0].startswith(tag + " "):
        raise ValueError(f'"{path}" is not a fusion-backup {kind} key file (expected a line "{tag} HEX"; make one '
                         f"with `fusion-backup keygen --sign --out PREFIX`{': give the .key file' if secret else ''})")
    if secret and os.stat(path).st_mode & 0o077:
        raise ValueError(f'secret signing key file "{path}" is readable by others; run chmod 600 "{path}"')
    hexpart = lines[0][len(tag) + 1:].strip()
    if len(hexpart) != 64 or not _HEX.match(hexpart.lower().encode()):
        raise ValueError(f'"{path}": the {kind} key must be 64 hex digits after "{tag} "')
    return bytes.fromhex(hexpart)


class Signer:
    """A party's own signing key."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = bytes(self._key.verify_key)
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "Signer":
        """Loads PREFIX.key as written by `fusion-backup keygen --sign` (mode 0600)."""
        return cls(_read_key_file(path, TAG_SEED, secret=True))

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(_signed_bytes(digest)).signature


class Keyring:
    """The public keys one party trusts (several at once, for rotation)."""

    def __init__(self, public_keys: Iterable[bytes] = ()) -> None:
        self.keys = {}
        for pk in public_keys:
            self.keys[key_id(pk)] = nacl.signing.VerifyKey(pk)

    @classmethod
    def from_files(cls, paths: Iterable[Union[str, os.PathLike]]) -> "Keyring":
        return cls(_read_key_file(p, TAG_PUBLIC, secret=False) for p in paths)


def sign_headers(signer: Signer, topic: str, key: Union[bytes, str, None], value: bytes) -> List[Tuple[str, bytes]]:
    """The two headers that sign (topic, key, value), for confluent_kafka's produce(headers=...)."""
    sig = signer.sign_digest(message_digest(topic, key, value))
    return [(HEADER_KEY_ID, signer.key_id.encode()), (HEADER_SIG, sig.hex().encode())]


def _one(headers: Sequence[Header], name: str, hex_len: int) -> bytes:
    found = [_as_bytes(v) for n, v in headers if n == name]
    if not found:
        raise Untrusted(f"not signed: header {name} is missing")
    if len(found) > 1:
        raise Untrusted(f"header {name} is given {len(found)} times (a duplicate header is never trusted)")
    v = found[0]
    if v is None or len(v) != hex_len or not _HEX.match(v):
        raise Untrusted(f"malformed header {name} (expected {hex_len} lowercase hex digits)")
    return v


def verify(keyring: Keyring, topic: str, key: Union[bytes, str, None], value: Optional[bytes],
           headers: Optional[Sequence[Header]]) -> str:
    """Checks the message's signature against keyring; returns the signer's key id or raises Untrusted."""
    headers = headers or []
    kid = _one(headers, HEADER_KEY_ID, 16).decode()
    sig = bytes.fromhex(_one(headers, HEADER_SIG, 128).decode())
    vk = keyring.keys.get(kid)
    if vk is None:
        raise Untrusted(f"signed by key {kid}, which is not trusted here (trusted: {','.join(keyring.keys) or 'none'})")
    try:
        vk.verify(_signed_bytes(message_digest(topic, key, value)), sig)
    except nacl.exceptions.BadSignatureError:
        raise Untrusted(f"bad signature for key {kid}: altered after signing, or forged") from None
    return kid
