"""Avro Parsing Canonical Form and its CRC-64-AVRO fingerprint, in both dialects seen in the wild.

The specification's [PRIMITIVES] rule turns ``{"type": "long", "logicalType": ...}`` into
``"long"``; Java, fastavro and this module's default do so. Apache avro's Python library (1.12)
keeps ``{"type":"long"}`` instead, so its single-object fingerprints differ for every schema
with a logical type. The codec accepts both for each known schema.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_form", "fingerprint64"]

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _table()


def fingerprint64(canonical: str) -> bytes:
    """CRC-64-AVRO as the 8 little-endian bytes the single-object encoding carries."""
    fp = _EMPTY
    for byte in canonical.encode():
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def canonical_form(schema: Any, *, python_avro_dialect: bool = False) -> str:
    return _canonical(schema, "", python_avro_dialect)


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _canonical(schema: Any, namespace: str, dialect: bool) -> str:  # noqa: PLR0911 (one return per Avro kind)
    if isinstance(schema, str):
        return json.dumps(schema if schema in PRIMITIVES else _fullname(schema, namespace))
    if isinstance(schema, list):
        return "[" + ",".join(_canonical(branch, namespace, dialect) for branch in schema) + "]"
    kind = schema["type"]
    if kind in PRIMITIVES:
        return f'{{"type":{json.dumps(kind)}}}' if dialect and "logicalType" in schema else json.dumps(kind)
    if kind in {"record", "error", "enum", "fixed"}:
        name = _fullname(schema["name"], schema.get("namespace", namespace))
        inner = name.rpartition(".")[0]
        head = f'{{"name":{json.dumps(name)},"type":{json.dumps(kind)}'
        if kind == "enum":
            return head + f',"symbols":{json.dumps(schema["symbols"], separators=(",", ":"))}}}'
        if kind == "fixed":
            return head + f',"size":{int(schema["size"])}}}'
        fields = ",".join(
            f'{{"name":{json.dumps(f["name"])},"type":{_canonical(f["type"], inner, dialect)}}}'
            for f in schema["fields"]
        )
        return head + f',"fields":[{fields}]}}'
    if kind == "array":
        return f'{{"type":"array","items":{_canonical(schema["items"], namespace, dialect)}}}'
    if kind == "map":
        return f'{{"type":"map","values":{_canonical(schema["values"], namespace, dialect)}}}'
    return _canonical(kind, namespace, dialect)  # {"type": "SomeNamedType"} or {"type": {...}}
