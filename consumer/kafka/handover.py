"""Taking a partition over without e-mailing anyone twice.

An input partition, and a retry-topic partition (deferred passes, numbered as their input
partitions, with their outcomes in the same outcome partition), stays paused when assigned until

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
   again. A retry partition committed to its end is anchored afresh too: no record of it can
   have been handled, and its commit's outcome position, from when it fell idle, may lie a day
   of outcomes back, which a later owner would have to read.

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
    def __init__(
        self, ledger: Ledger, tracker: OffsetTracker, wait_limit_s: float, *, retry_topic: str | None = None
    ) -> None:
        self._ledger, self._tracker, self._wait_limit_s = ledger, tracker, wait_limit_s
        self._retry_topic = retry_topic
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
        answer (``SchemaRegistryUnavailable`` when the registry does not); nothing is lost then, call
        again later."""
        due = {tp for tp, limit in self._waiting.items() if now >= limit or not self._tracker.in_flight({tp})}
        if not due:
            return set(), set()
        late = sorted(tp[1] for tp in due if self._tracker.in_flight({tp}))
        if late:
            log.warning("earlier events of partitions %s still in flight; they may be sent twice", late)
        # Everything asked of the broker first: one that does not answer leaves nothing changed.
        committed = answered(consumer.committed([TopicPartition(t, p) for t, p in sorted(due)], timeout=10))
        ends = self._ledger.end_offsets({p for _, p in due})
        record_ends = _offsets(consumer, sorted(due), OFFSET_END)
        starts: dict[TopicPartitionKey, int] = {}
        anchors: dict[TopicPartitionKey, int] = {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            start = parse_metadata(tp.metadata) if tp.offset >= 0 else None
            idle = tp.topic == self._retry_topic and tp.offset >= record_ends[key]
            if start is not None and not idle:
                starts[key] = start
            else:
                anchors[key] = tp.offset  # negative: never committed, starts at the beginning
        beginnings = _offsets(
            consumer, [key for key, offset in anchors.items() if offset < 0], OFFSET_BEGINNING
        )
        retry_offsets = {tp.partition: tp.offset for tp in committed if tp.topic == self._retry_topic}
        self._skip_what_came_before(starts, retry_offsets, ends)
        handled = self._ledger.load(starts, ends)  # raises SchemaRegistryUnavailable: call again later
        for key in due:
            self._tracker.note_outcome_end(key, ends[key[1]])  # our outcomes come after it
        for key, offset in anchors.items():
            self._tracker.anchor(key, offset if offset >= 0 else beginnings[key])
        for key, start in starts.items():
            if handled[key]:
                self._tracker.inherit(key, start, record_ends[key])
        for key in due:
            del self._waiting[key]
        self._anchoring |= set(anchors)
        found = {f"{t}/{p}": n for (t, p), n in sorted(handled.items()) if n}
        log.info(
            "taking over", extra={"handled": found, "anchored": [f"{t}/{p}" for t, p in sorted(anchors)]}
        )
        return due - set(anchors), set(anchors)

    def _skip_what_came_before(
        self, starts: dict[TopicPartitionKey, int], retry_offsets: dict[int, int], ends: dict[int, int]
    ) -> None:
        """A retry partition's read starts no earlier than the outcomes published after the record
        at its committed offset: its commit's position may lie far back (kept by an earlier owner's
        reads, or from before it fell quiet), and a read that runs out of time misses the newest."""
        queued = {p: offset for p, offset in retry_offsets.items() if (self._retry_topic, p) in starts}
        if not queued or self._retry_topic is None:
            return
        for p, floor in self._ledger.outcomes_since(self._retry_topic, queued).items():
            key = (self._retry_topic, p)
            starts[key] = max(starts[key], ends[p] if floor < 0 else floor)

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
