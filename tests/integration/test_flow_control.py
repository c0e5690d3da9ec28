"""Backpressure and commit order on the real broker, with the service in its own process."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer

from consumer.tools.topic_reader import committed_and_end, read_outcomes
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from schemas import OrderCompleted
    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration
READER = ORDER_SCHEMA


def _publish_to_partition(bootstrap: str, topic: str, orders: list[OrderCompleted], partition: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    codec = Codec.from_directory()
    for order in orders:
        producer.produce(
            topic, key=order["order_id"].encode(), value=codec.encode(order, READER), partition=partition
        )
    assert producer.flush(30) == 0


def test_a_tiny_in_flight_window_pauses_and_resumes_without_losing_anything(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    orders = [sample_order(seed, lines=2) for seed in range(500, 540)]
    _publish_to_partition(kafka_bootstrap, topics.input, orders[:20], 0)
    _publish_to_partition(kafka_bootstrap, topics.input, orders[20:], 3)
    start_service(ORDERMAIL_MAX_IN_FLIGHT="2")

    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=40, timeout_s=120)

    assert sorted(o["order_id"] for _, o in outcomes) == sorted(o["order_id"] for o in orders)
    assert {o["status"] for _, o in outcomes} == {"SENT"}
    assert len(smtp_sink.messages()) == 40

    def committed_to_end() -> bool:
        committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
        return committed[0] == ends[0] == 20 and committed[3] == ends[3] == 20

    wait_until(committed_to_end, 30)
    log = (tmp_path / "service-0.log").read_text()
    assert '"msg": "paused"' in log
    assert '"msg": "resumed"' in log


def test_no_offset_is_committed_past_an_event_still_in_flight(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    smtp_sink.faults.write_text(json.dumps([{"match": "slow.customer", "delay_s": 10}]))
    slow: Any = sample_order(600, lines=1)
    slow["customer"]["email"] = "slow.customer@example.com"
    fast = [sample_order(seed, lines=1) for seed in range(601, 611)]
    _publish_to_partition(kafka_bootstrap, topics.input, [slow, *fast], 0)  # offsets 0 (slow), 1..10
    start_service(ORDERMAIL_COMMIT_INTERVAL_S="0.2")

    # All ten later events finish while the first one is still at the relay...
    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=10, timeout_s=60)
    assert {o["order_id"] for _, o in outcomes} == {o["order_id"] for o in fast}
    # ...yet the group's position stays at the unfinished event (offset 0), never past it.
    committed, _ = committed_and_end(kafka_bootstrap, topics.group, topics.input)
    assert committed[0] <= 0

    def everything_committed() -> bool:
        committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
        return committed[0] == ends[0] == 11

    wait_until(everything_committed, 40)
