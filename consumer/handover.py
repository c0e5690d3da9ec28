"""Taking an input partition over without e-mailing anyone twice.

A newly assigned input partition stays paused until

1. its events still in flight from an earlier assignment to this process have finished, so
   their outcomes are on the broker before the ledger is read (or a time limit has passed);
2. the ledger has read the outcomes recorded since the group's last commit (see ``ledger.py``);
3. the group's committed offset carries an outcome position (see ``offsets.py``). A partition
   without one (a new group, offsets reset by hand) is anchored first: its start position is
   committed with the outcome partition's current end, and it is released once the broker has
   confirmed that commit. Without the anchor, a partition lost before its first commit (a
   broker restart, a session timeout) would have nothing to read and all of it would be sent
   again.

It all runs from the poll loop, never inside a rebalance callback, so the loop keeps turning
(heartbeats, health, other partitions) while a broker is slow or away.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

from consumer.offsets import OffsetTracker, TopicPartitionKey, parse_metadata

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from consumer.ledger import Ledger

__all__ = ["Handover"]

log = logging.getLogger("ordermail.handover")


class Handover:
    def __init__(self, ledger: Ledger, tracker: OffsetTracker, wait_limit_s: float) -> None:
        self._ledger, self._tracker, self._wait_limit_s = ledger, tracker, wait_limit_s
        self._waiting: dict[TopicPartitionKey, float] = {}  # -> when to stop waiting for earlier events
        self._anchoring: set[TopicPartitionKey] = set()

    @property
    def held(self) -> set[TopicPartitionKey]:
        """Partitions not to be consumed yet."""
        return set(self._waiting) | self._anchoring

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def receive(self, tps: set[TopicPartitionKey]) -> None:
        deadline = time.monotonic() + self._wait_limit_s
        self._waiting.update(dict.fromkeys(tps, deadline))

    def prepare(self, consumer: Consumer) -> tuple[set[TopicPartitionKey], set[TopicPartitionKey]]:
        """Takes over what can be taken over now: returns the partitions ready to consume and those
        whose anchor must be committed first. Raises ``KafkaException`` when the broker does not
        answer; nothing is lost then, call again later."""
        now = time.monotonic()
        due = {tp for tp, limit in self._waiting.items() if now >= limit or not self._tracker.in_flight({tp})}
        if not due:
            return set(), set()
        late = sorted(tp[1] for tp in due if self._tracker.in_flight({tp}))
        if late:
            log.warning("earlier events of partitions %s still in flight; they may be sent twice", late)
        committed = consumer.committed([TopicPartition(t, p) for t, p in sorted(due)], timeout=10)
        ends = self._ledger.end_offsets({p for _, p in due})
        starts: dict[int, int] = {}
        anchors: set[TopicPartitionKey] = set()
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._tracker.note_outcome_end(key, ends[tp.partition])  # our outcomes come after it
            start = parse_metadata(tp.metadata) if tp.offset >= 0 else None
            if start is not None:
                starts[tp.partition] = start
                continue
            position = tp.offset if tp.offset >= 0 else consumer.get_watermark_offsets(tp, timeout=10)[0]
            self._tracker.anchor(key, position)
            anchors.add(key)
        handled = self._ledger.load(starts, ends)
        for partition in (p for p, n in handled.items() if n):
            key = next(tp for tp in due if tp[1] == partition)
            input_end = consumer.get_watermark_offsets(TopicPartition(*key), timeout=10)[1]
            self._tracker.inherit(key, starts[partition], input_end)
        for key in due:
            del self._waiting[key]
        self._anchoring |= anchors
        found = {p: n for p, n in handled.items() if n}
        log.info("taking over", extra={"handled": found, "anchored": sorted(p for _, p in anchors)})
        return due - anchors, anchors

    def anchored(self, tps: set[TopicPartitionKey]) -> set[TopicPartitionKey]:
        """Commits of these partitions were confirmed: returns those now free to consume."""
        released = self._anchoring & tps
        self._anchoring -= released
        return released

    def drop(self, tps: set[TopicPartitionKey]) -> None:
        for tp in tps:
            self._waiting.pop(tp, None)
        self._anchoring -= tps
