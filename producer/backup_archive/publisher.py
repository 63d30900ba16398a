"""Publishing events to Kafka and waiting for the broker's answer.

`publish()` produces one message and blocks until librdkafka's delivery report arrives (or PUBLISH_TIMEOUT
passes): a request is only "sent" when the broker has acknowledged it (acks=all, idempotent producer), so the
caller can mark its record FAILED with the real Kafka error instead of leaving it QUEUED forever.

Every message is signed with FUSION_BACKUP['SIGNING_KEY_FILE'] (fusion_events.sign: the key id and signature
travel in headers over topic, key and value); without that key nothing is published.

One producer per process and configuration, created on first use (librdkafka producers are thread-safe and
expensive to create; a new one per request would also lose the idempotence sequence).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from confluent_kafka import KafkaError, KafkaException, Producer
from fusion_events import sign

from . import conf

log = logging.getLogger("backup_archive.publisher")


class PublishError(Exception):
    """The message was not acknowledged by Kafka; str() says why and what to check."""


class NotSent(PublishError):
    """FUSION_BACKUP['PUBLISHER'] is "console" or "disabled": the event was logged, not sent. A PublishError, so
    no caller can take it for a delivery; callers that know it keep their record QUEUED instead of FAILED (the
    request itself is fine, only nobody will run it)."""


def _not_sent(mode: str, topic: str, key: str, value: bytes) -> NotSent:
    """Logs an event a "console" or "disabled" publisher does not send, and says so in the returned error."""
    if mode == "console":
        # Decoded, so a developer reads the request as the workers would; the value was validated by encode().
        import json

        import fusion_events

        event = json.dumps(fusion_events.decode(value), ensure_ascii=False, sort_keys=True, default=str)
        log.warning("PUBLISHER=console: not sent to Kafka: topic=%s key=%s event=%s", topic, key, event)
    else:
        log.info("PUBLISHER=disabled: not sent to Kafka: topic=%s key=%s (%d bytes)", topic, key, len(value))
    return NotSent(f"not sent: FUSION_BACKUP['PUBLISHER'] is {mode!r} (the event was logged, no worker will see "
                   f"it); set it to 'kafka' to reach the workers")


_producers: Dict[Tuple[Any, ...], Producer] = {}
_lock = threading.Lock()


def _producer_config() -> Dict[str, Any]:
    timeout_ms = max(1, int(float(conf.get("PUBLISH_TIMEOUT")) * 1000))
    cfg: Dict[str, Any] = {
        "bootstrap.servers": conf.get("BROKERS"),
        "client.id": "fusion-backup-producer",
        "acks": "all",
        "enable.idempotence": True,
        # librdkafka gives up on the message itself after this, so the delivery report always comes.
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": max(10, min(60000, timeout_ms)),
        "linger.ms": 5,
    }
    cfg.update(conf.kafka_security())
    cfg.update(conf.get("PRODUCER_CONFIG") or {})
    return cfg


def get_producer() -> Producer:
    cfg = _producer_config()
    key = tuple(sorted((k, str(v)) for k, v in cfg.items()))
    with _lock:
        p = _producers.get(key)
        if p is None:
            # librdkafka's own log lines go to Python logging (not straight to stderr).
            cfg = dict(cfg, error_cb=_on_client_error, logger=logging.getLogger("backup_archive.kafka"))
            p = Producer(cfg)
            _producers[key] = p
        return p


def _on_client_error(err: KafkaError) -> None:
    # Broker-down and similar client-level errors: the delivery report carries the outcome for each message,
    # so these are only logged (at warning: librdkafka retries them by itself).
    log.warning("kafka client error: %s", err)


def reset() -> None:
    """Flushes and forgets the cached producers (tests, and after a fork)."""
    with _lock:
        for p in _producers.values():
            try:
                p.flush(1.0)
            except Exception:  # pragma: no cover - best effort on shutdown
                pass
        _producers.clear()


def _sign(topic: str, key: bytes, value: bytes) -> List[Tuple[str, bytes]]:
    """The signature headers of the message; PublishError saying what to set when there is no usable key. The
    key file is read each time (microseconds), so a rotated key takes effect without a restart."""
    path = conf.get("SIGNING_KEY_FILE")
    if not path:
        raise PublishError(f"not publishing to {topic!r}: FUSION_BACKUP['SIGNING_KEY_FILE'] is not set, and "
                           "workers accept only signed requests; make a key with `fusion-backup keygen --sign --out "
                           "django`, set SIGNING_KEY_FILE to django.key and give django.pub to the workers "
                           "(--trusted-requester)")
    try:
        return sign.sign_headers(sign.Signer.from_file(path), topic, key, value)
    except (OSError, ValueError) as e:
        raise PublishError(f"not publishing to {topic!r}: FUSION_BACKUP['SIGNING_KEY_FILE'] {path!r}: "
                           f"{getattr(e, 'strerror', None) or e}") from None


def publish(topic: str, key: str, value: bytes, timeout: Optional[float] = None) -> Tuple[int, int]:
    """Produces one message and waits for its delivery report. Returns (partition, offset).

    Raises PublishError with the Kafka error (and a hint) when the broker did not acknowledge in time, and its
    subclass NotSent when FUSION_BACKUP['PUBLISHER'] is not "kafka" (the event is only logged).
    """
    mode = conf.publisher()
    if mode != "kafka":
        raise _not_sent(mode, topic, key, value)
    if timeout is None:
        timeout = float(conf.get("PUBLISH_TIMEOUT"))
    producer = get_producer()
    result: Dict[str, Any] = {}
    done = threading.Event()

    def on_delivery(err: Optional[KafkaError], msg: Any) -> None:
        result["err"] = err
        if err is None:
            result["at"] = (msg.partition(), msg.offset())
        done.set()

    headers = _sign(topic, key.encode("utf-8"), value)
    hint = f"check FUSION_BACKUP['BROKERS'] ({conf.get('BROKERS')}) and that topic {topic!r} exists"
    try:
        producer.produce(topic, key=key.encode("utf-8"), value=value, headers=headers, on_delivery=on_delivery)
    except BufferError as e:
        raise PublishError(f"could not queue message for topic {topic!r}: local queue full ({e}); {hint}") from e
    except KafkaException as e:
        raise PublishError(f"could not queue message for topic {topic!r}: {e.args[0]}; {hint}") from e
    # message.timeout.ms guarantees a report; the extra second covers librdkafka's timer granularity.
    deadline = time.monotonic() + timeout + 1.0
    while not done.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise PublishError(f"no delivery report from Kafka within {timeout:g}s for topic {topic!r}; {hint}")
        producer.poll(min(left, 0.1))
    err = result["err"]
    if err is not None:
        raise PublishError(f"Kafka did not accept the message for topic {topic!r}: {err.str()} "
                           f"({err.name()}); {hint}")
    log.debug("published to %s [%d] @ %d", topic, *result["at"])
    return result["at"]
