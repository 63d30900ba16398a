#!/usr/bin/env python3
"""Generates the golden vectors of the event contract (schemas/SPEC.md) into valid/ and invalid/.

The vectors are the arbiter between the C and the Python codec, so this script deliberately does NOT use either
codec: it writes msgpack with `msgpack.packb` (and a tiny raw packer for what packb refuses to write: duplicate
keys, non-str keys, float32, non-minimal integers, ...), and the expected decoded JSON is written by hand here.

    python3 schemas/vectors/gen_vectors.py          # rewrites valid/ and invalid/ (deterministic output)

valid/NAME.msgpack + valid/NAME.json: the JSON is the decoded form: every key of the event's table, null for nil
or absent, table refs as on the wire (str or [schema, table]), `request` as {"$bin": "<hex>"}, unknown keys
dropped. valid/INDEX.json lists {"name", "canonical"}: canonical vectors are exactly what an encoder writes for
that JSON (every key, table order, nil for None, smallest ints, float64), so re-encoding is byte-identical.
invalid/NAME.msgpack + invalid/INDEX.json {"name", "why", "error_contains"}: both codecs must reject the file
with an error message containing error_contains (the field name, or a word from SPEC.md's error vocabulary).
signed/: signed Kafka messages (SPEC.md, "Signed messages"). NAME.value is the message value, NAME.headers its
headers (one `name<TAB>value` line each, in order); INDEX.json {"name", "why", "topic", "key" (text or null),
"expect" ("ok" or "untrusted"), "reason_contains"}; trusted.pub is the one key the verifier trusts. The
signatures are made here with PyNaCl and this file's own framing, not with either side's signing code.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any, Dict, List, Optional, Tuple

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
INT64_MAX = 2**63 - 1


class Raw:
    """Bytes written verbatim by pack(): for encodings msgpack.packb will not produce."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class Pairs(list):
    """A map written from a list of (key, value) pairs: allows duplicate and non-str keys."""


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 65536:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def pack(obj: Any) -> bytes:
    """msgpack with use_bin_type=True semantics, dict order kept, plus Raw and Pairs."""
    if isinstance(obj, Raw):
        return obj.data
    if isinstance(obj, Pairs):
        return _map_header(len(obj)) + b"".join(pack(k) + pack(v) for k, v in obj)
    if isinstance(obj, dict):
        return _map_header(len(obj)) + b"".join(pack(k) + pack(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return _array_header(len(obj)) + b"".join(pack(v) for v in obj)
    return msgpack.packb(obj, use_bin_type=True)


def to_json(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"$bin": obj.hex()}
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Events in table order (SPEC.md). Every helper returns a fresh dict.

JOB = "0b6e7d8c-3f2a-4c1e-9a5b-7d2e4f6a8b0c"
TS = 1764201600000  # 2025-11-27T00:00:00Z


def common(type_: str, job_id: str = JOB, ts: int = TS, requested_by: Optional[int] = 7, attempt: int = 1) -> dict:
    return {"v": 1, "type": type_, "job_id": job_id, "ts": ts, "requested_by": requested_by, "attempt": attempt}


def backup_requested(**kw: Any) -> dict:
    ev = common("backup.requested")
    ev.update(
        record_id=42,
        config_id=3,
        config_name="nightly-full",
        backup_type="FULL",
        tables=["leave_leave", "Cpda Application", "iwdModuleV2_projects"],
        modules=["leave", "cpda"],
        storage_path="configs/3",
        retention_days=30,
    )
    return _apply(ev, kw)


def backup_verify(**kw: Any) -> dict:
    ev = common("backup.verify")
    ev.update(config_id=3, record_id=42, mode="integrity", file_path="configs/3/20251127T000000Z-42.fbk")
    return _apply(ev, kw)


def relation(table: Any, column: str, references: Any, on_delete: str, to_column: Optional[str] = None,
             module: Optional[str] = None, model_name: Optional[str] = None, pk_column: Optional[str] = None) -> dict:
    return {"table": table, "column": column, "references": references, "on_delete": on_delete,
            "to_column": to_column, "module": module, "model_name": model_name, "pk_column": pk_column}


def archive_due(**kw: Any) -> dict:
    ev = common("archive.due", requested_by=None)
    ev.update(
        policy_id=5,
        module="leave",
        model_name="Leave",
        table="leave_leave",
        pk_column="id",
        timestamp_column="timestamp",
        cutoff=1732579200000,
        batch_size=500,
        max_rows=None,
        purge_before=None,
        archived_by=None,
        dry_run=False,
        relations=[relation("leave_leavesegment", "leave_id", "leave_leave", "CASCADE",
                            module="leave", model_name="LeaveSegment", pk_column="id")],
    )
    return _apply(ev, kw)


def job_status(**kw: Any) -> dict:
    ev = common("job.status", requested_by=None)
    ev.update(
        job_type="backup",
        status="SUCCESS",
        worker="worker-1:4242",
        started_at=TS + 1000,
        completed_at=TS + 61000,
        record_id=42,
        config_id=3,
        policy_id=None,
        file_path="configs/3/20251127T000000Z-42.fbk",
        file_size=123456789,
        error=None,
        stats={"tables": 463, "rows": 1000000, "raw_bytes": 870000000, "stored_bytes": 116000000,
               "duration_ms": 60000},
        request=None,
    )
    return _apply(ev, kw)


def _apply(ev: dict, kw: Dict[str, Any]) -> dict:
    for k, v in kw.items():
        assert k in ev, f"helper override of unknown key {k}"  # keeps the table order; use without()/extra
        ev[k] = v
    return ev


def without(ev: dict, *keys: str) -> dict:
    return {k: v for k, v in ev.items() if k not in keys}


def with_(ev: dict, **kw: Any) -> dict:
    """Sets keys, keeping order; new keys go last (unknown or hostile fields)."""
    out = dict(ev)
    out.update(kw)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Valid vectors: (name, wire object, expected decoded dict, canonical)

N63 = "t" * 63                    # 63 ASCII bytes
N63_UTF8 = "é" * 31 + "x"         # 31 * 2 + 1 = 63 bytes, 32 characters
N63_EURO = "€" * 21               # 21 * 3 = 63 bytes


def valid_vectors() -> List[Tuple[str, Any, dict, bool]]:
    v: List[Tuple[str, Any, dict, bool]] = []

    def canon(name: str, ev: dict) -> None:
        v.append((name, ev, ev, True))

    # backup.requested
    canon("backup_requested_basic", backup_requested())
    canon("backup_requested_all_tables", backup_requested(
        job_id="ffffffff-ffff-4fff-bfff-ffffffffffff", ts=0, requested_by=None, attempt=1000,
        record_id=INT64_MAX, config_id=1, backup_type="INCREMENTAL", tables=[], modules=[],
        storage_path="a", retention_days=0))
    canon("backup_requested_hard_names", backup_requested(
        requested_by=INT64_MAX, attempt=2, config_name="Sauvegarde complète – ÉTÉ ☃", backup_type="DIFFERENTIAL",
        tables=['a"b', "Cpda Application", ["public", "Course"], ["my schema", "Ltc Tracking"], "études_élèves",
                N63, N63_UTF8, [N63_EURO, N63], "x", "Robert'); DROP TABLE students;--", " lead space"],
        modules=["globals", "academic_information", "cpda"],
        storage_path="configs/nightly full/2025 été/" + "d" * 20, retention_days=36500))
    long_path = "/".join(["p" * 99] * 10) + "/" + "q" * 14  # 99*10 + 9 + 1 + 14 = 1014... pad to 1024 below
    long_path += "r" * (1024 - len(long_path.encode()))
    assert len(long_path.encode()) == 1024
    canon("backup_requested_limits", backup_requested(
        config_name="n" * 255, modules=["m" * 255, "é" * 127 + "x"], storage_path=long_path,
        tables=[["s", "t"]] * 20))
    # Readers accept any key order, ignore unknown keys (at any depth of an unknown key), and treat an absent
    # nil-able key like nil. Not canonical: re-encoding sorts, adds requested_by: nil and drops the extras.
    ev = backup_requested(requested_by=None)
    wire = Pairs([("zz_future", {"nested": [1, 2, {"x": None}], "n": 1.5}), ("storage_path", "configs/3")]
                 + [(k, val) for k, val in reversed(list(ev.items())) if k not in ("storage_path", "requested_by")]
                 + [("x-unknown", b"\x00\x01")])
    v.append(("backup_requested_unknown_keys_any_order", wire, ev, False))

    # Unknown keys are ignored whatever they are: a key that is not valid UTF-8, a value that is an ext. And `v`
    # in a wider int encoding is still 1.
    ev = backup_requested()
    wire = Pairs([(k, Raw(b"\xcf" + struct.pack(">Q", 1)) if k == "v" else val) for k, val in ev.items()]
                 + [(Raw(b"\xa2\xff\xfe"), 1), ("x_ext", Raw(b"\xd4\x01\x00"))])
    v.append(("backup_requested_unknown_odd_keys", wire, ev, False))

    # backup.verify
    canon("backup_verify_integrity", backup_verify())
    canon("backup_verify_restore_nil_path", backup_verify(mode="restore", file_path=None, requested_by=None,
                                                          attempt=3))
    ev = backup_verify(file_path=None, requested_by=None)
    v.append(("backup_verify_absent_nilables", without(ev, "file_path", "requested_by"), ev, False))

    # archive.due
    canon("archive_due_all_on_delete", archive_due(
        requested_by=9, archived_by=9, max_rows=5000, purge_before=1700000000000, batch_size=1000,
        relations=[
            relation("leave_leavesegment", "leave_id", "leave_leave", "CASCADE",
                     module="leave", model_name="LeaveSegment", pk_column="id"),
            relation("leave_replacementsegment", "leave_id", "leave_leave", "SET_NULL",
                     module="leave", model_name="ReplacementSegment", pk_column="id"),
            relation(["public", "Tracking"], "file_id", "leave_leave", "PROTECT", to_column="uid"),
            relation("leave_audit", "leave_ref", "leave_leave", "DO_NOTHING", model_name="LeaveAudit"),
            relation("leave_note", "leave_id", "leave_leave", "SET_DEFAULT", module="notes"),
            # a CASCADE child's own child: references the child, not the policy's table
            relation("leave_segment_comment", "segment_id", "leave_leavesegment", "CASCADE",
                     module="leave", model_name="SegmentComment", pk_column="comment_id"),
        ]))
    canon("archive_due_nil_relations_dry_run", archive_due(
        module="filetracking", model_name="Tracking", table=["public", "Tracking"], pk_column="id",
        timestamp_column="receive_date", cutoff=0, batch_size=100000, max_rows=INT64_MAX, purge_before=0,
        archived_by=1, dry_run=True, relations=None))
    canon("archive_due_hard_names_empty_relations", archive_due(
        module="cpda", model_name="CpdaApplication", table="Cpda Application", pk_column='a"b',
        timestamp_column="submissionDate", batch_size=1, relations=[], attempt=1000))
    canon("archive_due_utf8_names", archive_due(
        module="études", model_name="Élève", table=[N63_EURO, N63_UTF8], pk_column=N63,
        timestamp_column="créé_le", relations=[
            relation([N63_EURO, "enfant"], "parent_id", [N63_EURO, N63_UTF8], "SET_NULL", to_column="code")]))
    ev = archive_due(relations=[relation("leave_leavesegment", "leave_id", "leave_leave", "CASCADE")])
    rel_wire = Pairs([("on_delete", "CASCADE"), ("references", "leave_leave"), ("column", "leave_id"),
                      ("table", "leave_leavesegment"), ("future_flag", True)])
    v.append(("archive_due_relation_minimal_keys",
              with_(without(ev, "max_rows", "purge_before", "archived_by", "relations", "requested_by"),
                    relations=[rel_wire]), ev, False))

    # job.status
    canon("job_status_success_backup", job_status(attempt=2))
    canon("job_status_failed_request_bin", job_status(
        status="FAILED", file_path=None, file_size=None, completed_at=TS + 2000,
        error="could not connect to server \"127.0.0.1:5432\": connexion refusée — check FUSION_BACKUP['DB']",
        stats=None, request=b"\x00\x00\x81\xa1v\x01\x00\xff\x00"))
    canon("job_status_running_progress", job_status(
        status="RUNNING", job_type="archive", completed_at=None, record_id=None, config_id=None, policy_id=5,
        file_path=None, file_size=None, stats={"done_rows": 10, "total_rows": 100}))
    canon("job_status_archive_stats_mixed", job_status(
        job_type="archive", record_id=None, config_id=None, policy_id=5, file_path=None, file_size=0,
        stats={"archived": 1000, "cascaded": 250, "nulled": 3, "skipped_protected": 0, "skipped_referenced": 2,
               "purged": 0, "batches": 2, "duration_ms": 1234, "rate": 810.5, "ratio": 0.125, "neg": -1,
               "big": INT64_MAX, "small": -(2**63), "tiny": 1e-300, "whole_float": 2.0}))
    canon("job_status_all_nil", job_status(
        job_type="verify", status="RUNNING", started_at=None, completed_at=None, record_id=None, config_id=None,
        policy_id=None, file_path=None, file_size=None, error=None, stats=None, request=None))
    canon("job_status_empty_values", job_status(
        status="FAILED", error="", stats={}, request=b"", worker="w", started_at=0, completed_at=INT64_MAX))
    canon("job_status_limits", job_status(
        status="FAILED", error="e" * 16384, stats={f"k{i:02d}" + "x" * 61: i for i in range(64)},
        worker="w" * 255))
    # float32 values and integers in a longer encoding than needed are valid on the wire (readers accept any
    # msgpack int/float encoding); the canonical encoder writes float64 and the smallest int form instead.
    ev = job_status(attempt=1, stats={"f32": 0.5, "i": 1})
    wire = dict(ev)
    wire["attempt"] = Raw(b"\xcf" + struct.pack(">Q", 1))  # uint64 1
    wire["record_id"] = Raw(b"\xd3" + struct.pack(">q", 42))  # int64 42
    wire["stats"] = {"f32": Raw(b"\xca" + struct.pack(">f", 0.5)), "i": Raw(b"\xd0\x01")}
    v.append(("job_status_wide_encodings", wire, ev, False))
    # A map may hold up to 1024 entries, unknown keys included (SPEC.md, reader rules): exactly at the cap.
    ev = backup_requested()
    wire = with_(ev, **{f"zz_unknown_{i:04d}": i for i in range(1024 - len(ev))})
    assert len(wire) == 1024
    v.append(("backup_requested_1024_keys", wire, ev, False))
    return v


# ----------------------------------------------------------------------------------------------------------------
# Invalid vectors: (name, wire object or bytes, why, error_contains)

def invalid_vectors() -> List[Tuple[str, Any, str, str]]:
    br, bv, ad, js = backup_requested(), backup_verify(), archive_due(), job_status()
    good = pack(br)
    deep: Any = "leaf"
    for _ in range(20):
        deep = [deep]
    x: List[Tuple[str, Any, str, str]] = [
        ("top_int", 1, "the value is an int, not a map", "not a map"),
        ("top_array", [br], "the value is an array holding the event", "not a map"),
        ("top_str", "backup.requested", "the value is a str", "not a map"),
        ("top_nil", None, "the value is nil", "not a map"),
        ("empty", Raw(b""), "zero bytes", "truncated"),
        ("truncated", Raw(good[:-5]), "the last 5 bytes are cut off", "truncated"),
        ("truncated_header", Raw(b"\xdf\x00\x00"), "a map32 header cut in the middle", "truncated"),
        ("trailing_bytes", Raw(good + b"\xc0"), "a nil after the map: one value, one message", "trailing"),
        ("reserved_byte", Raw(b"\x81\xa1v\xc1"), "0xc1 is never used in msgpack", "invalid msgpack"),
        ("too_deep", with_(br, zz=deep), "an unknown key holding arrays nested 20 deep (limit 16)", "nested"),
        ("missing_v", without(br, "v"), "no v", "v"),
        ("v_2", with_(br, v=2), "unknown major version", "v"),
        ("v_0", with_(br, v=0), "unknown major version", "v"),
        ("v_str", with_(br, v="1"), "v as a str", "v"),
        ("v_nil", with_(br, v=None), "v nil", "v"),
        ("v_negative", with_(br, v=-1), "negative version", "v"),
        ("type_unknown", with_(br, type="backup.deleted"), "unknown type", "type"),
        ("type_missing", without(br, "type"), "no type", "type"),
        ("type_bin", with_(br, type=b"backup.requested"), "type as bin instead of str", "type"),
        ("job_id_uppercase", with_(br, job_id=JOB.upper()), "UUID not lowercase", "job_id"),
        ("job_id_short", with_(br, job_id=JOB[:-1]), "35 characters", "job_id"),
        ("job_id_no_hyphens", with_(br, job_id=JOB.replace("-", "")), "32 hex digits, no hyphens", "job_id"),
        ("job_id_braces", with_(br, job_id="{" + JOB[1:-1] + "}"), "braces instead of hex", "job_id"),
        ("job_id_bin", with_(br, job_id=bytes(16)), "16 raw bytes instead of the text form", "job_id"),
        ("job_id_missing", without(br, "job_id"), "no job_id", "job_id"),
        ("job_id_nil", with_(br, job_id=None), "job_id is not nil-able", "job_id"),
        ("attempt_0", with_(br, attempt=0), "attempts start at 1", "attempt"),
        ("attempt_1001", with_(br, attempt=1001), "more than 1000", "attempt"),
        ("attempt_float", with_(br, attempt=1.0), "a float is not an int", "attempt"),
        ("record_id_negative", with_(br, record_id=-1), "ids are >= 1", "record_id"),
        ("config_id_zero", with_(br, config_id=0), "ids are >= 1", "config_id"),
        ("record_id_uint64", with_(br, record_id=2**63), "2^63 does not fit int64", "record_id"),
        ("record_id_uint64_max", with_(br, record_id=2**64 - 1), "uint64 max", "record_id"),
        ("ts_str", with_(br, ts="2025-11-27T00:00:00Z"), "times are int ms", "ts"),
        ("ts_negative", with_(br, ts=-1), "before the epoch", "ts"),
        ("ts_ext_timestamp", with_(br, ts=Raw(b"\xd6\xff\x00\x00\x00\x01")), "msgpack timestamp ext", "ts"),
        ("requested_by_bool", with_(br, requested_by=True), "a bool is not a user id", "requested_by"),
        ("requested_by_negative", with_(br, requested_by=-7), "ids are >= 1", "requested_by"),
        ("table_name_nul", with_(br, tables=["leave\x00leave"]), "NUL inside a name", "tables"),
        ("table_name_64_bytes", with_(br, tables=["t" * 64]), "64 bytes > NAMEDATALEN-1", "tables"),
        ("table_name_64_bytes_utf8", with_(br, tables=["€" * 21 + "x"]), "22 characters but 64 bytes", "tables"),
        ("table_name_empty", with_(br, tables=[""]), "empty name", "tables"),
        ("table_ref_array_3", with_(br, tables=[["db", "public", "t"]]), "[db, schema, table]", "tables"),
        ("table_ref_array_1", with_(br, tables=[["t"]]), "array of one", "tables"),
        ("table_ref_int", with_(br, tables=[1]), "a number as a table", "tables"),
        ("table_ref_map", with_(br, tables=[{"schema": "public", "name": "t"}]), "map form is not allowed",
         "tables"),
        ("table_ref_schema_empty", with_(br, tables=[["", "t"]]), "empty schema", "tables"),
        ("tables_not_array", with_(br, tables="leave_leave"), "a str instead of an array", "tables"),
        ("tables_nil", with_(br, tables=None), "tables is not nil-able (empty array means all)", "tables"),
        ("tables_10001", with_(br, tables=["t"] * 10001), "more than 10000 tables", "tables"),
        ("config_name_nul", with_(br, config_name="night\x00ly"), "no string of the contract holds NUL",
         "config_name"),
        ("storage_path_absolute", with_(br, storage_path="/var/backups"), "absolute path", "storage_path"),
        ("storage_path_dotdot", with_(br, storage_path="a/../b"), "'..' component", "storage_path"),
        ("storage_path_only_dotdot", with_(br, storage_path=".."), "just '..'", "storage_path"),
        ("storage_path_dot", with_(br, storage_path="a/./b"), "'.' component (a/./b and a/b are two S3 keys)",
         "storage_path"),
        ("storage_path_trailing_dotdot", with_(br, storage_path="a/.."), "ends in '..'", "storage_path"),
        ("storage_path_empty_component", with_(br, storage_path="a//b"), "empty component", "storage_path"),
        ("storage_path_trailing_slash", with_(br, storage_path="a/"), "empty last component", "storage_path"),
        ("storage_path_empty", with_(br, storage_path=""), "empty path", "storage_path"),
        ("storage_path_nul", with_(br, storage_path="a\x00b"), "NUL in a path", "storage_path"),
        ("storage_path_1025", with_(br, storage_path="p" * 1025), "longer than 1024 bytes", "storage_path"),
        ("config_name_256", with_(br, config_name="n" * 256), "longer than 255 bytes", "config_name"),
        ("config_name_empty", with_(br, config_name=""), "empty", "config_name"),
        ("config_name_map", with_(br, config_name={"a": "b"}), "a nested map where a str belongs",
         "config_name"),
        ("config_name_bad_utf8", with_(br, config_name=Raw(b"\xa3\xff\xfe\x41")), "invalid UTF-8 in a str",
         "config_name"),
        ("config_name_overlong_utf8", with_(br, config_name=Raw(b"\xa2\xc0\xaf")), "overlong UTF-8 of '/'",
         "config_name"),
        ("config_name_surrogate_utf8", with_(br, config_name=Raw(b"\xa3\xed\xa0\x80")), "UTF-8 of a surrogate",
         "config_name"),
        ("backup_type_unknown", with_(br, backup_type="full"), "enum values are upper case", "backup_type"),
        ("retention_days_36501", with_(br, retention_days=36501), "more than 100 years", "retention_days"),
        ("retention_days_negative", with_(br, retention_days=-1), "negative", "retention_days"),
        ("modules_entry_empty", with_(br, modules=["leave", ""]), "empty module label", "modules"),
        ("modules_entry_int", with_(br, modules=[1]), "a module label as an int", "modules"),
        ("duplicate_key", Pairs(list(br.items()) + [("job_id", "11111111-1111-4111-8111-111111111111")]),
         "job_id twice: readers would disagree on which wins", "job_id"),
        ("key_not_str", Pairs(list(br.items()) + [(1, "x")]), "an int map key", "key"),
        ("key_bin", Pairs(list(br.items()) + [(b"v", 1)]), "a bin map key", "key"),
        ("verify_file_path_absolute", with_(bv, file_path="/etc/passwd"), "absolute path", "file_path"),
        ("verify_mode_empty", with_(bv, mode=""), "empty mode", "mode"),
        ("verify_mode_unknown", with_(bv, mode="checksum"), "mode is integrity or restore", "mode"),
        ("verify_missing_record_id", without(bv, "record_id"), "no record_id", "record_id"),
        ("archive_on_delete_unknown", with_(ad, relations=[relation("c", "p_id", "leave_leave", "RESTRICT")]),
         "RESTRICT is not one of Django's five", "on_delete"),
        ("archive_on_delete_lower", with_(ad, relations=[relation("c", "p_id", "leave_leave", "cascade")]),
         "lower case", "on_delete"),
        ("archive_relation_missing_column",
         with_(ad, relations=[without(relation("c", "p_id", "leave_leave", "CASCADE"), "column")]),
         "relation without its column", "column"),
        ("archive_relation_column_64", with_(ad, relations=[relation("c", "c" * 64, "leave_leave", "CASCADE")]),
         "64-byte column name", "column"),
        ("archive_relation_references_nul",
         with_(ad, relations=[relation("c", "p_id", "leave\x00", "CASCADE")]), "NUL in a name", "references"),
        ("archive_relation_to_column_empty",
         with_(ad, relations=[relation("c", "p_id", "leave_leave", "CASCADE", to_column="")]),
         "empty to_column", "to_column"),
        ("archive_relation_duplicate_key",
         with_(ad, relations=[Pairs(list(relation("c", "p_id", "leave_leave", "CASCADE").items())
                                    + [("on_delete", "PROTECT")])]),
         "on_delete twice in a relation map: readers would disagree on which wins", "on_delete"),
        ("archive_relation_key_not_str",
         with_(ad, relations=[Pairs(list(relation("c", "p_id", "leave_leave", "CASCADE").items()) + [(1, 2)])]),
         "an int key in a relation map", "key"),
        ("archive_relation_not_map", with_(ad, relations=["leave_leavesegment"]), "a str instead of a map",
         "relations"),
        ("archive_relations_map", with_(ad, relations={"table": "x"}), "a map instead of an array", "relations"),
        ("archive_batch_size_0", with_(ad, batch_size=0), "batch_size >= 1", "batch_size"),
        ("archive_batch_size_100001", with_(ad, batch_size=100001), "batch_size <= 100000", "batch_size"),
        ("archive_max_rows_0", with_(ad, max_rows=0), "max_rows is nil or >= 1", "max_rows"),
        ("archive_dry_run_int", with_(ad, dry_run=1), "an int is not a bool", "dry_run"),
        ("archive_dry_run_missing", without(ad, "dry_run"), "dry_run is required", "dry_run"),
        ("archive_pk_column_64", with_(ad, pk_column="k" * 64), "64-byte name", "pk_column"),
        ("archive_timestamp_column_nul", with_(ad, timestamp_column="time\x00stamp"), "NUL in a name",
         "timestamp_column"),
        ("archive_table_schema_64", with_(ad, table=["s" * 64, "leave_leave"]), "64-byte schema", "table"),
        ("archive_table_nil", with_(ad, table=None), "table is not nil-able", "table"),
        ("archive_purge_before_negative", with_(ad, purge_before=-5), "before the epoch", "purge_before"),
        ("status_request_str", with_(js, status="FAILED", request="\x81\xa1v\x01"), "request must be bin",
         "request"),
        ("status_stats_value_str", with_(js, stats={"rows": "10"}), "a counter as a str", "stats"),
        ("status_stats_value_nil", with_(js, stats={"rows": None}), "a counter as nil", "stats"),
        ("status_stats_value_bool", with_(js, stats={"ok": True}), "a counter as a bool", "stats"),
        ("status_stats_value_nan", with_(js, stats={"rate": float("nan")}), "NaN is not a number to count",
         "stats"),
        ("status_stats_value_inf", with_(js, stats={"rate": float("inf")}), "infinite", "stats"),
        ("status_stats_value_uint64", with_(js, stats={"rows": 2**63}), "does not fit int64", "stats"),
        ("status_stats_key_int", with_(js, stats=Pairs([(1, 2)])), "an int key", "stats"),
        ("status_stats_duplicate_key", with_(js, stats=Pairs([("rows", 1), ("rows", 2)])), "a counter twice",
         "stats"),
        ("status_stats_key_nul", with_(js, stats={"ro\x00ws": 1}), "NUL in a counter name", "stats"),
        ("status_stats_value_float32_nan", with_(js, stats={"rate": Raw(b"\xca\x7f\xc0\x00\x00")}),
         "a float32 NaN", "stats"),
        ("status_error_nul", with_(js, status="FAILED", error="bad\x00thing"), "NUL in the error text", "error"),
        ("status_stats_key_empty", with_(js, stats={"": 1}), "empty key", "stats"),
        ("status_stats_key_65", with_(js, stats={"k" * 65: 1}), "65-byte key", "stats"),
        ("status_stats_65_entries", with_(js, stats={f"k{i}": i for i in range(65)}), "more than 64 counters",
         "stats"),
        ("status_stats_array", with_(js, stats=[1, 2]), "an array instead of a map", "stats"),
        ("status_unknown", with_(js, status="DONE"), "unknown status", "status"),
        ("status_job_type_unknown", with_(js, job_type="restore"), "unknown job type", "job_type"),
        ("status_worker_empty", with_(js, worker=""), "empty worker", "worker"),
        ("status_worker_missing", without(js, "worker"), "no worker", "worker"),
        ("status_error_16385", with_(js, status="FAILED", error="e" * 16385), "longer than 16384 bytes", "error"),
        ("status_file_path_dotdot", with_(js, file_path="configs/3/../../etc"), "'..' component", "file_path"),
        ("status_file_path_dot", with_(js, file_path="./configs/3/x.fbak"), "'.' component", "file_path"),
        ("status_file_size_negative", with_(js, file_size=-1), "negative size", "file_size"),
        ("status_started_at_float", with_(js, started_at=1.5e12), "a float time", "started_at"),
        # Hostile shapes (issue 10): every map is capped at 1024 entries wherever it is, and duplicates are
        # found however far apart they are (the decoder sorts keys; a pairwise check was quadratic).
        ("map_1025_keys", with_(br, **{f"zz_unknown_{i:04d}": i for i in range(1025 - len(br))}),
         "1025 keys in the event's map, most of them unknown: over the 1024 cap", "limit"),
        ("archive_relation_1025_keys",
         with_(ad, relations=[with_(relation("c", "p_id", "leave_leave", "CASCADE"),
                                    **{f"zz{i:04d}": None for i in range(1025 - 8)})]),
         "a relation map of 1025 keys", "limit"),
        ("unknown_nested_map_1025_keys", with_(br, zz_blob={f"k{i}": i for i in range(1025)}),
         "an unknown key holding a map of 1025 keys: the cap applies to every map", "limit"),
        ("duplicate_key_far_apart",
         Pairs(list(br.items()) + [(f"zz_unknown_{i:04d}", i) for i in range(1000)] + [("config_id", 4)]),
         "config_id again 1000 keys after the first: found however far apart", "config_id"),
        ("duplicate_unknown_key",
         Pairs(list(br.items()) + [("zz_future", 1)] + [(f"zz_unknown_{i:04d}", i) for i in range(500)]
               + [("zz_future", 2)]),
         "an unknown key given twice is a duplicate too", "duplicate"),
        ("archive_relation_duplicate_key_far_apart",
         with_(ad, relations=[Pairs(list(relation("c", "p_id", "leave_leave", "CASCADE").items())
                                    + [(f"zz{i:04d}", None) for i in range(900)] + [("table", "other")])]),
         "a relation's table twice, 900 keys apart", "table"),
    ]
    return x


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# --- signed messages (SPEC.md, "Signed messages") ------------------------------------------------------------
# Test-only keys, published on purpose: RFC 8032's first two Ed25519 test seeds (schemas/vectors/README.md).
TRUSTED_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
UNKNOWN_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")


def _msg_digest(topic: str, key: Optional[bytes], value: bytes) -> bytes:
    import hashlib

    t = topic.encode()
    framed = struct.pack("<I", len(t)) + t
    framed += struct.pack("<I", 0xFFFFFFFF) if key is None else struct.pack("<I", len(key)) + key
    framed += struct.pack("<Q", len(value)) + value
    return hashlib.blake2b(framed, digest_size=32).digest()


def _sign(seed: bytes, topic: str, key: Optional[bytes], value: bytes) -> List[Tuple[str, str]]:
    import hashlib

    import nacl.signing

    sk = nacl.signing.SigningKey(seed)
    kid = hashlib.blake2b(bytes(sk.verify_key), digest_size=32).digest()[:8].hex()
    msg = b"fusion-backup signature v1\0message\0" + _msg_digest(topic, key, value)
    return [("fb-key-id", kid), ("fb-sig", sk.sign(msg).signature.hex())]


def signed_vectors(values: Dict[str, bytes]) -> List[dict]:
    """Each: name, why, topic, key (bytes or None), value, headers [(name, text)], expect, reason_contains."""
    req, status = values["backup_requested_basic"], values["job_status_success_backup"]
    bt, st, dt = "fusion.backup.requested", "fusion.jobs.completed", "fusion.jobs.dlq"
    job = msgpack.unpackb(status)["job_id"].encode()
    ok = _sign(TRUSTED_SEED, bt, b"3", req)
    kid, sig = ok[0][1], ok[1][1]
    flipped_sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    out = []

    def add(name, why, topic, key, value, headers, expect="untrusted", reason=None):
        out.append({"name": name, "why": why, "topic": topic, "key": key, "value": value, "headers": headers,
                    "expect": expect, "reason_contains": reason})

    add("ok_request", "a backup.requested signed by the trusted key", bt, b"3", req, ok, "ok")
    add("ok_status", "a job.status signed by the trusted key, keyed by its job id", st, job, status,
        _sign(TRUSTED_SEED, st, job, status), "ok")
    dlq_headers = [("fusion.error", "decode: not a map"), ("fusion.source.topic", bt)] + _sign(
        TRUSTED_SEED, dt, b"3", b"\xc1 not msgpack")
    add("ok_dead_letter_other_headers", "a dead letter whose value is not msgpack, with unsigned information "
        "headers beside the signature (they are not covered)", dt, b"3", b"\xc1 not msgpack", dlq_headers, "ok")
    add("ok_null_key", "a null key (length 0xFFFFFFFF in the digest)", bt, None, req, _sign(TRUSTED_SEED, bt, None, req),
        "ok")
    add("ok_empty_value", "an empty value", dt, b"3", b"", _sign(TRUSTED_SEED, dt, b"3", b""), "ok")
    flipped = bytearray(req)
    flipped[len(flipped) // 2] ^= 0x01
    add("flipped_bit_value", "one bit of the value flipped after signing", bt, b"3", bytes(flipped), ok,
        reason="bad signature")
    add("flipped_bit_signature", "one bit of the signature flipped", bt, b"3", req,
        [("fb-key-id", kid), ("fb-sig", flipped_sig)], reason="bad signature")
    add("other_topic", "a status signed for the completion topic, presented as a request", bt, job, status,
        _sign(TRUSTED_SEED, st, job, status), reason="bad signature")
    add("other_prefix", "signed for topic fusion.backup.requested, presented on staging.fusion.backup.requested",
        "staging." + bt, b"3", req, ok, reason="bad signature")
    add("other_key", "signed with key 3, presented with key 4", bt, b"4", req, ok, reason="bad signature")
    add("null_key_as_empty", "signed with a null key, presented with an empty one", bt, b"", req,
        _sign(TRUSTED_SEED, bt, None, req), reason="bad signature")
    add("unknown_key_id", "signed by a key the verifier does not trust", bt, b"3", req,
        _sign(UNKNOWN_SEED, bt, b"3", req), reason="not trusted")
    add("trusted_id_other_key", "the trusted key's id, but the signature of another key", bt, b"3", req,
        [("fb-key-id", kid), _sign(UNKNOWN_SEED, bt, b"3", req)[1]], reason="bad signature")
    add("no_headers", "no headers at all", bt, b"3", req, [], reason="missing")
    add("missing_signature", "the key id without a signature", bt, b"3", req, ok[:1], reason="missing")
    add("missing_key_id", "a signature without the key id", bt, b"3", req, ok[1:], reason="missing")
    add("duplicate_signature", "fb-sig given twice (both the valid one)", bt, b"3", req, ok + ok[1:],
        reason="duplicate")
    add("duplicate_key_id", "fb-key-id given twice", bt, b"3", req, ok[:1] + ok, reason="duplicate")
    add("uppercase_signature", "the signature in uppercase hex", bt, b"3", req,
        [("fb-key-id", kid), ("fb-sig", sig.upper())], reason="malformed")
    add("short_key_id", "a key id of 15 hex digits", bt, b"3", req, [("fb-key-id", kid[:15]), ok[1]],
        reason="malformed")
    add("signature_not_hex", "a signature of the right length that is not hex", bt, b"3", req,
        [("fb-key-id", kid), ("fb-sig", "z" * 128)], reason="malformed")
    return out


def public_key_file(seed: bytes) -> str:
    import nacl.signing

    pk = bytes(nacl.signing.SigningKey(seed).verify_key).hex()
    return f"# the golden vectors' trusted signing key (test only: RFC 8032 test 1)\ned25519-public {pk}\n"


def main() -> int:
    vdir, idir = os.path.join(HERE, "valid"), os.path.join(HERE, "invalid")
    for d in (vdir, idir):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):  # drop vectors a previous version generated
            if f.endswith((".msgpack", ".json")):
                os.remove(os.path.join(d, f))
    index = []
    names = set()
    for name, wire, expected, canonical in valid_vectors():
        assert name not in names, name
        names.add(name)
        data = pack(wire)
        if canonical:  # a cross-check of the raw packer against packb itself: canonical == what packb writes
            assert data == msgpack.packb(wire, use_bin_type=True), name
        write(os.path.join(vdir, name + ".msgpack"), data)
        write_json(os.path.join(vdir, name + ".json"), to_json(expected))
        index.append({"name": name, "canonical": canonical})
    write_json(os.path.join(vdir, "INDEX.json"), index)
    n_valid = len(index)
    index = []
    for name, wire, why, fragment in invalid_vectors():
        assert name not in names, name
        names.add(name)
        write(os.path.join(idir, name + ".msgpack"), pack(wire))
        index.append({"name": name, "why": why, "error_contains": fragment})
    write_json(os.path.join(idir, "INDEX.json"), index)
    n_invalid = len(index)
    sdir = os.path.join(HERE, "signed")
    os.makedirs(sdir, exist_ok=True)
    for f in os.listdir(sdir):
        if f.endswith((".value", ".headers", ".json", ".pub")):
            os.remove(os.path.join(sdir, f))
    values = {name: pack(wire) for name, wire, _, _ in valid_vectors()}
    index = []
    for v in signed_vectors(values):
        write(os.path.join(sdir, v["name"] + ".value"), v["value"])
        lines = []
        for hname, hval in v["headers"]:
            assert "\t" not in hname + hval and "\n" not in hname + hval, v["name"]
            lines.append(f"{hname}\t{hval}\n")
        write(os.path.join(sdir, v["name"] + ".headers"), "".join(lines).encode())
        index.append({"name": v["name"], "why": v["why"], "topic": v["topic"],
                      "key": None if v["key"] is None else v["key"].decode(), "expect": v["expect"],
                      "reason_contains": v["reason_contains"]})
    write_json(os.path.join(sdir, "INDEX.json"), index)
    write(os.path.join(sdir, "trusted.pub"), public_key_file(TRUSTED_SEED).encode())
    print(f"{n_valid} valid, {n_invalid} invalid, {len(index)} signed vectors written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
