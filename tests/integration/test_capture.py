"""`fusion-backup capture`: continuous change capture from a logical slot into signed, encrypted change segments
(worker/src/capture/, design notes in cap_pgoutput.h).

Proves, with the real binary against a real wal_level=logical server: every transaction committed while the
capture runs is in the chain exactly once and in commit order, across a SIGKILL of the capture (restarted without
--create-slot) and a terminated walsender connection (the command reconnects by itself); a segment holding a commit
is durable within capture-flush-s plus a margin; SIGTERM writes what is pending and exits 0; the slot's confirmed
position is the chain's end; `capture --list` refuses a chain with a flipped byte or a missing segment.

The server: FB_TEST_PG_LOGICAL when set, else FB_TEST_PG when it runs wal_level=logical (deploy/local/services.sh
configures that), else the test fails saying what to set.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from conftest import conninfo_for

FLUSH_S = 1
# How long a test waits for a commit to reach a durable segment. Generous: CI runs two test files at once on two
# cores, and the RPO is the benchmark's to measure (bench/capture), not a test's. What the tests prove about the
# flush timer is that it fires on its own, without more traffic, well before the 10 s default would.
DURABLE_WAIT_S = 45
DEFAULT_FLUSH_S = 10

# Every capture process a test started: killed at the end of the test whatever happened, so a failed assertion
# never leaves a capture running (it would reconnect to its dropped database forever).
_RUNNING: list = []


@pytest.fixture(autouse=True)
def _no_capture_outlives_its_test():
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def logical_pg() -> str:
    ci = os.environ.get("FB_TEST_PG_LOGICAL")
    if ci:
        return ci
    ci = os.environ.get("FB_TEST_PG")
    if not ci:
        pytest.fail("FB_TEST_PG is not set: run the tests through tests/run.sh, which starts the local services")
    conn = psycopg2.connect(ci)
    with conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        level = cur.fetchone()[0]
    conn.close()
    if level != "logical":
        pytest.fail(f"change capture needs wal_level=logical: FB_TEST_PG runs {level}; set FB_TEST_PG_LOGICAL to a "
                    "logical server's conninfo, or restart the local server after deploy/local/services.sh wrote "
                    "wal_level=logical")
    return ci


@pytest.fixture
def captured_db(logical_pg: str):
    name = f"capture_it_{uuid.uuid4().hex[:10]}"
    slot = name
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    ci = conninfo_for(logical_pg, name)
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE TABLE "Leave" (id int PRIMARY KEY, "Note" text, n int)')
    yield name, ci, slot, conn
    conn.close()
    with admin.cursor() as cur:
        for _ in range(50):  # the walsender of a killed capture may take a moment to go
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if not row or not row[0]:
                break
            time.sleep(0.1)
        # still held (a capture that outlived its test's own stop): end its walsender, then drop the slot
        cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s "
                    "AND active", (slot,))
        for _ in range(100):
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if not row or not row[0]:
                break
            time.sleep(0.1)
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def commit(conn, sql: str, args=()) -> tuple[int, str]:
    """Runs sql in its own transaction; returns (xid, WAL position after the commit)."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT txid_current()")
        xid = cur.fetchone()[0]
        cur.execute(sql, args)
        cur.execute("COMMIT")
        cur.execute("SELECT pg_current_wal_lsn()")
        return xid % (1 << 32), cur.fetchone()[0]


def lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class Capture:
    def __init__(self, bin, ci, slot, storage_root, keypair, signing_keys, log: Path, path: str = "p"):
        self.bin, self.ci, self.slot, self.root, self.path = bin, ci, slot, storage_root, path
        self.pub, self.key = keypair
        self.wpub, self.wkey = signing_keys["worker"]
        self.log = log
        self.proc = None

    def common(self) -> list[str]:
        return ["--pg", self.ci, "--storage-root", str(self.root), "--storage-path", self.path, "--capture-slot", self.slot,
                "--capture-publication", self.slot, "--trusted-signer", str(self.wpub)]

    def start(self, create: bool) -> None:
        args = [self.bin.cli, "capture", *self.common(), "--public-key", str(self.pub), "--sign-key", str(self.wkey),
                "--capture-flush-s", str(FLUSH_S)] + (["--create-slot"] if create else [])
        self.out = open(self.log, "a")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT)
        _RUNNING.append(self.proc)

    def wait_created(self, timeout: float = 240) -> None:
        """Until --create-slot has its consistent point. The slot shows as active from the start of its creation,
        but PostgreSQL reaches the consistent point only when every transaction running anywhere in the cluster at
        that moment has ended (other tests' long backups included); a commit before that point is in the slot's
        snapshot, not in its stream, so a test must not commit what it expects to see streamed before this."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if "created: consistent point" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"capture exited {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"the slot had no consistent point within {timeout} s: {self.log.read_text()}")

    def stop(self, sig) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self.out.close()
        return rc

    def list(self, secret: bool = True) -> subprocess.CompletedProcess:
        args = ["capture", "--list", "--json", *self.common()] + (["--secret-key", str(self.key)] if secret else [])
        return self.bin.run(*args)

    def chain(self) -> tuple[list[dict], list[dict]]:
        r = self.list()
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return [x for x in rows if "segment" in x], [x for x in rows if "xid" in x]

    def wait_durable(self, xid: int, timeout: float) -> float:
        """Seconds until transaction xid is in a durable segment of the chain."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            r = self.list()
            if r.returncode == 0 and any(json.loads(x).get("xid") == xid for x in r.stdout.splitlines() if x.strip()):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"transaction {xid} was not in a durable segment within {timeout} s; log: "
                             f"{self.log.read_text()}")


def wait_slot_active(conn, slot: str, active: bool) -> None:
    with conn.cursor() as cur:
        for _ in range(100):
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row and row[0] == active:
                return
            time.sleep(0.1)
    raise AssertionError(f"slot {slot} did not become {'active' if active else 'inactive'}")


def test_capture_keeps_every_transaction_once_across_kill_and_lost_connection(bin, captured_db, storage_root,
                                                                              keypair, signing_keys, tmp_path):
    name, ci, slot, conn = captured_db
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    cap.wait_created()
    wait_slot_active(conn, slot, True)
    xids = []
    note = "tab\there\nnewline \\ 'q' " + "x" * 5000
    for i in range(20):
        xids.append(commit(conn, 'INSERT INTO "Leave" VALUES (%s, %s, NULL)', (i, note))[0])
    last = commit(conn, 'UPDATE "Leave" SET n = 1 WHERE id < 10')
    xids.append(last[0])
    took = cap.wait_durable(last[0], DURABLE_WAIT_S)
    assert took < DEFAULT_FLUSH_S, f"a commit became durable after {took:.2f} s: capture-flush-s {FLUSH_S} not honoured"

    # A second segment, then SIGKILL with commits not yet flushed: what was pending is not confirmed, so the slot
    # sends it again to the next capture.
    for i in range(20, 25):
        last = commit(conn, 'INSERT INTO "Leave" VALUES (%s, %s, %s)', (i, None, i))
        xids.append(last[0])
    cap.wait_durable(last[0], DURABLE_WAIT_S)
    for i in range(25, 30):
        xids.append(commit(conn, 'INSERT INTO "Leave" VALUES (%s, %s, %s)', (i, None, i))[0])
    assert cap.stop(signal.SIGKILL) == -signal.SIGKILL
    for i in range(30, 35):
        xids.append(commit(conn, 'DELETE FROM "Leave" WHERE id = %s', (i - 30,))[0])
    wait_slot_active(conn, slot, False)
    cap.start(create=False)
    wait_slot_active(conn, slot, True)

    # A lost connection (the walsender terminated, as a server restart would): the command reconnects by itself.
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    for i in range(35, 40):
        xids.append(commit(conn, 'UPDATE "Leave" SET "Note" = %s WHERE id = %s', (f"n{i}", i - 20))[0])
    xids.append(commit(conn, 'TRUNCATE "Leave"')[0])
    last = commit(conn, 'INSERT INTO "Leave" VALUES (1000, %s, 1)', ("end",))
    xids.append(last[0])
    cap.wait_durable(last[0], DURABLE_WAIT_S)  # the reconnect pauses 1 s (doubling) before resuming
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    assert "retrying" in cap.log.read_text(), "the terminated connection was not noticed"

    segs, txns = cap.chain()
    got = [t["xid"] for t in txns]
    assert got == xids, f"chain xids differ from committed ones:\n got  {got}\n want {xids}"
    assert len(segs) >= 3
    for a, b in zip(segs, segs[1:]):
        assert a["end_lsn"] == b["start_lsn"], f"gap or overlap between {a['segment']} and {b['segment']}"
    assert all(t["changes"] >= 1 for t in txns)
    with conn.cursor() as cur:
        cur.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        confirmed = cur.fetchone()[0]
    assert lsn(confirmed) >= lsn(segs[-1]["end_lsn"]), (confirmed, segs[-1]["end_lsn"])

    # A flipped byte in a segment, then a missing segment: --list refuses the chain and says why.
    folder = storage_root / "p" / "capture" / name / slot
    victim = folder / segs[1]["segment"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    r = cap.list(secret=False)
    assert r.returncode != 0 and "bad signature" in r.stderr, r.stderr
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    assert cap.list().returncode == 0
    victim.rename(folder / "set-aside")
    r = cap.list(secret=False)
    assert r.returncode != 0 and "gap" in r.stderr, r.stderr


def test_capture_without_slot_says_how_to_create_one(bin, captured_db, storage_root, keypair, signing_keys, tmp_path):
    name, ci, slot, conn = captured_db
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=False)
    rc = cap.proc.wait(timeout=30)
    cap.out.close()
    log = cap.log.read_text()
    assert rc != 0 and "--create-slot" in log and slot in log, log


def fingerprint(ci: str) -> dict:
    """Each table's rows as one hash (order-independent), for every ordinary table outside the system schemas:
    equal fingerprints mean equal contents."""
    conn = psycopg2.connect(ci)
    out = {}
    with conn.cursor() as cur:
        cur.execute("SELECT CASE n.nspname WHEN 'public' THEN format('%I', c.relname) ELSE format('%I.%I', "
                    "n.nspname, c.relname) END FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname NOT "
                    "LIKE 'pg\\_%' ORDER BY 1")
        for (t,) in cur.fetchall():
            cur.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")
            out[t] = cur.fetchone()
    conn.close()
    return out


def test_apply_until_each_moment_equals_the_source_then(bin, captured_db, logical_pg, storage_root, keypair,
                                                         signing_keys, tmp_path):
    name, ci, slot, conn = captured_db
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE full_ident (a int, j json, note text)")
        cur.execute("ALTER TABLE full_ident REPLICA IDENTITY FULL")
        cur.execute("CREATE TABLE ser (id serial PRIMARY KEY, v text)")
        cur.execute("INSERT INTO ser (v) VALUES ('base')")
        cur.execute('INSERT INTO "Leave" VALUES (1, %s, 1), (2, NULL, 2)', ("before\tthe slot",))
        cur.execute("INSERT INTO full_ident VALUES (1, '{\"k\": 1}', 'dup'), (1, '{\"k\": 1}', 'dup')")
    conn.close()
    # The base: the database as the FULL in the slot's snapshot would hold it (no write until the slot exists).
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    base = f"{name}_base"
    targets = [base]
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{base}" TEMPLATE "{name}"')
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    cap.wait_created()
    wait_slot_active(conn, slot, True)
    big = "".join(f"{i:08x}" for i in range(20000))  # 160 kB, TOASTed; later updates leave it unchanged ('u')
    steps = [
        ('INSERT INTO "Leave" VALUES (3, %s, NULL), (4, %s, 4); INSERT INTO ser (v) VALUES (%s), (%s)',
         (big, "line\nbreak \\ 'q'", "s2", "s3")),
        ('UPDATE "Leave" SET n = 40 WHERE id = 3; DELETE FROM "Leave" WHERE id = 1', ()),
        ("DELETE FROM full_ident WHERE note = 'dup'", ()),  # two equal rows: one statement deletes both
        ('UPDATE "Leave" SET id = 30 WHERE id = 3', ()),
        ("INSERT INTO full_ident VALUES (2, '[1, 2]', NULL); UPDATE full_ident SET note = 'x' WHERE a = 2", ()),
        ('TRUNCATE "Leave"', ()),
        ('INSERT INTO "Leave" VALUES (7, \'after truncate\', 7)', ()),
    ]
    moments = []
    for sql, args in steps:
        xid, _ = commit(conn, sql, args)
        moments.append((xid, fingerprint(ci)))
    cap.wait_durable(moments[-1][0], DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    _, txns = cap.chain()
    end_of = {t["xid"]: t["end_lsn"] for t in txns}
    assert [t["xid"] for t in txns] == [m[0] for m in moments]
    base_fp = fingerprint(conninfo_for(logical_pg, base))
    try:
        for k, (xid, fp) in enumerate(moments):
            target = f"{name}_t{k}"
            targets.append(target)
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{target}" TEMPLATE "{base}"')
            r = bin.run("capture", "--apply-into", conninfo_for(logical_pg, target), "--until", end_of[xid],
                        *cap.common(), "--secret-key", str(cap.key))
            assert r.returncode == 0, r.stderr
            assert f"applied {k + 1} transactions" in r.stdout, r.stdout
            assert fingerprint(conninfo_for(logical_pg, target)) == fp, f"restore --until moment {k + 1} differs"
            # The serial column's sequence moved past the applied rows: the next insert does not collide.
            t = psycopg2.connect(conninfo_for(logical_pg, target))
            with t.cursor() as cur:
                cur.execute("SELECT nextval('ser_id_seq') > (SELECT max(id) FROM ser)")
                assert cur.fetchone()[0], f"moment {k + 1}: ser_id_seq would collide"
            t.close()
        # Beyond the chain's end: refused before the target is touched.
        target = f"{name}_beyond"
        targets.append(target)
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{target}" TEMPLATE "{base}"')
        r = bin.run("capture", "--apply-into", conninfo_for(logical_pg, target), "--until", "FFFFFFFF/0",
                    *cap.common(), "--secret-key", str(cap.key))
        assert r.returncode != 0 and "nothing applied" in r.stderr, r.stderr
        assert fingerprint(conninfo_for(logical_pg, target)) == base_fp
        # Onto a database that is not the base: the transaction that finds no row is rolled back whole, the ones
        # before it stay, and the error names the change.
        target = f"{name}_wrong"
        targets.append(target)
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{target}" TEMPLATE "{base}"')
        wrong = psycopg2.connect(conninfo_for(logical_pg, target))
        wrong.autocommit = True
        with wrong.cursor() as cur:
            cur.execute('DELETE FROM "Leave" WHERE id = 1')
        wrong.close()
        r = bin.run("capture", "--apply-into", conninfo_for(logical_pg, target), "--until", end_of[moments[1][0]],
                    *cap.common(), "--secret-key", str(cap.key))
        assert r.returncode != 0 and "matched 0 rows" in r.stderr and "1 transactions applied" in r.stderr, r.stderr
        got = fingerprint(conninfo_for(logical_pg, target))
        check = psycopg2.connect(conninfo_for(logical_pg, target))
        with check.cursor() as cur:
            cur.execute('SELECT id, n FROM "Leave" ORDER BY id')
            rows = cur.fetchall()
        check.close()
        assert rows == [(2, 2), (3, None), (4, 4)], rows  # T1 applied, T2 (update 3, delete 1) not at all
        assert got["full_ident"] == base_fp["full_ident"]
    finally:
        with admin.cursor() as cur:
            for t in targets:
                cur.execute(f'DROP DATABASE IF EXISTS "{t}" WITH (FORCE)')
        admin.close()


def test_create_slot_refuses_tables_without_replica_identity(bin, captured_db, storage_root, keypair, signing_keys,
                                                              tmp_path):
    """A FOR ALL TABLES publication over a table with no replica identity makes PostgreSQL refuse every UPDATE and
    DELETE on it: --create-slot names such tables and creates nothing, so the application's writes keep working."""
    name, ci, slot, conn = captured_db
    with conn.cursor() as cur:
        cur.execute('CREATE TABLE "No Key" (a int, b text)')
        cur.execute('INSERT INTO "No Key" VALUES (1, \'x\')')
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    rc = cap.proc.wait(timeout=30)
    cap.out.close()
    log = cap.log.read_text()
    assert rc != 0 and '"public"."No Key"' in log and "REPLICA IDENTITY FULL" in log, log
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_publication")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert cur.fetchone()[0] == 0
        cur.execute('UPDATE "No Key" SET b = \'y\'')  # still allowed: nothing was published
        cur.execute('ALTER TABLE "No Key" REPLICA IDENTITY FULL')
    cap.start(create=True)
    cap.wait_created()
    wait_slot_active(conn, slot, True)
    xid, _ = commit(conn, 'UPDATE "No Key" SET b = \'z\'')
    cap.wait_durable(xid, DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0
