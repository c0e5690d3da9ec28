"""Avro schemas of the events ordermail reads and writes, their codec and content validation.

Imports nothing else of ordermail's, so producers and consumers in other projects can reuse it.
"""

from schemas.codec import SCHEMA_DIR, Codec, DecodeError, SchemaRegistryUnavailable, load_schema
from schemas.model import DeliveryOutcome, DeliveryStatus, OrderCompleted
from schemas.validation import InvalidEvent, validate_order

# The reader schemas, loaded once for every module that reads or writes these records.
ORDER_SCHEMA = load_schema("order_completed.avsc")
OUTCOME_SCHEMA = load_schema("delivery_outcome.avsc")
FEEDBACK_SCHEMA = load_schema("delivery_feedback.avsc")
SUPPRESSION_SCHEMA = load_schema("email_suppression.avsc")

__all__ = [
    "FEEDBACK_SCHEMA",
    "ORDER_SCHEMA",
    "OUTCOME_SCHEMA",
    "SCHEMA_DIR",
    "SUPPRESSION_SCHEMA",
    "Codec",
    "DecodeError",
    "DeliveryOutcome",
    "DeliveryStatus",
    "InvalidEvent",
    "OrderCompleted",
    "SchemaRegistryUnavailable",
    "validate_order",
]
