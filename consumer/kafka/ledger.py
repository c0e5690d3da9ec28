"""Recognises redelivered events that were already handled, without any state of our own.

After a crash or a rebalance, the new owner of an input partition reads the co-partitioned
outcome partition from the position recorded in the last commit's metadata (see
``offsets.py``) up to its end, and remembers the ``event_id`` of every outcome found. An event
redelivered from that partition whose ``event_id`` is among them is not e-mailed again.

A partition taken on with no such commit (a new group, offsets reset by hand) is anchored
before any of its events is consumed: its position is committed with the outcome partition's
current end (see ``handover.py``), so a later owner always has a place to read from.

What remains: an e-mail the relay accepted whose outcome never reached the broker (the process
died in between, a window of milliseconds) is sent once more; the deterministic ``Message-ID``
lets receiving systems drop it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from consumer.kafka.clients import answered, close_with_timeout
from consumer.processing.outcomes import OUTCOME_SCHEMA
from schemas import DecodeError

if TYPE_CHECKING:
    from schemas import Codec

__all__ = ["Ledger"]

log = logging.getLogger("ordermail.ledger")


class Ledger:
    def __init__(self, reader_config: dict[str, Any], outcome_topic: str, codec: Codec) -> None:
        self._reader_config = reader_config
        self._reader = Consumer(reader_config)
        self._topic = outcome_topic
        self._codec = codec
        self._handled: dict[int, set[str]] = {}

    def is_handled(self, partition: int, event_id: str) -> bool:
        return event_id in self._handled.get(partition, ())

    def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        """One request for all partitions (``OFFSET_END`` asks for the end); ``KafkaException``
        when a partition's end is unknown (its leader moving): never taken as an empty partition."""
        self._renew_reader()  # each takeover starts here
        wanted = [TopicPartition(self._topic, p, OFFSET_END) for p in sorted(partitions)]
        answer = answered(self._reader.offsets_for_times(wanted, timeout=10))
        return {tp.partition: tp.offset for tp in answer}

    def load(self, starts: dict[int, int], ends: dict[int, int], timeout_s: float = 15.0) -> dict[int, int]:
        """Reads outcomes ``[start, end)`` of each partition at once; returns how many each had."""
        handled: dict[int, set[str]] = {p: set() for p in starts}
        positions = {p: start for p, start in starts.items() if start < ends[p]}
        if positions:
            self._reader.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
            deadline = time.monotonic() + timeout_s
            while any(positions[p] < ends[p] for p in positions) and time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None or message.error():
                    continue
                partition = int(message.partition() or 0)
                positions[partition] = (message.offset() or 0) + 1
                try:
                    outcome = self._codec.decode(message.value() or b"", OUTCOME_SCHEMA)
                except DecodeError:
                    continue
                handled[partition].add(outcome["event_id"])
            self._reader.unassign()
            incomplete = sorted(p for p in positions if positions[p] < ends[p])
            if incomplete:
                log.warning("outcome partitions %s read in part: redeliveries may be re-sent", incomplete)
        self._handled.update(handled)
        return {p: len(ids) for p, ids in handled.items()}

    def _renew_reader(self) -> None:
        """The reader idles between takeovers, so nothing tells it that leaders moved: after a
        broker was killed it kept asking that broker until its metadata aged out (5 min). A new
        client per takeover learns the leaders afresh (a takeover is rare; a client costs ms)."""
        close_with_timeout(self._reader, timeout_s=5)
        self._reader = Consumer(self._reader_config)

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._handled.pop(partition, None)

    def close(self) -> None:
        self._reader.close()
