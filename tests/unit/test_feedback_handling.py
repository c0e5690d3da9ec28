"""From reports to records and suppressions (issue 19), with the index and producer faked: which
reports suppress an address, which are dropped, and when the sender is told to try again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.feedback.handling import FeedbackHandler, SoftBounces, TryLater
from consumer.feedback.index import IndexLagging, Sent
from consumer.processing.ports import PublishError
from delivery.feedback.model import Kind, Report, Source
from delivery.suppression import InvalidAddress
from schemas import FEEDBACK_SCHEMA, Codec

EVENT = "2f1c8f0e-9a4b-4c1e-8e3a-0a1b2c3d4e5f"
SENT = Sent("ORD-1", 4, f"<{EVENT}.ordermail@shop.example>", "customer.example", "a" * 32, None)


@dataclass
class FakeIndex:
    known: dict[str, Sent] = field(default_factory=lambda: {EVENT: SENT})
    lagging: bool = False

    async def find(self, event_id: str, arrived_at: float, timeout_s: float) -> Sent | None:
        if self.lagging:
            raise IndexLagging
        return self.known.get(event_id)


@dataclass
class FakePublisher:
    records: list[tuple[str, bytes, bytes, int | None]] = field(default_factory=list)
    refuse: bool = False

    async def publish(self, topic: str, key: bytes, value: bytes, partition: int | None, headers: Any) -> int:
        if self.refuse:
            raise PublishError("broker away", record_level=False)
        self.records.append((topic, key, value, partition))
        return len(self.records)


@dataclass
class FakeSuppressor:
    added: list[tuple[str, str, str]] = field(default_factory=list)

    async def add(
        self, address: str, reason: str, source: str | None = None, event_id: str | None = None
    ) -> None:
        if "@" not in address:
            raise InvalidAddress("not an address")
        self.added.append((address, reason, source or ""))


def _handler(index: FakeIndex | None = None, publisher: FakePublisher | None = None) -> FeedbackHandler:
    return FeedbackHandler(
        index or FakeIndex(),  # type: ignore[arg-type]
        publisher or FakePublisher(),  # type: ignore[arg-type]
        Codec.from_directory(),
        "feedback",
        FakeSuppressor(),
        SoftBounces(limit=3, window_s=3600),
        lookup_timeout_s=1,
    )


def _bounce(**overrides: Any) -> Report:
    values: dict[str, Any] = {
        "source": Source.DSN,
        "kind": Kind.BOUNCED,
        "bounce_type": "hard",
        "status_code": "5.1.1",
        "event_id": EVENT,
        "attempt": 1,
        "recipient": "kim@customer.example",
        "recipient_domain": "customer.example",
        "recipient_confirmed": True,
    }
    return Report(**{**values, **overrides})


def _handle(handler: FeedbackHandler, *reports: Report) -> None:
    asyncio.run(handler.handle(reports, 0.0))


def _suppressed(handler: FeedbackHandler) -> list[tuple[str, str, str]]:
    assert isinstance(handler.suppressor, FakeSuppressor)
    return handler.suppressor.added


def test_a_hard_bounce_is_published_where_its_order_is_and_suppresses_the_address() -> None:
    handler = _handler()
    _handle(handler, _bounce())
    [(topic, key, value, partition)] = handler.publisher.records  # type: ignore[attr-defined]
    assert (topic, key, partition) == ("feedback", b"ORD-1", 4)
    record = Codec.from_directory().decode(value, FEEDBACK_SCHEMA)
    assert (record["kind"], record["bounce_type"], record["order_id"], record["trace_id"]) == (
        "BOUNCED",
        "hard",
        "ORD-1",
        "a" * 32,
    )
    assert record["recipient_domain"] == "customer.example"  # from our outcome, not the report
    assert b"kim@" not in value
    assert _suppressed(handler) == [("kim@customer.example", "hard_bounce", "dsn")]


def test_the_same_news_again_keeps_its_feedback_id() -> None:
    """A relay delivering a DSN twice, or someone replaying it altered: one id, which consumers
    drop duplicates by."""
    handler = _handler()
    _handle(handler, _bounce())
    _handle(handler, _bounce(occurred_at=datetime(2026, 12, 7, tzinfo=UTC), recipient_domain="x.example"))
    _handle(handler, _bounce(kind=Kind.DELAYED, bounce_type=None, status_code="4.4.1"))
    codec = Codec.from_directory()
    ids = [codec.decode(r[2], FEEDBACK_SCHEMA)["feedback_id"] for r in handler.publisher.records]  # type: ignore[attr-defined]
    assert ids[0] == ids[1] != ids[2]


def test_one_report_publishes_one_record_for_its_e_mail() -> None:
    """A DSN listing fifty recipients about one e-mail: the one the token was made for, or
    else the first, never fifty records (or fifty bounces in the alert's rate)."""
    handler = _handler()
    strangers = [_bounce(recipient=f"r{n}@elsewhere.example", recipient_confirmed=False) for n in range(50)]
    _handle(handler, *strangers)
    assert len(handler.publisher.records) == 1  # type: ignore[attr-defined]
    _handle(handler, *strangers[:10], _bounce(), *strangers[10:])
    assert len(handler.publisher.records) == 2  # type: ignore[attr-defined]
    assert _suppressed(handler) == [("kim@customer.example", "hard_bounce", "dsn")]


def test_a_date_the_report_makes_up_is_not_believed() -> None:
    handler = _handler()
    _handle(handler, _bounce(occurred_at=datetime(9999, 12, 31, tzinfo=UTC)))
    _handle(handler, _bounce(kind=Kind.DELAYED, occurred_at=datetime(1970, 1, 1, tzinfo=UTC)))
    codec = Codec.from_directory()
    assert len(handler.publisher.records) == 2  # type: ignore[attr-defined]
    for _, _, value, _ in handler.publisher.records:  # type: ignore[attr-defined]
        occurred = codec.decode(value, FEEDBACK_SCHEMA)["occurred_at"]
        assert abs((occurred - datetime.now(UTC)).total_seconds()) < 60


def test_only_the_recipient_the_token_was_made_for_is_suppressed() -> None:
    handler = _handler()
    _handle(handler, _bounce(recipient="victim@elsewhere.example", recipient_confirmed=False))
    assert len(handler.publisher.records) == 1  # type: ignore[attr-defined]  # still feedback for the event
    assert _suppressed(handler) == []
    # An ESP signs its events and knows whom it sent to.
    _handle(handler, _bounce(source=Source.SES, recipient_confirmed=False))
    assert _suppressed(handler) == [("kim@customer.example", "hard_bounce", "ses")]
    _handle(handler, _bounce(source=Source.SES, recipient="no address at all"))  # counted, not raised
    assert len(_suppressed(handler)) == 1


def test_complaints_suppress_soft_bounces_only_past_the_limit() -> None:
    handler = _handler()
    _handle(handler, _bounce(kind=Kind.COMPLAINED, bounce_type=None, source=Source.ARF))
    assert _suppressed(handler) == [("kim@customer.example", "complaint", "arf")]
    soft = [
        _bounce(bounce_type="soft", status_code="4.2.2", recipient="full@customer.example", attempt=n)
        for n in range(3)
    ]
    for report in soft[:2]:
        _handle(handler, report)
    _handle(handler, soft[1])  # the same report again (a relay retrying) is not counted twice
    assert len(_suppressed(handler)) == 1
    _handle(handler, soft[2])
    assert _suppressed(handler)[-1] == ("full@customer.example", "soft_bounces", "dsn")
    _handle(
        handler, _bounce(kind=Kind.DELAYED, bounce_type=None), _bounce(kind=Kind.DELIVERED, bounce_type=None)
    )
    assert len(_suppressed(handler)) == 2


def test_unknown_events_are_dropped_and_a_lagging_index_or_broker_asks_for_later() -> None:
    handler = _handler(FakeIndex(known={}))
    _handle(handler, _bounce(kind=Kind.DELAYED, bounce_type=None))
    _handle(handler, _bounce(event_id=None))
    assert handler.publisher.records == []  # type: ignore[attr-defined]
    with pytest.raises(TryLater):
        _handle(_handler(FakeIndex(lagging=True)), _bounce())
    refusing = _handler(publisher=FakePublisher(refuse=True))
    with pytest.raises(TryLater):
        _handle(refusing, _bounce())
    assert _suppressed(refusing) == []  # nothing suppressed for a report that will come again


def test_unconfirmed_soft_bounces_do_not_count_towards_suppression() -> None:
    """A customer using their own token to report soft bounces of someone else's address must
    not bring that address closer to suppression."""
    handler = _handler()
    for n in range(5):
        _handle(
            handler,
            _bounce(
                bounce_type="soft", recipient="victim@bank.example", recipient_confirmed=False, attempt=n
            ),
        )
    _handle(handler, _bounce(source=Source.SES, bounce_type="soft", recipient="victim@bank.example"))
    assert _suppressed(handler) == []


def test_any_failure_while_settling_asks_for_the_report_again() -> None:
    """Never a final error (aiosmtpd would answer 500 and the relay drop the report)."""

    class Broken(FakeSuppressor):
        async def add(
            self, address: str, reason: str, source: str | None = None, event_id: str | None = None
        ) -> None:
            raise RuntimeError("suppression topic away")

    handler = _handler()
    handler = FeedbackHandler(
        handler.index, handler.publisher, handler.codec, "feedback", Broken(), handler.soft_bounces
    )
    with pytest.raises(TryLater):
        _handle(handler, _bounce())


def test_a_confirmed_report_suppresses_even_when_its_order_is_no_longer_known() -> None:
    """Older than the index reaches: no record (no order to file it under), but the token proves
    the address bounced."""
    handler = _handler(FakeIndex(known={}))
    _handle(handler, _bounce())
    assert handler.publisher.records == []  # type: ignore[attr-defined]
    assert _suppressed(handler) == [("kim@customer.example", "hard_bounce", "dsn")]


def test_soft_bounces_are_counted_per_address_within_the_window() -> None:
    counter = SoftBounces(limit=2, window_s=10)
    assert not counter.count("a@x.example", now=0)
    assert not counter.count("b@x.example", now=1)
    assert not counter.count("a@x.example", now=20)  # the first one is out of the window
    assert counter.count("A@x.example ", now=21)  # the same address, as an MTA may write it
    assert not SoftBounces(limit=0, window_s=10).count("a@x.example", now=0)  # 0: never


def test_soft_bounces_forget_what_the_window_has_passed() -> None:
    """Addresses were dropped only at the cap (100,000, ~100 MB), never for their age."""
    bounces = SoftBounces(limit=2, window_s=10)
    for n in range(100):
        bounces.count(f"once{n}@x.example", now=n / 10, feedback_id=f"f-{n}")
    assert bounces.addresses == 100
    assert not bounces.count("late@x.example", now=30, feedback_id="f-late")
    assert bounces.addresses == 1
    assert not bounces.count("once0@x.example", now=31, feedback_id="f-0")  # a replay long after: one
    assert bounces.count("once0@x.example", now=32, feedback_id="f-again")  # two within the window


def test_soft_bounces_count_the_spellings_of_one_address_together() -> None:
    """Case and IDN spellings are one address, as in the suppression list."""
    bounces = SoftBounces(limit=3, window_s=3600)
    assert not bounces.count("Kim@Bücher.example", 0.0, "f-1")
    assert not bounces.count("kim@xn--bcher-kva.example", 1.0, "f-2")
    assert bounces.count("kim@bücher.example", 2.0, "f-3")


def test_a_report_still_being_read_keeps_its_place_when_its_session_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reading thread cannot be cancelled: a sender hanging up mid-read must not free its place
    for another message (the reads at once would be unbounded, and the threads shared)."""
    import threading

    from aiosmtpd.smtp import Envelope

    from consumer.feedback import smtp_receiver
    from delivery.feedback.inbound import Inbound
    from delivery.return_path import ReturnPath

    release, started = threading.Event(), threading.Semaphore(0)

    def slow_read(*_args: Any) -> Inbound:
        started.release()
        release.wait(10)
        return Inbound(dropped="not_a_report")

    monkeypatch.setattr(smtp_receiver, "read_inbound", slow_read)
    return_path = ReturnPath(local="orders", domain="bounces.shop.example", secret=b"0123456789abcdef-secret")
    receiver = smtp_receiver.ReportReceiver(None, return_path, "fbl")  # type: ignore[arg-type]

    async def scenario() -> None:
        envelope = Envelope()
        envelope.original_content = b"Subject: hi\r\n\r\nbody\r\n"
        sessions = [asyncio.create_task(receiver.handle_DATA(None, None, envelope)) for _ in range(2)]  # type: ignore[arg-type]
        for _ in sessions:  # both reading
            assert await asyncio.to_thread(started.acquire, True, 5)
        for session in sessions:
            session.cancel()  # the sender hung up, or the session timed out
        await asyncio.gather(*sessions, return_exceptions=True)
        assert receiver._reading.locked()  # both threads still read: no place for a third
        release.set()
        async with asyncio.timeout(5):  # the places come back as the threads end
            for _ in sessions:
                await receiver._reading.acquire()

    asyncio.run(scenario())


def test_the_soft_bounce_that_reaches_the_limit_counts_again_when_its_suppression_was_not_written() -> None:
    class Flaky(FakeSuppressor):
        fail = True

        async def add(
            self, address: str, reason: str, source: str | None = None, event_id: str | None = None
        ) -> None:
            if self.fail:
                self.fail = False
                raise RuntimeError("suppression topic away")
            await super().add(address, reason, source, event_id)

    base = _handler()
    suppressor = Flaky()
    handler = FeedbackHandler(
        base.index, base.publisher, base.codec, "feedback", suppressor, base.soft_bounces
    )
    soft = [_bounce(bounce_type="soft", status_code="4.2.2", attempt=n) for n in range(3)]
    for report in soft[:2]:
        _handle(handler, report)
    with pytest.raises(TryLater):
        _handle(handler, soft[2])  # reaches the limit; the write fails
    _handle(handler, soft[2])  # the relay sends it again
    assert suppressor.added == [("kim@customer.example", "soft_bounces", "dsn")]
