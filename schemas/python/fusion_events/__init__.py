"""fusion_events: the event contract of Fusion Backup & Archive (schemas/SPEC.md), for Python.

    from fusion_events import decode, encode, InvalidEvent

`decode(bytes) -> dict` validates a Kafka message value; `encode(dict) -> bytes` validates and writes the
canonical encoding (byte-identical to the C codec's). Both raise `InvalidEvent` naming the offending field.
Signing and verifying Kafka messages: `fusion_events.sign` (imported on demand: it needs PyNaCl).
"""
from .codec import (
    EVENT_TYPES,
    FIELD_ORDER,
    MAX_MESSAGE,
    RELATION_FIELD_ORDER,
    VERSION,
    InvalidEvent,
    decode,
    encode,
    validate,
)

__all__ = [
    "EVENT_TYPES",
    "FIELD_ORDER",
    "MAX_MESSAGE",
    "RELATION_FIELD_ORDER",
    "VERSION",
    "InvalidEvent",
    "decode",
    "encode",
    "validate",
]
__version__ = "1.0.0"
