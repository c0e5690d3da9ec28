"""The poll loop against a fake consumer, turned by hand with a clock of our own: backpressure,
periodic and revoke commits, take-over and shutdown in milliseconds (the integration and chaos
suites cover the same against a real broker)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from consumer.app.assembly import Parts
from consumer.app.settings import Settings
from consumer.kafka.offsets import format_metadata
from consumer.kafka.publisher import AcknowledgementWatch
from consumer.kafka.service import Service
from consumer.processing.pipeline import LET_GO, Done, LetGo
from consumer.processing.ports import PublishError
from consumer.processing.records import Inbound

INPUT, RETRY = "orders", "orders.retry"
TP = (INPUT, 0)
NO_COMMIT = -1001  # librdkafka's OFFSET_INVALID: the group never committed this partition


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return f"ORD-{self._offset}".encode()

    def value(self) -> bytes:
        return b"order"

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def error(self) -> None:
        return None


@dataclass
class _Topic:
    partitions: dict[int, object]
    error: None = None


@dataclass
class _Metadata:
    topics: dict[str, _Topic]


class FakeConsumer:
    """Enough of confluent-kafka's Consumer: records per partition, pauses, commits whose
    asynchronous answers arrive with the next poll, and rebalances the test triggers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.records: dict[tuple[str, int], list[FakeMessage]] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.committed_offsets: dict[tuple[str, int], tuple[int, str]] = {}
        self.commits: list[tuple[bool, dict[tuple[str, int], tuple[int, str]]]] = []
        self.paused: set[tuple[str, int]] = set()
        self.assigned: set[tuple[str, int]] = set()
        self.closed = False
        self._due: list[Callable[[], None]] = []  # callbacks served by the next poll

    def publish(self, tp: tuple[str, int], count: int, first: int = 0) -> None:
        self.records.setdefault(tp, []).extend(FakeMessage(*tp, first + i) for i in range(count))
        self.positions.setdefault(tp, first)

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def rebalance(self, kind: str, tps: set[tuple[str, int]]) -> None:
        partitions = [TopicPartition(t, p) for t, p in sorted(tps)]
        self._due.append(lambda: self.callbacks[kind](self, partitions))

    def poll(self, timeout: float) -> FakeMessage | None:
        due, self._due = self._due, []
        for callback in due:
            callback()
        for tp in sorted(self.assigned - self.paused):
            waiting = [m for m in self.records.get(tp, []) if m.offset() >= self.positions.get(tp, 0)]
            if waiting:
                self.positions[tp] = waiting[0].offset() + 1
                return waiting[0]
        return None

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition] | None:
        positions = {(tp.topic, tp.partition): (tp.offset, tp.metadata or "") for tp in offsets}
        self.commits.append((asynchronous, positions))
        self.committed_offsets.update(positions)
        answer = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous:
            self._due.append(lambda: self.config["on_commit"](None, answer))
            return None
        return answer

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        found = []
        for tp in partitions:
            offset, metadata = self.committed_offsets.get((tp.topic, tp.partition), (NO_COMMIT, ""))
            found.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata))
        return found

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """OFFSET_BEGINNING: 0 (all start there); OFFSET_END: one past the last record."""
        return [
            TopicPartition(tp.topic, tp.partition, 0 if tp.offset == OFFSET_BEGINNING else self._end(tp))
            for tp in partitions
        ]

    def _end(self, tp: TopicPartition) -> int:
        return max((m.offset() + 1 for m in self.records.get((tp.topic, tp.partition), [])), default=0)

    def list_topics(self, timeout: float) -> _Metadata:
        return _Metadata({name: _Topic(dict.fromkeys(range(2))) for name in self.config["topics"]})

    def close(self) -> None:
        self.closed = True


class FakeLedger:
    def __init__(self) -> None:
        self.loads: list[tuple[dict[tuple[str, int], int], dict[int, int]]] = []
        self.forgotten: list[set[tuple[str, int]]] = []

    def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, 50)

    def outcomes_since(self, topic: str, offsets: dict[int, int]) -> dict[int, int]:
        return {}  # no record read: the commit's own position stands

    def load(self, starts: dict[tuple[str, int], int], ends: dict[int, int]) -> dict[tuple[str, int], int]:
        self.loads.append((starts, ends))
        return dict.fromkeys(starts, 0)

    def forget(self, partitions: set[tuple[str, int]], *, held: set[int]) -> None:
        self.forgotten.append({tp for tp in partitions if tp[1] not in held})

    def close(self) -> None:
        pass


class FakePipeline:
    """Finishes events on the event loop, each with the next outcome offset, once let through
    (or as ``not_run`` says: skipped, None, or let go)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started: list[int] = []
        self.outcome_offset = 100
        self.error: Exception | None = None
        self.not_run: dict[int, LetGo | None] = {}

    async def process(
        self,
        inbound: Inbound,
        on_done: Callable[[Inbound, Done | LetGo | None], None],
        given_up: asyncio.Event | None = None,
    ) -> None:
        self.started.append(inbound.offset)
        if not self.gate.is_set():
            await asyncio.to_thread(self.gate.wait)
        if self.error is not None:
            raise self.error
        if inbound.offset in self.not_run:
            on_done(inbound, self.not_run[inbound.offset])
            return
        self.outcome_offset += 1
        outcome: Any = {"event_id": "e", "order_id": "o", "status": "SENT", "reason": None, "attempt": 1}
        on_done(inbound, Done(outcome, self.outcome_offset))


@dataclass
class _Closable:
    size: int = 2
    failing_to_start_s: float = 0.0
    idle_connections: int = 0
    closed: list[str] = field(default_factory=list)

    @property
    def stats(self) -> Any:
        return type("Stats", (), {"recycled": 0})()

    def close(self) -> int:
        self.closed.append("closed")
        return 0


@dataclass
class _FakePublisher(_Closable):
    """The outcome publisher's part: its close, and a real watch on the broker's acknowledgements."""

    acknowledgements: AcknowledgementWatch = field(default_factory=AcknowledgementWatch)


@dataclass
class _AsyncClosable:
    """The SMTP pool's part: its close is a coroutine."""

    idle_connections: int = 0
    closed: list[str] = field(default_factory=list)

    async def close(self) -> None:
        self.closed.append("closed")


class Clock:
    """Our own time: moves on only when the test moves it, and a little each time it is read (so
    the service's bounded waits, such as a revoke's, end even when nothing else moves it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@dataclass
class Harness:
    service: Service
    consumer: FakeConsumer
    pipeline: FakePipeline
    ledger: FakeLedger
    clock: Clock
    closables: list[_Closable | _AsyncClosable]

    def turn_until(
        self, condition: Callable[[], bool], *, step_s: float = 0.01, limit_s: float = 5.0
    ) -> None:
        """Turns the loop (advancing our clock by ``step_s`` each time) until ``condition``;
        events finish on the real event loop thread, so real time is bounded too."""
        deadline = time.monotonic() + limit_s
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            self.clock.now += step_s
            self.service.run_once(self.clock.now)

    def last_commit(self, tp: tuple[str, int] = TP) -> tuple[bool, int, str] | None:
        """(asynchronous, offset, metadata) of the partition's latest commit; None before any."""
        found = [
            (asynchronous, *positions[tp])
            for asynchronous, positions in self.consumer.commits
            if tp in positions
        ]
        return found[-1] if found else None


@pytest.fixture
def harness() -> Iterator[Harness]:
    settings = Settings(
        ORDERMAIL_INPUT_TOPIC=INPUT,
        ORDERMAIL_RETRY_TOPIC=RETRY,
        ORDERMAIL_HEALTH_PORT=0,
        ORDERMAIL_MAX_IN_FLIGHT=4,
        ORDERMAIL_COMMIT_INTERVAL_S=1.0,
        ORDERMAIL_DRAIN_TIMEOUT_S=5.0,
    )
    consumers: list[FakeConsumer] = []

    def factory(config: dict[str, Any]) -> Any:
        config["topics"] = [
            settings.input_topic,
            settings.outcome_topic,
            settings.dlq_topic,
            settings.retry_topic,
        ]
        consumers.append(FakeConsumer(config))
        return consumers[-1]

    pipeline, ledger, clock = FakePipeline(), FakeLedger(), Clock()
    render_pool, smtp = _Closable(), _AsyncClosable()
    publisher = _FakePublisher(acknowledgements=AcknowledgementWatch(clock))
    # Parts holds the real classes (no protocols): the codec is unused, the others are fakes.
    parts = Parts(None, render_pool, smtp, publisher, ledger, pipeline)  # type: ignore[arg-type]
    service = Service(settings, parts, consumer_factory=factory, clock=clock)
    service.start()
    harness = Harness(service, consumers[0], pipeline, ledger, clock, [render_pool, smtp, publisher])
    yield harness
    pipeline.gate.set()
    service.close()


def _assign(
    h: Harness, records: int = 0, committed: tuple[int, str] | None = None, tp: tuple[str, int] = TP
) -> None:
    if committed is not None:
        h.consumer.committed_offsets[tp] = committed
    h.consumer.publish(tp, records, first=committed[0] if committed else 0)
    h.consumer.rebalance("on_assign", {tp})


def test_a_partition_without_a_commit_is_anchored_before_any_event_runs(harness: Harness) -> None:
    h = harness
    _assign(h, records=3)
    h.turn_until(lambda: len(h.pipeline.started) == 3)
    first = next(c for c in h.consumer.commits if TP in c[1])
    assert first == (True, {TP: (0, format_metadata(50))})  # the outcome partition's end, first
    assert h.ledger.loads == [({}, {0: 50})]  # nothing to read


def test_take_over_reads_the_ledger_from_the_committed_outcome_position(harness: Harness) -> None:
    h = harness
    _assign(h, records=2, committed=(7, format_metadata(42)))
    h.turn_until(lambda: len(h.pipeline.started) == 2)
    assert h.ledger.loads == [({TP: 42}, {0: 50})]
    assert h.pipeline.started == [7, 8]  # from the committed offset on, without an anchor first
    assert all(positions[TP][0] >= 7 for _, positions in h.consumer.commits)


def test_backpressure_pauses_when_full_and_resumes_at_half(harness: Harness) -> None:
    h = harness
    h.pipeline.gate.clear()
    _assign(h, records=10, committed=(0, format_metadata(0)))
    h.turn_until(lambda: TP in h.consumer.paused and len(h.pipeline.started) == 4)
    for _ in range(20):  # paused: nothing more is fetched however often the loop turns
        h.clock.now += 0.01
        h.service.run_once(h.clock.now)
    assert h.pipeline.started == [0, 1, 2, 3]
    h.pipeline.gate.set()  # resumed at half, paused at full again, until all ten are through
    h.turn_until(lambda: len(h.pipeline.started) == 10 and TP not in h.consumer.paused)
    assert h.pipeline.started == list(range(10))


def test_commits_carry_the_highest_contiguous_offset_and_the_outcome_position(harness: Harness) -> None:
    h = harness
    _assign(h, records=3, committed=(0, format_metadata(0)))
    h.turn_until(lambda: len(h.pipeline.started) == 3)
    h.turn_until(lambda: (h.last_commit() or (True, -1, ""))[1] == 3, step_s=0.5)  # a periodic commit
    assert h.last_commit() == (True, 3, format_metadata(104))  # outcomes 101..103: next is 104


def test_a_revoked_partition_waits_for_its_events_and_commits_synchronously(harness: Harness) -> None:
    h = harness
    h.pipeline.gate.clear()
    _assign(h, records=3, committed=(0, format_metadata(0)))
    h.turn_until(lambda: len(h.pipeline.started) == 3)
    h.pipeline.gate.set()  # they finish on the event loop while the poll thread is in on_revoke
    h.consumer.rebalance("on_revoke", {TP})
    h.service.run_once(h.clock.now)
    assert h.last_commit() == (False, 3, format_metadata(104))


def test_shutdown_drains_commits_and_closes_everything(harness: Harness) -> None:
    h = harness
    h.pipeline.gate.clear()
    _assign(h, records=2, committed=(0, format_metadata(0)))
    h.turn_until(lambda: len(h.pipeline.started) == 2)
    h.service.stop()
    h.pipeline.gate.set()
    h.service.drain()  # as run() does once stopped: waits for the events, then commits
    assert h.service.close() == 0
    assert h.last_commit() == (False, 2, format_metadata(103))
    assert h.consumer.closed
    assert all(c.closed for c in h.closables)


def test_readiness_says_so_while_render_workers_fail_to_start(harness: Harness) -> None:
    h = harness
    pool: _Closable = h.closables[0]  # type: ignore[assignment]
    _assign(h)
    h.turn_until(lambda: h.service.not_ready() is None)
    pool.size, pool.failing_to_start_s = 1, 2.0  # a start failed, the next may succeed: still ready
    assert h.service.not_ready() is None
    pool.size, pool.failing_to_start_s = 0, 31.0
    assert h.service.not_ready() == "render workers fail to start (31 s, 0 ready): see the log"


def test_readiness_says_so_while_the_broker_acknowledges_no_outcome(harness: Harness) -> None:
    h = harness
    watch: AcknowledgementWatch = h.closables[2].acknowledgements  # type: ignore[union-attr]
    _assign(h)
    h.turn_until(lambda: h.service.not_ready() is None)
    watch.sent()
    watch.sent()
    h.clock.now += 5  # a leader election's wait: still ready
    assert h.service.not_ready() is None
    h.clock.now += 10
    assert "acknowledged none of 2 outcome records for 15 s" in (h.service.not_ready() or "")
    assert "min.insync.replicas" in (h.service.not_ready() or "")
    watch.acknowledged()  # the cluster answers again
    assert h.service.not_ready() is None


def test_nothing_new_is_taken_in_while_kafka_acknowledges_nothing(harness: Harness) -> None:
    h = harness
    watch: AcknowledgementWatch = h.closables[2].acknowledgements  # type: ignore[union-attr]
    _assign(h)
    h.turn_until(lambda: TP in h.consumer.assigned and TP not in h.consumer.paused)  # taken over
    watch.sent()  # an outcome the cluster does not acknowledge
    h.clock.now += 6
    h.turn_until(lambda: TP in h.consumer.paused)
    h.consumer.publish(TP, 3)
    for _ in range(20):  # paused: however often the loop turns, nobody new is e-mailed
        h.clock.now += 0.01
        h.service.run_once(h.clock.now)
    assert h.pipeline.started == []
    watch.acknowledged()  # the cluster answers again
    h.turn_until(lambda: len(h.pipeline.started) == 3)


def test_a_broker_that_does_not_acknowledge_stops_the_loop_without_committing_past_it(
    harness: Harness,
) -> None:
    h = harness
    h.pipeline.error = PublishError("outcomes: _MSG_TIMED_OUT", record_level=False)
    _assign(h, records=1)  # anchored first: there is a commit to look at
    h.turn_until(lambda: h.service.not_ready() is not None and "aborted" in (h.service.not_ready() or ""))
    h.clock.now += 10  # a periodic commit would be due
    h.service.run_once(h.clock.now)
    assert h.service.not_ready() == "stopped: processing aborted: PublishError"
    committed = [positions[TP][0] for _, positions in h.consumer.commits if TP in positions]
    assert committed
    assert all(offset == 0 for offset in committed)  # never past the event


def test_a_retry_partition_is_taken_over_and_commits_its_outcome_positions(harness: Harness) -> None:
    """Deferred passes sent before a crash are recognised by the next owner only if it reads
    the outcomes since the retry partition's commit, and the commit says where they start."""
    h = harness
    _assign(h, records=2, committed=(3, format_metadata(20)), tp=(RETRY, 0))
    h.turn_until(lambda: len(h.pipeline.started) == 2)
    assert h.ledger.loads == [({(RETRY, 0): 20}, {0: 50})]
    h.turn_until(lambda: (h.last_commit((RETRY, 0)) or (True, -1, ""))[1] == 5, step_s=0.5)
    assert h.last_commit((RETRY, 0)) == (True, 5, format_metadata(103))  # outcomes 101, 102


def test_a_let_go_record_is_never_committed_past_a_skipped_one_is(harness: Harness) -> None:
    h = harness
    h.pipeline.not_run = {0: None, 1: LET_GO}
    _assign(h, records=3, committed=(0, format_metadata(0)), tp=(RETRY, 0))
    h.turn_until(lambda: len(h.pipeline.started) == 3)
    h.turn_until(lambda: (h.last_commit((RETRY, 0)) or (True, -1, ""))[1] == 1, step_s=0.5)
    h.turn_until(lambda: h.pipeline.outcome_offset == 101)  # offset 2 done
    for _ in range(10):  # five commit intervals: a position that moved would be committed
        h.clock.now += 0.5
        h.service.run_once(h.clock.now)
    assert h.last_commit((RETRY, 0)) == (True, 1, format_metadata(101))  # never past the let-go record
    assert h.service._tracker.in_flight() == 0  # and nothing waits for it


def test_the_ledger_forgets_a_partition_number_once_neither_of_its_partitions_is_held(
    harness: Harness,
) -> None:
    h = harness
    _assign(h, committed=(0, format_metadata(0)))
    _assign(h, committed=(0, format_metadata(0)), tp=(RETRY, 0))
    h.turn_until(lambda: {TP, (RETRY, 0)} <= h.consumer.assigned and not h.service._handover.busy)
    h.consumer.rebalance("on_revoke", {TP})
    h.turn_until(lambda: len(h.ledger.forgotten) == 1)
    h.consumer.rebalance("on_revoke", {(RETRY, 0)})
    h.turn_until(lambda: len(h.ledger.forgotten) == 2)
    assert h.ledger.forgotten == [set(), {(RETRY, 0)}]  # the notes of number 0 go with the last


def test_retry_partitions_numbered_past_the_inputs_are_not_taken_over(harness: Harness) -> None:
    """Deferred passes go to their input partition's number: the ones past it get none."""
    h = harness
    _assign(h, records=1, committed=(0, format_metadata(0)), tp=(RETRY, 2))  # the input has 2
    h.turn_until(lambda: len(h.pipeline.started) == 1)
    assert h.ledger.loads == []
