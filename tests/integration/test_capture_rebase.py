"""A chain that cannot continue gets a new base by itself (issue 16; worker/src/job/job_rebase.h, capture/cap_rebase.h,
daemon/dmn_capture.h): the next backup of the captured database's configuration runs as a FULL in the snapshot of
the next slot generation (S, then S_2, ...), says so (warning, the JSON result, stats on the record, the record's
type FULL), and the workers' capture follows the new slot with no setting changed.

Proves, with the real binaries, a real worker daemon capturing (capture-databases) and the real wal_level=logical
server:
- a dropped slot: the next INCREMENTAL (`backup` CLI, the worker's own job code) runs as a FULL taking generation 2,
  the record says FULL, the daemon moves to slot S_2 into its own folder, and a moment after the new base restores
  with `restore NEW_BASE --until LSN` equal to the source then; `list` shows both chains;
- a migration adding a column ends chain 1 (the daemon stops it); the next backup takes generation 2 and drops the
  old slot (it would hold WAL forever); restore --until a moment after the new base equals the source then,
  migration included;
- a healthy chain is never rebased: a FULL request on it creates no slot, and a slot of a newer generation that has
  no base (an interrupted rebase) makes a rebase refuse rather than create another one;
- the worker's event path (`event run` of a backup.requested) takes the same new base and says so in its status;
- a live chain whose base FULL is gone is rebased too, its live slot left alone, and the daemon moves from the chain
  it streams to the new one.
"""
from __future__ import annotations

import json
import signal
import socket
import uuid

import psycopg2
import pytest

import flow
from conftest import conninfo_for, wait_for
from test_backup_command import FOLDER, add_config, records
from test_capture import (DURABLE_WAIT_S, Capture, _no_capture_outlives_its_test, commit, fingerprint,  # noqa: F401
                          logical_pg, lsn)
from test_pitr import base_args, pitr_db, restore_until, take_base  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_fingerprint(ci: str) -> dict:
    """Without the app's own records: each backup writes its BackupRecord into the database it backs up."""
    return {t: v for t, v in fingerprint(ci).items() if not t.startswith("backup_archive_")}


def capture_worker(workers, ci, name, slot, storage_root, keypair):
    """A worker daemon capturing the database into the configuration's folder (where the bases are)."""
    pub, _ = keypair
    return workers.start(ci, storage_root=storage_root, public_key=pub, role="worker", extra=(
        "--capture-databases", name, "--capture-slot", slot, "--capture-publication", slot,
        "--capture-storage-path", FOLDER, "--capture-flush-s", "1", "--capture-lock-retry-s", "1",
        "--metrics-listen", f"127.0.0.1:{_free_port()}"))


def slots(admin, name: str) -> dict[str, bool]:
    with admin.cursor() as cur:
        cur.execute("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE %s", (name + "%",))
        return dict(cur.fetchall())


def drop_slot(admin, slot: str) -> None:
    """The way an operator (or a cleanup script) drops it: end its walsender, then drop it before it is back."""
    with admin.cursor() as cur:
        def dropped():
            cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s "
                        "AND active", (slot,))
            try:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            except psycopg2.errors.ObjectInUse:
                return False
        wait_for(dropped, timeout=30, interval=0.05, what=f"slot {slot} to be dropped")


def backup(bin, name, btype, ci, slot, storage_root, pub):
    r = bin.run("backup", name, "--type", btype, "--json", *base_args(ci, slot, storage_root, pub))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def moment_after_new_base(bin, conn, ci, name, slot2, storage_root, keypair, signing_keys, tmp_path):
    """Changes after the new base, durable in generation 2's chain: (lsn of the moment, fingerprint then)."""
    commit(conn, 'INSERT INTO leave ("Note", n) SELECT %s || g, g FROM generate_series(1, 25) g', ("after ",))
    commit(conn, "UPDATE leave SET n = -n WHERE id %% 5 = 0")
    commit(conn, "DELETE FROM exams.sittings WHERE id = 3")
    _, at = commit(conn, "UPDATE exams.sittings SET room = 'moved' WHERE id = 4")
    fp = data_fingerprint(ci)
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'past the moment\', 0)')
    chain2 = Capture(bin, ci, slot2, storage_root, keypair, signing_keys, tmp_path / "list2.log", path=FOLDER)
    chain2.wait_durable(xid, DURABLE_WAIT_S)
    return at, fp


def test_dropped_slot_next_incremental_takes_generation_2_and_the_daemon_follows(
        bin, pitr_db, logical_pg, storage_root, keypair, signing_keys, workers, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    config_id = add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    take_base(bin, ci, slot, storage_root, pub, name)
    w = capture_worker(workers, ci, name, slot, storage_root, keypair)
    chain1 = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "list1.log", path=FOLDER)
    try:
        wait_for(lambda: f"streaming slot {slot} " in workers.log(w), timeout=60, what="the worker to stream")
        xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'chain 1\', 1)')
        chain1.wait_durable(xid, DURABLE_WAIT_S)

        drop_slot(admin, slot)
        wait_for(lambda: "capture stopped" in workers.log(w), timeout=30, what="the capture to stop")
        commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'in the gap\', 2)')  # in no chain: only a new base has it

        out, stderr = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
        slot2 = f"{slot}_2"
        assert out["ran_as_full"] and out["ran_as"] == "FULL" and out["tables"] > 0, out
        rb = out["capture_rebase"]
        assert (rb["reason"], rb["slot"], rb["generation"], rb["old_slot"], rb["old_generation"],
                rb["old_slot_dropped"]) == ("slot_missing", slot2, 2, slot, 1, False), out
        assert "CAPTURE REBASE" in stderr and "does not exist" in stderr, stderr
        rec = [x for x in records(ci, config_id) if x["job_id"] == out["job_id"]][0]
        assert rec["status"] == "SUCCESS" and rec["backup_type"] == "FULL", rec
        assert rec["stats"]["capture_rebase"] == 1 and rec["stats"]["capture_generation"] == 2, rec["stats"]
        assert set(slots(admin, name)) == {slot2}, slots(admin, name)

        # The daemon moves to generation 2 by itself, into its own folder.
        wait_for(lambda: f"streaming slot {slot2} " in workers.log(w), timeout=30, what="the worker to follow S_2")
        assert "following the new capture base" in workers.log(w)
        at, fp = moment_after_new_base(bin, conn, ci, name, slot2, storage_root, keypair, signing_keys, tmp_path)
        assert (storage_root / FOLDER / "capture" / name / slot2).is_dir()

        new = f"{name}_r"
        r = restore_until(bin, out["artifact"], at, secret, conninfo_for(logical_pg, new))
        assert r.returncode == 0, r.stderr
        assert data_fingerprint(conninfo_for(logical_pg, new)) == fp, "restore --until from the new base differs"

        # list shows both windows: chain 1 up to the drop, chain 2 from the new base.
        r = bin.run("list", "--storage-root", str(storage_root), "--public-key", str(pub), "--pg", ci,
                    "--capture-slot", slot, "--json")
        assert r.returncode == 0, r.stderr
        chains = {x["capture_chain"]: x for x in json.loads(r.stdout) if x.get("capture_chain")}
        assert set(chains) == {f"{name}/{slot}", f"{name}/{slot2}"}, chains
        assert all(c["restorable"] for c in chains.values()), chains
        assert chains[f"{name}/{slot2}"]["base_lsn"] == rb["lsn"], (chains, out)
        r = bin.run("status", "--json", "--capture-databases", name, "--capture-slot", slot, "--pg", ci)
        assert r.returncode == 0 and f'"slot":"{slot2}"' in r.stdout and '"state":"ok"' in r.stdout, r.stdout
    finally:
        workers.stop_all()
        wait_for(lambda: not any(slots(admin, name).values()), timeout=30, what="the worker's walsenders to go")
        conn.close()


def test_migration_ends_chain_1_next_backup_takes_generation_2_and_drops_the_old_slot(
        bin, pitr_db, logical_pg, storage_root, keypair, signing_keys, workers, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    config_id = add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    take_base(bin, ci, slot, storage_root, pub, name)
    w = capture_worker(workers, ci, name, slot, storage_root, keypair)
    chain1 = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "list1.log", path=FOLDER)
    try:
        wait_for(lambda: f"streaming slot {slot} " in workers.log(w), timeout=60, what="the worker to stream")
        xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'chain 1\', 1)')
        chain1.wait_durable(xid, DURABLE_WAIT_S)
        # A Django migration adding a NOT NULL field with a default, then a change under the new definition.
        commit(conn, "ALTER TABLE leave ADD COLUMN grade int NOT NULL DEFAULT 7")
        commit(conn, 'INSERT INTO leave ("Note", n, grade) VALUES (\'under the new column\', 3, 9)')
        wait_for(lambda: "capture stopped" in workers.log(w) and "ended" in workers.log(w), timeout=30,
                 what="the capture to end chain 1")
        wait_for(lambda: slots(admin, name) == {slot: False}, timeout=30,
                 what="the ended chain's slot to stay, idle, until a new base")

        out, stderr = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
        slot2 = f"{slot}_2"
        assert out["ran_as_full"] and out["capture_rebase"]["reason"] == "schema_ended", out
        assert out["capture_rebase"]["slot"] == slot2 and out["capture_rebase"]["old_slot_dropped"] is True, out
        assert f"old capture slot {slot} dropped" in stderr, stderr
        assert slot not in slots(admin, name) and slot2 in slots(admin, name), slots(admin, name)
        rec = [x for x in records(ci, config_id) if x["job_id"] == out["job_id"]][0]
        assert rec["backup_type"] == "FULL" and rec["stats"]["capture_rebase"] == 3, rec

        wait_for(lambda: f"streaming slot {slot2} " in workers.log(w), timeout=30, what="the worker to follow S_2")
        at, fp = moment_after_new_base(bin, conn, ci, name, slot2, storage_root, keypair, signing_keys, tmp_path)
        new = f"{name}_r"
        r = restore_until(bin, out["artifact"], at, secret, conninfo_for(logical_pg, new))
        assert r.returncode == 0, r.stderr
        got = data_fingerprint(conninfo_for(logical_pg, new))
        assert got == fp, "restore --until a moment after the new base differs from the source then"
        with psycopg2.connect(conninfo_for(logical_pg, new)) as c2, c2.cursor() as cur:
            cur.execute("SELECT count(*) FROM leave WHERE grade = 7")
            assert cur.fetchone()[0] > 0, "the migration's default is not in the restore"
        c2.close()
    finally:
        workers.stop_all()
        wait_for(lambda: not any(slots(admin, name).values()), timeout=30, what="the worker's walsenders to go")
        conn.close()


def test_a_healthy_chain_is_never_rebased_and_an_unbased_newer_slot_blocks_another(
        bin, pitr_db, storage_root, keypair, signing_keys, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, _ = keypair
    add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    take_base(bin, ci, slot, storage_root, pub, name)
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'chain 1\', 1)')
    cap.wait_durable(xid, DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()

    # Healthy (slot there, chain not ended, base usable): a FULL request is a plain FULL, no slot created.
    out, stderr = backup(bin, name, "FULL", ci, slot, storage_root, pub)
    assert "capture_rebase" not in out and "CAPTURE REBASE" not in stderr, (out, stderr)
    assert set(slots(admin, name)) == {slot}, slots(admin, name)

    # A slot of generation 2 without a base (a rebase interrupted after creating it) and chain 1 lost: the next
    # backup refuses to create generation 3 (one new generation per needed rebase) and names the slot to drop.
    with conn.cursor() as cur:  # on the captured database, as a rebase makes it
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"{slot}_2",))
    drop_slot(admin, slot)
    r = bin.run("backup", name, "--type", "INCREMENTAL", "--json", *base_args(ci, slot, storage_root, pub))
    assert r.returncode != 0, r.stdout
    assert f"slot {slot}_2 of a newer generation already exists" in r.stderr, r.stderr
    assert f"pg_drop_replication_slot('{slot}_2')" in r.stderr, r.stderr
    assert set(slots(admin, name)) == {f"{slot}_2"}, slots(admin, name)
    conn.close()


def test_the_workers_event_path_takes_the_same_new_base(bin, pitr_db, storage_root, keypair, tmp_path):
    """A backup.requested INCREMENTAL as a worker runs it (`event run`: authority check, ledger, job) on a chain
    whose slot was dropped: the same new base, said in the completion status's stats."""
    name, ci, slot, admin = pitr_db
    pub, _ = keypair
    cid = add_config(ci, name, [])
    take_base(bin, ci, slot, storage_root, pub, name)
    drop_slot(admin, slot)
    ev = flow.fusion_events.encode({
        "v": 1, "type": "backup.requested", "job_id": str(uuid.uuid4()), "ts": flow.now_ms(), "requested_by": None,
        "attempt": 1, "record_id": 434343, "config_id": cid, "config_name": name, "backup_type": "INCREMENTAL",
        "tables": [], "modules": [], "storage_path": FOLDER, "retention_days": 0})
    r, out = flow.run_authorised(bin, ev, tmp_path, "--pg", ci, "--storage-root", str(storage_root), "--public-key",
                                 str(pub), "--capture-slot", slot, "--capture-publication", slot)
    assert out and out["status"] == "SUCCESS", r.stderr
    st = out["stats"]
    assert st["ran_as_full"] == 1 and st["tables"] > 0 and "captured_changes" not in st, st
    assert (st["capture_rebase"], st["capture_generation"], st["capture_old_generation"]) == (1, 2, 1), st
    assert "CAPTURE REBASE" in r.stderr, r.stderr
    assert set(slots(admin, name)) == {f"{slot}_2"}, slots(admin, name)


def test_a_chain_whose_base_full_is_gone_is_rebased_and_its_live_slot_left(
        bin, pitr_db, logical_pg, storage_root, keypair, signing_keys, workers, tmp_path):
    """The base FULL of a live chain removed from the folder (an INCREMENTAL made of its changes still there): the
    next backup takes generation 2, leaves the old slot (alive: only storage says its base is gone), and the daemon
    moves from the chain it was streaming to the new one, writing what it held into the old chain first."""
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    full = take_base(bin, ci, slot, storage_root, pub, name)
    w = capture_worker(workers, ci, name, slot, storage_root, keypair)
    try:
        wait_for(lambda: f"streaming slot {slot} " in workers.log(w), timeout=60, what="the worker to stream")
        commit(conn, 'INSERT INTO leave ("Note", n) VALUES (\'chain 1\', 1)')
        incr, _ = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
        assert incr["captured_changes"]["segments"] >= 1 and not incr["ran_as_full"], incr
        (storage_root / FOLDER / f"{full['job_id']}.fbak").unlink()

        out, stderr = backup(bin, name, "INCREMENTAL", ci, slot, storage_root, pub)
        slot2 = f"{slot}_2"
        rb = out["capture_rebase"]
        assert out["ran_as_full"] and (rb["reason"], rb["slot"], rb["old_slot_dropped"]) == (
            "base_unusable", slot2, False), out
        assert f"old capture slot {slot} left in place" in stderr, stderr
        wait_for(lambda: f"streaming slot {slot2} " in workers.log(w), timeout=30, what="the worker to follow S_2")
        assert set(slots(admin, name)) == {slot, slot2}, slots(admin, name)
        wait_for(lambda: not slots(admin, name)[slot], timeout=30, what="the old slot to be let go")
        at, fp = moment_after_new_base(bin, conn, ci, name, slot2, storage_root, keypair, signing_keys, tmp_path)
        new = f"{name}_r"
        r = restore_until(bin, out["artifact"], at, secret, conninfo_for(logical_pg, new))
        assert r.returncode == 0, r.stderr
        assert data_fingerprint(conninfo_for(logical_pg, new)) == fp
    finally:
        workers.stop_all()
        wait_for(lambda: not any(slots(admin, name).values()), timeout=30, what="the worker's walsenders to go")
        conn.close()
