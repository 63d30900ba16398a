"""Fixtures for the producer's tests: real PostgreSQL (pytest-django's test_ database) and real Kafka.

Start the services first: `deploy/local/services.sh start` (FB_TEST_PG / FB_TEST_BROKERS from
`services.sh env`; the defaults are its ports). Every test that touches Kafka gets its own topic prefix
(`t<random>.`), so tests never read each other's messages and can run against a shared broker.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

PRODUCER = Path(__file__).resolve().parents[1]
SCHEMAS_PY = PRODUCER.parent / "schemas" / "python"
VECTORS = PRODUCER.parent / "schemas" / "vectors"

try:
    import fusion_events  # noqa: F401
except ImportError:  # not pip-installed: use the checkout (pytest.ini's pythonpath normally does this)
    sys.path.insert(0, str(SCHEMAS_PY))

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

SUFFIXES = ("backup.requested", "archive.due", "jobs.completed", "jobs.dlq")


def brokers() -> str:
    from django.conf import settings

    return settings.FUSION_BACKUP["BROKERS"]


# --- Kafka clients on the secured local broker (deploy/local/services.sh: SASL_SSL, ACLs per principal) -------
def _admin_py() -> Any:
    """deploy/local/kafka/admin.py, where the principals' client settings and ACLs are declared once."""
    import importlib.util

    mod = sys.modules.get("fb_local_admin")
    if mod is None:
        spec = importlib.util.spec_from_file_location("fb_local_admin",
                                                      PRODUCER.parent / "deploy/local/kafka/admin.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        sys.modules["fb_local_admin"] = mod
    return mod


def kafka_config(principal: str) -> Dict[str, Any]:
    """The confluent-kafka settings of a test client speaking as principal (admin, django, worker, recorder,
    ops); no security settings when env.sh does not name the broker's secrets (a PLAINTEXT broker)."""
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    if not secrets:
        return {"bootstrap.servers": brokers()}
    return _admin_py().client_config(brokers(), os.environ.get("FB_TEST_KAFKA_CA"), principal,
                                     f"{secrets}/{principal}.password")


def kafka_worker_args(principal: str) -> List[str]:
    """The C programs' flags for principal; protocol, mechanism and CA come from env.sh's FB_KAFKA_*."""
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    return ["--kafka-username", principal, "--kafka-password-file", f"{secrets}/{principal}.password"] if secrets \
        else []
# --- end of the Kafka client settings -----------------------------------------------------------------------


class Topics:
    """The per-test topics, and ways to read what landed on them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def count(self, suffix: str) -> int:
        """Messages on the topic so far (high - low watermark: exact for a non-transactional producer)."""
        c = Consumer({**kafka_config("ops"), "group.id": "fb-test-count", "enable.auto.commit": False})
        try:
            md = c.list_topics(self.name(suffix), timeout=10)
            total = 0
            for p in md.topics[self.name(suffix)].partitions:
                lo, hi = self._watermarks(c, TopicPartition(self.name(suffix), p))
                total += hi - lo
            return total
        finally:
            c.close()

    @staticmethod
    def _watermarks(c: Consumer, tp: TopicPartition) -> Tuple[int, int]:
        # Right after a topic is created a shared, busy broker may still answer "not leader" for a moment.
        deadline = time.monotonic() + 15
        while True:
            try:
                return c.get_watermark_offsets(tp, timeout=10)
            except KafkaException as e:
                if not e.args[0].retriable() and e.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    @contextlib.contextmanager
    def _from_start(self, topic: str) -> Iterator[Consumer]:
        """A consumer of every partition of topic from its beginning, closed afterwards."""
        c = Consumer({**kafka_config("ops"), "group.id": f"fb-test-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            md = c.list_topics(topic, timeout=10)
            # assign (no group join: that costs seconds), from the beginning of every partition
            c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
            yield c
        finally:
            c.close()

    def read(self, suffix: str, n: int, timeout: float = 20.0, headers: bool = False) -> List[Tuple[bytes, ...]]:
        """The first n messages (key, value) of the topic, or (key, value, headers) with headers=True; fails the
        test if fewer arrive in time."""
        topic = self.name(suffix)
        with self._from_start(topic) as c:
            out: List[Tuple[bytes, bytes]] = []
            deadline = time.monotonic() + timeout
            while len(out) < n and time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is None or msg.error():
                    continue
                out.append((msg.key(), msg.value(), msg.headers() or []) if headers else (msg.key(), msg.value()))
            assert len(out) >= n, f"only {len(out)} of {n} message(s) on {topic} within {timeout}s"
            return out

    def read_until(self, suffix: str, done: Callable[[List[bytes]], bool], timeout: float = 90.0,
                   explain: Optional[Callable[[], str]] = None) -> List[bytes]:
        """Values of the topic from the beginning, read until done(values) is true; fails the test on timeout."""
        topic = self.name(suffix)
        with self._from_start(topic) as c:
            out: List[bytes] = []
            deadline = time.monotonic() + timeout
            while not done(out):
                if time.monotonic() > deadline:
                    extra = f"\n{explain()}" if explain else ""
                    raise AssertionError(f"{topic}: the awaited messages did not arrive within {timeout:g}s "
                                         f"({len(out)} read){extra}")
                msg = c.poll(0.5)
                if msg is not None and not msg.error():
                    out.append(msg.value())
            return out


@pytest.fixture
def kafka_topics(settings) -> Iterator[Topics]:
    """Creates the four job topics under a fresh prefix and points FUSION_BACKUP at them."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    settings.FUSION_BACKUP = {**settings.FUSION_BACKUP, "TOPIC_PREFIX": prefix}
    admin = AdminClient(kafka_config("admin"))
    names = [prefix + s for s in SUFFIXES]
    futures = admin.create_topics([NewTopic(n, num_partitions=3, replication_factor=1) for n in names],
                                  operation_timeout=20)
    for name, f in futures.items():
        f.result(timeout=30)  # raises with the broker's reason if the broker is not there
    if os.environ.get("FB_TEST_KAFKA_SECRETS"):
        _admin_py().grant(admin, [prefix])  # the principals' ACLs on these topics
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


# ---------------------------------------------------------------------------------------------------------------
# The real C workers, for the end-to-end tests (tests/test_end_to_end.py).

REPO = PRODUCER.parent


def _build_dir() -> Tuple[Path, bool]:
    """(where the binaries should be, whether someone asked for them explicitly via FB_BUILD_DIR)."""
    env = os.environ.get("FB_BUILD_DIR")
    return (Path(env), True) if env else (REPO / "build", False)


@pytest.fixture(scope="session")
def worker_bin() -> Path:
    """The folder holding fusion-backup and fusion-backup-worker.

    FB_BUILD_DIR set (tests/run.sh sets it) or <repo>/build present: the binaries must be there, else the
    test FAILS saying how to build them: a forgotten build must not pass as a green run. Only with neither
    is the test skipped (a Python-only checkout).
    """
    d, explicit = _build_dir()
    if not explicit and not d.is_dir():
        pytest.skip(f"end-to-end test skipped: FB_BUILD_DIR is unset and {d} does not exist; build the workers "
                    f"(cmake -S {REPO} -B {d} && cmake --build {d}) or set FB_BUILD_DIR to run it")
    missing = [n for n in ("fusion-backup", "fusion-backup-worker") if not os.access(d / n, os.X_OK)]
    if missing:
        origin = "FB_BUILD_DIR" if explicit else "the default build folder"
        pytest.fail(f"{origin} {d} has no {' or '.join(missing)}: build them first "
                    f"(cmake -S {REPO} -B {d} && cmake --build {d} -j)")
    return d


def django_conninfo() -> str:
    """libpq conninfo of the database Django uses now (pytest-django's test database)."""
    from django.db import connection

    s = connection.settings_dict
    parts = {"host": s.get("HOST"), "port": s.get("PORT"), "user": s.get("USER"), "password": s.get("PASSWORD"),
             "dbname": s["NAME"]}

    def q(v: str) -> str:
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={q(v)}" for k, v in parts.items() if v)


def django_signer():
    """The app's signing key (FUSION_BACKUP['SIGNING_KEY_FILE'] of the test settings)."""
    from django.conf import settings

    from fusion_events import sign

    return sign.Signer.from_file(settings.FUSION_BACKUP["SIGNING_KEY_FILE"])


class Workers:
    """fusion-backup-worker processes for one test, against the test database and the test's topics; all are
    stopped afterwards (SIGTERM, then SIGKILL). Same idea as tests/integration/conftest.py's Workers."""

    def __init__(self, bindir: Path, prefix: str, tmp: Path) -> None:
        self.bindir, self.prefix, self.tmp = bindir, prefix, tmp
        self.procs: List[subprocess.Popen] = []
        self.logs: List[Path] = []
        self.storage_root = tmp / "storage"
        self.storage_root.mkdir(exist_ok=True)
        keys = tmp / "keys"
        keys.mkdir(exist_ok=True)
        r = subprocess.run([str(bindir / "fusion-backup"), "keygen", "--out", str(keys / "backup")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"fusion-backup keygen failed: {r.stderr}"
        self.public_key, self.secret_key = keys / "backup.pub", keys / "backup.key"
        # Who is speaking: the workers sign with their own key and trust the app's (the test settings' key).
        r = subprocess.run([str(bindir / "fusion-backup"), "keygen", "--sign", "--out", str(keys / "worker")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"fusion-backup keygen --sign failed: {r.stderr}"
        self.worker_sign_pub, self.worker_sign_key = keys / "worker.pub", keys / "worker.key"
        self.django_pub = keys / "django.pub"
        self.django_pub.write_text(f"ed25519-public {django_signer().public_key.hex()}\n")

    def start(self, *, secret_key: bool = False, scratch_pg: Optional[str] = None,
              extra: Tuple[str, ...] = ()) -> subprocess.Popen:
        """Starts `fusion-backup-worker --role all` (jobs and recorder in one process). Workers normally hold
        only the public key; verification needs the secret one (secret_key=True)."""
        n = len(self.procs)
        args = [str(self.bindir / "fusion-backup-worker"), *kafka_worker_args("worker"), "--role", "all",
                "--pg", django_conninfo(),
                "--brokers", brokers(), "--topic-prefix", self.prefix, "--group-id", f"g-{self.prefix}",
                "--worker-name", f"w{n}", "--storage-root", str(self.storage_root),
                "--public-key", str(self.public_key), "--retry-backoff-ms", "200",
                "--progress-interval-ms", "500", "--log-level", "debug", "--sign-key", str(self.worker_sign_key),
                "--trusted-requester", str(self.django_pub), "--trusted-signer", str(self.worker_sign_pub)]
        if secret_key:
            args += ["--secret-key", str(self.secret_key)]
        if scratch_pg:
            args += ["--scratch-pg", scratch_pg]
        args += list(extra)
        log = self.tmp / f"worker{n}.log"
        with open(log, "w") as f:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.logs.append(log)
        return p

    def log(self) -> str:
        """Every worker's log, for failure messages (the tail of each)."""
        out = []
        for p, path in zip(self.procs, self.logs):
            text = path.read_text(errors="replace")
            state = "running" if p.poll() is None else f"exited {p.returncode}"
            out.append(f"--- {path.name} ({state}) ---\n" + "\n".join(text.splitlines()[-60:]))
        return "\n".join(out)

    def assert_alive(self) -> None:
        dead = [p for p in self.procs if p.poll() is not None]
        assert not dead, f"a worker exited early:\n{self.log()}"

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def workers(worker_bin: Path, kafka_topics: Topics, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(worker_bin, kafka_topics.prefix, tmp_path)
    yield w
    w.stop_all()


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "condition",
             explain: Optional[Callable[[], str]] = None) -> Any:
    """Polls predicate() until it returns something truthy; fails naming `what` (and explain()) on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.3)
    extra = f"\n{explain()}" if explain else ""
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r}){extra}")
