"""Delivery status notifications (RFC 3464): one :class:`Report` per recipient block.

A DSN is ``multipart/report; report-type=delivery-status``: a text for people, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient: ``Action``, ``Status``, ``Final-Recipient``, ``Diagnostic-Code``...), and usually the
original message or its headers. Only the delivery-status part is read; the original (which may
carry the receipt, PDF included) is never looked at beyond its Message-ID.
"""

from __future__ import annotations

from email.message import Message

from delivery.feedback.model import Kind, Report, Source, bounce_type_of, enhanced_code
from delivery.feedback.parts import address_field, date_field, domain_of, field, find_part, returned_headers

__all__ = ["is_dsn", "parse_dsn"]

# RFC 3464 2.3.3: what the reporting MTA did for this recipient.
_ACTIONS = {
    "failed": Kind.BOUNCED,
    "delayed": Kind.DELAYED,
    "delivered": Kind.DELIVERED,
    "relayed": Kind.DELIVERED,  # handed to a system that sends no DSNs: as far as we will know
    "expanded": Kind.DELIVERED,
}
MAX_RECIPIENT_BLOCKS = 50  # one e-mail has one recipient; a report listing more is not ours


def is_dsn(message: Message) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "", header="content-type")).lower() == "delivery-status"
    )


def parse_dsn(message: Message) -> list[Report]:
    """The recipient blocks of a DSN as reports; [] when it has no readable delivery-status part.
    ``event_id``/``attempt`` are left for the caller, who knows the envelope the DSN came in."""
    status = find_part(message, "message/delivery-status")
    if status is None:
        return []
    blocks = _blocks(status)
    if len(blocks) < 2:
        return []
    per_message, recipients = blocks[0], blocks[1 : 1 + MAX_RECIPIENT_BLOCKS]
    arrival = date_field(per_message.get("Arrival-Date"))
    original = returned_headers(message)
    original_id = (
        str(original["Message-ID"]).strip() if original is not None and original["Message-ID"] else None
    )
    reports = []
    for block in recipients:
        kind = _ACTIONS.get((field(block, "Action") or "").lower())
        if kind is None:
            continue
        code = enhanced_code(str(block.get("Status", ""))) or enhanced_code(
            str(block.get("Diagnostic-Code", ""))
        )
        recipient = address_field(block.get("Final-Recipient")) or address_field(
            block.get("Original-Recipient")
        )
        reports.append(
            Report(
                source=Source.DSN,
                kind=kind,
                occurred_at=date_field(block.get("Last-Attempt-Date")) or arrival,
                status_code=code,
                bounce_type=bounce_type_of(code) if kind is Kind.BOUNCED else None,
                message_id=original_id,
                recipient=recipient,
                recipient_domain=domain_of(recipient),
            )
        )
    return reports


def _blocks(status: Message) -> list[Message]:
    """The ``email`` package parses a delivery-status part into one Message per field block."""
    payload = status.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    return []
