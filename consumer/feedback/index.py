"""Which order an e-mail was for: the sent outcomes of the last days, by event id.

A bounce names its event (the return path's token, or our Message-ID), but a
``DeliveryFeedback`` record is keyed by ``order_id`` and belongs in the outcome's partition:
both are on the outcome topic, which this index follows from ``window_s`` ago (no consumer
group: every replica reads every partition). Only ``SENT`` outcomes are kept, the newest per
event, at most ``max_entries`` (oldest dropped first).

A bounce can arrive before the outcome of its e-mail is on the topic (a local relay bounces in
milliseconds): :meth:`OutcomeIndex.find` waits until the index has read everything published
``settle_s`` after the report arrived before it calls an event unknown, and reports
:class:`IndexLagging` when it cannot get that far in time: the sender is then told to retry.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

from consumer.observability import metrics
from consumer.processing.records import readable_headers
from schemas import OUTCOME_SCHEMA, DecodeError, SchemaRegistryUnavailable

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from schemas import Codec, DeliveryOutcome

__all__ = ["IndexLagging", "OutcomeIndex", "Sent", "canonical_event_id"]

log = logging.getLogger("ordermail.feedback")


@dataclass(frozen=True)
class Sent:
    order_id: str
    partition: int
    message_id: str | None
    recipient_domain: str | None  # from our own outcome: a report's claim is not trusted for it
    trace_id: str | None
    traceparent: bytes | None  # of the outcome record: the feedback span links to it
    event_id: str | None = None  # as the event spelled it (reports name it in lower case)


def canonical_event_id(event_id: str) -> str:
    """One spelling per id: events may write a UUID in capitals, in braces or as a URN (the
    validation accepts any), while a report gives back the lower-case form our token and
    Message-ID carry."""
    try:
        return str(uuid.UUID(event_id))
    except ValueError:
        return event_id


class IndexLagging(Exception):
    """The index is behind the outcome topic: an unknown event may yet appear."""


class OutcomeIndex:
    def __init__(
        self,
        consumer: Consumer,
        codec: Codec,
        topic: str,
        *,
        window_s: float,
        max_entries: int,
        settle_s: float = 2.0,
    ) -> None:
        self._consumer = consumer
        self._codec = codec
        self._topic = topic
        self._window_s = window_s
        self._max_entries = max_entries
        self._settle_s = settle_s
        self._entries: OrderedDict[str, Sent] = OrderedDict()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._at_end: set[int] = set()
        self._partitions: set[int] = set()
        # Per partition, when it last stood at its end: all it had before then has been read.
        self._end_seen_at: dict[int, float] = {}
        self._caught_up_at = float("-inf")  # the earliest of those: the whole index is that fresh
        self._running = True
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._follow, name="outcome-index", daemon=True)

    @property
    def loaded(self) -> bool:
        """Read to the end of the topic at least once: until then, nothing can be called unknown."""
        return self._caught_up_at > float("-inf")

    @property
    def failure(self) -> str | None:
        return self._failure

    def __len__(self) -> int:
        return len(self._entries)

    def start(self) -> None:
        metadata = self._consumer.list_topics(self._topic, timeout=30)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None:
            raise SystemExit(f"topic {self._topic} does not exist")
        since_ms = int((time.time() - self._window_s) * 1000)
        wanted = [TopicPartition(self._topic, p, since_ms) for p in sorted(topic.partitions)]
        # A timestamp past the newest record answers OFFSET_END: start at the end then.
        offsets = self._consumer.offsets_for_times(wanted, timeout=30)
        self._partitions = {tp.partition for tp in offsets}
        self._consumer.assign(
            [
                TopicPartition(self._topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in offsets
            ]
        )
        self._thread.start()

    async def find(self, event_id: str, arrived_at: float, timeout_s: float) -> Sent | None:
        """The sent outcome of ``event_id``; None when the index has read past ``arrived_at`` +
        settle time without meeting it. Raises :class:`IndexLagging` after ``timeout_s``.
        Waits on the event loop (woken by the index thread), holding no thread meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            woken = asyncio.Event()
            with self._lock:
                sent = self._entries.get(canonical_event_id(event_id))
                if sent is not None:
                    return sent
                if self._caught_up_at >= arrived_at + self._settle_s:
                    return None
                if self._failure is not None:
                    raise IndexLagging
                self._waiters.append((loop, woken))
            try:
                await asyncio.wait_for(woken.wait(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise IndexLagging from None
            finally:
                with self._lock:
                    if (loop, woken) in self._waiters:
                        self._waiters.remove((loop, woken))

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._consumer.close()

    def _follow(self) -> None:
        try:
            while self._running:
                messages = self._consumer.consume(num_messages=500, timeout=0.2)
                polled_at = time.monotonic()  # ends seen are as of now, however long decoding takes
                outcomes = [self._outcome(message) for message in messages]  # not holding the lock
                with self._lock:
                    for message, outcome in zip(messages, outcomes, strict=True):
                        self._take(message, outcome, polled_at)
                    if not messages:  # nothing came: whatever stood at its end still does
                        self._end_seen_at.update(dict.fromkeys(self._at_end, polled_at))
                    if len(self._end_seen_at) == len(self._partitions):
                        # A busy topic is never empty for a whole poll: each partition's own
                        # end-of-partition events say how far it has been read.
                        self._caught_up_at = min(self._end_seen_at.values())
                    self._wake()
        except Exception as exc:  # the service reports not ready; the log says why
            log.exception("outcome index stopped")
            with self._lock:
                self._failure = type(exc).__name__
                self._wake()

    def _wake(self) -> None:
        """Lets every waiting :meth:`find` look again (called holding the lock)."""
        for loop, woken in self._waiters:
            loop.call_soon_threadsafe(woken.set)
        self._waiters.clear()

    def _outcome(self, message: Message) -> DeliveryOutcome | None:
        """The record's outcome, or None. A registry that does not answer is asked again every
        second, the index waiting meanwhile (reports are asked to come again, not dropped as
        unknown): an outcome skipped is a report that never finds its order."""
        value = message.value()
        while message.error() is None and value:
            try:
                outcome: DeliveryOutcome = self._codec.decode(value, OUTCOME_SCHEMA)  # type: ignore[assignment]
                return outcome
            except SchemaRegistryUnavailable:
                if not self._running:
                    return None  # closing: what was not read no longer matters
                time.sleep(1.0)
            except DecodeError:
                return None  # not ours to judge: analytics reads this topic with the same schema
        return None

    def _take(self, message: Message, outcome: DeliveryOutcome | None, polled_at: float) -> None:
        error = message.error()
        partition = message.partition() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add(partition)
                self._end_seen_at[partition] = polled_at
            elif error.fatal():
                raise RuntimeError(error.name())
            return
        self._at_end.discard(partition)
        if outcome is None or outcome["status"] != "SENT":
            return
        traceparent = next((v for k, v in readable_headers(message) or [] if k == "traceparent"), None)
        key = canonical_event_id(outcome["event_id"])
        self._entries.pop(key, None)
        self._entries[key] = Sent(
            outcome["order_id"],
            partition,
            outcome.get("message_id"),
            outcome.get("recipient_domain"),
            outcome.get("trace_id"),
            traceparent,
            outcome["event_id"],
        )
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
            metrics.FEEDBACK_INDEX_EVICTED.inc()
        metrics.FEEDBACK_INDEX_ENTRIES.set(len(self._entries))
