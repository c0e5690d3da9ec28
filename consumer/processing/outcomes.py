"""What an event's outcome and its dead letter say: builders, no I/O.

``consumer.kafka.publisher`` sends them; each outcome goes to the same partition number as its
input record (co-partitioning is explicit, not left to key hashing), keyed by ``order_id``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from schemas import OUTCOME_SCHEMA

if TYPE_CHECKING:
    from consumer.processing.records import Headers, Inbound
    from schemas import DeliveryOutcome, DeliveryStatus

__all__ = ["OUTCOME_SCHEMA", "dead_letter_headers", "outcome_for"]


def outcome_for(
    inbound: Inbound,
    *,
    event_id: str | None,
    order_id: str | None,
    status: DeliveryStatus,
    reason: str | None,
    attempt: int,
    **known: Any,
) -> DeliveryOutcome:
    outcome: DeliveryOutcome = {
        "event_id": event_id or inbound.surrogate_event_id(),
        "order_id": order_id or inbound.order_key,
        "status": status,
        "reason": reason,
        "attempt": attempt,
        "occurred_at": datetime.now(UTC),
        "source_partition": inbound.origin.partition,
        "source_offset": inbound.origin.offset,
    }
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        outcome["trace_id"] = format(context.trace_id, "032x")
    outcome.update(known)  # type: ignore[typeddict-item]
    return outcome


def dead_letter_headers(
    inbound: Inbound, *, status: str, reason: str, group_id: str, foreign: bool = True
) -> Headers:
    """The original headers (unless not ``foreign``) plus where the record came from and why it
    is here (no free text)."""
    added = {
        "ordermail.error.class": reason,
        "ordermail.error.status": status,
        "ordermail.error.message": f"{status.lower()}: {reason}",
        "ordermail.consumer.group": group_id,
    }
    return [
        *(inbound.foreign_headers() if foreign else []),
        *inbound.origin.headers(),
        *((k, v.encode()) for k, v in added.items()),
    ]
