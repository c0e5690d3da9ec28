"""Postfix as the relay (``deploy/local/stack up --relay``), driven with plain aiosmtplib.

What later tests (and ``ordermail feedback``) rely on: STARTTLS verified against the stack's
certificate, the test domains delivered to Maildirs, ``refuse-`` refused at RCPT, ``bounce-``
accepted and then bounced by Postfix itself with an RFC 3464 DSN to the VERP envelope sender,
which the relay routes to the feedback port within seconds, honouring RET and NOTIFY. A bare
aiosmtpd server on that port stands in for ``ordermail feedback``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import queue
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.support import RelaySettings

pytestmark = pytest.mark.integration

DSN_WAIT_S = 15.0  # generous for a loaded machine; measured well under a second here


@dataclass(frozen=True)
class Report:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes
    received_at: float


class FeedbackListener:
    """An SMTP server on the relay's feedback port recording what Postfix delivers there."""

    def __init__(self, relay: RelaySettings) -> None:
        self._received: queue.Queue[Report] = queue.Queue()
        self._controller = Controller(self, hostname=relay.feedback_host, port=relay.feedback_port)

    def __enter__(self) -> FeedbackListener:
        try:
            self._controller.start()
        except OSError as error:
            pytest.fail(f"the relay's feedback port is taken (ordermail feedback running?): {error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, EmailMessage, policy=email.policy.default)
        report = Report(envelope.mail_from or "", list(envelope.rcpt_tos), message, raw, time.monotonic())
        self._received.put(report)
        return "250 2.0.0 received"

    def report_for(self, recipient: str, timeout_s: float = DSN_WAIT_S) -> Report:
        """The next report addressed to ``recipient``; reports for others (left over from an
        earlier run, say) are passed over."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                report = self._received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no report for {recipient} within {timeout_s}s") from None
            if recipient in report.recipients:
                return report


@pytest.fixture
def listener(relay: RelaySettings) -> Iterator[FeedbackListener]:
    with FeedbackListener(relay) as running:
        yield running


def _message(recipient: str, *, body: str = "A test receipt.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "orders@shop.example"
    message["To"] = recipient
    message["Subject"] = "relay test"
    message["Message-ID"] = f"<{uuid.uuid4()}@shop.example>"
    message.set_content(body)
    return message


def _send(
    relay: RelaySettings,
    message: EmailMessage,
    *,
    sender: str,
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
    start_tls: bool = True,
) -> str:
    """Sends over one fresh session (verified STARTTLS by default); the relay's reply to the data."""
    return asyncio.run(_session(relay, message, sender, list(mail_options), list(rcpt_options), start_tls))


async def _session(
    relay: RelaySettings,
    message: EmailMessage,
    sender: str,
    mail_options: list[str],
    rcpt_options: list[str],
    start_tls: bool,
) -> str:
    client = aiosmtplib.SMTP(
        hostname=relay.host,
        port=relay.port,
        start_tls=start_tls,
        tls_context=relay.tls_context() if start_tls else None,
        timeout=30,
    )
    await client.connect()
    protocol = client.protocol
    try:
        recipients = [str(message["To"])]
        _, reply = await client.sendmail(
            sender, recipients, message.as_bytes(), mail_options=mail_options, rcpt_options=rcpt_options
        )
        return reply
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
        # A TLS session's closing handshake outlives quit(); a loop that ended before it would
        # leave the socket open (a ResourceWarning, an error under filterwarnings, in a later test).
        # aiosmtplib offers no public close waiter: the protocol drops its transport once closed.
        async with asyncio.timeout(10):
            while protocol is not None and protocol.transport is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)


def _envelope_sender(relay: RelaySettings, recipient: str = "someone@customer.example") -> tuple[str, str]:
    """A VERP envelope sender as ``ordermail run`` builds one, and the event id it names."""
    event_id = str(uuid.uuid4())
    address = relay.return_path().address(event_id, 1, recipient)
    assert address is not None
    return address, event_id


def _per_recipient(dsn: Message) -> Message:
    """The (single) per-recipient block of a DSN's message/delivery-status part."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(part for part in dsn.walk() if part.get_content_type() == "message/delivery-status")
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) == 2, "per-message fields, then one recipient's"
    block = blocks[1]
    assert isinstance(block, Message)
    return block


def test_a_test_domain_address_lands_in_its_maildir_over_verified_starttls(
    relay: RelaySettings, wait_until: Callable[[Callable[[], bool], float], None]
) -> None:
    recipient = relay.address("delivered")
    sender, _ = _envelope_sender(relay)
    message = _message(recipient)

    assert _send(relay, message, sender=sender).startswith("2.0.0")

    wait_until(lambda: bool(relay.delivered(recipient)), 15)
    [delivered] = relay.delivered(recipient)
    assert delivered["Message-ID"] == message["Message-ID"]
    assert delivered["Return-Path"] == f"<{sender}>"
    assert re.search(r"\(using TLSv1\.[23] .*with ESMTPS", " ".join(delivered.get_all("Received", [])), re.S)


def test_the_relay_accepts_neither_plain_text_nor_an_unverified_certificate(relay: RelaySettings) -> None:
    recipient = relay.address("delivered")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        _send(relay, _message(recipient), sender=relay.mail_from, start_tls=False)
    assert refused.value.code == 530  # "Must issue a STARTTLS command first"
    # The stack's certificate is its own: the system's CAs do not vouch for it.
    # (smtplib here: aiosmtplib leaves the socket of a failed handshake for the loop to close.)
    with (
        smtplib.SMTP(relay.host, relay.port, timeout=30) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())
    assert relay.delivered(recipient) == []


def test_a_refuse_address_is_refused_at_rcpt_with_5_1_1(relay: RelaySettings) -> None:
    recipient = relay.address("refused")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        _send(relay, _message(recipient), sender=relay.mail_from)
    [error] = refused.value.recipients
    assert (error.code, error.message.split()[0]) == (550, "5.1.1")


def test_a_bounce_address_is_accepted_then_postfix_sends_a_dsn_to_the_verp_sender(
    relay: RelaySettings, listener: FeedbackListener
) -> None:
    recipient = relay.address("bounced")
    sender, event_id = _envelope_sender(relay, recipient)

    sent_at = time.monotonic()
    reply = _send(relay, _message(recipient), sender=sender, rcpt_options=("NOTIFY=FAILURE",))
    assert reply.startswith("2.0.0")
    report = listener.report_for(sender)

    assert report.sender == "<>"  # a DSN's envelope sender is null
    assert report.recipients == [sender]
    token = relay.return_path().parse(report.recipients[0])
    assert token is not None
    assert (token.event_id, token.attempt) == (event_id, 1)
    assert relay.return_path().names_recipient(token, recipient)
    fields = _per_recipient(report.message)
    assert fields["Action"] == "failed"
    assert re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", str(fields["Status"]))
    assert str(fields["Final-Recipient"]).split(";")[1].strip() == recipient
    print(f"DSN at the feedback port {report.received_at - sent_at:.2f}s after the relay took the message")


def test_ret_hdrs_returns_only_the_headers_and_ret_full_the_whole_message(
    relay: RelaySettings, listener: FeedbackListener
) -> None:
    marker = f"body-{uuid.uuid4().hex}"
    returned: dict[str, Report] = {}
    for ret in ("HDRS", "FULL"):
        sender, _ = _envelope_sender(relay)
        message = _message(relay.address("bounced"), body=f"{marker}\n")
        _send(relay, message, sender=sender, mail_options=(f"RET={ret}",))
        returned[ret] = listener.report_for(sender)

    headers_only, full = (returned["HDRS"].message, returned["FULL"].message)
    assert [p.get_content_type() for p in headers_only.iter_parts()][-1] == "text/rfc822-headers"
    assert marker.encode() not in returned["HDRS"].raw
    assert [p.get_content_type() for p in full.iter_parts()][-1] == "message/rfc822"
    assert marker.encode() in returned["FULL"].raw


def test_notify_success_reports_the_delivery(relay: RelaySettings, listener: FeedbackListener) -> None:
    sender, _ = _envelope_sender(relay)
    recipient = relay.address("delivered")
    _send(relay, _message(recipient), sender=sender, rcpt_options=("NOTIFY=SUCCESS",))

    fields = _per_recipient(listener.report_for(sender).message)
    assert (fields["Action"], fields["Status"]) == ("delivered", "2.0.0")
    assert relay.delivered(recipient)


def test_a_defer_address_is_retried_and_reported_delayed_within_seconds(
    relay: RelaySettings, listener: FeedbackListener
) -> None:
    sender, _ = _envelope_sender(relay)
    message = _message(relay.address("deferred"))
    reply = _send(relay, message, sender=sender, rcpt_options=("NOTIFY=DELAY,FAILURE",))
    queue_id = reply.rpartition(" ")[2]
    try:
        fields = _per_recipient(listener.report_for(sender).message)
        assert fields["Action"] == "delayed"
        assert re.fullmatch(r"4\.\d{1,3}\.\d{1,3}", str(fields["Status"]))
    finally:
        relay.drop(queue_id)


def test_a_dsn_deferred_while_the_feedback_receiver_is_down_arrives_seconds_after_it_is_back(
    relay: RelaySettings, wait_until: Callable[[Callable[[], bool], float], None]
) -> None:
    with socket.socket() as probe:
        if probe.connect_ex((relay.feedback_host, relay.feedback_port)) == 0:
            pytest.fail(f"something listens on the feedback port {relay.feedback_port} already")
    sender, _ = _envelope_sender(relay)
    _send(relay, _message(relay.address("bounced")), sender=sender)
    # Postfix tried the feedback port, found nothing listening and deferred the DSN.
    wait_until(lambda: _deferred(relay.log_file, sender), 15)

    with FeedbackListener(relay) as listener:
        back_at = time.monotonic()
        report = listener.report_for(sender, timeout_s=10)
    assert _per_recipient(report.message)["Action"] == "failed"
    print(f"deferred DSN delivered {report.received_at - back_at:.2f}s after the receiver came back")


def _deferred(log: Path, recipient: str) -> bool:
    return any(
        f"to=<{recipient}>" in line and "status=deferred" in line
        for line in log.read_text(errors="replace").splitlines()
    )
