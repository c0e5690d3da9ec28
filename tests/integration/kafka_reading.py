"""Reading topics and group offsets back, as analytics and operators would."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from schemas import Codec
from schemas.codec import load_schema

OUTCOME_SCHEMA = load_schema("delivery_outcome.avsc")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_records(bootstrap: str, topic: str, *, expected: int, timeout_s: float) -> list[Record]:
    """Reads from the beginning until ``expected`` records arrived (or the time is up)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # offset 0 = from the start
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(
                Record(
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    dict(message.headers() or []),
                )
            )
    finally:
        consumer.close()
    return records


def read_outcomes(
    bootstrap: str, topic: str, *, expected: int, timeout_s: float
) -> list[tuple[Record, dict]]:  # type: ignore[type-arg]
    codec = Codec.from_directory()
    records = read_records(bootstrap, topic, expected=expected, timeout_s=timeout_s)
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
