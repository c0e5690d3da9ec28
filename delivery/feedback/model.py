"""One recipient's fate as a report tells it, whatever the report's format.

Every parser (``dsn``, ``arf``, ``ses``, ``sendgrid``) turns what it receives into
:class:`Report` values; the feedback service then correlates them with the event they name and
publishes ``DeliveryFeedback`` records (``schemas/delivery_feedback.avsc``). A report's
``recipient`` is personal data: it is used to suppress the address (hashed) and nothing else:
never logged, traced, or published.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

__all__ = [
    "BounceType",
    "Kind",
    "Report",
    "Source",
    "bounce_type_of",
    "enhanced_code",
    "event_id_from_message_id",
]

BounceType = Literal["hard", "soft"]


class Kind(StrEnum):
    DELIVERED = "DELIVERED"
    DELAYED = "DELAYED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"


class Source(StrEnum):
    DSN = "dsn"
    ARF = "arf"
    SES = "ses"
    SENDGRID = "sendgrid"


@dataclass(frozen=True)
class Report:
    source: Source
    kind: Kind
    occurred_at: datetime | None = None  # timezone-aware; None: when received
    status_code: str | None = None  # RFC 3463 enhanced code, e.g. "5.1.1"
    bounce_type: BounceType | None = None  # set when kind is BOUNCED
    event_id: str | None = None  # from the return path's token or our Message-ID
    attempt: int | None = None  # from the return path's token
    message_id: str | None = None
    recipient: str | None = field(default=None, repr=False)  # personal data: see the module doc
    # Other spellings the report gives of the recipient (a DSN's Final-Recipient beside its
    # Original-Recipient): any of them may be the one the return path's token was made for.
    alternatives: tuple[str, ...] = field(default=(), repr=False)
    recipient_domain: str | None = None
    # The return path's token was made for ``recipient`` (DSN, ARF): only then may a report
    # suppress the address. ESP webhooks are signed by the ESP, which knows its recipients.
    recipient_confirmed: bool = False


# RFC 3463: class.subject.detail; class 2 success, 4 persistent transient, 5 permanent.
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# Our Message-ID (delivery.headers.message_id_for): "<{event_id}.ordermail@{domain}>", and a
# resend's "<{event_id}.resend-{n}.ordermail@{domain}>".
_OUR_MESSAGE_ID = re.compile(
    r"<?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?:\.resend-[0-9A-Za-z_-]{1,40})?\.ordermail@[^>\s]+>?"
)


def enhanced_code(text: str | None) -> str | None:
    """The first RFC 3463 enhanced status code in ``text`` (a Status field, a diagnostic)."""
    if not text:
        return None
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def bounce_type_of(status_code: str | None) -> BounceType:
    """5.x.x is permanent (hard); everything else that bounced is transient (soft). Mailbox full
    (x.2.2) is soft even when a server sends it as 5.2.2, as RFC 3463 itself suggests."""
    if status_code and status_code.startswith("5.") and status_code != "5.2.2":
        return "hard"
    return "soft"


def event_id_from_message_id(message_id: str | None) -> str | None:
    """The event id inside a Message-ID ordermail wrote; None for any other Message-ID."""
    if not message_id:
        return None
    match = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
    return match.group(1).lower() if match else None
