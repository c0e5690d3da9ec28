"""Taking an input partition over without e-mailing anyone twice.

A newly assigned input partition stays paused until

1. its events still in flight from an earlier assignment to this process have finished, so
   their outcomes are on the broker before the ledger is read (or a time limit has passed: the
   service sets it past the longest an outcome may wait for the broker, since those events'
   e-mails may be sent already and taking the partition over would send them again);
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
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from consumer.kafka.clients import answered
from consumer.kafka.offsets import OffsetTracker, TopicPartitionKey, parse_metadata

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from consumer.kafka.ledger import Ledger

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
    def busy(self) -> bool:
        """Partitions wait to be taken over or for their anchor's commit (``held`` is not empty)."""
        return bool(self._waiting or self._anchoring)

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def receive(self, tps: set[TopicPartitionKey], now: float) -> None:
        deadline = now + self._wait_limit_s
        self._waiting.update(dict.fromkeys(tps, deadline))

    def prepare(
        self, consumer: Consumer, now: float
    ) -> tuple[set[TopicPartitionKey], set[TopicPartitionKey]]:
        """Takes over what can be taken over now: returns the partitions ready to consume and those
        whose anchor must be committed first. Raises ``KafkaException`` when the broker does not
        answer; nothing is lost then, call again later."""
        due = {tp for tp, limit in self._waiting.items() if now >= limit or not self._tracker.in_flight({tp})}
        if not due:
            return set(), set()
        late = sorted(tp[1] for tp in due if self._tracker.in_flight({tp}))
        if late:
            log.warning("earlier events of partitions %s still in flight; they may be sent twice", late)
        committed = answered(consumer.committed([TopicPartition(t, p) for t, p in sorted(due)], timeout=10))
        ends = self._ledger.end_offsets({p for _, p in due})
        starts: dict[int, int] = {}
        anchors: dict[TopicPartitionKey, int] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._tracker.note_outcome_end(key, ends[tp.partition])  # our outcomes come after it
            start = parse_metadata(tp.metadata) if tp.offset >= 0 else None
            if start is not None:
                starts[tp.partition] = start
            else:
                anchors[key] = tp.offset  # negative: never committed, starts at the beginning
        beginnings = _offsets(
            consumer, [key for key, offset in anchors.items() if offset < 0], OFFSET_BEGINNING
        )
        for key, offset in anchors.items():
            self._tracker.anchor(key, offset if offset >= 0 else beginnings[key])
        handled = self._ledger.load(starts, ends)
        inherited = [key for key in due if handled.get(key[1])]
        for key, input_end in _offsets(consumer, inherited, OFFSET_END).items():
            self._tracker.inherit(key, starts[key[1]], input_end)
        for key in due:
            del self._waiting[key]
        self._anchoring |= set(anchors)
        found = {p: n for p, n in handled.items() if n}
        log.info("taking over", extra={"handled": found, "anchored": sorted(p for _, p in anchors)})
        return due - set(anchors), set(anchors)

    def anchored(self, tps: set[TopicPartitionKey]) -> set[TopicPartitionKey]:
        """Commits of these partitions were confirmed: returns those now free to consume."""
        released = self._anchoring & tps
        self._anchoring -= released
        return released

    def drop(self, tps: set[TopicPartitionKey]) -> None:
        for tp in tps:
            self._waiting.pop(tp, None)
        self._anchoring -= tps


def _offsets(consumer: Consumer, keys: list[TopicPartitionKey], which: int) -> dict[TopicPartitionKey, int]:
    """First (``OFFSET_BEGINNING``) or end (``OFFSET_END``) offsets, in one request."""
    if not keys:
        return {}
    answer = answered(consumer.offsets_for_times([TopicPartition(t, p, which) for t, p in keys], timeout=10))
    return {(tp.topic, tp.partition): tp.offset for tp in answer}
