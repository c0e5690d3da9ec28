"""What DSN and ARF reports share: finding a part, the returned original's headers, and the
report fields' address and date forms."""

from __future__ import annotations

import email
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message

__all__ = [
    "address_field",
    "date_field",
    "domain_of",
    "field",
    "find_part",
    "oversized_content_field",
    "returned_headers",
    "xtext_decoded",
]


# ``email`` reads the parameters of Content-* fields (a multipart's boundary, a charset, the
# report-type) in time that grows with the square of their length on some Python releases
# (gh-136063: a 250 KB Content-Type held a thread for minutes). Real ones are a few hundred
# bytes with a few parameters: those fields are measured on the bytes before ``email`` parses
# them, at any depth, wherever a line starts for it (after CR LF, LF or a bare CR).
MAX_CONTENT_FIELD_BYTES = 4096
MAX_CONTENT_FIELD_PARAMETERS = 64
_CONTENT_FIELD = re.compile(
    rb"(?:^|(?<=\r))content-[a-z0-9-]*[ \t]*:[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)


def oversized_content_field(data: bytes) -> bool:
    """Whether ``data`` holds a Content-* field too long, or with too many parameters, to parse."""
    return any(
        len(found) > MAX_CONTENT_FIELD_BYTES or found.count(b";") > MAX_CONTENT_FIELD_PARAMETERS
        for found in _CONTENT_FIELD.findall(data)
    )


def field(message: Message | None, name: str) -> str | None:
    """A header or report field as text, stripped; None when absent or empty."""
    value = message.get(name) if message is not None else None
    text = str(value).strip() if value is not None else ""
    return text or None


def find_part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def returned_headers(message: Message) -> Message | None:
    """The returned original (``message/rfc822``) or its headers (``text/rfc822-headers``), as
    a message; read for headers only: its body may be the receipt itself."""
    part = find_part(message, "message/rfc822") or find_part(message, "text/rfc822-headers")
    if part is None:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the ``email`` package parsed it already
        return payload[0] if payload and isinstance(payload[0], Message) else None
    text = part.get_payload(decode=True)  # base64, say: its fields were not measured as sent
    if not isinstance(text, bytes) or oversized_content_field(text):
        return None
    return email.message_from_bytes(text)


def address_field(value: object) -> str | None:
    """``rfc822; someone@example.com`` or a bare ``<someone@example.com>`` → the address;
    another address type (``x400;``...) or no ``@``: None."""
    if value is None:
        return None
    text = str(value).strip()
    kind, separator, address = text.partition(";")
    if not separator:
        kind, address = "rfc822", text
    address = address.strip().strip("<>").strip()
    # rfc822 (RFC 3464), utf-8 (RFC 6533, international addresses)
    if (
        kind.strip().lower() not in ("rfc822", "utf-8")
        or "@" not in address
        or any(c.isspace() for c in address)
    ):
        return None
    return address


def xtext_decoded(text: str) -> str:
    """RFC 3461 xtext (``+XX`` for "+", "=" and what is not printable ASCII) decoded; as it was
    when it is not valid xtext (a plain address with a "+")."""
    out, index = [], 0
    while index < len(text):
        if text[index] == "+":
            digits = text[index + 1 : index + 3]
            if len(digits) != 2 or any(c not in "0123456789ABCDEF" for c in digits):
                return text
            out.append(chr(int(digits, 16)))
            index += 3
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def domain_of(address: str | None) -> str | None:
    return address.rpartition("@")[2].lower() or None if address else None


def date_field(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
