"""ordermail's own headers: ignored on the input topic, read strictly on the retry topic, and a
record whose headers are unreadable becomes a classified outcome, never an exception."""

from __future__ import annotations

import asyncio

import pytest

from consumer.processing.records import Inbound, Origin, RetryState
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


class _Message:
    """What confluent-kafka gives for a record with a header name that is not UTF-8."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 5

    def key(self) -> bytes:
        return b"ORD-1"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 9)

    def headers(self) -> list[tuple[str, bytes]]:
        raise SystemError("<built-in method headers> returned a result with an exception set")


def test_a_header_name_that_is_not_utf8_is_no_exception() -> None:
    on_input = Inbound.from_message(_Message("orders"))  # type: ignore[arg-type]
    assert (on_input.headers, on_input.malformed) == ([], False)  # processed without its headers
    on_retry = Inbound.from_message(_Message("orders.retry"), trusted=True)  # type: ignore[arg-type]
    assert on_retry.malformed  # our headers are needed there: dead-lettered


def test_a_record_without_a_timestamp_keeps_its_deferral() -> None:
    """librdkafka gives -1 for a record without a timestamp; our own header says so, and reads back."""
    origin = Origin("orders", 2, 41, -1)
    record = Inbound("orders.retry", 2, 5, b"k", b"v", [*origin.headers(), *GOOD[4:]], 9, trusted=True)
    assert not record.malformed
    assert record.origin == origin


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        (b"ORD-1", "ORD-1"),
        (b"ORD-\xff", None),
        ("ORD-\u202e1".encode(), None),
        (b"ORD\r\n1", None),
        (b"x" * 65, None),
        ("注文-2026-001".encode(), "注文-2026-001"),
        (b"#1001", "#1001"),
        # A producer keying by customer (personal data: outcomes, spans and `dlq list` show keys)
        (b"jane.doe@example.com", None),
        (b"Jane Doe, 12 Main St", None),
        (b"Jane\tDoe", None),
        ("Jane\u00a0Doe".encode(), None),
        (None, ""),
        (b"", ""),
    ],
)
def test_the_record_key_is_shown_only_when_it_looks_like_an_order_id(
    key: bytes | None, shown: str | None
) -> None:
    text = Inbound("orders", 0, 0, key, b"", [], 0).order_key
    assert text == (text if shown is None else shown)
    if shown is None:
        assert text.startswith("key-sha256:")
        assert len(text) == len("key-sha256:") + 16
