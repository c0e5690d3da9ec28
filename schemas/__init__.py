"""Avro schemas of the events ordermail reads and writes, their codec and content validation.

Imports nothing else of ordermail's, so producers and consumers in other projects can reuse it.
"""

from schemas.codec import SCHEMA_DIR, Codec, DecodeError
from schemas.model import DeliveryOutcome, DeliveryStatus, OrderCompleted
from schemas.validation import InvalidEvent, validate_order

__all__ = [
    "SCHEMA_DIR",
    "Codec",
    "DecodeError",
    "DeliveryOutcome",
    "DeliveryStatus",
    "InvalidEvent",
    "OrderCompleted",
    "validate_order",
]
