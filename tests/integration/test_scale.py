"""Operations under stress, through the real broker and database: three workers sharing sixty jobs while one is
killed with SIGKILL; a job longer than max.poll.interval.ms; SIGTERM in the middle of a backup and of an archival."""
from __future__ import annotations

import signal
import time
import uuid

import psycopg2

import fusion_events
from conftest import consume, psql, publish, wait_for
from flow import add_config_and_record, archive_event, authorise, backup_event, now_ms, record

# Fast failure detection for the killed worker (the broker's minimum session timeout is 6 s).
FAST_GROUP = ("-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=1000")


def _records(conninfo: str, ids: list[int]) -> dict[int, str]:
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, status FROM backup_archive_backuprecord WHERE id = ANY(%s)", (ids,))
        return dict(cur.fetchall())


def _archive_tables(conninfo: str, n: int, rows: int) -> None:
    sql = []
    for i in range(n):
        sql.append(f'CREATE TABLE "Arch {i}" (id varchar(20) PRIMARY KEY, created timestamptz NOT NULL, note text);'
                   f'INSERT INTO "Arch {i}" SELECT \'r\' || g, now() - interval \'400 days\', \'row \' || g '
                   f"FROM generate_series(1, {rows}) g;")
    psql(conninfo, "".join(sql))


def test_three_workers_share_sixty_jobs_and_survive_a_sigkill(brokers, topic_prefix, fusion_db, storage_root,
                                                              keypair, workers):
    pub, _ = keypair
    psql(fusion_db, "CREATE TABLE big_enough (id bigint PRIMARY KEY, payload text);"
                    "INSERT INTO big_enough SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 100000) g;")
    n_archive_tables, rows_per_table = 20, 60
    _archive_tables(fusion_db, n_archive_tables, rows_per_table)

    backups = []  # (config_id, record_id, job_id)
    paths = {}  # config_id -> its storage_path
    for i in range(40):
        backups.append(add_config_and_record(fusion_db, name=f"cfg-{i}", storage_path=f"scale/cfg{i}",
                                             tables=["big_enough"]))
        paths[backups[-1][0]] = f"scale/cfg{i}"
    for config_id, record_id, job_id in backups:
        publish(brokers, topic_prefix + "backup.requested", str(config_id),
                backup_event(job_id, config_id, record_id, ["big_enough"], storage_path=paths[config_id]))
    for i in range(n_archive_tables):
        ev = archive_event(str(uuid.uuid4()), i + 1, f"Arch {i}", "id", "created", now_ms() - 86400_000,
                           batch_size=10, module="scale", model=f"Arch{i}")
        authorise(fusion_db, ev)
        publish(brokers, topic_prefix + "archive.due", f"scale.Arch{i}", ev)

    extra = FAST_GROUP + ("--batch-pause-ms", "50")
    victim = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="worker", extra=extra)
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="worker", extra=extra)
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="worker", extra=extra)
    workers.start(fusion_db, role="recorder", extra=FAST_GROUP)

    # Kill one worker as soon as it is in the middle of a job.
    wait_for(lambda: "started" in workers.log(victim), timeout=60, what="the victim to start a job")
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    record_ids = [r for _, r, _ in backups]
    wait_for(lambda: all(s in ("SUCCESS", "FAILED") for s in _records(fusion_db, record_ids).values()),
             timeout=240, what="all 40 backups to finish")
    statuses = _records(fusion_db, record_ids)
    assert set(statuses.values()) == {"SUCCESS"}, statuses

    def archived_all():
        return psql(fusion_db, "SELECT count(*) FROM backup_archive_archivedrecord").strip() == \
            str(n_archive_tables * rows_per_table)
    wait_for(archived_all, timeout=240, what="all archive jobs to finish")
    time.sleep(2)  # anything applied twice would show up now
    for i in range(n_archive_tables):
        assert psql(fusion_db, f'SELECT count(*) FROM "Arch {i}"').strip() == "0"
    assert psql(fusion_db, "SELECT count(*), count(DISTINCT (module, model_name, original_id)) "
                           "FROM backup_archive_archivedrecord").strip() == \
        f"{n_archive_tables * rows_per_table}|{n_archive_tables * rows_per_table}"

    # Exactly one artifact per backup job, each the one its record names; no temporary files left behind by the
    # killed worker's unfinished job.
    files = sorted(p for p in storage_root.rglob("*") if p.is_file() and ".ledger" not in p.parts)
    assert len(files) == 40, [str(f) for f in files if not f.name.endswith(".fbak")]
    for config_id, record_id, job_id in backups:
        rec = record(fusion_db, record_id)
        assert rec["file_path"] == f"{paths[config_id]}/{job_id}.fbak"
        assert (storage_root / rec["file_path"]).stat().st_size == rec["file_size"]

    # Every backup job has exactly one SUCCESS on the completion topic (a job re-run after the kill never produced
    # a second, different outcome).
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: len({e["job_id"] for e in map(lambda m: fusion_events.decode(m.value()), got)
                                    if e["status"] == "SUCCESS"}) >= 60, timeout=60)
    success = {}
    for m in msgs:
        e = fusion_events.decode(m.value())
        if e["status"] == "SUCCESS":
            success.setdefault(e["job_id"], []).append(e)
    assert len(success) == 60
    for job, evs in success.items():
        assert len({(e["file_path"], e["file_size"]) for e in evs}) == 1, evs


def test_a_job_longer_than_max_poll_interval_completes_without_a_rebalance(brokers, topic_prefix, fusion_db,
                                                                          workers):
    _archive_tables(fusion_db, 1, 60)
    job_id = str(uuid.uuid4())
    ev = archive_event(job_id, 1, "Arch 0", "id", "created", now_ms(), batch_size=5, module="slow", model="Arch0")
    authorise(fusion_db, ev)
    publish(brokers, topic_prefix + "archive.due", "slow.Arch0", ev)
    # 12 batches with 1.2 s pauses: about 14 s, longer than max.poll.interval.ms = 10 s.
    w = workers.start(fusion_db, role="worker",
                      extra=("--max-poll-interval-ms", "10000", "--batch-pause-ms", "1200") + FAST_GROUP)
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] != "RUNNING" for m in got), timeout=90)
    final = [fusion_events.decode(m.value()) for m in msgs][-1]
    assert final["status"] == "SUCCESS", final
    assert final["completed_at"] - final["started_at"] > 10_000, "the job was not longer than the poll interval"
    assert final["stats"]["archived"] == 60
    progress = [fusion_events.decode(m.value()) for m in msgs if fusion_events.decode(m.value())["stats"]]
    assert any(p["status"] == "RUNNING" and p["stats"].get("done_rows", 0) > 0 for p in progress), \
        "no progress events while the long job ran"
    log = workers.log(w)
    assert log.count("assigned") == 1 and "revoked" not in log, log
    assert "max.poll" not in log.lower() or "exceeded" not in log.lower(), log


def test_sigterm_during_a_backup_aborts_it_cleanly(brokers, topic_prefix, fusion_db, storage_root, keypair,
                                                   workers):
    pub, _ = keypair
    psql(fusion_db, "CREATE TABLE huge (id bigint, payload text);"
                    "INSERT INTO huge SELECT g, md5(g::text) || repeat('x', 200) FROM generate_series(1, 1500000) g;")
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["huge"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["huge"]))
    w = workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all",
                      extra=("--shutdown-grace-s", "0"))
    wait_for(lambda: record(fusion_db, record_id)["status"] != "QUEUED", timeout=60, what="the backup to start")
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0, workers.log(w)
    log = workers.log(w)
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] != "RUNNING" for m in got), timeout=30)
    final = [fusion_events.decode(m.value()) for m in msgs][-1]
    if final["status"] == "FAILED":  # aborted: a reason, the request for replay, and no file of any kind left
        assert "abort" in final["error"].lower(), final["error"]
        assert final["request"] is not None
        assert not [p for p in storage_root.rglob("*") if p.is_file()], list(storage_root.rglob("*"))
    else:  # it finished first: then the artifact is complete
        assert final["status"] == "SUCCESS"
        assert (storage_root / final["file_path"]).stat().st_size == final["file_size"]
    assert "leaving the group" in log


def test_sigterm_lets_a_running_archival_finish_within_the_grace_period(brokers, topic_prefix, fusion_db, workers):
    _archive_tables(fusion_db, 1, 40)
    job_id = str(uuid.uuid4())
    ev = archive_event(job_id, 1, "Arch 0", "id", "created", now_ms(), batch_size=10, module="grace", model="Arch0")
    authorise(fusion_db, ev)
    publish(brokers, topic_prefix + "archive.due", "grace.Arch0", ev)
    w = workers.start(fusion_db, role="worker", extra=("--batch-pause-ms", "500", "--shutdown-grace-s", "30"))
    wait_for(lambda: "started" in workers.log(w), timeout=60, what="the archival to start")
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == 0
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] != "RUNNING" for m in got), timeout=30)
    final = [fusion_events.decode(m.value()) for m in msgs][-1]
    assert final["status"] == "SUCCESS" and final["stats"]["archived"] == 40
    assert psql(fusion_db, 'SELECT count(*) FROM "Arch 0"').strip() == "0"


def test_a_long_backup_reports_progress_inside_a_big_table(brokers, topic_prefix, fusion_db, storage_root, keypair,
                                                          workers):
    pub, _ = keypair
    psql(fusion_db, "CREATE TABLE \"Big Table\" (id bigint, payload text);"
                    "INSERT INTO \"Big Table\" SELECT g, md5(g::text) || repeat('y', 300) FROM generate_series(1, 800000) g;")
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["Big Table"])
    publish(brokers, topic_prefix + "backup.requested", str(config_id),
            backup_event(job_id, config_id, record_id, ["Big Table"]))
    workers.start(fusion_db, storage_root=storage_root, public_key=pub, role="all",
                  extra=("--progress-interval-ms", "200"))
    msgs = consume(brokers, topic_prefix + "jobs.completed",
                   lambda got: any(fusion_events.decode(m.value())["status"] == "SUCCESS" for m in got), timeout=120)
    events = [fusion_events.decode(m.value()) for m in msgs]
    assert events[-1]["status"] == "SUCCESS" and events[-1]["stats"]["rows"] == 800000
    inside = [e["stats"] for e in events if e["status"] == "RUNNING" and e["stats"]
              and e["stats"]["done_tables"] == 0 and e["stats"]["done_rows"] > 0]
    assert inside, f"no progress while the one table streamed: {[e['stats'] for e in events]}"
    assert all(s["total_tables"] == 1 and s["done_bytes"] > 0 for s in inside)
    rows = [s["done_rows"] for s in inside]
    assert rows == sorted(rows), "progress went backwards"
