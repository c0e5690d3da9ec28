import threading

from consumer.offsets import OffsetTracker

TP = ("orders", 0)


def test_commit_position_is_highest_contiguous_done_plus_one() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.start(TP, offset)
    tracker.finish(TP, 12)
    tracker.finish(TP, 14)
    assert tracker.committable() == {TP: 10}  # 10 still running: nothing past it
    tracker.finish(TP, 10)
    assert tracker.committable() == {TP: 11}
    tracker.finish(TP, 11)
    assert tracker.committable() == {TP: 13}
    tracker.finish(TP, 13)
    assert tracker.committable() == {TP: 15}


def test_committed_positions_are_not_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 0)
    tracker.finish(TP, 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    tracker.start(TP, 1)
    assert tracker.committable() == {}  # 1 is in flight: the position is still 1
    tracker.finish(TP, 1)
    assert tracker.committable() == {TP: 2}


def test_partitions_are_independent_and_forgettable() -> None:
    tracker = OffsetTracker()
    other = ("orders", 1)
    tracker.start(TP, 5)
    tracker.start(other, 7)
    tracker.finish(other, 7)
    assert tracker.committable() == {TP: 5, other: 8}
    tracker.forget({TP})
    tracker.finish(TP, 5)  # late completion of a revoked partition is ignored
    assert tracker.committable() == {other: 8}
    assert tracker.in_flight() == 0


def test_wait_idle_returns_when_work_finishes_in_another_thread() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 1)
    finisher = threading.Timer(0.05, tracker.finish, args=(TP, 1))
    finisher.start()
    assert tracker.wait_idle({TP}, timeout_s=5)
    assert not tracker.in_flight()


def test_wait_idle_times_out_while_work_is_pending() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 1)
    assert not tracker.wait_idle({TP}, timeout_s=0.01)
