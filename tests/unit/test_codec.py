import copy
import json

import avro.schema
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas import ORDER_SCHEMA, Codec, DecodeError
from schemas.codec import SCHEMA_DIR, Schema, load_schema
from schemas.samples import sample_order

READER = ORDER_SCHEMA


def _older_writer() -> Schema:
    """OrderCompleted as an earlier producer wrote it: no optional extras, no discount."""
    schema = json.loads((SCHEMA_DIR / "order_completed.avsc").read_text())
    keep = {"event_id", "occurred_at", "order_id", "locale", "currency", "customer", "lines", "totals"}
    schema["fields"] = [f for f in schema["fields"] if f["name"] in keep]
    totals = next(f for f in schema["fields"] if f["name"] == "totals")["type"]
    totals["fields"] = [f for f in totals["fields"] if f["name"] != "discount_minor"]
    return Schema.from_json(json.dumps(schema))


def test_single_object_round_trip_starts_with_magic_and_fingerprint() -> None:
    codec = Codec.from_directory()
    order = sample_order(3)
    data = codec.encode(order, READER)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == READER.fingerprint
    assert codec.decode(data, READER) == order


@pytest.mark.parametrize("name", ["order_completed.avsc", "delivery_outcome.avsc"])
def test_fingerprints_agree_with_independent_implementations(name: str) -> None:
    """Ours (schemas/canonical.py) against fastavro's spec dialect and Apache avro's Python one."""
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    ours = load_schema(name)
    source = (SCHEMA_DIR / name).read_text()
    assert ours.fingerprint.hex() == fingerprint(to_parsing_canonical_form(ours.parsed), "CRC-64-AVRO")
    assert ours.python_avro_fingerprint == avro.schema.parse(source).fingerprint("CRC-64-AVRO")


def test_older_writer_schema_is_resolved_to_the_reader_with_defaults() -> None:
    old = _older_writer()
    assert old.fingerprint != READER.fingerprint
    order = sample_order(5)
    old_record = {
        k: v for k, v in order.items() if k in {f["name"] for f in json.loads(old.source)["fields"]}
    }
    old_record["totals"] = {k: v for k, v in order["totals"].items() if k != "discount_minor"}
    data = Codec([old]).encode(old_record, old)

    decoded = Codec([old, READER]).decode(data, READER)

    assert decoded["order_id"] == order["order_id"]
    assert decoded["totals"]["discount_minor"] == 0
    assert decoded["gift_message"] is None
    assert decoded["brand"] is None


def test_unknown_fingerprint_is_a_classified_error() -> None:
    data = Codec([_older_writer()]).encode(
        {
            **copy.deepcopy(sample_order(1)),
            "totals": {"subtotal_minor": 1, "shipping_minor": 0, "tax_minor": 0, "total_minor": 1},
        },
        _older_writer(),
    )
    with pytest.raises(DecodeError) as caught:
        Codec([READER]).decode(data, READER)
    assert caught.value.reason == "unknown_schema"


@pytest.mark.parametrize("data", [b"", b"{json: true}", b"\xc3\x01\x00", b"\x00\x00", b"garbage" * 10])
def test_garbage_is_undecodable(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        Codec.from_directory().decode(data, READER)
    assert caught.value.reason in {"undecodable", "unknown_schema"}


def test_truncated_body_is_undecodable() -> None:
    codec = Codec.from_directory()
    data = codec.encode(sample_order(2), READER)
    with pytest.raises(DecodeError) as caught:
        codec.decode(data[: len(data) // 2], READER)
    assert caught.value.reason == "undecodable"


def test_confluent_framing_round_trip_through_a_registry() -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://codec-test"})
    writer = Codec.from_directory(registry=registry)
    order = sample_order(9)
    data = writer.encode(order, READER, subject="orders.order-completed.v1-value")
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert registry.get_schema(schema_id).schema_str is not None
    # A separate reader, as another process would be: resolves the id through the registry.
    assert Codec.from_directory(registry=registry).decode(data, READER) == order


def test_confluent_framing_without_registry_is_rejected_not_crashed() -> None:
    data = b"\x00\x00\x00\x00\x01" + b"\x02"
    with pytest.raises(DecodeError) as caught:
        Codec.from_directory().decode(data, READER)
    assert caught.value.reason == "unknown_schema"


def test_a_registry_that_does_not_answer_is_told_from_one_that_lacks_the_schema() -> None:
    """Only the second says something about the record: the first must not reject it."""
    import struct

    from schemas import SchemaRegistryUnavailable
    from tests.support import free_port

    data = b"\x00" + struct.pack(">I", 12345) + b"\x02"
    lacking = Codec.from_directory(registry=SchemaRegistryClient.new_client({"url": "mock://codec-lacking"}))
    with pytest.raises(DecodeError) as missing:
        lacking.decode(data, READER)
    assert missing.value.reason == "unknown_schema"
    assert not isinstance(missing.value, SchemaRegistryUnavailable)
    away = SchemaRegistryClient({"url": f"http://127.0.0.1:{free_port()}", "timeout": 2, "max.retries": 0})
    with pytest.raises(SchemaRegistryUnavailable) as unanswered:
        Codec.from_directory(registry=away).decode(data, READER)
    assert unanswered.value.reason == "unknown_schema"  # as readers that skip what they cannot read see it


def test_a_registry_that_hangs_fails_like_one_that_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's client gives up after its timeout, asked once: reading an event, and
    registering the outcome schema at start-up (before any e-mail whose outcome it would write)."""
    import socket
    import struct

    from consumer.app import assembly
    from consumer.app.settings import Settings
    from schemas import OUTCOME_SCHEMA, SchemaRegistryUnavailable

    monkeypatch.setattr(assembly, "REGISTRY_TIMEOUT_S", 1)
    with socket.create_server(("127.0.0.1", 0)) as server:  # connections queue up, never answered
        codec = assembly.codec_for(
            Settings(SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{server.getsockname()[1]}")
        )
        framed = b"\x00" + struct.pack(">I", 3) + b"\x02"
        assert not codec.resolves_locally(framed)
        with pytest.raises(SchemaRegistryUnavailable):
            codec.decode(framed, READER)
        with pytest.raises(SchemaRegistryUnavailable):
            codec.prepare(OUTCOME_SCHEMA, "orders.delivery-outcome.v1-value")
