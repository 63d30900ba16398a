"""Point-in-time recovery (issue 16): `backup --type FULL --capture-base` takes the FULL in the capture slot's
exported snapshot, `capture` streams the change chain from the slot's consistent point, and `restore BASE --until
LSN|TIME --create --pg NEW` rebuilds the FULL and applies the chain up to the target in a temporary database that
is renamed only when everything applied (capture/cap_base.h, cap_apply.h, cmd_restore.c).

Proves, with the real binaries against the real wal_level=logical server:
- the FULL and the stream join without a gap or an overlap: a writer commits without pause while the base is
  taken (before the slot's consistent point, between it and the FULL's end, and after), and every one of its rows
  is in every restore exactly once (its table has no key, so a doubled row would stay doubled);
- under a stream of inserts, updates, deletes (TOASTed values, a key change) and a TRUNCATE, each recorded moment
  restored by its LSN and by its wall time equals the source's fingerprint at that moment, including across a
  SIGKILL of the capture in the middle of the run;
- a target before the base or after the chain's durable end is refused saying the window, and a flipped byte or a
  missing signature in a segment is refused; in every refusal no database appears;
- a dropped slot stops `capture` saying a new base is needed, and a new base never reuses a folder with segments.

The database holds its own tables, not the 463 of the Fusion fixture: each restore rebuilds it, and a dozen
rebuilds of the Fusion schema would take minutes on the shared two cores; the apply's per-type behaviour is
test_capture.py's, and the backup of the Fusion schema is the backup tests'.
"""
from __future__ import annotations

import datetime
import json
import signal
import threading
import time
import uuid

import psycopg2
import pytest

import flow
from conftest import APP_SQL, conninfo_for, psql
from test_backup_command import FOLDER, add_config
from test_capture import (DURABLE_WAIT_S, Capture, _no_capture_outlives_its_test, commit, fingerprint,  # noqa: F401
                          logical_pg, lsn)


@pytest.fixture
def pitr_db(logical_pg: str):
    """A database with the app's tables (its configuration authorises the base FULL) and the test's own tables;
    yields (name, conninfo, slot, admin connection); every database named after it is dropped afterwards."""
    name = f"pitr_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    ci = conninfo_for(logical_pg, name)
    psql(ci, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")
    psql(ci, file=APP_SQL)
    psql(ci, 'CREATE TABLE leave (id serial PRIMARY KEY, "Note" text, n int);'
             "CREATE TABLE joinlog (k int, note text); ALTER TABLE joinlog REPLICA IDENTITY FULL;"
             "CREATE SCHEMA exams; CREATE TABLE exams.sittings (id int PRIMARY KEY, room text);"
             "INSERT INTO leave (\"Note\", n) SELECT 'before ' || g, g FROM generate_series(1, 200) g;"
             "INSERT INTO exams.sittings SELECT g, 'room ' || g FROM generate_series(1, 20) g")
    yield name, ci, name, admin
    with admin.cursor() as cur:
        # A walsender still creating the slot (a command killed while it waited for the consistent point) or
        # streaming from it: ended, so the slot and the database can go.
        cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s AND active",
                    (name,))
        for _ in range(100):
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (name,))
            row = cur.fetchone()
            if not row or not row[0]:
                break
            time.sleep(0.1)
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE %s",
                    (name + "%",))
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
        for (db,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin.close()


def base_args(ci: str, slot: str, storage_root, pub) -> list[str]:
    return ["--pg", ci, "--storage-root", str(storage_root), "--public-key", str(pub), "--sign-key",
            flow.worker_sign_key(), "--capture-slot", slot, "--capture-publication", slot]


def take_base(bin, ci: str, slot: str, storage_root, pub, config: str) -> dict:
    r = bin.run("backup", config, "--type", "FULL", "--capture-base", "--json", *base_args(ci, slot, storage_root, pub))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["capture_base"]["slot"] == slot, out
    return out


def restore_until(bin, artifact: str, target: str, secret, ci_new: str, *extra: str):
    return bin.run("restore", artifact, "--until", target, "--create", "--pg", ci_new, "--secret-key", str(secret),
                   "--json", *extra)


def db_exists(admin, name: str) -> bool:
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def iso_ms(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Writer(threading.Thread):
    """Commits one joinlog row per transaction, without pause, until stopped; remembers each row's commit span."""

    def __init__(self, ci: str):
        super().__init__(daemon=True)
        self.ci, self.stop, self.done = ci, threading.Event(), []

    def run(self) -> None:
        conn = psycopg2.connect(self.ci)
        conn.autocommit = True
        k = 0
        with conn.cursor() as cur:
            while not self.stop.is_set():
                k += 1
                t0 = time.monotonic()
                cur.execute("INSERT INTO joinlog VALUES (%s, 'join')", (k,))
                self.done.append((k, t0, time.monotonic()))
                time.sleep(0.005)
        conn.close()


def load_steps(k: int) -> list[tuple[str, tuple]]:
    """The write load of moment k: a dozen transactions of inserts, updates (one changing a key, one leaving a
    TOASTed value unchanged), deletes, and at k == 3 a TRUNCATE."""
    big = "".join(f"{i:08x}" for i in range(8000 + k))  # TOASTed
    steps = [
        ('INSERT INTO leave ("Note", n) SELECT %s || g, g FROM generate_series(1, 30) g', (f"m{k} ",)),
        ('INSERT INTO leave ("Note", n) VALUES (%s, -1)', (big,)),
        ("UPDATE leave SET n = n + 1000 WHERE n = -1", ()),  # the TOASTed "Note" is not sent ('u')
        ("UPDATE leave SET n = n * 2 WHERE id %% 7 = %s", (k % 7,)),
        ("DELETE FROM leave WHERE id %% 11 = %s", (k % 11,)),
        ("UPDATE exams.sittings SET id = id + 100, room = %s WHERE id = (SELECT min(id) FROM exams.sittings)",
         (f"moved at {k}",)),
        ("INSERT INTO joinlog VALUES (%s, %s), (%s, %s)", (-k, "dup", -k, "dup")),
        ("DELETE FROM joinlog WHERE k = %s", (-(k - 1),)),  # two equal rows, one statement
        ("INSERT INTO leave (\"Note\", n) VALUES (E'tab\\there \\\\ ''q''', NULL)", ()),
    ]
    if k == 3:
        steps.append(("TRUNCATE leave", ()))
        steps.append(('INSERT INTO leave ("Note", n) VALUES (%s, 3)', ("after truncate",)))
    return steps


def test_restore_until_each_lsn_and_time_equals_the_source_then(bin, pitr_db, logical_pg, storage_root, keypair,
                                                                signing_keys, tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    conn = psycopg2.connect(ci)
    conn.autocommit = True

    # 1. The base, taken while a writer commits without pause.
    writer = Writer(ci)
    writer.start()
    time.sleep(0.3)
    b0 = time.monotonic()
    base = take_base(bin, ci, slot, storage_root, pub, name)
    b1 = time.monotonic()
    time.sleep(0.3)
    writer.stop.set()
    writer.join(timeout=30)
    during = [k for k, t0, t1 in writer.done if t0 > b0 and t1 < b1]
    assert len(during) >= 3, f"the writer committed only {len(during)} rows while the base was taken"
    artifact = base["artifact"]

    # 2. Capture, moments under load, a SIGKILL in the middle.
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)
    moments = []  # (lsn, wall time, fingerprint)
    for k in range(1, 6):
        for sql, args in load_steps(k):
            xid, at = commit(conn, sql, args)
        time.sleep(0.02)
        moments.append((at, time.time(), fingerprint(ci)))
        time.sleep(0.05)
        if k == 2:
            cap.wait_durable(xid, DURABLE_WAIT_S)
            cap.proc.kill()
            cap.proc.wait(timeout=30)
            cap.out.close()
            cap.start(create=False)
    last, _ = commit(conn, "INSERT INTO exams.sittings VALUES (999, 'after the last moment')")
    cap.wait_durable(last, DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    conn.close()

    # 3. Every moment, by LSN and by time.
    joined = sorted(k for k, _, _ in writer.done)
    for i, (at, wall, fp) in enumerate(moments):
        for how, target in (("lsn", at), ("time", iso_ms(wall))):
            new = f"{name}_{how}{i}"
            r = restore_until(bin, artifact, target, secret, conninfo_for(logical_pg, new))
            assert r.returncode == 0, f"moment {i + 1} by {how} ({target}): {r.stderr}"
            out = json.loads(r.stdout)
            assert out["until"] == target and out["transactions_applied"] > 0, out
            got = fingerprint(conninfo_for(logical_pg, new))
            assert got == fp, f"restore --until {target} ({how} of moment {i + 1}) differs from the source then"
            with psycopg2.connect(conninfo_for(logical_pg, new)) as c2, c2.cursor() as cur:
                cur.execute("SELECT k FROM joinlog WHERE note = 'join' ORDER BY k")
                assert [x for (x,) in cur.fetchall()] == joined, "the base and the stream overlap or leave a gap"
                cur.execute("SELECT nextval('leave_id_seq') > (SELECT coalesce(max(id), 0) FROM leave)")
                assert cur.fetchone()[0], "the serial's sequence would collide with an applied row"
            c2.close()
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE "{new}" WITH (FORCE)')


def test_restore_until_refuses_targets_outside_the_window_and_forged_segments(bin, pitr_db, logical_pg,
                                                                               storage_root, keypair, signing_keys,
                                                                               tmp_path):
    name, ci, slot, admin = pitr_db
    pub, secret = keypair
    add_config(ci, name, [])
    base = take_base(bin, ci, slot, storage_root, pub, name)
    artifact = base["artifact"]
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log", path=FOLDER)
    cap.start(create=False)
    xid, at = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 1)', ("x",))
    # The window ends at the chain's last commit, and `at` (the server's WAL position after the commit) is past
    # it: one more commit makes it recoverable.
    xid, _ = commit(conn, 'INSERT INTO leave ("Note", n) VALUES (%s, 2)', ("y",))
    cap.wait_durable(xid, DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    conn.close()
    new = f"{name}_r"
    ci_new = conninfo_for(logical_pg, new)

    # verify checks the base with its chain (every segment decrypted); list shows the recoverable window.
    r = bin.run("verify", artifact, "--secret-key", str(secret), "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)["capture_chain"]
    assert v["stream"] == f"{name}/{slot}" and v["segments"] >= 1 and v["transactions"] >= 1, v
    assert v["base_lsn"] == base["capture_base"]["lsn"] and lsn(v["end_lsn"]) >= lsn(at), (v, at)
    listing = ["list", "--storage-root", str(storage_root), "--public-key", str(pub), "--pg", ci, "--capture-slot", slot,
               "--json"]
    r = bin.run(*listing)
    assert r.returncode == 0, r.stderr
    [w] = [x for x in json.loads(r.stdout) if x.get("capture_chain")]
    assert w["capture_chain"] == f"{name}/{slot}" and w["restorable"] and w["end_lsn"] == v["end_lsn"], w
    assert w["base_lsn"] == base["capture_base"]["lsn"], w

    # Outside the window: before the base (LSN and time), after the chain's end (LSN and time).
    for target in ("0/1", "2001-01-01T00:00:00Z", "FFFFFFFF/0", iso_ms(time.time() + 3600)):
        r = restore_until(bin, artifact, target, secret, ci_new)
        assert r.returncode != 0 and "recoverable window" in r.stderr, (target, r.stderr)
        assert not db_exists(admin, new), f"--until {target} was refused but left a database"
    # Not a capture base: a plain FULL.
    plain = bin.run("backup", name, "--type", "FULL", "--json", "--pg", ci, "--storage-root", str(storage_root),
                    "--public-key", str(pub), "--sign-key", flow.worker_sign_key())
    assert plain.returncode == 0, plain.stderr
    r = restore_until(bin, json.loads(plain.stdout)["artifact"], at, secret, ci_new)
    assert r.returncode != 0 and "capture base" in r.stderr, r.stderr
    # An existing database is never the target.
    r = restore_until(bin, artifact, at, secret, ci)
    assert r.returncode != 0 and "new database" in r.stderr, r.stderr
    # The window is right: the same target restores.
    r = restore_until(bin, artifact, at, secret, ci_new)
    assert r.returncode == 0, r.stderr
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{new}" WITH (FORCE)')

    # A forged segment (one flipped byte of ciphertext), then one without its signature: refused, nothing created.
    chain = storage_root / FOLDER / "capture" / name / slot
    [seg] = sorted(chain.glob("cap-*.fbcap"))
    good = seg.read_bytes()
    for bad, why in ((good[:300] + bytes([good[300] ^ 1]) + good[301:], "flipped"), (good[:-80], "unsigned")):
        seg.write_bytes(bad)
        r = restore_until(bin, artifact, at, secret, ci_new)
        assert r.returncode != 0 and not db_exists(admin, new), (why, r.stderr)
        assert "signature" in r.stderr or "truncated" in r.stderr or "authentic" in r.stderr, (why, r.stderr)
        r = bin.run("verify", artifact, "--secret-key", str(secret))
        assert r.returncode != 0 and "change chain" in r.stderr, (why, r.stderr)
        [w] = [x for x in json.loads(bin.run(*listing).stdout) if x.get("capture_chain")]
        assert not w["restorable"] and w["problem"], (why, w)
    seg.write_bytes(good)

    # A dropped slot: capture says a new base is needed; a new base refuses the old folder.
    with admin.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    cap.start(create=False)
    rc = cap.proc.wait(timeout=60)
    cap.out.close()
    log = cap.log.read_text()
    assert rc != 0 and "does not exist" in log and "--capture-base" in log, log
    r = bin.run("backup", name, "--type", "FULL", "--capture-base", *base_args(ci, slot, storage_root, pub))
    assert r.returncode != 0 and "new slot name" in r.stderr, r.stderr
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert cur.fetchone()[0] == 0, "a refused base left a slot behind"


def test_a_slot_left_by_an_interrupted_base_is_named_with_how_to_drop_it(bin, pitr_db, storage_root, keypair):
    """A `backup --capture-base` killed between creating its slot and the end of its FULL (cap_base_end never ran)
    leaves the slot behind, holding WAL. The next base under that slot name is refused before anything is taken,
    the slot is left alone (only the operator knows whether a base of it exists elsewhere), and the error says how
    to drop it."""
    name, ci, slot, admin = pitr_db
    pub, _ = keypair
    add_config(ci, name, [])
    with admin.cursor() as cur:  # what the killed base leaves: a logical slot no FULL used
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    r = bin.run("backup", name, "--type", "FULL", "--capture-base", "--json", *base_args(ci, slot, storage_root, pub))
    assert r.returncode != 0, r.stdout
    assert "interrupted --capture-base" in r.stderr and f"pg_drop_replication_slot('{slot}')" in r.stderr, r.stderr
    assert "--capture-slot NAME" in r.stderr, r.stderr
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert cur.fetchone()[0] == 1, "the refusal dropped a slot it did not create"
    folder = storage_root / FOLDER
    assert not folder.exists() or not list(folder.glob("**/*.fbak")), "a refused base wrote an artifact"
    with psycopg2.connect(ci) as conn, conn.cursor() as cur:  # refused before its BackupRecord was created
        cur.execute("SELECT count(*) FROM backup_archive_backuprecord")
        assert cur.fetchone()[0] == 0
