"""The Python codec of the Fusion Backup & Archive event contract (schemas/SPEC.md, v1).

Design:
- One declarative table per event type (`_FIELDS`): key, kind, nil-able. Both `decode` and `encode` walk the same
  table, so the two directions cannot drift apart, and the table order *is* the wire order of the encoder.
- Decoding never trusts the input: msgpack errors, wrong types, out-of-range numbers and bad names become
  `InvalidEvent` with a message that starts with the field path (`relations[2].on_delete: ...`), the same path
  the C codec reports, so the golden vectors can check both.
- The decoded form is plain and JSON-friendly: every key of the event's table is present (None for nil or
  absent), table references keep the form they had on the wire (a str, or a [schema, table] list), `request` is
  `bytes`, `stats` is a dict of int/float. Unknown keys are dropped.
- Encoding emits every key of the table in table order, with nil for None, integers in their smallest encoding,
  floats as float64 and `request` as bin: the same bytes as the C encoder for the same event.
"""
from __future__ import annotations

import math
import re
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import msgpack

__all__ = [
    "InvalidEvent",
    "decode",
    "encode",
    "validate",
    "EVENT_TYPES",
    "FIELD_ORDER",
    "RELATION_FIELD_ORDER",
    "MAX_MESSAGE",
    "VERSION",
]

VERSION = 1
MAX_MESSAGE = 4 * 1024 * 1024
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
NAME_MAX = 63  # PostgreSQL NAMEDATALEN - 1, in bytes
MAX_DEPTH = 16  # nesting of maps/arrays, the message's map being 1; the contract itself needs 4
MAX_MAP_KEYS = 1024  # entries of any one map (the contract's largest has 20); the C decoder has the same cap

TableRef = Union[str, List[str]]


class InvalidEvent(ValueError):
    """A message value (or an event dict given to `encode`) that breaks the contract.

    `field` is the path of the offending field ("" for errors about the whole message); `str(exc)` is
    "<path>: <what is wrong>" so a log line says which field and why.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class _Map(list):
    """A msgpack map as the list of its (key, value) pairs, in wire order.

    Decoding maps into pairs (instead of dicts) lets us reject duplicate and non-str keys, which a dict would
    silently merge or hide; a distinct type keeps an empty map apart from an empty array.
    """


# --------------------------------------------------------------------------------------------------------------
# Scalar checks. Each takes (path, value) and returns the value in decoded form or raises InvalidEvent.

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bin"
    if isinstance(value, (_Map, dict)):
        return "map"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
        return "ext"
    return type(value).__name__


def _utf8(path: str, value: Any) -> bytes:
    """The UTF-8 bytes of a str field; rejects non-str and invalid UTF-8.

    The decoder unpacks with surrogateescape, so invalid UTF-8 on the wire arrives here as lone surrogates and
    fails `.encode()`: this is how the error gets to name the field instead of failing the whole unpack.
    """
    if not isinstance(value, str):
        raise InvalidEvent(path, f"expected str, got {_type_name(value)}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(path, "not valid UTF-8") from None


def _str(lo: int, hi: int) -> Callable[[str, Any], str]:
    def check(path: str, value: Any) -> str:
        raw = _utf8(path, value)
        if not lo <= len(raw) <= hi:
            raise InvalidEvent(path, f"length {len(raw)} bytes is outside {lo}..{hi}")
        # No string of the contract may hold NUL: the C side keeps them as C strings.
        if b"\0" in raw:
            raise InvalidEvent(path, "contains a NUL byte")
        return value

    return check


def _enum(*allowed: str) -> Callable[[str, Any], str]:
    def check(path: str, value: Any) -> str:
        _utf8(path, value)
        if value not in allowed:
            raise InvalidEvent(path, f"unknown value {value!r} (expected one of {', '.join(allowed)})")
        return value

    return check


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(path: str, value: Any) -> int:
        # bool is an int subclass in Python; msgpack true/false is not an integer in the contract.
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEvent(path, f"expected int, got {_type_name(value)}")
        if not lo <= value <= hi:
            raise InvalidEvent(path, f"value {value} is outside {lo}..{hi}")
        return value

    return check


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEvent(path, f"expected bool, got {_type_name(value)}")
    return value


def _uuid(path: str, value: Any) -> str:
    if isinstance(value, uuid.UUID):  # encode() convenience; never produced by decode
        value = str(value)
    _utf8(path, value)
    if len(value) != 36 or not _UUID_RE.fullmatch(value):
        raise InvalidEvent(path, f"{value[:64]!r} is not a canonical lowercase UUID (8-4-4-4-12 hex)")
    return value


def _name(path: str, value: Any) -> str:
    raw = _utf8(path, value)
    if not raw:
        raise InvalidEvent(path, "empty name")
    if len(raw) > NAME_MAX:
        raise InvalidEvent(path, f"name is {len(raw)} bytes, more than PostgreSQL's {NAME_MAX}")
    if b"\0" in raw:
        raise InvalidEvent(path, "name contains a NUL byte")
    return value


def _path(path: str, value: Any) -> str:
    raw = _utf8(path, value)
    if not 1 <= len(raw) <= 1024:
        raise InvalidEvent(path, f"length {len(raw)} bytes is outside 1..1024")
    if b"\0" in raw:
        raise InvalidEvent(path, "path contains a NUL byte")
    if raw.startswith(b"/"):
        raise InvalidEvent(path, "path must be relative (it starts with '/')")
    for part in raw.split(b"/"):
        if part == b"..":
            raise InvalidEvent(path, "path has a '..' component")
        # "." too (worker/src/common/fb_path.h): a/./b and a/b are one file on disk but two keys on S3.
        if part == b".":
            raise InvalidEvent(path, "path has a '.' component")
        if part == b"":
            raise InvalidEvent(path, "path has an empty component ('//' or a trailing '/')")
    return value


def _bin(hi: int) -> Callable[[str, Any], bytes]:
    def check(path: str, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidEvent(path, f"expected bin, got {_type_name(value)}")
        value = bytes(value)
        if len(value) > hi:
            raise InvalidEvent(path, f"{len(value)} bytes is more than {hi}")
        return value

    return check


def _table_ref(path: str, value: Any) -> TableRef:
    if isinstance(value, str):
        return _name(path, value)
    if isinstance(value, (list, tuple)) and not isinstance(value, _Map):
        if len(value) != 2:
            raise InvalidEvent(path, f"a table reference array must be [schema, table], got {len(value)} elements")
        return [_name(f"{path}[0]", value[0]), _name(f"{path}[1]", value[1])]
    raise InvalidEvent(path, f"expected a table name (str) or [schema, table], got {_type_name(value)}")


def _array(item: Callable[[str, Any], Any], hi: int) -> Callable[[str, Any], list]:
    def check(path: str, value: Any) -> list:
        if not isinstance(value, (list, tuple)) or isinstance(value, _Map):
            raise InvalidEvent(path, f"expected array, got {_type_name(value)}")
        if len(value) > hi:
            raise InvalidEvent(path, f"{len(value)} entries is more than {hi}")
        return [item(f"{path}[{i}]", v) for i, v in enumerate(value)]

    return check


def _pairs(path: str, value: Any) -> List[Tuple[Any, Any]]:
    """(key, value) pairs of a map (wire form or a dict given to encode); rejects non-str and duplicate keys."""
    if isinstance(value, _Map):
        pairs = list(value)
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise InvalidEvent(path, f"expected map, got {_type_name(value)}")
    if len(pairs) > MAX_MAP_KEYS:  # decode() refuses these earlier; this is for dicts given to encode()
        raise InvalidEvent(path, f"a map of {len(pairs)} keys is over the limit of {MAX_MAP_KEYS}")
    seen = set()
    for k, _ in pairs:
        # Key bytes are not checked for UTF-8 here: a key that is not valid UTF-8 matches no known key and is
        # ignored like any unknown key (stats keys, which are data, are checked in _stats).
        if not isinstance(k, str):
            raise InvalidEvent(path, f"map key {k!r} is a {_type_name(k)}, keys must be str")
        if k in seen:
            raise InvalidEvent(f"{path}.{k}" if path else k, "duplicate key")
        seen.add(k)
    return pairs


def _stats(path: str, value: Any) -> Dict[str, Union[int, float]]:
    pairs = _pairs(path, value)
    if len(pairs) > 64:
        raise InvalidEvent(path, f"{len(pairs)} entries is more than 64")
    out: Dict[str, Union[int, float]] = {}
    for k, v in pairs:
        _str(1, 64)(f"{path} key {k[:64]!r}", k)
        kp = f"{path}.{k}"
        if isinstance(v, float):
            # JSON, the C side's double formatting and every dashboard choke on NaN/inf: a counter is finite.
            if not math.isfinite(v):
                raise InvalidEvent(kp, "value must be a finite number")
            out[k] = v
        elif isinstance(v, int) and not isinstance(v, bool):
            out[k] = _int(INT64_MIN, INT64_MAX)(kp, v)
        else:
            raise InvalidEvent(kp, f"expected int or float, got {_type_name(v)}")
    return out


# --------------------------------------------------------------------------------------------------------------
# The contract as tables: (key, check, nil-able). Order = wire order for the encoder.

_ID = _int(1, INT64_MAX)
_TIME = _int(0, INT64_MAX)

Field = Tuple[str, Callable[[str, Any], Any], bool]

_RELATION: List[Field] = [
    ("table", _table_ref, False),
    ("column", _name, False),
    ("references", _table_ref, False),
    ("on_delete", _enum("CASCADE", "SET_NULL", "PROTECT", "DO_NOTHING", "SET_DEFAULT"), False),
    ("to_column", _name, True),
    ("module", _str(1, 255), True),
    ("model_name", _str(1, 255), True),
    ("pk_column", _name, True),
]


def _relation(path: str, value: Any) -> Dict[str, Any]:
    return _check_map(path, value, _RELATION, strict=False)


# `v` and `type` are checked before the table is chosen; they stay in the table for ordering.
_COMMON: List[Field] = [
    ("v", _int(VERSION, VERSION), False),
    ("type", _str(1, 255), False),
    ("job_id", _uuid, False),
    ("ts", _TIME, False),
    ("requested_by", _ID, True),
    ("attempt", _int(1, 1000), False),
]

_FIELDS: Dict[str, List[Field]] = {
    "backup.requested": _COMMON
    + [
        ("record_id", _ID, False),
        ("config_id", _ID, False),
        ("config_name", _str(1, 255), False),
        ("backup_type", _enum("FULL", "INCREMENTAL", "DIFFERENTIAL"), False),
        ("tables", _array(_table_ref, 10000), False),
        ("modules", _array(_str(1, 255), 1000), False),
        ("storage_path", _path, False),
        ("retention_days", _int(0, 36500), False),
    ],
    "backup.verify": _COMMON
    + [
        ("config_id", _ID, False),
        ("record_id", _ID, False),
        ("mode", _enum("integrity", "restore"), False),
        ("file_path", _path, True),
    ],
    "archive.due": _COMMON
    + [
        ("policy_id", _ID, False),
        ("module", _str(1, 255), False),
        ("model_name", _str(1, 255), False),
        ("table", _table_ref, False),
        ("pk_column", _name, False),
        ("timestamp_column", _name, False),
        ("cutoff", _TIME, False),
        ("batch_size", _int(1, 100000), False),
        ("max_rows", _ID, True),
        ("purge_before", _TIME, True),
        ("archived_by", _ID, True),
        ("dry_run", _bool, False),
        ("relations", _array(_relation, 10000), True),
    ],
    "job.status": _COMMON
    + [
        ("job_type", _enum("backup", "archive", "verify"), False),
        ("status", _enum("RUNNING", "SUCCESS", "FAILED"), False),
        ("worker", _str(1, 255), False),
        ("started_at", _TIME, True),
        ("completed_at", _TIME, True),
        ("record_id", _ID, True),
        ("config_id", _ID, True),
        ("policy_id", _ID, True),
        ("file_path", _path, True),
        ("file_size", _int(0, INT64_MAX), True),
        ("error", _str(0, 16384), True),
        ("stats", _stats, True),
        ("request", _bin(1024 * 1024), True),
    ],
}

EVENT_TYPES: Tuple[str, ...] = tuple(_FIELDS)
FIELD_ORDER: Dict[str, Tuple[str, ...]] = {t: tuple(f[0] for f in fs) for t, fs in _FIELDS.items()}
RELATION_FIELD_ORDER: Tuple[str, ...] = tuple(f[0] for f in _RELATION)


def _check_map(path: str, value: Any, fields: Sequence[Field], strict: bool) -> Dict[str, Any]:
    """Validates a map against a field table; returns {key: decoded value} with every key of the table.

    strict=True (encode) rejects keys the table doesn't know, because in a dict we build ourselves an unknown
    key is a typo; on the wire (strict=False) unknown keys are ignored, as the SPEC's versioning requires.
    """
    given = dict(_pairs(path, value))
    known = {f[0] for f in fields}
    if strict:
        extra = [k for k in given if k not in known]
        if extra:
            raise InvalidEvent(f"{path}.{extra[0]}" if path else extra[0], "unknown key")
    out: Dict[str, Any] = {}
    for key, check, nilable in fields:
        fpath = f"{path}.{key}" if path else key
        if key not in given:
            if not nilable:
                raise InvalidEvent(fpath, "missing")
            out[key] = None
            continue
        v = given[key]
        if v is None:
            if not nilable:
                raise InvalidEvent(fpath, "must not be nil")
            out[key] = None
            continue
        out[key] = check(fpath, v)
    return out


def _check_event(value: Any, strict: bool) -> Dict[str, Any]:
    if not isinstance(value, (_Map, dict)):
        raise InvalidEvent("", f"event is not a map (got {_type_name(value)})")
    given = dict(_pairs("", value))
    # `v` first: a reader must reject an unknown major version before judging anything else.
    if "v" not in given:
        raise InvalidEvent("v", "missing")
    v = given["v"]
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidEvent("v", f"expected int, got {_type_name(v)}")
    if v != VERSION:
        raise InvalidEvent("v", f"unsupported version {v} (this reader knows {VERSION})")
    if "type" not in given:
        raise InvalidEvent("type", "missing")
    t = given["type"]
    _utf8("type", t)
    if t not in _FIELDS:
        raise InvalidEvent("type", f"unknown event type {t[:64]!r}")
    return _check_map("", value, _FIELDS[t], strict)


# --------------------------------------------------------------------------------------------------------------
# Public API


def decode(data: Union[bytes, bytearray, memoryview]) -> Dict[str, Any]:
    """Decodes and validates one message value.

    Returns the event as a dict holding every key of its type's table (None where nil or absent); raises
    InvalidEvent (never anything else) for anything that breaks the contract.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() takes bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE:
        raise InvalidEvent("", f"message is {len(data)} bytes, more than the {MAX_MESSAGE} limit")
    if len(data) == 0:
        raise InvalidEvent("", "empty message: truncated msgpack")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            unicode_errors="surrogateescape",  # so _utf8() can name the field with bad UTF-8
            strict_map_key=False,  # so _pairs() can name the map with a non-str key
            object_pairs_hook=_Map,
            use_list=True,
            timestamp=0,
            max_map_len=MAX_MAP_KEYS,  # refused while unpacking, before any pair is built
        )
    except msgpack.ExtraData:
        raise InvalidEvent("", "trailing bytes after the msgpack map") from None
    except msgpack.StackError:
        raise InvalidEvent("", f"msgpack nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # incomplete input, stack depth, reserved byte 0xc1, max_map_len ...
        if "max_map_len" in str(e):
            raise InvalidEvent("", f"a map has more than {MAX_MAP_KEYS} keys, over the limit "
                                   "(the contract's largest map has 20)") from None
        what = "truncated msgpack" if "incomplete" in str(e) else "invalid msgpack"
        raise InvalidEvent("", f"{what} ({str(e) or type(e).__name__})") from None
    except Exception as e:  # belt and braces: the promise is InvalidEvent or a dict, nothing else
        raise InvalidEvent("", f"invalid msgpack ({type(e).__name__}: {e})") from None
    _check_depth(obj)
    return _check_event(obj, strict=False)


def _check_depth(obj: Any) -> None:
    """Rejects nesting deeper than MAX_DEPTH anywhere, unknown keys included.

    A fixed limit keeps the C decoder's recursion bounded and makes both codecs agree on what is too deep
    (msgpack-python's own limit is 1024, msgpack-c's parser 32).
    """
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, tuple)):  # _Map is a list of pairs: its values sit one level down
            if depth > MAX_DEPTH:
                raise InvalidEvent("", f"msgpack nested more than {MAX_DEPTH} levels deep")
            if isinstance(value, _Map):
                stack.extend((v, depth + 1) for pair in value for v in pair)
            else:
                stack.extend((v, depth + 1) for v in value)


def validate(event: Dict[str, Any]) -> Dict[str, Any]:
    """Validates an event dict as encode() does and returns its normalized form (every key, None for nil)."""
    return _check_event(event, strict=True)


def encode(event: Dict[str, Any]) -> bytes:
    """Validates an event dict and encodes it: every key of its table, in table order, nil for None.

    Nil-able keys may be absent from `event`; keys the table doesn't know are rejected (they are typos here).
    """
    norm = _check_event(event, strict=True)
    fields = _FIELDS[norm["type"]]
    ordered: Dict[str, Any] = {}
    for key, _, _ in fields:
        v = norm[key]
        if key == "relations" and v is not None:
            v = [{rk: rel[rk] for rk in RELATION_FIELD_ORDER} for rel in v]
        ordered[key] = v
    out = msgpack.packb(ordered, use_bin_type=True, use_single_float=False)
    if len(out) > MAX_MESSAGE:
        raise InvalidEvent("", f"encoded message is {len(out)} bytes, more than the {MAX_MESSAGE} limit")
    return out
