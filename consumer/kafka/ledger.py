"""Recognises redelivered events that were already handled, without any state of our own.

After a crash or a rebalance, the new owner of an input partition reads the co-partitioned
outcome partition from the position recorded in the last commit's metadata (see
``offsets.py``) up to its end, and remembers, for the ``event_id`` of every outcome found, the
latest outcome's status and the input offset it was for (:class:`Known`). ``SENT`` is never
replaced: an event sent once stays sent. Otherwise the latest outcome wins, in the partition's
order: ``DEFERRED`` then ``FAILED`` (its deferrals ran out) is ``FAILED``. Deferred events' later
passes (on the retry topic) publish their outcomes to the same partition, and this process notes
them there too, so a ``DEFERRED`` that stands means a deferral is still pending.

What the pipeline does with a redelivered event is its rule (``Pipeline``): an event ``SENT``,
or ``DEFERRED`` with its deferral pending, is skipped; one ``REJECTED`` or ``FAILED`` is
processed again (a redrive after a fix is never skipped for the outcome that dead-lettered it),
and only when the very record of that outcome (same offset) fails again for good is its second
outcome and dead letter left out. Every outcome this process publishes afterwards is noted too
(the latest 50,000): a copy of an event that arrives after the event was sent (a redrive racing
a redelivery) is skipped as well.

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

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from consumer.kafka.clients import answered, close_with_timeout
from consumer.processing.outcomes import OUTCOME_SCHEMA
from consumer.processing.ports import Known
from schemas import DecodeError

if TYPE_CHECKING:
    from schemas import Codec

__all__ = ["Ledger", "settle"]

log = logging.getLogger("ordermail.ledger")


def settle(known: Known | None, latest: Known) -> Known:
    """What an event's outcomes say, the latest given last: ``SENT`` stays ``SENT``; otherwise
    the latest outcome stands (``DEFERRED`` then ``FAILED``: its deferrals ran out, nothing is
    pending any more)."""
    if known is not None and known.status == "SENT":
        return known
    return latest


class Ledger:
    def __init__(
        self, reader_config: dict[str, Any], outcome_topic: str, codec: Codec, *, recent_limit: int = 50_000
    ) -> None:
        self._reader_config = reader_config
        self._reader = Consumer(reader_config)
        self._topic = outcome_topic
        self._codec = codec
        self._handled: dict[int, dict[str, Known]] = {}
        # Outcomes this process published since, the latest few: noted from the event loop,
        # forgotten from the poll thread, hence the lock.
        self._recent: OrderedDict[tuple[int, str], Known] = OrderedDict()
        self._recent_limit = recent_limit
        self._lock = threading.Lock()

    def status(self, partition: int, event_id: str) -> Known | None:
        """What the event's outcomes read at take-over and noted since say, or None."""
        with self._lock:
            recent = self._recent.get((partition, event_id))
        known = self._handled.get(partition, {}).get(event_id)
        return known if recent is None else settle(known, recent)

    def note(self, partition: int, event_id: str, status: str, offset: int | None) -> None:
        """An outcome this process published for an input partition's event (from the input
        topic, or a deferred pass of it on the retry topic), for the input record at ``offset``."""
        with self._lock:
            key = (partition, event_id)
            self._recent[key] = settle(self._recent.get(key), Known(status, offset))
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

    def load(self, starts: dict[int, int], ends: dict[int, int], timeout_s: float = 15.0) -> dict[int, int]:
        """Reads outcomes ``[start, end)`` of each partition at once; returns how many each had."""
        handled: dict[int, dict[str, Known]] = {p: {} for p in starts}
        positions = {p: start for p, start in starts.items() if start < ends[p]}
        if positions:
            self._reader.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
            deadline = time.monotonic() + timeout_s
            while any(positions[p] < ends[p] for p in positions) and time.monotonic() < deadline:
                message = self._reader.poll(0.2)
                if message is None or message.error():
                    continue
                partition = int(message.partition() or 0)
                positions[partition] = (message.offset() or 0) + 1
                try:
                    outcome = self._codec.decode(message.value() or b"", OUTCOME_SCHEMA)
                except DecodeError:
                    continue
                known = handled[partition]
                latest = Known(outcome["status"], outcome.get("source_offset"))
                known[outcome["event_id"]] = settle(known.get(outcome["event_id"]), latest)
            self._reader.unassign()
            incomplete = sorted(p for p in positions if positions[p] < ends[p])
            if incomplete:
                log.warning("outcome partitions %s read in part: redeliveries may be re-sent", incomplete)
        self._handled.update(handled)
        return {p: len(ids) for p, ids in handled.items()}

    def _renew_reader(self) -> None:
        """The reader idles between takeovers, so nothing tells it that leaders moved: after a
        broker was killed it kept asking that broker until its metadata aged out (5 min). A new
        client per takeover learns the leaders afresh (a takeover is rare; a client costs ms)."""
        close_with_timeout(self._reader, timeout_s=5)
        self._reader = Consumer(self._reader_config)

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._handled.pop(partition, None)
        with self._lock:
            for key in [key for key in self._recent if key[0] in partitions]:
                del self._recent[key]

    def close(self) -> None:
        self._reader.close()
