"""Fixtures for the producer's tests: real PostgreSQL (pytest-django's test_ database) and real Kafka.

Start the services first: `deploy/local/services.sh start` (FB_TEST_PG / FB_TEST_BROKERS from
`services.sh env`; the defaults are its ports). Every test that touches Kafka gets its own topic prefix
(`t<random>.`), so tests never read each other's messages and can run against a shared broker.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

PRODUCER = Path(__file__).resolve().parents[1]
SCHEMAS_PY = PRODUCER.parent / "schemas" / "python"
VECTORS = PRODUCER.parent / "schemas" / "vectors"

try:
    import fusion_events  # noqa: F401
except ImportError:  # not pip-installed: use the checkout (pytest.ini's pythonpath normally does this)
    sys.path.insert(0, str(SCHEMAS_PY))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

SUFFIXES = ("backup.requested", "archive.due", "jobs.completed", "jobs.dlq")


def brokers() -> str:
    from django.conf import settings

    return settings.FUSION_BACKUP["BROKERS"]


class Topics:
    """The per-test topics, and ways to read what landed on them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def count(self, suffix: str) -> int:
        """Messages on the topic so far (high - low watermark: exact for a non-transactional producer)."""
        c = Consumer({"bootstrap.servers": brokers(), "group.id": "fb-test-count", "enable.auto.commit": False})
        try:
            md = c.list_topics(self.name(suffix), timeout=10)
            total = 0
            for p in md.topics[self.name(suffix)].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(self.name(suffix), p), timeout=10)
                total += hi - lo
            return total
        finally:
            c.close()

    def read(self, suffix: str, n: int, timeout: float = 20.0) -> List[Tuple[bytes, bytes]]:
        """The first n messages (key, value) of the topic; fails the test if fewer arrive in time."""
        topic = self.name(suffix)
        c = Consumer({"bootstrap.servers": brokers(), "group.id": f"fb-test-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            md = c.list_topics(topic, timeout=10)
            # assign (no group join: that costs seconds), from the beginning of every partition
            c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
            out: List[Tuple[bytes, bytes]] = []
            deadline = time.monotonic() + timeout
            while len(out) < n and time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is None or msg.error():
                    continue
                out.append((msg.key(), msg.value()))
            assert len(out) >= n, f"only {len(out)} of {n} message(s) on {topic} within {timeout}s"
            return out
        finally:
            c.close()


@pytest.fixture
def kafka_topics(settings) -> Iterator[Topics]:
    """Creates the four job topics under a fresh prefix and points FUSION_BACKUP at them."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "TOPIC_PREFIX": prefix}
    admin = AdminClient({"bootstrap.servers": brokers()})
    names = [prefix + s for s in SUFFIXES]
    futures = admin.create_topics([NewTopic(n, num_partitions=3, replication_factor=1) for n in names],
                                  operation_timeout=20)
    for name, f in futures.items():
        f.result(timeout=30)  # raises with the broker's reason if the broker is not there
    # Metadata can lag topic creation by a moment; wait until every topic has its leaders.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        if all(n in md.topics and md.topics[n].error is None and md.topics[n].partitions for n in names):
            break
        time.sleep(0.2)
    yield Topics(prefix)
    for f in admin.delete_topics(names, operation_timeout=20).values():
        try:
            f.result(timeout=30)
        except Exception:
            pass


@pytest.fixture
def subprocess_env(kafka_topics: Topics) -> Dict[str, str]:
    """Environment for `python -m django ...` subprocesses: same test database, same topics."""
    from django.db import connection

    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(PRODUCER), str(SCHEMAS_PY), env.get("PYTHONPATH", "")]),
        "FB_DJANGO_DB_NAME": connection.settings_dict["NAME"],
        "FB_TOPIC_PREFIX": kafka_topics.prefix,
    })
    return env
