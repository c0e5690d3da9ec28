"""Recognises redelivered events that were already handled, without any state of our own.

After a crash or a rebalance, the new owner of an input partition reads the co-partitioned
outcome partition from the position recorded in the last commit's metadata (see
``offsets.py``) up to its end, and remembers the ``event_id`` of every outcome found. An event
redelivered from that partition whose ``event_id`` is among them is not e-mailed again.

What remains: an e-mail the relay accepted whose outcome never reached the broker (the process
died in between, a window of milliseconds) is sent once more; the deterministic ``Message-ID``
lets receiving systems drop it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from consumer.outcomes import OUTCOME_SCHEMA
from schemas import DecodeError

if TYPE_CHECKING:
    from schemas import Codec

__all__ = ["Ledger"]

log = logging.getLogger("ordermail.ledger")


class Ledger:
    def __init__(self, reader_config: dict[str, Any], outcome_topic: str, codec: Codec) -> None:
        self._reader = Consumer(reader_config)
        self._topic = outcome_topic
        self._codec = codec
        self._handled: dict[int, set[str]] = {}

    def is_handled(self, partition: int, event_id: str) -> bool:
        return event_id in self._handled.get(partition, ())

    def end_offset(self, partition: int) -> int:
        return int(self._reader.get_watermark_offsets(TopicPartition(self._topic, partition), timeout=10)[1])

    def load(self, partition: int, from_offset: int, timeout_s: float = 15.0) -> int:
        """Reads outcomes ``[from_offset, end)`` of a partition; returns how many were found."""
        end = self.end_offset(partition)
        handled: set[str] = set()
        if from_offset < end:
            self._reader.assign([TopicPartition(self._topic, partition, from_offset)])
            deadline = time.monotonic() + timeout_s
            position = from_offset
            while position < end and time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None or message.error():
                    continue
                position = (message.offset() or 0) + 1
                try:
                    handled.add(self._codec.decode(message.value() or b"", OUTCOME_SCHEMA)["event_id"])
                except DecodeError:
                    continue
            self._reader.unassign()
            if position < end:
                log.warning("outcome partition %d read incompletely; redeliveries may be re-sent", partition)
        self._handled[partition] = handled
        return len(handled)

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._handled.pop(partition, None)

    def close(self) -> None:
        self._reader.close()
