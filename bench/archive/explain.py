"""Archive benchmark, FB_BENCH_MODE=explain: where the worker's cost per row goes, in counts that do not depend on
the machine's load (buffers touched, WAL records and bytes), against (b), the one statement.

  one batch  the worker's first batch of BATCH rows (job_archive_run with max_rows = BATCH, run by bench_archive
             under auto_explain: EXPLAIN (ANALYZE, BUFFERS, WAL) of every statement, as JSON notices on its
             stderr), then (b) on the next BATCH rows (the same statement as bench.py's, limited to that key range,
             under EXPLAIN (ANALYZE, BUFFERS, WAL)); both on a fresh reset, so both start after the same checkpoint
             on pages nobody has touched since; the WAL between the two LSNs around each by record type
             (pg_walinspect);
  whole job  with FB_BENCH_EXPLAIN_FULL=1 also the whole job (every batch statement's counts summed, timing off)
             and the whole (b), each on a fresh reset, with the server's WAL counters (pg_stat_wal) around each.
Prints Markdown tables and the worker batch's plan tree with each node's rows, buffers, WAL and time. Run by run.sh
(FB_BENCH_MODE=explain; FB_BENCH_EXPLAIN_ROWS, default 10000, is BATCH).
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import bench

BATCH = int(os.environ.get("FB_BENCH_EXPLAIN_ROWS", "10000"))
FULL = os.environ.get("FB_BENCH_EXPLAIN_FULL", "0") == "1"
COUNTS = ["Shared Hit Blocks", "Shared Read Blocks", "Shared Dirtied Blocks", "Shared Written Blocks",
          "Local Hit Blocks", "Temp Read Blocks", "Temp Written Blocks", "WAL Records", "WAL FPI", "WAL Bytes"]


def auto_explain(timing: bool) -> str:
    """PGOPTIONS for the driver: every statement's plan with its counts as a JSON notice (the server untouched)."""
    opts = ["session_preload_libraries=auto_explain", "auto_explain.log_min_duration=0", "auto_explain.log_analyze=on",
            "auto_explain.log_buffers=on", "auto_explain.log_wal=on", "auto_explain.log_format=json",
            "auto_explain.log_level=notice", f"auto_explain.log_timing={'on' if timing else 'off'}"]
    return " ".join("-c " + o for o in opts)


def plans(stderr: str) -> list[dict]:
    """The auto_explain plans in the driver's stderr: each a notice 'duration: ... plan:' followed by JSON."""
    out, dec, i = [], json.JSONDecoder(), 0
    while (i := stderr.find("plan:", i)) >= 0:
        j = stderr.find("{", i)
        doc, end = dec.raw_decode(stderr, j)
        out.append(doc)
        i = end
    return out


def batch_plans(stderr: str) -> list[dict]:
    return [p for p in plans(stderr) if p.get("Query Text", "").lstrip().startswith("WITH cand")]


def totals(plan: dict) -> dict:
    """The top node's counts: they include the CTEs and subqueries it ran (the data-modifying CTEs are read by
    the counters' subqueries, so they run inside it)."""
    return {k: plan["Plan"].get(k, 0) for k in COUNTS}


def add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in COUNTS}


def lsn(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_flush_lsn()::text")
        return cur.fetchone()[0]


def wal_by_type(conn, start: str, end: str) -> dict:
    """(resource manager/record type) -> (count, record bytes, full-page-image bytes) between two LSNs."""
    with conn.cursor() as cur:
        cur.execute("SELECT \"resource_manager/record_type\", count, record_size, fpi_size "
                    "FROM pg_get_wal_stats(%s::pg_lsn, %s::pg_lsn, true) WHERE count > 0", (start, end))
        return {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}


def stat_wal(conn) -> tuple[int, int, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")
        return tuple(int(x) for x in cur.fetchone())


def driver(batch: int, max_rows: int | None, timing: bool) -> tuple[float, list[dict]]:
    args = [bench.DRIVER, bench.PG, "notifications_notification", "id", "timestamp", str(bench.CUTOFF_MS), str(batch)]
    if max_rows is not None:
        args.append(str(max_rows))
    env = {**os.environ, "FB_LOG_LEVEL": "warn", "PGOPTIONS": auto_explain(timing)}
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"bench_archive failed: {out.stderr[-4000:]}")
    return json.loads(out.stdout)["seconds"], batch_plans(out.stderr)


def single(conn, lo: int | None, hi: int | None, timing: bool) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of (b), on the key range (lo, hi] or on every due row; committed."""
    sql = bench.SINGLE
    if lo is not None:
        sql = sql.replace("RETURNING t)", f"AND t.id > {int(lo)} AND t.id <= {int(hi)} RETURNING t)")
    with conn.cursor() as cur:
        cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING {'ON' if timing else 'OFF'}, FORMAT JSON) {sql}",
                    (bench.CUTOFF_MS,))
        return cur.fetchone()[0][0]


def tree(node: dict, depth: int = 0) -> None:
    """One line per plan node: what it is, its rows, its counts (inclusive of its children) and time."""
    name = node.get("Relation Name") or node.get("CTE Name") or ""
    label = node.get("Subplan Name", "")
    idx = node.get("Index Name", "")
    t = node.get("Actual Total Time")
    print(f"{'  ' * depth}- {label + ': ' if label else ''}{node['Node Type']} {name} {idx}".rstrip()
          + f" rows={node.get('Actual Rows')} loops={node.get('Actual Loops')} hit={node.get('Shared Hit Blocks', 0)}"
          + f" read={node.get('Shared Read Blocks', 0)} dirtied={node.get('Shared Dirtied Blocks', 0)}"
          + f" wal={node.get('WAL Records', 0)}/{node.get('WAL FPI', 0)}/{node.get('WAL Bytes', 0)}"
          + (f" ms={t * node.get('Actual Loops', 1):.1f}" if t is not None else ""))
    for child in node.get("Plans", []):
        tree(child, depth + 1)


def row(name: str, rows: int, c: dict, seconds: float | None) -> str:
    buf = c["Shared Hit Blocks"] + c["Shared Read Blocks"]
    per = 10000 / rows
    s = f"{seconds:.2f}" if seconds is not None else "-"
    return (f"| {name} | {rows:,} | {s} | {c['Shared Hit Blocks']:,} | {c['Shared Read Blocks']:,} | "
            f"{c['Shared Dirtied Blocks']:,} | {c['Shared Written Blocks']:,} | {c['WAL Records']:,} | "
            f"{c['WAL FPI']:,} | {c['WAL Bytes']:,} | {buf * per:,.0f} / {c['WAL Records'] * per:,.0f} / "
            f"{c['WAL Bytes'] * per / 1e6:.2f} MB |")


HEAD = ("| what | rows | s | shared hit | read | dirtied | written | WAL records | WAL FPI | WAL bytes | "
        "per 10,000 rows: buffers / WAL records / WAL bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def one_batch() -> None:
    conn = bench.reset()
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    conn.close()
    conn = bench.connect()
    l0 = lsn(conn)
    conn.close()  # no session of ours beside the job (it would take it for a live load)
    seconds, ps = driver(BATCH, BATCH, timing=True)
    conn = bench.connect()
    l1 = lsn(conn)
    wc = wal_by_type(conn, l0, l1)
    b = single(conn, BATCH, 2 * BATCH, timing=True)
    l2 = lsn(conn)
    wb = wal_by_type(conn, l1, l2)
    if len(ps) != 1:
        raise SystemExit(f"explain: expected one batch statement from the job, got {len(ps)}")
    print(f"\n### One batch of {BATCH:,} rows: the worker's first batch (rows 1-{BATCH}) and (b) on rows "
          f"{BATCH + 1}-{2 * BATCH}, load average {os.getloadavg()[0]:.1f}\n")
    print(HEAD)
    print(row("(c) worker, one batch (statement only)", BATCH, totals(ps[0]), ps[0]["Plan"].get("Actual Total Time", 0) / 1000))
    print(row("(b) one statement on the next rows", BATCH, totals(b), b["Plan"].get("Actual Total Time", 0) / 1000))
    print("\nWAL between the LSNs around each (pg_walinspect; the worker's includes its policy row, BEGIN/COMMIT):\n")
    print("| record type | (c) count | (c) record bytes | (c) FPI bytes | (b) count | (b) record bytes | (b) FPI bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in sorted(set(wc) | set(wb), key=lambda k: -(wc.get(k, (0, 0, 0))[1] + wc.get(k, (0, 0, 0))[2])):
        c, d = wc.get(k, (0, 0, 0)), wb.get(k, (0, 0, 0))
        print(f"| {k} | {c[0]:,} | {c[1]:,} | {c[2]:,} | {d[0]:,} | {d[1]:,} | {d[2]:,} |")
    print("\nthe worker's batch (counts inclusive of children; wal = records/FPI/bytes):")
    tree(ps[0]["Plan"])
    print("\n(b) on the next rows:")
    tree(b["Plan"])
    conn.close()


def whole_job() -> None:
    conn = bench.reset()
    w0 = stat_wal(conn)
    conn.close()
    cpu_c = bench.server_cpu()
    seconds, ps = driver(BATCH, None, timing=False)
    cpu_c = bench.cpu_delta(cpu_c)
    conn = bench.connect()
    w1 = stat_wal(conn)
    live, arch = bench.counts(conn)
    assert live == 0 and arch == bench.ROWS, (live, arch)
    c = {k: 0 for k in COUNTS}
    for p in ps:
        c = add(c, totals(p))
    conn.close()
    conn = bench.reset()
    w2 = stat_wal(conn)
    cpu_b = bench.server_cpu()
    t0 = time.perf_counter()
    b = single(conn, None, None, timing=False)
    sb = time.perf_counter() - t0
    cpu_b = bench.cpu_delta(cpu_b)
    w3 = stat_wal(conn)
    live, arch = bench.counts(conn)
    assert live == 0 and arch == bench.ROWS, (live, arch)
    conn.close()
    print(f"\n### Whole job of {bench.ROWS:,} rows (batch_size {BATCH}, {len(ps)} batch statements) and the whole (b), "
          f"timing off, load average {os.getloadavg()[0]:.1f}\n")
    print(HEAD)
    print(row("(c) worker, all batch statements", bench.ROWS, c, seconds))
    print(row("(b) one statement", bench.ROWS, totals(b), sb))
    print(f"\nserver WAL counters (pg_stat_wal, the whole server) around (c): {w1[0] - w0[0]:,} records, "
          f"{w1[1] - w0[1]:,} FPI, {w1[2] - w0[2]:,} bytes; around (b): {w3[0] - w2[0]:,} records, "
          f"{w3[1] - w2[1]:,} FPI, {w3[2] - w2[2]:,} bytes")
    print(f"server CPU s (all its processes, autovacuum included): (c) {bench.fmt_cpu(cpu_c)}, (b) {bench.fmt_cpu(cpu_b)}")
    print("\n(b):")
    tree(b["Plan"])


def main() -> None:
    print(f"seeding {bench.ROWS} rows ...", flush=True)
    bench.seed(bench.connect())
    one_batch()
    if FULL:
        whole_job()


if __name__ == "__main__":
    main()
