"""Small-job throughput and latency through the real broker (issue 6's benchmark).

For 1, 2 and 3 worker processes: publish JOBS archive.due events on empty tables (keys spread over the 12
partitions of fresh topics), measure each job's publish-to-SUCCESS latency as seen by a reader of the completion
topic, and the jobs per second from the first publish to the last SUCCESS. Prints one table; ratios are against
one worker, measured in the same run. Run through bench/jobs/run.sh (it starts the services and builds).

Every request is signed as Django signs it (fusion_events.sign, a key made by `fusion-backup keygen --sign`);
the workers verify it and sign their status events (schemas/SPEC.md, "Signed messages"); the reader verifies
every SUCCESS it counts. BENCH_WORKERS (default 1,2,3) chooses the runs. Before the runs it prints what one
message's signature costs in Python (sign, verify).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "schemas" / "python"))
import fusion_events  # noqa: E402
from fusion_events import sign  # noqa: E402

BROKERS = os.environ["FB_TEST_BROKERS"]
sys.path.insert(0, str(REPO / "deploy" / "local" / "kafka"))
import admin as local_admin  # noqa: E402  (the local broker's principals and ACLs)


def kafka_config(principal: str) -> dict:
    """confluent-kafka settings for principal on the secured local broker (env.sh), or plain ones."""
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    if not secrets:
        return {"bootstrap.servers": BROKERS}
    return local_admin.client_config(BROKERS, os.environ.get("FB_TEST_KAFKA_CA"), principal,
                                     f"{secrets}/{principal}.password")


def worker_kafka_args() -> list[str]:
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    return ["--kafka-username", "worker", "--kafka-password-file", f"{secrets}/worker.password"] if secrets else []
PG = os.environ["FB_TEST_PG"]
BUILD = Path(os.environ.get("FB_BUILD_DIR", REPO / "build"))
JOBS = int(os.environ.get("BENCH_JOBS", "600"))
PACED = int(os.environ.get("BENCH_PACED_JOBS", "100"))   # latency phase: jobs sent one every 100 ms
TABLES = 24
WORKER_COUNTS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2,3").split(",")]


def make_keys() -> dict:
    """Signing key pairs for the app and the workers, made as a deployment makes them."""
    d = Path(f"/tmp/bench-jobs-keys-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    for party in ("django", "worker"):
        subprocess.run([str(BUILD / "fusion-backup"), "keygen", "--sign", "--out", str(d / party)], check=True,
                       capture_output=True)
    return {"django": sign.Signer.from_file(d / "django.key"), "django_pub": d / "django.pub",
            "worker_key": d / "worker.key", "workers": sign.Keyring.from_files([d / "worker.pub"])}


KEYS = make_keys()


def produce(p: Producer, topic: str, key: str, value: bytes) -> None:
    p.produce(topic, key=key, value=value, headers=sign.sign_headers(KEYS["django"], topic, key, value))


def make_db() -> tuple[str, str]:
    name = f"bench_jobs_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    admin.close()
    ci = f"{PG} dbname={name}"
    with psycopg2.connect(ci) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE auth_user (id serial PRIMARY KEY)")
        cur.execute((REPO / "schemas/sql/backup_archive.sql").read_text())
        for i in range(TABLES):
            cur.execute(f"CREATE TABLE bench_{i} (id bigint PRIMARY KEY, created timestamptz NOT NULL)")
            # the policy that authorises bench.T{i}'s archive.due (the worker checks every request against it)
            cur.execute("INSERT INTO backup_archive_archivepolicy (id, module, model_name, timestamp_column,"
                        " archive_after_days, delete_after_days, batch_size, max_rows_per_run, schedule, is_active,"
                        " db_schema, db_table, pk_column) VALUES (%s, 'bench', %s, 'created', 0, NULL, 1000, NULL,"
                        " '', true, 'public', %s, 'id')", (i + 1, f"T{i}", f"bench_{i}"))
    return name, ci


def drop_db(name: str) -> None:
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def make_topics() -> str:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    admin = AdminClient(kafka_config("admin"))
    fs = admin.create_topics([NewTopic(prefix + "backup.requested", 12, 1), NewTopic(prefix + "archive.due", 12, 1),
                              NewTopic(prefix + "jobs.completed", 6, 1), NewTopic(prefix + "jobs.dlq", 3, 1)])
    for f in fs.values():
        f.result(timeout=60)
    if os.environ.get("FB_TEST_KAFKA_SECRETS"):
        local_admin.grant(admin, [prefix])
    return prefix


def event(job_id: str, table: int) -> bytes:
    return fusion_events.encode({
        "v": 1, "type": "archive.due", "job_id": job_id, "ts": int(time.time() * 1000), "requested_by": None,
        "attempt": 1, "policy_id": table + 1, "module": "bench", "model_name": f"T{table}", "table": f"bench_{table}",
        "pk_column": "id", "timestamp_column": "created", "cutoff": int(time.time() * 1000), "batch_size": 1000,
        "max_rows": None, "purge_before": None, "archived_by": None, "dry_run": False, "relations": None})


def run(n_workers: int) -> dict:
    db, ci = make_db()
    prefix = make_topics()
    logs = [open(f"/tmp/bench-jobs-w{n_workers}-{i}.log", "w") for i in range(n_workers)]
    procs = [subprocess.Popen([str(BUILD / "fusion-backup-worker"), *worker_kafka_args(), "--role", "worker",
                               "--pg", ci, "--brokers",
                               BROKERS, "--topic-prefix", prefix, "--group-id", f"g-{prefix}", "--log-level", "warn",
                               "--worker-name", f"w{i}", "--sign-key", str(KEYS["worker_key"]),
                               "--trusted-requester", str(KEYS["django_pub"])], stdout=logs[i],
                              stderr=subprocess.STDOUT)
             for i in range(n_workers)]
    done: dict[str, float] = {}
    reader = Consumer({**kafka_config("ops"), "group.id": f"r-{prefix}", "auto.offset.reset": "earliest"})
    reader.subscribe([prefix + "jobs.completed"])
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            m = reader.poll(0.1)
            if m is None or m.error():
                continue
            e = fusion_events.decode(m.value())
            if e["status"] == "SUCCESS" and e["job_id"] not in done:
                sign.verify(KEYS["workers"], m.topic(), m.key(), m.value(), m.headers())  # raises when forged
                done[e["job_id"]] = time.monotonic()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    # Warm up: one job per table, so every worker has joined and holds its partitions before measuring.
    p = Producer({**kafka_config("django"), "linger.ms": 0})
    warm = [str(uuid.uuid4()) for _ in range(TABLES)]
    for i, j in enumerate(warm):
        produce(p, prefix + "archive.due", f"bench.T{i}", event(j, i))
    p.flush(30)
    deadline = time.monotonic() + 120
    while not all(j in done for j in warm) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # let the group settle after the last member joined
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for k in range(JOBS):
        j = str(uuid.uuid4())
        i = k % TABLES
        sent[j] = time.monotonic()
        produce(p, prefix + "archive.due", f"bench.T{i}", event(j, i))
        p.poll(0)
    p.flush(30)
    deadline = time.monotonic() + 300
    while not all(j in done for j in sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Latency without a backlog: one job every 100 ms, each flushed at once.
    paced: dict[str, float] = {}
    for k in range(PACED):
        j = str(uuid.uuid4())
        paced[j] = time.monotonic()
        produce(p, prefix + "archive.due", f"bench.T{k % TABLES}", event(j, k % TABLES))
        p.flush(10)
        time.sleep(0.1)
    deadline = time.monotonic() + 120
    while not all(j in done for j in paced) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join()
    reader.close()
    for pr in procs:
        pr.terminate()
    for pr in procs:
        pr.wait(timeout=60)
    drop_db(db)
    finished = [j for j in sent if j in done]
    lat = sorted((done[j] - sent[j]) * 1000 for j in finished)
    plat = sorted((done[j] - paced[j]) * 1000 for j in paced if j in done)
    wall = max(done[j] for j in finished) - t0
    pct = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))]  # noqa: E731
    return {"workers": n_workers, "jobs": len(finished), "lost": JOBS + PACED - len(finished) - len(plat),
            "wall": wall, "rate": len(finished) / wall, "p50": statistics.median(lat), "p99": pct(lat, 0.99),
            "idle_p50": statistics.median(plat), "idle_p99": pct(plat, 0.99)}


def sign_cost(n: int = 2000) -> None:
    """What one message's signature costs in Python (PyNaCl), for a small job's request."""
    value = event(str(uuid.uuid4()), 0)
    ring = sign.Keyring([KEYS["django"].public_key])
    t0 = time.perf_counter()
    for _ in range(n):
        hdrs = sign.sign_headers(KEYS["django"], "fusion.archive.due", "bench.T0", value)
    t1 = time.perf_counter()
    for _ in range(n):
        sign.verify(ring, "fusion.archive.due", "bench.T0", value, hdrs)
    t2 = time.perf_counter()
    print(f"Python (PyNaCl): {len(value)}-byte request, {n} iterations: sign {(t1 - t0) / n * 1e6:.1f} us, "
          f"verify {(t2 - t1) / n * 1e6:.1f} us per message")


def main() -> None:
    sign_cost()
    rows = [run(n) for n in WORKER_COUNTS]
    base = rows[0]["rate"]
    print(f"\nsmall jobs (archive.due on empty tables), real broker, 12 partitions: a burst of {JOBS} jobs "
          f"(throughput, and latency including the queue), then {PACED} jobs one every 100 ms (latency, no queue)\n")
    print(f"{'workers':>7} {'jobs':>5} {'lost':>4} {'wall s':>7} {'jobs/s':>7} {'x 1 worker':>10} "
          f"{'burst p50':>10} {'burst p99':>10} {'idle p50':>9} {'idle p99':>9}  (ms)")
    for r in rows:
        print(f"{r['workers']:>7} {r['jobs']:>5} {r['lost']:>4} {r['wall']:>7.2f} {r['rate']:>7.1f} "
              f"{r['rate'] / base:>10.2f} {r['p50']:>10.0f} {r['p99']:>10.0f} {r['idle_p50']:>9.1f} "
              f"{r['idle_p99']:>9.1f}")


if __name__ == "__main__":
    main()
