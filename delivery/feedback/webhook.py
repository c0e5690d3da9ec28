"""What the ESP webhook parsers (:mod:`delivery.feedback.ses`, :mod:`delivery.feedback.sendgrid`)
share: the one exception they raise, the result they return, and careful readers of JSON,
timestamps and addresses.

A request is either refused as a whole (:class:`WebhookError`, with a machine-readable
``reason`` the HTTP server counts and answers 4xx to) or accepted: a :class:`WebhookResult`.
Inside an accepted (signed) request, an entry that cannot be read is skipped and counted in
``malformed``, and an event of a kind we do not map (opens, clicks...) is counted in
``ignored``: refusing the whole request would make the ESP send it again and again, and the
good entries in it would be lost with it.

Nothing from a request is ever put into an exception: its text is a fixed string of ours.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from delivery.feedback.model import Report, enhanced_code, event_id_from_message_id

__all__ = [
    "MAX_FUTURE",
    "SubscriptionNotice",
    "WebhookConfigError",
    "WebhookError",
    "WebhookReason",
    "WebhookResult",
    "check_age",
    "diagnostic_code",
    "load_json",
    "occurred_at_iso",
    "occurred_at_unix",
    "our_message_id",
    "recipient_parts",
    "signature_bytes",
]

WebhookReason = Literal[
    "unparseable",  # not JSON, or not the shape the ESP documents
    "missing_signature",  # no signature (or no signed timestamp) at all
    "bad_signature",  # a signature that does not verify over this request with the configured key
    "signature_version",  # SNS SignatureVersion unknown or below the configured minimum (downgrade)
    "untrusted_certificate",  # SNS: not signed by an SNS certificate, or the configured ones expired
    "untrusted_topic",  # SNS: a genuine message, from a topic not in the allow-list
    "stale",  # signed timestamp outside the accepted window (too old: replay; or in the future)
]

# A signed timestamp may be this far ahead of our clock (the sender's clock is not ours).
MAX_FUTURE = timedelta(minutes=5)
_MAX_ADDRESS = 320  # RFC 3696 errata: 64 + 1 + 255
_MAX_TIMESTAMP_TEXT = 40


class WebhookError(Exception):
    """A request refused as a whole. ``str(error)`` is the reason (and a fixed detail of ours);
    nothing of the request is in it."""

    def __init__(self, reason: WebhookReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: WebhookReason = reason
        self.detail = detail


class WebhookConfigError(ValueError):
    """The configured certificate, key or allow-list cannot be used; raised when the verifier is
    built (at start), never per request."""


@dataclass(frozen=True)
class SubscriptionNotice:
    """A verified SNS ``SubscriptionConfirmation`` or ``UnsubscribeConfirmation``.

    ordermail never fetches ``subscribe_url`` itself: an operator confirms the subscription
    (``aws sns confirm-subscription --topic-arn TOPIC_ARN --token TOKEN``, or opens the URL).
    The server answers 200 and logs :meth:`instructions` (topic ARN and token, no personal data;
    the token only confirms this very subscription and expires after three days).
    """

    type: Literal["SubscriptionConfirmation", "UnsubscribeConfirmation"]
    topic_arn: str
    token: str
    subscribe_url: str

    def instructions(self) -> str:
        if self.type == "UnsubscribeConfirmation":
            return f"SNS topic {self.topic_arn} unsubscribed this endpoint; nothing to do unless unexpected"
        return (
            f"SNS topic {self.topic_arn} asks to confirm this endpoint's subscription: "
            f"aws sns confirm-subscription --topic-arn {self.topic_arn} --token {self.token}"
        )


@dataclass(frozen=True)
class WebhookResult:
    """An accepted request: the reports to publish, what was skipped, and for SNS a subscription
    (un)confirmation the server logs for an operator (then ``reports`` is empty)."""

    reports: tuple[Report, ...] = ()
    ignored: int = 0  # events of kinds we do not map (open, click, send...)
    malformed: int = 0  # entries of the signed request we could not read: skipped
    subscription: SubscriptionNotice | None = None


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def load_json(data: bytes | str) -> Any:
    """The JSON value in ``data`` (UTF-8), or :class:`WebhookError` ``unparseable``: also for
    NaN/Infinity, integers too long to convert, and nesting deeper than the parser's stack."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        # not chained: a JSONDecodeError holds the whole document (``doc``), a request body
        raise WebhookError("unparseable", "not JSON") from None


def check_age(signed_at: datetime, now: datetime, max_age: timedelta) -> None:
    """Refuses (``stale``) a signed timestamp older than ``max_age`` or ahead by more than
    :data:`MAX_FUTURE`: a captured request cannot be replayed for ever."""
    if signed_at < now - max_age or signed_at > now + MAX_FUTURE:
        raise WebhookError("stale", "signed timestamp outside the accepted window")


def occurred_at_iso(value: object) -> datetime | None:
    """An ISO 8601 timestamp with a zone (``2016-01-27T14:59:38.237Z``) as an aware UTC datetime;
    None for anything else (missing, not a string, no zone, nonsense)."""
    if not isinstance(value, str) or len(value) > _MAX_TIMESTAMP_TEXT:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return None
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved across midnight
        return None


def occurred_at_unix(value: object) -> datetime | None:
    """Unix seconds (an int, or a finite float) as an aware UTC datetime; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not 0 <= value < 2**37:  # up to the year 6325: fromtimestamp's range on every platform
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def recipient_parts(value: object) -> tuple[str | None, str | None]:
    """(address, lower-cased domain) of a bare ``local@domain`` address as an ESP reports it;
    (None, None) for anything else (not a string, too long, no ``@``, spaces or controls)."""
    if not isinstance(value, str):
        return None, None
    address = value.strip()
    if not 3 <= len(address) <= _MAX_ADDRESS or not address.isprintable() or " " in address:
        return None, None
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or len(domain) > 255 or "<" in address or ">" in address:
        return None, None
    return address, domain.lower()


_MAX_MESSAGE_ID = 998  # RFC 5322's line limit
_CODE_TEXT = 1000  # an enhanced status code is looked for at the start of a diagnostic only


def signature_bytes(value: object, *, limit: int, who: str) -> bytes:
    """A base64 signature of at most ``limit`` characters, decoded; :class:`WebhookError` otherwise."""
    if value is None:
        raise WebhookError("missing_signature", f"{who} signature missing")
    if not isinstance(value, str) or len(value.strip()) > limit:
        raise WebhookError("bad_signature", f"{who} signature is not base64")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookError("bad_signature", f"{who} signature is not base64") from exc


def our_message_id(value: object) -> tuple[str, str] | None:
    """(the Message-ID, its event id) when ``value`` is one of ours (ASCII, as RFC 5322 wants)."""
    if isinstance(value, str) and len(value) <= _MAX_MESSAGE_ID and value.isascii():
        event_id = event_id_from_message_id(value)
        if event_id:
            return value.strip(), event_id
    return None


def diagnostic_code(value: object) -> str | None:
    """The enhanced status code at the start of a diagnostic text, if it is text."""
    return enhanced_code(value[:_CODE_TEXT]) if isinstance(value, str) else None
