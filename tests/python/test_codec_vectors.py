"""The Python codec (schemas/python/fusion_events) against the golden vectors (schemas/vectors/).

Run from the repository root: `python -m pytest tests/python` (conftest.py puts schemas/python on sys.path when
fusion_events is not installed).
"""
from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any, Dict, List

import msgpack
import pytest

import fusion_events
from fusion_events import InvalidEvent, decode, encode

VECTORS = Path(__file__).resolve().parents[2] / "schemas" / "vectors"
VALID: List[Dict[str, Any]] = json.loads((VECTORS / "valid" / "INDEX.json").read_text(encoding="utf-8"))
INVALID: List[Dict[str, Any]] = json.loads((VECTORS / "invalid" / "INDEX.json").read_text(encoding="utf-8"))


def from_json(obj: Any) -> Any:
    """JSON form of a decoded event -> the codec's decoded form ({"$bin": hex} -> bytes)."""
    if isinstance(obj, dict):
        if set(obj) == {"$bin"}:
            return bytes.fromhex(obj["$bin"])
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equality that also checks types, so 2 != 2.0, True != 1, [schema, table] != "table"; key order is free."""
    assert type(got) is type(want), f"{path or 'event'}: got {type(got).__name__} {got!r}, want {type(want).__name__} {want!r}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path or 'event'}: keys differ: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}" if path else k)
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} entries, want {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: got {got!r}, want {want!r}"


def test_vector_counts_cover_every_type() -> None:
    assert len(INVALID) >= 25
    for t in fusion_events.EVENT_TYPES:
        prefix = t.replace(".", "_")
        assert sum(v["name"].startswith(prefix) for v in VALID) >= 2, f"fewer than 2 valid vectors for {t}"


@pytest.mark.parametrize("vec", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_to_its_json(vec: Dict[str, Any]) -> None:
    data = (VECTORS / "valid" / f"{vec['name']}.msgpack").read_bytes()
    want = from_json(json.loads((VECTORS / "valid" / f"{vec['name']}.json").read_text(encoding="utf-8")))
    assert_same(decode(data), want)


@pytest.mark.parametrize("vec", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_reencodes(vec: Dict[str, Any]) -> None:
    data = (VECTORS / "valid" / f"{vec['name']}.msgpack").read_bytes()
    event = decode(data)
    again = encode(event)
    if vec["canonical"]:
        assert again == data, "re-encoding a canonical vector must be byte-identical"
    else:
        assert again != data, "a non-canonical vector should differ from its canonical re-encoding"
    assert_same(decode(again), event)


@pytest.mark.parametrize("vec", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_rejected_naming_the_field(vec: Dict[str, Any]) -> None:
    data = (VECTORS / "invalid" / f"{vec['name']}.msgpack").read_bytes()
    with pytest.raises(InvalidEvent) as exc:
        decode(data)
    assert vec["error_contains"] in str(exc.value), f"{vec['why']}: error {str(exc.value)!r}"


def _valid_event(name: str) -> Dict[str, Any]:
    return decode((VECTORS / "valid" / f"{name}.msgpack").read_bytes())


def test_encode_rejects_what_decode_rejects() -> None:
    ev = _valid_event("backup_requested_basic")
    for key, bad, fragment in [
        ("job_id", "NOT-A-UUID", "job_id"),
        ("storage_path", "/abs", "storage_path"),
        ("tables", ["a\0b"], "tables[0]"),
        ("attempt", 0, "attempt"),
        ("record_id", True, "record_id"),
        ("retention_days", None, "retention_days"),
    ]:
        with pytest.raises(InvalidEvent, match=re.escape(fragment)):
            encode({**ev, key: bad})
    with pytest.raises(InvalidEvent, match="unknown key"):
        encode({**ev, "tabels": []})  # a typo in a dict we build is a bug, not forward compatibility


def test_encode_accepts_absent_nilables_and_tuples() -> None:
    ev = _valid_event("archive_due_all_on_delete")
    del ev["max_rows"], ev["requested_by"]
    ev["table"] = ("public", "leave_leave")
    out = decode(encode(ev))
    assert out["max_rows"] is None and out["requested_by"] is None
    assert out["table"] == ["public", "leave_leave"]


def test_encode_writes_table_order_with_nil() -> None:
    ev = _valid_event("job_status_all_nil")
    raw = msgpack.unpackb(encode(ev), raw=False, object_pairs_hook=list)
    assert [k for k, _ in raw] == list(fusion_events.FIELD_ORDER["job.status"])


def test_message_size_limit() -> None:
    ev = _valid_event("job_status_failed_request_bin")
    ev["request"] = b"\0" * (1024 * 1024 + 1)
    with pytest.raises(InvalidEvent, match="request"):
        encode(ev)
    data = msgpack.packb({**ev, "request": b"\0" * (1024 * 1024 + 1)}, use_bin_type=True)
    with pytest.raises(InvalidEvent, match="request"):
        decode(data)
    with pytest.raises(InvalidEvent, match="limit"):
        decode(b"\x80" + b"\0" * fusion_events.MAX_MESSAGE)


def test_error_names_nested_path() -> None:
    ev = _valid_event("archive_due_all_on_delete")
    ev["relations"][2]["on_delete"] = "RESTRICT"
    with pytest.raises(InvalidEvent) as exc:
        encode(ev)
    assert exc.value.field == "relations[2].on_delete"
    assert str(exc.value).startswith("relations[2].on_delete: ")


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(6)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:  # interesting byte
        b[rng.randrange(len(b))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC2, 0xC3, 0xCF, 0xD3, 0xDC, 0xDD,
                                               0xDE, 0xDF, 0xFF, 0x90, 0x9F, 0xA0, 0xBF, 0xD9, 0xDB, 0xC4, 0xC6])
    elif op == 2:  # truncate
        del b[rng.randrange(len(b) + 1):]
    elif op == 3:  # insert random bytes
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 4 and len(b) > 2:  # delete a range
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 8)]
    else:  # splice with another vector
        j = rng.randrange(len(b) + 1)
        b[j:] = rng.choice(_CORPUS)[j:]
    return bytes(b)


_CORPUS = [p.read_bytes() for p in sorted((VECTORS / "valid").glob("*.msgpack"))]


def test_random_mutations_never_crash() -> None:
    """decode() either returns an event that re-encodes, or raises InvalidEvent: nothing else, ever."""
    rng = random.Random(20251127)
    accepted = 0
    for i in range(20000):
        data = rng.choice(_CORPUS)
        for _ in range(rng.randint(1, 3)):
            data = _mutate(rng, data)
        try:
            ev = decode(data)
        except InvalidEvent:
            continue
        except Exception as e:  # pragma: no cover - this is the failure the test exists for
            pytest.fail(f"mutation {i}: {type(e).__name__}: {e} on {data.hex()}")
        accepted += 1
        assert_same(decode(encode(ev)), ev)  # whatever decode accepts, encode must accept too
    assert accepted > 0  # the mutator is not so violent that nothing ever survives


def test_floats_stay_floats() -> None:
    ev = _valid_event("job_status_archive_stats_mixed")
    assert isinstance(ev["stats"]["whole_float"], float) and ev["stats"]["whole_float"] == 2.0
    assert isinstance(ev["stats"]["big"], int)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in ev["stats"].values())
