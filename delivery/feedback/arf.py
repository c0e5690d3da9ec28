"""Feedback-loop complaints (ARF, RFC 5965): a recipient marked the e-mail as spam.

An ARF report is ``multipart/report; report-type=feedback-report``: a text for people, a
``message/feedback-report`` part (``Feedback-Type``, ``Original-Mail-From``,
``Original-Rcpt-To``, ``Arrival-Date``...) and the original message or its headers, often
redacted by the mailbox provider. The original is read for its ``Return-Path`` and
``Message-ID`` only.
"""

from __future__ import annotations

from email.message import Message

from delivery.feedback.model import Kind, Report, Source
from delivery.feedback.parts import address_field, date_field, domain_of, field, find_part, returned_headers

__all__ = ["is_arf", "parse_arf"]

# RFC 5965 / 6650: complaints. "not-spam" undoes one and "auth-failure" (RFC 6591) is about
# authentication, not the recipient's wish: neither is a complaint.
_COMPLAINTS = frozenset({"abuse", "fraud", "virus", "other"})


def is_arf(message: Message) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "", header="content-type")).lower() == "feedback-report"
    )


def parse_arf(message: Message) -> tuple[Report | None, list[str]]:
    """The complaint (None when the report is no complaint) and the return-path addresses it
    names (``Original-Mail-From``, the original's ``Return-Path``): where the caller finds the
    token that says which event it is about."""
    fields = _fields(message)
    if (field(fields, "Feedback-Type") or "").lower() not in _COMPLAINTS:
        return None, []
    original = returned_headers(message)
    return_paths = [p for p in (field(fields, "Original-Mail-From"), field(original, "Return-Path")) if p]
    recipient = address_field(field(fields, "Original-Rcpt-To") or field(original, "To"))
    message_id = field(original, "Message-ID")
    report = Report(
        source=Source.ARF,
        kind=Kind.COMPLAINED,
        occurred_at=date_field(field(fields, "Arrival-Date") or field(fields, "Received-Date")),
        message_id=message_id,
        recipient=recipient,
        recipient_domain=domain_of(recipient),
    )
    return report, return_paths


def _fields(message: Message) -> Message | None:
    part = find_part(message, "message/feedback-report")
    payload = part.get_payload() if part is not None else None
    # The ``email`` package reads any message/* part as an enclosed message: here, all fields.
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    return None
