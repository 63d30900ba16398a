"""OLTP impact of archival: the live load's latency with and without the worker archiving beside it.

The live load is pgbench (rate-limited, so it measures latency rather than saturating the two cores) running a
custom script on Fusion's tables: insert a notification, read one leave application by id and a user's ten
latest. It runs SECONDS seconds without archival, then the same SECONDS with job_archive_run (bench_archive, as
bench.py runs it) moving the ROWS due notifications beside it, once per entry of FB_BENCH_OLTP_SETTINGS
(";"-separated; "default" = the worker's defaults, nothing set; else comma-separated worker environment settings,
e.g. "FB_ARCHIVE_LIVE_WINDOW_MS=0" for archival that ignores the live load). Latencies come from pgbench's
per-transaction log (-l: schedule lag included, as a user would see it); p99 of each phase is compared with the
p99 of two windows without archival, one before and one after (the load of a shared machine drifts). Run by run.sh with FB_BENCH_MODE=oltp. Not a timed test: it prints a table.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import bench  # the same seed, reset and driver invocation as the throughput benchmark

SECONDS = int(os.environ.get("FB_BENCH_OLTP_SECONDS", "30"))
TPS = int(os.environ.get("FB_BENCH_OLTP_TPS", "100"))
CLIENTS = int(os.environ.get("FB_BENCH_OLTP_CLIENTS", "4"))
SETTINGS = os.environ.get("FB_BENCH_OLTP_SETTINGS", "default;FB_ARCHIVE_LIVE_WINDOW_MS=0").split(";")
BATCH = int(os.environ.get("FB_BENCH_OLTP_BATCH", "10000"))
LEAVES = 50000
PGBENCH = Path(os.environ.get("FB_PG_BIN", "/usr/lib/postgresql/15/bin")) / "pgbench"

LEAVE_SEED = f"""
SET session_replication_role = replica;  -- leave rows only need to exist: no FK trigger per seeded row
DELETE FROM leave_leave;  -- a fresh database: empty anyway (TRUNCATE would need every referencing table)
INSERT INTO leave_leave (id, purpose, status, timestamp, extra_info, applicant_id)
SELECT g, 'conference ' || g, CASE WHEN g % 4 = 0 THEN 'accepted' ELSE 'processing' END,
       now() - g * interval '1 hour', NULL, 1 + g % 2
FROM generate_series(1, {LEAVES}) g;
SET session_replication_role = origin;
ANALYZE leave_leave;
"""

SCRIPT = f"""\\set uid random(1, 2)
\\set lid random(1, {LEAVES})
BEGIN;
INSERT INTO notifications_notification (level, unread, actor_object_id, verb, description, target_object_id,
  action_object_object_id, timestamp, public, action_object_content_type_id, actor_content_type_id, recipient_id,
  target_content_type_id, deleted, emailed, data)
  VALUES ('info', true, :uid, 'applied for leave', NULL, :lid, NULL, now(), true, NULL, 1, :uid, NULL, false, false, '{{}}');
SELECT id, purpose, status, timestamp FROM leave_leave WHERE id = :lid;
SELECT id, status FROM leave_leave WHERE applicant_id = :uid ORDER BY id DESC LIMIT 10;
END;
"""


def pgbench(work: Path, tag: str) -> list[float]:
    """Runs the live load for SECONDS; returns every transaction's latency in ms."""
    script = work / "fusion_oltp.sql"
    script.write_text(SCRIPT)
    prefix = work / tag
    subprocess.run([str(PGBENCH), "-n", "-f", str(script), "-c", str(CLIENTS), "-j", "2", "-R", str(TPS),
                    "-T", str(SECONDS), "-l", "--log-prefix", str(prefix), bench.PG],
                   check=True, capture_output=True, text=True)
    lat = []
    for log in work.glob(f"{tag}.*"):
        for line in log.read_text().splitlines():
            f = line.split()
            lat.append(int(f[2]) / 1000.0)  # client transaction latency_us ...
        log.unlink()
    return sorted(lat)


def pct(lat: list[float], p: float) -> float:
    return lat[min(len(lat) - 1, int(len(lat) * p))]


def main() -> None:
    print(f"seeding {bench.ROWS} notifications and {LEAVES} leave rows ...", flush=True)
    bench.seed(bench.connect(), LEAVE_SEED)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench.reset()
        base = pgbench(work, "base")
        rows.append(("no archival", base, None))
        for setting in SETTINGS:
            bench.reset()
            env = {**os.environ, "FB_LOG_LEVEL": "warn"}
            if setting != "default":
                env.update(kv.split("=", 1) for kv in setting.split(","))
            t0 = time.perf_counter()
            job = subprocess.Popen([bench.DRIVER, bench.PG, "notifications_notification", "id", "timestamp",
                                    str(bench.CUTOFF_MS), str(BATCH)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
            lat = pgbench(work, f"arch{setting}")
            t_load = time.perf_counter() - t0
            out, errs = job.communicate()
            if job.returncode != 0:
                raise SystemExit(f"bench_archive failed: {errs}")
            r = json.loads(out)
            r["overlap"] = min(1.0, r["seconds"] / t_load)  # the share of the load's window archival ran in
            rows.append((f"archival beside it, {setting}", lat, r))
        # The load of a shared machine drifts: a second window without archival, and the p99 of both pooled is
        # the reference.
        bench.reset()
        after = pgbench(work, "after")
        rows.append(("no archival (again, at the end)", after, None))
    p99_base = pct(sorted(base + after), 0.99)
    print()
    print(f"live load: pgbench, {CLIENTS} clients, {TPS} tx/s for {SECONDS} s; archival: {bench.ROWS:,} rows, "
          f"batch_size {BATCH}")
    print()
    print("| phase | transactions | p50 ms | p99 ms | p99 ÷ p99 without (both windows) | archival rows/s | throttled s | "
          "batches beside a live load | archival ran for |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, lat, r in rows:
        arch = f"{r['archived'] / r['seconds']:,.0f}" if r else "-"
        thr = f"{r['throttle_ms'] / 1000:.1f}" if r else "-"
        live = f"{r['live_batches']:,} of {r['batches']:,}" if r else "-"
        ovl = f"{r['overlap'] * 100:.0f} % of the window" if r else "-"
        print(f"| {name} | {len(lat):,} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | "
              f"{pct(lat, 0.99) / p99_base:.2f} | {arch} | {thr} | {live} | {ovl} |")
    print()
    print("target: p99 with archival ≤ 1.2 × p99 without, at the default settings")


if __name__ == "__main__":
    main()
