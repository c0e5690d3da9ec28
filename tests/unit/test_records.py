"""ordermail's own headers: ignored on the input topic, read strictly on the retry topic, and a
record whose headers are unreadable becomes a classified outcome, never an exception."""

from __future__ import annotations

import asyncio

import pytest

from consumer.records import Inbound, Origin, RetryState
from schemas.samples import sample_order
from tests.unit.test_pipeline import CODEC, READER, FakePublisher, FakeRenderer, FakeSmtp, _pipeline, _run

GOOD = [*Origin("orders", 2, 41, 7).headers(), *RetryState(1, 2, 0, 5).headers()]
FORGED = [
    [("ordermail.original.partition", b"lucia.garcia@example.com")],
    [("ordermail.original.partition", "²".encode())],  # str.isdigit() says yes, int() says no
    [("ordermail.retry.attempts", b"\xff\xfe")],
    [("ordermail.retry.attempts", b"99999999999999999999999")],
    [("ordermail.original.offset", b"-1")],
    [("ordermail.original.topic", b"orders\r\nx")],
    [("ordermail.original.partition", b"3")],  # not the record's own partition
]


def _with(headers: list[tuple[str, bytes]], replaced: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    names = {name for name, _ in replaced}
    return [(k, v) for k, v in headers if k not in names] + replaced


def test_well_formed_headers_on_the_retry_topic_are_read() -> None:
    record = Inbound("orders.retry", 2, 5, b"k", b"v", GOOD, 9, trusted=True)
    assert not record.malformed
    assert record.origin == Origin("orders", 2, 41, 7)
    assert record.retry == RetryState(1, 2, 0, 5)


@pytest.mark.parametrize("replaced", FORGED)
def test_forged_headers_on_the_input_topic_are_ignored(replaced: list[tuple[str, bytes]]) -> None:
    record = Inbound("orders", 2, 5, b"k", b"v", _with(GOOD, replaced), 9)
    assert not record.malformed
    assert record.origin == Origin("orders", 2, 5, 9)  # its own position, whatever the headers say
    assert record.retry is None


@pytest.mark.parametrize("replaced", [*FORGED, []])
def test_malformed_headers_on_the_retry_topic_are_flagged_not_raised(
    replaced: list[tuple[str, bytes]],
) -> None:
    headers = _with(GOOD, replaced) if replaced else GOOD[:3]  # [] : the retry headers are missing
    record = Inbound("orders.retry", 2, 5, b"k", b"v", headers, 9, trusted=True)
    assert record.malformed
    assert record.origin == Origin("orders.retry", 2, 5, 9)
    assert record.retry is None


def test_a_malformed_retry_record_is_rejected_with_its_event_id_and_not_sent() -> None:
    order = sample_order(3)
    value = CODEC.encode(order, READER)
    headers = _with(GOOD, FORGED[0])
    record = Inbound("orders.retry", 2, 5, order["order_id"].encode(), value, headers, 9, trusted=True)
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [record]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"], outcome["event_id"]) == (
        "REJECTED",
        "malformed_headers",
        order["event_id"],
    )
    assert len(publisher.dead_letters) == 1
    assert smtp.sent == []


def test_forged_headers_on_an_input_record_do_not_stop_it_being_sent_once() -> None:
    """Main before this change: the outcome of an e-mail already sent raised (int("²")), the
    service exited 1 without committing, and every restart e-mailed the customer again."""
    order = sample_order(4)
    value = CODEC.encode(order, READER)
    headers = [("ordermail.original.partition", "²".encode()), ("ordermail.original.topic", b"x")]
    record = Inbound("orders", 1, 8, order["order_id"].encode(), value, headers, 9)
    smtp, publisher = FakeSmtp(), FakePublisher()
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher), [record]))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["source_partition"], outcome["source_offset"]) == ("SENT", 1, 8)
    assert len(smtp.sent) == 1
