"""Signed messages (schemas/SPEC.md, "Signed messages") through the real broker: a request, status or dead letter
that its sender's key did not sign has no effect and says why; a genuine flow still works end to end; a key is
rotated by trusting old and new, then only the new one.

Every forged request here is one the database DOES authorise (its configuration and queued record exist), so
the signature check is the only thing that stops it: without it, each would run."""
from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import fusion_events
from conftest import consume, publish, signer_of, source_signature, wait_for
from flow import add_config_and_record, add_policy, archive_event, backup_event, now_ms, record, status_event
from fusion_events import sign


def _kafka_args(brokers: str, prefix: str) -> list[str]:
    return ["--brokers", brokers, "--topic-prefix", prefix]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def _counter(body: str, pattern: str) -> int:
    """The value of the one sample whose line matches pattern (the metric's name may gain a prefix)."""
    found = [int(float(m.group(1))) for m in re.finditer(r"(?m)^" + pattern + r" (\S+)$", body)]
    assert len(found) == 1, f"{pattern}: {found} in\n{body}"
    return found[0]


def _keyring(*keyfiles: Path) -> sign.Keyring:
    return sign.Keyring.from_files(keyfiles)


def _stranger(bin, tmp_path: Path, name: str = "stranger") -> Path:
    """A signing key nobody trusts (its secret key file)."""
    bin.run("keygen", "--sign", "--out", str(tmp_path / name), check=True)
    return tmp_path / f"{name}.key"


def _done(conninfo: str, record_id: int):
    r = record(conninfo, record_id)
    return r if r["status"] in ("SUCCESS", "FAILED") else None


def test_untrusted_requests_are_dead_lettered_and_a_genuine_one_runs(bin, brokers, topic_prefix, fusion_db,
                                                                     storage_root, keypair, workers, signing_keys,
                                                                     tmp_path):
    req_topic = topic_prefix + "backup.requested"
    stranger = _stranger(bin, tmp_path)

    def authorised():
        config_id, record_id, job_id = add_config_and_record(fusion_db, name=f"c{uuid.uuid4().hex[:6]}",
                                                             tables=["auth_group"])
        return str(config_id), record_id, job_id, backup_event(job_id, config_id, record_id, ["auth_group"])

    forged = {}  # job id -> (record id, the word its dead letter's reason must contain)
    key, rid, jid, value = authorised()
    publish(brokers, req_topic, key, value, sign_as=None)
    forged[jid] = (rid, "missing")
    key, rid, jid, value = authorised()
    publish(brokers, req_topic, key, value, sign_as=stranger)
    forged[jid] = (rid, "not trusted")
    key, rid, jid, value = authorised()
    altered = fusion_events.decode(value)
    altered["ts"] ^= 1  # one bit of its time: still valid and authorised, no longer what Django signed
    publish(brokers, req_topic, key, fusion_events.encode(altered), sign_as=None,
            headers=sign.sign_headers(signer_of("django"), req_topic, key, value))
    forged[jid] = (rid, "bad signature")
    key, rid, jid, value = authorised()
    publish(brokers, req_topic, key, value, sign_as="django", sign_topic=topic_prefix + "archive.due")
    forged[jid] = (rid, "bad signature")
    key, rid, jid, value = authorised()
    publish(brokers, req_topic, key, value, sign_as="worker")  # a worker's key is no requester's
    forged[jid] = (rid, "not trusted")
    # A genuine worker status, re-sent on the request topic with its signature: bound to its own topic.
    status = status_event(jid, "SUCCESS", rid, int(key))
    publish(brokers, req_topic, jid, status, sign_as="worker", sign_topic=topic_prefix + "jobs.completed")
    key, rid_ok, jid_ok, value = authorised()
    publish(brokers, req_topic, key, value)  # Django's signature: the genuine request

    port = _free_port()
    workers.start(fusion_db, storage_root=storage_root, public_key=keypair[0], role="all",
                  extra=("--metrics-listen", f"127.0.0.1:{port}"))
    rec = wait_for(lambda: _done(fusion_db, rid_ok), timeout=90, what="the genuine backup")
    assert rec["status"] == "SUCCESS" and rec["file_path"], rec
    letters = consume(brokers, topic_prefix + "jobs.dlq", lambda got: len(got) >= 6, timeout=60)
    assert len(letters) == 6, [m.value()[:40] for m in letters]

    workers_ring = _keyring(signing_keys["worker"][0])
    reasons = {}
    for m in letters:
        sign.verify(workers_ring, m.topic(), m.key(), m.value(), m.headers())  # every dead letter is the worker's
        h = dict((k, v.decode()) for k, v in m.headers())
        ev = fusion_events.decode(m.value())
        reasons[(ev["type"], ev["job_id"])] = h["fusion.error"]
    for jid, (rid, word) in forged.items():
        why = reasons[("backup.requested", jid)]
        assert word in why and req_topic in why, f"{jid}: {why}"
        assert record(fusion_db, rid)["status"] == "QUEUED", f"a forged request moved record {rid}"
    # The worker's key is looked up first, and no requester's: refused before its topic is even compared (the
    # case "trusted key, other topic" is Django's request signed for archive.due above).
    assert "not trusted" in reasons[("job.status", jid)]

    # No status event under any forged job id: only the genuine job's RUNNING and SUCCESS, signed by the worker.
    statuses = consume(brokers, topic_prefix + "jobs.completed",
                       lambda got: any(fusion_events.decode(m.value())["status"] == "SUCCESS" for m in got))
    assert {fusion_events.decode(m.value())["job_id"] for m in statuses} == {jid_ok}
    for m in statuses:
        assert sign.verify(workers_ring, m.topic(), m.key(), m.value(), m.headers())
    body = _metrics(port)
    assert _counter(body, r"fusion_\w*untrusted_total") == 6

    # replay re-signs with the operators' key, so it must not launder any of them.
    out = bin.run("replay", "--from", "dlq", "--dry-run", "--pg", fusion_db,
                  *_kafka_args(brokers, topic_prefix), check=True).stdout
    for jid in forged:
        assert f"refused  {jid}" in out and "the original request" in out, out
    assert "0 replayed, 5 refused" in out, out


def test_forged_statuses_change_nothing_and_are_shown_as_untrusted(bin, brokers, topic_prefix, fusion_db, workers,
                                                                   tmp_path):
    config_id, record_id, job_id = add_config_and_record(fusion_db, tables=["auth_group"])
    topic = topic_prefix + "jobs.completed"
    failed = status_event(job_id, "FAILED", record_id, config_id, error="forged: replay me")
    publish(brokers, topic, job_id, failed, sign_as="django")  # a requester's key is no worker's
    publish(brokers, topic, job_id, status_event(job_id, "SUCCESS", record_id, config_id, file_path="x/y.fb",
                                                 file_size=1), sign_as=None)
    publish(brokers, topic, job_id, status_event(job_id, "FAILED", record_id, config_id, error="forged"),
            sign_as=_stranger(bin, tmp_path))
    # Then a genuine RUNNING: applied only if none of the forgeries was (FAILED never returns to RUNNING).
    publish(brokers, topic, job_id, status_event(job_id, "RUNNING", record_id, config_id))
    port = _free_port()
    workers.start(fusion_db, role="recorder", extra=("--metrics-listen", f"127.0.0.1:{port}"))
    wait_for(lambda: record(fusion_db, record_id)["status"] == "RUNNING", timeout=60, what="the genuine RUNNING")
    rec = record(fusion_db, record_id)
    assert rec["error_message"] == "" and rec["file_path"] == "", rec
    body = _metrics(port)
    assert _counter(body, r'fusion_\w*recorder_ignored_total\{reason="untrusted"\}') == 3
    p = workers.procs[-1]
    assert "untrusted status event" in workers.log(p) and "not trusted" in workers.log(p)

    k = _kafka_args(brokers, topic_prefix)
    tail = bin.run("tail", "--from-beginning", "--count", "4", "--timeout", "30", *k, check=True).stdout.splitlines()
    assert [line.startswith("UNTRUSTED") for line in tail] == [True, True, True, False], tail
    assert "signed by" in tail[3] and "missing" in tail[1], tail
    js = bin.run("tail", "--json", "--from-beginning", "--count", "4", "--timeout", "30", *k, check=True).stdout
    assert js.count('"trusted":false') == 3 and js.count('"trusted":true') == 1, js
    st = bin.run("status", *k, check=True).stdout
    assert "UNTRUSTED: 3 status event(s)" in st and "jobs: 1 (1 running" in st, st
    out = bin.run("replay", "--pg", fusion_db, *k, check=True).stdout
    assert "ignored  3 status event(s)" in out and "0 replayed, 0 refused" in out, out
    assert consume(brokers, topic_prefix + "backup.requested", lambda got: len(got) >= 1, timeout=5) == []
    # Nothing to check signatures with: the reading commands say which setting is missing.
    bad = bin.run("status", *k, env={"FB_TRUSTED_SIGNERS": ""})
    assert bad.returncode == 2 and "--trusted-signer" in bad.stderr and "keygen --sign" in bad.stderr, bad.stderr


def test_forged_dead_letters_are_not_replayed(bin, brokers, topic_prefix, fusion_db, tmp_path):
    """Only a dead letter that a trusted worker wrote AND whose original request a trusted requester signed (for
    the topic its type belongs on) is replayed; it goes out signed by the operators' key."""
    dlq, due = topic_prefix + "jobs.dlq", topic_prefix + "archive.due"
    stranger = _stranger(bin, tmp_path)

    def letter():
        ev = archive_event(str(uuid.uuid4()), 7, "leave_leave", "id", "timestamp", now_ms() - 86_400_000,
                           module="leave", model="Leave")
        add_policy(fusion_db, ev)
        return ev, fusion_events.decode(ev)["job_id"], [("fusion.error", b"test"),
                                                         ("fusion.source.topic", due.encode())]

    cases = {}
    ev, jid, h = letter()
    publish(brokers, dlq, b"leave.Leave", ev, headers=h + source_signature(due, b"leave.Leave", ev), sign_as=None)
    cases[jid] = "not signed"  # unsigned letter, genuine original
    ev, jid, h = letter()
    publish(brokers, dlq, b"leave.Leave", ev, headers=h + source_signature(due, b"leave.Leave", ev),
            sign_as="django")
    cases[jid] = "not trusted"  # the letter is not a worker's
    ev, jid, h = letter()
    publish(brokers, dlq, b"leave.Leave", ev, headers=h)
    cases[jid] = "fusion.source.fb-key-id is missing"  # the worker's letter of an unsigned request
    ev, jid, h = letter()
    publish(brokers, dlq, b"leave.Leave", ev, headers=h + source_signature(due, b"leave.Leave", ev, who=stranger))
    cases[jid] = "not trusted"
    ev, jid, h = letter()
    publish(brokers, dlq, b"leave.Leave", ev,
            headers=h + source_signature(topic_prefix + "backup.requested", b"leave.Leave", ev))
    cases[jid] = "bad signature"  # signed by Django, but for another topic than archive.due's
    good, good_id, h = letter()
    publish(brokers, dlq, b"leave.Leave", good, headers=h + source_signature(due, b"leave.Leave", good))

    out = bin.run("replay", "--from", "dlq", "--pg", fusion_db, *_kafka_args(brokers, topic_prefix),
                  check=True).stdout
    lines = out.splitlines()
    for jid, why in cases.items():
        if why in ("not signed", "not trusted") and not any(jid in line for line in lines):
            continue  # an untrusted letter is refused before it is decoded: reported by offset, not job id
        assert any(line.startswith(f"refused  {jid}") and why in line for line in lines), (jid, why, out)
    assert sum(line.startswith("refused  the dead letter at offset") for line in lines) == 2, out
    assert f"replayed {good_id}" in out and "1 replayed, 5 refused" in out, out
    sent = consume(brokers, due, lambda got: len(got) >= 2, timeout=10)
    assert [fusion_events.decode(m.value())["job_id"] for m in sent] == [good_id]
    ops = signer_of("ops")
    assert sign.verify(sign.Keyring([ops.public_key]), due, sent[0].key(), sent[0].value(),
                       sent[0].headers()) == ops.key_id


def test_rotating_the_requester_key(bin, brokers, topic_prefix, fusion_db, storage_root, keypair, workers,
                                    signing_keys, tmp_path):
    """Old and new key trusted during the switch: both are accepted; then only the new one: the old is refused."""
    bin.run("keygen", "--sign", "--out", str(tmp_path / "django-2026"), check=True)
    old_pub, new_pub, new_key = signing_keys["django"][0], tmp_path / "django-2026.pub", tmp_path / "django-2026.key"
    req_topic = topic_prefix + "backup.requested"

    def request(signed_with):
        config_id, record_id, job_id = add_config_and_record(fusion_db, name=f"r{uuid.uuid4().hex[:6]}",
                                                             tables=["auth_group"])
        publish(brokers, req_topic, str(config_id), backup_event(job_id, config_id, record_id, ["auth_group"]),
                sign_as=signed_with)
        return record_id

    both = workers.start(fusion_db, storage_root=storage_root, public_key=keypair[0], role="all",
                         env={"FB_TRUSTED_REQUESTERS": f"{old_pub},{new_pub}"})
    during = [request("django"), request(new_key)]
    for rid in during:
        assert wait_for(lambda: _done(fusion_db, rid), timeout=90, what="a request during the switch")["status"] == \
            "SUCCESS"
    both.terminate()
    both.wait(timeout=60)

    workers.start(fusion_db, storage_root=storage_root, public_key=keypair[0], role="all",
                  env={"FB_TRUSTED_REQUESTERS": str(new_pub)})
    old_rid, new_rid = request("django"), request(new_key)
    assert wait_for(lambda: _done(fusion_db, new_rid), timeout=90, what="the new key's request")["status"] == \
        "SUCCESS"
    letters = consume(brokers, topic_prefix + "jobs.dlq", lambda got: len(got) >= 1, timeout=60)
    assert len(letters) == 1 and "not trusted" in dict(letters[0].headers())["fusion.error"].decode()
    assert record(fusion_db, old_rid)["status"] == "QUEUED"


def test_programs_without_their_keys_refuse_to_start(bin, brokers, topic_prefix, fusion_db, signing_keys):
    base = [bin.worker, "--brokers", brokers, "--topic-prefix", topic_prefix, "--pg", fusion_db]

    def start(role, **env):
        r = subprocess.run(base + ["--role", role], capture_output=True, text=True, timeout=60,
                           env={**__import__("os").environ, **env})
        return r.returncode, r.stderr

    rc, err = start("worker", FB_SIGN_KEY="")
    assert rc == 2 and "--sign-key" in err and "keygen --sign" in err, err
    rc, err = start("worker", FB_TRUSTED_REQUESTERS="", FB_SIGN_KEY=str(signing_keys["worker"][1]))
    assert rc == 2 and "--trusted-requester" in err and "Django app" in err, err
    rc, err = start("recorder", FB_TRUSTED_SIGNERS="")
    assert rc == 2 and "--trusted-signer" in err and "the workers" in err, err
    rc, err = start("worker", FB_SIGN_KEY=str(signing_keys["worker"][0]))  # the .pub given as the secret key
    assert rc != 0 and "public signing key" in err, err
