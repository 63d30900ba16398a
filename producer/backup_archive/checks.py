"""System checks of FUSION_BACKUP (`manage.py check`, and every runserver/migrate): each message names the key,
says what is wrong with its value and how to fix it, so a mistake shows at start-up instead of as a FAILED job.

E001/W001: the scheduled job ids are keyed (scheduler.slot_job_id); without FUSION_BACKUP['JOB_ID_SECRET'] the
key is derived from SECRET_KEY, which works but ties the job ids to a setting people rotate for other reasons
(and every scheduler process must share it). An explicit secret makes that choice visible.
E002: FUSION_BACKUP itself (not a dict, unknown keys: usually a typo). E003: PUBLISHER; W002: requests are not
sent to Kafka (console/disabled). E004: BROKERS. E005: Kafka security (protocol, SASL, CA). E006: a *_FILE
setting that cannot be read. E007: numbers out of range. E008: cron, time zone, verify mode, storage template.
W003: failure mails have no recipient.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, List

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf

Messages = List[checks.CheckMessage]

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")  # librdkafka's security.protocol
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_BROKER = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")


def _usable() -> bool:
    """False when FUSION_BACKUP itself is broken: E002 says so once, the other checks stay quiet."""
    try:
        conf.get("BROKERS")
    except ImproperlyConfigured:
        return False
    return True


def _register(func: Callable[[], Messages]) -> Callable[..., Messages]:
    def check(app_configs: Any = None, **kwargs: Any) -> Messages:
        return func() if _usable() else []

    check.__name__ = check.__qualname__ = func.__name__
    check.__doc__ = func.__doc__
    return checks.register(checks.Tags.compatibility)(check)


@checks.register(checks.Tags.compatibility)
def fusion_backup_setting(app_configs: Any = None, **kwargs: Any) -> Messages:
    try:
        conf.get("BROKERS")
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), hint="FUSION_BACKUP is a dict of the keys in backup_archive/conf.py "
                                          "(DEFAULTS); fix or remove the ones named", id="backup_archive.E002")]
    return []


@checks.register(checks.Tags.security)
def job_id_secret(app_configs: Any = None, **kwargs: Any) -> Messages:
    if not _usable():
        return []
    try:
        explicit = conf.get("JOB_ID_SECRET") is not None
        conf.job_id_key()
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id="backup_archive.E001")]
    if explicit:
        return []
    return [checks.Warning(
        "FUSION_BACKUP['JOB_ID_SECRET'] is not set: scheduled job ids are keyed with a key derived from SECRET_KEY",
        hint="set FUSION_BACKUP['JOB_ID_SECRET'] to a long random string, the same in every scheduler process "
             "(python -c 'import secrets; print(secrets.token_hex(32))'), so that rotating SECRET_KEY does not "
             "change the ids of future slots",
        id="backup_archive.W001",
    )]


@_register
def publisher() -> Messages:
    try:
        mode = conf.publisher()
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id="backup_archive.E003")]
    if mode == "kafka":
        return []
    return [checks.Warning(
        f"FUSION_BACKUP['PUBLISHER'] is {mode!r}: backup, verify and archive requests are only logged, never sent "
        f"to the workers (backup records stay QUEUED, saying so)",
        hint="fine for a developer's runserver; in production set it to 'kafka' (the default)",
        id="backup_archive.W002",
    )]


@_register
def brokers() -> Messages:
    if conf.get("PUBLISHER") != "kafka":
        return []
    value = conf.get("BROKERS")
    if not isinstance(value, str) or not value.strip():
        return [checks.Error(f"FUSION_BACKUP['BROKERS'] is {value!r}: no Kafka broker to send requests to",
                             hint="a comma-separated host:port list, e.g. 'kafka-1:9092,kafka-2:9092' (or "
                                  "'PUBLISHER': 'console' for a runserver without Kafka)",
                             id="backup_archive.E004")]
    bad = [b for b in (x.strip() for x in value.split(",")) if not _BROKER.match(b.split("://", 1)[-1])]
    if bad:
        return [checks.Error(f"FUSION_BACKUP['BROKERS'] has entries that are not host:port: {bad}",
                             hint="e.g. 'kafka-1:9092,kafka-2:9092'", id="backup_archive.E004")]
    return []


@_register
def kafka_security() -> Messages:
    out: Messages = []
    protocol = conf.get("SECURITY_PROTOCOL")
    if protocol is not None and (not isinstance(protocol, str) or protocol.upper() not in SECURITY_PROTOCOLS):
        out.append(checks.Error(f"FUSION_BACKUP['SECURITY_PROTOCOL'] is {protocol!r}, not a Kafka security protocol",
                                hint=f"one of {list(SECURITY_PROTOCOLS)} (the brokers' listener decides; Fusion's "
                                     f"is SASL_SSL), or None for PLAINTEXT", id="backup_archive.E005"))
        protocol = None
    protocol = (protocol or "PLAINTEXT").upper()
    mechanism = conf.get("SASL_MECHANISM")
    if mechanism not in SASL_MECHANISMS:
        out.append(checks.Error(f"FUSION_BACKUP['SASL_MECHANISM'] is {mechanism!r}",
                                hint=f"one of {list(SASL_MECHANISMS)}, as the brokers' listener wants it",
                                id="backup_archive.E005"))
    if protocol.startswith("SASL_") and not conf.get("SASL_USERNAME"):
        out.append(checks.Error(f"FUSION_BACKUP['SECURITY_PROTOCOL'] is {protocol} but SASL_USERNAME is not set",
                                hint="set SASL_USERNAME (the app's principal, e.g. 'django') and "
                                     "SASL_PASSWORD_FILE", id="backup_archive.E005"))
    if conf.get("SASL_USERNAME") and not protocol.startswith("SASL_"):
        out.append(checks.Warning(f"FUSION_BACKUP['SASL_USERNAME'] is set but SECURITY_PROTOCOL is {protocol}: "
                                  f"the credentials are never used", hint="set SECURITY_PROTOCOL to 'SASL_SSL'",
                                  id="backup_archive.W004"))
    if conf.get("SSL_CA_FILE") and "SSL" not in protocol:
        out.append(checks.Warning(f"FUSION_BACKUP['SSL_CA_FILE'] is set but SECURITY_PROTOCOL is {protocol}: the "
                                  f"connection is not encrypted", hint="set SECURITY_PROTOCOL to 'SASL_SSL' or 'SSL'",
                                  id="backup_archive.W004"))
    pw_file = conf.get("SASL_PASSWORD_FILE")
    if pw_file and isinstance(pw_file, (str, os.PathLike)) and not os.access(pw_file, os.R_OK):
        return out  # files() says so (E006); reading it below would only say it again
    try:
        conf.kafka_security()  # reads the password file: the same errors a publish would hit (empty, no user)
    except ImproperlyConfigured as e:
        out.append(checks.Error(str(e), id="backup_archive.E005"))
    return out


@_register
def files() -> Messages:
    """Every FUSION_BACKUP key ending in _FILE names a file the app reads (password, CA, keys): it must be there
    and readable by this process's user."""
    out: Messages = []
    for name in sorted(k for k in conf.DEFAULTS if k.endswith("_FILE")):
        path = conf.get(name)
        if not path:
            continue
        if not isinstance(path, (str, os.PathLike)):
            out.append(checks.Error(f"FUSION_BACKUP[{name!r}] is {path!r}, not a path", id="backup_archive.E006"))
        elif not os.path.isfile(path):
            out.append(checks.Error(f"FUSION_BACKUP[{name!r}] {str(path)!r}: no such file",
                                    hint="check the path (and the volume or secret mounted there)",
                                    id="backup_archive.E006"))
        elif not os.access(path, os.R_OK):
            out.append(checks.Error(f"FUSION_BACKUP[{name!r}] {str(path)!r} is not readable by this process "
                                    f"(uid {os.getuid()})",
                                    hint="give the user that runs Django read access (e.g. group-readable, 0640)",
                                    id="backup_archive.E006"))
    return out


# key: (minimum, may it be None or 0 to turn the feature off, what it is)
NUMBERS = {
    "PUBLISH_TIMEOUT": (0.1, False, "seconds to wait for Kafka's delivery report"),
    "SCHEDULER_INTERVAL": (1.0, False, "seconds between scheduler ticks"),
    "CATCHUP_SLOTS": (1, False, "missed cron slots a tick may still request"),
    "REQUEUE_AFTER_MINUTES": (1.0, True, "minutes before a QUEUED record is sent again"),
    "NOTIFY_LIMIT": (1, False, "failure mails per tick"),
    "HEALTH_RUNS": (2, False, "recent runs the admin's health panel charts"),
}


@_register
def numbers() -> Messages:
    out: Messages = []
    for name, (low, optional, what) in NUMBERS.items():
        value = conf.get(name)
        if optional and not value:
            continue
        integral = isinstance(low, int)
        ok = isinstance(value, int) if integral else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or value < low:
            kind = "an integer" if integral else "a number"
            out.append(checks.Error(f"FUSION_BACKUP[{name!r}] is {value!r}: it is the {what}, {kind} >= {low}"
                                    + (" (or None/0: off)" if optional else ""), id="backup_archive.E007"))
    return out


@_register
def schedules() -> Messages:
    from croniter import croniter

    out: Messages = []
    expr = conf.get("ARCHIVE_SCHEDULE")
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        out.append(checks.Error(f"FUSION_BACKUP['ARCHIVE_SCHEDULE'] is {expr!r}, not a cron expression",
                                hint="e.g. '30 2 * * *' (daily at 02:30)", id="backup_archive.E008"))
    zone = conf.get("SCHEDULER_TIMEZONE")
    if zone:
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(zone)
        except ImportError:  # Python 3.8: the scheduler needs zoneinfo for a zone other than TIME_ZONE
            out.append(checks.Error("FUSION_BACKUP['SCHEDULER_TIMEZONE'] needs Python 3.9+ (zoneinfo)",
                                    hint="leave it unset: cron is then read in settings.TIME_ZONE",
                                    id="backup_archive.E008"))
        except Exception:
            out.append(checks.Error(f"FUSION_BACKUP['SCHEDULER_TIMEZONE'] is {zone!r}, not a known time zone",
                                    hint="an IANA name such as 'Asia/Kolkata', or unset for settings.TIME_ZONE",
                                    id="backup_archive.E008"))
    try:
        conf.verify_mode()
    except ImproperlyConfigured as e:
        out.append(checks.Error(str(e), id="backup_archive.E008"))
    try:
        conf.default_storage_path(1, "name")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        out.append(checks.Error(f"FUSION_BACKUP['STORAGE_PATH_TEMPLATE'] {conf.get('STORAGE_PATH_TEMPLATE')!r} "
                                f"does not format: {type(e).__name__}: {e}",
                                hint="only {id} and {name} are filled in, e.g. 'configs/{id}'",
                                id="backup_archive.E008"))
    return out


@_register
def notify() -> Messages:
    try:
        recipients = conf.notify_recipients()
    except ImproperlyConfigured as e:
        return [checks.Error(str(e), id="backup_archive.E009")]
    if recipients or conf.get("NOTIFY_RECIPIENTS") is not None:
        return []  # someone to tell, or turned off on purpose ([])
    return [checks.Warning(
        "failed backups, verifications and archive runs are mailed to settings.ADMINS, which is empty: nobody will "
        "be told",
        hint="set ADMINS, or FUSION_BACKUP['NOTIFY_RECIPIENTS'] to a list of addresses ([] turns the mails off)",
        id="backup_archive.W003",
    )]
