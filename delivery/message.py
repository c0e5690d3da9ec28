"""Builds the customer e-mail from finished parts: bodies, PDF bytes and addresses.

Headers are only ever set through :mod:`email.message`, which refuses CR/LF in values; we
also strip control characters and cap lengths, so event data can never create or split a header.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["Attachment", "compose", "message_id_for", "to_bytes"]

MAX_SUBJECT = 200
MAX_FILENAME = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_UNSAFE_FILENAME = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/pdf"


def message_id_for(event_id: str, domain: str) -> str:
    """Deterministic per event, so a receiving system can drop the rare redelivered duplicate."""
    return f"<{_single_line(event_id)[:80]}.ordermail@{_single_line(domain)[:200]}>"


def compose(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    attachments: Sequence[Attachment],
    message_id: str,
    date: datetime,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = _single_line(subject)[:MAX_SUBJECT]
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, subtype = attachment.mime_type.split("/", 1)
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=safe_filename(attachment.filename),
        )
    return message


def to_bytes(message: EmailMessage) -> bytes:
    """The wire form (CRLF line ends); SMTPUTF8 only when an address needs it."""
    international = not all(str(message[header] or "").isascii() for header in ("From", "To"))
    return message.as_bytes(policy=SMTPUTF8 if international else SMTP)


def safe_filename(name: str) -> str:
    """Keeps letters of any script (encoded per RFC 2231 by :mod:`email`), drops path tricks."""
    cleaned = (
        _UNSAFE_FILENAME.sub("_", unicodedata.normalize("NFC", _single_line(name))).strip(" ._")
        or "attachment"
    )
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        return cleaned[:MAX_FILENAME]
    return f"{stem[: MAX_FILENAME - len(ext) - 1]}.{ext}"


def _single_line(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()
