"""The suppression list on its compacted topic: the follower ``ordermail run`` keeps it in memory
with, and the writer the feedback service and ``ordermail suppression`` change it with.

Records are keyed by the keyed hash of the normalised address (``delivery/suppression.py``),
valued ``EmailSuppression`` (``schemas/email_suppression.avsc``, the outcomes' framing); a
tombstone removes the key. Compaction keeps each key's latest record, so the topic *is* the list.

The follower reads every partition from the beginning with ``assign`` (no group membership, no
commits: every instance needs the whole list, and there is nothing to resume) up to the high
watermarks it found when it began, before the service subscribes to any event, so ``/readyz``
stays "starting" until the list is loaded. Then a thread follows the topic: an entry written while
the service runs suppresses as soon as that thread has read it (milliseconds, not a restart).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource

from consumer.kafka.clients import close_with_timeout, consumer_config, error_name, producer_config
from consumer.kafka.publisher import AcknowledgedProducer, PublishError
from consumer.observability.metrics import SUPPRESSION_ENTRIES, SUPPRESSION_RECORDS
from delivery.suppression import (
    REASONS,
    SOURCES,
    Suppression,
    SuppressionKeys,
    SuppressionTable,
    is_record_key,
)
from schemas import SUPPRESSION_SCHEMA, DecodeError, SchemaRegistryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Producer

    from consumer.app.settings import Settings
    from schemas import Codec

__all__ = [
    "LOAD_TIMEOUT_S",
    "SuppressionError",
    "SuppressionFollower",
    "SuppressionWriter",
    "check_compacted",
    "entry_in",
    "entry_of",
    "follower_config",
    "record_of",
]

log = logging.getLogger("ordermail.suppressions")
UNREADABLE = "unreadable"  # the reason of an entry whose record this version could not read
REGISTRY_PATIENCE_S = 60.0  # a schema registry not answering for longer stops the list (and the service)
LOAD_TIMEOUT_S = 120.0  # a list not loaded by then stops the start: e-mailing without it is worse


class SuppressionError(Exception):
    """The list cannot be read or written; the message names the topic and an error code only."""


def record_of(entry: Suppression) -> dict[str, Any]:
    return {
        "reason": entry.reason,
        "source": entry.source,
        "added_at": entry.added_at,
        "expires_at": entry.expires_at,
        "event_id": entry.event_id,
    }


def entry_of(codec: Codec, value: bytes) -> Suppression:
    """The entry a record's value holds; :class:`~schemas.DecodeError` when it holds none."""
    record = codec.decode(value, SUPPRESSION_SCHEMA)
    return Suppression(
        reason=record["reason"],
        source=record.get("source"),
        added_at=record["added_at"],
        expires_at=record.get("expires_at"),
        event_id=record.get("event_id"),
    )


def follower_config(settings: Settings) -> dict[str, Any]:
    """A reader that never joins the group (``assign`` only; librdkafka wants a group id all the
    same) and fetches in large batches: loading the list is a bulk read."""
    return consumer_config(
        settings,
        **{
            "group.id": f"{settings.group_id}.suppressions",
            "enable.partition.eof": True,
            "queued.min.messages": 100_000,
            "max.partition.fetch.bytes": 1_048_576,
            "queued.max.messages.kbytes": 65_536,
            "fetch.wait.max.ms": 500,
            "client.id": "ordermail-suppressions",
        },
    )


def check_compacted(settings: Settings) -> None:
    """A list on a topic that deletes by age loses entries silently: refuse to start on one.
    Where the client may not describe topic configs (no ``DescribeConfigs`` ACL), it warns."""
    admin = AdminClient(producer_config(settings, **{"client.id": "ordermail-suppressions"}))
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.suppression_topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=15)[resource].result(timeout=30)
    except KafkaException as exc:
        log.warning("could not check that %s is compacted (%s)", settings.suppression_topic, error_name(exc))
        return
    policy = configs.get("cleanup.policy")
    if policy is None or "compact" not in str(policy.value).split(","):
        raise SystemExit(
            f"topic {settings.suppression_topic} must be compacted (cleanup.policy=compact), "
            f"not {policy.value if policy else 'unknown'}: with deletion, suppressed addresses come back"
        )


class SuppressionFollower:
    """Loads the list into ``table`` (:meth:`load`), then follows the topic (:meth:`follow`)."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        codec: Codec,
        table: SuppressionTable,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
    ) -> None:
        self.table = table
        self._topic = topic
        self._codec = codec
        self._consumer = consumer_factory(config)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None  # set when following stopped for good (for /readyz)

    def load(self, timeout_s: float = LOAD_TIMEOUT_S) -> int:
        """Reads every partition up to the end it has now; returns the records read. Raises
        :class:`SuppressionError` when the topic is missing or the end is not reached in time."""
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=30)
            found = metadata.topics.get(self._topic)
            if found is None or found.error is not None:
                raise SuppressionError(f"topic {self._topic} does not exist")
            partitions = sorted(found.partitions)
            bounds = {
                p: self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=15)
                for p in partitions
            }
        except KafkaException as exc:
            raise SuppressionError(f"{self._topic}: {error_name(exc)}") from None
        ends = {p: high for p, (_low, high) in bounds.items()}
        pending = {p for p, (low, high) in bounds.items() if high > low}
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
        read = 0
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise SuppressionError(f"{self._topic}: not read to its end within {timeout_s:.0f} s")
            message = self._consumer.poll(0.2)
            if message is None:
                continue
            partition = int(message.partition() or 0)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)  # the end, past compaction gaps and transaction markers
                elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise SuppressionError(f"{self._topic}: {error.name()}")
                continue
            try:
                self._apply(message)
            except SchemaRegistryUnavailable:  # a list read in part must not decide: no start
                raise SuppressionError(f"{self._topic}: schema registry unavailable") from None
            read += 1
            if (message.offset() or 0) + 1 >= ends[partition]:
                pending.discard(partition)
        log.info("suppression list loaded", extra={"records": read, "entries": len(self.table)})
        return read

    def follow(self) -> None:
        """Keeps reading in a thread of its own until :meth:`close`."""
        SUPPRESSION_ENTRIES.set_function(lambda: len(self.table))
        self._thread = threading.Thread(target=self._run, name="suppression-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        close_with_timeout(self._consumer, timeout_s=5)

    def _run(self) -> None:
        try:
            self._follow_until_stopped()
        except Exception as exc:  # a stale list must not go unnoticed: not ready, exit 1
            self.problem = f"suppression list not followed: {type(exc).__name__}"
            log.exception("%s", self.problem)

    def _follow_until_stopped(self) -> None:
        while not self._stopping.is_set():
            message = self._consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                self._apply(message)
            elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self.problem = f"suppression list not followed: {error.name()}"
                log.error("%s", self.problem)
                return
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("suppression list: %s", error.name())

    def _apply(self, message: Message) -> None:
        SUPPRESSION_RECORDS.inc()
        raw_key, value = message.key(), message.value()
        key = raw_key.decode("ascii", "replace") if raw_key else ""
        if not is_record_key(key):
            log.warning("suppression record without a key at %s/%s", message.partition(), message.offset())
            return
        if value is None:
            self.table.apply(key, None)
            return
        entry = self._entry(message)
        if entry.reason == UNREADABLE:
            log.warning(
                "suppression record %s unreadable at %s/%s: suppressing",
                key[:12],
                message.partition(),
                message.offset(),
            )
        self.table.apply(key, entry)

    def _entry(self, message: Message) -> Suppression:
        """A registry that does not answer is asked again every second, for up to
        ``REGISTRY_PATIENCE_S`` (a blip must not stop every replica at once); then it goes up."""
        gives_up_at = time.monotonic() + REGISTRY_PATIENCE_S
        while True:
            try:
                return entry_in(self._codec, message)
            except SchemaRegistryUnavailable:
                if self._stopping.is_set() or time.monotonic() >= gives_up_at:
                    raise
                self._stopping.wait(1.0)


def entry_in(codec: Codec, message: Message) -> Suppression:
    """The entry a record (not a tombstone) holds. One this version cannot read (a newer writer's
    schema) still suppresses its key, reason ``unreadable``, from the record's time: the key was
    suppressed all the same, and only a tombstone (always readable) removes it; what the record
    does not say (an expiry) is not assumed. A registry that does not answer says nothing of the
    record: :class:`~schemas.SchemaRegistryUnavailable` goes up (a list half read stops the start,
    or the service, rather than decide without it)."""
    try:
        return entry_of(codec, message.value() or b"")
    except SchemaRegistryUnavailable:
        raise
    except DecodeError:
        return Suppression(reason=UNREADABLE, source=None, added_at=_written_at(message))


def _written_at(message: Message) -> datetime:
    kind, timestamp = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or timestamp < 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(timestamp / 1000, UTC)


class SuppressionWriter:
    """Adds and removes addresses, each change awaited until the broker acknowledged it
    (``acks=all``, idempotent producer). The address is hashed here and never leaves it."""

    def __init__(
        self,
        producer: Producer,
        codec: Codec,
        topic: str,
        keys: SuppressionKeys,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.topic = topic
        self._sender = AcknowledgedProducer(producer, "suppression-writer")
        self._codec = codec
        self._keys = keys
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, codec: Codec, **overrides: Any) -> SuppressionWriter:
        """``ValueError`` when ``ORDERMAIL_SUPPRESSION_SECRET`` is not set."""
        from confluent_kafka import Producer

        keys = settings.suppression_keys()
        if keys is None:
            raise ValueError("ORDERMAIL_SUPPRESSION_SECRET is not set")
        config = producer_config(settings, **{"client.id": "ordermail-suppressions", **overrides})
        return cls(Producer(config), codec, settings.suppression_topic, keys)

    def key_for(self, address: str) -> str:
        """The address's record key (``InvalidAddress`` for what is not an address)."""
        return self._keys.key_for(address)

    async def add(
        self,
        address: str,
        reason: str,
        source: str | None = None,
        event_id: str | None = None,
        *,
        expires_at: datetime | None = None,
    ) -> None:
        """Suppresses the address (again: the newer entry replaces the older). ``ValueError`` for
        an unknown reason or source, or what is not an address (``InvalidAddress``); fits the
        feedback service's ``Suppressor`` (``consumer/feedback/handling.py``) as it is."""
        if reason not in REASONS or (source is not None and source not in SOURCES):
            raise ValueError(f"reason one of {sorted(REASONS)}, source one of {sorted(SOURCES)}")
        key = self.key_for(address)
        entry = Suppression(reason, source, self._clock(), expires_at, event_id)
        value = self._codec.encode(record_of(entry), SUPPRESSION_SCHEMA, subject=f"{self.topic}-value")
        await self._produce(key, value)

    async def remove(self, address: str) -> None:
        """Writes the address's tombstone (whether or not it was listed)."""
        await self._produce(self.key_for(address), None)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flushes and stops; returns the records still unacknowledged."""
        return self._sender.close(timeout_s)

    async def _produce(self, key: str, value: bytes | None) -> None:
        try:
            await self._sender.produce(self.topic, key.encode(), value, None, [])
        except PublishError as error:
            raise SuppressionError(str(error)) from None
