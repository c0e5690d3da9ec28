"""Outcome events and dead letters, and the producer that publishes them.

Each outcome goes to the same partition number as its input record (co-partitioning is explicit,
not left to key hashing), keyed by ``order_id``. Callers await the broker's acknowledgement:
an offset is committed only after that.
"""

from __future__ import annotations

import asyncio
import threading
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
    from consumer.records import Headers, Inbound
    from schemas import Codec, DeliveryOutcome, DeliveryStatus

__all__ = ["OutcomePublisher", "PublishError", "dead_letter_headers", "outcome_for"]

OUTCOME_SCHEMA = load_schema("delivery_outcome.avsc")


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


# Refusals that are about the record itself (its size, its partition), not the broker's state:
# sending the same record again would fail the same way, so the pipeline settles it otherwise.
_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    }
)


class PublishError(Exception):
    """The broker did not acknowledge a record; its offset must not be committed.

    ``record_level``: the broker (or librdkafka) refused this record for what it is, so trying it
    again cannot help; otherwise the broker is unreachable or refusing everything for now."""

    def __init__(self, topic: str, error: KafkaError) -> None:
        super().__init__(f"{topic}: {error.name()}")
        self.record_level = error.code() in _RECORD_ERRORS


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

    async def publish_dead_letter(
        self, inbound: Inbound, headers: Headers, *, omit_record: bool = False
    ) -> int:
        """The record as it came (``omit_record``: its key and value left out, for a record the
        dead-letter topic refused; the headers then say where the original is)."""
        if omit_record:
            return await self._produce(self._dlq_topic, None, None, None, headers)
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
                PublishError(topic, error) if error is not None else message.offset() or 0
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
                raise PublishError(topic, exc.args[0]) from None
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


def _settle(future: asyncio.Future[int], result: int | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
