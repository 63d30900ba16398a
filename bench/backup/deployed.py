"""One FULL backup through the deployed path, for bench/backup/run.sh: the worker daemon (fusion-backup-worker,
role worker) consumes a backup.requested from the broker, and the time is from the publish until the SUCCESS
status event of that job on jobs.completed; the worker's peak RSS is its VmHWM (/proc/PID/status) once it has
reported SUCCESS. The Kafka settings and topic/ACL set-up are the integration tests' (tests/integration/
conftest.py), so the benchmark speaks to the broker exactly as the tests do (SASL_SSL with env.sh).

    deployed.py WORKER_BIN BROKERS PG AUTHORITY_PG STORAGE_ROOT PUBLIC_KEY EVENT_FILE  -> one JSON line on stdout
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests/integration"), str(REPO / "schemas/python")]

import fusion_events  # noqa: E402
import conftest  # noqa: E402
from conftest import _admin_py, _principal_for, kafka_config, kafka_worker_args, signer_of  # noqa: E402

# The development signing keys (deploy/local/keys.sh; run.sh names the folder): publish() signs the request as
# the Django app, the worker signs its statuses and artifact with its own key, and trusts env.sh's requesters.
KEYS = Path(os.environ.get("FB_BENCH_KEYS", Path(os.environ.get("FB_HOME", Path.home() / ".cache/fusion-backup")) / "keys"))
conftest._SIGNING_KEYS.update({p: (KEYS / f"{p}.pub", KEYS / f"{p}.key") for p in ("django", "ops", "worker")})


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def main() -> int:
    worker, brokers, pg, authority, root, pub, event_file = sys.argv[1:8]
    from confluent_kafka import Consumer, Producer
    from fusion_events import sign
    from confluent_kafka.admin import AdminClient, NewTopic

    value = Path(event_file).read_bytes()
    job_id = fusion_events.decode(value)["job_id"]
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    admin = AdminClient(kafka_config(brokers, "admin"))
    topics = [NewTopic(prefix + "backup.requested", 1, 1), NewTopic(prefix + "archive.due", 1, 1),
              NewTopic(prefix + "jobs.completed", 1, 1), NewTopic(prefix + "jobs.dlq", 1, 1)]
    for f in admin.create_topics(topics, operation_timeout=30).values():
        f.result(timeout=60)
    if os.environ.get("FB_TEST_KAFKA_SECRETS"):
        _admin_py().grant(admin, [prefix])

    log = open(Path(root).parent / "worker.log", "w")
    proc = subprocess.Popen([worker, *kafka_worker_args("worker"), "--brokers", brokers, "--pg", pg,
                             "--authority-pg", authority, "--topic-prefix", prefix, "--group-id", f"g-{prefix}",
                             "--role", "worker", "--worker-name", "bench", "--storage-root", root,
                             "--public-key", pub, "--sign-key", str(KEYS / "worker.key"),
                             "--trusted-requester", str(KEYS / "django.pub")], stdout=log, stderr=subprocess.STDOUT)
    status = Consumer({**kafka_config(brokers, "ops"), "group.id": f"bench-{uuid.uuid4().hex}",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    status.subscribe([prefix + "jobs.completed"])
    try:
        # Let the worker join its group and the status reader get its partition first: the benchmark times the
        # job, not the consumer group's start-up (a deployed worker is already running when a request comes).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "assigned" not in Path(log.name).read_text(errors="replace"):
            status.poll(0.2)
        # The Django app publishes through one long-lived producer (publisher.get_producer): connect this one
        # (TLS, SASL, metadata, idempotent producer id) before the clock starts too, and sign as the app does.
        topic = prefix + "backup.requested"
        producer = Producer({**kafka_config(brokers, _principal_for(topic)), "enable.idempotence": True,
                             "linger.ms": 5})
        producer.list_topics(topic, timeout=30)
        headers = sign.sign_headers(signer_of(_principal_for(topic)), topic, "1", value)
        status.poll(1.0)
        t0, t0_wall = time.monotonic(), time.time()
        errors: list = []
        producer.produce(topic, value=value, key="1", headers=headers,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
        producer.poll(0)
        published = None
        result = None
        while result is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.returncode}); see {log.name}")
            if published is None:
                producer.poll(0)
                if producer.flush(0) == 0:
                    if errors:
                        raise RuntimeError(f"the request was not delivered: {errors}")
                    published = time.monotonic() - t0
            m = status.poll(0.05)
            if m is None or m.error():
                continue
            ev = fusion_events.decode(m.value())
            if ev["job_id"] == job_id and ev["status"] in ("SUCCESS", "FAILED"):
                result = ev
        seconds = time.monotonic() - t0
        rss = vm_hwm_kb(proc.pid)
        if result["status"] != "SUCCESS":
            raise RuntimeError(f"the backup failed: {result.get('error_message')}")
        # Where the time went, from the worker's log (its ISO times, ms): the publish until the job's start, and
        # the job's own end ("backup done") until SUCCESS was read here.
        marks = {}
        for line in Path(log.name).read_text(errors="replace").splitlines():
            for mark, text in (("started", "): started"), ("done", "backup done:")):
                if text in line and mark not in marks:
                    marks[mark] = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(
                        tzinfo=timezone.utc).timestamp() - t0_wall
        print(json.dumps({"seconds": round(seconds, 3), "acked_s": round(published or -1, 3),
                          "started_s": round(marks.get("started", -1), 3), "done_s": round(marks.get("done", -1), 3),
                          "rss_kb": rss, "file_size": result["file_size"],
                          "stats": result.get("stats")}))
        return 0
    finally:
        status.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for f in admin.delete_topics([t.topic for t in topics], operation_timeout=30).values():
            try:
                f.result(timeout=60)
            except Exception:  # noqa: BLE001 - leftover topics of a benchmark are harmless
                pass


if __name__ == "__main__":
    sys.exit(main())
