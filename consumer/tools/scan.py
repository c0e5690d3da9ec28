"""What the operator commands share: a Kafka connection that fails with a clear message, reading
partitions to their end (a progress bar on a terminal), and the rules for what they print.

Every command reads its settings as ``ordermail run`` does (environment, ``KAFKA_CONFIG_*``).
Nothing prints personal data unless asked with ``--show-personal-data``, and that flag is refused
when standard output is not a terminal (a pipe or a file would keep it).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.kafka.clients import consumer_config, error_name, producer_config
from schemas import DecodeError, SchemaRegistryUnavailable

if TYPE_CHECKING:
    from confluent_kafka import Message

    from consumer.app.settings import Settings
    from schemas import Codec
    from schemas.codec import Schema

__all__ = ["Progress", "Reader", "ToolError", "check_personal_data_flag", "decoded", "tool_producer_config"]

_QUIET = logging.getLogger("ordermail.tools.kafka")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())
_IDLE_LIMIT_S = 30.0  # no record and no end of partition for this long: the broker went away


def tool_producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The service's producer settings (murmur2, idempotent, ``acks=all``), librdkafka's logs quiet."""
    return producer_config(settings, **{"client.id": "ordermail-tools", "logger": _QUIET, **overrides})


class ToolError(Exception):
    """A failure the operator is told about in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def decoded(codec: Codec, data: bytes, schema: Schema) -> dict[str, Any] | None:
    """The record, or None when it cannot be read. A registry that does not answer says nothing
    of the record (:class:`~schemas.SchemaRegistryUnavailable` goes up): a tool that took it for
    unreadable could miss a ``SENT`` and e-mail a customer again."""
    try:
        return codec.decode(data, schema)
    except SchemaRegistryUnavailable:
        raise
    except DecodeError:
        return None


def check_personal_data_flag(asked: bool, stream: TextIO | None = None) -> None:
    if asked and not (stream or sys.stdout).isatty():
        raise ToolError("--show-personal-data is refused when standard output is not a terminal", code=2)


class Progress:
    """A one-line bar on standard error, only when it is a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._label, self._total, self._done, self._shown = label, max(total, 1), 0, -1.0
        self._on = self._stream.isatty() and total > 0

    def advance(self, count: int = 1) -> None:
        self._done += count
        share = min(1.0, self._done / self._total)
        if self._on and share - self._shown >= 0.01:
            self._shown = share
            bar = "#" * int(share * 30)
            self._stream.write(f"\r{self._label} [{bar:<30}] {self._done}/{self._total}")
            self._stream.flush()

    def close(self) -> None:
        if self._on:
            self._stream.write("\n")


@dataclass
class _Position:
    next_offset: int
    end: int


class Reader:
    """One consumer for a command's reads (``read_committed``, never committing by itself)."""

    def __init__(self, settings: Settings, group_id: str | None = None) -> None:
        self.settings = settings
        self.group_id = group_id or f"{settings.group_id}.tools"
        config = consumer_config(
            settings,
            **{
                "group.id": self.group_id,
                "enable.partition.eof": True,
                "queued.min.messages": 10_000,
                "max.partition.fetch.bytes": 1_048_576,
                "queued.max.messages.kbytes": 65_536,
                "client.id": "ordermail-tools",
                "logger": _QUIET,  # librdkafka's own lines: the command says what failed, once
            },
        )
        self.consumer = Consumer(config)
        try:
            self._metadata = self.consumer.list_topics(timeout=10)
        except KafkaException as exc:
            self.close()
            raise ToolError(
                f"cannot reach Kafka at {settings.bootstrap_servers} ({error_name(exc)})"
            ) from None

    def partitions(self, topic: str) -> list[int]:
        found = self._metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ToolError(
                f"topic {topic} does not exist (or is not readable) at {self.settings.bootstrap_servers}"
            )
        return sorted(found.partitions)

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """The first offset kept and the end."""
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
        except KafkaException as exc:
            raise ToolError(f"cannot read {topic} [{partition}] ({error_name(exc)})") from None
        return int(low), int(high)

    def offset_at(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset at or after the time (the end when there is none)."""
        try:
            (found,) = self.consumer.offsets_for_times(
                [TopicPartition(topic, partition, max(0, timestamp_ms))], timeout=15
            )
        except KafkaException as exc:
            raise ToolError(f"cannot read {topic} [{partition}] ({error_name(exc)})") from None
        return int(found.offset) if found.offset >= 0 else self.bounds(topic, partition)[1]

    def holds_since(self, topic: str, partition: int, timestamp_ms: int) -> bool:
        """Whether the partition still holds every record written from the time on: nothing was
        ever deleted, or a record older than the time is still kept."""
        low, _ = self.bounds(topic, partition)
        return low == 0 or self.offset_at(topic, partition, timestamp_ms) > low

    def committed(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """This reader's group's committed offsets (partitions never committed are left out)."""
        try:
            answer = self.consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        except KafkaException as exc:
            raise ToolError(
                f"cannot read the progress of group {self.group_id} ({error_name(exc)})"
            ) from None
        return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}

    def read(self, topic: str, starts: dict[int, int], label: str) -> Iterator[Message]:
        """Every record of each partition from its start to the end it has now, partitions read
        together; a broker that stops answering ends the read with a :class:`ToolError`."""
        positions: dict[int, _Position] = {}
        for partition, start in starts.items():
            low, high = self.bounds(topic, partition)
            if max(start, low) < high:
                positions[partition] = _Position(max(start, low), high)
        progress = Progress(label, sum(p.end - p.next_offset for p in positions.values()))
        if not positions:
            return
        self.consumer.assign([TopicPartition(topic, p, pos.next_offset) for p, pos in positions.items()])
        last_heard = time.monotonic()
        try:
            while positions:
                if time.monotonic() - last_heard > _IDLE_LIMIT_S:
                    raise ToolError(f"reading {topic} stopped: no answer for {_IDLE_LIMIT_S:.0f} s")
                message = self.consumer.poll(0.5)
                if message is None:
                    continue
                last_heard = time.monotonic()
                partition = int(message.partition() or 0)
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        positions.pop(partition, None)  # the end, past any transaction markers
                    elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise ToolError(f"reading {topic} failed ({error.name()})")
                    continue
                position = positions.get(partition)
                if position is None:
                    continue
                offset = int(message.offset() or 0)
                progress.advance(offset + 1 - position.next_offset)
                position.next_offset = offset + 1
                yield message
                if position.next_offset >= position.end:
                    positions.pop(partition, None)
        finally:
            progress.close()
            self.consumer.unassign()

    def group_metadata(self) -> Any:
        return self.consumer.consumer_group_metadata()

    def close(self) -> None:
        self.consumer.close()
