"""`ordermail schemas check` catches a change that could not read what the previous version wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas.check import check_schemas
from schemas.codec import SCHEMA_DIR

SUBJECTS = {"commerce.orders.OrderCompleted": "orders.order-completed.v1-value"}


def _repo(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    directory.mkdir()
    for name in ("order_completed.avsc", "delivery_outcome.avsc"):
        shutil.copy(SCHEMA_DIR / name, directory / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=tmp_path, check=True)
    return directory


def _edit(directory: Path, field: dict[str, Any]) -> None:
    path = directory / "order_completed.avsc"
    document = json.loads(path.read_text())
    document["fields"].append(field)
    path.write_text(json.dumps(document))


def test_the_project_schemas_pass() -> None:
    report = check_schemas()
    assert report.ok, report.problems
    assert any("commerce.orders.OrderCompleted fingerprint" in line for line in report.lines)


def test_an_added_field_with_a_default_is_backward_compatible(tmp_path: Path) -> None:
    directory = _repo(tmp_path)
    _edit(directory, {"name": "loyalty_points", "type": ["null", "int"], "default": None})
    report = check_schemas(directory)
    assert report.ok
    assert any("git: BACKWARD compatible with order_completed.avsc" in line for line in report.lines)


def test_a_new_required_field_is_caught(tmp_path: Path) -> None:
    directory = _repo(tmp_path)
    _edit(directory, {"name": "loyalty_points", "type": "int"})  # old data has no value for it
    report = check_schemas(directory)
    assert not report.ok
    assert report.problems == [report.problems[0]]
    assert "order_completed.avsc cannot read data written with its version at" in report.problems[0]


def test_the_latest_registered_version_is_checked(tmp_path: Path) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://schemas-check"})
    registered = json.loads((SCHEMA_DIR / "order_completed.avsc").read_text())
    registered["fields"].append({"name": "legacy_code", "type": "string"})
    registry.register_schema(
        SUBJECTS["commerce.orders.OrderCompleted"], RegistrySchema(json.dumps(registered), "AVRO")
    )
    report = check_schemas(subjects=SUBJECTS, registry=registry)
    assert report.ok  # dropping a field the old writer had is fine for BACKWARD
    assert any(
        "registry: BACKWARD compatible with orders.order-completed.v1-value" in line for line in report.lines
    )

    directory = _repo(tmp_path)
    _edit(directory, {"name": "brand_new", "type": "long"})
    report = check_schemas(directory, subjects=SUBJECTS, registry=registry)
    assert any("cannot read data written with orders.order-completed.v1-value" in p for p in report.problems)


def test_an_invalid_schema_file_fails(tmp_path: Path) -> None:
    directory = _repo(tmp_path)
    (directory / "broken.avsc").write_text(
        '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}'
    )
    report = check_schemas(directory)
    assert any("broken.avsc: not a valid Avro schema" in p for p in report.problems)
