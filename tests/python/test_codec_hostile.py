"""The Python codec against hostile sizes (issue 10): a map over the 1024-key cap is refused while unpacking,
before any pair is built or checked, so 80k unknown keys or 4 MiB of small ones cost milliseconds."""
from __future__ import annotations

import struct
import time

import pytest

from fusion_events import MAX_MESSAGE, InvalidEvent, decode


def _map32(entries: list[bytes]) -> bytes:
    return b"\xdf" + struct.pack(">I", len(entries)) + b"".join(entries)


def _entry(i: int) -> bytes:
    k = f"k{i}".encode()
    return bytes([0xA0 | len(k)]) + k + b"\xc0"


def _rejected_fast(data: bytes, want: str) -> float:
    t0 = time.perf_counter()
    with pytest.raises(InvalidEvent) as e:
        decode(data)
    ms = (time.perf_counter() - t0) * 1000
    print(f"{len(data)} bytes rejected in {ms:.2f} ms: {e.value}")
    assert want in str(e.value)
    assert ms < 500, f"took {ms:.0f} ms"
    return ms


def test_80k_unknown_keys_are_refused_in_milliseconds() -> None:
    _rejected_fast(_map32([_entry(i) for i in range(80000)]), "limit")


def test_4_mib_of_small_unknown_keys_is_refused_in_milliseconds() -> None:
    entries, size, i = [], 5, 0
    while size + 8 < MAX_MESSAGE:
        e = _entry(i)
        entries.append(e)
        size += len(e)
        i += 1
    _rejected_fast(_map32(entries), "limit")


def test_1024_keys_with_a_duplicate_at_the_end_is_found() -> None:
    _rejected_fast(_map32([_entry(i) for i in range(1023)] + [_entry(0)]), "duplicate")
