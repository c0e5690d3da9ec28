"""One order, for customer service: ``ordermail history ORDER_ID`` (its outcomes, then what became
of its e-mails after the relay) and ``ordermail resend ORDER_ID`` (its receipt once more, to the
same address).

An order's records are found without reading every partition: the key's partition by the
producers' partitioner (murmur2, ``consumer.kafka.partitioning``), and the same partition number
in the outcome topic (outcomes are co-partitioned by number with their input records).

**Where a resend's authority lives.** ``resend`` publishes the order's latest ``OrderCompleted``
record, byte for byte, to the *retry topic*, which only ordermail writes, in the input partition's
number, with ``ordermail.original.*`` (the input record it copies), ``ordermail.retry.*`` (due
now) and ``ordermail.resend`` (the request's time in ms). The service reads those headers only
there; on the input topic, which producers write, they are dropped unread, so a producer cannot
ask for a resend. The e-mail is built from the event as it was published: same address, a fresh
``Message-ID`` (``<event_id>.resend-<n>``), and an outcome ``SENT`` with reason ``resend``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from consumer.kafka.partitioning import partition_for
from consumer.processing.records import OWN_PREFIX, RESEND_HEADER, Origin, RetryState, readable_headers
from consumer.tools.scan import Reader, ToolError, decoded, tool_producer_config
from schemas import (
    FEEDBACK_SCHEMA,
    ORDER_SCHEMA,
    OUTCOME_SCHEMA,
    DecodeError,
    InvalidEvent,
    validate_order,
)
from schemas.validation import is_order_id

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.app.settings import Settings
    from schemas import Codec
    from schemas.codec import Schema

__all__ = ["history", "resend"]

_TERMINAL = frozenset({"SENT", "FAILED", "REJECTED"})


def _partition(reader: Reader, order_id: str) -> int:
    if not is_order_id(order_id):
        raise ToolError("not an order id (single line, at most 64 characters)", code=2)
    return partition_for(order_id.encode(), len(reader.partitions(reader.settings.input_topic)))


def history(reader: Reader, codec: Codec, order_id: str) -> dict[str, Any]:
    """The order's outcomes from the outcome topic's partition for its key, oldest first."""
    partition = _partition(reader, order_id)
    topic = reader.settings.outcome_topic
    if partition not in reader.partitions(topic):
        raise ToolError(f"{topic} has no partition {partition}: it needs the input topic's partition count")
    key = order_id.encode()
    found = [
        (outcome["occurred_at"], offset, outcome)
        for offset, outcome in _keyed(reader, codec, topic, partition, key=key, schema=OUTCOME_SCHEMA)
    ]
    found.sort(key=lambda item: (item[0], item[1]))
    return {
        "order_id": order_id,
        "topic": topic,
        "partition": partition,
        "outcomes": [_shown(outcome, offset) for _, offset, outcome in found],
        "feedback": _feedback(reader, codec, key, partition),
    }


def _feedback(reader: Reader, codec: Codec, key: bytes, partition: int) -> list[dict[str, Any]]:
    """What became of its e-mails (``ordermail feedback``'s records, in the same partition
    number); none where that topic does not exist (feedback not deployed)."""
    topic = reader.settings.feedback_topic
    try:
        if partition not in reader.partitions(topic):
            return []
    except ToolError:
        return []
    found = [
        {
            "time": record["occurred_at"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "kind": record["kind"],
            "bounce_type": record["bounce_type"],
            "status_code": record["status_code"],
            "source": record["source"],
            "attempt": record["attempt"],
            "event_id": record["event_id"],
            "feedback_id": record["feedback_id"],
        }
        for _, record in _keyed(reader, codec, topic, partition, key=key, schema=FEEDBACK_SCHEMA)
    ]
    return sorted(found, key=lambda item: str(item["time"]))


def _keyed(
    reader: Reader, codec: Codec, topic: str, partition: int, *, key: bytes, schema: Schema
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset, record) of the partition's records with ``key`` that decode with ``schema``."""
    starts = {partition: reader.bounds(topic, partition)[0]}
    for message in reader.read(topic, starts, f"reading {topic} [{partition}]"):
        if message.key() != key:
            continue
        record = decoded(codec, message.value() or b"", schema)
        if record is not None:
            yield int(message.offset() or 0), record


def _shown(outcome: dict[str, Any], offset: int) -> dict[str, Any]:
    return {
        "time": outcome["occurred_at"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "status": outcome["status"],
        "reason": outcome["reason"],
        "attempt": outcome["attempt"],
        "smtp_code": outcome.get("smtp_code"),
        "attachment_sha256": outcome.get("attachment_sha256"),
        "message_id": outcome.get("message_id"),
        "event_id": outcome["event_id"],
        "offset": offset,
    }


def resend(
    reader: Reader, codec: Codec, order_id: str, *, wait_s: float = 60.0, personal: bool = False
) -> dict[str, Any]:
    """Queues the order's latest event for sending again; with ``wait_s``, waits for its outcome."""
    settings = reader.settings
    partition = _partition(reader, order_id)
    input_topic = settings.input_topic
    for topic in (settings.retry_topic, settings.outcome_topic):
        if partition not in reader.partitions(topic):
            raise ToolError(
                f"{topic} has no partition {partition}: it needs the input topic's partition count"
            )
    low, high = reader.bounds(input_topic, partition)
    latest = _latest_event(reader, codec, order_id, partition, low)
    if latest is None:
        kept = "it is empty" if low >= high else f"offsets {low}..{high - 1} are kept"
        raise ToolError(
            f"no OrderCompleted event of order {order_id} in {input_topic} [{partition}] ({kept}): "
            "it is past the topic's retention, or was never published",
            code=3,
        )
    message, event = latest
    try:  # the event as the producer wrote it: nothing of it is used, or shown, unchecked
        validate_order(event)  # type: ignore[arg-type]
    except InvalidEvent as error:
        raise ToolError(
            f"the latest event of order {order_id} ({input_topic} [{partition}] @{message.offset()}) is "
            f"invalid ({error.reason}): ordermail would reject it, nothing was resent",
            code=2,
        ) from None
    token = int(time.time() * 1000)
    outcome_start = reader.bounds(settings.outcome_topic, partition)[1]
    _publish_resend(settings, message, partition, token)
    result: dict[str, Any] = {
        "order_id": order_id,
        "event_id": event["event_id"],
        "found_at": {"topic": input_topic, "partition": partition, "offset": message.offset()},
        "recipient_domain": event["customer"]["email"].rpartition("@")[2].lower(),
        "resend": token,
        "outcome": None,
    }
    if personal:
        result["email"] = event["customer"]["email"]
    if wait_s > 0:
        result["outcome"] = _await_outcome(
            reader, codec, event["event_id"], token, partition=partition, start=outcome_start, wait_s=wait_s
        )
    return result


def _latest_event(
    reader: Reader, codec: Codec, order_id: str, partition: int, start: int
) -> tuple[Message, dict[str, Any]] | None:
    key, latest = order_id.encode(), None
    topic = reader.settings.input_topic
    for message in reader.read(topic, {partition: start}, f"reading {topic} [{partition}]"):
        if message.key() != key:
            continue
        event = decoded(codec, message.value() or b"", ORDER_SCHEMA)
        if event is None:
            continue
        if event.get("order_id") == order_id:
            latest = (message, event)
    return latest


def _publish_resend(settings: Settings, message: Message, partition: int, token: int) -> None:
    origin = Origin(settings.input_topic, partition, int(message.offset() or 0), int(message.timestamp()[1]))
    # Headers that cannot be read (a name that is not UTF-8): left out, as the service does.
    foreign = [(k, v) for k, v in readable_headers(message) or [] if not k.startswith(OWN_PREFIX)]
    headers: list[tuple[str, str | bytes | None]] = [
        *foreign,
        *origin.headers(),
        *RetryState(deferrals=0, attempts=0, due_ms=token, first_ms=token).headers(),
        (RESEND_HEADER, str(token).encode()),
    ]
    producer = Producer(tool_producer_config(settings))
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.name())

    producer.produce(
        settings.retry_topic,
        key=message.key(),
        value=message.value(),
        partition=partition,
        headers=headers,
        on_delivery=on_delivery,
    )
    if producer.flush(30) or failures:
        raise ToolError(f"the resend could not be published to {settings.retry_topic} ({failures[:1]})")


def _await_outcome(
    reader: Reader, codec: Codec, event_id: str, token: int, *, partition: int, start: int, wait_s: float
) -> dict[str, Any] | None:
    """The resend's final outcome (``DEFERRED`` ones are waited past), or None when time is up."""
    topic = reader.settings.outcome_topic
    reader.consumer.assign([TopicPartition(topic, partition, start)])
    marker = f".resend-{token}."
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            message = reader.consumer.poll(0.5)
            if message is None or message.error():
                continue
            try:
                outcome = codec.decode(message.value() or b"", OUTCOME_SCHEMA)
            except DecodeError:  # the resend is queued already: at worst its outcome is not shown
                continue
            is_ours = outcome["reason"] == "resend" or marker in (outcome.get("message_id") or "")
            recent = outcome["occurred_at"] >= datetime.fromtimestamp(token / 1000 - 1, UTC)
            final = outcome["status"] in _TERMINAL and (is_ours or outcome["status"] != "SENT")
            if outcome["event_id"] == event_id and final and recent:
                return _shown(outcome, int(message.offset() or 0))
    finally:
        reader.consumer.unassign()
    return None
