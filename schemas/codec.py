"""Avro codec for both wire framings ordermail meets.

- Single-object encoding (the default, no registry): ``C3 01`` + the writer schema's 8-byte
  CRC-64-AVRO fingerprint (little-endian) + the Avro body. Writer schemas are looked up among
  every ``.avsc`` file under ``schemas/`` (current and historical versions).
- Confluent Schema Registry framing: ``00`` + 4-byte big-endian schema id + the Avro body, the
  writer schema fetched from the registry by id.

Decoding always resolves writer → reader schema (Avro schema resolution), so older and newer
producers are read through the reader schema shipped here.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import fastavro

from schemas.canonical import canonical_form, fingerprint64

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "SCHEMA_DIR",
    "Codec",
    "DecodeError",
    "DecodeReason",
    "Schema",
    "SchemaRegistryUnavailable",
    "load_schema",
]

SCHEMA_DIR = Path(__file__).resolve().parent
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


DecodeReason = Literal["undecodable", "unknown_schema", "schema_mismatch"]


class DecodeError(Exception):
    """The bytes are not an event we can read; ``reason`` is a machine-readable code."""

    def __init__(self, reason: DecodeReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: DecodeReason = reason


class SchemaRegistryUnavailable(DecodeError):
    """The schema registry did not answer (unreachable, timed out, a server error, credentials
    refused): nothing is known to be wrong with the record. Readers that skip what they cannot
    decode see an ``unknown_schema``; the service stops rather than reject the record for it."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any = field(repr=False)
    source: str = field(repr=False)
    fingerprint: bytes  # per the specification: what we write
    python_avro_fingerprint: bytes  # what Apache avro's Python library computes: also accepted

    @classmethod
    def from_json(cls, source: str) -> Schema:
        document = json.loads(source)
        parsed: Any = fastavro.parse_schema(document)
        return cls(
            parsed["name"],
            parsed,
            source,
            fingerprint64(canonical_form(document)),
            fingerprint64(canonical_form(document, python_avro_dialect=True)),
        )


def load_schema(name: str, directory: Path = SCHEMA_DIR) -> Schema:
    return Schema.from_json((directory / name).read_text(encoding="utf-8"))


class Codec:
    """Encodes records with one framing and decodes either, resolving against a reader schema."""

    def __init__(
        self,
        writers: Iterable[Schema] = (),
        registry: SchemaRegistryClient | None = None,
    ) -> None:
        self._by_fingerprint = {
            fp: schema for schema in writers for fp in (schema.python_avro_fingerprint, schema.fingerprint)
        }
        self._registry = registry
        self._by_registry_id: dict[int, Any] = {}
        self._registered: dict[tuple[str, bytes], int] = {}

    @classmethod
    def from_directory(
        cls, directory: Path = SCHEMA_DIR, registry: SchemaRegistryClient | None = None
    ) -> Codec:
        writers = [Schema.from_json(p.read_text(encoding="utf-8")) for p in sorted(directory.rglob("*.avsc"))]
        return cls(writers, registry)

    @property
    def registry(self) -> SchemaRegistryClient | None:
        return self._registry

    def decode(self, data: bytes, reader: Schema) -> dict[str, Any]:
        if data.startswith(SINGLE_OBJECT_MAGIC) and len(data) >= 10:
            writer = self._by_fingerprint.get(data[2:10])
            if writer is None:
                raise DecodeError("unknown_schema", f"fingerprint {data[2:10].hex()}")
            return _read(data[10:], writer.parsed, reader)
        if data.startswith(CONFLUENT_MAGIC) and len(data) >= 5:
            (schema_id,) = struct.unpack(">I", data[1:5])
            return _read(data[5:], self._registry_schema(schema_id), reader)
        raise DecodeError("undecodable", "unknown framing")

    def encode(self, record: Mapping[str, Any], writer: Schema, subject: str | None = None) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer.parsed, dict(record))
        if self._registry is None:
            return SINGLE_OBJECT_MAGIC + writer.fingerprint + body.getvalue()
        schema_id = self._register(subject or f"{writer.name}-value", writer)
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body.getvalue()

    def _registry_schema(self, schema_id: int) -> Any:
        if self._registry is None:
            raise DecodeError("unknown_schema", "Confluent framing but SCHEMA_REGISTRY_URL is unset")
        if schema_id not in self._by_registry_id:
            try:
                registered = self._registry.get_schema(schema_id)
            except Exception as exc:  # registry errors are many types; the reason is what matters
                detail = f"registry id {schema_id}: {type(exc).__name__}"
                if getattr(exc, "http_status_code", None) == 404:  # the registry has no such schema
                    raise DecodeError("unknown_schema", detail) from exc
                raise SchemaRegistryUnavailable("unknown_schema", detail) from exc
            try:  # any schema a producer names: a JSON Schema or Protobuf one is no Avro schema
                self._by_registry_id[schema_id] = Schema.from_json(registered.schema_str or "").parsed
            except Exception as exc:  # fastavro's parse errors are many types
                raise DecodeError("unknown_schema", f"registry id {schema_id}: not Avro") from exc
        return self._by_registry_id[schema_id]

    def prepare(self, writer: Schema, subject: str) -> None:
        """Registers what this process will write, before it writes anything: with a registry that
        does not answer, ``encode`` would fail after the e-mail it records had gone (raises
        :class:`SchemaRegistryUnavailable`). Nothing to do without a registry."""
        if self._registry is not None:
            try:
                self._register(subject, writer)
            except Exception as exc:  # registry errors are many types: named, with the HTTP status
                status = getattr(exc, "http_status_code", None)
                detail = f"{subject}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
                raise SchemaRegistryUnavailable("unknown_schema", detail) from exc

    def resolves_locally(self, data: bytes) -> bool:
        """Whether decoding ``data`` needs no request to the registry (its writer is known here)."""
        if data.startswith(CONFLUENT_MAGIC) and len(data) >= 5:
            return struct.unpack(">I", data[1:5])[0] in self._by_registry_id
        return True

    def _register(self, subject: str, writer: Schema) -> int:
        from confluent_kafka.schema_registry import Schema as RegistrySchema

        key = (subject, writer.fingerprint)
        if key not in self._registered and self._registry is not None:
            self._registered[key] = self._registry.register_schema(
                subject, RegistrySchema(writer.source, "AVRO")
            )
        return self._registered[key]


def _read(body: bytes, writer: Any, reader: Schema) -> dict[str, Any]:
    try:
        record = fastavro.schemaless_reader(io.BytesIO(body), writer, reader.parsed)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OverflowError) as exc:
        raise DecodeError("undecodable", type(exc).__name__) from exc
    except fastavro.read.SchemaResolutionError as exc:
        raise DecodeError("schema_mismatch", str(exc)[:200]) from exc
    if not isinstance(record, dict):
        raise DecodeError("undecodable", "not a record")
    return record
