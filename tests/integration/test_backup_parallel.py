"""A FULL backup read on several connections sharing one snapshot (`dump-connections`, issue 11).

- tables of very different sizes (one far larger, an empty one, awkward values) backed up on 3 connections:
  verify passes, restore --create gives every table equal (row count + md5 of sorted rows), the artifact
  is exactly as checkable as a one-connection backup (same tables, same per-table hashes and row counts);
- an INCREMENTAL on that FULL after changing one table: unchanged tables referenced, the changed one assembled
  from the FULL's chunks (read through the chunk records the other connections wrote), restored equal;
- the snapshot is one: rows committed while the dump runs are in no table;
- a COPY that fails on the second connection fails the whole job: FAILED with that table's error, no artifact
  and no temporary file in the storage root, nothing left in TMPDIR.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg2

from flow import table_digests
from test_backup_cli import backup, restore, scalar, settings  # noqa: F401 - settings is a fixture

TABLES_SQL = """
CREATE TABLE big (id int8 PRIMARY KEY, body text, n numeric);
INSERT INTO big SELECT g, repeat(md5(g::text), 8) || E'\\t\\\\x' || g, g / 7.0 FROM generate_series(1, 60000) g;
CREATE TABLE medium (id serial PRIMARY KEY, label text, tags text[], doc jsonb);
INSERT INTO medium (label, tags, doc) SELECT 'row ' || g, ARRAY[g::text, NULL, 'a"b'],
    jsonb_build_object('g', g, 'nl', E'x\\ny') FROM generate_series(1, 20000) g;
CREATE TABLE "Small Quoted" ("a b" int, c bytea);
INSERT INTO "Small Quoted" SELECT g, decode('00ff' || lpad(to_hex(g), 4, '0'), 'hex') FROM generate_series(1, 300) g;
CREATE TABLE empty_one (x int);
CREATE TABLE tiny (v float8);
INSERT INTO tiny VALUES ('NaN'), ('Infinity'), ('-Infinity'), (NULL), (0.1);
CREATE SCHEMA other;
CREATE TABLE other.refs (id int PRIMARY KEY, big_id int8 REFERENCES big (id));
INSERT INTO other.refs SELECT g, g * 3 FROM generate_series(1, 5000) g;
"""


def _setup(conninfo: str, sql: str = TABLES_SQL) -> None:
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    conn.cursor().execute(sql)
    conn.close()


def _inspect(bin, artifact: Path, key: Path) -> dict:
    r = bin.run("inspect", str(artifact), "--secret-key", str(key), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _tables(info: dict) -> dict:
    return {(t["schema"], t["name"]): (t["rows"], t["raw_bytes"], t.get("blake2b")) for t in info["tables"]}


def _verify(bin, artifact: Path, key: Path) -> None:
    r = bin.run("verify", str(artifact), "--secret-key", str(key))
    assert r.returncode == 0, r.stdout + r.stderr


def test_parallel_full_restores_equal_and_matches_one_connection(bin, fresh_db, new_db, storage_root, keypair,
                                                                   settings, tmp_path):
    _setup(fresh_db)
    source = table_digests(fresh_db)
    par = backup(bin, fresh_db, settings + ["--dump-connections", "3"], tmp_path)
    assert par["status"] == "SUCCESS", par
    assert par["stats"]["dump_connections"] == 3, par
    one = backup(bin, fresh_db, settings + ["--dump-connections", "1"], tmp_path)
    assert one["status"] == "SUCCESS", one
    assert one["stats"]["dump_connections"] == 1, one

    a_par, a_one = storage_root / par["file_path"], storage_root / one["file_path"]
    _verify(bin, a_par, keypair[1])
    i_par, i_one = _inspect(bin, a_par, keypair[1]), _inspect(bin, a_one, keypair[1])
    # the same tables, rows, bytes and per-table BLAKE2b as the one-connection backup of the same data
    assert _tables(i_par) == _tables(i_one)
    assert len(i_par["tables"]) == 6
    # every segment in the file once, contiguous: verify checked the tiling; sizes agree within zstd's noise
    assert abs(a_par.stat().st_size - a_one.stat().st_size) < 0.05 * a_one.stat().st_size

    target = new_db()
    r = restore(bin, a_par, target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert table_digests(target) == source
    assert scalar(target, "SELECT count(*) FROM big") == 60000
    assert scalar(target, "SELECT count(*) FROM other.refs r JOIN big b ON b.id = r.big_id") == 5000

    # one table alone, from the parallel artifact
    target2 = new_db()
    r = restore(bin, a_par, target2, keypair[1], "--create", "--table", "medium")
    assert r.returncode == 0, r.stderr
    assert table_digests(target2)["public.medium"] == source["public.medium"]


def test_incremental_on_parallel_full(bin, fresh_db, new_db, storage_root, keypair, settings, tmp_path):
    _setup(fresh_db)
    full = backup(bin, fresh_db, settings + ["--dump-connections", "2"], tmp_path)
    assert full["status"] == "SUCCESS", full
    _setup(fresh_db, "UPDATE big SET body = 'changed ' || id WHERE id % 1000 = 0; INSERT INTO tiny VALUES (42);")
    source = table_digests(fresh_db)
    inc = backup(bin, fresh_db, settings + ["--dump-connections", "2"], tmp_path, backup_type="INCREMENTAL")
    assert inc["status"] == "SUCCESS", inc
    assert full["stats"]["dump_connections"] == 2 and inc["stats"]["dump_connections"] == 1  # a base: one
    st = inc["stats"]
    assert st["ran_as_full"] == 0, st
    assert st["tables_referenced"] == 4 and st["tables_stored"] == 2, st
    # big changed in 60 rows of 60000: most of its chunks come from the parallel FULL's chunk records
    assert st["chunks_reused"] > 10 * st["chunks_stored"], st
    a_inc = storage_root / inc["file_path"]
    _verify(bin, a_inc, keypair[1])
    target = new_db()
    r = restore(bin, a_inc, target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    assert table_digests(target) == source


def test_parallel_dump_reads_one_snapshot(bin, fresh_db, new_db, storage_root, keypair, settings, tmp_path):
    """Rows committed while the dump runs are in no table: every connection reads the job's snapshot."""
    _setup(fresh_db)
    _setup(fresh_db, "CREATE TABLE late (id int); INSERT INTO big SELECT g, repeat('y', 4000), 0 "
                     "FROM generate_series(60001, 90000) g;")
    before = table_digests(fresh_db)
    stop = threading.Event()

    def writer():
        conn = psycopg2.connect(fresh_db)
        conn.autocommit = True
        cur = conn.cursor()
        i = 0
        while not stop.is_set():
            i += 1
            cur.execute("INSERT INTO late VALUES (%s); INSERT INTO tiny VALUES (%s)", (i, i))
            time.sleep(0.005)
        conn.close()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.2)
    try:
        out = backup(bin, fresh_db, settings + ["--dump-connections", "3"], tmp_path)
    finally:
        stop.set()
        t.join()
    assert out["status"] == "SUCCESS", out
    assert scalar(fresh_db, "SELECT count(*) FROM late") > 0
    target = new_db()
    r = restore(bin, storage_root / out["file_path"], target, keypair[1], "--create")
    assert r.returncode == 0, r.stderr
    got = table_digests(target)
    # late and tiny as of one instant: the counts agree with each other (both inserted in one transaction)
    late_n = scalar(target, "SELECT count(*) FROM late")
    assert scalar(target, "SELECT count(*) FROM tiny") == 5 + late_n
    assert {k: v for k, v in got.items() if k not in ("public.late", "public.tiny")} == \
        {k: v for k, v in before.items() if k not in ("public.late", "public.tiny")}


def test_failure_on_second_connection_fails_the_job(bin, fresh_db, storage_root, keypair, settings, tmp_path,
                                                    monkeypatch):
    """The second-largest table (the second connection's first) cannot be read: its enum value is gone from
    pg_enum, so COPY fails there, while the first connection is busy with the largest."""
    _setup(fresh_db)
    _setup(fresh_db, """
        CREATE TYPE mood AS ENUM ('ok', 'doomed');
        CREATE TABLE broken (id int, m mood, pad text);
        INSERT INTO broken SELECT g, CASE WHEN g = 15000 THEN 'doomed' ELSE 'ok' END::mood, repeat('p', 100)
            FROM generate_series(1, 20000) g;
        DELETE FROM pg_enum WHERE enumtypid = 'mood'::regtype AND enumlabel = 'doomed';
    """)
    order = scalar(fresh_db, "SELECT string_agg(relname, ',' ORDER BY pg_table_size(oid) DESC) FROM pg_class "
                             "WHERE relkind = 'r' AND relnamespace::regnamespace::text IN ('public', 'other')")
    assert order.split(",")[:2] == ["big", "broken"], order
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    out = backup(bin, fresh_db, settings + ["--dump-connections", "2"], tmp_path)
    assert out["status"] == "FAILED", out
    assert "dump connection 2 of 2" in out["error"], out
    assert "broken" in out["error"] and "enum" in out["error"], out
    # nothing in the storage root (no artifact, no temporary), nothing left in TMPDIR
    assert [p for p in storage_root.rglob("*") if p.is_file()] == []
    assert list(tmpdir.iterdir()) == []
