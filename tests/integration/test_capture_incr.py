"""INCREMENTAL and DIFFERENTIAL backups made of captured changes (issue 16, capture/cap_incr.h): on a database with
a capture base and a live chain, `backup CONFIG --type INCREMENTAL|DIFFERENTIAL` reads no table; it waits until
every commit before it is durable in the chain and copies the chain's segments since its base into its artifact.
`restore INCR --create --pg NEW` rebuilds the capture base FULL and applies the changes up to the backup's end.

Proves, with the real binaries against the real wal_level=logical server and a real `capture`:
- after inserts, updates of 1 % of the rows, deletes and a TOASTed value, an INCREMENTAL, a second INCREMENTAL on
  it and a DIFFERENTIAL each restore into an empty database equal to the source at the moment each was taken;
  none of them read a table (its manifest holds no table, its record's stats say how many segments it copied);
- `verify` checks one with everything under it, `list` shows its stream, base FULL and LSN range;
- the backups hold copies: removing the chain folder's segments afterwards changes nothing for them;
- a segment of another chain in this chain's place, a flipped byte in a segment and a gap in the chain are
  refused by the backup (no artifact appears); a flipped byte in the backup and another capture base under its
  FULL's name are refused by restore (no database appears);
- a lost slot makes the next INCREMENTAL a FULL that takes a new capture base under the next slot generation
  (job/job_rebase.h; test_capture_rebase.py follows it further), saying so;
- rekey refuses a backup of captured changes (its segments stay sealed to the capture's key), changing nothing;
- the worker's event path (`event run`) makes the same backup of changes.
"""
from __future__ import annotations

import json
import shutil
import signal
import uuid

import psycopg2

import flow
from conftest import conninfo_for
from test_backup_command import FOLDER, add_config
from test_capture import (DURABLE_WAIT_S, Capture, _no_capture_outlives_its_test, commit, fingerprint,  # noqa: F401
                          logical_pg, lsn)
from test_pitr import base_args, db_exists, pitr_db, take_base  # noqa: F401

ROWS = 5000


def data_fingerprint(ci: str) -> dict:
    """The fingerprint of the database's data, without the app's own records: a backup writes its BackupRecord
    into the database it backs up, after its point, so the source's record table always differs from a restore's."""
    return {t: v for t, v in fingerprint(ci).items() if not t.startswith("backup_archive_")}


def backup(bin, name: str, btype: str, ci: str, slot: str, storage_root, pub, *extra: str):
    return bin.run("backup", name, "--type", btype, "--json", *base_args(ci, slot, storage_root, pub), *extra)


def load(conn, k: int) -> None:
    """Inserts, an update of 1 % of the rows, deletes, a TOASTed value."""
    commit(conn, 'INSERT INTO leave ("Note", n) SELECT %s || g, g FROM generate_series(1, 40) g', (f"m{k} ",))
    commit(conn, "UPDATE leave SET n = n + 1 WHERE id %% 100 = %s", (k,))
    commit(conn, "DELETE FROM leave WHERE id %% 97 = %s", (k,))
    commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, -1)', ("".join(f"{i:08x}" for i in range(9000 + k)),))
    commit(conn, "UPDATE exams.sittings SET room = %s WHERE id = %s", (f"changed {k}", k))


def restore_into(bin, artifact: str, secret, ci_new: str):
    return bin.run("restore", artifact, "--create", "--pg", ci_new, "--secret-key", str(secret), "--json")


def drop(admin, db: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def manifest(bin, artifact: str, secret) -> dict:
    r = bin.run("inspect", artifact, "--secret-key", str(secret), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_incrementals_from_changes_restore_to_their_moment(bin, pitr_db, logical_pg, storage_root, keypair,
                                                           signing_keys, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    commit(conn, 'INSERT INTO leave ("Note", n) SELECT %s || g, g FROM generate_series(1, %s) g', ("row ", ROWS))
    full = take_base(bin, ci, slot, storage_root, pub, name)
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)

    taken = []  # (type, artifact, fingerprint right after it)
    for k, btype in ((1, "INCREMENTAL"), (2, "INCREMENTAL"), (3, "DIFFERENTIAL")):
        load(conn, k)
        r = backup(bin, name, btype, ci, slot, storage_root, pub)
        assert r.returncode == 0, r.stderr + cap.log.read_text()
        out = json.loads(r.stdout)
        assert out["type"] == btype and not out["ran_as_full"] and out["tables"] == 0, out
        ch = out["captured_changes"]
        assert ch["segments"] >= 1 and ch["transactions"] >= 5 and not ch["fallback"], out
        taken.append((btype, out["artifact"], data_fingerprint(ci)))
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    conn.close()

    # The manifests name the FULL, the stream and LSN ranges that join (DIFFERENTIAL: from the FULL's point).
    ms = [manifest(bin, a, secret)["capture_changes"] for _, a, _ in taken]
    assert all(m["full_job"] == full["job_id"] and m["stream"] == f"{name}/{slot}" for m in ms), ms
    assert ms[0]["end_lsn"] == ms[1]["start_lsn"] and ms[2]["start_lsn"] == ms[0]["start_lsn"], ms

    # The backups carry copies: the chain folder's segments are no longer needed.
    chain = storage_root / FOLDER / "capture" / name / slot
    moved = tmp_path / "chain-copy"
    shutil.copytree(chain, moved)
    for seg in chain.glob("cap-*.fbcap"):
        seg.unlink()
    for i, (btype, artifact, fp) in enumerate(taken):
        r = bin.run("verify", artifact, "--secret-key", str(secret), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["capture_chain"]["transactions"] >= 5, r.stdout
        new = f"{name}_i{i}"
        r = restore_into(bin, artifact, secret, conninfo_for(logical_pg, new))
        assert r.returncode == 0, f"{btype} {i + 1}: {r.stderr}"
        assert data_fingerprint(conninfo_for(logical_pg, new)) == fp, f"{btype} {i + 1} differs from the source then"
        drop(admin, new)
    listing = bin.run("list", "--storage-root", str(storage_root), "--storage-path", FOLDER, "--public-key", str(pub),
                      "--json")
    assert listing.returncode == 0, listing.stderr
    listed = {x["job_id"]: x for x in json.loads(listing.stdout) if "job_id" in x}
    for (_, a, _), m in zip(taken, ms):
        x = listed[shutil.os.path.basename(a).split(".")[0]]
        assert x["restorable"] and x["capture_full_job"] == full["job_id"], x
        assert (lsn(x["capture_start_lsn"]), lsn(x["capture_end_lsn"])) == (m["start_lsn"], m["end_lsn"]), (x, m)
    for seg in moved.glob("cap-*.fbcap"):
        shutil.copy(seg, chain / seg.name)

    # A lost chain: the slot dropped, the next INCREMENTAL is a FULL taking the new capture base, saying so.
    with admin.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    r = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ran_as_full"] and out["tables"] > 0 and "captured_changes" not in out, out
    assert out["capture_rebase"]["reason"] == "slot_missing" and out["capture_rebase"]["slot"] == f"{slot}_2", out
    assert "CAPTURE REBASE" in r.stderr and "new capture base" in r.stderr, r.stderr
    new = f"{name}_fb"
    r = restore_into(bin, out["artifact"], secret, conninfo_for(logical_pg, new))
    assert r.returncode == 0, r.stderr
    assert data_fingerprint(conninfo_for(logical_pg, new)) == data_fingerprint(ci)
    drop(admin, new)

    # rekey cannot re-seal the change segments inside (sealed to the capture's key, signed by it): refused, the
    # file unchanged.
    before = open(taken[2][1], "rb").read()
    bin.run("keygen", "--out", str(tmp_path / "new"), check=True)
    r = bin.run("rekey", taken[2][1], "--secret-key", str(secret), "--new-public-key", str(tmp_path / "new.pub"),
                "--sign-key", str(signing_keys["ops"][1]))
    assert r.returncode == 2 and "captured changes" in r.stderr and "old secret key" in r.stderr, r.stderr
    assert open(taken[2][1], "rb").read() == before


def test_incremental_from_changes_refuses_foreign_and_tampered_segments(bin, pitr_db, logical_pg, storage_root,
                                                                         keypair, signing_keys, tmp_path):
    """A segment from another chain (validly signed by the same worker key) in this chain's place, one with a
    flipped byte, or a gap in the chain, is refused by the backup; a flipped byte in the backup, or another capture base under its
    FULL's name, is refused by restore; no refusal leaves an artifact or a database."""
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    full = take_base(bin, ci, slot, storage_root, pub, name)
    # A second chain of the same database (slot2, another configuration in the same folder): its segments are
    # signed by the same key, of another stream.
    slot2 = f"{slot}_b"
    add_config(ci, slot2, [])
    full2 = take_base(bin, ci, slot2, storage_root, pub, slot2)
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap2 = Capture(bin, ci, slot2, storage_root, keypair, signing_keys, tmp_path / "capture2.log", path=FOLDER)
    cap.start(create=False)
    cap2.start(create=False)
    load(conn, 1)
    r = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
    assert r.returncode == 0, r.stderr
    incr = json.loads(r.stdout)["artifact"]
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 7)', ("after the first incremental",))
    cap.wait_durable(xid, DURABLE_WAIT_S)
    cap2.wait_durable(xid, DURABLE_WAIT_S)
    assert cap2.stop(signal.SIGTERM) == 0, cap2.log.read_text()
    conn.close()
    chain = storage_root / FOLDER / "capture" / name / slot
    last = sorted(chain.glob("cap-*.fbcap"))[-1]  # after the first INCREMENTAL's end
    good = last.read_bytes()
    foreign = sorted((storage_root / FOLDER / "capture" / name / slot2).glob("cap-*.fbcap"))[-1].read_bytes()
    before = sorted(p.name for p in (storage_root / FOLDER).glob("*.fbak"))
    for bad, why, said in ((foreign, "another chain's segment", "belongs to capture stream"),
                           (good[:300] + bytes([good[300] ^ 1]) + good[301:], "flipped", "bad signature")):
        last.write_bytes(bad)
        r = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
        assert r.returncode != 0, (why, r.stdout)
        assert said in r.stderr, (why, r.stderr[-600:])
        assert sorted(p.name for p in (storage_root / FOLDER).glob("*.fbak")) == before, why
    last.write_bytes(good)
    # A gap: one more segment after `last`, then `last` removed.
    with psycopg2.connect(ci) as c2:
        c2.autocommit = True
        xid, _ = commit(c2, 'INSERT INTO leave ("Note", n) VALUES (%s, 8)', ("after the gap",))
    c2.close()
    cap.wait_durable(xid, DURABLE_WAIT_S)
    last.unlink()
    r = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
    assert r.returncode != 0 and "a gap" in r.stderr, r.stderr[-600:]
    assert sorted(p.name for p in (storage_root / FOLDER).glob("*.fbak")) == before
    last.write_bytes(good)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()

    new = f"{name}_bad"
    ci_new = conninfo_for(logical_pg, new)
    # A flipped byte in the backup itself (inside its pack of segments).
    raw = bytearray(open(incr, "rb").read())
    raw[300] ^= 1
    bad = tmp_path / "flipped" / shutil.os.path.basename(incr)
    bad.parent.mkdir()
    bad.write_bytes(bytes(raw))
    shutil.copy(full["artifact"], bad.parent)
    r = restore_into(bin, str(bad), secret, ci_new)
    assert r.returncode != 0 and not db_exists(admin, new), r.stderr
    assert "captured changes: authentication failed" in r.stderr, r.stderr
    # Another capture base, signed by the same worker, under the FULL's name.
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(incr, swapped)
    shutil.copy(full2["artifact"], swapped / shutil.os.path.basename(full["artifact"]))
    r = restore_into(bin, str(swapped / shutil.os.path.basename(incr)), secret, ci_new)
    assert r.returncode != 0 and not db_exists(admin, new), r.stderr
    assert "another job's artifact" in r.stderr, r.stderr
    # The untouched backup still restores.
    r = restore_into(bin, incr, secret, ci_new)
    assert r.returncode == 0, r.stderr
    drop(admin, new)


def test_incremental_from_changes_through_the_workers_event_path(bin, pitr_db, logical_pg, storage_root, keypair,
                                                                 signing_keys, tmp_path):
    """A backup.requested INCREMENTAL run as a worker runs it (`event run`: authority check, ledger, job) is made of
    captured changes the same way, and restores to the moment it was taken."""
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    cid = add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    take_base(bin, ci, slot, storage_root, pub, name)
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)
    load(conn, 1)
    ev = flow.fusion_events.encode({
        "v": 1, "type": "backup.requested", "job_id": str(uuid.uuid4()), "ts": flow.now_ms(), "requested_by": None,
        "attempt": 1, "record_id": 424242, "config_id": cid, "config_name": name, "backup_type": "INCREMENTAL",
        "tables": [], "modules": [], "storage_path": FOLDER, "retention_days": 0})
    r, out = flow.run_authorised(bin, ev, tmp_path, "--pg", ci, "--storage-root", str(storage_root), "--public-key",
                                 str(pub))
    assert out and out["status"] == "SUCCESS", r.stderr
    assert out["stats"]["captured_changes"] == 1 and out["stats"]["capture_segments"] >= 1, out
    assert out["stats"]["ran_as_full"] == 0 and out["stats"]["tables"] == 0, out
    fp = data_fingerprint(ci)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    conn.close()
    new = f"{name}_ev"
    r = restore_into(bin, str(storage_root / out["file_path"]), secret, conninfo_for(logical_pg, new))
    assert r.returncode == 0, r.stderr
    assert data_fingerprint(conninfo_for(logical_pg, new)) == fp
    drop(admin, new)
