"""Backup, restore, verify and inspect end to end: real PostgreSQL, the built binaries (issue 3).

Jobs run in-process through `fusion-backup event run --no-publish` (the worker's own job code, no broker), so these
tests prove the job and the artifact; the Kafka path is proven by test_worker_flow.py.

- the Fusion schema (463 tables, quoted and spaced names, varchar keys, deferrable FKs) with generated rows in its
  hard tables, restored with --create into an empty database and into existing empty tables: every table equal
  (row count + md5 of sorted row texts), and new inserts after restore do not collide with restored keys;
- a table of awkward values (NULLs, bytea with zero bytes, tabs/newlines/backslashes/non-ASCII, NaN, arrays,
  jsonb, infinity, generated and identity columns);
- a flipped byte, a truncated file and a wrong key: non-zero exit, a clear message, the target unchanged;
- bad requests (unknown table, a name trying SQL injection, storage paths escaping the root) end FAILED with a
  clear message, and nothing is written outside the storage root;
- verify (integrity / restore into a scratch database) needs the secret key and says so.

The row generator fills the requested tables and, first, every table they reference (the FK closure), N rows
each, with values built from the catalog: awkward strings cut to the column's length, row numbers for integers
(so unique and positive checks hold), and for a foreign key the i-th row of the parent.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterable

import msgpack
import psycopg2
import pytest

from fusion_events import encode
from flow import run_authorised, run_event, table_digests


def backup_event(tables: Iterable, storage_path: str = "cfg1/nightly", job_id: str | None = None,
                 backup_type: str = "FULL") -> tuple[str, bytes]:
    job_id = job_id or str(uuid.uuid4())
    return job_id, encode({
        "v": 1, "type": "backup.requested", "job_id": job_id, "ts": int(time.time() * 1000), "requested_by": None,
        "attempt": 1, "record_id": 11, "config_id": 5, "config_name": "nightly", "backup_type": backup_type,
        "tables": list(tables), "modules": [], "storage_path": storage_path, "retention_days": 0})


def verify_event(file_path: str, mode: str = "integrity") -> bytes:
    return encode({
        "v": 1, "type": "backup.verify", "job_id": str(uuid.uuid4()), "ts": int(time.time() * 1000),
        "requested_by": None, "attempt": 1, "config_id": 5, "record_id": 11, "mode": mode, "file_path": file_path})


def _fk_parents(cur, oid: int) -> list[tuple[int, int, int]]:
    """(child attnum, parent oid, parent attnum) of single-column foreign keys."""
    cur.execute("SELECT conkey[1], confrelid, confkey[1] FROM pg_constraint WHERE conrelid = %s AND contype = 'f' "
                "AND array_length(conkey, 1) = 1", (oid,))
    return cur.fetchall()


def _oid(cur, name: str) -> int:
    cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname = %s", (name,))
    return cur.fetchone()[0]


def _value(typ: str, typmod_len: int | None, col: str, i: int, is_pk: bool):
    if typ in ("integer", "bigint", "smallint"):
        return i + 1
    if typ.startswith("character varying") or typ in ("text", "character"):
        s = f"{i + 1}:{col} ä'\"\t\\ ü\n€"
        if typmod_len:
            s = s[:typmod_len]
            if is_pk or typmod_len < 6:
                s = str(i + 1)[:typmod_len]
        return s
    if typ == "boolean":
        return i % 2 == 0
    if typ.startswith("timestamp"):
        return f"2024-01-01 10:00:00+05:30" if i % 5 else "infinity"
    if typ == "date":
        return f"2024-02-{(i % 28) + 1:02d}"
    if typ.startswith("time"):
        return "12:34:56"
    if typ.startswith("numeric") or typ in ("double precision", "real"):
        return i + 0.25
    if typ in ("json", "jsonb"):
        return json.dumps({"i": i, "s": "é\t\"x\""})
    if typ == "uuid":
        return str(uuid.UUID(int=i + 1))
    if typ == "interval":
        return f"{i} days"
    if typ == "bytea":
        return psycopg2.Binary(bytes([0, i % 256, 0]))
    return None


def fill_tables(conninfo: str, tables: list[str], n: int = 30) -> dict[str, int]:
    """Fills tables (public schema) and their FK ancestors with n rows each; returns rows per table."""
    conn = psycopg2.connect(conninfo)
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SET CONSTRAINTS ALL DEFERRED")
    order: list[int] = []
    names: dict[int, str] = {}

    def visit(oid: int, stack: set):
        if oid in order or oid in stack:
            return
        stack.add(oid)
        for _, parent, _ in _fk_parents(cur, oid):
            if parent != oid:
                visit(parent, stack)
        stack.discard(oid)
        order.append(oid)

    for t in tables:
        visit(_oid(cur, t), set())
    filled: dict[str, int] = {}
    for oid in order:
        cur.execute("SELECT relname FROM pg_class WHERE oid = %s", (oid,))
        names[oid] = cur.fetchone()[0]
        cur.execute(
            "SELECT a.attnum, a.attname, format_type(a.atttypid, NULL), "
            "CASE WHEN a.atttypmod > 4 AND a.atttypid IN (1043, 1042) THEN a.atttypmod - 4 END, a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid), "
            "EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = a.attrelid AND c.contype = 'p' "
            "        AND a.attnum = ANY (c.conkey)) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,))
        cols = cur.fetchall()
        fks = {c: (p, pa) for c, p, pa in _fk_parents(cur, oid)}
        parent_keys: dict[int, list] = {}
        for c, (p, pa) in fks.items():
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum = %s", (p, pa))
            pcol = cur.fetchone()[0]
            cur.execute(f'SELECT "{pcol}" FROM "{names.get(p) or _relname(cur, p)}" ORDER BY 1')
            parent_keys[c] = [r[0] for r in cur.fetchall()]
        insert_cols = [c for c in cols if not (c[5] and "nextval" in c[5])]
        if not insert_cols:
            continue
        collist = ", ".join('"' + c[1].replace('"', '""') + '"' for c in insert_cols)
        ok = 0
        for i in range(n):
            vals = []
            for attnum, name, typ, tlen, notnull, default, is_pk in insert_cols:
                if attnum in fks:
                    keys = parent_keys[attnum]
                    v = keys[i % len(keys)] if keys else None
                    if attnum in fks and fks[attnum][0] == oid:
                        v = None  # self reference
                else:
                    v = _value(typ, tlen, name, i, is_pk)
                vals.append(v)
            cur.execute("SAVEPOINT r")
            try:
                cur.execute(f'INSERT INTO "{names[oid]}" ({collist}) VALUES ({", ".join(["%s"] * len(vals))})', vals)
                cur.execute("RELEASE SAVEPOINT r")
                ok += 1
            except psycopg2.Error:
                cur.execute("ROLLBACK TO SAVEPOINT r")
        filled[names[oid]] = ok
    conn.commit()
    conn.close()
    return filled


def _relname(cur, oid: int) -> str:
    cur.execute("SELECT relname FROM pg_class WHERE oid = %s", (oid,))
    return cur.fetchone()[0]


# ---------------------------------------------------------------------------------------------------------------
# fixtures and small helpers

HARD_TABLES = ["Cpda Application", "iwdModuleV2_projects", "globals_extrainfo", "academic_information_student",
               "Ltc Tracking", "leave_leave", "leave_leavesegment", "Student_attendance"]


@pytest.fixture
def settings(storage_root: Path, keypair, app_db) -> list[str]:
    pub, _ = keypair
    # the requests are authorised by the rows of app_db, so the backed-up databases hold only the tests' tables
    return ["--storage-root", str(storage_root), "--public-key", str(pub), "--authority-pg", app_db]


def backup(bin, conninfo: str, settings: list[str], tmp: Path, tables=(), **kw) -> dict:
    job_id, ev = backup_event(tables, **kw)
    r, out = run_authorised(bin, ev, tmp, "--pg", conninfo, *settings)
    assert out is not None, f"no outcome printed (exit {r.returncode}): {r.stderr}"
    out["_exit"] = r.returncode
    out["_stderr"] = r.stderr
    return out


def restore(bin, artifact: Path, conninfo: str, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return bin.run("restore", str(artifact), "--pg", conninfo, "--secret-key", str(key), *extra)


def scalar(conninfo: str, sql: str, params=None):
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(sql, params)
    v = cur.fetchone()[0] if cur.description else None
    conn.close()
    return v


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ---------------------------------------------------------------------------------------------------------------
# round trips

def test_fusion_schema_round_trip_create_and_existing_tables(bin, pg, fusion_db, new_db, fusion_template, storage_root,
                                                             keypair, settings, tmp_path):
    filled = fill_tables(fusion_db, HARD_TABLES, n=40)
    for t in ("Cpda Application", "globals_extrainfo", "academic_information_student", "Ltc Tracking"):
        assert filled.get(t, 0) >= 30, f"generator filled too few rows of {t}: {filled.get(t)}"
    source = table_digests(fusion_db)
    assert len(source) >= 463

    out = backup(bin, fusion_db, settings, tmp_path)
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["tables"] == len(source)
    assert out["stats"]["rows"] == sum(int(v.split(":")[0]) for v in source.values())
    artifact = storage_root / out["file_path"]
    assert artifact.stat().st_size == out["file_size"] == out["stats"]["stored_bytes"]
    assert out["file_path"] == f"cfg1/nightly/{out['job_id']}.fbak"
    assert files_under(storage_root / "cfg1") == ["nightly", f"nightly/{out['job_id']}.fbak"]

    # --create into an empty database
    target = new_db()
    r = restore(bin, artifact, target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    restored = table_digests(target)
    diff = {k: (v, restored.get(k)) for k, v in source.items() if restored.get(k) != v}
    assert not diff, f"tables differ after restore --create: {dict(list(diff.items())[:5])}"
    # sequences continue after the restored keys; FKs are back and still deferrable
    before = scalar(target, 'SELECT max(id) FROM "Cpda Application"')
    new_id = scalar(target, 'INSERT INTO "Cpda Application" (purpose, requested_advance, applicant_id) '
                            'SELECT purpose, requested_advance, applicant_id FROM "Cpda Application" LIMIT 1 RETURNING id')
    assert new_id > before
    assert scalar(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == \
        scalar(fusion_db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
    assert scalar(target, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'") == \
        scalar(fusion_db, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")

    # --create --jobs 2: two connections, commits only after everything was read and authenticated
    par = new_db()
    r = restore(bin, artifact, par, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert table_digests(par) == source
    assert scalar(par, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == \
        scalar(fusion_db, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
    assert scalar(par, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'") == \
        scalar(fusion_db, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")
    r = restore(bin, artifact, par, keypair[1], "--create", "--jobs", "2")
    assert r.returncode == 13, r.stderr  # not an empty database any more

    # into existing, empty tables (the Fusion schema loaded, no --create): FK order + deferred constraints
    existing = new_db()
    psql_template = f"{pg} dbname={fusion_template}"
    subprocess.run(f'"{os.environ.get("FB_PG_BIN", "/usr/lib/postgresql/15/bin")}/pg_dump" -s -d "{psql_template}" | '
                   f'"{os.environ.get("FB_PG_BIN", "/usr/lib/postgresql/15/bin")}/psql" -X -q -v ON_ERROR_STOP=1 -d "{existing}"',
                   shell=True, check=True, capture_output=True)
    r = restore(bin, artifact, existing, keypair[1])
    assert r.returncode == 0, r.stderr
    assert table_digests(existing) == source
    # again: the tables are not empty any more -> refused (exit 13), nothing changes
    r = restore(bin, artifact, existing, keypair[1])
    assert r.returncode == 13 and "not empty" in r.stderr, r.stderr
    assert table_digests(existing) == source
    # unless asked: --truncate replaces the rows (parents and children emptied together, in the same transaction)
    scalar(existing, 'DELETE FROM "Ltc Tracking"')
    r = restore(bin, artifact, existing, keypair[1], "--truncate")
    assert r.returncode == 0, r.stderr
    assert table_digests(existing) == source

    # one table alone (only its segment is read)
    only = new_db()
    r = restore(bin, artifact, only, keypair[1], "--create", "--table", "Ltc Tracking")
    assert r.returncode == 0, r.stderr
    assert table_digests(only) == {"public.Ltc Tracking": source["public.Ltc Tracking"]}

    # verify and inspect
    r = bin.run("verify", str(artifact), "--secret-key", str(keypair[1]))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr
    scratch = new_db()
    r = bin.run("verify", str(artifact), "--secret-key", str(keypair[1]), "--restore-into", scratch)
    assert r.returncode == 0, r.stderr
    assert scalar(scratch, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0
    r = bin.run("inspect", str(artifact), "--secret-key", str(keypair[1]), "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["job_id"] == out["job_id"] and manifest["format"] == 6 and manifest["schema_archive"]["length"] > 0
    names = {t["name"] for t in manifest["tables"]}
    assert {"Cpda Application", "iwdModuleV2_projects"} <= names
    r = bin.run("inspect", str(artifact), "--secret-key", str(keypair[1]))
    assert r.returncode == 0 and '"public"."Cpda Application"' in r.stdout, r.stderr


def test_named_tables_and_incremental_runs_as_full(bin, fusion_db, storage_root, keypair, settings, tmp_path):
    fill_tables(fusion_db, ["Cpda Application", "iwdModuleV2_projects"], n=10)
    out = backup(bin, fusion_db, settings, tmp_path, tables=["Cpda Application", ["public", "iwdModuleV2_projects"]],
                 backup_type="INCREMENTAL")
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["tables"] == 2
    assert out["stats"]["ran_as_full"] == 1
    assert out["stats"]["rows"] == 20


AWKWARD = r"""
CREATE TABLE "Awkward Values" (
    id int GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 3) PRIMARY KEY,
    code varchar(20) UNIQUE,
    t text, b bytea, n numeric, f float8, arr text[], iarr int[], j jsonb, ts timestamptz, d date,
    twice int GENERATED ALWAYS AS (id * 2) STORED,
    "Mixed Case" text DEFAULT 'x'
);
CREATE TABLE plain_serial (id bigserial PRIMARY KEY, ref int REFERENCES "Awkward Values"(id), note text);
INSERT INTO "Awkward Values" (code, t, b, n, f, arr, iarr, j, ts, d) VALUES
 ('a', E'tab\there\nnew line\\back\\slash \u00e9\u4e2d\U0001F600 ''q'' "dq"', '\x00ff00'::bytea, 'NaN', 'Infinity',
  ARRAY['a,b', NULL, 'c"d', E'e\\f', ''], ARRAY[1, NULL, 3], '{"k": [1, null, "\u00e9", {"x": "\t"}]}',
  'infinity', 'infinity'),
 ('b', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('c', '\N', ''::bytea, '-0.000000000000000000001', '-Infinity', '{}', '{}', 'null', '-infinity', '-infinity'),
 ('d', '', decode(repeat('00', 5000), 'hex'), '1e100', 'NaN', ARRAY[E'\n'], ARRAY[-1], '[1, "two", {"three": null}]',
  '2026-11-27 05:00:00.123456+05:30', '0001-01-01 BC');
INSERT INTO "Awkward Values" (code, t) SELECT 'g' || g, repeat(md5(g::text), g % 5) FROM generate_series(1, 5000) g;
INSERT INTO plain_serial (ref, note) SELECT id, 'n' || id FROM "Awkward Values" WHERE id % 2 = 0;
"""


def test_awkward_values_round_trip(bin, fresh_db, new_db, storage_root, keypair, settings, tmp_path):
    conn = psycopg2.connect(fresh_db)
    conn.autocommit = True
    conn.cursor().execute(AWKWARD)
    conn.close()
    source = table_digests(fresh_db)
    out = backup(bin, fresh_db, settings, tmp_path)
    assert out["status"] == "SUCCESS", out
    target = new_db()
    r = restore(bin, storage_root / out["file_path"], target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert table_digests(target) == source
    # identity (ALWAYS) and serial continue past the restored values; generated column recomputed
    assert scalar(target, 'INSERT INTO "Awkward Values" (code) VALUES (\'new\') RETURNING id') == \
        scalar(fresh_db, 'SELECT max(id) + 3 FROM "Awkward Values"')
    assert scalar(target, "INSERT INTO plain_serial (note) VALUES ('new') RETURNING id") == \
        scalar(fresh_db, "SELECT max(id) + 1 FROM plain_serial")
    assert scalar(target, 'SELECT twice FROM "Awkward Values" WHERE id = 100') == 200
    assert scalar(target, "SELECT attidentity FROM pg_attribute WHERE attrelid = '\"Awkward Values\"'::regclass "
                          "AND attname = 'id'") == "a"
    assert scalar(target, "SELECT b FROM \"Awkward Values\" WHERE code = 'a'").tobytes() == b"\x00\xff\x00"


# ---------------------------------------------------------------------------------------------------------------
# damaged artifacts and wrong keys

def test_flipped_truncated_wrong_key_restore_nothing(bin, fresh_db, new_db, storage_root, keypair, settings, tmp_path):
    conn = psycopg2.connect(fresh_db)
    conn.autocommit = True
    conn.cursor().execute("CREATE TABLE parent (id int PRIMARY KEY, v text);"
                          "CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent(id), v text);"
                          "INSERT INTO parent SELECT g, md5(g::text) FROM generate_series(1, 50000) g;"
                          "INSERT INTO child SELECT g, g, repeat('x', g % 50) FROM generate_series(1, 50000) g;")
    conn.close()
    out = backup(bin, fresh_db, settings, tmp_path)
    assert out["status"] == "SUCCESS", out
    good = (storage_root / out["file_path"]).read_bytes()
    # format 5: the trailer gives the manifest's place; the chain index's chunk records follow it
    moff, mlen, ioff, ilen = struct.unpack("<4Q", good[-32:])

    # existing empty tables as the target: a failure must leave them empty
    target = new_db()
    scalar(target, "CREATE TABLE parent (id int PRIMARY KEY, v text);"
                   "CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent(id), v text)")
    cases = {
        "flipped byte in a table's data": (good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 1]) +
                                           good[len(good) // 2 + 1:], 7, "altered"),
        # the manifest segment (where the trailer says) is signed: the signature check refuses it first
        "flipped byte in the manifest": (good[:moff + 30] + bytes([good[moff + 30] ^ 0x80]) + good[moff + 31:], 16,
                                         "bad signature"),
        "truncated": (good[:-1000], 8, "truncated"),
        "truncated to the header": (good[:120], 8, ""),
        "not an artifact": (b"PGDMP" + good[5:], 8, "not a fusion-backup artifact"),
    }
    for label, (data, code, words) in cases.items():
        # under the job's own name: another name is refused before any of this is looked at
        (tmp_path / "bad").mkdir(exist_ok=True)
        bad = tmp_path / "bad" / f"{out['job_id']}.fbak"
        bad.write_bytes(data)
        r = restore(bin, bad, target, keypair[1])
        assert r.returncode == code, f"{label}: exit {r.returncode}: {r.stderr}"
        assert words in r.stderr, f"{label}: {r.stderr}"
        assert "nothing was committed; the target database is unchanged" in r.stderr, f"{label}: {r.stderr}"
        assert scalar(target, "SELECT (SELECT count(*) FROM parent) + (SELECT count(*) FROM child)") == 0, label
        r = bin.run("verify", str(bad), "--secret-key", str(keypair[1]))
        assert r.returncode in (7, 8, 16), f"verify {label}: {r.returncode} {r.stderr}"

    # a flipped byte in the chunk records (which only later backups read, to find the chain's chunks): verify
    # authenticates them against their BLAKE2b in the index head
    at = len(good) - 40 - 298 - 100  # before the signature block (298 bytes) and the trailer (40)
    assert at > ioff + 100
    (tmp_path / "badrec").mkdir()
    bad = tmp_path / "badrec" / Path(out["file_path"]).name  # the job's own name: another name is refused first
    bad.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1:])
    r = bin.run("verify", str(bad), "--secret-key", str(keypair[1]))
    assert r.returncode == 7 and "chunk list" in r.stderr, f"verify, damaged chunk records: {r.returncode} {r.stderr}"

    other = tmp_path / "other"
    bin.run("keygen", "--out", str(other), check=True)
    r = restore(bin, storage_root / out["file_path"], target, Path(f"{other}.key"))
    assert r.returncode == 7 and "wrong key" in r.stderr, r.stderr
    assert scalar(target, "SELECT count(*) FROM parent") == 0
    # --create into an empty database, one or two connections: nothing created either
    empty = new_db()
    for label in ("flipped byte in the manifest", "flipped byte in a table's data"):
        data, code, _ = cases[label]
        bad.write_bytes(data)
        for jobs in ("1", "2"):
            r = restore(bin, bad, empty, keypair[1], "--create", "--jobs", jobs)
            assert r.returncode == code, r.stderr
            assert "nothing was committed" in r.stderr, r.stderr
            assert scalar(empty, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0


def test_keygen_refuses_overwrite_and_secret_key_mode(bin, tmp_path):
    prefix = tmp_path / "k"
    bin.run("keygen", "--out", str(prefix), check=True)
    assert (Path(f"{prefix}.key").stat().st_mode & 0o777) == 0o600
    r = bin.run("keygen", "--out", str(prefix))
    assert r.returncode == 13 and "refusing to overwrite" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------------------------
# bad requests

def test_bad_requests_fail_clearly_and_write_nothing_outside_root(bin, fusion_db, storage_root, keypair, settings,
                                                                  tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    before_tmp = files_under(tmp_path)

    out = backup(bin, fusion_db, settings, tmp_path, tables=["no_such_table"])
    assert out["status"] == "FAILED" and out["error_code"] == "notfound", out
    dbname = fusion_db.split("dbname=")[-1]
    assert '"public"."no_such_table"' in out["error"] and dbname in out["error"], out["error"]

    inject = 'Cpda Application"; DROP TABLE "Cpda Application"; --'
    out = backup(bin, fusion_db, settings, tmp_path, tables=[inject])
    assert out["status"] == "FAILED" and out["error_code"] == "notfound", out
    assert scalar(fusion_db, "SELECT to_regclass('public.\"Cpda Application\"') IS NOT NULL")

    (storage_root / "escape").symlink_to(outside)
    out = backup(bin, fusion_db, settings, tmp_path, storage_path="escape/x")
    assert out["status"] == "FAILED" and out["error_code"] == "invalid", out
    assert "symbolic link" in out["error"], out["error"]
    out = backup(bin, fusion_db, settings, tmp_path, storage_path="escape")
    assert out["status"] == "FAILED" and out["error_code"] == "invalid", out

    # ".." and absolute paths never get past the contract: craft the message by hand, as a hostile producer would
    for path in ("../outside", "/tmp/abs", "a/../../outside"):
        _, good = backup_event([], storage_path="x")
        m = msgpack.unpackb(good, raw=False)
        m["storage_path"] = path
        r, res = run_event(bin, msgpack.packb(m, use_bin_type=True), tmp_path, "--pg", fusion_db, *settings)
        assert r.returncode != 0, f"{path}: accepted"
        text = (res or {}).get("error") or r.stderr
        assert "storage_path" in text or "storage path" in text, f"{path}: {text}"

    assert files_under(outside) == []
    assert [p for p in files_under(storage_root) if p.endswith(".fbak") or p.endswith(".tmp")] == []
    assert set(files_under(tmp_path)) - set(before_tmp) - set(files_under(storage_root)) \
        - {"storage/" + p for p in files_under(storage_root)} <= {p for p in files_under(tmp_path) if p.startswith("ev-")}


def test_rerun_same_job_leaves_one_artifact(bin, fresh_db, storage_root, keypair, settings, tmp_path):
    scalar(fresh_db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)")
    job_id = str(uuid.uuid4())
    stale = storage_root / "cfg1" / "nightly" / f".{job_id}.fbak.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a crashed worker")
    out = backup(bin, fresh_db, settings, tmp_path, job_id=job_id)
    assert out["status"] == "SUCCESS", out
    # a second run of the same job (the ledger answers; remove it to force a real re-run)
    for p in (storage_root / ".ledger").glob("*"):
        p.unlink()
    out2 = backup(bin, fresh_db, settings, tmp_path, job_id=job_id)
    assert out2["status"] == "SUCCESS", out2
    assert files_under(storage_root / "cfg1" / "nightly") == [f"{job_id}.fbak"]


# ---------------------------------------------------------------------------------------------------------------
# the verify job

def test_verify_job_needs_secret_key_then_passes(bin, pg, fresh_db, storage_root, keypair, settings, tmp_path):
    scalar(fresh_db, "CREATE TABLE \"Some Table\" (id serial PRIMARY KEY, v text); "
                     "INSERT INTO \"Some Table\" (v) SELECT md5(g::text) FROM generate_series(1, 3000) g")
    out = backup(bin, fresh_db, settings, tmp_path)
    assert out["status"] == "SUCCESS", out
    r, res = run_authorised(bin, verify_event(out["file_path"]), tmp_path, "--pg", fresh_db, *settings)
    assert res and res["status"] == "FAILED" and "secret key" in res["error"], (r.stderr, res)
    with_key = settings + ["--secret-key", str(keypair[1]), "--scratch-pg", pg]
    r, res = run_authorised(bin, verify_event(out["file_path"]), tmp_path, "--pg", fresh_db, *with_key)
    assert res and res["status"] == "SUCCESS", (r.stderr, res)
    assert res["stats"]["rows"] == 3000
    r, res = run_authorised(bin, verify_event(out["file_path"], "restore"), tmp_path, "--pg", fresh_db, *with_key)
    assert res and res["status"] == "SUCCESS", (r.stderr, res)
    assert "restore_ms" in res["stats"]
    assert scalar(pg, "SELECT count(*) FROM pg_database WHERE datname LIKE 'fb_verify_%%'") == 0
    # a damaged artifact fails verification
    art = storage_root / out["file_path"]
    data = bytearray(art.read_bytes())
    data[200] ^= 1
    art.write_bytes(bytes(data))
    r, res = run_authorised(bin, verify_event(out["file_path"]), tmp_path, "--pg", fresh_db, *with_key)
    assert res and res["status"] == "FAILED" and res["error_code"] == "crypto", (r.stderr, res)
