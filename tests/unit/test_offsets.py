from consumer.kafka.offsets import OffsetTracker, parse_metadata

TP = ("orders", 0)


def positions(tracker: OffsetTracker) -> dict[tuple[str, int], int]:
    return {tp: position for tp, (position, _) in tracker.committable().items()}


def test_commit_position_is_highest_contiguous_done_plus_one() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.start(TP, offset)
    tracker.finish(TP, 12)
    tracker.finish(TP, 14)
    assert positions(tracker) == {TP: 10}  # 10 still running: nothing past it
    tracker.finish(TP, 10)
    assert positions(tracker) == {TP: 11}
    tracker.finish(TP, 11)
    assert positions(tracker) == {TP: 13}
    tracker.finish(TP, 13)
    assert positions(tracker) == {TP: 15}


def test_committed_positions_are_not_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 0)
    tracker.finish(TP, 0)
    tracker.mark_committed(positions(tracker))
    assert positions(tracker) == {}
    tracker.start(TP, 1)
    assert positions(tracker) == {}  # 1 is in flight: the position is still 1
    tracker.finish(TP, 1)
    assert positions(tracker) == {TP: 2}


def test_partitions_are_independent_and_forgettable() -> None:
    tracker = OffsetTracker()
    other = ("orders", 1)
    tracker.start(TP, 5)
    tracker.start(other, 7)
    tracker.finish(other, 7)
    assert positions(tracker) == {TP: 5, other: 8}
    tracker.forget({TP})
    tracker.finish(TP, 5)  # late completion of a revoked partition is ignored
    assert positions(tracker) == {other: 8}
    assert tracker.in_flight() == 0


def test_metadata_points_before_every_outcome_of_uncommitted_events() -> None:
    tracker = OffsetTracker()
    tracker.note_outcome_end(TP, 100)  # the outcome partition held 100 records when we took over
    for offset in range(10, 14):
        tracker.start(TP, offset)
    tracker.finish(TP, 12, outcome_offset=100)  # finished out of order, before 10 and 11
    tracker.finish(TP, 13, outcome_offset=101)
    ((position, metadata),) = tracker.committable().values()
    assert position == 10
    assert parse_metadata(metadata) == 100  # a successor must re-read from 100 to see 12 and 13
    tracker.finish(TP, 10, outcome_offset=102)
    tracker.finish(TP, 11, outcome_offset=103)
    ((position, metadata),) = tracker.committable().values()
    assert position == 14
    assert parse_metadata(metadata) == 104  # everything before is committed: read from the end
    tracker.mark_committed({TP: 14})
    tracker.start(TP, 14)
    committable: list[tuple[int | None, str | None]] = [*tracker.committable().values()] or [(None, None)]
    ((last_position, last_metadata),) = committable
    assert last_position is None or parse_metadata(last_metadata) == 104


def test_metadata_round_trip_and_foreign_values() -> None:
    from consumer.kafka.offsets import format_metadata

    assert parse_metadata(format_metadata(42)) == 42
    assert parse_metadata("") is None
    assert parse_metadata("something else") is None
    assert parse_metadata("ordermail/1 outcome-offset=x") is None


def test_events_of_a_lost_partition_are_waited_for_and_never_confused_with_redeliveries() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 7)
    tracker.forget({TP})  # lost while offset 7 was still being processed
    assert tracker.in_flight({TP}) == 1  # the old work still counts
    tracker.start(TP, 7)  # taken on again and redelivered
    tracker.finish(TP, 7)  # the *old* one finishes first...
    assert tracker.in_flight({TP}) == 1  # ...the redelivered one is still in flight
    assert positions(tracker) == {TP: 7}
    tracker.finish(TP, 7)
    assert positions(tracker) == {TP: 8}
    assert tracker.in_flight({TP}) == 0


def test_a_deferred_record_let_go_is_not_waited_for_and_never_committed_past() -> None:
    tracker, tp = OffsetTracker(), ("orders.retry", 0)
    for offset in (5, 6, 7):
        tracker.start(tp, offset)
    tracker.finish(tp, 5, 100)
    tracker.let_go(tp, 6)  # waiting for its due time when the partition was revoked
    tracker.finish(tp, 7, 101)
    assert tracker.in_flight({tp}) == 0
    assert tracker.committable({tp})[tp][0] == 6  # the next owner reads it again
    tracker.forget({tp})
    assert tracker.in_flight({tp}) == 0  # nothing of it is waited for at the next takeover


def test_a_record_let_go_after_its_partition_was_lost_is_no_longer_waited_for() -> None:
    tracker, tp = OffsetTracker(), ("orders.retry", 0)
    tracker.start(tp, 6)
    tracker.forget({tp})  # lost: its record still waits in memory
    tracker.start(tp, 9)  # the partition is ours again
    tracker.let_go(tp, 6)  # the old record comes back, let go
    assert tracker.in_flight({tp}) == 1  # only the new one


def test_an_outcome_position_that_moved_is_committed_though_the_offset_did_not() -> None:
    """A deferred pass waits at the head of its retry partition while later passes are sent: the
    offset stays, but the next owner must read their outcomes, not from the old position (a day
    of outcomes back, perhaps, where its time would run out before it reached them)."""
    retry = ("orders.retry", 0)
    tracker = OffsetTracker()
    tracker.note_outcome_end(retry, 151)
    for offset in (1, 2, 3):
        tracker.start(retry, offset)
    tracker.mark_committed(positions(tracker))
    assert tracker.committable() == {}
    tracker.finish(retry, 2, outcome_offset=5_000_000)
    tracker.finish(retry, 3, outcome_offset=5_000_007)
    ((position, metadata),) = tracker.committable().values()
    assert (position, parse_metadata(metadata)) == (1, 5_000_000)
    tracker.mark_committed({retry: 1})
    assert tracker.committable() == {}


def test_a_commit_answered_after_the_outcome_position_moved_is_offered_again() -> None:
    """What the broker holds is what was offered: when a finish lowers the outcome position while
    the commit is on its way, the lower one is offered next (the broker's would pass an outcome)."""
    tracker = OffsetTracker()
    for offset in (1, 2, 3):
        tracker.start(TP, offset)
    tracker.finish(TP, 2, outcome_offset=70)
    ((_, sent),) = tracker.committable().values()
    tracker.finish(TP, 3, outcome_offset=60)  # acknowledged earlier, reported later
    tracker.mark_committed({TP: 1})
    ((position, metadata),) = tracker.committable().values()
    assert (parse_metadata(sent), position, parse_metadata(metadata)) == (70, 1, 60)


def test_an_anchor_is_offered_again_when_its_takeover_is_retried() -> None:
    """An anchor committed by a periodic commit, then its takeover failing and retried: it must be
    offered again, or its partition would wait for a commit answer that never comes."""
    tracker = OffsetTracker()
    tracker.note_outcome_end(TP, 40)
    tracker.anchor(TP, 5)
    tracker.mark_committed(positions(tracker))
    assert tracker.committable() == {}
    tracker.anchor(TP, 5)
    assert positions(tracker) == {TP: 5}
