"""``ordermail suppression list|add|remove``: the suppression list as operators see and change it.

``list`` reads the compacted topic to its end and shows each key's latest entry (a tombstone
removes it): a prefix of the key (the keyed hash, never an address), reason, source, when it was
added and when it stops suppressing (its own expiry or ``ORDERMAIL_SUPPRESSION_TTL_DAYS`` after
it was added). ``list --address`` looks one address up; ``add`` and ``remove`` hash the address
typed and write the entry or the tombstone through :class:`~consumer.kafka.suppressions.SuppressionWriter`
(acknowledged before the command returns). ``remove`` of an address not listed writes nothing and
exits 3: a typo is not silently "removed". Hashing needs ``ORDERMAIL_SUPPRESSION_SECRET``, the
service's; listing all entries does not.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from consumer.kafka.suppressions import SuppressionError, SuppressionWriter, entry_in
from consumer.tools.scan import Reader, ToolError
from delivery.suppression import InvalidAddress, Suppression, SuppressionKeys, is_record_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from consumer.app.settings import Settings
    from schemas import Codec

__all__ = ["KEY_PREFIX", "add_suppression", "address_key", "list_suppressions", "remove_suppression"]

KEY_PREFIX = 16  # hex digits shown of a key: enough to tell entries apart, and to find one
_UNHASHABLE = "ORDERMAIL_SUPPRESSION_SECRET is not set: addresses cannot be hashed"
_WRITE_TIMEOUT_S = 60.0


def list_suppressions(
    reader: Reader, codec: Codec, address: str | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    settings = reader.settings
    wanted = address_key(settings, address) if address is not None else None
    entries, unreadable = _read(reader, codec, wanted)
    now = now or datetime.now(UTC)
    ttl = settings.suppression_ttl()
    if wanted is not None and wanted not in entries:
        raise ToolError("the address is not on the suppression list", code=3)
    shown = [_shown(key, entry, ttl, now) for key, entry in entries.items()]
    shown.sort(key=lambda e: e["added"], reverse=True)
    return {
        "topic": settings.suppression_topic,
        "entries": shown,
        "total": len(shown),
        "suppressing": sum(1 for e in shown if e["suppressing"]),
        "unreadable": unreadable,
    }


def add_suppression(
    settings: Settings,
    codec: Codec,
    address: str,
    *,
    reason: str = "operator",
    expires_days: float | None = None,
) -> dict[str, Any]:
    key = address_key(settings, address)  # refused before connecting: no secret, or not an address
    now = datetime.now(UTC)
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    _write(settings, codec, lambda writer: writer.add(address, reason, "operator", expires_at=expires_at))
    entry = Suppression(reason, "operator", now, expires_at)
    return {
        "topic": settings.suppression_topic,
        "added": True,
        **_shown(key, entry, settings.suppression_ttl(), now),
    }


def remove_suppression(reader: Reader, codec: Codec, address: str) -> dict[str, Any]:
    settings = reader.settings
    key = address_key(settings, address)
    entries, _ = _read(reader, codec, key)
    if key not in entries:
        raise ToolError("the address is not on the suppression list: nothing written", code=3)
    _write(settings, codec, lambda writer: writer.remove(address))
    return {"topic": settings.suppression_topic, "removed": True, "key": key[:KEY_PREFIX]}


def address_key(settings: Settings, address: str) -> str:
    """The address's record key; a :class:`ToolError` (exit 2) without a secret or an address."""
    keys = settings.suppression_keys()
    if keys is None:
        raise ToolError(_UNHASHABLE, code=2)
    return _checked(keys, address)


def _checked(keys: SuppressionKeys, address: str) -> str:
    try:
        return keys.key_for(address)
    except InvalidAddress:
        raise ToolError("not an e-mail address", code=2) from None


def _read(reader: Reader, codec: Codec, only: str | None) -> tuple[dict[str, Suppression], int]:
    """Each key's latest entry (``only``: that key's alone; one whose value this version cannot
    read as ``unreadable``, as the service suppresses it) and the records not keyed by us."""
    topic = reader.settings.suppression_topic
    starts = {p: reader.bounds(topic, p)[0] for p in reader.partitions(topic)}
    entries: dict[str, Suppression] = {}
    unreadable = 0
    for message in reader.read(topic, starts, f"reading {topic}"):
        key = (message.key() or b"").decode("ascii", "replace")
        if only is not None and key != only:
            continue
        if not is_record_key(key):  # as the service: no address of ours is behind it
            unreadable += 1
            continue
        value = message.value()
        if value is None:
            entries.pop(key, None)
            continue
        entries[key] = entry_in(codec, message)  # an unreadable one suppresses: listed, removable
    return entries, unreadable


def _write(settings: Settings, codec: Codec, change: Callable[[SuppressionWriter], Awaitable[None]]) -> None:
    """One change through the writer, acknowledged (or a :class:`ToolError`) before returning."""
    from confluent_kafka import Producer

    from consumer.tools.scan import tool_producer_config

    keys = settings.suppression_keys()
    if keys is None:
        raise ToolError(_UNHASHABLE, code=2)
    writer = SuppressionWriter(
        Producer(tool_producer_config(settings)), codec, settings.suppression_topic, keys
    )
    try:
        asyncio.run(asyncio.wait_for(change(writer), timeout=_WRITE_TIMEOUT_S))
    except SuppressionError as error:
        raise ToolError(f"not written: {error}") from None
    except TimeoutError:
        raise ToolError(
            f"not acknowledged by Kafka at {settings.bootstrap_servers} within {_WRITE_TIMEOUT_S:.0f} s"
        ) from None
    finally:
        writer.close()


def _shown(key: str, entry: Suppression, ttl: timedelta | None, now: datetime) -> dict[str, Any]:
    ends = entry.ends_at(ttl)
    return {
        "key": key[:KEY_PREFIX],
        "reason": entry.reason,
        "source": entry.source,
        "added": entry.added_at.astimezone(UTC).isoformat(timespec="seconds"),
        "expires": ends.astimezone(UTC).isoformat(timespec="seconds") if ends else None,
        "suppressing": entry.active(now, ttl),
        "event_id": entry.event_id,
    }
