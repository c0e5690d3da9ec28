"""``ordermail schemas check``: are the schemas in ``schemas/`` valid, what are their
fingerprints, and can each still read what its previous version wrote (BACKWARD)?

Compared with (a) the previous committed version of each file (git), and (b) the latest version
registered under its subject when a Schema Registry is given. Compatibility is decided here with
Apache avro's reference checker (reader = the new schema, writer = the old one), so the answer
does not depend on the registry's configured level.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.codec import SCHEMA_DIR, Schema

if TYPE_CHECKING:
    from collections.abc import Mapping

    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["CheckReport", "backward_compatible", "check_schemas"]

CURRENT_FILES = (
    "order_completed.avsc",
    "delivery_outcome.avsc",
    "delivery_feedback.avsc",
    "email_suppression.avsc",
)


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def say(self, line: str) -> None:
        self.lines.append(line)

    def fail(self, line: str) -> None:
        self.lines.append(f"FAIL {line}")
        self.problems.append(line)


def backward_compatible(new_source: str, old_source: str) -> bool:
    """Can a reader with the new schema read data written with the old one?"""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(avro.schema.parse(new_source), avro.schema.parse(old_source))
    return bool(result.compatibility is SchemaCompatibilityType.compatible)


def check_schemas(
    directory: Path = SCHEMA_DIR,
    *,
    subjects: Mapping[str, str] | None = None,
    registry: SchemaRegistryClient | None = None,
) -> CheckReport:
    report = CheckReport()
    for path in sorted(directory.rglob("*.avsc")):
        try:
            schema = Schema.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as error:  # fastavro's parse errors
            report.fail(f"{path.name}: not a valid Avro schema ({error})")
            continue
        report.say(
            f"{path.relative_to(directory)}: {schema.name} fingerprint {schema.fingerprint.hex()}"
            f" (Python avro dialect {schema.python_avro_fingerprint.hex()})"
        )
        if path.name not in CURRENT_FILES or path.parent != directory:
            continue
        _against_git(path, schema, report)
        if registry is not None and subjects and schema.name in subjects:
            _against_registry(registry, subjects[schema.name], schema, report)
    return report


def _against_git(path: Path, schema: Schema, report: CheckReport) -> None:
    previous = _previous_committed(path)
    if previous is None:
        report.say(f"  git: no previous committed version of {path.name}")
    elif backward_compatible(schema.source, previous[1]):
        report.say(f"  git: BACKWARD compatible with {path.name} at {previous[0][:10]}")
    else:
        report.fail(f"{path.name} cannot read data written with its version at {previous[0][:10]}")


def _against_registry(
    registry: SchemaRegistryClient, subject: str, schema: Schema, report: CheckReport
) -> None:
    try:
        latest = registry.get_latest_version(subject)
    except Exception as error:  # noqa: BLE001 — a missing subject and an unreachable registry both just get reported
        report.say(f"  registry: {subject} not checked ({type(error).__name__})")
        return
    registered = latest.schema.schema_str or ""
    if backward_compatible(schema.source, registered):
        report.say(f"  registry: BACKWARD compatible with {subject} version {latest.version}")
    else:
        report.fail(f"{schema.name} cannot read data written with {subject} version {latest.version}")


def _previous_committed(path: Path) -> tuple[str, str] | None:
    """(commit, source) of the version to compare with: HEAD's when the file has uncommitted
    changes, else the one before the last commit that changed it."""
    root = _git(path.parent, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    top = Path(root.strip()).resolve()
    relative = path.resolve().relative_to(top).as_posix()  # pathspecs below are relative to the top
    commits = (_git(top, "log", "-n", "2", "--format=%H", "--", relative) or "").split()
    changed = _git(top, "diff", "--quiet", "HEAD", "--", relative) is None
    candidates = commits[:1] if changed else commits[1:2]
    for commit in candidates:
        source = _git(top, "show", f"{commit}:{relative}")
        if source is not None:
            json.loads(source)
            return commit, source
    return None


def _git(cwd: Path, *args: str) -> str | None:
    try:
        git = ["git", *args]
        result = subprocess.run(git, cwd=cwd, capture_output=True, text=True, check=False, timeout=30)  # noqa: S603
    except OSError:
        return None
    return result.stdout if result.returncode == 0 else None
