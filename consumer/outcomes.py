"""Outcome events and dead letters, and the producer that publishes them.

Each outcome goes to the same partition number as its input record (co-partitioning is explicit,
not left to key hashing), keyed by ``order_id``. Callers await the broker's acknowledgement:
an offset is committed only after that.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from consumer.telemetry import (
    DESTINATION,
    MESSAGING_SYSTEM,
    OPERATION_NAME,
    OPERATION_TYPE,
    PARTITION,
    inject_into,
    tracer,
)
from schemas.codec import load_schema

if TYPE_CHECKING:
    from schemas import Codec, DeliveryOutcome, DeliveryStatus

__all__ = ["Inbound", "OutcomePublisher", "dead_letter_headers", "message_headers", "outcome_for"]

OUTCOME_SCHEMA = load_schema("delivery_outcome.avsc")
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Inbound:
    """One consumed record, detached from librdkafka's Message so it can cross threads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @classmethod
    def from_message(cls, message: Message) -> Inbound:
        return cls(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=message_headers(message),
            timestamp_ms=message.timestamp()[1],
        )

    @property
    def order_key(self) -> str:
        return (self.key or b"").decode("utf-8", errors="replace")

    def surrogate_event_id(self) -> str:
        """For records we could not decode: stable across redeliveries of the same record."""
        origin = self.origin
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{origin.topic}/{origin.partition}/{origin.offset}"))

    def header(self, name: str) -> str | None:
        value = next((v for k, v in reversed(self.headers) if k == name), None)
        return None if value is None else value.decode("utf-8", errors="replace")

    @property
    def origin(self) -> Origin:
        """Where the event was first published: a deferred event keeps it through the retry topic."""
        topic, partition, offset, timestamp = (self.header(f"{ORIGIN_PREFIX}{f}") for f in ORIGIN_FIELDS)
        if topic is None or partition is None or offset is None:
            return Origin(self.topic, self.partition, self.offset, self.timestamp_ms)
        return Origin(topic, int(partition), int(offset), int(timestamp or 0))

    def foreign_headers(self) -> Headers:
        """The producer's own headers, without the ones we added on earlier passes."""
        return [(k, v) for k, v in self.headers if not k.startswith("ordermail.")]


ORIGIN_PREFIX = "ordermail.original."
ORIGIN_FIELDS = ("topic", "partition", "offset", "timestamp")


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def headers(self) -> Headers:
        values = (self.topic, str(self.partition), str(self.offset), str(self.timestamp_ms))
        return [(f"{ORIGIN_PREFIX}{f}", v.encode()) for f, v in zip(ORIGIN_FIELDS, values, strict=True)]


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


def dead_letter_headers(inbound: Inbound, *, status: str, reason: str, group_id: str) -> Headers:
    """The original headers plus where the record came from and why it is here (no free text)."""
    added = {
        "ordermail.error.class": reason,
        "ordermail.error.status": status,
        "ordermail.error.message": f"{status.lower()}: {reason}",
        "ordermail.consumer.group": group_id,
    }
    return [
        *inbound.foreign_headers(),
        *inbound.origin.headers(),
        *((k, v.encode()) for k, v in added.items()),
    ]


class PublishError(Exception):
    """The broker did not acknowledge a record; its offset must not be committed."""


class OutcomePublisher:
    """Owns the idempotent producer and the thread that serves its delivery callbacks."""

    def __init__(
        self, producer: Producer, codec: Codec, *, outcome_topic: str, dlq_topic: str, retry_topic: str
    ) -> None:
        self._retry_topic = retry_topic
        self._producer = producer
        self._codec = codec
        self._outcome_topic = outcome_topic
        self._dlq_topic = dlq_topic
        self._running = True
        self._poller = threading.Thread(target=self._serve_callbacks, name="producer-callbacks", daemon=True)
        self._poller.start()

    async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int:
        value = self._codec.encode(outcome, OUTCOME_SCHEMA, subject=f"{self._outcome_topic}-value")
        attributes = {
            MESSAGING_SYSTEM: "kafka",
            DESTINATION: self._outcome_topic,
            PARTITION: str(partition),
            OPERATION_TYPE: "send",
            OPERATION_NAME: "send",
        }
        with tracer().start_as_current_span(
            f"send {self._outcome_topic}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
        ):
            # The outcome carries the trace on, so analytics can join it.
            headers = inject_into([])
            return await self._produce(
                self._outcome_topic, outcome["order_id"].encode(), value, partition, headers
            )

    async def publish_dead_letter(self, inbound: Inbound, headers: Headers) -> int:
        return await self._produce(self._dlq_topic, inbound.key, inbound.value, None, headers)

    async def publish_retry(self, inbound: Inbound, headers: Headers) -> int:
        return await self._produce(
            self._retry_topic, inbound.key, inbound.value, inbound.origin.partition, headers
        )

    async def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, headers: Headers
    ) -> int:
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[int] = loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            result: int | Exception = (
                PublishError(f"{topic}: {error.name()}") if error is not None else message.offset() or 0
            )
            loop.call_soon_threadsafe(_settle, acknowledged, result)

        kwargs: dict[str, Any] = {
            "key": key,
            "value": value,
            "headers": list(headers),
            "on_delivery": on_delivery,
        }
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:  # local queue full: wait for acknowledgements to drain it
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                raise PublishError(f"{topic}: {exc.args[0].name()}") from None
        return await acknowledged

    def close(self, timeout_s: float = 10.0) -> int:
        """Flushes and stops; returns the number of records still unacknowledged."""
        remaining = int(self._producer.flush(timeout_s))
        self._running = False
        self._poller.join(timeout=2)
        return remaining

    def _serve_callbacks(self) -> None:
        while self._running:
            self._producer.poll(0.1)


def message_headers(message: Message) -> Headers:
    raw: Any = message.headers() or []
    return [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in raw]


def _settle(future: asyncio.Future[int], result: int | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
