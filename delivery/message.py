"""Builds the customer e-mail, in its wire form, from finished parts: bodies, PDF bytes, addresses.

The header lines that carry event data (To, Subject, Message-ID) are written by
:mod:`delivery.headers`, never parsed by :mod:`email` (which decodes encoded words in them), and
the finished header block is checked before it leaves: exactly the names we write, once each.
Everything else is constant or the operator's (From), and written directly: byte for byte what
:class:`email.message.EmailMessage` and :class:`email.generator.BytesGenerator` make of the same
parts (a test compares), at a fraction of the cost. They parse and re-fold some 18 headers per
message, most of them constants, which made composing the main process's largest cost per order.
Attachment names are named by the caller and only checked here (letters, digits, ``.``, ``-``,
``_`` and inner spaces, at most 100; anything else is refused) before :mod:`email` encodes them
(RFC 2231), so no ``=?``, quote or line break reaches its parser there either.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import MIMEPart
from email.policy import SMTP, SMTPUTF8, default
from email.quoprimime import body_encode
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from delivery.headers import (
    check_filename,
    check_header_block,
    message_id_for,
    message_id_line,
    recipient_line,
    subject_line,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["Attachment", "compose", "message_id_for"]

_LINE_END = re.compile(r"\r\n|\r|\n")  # email.generator's own (its NLCRE)
_CRLF = b"\r\n"
_BASE64_LINE = 76  # email's: 57 bytes a line, for its 78-character limit


class _HeaderClasses(HeaderRegistry):
    """The stock registry builds a new header class on every lookup; these are the same classes,
    each built once."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built


_HEADERS = _HeaderClasses()
_COMPOSE = default.clone(header_factory=_HEADERS)
# By "international": SMTPUTF8 headers only when an address needs them.
_WIRE = {False: SMTP.clone(header_factory=_HEADERS), True: SMTPUTF8.clone(header_factory=_HEADERS)}
# A boundary of the real one's length: folding depends only on length, so folded once, then replaced.
_BOUNDARY_SHAPE = "=_ordermail_" + "0" * 24
_MAX_LINE = 78  # the default policy's max_line_length: email's encoding choices follow it


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/pdf"


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
) -> bytes:
    """The message's wire form (CRLF line ends): ``multipart/mixed`` of ``multipart/alternative``
    (text, HTML) and the attachments. SMTPUTF8 headers only when an address needs them.
    ``recipient`` is a bare address; raises :class:`~delivery.headers.ComposeError` for anything
    else, or when the finished header block is not exactly the one we meant to write."""
    international = not (_parsed("From", sender).isascii() and recipient.isascii())
    # Random, and no base64 or quoted-printable line can start with "--=_".
    boundary = f"=_ordermail_{secrets.token_hex(12)}"
    mixed, alternative = f"--{boundary}_mixed".encode(), f"--{boundary}_alternative".encode()
    out = [
        _folded("From", sender, international),  # cached: the sender is always the same
        recipient_line(recipient),
        subject_line(subject),
        _folded("Date", format_datetime(date), international),  # cached: the same for a second
        message_id_line(message_id),
        _folded("Auto-Submitted", "auto-generated", international),  # RFC 3834: auto-responders do not answer
        _folded("MIME-Version", "1.0", international),
        _multipart_type("mixed", boundary, international),
        _CRLF,
        mixed,
        _CRLF,
        _multipart_type("alternative", boundary, international),
        _CRLF,
        alternative,
        _CRLF,
        *_text_part("plain", text, international, first=True),
        _CRLF,
        alternative,
        _CRLF,
        *_text_part("html", html, international, first=False),
        _CRLF,
        alternative,
        b"--\r\n",
    ]
    for attachment in attachments:
        out += [_CRLF, mixed, _CRLF, *_attachment_part(attachment, international)]
    out += [_CRLF, mixed, b"--\r\n"]
    message = b"".join(out)
    check_header_block(message)
    return message


def _header(name: str, value: str) -> BaseHeader:
    """As ``message[name] = value`` stores it: refuses CR/LF, parses per the header's kind."""
    header: BaseHeader = _COMPOSE.header_store_parse(name, value)[1]
    return header


@lru_cache(maxsize=64)
def _parsed(name: str, value: str) -> str:
    return str(_header(name, value))


@lru_cache(maxsize=64)
def _folded(name: str, value: str, international: bool) -> bytes:
    return _WIRE[international].fold_binary(name, _header(name, value))


def _multipart_type(subtype: str, boundary: str, international: bool) -> bytes:
    value = f'multipart/{subtype}; boundary="{_BOUNDARY_SHAPE}_{subtype}"'
    return _folded("Content-Type", value, international).replace(_BOUNDARY_SHAPE.encode(), boundary.encode())


def _text_part(subtype: str, body: str, international: bool, *, first: bool) -> list[bytes]:
    """Headers, blank line and body, as email's ``set_content(str)`` encodes it: 7bit or 8bit
    when every line fits in 78 bytes, else the shorter of quoted-printable and base64."""
    cte, payload = _encode_text(body)
    return [
        _folded("Content-Type", f'text/{subtype}; charset="utf-8"', international),
        _folded("Content-Transfer-Encoding", cte, international),
        # email adds MIME-Version to every part it creates after the first (harmless, kept as is)
        b"" if first else _folded("MIME-Version", "1.0", international),
        _CRLF,
        payload,
    ]


def _encode_text(body: str) -> tuple[str, bytes]:
    """email.contentmanager's choice for utf-8 text under the default policy, on the wire."""
    lines = body.encode("utf-8").splitlines()
    unix_body = b"\n".join(lines) + b"\n"
    if max((len(line) for line in lines), default=0) <= _MAX_LINE:
        return ("7bit" if unix_body.isascii() else "8bit"), _CRLF.join(lines) + _CRLF
    sniff = b"\n".join(lines[:10]) + b"\n"
    if len(body_encode(sniff.decode("latin-1"), _MAX_LINE)) > len(binascii.b2a_base64(sniff)):
        return "base64", _base64_lines(unix_body)
    quoted = body_encode(unix_body.decode("latin-1"), _MAX_LINE)
    return "quoted-printable", "\r\n".join(_LINE_END.split(quoted)).encode("ascii")


def _attachment_part(attachment: Attachment, international: bool) -> list[bytes]:
    return [
        _folded("Content-Type", attachment.mime_type, international),
        _folded("Content-Transfer-Encoding", "base64", international),
        _disposition(check_filename(attachment.filename), international),
        _folded("MIME-Version", "1.0", international),
        _CRLF,
        _base64_lines(attachment.content),
    ]


def _disposition(filename: str, international: bool) -> bytes:
    line = f'Content-Disposition: attachment; filename="{filename}"\r\n'
    if line.isascii() and len(line) <= _MAX_LINE + 2:
        return line.encode(
            "ascii"
        )  # what email writes for a short ASCII name (check_filename allows no quotes)
    part = MIMEPart(policy=_COMPOSE)  # its set_param does email's RFC 2231 encoding and folding
    part["Content-Disposition"] = "attachment"
    part.set_param("filename", filename, header="Content-Disposition")
    return _WIRE[international].fold_binary("Content-Disposition", part["Content-Disposition"])


def _base64_lines(data: bytes) -> bytes:
    encoded = memoryview(binascii.b2a_base64(data, newline=False))  # slices without copies
    lines = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
    return _CRLF.join(lines) + _CRLF if lines else b""
