"""Runbook 3 and the dead-letter commands, against the real broker: ``dlq list`` reads what the
dead letters' headers say, ``dlq redrive`` refuses what a redrive cannot fix, and a redrive killed
half-way and run again publishes no record twice (progress and records in one transaction)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer

from consumer.kafka.partitioning import partition_for
from consumer.processing.outcomes import dead_letter_headers
from consumer.processing.records import Inbound
from consumer.tools.topic_reader import read_records
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order
from tests.conftest import ORDERMAIL, PARTITIONS
from tests.integration.operations import json_of, ordermail, redriven_sources

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import Topics

pytestmark = pytest.mark.integration
CODEC = Codec.from_directory()


def _dead_letter(producer: Producer, topics: Topics, seed: int, reason: str, offset: int) -> str:
    """A dead letter as the service writes it (the record, its headers, ours added)."""
    order = sample_order(seed, lines=1)
    key = order["order_id"].encode()
    inbound = Inbound(
        topics.input,
        partition_for(key, PARTITIONS),
        offset,
        key,
        CODEC.encode(order, ORDER_SCHEMA),
        [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        1_700_000_000_000,
    )
    headers = dead_letter_headers(inbound, status="REJECTED", reason=reason, group_id=topics.group)
    producer.produce(topics.dlq, key=key, value=inbound.value, headers=list(headers))
    return order["event_id"]


def test_dlq_list_filters_and_redrive_refuses_what_it_cannot_fix(
    kafka_bootstrap: str, topics: Topics
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    for n in range(6):
        _dead_letter(producer, topics, 3000 + n, "template_error", n)
    _dead_letter(producer, topics, 3100, "invalid_email", 9)
    assert producer.flush(30) == 0

    listed = json_of(ordermail(kafka_bootstrap, topics, "dlq", "list", "--json"))
    assert listed["total"] == 7
    assert listed["summary"] == {"template_error": 6, "invalid_email": 1}
    first = listed["dead_letters"][0]
    assert first["original_topic"] == topics.input
    assert first["order_id"].startswith("ORD-")
    assert "email" not in first
    only = json_of(ordermail(kafka_bootstrap, topics, "dlq", "list", "--reason", "invalid_email", "--json"))
    assert [d["reason"] for d in only["dead_letters"]] == ["invalid_email"]
    future = json_of(ordermail(kafka_bootstrap, topics, "dlq", "list", "--since", "2099-01-01", "--json"))
    assert future["total"] == 0
    table = ordermail(kafka_bootstrap, topics, "dlq", "list")
    assert "7 dead letters" in table.stdout
    assert "template_error 6, invalid_email 1" in table.stdout
    assert "@" not in table.stdout.replace(" @", "")  # no e-mail address, only offsets after " @"

    personal = ordermail(kafka_bootstrap, topics, "dlq", "list", "--show-personal-data")
    assert personal.returncode == 2
    assert "refused when standard output is not a terminal" in personal.stderr
    assert not personal.stdout

    refused = ordermail(kafka_bootstrap, topics, "dlq", "redrive")
    assert refused.returncode == 2
    assert "invalid_email x1" in refused.stderr
    dry = json_of(
        ordermail(
            kafka_bootstrap, topics, "dlq", "redrive", "--reason", "template_error", "--dry-run", "--json"
        )
    )
    assert (dry["selected"], dry["published"]) == (6, 6)
    assert redriven_sources(kafka_bootstrap, topics) == []  # nothing published by either

    missing = ordermail(kafka_bootstrap, topics, "dlq", "list", ORDERMAIL_DLQ_TOPIC="no-such-topic")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == "ordermail dlq: topic no-such-topic does not exist (or is not readable) at " + kafka_bootstrap
    )
    away = ordermail(kafka_bootstrap, topics, "history", "ORD-1", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9")
    assert away.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:9" in away.stderr


def test_a_redrive_killed_half_way_and_run_again_publishes_no_record_twice(
    kafka_bootstrap: str, topics: Topics, wait_until: Callable[[Callable[[], bool], float], None]
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    # The records the dead letters name (offsets 0-99 of each input partition) came before any
    # redrive: its copies follow them, as they do on a real topic.
    for partition in range(PARTITIONS):
        for _ in range(100):
            producer.produce(topics.input, value=b"an earlier record", partition=partition)
    events = [_dead_letter(producer, topics, 3200 + n, "template_error", n) for n in range(40)]
    _dead_letter(producer, topics, 3200, "template_error", 99)  # the same event dead-lettered twice
    assert producer.flush(30) == 0
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, **topics.env()}
    command = [ORDERMAIL, "dlq", "redrive", "--reason", "template_error", "--rate", "5"]

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(redriven_sources(kafka_bootstrap, topics)) >= 10, 60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    killed_at = len(redriven_sources(kafka_bootstrap, topics))
    assert 10 <= killed_at < 40  # half-way: some published and committed, not all

    rerun = json_of(
        ordermail(kafka_bootstrap, topics, "dlq", "redrive", "--reason", "template_error", "--json")
    )
    assert rerun["resumed_from"]  # from the committed progress, not from the start
    assert rerun["published"] == 40 - killed_at
    assert rerun["duplicates"] == 1  # the second dead letter of an event redriven before the kill
    again = json_of(
        ordermail(kafka_bootstrap, topics, "dlq", "redrive", "--reason", "template_error", "--json")
    )
    assert (again["selected"], again["published"]) == (0, 0)
    # Another selection (its own progress, from the start) over the same dead letters: none again.
    other = json_of(ordermail(kafka_bootstrap, topics, "dlq", "redrive", "--since", "1d", "--json"))
    assert (other["selected"], other["published"], other["already_redriven"]) == (41, 0, 40)
    # An event that fails again after its redrive has a newer dead letter (of its copy): that one goes.
    key = sample_order(3205, lines=1)["order_id"].encode()
    (copy,) = [
        r
        for r in read_records(kafka_bootstrap, topics.input, expected=None, timeout_s=30)
        if r.key == key and "ordermail.redrive.source" in r.headers
    ]
    _dead_letter(producer, topics, 3205, "template_error", copy.offset)
    assert producer.flush(30) == 0
    failed_again = json_of(
        ordermail(kafka_bootstrap, topics, "dlq", "redrive", "--reason", "template_error", "--json")
    )
    assert (failed_again["selected"], failed_again["published"]) == (1, 1)

    sources = redriven_sources(kafka_bootstrap, topics)
    assert len(sources) == len(set(sources)) == 41  # each dead letter once, the duplicate event not at all
    records = [
        r
        for r in read_records(kafka_bootstrap, topics.input, expected=None, timeout_s=30)
        if "ordermail.redrive.source" in r.headers  # not the earlier records
    ]
    decoded = [CODEC.decode(r.value or b"", ORDER_SCHEMA) for r in records]
    assert sorted(e["event_id"] for e in decoded) == sorted([*events, events[5]])
    for record in records:  # the key's partition, as the producers' murmur2 partitioner puts it
        assert record.partition == partition_for(record.key or b"", PARTITIONS)
        assert record.headers["traceparent"].startswith(b"00-0af7")  # the producer's headers kept
        assert record.headers["ordermail.redrive.reason"] == b"template_error"
        assert not any(k.startswith(("ordermail.error.", "ordermail.original.")) for k in record.headers)
