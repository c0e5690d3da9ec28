"""One event's journey: decode → validate → render + encrypt → compose → send → outcome.

Runs on the worker event loop. Events with the same key (``order_id``) run one after another
in arrival order; different keys run in parallel. Whatever happens, the event ends with an
acknowledged outcome (and a dead letter where the policy says so) before it counts as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import random
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from consumer.observability.metrics import ENCRYPT_SECONDS, RENDER_SECONDS, SEND_SECONDS, SUPPRESSED
from consumer.observability.telemetry import (
    SMTP_CODE,
    annotate_outcome,
    consumer_span_attributes,
    context_from,
    span_from_duration,
    step,
    tracer,
)
from consumer.processing.mail import receipt_message
from consumer.processing.outcomes import dead_letter_headers, outcome_for
from consumer.processing.policy import Action, Reason, action_for
from consumer.processing.ports import PublishError
from consumer.processing.records import plausible_id
from consumer.processing.retry import RetrySchedule, RetryState, epoch_ms
from delivery import (
    DkimError,
    DkimSigner,
    SendError,
    SendResult,
    message_id_for,
)
from delivery.headers import ComposeError
from delivery.remote import FetchError, FetchPolicy, fetch_all
from delivery.return_path import ReturnPath
from rendering import RenderError
from rendering.documents import safe_filename
from schemas import ORDER_SCHEMA, DecodeError, InvalidEvent, SchemaRegistryUnavailable, validate_order
from schemas.validation import is_order_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.processing.ports import Fetched, Known, Publisher, Renderer, Sender
    from consumer.processing.records import Inbound
    from rendering import RenderedMail
    from schemas import Codec, DeliveryOutcome, DeliveryStatus, OrderCompleted

__all__ = ["LET_GO", "Done", "LetGo", "Pipeline", "PipelineConfig"]

log = logging.getLogger("ordermail.pipeline")
# A SENT outcome's reason when the relay accepted the e-mail and what followed failed (the outcome
# as built could not be published): delivered all the same, never dead-lettered or sent again.
OUTCOME_UNCONFIRMED = "outcome_unconfirmed"
REGISTRY_RETRIES_S = (1.0, 2.0, 4.0)  # pauses before asking the schema registry again


@dataclass(frozen=True)
class PipelineConfig:
    mail_from: str
    message_domain: str
    group_id: str
    send_attempts: int = 4  # quick tries in process, per pass
    retry_backoff_s: float = 0.5
    max_attachment_bytes: int = 7 * 1024 * 1024
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    max_throttle_waits: int = 30  # then a throttled send counts as a transient failure
    dkim: DkimSigner | None = None
    return_path: ReturnPath | None = None  # None: the envelope sender is mail_from
    fetch_policy: FetchPolicy | None = None  # None: events may not carry remote attachments
    # Events holding fetched documents at once (each up to max_attachment_bytes, until rendered).
    max_fetching: int = 4


@dataclass(frozen=True)
class Done:
    """An event's acknowledged outcome and where it landed in the outcome partition."""

    outcome: DeliveryOutcome
    outcome_offset: int
    dead_lettered: bool = False
    span_id: str | None = None  # of the event's consumer span, for the log line


class LetGo(enum.Enum):
    """A deferred record let go before it was due (its partition revoked, or shutting down): it
    did not run, and must never be committed past, so whoever owns the partition next runs it."""

    LET_GO = "let go"


LET_GO = LetGo.LET_GO


class _Stop(Exception):
    """Ends processing early with a classified outcome."""

    def __init__(self, reason: Reason, **known: Any) -> None:
        super().__init__(reason)
        self.reason: Reason = reason
        self.known = known


@dataclass
class _Ids:
    """The event's ids as soon as they are decoded, so that every outcome of a decodable event,
    valid or not, carries them (None: the outcome falls back to a surrogate and the record key)."""

    event_id: str | None = None
    order_id: str | None = None
    # Set once the relay has accepted the e-mail: from then on, whatever fails settles as SENT.
    delivered: DeliveryOutcome | None = None
    done: Done | None = None  # set once the outcome is acknowledged: nothing is left to settle

    def take(self, record: Any) -> None:
        event_id, order_id = plausible_id(record.get("event_id")), record.get("order_id")
        if event_id is not None:  # (an invalid event's id may be anything, an e-mail address too)
            self.event_id = event_id
        if isinstance(order_id, str) and is_order_id(order_id):
            self.order_id = order_id


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        codec: Codec,
        renderer: Renderer,
        smtp: Sender,
        publisher: Publisher,
        *,
        handled_as: Callable[[Inbound, str], Known | None] = lambda _inbound, _event_id: None,
        remember: Callable[[Inbound, DeliveryOutcome, int], None] = lambda _inbound, _outcome, _at: None,
        suppressed: Callable[[str], bool] = lambda _address: False,
    ) -> None:
        """``handled_as``: what the ledger knows of the event's earlier outcomes (a redelivery or
        a copy): the latest (``SENT`` never replaced), the input offset it was for, its position,
        time and Message-ID. An input record is skipped when its event was ``SENT``, or when this
        very record (same offset) is ``DEFERRED`` (the retry topic has it; a copy is processed:
        its deferral may have run out where this process cannot see, on another member); a
        deferred pass when it was ``SENT`` or an outcome of its input record at or after the
        pass's due time stands (this pass or a later one settled; the ``DEFERRED`` that queued it
        is older); a resend once that very resend was sent. One ``REJECTED`` or ``FAILED`` is
        processed again (a redrive after a fix is never skipped for the outcome that
        dead-lettered it), and only when the very record of that outcome (same offset: a
        redelivery) fails again for good is the repeated outcome and dead letter left out; a copy
        at another offset (a redrive) always gets its outcome and dead letter. ``remember`` is
        told each acknowledged outcome (and its offset) before the next record of the same key
        starts, so a copy of an event that has just been sent (a redrive racing a redelivery) is
        recognised too. ``suppressed``: whether the suppression list holds the address (a valid
        order's): such an order is neither rendered nor sent, ``REJECTED suppressed``."""
        self._handled_as = handled_as
        self._suppressed = suppressed
        self._remember = remember
        self._config = config
        self._codec = codec
        self._renderer = renderer
        self._smtp = smtp
        self._publisher = publisher
        self._key_tails: dict[bytes, asyncio.Future[None]] = {}
        self._fetching = asyncio.Semaphore(config.max_fetching)

    async def process(
        self,
        inbound: Inbound,
        on_done: Callable[[Inbound, Done | LetGo | None], None],
        given_up: asyncio.Event | None = None,
    ) -> None:
        """Processes one record, then calls ``on_done`` once its outcome is acknowledged (with
        None when the record had been handled before and was skipped, ``LET_GO`` when it was a
        deferred record let go before it was due). A deferred record waits for its due time
        before it queues behind its key: waiting, it holds up nothing else, not even its own
        order's records. ``given_up`` is set (on the loop thread) once the partition the record
        was fetched under is given up (revoked, lost, shutting down): waiting, or yet to wait,
        the record is let go, uncommitted, for whoever owns the partition next."""
        if inbound.retry is not None and await self._given_up_before_due(inbound.retry, given_up):
            on_done(inbound, LET_GO)
            return
        key = inbound.key or b""
        previous = self._key_tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key_tails[key] = mine
        try:
            if previous is not None:
                await previous
            done = await self._settled(inbound)
            if done is not None:
                self._remember(inbound, done.outcome, done.outcome_offset)
            on_done(inbound, done)
        finally:
            mine.set_result(None)
            if self._key_tails.get(key) is mine:
                del self._key_tails[key]

    async def _settled(self, inbound: Inbound) -> Done | None:
        """Whatever goes wrong with one record ends as an outcome and a dead letter for it; only
        a broker that does not acknowledge (not the record's fault) gets past: the service then
        stops without committing, and the record is redelivered."""
        ids = _Ids()
        try:
            return await self._process(inbound, ids)
        except PublishError as error:
            if not error.record_level:
                raise
            log.error("record refused by the broker at %s/%s", inbound.partition, inbound.offset)
            reason: Reason = "publish_refused"
        except SchemaRegistryUnavailable:
            # Every event would be rejected the same way until it answers: the service stops
            # (exit 1) without committing past the record, which is redelivered, not dead-lettered.
            log.error("schema registry unavailable at %s/%s", inbound.partition, inbound.offset)
            raise
        except Exception as exc:  # noqa: BLE001 — a bug must not wedge the partition: dead-letter, keep going
            _log_unexpected(exc, inbound)
            reason = "internal_error"
        if ids.done is not None:  # acknowledged already: what failed after it changes nothing
            return ids.done
        if ids.delivered is not None:  # the customer has the e-mail: never dead-letter it
            return await self._settle_delivered(inbound, ids.delivered)
        return await self._last_resort(inbound, ids, reason)

    async def _settle_delivered(self, inbound: Inbound, sent: DeliveryOutcome) -> Done:
        """The relay accepted the e-mail, then its outcome could not be published as built (a bug,
        a record-level refusal): the event is ``SENT`` all the same, reason ``outcome_unconfirmed``,
        without a dead letter, so neither a redelivery nor a redrive e-mails the customer again.
        When the full outcome fails again, the plainest ``SENT`` one goes."""
        full: DeliveryOutcome = {**sent, "reason": OUTCOME_UNCONFIRMED}
        plain = outcome_for(
            inbound,
            event_id=sent["event_id"],
            order_id=sent["order_id"],
            status="SENT",
            reason=OUTCOME_UNCONFIRMED,
            attempt=sent["attempt"],
            message_id=sent.get("message_id"),  # a resend is recognised by it
        )
        try:
            return Done(full, await self._publisher.publish_outcome(full, inbound.origin.partition))
        except PublishError as error:
            if not error.record_level:
                raise
        except Exception as exc:  # noqa: BLE001 — the plainest outcome next
            _log_unexpected(exc, inbound)
        return Done(plain, await self._publisher.publish_outcome(plain, inbound.origin.partition))

    async def _last_resort(self, inbound: Inbound, ids: _Ids, reason: Reason) -> Done:
        """The plainest outcome and dead letter there are. When the dead-letter topic refuses the
        record itself, it gets one without the producer's headers, then one without key and value
        (its headers say where the original lies)."""
        outcome = outcome_for(
            inbound, event_id=ids.event_id, order_id=ids.order_id, status="REJECTED", reason=reason, attempt=1
        )
        group = self._config.group_id
        for foreign, omit_record in ((True, False), (False, False), (False, True)):
            headers = dead_letter_headers(
                inbound, status="REJECTED", reason=reason, group_id=group, foreign=foreign
            )
            try:
                await self._publisher.publish_dead_letter(inbound, headers, omit_record=omit_record)
                break
            except PublishError as error:
                if not error.record_level or omit_record:
                    raise
        offset = await self._publisher.publish_outcome(outcome, inbound.origin.partition)
        return Done(outcome, offset, dead_lettered=True)

    async def _process(self, inbound: Inbound, ids: _Ids) -> Done | None:
        with tracer().start_as_current_span(
            f"process {inbound.topic}",
            context=context_from(inbound.headers),
            kind=SpanKind.CONSUMER,
            attributes=consumer_span_attributes(inbound, self._config.group_id),
            record_exception=False,  # exception texts may quote event data
        ) as span:
            done = await self._handle(inbound, ids)
            annotate_outcome(span, done.outcome if done else None)
            context = span.get_span_context()
            return (
                replace(done, span_id=format(context.span_id, "016x")) if done and context.is_valid else done
            )

    async def _handle(self, inbound: Inbound, ids: _Ids) -> Done | None:
        retry = inbound.retry
        attempts = retry.attempts if retry else 0
        try:
            with step("decode"):
                order = await self._decoded(inbound, ids)
            known = self._handled_as(inbound, order["event_id"])
            message_id = _message_id(order["event_id"], inbound.resend, self._config.message_domain)
            if _handled_before(inbound, known, message_id):
                return None
            self._check_suppression(order)
            async with self._fetching if order.get("attachments") else contextlib.nullcontext():
                fetched = await self._fetch(order)  # bytes held until rendered: a bounded few
                mail = self._within_size(await self._render(order, fetched))
            facts = _mail_facts(order, mail, message_id)  # once per event
            data = self._compose(order, mail, facts["message_id"])
            # Built before sending: once the relay has the e-mail, nothing but publishing is left,
            # and a failure of that settles as SENT (``_settle_delivered``), never as a dead letter.
            sent = outcome_for(
                inbound,
                event_id=order["event_id"],
                order_id=order["order_id"],
                status="SENT",
                reason="resend" if inbound.resend is not None else None,
                attempt=attempts,
                **facts,
            )
            result, attempts = await self._send(order, data, attempts, facts)
            delivered: DeliveryOutcome = {
                **sent,
                "attempt": attempts,
                "smtp_code": result.code,
                "send_ms": round(result.send_ms),
            }
            ids.delivered = delivered  # from here on, nothing but publishing is left
        except _Stop as stop:
            # The same record failing again for good (a redelivery): its earlier outcome and dead
            # letter stand. Any other record of the event (a redriven copy) gets its own, or a
            # redrive that fails again would leave no trace.
            # (before 0960b71 an invalid event's outcome carried a surrogate id: either may be there)
            retrying = action_for(stop.reason) in {Action.RETRY, Action.THROTTLE}
            if not retrying and any(
                self._redelivered(inbound, self._handled_as(inbound, i))
                for i in (ids.event_id, inbound.surrogate_event_id())
                if i
            ):
                return None
            return await self._finish_failed(inbound, ids, stop, retry)
        ids.done = Done(delivered, await self._publisher.publish_outcome(delivered, inbound.origin.partition))
        return ids.done

    @staticmethod
    def _redelivered(inbound: Inbound, known: Known | None) -> bool:
        """Whether the ledger's outcome was for this very input record (a deferred pass shares
        its input record's offset with every other pass: ``_handled_before`` tells those)."""
        if inbound.origin.topic != inbound.topic:
            return False
        return known is not None and known.offset is not None and known.offset == inbound.origin.offset

    async def _given_up_before_due(self, retry: RetryState, given_up: asyncio.Event | None) -> bool:
        """Waits until the deferred record is due (nothing else is held up meanwhile)."""
        wait_s = min(max(0.0, retry.due_ms / 1000 - time.time()), max(self._config.retry.delays_s, default=0))
        if given_up is None:
            given_up = asyncio.Event()  # never set: its partition is never given up
        if given_up.is_set():
            return True
        try:
            await asyncio.wait_for(given_up.wait(), timeout=wait_s)
        except TimeoutError:
            return False
        return True

    async def _decoded(self, inbound: Inbound, ids: _Ids) -> OrderCompleted:
        """A writer schema the registry must be asked for is fetched in a thread (the loop serves
        every other event meanwhile). A registry that does not answer is not the record's fault:
        it is asked again a few times, then the error goes up (see ``_settled``)."""
        if self._codec.resolves_locally(inbound.value or b""):
            return self._decode(inbound, ids)
        for pause_s in REGISTRY_RETRIES_S:
            try:
                return await asyncio.to_thread(self._decode, inbound, ids)
            except SchemaRegistryUnavailable:
                await asyncio.sleep(pause_s)
        return await asyncio.to_thread(self._decode, inbound, ids)

    def _decode(self, inbound: Inbound, ids: _Ids) -> OrderCompleted:
        try:
            record: Any = self._codec.decode(inbound.value or b"", ORDER_SCHEMA)
        except SchemaRegistryUnavailable:
            raise
        except DecodeError as error:
            raise _Stop(error.reason) from None
        ids.take(record)
        if inbound.malformed:  # our own headers on the retry topic, unreadable: dead-lettered
            raise _Stop("malformed_headers")
        try:
            validate_order(record)
        except InvalidEvent as error:
            raise _Stop(error.reason) from None
        order: OrderCompleted = record
        return order

    def _check_suppression(self, order: OrderCompleted) -> None:
        """Before anything is fetched or rendered: a suppressed address costs no work. Nothing of
        the address is logged or traced; the outcome carries its domain, as a SENT one would."""
        if self._suppressed(order["customer"]["email"]):
            SUPPRESSED.inc()
            raise _Stop("suppressed", recipient_domain=_recipient_domain(order))

    async def _render(self, order: OrderCompleted, fetched: Fetched) -> RenderedMail:
        """Renders and encrypts the order's documents and the fetched ones, in a render worker
        (parsing and encrypting a fetched PDF is CPU work on hostile bytes: it is bounded by the
        render timeout too)."""
        queued = time.perf_counter()
        try:
            async with self._renderer.reserved() as render:
                # The events in flight share the workers: the wait is a span of its own.
                span_from_duration("wait for render worker", (time.perf_counter() - queued) * 1000)
                with step("render") as span:
                    mail = await render(order, fetched)
                    span.set_attributes(
                        {
                            "ordermail.template_set": mail.template_set,
                            "ordermail.render.engine": mail.engine,
                            "ordermail.attachments": len(mail.attachments),
                            "ordermail.pages": mail.pages,
                            "ordermail.attachment.bytes": _total_bytes(mail),
                        }
                    )
                    span_from_duration("encrypt", mail.encrypt_ms)  # it ran in the worker process
        except (RenderError, FetchError) as error:
            raise _Stop(error.reason) from None
        RENDER_SECONDS.labels(engine=mail.engine).observe(mail.render_ms / 1000)
        ENCRYPT_SECONDS.observe(mail.encrypt_ms / 1000)
        return mail

    async def _fetch(self, order: OrderCompleted) -> Fetched:
        """The event's remote attachments (see ``delivery/remote.py``), named, not yet opened:
        few, within the message's byte budget and one deadline for all."""
        remote = order.get("attachments") or []
        if not remote:
            return ()
        policy = self._config.fetch_policy
        if policy is None:
            raise _Stop("attachment_forbidden")  # no host is allowed: nothing may be fetched
        with step("fetch attachments") as span:
            span.set_attribute("ordermail.attachments.fetched", len(remote))
            try:
                bodies = await fetch_all(
                    [item["url"] for item in remote],
                    policy,
                    max_total_bytes=self._config.max_attachment_bytes,
                )
            except FetchError as error:
                raise _Stop(error.reason) from None
        names = (
            safe_filename(item.get("filename") or f"document-{n}.pdf") for n, item in enumerate(remote, 1)
        )
        return tuple(zip(names, bodies, strict=True))

    def _within_size(self, mail: RenderedMail) -> RenderedMail:
        """All attachments together, rendered and fetched, must fit the relay's message limit."""
        if _total_bytes(mail) > self._config.max_attachment_bytes:
            raise _Stop("attachment_too_large", attachment_bytes=_total_bytes(mail))
        return mail

    def _compose(self, order: OrderCompleted, mail: RenderedMail, message_id: str) -> bytes:
        try:
            data = receipt_message(
                order,
                mail,
                sender=self._config.mail_from,
                message_domain=self._config.message_domain,
                message_id=message_id,
            )
        except ComposeError as error:
            raise _Stop(error.reason) from None
        if self._config.dkim is not None:
            try:
                data = self._config.dkim.sign(data)
            except DkimError:
                raise _Stop("dkim_failed") from None
        return data

    async def _send(
        self, order: OrderCompleted, data: bytes, attempts: int, facts: dict[str, Any]
    ) -> tuple[SendResult, int]:
        """Quick tries with backoff; returns the result and the total attempts so far."""
        recipient = order["customer"]["email"]
        tries = throttled = 0
        while True:
            try:
                with step("smtp send", kind=SpanKind.CLIENT) as span:
                    sender = self._envelope_sender(order, attempts + tries + 1)
                    result = await self._smtp.send(data, sender=sender, recipient=recipient)
                    span.set_attribute(SMTP_CODE, result.code)
                SEND_SECONDS.observe(result.send_ms / 1000)
                return result, attempts + tries + 1
            except SendError as error:
                action = action_for(error.reason)
                if action is Action.THROTTLE and throttled < self._config.max_throttle_waits:
                    throttled += 1  # the relay asks us to slow down: wait, it is not the event's fault
                    await self._smtp.cool_down()
                    continue
                tries += 1
                if action not in {Action.RETRY, Action.THROTTLE} or tries >= self._config.send_attempts:
                    raise _Stop(
                        error.reason, smtp_code=error.code, attempt=attempts + tries, **facts
                    ) from None
                await asyncio.sleep(_backoff(self._config.retry_backoff_s, tries))

    def _envelope_sender(self, order: OrderCompleted, attempt: int) -> str:
        """``mail_from``, or the VERP address naming this event's attempt (bounces trace back)."""
        if self._config.return_path is None:
            return self._config.mail_from
        return (
            self._config.return_path.address(order["event_id"], attempt, order["customer"]["email"])
            or self._config.mail_from
        )

    async def _finish_failed(
        self, inbound: Inbound, ids: _Ids, stop: _Stop, retry: RetryState | None
    ) -> Done:
        action = action_for(stop.reason)
        known = dict(stop.known)
        attempt = known.pop("attempt", retry.attempts if retry else 0) or 1
        occurred_at = datetime.now(UTC)
        deferral = (
            self._config.retry.next(retry, attempt, epoch_ms(occurred_at))
            if action in {Action.RETRY, Action.THROTTLE}
            else None
        )
        rejected = action in {Action.REJECT, Action.SUPPRESS}
        status: DeliveryStatus = "REJECTED" if rejected else "DEFERRED" if deferral else "FAILED"
        outcome = outcome_for(
            inbound,
            event_id=ids.event_id,
            order_id=ids.order_id,
            status=status,
            reason=stop.reason,
            attempt=attempt,
            occurred_at=occurred_at,
            **known,
        )
        dead_lettered = deferral is None and action not in {Action.FAIL, Action.SUPPRESS}
        if deferral is not None:
            headers = [
                *inbound.foreign_headers(),
                *inbound.origin.headers(),
                *deferral.headers(),
                *inbound.resend_headers(),
            ]
            await self._publisher.publish_retry(inbound, headers)
        elif dead_lettered:
            headers = dead_letter_headers(
                inbound, status=status, reason=stop.reason, group_id=self._config.group_id
            )
            await self._publisher.publish_dead_letter(inbound, headers)
        offset = await self._publisher.publish_outcome(outcome, inbound.origin.partition)
        return Done(outcome, offset, dead_lettered=dead_lettered)


def _handled_before(inbound: Inbound, known: Known | None, message_id: str) -> bool:
    """Whether the ledger's outcome means this record's work is done (see ``Pipeline``). A
    resend asks for one more e-mail: skipped only once that very e-mail (``message_id``) was sent."""
    if known is None:
        return False
    if inbound.resend is not None:
        return known.status == "SENT" and known.message_id == message_id
    if inbound.retry is None:
        return known.status == "SENT" or (
            known.status == "DEFERRED" and known.offset == inbound.origin.offset
        )
    if known.status == "SENT":
        return True
    # The pass waited until its due time by the clock of whoever ran it, which stamped its outcome;
    # the same input record's (another record's chain of passes, a copy's, says nothing of this one).
    return (
        known.offset == inbound.origin.offset
        and known.occurred_ms is not None
        and known.occurred_ms >= inbound.retry.due_ms
    )


def _log_unexpected(exc: Exception, inbound: Inbound) -> None:
    # The exception's text may quote event data: log its type and where, never its message.
    frames = traceback.extract_tb(exc.__traceback__)[::-1][:6]
    where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)
    log.error("unexpected %s at %s/%s in %s", type(exc).__name__, inbound.partition, inbound.offset, where)


def _recipient_domain(order: OrderCompleted) -> str:
    """What an outcome says of the address: its domain only."""
    return order["customer"]["email"].rpartition("@")[2].lower()


def _mail_facts(order: OrderCompleted, mail: RenderedMail, message_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "recipient_domain": _recipient_domain(order),
        "attachment_sha256": hashlib.sha256(mail.pdf).hexdigest(),  # the main document
        "attachment_bytes": _total_bytes(mail),
        "attachment_count": len(mail.attachments),
        "render_ms": round(mail.render_ms + mail.encrypt_ms),
    }


def _message_id(event_id: str, resend: int | None, domain: str) -> str:
    """A resend (``ordermail resend``) gets a Message-ID of its own: it is a new e-mail."""
    return message_id_for(event_id if resend is None else f"{event_id}.resend-{resend}", domain)


def _total_bytes(mail: RenderedMail) -> int:
    return sum(len(attachment.data) for attachment in mail.attachments)


def _backoff(base_s: float, attempt: int) -> float:
    """Exponential with full jitter, so many deferred sends do not retry in lockstep."""
    return random.uniform(0, base_s * 2 ** (attempt - 1))
