"""The feedback service's outcome index (issue 19): a bounce can arrive before its outcome is on
the topic; the index answers once it has read far enough, and says so when it cannot."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.feedback.index import IndexLagging, OutcomeIndex
from schemas import OUTCOME_SCHEMA, Codec

CODEC = Codec.from_directory()
EVENT = "2f1c8f0e-9a4b-4c1e-8e3a-0a1b2c3d4e5f"


@dataclass
class FakeMessage:
    _partition: int
    _value: bytes | None = None
    _eof: bool = False

    def error(self) -> Any:
        return (
            SimpleNamespace(code=lambda: KafkaError._PARTITION_EOF, fatal=lambda: False)
            if self._eof
            else None
        )

    def partition(self) -> int:
        return self._partition

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]


class FakeConsumer:
    """One partition; batches handed over by the test, end-of-partition whenever asked."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list[FakeMessage]] = queue.Queue()

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={3: None})})

    def offsets_for_times(self, partitions: list[Any], timeout: float) -> list[Any]:
        return [SimpleNamespace(partition=tp.partition, offset=0) for tp in partitions]

    def assign(self, partitions: list[Any]) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            return []

    def close(self) -> None:
        pass


def _outcome(event_id: str, status: str = "SENT") -> FakeMessage:
    value = CODEC.encode(
        {
            "event_id": event_id,
            "order_id": "ORD-7",
            "status": status,
            "attempt": 1,
            "occurred_at": 0,
            "recipient_domain": "customer.example",
            "trace_id": "1" * 32,
        },
        OUTCOME_SCHEMA,
    )
    return FakeMessage(3, value)


@pytest.fixture
def index() -> Any:
    consumer = FakeConsumer()
    built = OutcomeIndex(consumer, CODEC, "outcomes", window_s=3600, max_entries=2, settle_s=0.2)  # type: ignore[arg-type]
    built.start()
    yield built, consumer
    built.close()


def test_an_outcome_published_after_the_bounce_arrived_is_still_found(index: Any) -> None:
    built, consumer = index

    async def scenario() -> Any:
        arrived = time.monotonic()
        looking = asyncio.create_task(built.find(EVENT, arrived, timeout_s=10))
        consumer.batches.put([FakeMessage(3, _eof=True)])  # at the end, but within the settle time
        await asyncio.sleep(0)
        consumer.batches.put([_outcome(EVENT)])
        return await looking

    sent = asyncio.run(scenario())
    assert (sent.order_id, sent.partition, sent.recipient_domain) == ("ORD-7", 3, "customer.example")
    assert sent.traceparent.startswith(b"00-1111")


def test_unknown_events_are_unknown_only_once_the_index_has_read_far_enough(index: Any) -> None:
    built, consumer = index
    consumer.batches.put([_outcome("7d9f3c1e-0000-4000-8000-000000000000", status="FAILED")])
    consumer.batches.put([FakeMessage(3, _eof=True)])
    started = time.monotonic()
    assert asyncio.run(built.find(EVENT, started, timeout_s=10)) is None
    assert time.monotonic() - started >= 0.2  # not before the settle time
    assert built.loaded
    assert "7d9f3c1e-0000-4000-8000-000000000000" not in built._entries  # only SENT is kept


def test_an_index_that_cannot_reach_the_end_says_it_is_lagging(index: Any) -> None:
    built, consumer = index
    for _ in range(30):  # always more to read, never the end
        consumer.batches.put([_outcome("7d9f3c1e-0000-4000-8000-00000000000a")])
    with pytest.raises(IndexLagging):
        asyncio.run(built.find(EVENT, time.monotonic(), timeout_s=0.3))
    assert len(built) <= 2  # bounded


def test_a_busy_topic_still_counts_as_read_to_its_end(index: Any) -> None:
    """Outcomes arriving every poll (a busy shop) never leave an empty batch: the index must
    still know how far it has read, from each partition's end-of-partition events."""
    built, consumer = index
    feeding = threading.Event()

    def feed() -> None:  # a batch every 50 ms, each with a record and the end it reaches
        for n in range(60):
            if feeding.is_set():
                return
            consumer.batches.put([_outcome(f"7d9f3c1e-0000-4000-8000-{n:012d}"), FakeMessage(3, _eof=True)])
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        assert asyncio.run(built.find(EVENT, time.monotonic(), timeout_s=2)) is None
        assert built.loaded
    finally:
        feeding.set()
        feeder.join()


@pytest.mark.parametrize(
    "spelled", [EVENT.upper(), "{" + EVENT + "}", "urn:uuid:" + EVENT, EVENT.replace("-", "")]
)
def test_an_event_id_spelled_otherwise_is_found_by_the_form_reports_carry(index: Any, spelled: str) -> None:
    """The validation accepts any UUID spelling; tokens and Message-IDs give the lower-case form.
    The feedback record keeps the event's own spelling, as its outcome does."""
    built, consumer = index
    consumer.batches.put([_outcome(spelled)])
    consumer.batches.put([FakeMessage(3, _eof=True)])
    sent = asyncio.run(built.find(EVENT, time.monotonic(), timeout_s=10))
    assert sent is not None
    assert sent.event_id == spelled


def test_an_outcome_the_registry_cannot_resolve_yet_is_waited_for_not_skipped() -> None:
    """Skipped, its bounce would never find its order; meanwhile reports are asked to come again."""
    from schemas import SchemaRegistryUnavailable

    failures = [1]

    class Flaky(Codec):
        def decode(self, data: bytes, reader: Any) -> dict[str, Any]:
            if failures:
                failures.pop()
                raise SchemaRegistryUnavailable("unknown_schema", "registry id 9: ConnectError")
            return CODEC.decode(data, reader)

    consumer = FakeConsumer()
    built = OutcomeIndex(consumer, Flaky(), "outcomes", window_s=3600, max_entries=2, settle_s=0.2)  # type: ignore[arg-type]
    built.start()
    try:
        consumer.batches.put([_outcome(EVENT)])
        consumer.batches.put([FakeMessage(3, _eof=True)])
        sent = asyncio.run(built.find(EVENT, time.monotonic(), timeout_s=10))
    finally:
        built.close()
    assert sent is not None
    assert failures == []
