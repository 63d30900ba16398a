"""Fixtures shared by the integration tests: real PostgreSQL, real Kafka, the built binaries.

Every test gets its own database (cloned from a template that holds the Fusion schema and the backup_archive
tables, so it costs a file copy rather than 463 CREATE TABLEs) and its own Kafka topic prefix, so tests never
see each other's rows or messages. tests/run.sh starts the services and exports FB_TEST_PG, FB_TEST_BROKERS and
FB_BUILD_DIR; a test run without them fails with a message saying so rather than skipping.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

REPO = Path(__file__).resolve().parents[2]
try:
    import fusion_events  # noqa: F401  (installed: use it)
except ImportError:  # a checkout without `pip install -e schemas/python`
    import sys

    sys.path.insert(0, str(REPO / "schemas" / "python"))
FUSION_SQL = Path(os.environ.get("FB_FUSION_FIXTURE", REPO / "tests/fixtures/fusion")) / "fusion_prod_schema_pg15.sql"
APP_SQL = REPO / "schemas/sql/backup_archive.sql"
PG_BIN = Path(os.environ.get("FB_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests through tests/run.sh, which starts the local services")
    return value


def conninfo_for(base: str, dbname: str) -> str:
    """The base conninfo with another dbname (later keywords win in libpq conninfo strings)."""
    return f"{base} dbname={dbname}"


def psql(conninfo: str, sql: str | None = None, file: Path | None = None, check: bool = True) -> str:
    """Runs psql with ON_ERROR_STOP and returns its stdout (unaligned, tuples only)."""
    cmd = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo]
    cmd += ["-c", sql] if sql is not None else ["-f", str(file)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"psql failed ({r.returncode}): {r.stderr.strip()}\nSQL: {sql or file}")
    return r.stdout


def _admin(base: str):
    conn = psycopg2.connect(base)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg() -> str:
    """Conninfo of the local test server's maintenance database."""
    return _need("FB_TEST_PG")


@pytest.fixture(scope="session")
def brokers() -> str:
    return _need("FB_TEST_BROKERS")


@dataclass
class Binaries:
    dir: Path

    @property
    def cli(self) -> str:
        return str(self.dir / "fusion-backup")

    @property
    def worker(self) -> str:
        return str(self.dir / "fusion-backup-worker")

    def run(self, *args: str, check: bool = False, env: dict | None = None, timeout: float = 600,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Runs `fusion-backup ARGS`; returns the completed process (text stdout/stderr unless input is bytes)."""
        r = subprocess.run([self.cli, *args], capture_output=True, env={**os.environ, **(env or {})},
                           timeout=timeout, input=input)
        out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                          r.stderr.decode(errors="replace"))
        if check and r.returncode != 0:
            raise AssertionError(f"fusion-backup {' '.join(args)} exited {r.returncode}: {out.stderr}")
        return out


@pytest.fixture(scope="session")
def bin() -> Binaries:  # noqa: A001 - the name reads well in tests
    d = Path(_need("FB_BUILD_DIR"))
    if not (d / "fusion-backup").exists():
        pytest.fail(f"{d}/fusion-backup does not exist: build first (tests/run.sh does)")
    return Binaries(d)


@pytest.fixture(scope="session")
def fusion_template(pg: str) -> str:
    """A template database holding the Fusion schema and the backup_archive tables, made once per session."""
    name = f"fbt_tpl_{os.getpid()}"
    admin = _admin(pg)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    ci = conninfo_for(pg, name)
    psql(ci, file=FUSION_SQL)
    psql(ci, file=APP_SQL)
    yield name
    # A fresh connection: the server may have been restarted meanwhile (the incremental test crashes it on purpose).
    _drop_db(pg, name)


def _new_db(pg: str, template: str | None) -> tuple[str, str]:
    name = f"fbt_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    admin.close()
    return name, conninfo_for(pg, name)


def _drop_db(pg: str, name: str) -> None:
    admin = _admin(pg)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def fresh_db(pg: str):
    """An empty database; yields its conninfo; dropped afterwards."""
    name, ci = _new_db(pg, None)
    yield ci
    _drop_db(pg, name)


@pytest.fixture
def new_db(pg: str):
    """A factory of further empty databases (restore targets); all dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name, ci = _new_db(pg, None)
        made.append(name)
        return ci

    yield make
    for name in made:
        _drop_db(pg, name)


@pytest.fixture
def fusion_db(pg: str, fusion_template: str):
    """A database with the Fusion schema (463 tables, no rows) and the backup_archive tables."""
    name, ci = _new_db(pg, fusion_template)
    yield ci
    _drop_db(pg, name)


@pytest.fixture
def app_db(pg: str, fusion_template: str):
    """A second Fusion database whose backup_archive tables authorise the requests of a test that backs up another
    database (the worker's --authority-pg), so the backed-up database holds only the test's own tables."""
    name, ci = _new_db(pg, fusion_template)
    yield ci
    _drop_db(pg, name)


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    root.mkdir()
    return root


# --- Who is speaking (worker/src/common/fb_sign.h): one Ed25519 signing key pair per party, made once a session ---
SIGNING_PARTIES = ("django", "ops", "worker")


@pytest.fixture(scope="session")
def signing_keys(bin: Binaries, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{party: (public key file, secret key file)} made by `fusion-backup keygen --sign` for the Django app, the
    operators and the workers."""
    d = tmp_path_factory.mktemp("signing-keys")
    keys = {}
    for party in SIGNING_PARTIES:
        bin.run("keygen", "--sign", "--out", str(d / party), check=True)
        keys[party] = (d / f"{party}.pub", d / f"{party}.key")
    _SIGNING_KEYS.update(keys)
    return keys


# publish() signs with these (filled by signing_keys): the party whose principal writes a topic signs on it.
_SIGNING_KEYS: dict[str, tuple[Path, Path]] = {}


def signer_of(who) -> "object":
    """A fusion_events.sign.Signer: `who` is a party of SIGNING_PARTIES or a secret key file."""
    from fusion_events import sign

    path = _SIGNING_KEYS[who][1] if isinstance(who, str) else Path(who)
    return sign.Signer.from_file(path)


def source_signature(topic: str, key, value: bytes, who="django") -> list:
    """The headers a worker copies into a dead letter from the request it dead-letters (the original's fb-key-id
    and fb-sig as fusion.source.fb-key-id / fusion.source.fb-sig), as `who` would have signed it on topic."""
    from fusion_events import sign

    return [(f"fusion.source.{n}", v) for n, v in sign.sign_headers(signer_of(who), topic, key, value)]


@pytest.fixture(scope="session", autouse=True)
def trust_settings(signing_keys):
    """The deployment's trust, as the environment of every program the tests start: workers trust requests of the
    Django app and the operators and artifacts and statuses of workers; a CLI command signs as the operators.
    Workers.start gives workers their own key (--sign-key beats FB_SIGN_KEY). Tests of refusals override these."""
    env = {"FB_TRUSTED_REQUESTERS": f"{signing_keys['django'][0]},{signing_keys['ops'][0]}",
           "FB_TRUSTED_SIGNERS": str(signing_keys["worker"][0]), "FB_SIGN_KEY": str(signing_keys["ops"][1])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
# --- end of who is speaking -----------------------------------------------------------------------------------


@pytest.fixture
def keypair(bin: Binaries, tmp_path: Path) -> tuple[Path, Path]:
    """(public key file, secret key file) made by `fusion-backup keygen`."""
    prefix = tmp_path / "keys" / "backup"
    prefix.parent.mkdir()
    bin.run("keygen", "--out", str(prefix), check=True)
    return Path(f"{prefix}.pub"), Path(f"{prefix}.key")


# --- Kafka clients on the secured local broker (deploy/local/services.sh: SASL_SSL, ACLs per principal) -------
def _admin_py():
    """deploy/local/kafka/admin.py, where the principals' client settings and ACLs are declared once."""
    import importlib.util
    import sys

    mod = sys.modules.get("fb_local_admin")
    if mod is None:
        spec = importlib.util.spec_from_file_location("fb_local_admin", REPO / "deploy/local/kafka/admin.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        sys.modules["fb_local_admin"] = mod
    return mod


def kafka_config(brokers: str, principal: str) -> dict:
    """The confluent-kafka settings of a client speaking as principal (admin, django, worker, recorder, ops) on
    the local broker; no security settings when env.sh does not name the broker's secrets (a PLAINTEXT broker)."""
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    if not secrets:
        return {"bootstrap.servers": brokers}
    return _admin_py().client_config(brokers, os.environ.get("FB_TEST_KAFKA_CA"), principal,
                                     f"{secrets}/{principal}.password")


def kafka_worker_args(principal: str) -> list[str]:
    """The C programs' flags for principal; protocol, mechanism and CA come from env.sh's FB_KAFKA_*."""
    secrets = os.environ.get("FB_TEST_KAFKA_SECRETS")
    return ["--kafka-username", principal, "--kafka-password-file", f"{secrets}/{principal}.password"] if secrets \
        else []


def _principal_for(topic: str) -> str:
    """Who may write topic: the app writes requests, workers write statuses and dead letters."""
    return "worker" if topic.endswith(("jobs.completed", "jobs.dlq")) else "django"


@pytest.fixture
def topic_prefix(brokers: str) -> str:
    """A fresh prefix with the four topics created (job topics with 4 partitions to keep tests quick) and the
    principals' ACLs on them (deploy/local/kafka/admin.py's GRANTS)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"t{uuid.uuid4().hex[:10]}."
    admin = AdminClient(kafka_config(brokers, "admin"))
    topics = [NewTopic(prefix + "backup.requested", 4, 1), NewTopic(prefix + "archive.due", 4, 1),
              NewTopic(prefix + "jobs.completed", 2, 1), NewTopic(prefix + "jobs.dlq", 1, 1)]
    for t, f in admin.create_topics(topics, operation_timeout=30).items():
        f.result(timeout=60)
    if os.environ.get("FB_TEST_KAFKA_SECRETS"):
        _admin_py().grant(admin, [prefix])
    yield prefix
    # Teardown: the prefix's topics and ACLs go (a broker that kept every test's topics held 7,000 partitions
    # after a few days of runs and took more than services.sh's 90 s to start). Best effort: a topic left behind
    # costs start-up time, not correctness, so a failure here is reported by the broker's next start, not here.
    try:
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for f in admin.delete_topics(mine, operation_timeout=30).values():
            f.result(timeout=60)
        if os.environ.get("FB_TEST_KAFKA_SECRETS"):
            _admin_py().revoke(admin, [prefix])
    except Exception as e:  # noqa: BLE001 - cleanup must never turn a passing test into an error
        print(f"conftest: topics of {prefix} not deleted: {e}", file=sys.stderr)
# --- end of the Kafka client settings -----------------------------------------------------------------------


# The role the workers of these tests log in as: the least-privilege role of deploy/sql/roles.sql, never the
# superuser the tests set databases up with (SECURITY.md). FB_TEST_WORKER_ROLE= (empty) runs them as the owner.
WORKER_ROLE = os.environ.get("FB_TEST_WORKER_ROLE", "fb_test_worker")


def as_worker_role(conninfo: str, capture: bool = False) -> str:
    """Applies deploy/sql/roles.sql to conninfo's database (idempotent) and returns a conninfo that logs in as the
    worker role. A database that cannot be reached (tests of a database that is down) is returned as it is.
    capture: the role of workers that capture (roles.sql -v capture=on: WITH REPLICATION). It is a role of its own
    (WORKER_ROLE_capture) because REPLICATION is cluster-wide and roles.sql resets it without capture=on: one role
    for both would lose it whenever a test running beside a capturing one starts its workers."""
    if not WORKER_ROLE:
        return conninfo
    role = f"{WORKER_ROLE}_capture" if capture else WORKER_ROLE
    for _ in range(5):
        r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"worker_role={role}",
                            *(("-v", "capture=on") if capture else ()), "-d", conninfo, "-f",
                            str(REPO / "deploy/sql/roles.sql")], capture_output=True, text=True)
        # Tests run in parallel (pytest -n): two sessions creating or altering the one role at once collide in
        # pg_authid ("tuple concurrently updated", a duplicate key); the file is idempotent, so run it again.
        if r.returncode == 0 or not ("concurrently" in r.stderr or "duplicate key" in r.stderr):
            break
    if r.returncode != 0:
        # Two cases keep the conninfo as it is, each said here rather than matched loosely: a database that cannot
        # be reached (a test of a server that is down, or of a database that does not exist), and a database
        # without the app's tables (roles.sql grants on them: some capture tests use bare databases, so their
        # workers run as the connecting role; the least-privilege capture role is exercised by
        # test_capture_rebase.py and test_pitr_load.py, whose databases have the app's tables).
        unreachable = ("could not connect" in r.stderr or "Connection refused" in r.stderr
                       or re.search(r'database "[^"]*" does not exist', r.stderr))
        no_app = re.search(r'relation "backup_archive_[a-z]+" does not exist', r.stderr)
        if unreachable or no_app:
            return conninfo
        raise AssertionError(f"deploy/sql/roles.sql failed on {conninfo}: {r.stderr}")
    return f"{conninfo} user={role}"


class Workers:
    """Starts fusion-backup-worker processes for one test and stops them all afterwards (SIGTERM, then SIGKILL)."""

    def __init__(self, bin: Binaries, brokers: str, prefix: str, logdir: Path):
        self.bin, self.brokers, self.prefix, self.logdir = bin, brokers, prefix, logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, pg: str, *, storage_root: Path | None = None, public_key: Path | None = None,
              secret_key: Path | None = None, role: str = "all", group: str | None = None,
              extra: tuple[str, ...] = (), env: dict | None = None) -> subprocess.Popen:
        args = [self.bin.worker, *kafka_worker_args("recorder" if role == "recorder" else "worker"),
                "--brokers", self.brokers, "--pg", as_worker_role(pg, "--capture-databases" in extra),
                "--topic-prefix", self.prefix,
                "--group-id", group or f"g-{self.prefix}", "--role", role, "--worker-name",
                f"w{len(self.procs)}", "--retry-backoff-ms", "200", "--progress-interval-ms", "500"]
        if storage_root:
            args += ["--storage-root", str(storage_root)]
        if public_key:
            args += ["--public-key", str(public_key)]
        if secret_key:
            args += ["--secret-key", str(secret_key)]
        sign_dir = Path(os.environ["FB_TRUSTED_SIGNERS"].split(",")[0]).parent  # trust_settings' keys
        args += ["--sign-key", str(sign_dir / "worker.key")]
        args += list(extra)
        log = open(self.logdir / f"worker{len(self.procs)}.log", "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        p.log_path = self.logdir / f"worker{len(self.procs)}.log"  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def log(self, p: subprocess.Popen) -> str:
        return Path(p.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

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
def workers(bin: Binaries, brokers: str, topic_prefix: str, tmp_path: Path):
    w = Workers(bin, brokers, topic_prefix, tmp_path)
    yield w
    w.stop_all()


def publish(brokers: str, topic: str, key: bytes | str | None, value: bytes, headers: list | None = None,
            sign_as="auto", sign_topic: str | None = None) -> None:
    """Publishes one message, signed the way its sender signs it (schemas/SPEC.md, "Signed messages"), and waits
    for the broker's acknowledgement. sign_as: "auto" (the party whose principal writes the topic: django for
    requests, worker for statuses and dead letters), another party of SIGNING_PARTIES or a secret key file (a
    forgery with a key nobody trusts), or None (unsigned). sign_topic: sign for another topic than the one it is
    sent to (a message moved from one topic to another)."""
    from confluent_kafka import Producer

    from fusion_events import sign

    headers = list(headers or [])
    if sign_as is not None:
        who = _principal_for(topic) if sign_as == "auto" else sign_as
        headers += sign.sign_headers(signer_of(who), sign_topic or topic, key, value)
    p = Producer({**kafka_config(brokers, _principal_for(topic)), "enable.idempotence": True})
    errors: list = []
    p.produce(topic, value=value, key=key, headers=headers or None,
              on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(30) == 0, "message not delivered within 30 s"
    assert not errors, f"delivery failed: {errors}"


def consume(brokers: str, topic: str, until, timeout: float = 60.0) -> list:
    """Reads topic from the beginning (a fresh group) until until(messages) is true or timeout; returns messages."""
    import time

    from confluent_kafka import Consumer

    c = Consumer({**kafka_config(brokers, "ops"), "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
    finally:
        c.close()
    return got


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    """Polls predicate() until it returns a truthy value; fails with `what` after timeout."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")
