"""An e-mail that arrived at the return-path domain: which event's report it is, or why not.

Bounces arrive addressed to the envelope sender of the e-mail they are about: the VERP address
(``delivery/return_path.py``) whose token names the event and carries a MAC. A report is
believed only through that token (the envelope recipient for a DSN; ``Original-Mail-From`` or
the returned ``Return-Path`` for a complaint): anyone can send mail to this domain, and a
report without a valid token could name any event. Everything else is classified and dropped.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterable
from dataclasses import dataclass, replace
from email.message import Message
from typing import Literal

from delivery.feedback.arf import is_arf, parse_arf
from delivery.feedback.dsn import is_dsn, parse_dsn
from delivery.feedback.model import Report
from delivery.feedback.parts import field, oversized_content_field
from delivery.return_path import ReturnPath, Token

__all__ = ["Dropped", "Inbound", "is_auto_reply", "read_inbound"]

Dropped = Literal[
    "auto_reply", "not_a_report", "unparseable", "unsigned", "not_a_complaint", "oversized_header"
]

# RFC 3834 and what common auto-responders write instead of it.
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk", "list"})


@dataclass(frozen=True)
class Inbound:
    reports: tuple[Report, ...] = ()
    dropped: Dropped | None = None


def read_inbound(data: bytes, envelope_recipients: Iterable[str], return_path: ReturnPath) -> Inbound:
    """The reports ``data`` makes, each carrying the event its token names; or why it is
    dropped. Never raises for what a sender can put in a message."""
    if oversized_content_field(data):
        return Inbound(dropped="oversized_header")
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
        return _read(message, data, list(envelope_recipients), return_path)
    except (RecursionError, LookupError, ValueError, TypeError, AttributeError, IndexError):
        # The ``email`` package is lenient, but hostile nesting and odd charsets still reach
        # these; whatever it was, it was no report we can use.
        return Inbound(dropped="unparseable")


def _read(message: Message, data: bytes, recipients: list[str], return_path: ReturnPath) -> Inbound:
    if is_dsn(message):
        return _dsn(message, data, recipients, return_path)
    if is_arf(message):
        return _complaint(message, recipients, return_path)
    if is_auto_reply(message):
        return Inbound(dropped="auto_reply")
    return Inbound(dropped="not_a_report")


def _dsn(message: Message, data: bytes, recipients: list[str], return_path: ReturnPath) -> Inbound:
    reports = parse_dsn(message, data)
    if not reports:
        return Inbound(dropped="unparseable")
    token = _first_token(recipients, return_path)
    if token is None:
        return Inbound(dropped="unsigned")
    return Inbound(reports=tuple(_named(report, token, return_path) for report in reports))


def _complaint(message: Message, recipients: list[str], return_path: ReturnPath) -> Inbound:
    complaint, return_paths = parse_arf(message)
    if complaint is None:
        return Inbound(dropped="not_a_complaint")
    token = _first_token([*return_paths, *recipients], return_path)
    if token is None:
        return Inbound(dropped="unsigned")
    return Inbound(reports=(_named(complaint, token, return_path),))


def _named(report: Report, token: Token, return_path: ReturnPath) -> Report:
    """The report as about the token's event; its recipient confirmed when any spelling of it
    is the address the token was made for (and then that spelling is the one suppressed)."""
    named = replace(report, event_id=token.event_id, attempt=token.attempt)
    for spelling in (report.recipient, *report.alternatives):
        if spelling is not None and return_path.names_recipient(token, spelling):
            return replace(named, recipient=spelling, recipient_confirmed=True)
    return named


def is_auto_reply(message: Message) -> bool:
    """RFC 3834's ``Auto-Submitted`` (anything but ``no``), or the older conventions."""
    submitted = (field(message, "Auto-Submitted") or "no").lower()
    precedence = (field(message, "Precedence") or "").lower()
    return (
        submitted != "no"
        or precedence in _AUTO_PRECEDENCE
        or any(field(message, name) for name in _AUTO_REPLY_HEADERS)
    )


def _first_token(addresses: Iterable[str], return_path: ReturnPath) -> Token | None:
    for address in addresses:
        token = return_path.parse(address)
        if token is not None:
            return token
    return None
