"""The suppression list on the real broker, with ``ordermail run`` and ``ordermail suppression`` as
an operator runs them: an order to a suppressed address is ``REJECTED suppressed``, not e-mailed,
not dead-lettered and committed; removed, the next order is sent; an entry written while the
service runs takes effect without a restart; expired entries do not suppress; a topic that is not
compacted stops the start. Nothing prints or logs the address."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.app.settings import Settings
from consumer.kafka.clients import producer_config
from consumer.kafka.suppressions import SuppressionWriter
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import committed_and_end, read_outcomes, read_records
from schemas import Codec
from schemas.samples import sample_order
from tests.integration.operations import json_of, ordermail
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from schemas import OrderCompleted
    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration

SECRET = "integration-suppression-secret-0123"


@pytest.fixture
def suppression_topic(kafka_bootstrap: str) -> str:
    return _create_topic(kafka_bootstrap, {"cleanup.policy": "compact"})


def _create_topic(bootstrap: str, config: dict[str, str]) -> str:
    name = f"t{uuid.uuid4().hex[:8]}.email-suppressions"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 3, 1, config=config)]).values():
        future.result(timeout=30)
    return name


def _env(topic: str) -> dict[str, str]:
    return {"ORDERMAIL_SUPPRESSION_TOPIC": topic, "ORDERMAIL_SUPPRESSION_SECRET": SECRET}


def _tool(
    bootstrap: str, topics: Topics, topic: str, *args: str, ttl_days: str = "365"
) -> subprocess.CompletedProcess[str]:
    """``ordermail suppression ...`` with the service's suppression settings."""
    return ordermail(
        bootstrap,
        topics,
        "suppression",
        *args,
        ORDERMAIL_SUPPRESSION_TOPIC=topic,
        ORDERMAIL_SUPPRESSION_SECRET=SECRET,
        ORDERMAIL_SUPPRESSION_TTL_DAYS=ttl_days,
    )


def _again(order: OrderCompleted, n: int) -> OrderCompleted:
    """A new order of the same customer: a new event, a new order id, the same address."""
    copy = dict(order)
    copy.update(event_id=str(uuid.uuid4()), order_id=f"{order['order_id']}-{n}")
    return cast("OrderCompleted", copy)


def _entries_read(port: int) -> float | None:
    """``ordermail_suppression_entries`` as the service reports it (None: not yet)."""
    status, body = http_get(port, "/metrics")
    match = re.search(r"^ordermail_suppression_entries (\S+)$", body, re.MULTILINE) if status == 200 else None
    return float(match[1]) if match else None


def _statuses(bootstrap: str, topics: Topics, expected: int) -> dict[str, tuple[str, str | None]]:
    outcomes = read_outcomes(bootstrap, topics.outcome, expected=expected, timeout_s=120)
    assert len(outcomes) == expected
    return {o["order_id"]: (o["status"], o["reason"]) for _, o in outcomes}


def _recipients(sink: Sink) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for path in sink.messages()
        for line in path.read_text(errors="replace").splitlines()
        if line.startswith("To:")
    ]


def test_a_suppressed_address_is_rejected_unmailed_then_mailed_once_removed_and_entries_apply_live(
    kafka_bootstrap: str,
    topics: Topics,
    suppression_topic: str,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    env = _env(suppression_topic)
    blocked, other, later = (sample_order(seed, lines=1) for seed in (4000, 4001, 4002))
    blocked_address = blocked["customer"]["email"]

    # Suppressed before the service starts (in capitals: the list does not care).
    added = json_of(
        _tool(kafka_bootstrap, topics, suppression_topic, "add", blocked_address.upper(), "--json")
    )
    assert (added["reason"], added["source"], added["suppressing"]) == ("operator", "operator", True)
    port = free_port()
    start_service(ORDERMAIL_HEALTH_PORT=str(port), **env)
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    codec = Codec.from_directory()
    publish_orders(settings, codec, [blocked, other])

    assert _statuses(kafka_bootstrap, topics, 2) == {
        blocked["order_id"]: ("REJECTED", "suppressed"),
        other["order_id"]: ("SENT", None),
    }
    wait_until(lambda: len(smtp_sink.messages()) >= 1, 30)
    assert _recipients(smtp_sink) == [other["customer"]["email"]]
    assert read_records(kafka_bootstrap, topics.dlq, expected=None, timeout_s=15) == []

    def all_committed() -> bool:
        committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
        return all(committed.get(p, -1) == end for p, end in ends.items())

    wait_until(all_committed, 30)  # a suppressed order is done like any other

    # The operator's view: a key prefix, never the address.
    listed = _tool(kafka_bootstrap, topics, suppression_topic, "list", "--json")
    assert [(e["key"], e["reason"]) for e in json_of(listed)["entries"]] == [(added["key"], "operator")]
    assert blocked_address not in listed.stdout
    one = json_of(
        _tool(kafka_bootstrap, topics, suppression_topic, "list", "--address", blocked_address, "--json")
    )
    assert one["suppressing"] == 1

    # Removed while the service runs: the next order to that address is sent.
    wait_until(lambda: _entries_read(port) == 1, 30)
    removed = _tool(kafka_bootstrap, topics, suppression_topic, "remove", blocked_address)
    assert removed.returncode == 0, removed.stderr
    assert blocked_address not in removed.stdout
    wait_until(lambda: _entries_read(port) == 0, 30)
    again = _again(blocked, 1)
    publish_orders(settings, codec, [again])
    assert _statuses(kafka_bootstrap, topics, 3)[again["order_id"]] == ("SENT", None)
    wait_until(lambda: blocked_address in _recipients(smtp_sink), 30)

    # Added while the service runs: it suppresses without a restart.
    json_of(_tool(kafka_bootstrap, topics, suppression_topic, "add", later["customer"]["email"], "--json"))
    wait_until(lambda: _entries_read(port) == 1, 30)
    publish_orders(settings, codec, [later])
    assert _statuses(kafka_bootstrap, topics, 4)[later["order_id"]] == ("REJECTED", "suppressed")
    assert len(smtp_sink.messages()) == 2
    assert later["customer"]["email"] not in _recipients(smtp_sink)

    # Nothing the service logged names a suppressed address.
    logs = (tmp_path / "service-0.log").read_text(errors="replace")
    assert blocked_address not in logs
    assert later["customer"]["email"] not in logs
    assert "suppression list loaded" in logs


def test_expired_entries_do_not_suppress(
    kafka_bootstrap: str,
    topics: Topics,
    suppression_topic: str,
    start_service: ServiceFactory,
    smtp_sink: Sink,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    past_ttl, past_expiry, current = (sample_order(seed, lines=1) for seed in (4010, 4011, 4012))
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ORDERMAIL_INPUT_TOPIC=topics.input,
        ORDERMAIL_SUPPRESSION_TOPIC=suppression_topic,
        ORDERMAIL_SUPPRESSION_SECRET=SECRET,
    )
    codec = Codec.from_directory()
    now = datetime.now(UTC)

    async def write() -> None:
        keys = settings.suppression_keys()
        assert keys is not None
        producer = Producer(producer_config(settings))
        long_ago = SuppressionWriter(  # an entry written 31 days ago: older than the TTL below
            producer, codec, suppression_topic, keys, clock=lambda: now - timedelta(days=31)
        )
        today = SuppressionWriter.from_settings(settings, codec)
        try:
            await long_ago.add(past_ttl["customer"]["email"], "hard_bounce", "dsn")
            await today.add(past_expiry["customer"]["email"], "operator", "operator", expires_at=now)
            await today.add(current["customer"]["email"], "complaint", "arf", current["event_id"])
        finally:
            long_ago.close()
            today.close()

    asyncio.run(write())
    start_service(ORDERMAIL_SUPPRESSION_TTL_DAYS="30", **_env(suppression_topic))
    publish_orders(settings, codec, [past_ttl, past_expiry, current])
    assert _statuses(kafka_bootstrap, topics, 3) == {
        past_ttl["order_id"]: ("SENT", None),
        past_expiry["order_id"]: ("SENT", None),
        current["order_id"]: ("REJECTED", "suppressed"),
    }
    wait_until(lambda: len(smtp_sink.messages()) >= 2, 30)
    assert sorted(_recipients(smtp_sink)) == sorted(o["customer"]["email"] for o in (past_ttl, past_expiry))
    listed = json_of(_tool(kafka_bootstrap, topics, suppression_topic, "list", "--json", ttl_days="30"))
    assert (listed["total"], listed["suppressing"]) == (3, 1)  # expired entries stay listed


def test_a_suppression_topic_that_is_not_compacted_stops_the_start(
    kafka_bootstrap: str, start_service: ServiceFactory, tmp_path: Path
) -> None:
    deleting = _create_topic(kafka_bootstrap, {"cleanup.policy": "delete"})
    service = start_service(**_env(deleting))
    assert service.wait(120) == 1
    assert "must be compacted" in (tmp_path / "service-0.log").read_text(errors="replace")
