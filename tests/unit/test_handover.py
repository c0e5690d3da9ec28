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

NOW = 1000.0  # the poll loop's clock, passed in
INPUT = "orders"


Committed = dict[int, tuple[int, str]]  # partition -> (offset, metadata)


class FakeConsumer:
    def __init__(self, committed: Committed, watermarks: dict[int, tuple[int, int]]) -> None:
        self._committed, self._watermarks = committed, watermarks

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, *self._committed.get(tp.partition, (OFFSET_INVALID, "")))
            for tp in partitions
        ]

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """Only the logical offsets: OFFSET_BEGINNING (-2) and OFFSET_END (-1)."""
        low_or_high = {OFFSET_BEGINNING: 0, OFFSET_END: 1}
        return [
            TopicPartition(tp.topic, tp.partition, self._watermarks[tp.partition][low_or_high[tp.offset]])
            for tp in partitions
        ]


class FakeLedger:
    def __init__(self, outcome_ends: dict[int, int]) -> None:
        self.outcome_ends = outcome_ends
        self.loaded: dict[int, int] = {}

    def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        return {p: self.outcome_ends[p] for p in partitions}

    def load(self, starts: dict[int, int], ends: dict[int, int]) -> dict[int, int]:
        self.loaded = dict(starts)
        return {p: ends[p] - start for p, start in starts.items()}  # every outcome is a handled event


def handover_for(ledger: FakeLedger, tracker: OffsetTracker, wait_limit_s: float = 30) -> Handover:
    fake: Any = ledger
    return Handover(fake, tracker, wait_limit_s)


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
    consumer: Any = FakeConsumer({0: (30, format_metadata(25)), 1: (8, format_metadata(12))}, {0: (0, 60)})
    assert handover.prepare(consumer, NOW) == ({(INPUT, 0), (INPUT, 1)}, set())
    assert ledger.loaded == {0: 25, 1: 12}
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
    consumer = FakeConsumer({1: (0, format_metadata(0))}, {})
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
    assert ledger.loaded == {0: 25}  # the outcomes since the commit are read: no e-mail twice
