"""The redelivery ledger's rule without a broker: the strongest status wins, only deliveries are
noted at run time, notes are bounded and forgotten with their partition; and with the pipeline, a
redriven copy racing its redelivered original is e-mailed once."""

from __future__ import annotations

import asyncio

from consumer.kafka.ledger import Ledger, stronger
from consumer.processing.pipeline import Pipeline, PipelineConfig
from consumer.processing.records import Inbound
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakePublisher, FakeRenderer, FakeSmtp, _run

CODEC = Codec.from_directory()


def _ledger(limit: int = 50_000) -> Ledger:
    # The reader is never asked anything here: no broker needed.
    return Ledger(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "t"}, "outcomes", CODEC, recent_limit=limit
    )


def test_the_strongest_status_wins() -> None:
    assert stronger(None, "REJECTED") == "REJECTED"
    assert stronger("REJECTED", "SENT") == "SENT"
    assert stronger("SENT", "REJECTED") == "SENT"
    assert stronger("FAILED", "DEFERRED") == "DEFERRED"


def test_only_deliveries_are_noted_bounded_and_forgotten_with_their_partition() -> None:
    ledger = _ledger(limit=2)
    try:
        ledger.note(0, "rejected", "REJECTED")
        ledger.note(0, "a", "SENT")
        ledger.note(1, "b", "DEFERRED")
        assert (ledger.status(0, "rejected"), ledger.status(0, "a"), ledger.status(1, "b")) == (
            None,
            "SENT",
            "DEFERRED",
        )
        assert ledger.status(1, "a") is None  # per partition
        ledger.note(2, "c", "SENT")  # the oldest note goes
        assert ledger.status(0, "a") is None
        ledger.forget({1})
        assert (ledger.status(1, "b"), ledger.status(2, "c")) == (None, "SENT")
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
        handled_as=lambda inbound, event_id: ledger.status(inbound.partition, event_id) or "REJECTED",
        remember=lambda inbound, outcome: ledger.note(
            inbound.partition, outcome["event_id"], outcome["status"]
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
