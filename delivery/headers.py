"""The header lines that carry values from an event, written by us, never parsed.

:mod:`email`'s header classes *parse* what they are given: an RFC 2047 encoded word in a value
(``=?utf-8?q?=0D=0ABcc:_x?=``) is decoded, and CPython before 3.11.10 / 3.12.5 (CVE-2024-6923)
then writes a decoded CR/LF out as a real line break: a new header, or the end of the header
block. So event text never goes through them. Here:

* the subject is cleaned to one line, then written as plain folded ASCII when it is ASCII with
  no ``=?`` in it, else as a sequence of encoded words that we make: text that looks like an
  encoded word is encoded again, so a reader decodes it once, back to the literal text;
* the recipient must be a bare address (the syntax ``email-validator`` accepted) and is written
  as it is;
* the message id keeps only the characters of a ``msg-id``'s left part.

:func:`check_header_block` then reads back the block :func:`delivery.message.compose` wrote and
refuses it unless it holds exactly the expected header names, once each, in lines ending CRLF.
"""

from __future__ import annotations

import base64
import re
from typing import Literal

__all__ = [
    "BARE_ADDRESS",
    "HEADER_NAMES",
    "MAX_SUBJECT",
    "ComposeError",
    "ComposeReason",
    "check_filename",
    "check_header_block",
    "message_id_for",
    "message_id_line",
    "recipient_line",
    "single_line",
    "subject_line",
]

ComposeReason = Literal["unsafe_recipient", "unsafe_filename", "header_check_failed"]
MAX_SUBJECT = 200
# What compose writes at the top of every message, in this order, once each.
HEADER_NAMES = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
)
_LINE = 76  # RFC 2047: a line holding an encoded word is at most 76 characters
_WORD_FRAME = len("=?utf-8?q??=")  # what an encoded word adds around its text, Q or B
_MAX_LINE = 998  # RFC 5322, without the CRLF
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # C0, DEL, C1 (NEL among them), LS, PS
_WORDS = re.compile(r"\s*\S+")
# An addr-spec as email-validator accepts it (dot-atom local part, no quoting, no display name).
BARE_ADDRESS = re.compile(r"[^\s\"(),:;<>@\[\\\]]+@[^\s\"(),:;<>@\[\\\]]+")
_MSG_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Attachment names as they may reach a Content-Disposition: letters and digits of any script,
# ".", "-", "_" and inner spaces, at most 100 (no quote, slash, control character or "=?").
_FILENAME = re.compile(r"[\w.-](?:[\w. -]{0,98}[\w.-])?")
_MSG_ID = re.compile(r"<[A-Za-z0-9._-]+@[A-Za-z0-9._-]+>")
_Q_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/")
_Q_ENCODED = {b: chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)}


class ComposeError(Exception):
    """The message could not be built safely; nothing is sent. Carries no event text."""

    def __init__(self, reason: ComposeReason) -> None:
        super().__init__(reason)
        self.reason: ComposeReason = reason


def single_line(value: str) -> str:
    """Control characters (CR, LF, NUL, NEL, U+2028/2029...) become spaces."""
    return _CONTROL.sub(" ", value).strip()


def subject_line(subject: str) -> bytes:
    """``Subject: ...`` with its CRLF, folded by us; at most :data:`MAX_SUBJECT` characters."""
    text = single_line(subject)[:MAX_SUBJECT]
    if text.isascii() and "=?" not in text:
        return _folded_ascii("Subject", text)
    return _encoded_words("Subject", text)


def recipient_line(address: str) -> bytes:
    """``To: address`` for a bare address; anything else (a display name, a group, spaces,
    control characters, quotes) is refused rather than interpreted."""
    if BARE_ADDRESS.fullmatch(address) is None or len(address) > 320:
        raise ComposeError("unsafe_recipient")
    return f"To: {address}\r\n".encode()


def message_id_for(event_id: str, domain: str) -> str:
    """Deterministic per event, so a receiving system can drop the rare redelivered duplicate.
    Only letters, digits, ``.``, ``_`` and ``-`` of the event id are kept (a UUID keeps them all)."""
    left = _MSG_ID_UNSAFE.sub("", event_id)[:80] or "event"
    return f"<{left}.ordermail@{_MSG_ID_UNSAFE.sub('', domain)[:200] or 'localhost'}>"


def check_filename(name: str) -> str:
    """``name`` when an attachment may carry it; naming is the caller's (``rendering`` names its
    documents, the pipeline the fetched ones), this only refuses what would be unsafe."""
    if _FILENAME.fullmatch(name) is None:
        raise ComposeError("unsafe_filename")
    return name


def message_id_line(message_id: str) -> bytes:
    """``Message-ID: <...>`` for an id made by :func:`message_id_for`; anything else is refused."""
    if _MSG_ID.fullmatch(message_id) is None:
        raise ComposeError("header_check_failed")
    return f"Message-ID: {message_id}\r\n".encode("ascii")


def check_header_block(message: bytes) -> None:
    """Refuses a message whose top-level header block is not exactly :data:`HEADER_NAMES`, once
    each and in order, in lines that end with CRLF, hold no bare CR or LF and fit 998 bytes."""
    block, blank, _body = message.partition(b"\r\n\r\n")
    if not blank:
        raise ComposeError("header_check_failed")
    names: list[str] = []
    for line in (block + b"\r\n").split(b"\r\n")[:-1]:
        if b"\r" in line or b"\n" in line or len(line) > _MAX_LINE:
            raise ComposeError("header_check_failed")
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the header before
            if not names:
                raise ComposeError("header_check_failed")
            continue
        name, colon, _value = line.partition(b":")
        if not colon:
            raise ComposeError("header_check_failed")
        names.append(name.decode("ascii", errors="replace"))
    if tuple(names) != HEADER_NAMES:
        raise ComposeError("header_check_failed")


def _folded_ascii(name: str, text: str) -> bytes:
    """Whitespace-separated words, folded before the whitespace when a line would pass 78
    characters: unfolding (removing each CRLF) gives the text back exactly."""
    lines = [f"{name}:"]
    for word in _WORDS.findall(" " + text):
        if len(lines[-1]) + len(word) > 78 and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += word
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _encoded_words(name: str, text: str) -> bytes:
    """The whole text as UTF-8 encoded words (Q or B, whichever is shorter), one per line: the
    folding white space between adjacent encoded words is not part of the text. A word grows a
    character at a time while its encoded form fits the line (counted, not re-encoded)."""
    q = len(_q_bytes(text)) <= len(base64.b64encode(text.encode()))
    encode = _q_word if q else _b_word
    lines: list[str] = []
    prefix = f"{name}: "
    chunk, size = "", 0  # size: the chunk's Q characters, or its UTF-8 bytes for B
    for char in text:
        room = _LINE - (len(prefix) if not lines else 1) - _WORD_FRAME
        grown = size + (len(_q_bytes(char)) if q else len(char.encode()))
        if chunk and (grown if q else 4 * -(-grown // 3)) > room:
            lines.append(encode(chunk))
            chunk, size = "", 0
            grown = len(_q_bytes(char)) if q else len(char.encode())
        chunk, size = chunk + char, grown
    lines.append(encode(chunk))
    return (prefix + "\r\n ".join(lines) + "\r\n").encode("ascii")


def _q_bytes(text: str) -> str:
    return text.encode("utf-8").decode("latin-1").translate(_Q_ENCODED)  # byte by byte, in C


def _q_word(text: str) -> str:
    return f"=?utf-8?q?{_q_bytes(text)}?="


def _b_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="
