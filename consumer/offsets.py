"""Which offsets may be committed: per partition, the lowest offset still in flight.

Events of one partition finish out of order (different keys run in parallel), so the commit
position is the highest *contiguous* completed offset + 1. Thread-safe: the poll loop starts
and commits, the workers finish.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["OffsetTracker", "TopicPartitionKey"]

TopicPartitionKey = tuple[str, int]


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset dispatched
    committed: int | None = None

    def position(self) -> int | None:
        return min(self.pending) if self.pending else self.next_offset


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        self._changed = threading.Condition()

    def start(self, tp: TopicPartitionKey, offset: int) -> None:
        with self._changed:
            partition = self._partitions.setdefault(tp, _Partition())
            partition.pending.add(offset)
            partition.next_offset = max(offset + 1, partition.next_offset or 0)

    def finish(self, tp: TopicPartitionKey, offset: int) -> None:
        with self._changed:
            partition = self._partitions.get(tp)
            if partition is not None:  # absent when the partition was revoked meanwhile
                partition.pending.discard(offset)
            self._changed.notify_all()

    def in_flight(self, tps: set[TopicPartitionKey] | None = None) -> int:
        with self._changed:
            return sum(len(p.pending) for tp, p in self._partitions.items() if tps is None or tp in tps)

    def wait_idle(self, tps: set[TopicPartitionKey] | None, timeout_s: float) -> bool:
        """Blocks until nothing in ``tps`` (all when None) is in flight; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(not p.pending for tp, p in self._partitions.items() if tps is None or tp in tps),
                timeout=timeout_s,
            )

    def committable(self, tps: set[TopicPartitionKey] | None = None) -> dict[TopicPartitionKey, int]:
        """Positions that moved since they were last committed."""
        with self._changed:
            result = {}
            for tp, partition in self._partitions.items():
                position = partition.position()
                if (tps is None or tp in tps) and position is not None and position != partition.committed:
                    result[tp] = position
            return result

    def mark_committed(self, positions: dict[TopicPartitionKey, int]) -> None:
        with self._changed:
            for tp, position in positions.items():
                if tp in self._partitions:
                    self._partitions[tp].committed = position

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        with self._changed:
            for tp in tps:
                self._partitions.pop(tp, None)
            self._changed.notify_all()
