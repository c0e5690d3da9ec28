"""Producers evolve their events: older and newer writers are read through our reader schema, and
events written by Apache avro's Python library (other fingerprint dialect) are read too."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import pytest

from schemas import ORDER_SCHEMA, Codec, DecodeError
from schemas.codec import SCHEMA_DIR, Schema
from schemas.samples import sample_order

CURRENT = ORDER_SCHEMA


def _variant(change: str) -> Schema:
    document = json.loads((SCHEMA_DIR / "order_completed.avsc").read_text())
    if change == "added":  # v2 adds an optional field with a default
        document["fields"].append({"name": "loyalty_points", "type": ["null", "int"], "default": None})
    else:  # v2 drops an optional field
        document["fields"] = [f for f in document["fields"] if f["name"] != "channel"]
    return Schema.from_json(json.dumps(document))


@pytest.mark.parametrize("change", ["added", "removed"])
def test_newer_writers_are_read_by_the_current_reader(change: str) -> None:
    newer = _variant(change)
    record: dict[str, Any] = dict(sample_order(11))
    if change == "added":
        record["loyalty_points"] = 120
    else:
        record.pop("channel")
    data = Codec([newer]).encode(record, newer)
    decoded = Codec([newer, CURRENT]).decode(data, CURRENT)
    assert decoded["order_id"] == record["order_id"]
    assert "loyalty_points" not in decoded
    assert decoded["channel"] == (record.get("channel") if change == "added" else None)


@pytest.mark.parametrize("change", ["added", "removed"])
def test_current_writers_are_read_by_a_newer_reader(change: str) -> None:
    newer = _variant(change)
    order = sample_order(12)
    data = Codec([CURRENT]).encode(order, CURRENT)
    decoded = Codec([CURRENT, newer]).decode(data, newer)
    assert decoded["order_id"] == order["order_id"]
    if change == "added":
        assert decoded["loyalty_points"] is None
    else:
        assert "channel" not in decoded


def test_an_unknown_writer_is_a_classified_rejection_not_a_crash() -> None:
    newer = _variant("added")
    data = Codec([newer]).encode({**sample_order(13), "loyalty_points": 1}, newer)
    with pytest.raises(DecodeError) as caught:
        Codec([CURRENT]).decode(data, CURRENT)
    assert caught.value.reason == "unknown_schema"


def test_events_written_with_apache_avros_python_library_are_read() -> None:
    source = (SCHEMA_DIR / "order_completed.avsc").read_text()
    writer_schema = avro.schema.parse(source)
    body = io.BytesIO()
    avro.io.DatumWriter(writer_schema).write(dict(sample_order(14)), avro.io.BinaryEncoder(body))
    # Single-object framing as that library's users build it: its fingerprint, its dialect.
    data = b"\xc3\x01" + writer_schema.fingerprint("CRC-64-AVRO") + body.getvalue()
    assert data[2:10] == CURRENT.python_avro_fingerprint != CURRENT.fingerprint

    assert Codec.from_directory().decode(data, CURRENT) == sample_order(14)
