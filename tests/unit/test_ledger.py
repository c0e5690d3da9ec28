"""The redelivery ledger's rule without a broker: SENT stays, otherwise the latest outcome wins,
notes are bounded and forgotten with their partition; and with the pipeline, a redriven copy
racing its redelivered original is e-mailed once, and one redriven after its deferrals ran out
is e-mailed."""

from __future__ import annotations

import asyncio
from typing import Any

from consumer.app.assembly import _handled_by, _noted_by
from consumer.kafka.ledger import Ledger, settle
from consumer.processing.pipeline import Pipeline, PipelineConfig
from consumer.processing.ports import Known
from consumer.processing.records import Inbound, Origin
from consumer.processing.retry import RetrySchedule, RetryState
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


def test_every_outcome_is_noted_bounded_and_forgotten_with_its_partition() -> None:
    ledger = _ledger(limit=3)
    try:
        ledger.note(0, "rejected", "REJECTED", 4)
        ledger.note(0, "a", "SENT", 5)
        ledger.note(1, "b", "DEFERRED", 6)
        assert (ledger.status(0, "rejected"), ledger.status(0, "a"), ledger.status(1, "b")) == (
            Known("REJECTED", 4),
            Known("SENT", 5),
            Known("DEFERRED", 6),
        )
        assert ledger.status(1, "a") is None  # per partition
        ledger.note(2, "c", "SENT", 7)  # the oldest note goes
        assert ledger.status(0, "rejected") is None
        ledger.forget({1})
        assert (ledger.status(1, "b"), ledger.status(2, "c")) == (None, Known("SENT", 7))
    finally:
        ledger.close()


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
        remember=lambda inbound, outcome: ledger.note(
            inbound.partition, outcome["event_id"], outcome["status"], inbound.offset
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
    pipeline = Pipeline(
        PipelineConfig(
            mail_from="orders@shop.example",
            message_domain="shop.example",
            group_id="g",
            send_attempts=1,
            retry=RetrySchedule(delays_s=(0.01,)),
        ),
        CODEC,
        FakeRenderer(),
        smtp,
        publisher,
        handled_as=_handled_by(ledger, "orders"),
        remember=_noted_by(ledger, "orders"),
    )
    original = Inbound("orders", 0, 7, key, value, [], 1)
    try:
        assert asyncio.run(_run(pipeline, [original])) == [(7, "DEFERRED")]
        ((_, headers),) = publisher.retries
        retried = Inbound("orders.retry", 0, 0, key, value, headers, 2, trusted=True)
        assert asyncio.run(_run(pipeline, [retried])) == [(0, "FAILED")]
        assert len(publisher.dead_letters) == 1
        assert ledger.status(0, order["event_id"]) == Known("FAILED", 7)
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
    ledger.note(0, order["event_id"], "DEFERRED", 7)
    copy = Inbound("orders", 0, 7, order["order_id"].encode(), CODEC.encode(order, ORDER_SCHEMA), [], 1)
    try:
        assert asyncio.run(_run(pipeline, [copy])) == [(7, "SKIPPED")]
        assert not smtp.sent
    finally:
        ledger.close()


def test_retry_topic_outcomes_are_noted_under_the_input_partition_and_offset() -> None:
    ledger = _ledger()
    note = _noted_by(ledger, "orders")
    own = [*Origin("orders", 3, 41, 1).headers(), *RetryState(1, 1, 0, 0).headers()]
    retried = Inbound("orders.retry", 3, 0, b"k", b"", own, 2, trusted=True)
    outcome: Any = {"event_id": "e", "status": "FAILED"}
    try:
        note(retried, outcome)
        sent: Any = {"event_id": "e", "status": "SENT"}
        note(Inbound("elsewhere", 3, 5, b"k", b"", [], 2), sent)  # not the input topic's
        assert ledger.status(3, "e") == Known("FAILED", 41)
    finally:
        ledger.close()
