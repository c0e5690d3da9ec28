"""The SMTP side of ``ordermail feedback``: the MX (or relay transport) of the return-path domain.

Only addresses at that domain are accepted as recipients (it relays nothing), at most a few per
message. Each message is read in a worker thread (a large DSN must not stall the other
connections) and answered only once its records are on Kafka: 250 when settled (published, or
classified and dropped), 451 when it should come again. A DSN may carry the whole original
e-mail, PDF included: the message is held in memory only while it is read, never stored or
logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from consumer.feedback.handling import TryLater
from consumer.observability import metrics
from delivery.feedback.inbound import Inbound, read_inbound

if TYPE_CHECKING:
    from consumer.feedback.handling import FeedbackHandler
    from delivery.return_path import ReturnPath

__all__ = [
    "MAX_LINES",
    "MAX_RECEIVING",
    "MAX_RECIPIENTS",
    "MAX_SESSIONS",
    "ReportReceiver",
    "start_smtp_receiver",
]

log = logging.getLogger("ordermail.feedback")
MAX_RECIPIENTS = 10  # one report names one e-mail's return path
MAX_SESSIONS = 16  # x the size limit (and aiosmtpd's per-line overhead): memory at worst
MAX_LINES = 50_000  # a DSN with the whole e-mail returned (base64 PDF) has a few thousand
MAX_RECEIVING = 4  # messages read at once (DATA), whatever the number of sessions


class ReportReceiver:
    """aiosmtpd handler: RCPT checks the domain, DATA reads and settles the report."""

    def __init__(self, handler: FeedbackHandler, return_path: ReturnPath, complaints_local_part: str) -> None:
        self._handler = handler
        self._return_path = return_path
        self._complaints = complaints_local_part.lower()
        # Reading a report costs memory and CPU out of proportion to its size (the ``email``
        # package keeps every line): two at a time, whatever the number of sessions.
        self._reading = asyncio.Semaphore(2)
        # Receiving one does too: aiosmtpd keeps an object per line read (~35 MiB for 1 MiB of
        # short lines), before any check of ours can run. Four messages at a time, not sessions.
        self.receiving = asyncio.Semaphore(MAX_RECEIVING)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain != self._return_path.domain.lower():
            return "550 5.7.1 Relaying denied: only the return-path domain is served here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        # Only addresses that can carry a report we would believe: a genuine token (bounces), or
        # the feedback-loop mailbox (complaints carry their token inside). Nobody else gets to
        # send a message to be read.
        local_part = address.rpartition("@")[0].lower()
        if local_part != self._complaints and self._return_path.parse(address) is None:
            metrics.FEEDBACK_DROPPED.labels("smtp", "unsigned").inc()
            return "550 5.1.1 No such return path"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        arrived_at = time.monotonic()
        data = envelope.original_content or b""
        if data.count(b"\n") > MAX_LINES:  # a report is short; this many lines is an attack on memory
            metrics.FEEDBACK_DROPPED.labels("smtp", "too_many_lines").inc()
            return "250 OK: not a report about one of our e-mails, dropped"
        inbound = await self._read(data, list(envelope.rcpt_tos))
        if inbound.dropped is not None:
            metrics.FEEDBACK_DROPPED.labels("smtp", inbound.dropped).inc()
            log.info("report dropped", extra={"reason": inbound.dropped})
            return "250 OK: not a report about one of our e-mails, dropped"
        try:
            await self._handler.handle(inbound.reports, arrived_at)
        except TryLater:
            return "451 4.3.0 Try again later"
        return "250 OK"

    async def _read(self, data: bytes, recipients: list[str]) -> Inbound:
        """Read in a thread, holding one of the two places until the thread is done, even when
        the session ends first (a thread cannot be cancelled: its place stays taken meanwhile)."""
        await self._reading.acquire()
        try:
            reading = asyncio.ensure_future(
                asyncio.to_thread(read_inbound, data, recipients, self._return_path)
            )
        except BaseException:
            self._reading.release()
            raise
        reading.add_done_callback(lambda _: self._reading.release())
        return await asyncio.shield(reading)

    async def handle_exception(self, error: Exception) -> str:
        """Whatever went wrong is ours, and temporary: aiosmtpd's own answer would be a 500 (the
        relay would drop the report) naming the error."""
        log.error("report session failed", extra={"error.type": type(error).__name__})
        return "451 4.3.0 Try again later"


class _Bounded(SMTP):
    """At most ``limit`` sessions at once: each may hold a message of up to the size limit."""

    open_sessions = 0
    limit = MAX_SESSIONS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if _Bounded.open_sessions >= self.limit:
            metrics.FEEDBACK_DROPPED.labels("smtp", "too_many_sessions").inc()
            transport.write(b"421 4.7.0 Too many sessions, try again later\r\n")  # type: ignore[attr-defined]
            transport.close()
            self._refused = True
            return
        self._refused = False
        _Bounded.open_sessions += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not getattr(self, "_refused", True):
            _Bounded.open_sessions -= 1
            super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command hook
        """DATA, once one of the ``MAX_RECEIVING`` places is free: memory is bounded by the
        messages being read, not by the sessions open."""
        async with self.event_handler.receiving:
            await super().smtp_DATA(arg)


async def start_smtp_receiver(
    handler: FeedbackHandler,
    return_path: ReturnPath,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    complaints_local_part: str,
) -> asyncio.Server:
    receiver = ReportReceiver(handler, return_path, complaints_local_part)
    # aiosmtpd logs every command at INFO, and a sender's unrecognised command words at WARNING:
    # text we did not write. Its errors only (our handle_exception logs without values).
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    def session() -> Any:
        return _Bounded(
            receiver,
            data_size_limit=max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=return_path.domain,
            ident="ordermail feedback",
            timeout=120,  # per command; reading and settling a report may take a while
            command_call_limit=100,  # per command and session: a session cannot loop forever
        )

    return await asyncio.get_running_loop().create_server(session, host=host, port=port)
