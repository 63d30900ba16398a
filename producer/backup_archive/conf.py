"""Settings of the app: one `FUSION_BACKUP` dict in the project's settings, merged over these defaults.

    FUSION_BACKUP = {
        "BROKERS": "kafka-1:9092,kafka-2:9092",
        "TOPIC_PREFIX": "fusion.",
    }

Read through `get()` every time (not cached at import), so `override_settings` in tests and a reloaded
configuration take effect.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any, Dict, List

import fusion_events.topics
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: Dict[str, Any] = {
    # Where requests go: "kafka" (the workers), or, for a developer's runserver without a broker, "console" (each
    # event is logged in full on the backup_archive.publisher logger) or "disabled" (one line is logged). Neither
    # pretends delivery: backup records stay QUEUED with "not sent" in error_message, verifications stay QUEUED,
    # archive requests report published=False. A system check warns when it is not "kafka" (W002).
    "PUBLISHER": "kafka",
    # librdkafka bootstrap.servers.
    "BROKERS": "localhost:9092",
    # Topic names are TOPIC_PREFIX + the SPEC's suffix ("fusion." + "backup.requested"); TOPICS overrides one by one.
    "TOPIC_PREFIX": "fusion.",
    "TOPICS": {},
    # Seconds to wait for Kafka's delivery report before giving up and marking the request FAILED.
    "PUBLISH_TIMEOUT": 10.0,
    # Extra librdkafka producer settings, passed through unchanged (they win over the ones below).
    "PRODUCER_CONFIG": {},
    # Kafka security: the app's principal (e.g. "django", allowed to write the two request topics). The password
    # only from a file; SASL_MECHANISM and CA_FILE as the brokers want them. None: librdkafka's defaults
    # (PLAINTEXT, no SASL).
    "SECURITY_PROTOCOL": None,  # e.g. "SASL_SSL"
    "SASL_MECHANISM": "SCRAM-SHA-512",
    "SASL_USERNAME": None,
    "SASL_PASSWORD_FILE": None,
    "SSL_CA_FILE": None,  # PEM of the CA that signed the brokers' certificates
    # Scheduler: seconds between ticks; how many missed cron slots per configuration/policy a tick may still
    # request after downtime (the newest ones; older missed slots are skipped and logged).
    "SCHEDULER_INTERVAL": 30.0,
    "CATCHUP_SLOTS": 3,
    # Time zone the cron expressions are read in (default: settings.TIME_ZONE).
    "SCHEDULER_TIMEZONE": None,
    # Key of the PostgreSQL advisory lock that lets one scheduler run at a time.
    "SCHEDULER_LOCK_ID": 0x46425348,  # "FBSH"
    # Cron schedule for archive policies whose own schedule is empty.
    "ARCHIVE_SCHEDULE": "30 2 * * *",
    # Folder under the worker's storage root for a configuration saved with an empty storage_path; {id} and
    # {name}. Applied once, when the configuration is saved (the column is never empty, workers compare it).
    "STORAGE_PATH_TEMPLATE": "configs/{id}",
    # Scheduled verification (BackupConfiguration.verify_schedule): "integrity" decrypts, authenticates and
    # re-hashes the artifact; "restore" also restores it into a scratch database (the worker needs --scratch-pg)
    # and compares. Either way the worker needs the secret key (--secret-key).
    "VERIFY_MODE": "integrity",
    # Republish sweep: a BackupRecord still QUEUED this many minutes after its last publish (or after its
    # request, when it was never published) is sent again with the same job id; the workers' ledger makes the
    # duplicate harmless. The scheduler sweeps every tick; 0 or None turns that off (`backup_requeue` still works).
    "REQUEUE_AFTER_MINUTES": 15,
    # Key of the scheduled job ids (scheduler.slot_job_id, HMAC-SHA256): without it, anyone could compute a
    # future slot's id and pre-run a decoy under it. None: derived from settings.SECRET_KEY (a system check warns;
    # set it explicitly so rotating SECRET_KEY does not re-key the job ids). Every scheduler must use the same.
    "JOB_ID_SECRET": None,
    # Failure mails (`manage.py backup_notify`, also run by every scheduler tick): one mail per failed backup
    # (per attempt), per failed verification and per failed archive run (per attempt). None: to settings.ADMINS; a list of addresses: to those; []:
    # no mails. NOTIFY_LIMIT caps the mails of one run (the rest go the next run).
    "NOTIFY_RECIPIENTS": None,
    "NOTIFY_LIMIT": 50,
    # The admin's health panel of a configuration charts this many recent runs (size and duration).
    "HEALTH_RUNS": 20,
    # The app's secret Ed25519 signing key (`fusion-backup keygen --sign --out django`: this file is django.key,
    # mode 0600; django.pub goes into every worker's --trusted-requester). Every request is signed with it
    # (schemas/SPEC.md, "Signed messages"); workers dead-letter what it did not sign. Required: nothing is
    # published without it.
    "SIGNING_KEY_FILE": None,
}

VERIFY_MODES = ("integrity", "restore")
PUBLISHERS = ("kafka", "console", "disabled")

TOPIC_SUFFIXES = fusion_events.topics.SUFFIXES  # the contract's (schemas/python/fusion_events/topics.py)


def get(name: str) -> Any:
    user = getattr(settings, "FUSION_BACKUP", {}) or {}
    if not isinstance(user, dict):
        raise ImproperlyConfigured("FUSION_BACKUP must be a dict")
    unknown = set(user) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(
            f"FUSION_BACKUP has unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    return user.get(name, DEFAULTS[name])


def topic(kind: str) -> str:
    """The topic for 'backup', 'archive', 'completed' or 'dlq'."""
    override = (get("TOPICS") or {}).get(kind)
    return override or f"{get('TOPIC_PREFIX')}{TOPIC_SUFFIXES[kind]}"


def default_storage_path(config_id: int, name: str) -> str:
    """The storage_path a configuration gets when saved without one."""
    return get("STORAGE_PATH_TEMPLATE").format(id=config_id, name=name)


def job_id_key() -> bytes:
    """The key of the scheduled job ids: JOB_ID_SECRET, or one derived from SECRET_KEY (never SECRET_KEY itself,
    so the job ids reveal nothing usable against Django's other signatures)."""
    secret = get("JOB_ID_SECRET")
    if secret is not None:
        if not isinstance(secret, (str, bytes)) or len(secret) < 16:
            raise ImproperlyConfigured("FUSION_BACKUP['JOB_ID_SECRET'] must be a str or bytes of at least 16 "
                                       "characters (e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
        return secret.encode() if isinstance(secret, str) else secret
    if not settings.SECRET_KEY:
        raise ImproperlyConfigured("set FUSION_BACKUP['JOB_ID_SECRET'] (or SECRET_KEY): scheduled job ids are keyed")
    return hmac.new(settings.SECRET_KEY.encode() if isinstance(settings.SECRET_KEY, str) else settings.SECRET_KEY,
                    b"fusion-backup scheduled job ids", hashlib.sha256).digest()


def kafka_security() -> Dict[str, Any]:
    """The librdkafka security settings from SECURITY_PROTOCOL, SASL_* and SSL_CA_FILE; the password is read
    from SASL_PASSWORD_FILE now (so a rotated file takes effect) and never appears in an error message."""
    out: Dict[str, Any] = {}
    if get("SECURITY_PROTOCOL"):
        out["security.protocol"] = get("SECURITY_PROTOCOL")
    if get("SSL_CA_FILE"):
        out["ssl.ca.location"] = get("SSL_CA_FILE")
    user, pw_file = get("SASL_USERNAME"), get("SASL_PASSWORD_FILE")
    if not user:
        if pw_file:
            raise ImproperlyConfigured("FUSION_BACKUP['SASL_PASSWORD_FILE'] is set but SASL_USERNAME is not")
        return out
    if not pw_file:
        raise ImproperlyConfigured("FUSION_BACKUP['SASL_USERNAME'] needs SASL_PASSWORD_FILE (the password is read "
                                   "only from a file)")
    try:
        with open(pw_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except OSError as e:
        raise ImproperlyConfigured(f"could not read FUSION_BACKUP['SASL_PASSWORD_FILE'] {pw_file!r}: "
                                   f"{e.strerror}") from None
    if not password:
        raise ImproperlyConfigured(f"FUSION_BACKUP['SASL_PASSWORD_FILE'] {pw_file!r} is empty")
    out.update({"sasl.mechanism": get("SASL_MECHANISM"), "sasl.username": user, "sasl.password": password})
    return out


def verify_mode() -> str:
    mode = get("VERIFY_MODE")
    if mode not in VERIFY_MODES:
        raise ImproperlyConfigured(f"FUSION_BACKUP['VERIFY_MODE'] is {mode!r}; use one of {list(VERIFY_MODES)}")
    return mode


def publisher() -> str:
    name = get("PUBLISHER")
    if name not in PUBLISHERS:
        raise ImproperlyConfigured(f"FUSION_BACKUP['PUBLISHER'] is {name!r}; use one of {list(PUBLISHERS)} "
                                   f"(\"console\" or \"disabled\" for a runserver without Kafka)")
    return name


def notify_recipients() -> List[str]:
    """The addresses failure mails go to: NOTIFY_RECIPIENTS, or settings.ADMINS' when it is None; [] = none."""
    value = get("NOTIFY_RECIPIENTS")
    if value is None:
        return [addr for _, addr in settings.ADMINS]
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(a, str) and "@" in a for a in value):
        raise ImproperlyConfigured(f"FUSION_BACKUP['NOTIFY_RECIPIENTS'] is {value!r}: use a list of e-mail "
                                   f"addresses, [] for no mails, or None for settings.ADMINS")
    return list(value)
