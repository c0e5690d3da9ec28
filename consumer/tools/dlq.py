"""``ordermail dlq list``: the dead letters, what the ``ordermail.error.*`` and
``ordermail.original.*`` headers on each say, filtered, with a summary by reason.

The dead-letter topic is written only by ordermail: its headers are ours. The event itself (the
value) is the producer's and may not even decode; what is shown of it is the order id (the key,
as outcomes show it) and, only with ``--show-personal-data`` on a terminal, the e-mail address.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from consumer.processing.records import OWN_PREFIX, Inbound, plausible_id, readable_headers
from consumer.tools.scan import decoded
from schemas import ORDER_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterator

    from confluent_kafka import Message

    from consumer.tools.scan import Reader
    from schemas import Codec

__all__ = ["DeadLetter", "Selection", "list_dead_letters", "parse_time", "read_dead_letters"]

_RELATIVE = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> int:
    """``2026-12-07T05:00:00Z`` (no zone: UTC) or a time ago such as ``90m``, ``2h``, ``7d``:
    milliseconds since the epoch."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        moment = now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    else:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on (None: no filter)."""

    reasons: frozenset[str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    partitions: frozenset[int] | None = None
    # --since/--until as typed ("2h" means another time at each run, the same selection)
    typed: tuple[str | None, str | None] | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.reasons is None or letter.reason in self.reasons)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
        )

    def digest(self) -> str:
        """Names the selection: a redrive's progress is kept per selection."""
        since, until = self.typed or (str(self.since_ms), str(self.until_ms))
        parts = (
            ",".join(sorted(self.reasons or ())),
            str(since),
            str(until),
            ",".join(str(p) for p in sorted(self.partitions or ())),
        )
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str
    status: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    order_id: str  # the key as outcomes show it (a digest when it does not look like an order id)
    event: dict[str, Any] | None  # the decoded event, None when it does not decode

    @classmethod
    def from_message(cls, message: Message, codec: Codec) -> DeadLetter:
        headers = readable_headers(message) or []  # ours are UTF-8: unreadable, it has none of them
        own = {k: v.decode("utf-8", "replace") for k, v in headers if k.startswith(OWN_PREFIX)}
        key, value = message.key(), message.value()
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        topic, timestamp = message.topic() or "", int(message.timestamp()[1])
        event = decoded(codec, value, ORDER_SCHEMA) if value else None  # a registry away: it goes up
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp,
            key=key,
            value=value,
            headers=headers,
            reason=own.get("ordermail.error.class", "unknown"),
            status=own.get("ordermail.error.status", "unknown"),
            original_topic=own.get("ordermail.original.topic", ""),
            original_partition=_int(own.get("ordermail.original.partition")),
            original_offset=_int(own.get("ordermail.original.offset")),
            order_id=Inbound(topic, partition, offset, key, value, [], timestamp).order_key,
            event=event,
        )

    @property
    def event_id(self) -> str | None:
        """The event's id when it looks like one (a dead letter's event is not validated: its
        ``event_id`` may be an e-mail address, or control characters)."""
        return plausible_id(self.event.get("event_id")) if self.event else None

    def describe(self, *, personal: bool = False) -> dict[str, Any]:
        described: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "time": _iso(self.timestamp_ms),
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "status": self.status,
            "reason": self.reason,
            "order_id": self.order_id,
            "event_id": self.event_id,
        }
        if personal and self.event:
            described["email"] = self.event.get("customer", {}).get("email")
        return described


def read_dead_letters(reader: Reader, codec: Codec, starts: dict[int, int]) -> Iterator[DeadLetter]:
    """One at a time: a dead-letter topic may hold more records (each a whole event) than a
    command should keep; callers keep only what they select."""
    dlq = reader.settings.dlq_topic
    for message in reader.read(dlq, starts, f"reading {dlq}"):
        yield DeadLetter.from_message(message, codec)


def list_dead_letters(
    reader: Reader, codec: Codec, selection: Selection, *, personal: bool = False
) -> dict[str, Any]:
    """The selected dead letters and how many there are of each reason."""
    dlq = reader.settings.dlq_topic
    partitions = [
        p for p in reader.partitions(dlq) if selection.partitions is None or p in selection.partitions
    ]
    starts = {p: _start(reader, dlq, p, selection) for p in partitions}
    # What is shown of each selected dead letter, not the record: key, value and headers go.
    shown = [
        ((d.timestamp_ms, d.partition, d.offset), d.reason, d.describe(personal=personal))
        for d in read_dead_letters(reader, codec, starts)
        if selection.matches(d)
    ]
    shown.sort(key=lambda item: item[0])
    return {
        "topic": dlq,
        "dead_letters": [described for _, _, described in shown],
        "summary": dict(Counter(reason for _, reason, _ in shown).most_common()),
        "total": len(shown),
    }


def _start(reader: Reader, topic: str, partition: int, selection: Selection) -> int:
    """Where a read for the selection begins: none of it lies before ``since`` (record times only grow)."""
    if selection.since_ms is None:
        return reader.bounds(topic, partition)[0]
    return reader.offset_at(topic, partition, selection.since_ms)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
