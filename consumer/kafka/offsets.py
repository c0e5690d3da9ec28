"""Which offsets may be committed, and what the commit must record for redelivery dedupe.

Events of one partition finish out of order (different keys run in parallel), so the commit
position is the highest *contiguous* completed offset + 1. Alongside it we record, in the
commit metadata, a position in the co-partitioned outcome topic that precedes every outcome
of every event at or after the committed offset, including events that already finished out
of order: whoever owns the partition next reads outcomes from there to recognise events that
were already handled (see ``ledger.py``). Used by the poll thread alone: finished events reach
it through the service's bridge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OffsetTracker", "TopicPartitionKey", "format_metadata", "parse_metadata"]

TopicPartitionKey = tuple[str, int]
_METADATA_PREFIX = "ordermail/1 outcome-offset="


def format_metadata(outcome_offset: int) -> str:
    return f"{_METADATA_PREFIX}{outcome_offset}"


def parse_metadata(metadata: str | None) -> int | None:
    if not metadata or not metadata.startswith(_METADATA_PREFIX):
        return None
    try:
        return int(metadata.removeprefix(_METADATA_PREFIX))
    except ValueError:
        return None


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    # Deferred records let go before they were due (revoke, shutdown): not in flight any more,
    # but never committed past, so whoever owns the partition next runs them.
    let_go: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the highest offset dispatched
    # (position, outcome position) as last committed, and as last offered for commit.
    committed: tuple[int, int | None] | None = None
    offered: tuple[int, int | None] | None = None
    # Finished but not yet committed: input offset -> offset of its outcome.
    outcome_offsets: dict[int, int] = field(default_factory=dict)
    next_outcome_offset: int | None = None  # nothing of ours in the outcome partition lies below
    # From an earlier owner: outcomes from this offset on may belong to events before that one.
    inherited: tuple[int, int] | None = None

    def position(self) -> int | None:
        unfinished = self.pending | self.let_go
        return min(unfinished) if unfinished else self.next_offset

    def outcome_position(self, position: int) -> int | None:
        later = [o for offset, o in self.outcome_offsets.items() if offset >= position]
        if self.next_outcome_offset is not None:
            later.append(self.next_outcome_offset)
        if self.inherited is not None and position < self.inherited[1]:
            later.append(self.inherited[0])
        return min(later) if later else None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        # Offsets still in flight when their partition was revoked or lost: never committed by
        # us, but waited for before the partition is taken on again (see Service._on_assign).
        self._orphans: dict[TopicPartitionKey, set[int]] = {}

    def start(self, tp: TopicPartitionKey, offset: int) -> None:
        partition = self._partitions.setdefault(tp, _Partition())
        partition.pending.add(offset)
        partition.next_offset = max(offset + 1, partition.next_offset or 0)

    def finish(self, tp: TopicPartitionKey, offset: int, outcome_offset: int | None = None) -> None:
        orphans = self._orphans.get(tp)
        if orphans is not None and offset in orphans:
            orphans.discard(offset)
            if not orphans:
                del self._orphans[tp]
            return
        partition = self._partitions.get(tp)
        if partition is not None:
            partition.pending.discard(offset)
            if outcome_offset is not None:
                partition.outcome_offsets[offset] = outcome_offset
                partition.next_outcome_offset = max(outcome_offset + 1, partition.next_outcome_offset or 0)

    def let_go(self, tp: TopicPartitionKey, offset: int) -> None:
        """A deferred record let go before it was due: no longer waited for, never committed past.
        One of a partition already forgotten (lost) is simply no longer waited for."""
        orphans = self._orphans.get(tp)
        if orphans is not None and offset in orphans:
            self.finish(tp, offset)
            return
        partition = self._partitions.get(tp)
        if partition is not None and offset in partition.pending:
            partition.pending.discard(offset)
            partition.let_go.add(offset)

    def note_outcome_end(self, tp: TopicPartitionKey, end_offset: int) -> None:
        """The outcome partition's end when we took the partition over: ours come after it."""
        partition = self._partitions.setdefault(tp, _Partition())
        partition.next_outcome_offset = max(end_offset, partition.next_outcome_offset or 0)

    def inherit(self, tp: TopicPartitionKey, outcome_offset: int, input_end: int) -> None:
        """An earlier owner's outcomes from ``outcome_offset`` on belong to events before
        ``input_end``: until the commit passes them, the next owner must read them too."""
        self._partitions.setdefault(tp, _Partition()).inherited = (outcome_offset, input_end)

    def anchor(self, tp: TopicPartitionKey, position: int) -> None:
        """A partition taken on without a commit of ours: ``position`` is offered for commit, with
        the outcome position noted by :meth:`note_outcome_end`, before any of its events runs."""
        partition = self._partitions.setdefault(tp, _Partition())
        if partition.next_offset is None:
            partition.next_offset = position
        partition.committed = None  # offered again: its answer releases it

    def in_flight(self, tps: set[TopicPartitionKey] | None = None) -> int:
        pending = sum(len(p.pending) for tp, p in self._partitions.items() if tps is None or tp in tps)
        return pending + sum(len(o) for tp, o in self._orphans.items() if tps is None or tp in tps)

    def committable(
        self, tps: set[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, tuple[int, str]]:
        """Positions whose offset or outcome position moved since they were last committed, each
        with its commit metadata. The outcome position alone moves while a deferred record waits at
        the head of its retry partition and later ones finish: unless committed, the next owner
        would read from an old position (maybe a day of outcomes back) and run out of time."""
        result = {}
        for tp, partition in self._partitions.items():
            position = partition.position()
            if (tps is None or tp in tps) and position is not None:
                outcome_position = partition.outcome_position(position)
                if (position, outcome_position) != partition.committed:
                    metadata = format_metadata(outcome_position) if outcome_position is not None else ""
                    result[tp] = (position, metadata)
                    partition.offered = (position, outcome_position)
        return result

    def mark_committed(self, positions: dict[TopicPartitionKey, int]) -> None:
        for tp, position in positions.items():
            partition = self._partitions.get(tp)
            if partition is not None:
                # As offered; when not known (another position), offered again at the next commit.
                offered = partition.offered
                partition.committed = offered if offered and offered[0] == position else (position, None)
                partition.outcome_offsets = {
                    o: v for o, v in partition.outcome_offsets.items() if o >= position
                }

    def forget(self, tps: set[TopicPartitionKey]) -> None:
        for tp in tps:
            partition = self._partitions.pop(tp, None)
            if partition is not None and partition.pending:
                self._orphans.setdefault(tp, set()).update(partition.pending)
