"""Delivery status notifications (RFC 3464): one :class:`Report` per recipient block.

A DSN is ``multipart/report; report-type=delivery-status``: a text for people, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient: ``Action``, ``Status``, ``Final-Recipient``, ``Diagnostic-Code``...), and usually the
original message or its headers. Only the delivery-status part is read; the original (which may
carry the receipt, PDF included) is never looked at beyond its Message-ID.
"""

from __future__ import annotations

import binascii
import re
from email.message import Message

from delivery.feedback.model import Kind, Report, Source, bounce_type_of, enhanced_code
from delivery.feedback.parts import (
    address_field,
    date_field,
    domain_of,
    field,
    find_part,
    returned_headers,
    xtext_decoded,
)

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
    return message.get_content_type() == "multipart/report" and str(
        message.get_param("report-type", "", header="content-type")
    ).lower() in ("delivery-status", "global-delivery-status")


def parse_dsn(message: Message, data: bytes = b"") -> list[Report]:
    """The recipient blocks of a DSN as reports; [] when it has no readable delivery-status part.
    ``event_id``/``attempt`` are left for the caller, who knows the envelope the DSN came in."""
    status = find_part(message, "message/delivery-status")
    if status is not None:
        blocks = _blocks(status)
    else:  # RFC 6533, for international addresses: the ``email`` package does not split it
        status = find_part(message, "message/global-delivery-status")
        blocks = _global_blocks(data) if status is not None else []
    if len(blocks) < 2:
        return []
    per_message, recipients = blocks[0], blocks[1 : 1 + MAX_RECIPIENT_BLOCKS]
    arrival = date_field(per_message.get("Arrival-Date"))
    original_id = field(returned_headers(message), "Message-ID")
    reports = []
    for block in recipients:
        kind = _ACTIONS.get((field(block, "Action") or "").lower())
        if kind is None:
            continue
        code = enhanced_code(field(block, "Status")) or enhanced_code(field(block, "Diagnostic-Code"))
        # Original-Recipient is the address we gave (ORCPT, maybe still in xtext); Final-Recipient
        # may be a forward's. Any of them may be the one the token was made for.
        original = address_field(field(block, "Original-Recipient"))
        final = address_field(field(block, "Final-Recipient"))
        spellings = list(
            dict.fromkeys(a for a in (original, original and xtext_decoded(original), final) if a)
        )
        recipient = spellings[0] if spellings else None
        reports.append(
            Report(
                source=Source.DSN,
                kind=kind,
                occurred_at=date_field(field(block, "Last-Attempt-Date")) or arrival,
                status_code=code,
                bounce_type=bounce_type_of(code) if kind is Kind.BOUNCED else None,
                message_id=original_id,
                recipient=recipient,
                alternatives=tuple(spellings[1:]),
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


def _global_blocks(data: bytes) -> list[Message]:
    """A ``message/global-delivery-status`` part (RFC 6533: fields in UTF-8) as its blocks, cut
    from the raw message (the ``email`` package replaces its UTF-8 with U+FFFD): the part whose
    ``Content-Type`` header names the type (not a mention of it in some text), from its blank
    line to the next boundary, decoded when its transfer encoding says so. Linear passes."""
    found = _GLOBAL_STATUS.search(data)
    if found is None:
        return []
    body = data.find(b"\n\r\n", found.end())
    if body < 0:
        body = data.find(b"\n\n", found.end())
    if body < 0:
        return []
    headers = data[data.rfind(b"\n--", 0, found.start()) + 1 : body]
    end = data.find(b"\n--", body + 1)
    raw = data[body + 1 : end if end >= 0 else len(data)]
    encoding = _TRANSFER_ENCODING.search(headers)
    try:
        if encoding is not None and encoding.group(1).lower() == b"base64":
            raw = binascii.a2b_base64(raw)
        elif encoding is not None and encoding.group(1).lower() == b"quoted-printable":
            raw = binascii.a2b_qp(raw)
    except binascii.Error:
        return []
    text = raw.decode("utf-8", "replace")
    chunks = [chunk for chunk in re.split(r"\r?\n[ \t]*\r?\n", text) if chunk.strip()]
    return [_fields_of(chunk) for chunk in chunks[: 1 + MAX_RECIPIENT_BLOCKS]]


_GLOBAL_STATUS = re.compile(rb"(?im)^content-type:[ \t]*message/global-delivery-status\b")
_TRANSFER_ENCODING = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*([\w-]+)")


def _fields_of(chunk: str) -> Message:
    """One block of ``Name: value`` lines (continuations folded), as a message's headers."""
    block = Message()
    for line in re.sub(r"\r?\n[ \t]+", " ", chunk.strip()).splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip():
            block[name.strip()] = value.strip()
    return block
