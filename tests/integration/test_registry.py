"""Confluent Schema Registry framing against a real registry (Apicurio Registry, Confluent API),
mixed on one topic with single-object encoded events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient

from consumer.app.settings import Settings
from consumer.tools.producing import publish_raw
from consumer.tools.topic_reader import read_records
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA, Codec
from schemas.check import check_schemas
from schemas.codec import SCHEMA_DIR
from schemas.samples import sample_order
from tests.support import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration
ORDER = ORDER_SCHEMA
OUTCOME = OUTCOME_SCHEMA


@pytest.fixture
def registry(registry_url: str) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry_url}) as client:  # closes its HTTP connections
        yield client


# confluent-kafka 2.16's registry client leaves one pooled HTTP connection to the garbage
# collector even after close(); that warning, and only it, is not this test's concern.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_confluent_framed_events_and_outcomes_through_a_real_registry(
    registry_url: str,
    registry: SchemaRegistryClient,
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    framed, plain = Codec.from_directory(registry=registry), Codec.from_directory()
    orders = [sample_order(seed, lines=1) for seed in range(1100, 1110)]
    records = [
        (
            o["order_id"].encode(),
            (framed if i % 2 else plain).encode(o, ORDER, subject=f"{topics.input}-value"),
        )
        for i, o in enumerate(orders)
    ]
    assert {value[0] for _, value in records} == {0x00, 0xC3}  # both framings on one topic
    publish_raw(
        Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input), records
    )
    start_service(SCHEMA_REGISTRY_URL=registry_url)

    outcomes = read_records(kafka_bootstrap, topics.outcome, expected=10, timeout_s=120)
    assert len(outcomes) == 10
    assert all(record.value and record.value[0] == 0 for record in outcomes)  # written with Confluent framing
    reader = Codec.from_directory(
        registry=SchemaRegistryClient({"url": registry_url})
    )  # a fresh client, as analytics
    decoded = [reader.decode(record.value or b"", OUTCOME) for record in outcomes]
    assert {o["status"] for o in decoded} == {"SENT"}
    assert {o["order_id"] for o in decoded} == {o["order_id"] for o in orders}
    registered = registry.get_latest_version(f"{topics.outcome}-value")
    assert json.loads(registered.schema.schema_str or "{}")["name"] == "DeliveryOutcome"
    wait_until(lambda: len(smtp_sink.messages()) == 10, 30)


def test_schemas_check_against_the_registry(registry: SchemaRegistryClient, topics: Topics) -> None:
    subject = f"{topics.input}-value"
    older = json.loads((SCHEMA_DIR / "order_completed.avsc").read_text())
    older["fields"] = [f for f in older["fields"] if f["name"] not in {"brand", "channel"}]
    registry.register_schema(subject, RegistrySchema(json.dumps(older), "AVRO"))
    report = check_schemas(subjects={ORDER.name: subject}, registry=registry)
    assert report.ok
    assert any(f"registry: BACKWARD compatible with {subject} version 1" in line for line in report.lines)

    # A registered version whose data the current schema could not read is reported.
    other = f"{topics.input}-legacy-value"
    legacy = json.loads((SCHEMA_DIR / "order_completed.avsc").read_text())
    legacy["fields"] = [f for f in legacy["fields"] if f["name"] != "currency"]  # we require it, no default
    registry.register_schema(other, RegistrySchema(json.dumps(legacy), "AVRO"))
    report = check_schemas(subjects={ORDER.name: other}, registry=registry)
    assert not report.ok


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_registry_that_does_not_answer_stops_the_service_and_rejects_nothing(
    registry_url: str,
    registry: SchemaRegistryClient,
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    tmp_path: Path,
) -> None:
    """Events whose schema the process has not fetched yet, the registry away: no event is
    rejected or dead-lettered for it (the service stops, exit 1, committing nothing past them);
    with the registry back, each is e-mailed once."""
    framed = Codec.from_directory(registry=registry)
    orders = [sample_order(seed, lines=1) for seed in range(1200, 1204)]
    publish_raw(
        Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input),
        [(o["order_id"].encode(), framed.encode(o, ORDER, subject=f"{topics.input}-value")) for o in orders],
    )
    away = start_service(SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{free_port()}")
    assert away.wait(120) == 1
    assert "schema registry unavailable" in (tmp_path / "service-0.log").read_text()
    assert read_records(kafka_bootstrap, topics.outcome, expected=None, timeout_s=5) == []
    assert read_records(kafka_bootstrap, topics.dlq, expected=None, timeout_s=5) == []
    assert smtp_sink.messages() == []

    start_service(SCHEMA_REGISTRY_URL=registry_url)
    outcomes = read_records(kafka_bootstrap, topics.outcome, expected=4, timeout_s=120)
    decoded = [Codec.from_directory(registry=registry).decode(r.value or b"", OUTCOME) for r in outcomes]
    assert sorted((o["order_id"], o["status"]) for o in decoded) == sorted(
        (o["order_id"], "SENT") for o in orders
    )
    assert read_records(kafka_bootstrap, topics.dlq, expected=None, timeout_s=5) == []
