#!/usr/bin/env python3
"""Change capture benchmark (issue 16): RPO under a steady write load, and what capture costs the writers.

  bench_capture.py --pg CONNINFO --build DIR [--rate 200] [--seconds 30] [--phase-s 15] [--flush-s 10]
                   [--pitr-s 20] [--incr-rows 1000000] [--only incremental|quiet]

CONNINFO: a wal_level=logical server (its maintenance database); a database capture_bench_<pid> is created and
dropped. Run under `flock /tmp/fb-bench.lock` on a shared machine.

RPO: a writer commits --rate single-row transactions per second for --seconds while `fusion-backup capture` runs
with --capture-flush-s; for every transaction, the seconds from its commit (the commit time the stream carries) to
the moment its segment was durable (the capture's log line, written after fsync + rename) — p50, p99, max.
Overhead: the writers' throughput (as fast as they go, synchronous_commit on, 2 connections) with no slot vs with a
slot and the capture running, phases alternated A B A B in one run, ratio of the sums.
restore --until: a base FULL (`backup --capture-base`, table t as the phases left it), then --pitr-s seconds of the
two writers at full speed captured; the time of `restore BASE --create` (the FULL alone) and of `restore BASE
--until END --create` (the FULL and every captured transaction), each into a new database, side by side.
incremental: a table of --incr-rows rows, its capture base FULL (bytes, time), the capture running; 1 % of the rows
updated (100 transactions), and once the capture has made them durable an INCREMENTAL from captured changes (bytes,
time, both as ratios of the FULL's); then 1 % more and an INCREMENTAL at once (its time includes waiting for the
capture's flush, at most --flush-s); then `restore INCR --create` (the FULL and both INCREMENTALs' changes) vs
`restore FULL --create`, and the restored table compared with the source.
quiet: a database quiet after one commit, its capture streaming: how far the window's end (the chain's signed tip,
capture/cap_tip.h) lags the server's clock, and the WAL the capture's heartbeats cost.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg2


def admin(pg):
    c = psycopg2.connect(pg)
    c.autocommit = True
    return c


def with_db(pg: str, db: str) -> str:
    return f"{pg} dbname={db}"


def writer(ci: str, stop: threading.Event, rate: float | None, counter: list, ids: iter) -> None:
    c = psycopg2.connect(ci)
    c.autocommit = True
    cur = c.cursor()
    period = 1.0 / rate if rate else 0
    nxt = time.monotonic()
    while not stop.is_set():
        cur.execute("INSERT INTO t (id, v, n) VALUES (%s, md5(random()::text), 1)", (next(ids),))
        counter[0] += 1
        if period:
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    c.close()


def run_writers(ci: str, seconds: float, n: int, rate: float | None, ids) -> int:
    stop = threading.Event()
    counters = [[0] for _ in range(n)]
    ts = [threading.Thread(target=writer, args=(ci, stop, rate, counters[i], ids)) for i in range(n)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(c[0] for c in counters)


class Capture:
    def __init__(self, build: Path, ci: str, work: Path, slot: str, flush_s: int, path: str = "p"):
        self.cli = str(build / "fusion-backup")
        self.ci, self.work, self.slot, self.flush_s, self.path = ci, work, slot, flush_s, path
        if not (work / "k.pub").exists():
            subprocess.run([self.cli, "keygen", "--out", str(work / "k")], check=True, capture_output=True)
            subprocess.run([self.cli, "keygen", "--sign", "--out", str(work / "w")], check=True, capture_output=True)
            (work / "root").mkdir()
        self.log = work / f"capture-{slot}.log"

    def common(self):
        return ["--pg", self.ci, "--storage-root", str(self.work / "root"), "--storage-path", self.path,
                "--capture-slot", self.slot, "--capture-publication", self.slot,
                "--trusted-signer", str(self.work / "w.pub")]

    def start(self, create: bool):
        args = [self.cli, "capture", *self.common(), "--public-key", str(self.work / "k.pub"),
                "--sign-key", str(self.work / "w.key"), "--capture-flush-s", str(self.flush_s)]
        self.out = open(self.log, "a")
        self.proc = subprocess.Popen(args + (["--create-slot"] if create else []), stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.out.close()
        assert rc == 0, self.log.read_text()

    def segments(self) -> dict[str, list[int]]:
        r = subprocess.run([self.cli, "capture", "--list", "--json", *self.common(), "--secret-key",
                            str(self.work / "k.key")], capture_output=True, text=True, check=True)
        out, cur = {}, None
        for line in r.stdout.splitlines():
            o = json.loads(line)
            if "segment" in o:
                cur = out.setdefault(o["segment"], [])
            else:
                cur.append(o["commit_us"])
        return out

    def durable_at(self) -> dict[str, float]:
        pat = re.compile(r"^(\S+Z) INFO .* segment (cap-\S+\.fbcap),")
        out = {}
        for line in self.log.read_text().splitlines():
            m = pat.match(line)
            if m:
                out[m.group(2)] = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=dt.timezone.utc).timestamp()
        return out


def timed(args: list[str]) -> tuple[float, dict]:
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    return took, json.loads(r.stdout)


def bench_pitr(a, ad, ci: str, db: str, work: Path, ids) -> None:
    """restore --until: the FULL alone vs the FULL and its captured chain (see the module comment)."""
    repo = Path(__file__).resolve().parents[2]
    c = admin(ci)
    c.cursor().execute("CREATE TABLE auth_user (id serial PRIMARY KEY, username text)")
    c.cursor().execute((repo / "schemas/sql/backup_archive.sql").read_text())
    c.cursor().execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                       " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                       " VALUES ('pitr', 'FULL', '', '[]', '[]', 'pitr', 0, '', true, now(), now())")
    c.close()
    slot = f"{db}_pitr"
    cap = Capture(a.build, ci, work, slot, a.flush_s, path="pitr")
    trust = ["--trusted-signer", str(work / "w.pub")]
    _, base = timed([cap.cli, "backup", "pitr", "--type", "FULL", "--capture-base", "--json", "--pg", ci,
                     "--storage-root", str(work / "root"), "--public-key", str(work / "k.pub"), "--sign-key",
                     str(work / "w.key"), "--capture-slot", slot, "--capture-publication", slot, *trust])
    cap.start(create=False)
    written = run_writers(ci, a.pitr_s, 2, None, ids)
    c = admin(ci)
    cur = c.cursor()
    cur.execute("INSERT INTO t (id, v, n) VALUES (%s, 'last', 0)", (next(ids),))
    c.close()
    time.sleep(a.flush_s + 3)
    cap.stop()
    segs = cap.segments()
    end = max(n.split("-")[2].split(".")[0] for n in segs)
    end_lsn = f"{int(end[:8], 16):X}/{int(end[8:], 16):X}"
    common = [cap.cli, "restore", base["artifact"], "--create", "--secret-key", str(work / "k.key"), "--json", *trust]
    try:
        full_s, _ = timed(common + ["--pg", with_db(a.pg, f"{db}_full")])
        until_s, out = timed(common + ["--pg", with_db(a.pg, f"{db}_until"), "--until", end_lsn])
        applied = out["transactions_applied"]
        print(f"restore --until: FULL alone {full_s:.2f} s; FULL + {applied} captured transactions "
              f"({written} written in {a.pitr_s:.0f} s, {len(segs)} segments) {until_s:.2f} s: "
              f"{(until_s - full_s) / max(applied, 1) * 1e6:.0f} us per applied transaction")
    finally:
        for suffix in ("full", "until"):
            ad.cursor().execute(f'DROP DATABASE IF EXISTS "{db}_{suffix}" WITH (FORCE)')
        ad.cursor().execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name = %s AND NOT active", (slot,))


def bench_quiet(a, ad, db: str, work: Path) -> None:
    """The window on a quiet database (capture/cap_tip.h): after the last commit, with the capture streaming, how
    far the chain's signed tip (the end of `restore --until`'s window) lags the server's clock, sampled every 0.5 s
    for 3 flush intervals, and the WAL the capture's heartbeats cost meanwhile (nothing else writes)."""
    qdb = f"{db}_quiet"
    ad.cursor().execute(f'CREATE DATABASE "{qdb}"')
    ci = with_db(a.pg, qdb)
    c = admin(ci)
    cur = c.cursor()
    cur.execute("CREATE TABLE q (id int PRIMARY KEY)")
    cap = Capture(a.build, ci, work, qdb, a.flush_s, path="quiet")
    cap.proc = None
    try:
        cap.start(create=True)
        while "consistent point" not in cap.log.read_text():
            time.sleep(0.1)
        cur.execute("INSERT INTO q VALUES (1)")
        time.sleep(a.flush_s + 2)
        chain = work / "root" / "quiet" / "capture" / qdb / qdb
        cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8")
        wal0, t0, lags = cur.fetchone()[0], time.monotonic(), []
        while time.monotonic() - t0 < 3 * a.flush_s:
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            now = cur.fetchone()[0]
            tips = sorted(chain.glob("tip-*.fbtip"))
            if tips:
                lags.append(now - int.from_bytes(tips[-1].read_bytes()[40:48], "big") / 1e6)
            time.sleep(0.5)
        cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8")
        wal = (cur.fetchone()[0] - wal0) / (time.monotonic() - t0) * 60
        cap.stop()
        cap.proc = None
        if os.environ.get("FB_BENCH_KEEP_LOG"):
            shutil.copy(cap.log, os.environ["FB_BENCH_KEEP_LOG"])
        print(f"quiet: capture-flush-s {a.flush_s}: window end (the tip's server time) behind the server's clock: "
              f"p50 {pct(lags, 50):.2f} s, max {max(lags):.2f} s ({len(lags)} samples); heartbeat WAL {wal:.0f} "
              f"bytes/min; {len(list(chain.glob('tip-*.fbtip')))} tip file(s) in the folder")
    finally:
        c.close()
        if cap.proc:  # failed before its stop: never left running
            cap.proc.kill()
            cap.proc.wait()
        ad.cursor().execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name = %s AND NOT active", (qdb,))
        ad.cursor().execute(f'DROP DATABASE IF EXISTS "{qdb}" WITH (FORCE)')


def app_tables(ci: str, name: str, folder: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    c = admin(ci)
    c.cursor().execute("CREATE TABLE IF NOT EXISTS auth_user (id serial PRIMARY KEY, username text)")
    cur = c.cursor()
    cur.execute("SELECT to_regclass('public.backup_archive_backupconfiguration') IS NOT NULL")
    if not cur.fetchone()[0]:
        cur.execute((repo / "schemas/sql/backup_archive.sql").read_text())
    cur.execute("INSERT INTO backup_archive_backupconfiguration (name, backup_type, schedule, modules, tables,"
                " storage_path, retention_days, verify_schedule, is_active, created_at, updated_at)"
                " VALUES (%s, 'FULL', '', '[]', '[]', %s, 0, '', true, now(), now())", (name, folder))
    c.close()


def table_md5(ci: str) -> tuple:
    c = psycopg2.connect(ci)
    cur = c.cursor()
    cur.execute("SELECT count(*), md5(string_agg(b::text, '|' ORDER BY id)) FROM big b")
    out = cur.fetchone()
    c.close()
    return out


def update_pct(ci: str, rows: int, k: int) -> None:
    """1 % of the rows (ids = k mod 100), in 100 transactions."""
    c = admin(ci)
    cur = c.cursor()
    step = max(rows // 100, 1)
    for lo in range(0, rows, step):
        cur.execute("UPDATE big SET n = n + 1, v = md5(v) WHERE id > %s AND id <= %s AND id %% 100 = %s",
                    (lo, lo + step, k))
    c.close()


def bench_incremental(a, ad, db: str, work: Path) -> None:
    """INCREMENTAL from captured changes vs a FULL after 1 % of the rows changed (see the module comment)."""
    idb = f"{db}_incr"
    ad.cursor().execute(f'CREATE DATABASE "{idb}"')
    ci = with_db(a.pg, idb)
    slot = idb
    cap = Capture(a.build, ci, work, slot, a.flush_s, path="incr")
    trust = ["--trusted-signer", str(work / "w.pub")]
    c = admin(ci)
    c.cursor().execute("CREATE TABLE big (id bigint PRIMARY KEY, v text, n int, note text)")
    c.cursor().execute("INSERT INTO big SELECT g, md5(g::text), 0, repeat(chr(97 + g %% 26), 40) "
                       "FROM generate_series(1, %s) g", (a.incr_rows,))
    c.cursor().execute("VACUUM ANALYZE big")
    c.close()
    app_tables(ci, "incr", "incr")
    backup = [cap.cli, "backup", "incr", "--json", "--pg", ci, "--storage-root", str(work / "root"), "--public-key",
              str(work / "k.pub"), "--sign-key", str(work / "w.key"), "--capture-slot", slot, "--capture-publication",
              slot, *trust]
    news = [f"{idb}_full", f"{idb}_restored"]
    try:
        full_s, full = timed(backup + ["--type", "FULL", "--capture-base"])
        cap.start(create=False)
        update_pct(ci, a.incr_rows, 1)
        time.sleep(a.flush_s + 2)  # the capture has made them durable: the INCREMENTAL's wait is short
        incr_s, incr = timed(backup + ["--type", "INCREMENTAL"])
        update_pct(ci, a.incr_rows, 2)
        now_s, now = timed(backup + ["--type", "INCREMENTAL"])  # at once: waits for the capture's flush
        source = table_md5(ci)
        cap.stop()
        common = [cap.cli, "restore", "--create", "--secret-key", str(work / "k.key"), "--json", *trust]
        rfull_s, _ = timed(common + [full["artifact"], "--pg", with_db(a.pg, news[0])])
        rincr_s, _ = timed(common + [now["artifact"], "--pg", with_db(a.pg, news[1])])
        same = table_md5(with_db(a.pg, news[1])) == source
        ch, chn = incr["captured_changes"], now["captured_changes"]
        print(f"incremental: {a.incr_rows} rows; FULL (capture base) {full['size']} bytes in {full_s:.2f} s")
        print(f"incremental: 1 % of the rows updated, capture caught up: INCREMENTAL {incr['size']} bytes "
              f"({incr['size'] / full['size'] * 100:.2f} % of the FULL) in {incr_s:.2f} s "
              f"({incr_s / full_s * 100:.1f} % of the FULL's time; {ch['segments']} segments, {ch['transactions']} "
              f"transactions, waited {ch['wait_ms']} ms)")
        print(f"incremental: 1 % more, INCREMENTAL at once: {now['size']} bytes in {now_s:.2f} s "
              f"({now_s / full_s * 100:.1f} % of the FULL's time, of which {chn['wait_ms']} ms waiting for the "
              f"capture, capture-flush-s {a.flush_s})")
        print(f"incremental: restore --create of the FULL {rfull_s:.2f} s; of the second INCREMENTAL (the FULL + both "
              f"INCREMENTALs' changes) {rincr_s:.2f} s; restored table equals the source: {same}")
    finally:
        for n in news:
            ad.cursor().execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        if cap.__dict__.get("proc") and cap.proc.poll() is None:
            cap.stop()
        ad.cursor().execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name = %s AND NOT active", (slot,))
        ad.cursor().execute(f'DROP DATABASE IF EXISTS "{idb}" WITH (FORCE)')


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--phase-s", type=float, default=15)
    ap.add_argument("--flush-s", type=int, default=10)
    ap.add_argument("--pitr-s", type=float, default=20)
    ap.add_argument("--incr-rows", type=int, default=1000000)
    ap.add_argument("--only", choices=["incremental", "quiet"], help="run only this phase")
    a = ap.parse_args()
    db = f"capture_bench_{os.getpid()}"
    slot = db
    ad = admin(a.pg)
    ad.cursor().execute(f'CREATE DATABASE "{db}"')
    ci = with_db(a.pg, db)
    work = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    import itertools
    ids = itertools.count(1)
    try:
        if a.only:
            Capture(a.build, ci, work, slot, a.flush_s)  # the keys
            print(f"load average {os.getloadavg()}")
            (bench_incremental if a.only == "incremental" else bench_quiet)(a, ad, db, work)
            return
        c = admin(ci)
        c.cursor().execute("CREATE TABLE t (id bigint PRIMARY KEY, v text, n int)")
        cap = Capture(a.build, ci, work, slot, a.flush_s)
        # Overhead: A (no slot) and B (slot + capture) alternated.
        no_slot, with_slot = 0, 0
        no_slot += run_writers(ci, a.phase_s, 2, None, ids)
        cap.start(create=True)
        time.sleep(2)
        with_slot += run_writers(ci, a.phase_s, 2, None, ids)
        cap.stop()
        no_slot += run_writers(ci, a.phase_s, 2, None, ids)  # the slot exists but nobody streams: WAL is kept
        cap.start(create=False)
        time.sleep(2)
        with_slot += run_writers(ci, a.phase_s, 2, None, ids)
        # RPO at a steady rate, capture running.
        t0 = time.time()
        committed = run_writers(ci, a.seconds, 1, a.rate, ids)
        time.sleep(a.flush_s + 3)
        cap.stop()
        segs, durable = cap.segments(), cap.durable_at()
        lags = [durable[name] - us / 1e6 for name, commits in segs.items() for us in commits
                if us / 1e6 >= t0 and name in durable]
        print(f"load average {os.getloadavg()}")
        print(f"overhead: writers {no_slot / (2 * a.phase_s):.0f} txn/s without capture, "
              f"{with_slot / (2 * a.phase_s):.0f} txn/s with slot + capture: ratio {with_slot / no_slot:.3f}")
        print(f"RPO at {a.rate:.0f} txn/s, capture-flush-s {a.flush_s}: {len(lags)} of {committed} transactions, "
              f"commit -> durable segment p50 {pct(lags, 50):.2f} s, p99 {pct(lags, 99):.2f} s, max {max(lags):.2f} s; "
              f"{len(segs)} segments")
        bench_pitr(a, ad, ci, db, work, ids)
        bench_quiet(a, ad, db, work)
        bench_incremental(a, ad, db, work)
    finally:
        ad.cursor().execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            "WHERE slot_name = %s AND NOT active", (slot,))
        ad.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
