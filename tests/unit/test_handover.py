"""Taking partitions over: held until earlier work is done, the ledger is read, and a partition
with no commit of ours is anchored before anything of it runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from consumer.kafka.handover import Handover
from consumer.kafka.offsets import OffsetTracker, format_metadata, parse_metadata
from schemas import SchemaRegistryUnavailable

NOW = 1000.0  # the poll loop's clock, passed in
INPUT, RETRY = "orders", "orders.retry"

# By partition number for the input topic, by (topic, partition) for any other.
Committed = dict[Any, tuple[int, str]]  # -> (offset, metadata)


def _for(tp: TopicPartition, values: dict[Any, Any], default: Any = None) -> Any:
    key = tp.partition if tp.topic == INPUT else (tp.topic, tp.partition)
    return values.get(key, default) if default is not None else values[key]


class FakeConsumer:
    def __init__(self, committed: Committed, watermarks: dict[Any, tuple[int, int]]) -> None:
        self._committed, self._watermarks = committed, watermarks

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, *_for(tp, self._committed, (OFFSET_INVALID, "")))
            for tp in partitions
        ]

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """Only the logical offsets: OFFSET_BEGINNING (-2) and OFFSET_END (-1)."""
        low_or_high = {OFFSET_BEGINNING: 0, OFFSET_END: 1}
        return [
            TopicPartition(tp.topic, tp.partition, _for(tp, self._watermarks)[low_or_high[tp.offset]])
            for tp in partitions
        ]


class FakeLedger:
    def __init__(self, outcome_ends: dict[int, int]) -> None:
        self.outcome_ends = outcome_ends
        self.loaded: dict[tuple[str, int], int] = {}  # where the last load started each partition
        self.floors: dict[int, int] = {}  # outcome offset from which on the retry records' outcomes lie
        self.asked: dict[int, int] = {}

    def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        return {p: self.outcome_ends[p] for p in partitions}

    def outcomes_since(self, topic: str, offsets: dict[int, int]) -> dict[int, int]:
        assert topic == RETRY
        self.asked = dict(offsets)
        return {p: self.floors[p] for p in offsets if p in self.floors}

    def load(self, starts: dict[tuple[str, int], int], ends: dict[int, int]) -> dict[tuple[str, int], int]:
        self.loaded = dict(starts)
        return {tp: ends[tp[1]] - start for tp, start in starts.items()}  # every outcome is a handled event


def handover_for(ledger: FakeLedger, tracker: OffsetTracker, wait_limit_s: float = 30) -> Handover:
    fake: Any = ledger
    return Handover(fake, tracker, wait_limit_s, retry_topic=RETRY)


def test_a_partition_never_committed_is_anchored_at_its_start_before_it_runs() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0)}, NOW)
    consumer: Any = FakeConsumer({}, {0: (5, 90)})
    ready, anchors = handover.prepare(consumer, NOW)
    assert (ready, anchors) == (set(), {(INPUT, 0)})
    assert handover.held == {(INPUT, 0)}  # not consumed until the anchor commit is confirmed
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (5, 40)  # low watermark, outcome end
    assert handover.anchored({(INPUT, 0)}) == {(INPUT, 0)}
    assert handover.held == set()


def test_a_commit_without_our_metadata_is_anchored_where_it_stands() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0)}, NOW)
    consumer: Any = FakeConsumer({0: (17, "set by a reset tool")}, {0: (5, 90)})
    assert handover.prepare(consumer, NOW) == (set(), {(INPUT, 0)})
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (17, 40)


def test_an_anchored_partition_is_released_at_once_with_the_ledger_read() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40, 1: 12})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0), (INPUT, 1)}, NOW)
    consumer: Any = FakeConsumer(
        {0: (30, format_metadata(25)), 1: (8, format_metadata(12))}, {0: (0, 60), 1: (0, 8)}
    )
    assert handover.prepare(consumer, NOW) == ({(INPUT, 0), (INPUT, 1)}, set())
    assert ledger.loaded == {(INPUT, 0): 25, (INPUT, 1): 12}
    assert tracker.committable() == {}  # nothing to commit before anything runs
    assert handover.held == set()


def test_outcomes_of_an_earlier_owner_stay_in_reach_until_the_commit_passes_its_events() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0)}, NOW)
    consumer: Any = FakeConsumer({0: (30, format_metadata(25))}, {0: (0, 60)})
    handover.prepare(consumer, NOW)  # outcomes 25..39 belong to events the earlier owner handled
    tp = (INPUT, 0)
    for offset in range(30, 62):
        tracker.start(tp, offset)
    for offset in range(30, 45):
        tracker.finish(tp, offset)  # recognised as handled: no outcome of ours
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (45, 25)  # events up to 59 may still be among them
    for offset in range(45, 62):
        tracker.finish(tp, offset, outcome_offset=40 + offset - 45)
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (62, 57)  # past them all: read from our own end


def test_earlier_work_of_the_partition_is_waited_for_then_given_up_on() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    tracker.start((INPUT, 0), 3)
    tracker.forget({(INPUT, 0)})  # lost while offset 3 was being processed
    consumer: Any = FakeConsumer({0: (0, format_metadata(0))}, {0: (0, 10)})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0)}, NOW)
    assert handover.prepare(consumer, NOW) == (set(), set())
    assert handover.held == {(INPUT, 0)}
    tracker.finish((INPUT, 0), 3)
    assert handover.prepare(consumer, NOW) == ({(INPUT, 0)}, set())

    tracker.start((INPUT, 1), 3)
    tracker.forget({(INPUT, 1)})
    impatient = handover_for(FakeLedger({1: 0}), tracker, wait_limit_s=5)
    impatient.receive({(INPUT, 1)}, NOW)
    consumer = FakeConsumer({1: (0, format_metadata(0))}, {1: (0, 4)})
    assert impatient.prepare(consumer, NOW + 4.9) == (set(), set())  # the clock decides, passed in
    assert impatient.prepare(consumer, NOW + 5) == ({(INPUT, 1)}, set())  # still in flight: may be sent twice


def test_dropped_partitions_are_no_longer_held() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 1})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0), (INPUT, 1)}, NOW)
    consumer: Any = FakeConsumer({}, {0: (0, 1)})
    handover.drop({(INPUT, 1)})
    assert handover.prepare(consumer, NOW) == (set(), {(INPUT, 0)})
    handover.drop({(INPUT, 0)})
    assert handover.held == set()
    assert not handover.waiting


class _AskedDuringFailover(FakeConsumer):
    """librdkafka's answer for a partition whose leader is moving: an error and no offset."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[Any]:
        error = KafkaError(KafkaError.FENCED_LEADER_EPOCH)
        return [
            SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=OFFSET_INVALID, error=error)
            for tp in partitions
        ]


def test_a_partition_whose_position_is_unknown_mid_failover_is_asked_again_not_sent_again() -> None:
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0)}, NOW)
    consumer: Any = _AskedDuringFailover({0: (30, format_metadata(25))}, {0: (0, 60)})
    with pytest.raises(KafkaException):
        handover.prepare(consumer, NOW)
    assert handover.held == {(INPUT, 0)}  # still held: nothing of it runs until asked again
    assert tracker.committable() == {}
    assert ledger.loaded == {}
    retried: Any = FakeConsumer({0: (30, format_metadata(25))}, {0: (0, 60)})
    assert handover.prepare(retried, NOW + 1) == ({(INPUT, 0)}, set())
    assert ledger.loaded == {(INPUT, 0): 25}  # the outcomes since the commit are read: no e-mail twice


def test_a_retry_partition_is_taken_over_from_its_own_commit() -> None:
    """Deferred passes in retry partition 0 report to outcome partition 0, like input partition 0:
    each is read from its own commit's position, and the retry partition's older position stays
    out of the input's commits."""
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(INPUT, 0), (RETRY, 0)}, NOW)
    consumer: Any = FakeConsumer(
        {0: (30, format_metadata(25)), (RETRY, 0): (3, format_metadata(10))}, {0: (0, 60), (RETRY, 0): (0, 5)}
    )
    assert handover.prepare(consumer, NOW) == ({(INPUT, 0), (RETRY, 0)}, set())
    assert ledger.loaded == {(INPUT, 0): 25, (RETRY, 0): 10}
    for tp, first in (((INPUT, 0), 30), ((RETRY, 0), 3)):
        tracker.start(tp, first)
        tracker.finish(tp, first)  # recognised as handled: no outcome of ours
    assert {tp: parse_metadata(meta) for tp, (_, meta) in tracker.committable().items()} == {
        (INPUT, 0): 25,
        (RETRY, 0): 10,
    }


def test_a_retry_partition_committed_to_its_end_is_anchored_afresh_not_read() -> None:
    """Nothing in it can have been handled; its commit's outcome position dates from when it fell
    idle (a day of outcomes back, maybe): a later owner reads from now instead."""
    tracker, ledger = OffsetTracker(), FakeLedger({0: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(RETRY, 0)}, NOW)
    consumer: Any = FakeConsumer({(RETRY, 0): (5, format_metadata(2))}, {(RETRY, 0): (0, 5)})
    assert handover.prepare(consumer, NOW) == (set(), {(RETRY, 0)})
    assert ledger.loaded == {}
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (5, 40)
    assert handover.anchored({(RETRY, 0)}) == {(RETRY, 0)}


def test_a_retry_partition_is_read_from_no_earlier_than_its_first_uncommitted_record() -> None:
    """Its commit's outcome position may lie a day back (an earlier owner's inherited read, or
    from before it fell quiet): its passes' outcomes all came after the record at its committed
    offset was published, so the read starts there, and so do the commits that follow."""
    tracker, ledger = OffsetTracker(), FakeLedger({0: 5_000_100, 1: 40, 2: 900})
    ledger.floors = {0: 5_000_000, 1: -1, 2: 10}  # 1: no outcome since that record: nothing to read
    handover = handover_for(ledger, tracker)
    handover.receive({(RETRY, 0), (RETRY, 1), (RETRY, 2), (INPUT, 0)}, NOW)
    consumer: Any = FakeConsumer(
        {
            (RETRY, 0): (1, format_metadata(151)),
            (RETRY, 1): (4, format_metadata(2)),
            (RETRY, 2): (3, format_metadata(500)),
            0: (30, format_metadata(4_999_000)),
        },
        {(RETRY, 0): (0, 9), (RETRY, 1): (0, 6), (RETRY, 2): (0, 7), 0: (0, 60)},
    )
    handover.prepare(consumer, NOW)
    assert ledger.asked == {0: 1, 1: 4, 2: 3}
    assert ledger.loaded == {
        (RETRY, 0): 5_000_000,
        (RETRY, 1): 40,
        (RETRY, 2): 500,  # never earlier than its commit's own position
        (INPUT, 0): 4_999_000,
    }
    tracker.start((RETRY, 0), 1)
    tracker.finish((RETRY, 0), 1)  # recognised as handled: no outcome of ours
    assert parse_metadata(tracker.committable()[(RETRY, 0)][1]) == 5_000_000


class _FailingOnce(FakeLedger):
    def __init__(self, outcome_ends: dict[int, int]) -> None:
        super().__init__(outcome_ends)
        self.failures = 1

    def outcomes_since(self, topic: str, offsets: dict[int, int]) -> dict[int, int]:
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return super().outcomes_since(topic, offsets)


def test_a_takeover_that_fails_half_way_changes_nothing_and_its_anchor_is_offered_again() -> None:
    """An idle retry partition anchored beside a busy one whose floor cannot be asked for: the
    anchor must still be committed (and released) when the takeover is tried again, though a
    periodic commit took its position meanwhile."""
    tracker, ledger = OffsetTracker(), _FailingOnce({0: 40, 1: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(RETRY, 0), (RETRY, 1)}, NOW)
    consumer: Any = FakeConsumer(
        {(RETRY, 0): (5, format_metadata(2)), (RETRY, 1): (1, format_metadata(3))},
        {(RETRY, 0): (0, 5), (RETRY, 1): (0, 4)},
    )
    with pytest.raises(KafkaException):
        handover.prepare(consumer, NOW)
    assert tracker.committable() == {}  # nothing changed
    tracker.anchor((RETRY, 0), 5)  # as an earlier version did before asking: committed since
    tracker.mark_committed({tp: position for tp, (position, _) in tracker.committable().items()})
    assert handover.prepare(consumer, NOW + 1) == ({(RETRY, 1)}, {(RETRY, 0)})
    assert (RETRY, 0) in tracker.committable()  # offered again: its answer releases it


class _RegistryAwayOnce(FakeLedger):
    def __init__(self, outcome_ends: dict[int, int]) -> None:
        super().__init__(outcome_ends)
        self.failures = 1

    def load(self, starts: dict[tuple[str, int], int], ends: dict[int, int]) -> dict[tuple[str, int], int]:
        if self.failures:
            self.failures -= 1
            raise SchemaRegistryUnavailable("unknown_schema", "registry id 3: ConnectError")
        return super().load(starts, ends)


def test_outcomes_the_registry_cannot_resolve_hold_the_takeover_without_changing_anything() -> None:
    """An outcome not read would be an e-mail sent again: the takeover is tried again later."""
    tracker, ledger = OffsetTracker(), _RegistryAwayOnce({0: 40, 1: 40})
    handover = handover_for(ledger, tracker)
    handover.receive({(RETRY, 0), (RETRY, 1)}, NOW)
    consumer: Any = FakeConsumer(
        {(RETRY, 0): (5, format_metadata(2)), (RETRY, 1): (1, format_metadata(3))},
        {(RETRY, 0): (0, 5), (RETRY, 1): (0, 4)},
    )
    with pytest.raises(SchemaRegistryUnavailable):
        handover.prepare(consumer, NOW)
    assert tracker.committable() == {}  # nothing changed: no anchor offered, nothing released
    assert handover.held == {(RETRY, 0), (RETRY, 1)}
    assert handover.prepare(consumer, NOW + 1) == ({(RETRY, 1)}, {(RETRY, 0)})
