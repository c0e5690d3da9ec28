"""The idempotent producer that publishes outcomes, dead letters and deferred records, and
reports each broker acknowledgement back to the event loop that awaits it.

Callers await the acknowledgement: an offset is committed only after that. A refusal is a
:class:`PublishError` that says whether the record itself was refused (its size, its partition)
or the broker is unreachable or refusing everything for now.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.trace import SpanKind

from consumer.observability.telemetry import inject_into, producer_span_attributes, tracer
from consumer.processing.ports import PublishError
from schemas import OUTCOME_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.processing.records import Headers, Inbound
    from schemas import Codec, DeliveryOutcome

__all__ = ["AcknowledgedProducer", "AcknowledgementWatch", "OutcomePublisher", "PublishError"]


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


def _refused(topic: str, error: KafkaError) -> PublishError:
    return PublishError(f"{topic}: {error.name()}", record_level=error.code() in _RECORD_ERRORS)


class AcknowledgementWatch:
    """How long the broker has kept records waiting without acknowledging any of them: a cluster
    refusing writes (fewer in-sync replicas than ``min.insync.replicas``, no leader) shows as
    records waiting while librdkafka retries, not as an error, until the delivery timeout.

    Written from the event loop (sent) and the callback thread (acknowledged), read by the probes.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0
        self._since = clock()  # the last acknowledgement, or when the first record began to wait

    def sent(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = self._clock()
            self._waiting += 1

    def withdrawn(self) -> None:
        """A record counted as sent that the client did not take after all."""
        with self._lock:
            self._waiting = max(0, self._waiting - 1)

    def acknowledged(self) -> None:
        """An answer for one record, an acknowledgement or a refusal: the broker is answering."""
        with self._lock:
            self._waiting = max(0, self._waiting - 1)
            self._since = self._clock()

    def stalled(self) -> tuple[int, float]:
        """Records waiting and the seconds since the broker last answered for any ((0, 0.0): none wait)."""
        with self._lock:
            if self._waiting == 0:
                return 0, 0.0
            return self._waiting, self._clock() - self._since


class AcknowledgedProducer:
    """A producer and the thread that serves its delivery callbacks: each record produced is
    awaited until the broker acknowledged it (its offset) or refused it (:class:`PublishError`)."""

    def __init__(self, producer: Producer, thread_name: str) -> None:
        self._producer = producer
        self._running = True
        self.acknowledgements = AcknowledgementWatch()
        self._poller = threading.Thread(target=self._serve_callbacks, name=thread_name, daemon=True)
        self._poller.start()

    async def produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, headers: Headers
    ) -> int:
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[int] = loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            self.acknowledgements.acknowledged()
            result: int | Exception = _refused(topic, error) if error is not None else message.offset() or 0
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
            # Counted before produce: its callback may run on the other thread before produce returns.
            self.acknowledgements.sent()
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:  # local queue full: wait for acknowledgements to drain it
                self.acknowledgements.withdrawn()
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                self.acknowledgements.withdrawn()
                raise _refused(topic, exc.args[0]) from None
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


class OutcomePublisher:
    """Publishes outcomes, dead letters and deferred records through one :class:`AcknowledgedProducer`."""

    def __init__(
        self, producer: Producer, codec: Codec, *, outcome_topic: str, dlq_topic: str, retry_topic: str
    ) -> None:
        self._retry_topic = retry_topic
        self._codec = codec
        self._outcome_topic = outcome_topic
        self._dlq_topic = dlq_topic
        self._sender = AcknowledgedProducer(producer, "producer-callbacks")
        self.acknowledgements = self._sender.acknowledgements

    async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int:
        value = self._codec.encode(outcome, OUTCOME_SCHEMA, subject=f"{self._outcome_topic}-value")
        with tracer().start_as_current_span(
            f"send {self._outcome_topic}",
            kind=SpanKind.PRODUCER,
            attributes=producer_span_attributes(self._outcome_topic, partition),
            record_exception=False,
        ):
            # The outcome carries the trace on, so analytics can join it.
            headers = inject_into([])
            return await self._sender.produce(
                self._outcome_topic, outcome["order_id"].encode(), value, partition, headers
            )

    async def publish_dead_letter(
        self, inbound: Inbound, headers: Headers, *, omit_record: bool = False
    ) -> int:
        """The record as it came (``omit_record``: its key and value left out, for a record the
        dead-letter topic refused; the headers then say where the original is)."""
        if omit_record:
            return await self._sender.produce(self._dlq_topic, None, None, None, headers)
        return await self._sender.produce(self._dlq_topic, inbound.key, inbound.value, None, headers)

    async def publish_retry(self, inbound: Inbound, headers: Headers) -> int:
        return await self._sender.produce(
            self._retry_topic, inbound.key, inbound.value, inbound.origin.partition, headers
        )

    async def publish(
        self, topic: str, key: bytes, value: bytes, partition: int | None, headers: Headers
    ) -> int:
        """Any other record (feedback), acknowledged like an outcome."""
        return await self._sender.produce(topic, key, value, partition, headers)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flushes and stops; returns the number of records still unacknowledged."""
        return self._sender.close(timeout_s)


def _settle(future: asyncio.Future[int], result: int | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
