"""The poll loop: fetch, dispatch, commit what is done, pause when full, drain on shutdown.

One thread polls Kafka and never blocks on work; events run on a worker event loop in a
second thread (SMTP I/O) with rendering in worker processes. Everything the loop decides with
(offsets in flight, the breaker, pauses, the handover) belongs to the poll thread alone: finished
events come back through a :class:`~consumer.kafka.bridge.Bridge`, and the clock is passed in.
An offset is committed only when every earlier offset of its partition has an acknowledged
outcome. Commits are asynchronous (a broker that is away must not stall the loop), except the
last one before a partition is given up.

``Service`` is built from its parts (``consumer.app.assembly``) and a consumer factory, and
:meth:`Service.run_once` turns the loop once: tests drive it with a fake consumer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.kafka.breaker import DeadLetterBreaker
from consumer.kafka.bridge import Bridge, Crashed
from consumer.kafka.clients import (
    DELIVERY_TIMEOUT_S,
    check_topics,
    close_with_timeout,
    consumer_config,
    error_name,
)
from consumer.kafka.handover import Handover
from consumer.kafka.offsets import OffsetTracker, TopicPartitionKey
from consumer.kafka.suppressions import SuppressionError, check_compacted
from consumer.observability.health import HealthServer
from consumer.observability.metrics import (
    BREAKER_OPEN,
    DEAD_LETTERS,
    DEFERRALS,
    EVENTS,
    IN_FLIGHT,
    RENDER_WORKERS,
    RENDER_WORKERS_REPLACED,
    SKIPPED,
    SMTP_CONNECTIONS,
    KafkaStatistics,
)
from consumer.processing.pipeline import LET_GO, Done, LetGo
from consumer.processing.policy import DEPLOY_SUSPECT
from consumer.processing.records import Inbound
from consumer.processing.render_pool import settle_after_warm_up
from schemas import SchemaRegistryUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.app.assembly import Parts
    from consumer.app.settings import Settings

__all__ = ["Service"]

log = logging.getLogger("ordermail.service")
POLL_TIMEOUT_S = 0.1
HANDOVER_POLL_S = 0.01
COMMIT_ANSWER_S = 90.0
# Longer than a leader election after a broker dies (the controller fences it after 9 s),
# so a failover that heals by itself does not flap readiness; a cluster refusing writes does.
ACKNOWLEDGEMENT_STALL_S = 12.0
# Kafka counts as stalled when no outcome has been acknowledged for this long (healthy, the broker
# answers within milliseconds): no new event is taken in, as each would be an e-mail whose
# outcome cannot be recorded.
KAFKA_STALL_S = 5.0
# Failed worker starts are retried after 2, 4, 8, 16 s: failing for this long is no accident.
WORKERS_FAILING_S = 30.0


class Service:
    def __init__(
        self,
        settings: Settings,
        parts: Parts,
        *,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._parts = parts
        self._ledger, self._pipeline = parts.ledger, parts.pipeline
        self._consumer_factory = consumer_factory
        self._clock = clock
        self._bridge = Bridge()
        self._stopping = threading.Event()
        self._fatal: str | None = None
        self._tracker = OffsetTracker()
        self._paused: set[str] = set()  # topics whose partitions are paused
        self._assigned: set[TopicPartitionKey] = set()
        self._co_partitions = 0  # the input's partition count: retry partitions past it get no records
        # Per retry partition held: set (on the event loop) once it is given up, which lets go of
        # its deferred records waiting for their due time, including any dispatched just before.
        self._given_up: dict[TopicPartitionKey, asyncio.Event] = {}
        self._breaker = DeadLetterBreaker(
            max_share=settings.dlq_breaker_share,
            window=settings.dlq_breaker_window,
            min_events=settings.dlq_breaker_min_events,
        )
        self._subscribed = False
        self._commit_sent: float | None = None  # when the asynchronous commit awaiting its answer left
        self._next_takeover = 0.0
        self._next_commit = 0.0
        self._ever_assigned = False
        self._health: HealthServer | None = None
        self._kafka_statistics = KafkaStatistics()
        self._loop = asyncio.new_event_loop()
        self._worker = threading.Thread(target=self._loop.run_forever, name="worker-loop", daemon=True)
        # A partition taken back waits for its earlier events as long as their outcomes may wait for
        # the broker (the delivery timeout; then the publish fails and the service stops): with
        # the drain timeout alone, two brokers down for 30 s e-mailed 31 of 600 events twice.
        self._handover = Handover(
            parts.ledger,
            self._tracker,
            DELIVERY_TIMEOUT_S + settings.drain_timeout_s,
            retry_topic=settings.retry_topic,
        )
        self._consumer = self._consumer_factory(
            consumer_config(
                settings,
                **{
                    "statistics.interval.ms": 5000,
                    "stats_cb": self._kafka_statistics,
                    "error_cb": self._on_error,
                    "on_commit": self._on_commit,
                },
            )
        )

    def stop(self, *_: object) -> None:
        self._stopping.set()

    def run(self) -> int:
        """Runs until :meth:`stop` (or SIGTERM/SIGINT when installed); returns an exit code."""
        try:
            self.start()
            while not self._stopping.is_set():
                self.run_once(self._clock())
            self.drain()
        finally:
            unacknowledged = self.close()
        if unacknowledged:
            log.error("%d records unacknowledged at shutdown", unacknowledged)
        if self._fatal:
            log.error("stopped: %s", self._fatal)
            return 1
        return 0

    def start(self) -> None:
        """Starts the event loop thread and the probes, checks the topics and subscribes."""
        settings, parts = self._settings, self._parts
        RENDER_WORKERS.set_function(lambda: parts.render_pool.size)
        RENDER_WORKERS_REPLACED.set_function(lambda: parts.render_pool.stats.recycled)
        SMTP_CONNECTIONS.set_function(lambda: parts.smtp.idle_connections)
        self._worker.start()
        self._health = HealthServer(settings.health_port, self.not_ready) if settings.health_port else None
        self._co_partitions = check_topics(self._consumer, self._settings)
        if parts.suppressions is not None:  # loaded before any event is taken: /readyz says "starting"
            check_compacted(settings)
            try:
                parts.suppressions.load()
            except SuppressionError as error:
                raise SystemExit(f"suppression list: {error}") from None
            parts.suppressions.follow()
        self._consumer.subscribe(
            [settings.input_topic, settings.retry_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._subscribed = True
        self._next_commit = self._clock() + settings.commit_interval_s
        settle_after_warm_up()  # the service's own long-lived objects, as in the render workers
        log.info("consuming %s as group %s", settings.input_topic, settings.group_id)

    def close(self) -> int:
        """Stops the event loop and closes every part; returns the records left unacknowledged."""
        parts = self._parts
        if self._worker.is_alive():
            asyncio.run_coroutine_threadsafe(parts.smtp.close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._worker.join(timeout=5)
        unacknowledged = parts.publisher.close()
        parts.render_pool.close()
        self._ledger.close()
        if parts.suppressions is not None:
            parts.suppressions.close()
        if self._health:
            self._health.close()
        close_with_timeout(self._consumer, timeout_s=10)
        return unacknowledged

    def run_once(self, now: float) -> None:
        """One turn of the loop: fetch and dispatch one record, settle what finished, apply
        backpressure, take partitions over and commit when due."""
        message = self._consumer.poll(self._poll_timeout())
        if message is not None:
            self._handle(message)
        self._settle_finished()
        suppressions = self._parts.suppressions
        if suppressions is not None and suppressions.problem:  # a stale list must not go on deciding
            self._fail(suppressions.problem)
        if self._health:
            self._health.beat()
        self._apply_backpressure()
        if self._handover.waiting and now >= self._next_takeover:
            self._take_over(now)
        if now >= self._next_commit and not self._commit_awaited(now):
            self._commit(now=now)
            self._next_commit = now + self._settings.commit_interval_s

    def _poll_timeout(self) -> float:
        """Short polls until the first assignment and while partitions wait to be taken over:
        the handover runs from this loop, and an idle 100 ms poll would hold it (and start-up) up."""
        if not self._ever_assigned or self._handover.busy:
            return HANDOVER_POLL_S
        return POLL_TIMEOUT_S

    def _handle(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                self._fail(f"consumer fatal error {error.name()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error %s", error.name())
            return
        # ordermail.* headers are ours only where we wrote them: on the retry topic
        inbound = Inbound.from_message(message, trusted=message.topic() == self._settings.retry_topic)
        self._tracker.start((inbound.topic, inbound.partition), inbound.offset)
        given_up = self._given_up.get((inbound.topic, inbound.partition))
        future = asyncio.run_coroutine_threadsafe(
            self._pipeline.process(inbound, self._bridge.finished, given_up), self._loop
        )
        future.add_done_callback(self._bridge.crashed_if_failed)

    def _settle_finished(self, wait_s: float = 0.0) -> None:
        """Applies what the event loop finished since the last turn (waiting up to ``wait_s``
        for the first of it): the poll thread's own state changes only here."""
        for item in self._bridge.take(wait_s):
            if isinstance(item, Crashed):
                # Only a broker that does not acknowledge gets here (the pipeline settles everything
                # else per record): stop without committing past it, so the event is redelivered.
                self._fail(f"processing aborted: {item.error_type}")
            else:
                self._done(*item)

    def _done(self, inbound: Inbound, done: Done | LetGo | None) -> None:
        tp = (inbound.topic, inbound.partition)
        if done is LET_GO:
            self._tracker.let_go(tp, inbound.offset)
            return
        if done is None:  # handled before (redelivery)
            log.info(
                "already handled: skipped", extra={"partition": inbound.partition, "offset": inbound.offset}
            )
            SKIPPED.inc()
            self._tracker.finish(tp, inbound.offset)
            return
        outcome = done.outcome
        self._breaker.record(done.dead_lettered and outcome["reason"] in DEPLOY_SUSPECT)
        EVENTS.labels(outcome["status"], outcome["reason"] or "").inc()
        if done.dead_lettered:
            DEAD_LETTERS.inc()
        if outcome["status"] == "DEFERRED":
            DEFERRALS.inc()
        log.info(
            "outcome",
            extra={
                "trace_id": outcome.get("trace_id"),
                "span_id": done.span_id,
                "event_id": outcome["event_id"],
                "order_id": outcome["order_id"],
                "partition": inbound.partition,
                "offset": inbound.offset,
                "status": outcome["status"],
                "reason": outcome["reason"],
                "attempt": outcome["attempt"],
                "render_ms": outcome.get("render_ms"),
                "send_ms": outcome.get("send_ms"),
            },
        )
        # A deferred pass's outcome lies in the outcome partition of its retry partition's number.
        self._tracker.finish(tp, inbound.offset, done.outcome_offset)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._kafka_statistics.brokers_up = 0  # not ready now, not at the next statistics report
        if error.code() != KafkaError._TRANSPORT:  # connection churn: librdkafka reconnects by itself
            log.warning("kafka: %s", error.name())

    def _fail(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
        self._stopping.set()

    def not_ready(self) -> str | None:
        """None when ready for traffic, else the reason (for ``/readyz``)."""
        if self._fatal:
            return f"stopped: {self._fatal}"
        if self._breaker.open:
            return "dead-letter breaker open: too many recent events dead-lettered"
        if self._stopping.is_set():
            return "shutting down"
        return self._missing_part() or (None if self._subscribed else "starting")

    def _missing_part(self) -> str | None:
        """What the service cannot work without, missing: Kafka, or the render workers."""
        if self._kafka_statistics.brokers_up == 0:
            return "no connection to any Kafka broker"
        if (failing_s := self._parts.render_pool.failing_to_start_s) > WORKERS_FAILING_S:
            pool = self._parts.render_pool
            return f"render workers fail to start ({failing_s:.0f} s, {pool.size} ready): see the log"
        waiting, stalled_s = self._parts.publisher.acknowledgements.stalled()
        if stalled_s > ACKNOWLEDGEMENT_STALL_S:
            # librdkafka retries refused writes silently; only the wait shows. Work waits with it.
            return (
                f"Kafka has acknowledged none of {waiting} outcome records for {stalled_s:.0f} s "
                "(partitions below min.insync.replicas or without a leader); in-flight work waits"
            )
        return None

    def _apply_backpressure(self) -> None:
        """Pauses a topic's partitions when its events in flight reach the limit, resumes at half
        (hysteresis, so it does not flap). Deferred events waiting in memory have their own limit,
        so they never hold up new orders."""
        settings = self._settings
        if self._breaker.open:
            BREAKER_OPEN.set(1)
            if len(self._paused) < 2:
                log.error("dead-letter breaker open: consuming stopped until an operator intervenes")
                self._pause({settings.input_topic, settings.retry_topic})
            return
        limits = (
            (settings.input_topic, settings.max_in_flight),
            (settings.retry_topic, settings.max_retry_waiting),
        )
        # Events still running from partitions lost meanwhile are not counted in their topic's
        # in-flight figure: a stalled cluster must not let a new window in on top of them.
        stalled = self._kafka_stalled()
        for topic, limit in limits:
            in_flight = self._tracker.in_flight({tp for tp in self._assigned if tp[0] == topic})
            IN_FLIGHT.labels(topic).set(in_flight)
            if topic not in self._paused and (in_flight >= limit or stalled):
                self._pause({topic})
            elif topic in self._paused and in_flight <= limit // 2 and not stalled:
                self._resume({topic})

    def _kafka_stalled(self) -> bool:
        return self._parts.publisher.acknowledgements.stalled()[1] > KAFKA_STALL_S

    def _pause(self, topics: set[str]) -> None:
        partitions = [TopicPartition(t, p) for t, p in self._assigned if t in topics]
        if partitions:
            self._consumer.pause(partitions)
        self._paused |= topics
        log.info("paused", extra={"topics": sorted(topics), "in_flight": self._tracker.in_flight()})

    def _resume(self, topics: set[str]) -> None:
        self._paused -= topics
        self._set_paused({tp for tp in self._assigned if tp[0] in topics})
        log.info("resumed", extra={"topics": sorted(topics), "in_flight": self._tracker.in_flight()})

    def _set_paused(self, tps: set[TopicPartitionKey]) -> None:
        """Pauses each partition whose topic is paused or whose handover is not done, resumes the rest.
        Set explicitly either way: librdkafka keeps a pause flag across assignments."""
        held = self._handover.held
        stop = [TopicPartition(t, p) for t, p in tps if t in self._paused or (t, p) in held]
        run = [TopicPartition(t, p) for t, p in tps if t not in self._paused and (t, p) not in held]
        if stop:
            self._consumer.pause(stop)
        if run:
            self._consumer.resume(run)

    def _take_over(self, now: float) -> None:
        try:
            ready, anchors = self._handover.prepare(self._consumer, now)
        # Nothing consumed yet from those partitions: tried again soon.
        except (KafkaException, SchemaRegistryUnavailable) as exc:
            name = error_name(exc) if isinstance(exc, KafkaException) else "schema registry unavailable"
            log.warning("taking over partitions failed: %s", name)
            self._next_takeover = now + 1.0
            return
        self._set_paused(ready)
        self._commit(anchors, now=now)

    def _commit(
        self, tps: set[TopicPartitionKey] | None = None, *, wait: bool = False, now: float | None = None
    ) -> None:
        positions = self._tracker.committable(tps)
        if not positions:
            return
        offsets = [
            TopicPartition(t, p, offset, metadata=meta) for (t, p), (offset, meta) in positions.items()
        ]
        try:
            if wait:
                self._committed(self._consumer.commit(offsets=offsets, asynchronous=False))
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
                self._commit_sent = self._clock() if now is None else now
        except KafkaException as exc:  # the next commit retries; nothing is lost
            log.warning("commit failed: %s", error_name(exc))

    def _commit_awaited(self, now: float) -> bool:
        # librdkafka answers every commit, if only with a timeout; the limit is a safety net.
        return self._commit_sent is not None and now - self._commit_sent < COMMIT_ANSWER_S

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The answer to an asynchronous commit (served by ``poll``)."""
        self._commit_sent = None
        if error is not None:
            log.warning("commit failed: %s", error.name())
            return
        self._committed(partitions)

    def _committed(self, offsets: list[TopicPartition]) -> None:
        offsets = [tp for tp in offsets if tp.error is None]
        self._tracker.mark_committed({(tp.topic, tp.partition): tp.offset for tp in offsets})
        released = self._handover.anchored({(tp.topic, tp.partition) for tp in offsets})
        self._set_paused(released & self._assigned)

    def drain(self) -> None:
        """Stop fetching, let in-flight events finish (bounded), commit."""
        self._pause({self._settings.input_topic, self._settings.retry_topic})
        self._release(self._assigned)
        deadline = self._clock() + self._settings.drain_timeout_s
        while self._tracker.in_flight() and self._clock() < deadline and self._fatal is None:
            self._consumer.poll(0)  # keeps group membership alive while draining
            self._settle_finished(wait_s=POLL_TIMEOUT_S)  # wakes as soon as an event finishes
        left = self._tracker.in_flight()
        if left:
            log.warning("shutdown deadline reached with %d events in flight; they will be redelivered", left)
        self._commit(wait=True)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)  # now, so the pauses below apply to it
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= assigned
        self._given_up.update({tp: asyncio.Event() for tp in assigned if tp[0] == self._settings.retry_topic})
        self._handover.receive(self._taken_over(assigned), self._clock())
        self._next_takeover = 0.0
        self._ever_assigned = True
        self._set_paused(assigned)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._release(revoked)
        deadline = self._clock() + self._settings.drain_timeout_s
        while self._tracker.in_flight(revoked) and self._clock() < deadline:
            self._settle_finished(wait_s=min(0.1, max(0.0, deadline - self._clock())))
        if self._tracker.in_flight(revoked):
            log.warning("revoked partitions still had work in flight; it will be redelivered")
        self._commit(revoked, wait=True)
        self._forget(revoked)
        log.info("revoked %s", sorted(p for _, p in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._release(lost)
        self._forget(lost)

    def _taken_over(self, tps: set[TopicPartitionKey]) -> set[TopicPartitionKey]:
        """Partitions whose records may have been handled by an earlier owner: the input's, and
        the retry topic's that deferred passes go to (numbered as the input's)."""
        input_topic, retry_topic = self._settings.input_topic, self._settings.retry_topic
        return {(t, p) for t, p in tps if t == input_topic or (t == retry_topic and p < self._co_partitions)}

    def _release(self, tps: set[TopicPartitionKey]) -> None:
        """Deferred records waiting in memory for these partitions are let go (not committed)."""
        for tp in tps:
            given_up = self._given_up.pop(tp, None)
            if given_up is not None:
                self._loop.call_soon_threadsafe(given_up.set)

    def _forget(self, tps: set[TopicPartitionKey]) -> None:
        self._assigned -= tps
        self._handover.drop(tps)
        self._tracker.forget(tps)
        self._ledger.forget(tps, held={p for _, p in self._taken_over(self._assigned)})

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
