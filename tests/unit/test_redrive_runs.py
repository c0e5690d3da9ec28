"""``dlq redrive`` run whole, against topics held in memory: what several runs, selections and
failures in between do (the Kafka parts are exercised by tests/integration/test_runbook_redrive.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.tools import redrive
from consumer.tools.dlq import Selection
from consumer.tools.scan import Reader as KafkaReader
from consumer.tools.scan import ToolError
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA, Codec
from schemas.samples import sample_order

CODEC = Codec.from_directory()
HOUR = 3_600_000
DAY = 24 * HOUR


@dataclass
class _Record:
    topic_: str
    partition_: int
    offset_: int
    timestamp_ms: int
    key_: bytes | None
    value_: bytes | None
    headers_: list[tuple[str, bytes]]

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self.headers_)

    def error(self) -> None:
        return None


class _Settings:
    group_id = "ordermail"
    input_topic = "orders"
    outcome_topic = "outcomes"
    dlq_topic = "dlq"
    retry_topic = "retry"
    bootstrap_servers = "127.0.0.1:9"


@dataclass
class _Cluster:
    """One partition per topic; ``now`` stamps what the redrive publishes (the operator's clock)."""

    logs: dict[str, list[_Record]] = field(
        default_factory=lambda: {t: [] for t in ("orders", "outcomes", "dlq")}
    )
    deleted: dict[str, int] = field(default_factory=dict)  # topic -> records removed by retention
    committed: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) -> offset
    now: int = 0

    def append(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Any], at: int
    ) -> _Record:
        log = self.logs[topic]
        record = _Record(topic, 0, len(log), at, key, value, [(k, bytes(v)) for k, v in headers])
        log.append(record)
        return record

    def dead_letter(self, order: dict[str, Any], reason: str, original_offset: int, at: int) -> None:
        headers = [
            ("ordermail.error.class", reason.encode()),
            ("ordermail.original.topic", b"orders"),
            ("ordermail.original.partition", b"0"),
            ("ordermail.original.offset", str(original_offset).encode()),
        ]
        self.append("dlq", order["order_id"].encode(), CODEC.encode(order, ORDER_SCHEMA), headers, at)

    def sent(self, order: dict[str, Any], at: int) -> None:
        outcome = {
            "event_id": order["event_id"],
            "order_id": order["order_id"],
            "status": "SENT",
            "reason": None,
            "attempt": 1,
            "occurred_at": datetime.fromtimestamp(at / 1000, UTC),
        }
        self.append("outcomes", order["order_id"].encode(), CODEC.encode(outcome, OUTCOME_SCHEMA), [], at)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> _Cluster:
    kafka = _Cluster()

    class Reader:
        def __init__(self, settings: _Settings, group_id: str) -> None:
            self.settings, self.group_id = settings, group_id

        def partitions(self, topic: str) -> list[int]:
            return [0]

        def bounds(self, topic: str, partition: int) -> tuple[int, int]:
            return kafka.deleted.get(topic, 0), len(kafka.logs[topic])

        def offset_at(self, topic: str, partition: int, timestamp_ms: int) -> int:
            kept = kafka.logs[topic][kafka.deleted.get(topic, 0) :]
            return next((r.offset_ for r in kept if r.timestamp_ms >= timestamp_ms), len(kafka.logs[topic]))

        def holds_since(self, topic: str, partition: int, timestamp_ms: int) -> bool:
            return KafkaReader.holds_since(self, topic, partition, timestamp_ms)  # type: ignore[arg-type]  # the real rule

        def committed(self, topic: str, partitions: list[int]) -> dict[int, int]:
            found = kafka.committed.get((self.group_id, topic))
            return {} if found is None else {0: found}

        def read(self, topic: str, starts: dict[int, int], label: str) -> Any:
            yield from kafka.logs[topic][max(starts.get(0, 0), kafka.deleted.get(topic, 0)) :]

        def group_metadata(self) -> str:
            return self.group_id

        def close(self) -> None:
            pass

    class Producer:
        def __init__(self, config: dict[str, Any]) -> None:
            self.records: list[tuple[str, Any]] = []
            self.offsets: list[Any] = []

        def init_transactions(self, timeout: float) -> None:
            pass

        def begin_transaction(self) -> None:
            self.records, self.offsets = [], []

        def produce(self, topic: str, **record: Any) -> None:
            self.records.append((topic, record))

        def send_offsets_to_transaction(self, offsets: list[Any], group: str, timeout: float) -> None:
            self.offsets = [(group, tp) for tp in offsets]

        def commit_transaction(self, timeout: float) -> None:
            for topic, record in self.records:
                kafka.append(topic, record["key"], record["value"], record["headers"], kafka.now)
            for group, tp in self.offsets:
                kafka.committed[(group, tp.topic)] = tp.offset

        def poll(self, timeout: float) -> None:
            pass

    monkeypatch.setattr(redrive, "Reader", Reader)
    monkeypatch.setattr(redrive, "Producer", Producer)
    monkeypatch.setattr(redrive, "tool_producer_config", lambda settings, **overrides: {})
    return kafka


def _run(selection: Selection, codec: Codec = CODEC, **options: Any) -> redrive.RedriveReport:
    return redrive.redrive(_Settings(), codec, selection, **options)  # type: ignore[arg-type]


def test_an_event_that_failed_again_after_a_redrive_is_redriven_by_a_wider_selection(
    cluster: _Cluster,
) -> None:
    """Its first dead letter is passed over (already redriven): the newer one is due, not a
    duplicate of it."""
    order: dict[str, Any] = dict(sample_order(1))
    cluster.dead_letter(order, "template_error", original_offset=0, at=1_000)
    cluster.now = 2_000
    assert _run(Selection(reasons=frozenset({"template_error"}))).published == 1
    cluster.dead_letter(order, "render_error", original_offset=0, at=3_000)  # the copy (offset 0) failed
    wider = _run(Selection(since_ms=0, typed=("2h", None)))
    assert (wider.already_redriven, wider.duplicates, wider.published) == (1, 0, 1)


def test_a_failure_after_a_redrive_is_due_whatever_the_operators_clock_said(cluster: _Cluster) -> None:
    """The copy was stamped by a machine a minute ahead: its dead letter (of the copy's offset on)
    still reads as newer."""
    order: dict[str, Any] = dict(sample_order(2))
    cluster.append("orders", b"k", b"original", [], at=0)  # the original event, offset 0
    cluster.dead_letter(order, "template_error", original_offset=0, at=1_000)
    cluster.now = 60_000  # the operator's clock
    assert _run(Selection(reasons=frozenset({"template_error"}))).published == 1
    copy = cluster.logs["orders"][-1].offset_
    cluster.dead_letter(order, "template_error", original_offset=copy, at=5_000)  # the pod's clock
    cluster.now = 70_000
    again = _run(Selection(reasons=frozenset({"template_error"})))
    assert (again.duplicates, again.published) == (0, 1)


def test_a_relative_until_leaves_later_dead_letters_for_a_later_run(cluster: _Cluster) -> None:
    """``--until 1h``: a dead letter too new for one run is selected by the same command later."""
    first, second = dict(sample_order(3)), dict(sample_order(4))
    cluster.dead_letter(first, "template_error", original_offset=0, at=0)
    cluster.dead_letter(second, "template_error", original_offset=1, at=int(1.5 * HOUR))

    def older_than_an_hour(now: int) -> Selection:
        return Selection(reasons=frozenset({"template_error"}), until_ms=now - HOUR, typed=(None, "1h"))

    cluster.now = 2 * HOUR
    assert _run(older_than_an_hour(2 * HOUR)).published == 1
    cluster.now = 5 * HOUR
    later = _run(older_than_an_hour(5 * HOUR))
    assert (later.selected, later.published) == (1, 1)
    assert _run(older_than_an_hour(6 * HOUR)).published == 0  # and once only


def test_dead_letters_older_than_the_outcomes_kept_are_refused(cluster: _Cluster) -> None:
    """Redriven and SENT on day 0, its outcome and copy gone with retention by day 10: a new
    selection would e-mail the customer again, unless the operator says so."""
    order: dict[str, Any] = dict(sample_order(5))
    cluster.append("orders", b"k", b"older", [], at=0)
    cluster.dead_letter(order, "template_error", original_offset=0, at=1_000)
    cluster.now = 2_000
    assert _run(Selection(reasons=frozenset({"template_error"}))).published == 1
    cluster.sent(order, at=3_000)
    assert _run(Selection(since_ms=0, typed=("30d", None))).already_sent == 1
    cluster.append("outcomes", b"k", b"a later outcome", [], at=8 * DAY)
    cluster.append("orders", b"k", b"a later event", [], at=8 * DAY)
    cluster.deleted = {"outcomes": 1, "orders": 2}  # 7 days of retention
    another = Selection(since_ms=0, typed=("60d", None))  # no progress of its own yet
    with pytest.raises(ToolError) as refused:
        _run(another)
    assert refused.value.code == 2
    assert "orders and outcomes no longer hold" in str(refused.value)
    assert _run(another, past_retention=True).published == 1


def test_events_the_tool_cannot_decode_are_refused_unless_forced(cluster: _Cluster) -> None:
    """An ``unknown_schema`` event without its writer schema: no id, so neither "already sent"
    nor "one record per event" can be checked."""
    for offset in (0, 1):
        cluster.append(
            "dlq",
            b"k",
            b"\x00\x00\x00\x00\x07unknown",
            [("ordermail.error.class", b"unknown_schema")],
            at=offset,
        )
    with pytest.raises(ToolError) as refused:
        _run(Selection())
    assert "cannot read" in str(refused.value)
    assert _run(Selection(), force=True).published == 2


def test_an_old_event_dead_lettered_lately_is_checked_from_its_dead_letter_on(cluster: _Cluster) -> None:
    """The event's own time (its producer's, and its first failure's for a re-failed redrive) may
    lie before retention: what matters is whether everything since its dead letter is kept."""
    order: dict[str, Any] = dict(sample_order(6))
    order["occurred_at"] = datetime.fromtimestamp(1, UTC)  # long before anything kept
    cluster.append("outcomes", b"k", b"an older outcome", [], at=9 * DAY)
    cluster.append("orders", b"k", b"an older record", [], at=9 * DAY)
    cluster.dead_letter(order, "template_error", original_offset=0, at=10 * DAY)
    cluster.deleted = {"outcomes": 0, "orders": 0}
    cluster.logs["outcomes"].insert(0, _Record("outcomes", 0, 0, 0, None, None, []))  # offset 0, deleted
    for offset, record in enumerate(cluster.logs["outcomes"]):
        record.offset_ = offset
    cluster.deleted = {"outcomes": 1}
    cluster.now = 10 * DAY + 1
    assert _run(Selection(reasons=frozenset({"template_error"}))).published == 1


def test_an_outcome_the_registry_cannot_resolve_stops_the_redrive_before_it_publishes(
    cluster: _Cluster,
) -> None:
    """Skipped as unreadable, a SENT outcome would let a sent event through again."""
    from schemas import SchemaRegistryUnavailable

    class OutcomesAway(Codec):
        def decode(self, data: bytes, reader: Any) -> dict[str, Any]:
            if reader is OUTCOME_SCHEMA:
                raise SchemaRegistryUnavailable("unknown_schema", "registry id 9: ConnectError")
            return CODEC.decode(data, reader)

    order: dict[str, Any] = dict(sample_order(7))
    cluster.dead_letter(order, "template_error", original_offset=0, at=1_000)
    cluster.sent(order, at=2_000)
    with pytest.raises(SchemaRegistryUnavailable):
        _run(Selection(), OutcomesAway())
    assert cluster.logs["orders"] == []
