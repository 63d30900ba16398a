"""Archive benchmark: rows per second of three ways to move due rows of a notifications table into ArchivedRecord.

  (a) the seed design's Django loop: ArchivedRecord.objects.create(...) then record.delete(), per row, autocommit,
      measured on DJANGO_ROWS rows (real Django, the real backup_archive app from producer/);
  (b) one SQL statement moving all due rows: WITH moved AS (DELETE ... RETURNING ...) INSERT ..., the limit;
  (c) the worker: job_archive_run (bench_archive, in-process), batches of BATCH rows, each its own transaction
      with FOR UPDATE SKIP LOCKED, reference checks and the consistency check.
All on the same ROWS-row copy of Fusion's notifications_notification (all due), reset between runs: the database
is loaded and VACUUM ANALYZEd once, kept as a template, and every run gets a fresh file copy of it (CREATE DATABASE
... TEMPLATE ... STRATEGY FILE_COPY, which checkpoints), so each run starts from the same blocks and statistics
(ArchivedRecord analysed while empty) and a reset of 10,000,000 rows takes a file copy, not a reload. (b) and (c)
write the same data envelope. Run by run.sh.
(c) also reports the duration of its first, median, last and largest batch: a batch cost that grows with the rows
archived before it shows as last >> first. REPEAT runs (b) and every (c) that many times in turn, each (c) compared
with the (b) of its own round (the machine's load changes between rounds). DJANGO_ROWS=0 leaves (a) out.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROWS = int(os.environ.get("FB_BENCH_ROWS", "1000000"))
DJANGO_ROWS = int(os.environ.get("FB_BENCH_DJANGO_ROWS", "20000"))
BATCHES = [int(b) for b in os.environ.get("FB_BENCH_BATCHES", "10000,1000").split(",")]
REPEAT = int(os.environ.get("FB_BENCH_REPEAT", "1"))
# 1: reuse SEED_DB if it is there with ROWS rows and no ArchivedRecord (run.sh then keeps it): a 10M seed takes
# longer than a round, so rounds can run as separate invocations, each under its own benchmark lock.
KEEP_SEED = os.environ.get("FB_BENCH_KEEP_SEED", "0") == "1"
# "b,c" (both in each round); "b" or "c" alone: a 10M round of both takes longer than the benchmark lock may be
# held, so its (b) and its (c) run as two invocations in a row on the kept seed (compare them as a pair).
METHODS = os.environ.get("FB_BENCH_METHODS", "b,c").split(",")
# "off": autovacuum disabled on the two tables in every reset copy. (b) commits its million deletes and inserts
# only at its end, so autovacuum never runs inside its timing (the VACUUM it owes comes after); the worker commits
# every batch, and autovacuum vacuums and analyses the table while it runs (measured: 12 s, 43 MB of WAL, inside a
# 30 s job). Off, both are timed doing the same work; on (the default), as a database would run them.
AUTOVACUUM = os.environ.get("FB_BENCH_AUTOVACUUM", "on")
# 2026-01-01: every seeded row is older (they are 17 s apart from 2019-06-01: 10,000,000 of them reach 2024-11;
# 2024-01-01, the cutoff before session 5, left 1,487,906 of the 10M run's rows not due); the live load's are newer.
CUTOFF_MS = 1767225600000
PG = os.environ["FB_BENCH_PG"]
ADMIN_PG = os.environ["FB_BENCH_ADMIN_PG"]  # the server's maintenance database: drops and creates DB
DB = os.environ["FB_BENCH_DBNAME"]
SEED_DB = DB + "_seed"
DRIVER = os.environ["FB_BENCH_DRIVER"]

# The seed goes straight into the table, without its FK triggers (the rows reference users 1 and 2 and content
# type 1, which exist) and with the secondary indexes built after the load rather than row by row: on the shared
# two cores, loading 10,000,000 rows through 11 indexes and two FK checks a row took longer than a round.
INDEXES = """
SELECT indexdef FROM pg_indexes i
WHERE i.schemaname = 'public' AND i.tablename = 'notifications_notification'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname)
"""

SEED = f"""
TRUNCATE backup_archive_archivedrecord;
TRUNCATE notifications_notification;
SET session_replication_role = replica;
INSERT INTO notifications_notification
SELECT g AS id, 'info'::varchar(20) AS level, g % 2 = 0 AS unread, (g % 5000)::text::varchar(255) AS actor_object_id,
       ('sent you a message about course ' || g % 97)::varchar(255) AS verb,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'Your leave application #' || g || ' was "approved" by the HoD' END AS description,
       (g % 800)::text::varchar(255) AS target_object_id, NULL::varchar(255) AS action_object_object_id,
       timestamptz '2019-06-01 09:30:00+05:30' + g * interval '17 seconds' AS timestamp, true AS public,
       NULL::integer AS action_object_content_type_id, 1 AS actor_content_type_id, 1 + g % 2 AS recipient_id,
       NULL::integer AS target_content_type_id, false AS deleted, g % 7 = 0 AS emailed,
       '{{"url": "/leave/' || g || '", "module": "leave"}}' AS data
FROM generate_series(1, {ROWS}) g;
SET session_replication_role = origin;
SELECT setval('notifications_notification_id_seq', (SELECT max(id) FROM notifications_notification));
"""

SINGLE = """
WITH moved AS (DELETE FROM notifications_notification t
               WHERE t.timestamp < (timestamptz 'epoch' + %s * interval '1 millisecond') RETURNING t)
INSERT INTO backup_archive_archivedrecord (module, model_name, original_id, data, archived_at, archived_by_id, job_id)
SELECT 'notifications', 'Notification', (m.t).id::text,
       json_build_object('v', 1, 'table', json_build_array('public', 'notifications_notification'), 'pk', 'id',
                         'row', row_to_json(m.t))::text,
       now(), 1, NULL
FROM moved m
"""


def server_cpu() -> float | None:
    """CPU seconds the server's processes have used so far: the postmaster's exited children (cutime + cstime: the
    backends of finished runs) and its live ones (utime + stime: this run's backend, autovacuum, the WAL writer,
    the checkpointer). A difference of two readings is the server's work in between, which the machine's load
    hardly changes (its wall-clock time it does); autovacuum running during a method is in it. None when the
    server is not on this machine or its /proc is not readable (then the column shows -)."""
    try:
        c = psycopg2.connect(ADMIN_PG)
        with c.cursor() as cur:
            cur.execute("SELECT current_setting('data_directory')")
            datadir = cur.fetchone()[0]
        c.close()
        pm = int(Path(datadir, "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(d.name) == pm:
                total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # own + reaped children's times
            elif int(f[1]) == pm:
                total += int(f[11]) + int(f[12])
        return total / tick
    except (OSError, ValueError, IndexError, psycopg2.Error):
        return None


def connect():
    c = psycopg2.connect(PG)
    c.autocommit = True
    return c


def admin(*sql: str) -> None:
    c = psycopg2.connect(ADMIN_PG)
    c.autocommit = True
    with c.cursor() as cur:
        for q in sql:
            cur.execute(q)
    c.close()


def seed_kept() -> bool:
    """KEEP_SEED and SEED_DB exists as a seed of ROWS rows (all live, none archived)."""
    if not KEEP_SEED:
        return False
    c = psycopg2.connect(ADMIN_PG)
    with c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SEED_DB,))
        exists = cur.fetchone() is not None
    c.close()
    if not exists:
        return False
    c = psycopg2.connect(PG.replace(f"dbname={DB}", f"dbname={SEED_DB}"))
    live, arch = counts(c)
    c.close()
    return live == ROWS and arch == 0


def seed(conn, extra: str = "") -> None:
    """Loads ROWS rows (and extra SQL) into DB once and keeps a copy as the template SEED_DB. Closes conn."""
    if seed_kept():
        print(f"reusing the seed database {SEED_DB} ({ROWS} rows)", flush=True)
        conn.close()
        return
    with conn.cursor() as cur:
        cur.execute(INDEXES)
        indexes = [r[0] for r in cur.fetchall()]
        for d in indexes:
            cur.execute("DROP INDEX " + d.split(" ON ")[0].split()[-1])
        cur.execute(SEED)
        cur.execute("SET maintenance_work_mem = '256MB'")
        for d in indexes:
            cur.execute(d)
        if extra:
            cur.execute(extra)
        cur.execute("VACUUM ANALYZE notifications_notification")
        cur.execute("VACUUM ANALYZE backup_archive_archivedrecord")
    conn.close()
    admin(f"DROP DATABASE IF EXISTS {SEED_DB}", f"CREATE DATABASE {SEED_DB} TEMPLATE {DB} STRATEGY FILE_COPY")


def reset():
    """DB as seeded: a fresh file copy of SEED_DB. Returns a new connection to it."""
    admin(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", f"CREATE DATABASE {DB} TEMPLATE {SEED_DB} STRATEGY FILE_COPY")
    conn = connect()
    if AUTOVACUUM == "off":
        with conn.cursor() as cur:
            for t in ("notifications_notification", "backup_archive_archivedrecord"):
                cur.execute(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
    return conn


def counts(conn) -> tuple[int, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM notifications_notification), "
                    "(SELECT count(*) FROM backup_archive_archivedrecord)")
        return cur.fetchone()


def run_django() -> tuple[int, float]:
    sys.path[:0] = [str(HERE), str(REPO / "producer")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    import django

    django.setup()
    import datetime

    from django.core.serializers.json import DjangoJSONEncoder
    from django.forms.models import model_to_dict

    from backup_archive.models import ArchivedRecord
    from benchapp.models import Notification

    cutoff = datetime.datetime(2026, 1, 1, 5, 30)  # CUTOFF_MS in naive India time, as Fusion's USE_TZ=False
    rows = list(Notification.objects.filter(timestamp__lt=cutoff).order_by("id")[:DJANGO_ROWS])
    t0 = time.perf_counter()
    for record in rows:
        ArchivedRecord.objects.create(module="notifications", model_name="Notification", original_id=str(record.pk),
                                      data=json.dumps(model_to_dict(record), cls=DjangoJSONEncoder),
                                      archived_by_id=1)
        record.delete()
    return len(rows), time.perf_counter() - t0


def run_single(conn) -> tuple[int, float]:
    with conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute(SINGLE, (CUTOFF_MS,))
        n = cur.rowcount
        return n, time.perf_counter() - t0


def run_worker(batch: int) -> tuple[int, float, dict]:
    out = subprocess.run([DRIVER, PG, "notifications_notification", "id", "timestamp", str(CUTOFF_MS), str(batch)],
                         capture_output=True, text=True, env={**os.environ, "FB_LOG_LEVEL": "warn"})
    if out.returncode != 0:
        raise SystemExit(f"bench_archive failed: {out.stderr}")
    r = json.loads(out.stdout)
    return r["archived"], r["seconds"], r["batch_ms"]


def cpu_delta(before: float | None) -> float | None:
    after = server_cpu()
    return after - before if before is not None and after is not None else None


def fmt_cpu(cpu: float | None) -> str:
    return f"{cpu:.1f}" if cpu is not None else "-"


def main() -> None:
    print(f"seeding {ROWS} rows ...", flush=True)
    seed(connect())
    results = []  # (name, rows, seconds, rate of (b) in the same round or None, batch_ms or None, server CPU s)

    rate_a = None
    if DJANGO_ROWS > 0:
        conn = reset()
        cpu = server_cpu()
        n, s = run_django()
        cpu = cpu_delta(cpu)
        live, arch = counts(conn)
        assert live + arch == ROWS and arch == n, (live, arch, n)
        rate_a = n / s
        results.append(("(a) Django loop: create() + delete() per row", n, s, None, None, cpu))

    for rnd in range(1, REPEAT + 1):
        tag = f" [run {rnd}]" if REPEAT > 1 else ""
        rate_b = None
        if "b" in METHODS:
            conn = reset()
            cpu = server_cpu()
            n, s = run_single(conn)
            cpu = cpu_delta(cpu)
            live, arch = counts(conn)
            assert live == 0 and arch == ROWS, (live, arch)
            rate_b = n / s
            results.append((f"(b) one statement: WITH moved AS (DELETE ...) INSERT{tag}", n, s, rate_b, None, cpu))
            print(f"  (b){tag}: {s:.2f} s, server CPU {fmt_cpu(cpu)} s, load average {os.getloadavg()[0]:.1f}",
                  flush=True)
        for batch in BATCHES if "c" in METHODS else []:
            # (c) alone on the database, as (b) was: no connection of ours open beside it, which the worker would
            # rightly take for a live load to protect (archive-live-window-ms).
            reset().close()
            cpu = server_cpu()
            n, s, bms = run_worker(batch)
            cpu = cpu_delta(cpu)
            conn = connect()
            live, arch = counts(conn)
            assert live == 0 and arch == ROWS == n, (live, arch, n)
            results.append((f"(c) worker job_archive_run, batch_size {batch}{tag}", n, s, rate_b, bms, cpu))
            print(f"  (c) {batch}{tag}: {s:.2f} s, server CPU {fmt_cpu(cpu)} s, batches {bms}, load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)

    print()
    print("| method | rows | seconds | rows/s | × (a) | × (b) | batch ms: first / median / last / max | last ÷ first | "
          "server CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, s, rate_b, bms, cpu in results:
        rate = n / s
        xa = f"{rate / rate_a:.1f}" if rate_a else "-"
        xb = f"{rate / rate_b:.2f}" if rate_b else "-"
        if bms:
            bt = f"{bms['first']} / {bms['median']} / {bms['last']} / {bms['max']}"
            grow = f"{bms['last'] / bms['first']:.2f}" if bms["first"] else "-"
        else:
            bt = grow = "-"
        print(f"| {name} | {n:,} | {s:.2f} | {rate:,.0f} | {xa} | {xb} | {bt} | {grow} | {fmt_cpu(cpu)} |")
    print()
    print("targets: worker ≥ 50 × (a) and ≥ 0.9 × (b) (issue 17); last batch ≤ 1.5 × first")
    print("server CPU s: the server's processes (backends, autovacuum, WAL writer, checkpointer) during the method")


if __name__ == "__main__":
    main()
