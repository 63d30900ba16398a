"""Point-in-time recovery under write load, with the capture as deployed (issue 16, its first "Done when" item).

Proves, with the real binaries, worker daemons capturing the database (two at a time, daemon/dmn_capture.h), bases
taken with `backup CONFIG --type FULL --capture-base` under the load, and the real wal_level=logical server:
while two writers commit without pause for the whole run (inserts, updates that change a key or leave a TOASTed
value unchanged, deletes, one TRUNCATE, in a table with a primary key and in two without one, REPLICA IDENTITY
FULL), across, in this order, a SIGKILL of the leading capture worker (the standby takes over), PostgreSQL
stopped with -m fast and restarted, then stopped with -m immediate (a crash: recovery) and restarted, a migration
adding a column (ADD COLUMN ... NOT NULL DEFAULT, which ends chain 1: capture/cap_schema.h) followed by the
configuration's next backup (an INCREMENTAL request) running as a FULL that takes the next slot generation's base
and drops chain 1's slot, with the running workers following the new slot by themselves, and on that new chain a SIGKILL of the leader with a crash
of the server right after, `restore BASE --until M --create` of each of six moments M (three by LSN, three by
wall time) into a new database gives exactly the source's fingerprint at M, and its transaction log holds exactly
the ids of the transactions committed before M, each once: no transaction lost, none applied twice. Moments after
the migration restore from the new base. The two chains hold no transaction twice. (Checked by hand that it
fails: one expected fingerprint changed fails on that moment's tables; a restore that applies every 40th
transaction twice fails naming the doubled id.)

How a moment is exact under concurrent load. Every writer transaction inserts one row with a unique id into
`txlog` (no key, so a transaction applied twice would leave its id twice). To record a moment the writers are
paused between transactions (Gate), each with the outcome of its last transaction known (a commit whose answer
was lost to a restart is looked up by its id after reconnecting). While they wait, nothing of this database
commits: the fingerprint, the ids, then pg_current_wal_lsn() and the wall time are read. Every transaction
committed before the pause has its commit record ending at or before that LSN (restore --until LSN applies commits
ending at or before it, cap_apply.h) and a commit time before that wall time (it returned before the pause); every
later one starts its commit record after the LSN and commits after the time (the writers resume only after both
are read, with a few milliseconds' margin for the millisecond resolution of the time given to --until). A
REPEATABLE READ snapshot would not do: visibility follows the order in which commits leave the proc array, which
may differ from the order of their commit records, so a snapshot has no exact LSN.

What the restarts exercise. PostgreSQL 15 writes a logical slot's confirmed position to disk only when its
restart_lsn or catalog_xmin moves too (LogicalConfirmReceivedLocation), so after each restart here, fast or
immediate, the server's log says "Streaming transactions committing after" an LSN far behind what the capture
had confirmed (often the base's consistent point): the server would send again everything the chain already
holds. What keeps each transaction once is the capture starting at the chain's end in storage (cap_capture.h),
and what keeps none lost is that it confirms only durable segments; the SIGKILL exercises the same with the
transactions the killed leader held but had not written.

What the writers' bookkeeping is checked against: at each moment the source's txlog ids must equal the set of
ids the writers know committed, so the expected ids of a restore are the database's own, not a guess.

The server restarts need the local server to itself: with FB_TEST_RESTART_PG=1 (tests/run.sh runs this file
alone with it) the test stops and starts it through deploy/local/services.sh, the way the other crash test does.
Otherwise (a server shared with other tests) each restart is replaced by ending every session of the test's
database, the walsender included (pg_terminate_backend), which tests the reconnects but not the server's
recovery; the test says so in its output.

The new base is one function (new_base_by_itself): no operator step, no worker restart (capture/cap_rebase.h).
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

import flow
from conftest import APP_SQL, REPO, conninfo_for, psql, wait_for
from test_backup_command import FOLDER, add_config
from test_capture import (DURABLE_WAIT_S, Capture, _no_capture_outlives_its_test, fingerprint,  # noqa: F401
                          logical_pg)

WRITERS = 2
STEP = 60          # writer transactions between two events of the run (about 1 s of load on a quiet machine)
TAKEOVER_S = 60    # a capture streaming again after a kill or a restart (lock retry 1 s, back-off, a busy machine)
BIG = "".join(f"{i:06x}" for i in range(700))  # 4.2 kB, STORAGE EXTERNAL: TOASTed out of line, uncompressed
ID_STRIDE = 10_000_000


def iso_ms(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
def load_db(logical_pg: str):
    """A database with the app's tables (its configuration authorises the bases) and the load's tables; yields
    (name, conninfo). Every slot and database named after it is dropped afterwards (a fresh connection: the server
    may have been restarted)."""
    name = f"pitrload_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(logical_pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    ci = conninfo_for(logical_pg, name)
    psql(ci, "CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")
    psql(ci, file=APP_SQL)
    psql(ci, "CREATE TABLE items (id bigserial PRIMARY KEY, writer int NOT NULL, val int NOT NULL, note text);"
             "ALTER TABLE items ALTER COLUMN note SET STORAGE EXTERNAL;"
             "CREATE TABLE nokey (writer int, k int, v text); ALTER TABLE nokey REPLICA IDENTITY FULL;"
             "CREATE TABLE txlog (id bigint NOT NULL, writer int NOT NULL, op text NOT NULL);"
             "ALTER TABLE txlog REPLICA IDENTITY FULL;"
             f"INSERT INTO items (writer, val, note) SELECT g % {WRITERS}, g, 'seed ' || g "
             "FROM generate_series(1, 60) g;"
             f"INSERT INTO nokey SELECT g % {WRITERS}, g % 10, 'seed' FROM generate_series(1, 40) g")
    yield name, ci
    admin = wait_for(lambda: _connect(logical_pg), timeout=60, what="the server after the test")
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE %s "
                    "AND active", (name + "%",))
        for _ in range(100):
            cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE %s AND active", (name + "%",))
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.1)
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE %s",
                    (name + "%",))
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
        for (db,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin.close()


def _connect(ci: str):
    try:
        conn = psycopg2.connect(ci, connect_timeout=5)
    except psycopg2.OperationalError:
        return None
    conn.autocommit = True
    return conn


def query(ci: str, sql: str, args=None) -> list[tuple]:
    conn = wait_for(lambda: _connect(ci), timeout=60, what="a connection")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


# --- the writers --------------------------------------------------------------------------------------------------

class Gate:
    """Lets the test hold every writer between two of its transactions (each outcome known) and release them."""

    def __init__(self, writers: int):
        self.cond = threading.Condition()
        self.writers, self.waiting, self.hold = writers, 0, False

    def checkpoint(self) -> None:  # a writer, between transactions
        with self.cond:
            if not self.hold:
                return
            self.waiting += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: not self.hold)
            self.waiting -= 1

    def pause(self, alive, timeout: float = 60) -> None:
        with self.cond:
            self.hold = True
            ok = self.cond.wait_for(lambda: self.waiting == self.writers or not alive(), timeout=timeout)
        if not ok or not alive():
            self.resume()
            raise AssertionError("the writers did not all pause between transactions")

    def resume(self) -> None:
        with self.cond:
            self.hold = False
            self.cond.notify_all()


class Writer(threading.Thread):
    """Commits transactions without pause until stopped, reconnecting when the server goes away. Every transaction
    inserts its id into txlog; `committed` is the ids known committed. An id whose COMMIT got no answer (the
    connection died) is in doubt until the writer, reconnected, finds whether txlog holds it."""

    def __init__(self, ci: str, w: int, gate: Gate, flags: dict):
        super().__init__(daemon=True, name=f"writer{w}")
        self.ci, self.w, self.gate, self.flags = ci, w, gate, flags
        self.stop = threading.Event()
        self.committed: list[int] = []
        self.lock = threading.Lock()
        self.n, self.in_doubt, self.in_doubt_op, self.conn = 0, None, None, None
        self.errors = 0           # transactions that failed (a restart, a terminated session)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.conn is None and not self._reconnect():
                    continue
                if self.in_doubt is not None and not self._resolve():
                    continue
                self.gate.checkpoint()
                if not self.stop.is_set():
                    self._one()
                time.sleep(0.01)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            if self.conn is not None:
                self.conn.close()

    def _reconnect(self) -> bool:
        self.conn = _connect(self.ci)
        if self.conn is None:
            time.sleep(0.2)
        return self.conn is not None

    def _drop(self) -> None:
        try:
            self.conn.close()
        except psycopg2.Error:
            pass
        self.conn = None

    def _resolve(self) -> bool:
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM txlog WHERE id = %s", (self.in_doubt,))
                n = cur.fetchone()[0]
        except psycopg2.Error:
            self._drop()
            return False
        assert n in (0, 1), f"txlog holds id {self.in_doubt} {n} times in the source"
        if n == 1:
            self._committed(self.in_doubt, self.in_doubt_op)
        self.in_doubt = None
        return True

    def statements(self, n: int) -> list[tuple[str, tuple]]:
        w, k = self.w, n % 10
        if self.flags.get("truncate") == w:  # until one commits (_committed)
            return [("TRUNCATE items", ())]
        op = n % 8
        extra = ", extra" if self.flags.get("migrated") else ""
        if op == 0:
            return [(f"INSERT INTO items (writer, val, note{extra}) VALUES (%s, %s, %s{', %s' if extra else ''}), "
                     f"(%s, %s, NULL{', %s' if extra else ''})",
                     (w, n, f"i{n}", *((n,) if extra else ()), w, -n, *((n,) if extra else ())))]
        if op == 1:  # a TOASTed value
            return [("INSERT INTO items (writer, val, note) VALUES (%s, %s, %s)", (w, n, f"{n}:{BIG}"))]
        if op == 2:  # the TOASTed notes are left unchanged (pgoutput's 'u')
            return [("UPDATE items SET val = val + 1" + (", extra = extra + 1" if extra else "") +
                     " WHERE id IN (SELECT id FROM items WHERE writer = %s ORDER BY id DESC LIMIT 3)", (w,))]
        if op == 3:  # a key change
            return [("UPDATE items SET id = nextval('items_id_seq'), val = -val WHERE id = "
                     "(SELECT min(id) FROM items WHERE writer = %s)", (w,))]
        if op == 4:
            return [("DELETE FROM items WHERE id IN (SELECT id FROM items WHERE writer = %s ORDER BY id "
                     "LIMIT 1 OFFSET 1)", (w,))]
        if op == 5:  # two equal rows in a table without a key
            return [("INSERT INTO nokey VALUES (%s, %s, 'dup'), (%s, %s, 'dup')", (w, k, w, k))]
        if op == 6:
            return [("UPDATE nokey SET v = %s WHERE writer = %s AND k = %s", (f"u{n}", w, k))]
        return [("DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE writer = %s AND k = %s LIMIT 1)",
                 (w, k))]

    def _one(self) -> None:
        self.n += 1
        txid = self.w * ID_STRIDE + self.n
        stmts = self.statements(self.n)
        op = "truncate" if stmts[0][0].startswith("TRUNCATE") else str(self.n % 8)
        try:
            with self.conn.cursor() as cur:
                cur.execute("BEGIN")
                for sql, args in stmts:
                    cur.execute(sql, args)
                cur.execute("INSERT INTO txlog VALUES (%s, %s, %s)", (txid, self.w, op))
                self.in_doubt, self.in_doubt_op = txid, op
                cur.execute("COMMIT")
        except psycopg2.Error:
            self.errors += 1
            if self.in_doubt is None:  # failed before COMMIT was sent: rolled back, whatever the connection did
                try:
                    with self.conn.cursor() as cur:
                        cur.execute("ROLLBACK")
                except psycopg2.Error:
                    self._drop()
            else:
                self._drop()
            return
        self._committed(txid, op)
        self.in_doubt = None

    def _committed(self, txid: int, op: str) -> None:
        with self.lock:
            self.committed.append(txid)
        if op == "truncate":
            self.flags["truncate"] = None

    def ids(self) -> list[int]:
        with self.lock:
            return list(self.committed)


class Load:
    """The writers, the moments recorded under them, and the events of the run."""

    def __init__(self, ci: str):
        self.ci, self.flags = ci, {"truncate": None, "migrated": False}
        self.gate = Gate(WRITERS)
        self.writers = [Writer(ci, w, self.gate, self.flags) for w in range(WRITERS)]
        self.moments: list[dict] = []

    def start(self) -> None:
        for w in self.writers:
            w.start()

    def alive(self) -> bool:
        return all(w.is_alive() and w.error is None for w in self.writers)

    def check(self) -> None:
        for w in self.writers:
            assert w.error is None, f"{w.name}: {w.error!r}"
            assert w.is_alive(), f"{w.name} stopped"

    def committed(self) -> int:
        return sum(len(w.committed) for w in self.writers)

    def wait_commits(self, k: int, what: str, timeout: float = 90) -> None:
        n0 = self.committed()
        wait_for(lambda: self.check() or self.committed() >= n0 + k, timeout=timeout, interval=0.05,
                 what=f"{k} more writer transactions ({what})")

    def moment(self, label: str, by: str, base: str) -> dict:
        """Records (LSN, wall time, fingerprint, txlog ids) between writer transactions (the module docstring says
        why this is exact)."""
        self.gate.pause(self.alive)
        try:
            fp = fingerprint(self.ci)
            rows = query(self.ci, "SELECT id, count(*) FROM txlog GROUP BY id")
            (at,), = query(self.ci, "SELECT pg_current_wal_lsn()::text")
            wall = time.time()
            known = sorted(i for w in self.writers for i in w.ids())
            time.sleep(0.005)
        finally:
            self.gate.resume()
        ids = sorted(i for i, _ in rows)
        assert all(c == 1 for _, c in rows), f"{label}: an id twice in the source's txlog"
        assert ids == known, (f"{label}: the writers' bookkeeping differs from the source: only in the source "
                              f"{sorted(set(ids) - set(known))[:5]}, only known {sorted(set(known) - set(ids))[:5]}")
        m = {"label": label, "by": by, "base": base, "lsn": at, "time": iso_ms(wall), "fp": fp, "ids": ids}
        self.moments.append(m)
        return m

    def stop(self) -> None:
        self.gate.resume()
        for w in self.writers:
            w.stop.set()
        for w in self.writers:
            w.join(timeout=60)
        for w in self.writers:
            assert w.error is None, f"{w.name}: {w.error!r}"


# --- the capture as deployed --------------------------------------------------------------------------------------

class Deployment:
    """Base FULLs taken with `fusion-backup backup CONFIG --type FULL --capture-base` and worker daemons capturing
    the database under the current slot (capture-databases, capture-slot), as test_capture_safety starts them."""

    def __init__(self, bin, workers, name: str, ci: str, storage_root: Path, keypair, signing_keys, tmp_path: Path):
        self.bin, self.workers, self.name, self.ci = bin, workers, name, ci
        self.root, self.keypair, self.signing_keys, self.tmp = storage_root, keypair, signing_keys, tmp_path
        self.slot, self.family, self.procs, self.bases = None, None, [], []

    def take_base(self, slot: str) -> str:
        pub, _ = self.keypair
        r = self.bin.run("backup", self.name, "--type", "FULL", "--capture-base", "--json", "--pg", self.ci,
                         "--storage-root", str(self.root), "--public-key", str(pub), "--sign-key",
                         flow.worker_sign_key(), "--capture-slot", slot, "--capture-publication", self.name)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["capture_base"]["slot"] == slot, out
        self.slot = slot
        self.family = self.family or slot
        self.bases.append((slot, out["artifact"]))
        return out["artifact"]

    def base(self) -> str:
        """The artifact of the base the capture runs on now."""
        return self.bases[-1][1]

    def start_worker(self):
        pub, _ = self.keypair
        p = self.workers.start(self.ci, storage_root=self.root, public_key=pub, role="worker", extra=(
            "--capture-databases", self.name, "--capture-slot", self.family, "--capture-publication", self.name,
            "--capture-storage-path", FOLDER, "--capture-flush-s", "1", "--capture-lock-retry-s", "1"))
        self.procs.append(p)
        return p

    def stop_workers(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait(timeout=60)
        self.procs = []

    def streamer(self):
        """The worker whose walsender streams the slot now (its application_name names it), or None."""
        rows = query(self.ci, "SELECT a.application_name FROM pg_replication_slots s JOIN pg_stat_activity a ON "
                              "a.pid = s.active_pid WHERE s.slot_name = %s", (self.slot,))
        if not rows or not rows[0][0].startswith("fusion-backup capture w"):
            return None
        p = self.workers.procs[int(rows[0][0].rsplit("w", 1)[1])]
        return p if p.poll() is None else None

    def wait_streaming(self, not_by=None):
        return wait_for(lambda: (lambda p: p if p is not None and p is not not_by else None)(self.streamer()),
                        timeout=TAKEOVER_S, interval=0.2, what=f"a worker to stream slot {self.slot}")

    def capture(self, slot: str) -> Capture:
        """The `capture` command's view of slot's chain (capture --list), for waiting and listing only."""
        log = self.tmp / f"list-{slot}.log"
        log.touch()  # Capture reports its log on a failure; nothing writes it here
        return Capture(self.bin, self.ci, slot, self.root, self.keypair, self.signing_keys, log, path=FOLDER)

    def log(self) -> str:
        return "".join(self.workers.log(p) for p in self.workers.procs)


def new_base_by_itself(dep: Deployment) -> str:
    """After a migration ended the chain: the configuration's next backup (here an INCREMENTAL, as a schedule
    would request) runs as a FULL that takes the next slot generation's base (capture/cap_rebase.h,
    job/job_rebase.h), drops chain 1's slot (ended by a migration, it would hold WAL forever), and the running
    workers follow the new slot by themselves: no restart, no new setting. Returns the new base's artifact."""
    wait_for(lambda: "capture stopped: chain" in dep.log(), timeout=DURABLE_WAIT_S,
             what="the capture to say the migration ended its chain")
    old, new = dep.slot, f"{dep.family}_2"
    pub, _ = dep.keypair
    r = dep.bin.run("backup", dep.name, "--type", "INCREMENTAL", "--json", "--pg", dep.ci,
                    "--storage-root", str(dep.root), "--public-key", str(pub), "--sign-key", flow.worker_sign_key(),
                    "--capture-slot", dep.family, "--capture-publication", dep.name)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rb = out.get("capture_rebase") or {}
    assert out.get("ran_as") == "FULL" and (rb.get("slot"), rb.get("old_slot"), rb.get("old_slot_dropped")) == \
        (new, old, True), out
    assert "CAPTURE REBASE" in r.stderr, r.stderr
    (left,), = query(dep.ci, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (old,))
    assert left == 0, f"chain 1's slot {old} was not dropped after the new base"
    dep.slot = new
    dep.bases.append((new, out["artifact"]))
    dep.wait_streaming()
    return out["artifact"]


# --- PostgreSQL restarts ------------------------------------------------------------------------------------------

def restart_pg(mode: str, name: str, ci: str) -> str:
    """Stops PostgreSQL with `pg_ctl stop -m mode` and starts it again (deploy/local/services.sh, which knows the
    data directory, pg_ctl and the cluster's OS user), while the writers and the capture keep trying. Without
    FB_TEST_RESTART_PG=1 every session of the database is ended instead. Returns what was done."""
    if os.environ.get("FB_TEST_RESTART_PG") != "1":
        query(ci, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                  "pg_backend_pid()", (name,))
        return f"sessions of {name} terminated (FB_TEST_RESTART_PG is not 1: no {mode} restart)"
    (before,), = query(ci, "SELECT pg_postmaster_start_time()")
    services = str(REPO / "deploy/local/services.sh")
    r = subprocess.run([services, "stop", "pg"], capture_output=True, text=True,
                       env={**os.environ, "FB_PG_STOP_MODE": mode})
    assert r.returncode == 0, f"services.sh stop pg ({mode}): {r.stdout}{r.stderr}"
    r = subprocess.run([services, "start", "pg"], capture_output=True, text=True)
    assert r.returncode == 0, f"services.sh start pg: {r.stdout}{r.stderr}"
    (after,), = query(ci, "SELECT pg_postmaster_start_time()")
    assert after > before, "the server was not restarted"
    return f"PostgreSQL restarted (-m {mode})"


# --- the test -----------------------------------------------------------------------------------------------------

def restore_and_compare(bin, logical_pg: str, name: str, m: dict, secret) -> int:
    """restore --until the moment from the base it was recorded on; the new database must hold exactly the moment's
    txlog ids, each once, and equal its fingerprint. Returns how many transactions the restore applied."""
    artifact = m["base"]
    target = m["lsn"] if m["by"] == "lsn" else m["time"]
    new = f"{name}_{m['label'].split()[0]}"
    ci_new = conninfo_for(logical_pg, new)
    r = bin.run("restore", artifact, "--until", target, "--create", "--pg", ci_new, "--secret-key", str(secret),
                "--json")
    assert r.returncode == 0, f"restore --until {target} ({m['label']}): {r.stderr}"
    out = json.loads(r.stdout)
    rows = query(ci_new, "SELECT id, count(*) FROM txlog GROUP BY id")
    doubled = sorted(i for i, c in rows if c > 1)
    got = sorted(i for i, _ in rows)
    lost, extra = sorted(set(m["ids"]) - set(got)), sorted(set(got) - set(m["ids"]))
    assert not doubled, f"{m['label']}: transactions applied twice: {doubled[:10]}"
    assert not lost and not extra, (f"{m['label']} (--until {target}): transactions lost {lost[:10]} "
                                    f"({len(lost)}), applied after the moment {extra[:10]} ({len(extra)})")
    got_fp = fingerprint(ci_new)
    diff = sorted(t for t in set(got_fp) | set(m["fp"]) if got_fp.get(t) != m["fp"].get(t))
    assert not diff, f"{m['label']} (--until {target}): restored tables differ from the source then: {diff}"
    query(logical_pg, f'DROP DATABASE "{new}" WITH (FORCE)')
    return out["transactions_applied"]


def test_restore_until_each_moment_under_load_across_kill_restarts_and_migration(
        bin, load_db, logical_pg, storage_root, keypair, signing_keys, workers, tmp_path):
    name, ci = load_db
    _, secret = keypair
    add_config(ci, name, [])
    dep = Deployment(bin, workers, name, ci, storage_root, keypair, signing_keys, tmp_path)
    load = Load(ci)
    events, t0 = [], time.monotonic()

    def event(what: str) -> None:
        events.append(f"{time.monotonic() - t0:6.1f} s  {what} (writers: {load.committed()} committed)")

    try:
        # The base is taken under the load; two workers capture its slot, one leads.
        load.start()
        load.wait_commits(10, "before the base")
        dep.take_base(name)
        event("base 1 taken")
        for _ in range(WRITERS):
            dep.start_worker()
        first = dep.wait_streaming()
        load.wait_commits(STEP, "after the capture started")
        load.moment("m1 first", "lsn", dep.base())

        # SIGKILL the leader: the standby takes over; a replacement worker is started, as a supervisor would.
        load.wait_commits(STEP // 2, "before the kill")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        event("leader SIGKILLed")
        dep.start_worker()
        dep.wait_streaming(not_by=first)
        event("standby streams")
        load.flags["truncate"] = 0
        wait_for(lambda: load.check() or load.flags["truncate"] is None, timeout=60, what="the TRUNCATE")
        load.wait_commits(STEP, "after the takeover and the TRUNCATE")
        load.moment("m2 after-kill-and-truncate", "time", dep.base())

        # PostgreSQL stopped fast, then immediate (a crash), each while the writers and the capture keep trying.
        for mode, label in (("fast", "m3 after-fast-restart"), ("immediate", "m4 after-crash")):
            errors = sum(w.errors for w in load.writers)
            event(restart_pg(mode, name, ci))
            dep.wait_streaming()
            load.wait_commits(STEP, f"after the {mode} restart")
            assert sum(w.errors for w in load.writers) > errors, f"the writers never saw the {mode} restart"
            load.moment(label, "lsn" if mode == "fast" else "time", dep.base())

        # A migration adding a column ends chain 1 before its first change under the new definition.
        load.wait_commits(STEP // 2, "before the migration")
        query(ci, "ALTER TABLE items ADD COLUMN extra int NOT NULL DEFAULT 7")
        load.flags["migrated"] = True
        event("migration committed")
        artifact2 = new_base_by_itself(dep)
        event("base 2 taken by the next backup, the workers follow its slot by themselves")
        load.wait_commits(STEP, "after the new base")
        load.moment("m5 new-base", "lsn", dep.base())

        # On the new chain, the leader SIGKILLed and the server crashed right after: the standby takes over.
        load.wait_commits(STEP // 2, "before the second kill")
        leader = dep.wait_streaming()
        leader.send_signal(signal.SIGKILL)
        leader.wait(timeout=30)
        event("chain 2's leader SIGKILLed")
        dep.start_worker()
        errors = sum(w.errors for w in load.writers)
        event(restart_pg("immediate", name, ci))
        dep.wait_streaming(not_by=leader)
        load.wait_commits(STEP, "the last stretch")
        assert sum(w.errors for w in load.writers) > errors, "the writers never saw the second crash"
        load.moment("m6 after-kill-and-crash", "time", dep.base())
        load.wait_commits(STEP // 2, "after the last moment")
        load.stop()
        event("writers stopped")
        (xid,), = query(ci, "INSERT INTO txlog VALUES (-1, -1, 'marker') RETURNING txid_current() % 4294967296")
        dep.capture(dep.slot).wait_durable(xid, DURABLE_WAIT_S)
        event("chain 2 durable past the last moment")
    finally:
        load.gate.resume()
        for w in load.writers:
            w.stop.set()
        workers.stop_all()

    # Every moment restored into a new database: chain 1's from base 1, chain 2's from base 2.
    (slot1, base1), (slot2, base2) = dep.bases
    assert base2 == artifact2 and [m["base"] for m in load.moments] == [base1] * 4 + [base2] * 2
    applied = [restore_and_compare(bin, logical_pg, name, m, secret) for m in load.moments]
    event("every moment restored and compared")

    # The chains themselves: every transaction once, none in both.
    xids = []
    for slot in (slot1, slot2):
        _, txns = dep.capture(slot).chain()
        xids += [t["xid"] for t in txns]
    assert len(xids) == len(set(xids)), "a transaction is in the chains twice"
    print("\n".join(events))
    print(f"moments: {[(m['label'], m['by'], len(m['ids'])) for m in load.moments]}; transactions applied per "
          f"restore: {applied}; writer transactions failed by the kill/restarts: "
          f"{[w.errors for w in load.writers]}; {len(xids)} transactions in the two chains")
