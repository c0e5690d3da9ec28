"""The operator commands' parts that need no broker: times, selections, the personal-data flag,
the progress bar, argument errors."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.app.cli import main
from consumer.tools import operations, orders, redrive
from consumer.tools.dlq import DeadLetter, Selection, parse_time
from consumer.tools.scan import Progress, ToolError, check_personal_data_flag
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order

CODEC = Codec.from_directory()
HOSTILE = "x@\x1b]0;owned\x07\x1b[2J\u202eevil\x9b"

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_times_are_iso_or_a_time_ago_in_utc() -> None:
    assert parse_time("2026-12-07T05:00:00Z") == int(datetime(2026, 12, 7, 5, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("2026-12-07T05:00:00") == parse_time("2026-12-07T05:00:00+00:00")
    assert parse_time("90m", NOW) == int(datetime(2026, 12, 7, 4, 30, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("7d", NOW) == int(datetime(2026, 11, 30, 6, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(ValueError, match="isoformat"):
        parse_time("yesterday")


def _letter(reason: str, timestamp_ms: int) -> DeadLetter:
    return DeadLetter("dlq", 0, 1, timestamp_ms, b"k", b"v", [], reason, "REJECTED", "in", 0, 1, "k", None)


def test_a_selection_filters_by_reason_and_time_and_names_itself() -> None:
    selection = Selection(reasons=frozenset({"template_error"}), since_ms=100, until_ms=200)
    assert selection.matches(_letter("template_error", 100))
    assert not selection.matches(_letter("template_error", 200))
    assert not selection.matches(_letter("invalid_email", 150))
    assert Selection().matches(_letter("anything", 0))
    assert (
        selection.digest()
        == Selection(reasons=frozenset({"template_error"}), since_ms=100, until_ms=200).digest()
    )
    assert selection.digest() != Selection(reasons=frozenset({"template_error"})).digest()
    # "--since 2h" is the same selection at every run (its progress resumes), whatever time it is
    assert (
        Selection(since_ms=1, typed=("2h", None)).digest()
        == Selection(since_ms=2, typed=("2h", None)).digest()
    )


def test_personal_data_is_refused_unless_standard_output_is_a_terminal() -> None:
    with pytest.raises(ToolError) as refused:
        check_personal_data_flag(True, io.StringIO())
    assert refused.value.code == 2
    check_personal_data_flag(True, Terminal())
    check_personal_data_flag(False, io.StringIO())


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress("reading dlq", 200, stream)
        progress.advance(100)
        progress.advance(100)
        progress.close()
    assert "reading dlq [###############               ] 100/200" in terminal.getvalue()
    assert terminal.getvalue().endswith("200/200\n")
    assert not pipe.getvalue()


def test_bad_arguments_are_refused_before_anything_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "redrive", "--rate", "0"])
    assert exited.value.code == 2
    assert main(["dlq", "list", "--since", "yesterday"]) == 2
    assert "--since/--until" in capsys.readouterr().err
    assert main(["history", "ORD-1\nBcc: x"]) == 2
    assert "not an order id" in capsys.readouterr().err


def test_suppression_commands_refuse_a_missing_secret_or_a_non_address_before_anything_is_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: reading would fail
    monkeypatch.delenv("ORDERMAIL_SUPPRESSION_SECRET", raising=False)
    for command in (
        ["add", "jane@example.com"],
        ["remove", "jane@example.com"],
        ["list", "--address", "a@b.eu"],
    ):
        assert main(["suppression", *command]) == 2
        assert "ORDERMAIL_SUPPRESSION_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("ORDERMAIL_SUPPRESSION_SECRET", "0123456789abcdef-unit")
    for command in (["add", "jane"], ["remove", "jane@"], ["list", "--address", "x"]):
        assert main(["suppression", *command]) == 2
        assert capsys.readouterr().err == "ordermail suppression: not an e-mail address\n"


def test_a_suppressed_resend_says_what_to_do() -> None:
    from consumer.tools.operations import _resend_lines

    outcome = {"status": "REJECTED", "reason": "suppressed", "message_id": None}
    found = {"topic": "orders", "partition": 1, "offset": 7}
    sent = {
        "order_id": "O-1",
        "event_id": "e",
        "found_at": found,
        "resend": 1,
        "recipient_domain": "example.com",
    }
    lines = _resend_lines({**sent, "outcome": outcome})
    assert lines[1] == "outcome: REJECTED suppressed"
    assert "ordermail suppression remove ADDRESS" in lines[2]


def test_nan_inf_rates_and_times_out_of_range_are_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for rate in ("nan", "inf", "-inf"):
        with pytest.raises(SystemExit) as exited:
            main(["dlq", "redrive", "--rate", rate])
        assert exited.value.code == 2
    assert main(["dlq", "list", "--since", "999999d"]) == 2
    assert "--since/--until" in capsys.readouterr().err


@dataclass
class _Message:
    """A consumed record as confluent-kafka gives it; ``headers()`` raises like it does for a header
    name that is not UTF-8 when ``broken``."""

    value_: bytes | None
    key_: bytes | None = b"ORD-1"
    headers_: list[tuple[str, bytes]] = field(default_factory=list)
    broken: bool = False
    offset_: int = 3
    topic_: str = "orders"

    def headers(self) -> list[tuple[str, bytes]]:
        if self.broken:
            raise SystemError("<built-in method headers> returned a result with an exception set")
        return self.headers_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def offset(self) -> int:
        return self.offset_

    def partition(self) -> int:
        return 0

    def topic(self) -> str:
        return self.topic_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_765_000_000_000)


@dataclass
class _Reader:
    messages: list[_Message]

    @dataclass
    class settings:  # noqa: N801 — stands in for the Settings attribute
        input_topic = "orders"
        retry_topic = "orders.retry"
        outcome_topic = "orders.outcomes"
        dlq_topic = "orders.dlq"

    def partitions(self, topic: str) -> list[int]:
        return [0]

    def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        return (0, len(self.messages))

    def offset_at(self, topic: str, partition: int, time_ms: int) -> int:
        return 0

    def read(self, topic: str, starts: dict[int, int], label: str) -> Any:
        yield from self.messages


def test_a_header_name_that_is_not_utf8_breaks_no_command(monkeypatch: pytest.MonkeyPatch) -> None:
    order = sample_order(1)
    value = CODEC.encode(order, ORDER_SCHEMA)
    letter = DeadLetter.from_message(_Message(value, broken=True, offset_=1, topic_="orders.dlq"), CODEC)  # type: ignore[arg-type]
    assert (letter.headers, letter.event_id) == ([], order["event_id"])
    redriven = _Message(value, headers_=[("ordermail.redrive.source", b"orders.dlq/0/1")])
    reader = _Reader([_Message(value, broken=True), redriven])
    found = redrive._redriven(reader, CODEC, [letter], _copies(letter))  # type: ignore[arg-type]
    assert found.sources == frozenset({"orders.dlq/0/1"})
    produced: list[dict[str, Any]] = []

    class Producer:
        def __init__(self, config: Any) -> None:
            pass

        def produce(self, topic: str, **record: Any) -> None:
            produced.append(record)

        def flush(self, timeout: float) -> int:
            return 0

    monkeypatch.setattr(orders, "Producer", Producer)
    monkeypatch.setattr(orders, "tool_producer_config", lambda settings: {})
    order["order_id"] = "ORD-1"
    latest = _Message(CODEC.encode(order, ORDER_SCHEMA), broken=True)
    sent = orders.resend(_Reader([latest]), CODEC, "ORD-1", wait_s=0)  # type: ignore[arg-type]
    assert sent["event_id"] == order["event_id"]
    (record,) = produced
    assert {k for k, _ in record["headers"]} == {
        *(f"ordermail.original.{f}" for f in ("topic", "partition", "offset", "timestamp")),
        *(f"ordermail.retry.{f}" for f in ("deferrals", "attempts", "due", "first")),
        "ordermail.resend",
    }


def test_an_unexpected_error_is_one_line_without_its_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*_args: Any) -> Any:
        raise UnicodeDecodeError("utf-8", HOSTILE.encode(), 0, 1, "customer jane@example.com")

    monkeypatch.setattr(operations, "_execute", failing)
    assert main(["history", "ORD-1"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "ordermail history: failed (UnicodeDecodeError)\n"
    assert not captured.out


def test_a_registry_that_does_not_answer_ends_a_command_before_it_decides_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A redrive that took an outcome it could not read for none would publish a sent event."""
    from schemas import SchemaRegistryUnavailable

    def away(*_args: Any) -> Any:
        raise SchemaRegistryUnavailable("unknown_schema", "registry id 9: ConnectError")

    monkeypatch.setattr(operations, "_execute", away)
    assert main(["dlq", "redrive"]) == 1
    assert capsys.readouterr().err == "ordermail dlq: the schema registry does not answer; nothing done\n"


def test_a_dead_letter_read_while_the_registry_is_away_is_not_taken_for_undecodable() -> None:
    from schemas import SchemaRegistryUnavailable

    class Away(Codec):
        def decode(self, data: bytes, reader: Any) -> dict[str, Any]:
            raise SchemaRegistryUnavailable("unknown_schema", "registry id 9: ConnectError")

    with pytest.raises(SchemaRegistryUnavailable):
        DeadLetter.from_message(_Message(b"\x00\x00\x00\x00\x09\x02", topic_="orders.dlq"), Away())  # type: ignore[arg-type]


def test_every_printed_line_has_its_terminal_controls_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {"event_id": "jane@example.com", "customer": {"email": HOSTILE}}
    letter = DeadLetter(
        "dlq", 0, 7, 0, b"ORD-1", b"v", [], "invalid_email", "REJECTED", "orders", 0, 1, "ORD-1", event
    )
    assert letter.describe()["event_id"] is None  # not an id: it may be an e-mail address
    listed = {"topic": "dlq", "dead_letters": [letter.describe(personal=True)], "summary": {}, "total": 1}
    monkeypatch.setattr(operations, "_execute", lambda *_args: (listed, operations._dlq_lines(listed)))
    monkeypatch.setattr(operations, "check_personal_data_flag", lambda *_args: None, raising=False)
    assert main(["dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert "x@\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x9b" in out
    assert not any(c in out for c in "\x1b\x07\u202e\x9b")
    assert operations.printable("Zoë 東京 ok") == "Zoë 東京 ok"  # text stays text


def test_resend_refuses_an_invalid_latest_event_before_using_it() -> None:
    order: Any = sample_order(1)
    order["order_id"] = "ORD-1"
    order["customer"]["email"] = HOSTILE
    latest = _Message(CODEC.encode(order, ORDER_SCHEMA))
    with pytest.raises(ToolError) as refused:
        orders.resend(_Reader([latest]), CODEC, "ORD-1", wait_s=0)  # type: ignore[arg-type]
    assert refused.value.code == 2
    assert "invalid (invalid_email)" in str(refused.value)
    assert "\x1b" not in str(refused.value)


def test_a_forged_redrive_header_on_the_input_topic_does_not_hide_a_dead_letter() -> None:
    """Producers write the input topic: a record claiming to be a dead letter's redrive counts
    only when it carries that dead letter's very key and value (then the event is on the input
    topic anyway, for the service)."""
    order = sample_order(1)
    value = CODEC.encode(order, ORDER_SCHEMA)
    letter = DeadLetter.from_message(_Message(value, offset_=7, topic_="orders.dlq"), CODEC)  # type: ignore[arg-type]
    forged_event: Any = sample_order(1)
    forged_event["customer"]["email"] = "not an address"
    source = [("ordermail.redrive.source", b"orders.dlq/0/7")]
    for forged in (
        _Message(b"\x00garbage", headers_=source),
        _Message(CODEC.encode(forged_event, ORDER_SCHEMA), headers_=source),  # same event id
        _Message(value, key_=b"ORD-2", headers_=source),
    ):
        found = redrive._redriven(_Reader([forged]), CODEC, [letter], _copies(letter))  # type: ignore[arg-type]
        report = redrive.RedriveReport("g")
        (plan,) = redrive._plan([letter], set(), found, report)
        assert plan.publish
        assert (report.already_redriven, report.duplicates) == (0, 0)
    genuine = redrive._redriven(_Reader([_Message(value, headers_=source)]), CODEC, [letter], _copies(letter))  # type: ignore[arg-type]
    report = redrive.RedriveReport("g")
    (plan,) = redrive._plan([letter], set(), genuine, report)
    assert not plan.publish
    assert report.already_redriven == 1


def test_a_redriven_record_goes_to_its_original_partition() -> None:
    produced: list[dict[str, Any]] = []

    class Producer:
        def produce(self, topic: str, **record: Any) -> None:
            produced.append(record)

    def letter(original_topic: str, partition: int) -> DeadLetter:
        return DeadLetter(
            "dlq",
            0,
            1,
            0,
            b"k",
            b"v",
            [],
            "template_error",
            "REJECTED",
            original_topic,
            partition,
            9,
            "k",
            None,
        )

    for original in (letter("orders", 5), letter("orders", 11), letter("elsewhere", 5)):
        redrive._produce(Producer(), "orders", redrive._Plan(original, True, 1), "dlq", frozenset(range(6)))  # type: ignore[arg-type]
    assert [r["partition"] for r in produced] == [5, -1, -1]  # -1: by key (partition gone, other topic)


def _copies(*letters: DeadLetter) -> dict[str, bytes]:
    return {f"orders.dlq/{d.partition}/{d.offset}": redrive._digest(d.key, d.value) for d in letters}


def test_dead_letters_are_read_one_at_a_time_and_only_the_selected_are_kept() -> None:
    from consumer.tools.dlq import list_dead_letters, read_dead_letters

    value = CODEC.encode(sample_order(1), ORDER_SCHEMA)
    reasons = [b"template_error", b"invalid_email", b"template_error"]
    messages = [
        _Message(value, offset_=n, topic_="orders.dlq", headers_=[("ordermail.error.class", r)])
        for n, r in enumerate(reasons)
    ]
    handed: list[int] = []

    class Reader(_Reader):
        def read(self, topic: str, starts: dict[int, int], label: str) -> Any:
            for message in self.messages:
                handed.append(message.offset())
                yield message

    letters = read_dead_letters(Reader(messages), CODEC, {0: 0})  # type: ignore[arg-type]
    assert next(letters).offset == 0
    assert handed == [0]  # not the whole topic at once
    listed = list_dead_letters(Reader(messages), CODEC, Selection(reasons=frozenset({"template_error"})))  # type: ignore[arg-type]
    assert [d["offset"] for d in listed["dead_letters"]] == [0, 2]
    assert listed["summary"] == {"template_error": 2}


def test_the_redrive_producer_is_one_librdkafka_accepts() -> None:
    """Its message timeout may not exceed its transaction timeout (the service's 5 minutes did)."""
    from confluent_kafka import Producer

    from consumer.app.settings import Settings

    config = redrive.transactional_config(Settings(), "ordermail.redrive.test")
    assert config["message.timeout.ms"] <= config["transaction.timeout.ms"]
    Producer(config)  # raises KafkaException (_INVALID_ARG) for a config it refuses


def test_a_resumed_redrive_still_knows_an_event_redriven_before_its_progress() -> None:
    """The same event dead-lettered twice (same record); the first run redrove the first dead
    letter and committed past it, then was killed: the rerun reads from its progress on, and must
    not publish the second dead letter (its record is the one already redriven)."""
    order = sample_order(1)
    value = CODEC.encode(order, ORDER_SCHEMA)
    second = DeadLetter.from_message(_Message(value, offset_=40, topic_="orders.dlq"), CODEC)  # type: ignore[arg-type]
    redriven = _Message(value, headers_=[("ordermail.redrive.source", b"orders.dlq/0/0")])
    redriven.timestamp = lambda: (1, second.timestamp_ms + 1)  # type: ignore[method-assign]
    found = redrive._redriven(_Reader([redriven]), CODEC, [second], _copies(second))  # type: ignore[arg-type]
    report = redrive.RedriveReport("g")
    (plan,) = redrive._plan([second], set(), found, report)
    assert not plan.publish
    assert report.duplicates == 1
