"""Recognises redelivered events that were already handled, without any state of our own.

After a crash or a rebalance, the new owner of an input partition, or of a retry-topic partition
(deferred passes, queued in the input's partition number), reads the co-partitioned outcome
partition from the position recorded in the last commit's metadata (see ``offsets.py``) up to
its end, and remembers, for the ``event_id`` of every outcome found, the latest outcome
(:class:`Known`). ``SENT`` is never replaced: an event sent once stays sent. Otherwise the later
outcome in the partition wins, whichever was read or noted first: ``DEFERRED`` then ``FAILED``
(its deferrals ran out) is ``FAILED``. Deferred passes publish their outcomes to the same
partition, and this process notes them there too, so a ``DEFERRED`` that stands means a deferral
is still pending, as far as this process can see (another member may run the retry partition).

What the pipeline does with a redelivered record is its rule (``Pipeline``): an event ``SENT``,
or the very record ``DEFERRED`` with its deferral pending, is skipped; one ``REJECTED`` or
``FAILED`` is processed again (a redrive after a fix is never skipped for the outcome that
dead-lettered it), and only when the very record of that outcome (same offset) fails again for
good is its second outcome and dead letter left out. A deferred pass is skipped when the event
was ``SENT`` or an outcome of its input record at or after its due time stands (its own pass,
or a later one, settled); a resend once that very resend was sent. Every outcome this process
publishes afterwards is noted too (the latest 50,000): a copy of an event that arrives after
the event was sent (a redrive racing a redelivery) is skipped as well.

A partition taken on with no such commit (a new group, offsets reset by hand) is anchored
before any of its events is consumed: its position is committed with the outcome partition's
current end (see ``handover.py``), so a later owner always has a place to read from.

What remains: an e-mail the relay accepted whose outcome never reached the broker (the process
died in between, a window of milliseconds) is sent once more; the deterministic ``Message-ID``
lets receiving systems drop it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from consumer.kafka.clients import answered, close_with_timeout
from consumer.processing.outcomes import OUTCOME_SCHEMA
from consumer.processing.ports import Known
from consumer.processing.retry import epoch_ms
from schemas import DecodeError, SchemaRegistryUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.kafka.offsets import TopicPartitionKey
    from schemas import Codec

__all__ = ["Ledger", "settle"]

log = logging.getLogger("ordermail.ledger")
# How far apart the clocks writing the retry and outcome topics may be (their records' timestamps:
# pods, and wherever `ordermail resend` runs); ten minutes of outcomes cost a takeover little.
CLOCK_SLACK_MS = 600_000


def settle(known: Known | None, other: Known) -> Known:
    """What two outcomes of an event say together: ``SENT`` stays ``SENT``; otherwise the later
    one in the partition stands (``DEFERRED`` then ``FAILED``: its deferrals ran out, nothing is
    pending any more), so reads and notes may arrive in any order. Without positions, ``other``
    is taken as the later."""
    if known is None:
        return other
    if (known.status == "SENT") != (other.status == "SENT"):
        return known if known.status == "SENT" else other
    if known.at is not None and other.at is not None and known.at > other.at:
        return known
    return other


class Ledger:
    def __init__(
        self, reader_config: dict[str, Any], outcome_topic: str, codec: Codec, *, recent_limit: int = 50_000
    ) -> None:
        self._reader_config = reader_config
        self._reader = Consumer(reader_config)
        self._topic = outcome_topic
        self._codec = codec
        # Partition number -> topic taken over -> event_id -> what its read found: each takeover
        # replaces its own, and a partition given up takes its read along.
        self._handled: dict[int, dict[str, dict[str, Known]]] = {}
        # Outcomes this process published since, the latest few: noted from the event loop,
        # forgotten from the poll thread, hence the lock.
        self._recent: OrderedDict[tuple[int, str], Known] = OrderedDict()
        self._recent_limit = recent_limit
        self._lock = threading.Lock()

    def status(self, partition: int, event_id: str) -> Known | None:
        """What the event's outcomes read at take-over and noted since say, or None."""
        with self._lock:
            recent = self._recent.get((partition, event_id))
        known = recent
        for read in list(self._handled.get(partition, {}).values()):
            found = read.get(event_id)
            if found is not None:
                known = settle(known, found)
        return known

    def note(self, partition: int, event_id: str, outcome: Known) -> None:
        """An outcome this process published for an input partition's event (from the input
        topic, or a deferred pass of it on the retry topic)."""
        with self._lock:
            key = (partition, event_id)
            self._recent[key] = settle(self._recent.get(key), outcome)
            self._recent.move_to_end(key)
            while len(self._recent) > self._recent_limit:
                self._recent.popitem(last=False)

    def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        """One request for all partitions (``OFFSET_END`` asks for the end); ``KafkaException``
        when a partition's end is unknown (its leader moving): never taken as an empty partition."""
        self._renew_reader()  # each takeover starts here
        wanted = [TopicPartition(self._topic, p, OFFSET_END) for p in sorted(partitions)]
        answer = answered(self._reader.offsets_for_times(wanted, timeout=10))
        return {tp.partition: tp.offset for tp in answer}

    def outcomes_since(self, topic: str, offsets: dict[int, int], timeout_s: float = 5.0) -> dict[int, int]:
        """For the records of ``topic`` at these offsets (partition -> offset): the outcome offset
        (of the same partition number) before which every outcome was published before the record
        was, less ``CLOCK_SLACK_MS`` for the clocks of the pods that wrote them; the outcome
        partition's end (``OFFSET_END``, -1) when none is later. A record not read in time is left
        out. A retry partition's deferred passes, all published after the record at its committed
        offset, report no earlier than that: its takeover need not read from further back."""
        produced: dict[int, int] = {}
        read: set[int] = set()  # only each partition's first record counts: later ones are later
        self._reader.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        try:
            deadline = time.monotonic() + timeout_s
            while len(read) < len(offsets) and time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None or message.error() or int(message.partition() or 0) in read:
                    continue
                read.add(partition := int(message.partition() or 0))
                kind, timestamp = message.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE:
                    produced[partition] = timestamp
        finally:
            self._reader.unassign()
        if not produced:
            return {}
        wanted = [
            TopicPartition(self._topic, p, max(0, t - CLOCK_SLACK_MS)) for p, t in sorted(produced.items())
        ]
        answer = answered(self._reader.offsets_for_times(wanted, timeout=10))
        return {tp.partition: tp.offset for tp in answer}

    def load(
        self, starts: dict[TopicPartitionKey, int], ends: dict[int, int], timeout_s: float = 15.0
    ) -> dict[TopicPartitionKey, int]:
        """Reads, for each partition taken over, the outcomes of its number from its start to the
        end (``ends``), as what is known of it. A number's input and retry partitions are read
        together, the later start first, then the stretch down to the earlier one, within one
        time limit: a read cut off misses the oldest outcomes, not the newest (every outcome it
        found is a fact all the same). Returns how many events each partition's range had."""
        found: dict[TopicPartitionKey, dict[str, Known]] = {tp: {} for tp in starts}
        latest: dict[int, int] = {}
        earliest: dict[int, int] = {}
        for (_, p), start in starts.items():
            latest[p], earliest[p] = max(start, latest.get(p, start)), min(start, earliest.get(p, start))
        deadline = time.monotonic() + timeout_s
        for window_starts, window_ends in ((latest, ends), (earliest, latest)):
            for partition, event_id, read in self._read(window_starts, window_ends, deadline):
                for tp, start in starts.items():
                    if tp[1] == partition and read.at is not None and read.at >= start:
                        known = found[tp]
                        known[event_id] = settle(known.get(event_id), read)
        for (topic, p), known in found.items():
            self._handled.setdefault(p, {})[topic] = known
        return {tp: len(known) for tp, known in found.items()}

    def _read(
        self, starts: dict[int, int], ends: dict[int, int], deadline: float
    ) -> Iterator[tuple[int, str, Known]]:
        """Outcomes ``[start, end)`` of each partition at once, until ``deadline``."""
        positions = {p: start for p, start in starts.items() if start < ends[p]}
        if not positions:
            return
        self._reader.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
        try:
            while any(positions[p] < ends[p] for p in positions) and time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None or message.error():
                    continue
                partition, at = int(message.partition() or 0), message.offset() or 0
                positions[partition] = at + 1
                try:
                    outcome = self._codec.decode(message.value() or b"", OUTCOME_SCHEMA)
                except SchemaRegistryUnavailable:
                    raise  # an outcome not read is an e-mail sent again: the takeover waits
                except DecodeError:
                    continue
                known = Known(
                    outcome["status"],
                    outcome.get("source_offset"),
                    at,
                    epoch_ms(outcome["occurred_at"]),
                    outcome.get("message_id"),
                )
                yield partition, outcome["event_id"], known
        finally:
            self._reader.unassign()
        incomplete = sorted(p for p in positions if positions[p] < ends[p])
        if incomplete:
            log.warning("outcome partitions %s read in part: redeliveries may be re-sent", incomplete)

    def _renew_reader(self) -> None:
        """The reader idles between takeovers, so nothing tells it that leaders moved: after a
        broker was killed it kept asking that broker until its metadata aged out (5 min). A new
        client per takeover learns the leaders afresh (a takeover is rare; a client costs ms)."""
        close_with_timeout(self._reader, timeout_s=5)
        self._reader = Consumer(self._reader_config)

    def forget(self, partitions: set[TopicPartitionKey], *, held: set[int]) -> None:
        """What was read for these partitions, and this process's notes of the partition numbers
        no longer ``held`` (by any topic taken over)."""
        for topic, partition in partitions:
            reads = self._handled.get(partition, {})
            reads.pop(topic, None)
            if not reads:
                self._handled.pop(partition, None)
        gone = {p for _, p in partitions} - held
        with self._lock:
            for key in [key for key in self._recent if key[0] in gone]:
                del self._recent[key]

    def close(self) -> None:
        self._reader.close()
