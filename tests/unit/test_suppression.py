"""The suppression list without a broker: normalisation, keys, expiry, the table as the topic's
records (tombstones too) change it, the follower and writer on fake clients, the pipeline's
``REJECTED suppressed``, and the settings that switch it on."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from pydantic import ValidationError

from consumer.app.settings import Settings
from consumer.feedback.handling import Suppressor
from consumer.kafka.suppressions import SuppressionError, SuppressionFollower, SuppressionWriter, entry_of
from consumer.processing.records import Inbound, Origin, RetryState
from delivery.suppression import (
    InvalidAddress,
    Suppression,
    SuppressionKeys,
    SuppressionTable,
    is_record_key,
    normalise,
)
from schemas import Codec
from schemas.samples import sample_order
from tests.unit.test_pipeline import CODEC, READER, FakePublisher, FakeRenderer, FakeSmtp, _inbound, _run

SECRET = b"0123456789abcdef-test"
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


# --- normalisation and keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("  Jane.Doe@EXAMPLE.com\n", "jane.doe@example.com"),  # trimmed; case folded, both sides
        ("user@Bücher.DE", "user@xn--bcher-kva.de"),  # IDNA: the A-label
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("jörg@faß.de", "jörg@xn--fa-hia.de"),  # IDNA 2008: ß is not ss
        ("J\u006f\u0308RG@example.com", "jörg@example.com"),  # NFC: o + combining diaeresis is ö
        ("first.last+shop@gmail.com", "first.last+shop@gmail.com"),  # no provider rules
    ],
)
def test_addresses_are_normalised(typed: str, normal: str) -> None:
    assert normalise(typed) == normal


@pytest.mark.parametrize("bad", ["", "   ", "not-an-address", "a@b", "Jane <jane@example.com>", "x" * 400])
def test_what_no_order_could_carry_is_refused(bad: str) -> None:
    with pytest.raises(InvalidAddress) as raised:
        normalise(bad)
    assert bad.strip() not in str(raised.value) or not bad.strip()  # the message never quotes it


def test_keys_are_keyed_hashes_of_the_normal_form() -> None:
    keys = SuppressionKeys(SECRET)
    key = keys.key_for("Jane.Doe@Example.COM")
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert key == keys.key_for(" jane.doe@example.com ")
    assert key != keys.key_for("janedoe@example.com")  # dots count
    assert key != SuppressionKeys(b"another-secret-of-16").key_for("jane.doe@example.com")
    assert "jane" not in key
    assert SECRET.decode() not in repr(keys)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SuppressionKeys(b"short")


# --- expiry ----------------------------------------------------------------------------------------


def test_an_entry_suppresses_until_its_expiry_or_the_ttl_whichever_is_first() -> None:
    ttl = timedelta(days=365)
    lasting = Suppression("hard_bounce", "dsn", NOW)
    assert lasting.active(NOW + timedelta(days=364), ttl)
    assert not lasting.active(NOW + timedelta(days=365), ttl)
    assert lasting.active(NOW + timedelta(days=5000), None)  # no TTL: until removed
    short = Suppression("operator", "operator", NOW, expires_at=NOW + timedelta(days=2))
    assert short.active(NOW + timedelta(days=1), ttl)
    assert not short.active(NOW + timedelta(days=2), ttl)
    assert not short.active(NOW + timedelta(days=3), None)
    assert short.ends_at(ttl) == NOW + timedelta(days=2)
    old = Suppression("complaint", "arf", NOW - timedelta(days=400), expires_at=NOW + timedelta(days=9))
    assert not old.active(NOW, ttl)  # the TTL ended it before its own expiry


def test_the_table_follows_records_and_tombstones() -> None:
    table = SuppressionTable(timedelta(days=30))
    table.apply("k1", Suppression("hard_bounce", "dsn", NOW))
    table.apply("k2", Suppression("operator", "operator", NOW, expires_at=NOW + timedelta(hours=1)))
    assert table.suppressing("k1", NOW) is not None
    assert table.suppressing("k2", NOW + timedelta(hours=2)) is None  # expired: kept, not suppressing
    assert table.get("k2") is not None
    assert (len(table), table.active_count(NOW + timedelta(hours=2))) == (2, 1)
    table.apply("k1", None)  # a tombstone
    table.apply("k3", None)  # one for a key never seen: nothing happens
    assert table.suppressing("k1", NOW) is None
    later = Suppression("complaint", "arf", NOW + timedelta(days=1))
    table.apply("k2", later)  # the newer record replaces the older
    assert table.suppressing("k2", NOW + timedelta(days=1, hours=2)) == later
    assert len(table) == 1


# --- the follower and the writer on fake clients ---------------------------------------------------


@dataclass
class FakeMessage:
    topic_: str
    partition_: int
    offset_: int
    key_: bytes | None
    value_: bytes | None
    error_: KafkaError | None = None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def error(self) -> KafkaError | None:
        return self.error_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_765_000_000_000)  # CreateTime: 2025-12-06T05:46:40Z


@dataclass
class FakeTopicMetadata:
    partitions: dict[int, Any]
    error: Any = None


@dataclass
class FakeConsumer:
    """A topic's partitions as lists of (key, value); ``poll`` hands records out partition by
    partition from the assigned positions, then an end-of-partition event, then nothing."""

    topic: str
    partitions: dict[int, list[tuple[bytes | None, bytes | None]]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    positions: dict[int, int] = field(default_factory=dict)
    eof_sent: set[int] = field(default_factory=set)

    def list_topics(self, topic: str, timeout: float) -> Any:
        found = {self.topic: FakeTopicMetadata(dict.fromkeys(self.partitions))}
        return type("Metadata", (), {"topics": found})()

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        with self.lock:
            return 0, len(self.partitions[tp.partition])

    def assign(self, tps: list[Any]) -> None:
        self.positions = {tp.partition: 0 for tp in tps}

    def poll(self, timeout: float) -> FakeMessage | None:
        with self.lock:
            for partition, position in self.positions.items():
                records = self.partitions[partition]
                if position < len(records):
                    self.positions[partition] += 1
                    self.eof_sent.discard(partition)
                    return FakeMessage(self.topic, partition, position, *records[position])
                if partition not in self.eof_sent:
                    self.eof_sent.add(partition)
                    return FakeMessage(self.topic, partition, position, None, None, KafkaError(-191))
        time.sleep(min(timeout, 0.01))
        return None

    def append(self, partition: int, key: bytes, value: bytes | None) -> None:
        with self.lock:
            self.partitions[partition].append((key, value))

    def close(self) -> None:
        pass


def _value(entry: Suppression) -> bytes:
    from consumer.kafka.suppressions import record_of
    from schemas import SUPPRESSION_SCHEMA

    return CODEC.encode(record_of(entry), SUPPRESSION_SCHEMA)


def _follower(consumer: FakeConsumer, ttl: timedelta | None = None) -> SuppressionFollower:
    fake: Any = consumer
    return SuppressionFollower(
        {}, consumer.topic, CODEC, SuppressionTable(ttl), consumer_factory=lambda _: fake
    )


def test_the_follower_loads_every_partition_then_follows_new_entries_and_tombstones() -> None:
    keys = SuppressionKeys(SECRET)
    a, b, c = (keys.key_for(f"{n}@example.com").encode() for n in "abc")
    bounced = Suppression("hard_bounce", "dsn", datetime.now(UTC).replace(microsecond=0), event_id="e-1")
    consumer = FakeConsumer(
        "supp",
        {
            0: [(a, _value(bounced)), (b, _value(bounced)), (a, None)],  # a removed again
            # Not ordermail's key: skipped. A value this version cannot read (a newer writer's
            # schema, a registry that does not answer) still suppresses its key: fail closed.
            1: [(b"not-a-key", _value(bounced)), (c, b"\x00garbage")],
            2: [],
        },
    )
    follower = _follower(consumer)
    assert follower.load(timeout_s=5) == 5
    table, now = follower.table, datetime.now(UTC)
    assert table.suppressing(a.decode(), now) is None
    assert table.suppressing(b.decode(), now) == bounced
    assert table.suppressing(c.decode(), now) == Suppression(
        "unreadable", None, datetime(2025, 12, 6, 5, 46, 40, tzinfo=UTC)
    )
    assert len(table) == 2

    follower.follow()
    try:
        consumer.append(2, a.decode().encode(), _value(bounced))  # added while running
        consumer.append(0, b, None)  # removed while running
        deadline = time.monotonic() + 5
        while table.get(b.decode()) is not None or table.get(a.decode()) is None:
            assert time.monotonic() < deadline, "the follower did not apply the new records"
            time.sleep(0.01)
    finally:
        follower.close()
    assert table.suppressing(a.decode(), datetime.now(UTC)) == bounced


def test_a_missing_topic_or_an_end_not_reached_in_time_stops_the_load() -> None:
    class Missing(FakeConsumer):
        def list_topics(self, topic: str, timeout: float) -> Any:
            return type("Metadata", (), {"topics": {}})()

    with pytest.raises(SuppressionError, match="does not exist"):
        _follower(Missing("supp", {})).load(timeout_s=1)

    class Stuck(FakeConsumer):
        def poll(self, timeout: float) -> FakeMessage | None:
            time.sleep(0.01)
            return None

    key = SuppressionKeys(SECRET).key_for("a@example.com").encode()
    with pytest.raises(SuppressionError, match="not read to its end"):
        _follower(Stuck("supp", {0: [(key, None)]})).load(timeout_s=0.2)


@dataclass
class FakeProducer:
    """Acknowledges (or refuses, with ``error``) every record at the next poll."""

    error: KafkaError | None = None
    records: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    waiting: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def produce(
        self, topic: str, *, key: bytes, value: bytes | None, on_delivery: Any, headers: Any = ()
    ) -> None:
        with self.lock:
            self.records.append((topic, key, value))
            self.waiting.append(on_delivery)

    def poll(self, timeout: float) -> int:
        with self.lock:
            waiting, self.waiting = self.waiting, []
        for offset, callback in enumerate(waiting):
            callback(self.error, SimpleNamespace(offset=lambda offset=offset: offset))
        time.sleep(min(timeout, 0.01))
        return len(waiting)

    def flush(self, timeout: float) -> int:
        return 0


def test_the_writer_keys_by_hash_and_awaits_each_acknowledgement() -> None:
    producer = FakeProducer()
    keys = SuppressionKeys(SECRET)
    writer = SuppressionWriter(producer, CODEC, "supp", keys, clock=lambda: NOW)  # type: ignore[arg-type]

    suppressor: Suppressor = writer  # what ordermail feedback calls, checked by mypy

    async def changes() -> None:
        await suppressor.add("Jane@Example.com", reason="complaint", source="arf", event_id="e-1")
        await writer.remove("jane@example.com")

    try:
        asyncio.run(changes())
    finally:
        writer.close()
    added = keys.key_for("jane@example.com")
    (topic, key, value), tombstone = producer.records
    assert (topic, key) == ("supp", added.encode())
    assert value is not None
    assert b"jane" not in value.lower()  # never the address in clear
    assert entry_of(CODEC, value) == Suppression("complaint", "arf", NOW, None, "e-1")
    assert tombstone == ("supp", added.encode(), None)


def test_the_writer_refuses_unknown_reasons_and_reports_a_refused_record() -> None:
    writer = SuppressionWriter(
        FakeProducer(error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)),  # type: ignore[arg-type]
        CODEC,
        "supp",
        SuppressionKeys(SECRET),
    )
    try:
        with pytest.raises(ValueError, match="reason one of"):
            asyncio.run(writer.add("a@example.com", "bored"))
        with pytest.raises(InvalidAddress):
            asyncio.run(writer.add("nobody", "operator", "operator"))
        with pytest.raises(SuppressionError, match="TOPIC_AUTHORIZATION_FAILED"):
            asyncio.run(writer.add("a@example.com", "operator", "operator"))
    finally:
        writer.close()


# --- the pipeline ----------------------------------------------------------------------------------


def _suppressing(*addresses: str) -> Any:
    keys = SuppressionKeys(SECRET)
    table = SuppressionTable()
    for address in addresses:
        table.apply(keys.key_for(address), Suppression("hard_bounce", "dsn", datetime.now(UTC)))
    return lambda address: table.suppresses(keys, address, datetime.now(UTC))


def _suppressing_pipeline(
    renderer: FakeRenderer, smtp: FakeSmtp, publisher: FakePublisher, *addresses: str
) -> Any:
    from consumer.processing.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="g")
    return Pipeline(config, CODEC, renderer, smtp, publisher, suppressed=_suppressing(*addresses))


def test_an_order_to_a_suppressed_address_is_rejected_without_render_mail_or_dead_letter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocked, other = sample_order(1), sample_order(2)
    address = blocked["customer"]["email"]
    renderer, smtp, publisher = FakeRenderer(), FakeSmtp(), FakePublisher()
    rendered: list[str] = []
    original = renderer.render

    async def counting(order: Any, fetched: Any = ()) -> Any:
        rendered.append(order["order_id"])
        return await original(order, fetched)

    renderer.render = counting  # type: ignore[method-assign]
    pipeline = _suppressing_pipeline(renderer, smtp, publisher, address.upper())
    caplog.set_level("DEBUG")
    done = asyncio.run(_run(pipeline, [_inbound(blocked, 0), _inbound(other, 1)]))
    assert sorted(done) == [(0, "REJECTED"), (1, "SENT")]
    outcome = next(o for o in publisher.outcomes if o["order_id"] == blocked["order_id"])
    assert (outcome["status"], outcome["reason"]) == ("REJECTED", "suppressed")
    assert outcome["event_id"] == blocked["event_id"]
    assert outcome["recipient_domain"] == address.rpartition("@")[2].lower()
    assert rendered == [other["order_id"]]  # never rendered
    assert len(smtp.sent) == 1
    assert publisher.dead_letters == []
    assert address not in repr(outcome)
    assert address.lower() not in caplog.text.lower()


def test_a_resend_to_a_suppressed_address_is_rejected_too() -> None:
    order = sample_order(3)
    own = [
        *Origin("orders", 0, 5, 1_700_000_000_000).headers(),
        *RetryState(0, 0, 0, int(time.time() * 1000)).headers(),
        ("ordermail.resend", b"1733550000000"),
    ]
    value = CODEC.encode(order, READER)
    resend = Inbound("orders.retry", 0, 1, order["order_id"].encode(), value, own, 2, trusted=True)
    smtp, publisher = FakeSmtp(), FakePublisher()
    pipeline = _suppressing_pipeline(FakeRenderer(), smtp, publisher, order["customer"]["email"])
    asyncio.run(_run(pipeline, [resend]))
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "suppressed")]
    assert smtp.sent == []
    assert publisher.dead_letters == []


# --- settings --------------------------------------------------------------------------------------


def test_suppression_is_off_without_a_secret_and_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ORDERMAIL_SUPPRESSION_SECRET",
        "ORDERMAIL_SUPPRESSION_TOPIC",
        "ORDERMAIL_SUPPRESSION_TTL_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.suppression_keys() is None
    assert settings.suppression_topic == "orders.email-suppressions.v1"
    assert settings.suppression_ttl() == timedelta(days=365)
    assert Settings(ORDERMAIL_SUPPRESSION_TTL_DAYS="0").suppression_ttl() is None
    on = Settings(ORDERMAIL_SUPPRESSION_SECRET=SECRET.decode())
    assert on.suppression_keys() is not None
    assert SECRET.decode() not in repr(on)


def test_a_short_secret_stops_the_start_without_printing_any_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("ORDERMAIL_SUPPRESSION_SECRET", "too-short")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "at least 16 bytes" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert "too-short" not in str(raised.value)


def test_codec_round_trip_keeps_times_and_nulls() -> None:
    entry = Suppression("soft_bounces", None, NOW, NOW + timedelta(days=3), None)
    assert entry_of(Codec.from_directory(), _value(entry)) == entry


def test_the_start_requires_the_suppression_topic_only_when_suppression_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consumer.kafka.clients import check_topics

    monkeypatch.delenv("ORDERMAIL_SUPPRESSION_SECRET", raising=False)

    class Consumer:
        def __init__(self, names: list[str]) -> None:
            self.names = names

        def list_topics(self, timeout: float) -> Any:
            topics = {name: FakeTopicMetadata(dict.fromkeys(range(2))) for name in self.names}
            return type("Metadata", (), {"topics": topics})()

    off = Settings()
    on = Settings(ORDERMAIL_SUPPRESSION_SECRET=SECRET.decode(), ORDERMAIL_SUPPRESSION_TOPIC="supp")
    names = [off.input_topic, off.outcome_topic, off.dlq_topic, off.retry_topic]
    check_topics(Consumer(names), off)  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="topic supp does not exist"):
        check_topics(Consumer(names), on)  # type: ignore[arg-type]
    check_topics(Consumer([*names, "supp"]), on)  # type: ignore[arg-type]


def test_dates_at_the_end_of_time_do_not_break_the_check() -> None:
    """A record added near year 9999 (whoever could write to the topic): still suppressing,
    not an OverflowError on every order to that address."""
    entry = Suppression("operator", "operator", datetime(9999, 12, 31, tzinfo=UTC))
    assert entry.active(datetime.now(UTC), timedelta(days=365))
    assert entry.ends_at(timedelta(days=365)) is None


def test_only_keys_ordermail_writes_are_record_keys() -> None:
    """The service and `ordermail suppression list` leave the same records out."""
    key = SuppressionKeys(SECRET).key_for("jane@example.com")
    assert is_record_key(key)
    assert not is_record_key(key.upper())
    assert not is_record_key("z" * 64)
    assert not is_record_key(key[:-1])


def test_a_registry_that_does_not_answer_stops_the_load_instead_of_guessing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unreadable for want of a registry says nothing of the record: neither suppressed as
    unreadable (for good) nor left out. A blip is waited out; an outage stops the start."""
    from consumer.kafka import suppressions
    from schemas import SchemaRegistryUnavailable

    keys = SuppressionKeys(SECRET)
    key = keys.key_for("a@example.com").encode()
    bounced = Suppression("hard_bounce", "dsn", datetime.now(UTC).replace(microsecond=0))

    class Away(Codec):
        def __init__(self, failures: int) -> None:
            super().__init__()
            self.failures = failures

        def decode(self, data: bytes, reader: Any) -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise SchemaRegistryUnavailable("unknown_schema", "registry id 9: ConnectError")
            return CODEC.decode(data, reader)

    def load(codec: Away) -> SuppressionFollower:
        fake: Any = FakeConsumer("supp", {0: [(key, _value(bounced))]})
        follower = SuppressionFollower(
            {}, "supp", codec, SuppressionTable(None), consumer_factory=lambda _: fake
        )
        follower.load(timeout_s=10)
        return follower

    assert load(Away(failures=1)).table.suppressing(key.decode(), datetime.now(UTC)) == bounced
    monkeypatch.setattr(suppressions, "REGISTRY_PATIENCE_S", 0.0)
    with pytest.raises(SuppressionError, match="schema registry unavailable"):
        load(Away(failures=1_000))


def test_the_tool_lists_an_unreadable_entry_the_service_suppresses_so_it_can_be_removed() -> None:
    from consumer.tools.suppression import list_suppressions

    keys = SuppressionKeys(SECRET)
    key = keys.key_for("a@example.com")

    class Reader:
        settings = Settings(ORDERMAIL_SUPPRESSION_SECRET=SECRET.decode())

        def partitions(self, topic: str) -> list[int]:
            return [0]

        def bounds(self, topic: str, partition: int) -> tuple[int, int]:
            return (0, 1)

        def read(self, topic: str, starts: dict[int, int], label: str) -> Any:
            yield FakeMessage(topic, 0, 0, key.encode(), b"\x00a newer writer's record")

    a_day_later = datetime(2025, 12, 7, tzinfo=UTC)  # the record was written on 2025-12-06
    listed = list_suppressions(Reader(), CODEC, "a@example.com", now=a_day_later)  # type: ignore[arg-type]
    assert [(e["reason"], e["suppressing"]) for e in listed["entries"]] == [("unreadable", True)]
