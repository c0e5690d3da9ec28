"""One event's journey: decode → validate → render + encrypt → compose → send → outcome.

Runs on the worker event loop. Events with the same key (``order_id``) run one after another
in arrival order; different keys run in parallel. Whatever happens, the event ends with an
acknowledged outcome (and a dead letter where the policy says so) before it counts as done.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pikepdf
from opentelemetry.trace import SpanKind

from consumer.metrics import ENCRYPT_SECONDS, RENDER_SECONDS, SEND_SECONDS
from consumer.outcomes import dead_letter_headers, outcome_for
from consumer.policy import Action, action_for
from consumer.retry import RetrySchedule, RetryState
from consumer.telemetry import (
    SMTP_CODE,
    annotate_outcome,
    consumer_span_attributes,
    context_from,
    span_from_duration,
    step,
    tracer,
)
from delivery import (
    Attachment,
    DkimError,
    DkimSigner,
    SendError,
    SendResult,
    compose,
    message_id_for,
)
from delivery.remote import FetchError, FetchPolicy, fetch_attachment
from rendering import RenderedAttachment, RenderError, encrypt_pdf
from rendering.documents import safe_filename
from schemas import DecodeError, InvalidEvent, validate_order
from schemas.codec import load_schema

if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.outcomes import Inbound, OutcomePublisher
    from consumer.render_pool import RenderPool
    from delivery import SmtpPool
    from rendering import RenderedMail
    from schemas import Codec, DeliveryOutcome, DeliveryStatus, OrderCompleted

__all__ = ["Done", "Pipeline", "PipelineConfig"]

log = logging.getLogger("ordermail.pipeline")
ORDER_SCHEMA = load_schema("order_completed.avsc")


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
    fetch_policy: FetchPolicy | None = None  # None: events may not carry remote attachments
    password_for: Callable[[OrderCompleted], str] | None = None  # for fetched attachments


@dataclass(frozen=True)
class Done:
    """An event's acknowledged outcome and where it landed in the outcome partition."""

    outcome: DeliveryOutcome
    outcome_offset: int
    dead_lettered: bool = False
    span_id: str | None = None  # of the event's consumer span, for the log line


class _Stop(Exception):
    """Ends processing early with a classified outcome."""

    def __init__(self, reason: str, **known: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.known = known


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        codec: Codec,
        renderer: RenderPool,
        smtp: SmtpPool,
        publisher: OutcomePublisher,
        *,
        is_handled: Callable[[Inbound, str], bool] = lambda _inbound, _event_id: False,
    ) -> None:
        self._is_handled = is_handled
        self._config = config
        self._codec = codec
        self._renderer = renderer
        self._smtp = smtp
        self._publisher = publisher
        self._key_tails: dict[bytes, asyncio.Future[None]] = {}
        self._released: dict[tuple[str, int], asyncio.Event] = {}

    def release(self, partitions: set[tuple[str, int]]) -> None:
        """Lets go of deferred records still waiting in these partitions (revoked, or shutting
        down): uncommitted, they come back to whoever owns the partition next. Loop thread only."""
        for tp in partitions:
            self._released.pop(tp, asyncio.Event()).set()

    async def process(self, inbound: Inbound, on_done: Callable[[Inbound, Done | None], None]) -> None:
        """Processes one record, then calls ``on_done`` once its outcome is acknowledged (with
        None when the record had been handled before and was skipped)."""
        key = inbound.key or b""
        previous = self._key_tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key_tails[key] = mine
        try:
            if previous is not None:
                await previous
            on_done(inbound, await self._process(inbound))
        finally:
            mine.set_result(None)
            if self._key_tails.get(key) is mine:
                del self._key_tails[key]

    async def _process(self, inbound: Inbound) -> Done | None:
        retry = RetryState.of(inbound)
        if retry is not None and await self._released_before_due(inbound, retry):
            return None
        with tracer().start_as_current_span(
            f"process {inbound.topic}",
            context=context_from(inbound.headers),
            kind=SpanKind.CONSUMER,
            attributes=consumer_span_attributes(inbound, self._config.group_id),
            record_exception=False,  # exception texts may quote event data
        ) as span:
            done = await self._handle(inbound, retry)
            annotate_outcome(span, done.outcome if done else None)
            context = span.get_span_context()
            return (
                replace(done, span_id=format(context.span_id, "016x")) if done and context.is_valid else done
            )

    async def _handle(self, inbound: Inbound, retry: RetryState | None) -> Done | None:
        order: OrderCompleted | None = None
        attempts = retry.attempts if retry else 0
        try:
            with step("decode"):
                order = self._decode(inbound)
            if self._is_handled(inbound, order["event_id"]):
                return None
            mail = self._within_size(await self._with_fetched(order, await self._render(order)))
            result, attempts = await self._send(order, mail, attempts)
        except _Stop as stop:
            if order is None and self._is_handled(inbound, inbound.surrogate_event_id()):
                return None
            return await self._finish_failed(inbound, order, stop, retry)
        except Exception as exc:  # noqa: BLE001 — a bug must not wedge the partition: dead-letter, keep going
            _log_unexpected(exc, inbound)
            return await self._finish_failed(inbound, order, _Stop("internal_error", attempt=attempts), retry)
        outcome = outcome_for(
            inbound,
            event_id=order["event_id"],
            order_id=order["order_id"],
            status="SENT",
            reason=None,
            attempt=attempts,
            smtp_code=result.code,
            send_ms=round(result.send_ms),
            **_mail_facts(order, mail, self._config.message_domain),
        )
        return Done(outcome, await self._publisher.publish_outcome(outcome, inbound.origin.partition))

    async def _released_before_due(self, inbound: Inbound, retry: RetryState) -> bool:
        """Waits until the deferred record is due (nothing else is held up meanwhile)."""
        wait_s = min(max(0.0, retry.due_ms / 1000 - time.time()), max(self._config.retry.delays_s, default=0))
        released = self._released.setdefault((inbound.topic, inbound.partition), asyncio.Event())
        try:
            await asyncio.wait_for(released.wait(), timeout=wait_s)
        except TimeoutError:
            return False
        return True

    def _decode(self, inbound: Inbound) -> OrderCompleted:
        try:
            record: Any = self._codec.decode(inbound.value or b"", ORDER_SCHEMA)
            validate_order(record)
        except (DecodeError, InvalidEvent) as error:
            raise _Stop(error.reason) from None
        order: OrderCompleted = record
        return order

    async def _render(self, order: OrderCompleted) -> RenderedMail:
        queued = time.perf_counter()
        try:
            async with self._renderer.reserved() as render:
                # The events in flight share the workers: the wait is a span of its own.
                span_from_duration("wait for render worker", (time.perf_counter() - queued) * 1000)
                with step("render") as span:
                    mail = await render(order)
                    span.set_attributes(
                        {
                            "ordermail.template_set": mail.template_set,
                            "ordermail.attachments": len(mail.attachments),
                            "ordermail.pages": mail.pages,
                            "ordermail.attachment.bytes": _total_bytes(mail),
                        }
                    )
                    span_from_duration("encrypt", mail.encrypt_ms)  # it ran in the worker process
        except RenderError as error:
            raise _Stop(error.reason) from None
        RENDER_SECONDS.observe(mail.render_ms / 1000)
        ENCRYPT_SECONDS.observe(mail.encrypt_ms / 1000)
        return mail

    async def _with_fetched(self, order: OrderCompleted, mail: RenderedMail) -> RenderedMail:
        """Adds the event's remote attachments, fetched now (see ``delivery/remote.py``) and
        encrypted with the customer's password like the rendered ones."""
        remote = order.get("attachments") or []
        if not remote:
            return mail
        policy, password_for = self._config.fetch_policy, self._config.password_for
        if policy is None or password_for is None:
            raise _Stop("attachment_forbidden")  # no host is allowed: nothing may be fetched
        fetched = []
        with step("fetch attachments") as span:
            span.set_attribute("ordermail.attachments.fetched", len(remote))
            try:
                password = password_for(order)
                for number, item in enumerate(remote, start=1):
                    data = await fetch_attachment(item["url"], policy)
                    encrypted, pages = await asyncio.to_thread(_encrypt_fetched, data, password)
                    name = safe_filename(item.get("filename") or f"document-{number}.pdf")
                    fetched.append(RenderedAttachment(name, encrypted, pages, encrypted=True))
            except (FetchError, RenderError) as error:
                raise _Stop(error.reason) from None
        return replace(mail, attachments=(*mail.attachments, *fetched))

    def _within_size(self, mail: RenderedMail) -> RenderedMail:
        """All attachments together, rendered and fetched, must fit the relay's message limit."""
        if _total_bytes(mail) > self._config.max_attachment_bytes:
            raise _Stop("attachment_too_large", attachment_bytes=_total_bytes(mail))
        return mail

    async def _send(self, order: OrderCompleted, mail: RenderedMail, attempts: int) -> tuple[SendResult, int]:
        """Quick tries with backoff; returns the result and the total attempts so far."""
        recipient = order["customer"]["email"]
        data = compose(
            sender=self._config.mail_from,
            recipient=recipient,
            subject=mail.subject,
            text=mail.text_body,
            html=mail.html_body,
            attachments=[Attachment(a.filename, a.data) for a in mail.attachments],
            message_id=message_id_for(order["event_id"], self._config.message_domain),
            date=datetime.now(UTC),
        )
        if self._config.dkim is not None:
            try:
                data = self._config.dkim.sign(data)
            except DkimError:
                raise _Stop("dkim_failed") from None
        tries = throttled = 0
        while True:
            try:
                with step("smtp send", kind=SpanKind.CLIENT) as span:
                    result = await self._smtp.send(data, sender=self._config.mail_from, recipient=recipient)
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
                    facts = _mail_facts(order, mail, self._config.message_domain)
                    raise _Stop(
                        error.reason, smtp_code=error.code, attempt=attempts + tries, **facts
                    ) from None
                await asyncio.sleep(_backoff(self._config.retry_backoff_s, tries))

    async def _finish_failed(
        self, inbound: Inbound, order: OrderCompleted | None, stop: _Stop, retry: RetryState | None
    ) -> Done:
        action = action_for(stop.reason)
        known = dict(stop.known)
        attempt = known.pop("attempt", retry.attempts if retry else 0) or 1
        deferral = (
            self._config.retry.next(retry, attempt) if action in {Action.RETRY, Action.THROTTLE} else None
        )
        status: DeliveryStatus = (
            "REJECTED" if action is Action.REJECT else "DEFERRED" if deferral else "FAILED"
        )
        outcome = outcome_for(
            inbound,
            event_id=order["event_id"] if order else None,
            order_id=order["order_id"] if order else None,
            status=status,
            reason=stop.reason,
            attempt=attempt,
            **known,
        )
        if deferral is not None:
            headers = [*inbound.foreign_headers(), *inbound.origin.headers(), *deferral.headers()]
            await self._publisher.publish_retry(inbound, headers)
        elif action is not Action.FAIL:
            headers = dead_letter_headers(
                inbound, status=status, reason=stop.reason, group_id=self._config.group_id
            )
            await self._publisher.publish_dead_letter(inbound, headers)
        offset = await self._publisher.publish_outcome(outcome, inbound.origin.partition)
        return Done(outcome, offset, dead_lettered=deferral is None and action is not Action.FAIL)


def _log_unexpected(exc: Exception, inbound: Inbound) -> None:
    # The exception's text may quote event data: log its type and where, never its message.
    frames = traceback.extract_tb(exc.__traceback__)[::-1][:6]
    where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames)
    log.error("unexpected %s at %s/%s in %s", type(exc).__name__, inbound.partition, inbound.offset, where)


def _mail_facts(order: OrderCompleted, mail: RenderedMail, domain: str) -> dict[str, Any]:
    return {
        "message_id": message_id_for(order["event_id"], domain),
        "recipient_domain": order["customer"]["email"].rpartition("@")[2].lower(),
        "attachment_sha256": hashlib.sha256(mail.pdf).hexdigest(),  # the main document
        "attachment_bytes": _total_bytes(mail),
        "attachment_count": len(mail.attachments),
        "render_ms": round(mail.render_ms + mail.encrypt_ms),
    }


def _encrypt_fetched(data: bytes, password: str) -> tuple[bytes, int]:
    try:
        with pikepdf.open(BytesIO(data)) as document:
            pages = len(document.pages)
    except pikepdf.PdfError:
        raise FetchError("attachment_type", transient=False) from None
    return encrypt_pdf(data, password), pages


def _total_bytes(mail: RenderedMail) -> int:
    return sum(len(attachment.data) for attachment in mail.attachments)


def _backoff(base_s: float, attempt: int) -> float:
    """Exponential with full jitter, so many deferred sends do not retry in lockstep."""
    return random.uniform(0, base_s * 2 ** (attempt - 1))
