"""``ordermail dlq redrive``: selected dead letters back to the input topic, once each.

Each is republished with its original key, value and headers (none in ordermail's namespace:
the service ignores those on the input topic anyway), to the input partition it was first
consumed from (where the service's ledger knows the event's outcomes; by key when that partition
is unknown or gone), plus ``ordermail.redrive.source`` (the dead letter's topic/partition/offset),
``ordermail.redrive.reason`` and ``ordermail.redrive.count`` (how many dead letters of the event
the selection holds). They are informational: the service gives a redriven record no privilege,
it is an input record like any other.

**Once each, even when interrupted.** Progress is the committed offset of a consumer group of its
own per selection (``<group>.redrive.<digest>``, the digest of the arguments as typed), and
records and progress are committed together in one Kafka transaction (``transactional.id`` =
that group): a redrive killed half-way leaves an open transaction that the next run of the same
command aborts (fences) before it resumes from the last committed position, so no reader with
``isolation.level=read_committed`` (the service) ever sees a record twice. Whatever the
selection, the input topic is read from the oldest selected dead letter's time on: a dead letter
already redriven, or whose event was redriven after it was written, is not published again. A
producer can write ``ordermail.redrive.source`` too: a record counts as a redrive only when its
key and value are those of the dead letter it names, so a forged one hides no dead letter whose
event is not on the input topic anyway.

**Never a second e-mail.** Before publishing, the outcome partitions of the selected events are
read from before the oldest event's time: an event that has a ``SENT`` outcome is not
republished. And the service itself does not skip a redriven event because of the ``REJECTED``
outcome that dead-lettered it (see ``Pipeline``).

Records whose reason the policy marks as never retryable (``NEVER_REDRIVE``) make the command
refuse, before anything is published, unless ``--force``.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from consumer.processing.policy import redrivable
from consumer.processing.records import OWN_PREFIX, readable_headers
from consumer.tools.dlq import DeadLetter, Selection, read_dead_letters
from consumer.tools.scan import Reader, ToolError, decoded, tool_producer_config
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA

if TYPE_CHECKING:
    from consumer.app.settings import Settings
    from schemas import Codec

__all__ = ["RedriveReport", "redrive", "redrive_group", "transactional_config"]

_SKEW_MS = 10 * 60 * 1000  # clocks of producers and brokers may differ this much
_TRANSACTION_TIMEOUT_MS = 60_000  # librdkafka's default


def redrive_group(settings: Settings, selection: Selection) -> str:
    return f"{settings.group_id}.redrive.{selection.digest()}"


@dataclass
class RedriveReport:
    group: str
    selected: int = 0
    published: int = 0
    already_sent: int = 0
    already_redriven: int = 0
    duplicates: int = 0
    without_record: int = 0
    resumed_from: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "resumed_from": {str(k): v for k, v in self.resumed_from.items()}}


@dataclass(frozen=True)
class _Plan:
    letter: DeadLetter
    publish: bool
    count: int


def redrive(
    settings: Settings,
    codec: Codec,
    selection: Selection,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    force: bool = False,
    past_retention: bool = False,
) -> RedriveReport:
    group = redrive_group(settings, selection)
    reader = Reader(settings, group_id=group)
    try:
        dlq = settings.dlq_topic
        reader.partitions(settings.input_topic)
        partitions = [
            p for p in reader.partitions(dlq) if selection.partitions is None or p in selection.partitions
        ]
        committed = reader.committed(dlq, partitions)
        report = RedriveReport(group, resumed_from=committed, dry_run=dry_run)
        starts = {p: committed.get(p, reader.bounds(dlq, p)[0]) for p in partitions}
        # Only the selected dead letters are kept whole; of the others, where they lie and what
        # record each holds (a digest) are enough.
        selected: list[DeadLetter] = []
        copies: dict[str, bytes] = {}
        last: dict[int, int] = {}
        # Per partition, the first dead letter written at or after --until: progress stops there,
        # since a later run may select it ("--until 1h" is another time at each run).
        later: dict[int, int] = {}
        for letter in read_dead_letters(reader, codec, starts):
            last[letter.partition] = max(last.get(letter.partition, -1), letter.offset)
            if letter.value is not None:
                copies[f"{dlq}/{letter.partition}/{letter.offset}"] = _digest(letter.key, letter.value)
            if selection.until_ms is not None and letter.timestamp_ms >= selection.until_ms:
                later.setdefault(letter.partition, letter.offset)
            if selection.matches(letter):
                selected.append(letter)
        if not force:
            _refuse_unfixable(selected)
        if not past_retention:
            _check_retention(reader, selected)
        redriven = _redriven(reader, codec, selected, copies)
        plans = _plan(selected, _sent_events(reader, codec, selected), redriven, report)
        report.reasons = dict(Counter(p.letter.reason for p in plans if p.publish))
        if dry_run:
            report.published = sum(p.publish for p in plans)
            return report
        ends = {p: min(max(starts[p], last.get(p, -1) + 1), later.get(p, 1 << 62)) for p in partitions}
        inputs = frozenset(reader.partitions(settings.input_topic))
        _publish(settings, reader, plans, ends=ends, rate=rate, report=report, inputs=inputs)
        return report
    finally:
        reader.close()


def _refuse_unfixable(selected: list[DeadLetter]) -> None:
    """Before anything is read or published: reasons a redrive cannot fix, and events this tool
    cannot decode (without their ids, neither "already sent" nor "one record per event" can be
    checked: an ``unknown_schema`` event needs its writer schema, see runbook 2)."""
    refused = Counter(d.reason for d in selected if not redrivable(d.reason))
    if refused:
        listed = ", ".join(f"{reason} x{n}" for reason, n in sorted(refused.items()))
        raise ToolError(
            f"refused: {sum(refused.values())} selected dead letters have reasons a redrive cannot "
            f"fix ({listed}); narrow the selection with --reason, or pass --force",
            code=2,
        )
    unread = sum(1 for d in selected if d.value is not None and d.event_id is None)
    if unread:
        raise ToolError(
            f"refused: {unread} selected dead letters hold events whose ids this tool cannot read "
            "(they do not decode here, or carry no valid event_id), so whether they were sent cannot "
            "be checked; set ORDERMAIL_WRITER_SCHEMA_DIR to their writer "
            "schemas (runbook 2), or pass --force",
            code=2,
        )


@dataclass(frozen=True)
class _Copy:
    """Where and when an event was last redriven to the input topic."""

    partition: int
    offset: int
    timestamp_ms: int

    def predates(self, letter: DeadLetter, input_topic: str) -> bool:
        """Whether ``letter`` was written after this copy was published: it is about this copy
        or a later record of the input partition (offsets, whatever the clocks of the operator's
        machine and the pods say), else, of another record, written later."""
        same_partition = letter.original_topic == input_topic and letter.original_partition == self.partition
        if same_partition and letter.original_offset is not None:
            return letter.original_offset >= self.offset
        return letter.timestamp_ms > self.timestamp_ms


@dataclass(frozen=True)
class _Redriven:
    """What earlier redrives (of any selection) put on the input topic, as the service reads it."""

    sources: frozenset[str]  # dead letters redriven: "topic/partition/offset"
    events: dict[str, _Copy]  # event id -> its latest redriven copy
    input_topic: str = ""


def _plan(
    selected: list[DeadLetter], sent: set[str], redriven: _Redriven, report: RedriveReport
) -> list[_Plan]:
    """One record per event; none of an event already sent, nor of one redriven since its dead
    letter was written (by this run or an earlier one): an event that failed again after a
    redrive has a newer dead letter, and that one is redriven."""
    report.selected = len(selected)
    counts = Counter(d.event_id for d in selected if d.event_id)
    published: set[str] = set()  # events this run republishes: one record each
    plans = []
    for letter in sorted(selected, key=lambda d: (d.partition, d.offset)):
        event_id = letter.event_id
        copy = redriven.events.get(event_id) if event_id is not None else None
        publish = True
        if letter.value is None:
            report.without_record += 1  # dead-lettered without key and value: nothing to republish
            publish = False
        elif event_id in sent:
            report.already_sent += 1
            publish = False
        elif f"{letter.topic}/{letter.partition}/{letter.offset}" in redriven.sources:
            report.already_redriven += 1
            publish = False
        elif event_id in published or (copy is not None and not copy.predates(letter, redriven.input_topic)):
            report.duplicates += 1
            publish = False
        if publish and event_id is not None:
            # Only a record republished makes later ones duplicates: a dead letter passed over
            # (already redriven) may be followed by the event's newer one, which is due.
            published.add(event_id)
        plans.append(_Plan(letter, publish, counts.get(event_id or "", 1)))
    return plans


def _redriven(
    reader: Reader, codec: Codec, selected: list[DeadLetter], copies: dict[str, bytes]
) -> _Redriven:
    """Reads the input topic from the oldest selected dead letter's time on (a redrive of it
    cannot be older) for records an earlier redrive published. Producers write that topic and
    can write any header: a record counts as a redrive only when it carries the key and value of
    a dead letter read here, and of the very one its ``ordermail.redrive.source`` names when that
    one was read (a resumed run reads from its progress on), so a forged header can make the
    redrive skip only a dead letter whose record is on the input topic anyway, for the service
    to process like any other. ``copies``: "topic/partition/offset"
    of each dead letter read -> :func:`_digest` of its key and value."""
    topic = reader.settings.input_topic
    if not selected:
        return _Redriven(frozenset(), {}, topic)
    records = frozenset(copies.values())
    since = min(d.timestamp_ms for d in selected) - _SKEW_MS
    starts = {p: reader.offset_at(topic, p, since) for p in reader.partitions(topic)}
    sources: set[str] = set()
    events: dict[str, _Copy] = {}
    for message in reader.read(topic, starts, f"reading {topic}"):
        # Any producer record may have a header name that is not UTF-8 (the redrive writes none).
        headers = dict(readable_headers(message) or [])
        raw = headers.get("ordermail.redrive.source")
        source = raw.decode("utf-8", "replace") if raw is not None else None
        digest = _digest(message.key(), message.value())
        # The dead letter it names, when read here (a resumed run reads from its progress on):
        # its very record; in any case the record of some dead letter read.
        if source is None or copies.get(source, digest) != digest or digest not in records:
            continue
        sources.add(source)
        event = decoded(codec, message.value() or b"", ORDER_SCHEMA)
        if event is None:
            continue
        event_id = event.get("event_id")
        if isinstance(event_id, str):
            copy = _Copy(
                int(message.partition() or 0), int(message.offset() or 0), int(message.timestamp()[1])
            )
            known = events.get(event_id)
            # Read in offset order per partition; of two partitions, the later in time stands.
            if known is None or known.partition == copy.partition or copy.timestamp_ms > known.timestamp_ms:
                events[event_id] = copy
    return _Redriven(frozenset(sources), events, topic)


def _digest(key: bytes | None, value: bytes | None) -> bytes:
    """Of a record's key and value, told apart (no key is not an empty key)."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(b"-" if part is None else b"+%d:" % len(part) + part)
    return digest.digest()


def _sent_events(reader: Reader, codec: Codec, selected: list[DeadLetter]) -> set[str]:
    """Event ids among the selected that have a ``SENT`` outcome (outcomes go to the partition
    number of the record they are about, which the dead letter's headers name)."""
    wanted = {d.event_id for d in selected if d.event_id}
    if not wanted:
        return set()
    outcome_topic = reader.settings.outcome_topic
    starts = {p: reader.offset_at(outcome_topic, p, t) for p, t in _outcomes_since(reader, selected).items()}
    sent = set()
    for message in reader.read(outcome_topic, starts, f"reading {outcome_topic}"):
        outcome = decoded(codec, message.value() or b"", OUTCOME_SCHEMA)
        if outcome is None:
            continue
        if outcome["status"] == "SENT" and outcome["event_id"] in wanted:
            sent.add(outcome["event_id"])
    return sent


def _outcomes_since(reader: Reader, selected: list[DeadLetter]) -> dict[int, int]:
    """Per outcome partition, the time from which the selected events' outcomes are read: the
    oldest event's (or dead letter's) time, less the clocks' skew."""
    outcome_partitions = set(reader.partitions(reader.settings.outcome_topic))
    earliest: dict[int, int] = {}
    for letter in selected:
        if letter.event_id is None or letter.original_partition not in outcome_partitions:
            continue
        occurred = letter.event.get("occurred_at") if letter.event else None
        since = min(
            letter.timestamp_ms, int(occurred.timestamp() * 1000) if occurred else letter.timestamp_ms
        )
        partition = letter.original_partition
        earliest[partition] = min(earliest.get(partition, since), since)
    return {p: t - _SKEW_MS for p, t in earliest.items()}


def _check_retention(reader: Reader, selected: list[DeadLetter]) -> None:
    """Refuses when retention already deleted outcomes or input records written since the oldest
    selected dead letter, in those dead letters' partitions: an event sent (or redriven) since its
    dead letter would then look due, and its customer would get a second e-mail. Dead letters
    are kept longer than outcomes (30 days against 7, as shipped)."""
    settings = reader.settings
    if not selected:
        return
    since = min(d.timestamp_ms for d in selected) - _SKEW_MS
    # Where the events' copies and outcomes land: their original partitions (any, by key, for a
    # dead letter of another topic or of a partition gone).
    inputs = reader.partitions(settings.input_topic)
    originals = {d.original_partition if d.original_topic == settings.input_topic else -1 for d in selected}
    partitions = sorted(p for p in originals if p is not None) if originals <= set(inputs) else inputs
    outcomes = set(reader.partitions(settings.outcome_topic))
    wanted = [(settings.input_topic, p) for p in partitions]
    wanted += [(settings.outcome_topic, p) for p in partitions if p in outcomes]
    gone = sorted({topic for topic, p in wanted if not reader.holds_since(topic, p, since)})
    if gone:
        oldest = datetime.fromtimestamp(min(d.timestamp_ms for d in selected) / 1000, UTC)
        raise ToolError(
            f"refused: {' and '.join(gone)} no longer hold records from before the oldest selected "
            f"dead letter ({oldest:%Y-%m-%dT%H:%M:%SZ}; retention deleted them), so whether its "
            "events were sent or redriven since cannot be checked; narrow the selection with "
            "--since, check the orders with `ordermail history`, or pass --past-retention",
            code=2,
        )


def _publish(
    settings: Settings,
    reader: Reader,
    plans: list[_Plan],
    *,
    ends: dict[int, int],
    rate: float | None,
    report: RedriveReport,
    inputs: frozenset[int] = frozenset(),
) -> None:
    """In transactions of about a second's worth of records, each with the progress it makes."""
    batch = max(1, int(rate)) if rate else 100
    producer = Producer(transactional_config(settings, report.group))
    try:
        _transactions(
            producer, settings, reader, plans, ends=ends, rate=rate, batch=batch, report=report, inputs=inputs
        )
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        fenced = isinstance(error, KafkaError) and error.code() == KafkaError._FENCED
        raise ToolError(
            "another redrive of the same selection took over (fenced)"
            if fenced
            else f"redrive stopped ({error.name() if isinstance(error, KafkaError) else type(exc).__name__});"
            " run the same command again to resume"
        ) from None


def transactional_config(settings: Settings, group: str) -> dict[str, Any]:
    """The service's producer settings, transactional. librdkafka refuses a ``message.timeout.ms``
    over ``transaction.timeout.ms``: the service's 5 minutes are cut to the transaction's minute,
    which also bounds how long a killed run's open transaction holds up the service's
    ``read_committed`` reads of the input partitions it wrote to."""
    return tool_producer_config(
        settings,
        **{
            "transactional.id": group,
            "linger.ms": 20,
            "transaction.timeout.ms": _TRANSACTION_TIMEOUT_MS,
            "message.timeout.ms": _TRANSACTION_TIMEOUT_MS,
        },
    )


def _transactions(
    producer: Producer,
    settings: Settings,
    reader: Reader,
    plans: list[_Plan],
    *,
    ends: dict[int, int],
    rate: float | None,
    batch: int,
    report: RedriveReport,
    inputs: frozenset[int],
) -> None:
    producer.init_transactions(30)  # aborts what an interrupted run of this selection left open
    # A run of the same selection that committed since this one read its progress: start over.
    if reader.committed(settings.dlq_topic, sorted(ends)) != report.resumed_from:
        raise ToolError("another redrive of the same selection ran meanwhile; run the command again")
    started = time.monotonic()
    position: dict[int, int] = {}
    for first in range(0, len(plans), batch):
        chunk = plans[first : first + batch]
        producer.begin_transaction()
        for plan in chunk:
            partition = plan.letter.partition
            position[partition] = min(plan.letter.offset + 1, ends[partition])  # not past --until
            if not plan.publish:
                continue
            if rate:  # paced: the n-th record not before n / rate seconds
                time.sleep(max(0.0, started + report.published / rate - time.monotonic()))
            _produce(producer, settings.input_topic, plan, settings.dlq_topic, inputs)
            report.published += 1
        _commit(producer, reader, settings.dlq_topic, position)
    # The rest of each partition (records outside the selection) is done too.
    producer.begin_transaction()
    _commit(producer, reader, settings.dlq_topic, ends)


def _commit(producer: Producer, reader: Reader, dlq: str, position: dict[int, int]) -> None:
    offsets = [TopicPartition(dlq, p, o) for p, o in sorted(position.items())]
    producer.send_offsets_to_transaction(offsets, reader.group_metadata(), 30)
    producer.commit_transaction(60)


def _produce(producer: Producer, topic: str, plan: _Plan, dlq: str, inputs: frozenset[int]) -> None:
    """To the partition the event was first consumed from (where the service's ledger knows its
    outcomes), not where the key hashes now: a producer may partition differently, and a topic
    may have grown. By key only when that partition is unknown or gone."""
    letter = plan.letter
    partition = -1  # librdkafka's "unassigned": the partitioner decides by key
    if letter.original_topic == topic and letter.original_partition in inputs:
        partition = letter.original_partition
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in letter.headers if not k.startswith(OWN_PREFIX)
    ]
    headers += [
        ("ordermail.redrive.source", f"{dlq}/{letter.partition}/{letter.offset}".encode()),
        ("ordermail.redrive.reason", letter.reason.encode()),
        ("ordermail.redrive.count", str(plan.count).encode()),
    ]
    while True:
        try:
            producer.produce(topic, key=letter.key, value=letter.value, headers=headers, partition=partition)
            return
        except BufferError:
            producer.poll(0.1)
