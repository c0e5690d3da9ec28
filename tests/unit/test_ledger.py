"""The redelivery ledger's rule without a broker: SENT stays, otherwise the latest outcome wins,
notes are bounded and forgotten with their partition; and with the pipeline, a redriven copy
racing its redelivered original is e-mailed once, and one redriven after its deferrals ran out
is e-mailed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from consumer.app.assembly import _handled_by, _noted_by
from consumer.kafka.ledger import Ledger, settle
from consumer.processing.pipeline import Pipeline, PipelineConfig
from consumer.processing.ports import Known
from consumer.processing.records import Inbound, Origin
from consumer.processing.retry import RetrySchedule, RetryState, epoch_ms
from delivery import SendError
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakePublisher, FakeRenderer, FakeSmtp, _run

CODEC = Codec.from_directory()


def _ledger(limit: int = 50_000) -> Ledger:
    # The reader is never asked anything here: no broker needed.
    return Ledger(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "t"}, "outcomes", CODEC, recent_limit=limit
    )


def test_sent_stays_sent_otherwise_the_latest_outcome_wins() -> None:
    assert settle(None, Known("REJECTED", 1)) == Known("REJECTED", 1)
    assert settle(Known("REJECTED", 1), Known("SENT", 2)) == Known("SENT", 2)
    assert settle(Known("SENT", 2), Known("REJECTED", 3)) == Known("SENT", 2)
    assert settle(Known("FAILED", 1), Known("DEFERRED", 1)) == Known("DEFERRED", 1)
    assert settle(Known("DEFERRED", 1), Known("FAILED", 1)) == Known("FAILED", 1)  # deferrals ran out


def test_the_later_outcome_wins_whichever_is_read_or_noted_first() -> None:
    """Outcomes of one event read by two takeovers (a partition's input and retry topics) and
    noted by this process arrive in any order: their positions decide, and SENT stays."""
    deferred, sent, failed = Known("DEFERRED", 7, 10), Known("SENT", 7, 11), Known("FAILED", 7, 12)
    assert settle(failed, deferred) == settle(deferred, failed) == failed
    assert settle(failed, sent) == settle(sent, failed) == sent
    assert settle(Known("SENT", 7, 3), sent) == settle(sent, Known("SENT", 7, 3)) == sent
    ledger = _ledger()
    try:
        ledger._handled[0] = {"orders": {"e": failed}}  # read at takeover
        ledger.note(0, "e", deferred)  # an older note must not override a newer read
        assert ledger.status(0, "e") == failed
    finally:
        ledger.close()


def test_every_outcome_is_noted_bounded_and_forgotten_with_its_partition() -> None:
    ledger = _ledger(limit=3)
    try:
        ledger.note(0, "rejected", Known("REJECTED", 4))
        ledger.note(0, "a", Known("SENT", 5))
        ledger.note(1, "b", Known("DEFERRED", 6))
        assert (ledger.status(0, "rejected"), ledger.status(0, "a"), ledger.status(1, "b")) == (
            Known("REJECTED", 4),
            Known("SENT", 5),
            Known("DEFERRED", 6),
        )
        assert ledger.status(1, "a") is None  # per partition
        ledger.note(2, "c", Known("SENT", 7))  # the oldest note goes
        assert ledger.status(0, "rejected") is None
        ledger.forget({("orders", 1)}, held=set())
        assert (ledger.status(1, "b"), ledger.status(2, "c")) == (None, Known("SENT", 7))
    finally:
        ledger.close()


def _deferring_pipeline(
    ledger: Ledger, smtp: FakeSmtp, publisher: FakePublisher, delays_s: tuple[float, ...] = (0.01, 0.01, 0.01)
) -> Pipeline:
    return Pipeline(
        PipelineConfig(
            mail_from="orders@shop.example",
            message_domain="shop.example",
            group_id="g",
            send_attempts=1,
            retry=RetrySchedule(delays_s=delays_s),
        ),
        CODEC,
        FakeRenderer(),
        smtp,
        publisher,
        handled_as=_handled_by(ledger, "orders"),
        remember=_noted_by(ledger, "orders"),
    )


def test_a_redriven_copy_behind_its_redelivered_original_is_mailed_once() -> None:
    """Both copies of an event in one partition after a take-over whose ledger knew it as
    REJECTED: the original is processed again (the fix is in) and the copy is skipped."""
    order = sample_order(1)
    ledger = _ledger()
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g"),
        CODEC,
        FakeRenderer(),
        smtp,
        publisher,
        handled_as=lambda inbound, event_id: (
            ledger.status(inbound.partition, event_id) or Known("REJECTED", 5)
        ),
        remember=lambda inbound, outcome, _at: ledger.note(
            inbound.partition, outcome["event_id"], Known(outcome["status"], inbound.offset)
        ),
    )
    value = CODEC.encode(order, ORDER_SCHEMA)
    key = order["order_id"].encode()
    copies = [Inbound("orders", 0, offset, key, value, [], 1) for offset in (5, 9)]
    try:
        assert sorted(asyncio.run(_run(pipeline, copies))) == [(5, "SENT"), (9, "SKIPPED")]
        assert len(smtp.sent) == 1
    finally:
        ledger.close()


def test_an_event_redriven_after_its_deferrals_ran_out_is_mailed() -> None:
    """Relay down: the input pass DEFERRED, the retry-topic pass FAILED (deferrals ran out, dead
    letter). Relay fixed, the dead letter redriven: the copy on the input topic is e-mailed (the
    ledger must not keep DEFERRED over the later FAILED, and must note the retry topic's)."""
    order = sample_order(1)
    value, key = CODEC.encode(order, ORDER_SCHEMA), order["order_id"].encode()
    ledger = _ledger()
    smtp = FakeSmtp(failures=[SendError("smtp_unreachable")] * 2)
    publisher = FakePublisher()
    pipeline = _deferring_pipeline(ledger, smtp, publisher, delays_s=(0.01,))
    original = Inbound("orders", 0, 7, key, value, [], 1)
    try:
        assert asyncio.run(_run(pipeline, [original])) == [(7, "DEFERRED")]
        ((_, headers),) = publisher.retries
        retried = Inbound("orders.retry", 0, 0, key, value, headers, 2, trusted=True)
        assert asyncio.run(_run(pipeline, [retried])) == [(0, "FAILED")]
        assert len(publisher.dead_letters) == 1
        known = ledger.status(0, order["event_id"])
        assert known is not None
        assert (known.status, known.offset) == ("FAILED", 7)
        copy = Inbound("orders", 0, 99, key, value, [("ordermail.redrive.source", b"orders.dlq/0/0")], 3)
        assert asyncio.run(_run(pipeline, [copy])) == [(99, "SENT")]
        assert len(smtp.sent) == 1
        assert asyncio.run(_run(pipeline, [copy])) == [(99, "SKIPPED")]  # and once only
    finally:
        ledger.close()


def test_a_pending_deferral_still_skips_a_redelivered_copy() -> None:
    order = sample_order(2)
    ledger = _ledger()
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g"),
        CODEC,
        FakeRenderer(),
        smtp,
        publisher,
        handled_as=_handled_by(ledger, "orders"),
    )
    ledger.note(0, order["event_id"], Known("DEFERRED", 7))
    copy = Inbound("orders", 0, 7, order["order_id"].encode(), CODEC.encode(order, ORDER_SCHEMA), [], 1)
    try:
        assert asyncio.run(_run(pipeline, [copy])) == [(7, "SKIPPED")]
        assert not smtp.sent
    finally:
        ledger.close()


def test_a_copy_of_an_event_known_as_deferred_is_processed() -> None:
    """A redrive after the deferrals ran out on another member (which owned the retry partition):
    this one still knows the event as DEFERRED, and must not skip the copy (the order would be
    lost); the very record it deferred, redelivered, is still skipped."""
    order = sample_order(3)
    value, key = CODEC.encode(order, ORDER_SCHEMA), order["order_id"].encode()
    ledger = _ledger()
    smtp = FakeSmtp()
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g"),
        CODEC,
        FakeRenderer(),
        smtp,
        FakePublisher(),
        handled_as=_handled_by(ledger, "orders"),
    )
    ledger.note(0, order["event_id"], Known("DEFERRED", 7, 30))
    redelivered, copy = (Inbound("orders", 0, offset, key, value, [], 1) for offset in (7, 99))
    try:
        assert asyncio.run(_run(pipeline, [redelivered])) == [(7, "SKIPPED")]
        assert asyncio.run(_run(pipeline, [copy])) == [(99, "SENT")]
        assert len(smtp.sent) == 1
    finally:
        ledger.close()


def test_retry_topic_outcomes_are_noted_under_the_input_partition_and_offset() -> None:
    ledger = _ledger()
    note = _noted_by(ledger, "orders")
    own = [*Origin("orders", 3, 41, 1).headers(), *RetryState(1, 1, 0, 0).headers()]
    retried = Inbound("orders.retry", 3, 0, b"k", b"", own, 2, trusted=True)
    moment = datetime(2026, 12, 7, tzinfo=UTC)
    outcome: Any = {"event_id": "e", "status": "FAILED", "occurred_at": moment}
    try:
        note(retried, outcome, 12)
        sent: Any = {"event_id": "e", "status": "SENT", "occurred_at": moment}
        note(Inbound("elsewhere", 3, 5, b"k", b"", [], 2), sent, 13)  # not the input topic's
        assert ledger.status(3, "e") == Known("FAILED", 41, 12, epoch_ms(moment))
    finally:
        ledger.close()


def test_a_deferred_pass_redelivered_is_skipped_once_it_or_a_later_pass_settled() -> None:
    """Relay down: the input pass is DEFERRED (r1 queued), r1's pass DEFERRED again (r2), r2's
    SENT. Redelivered before the retry topic's commit (a crash, a rebalance): r1 is skipped once
    its pass settled, even before r2 ran, while r2 itself still runs; after r2 was sent both are
    skipped. An operator's resend is skipped only once that very resend was sent."""
    from consumer.processing.records import RESEND_HEADER

    order = sample_order(4)
    value, key = CODEC.encode(order, ORDER_SCHEMA), order["order_id"].encode()
    ledger = _ledger()
    smtp = FakeSmtp(failures=[SendError("smtp_unreachable")] * 2)
    publisher = FakePublisher()
    pipeline = _deferring_pipeline(ledger, smtp, publisher)

    def queued(offset: int, *extra: tuple[str, bytes]) -> Inbound:
        _, headers = publisher.retries[offset]
        return Inbound("orders.retry", 0, offset, key, value, [*headers, *extra], 2, trusted=True)

    async def passes() -> list[list[tuple[int, str]]]:
        return [
            await _run(pipeline, [Inbound("orders", 0, 7, key, value, [], 1)]),
            await _run(pipeline, [queued(0)]),
            await _run(pipeline, [queued(0)]),  # its pass settled: skipped
            await _run(pipeline, [queued(1)]),
            sorted(await _run(pipeline, [queued(0), queued(1)])),
            await _run(pipeline, [queued(1, (RESEND_HEADER, b"1700000000000"))]),
            await _run(pipeline, [queued(1, (RESEND_HEADER, b"1700000000000"))]),  # redelivered
            await _run(pipeline, [queued(1, (RESEND_HEADER, b"1700000000001"))]),  # another resend
        ]

    try:
        assert asyncio.run(passes()) == [
            [(7, "DEFERRED")],
            [(0, "DEFERRED")],
            [(0, "SKIPPED")],
            [(1, "SENT")],
            [(0, "SKIPPED"), (1, "SKIPPED")],
            [(1, "SENT")],  # the resend
            [(1, "SKIPPED")],
            [(1, "SENT")],
        ]
        assert len(smtp.sent) == 3
        assert len(publisher.retries) == 2  # no pass was queued twice
    finally:
        ledger.close()


def test_a_deferred_pass_failing_for_good_reports_it_though_its_input_offset_is_known() -> None:
    """Every pass of an event shares its input record's offset: the DEFERRED that queued the
    pass must not make its permanent failure look like a redelivery of that outcome's record
    (its FAILED outcome would be left out, and the order lost from view)."""
    order = sample_order(5)
    value, key = CODEC.encode(order, ORDER_SCHEMA), order["order_id"].encode()
    ledger = _ledger()
    smtp = FakeSmtp(failures=[SendError("smtp_unreachable"), SendError("smtp_permanent", code=550)])
    publisher = FakePublisher()
    pipeline = _deferring_pipeline(ledger, smtp, publisher)

    async def passes() -> list[tuple[int, str]]:
        first = await _run(pipeline, [Inbound("orders", 0, 7, key, value, [], 1)])
        ((_, headers),) = publisher.retries
        return first + await _run(
            pipeline, [Inbound("orders.retry", 0, 0, key, value, headers, 2, trusted=True)]
        )

    try:
        assert asyncio.run(passes()) == [(7, "DEFERRED"), (0, "FAILED")]
        assert [o["status"] for o in publisher.outcomes] == ["DEFERRED", "FAILED"]
    finally:
        ledger.close()


def test_a_deferral_is_due_strictly_after_its_deferred_outcome() -> None:
    """Even with a delay of 0: the outcome that queued a pass never counts as that pass's own."""
    state = RetrySchedule(delays_s=(0,)).next(None, 1, now_ms=5_000)
    assert state is not None
    assert state.due_ms == 5_001


class _Outcome:
    def __init__(self, offset: int, outcome: dict[str, Any]) -> None:
        self._offset, self._outcome = offset, outcome

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> Any:
        return self._outcome

    def error(self) -> None:
        return None


class _Reader:
    """Outcome partition 0 as a list, read from where it is assigned; ``missing``: offsets never
    delivered (the read's time runs out before them)."""

    def __init__(self, outcomes: list[dict[str, Any]]) -> None:
        self.outcomes, self.missing = outcomes, set[int]()
        self.queue: Iterator[_Outcome] = iter(())
        self.assigned: list[int] = []

    def assign(self, partitions: list[Any]) -> None:
        (tp,) = partitions
        self.assigned.append(tp.offset)
        self.queue = iter(
            [
                _Outcome(o, self.outcomes[o])
                for o in range(tp.offset, len(self.outcomes))
                if o not in self.missing
            ]
        )

    def poll(self, _timeout: float) -> _Outcome | None:
        return next(self.queue, None)

    def unassign(self) -> None:
        self.queue = iter(())

    def close(self) -> None:
        pass


def test_a_partition_numbers_reads_go_newest_first_and_a_cut_off_read_keeps_what_it_found() -> None:
    """A number's input and retry partitions taken over together: the later start's stretch is
    read first, so the time limit cuts the oldest outcomes off, and each partition knows what its
    own range held (a cut-off read cannot make an older DEFERRED replace a newer FAILED)."""
    moment = datetime(2026, 12, 7, tzinfo=UTC)

    def outcome(event_id: str, status: str) -> dict[str, Any]:
        return {"event_id": event_id, "status": status, "source_offset": 1, "occurred_at": moment}

    outcomes = [
        outcome("x", "DEFERRED"),
        outcome("y", "DEFERRED"),
        outcome("y", "SENT"),
        outcome("x", "FAILED"),
    ]
    ledger = _ledger()
    ledger.close()
    reader = _Reader(outcomes)
    reader.missing = {2}  # the older stretch is cut off before y's SENT
    codec: Any = SimpleNamespace(decode=lambda value, _schema: value)
    ledger._reader, ledger._codec = cast("Any", reader), codec
    counts = ledger.load({("orders", 0): 3, ("orders.retry", 0): 0}, {0: 4}, timeout_s=0.3)
    assert reader.assigned == [3, 0]  # newest first
    assert counts == {("orders", 0): 1, ("orders.retry", 0): 2}
    assert [(k.status, k.at) for k in (ledger.status(0, e) for e in "xy") if k] == [
        ("FAILED", 3),
        ("DEFERRED", 1),
    ]
    ledger.forget({("orders.retry", 0)}, held={0})
    assert ledger.status(0, "y") is None  # the retry partition's read went with it
    assert ledger.status(0, "x") is not None


def test_a_pass_is_not_skipped_for_another_input_records_late_outcome() -> None:
    """A producer's duplicate starts a second chain of passes for the event: that chain's
    FAILED, stamped after this pass's due time, says nothing of this pass, which still runs."""
    from consumer.processing.pipeline import _handled_before

    state = RetryState(deferrals=1, attempts=1, due_ms=10_000, first_ms=0)
    queued = Inbound(
        "orders.retry",
        0,
        4,
        b"k",
        b"",
        [*Origin("orders", 0, 7, 0).headers(), *state.headers()],
        1,
        trusted=True,
    )
    assert _handled_before(queued, Known("FAILED", 7, 50, 10_000), "<m>")  # its own input record's
    assert not _handled_before(queued, Known("FAILED", 99, 51, 10_000), "<m>")  # another's
    assert not _handled_before(queued, Known("DEFERRED", 7, 49, 9_999), "<m>")  # what queued it


class _Record:
    def __init__(self, partition: int, timestamp: tuple[int, int]) -> None:
        self._partition, self._timestamp = partition, timestamp

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def error(self) -> None:
        return None


class _TimedReader:
    """Retry partitions' records (their timestamps) and the outcome partitions' times -> offsets."""

    def __init__(self, records: list[_Record], outcome_offsets: dict[int, int]) -> None:
        self.records, self.outcome_offsets = records, outcome_offsets
        self.queue: Iterator[_Record] = iter(())
        self.asked: list[tuple[str, int, int]] = []

    def assign(self, partitions: list[Any]) -> None:
        self.queue = iter(self.records)

    def poll(self, _timeout: float) -> _Record | None:
        return next(self.queue, None)

    def unassign(self) -> None:
        self.queue = iter(())

    def offsets_for_times(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.asked += [(tp.topic, tp.partition, tp.offset) for tp in partitions]
        return [
            SimpleNamespace(partition=tp.partition, offset=self.outcome_offsets[tp.partition], error=None)
            for tp in partitions
        ]


def test_a_retry_partitions_read_starts_at_the_outcomes_since_its_first_record_less_the_clock_slack() -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

    from consumer.kafka.ledger import CLOCK_SLACK_MS

    ledger = _ledger()
    ledger.close()
    records = [
        _Record(0, (TIMESTAMP_CREATE_TIME, 1_800_000_000_000)),  # the record at the committed offset
        _Record(0, (TIMESTAMP_CREATE_TIME, 1_800_000_099_000)),  # a later one: not it
        _Record(1, (TIMESTAMP_NOT_AVAILABLE, -1)),  # no time: no floor
        _Record(1, (TIMESTAMP_CREATE_TIME, 1_800_000_001_000)),  # a later one's would be too late
    ]
    reader = _TimedReader(records, {0: 4_321, 1: 9})
    ledger._reader = cast("Any", reader)
    assert ledger.outcomes_since("orders.retry", {0: 7, 1: 3}, timeout_s=0.3) == {0: 4_321}
    assert reader.asked == [("outcomes", 0, 1_800_000_000_000 - CLOCK_SLACK_MS)]
