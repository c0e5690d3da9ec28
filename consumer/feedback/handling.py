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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind

from consumer.feedback.index import IndexLagging, OutcomeIndex, Sent
from consumer.observability import metrics
from consumer.observability.telemetry import context_from, inject_into, tracer
from consumer.processing.ports import PublishError
from delivery.feedback.model import Kind, Report, Source
from delivery.suppression import InvalidAddress, normalise
from schemas import FEEDBACK_SCHEMA

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from consumer.kafka.publisher import OutcomePublisher
    from schemas import Codec

__all__ = ["FeedbackHandler", "SoftBounces", "Suppressor", "TryLater", "credible", "feedback_id"]

log = logging.getLogger("ordermail.feedback")

# Signed by the ESP, which knows whom it sent to; DSN and ARF recipients must match the token.
_SIGNED_SOURCES = frozenset({Source.SES, Source.SENDGRID})
_CREDIBLE_PAST = timedelta(days=30)
_CLOCK_SKEW = timedelta(minutes=5)


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
        # Both in the order of their latest bounce, oldest first: what the window has left
        # behind is at the front, and goes (~320 bytes an address with its report's id: a deque
        # each took ~1 KB, ~100 MB at the cap, and stayed once the window had passed).
        self._seen: dict[bytes, tuple[float, ...]] = {}
        self._reports: dict[str, float] = {}  # feedback ids counted already, and when

    def count(self, address: str, now: float, feedback_id: str = "") -> bool:
        """Notes one; True when this one reaches the limit. A report counted before (the same
        ``feedback_id``: redelivered, replayed) within the window is not counted again."""
        self._forget_before(now - self._window_s)
        if self._limit <= 0 or (feedback_id and feedback_id in self._reports):
            return False
        if feedback_id:
            self._reports[feedback_id] = now
        try:  # the suppression list's form: case and IDN spellings of one address count together
            folded = normalise(address)
        except InvalidAddress:
            folded = address.strip().lower()
        key = hmac.new(self._key, folded.encode(), hashlib.sha256).digest()
        earlier = self._seen.pop(key, ())
        times = (*(t for t in earlier if now - t <= self._window_s), now)[-self._limit :]
        self._seen[key] = times  # re-inserted: the dict's order is least recently bounced first
        while len(self._seen) > self._max:
            del self._seen[next(iter(self._seen))]
        while len(self._reports) > self._max:
            del self._reports[next(iter(self._reports))]
        return len(times) >= self._limit

    def forget(self, feedback_id: str) -> None:
        """Counts that report again when it comes again (its suppression was not written)."""
        self._reports.pop(feedback_id, None)

    def _forget_before(self, cutoff: float) -> None:
        while self._seen and self._seen[address := next(iter(self._seen))][-1] < cutoff:
            del self._seen[address]
        while self._reports and self._reports[report := next(iter(self._reports))] < cutoff:
            del self._reports[report]

    @property
    def addresses(self) -> int:
        """How many addresses have a soft bounce within the window."""
        return len(self._seen)


@dataclass(frozen=True)
class FeedbackHandler:
    index: OutcomeIndex
    publisher: OutcomePublisher
    codec: Codec
    topic: str
    suppressor: Suppressor | None
    soft_bounces: SoftBounces
    lookup_timeout_s: float = 30.0

    async def handle(self, reports: Sequence[Report], arrived_at: float) -> None:
        """Publishes each report about one of our sent e-mails; :class:`TryLater` when any could
        not be settled now, whatever the cause (never an error the sender would take as final)."""
        for report in credible(reports):
            try:
                await self._one(report, feedback_id(report), arrived_at)
            except TryLater:
                raise
            except Exception as exc:  # noqa: BLE001 - a registry, the suppression topic...: it comes again
                log.error("feedback not settled", extra={"error.type": type(exc).__name__})
                metrics.FEEDBACK_RETRY_LATER.labels(report.source.value).inc()
                raise TryLater(type(exc).__name__) from None

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
            # No order to file it under (older than the index reaches), but a report whose token
            # was made for its recipient still proves the address bounced or complained.
            metrics.FEEDBACK_DROPPED.labels(source, "uncorrelated").inc()
            await self._suppress(report, feedback_id)
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
                await self._suppress(report, feedback_id)
            except PublishError as exc:
                metrics.FEEDBACK_RETRY_LATER.labels(source).inc()
                raise TryLater(str(exc)) from None
        metrics.FEEDBACK.labels(source, report.kind.value, report.bounce_type or "").inc()
        log.info(
            "feedback published",
            extra={"event_id": report.event_id, "kind": report.kind.value, "source": source},
        )

    async def _suppress(self, report: Report, feedback_id: str) -> None:
        if report.recipient is None or report.kind not in (Kind.BOUNCED, Kind.COMPLAINED):
            return
        if not (report.recipient_confirmed or report.source in _SIGNED_SOURCES):
            # Checked before anything is counted: an unconfirmed address must not even move
            # closer to suppression (soft bounces), or a customer could prime someone else's.
            metrics.SUPPRESSION_REFUSED.labels(report.source.value).inc()
            return
        reason = _suppression_reason(report, report.recipient, self.soft_bounces, feedback_id)
        if reason is None or self.suppressor is None:
            return
        try:
            await self.suppressor.add(
                report.recipient, reason=reason, source=report.source.value, event_id=report.event_id
            )
        except InvalidAddress:  # a report naming what is no address: feedback, but nothing to suppress
            metrics.SUPPRESSION_REFUSED.labels(report.source.value).inc()
            return
        except Exception:
            # Not written: the report comes again (TryLater), and must count again then, or the
            # bounce that reached the limit would have suppressed nobody.
            self.soft_bounces.forget(feedback_id)
            raise
        metrics.SUPPRESSIONS_ADDED.labels(reason).inc()


def _suppression_reason(
    report: Report, recipient: str, soft_bounces: SoftBounces, feedback_id: str
) -> str | None:
    """For a report ``_suppress`` has checked: a complaint or a bounce, naming its recipient."""
    if report.kind is Kind.COMPLAINED:
        return "complaint"
    if report.bounce_type == "hard":
        return "hard_bounce"
    counted = soft_bounces.count(recipient, time.monotonic(), feedback_id)
    return "soft_bounces" if counted else None


def credible(reports: Sequence[Report]) -> list[Report]:
    """What a report may publish. An e-mail has one recipient: of a DSN's or complaint's blocks,
    those whose recipient the token was made for, else only the first, so one report cannot
    multiply records (or alerts) for its event. ESP events are signed and kept as they are."""
    signed = [r for r in reports if r.source in _SIGNED_SOURCES]
    reported = [r for r in reports if r.source not in _SIGNED_SOURCES]
    confirmed = [r for r in reported if r.recipient_confirmed]
    return signed + (confirmed[:1] or reported[:1])


def feedback_id(report: Report) -> str:
    """The same for every delivery of the same news about the same e-mail (a relay retrying, a
    webhook replayed, a report altered in a detail): consumers drop duplicates by it."""
    facts = (report.event_id, report.attempt, report.kind.value, report.source.value, report.bounce_type)
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:32]


def _record(report: Report, sent: Sent, feedback_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    # The report's own date is the sender's to write: believed only within bounds.
    occurred = report.occurred_at
    if occurred is None or not now - _CREDIBLE_PAST <= occurred <= now + _CLOCK_SKEW:
        occurred = now
    context = _span_context(sent)
    return {
        "event_id": sent.event_id or report.event_id,  # as the event and its outcome spell it
        "order_id": sent.order_id,
        "kind": report.kind.value,
        "bounce_type": report.bounce_type,
        "status_code": report.status_code,
        "source": report.source.value,
        "occurred_at": occurred,
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
