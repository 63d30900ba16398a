"""Change capture's safety and operation (issue 16; worker/src/daemon/dmn_capture.h, capture/cap_slot.h,
capture/cap_schema.h), with real worker daemons, the real server and real storage.

Proves: two workers configured to capture one database elect one leader (a session advisory lock); SIGKILLing the
leader under a write load makes the other take over within a bounded time, and the chain then holds every
committed transaction exactly once, so applying it to the base equals the source; the slot's lag metrics move
while nobody confirms and come back near zero once caught up; a dropped slot is reported (log naming the slot,
metrics, `status` exiting non-zero, `capture` exiting non-zero) and never recreated; a migration adding a column
ends the chain before the first change under the new definition, also when it ran while no capture was running.

The invalidated ('lost') slot is not provoked here: max_slot_wal_keep_size is a server-wide setting, and lowering
it on the shared test server would invalidate other tests' slots. The same refusal path (cap_slot_usable) is
driven by wal_status 'lost' in tests/c/test_capture_slot.c.
"""
from __future__ import annotations

import re
import signal
import socket
import threading
import time
import urllib.request

import psycopg2
import pytest

from conftest import conninfo_for, wait_for
from test_capture import (DURABLE_WAIT_S, Capture, _no_capture_outlives_its_test, captured_db, commit,  # noqa: F401
                          fingerprint, logical_pg, wait_slot_active)

TAKEOVER_S = 30
LOCK_CLASS = 1178813264  # dmn_capture.c DC_LOCK_CLASS  # SIGKILL to the new leader streaming: lock retry (1 s) + slot release + start, on a busy machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[str, float]:
    """The capture rows of a worker's /metrics: 'name{labels}' -> value (none while the endpoint is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line.startswith("fusion_backup_capture_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def metric(port: int, name: str, **labels) -> float | None:
    for key, value in metrics(port).items():
        if key.split("{")[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    return None


@pytest.fixture
def schema(captured_db, logical_pg):
    """The tables test_capture.fingerprint compares, and a base: a copy of the database made before the slot (what
    the FULL in the slot's snapshot holds). Yields (name, conninfo, slot, connection, base)."""
    name, ci, slot, conn = captured_db
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE full_ident (a int, j json, note text)")
        cur.execute("ALTER TABLE full_ident REPLICA IDENTITY FULL")
        cur.execute("CREATE TABLE ser (id serial PRIMARY KEY, v text)")
        cur.execute('INSERT INTO "Leave" VALUES (1, \'base\', 1)')
    conn.close()  # a template must have no other session
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}_base" TEMPLATE "{name}"')
    admin.close()
    conn = psycopg2.connect(ci)
    conn.autocommit = True
    yield name, ci, slot, conn, f"{name}_base"
    conn.close()
    drop_dbs(logical_pg, [f"{name}_base"])


def drop_dbs(logical_pg, names) -> None:
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        for n in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
    admin.close()


def new_target(logical_pg, base: str, target: str) -> str:
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{target}" TEMPLATE "{base}"')
    admin.close()
    return conninfo_for(logical_pg, target)


def create_slot(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path) -> Capture:
    """The slot and publication, made by `capture --create-slot` (stopped again: the workers take it from here)."""
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "create.log")
    cap.start(create=True)
    cap.wait_created()
    assert cap.stop(signal.SIGTERM) == 0, cap.log.read_text()
    return cap


def start_capture_worker(workers, ci, name, slot, storage_root, keypair, port):
    pub, _ = keypair
    return workers.start(ci, storage_root=storage_root, public_key=pub, role="worker", extra=(
        "--capture-databases", name, "--capture-slot", slot, "--capture-publication", slot,
        "--capture-storage-path", "p", "--capture-flush-s", "1", "--capture-lock-retry-s", "1",
        "--metrics-listen", f"127.0.0.1:{port}"))


class Writer(threading.Thread):
    """Commits small transactions (insert, update, delete) until stopped; keeps the xid of every commit."""

    def __init__(self, ci: str):
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(ci)
        self.conn.autocommit = True
        self.xids: list[int] = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        i = 100
        try:
            while not self.stop.is_set():
                i += 1
                sql = ('INSERT INTO "Leave" VALUES (%s, %s, %s); UPDATE "Leave" SET n = n + 1 WHERE id = 1; '
                       'INSERT INTO ser (v) VALUES (%s)')
                args = (i, f"row {i}", i, f"s{i}")
                if i % 7 == 0:
                    sql, args = 'DELETE FROM "Leave" WHERE id = %s', (i - 3,)
                xid, _ = commit(self.conn, sql, args)
                self.xids.append(xid)
                time.sleep(0.02)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.conn.close()


def _leader_of(workers, procs) -> list:
    return [p for p in procs if "leads the capture" in workers.log(p)]


def test_two_workers_one_leader_and_failover_after_sigkill_loses_and_doubles_nothing(
        bin, schema, logical_pg, storage_root, keypair, signing_keys, workers, tmp_path):
    name, ci, slot, conn, base = schema
    targets = []
    try:
        cap = create_slot(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path)
        ports = [_free_port(), _free_port()]
        # The test holds the capture's advisory lock first: both workers must stand by, nobody streams, and the
        # slot's lag grows in bytes and seconds under the write load.
        holder = psycopg2.connect(ci)
        holder.autocommit = True
        with holder.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_lock({LOCK_CLASS}, hashtext(%s))", (slot,))
        a = start_capture_worker(workers, ci, name, slot, storage_root, keypair, ports[0])
        b = start_capture_worker(workers, ci, name, slot, storage_root, keypair, ports[1])
        for port in ports:
            wait_for(lambda: metric(port, "fusion_backup_capture_slot_lag_bytes", database=name) is not None,
                     timeout=60, what="each worker to poll the slot")
        writer = Writer(ci)
        writer.start()
        time.sleep(4)
        first = metric(ports[0], "fusion_backup_capture_slot_lag_bytes", database=name)
        wait_for(lambda: (metric(ports[0], "fusion_backup_capture_slot_lag_seconds", database=name) or 0) >= 3,
                 timeout=30, what="the lag in seconds to grow while nobody confirms")
        wait_for(lambda: (metric(ports[1], "fusion_backup_capture_slot_lag_bytes", database=name) or 0) > first,
                 timeout=30, what="the lag in bytes to grow while nobody confirms")
        assert [metric(p, "fusion_backup_capture_leader", database=name) for p in ports] == [0, 0]
        assert not _leader_of(workers, [a, b]), "a worker led while another session held the lock"
        with conn.cursor() as cur:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            assert cur.fetchone()[0] is False, "the slot streamed without the lock"
        holder.close()  # the lock goes with its session
        leaders = wait_for(lambda: _leader_of(workers, [a, b]), timeout=TAKEOVER_S, what="one worker to take the lead")
        assert len(leaders) == 1, "two leaders"
        a, b = leaders[0], (b if leaders[0] is a else a)
        ports = ports if a is workers.procs[-2] else ports[::-1]
        assert metric(ports[0], "fusion_backup_capture_leader", database=name) == 1
        assert metric(ports[1], "fusion_backup_capture_leader", database=name) == 0, workers.log(b)
        wait_for(lambda: "streaming slot" in workers.log(a), timeout=TAKEOVER_S, what="the leader to stream")
        with conn.cursor() as cur:  # exactly one walsender, the leader's
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND datname = %s",
                        (name,))
            assert cur.fetchone()[0] == 1

        n0 = len(writer.xids)
        wait_for(lambda: len(writer.xids) >= n0 + 30, timeout=60, what="30 more committed transactions")
        cap.wait_durable(writer.xids[n0 + 10], DURABLE_WAIT_S)  # the leader's segments are in the chain
        assert not _leader_of(workers, [b]), "the standby led while the leader was alive"
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        killed_at = time.monotonic()
        # Nobody confirms until the standby streams: its poll sees the lag grow in bytes and seconds.
        seen = {"bytes": 0.0, "seconds": 0.0}

        def took_over():
            seen["bytes"] = max(seen["bytes"], metric(ports[1], "fusion_backup_capture_slot_lag_bytes", database=name) or 0)
            seen["seconds"] = max(seen["seconds"],
                                  metric(ports[1], "fusion_backup_capture_slot_lag_seconds", database=name) or 0)
            return "streaming slot" in workers.log(b)
        wait_for(took_over, timeout=TAKEOVER_S, interval=0.2, what="the standby to take over and stream")
        takeover_s = time.monotonic() - killed_at
        n_at_takeover = len(writer.xids)
        wait_for(lambda: len(writer.xids) >= n_at_takeover + 30, timeout=60, what="writes after the takeover")
        writer.stop.set()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        last = writer.xids[-1]
        source = fingerprint(ci)
        cap.wait_durable(last, DURABLE_WAIT_S)
        assert metric(ports[1], "fusion_backup_capture_leader", database=name) == 1
        # Caught up: the slot's lag returns near zero (other databases of the shared server write WAL too).
        wait_for(lambda: (metric(ports[1], "fusion_backup_capture_slot_lag_bytes", database=name) or 0) < (16 << 20)
                 and (metric(ports[1], "fusion_backup_capture_slot_lag_seconds", database=name) or 0) < 10,
                 timeout=60, what="the lag to return near zero once caught up")

        segs, txns = cap.chain()
        got = [t["xid"] for t in txns]
        assert len(got) == len(set(got)), "a transaction is in the chain twice"
        assert sorted(got) == sorted(writer.xids), (
            f"lost: {sorted(set(writer.xids) - set(got))[:10]}, foreign: {sorted(set(got) - set(writer.xids))[:10]}")
        commits = [int(t["commit_lsn"].split("/")[0], 16) << 32 | int(t["commit_lsn"].split("/")[1], 16) for t in txns]
        assert commits == sorted(commits), "the chain is not in commit order"
        signers = {s["signer"] for s in segs}
        assert len(signers) == 1  # both workers sign with the worker key; the chain verified across the takeover
        assert takeover_s < TAKEOVER_S
        targets.append(f"{name}_t")
        target = new_target(logical_pg, base, targets[-1])
        end = next(t["end_lsn"] for t in txns if t["xid"] == last)
        r = bin.run("capture", "--apply-into", target, "--until", end, *cap.common(), "--secret-key", str(cap.key))
        assert r.returncode == 0, r.stderr
        assert fingerprint(target) == source, "the applied chain differs from the source"
        print(f"takeover after SIGKILL: {takeover_s:.1f} s; {len(got)} transactions; max lag seen "
              f"{seen['bytes']:.0f} bytes, {seen['seconds']:.1f} s")
    finally:
        workers.stop_all()
        drop_dbs(logical_pg, targets)


def test_dropped_slot_is_reported_loudly_and_never_recreated(bin, schema, logical_pg, storage_root, keypair,
                                                             signing_keys, workers, tmp_path):
    name, ci, slot, conn, base = schema
    cap = create_slot(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path)
    port = _free_port()
    w = start_capture_worker(workers, ci, name, slot, storage_root, keypair, port)
    wait_for(lambda: "streaming slot" in workers.log(w), timeout=60, what="the worker to stream")
    xid, _ = commit(conn, 'INSERT INTO "Leave" VALUES (2, \'x\', 2)')
    cap.wait_durable(xid, DURABLE_WAIT_S)
    # Drop it the way an operator (or a cleanup script) would: end its walsender, then drop it before it is back.
    with conn.cursor() as cur:
        def dropped():
            cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s AND active",
                        (slot,))
            try:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            except psycopg2.errors.ObjectInUse:
                return False
        wait_for(dropped, timeout=30, interval=0.05, what="the slot to be dropped")
    wait_for(lambda: f'replication slot "{slot}" of database "{name}" does not exist' in workers.log(w), timeout=60,
             what="the worker to say the slot is gone")
    log = workers.log(w)
    assert "capture stopped" in log and "new base" in log and "--create-slot" in log, log
    wait_for(lambda: metric(port, "fusion_backup_capture_stopped", database=name) == 1, timeout=30,
             what="the stopped metric")
    wait_for(lambda: metric(port, "fusion_backup_capture_slot_state", database=name, state="missing") == 1,
             timeout=30, what="the slot state metric")
    assert metric(port, "fusion_backup_capture_slot_state", database=name, state="ok") == 0
    # Writes go on; nothing makes a new slot behind the operator's back (that would hide the gap).
    commit(conn, 'INSERT INTO "Leave" VALUES (3, \'after the drop\', 3)')
    time.sleep(3)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert cur.fetchone()[0] == 0, "a slot was recreated"
    assert w.poll() is None, "the worker itself keeps running (its jobs are not affected)"
    # `status` says it and exits non-zero; so does the `capture` command.
    r = bin.run("status", "--capture-databases", name, "--capture-slot", slot, "--pg", ci)
    assert r.returncode != 0, r.stdout + r.stderr
    assert re.search(rf"{name}\s+missing", r.stdout) and "new base" in r.stdout, r.stdout
    r = bin.run("status", "--json", "--capture-databases", name, "--capture-slot", slot, "--pg", ci)
    assert r.returncode != 0 and '"state":"missing"' in r.stdout, r.stdout
    cli = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "after.log")
    cli.start(create=False)
    rc = cli.proc.wait(timeout=60)
    cli.out.close()
    assert rc != 0 and "does not exist" in cli.log.read_text() and "new base" in cli.log.read_text(), cli.log.read_text()


def test_status_shows_a_healthy_slot_and_warns_of_tables_without_primary_key(bin, schema, storage_root, keypair, signing_keys, tmp_path):
    name, ci, slot, conn, base = schema
    cap = create_slot(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path)
    # full_ident can be published (REPLICA IDENTITY FULL) but has no primary key: said, not refused.
    assert 'table "public"."full_ident" has no primary key (REPLICA IDENTITY FULL)' in cap.log.read_text()
    assert '"Leave" has no primary key' not in cap.log.read_text()
    r = bin.run("status", "--json", "--capture-databases", name, "--capture-slot", slot, "--pg", ci)
    assert r.returncode == 0, r.stderr
    assert '"state":"ok"' in r.stdout and '"active":false' in r.stdout and '"lag_bytes":' in r.stdout, r.stdout


def test_migration_adding_a_column_ends_the_chain_before_its_first_change_also_across_a_restart(
        bin, schema, logical_pg, storage_root, keypair, signing_keys, tmp_path):
    """A Django migration adding a NOT NULL field with a default (ADD COLUMN ... DEFAULT, which fills existing rows
    without a single decoded change): the chain ends before the first transaction under the new definition, with
    everything before it applied correctly; the migration runs while the capture is down (SIGKILLed), so only the
    chain's recorded column sets can see it."""
    name, ci, slot, conn, base = schema
    targets = []
    try:
        cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
        cap.start(create=True)
        cap.wait_created()
        wait_slot_active(conn, slot, True)
        t1, _ = commit(conn, 'UPDATE "Leave" SET n = 10 WHERE id = 1')
        cap.wait_durable(t1, DURABLE_WAIT_S)
        before = fingerprint(ci)
        cap.proc.send_signal(signal.SIGKILL)
        cap.proc.wait(timeout=30)
        cap.out.close()
        with conn.cursor() as cur:
            cur.execute('ALTER TABLE "Leave" ADD COLUMN "Extra" int DEFAULT 5 NOT NULL')
            cur.execute('ALTER TABLE "Leave" ALTER COLUMN "Extra" DROP DEFAULT')
        t2, _ = commit(conn, "INSERT INTO ser (v) VALUES ('other table, after the migration')")
        at_t2 = fingerprint(ci)
        commit(conn, 'INSERT INTO "Leave" VALUES (9, \'new shape\', 9, 6)')
        cap.start(create=False)
        rc = cap.proc.wait(timeout=120)
        cap.out.close()
        log = cap.log.read_text()
        assert rc != 0, log
        assert 'table public.Leave' in log and "changed its columns" in log and "new base" in log, log
        _, txns = cap.chain()
        assert [t["xid"] for t in txns] == [t1, t2], "the chain must end exactly before the first new-shape change"
        # The end is recorded: a restart (or another worker) refuses at once instead of continuing past it.
        cap.start(create=False)
        rc = cap.proc.wait(timeout=60)
        cap.out.close()
        log2 = cap.log.read_text()[len(log):]
        assert rc != 0 and "ended before the transaction" in log2, log2
        # Everything before the end applies onto the base and equals the source then.
        targets.append(f"{name}_t")
        target = new_target(logical_pg, base, targets[-1])
        r = bin.run("capture", "--apply-into", target, "--until", txns[-1]["end_lsn"], *cap.common(),
                    "--secret-key", str(cap.key))
        assert r.returncode == 0, r.stderr
        got = fingerprint(target)
        assert got['"Leave"'] == before['"Leave"'] and got["ser"] == at_t2["ser"], (got, before, at_t2)
    finally:
        drop_dbs(logical_pg, targets)


def test_forged_or_removed_schema_file_is_refused(bin, schema, storage_root, keypair, signing_keys, tmp_path):
    """The chain's schema file decides whether a migration is seen: one not signed by a trusted key (here: a byte
    changed, so the signature fails) stops the capture instead of being believed."""
    name, ci, slot, conn, base = schema
    cap = Capture(bin, ci, slot, storage_root, keypair, signing_keys, tmp_path / "capture.log")
    cap.start(create=True)
    cap.wait_created()
    wait_slot_active(conn, slot, True)
    xid, _ = commit(conn, 'UPDATE "Leave" SET n = 11 WHERE id = 1')
    cap.wait_durable(xid, DURABLE_WAIT_S)
    assert cap.stop(signal.SIGTERM) == 0
    path = storage_root / "p" / "capture" / name / slot / "schema.fbcaps"
    text = path.read_text()
    assert text.startswith("fusion-backup capture schema 1\n") and "\nrel " in text, text
    i = text.index("\nrel ") + 6
    path.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    cap.start(create=False)
    rc = cap.proc.wait(timeout=60)
    cap.out.close()
    log = cap.log.read_text()
    assert rc != 0 and "schema.fbcaps" in log and "signature" in log, log
    # Removed altogether: a chain with segments always has one, so its absence is refused too.
    path.unlink()
    cap.start(create=False)
    rc = cap.proc.wait(timeout=60)
    cap.out.close()
    log = cap.log.read_text()[len(log):]
    assert rc != 0 and "has segments but no schema.fbcaps" in log, log
