"""The pipeline with in-memory fakes: ordering per key, parallelism across keys, error policy."""

from __future__ import annotations

import asyncio
import email
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from consumer.processing.pipeline import LET_GO, Done, LetGo, Pipeline, PipelineConfig
from consumer.processing.ports import Fetched, Known, PublishError
from consumer.processing.records import Headers, Inbound, Origin
from consumer.processing.retry import RetrySchedule, RetryState
from delivery import SendError, SendResult
from delivery.return_path import ReturnPath
from rendering import RenderedAttachment, RenderedMail, RenderError
from rendering.errors import RenderErrorReason
from schemas import ORDER_SCHEMA, Codec, DeliveryOutcome, OrderCompleted
from schemas.samples import sample_order

CODEC = Codec.from_directory()
READER = ORDER_SCHEMA


@dataclass
class FakeRenderer:
    delay_s: float = 0.0
    error: RenderErrorReason | None = None
    pdf_size: int = 2000
    active: int = 0
    max_active: int = 0

    async def render(self, order: OrderCompleted, fetched: Fetched = ()) -> RenderedMail:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(random.uniform(0, self.delay_s))
        self.active -= 1
        if self.error:
            raise RenderError(self.error)
        pdf = RenderedAttachment("r.pdf", b"%PDF" + b"x" * self.pdf_size, pages=1, encrypted=True)
        return RenderedMail("subject", "text", "<p>html</p>", (pdf,), 5.0, 1.0, "default", "en")

    @asynccontextmanager
    async def reserved(self) -> AsyncIterator[Callable[[OrderCompleted, Fetched], Awaitable[RenderedMail]]]:
        yield self.render  # as many workers as there are events


@dataclass
class FakeSmtp:
    delay_s: float = 0.0
    failures: list[SendError] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # Message-IDs in send order
    cool_downs: int = 0
    messages: list[bytes] = field(default_factory=list)  # as sent, sent or refused
    senders: list[str] = field(default_factory=list)  # each try's envelope sender

    async def send(self, data: bytes, *, sender: str, recipient: str) -> SendResult:
        self.messages.append(data)
        self.senders.append(sender)
        message = email.message_from_bytes(data)
        await asyncio.sleep(random.uniform(0, self.delay_s))
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(str(message["Message-ID"]))
        return SendResult(code=250, send_ms=1.0)

    async def cool_down(self) -> None:
        self.cool_downs += 1


@dataclass
class FakePublisher:
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    dead_letters: list[tuple[Inbound, dict[str, bytes]]] = field(default_factory=list)
    retries: list[tuple[Inbound, Headers]] = field(default_factory=list)

    async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int:
        self.outcomes.append(outcome)
        return len(self.outcomes)

    async def publish_dead_letter(
        self, inbound: Inbound, headers: Headers, *, omit_record: bool = False
    ) -> int:
        self.dead_letters.append((inbound, dict(headers)))
        return len(self.dead_letters)

    async def publish_retry(self, inbound: Inbound, headers: Headers) -> int:
        self.retries.append((inbound, headers))
        return len(self.retries)


def _pipeline(renderer: FakeRenderer, smtp: FakeSmtp, publisher: FakePublisher, **config: Any) -> Pipeline:
    settings = PipelineConfig(
        mail_from="orders@shop.example",
        message_domain="shop.example",
        group_id="g",
        retry_backoff_s=0.001,
        **config,
    )
    return Pipeline(settings, CODEC, renderer, smtp, publisher)


def _inbound(order: OrderCompleted | None, offset: int, *, value: bytes | None = None) -> Inbound:
    key = order["order_id"].encode() if order else b"BROKEN"
    data = value if value is not None else CODEC.encode(order or {}, READER)
    return Inbound("orders", 0, offset, key, data, [("traceparent", b"00-abc")], 1_700_000_000_000)


def _status(result: Done | LetGo | None) -> str:
    if result is LET_GO:
        return "LET GO"
    return "SKIPPED" if result is None else result.outcome["status"]


async def _run(pipeline: Pipeline, inbounds: list[Inbound]) -> list[tuple[int, str]]:
    done: list[tuple[int, str]] = []
    await asyncio.gather(
        *(
            pipeline.process(
                i,
                lambda inbound, result: done.append((inbound.offset, _status(result))),
            )
            for i in inbounds
        )
    )
    return done


def test_same_key_in_arrival_order_different_keys_in_parallel() -> None:
    random.seed(7)
    base = [sample_order(seed) for seed in range(3)]
    inbounds: list[Inbound] = []
    expected_order: dict[str, list[str]] = {o["order_id"]: [] for o in base}
    for offset in range(30):
        order = base[offset % 3].copy()
        order["event_id"] = f"00000000-0000-4000-8000-{offset:012d}"
        inbounds.append(_inbound(order, offset))
        expected_order[order["order_id"]].append(f"<{order['event_id']}.ordermail@shop.example>")
    renderer, smtp, publisher = FakeRenderer(delay_s=0.01), FakeSmtp(delay_s=0.01), FakePublisher()

    done = asyncio.run(_run(_pipeline(renderer, smtp, publisher), inbounds))

    assert sorted(offset for offset, _ in done) == list(range(30))
    for ids in expected_order.values():
        assert [m for m in smtp.sent if m in ids] == ids  # per key: exactly the arrival order
    assert renderer.max_active == 3  # the three keys did run at the same time


def test_transient_failure_is_retried_then_sent() -> None:
    smtp = FakeSmtp(failures=[SendError("smtp_transient", code=451)])
    publisher = FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [_inbound(sample_order(1), 0)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["attempt"], outcome["smtp_code"]) == ("SENT", 2, 250)
    assert not publisher.dead_letters


def test_each_try_names_the_event_and_its_attempt_in_the_envelope_sender() -> None:
    return_path = ReturnPath(local="orders", domain="bounces.shop.example", secret=b"s" * 32)
    smtp = FakeSmtp(failures=[SendError("smtp_transient", code=451)])
    order = sample_order(1)
    pipeline = _pipeline(FakeRenderer(), smtp, FakePublisher(), return_path=return_path)
    asyncio.run(_run(pipeline, [_inbound(order, 0)]))
    tokens = [return_path.parse(sender) for sender in smtp.senders]
    assert [(t.event_id, t.attempt) for t in tokens if t is not None] == [
        (order["event_id"], 1),
        (order["event_id"], 2),
    ]
    assert all(t is not None and return_path.names_recipient(t, order["customer"]["email"]) for t in tokens)
    assert all(order["customer"]["email"] not in sender for sender in smtp.senders)
    plain = FakeSmtp()
    asyncio.run(_run(_pipeline(FakeRenderer(), plain, FakePublisher()), [_inbound(order, 0)]))
    assert plain.senders == ["orders@shop.example"]  # unset: today's envelope sender


def test_permanent_failure_is_failed_without_retry_or_dead_letter() -> None:
    smtp = FakeSmtp(failures=[SendError("smtp_permanent", code=550)])
    publisher = FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [_inbound(sample_order(1), 0)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"], outcome["attempt"], outcome["smtp_code"]) == (
        "FAILED",
        "smtp_permanent",
        1,
        550,
    )
    assert not publisher.dead_letters
    assert not smtp.sent


def test_exhausted_retries_fail_and_dead_letter() -> None:
    smtp = FakeSmtp(failures=[SendError("smtp_unreachable")] * 3)
    publisher = FakePublisher()
    pipeline = _pipeline(FakeRenderer(), smtp, publisher, send_attempts=3, retry=RetrySchedule(delays_s=()))
    asyncio.run(_run(pipeline, [_inbound(sample_order(1), 0)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"], outcome["attempt"]) == ("FAILED", "smtp_unreachable", 3)
    ((_, headers),) = publisher.dead_letters
    assert headers["ordermail.error.class"] == b"smtp_unreachable"
    assert headers["traceparent"] == b"00-abc"  # original headers are kept


@pytest.mark.parametrize(
    ("renderer", "reason"),
    [
        (FakeRenderer(error="weak_password"), "weak_password"),
        (FakeRenderer(error="render_timeout"), "render_timeout"),
        (FakeRenderer(pdf_size=20_000), "attachment_too_large"),
    ],
)
def test_render_problems_are_rejected_and_never_sent(renderer: FakeRenderer, reason: str) -> None:
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = _pipeline(renderer, smtp, publisher, max_attachment_bytes=10_000)
    asyncio.run(_run(pipeline, [_inbound(sample_order(1), 0)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", reason)
    assert len(publisher.dead_letters) == 1
    assert not smtp.sent


def test_undecodable_bytes_get_a_stable_surrogate_event_id() -> None:
    publisher = FakePublisher()
    asyncio.run(
        _run(_pipeline(FakeRenderer(), FakeSmtp(), publisher), [_inbound(None, 41, value=b"\xc3\x01junk")])
    )
    (outcome,) = publisher.outcomes
    assert outcome["status"] == "REJECTED"
    assert outcome["reason"] in {"unknown_schema", "undecodable"}
    assert outcome["event_id"] == _inbound(None, 41, value=b"").surrogate_event_id()
    assert outcome["order_id"] == "BROKEN"


def test_a_bug_is_dead_lettered_not_crashed(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenRenderer(FakeRenderer):
        async def render(self, order: OrderCompleted, fetched: Fetched = ()) -> RenderedMail:
            raise KeyError(order["customer"]["last_name"])  # message quotes personal data

    publisher = FakePublisher()
    asyncio.run(_run(_pipeline(BrokenRenderer(), FakeSmtp(), publisher), [_inbound(sample_order(1), 0)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", "internal_error")
    assert "KeyError" in caplog.text
    assert sample_order(1)["customer"]["last_name"] not in caplog.text  # the type is logged, not the text


def test_events_already_handled_are_skipped_without_mail_or_outcome() -> None:
    handled_order, fresh_order = sample_order(1), sample_order(2)
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g"),
        CODEC,
        FakeRenderer(),
        smtp,
        publisher,
        handled_as=lambda inbound, event_id: (
            Known("SENT", inbound.offset)
            if event_id in {handled_order["event_id"], _inbound(None, 9, value=b"").surrogate_event_id()}
            else None
        ),
    )
    done = asyncio.run(
        _run(
            pipeline, [_inbound(handled_order, 0), _inbound(fresh_order, 1), _inbound(None, 9, value=b"junk")]
        )
    )
    assert sorted(done) == [(0, "SKIPPED"), (1, "SENT"), (9, "SKIPPED")]
    assert [o["order_id"] for o in publisher.outcomes] == [fresh_order["order_id"]]
    assert len(smtp.sent) == 1


def _pipeline_with_ledger(
    renderer: FakeRenderer, smtp: FakeSmtp, publisher: FakePublisher, known: dict[str, Known]
) -> Pipeline:
    return Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g"),
        CODEC,
        renderer,
        smtp,
        publisher,
        handled_as=lambda _inbound, event_id: known.get(event_id),
    )


def test_an_event_rejected_before_is_processed_again_and_one_sent_or_deferred_is_not() -> None:
    rejected, failed, sent, deferred = (sample_order(s) for s in (1, 2, 3, 4))
    known = {
        rejected["event_id"]: Known("REJECTED", 0),
        failed["event_id"]: Known("FAILED", 1),
        sent["event_id"]: Known("SENT", 20),
        deferred["event_id"]: Known("DEFERRED", 3),
    }
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = _pipeline_with_ledger(FakeRenderer(), smtp, publisher, known)
    inbounds = [_inbound(order, n) for n, order in enumerate((rejected, failed, sent, deferred))]
    done = asyncio.run(_run(pipeline, inbounds))
    assert sorted(done) == [(0, "SENT"), (1, "SENT"), (2, "SKIPPED"), (3, "SKIPPED")]
    assert sorted(o["order_id"] for o in publisher.outcomes) == sorted(
        o["order_id"] for o in (rejected, failed)
    )
    assert len(smtp.sent) == 2


def test_a_record_redelivered_after_its_rejection_and_rejected_again_gets_no_second_outcome() -> None:
    order = sample_order(1)
    publisher = FakePublisher()
    pipeline = _pipeline_with_ledger(
        FakeRenderer(error="template_error"), FakeSmtp(), publisher, {order["event_id"]: Known("REJECTED", 0)}
    )
    assert asyncio.run(_run(pipeline, [_inbound(order, 0)])) == [(0, "SKIPPED")]
    assert not publisher.outcomes
    assert not publisher.dead_letters


@pytest.mark.parametrize("earlier", ["REJECTED", "FAILED"])
def test_a_redriven_copy_that_fails_again_gets_its_outcome_and_dead_letter(earlier: str) -> None:
    """The ledger knows the event's failure at offset 7; the redriven copy at 42 fails for good
    (for another reason too): it must leave a trace, or the order is lost without one."""
    order = sample_order(1)
    publisher = FakePublisher()
    pipeline = _pipeline_with_ledger(
        FakeRenderer(error="render_error"), FakeSmtp(), publisher, {order["event_id"]: Known(earlier, 7)}
    )
    assert asyncio.run(_run(pipeline, [_inbound(order, 42)])) == [(42, "REJECTED")]
    assert [(o["reason"], o["source_offset"]) for o in publisher.outcomes] == [("render_error", 42)]
    ((_, headers),) = publisher.dead_letters
    assert headers["ordermail.error.class"] == b"render_error"


def test_a_resend_on_the_retry_topic_is_a_new_mail_and_says_so_and_a_forged_one_is_not() -> None:
    order = sample_order(1)
    value = CODEC.encode(order, READER)
    own = [
        *Origin("orders", 0, 5, 1_700_000_000_000).headers(),
        *RetryState(0, 0, 0, int(time.time() * 1000)).headers(),
        ("ordermail.resend", b"1733550000000"),
    ]
    resend = Inbound("orders.retry", 0, 1, order["order_id"].encode(), value, own, 2, trusted=True)
    forged = Inbound("orders", 0, 6, order["order_id"].encode(), value, own, 3)  # the input topic
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [resend]))
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [forged]))
    assert smtp.sent == [
        f"<{order['event_id']}.resend-1733550000000.ordermail@shop.example>",
        f"<{order['event_id']}.ordermail@shop.example>",
    ]
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("SENT", "resend"), ("SENT", None)]
    assert [o["message_id"] for o in publisher.outcomes] == smtp.sent
    assert publisher.outcomes[0]["source_offset"] == 5  # the input record it was found at


def test_a_resend_deferred_stays_a_resend_and_a_malformed_resend_header_is_rejected() -> None:
    order = sample_order(1)
    value = CODEC.encode(order, READER)
    own = [*Origin("orders", 0, 5, 1).headers(), *RetryState(0, 0, 0, int(time.time() * 1000)).headers()]
    resend = Inbound("orders.retry", 0, 1, b"k", value, [*own, ("ordermail.resend", b"17")], 2, trusted=True)
    broken = Inbound(
        "orders.retry", 0, 2, b"k", value, [*own, ("ordermail.resend", b"\xd9\xa1")], 2, trusted=True
    )
    assert broken.malformed
    publisher = FakePublisher()
    smtp = FakeSmtp(failures=[SendError("smtp_transient", code=451)] * 4)
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher, send_attempts=2), [resend, broken]))
    (deferred,) = publisher.retries
    assert ("ordermail.resend", b"17") in deferred[1]
    assert sorted((o["status"], o["reason"]) for o in publisher.outcomes) == [
        ("DEFERRED", "smtp_transient"),
        ("REJECTED", "malformed_headers"),
    ]


def test_transient_failures_defer_through_the_retry_topic_and_keep_the_origin() -> None:
    order = sample_order(1)
    smtp = FakeSmtp(failures=[SendError("smtp_transient", code=451)] * 2)
    publisher = FakePublisher()
    pipeline = _pipeline(
        FakeRenderer(), smtp, publisher, send_attempts=2, retry=RetrySchedule(delays_s=(0.05, 60))
    )
    value = CODEC.encode(order, READER)
    original = Inbound("orders", 4, 77, order["order_id"].encode(), value, [("traceparent", b"t")], 5)

    asyncio.run(_run(pipeline, [original]))
    (deferred,) = publisher.outcomes
    assert (deferred["status"], deferred["reason"], deferred["attempt"]) == ("DEFERRED", "smtp_transient", 2)
    ((_, headers),) = publisher.retries
    assert not publisher.dead_letters

    # The retry record comes back from another topic and partition: the origin travels with it.
    retried = Inbound("orders.retry", 4, 3, original.key, original.value, headers, 6, trusted=True)
    state = retried.retry
    assert state is not None
    assert not retried.malformed
    assert (state.deferrals, state.attempts) == (1, 2)
    asyncio.run(_run(pipeline, [retried]))
    sent = publisher.outcomes[-1]
    assert (sent["status"], sent["attempt"], sent["source_partition"], sent["source_offset"]) == (
        "SENT",
        3,
        4,
        77,
    )
    assert dict(headers)["traceparent"] == b"t"


def test_the_last_deferral_ends_failed_and_dead_lettered() -> None:
    order = sample_order(1)
    publisher = FakePublisher()
    pipeline = _pipeline(
        FakeRenderer(),
        FakeSmtp(failures=[SendError("smtp_unreachable")]),
        publisher,
        send_attempts=1,
        retry=RetrySchedule(delays_s=(1,)),
    )
    state = RetryState(deferrals=1, attempts=5, due_ms=0, first_ms=0)
    value = CODEC.encode(order, READER)
    headers = [*Origin("orders", 0, 9, 0).headers(), *state.headers()]
    retried = Inbound("orders.retry", 0, 0, order["order_id"].encode(), value, headers, 0, trusted=True)
    asyncio.run(_run(pipeline, [retried]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"], outcome["attempt"]) == ("FAILED", "smtp_unreachable", 6)
    assert len(publisher.dead_letters) == 1


def test_throttling_pauses_sending_without_spending_attempts() -> None:
    smtp = FakeSmtp(failures=[SendError("smtp_throttled", code=421)] * 3)
    publisher = FakePublisher()
    asyncio.run(
        _run(_pipeline(FakeRenderer(), smtp, publisher, send_attempts=1), [_inbound(sample_order(1), 0)])
    )
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["attempt"]) == ("SENT", 1)
    assert smtp.cool_downs == 3


def test_a_waiting_deferred_record_is_let_go_on_release() -> None:
    order = sample_order(1)
    publisher, smtp = FakePublisher(), FakeSmtp()
    pipeline = _pipeline(FakeRenderer(), smtp, publisher, retry=RetrySchedule(delays_s=(60,)))
    state = RetryState(deferrals=1, attempts=2, due_ms=int((time.time() + 60) * 1000), first_ms=0)
    value = CODEC.encode(order, READER)
    headers = [*Origin("orders", 2, 9, 0).headers(), *state.headers()]
    waiting = Inbound("orders.retry", 2, 0, order["order_id"].encode(), value, headers, 0, trusted=True)

    async def scenario() -> list[tuple[int, str]]:
        given_up, done = asyncio.Event(), []
        running = asyncio.ensure_future(
            pipeline.process(waiting, lambda i, d: done.append((i.offset, _status(d))), given_up)
        )
        await asyncio.sleep(0.05)
        given_up.set()  # the partition was revoked
        await asyncio.wait_for(running, timeout=5)
        return done

    assert asyncio.run(scenario()) == [(0, "LET GO")]
    assert not publisher.outcomes
    assert not smtp.sent


def test_a_deferred_record_whose_partition_was_given_up_before_it_began_waiting_is_let_go() -> None:
    """Dispatched just before its partition was revoked, it starts after the revoke was told:
    it must not wait its full delay (holding up the revoke, then e-mailed by this process while
    the partition's next owner runs it too)."""
    order = sample_order(1)
    publisher, smtp = FakePublisher(), FakeSmtp()
    pipeline = _pipeline(FakeRenderer(), smtp, publisher, retry=RetrySchedule(delays_s=(60,)))
    state = RetryState(deferrals=1, attempts=2, due_ms=int((time.time() + 60) * 1000), first_ms=0)
    headers = [*Origin("orders", 2, 9, 0).headers(), *state.headers()]
    value = CODEC.encode(order, READER)
    waiting = Inbound("orders.retry", 2, 0, order["order_id"].encode(), value, headers, 0, trusted=True)

    async def scenario() -> list[tuple[int, str]]:
        given_up, done = asyncio.Event(), []
        given_up.set()
        process = pipeline.process(waiting, lambda i, d: done.append((i.offset, _status(d))), given_up)
        await asyncio.wait_for(process, timeout=5)
        return done

    assert asyncio.run(scenario()) == [(0, "LET GO")]
    assert not smtp.sent


def _invalid(field: str, value: Any) -> OrderCompleted:
    order = sample_order(7)
    if field == "email":
        order["customer"]["email"] = value
    else:
        cast("dict[str, Any]", order)[field] = value  # any field, any value: invalid on purpose
    return order


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("email", "not an address", "invalid_email"),
        ("lines", [], "no_lines"),
        ("currency", "euro", "invalid_currency"),
        ("gift_message", "g" * 1001, "text_too_long"),
        ("brand", "b" * 101, "text_too_long"),
        ("channel", "c" * 51, "text_too_long"),
        ("shipping_method", "s" * 101, "text_too_long"),
        ("payment_method", "p" * 101, "text_too_long"),
    ],
)
def test_a_rejected_valid_looking_event_keeps_its_own_event_id(field: str, value: Any, reason: str) -> None:
    order = _invalid(field, value)
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [_inbound(order, 3)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", reason)
    assert outcome["event_id"] == order["event_id"]  # analytics can join it to the order
    assert outcome["order_id"] == order["order_id"]
    assert len(publisher.dead_letters) == 1
    assert smtp.sent == []


def test_an_event_id_that_is_no_id_is_not_copied_into_the_outcome() -> None:
    order = _invalid("event_id", "lucia.garcia@example.com")
    publisher = FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), FakeSmtp(), publisher), [_inbound(order, 4)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", "invalid_event_id")
    assert outcome["event_id"] == _inbound(order, 4).surrogate_event_id()


def test_free_text_at_its_limits_is_sent() -> None:
    order: Any = sample_order(8)
    order.update(gift_message="g" * 1000, brand="b" * 100, channel="c" * 50)
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [_inbound(order, 5)]))
    assert [o["status"] for o in publisher.outcomes] == ["SENT"]


def test_a_dead_letter_the_broker_refuses_for_its_size_is_sent_without_the_record() -> None:
    """The record itself is refused (MSG_SIZE_TOO_LARGE): the service keeps going, the record is
    dead-lettered without headers, then without key and value, and rejected."""

    from consumer.processing.ports import PublishError

    class RefusingPublisher(FakePublisher):
        async def publish_dead_letter(
            self, inbound: Inbound, headers: Headers, *, omit_record: bool = False
        ) -> int:
            if not omit_record:
                raise PublishError("dlq: MSG_SIZE_TOO_LARGE", record_level=True)
            return await super().publish_dead_letter(inbound, headers, omit_record=omit_record)

    publisher = RefusingPublisher()
    order = _invalid("email", "not an address")
    asyncio.run(_run(_pipeline(FakeRenderer(), FakeSmtp(), publisher), [_inbound(order, 6)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"], outcome["event_id"]) == (
        "REJECTED",
        "publish_refused",
        order["event_id"],
    )
    ((_, headers),) = publisher.dead_letters
    assert headers["ordermail.original.offset"] == b"6"
    assert "traceparent" not in headers


def test_a_broker_that_does_not_acknowledge_stops_processing() -> None:

    from consumer.processing.ports import PublishError

    class DownPublisher(FakePublisher):
        async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int:
            raise PublishError("outcomes: _MSG_TIMED_OUT", record_level=False)

    with pytest.raises(PublishError):
        asyncio.run(
            _run(_pipeline(FakeRenderer(), FakeSmtp(), DownPublisher()), [_inbound(sample_order(9), 7)])
        )


@pytest.mark.parametrize(
    "order_id", ["ORD-1\r\nBcc: victim@example.org", "ORD-\x00", "ORD-\u2028", " ", "O" * 65]
)
def test_an_order_id_that_would_reach_the_subject_broken_is_rejected(order_id: str) -> None:
    order = _invalid("order_id", order_id)
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [_inbound(order, 3)]))
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "invalid_order_id")]
    assert smtp.sent == []


def test_a_braced_uuid_is_the_events_id_in_every_outcome() -> None:
    """validate_order accepts every spelling uuid.UUID reads; the outcome must carry it as given,
    or the ledger would not recognise a redelivered, already deferred event."""
    order: Any = sample_order(11)
    order["event_id"] = "{" + order["event_id"].upper() + "}"
    smtp = FakeSmtp(failures=[SendError("smtp_transient", code=451)])
    publisher = FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher, send_attempts=1), [_inbound(order, 1)]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["event_id"]) == ("DEFERRED", order["event_id"])


def test_a_deferred_record_waiting_for_its_time_holds_up_nothing_of_its_key() -> None:
    order = sample_order(12)
    value = CODEC.encode(order, READER)
    state = RetryState(deferrals=1, attempts=1, due_ms=int((time.time() + 60) * 1000), first_ms=0)
    headers = [*Origin("orders", 0, 1, 0).headers(), *state.headers()]
    waiting = Inbound("orders.retry", 0, 0, order["order_id"].encode(), value, headers, 0, trusted=True)
    fresh = sample_order(13)
    fresh["order_id"] = order["order_id"]  # the same key
    publisher = FakePublisher()
    pipeline = _pipeline(FakeRenderer(), FakeSmtp(), publisher, retry=RetrySchedule(delays_s=(60,)))

    async def scenario() -> list[tuple[int, str]]:
        done: list[tuple[int, str]] = []
        given_up = asyncio.Event()
        waiting_task = asyncio.ensure_future(
            pipeline.process(waiting, lambda i, d: done.append((i.offset, "x")), given_up)
        )
        await asyncio.wait_for(
            pipeline.process(_inbound(fresh, 5), lambda i, d: done.append((i.offset, _status(d)))),
            timeout=5,
        )
        given_up.set()
        await asyncio.wait_for(waiting_task, timeout=5)
        return done

    assert asyncio.run(scenario()) == [(5, "SENT"), (0, "x")]


class _RefusingSentOutcomes(FakePublisher):
    """Refuses the first ``refusals`` SENT outcomes with ``error`` (after the relay took the mail)."""

    def __init__(self, error: Exception, refusals: int = 1) -> None:
        super().__init__()
        self.error, self.refusals = error, refusals

    async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int:
        if outcome["status"] == "SENT" and self.refusals:
            self.refusals -= 1
            raise self.error
        return await super().publish_outcome(outcome, partition)


@pytest.mark.parametrize(
    ("error", "refusals", "facts"),
    [
        (RuntimeError("the registry was unreachable while encoding"), 1, True),
        (PublishError("orders.outcomes: MSG_SIZE_TOO_LARGE", record_level=True), 1, True),
        (RuntimeError("the full outcome cannot be encoded"), 2, False),  # then the plainest
    ],
)
def test_a_failure_after_the_relay_accepted_the_mail_settles_as_sent_and_is_never_mailed_again(
    error: Exception, refusals: int, facts: bool
) -> None:
    order = sample_order(1)
    smtp, publisher = FakeSmtp(), _RefusingSentOutcomes(error, refusals)
    known: dict[str, Known] = {}
    pipeline = _pipeline_with_ledger(FakeRenderer(), smtp, publisher, known)
    assert asyncio.run(_run(pipeline, [_inbound(order, 5)])) == [(5, "SENT")]
    ((status, reason, message_id, digest),) = [
        (o["status"], o["reason"], o.get("message_id"), o.get("attachment_sha256"))
        for o in publisher.outcomes
    ]
    assert (status, reason) == ("SENT", "outcome_unconfirmed")
    assert message_id == smtp.sent[0]  # even the plainest: a resend is recognised by it
    assert (digest is not None) is facts
    assert not publisher.dead_letters  # nothing for a redrive to take
    known[order["event_id"]] = Known(status, 5)  # what the ledger reads back
    assert asyncio.run(_run(pipeline, [_inbound(order, 5), _inbound(order, 9)])) == [
        (5, "SKIPPED"),
        (9, "SKIPPED"),
    ]
    assert len(smtp.sent) == 1


def test_a_schema_registry_that_does_not_answer_stops_the_service_instead_of_rejecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asked again a few times, then the error goes up (the service stops without committing past
    the record): no outcome, no dead letter, nothing e-mailed. Once it answers, the event is sent."""
    from consumer.processing import pipeline as pipeline_module
    from schemas import SchemaRegistryUnavailable

    monkeypatch.setattr(pipeline_module, "REGISTRY_RETRIES_S", (0.0, 0.0))
    answers: list[bool] = [False, False, False, True]  # three tries fail, the fourth is answered
    decode = CODEC.decode

    class Registry:
        def resolves_locally(self, data: bytes) -> bool:
            return False  # a writer schema this process has not fetched yet

        def decode(self, data: bytes, reader: Any) -> dict[str, Any]:
            if not answers.pop(0):
                raise SchemaRegistryUnavailable("unknown_schema", "registry id 7: ConnectError")
            return decode(data, reader)

    renderer, smtp, publisher = FakeRenderer(), FakeSmtp(), FakePublisher()
    pipeline = _pipeline(renderer, smtp, publisher)
    pipeline._codec = Registry()  # type: ignore[assignment]
    inbound = _inbound(sample_order(1), 0)
    with pytest.raises(SchemaRegistryUnavailable):
        asyncio.run(_run(pipeline, [inbound]))
    assert (publisher.outcomes, publisher.dead_letters, smtp.sent) == ([], [], [])
    assert asyncio.run(_run(pipeline, [inbound])) == [(0, "SENT")]  # redelivered once it answers
