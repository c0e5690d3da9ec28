"""Reading a topic and a group's offsets back, as analytics and operators would.

Used by the demo, the benchmark and the integration tests; not by the service itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumer.processing.records import message_headers
from schemas import OUTCOME_SCHEMA, Codec

__all__ = ["Record", "committed_and_end", "read_outcomes", "read_records"]


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_records(
    bootstrap: str,
    topic: str,
    *,
    expected: int | None,
    timeout_s: float,
    keep: Callable[[Record], bool] = lambda _: True,
) -> list[Record]:
    """Reads from the beginning until ``expected`` kept records arrived, or with ``expected``
    None until the end the topic had when reading began (or, either way, the time is up)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,  # the end, past transaction markers (dlq redrive writes some)
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # offset 0 = from the start
    # Without an expected count: read what is there now, up to each partition's current end.
    ends = (
        {}
        if expected is not None
        else {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions}
    )
    positions = dict.fromkeys(partitions, 0)
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if expected is not None and len(records) >= expected:
                break
            if expected is None and all(positions[p] >= ends[p] for p in partitions):
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if expected is None and error.code() == KafkaError._PARTITION_EOF:
                    partition = message.partition() or 0
                    positions[partition] = max(positions[partition], ends[partition])
                continue
            positions[message.partition() or 0] = (message.offset() or 0) + 1
            record = Record(
                message.partition() or 0,
                message.offset() or 0,
                message.timestamp()[1],
                message.key(),
                message.value(),
                dict(message_headers(message)),
            )
            if keep(record):
                records.append(record)
    finally:
        consumer.close()
    return records


def read_outcomes(
    bootstrap: str,
    topic: str,
    *,
    expected: int | None,
    timeout_s: float,
    codec: Codec | None = None,
    order_ids: set[str] | None = None,
) -> list[tuple[Record, dict[str, Any]]]:
    """Decoded outcomes, optionally only those of ``order_ids``."""
    codec = codec or Codec.from_directory()
    wanted = None if order_ids is None else {order_id.encode() for order_id in order_ids}
    records = read_records(
        bootstrap,
        topic,
        expected=expected,
        timeout_s=timeout_s,
        keep=lambda r: wanted is None or r.key in wanted,
    )
    return [(r, codec.decode(r.value or b"", OUTCOME_SCHEMA)) for r in records]


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the log end offset, per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}, ends
