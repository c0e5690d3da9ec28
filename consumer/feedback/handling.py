"""From reports to ``DeliveryFeedback`` records and suppressions.

Whatever received a report (the SMTP receiver, a webhook) answers its sender only after
:meth:`FeedbackHandler.handle` returned: every record is then acknowledged by the brokers. On
:class:`TryLater` it asks the sender to deliver the report again (SMTP 451, HTTP 503); records
already published for it are published again with the same ``feedback_id``, which consumers
use to drop the duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind

from consumer.feedback.index import IndexLagging, OutcomeIndex, Sent
from consumer.observability import metrics
from consumer.observability.telemetry import context_from, inject_into, tracer
from consumer.processing.ports import PublishError
from delivery.feedback.model import Kind, Report, Source
from delivery.suppression import InvalidAddress
from schemas import FEEDBACK_SCHEMA

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from consumer.kafka.publisher import OutcomePublisher
    from schemas import Codec

__all__ = ["FeedbackHandler", "SoftBounces", "Suppressor", "TryLater"]

log = logging.getLogger("ordermail.feedback")

# Signed by the ESP, which knows whom it sent to; DSN and ARF recipients must match the token.
_SIGNED_SOURCES = frozenset({Source.SES, Source.SENDGRID})


class TryLater(Exception):
    """The report could not be settled now; its sender should deliver it again later."""


class Suppressor(Protocol):
    async def add(
        self, address: str, reason: str, source: str | None = None, event_id: str | None = None
    ) -> object: ...


class SoftBounces:
    """Soft bounces per address within a window, so that an address that never takes mail is
    suppressed after ``limit`` of them. In memory (keyed by a hash under a per-process random
    key, never the address): a restart or another replica starts counting again."""

    def __init__(self, limit: int, window_s: float, max_addresses: int = 100_000) -> None:
        self._limit = limit
        self._window_s = window_s
        self._max = max_addresses
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, deque[float]] = {}

    def count(self, address: str, now: float) -> bool:
        """Notes one; True when this one reaches the limit."""
        if self._limit <= 0:
            return False
        key = hmac.new(self._key, address.strip().lower().encode(), hashlib.sha256).digest()
        times = self._seen.pop(key, None) or deque(maxlen=self._limit)
        while times and now - times[0] > self._window_s:
            times.popleft()
        times.append(now)
        self._seen[key] = times  # re-inserted: the dict's order is least recently bounced first
        while len(self._seen) > self._max:
            del self._seen[next(iter(self._seen))]
        return len(times) >= self._limit


@dataclass(frozen=True)
class FeedbackHandler:
    index: OutcomeIndex
    publisher: OutcomePublisher
    codec: Codec
    topic: str
    suppressor: Suppressor | None
    soft_bounces: SoftBounces
    lookup_timeout_s: float = 30.0

    async def handle(self, reports: Sequence[Report], origin: bytes, arrived_at: float) -> None:
        """Publishes each report about one of our sent e-mails. ``origin``: a digest of the
        report as received, from which each record's ``feedback_id`` is derived."""
        for number, report in enumerate(reports):
            await self._one(
                report, hashlib.sha256(origin + number.to_bytes(4, "big")).hexdigest()[:32], arrived_at
            )

    async def _one(self, report: Report, feedback_id: str, arrived_at: float) -> None:
        source = report.source.value
        if report.event_id is None:
            metrics.FEEDBACK_DROPPED.labels(source, "uncorrelated").inc()
            return
        try:
            sent = await self.index.find(report.event_id, arrived_at, self.lookup_timeout_s)
        except IndexLagging:
            metrics.FEEDBACK_RETRY_LATER.labels(source).inc()
            raise TryLater("outcome index behind") from None
        if sent is None:
            metrics.FEEDBACK_DROPPED.labels(source, "uncorrelated").inc()
            return
        outcome_context = _span_context(sent)
        links = [Link(outcome_context)] if outcome_context is not None else []
        with tracer().start_as_current_span(
            f"feedback {source}", kind=SpanKind.CONSUMER, links=links, record_exception=False
        ) as span:
            _annotate(span, report, sent)
            record = _record(report, sent, feedback_id)
            value = self.codec.encode(record, FEEDBACK_SCHEMA, subject=f"{self.topic}-value")
            try:
                await self.publisher.publish(
                    self.topic, sent.order_id.encode(), value, sent.partition, inject_into([])
                )
                await self._suppress(report)
            except PublishError as exc:
                metrics.FEEDBACK_RETRY_LATER.labels(source).inc()
                raise TryLater(str(exc)) from None
        metrics.FEEDBACK.labels(source, report.kind.value, report.bounce_type or "").inc()
        log.info(
            "feedback published",
            extra={"event_id": report.event_id, "kind": report.kind.value, "source": source},
        )

    async def _suppress(self, report: Report) -> None:
        reason = _suppression_reason(report, self.soft_bounces)
        if reason is None or self.suppressor is None or report.recipient is None:
            return
        if not (report.recipient_confirmed or report.source in _SIGNED_SOURCES):
            metrics.SUPPRESSION_REFUSED.labels(report.source.value).inc()
            return
        try:
            await self.suppressor.add(
                report.recipient, reason=reason, source=report.source.value, event_id=report.event_id
            )
        except InvalidAddress:  # a report naming what is no address: feedback, but nothing to suppress
            metrics.SUPPRESSION_REFUSED.labels(report.source.value).inc()
            return
        metrics.SUPPRESSIONS_ADDED.labels(reason).inc()


def _suppression_reason(report: Report, soft_bounces: SoftBounces) -> str | None:
    if report.kind is Kind.COMPLAINED:
        return "complaint"
    if report.kind is not Kind.BOUNCED or report.recipient is None:
        return None
    if report.bounce_type == "hard":
        return "hard_bounce"
    return "soft_bounces" if soft_bounces.count(report.recipient, time.monotonic()) else None


def _record(report: Report, sent: Sent, feedback_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    context = _span_context(sent)
    return {
        "event_id": report.event_id,
        "order_id": sent.order_id,
        "kind": report.kind.value,
        "bounce_type": report.bounce_type,
        "status_code": report.status_code,
        "source": report.source.value,
        "occurred_at": report.occurred_at or now,
        "recipient_domain": sent.recipient_domain,
        "attempt": report.attempt,
        "message_id": sent.message_id,
        "feedback_id": feedback_id,
        "received_at": now,
        "trace_id": sent.trace_id or (f"{context.trace_id:032x}" if context is not None else None),
    }


def _span_context(sent: Sent) -> SpanContext | None:
    """The outcome's trace (its producer span), which the feedback span links to."""
    if sent.traceparent is None:
        return None
    context = trace.get_current_span(context_from([("traceparent", sent.traceparent)])).get_span_context()
    return context if context.is_valid else None


def _annotate(span: Span, report: Report, sent: Sent) -> None:
    span.set_attribute("ordermail.feedback.kind", report.kind.value)
    span.set_attribute("ordermail.feedback.source", report.source.value)
    span.set_attribute("ordermail.event_id", report.event_id or "")
    if report.bounce_type:
        span.set_attribute("ordermail.feedback.bounce_type", report.bounce_type)
    if report.status_code:
        span.set_attribute("ordermail.feedback.status_code", report.status_code)
    span.set_attribute("messaging.destination.partition.id", str(sent.partition))
