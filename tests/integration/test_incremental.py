"""INCREMENTAL and DIFFERENTIAL backups, chains, retention, verification of a damaged artifact, copies and rekey
(issue 7), against the real PostgreSQL with the built binaries.

Jobs run in-process (`fusion-backup event run --no-publish`, the worker's own job code) so each step is
deterministic. The source changes between backups with inserts, updates, deletes, a TRUNCATE and a statistics
reset (pg_stat_reset(), plus pg_stat_reset_shared); every artifact then restores, with its chain, to exactly the
source at its time: per table, the row count and the md5 of the sorted row texts. With FB_TEST_RESTART_PG=1 (as
tests/run.sh sets it) the local server is also crashed (pg_ctl -m immediate: crash recovery, statistics lost) and
restarted in the middle; the test waits for it to come back. Change detection never reads statistics (it hashes
each table's COPY stream), so neither the crash nor the reset may change the outcome. Leave it unset when other
runs share the server.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from fusion_events import encode
import flow
from flow import table_digests as digests

REPO = Path(__file__).resolve().parents[2]
CONFIG_ID = 77



def read_chain_index(data: bytes) -> dict:
    """Decodes a format-6 artifact's chain index (FORMAT.md, "Chunk lists (format 5)") independently of the C code:
    the text head, then per table its byte range of compact records (flags, id, varints; decoded to id, src,
    segment, offset, length), each range checked against the BLAKE2b the head records for it."""
    import hashlib
    moff, mlen, ioff, ilen = struct.unpack("<4Q", data[-32:])
    index = data[ioff:ioff + ilen]
    assert index.startswith(b"fusion-backup chain index 4\nhead ")
    head_len = int(index[33:49])
    lines = index[:head_len].decode().splitlines()
    records = index[head_len:]
    n_src = int(next(l for l in lines if l.startswith("sources ")).split()[1])
    sources = [l.split()[1] for l in lines if l.startswith("source ")]
    assert len(sources) == n_src
    tables = {}
    for k, line in enumerate(lines):
        if not line.startswith("table "):
            continue
        f = line.split()
        kind, count, first, nbytes, digest, deps = lines[k + 1].split()[1:]
        raw = records[int(first):int(first) + int(nbytes)]
        assert hashlib.blake2b(raw, digest_size=32).hexdigest() == digest
        recs = compact_records(raw)
        assert len(recs) == int(count)
        tables[(f[5], f[6])] = {"kind": kind, "records": recs, "deps": [] if deps == "-" else
                                [sources[int(d) - 1] for d in deps.split(",")]}
    n_recs, n_bytes = (int(x) for x in next(l for l in lines if l.startswith("records ")).split()[1:])
    assert len(records) == n_bytes and n_recs == sum(len(t["records"]) for t in tables.values())
    return {"sources": sources, "tables": tables}


def compact_records(raw: bytes) -> list:
    """One range of compact records: flags (bit 0: src and segment as the previous record's, bit 1: offset right
    after it), id[16], then the varints the flags do not replace (src, segment, offset, length)."""
    out, i = [], 0

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            b = raw[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while i < len(raw):
        flags = raw[i]
        assert flags & ~3 == 0 and (out or flags == 0)
        cid = raw[i + 1:i + 17]
        i += 17
        src, seg = (out[-1][1], out[-1][2]) if flags & 1 else (varint(), varint())
        off = out[-1][3] + out[-1][4] if flags & 2 else varint()
        length = varint()
        assert length > 0
        out.append((cid, src, seg, off, length))
    return out

def backup_event(backup_type: str, storage_path: str = "cfg77/daily", retention_days: int = 0,
                 job_id: str | None = None) -> tuple[str, bytes]:
    job_id = job_id or str(uuid.uuid4())
    return job_id, encode({
        "v": 1, "type": "backup.requested", "job_id": job_id, "ts": int(time.time() * 1000), "requested_by": None,
        "attempt": 1, "record_id": 1, "config_id": CONFIG_ID, "config_name": "daily", "backup_type": backup_type,
        "tables": [], "modules": [], "storage_path": storage_path, "retention_days": retention_days})


def verify_event(file_path: str, mode: str) -> bytes:
    return encode({
        "v": 1, "type": "backup.verify", "job_id": str(uuid.uuid4()), "ts": int(time.time() * 1000),
        "requested_by": None, "attempt": 1, "config_id": CONFIG_ID, "record_id": 1, "mode": mode,
        "file_path": file_path})


def run_event(bin, event: bytes, tmp: Path, *settings: str) -> dict:
    r, out = flow.run_authorised(bin, event, tmp, *settings)
    assert out is not None, f"no outcome printed (exit {r.returncode}): {r.stderr}"
    out["_stderr"] = r.stderr
    return out


def sql(conninfo: str, text: str):
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(text)
    v = cur.fetchall() if cur.description else None
    conn.close()
    return v


SCHEMA = """
CREATE TABLE "Student Marks" (id serial PRIMARY KEY, student text NOT NULL, mark int, note text);
CREATE TABLE courses (code varchar(12) PRIMARY KEY, title text);
CREATE TABLE enrolment (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        course varchar(12) REFERENCES courses(code), student text);
CREATE TABLE audit_log (at timestamptz, what text);
CREATE TABLE untouched (k int PRIMARY KEY, v text);
INSERT INTO "Student Marks" (student, mark, note) SELECT 's' || g, g % 100, repeat('x', g % 7) FROM generate_series(1, 3000) g;
INSERT INTO courses SELECT 'C' || g, 'Course ' || g FROM generate_series(1, 50) g;
INSERT INTO enrolment (course, student) SELECT 'C' || (g % 50 + 1), 's' || g FROM generate_series(1, 2000) g;
INSERT INTO audit_log SELECT '2026-01-01'::timestamptz + g * interval '1 minute', 'e' || g FROM generate_series(1, 1000) g;
INSERT INTO untouched SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
"""


@pytest.fixture
def cfg(storage_root, keypair, tmp_path, app_db):
    pub, key = keypair
    # app_db's rows authorise the requests (--authority-pg): the backed-up database holds only the test's tables
    return {"settings": ["--storage-root", str(storage_root), "--public-key", str(pub), "--authority-pg", app_db],
            "key": key,
            "root": storage_root, "tmp": tmp_path}


def do_backup(bin, db, cfg, backup_type, extra=(), **kw) -> dict:
    job_id, ev = backup_event(backup_type, **kw)
    out = run_event(bin, ev, cfg["tmp"], "--pg", db, *cfg["settings"], *extra)
    assert out["status"] == "SUCCESS", out
    return out


def restore_and_compare(bin, cfg, out, new_db, expected: dict, *extra: str) -> None:
    target = new_db()
    r = bin.run("restore", str(cfg["root"] / out["file_path"]), "--pg", target, "--secret-key", str(cfg["key"]),
                "--create", *extra)
    assert r.returncode == 0, r.stderr
    assert digests(target) == expected, f"restore of {out['file_path']} differs from the source at its time"


def maybe_restart_pg() -> None:
    if os.environ.get("FB_TEST_RESTART_PG") != "1":
        return
    # An immediate stop is a crash as far as PostgreSQL knows: crash recovery on start, statistics lost.
    subprocess.run([str(REPO / "deploy/local/services.sh"), "stop", "pg"], check=True,
                   env={**os.environ, "FB_PG_STOP_MODE": "immediate"})
    subprocess.run([str(REPO / "deploy/local/services.sh"), "start", "pg"], check=True)
    for _ in range(120):
        try:
            psycopg2.connect(os.environ["FB_TEST_PG"]).close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.5)
    raise AssertionError("PostgreSQL did not come back after the restart")


def test_full_incrementals_differential_each_restore_exactly(bin, fresh_db, new_db, cfg):
    db = fresh_db
    sql(db, SCHEMA)
    states, outs = [], []

    full = do_backup(bin, db, cfg, "FULL")
    states.append(digests(db))
    outs.append(full)

    # inc1: inserts and updates in one table, a delete in another
    sql(db, "INSERT INTO \"Student Marks\" (student, mark) VALUES ('new', 1); "
            "UPDATE \"Student Marks\" SET mark = mark + 1 WHERE id % 10 = 0; DELETE FROM enrolment WHERE id % 7 = 0")
    inc1 = do_backup(bin, db, cfg, "INCREMENTAL")
    assert inc1["stats"]["ran_as_full"] == 0, inc1
    assert inc1["stats"]["tables_stored"] == 2 and inc1["stats"]["tables_referenced"] == 3, inc1["stats"]
    assert inc1["file_size"] < full["file_size"]
    states.append(digests(db))
    outs.append(inc1)

    # inc2: TRUNCATE, a statistics reset, an update that restores a value (content changed, counters unreliable)
    sql(db, "TRUNCATE audit_log")
    sql(db, "SELECT pg_stat_reset()")
    maybe_restart_pg()
    sql(db, "UPDATE courses SET title = 'Renamed' WHERE code = 'C1'")
    inc2 = do_backup(bin, db, cfg, "INCREMENTAL")
    assert inc2["stats"]["tables_stored"] == 2 and inc2["stats"]["tables_referenced"] == 3, inc2["stats"]
    states.append(digests(db))
    outs.append(inc2)

    # inc3: nothing changed at all: everything referenced, an artifact of a manifest only
    inc3 = do_backup(bin, db, cfg, "INCREMENTAL")
    assert inc3["stats"]["tables_stored"] == 0 and inc3["stats"]["tables_referenced"] == 5, inc3["stats"]
    states.append(digests(db))
    outs.append(inc3)

    # differential: everything changed since the FULL (3 tables), whatever the incrementals stored
    sql(db, "DELETE FROM \"Student Marks\" WHERE id < 100")
    diff = do_backup(bin, db, cfg, "DIFFERENTIAL")
    assert diff["stats"]["ran_as_full"] == 0
    assert diff["stats"]["tables_stored"] == 4 and diff["stats"]["tables_referenced"] == 1, diff["stats"]
    states.append(digests(db))
    outs.append(diff)

    for out, state in zip(outs, states):
        restore_and_compare(bin, cfg, out, new_db, state)

    # the manifest names the base; inspect shows it
    r = bin.run("inspect", str(cfg["root"] / inc2["file_path"]), "--secret-key", str(cfg["key"]), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["base_job"] == inc1["job_id"]

    # restore from a copy of the incremental elsewhere: its chain via --chain-dir; a missing link is clear
    lone = cfg["tmp"] / "lone"
    lone.mkdir()
    (lone / Path(inc2["file_path"]).name).write_bytes((cfg["root"] / inc2["file_path"]).read_bytes())
    target = new_db()
    r = bin.run("restore", str(lone / Path(inc2["file_path"]).name), "--pg", target, "--secret-key",
                str(cfg["key"]), "--create")
    assert r.returncode == 9 and "--chain-dir" in r.stderr and "chain is broken" in r.stderr, r.stderr
    assert full["job_id"] in r.stderr or inc1["job_id"] in r.stderr, r.stderr
    assert digests(target) == {}
    restore_and_compare(bin, cfg, {"file_path": str(lone / Path(inc2["file_path"]).name)}, new_db, states[2],
                        "--chain-dir", str(cfg["root"] / "cfg77/daily"))

    # a tampered link: a byte of the FULL's segment of `untouched` (which inc2 references) flipped -> the
    # incremental restores nothing, clearly
    fpath = cfg["root"] / full["file_path"]
    r = bin.run("inspect", str(fpath), "--secret-key", str(cfg["key"]), "--json")
    seg = next(t for t in json.loads(r.stdout)["tables"] if t["name"] == "untouched")
    good = fpath.read_bytes()
    bad = bytearray(good)
    bad[seg["offset"] + seg["length"] // 2] ^= 1
    fpath.write_bytes(bytes(bad))
    target = new_db()
    r = bin.run("restore", str(cfg["root"] / inc2["file_path"]), "--pg", target, "--secret-key", str(cfg["key"]),
                "--create")
    assert r.returncode == 7 and "authentication failed" in r.stderr, r.stderr
    assert digests(target) == {}
    fpath.write_bytes(good)


def test_incremental_without_base_runs_as_full_and_differential_ignores_other_configs(bin, fresh_db, new_db, cfg):
    sql(fresh_db, SCHEMA)
    out = do_backup(bin, fresh_db, cfg, "DIFFERENTIAL")
    assert out["stats"]["ran_as_full"] == 1
    r = bin.run("inspect", str(cfg["root"] / out["file_path"]), "--secret-key", str(cfg["key"]), "--json")
    m = json.loads(r.stdout)
    assert m["backup_type"] == "FULL" and m["requested_type"] == "DIFFERENTIAL" and m["base_job"] is None
    # an altered chain index is never used as a base (the job runs as FULL and says why in its log)
    art = cfg["root"] / out["file_path"]
    data = bytearray(art.read_bytes())
    pos = data.rfind(b"\ntables ")
    data[pos + 8] = ord("9") if data[pos + 8] != ord("9") else ord("8")
    art.write_bytes(bytes(data))
    inc = do_backup(bin, fresh_db, cfg, "INCREMENTAL")
    assert inc["stats"]["ran_as_full"] == 1 and "MAC does not match" in inc["_stderr"], inc


def prune(bin, cfg, days: int, now_ms: int, *extra: str):
    r = bin.run("prune", "--storage-root", str(cfg["root"]), "--storage-path", "cfg77/daily", "--retention-days",
                str(days), "--now-ms", str(now_ms), "--public-key", cfg["settings"][3], *extra)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_retention_keeps_what_a_kept_incremental_needs_and_the_last_full(bin, fresh_db, new_db, cfg):
    db = fresh_db
    day = 86400000
    sql(db, SCHEMA)
    full = do_backup(bin, db, cfg, "FULL")
    sql(db, "INSERT INTO courses VALUES ('X1', 'x')")
    inc1 = do_backup(bin, db, cfg, "INCREMENTAL")
    time.sleep(0.3)
    mid1 = int(time.time() * 1000)
    time.sleep(0.3)
    sql(db, "INSERT INTO audit_log VALUES (now(), 'y')")
    inc2 = do_backup(bin, db, cfg, "INCREMENTAL")
    folder = cfg["root"] / "cfg77/daily"

    # a day later, FULL and inc1 are past a 1-day retention, inc2 is not: inc2 needs both, so both stay
    out = prune(bin, cfg, 1, mid1 + day, "--dry-run")
    assert f"keep {full['job_id']}: " in out and "the last restorable FULL" in out, out
    assert f"keep {inc1['job_id']}: " in out and f"needed by backup {inc2['job_id']}" in out, out
    assert "remove" not in out, out
    out = prune(bin, cfg, 1, mid1 + day)
    assert len(list(folder.glob("*.fbak"))) == 3

    # after a newer FULL, the whole old chain is past retention and needed by nothing kept: removed whole
    time.sleep(0.3)
    mid2 = int(time.time() * 1000)
    time.sleep(0.3)
    full2 = do_backup(bin, db, cfg, "FULL")
    state = digests(db)
    out = prune(bin, cfg, 1, mid2 + day, "--dry-run")
    assert out.count("would remove") == 3, out
    assert len(list(folder.glob("*.fbak"))) == 4
    out = prune(bin, cfg, 1, mid2 + day)
    assert out.count("removed") == 3, out
    assert sorted(p.name for p in folder.iterdir()) == [f"{full2['job_id']}.fbak"], out
    restore_and_compare(bin, cfg, full2, new_db, state)

    # even when everything is past retention, the last restorable FULL stays
    out = prune(bin, cfg, 1, mid2 + 10 * day)
    assert f"keep {full2['job_id']}: " in out and sorted(p.name for p in folder.iterdir()) == [f"{full2['job_id']}.fbak"]

    # the worker's own retention after a backup: nothing is old yet, nothing removed
    inc3 = do_backup(bin, db, cfg, "INCREMENTAL", retention_days=1)
    assert "pruned" not in inc3["stats"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{full2['job_id']}.fbak", f"{inc3['job_id']}.fbak"])


def test_verify_job_restore_mode_measures_and_catches_corruption(bin, pg, fresh_db, cfg):
    sql(fresh_db, SCHEMA)
    do_backup(bin, fresh_db, cfg, "FULL")
    sql(fresh_db, "UPDATE courses SET title = 'v2'")
    inc = do_backup(bin, fresh_db, cfg, "INCREMENTAL")
    with_key = cfg["settings"] + ["--secret-key", str(cfg["key"]), "--scratch-pg", pg]
    out = run_event(bin, verify_event(inc["file_path"], "restore"), cfg["tmp"], "--pg", fresh_db, *with_key)
    assert out["status"] == "SUCCESS", out
    assert out["stats"]["restore_ms"] >= 0 and out["stats"]["tables"] == 5
    art = cfg["root"] / inc["file_path"]
    data = bytearray(art.read_bytes())
    data[150] ^= 0x40
    art.write_bytes(bytes(data))
    for mode in ("integrity", "restore"):
        out = run_event(bin, verify_event(inc["file_path"], mode), cfg["tmp"], "--pg", fresh_db, *with_key)
        assert out["status"] == "FAILED" and out["error_code"] == "crypto", out
        assert "authentication failed" in out["error"] and inc["file_path"] in out["error"], out


def test_copies_are_checked_and_restorable(bin, fresh_db, new_db, cfg, tmp_path):
    sql(fresh_db, SCHEMA)
    c1, c2 = tmp_path / "copy1", tmp_path / "copy2"
    c1.mkdir()
    c2.mkdir()
    out = do_backup(bin, fresh_db, cfg, "FULL", extra=["--copy-to", f"{c1},{c2}"])
    assert out["stats"]["copies"] == 2
    for c in (c1, c2):
        assert (c / out["file_path"]).read_bytes() == (cfg["root"] / out["file_path"]).read_bytes()
    target = new_db()
    r = bin.run("restore", str(c2 / out["file_path"]), "--pg", target, "--secret-key", str(cfg["key"]), "--create")
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)
    # an unwritable copy target fails the job with a clear message
    out = run_event(bin, backup_event("FULL")[1], cfg["tmp"], "--pg", fresh_db, *cfg["settings"], "--copy-to",
                    str(tmp_path / "missing"))
    assert out["status"] == "FAILED" and "missing" in out["error"], out


def test_rekey_reseals_without_reencrypting(bin, fresh_db, new_db, cfg, tmp_path, signing_keys, monkeypatch):
    # rekey re-MACs the chain index for the new key and re-signs it with the operators' key, which readers trust
    monkeypatch.setenv("FB_TRUSTED_SIGNERS", f"{signing_keys['worker'][0]},{signing_keys['ops'][0]}")
    sql(fresh_db, SCHEMA)
    out = do_backup(bin, fresh_db, cfg, "FULL")
    art = cfg["root"] / out["file_path"]
    before = art.read_bytes()
    bin.run("keygen", "--out", str(tmp_path / "new"), check=True)
    r = bin.run("rekey", str(art), "--secret-key", str(cfg["key"]), "--new-public-key", str(tmp_path / "new.pub"),
                "--sign-key", str(signing_keys["ops"][1]))
    assert r.returncode == 0, r.stderr
    after = art.read_bytes()
    index_at = int.from_bytes(before[-16:-8], "little")  # the trailer's chain index offset: segments end there
    assert len(after) == len(before) and after[96:index_at] == before[96:index_at] and after[:16] == before[:16]
    assert after[16:96] != before[16:96]
    r = bin.run("verify", str(art), "--secret-key", str(cfg["key"]))
    assert r.returncode == 7 and "does not open" in r.stderr, r.stderr
    r = bin.run("verify", str(art), "--secret-key", str(tmp_path / "new.key"))
    assert r.returncode == 0, r.stderr
    target = new_db()
    r = bin.run("restore", str(art), "--pg", target, "--secret-key", str(tmp_path / "new.key"), "--create")
    assert r.returncode == 0, r.stderr
    assert digests(target) == digests(fresh_db)


BIG = """
CREATE TABLE big (id int PRIMARY KEY, a text, b int, c jsonb);
INSERT INTO big SELECT g, md5(g::text) || repeat(' x', g % 17), g * 7 % 1000,
                       jsonb_build_object('k', g, 's', md5((g * 3)::text))
FROM generate_series(1, 60000) g;
CREATE TABLE side (k int PRIMARY KEY, v text);
INSERT INTO side SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
"""


def test_chunks_store_only_what_changed_in_a_big_table(bin, fresh_db, new_db, cfg):
    """Format 3: a changed table is assembled from the chain's chunks plus the few new ones; restores exactly."""
    db = fresh_db
    sql(db, BIG)
    states, outs = [], []
    full = do_backup(bin, db, cfg, "FULL")
    states.append(digests(db))
    outs.append(full)

    # scattered updates (0.2 % of the rows, all over the table): only the chunks around them are stored
    sql(db, "UPDATE big SET b = b + 1 WHERE id % 500 = 0")
    inc1 = do_backup(bin, db, cfg, "INCREMENTAL")
    st = inc1["stats"]
    assert st["tables_stored"] == 1 and st["tables_referenced"] == 1, st
    assert st["chunks_reused"] > 4 * st["chunks_stored"] > 0, st
    assert inc1["file_size"] * 4 < full["file_size"], (inc1["file_size"], full["file_size"])
    states.append(digests(db))
    outs.append(inc1)

    # deletes in the big table and a TRUNCATE of the other, on top of the assembled incremental
    time.sleep(0.01)
    mid1 = int(time.time() * 1000)
    time.sleep(0.01)
    sql(db, "DELETE FROM big WHERE id % 1000 = 1; TRUNCATE side")
    inc2 = do_backup(bin, db, cfg, "INCREMENTAL")
    st = inc2["stats"]
    assert st["tables_stored"] == 2 and st["chunks_reused"] > 4 * st["chunks_stored"], st
    assert inc2["file_size"] * 4 < full["file_size"], (inc2["file_size"], full["file_size"])
    states.append(digests(db))
    outs.append(inc2)

    # nothing changed: the assembled table is referenced as it is
    inc3 = do_backup(bin, db, cfg, "INCREMENTAL")
    assert inc3["stats"]["tables_stored"] == 0 and inc3["stats"]["tables_referenced"] == 2, inc3["stats"]
    states.append(digests(db))
    outs.append(inc3)

    # side refilled with its old content, more updates: a differential reuses the FULL's chunks
    sql(db, "INSERT INTO side SELECT g, md5(g::text) FROM generate_series(1, 20000) g; "
            "UPDATE big SET a = a || '!' WHERE id % 777 = 0")
    diff = do_backup(bin, db, cfg, "DIFFERENTIAL")
    st = diff["stats"]
    # (everything changed since the FULL counts: ~260 rows spread over ~870 chunks)
    assert st["tables_referenced"] == 1 and st["chunks_reused"] > 2 * st["chunks_stored"], st
    assert diff["file_size"] * 2 < full["file_size"], (diff["file_size"], full["file_size"])
    states.append(digests(db))
    outs.append(diff)

    for out, state in zip(outs, states):
        restore_and_compare(bin, cfg, out, new_db, state)
    for out in outs:
        r = bin.run("verify", str(cfg["root"] / out["file_path"]), "--secret-key", str(cfg["key"]))
        assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr

    # every backup is format 6: a schema archive, chunk lists as binary records after the index head (issue 11),
    # and signed (issue 12)
    r = bin.run("inspect", str(cfg["root"] / inc2["file_path"]), "--secret-key", str(cfg["key"]), "--json")
    m = json.loads(r.stdout)
    assert m["format"] == 6 and m["schema_archive"]["length"] > 0
    big = next(t for t in m["tables"] if t["name"] == "big")
    assert big["assembled"] is True and "chunks" not in big  # the manifest no longer grows with the data
    ix = read_chain_index((cfg["root"] / inc2["file_path"]).read_bytes())
    recs = ix["tables"][("public", "big")]["records"]
    assert len(recs) > 100 and sum(r[4] for r in recs) == big["raw_bytes"]
    assert {None if r[1] == 0 else ix["sources"][r[1] - 1] for r in recs} >= {None, full["job_id"]}
    side = next(t for t in m["tables"] if t["name"] == "side")
    assert side["raw_bytes"] == 0 and side["assembled"] is True
    r = bin.run("inspect", str(cfg["root"] / full["file_path"]), "--secret-key", str(cfg["key"]), "--json")
    assert json.loads(r.stdout)["format"] == 6
    # a FULL's records describe its whole segments: they tile each table's stream
    fix = read_chain_index((cfg["root"] / full["file_path"]).read_bytes())
    frecs = fix["tables"][("public", "big")]["records"]
    assert [r[3] for r in frecs] == [sum(x[4] for x in frecs[:i]) for i in range(len(frecs))]

    # the plaintext index shows chunk ids only as keyed tags: no chunk's plain BLAKE2b appears in it
    # (the index's text head only: the whole file's encrypted bytes hold "\nc " by chance about once in 16 MiB)
    import struct
    data = (cfg["root"] / inc1["file_path"]).read_bytes()
    _, _, ioff, ilen = struct.unpack("<4Q", data[-32:])
    index = data[ioff:ioff + ilen]
    head = index[:int(index[33:49])]
    assert head.startswith(b"fusion-backup chain index 4\n"), head[:80]
    assert not [l for l in head.split(b"\n") if l.startswith(b"c ")], "a version-2 chunk line (plain chunk id)"

    # retention: inc2 references inc1 only through chunks of "big" (its tables are all assembled); inc1 stays
    out = prune(bin, cfg, 1, mid1 + 86400000, "--dry-run")
    assert f"keep {inc1['job_id']}: " in out, out
    assert f"needed by backup {inc2['job_id']} (table \"public\".\"big\", some of its chunks)" in out, out
    assert "remove" not in out, out
