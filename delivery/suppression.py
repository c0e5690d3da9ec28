"""The suppression list's pure parts: which address a record is about, and whether it suppresses.

**Normalisation** (:func:`normalise`): surrounding whitespace trimmed, then the address parsed as
the service validates an order's (``email-validator``, no deliverability check): the domain
UTS-46/IDNA 2008 mapped and written as its lower-case A-label (``Bücher.DE`` and
``xn--bcher-kva.de`` are one domain), the local part NFC-normalised and **lower-cased**. RFC 5321
lets a server tell ``Jane`` from ``jane``, but no mailbox provider of note does, and ESP
suppression lists compare without case too: a bounce reported as ``JANE@`` must stop an order
typed as ``jane@`` (a miss costs sender reputation; two mailboxes that differ only in case do
not exist in practice). Nothing provider-specific: dots and ``+tags`` stay (Gmail ignores dots,
most providers do not; a rule per provider would suppress other people's mailboxes elsewhere).
What is not an address an order could carry raises :class:`InvalidAddress`.

**Keys** (:class:`SuppressionKeys`): a record's key is the hex HMAC-SHA-256 of the normalised
address under ``ORDERMAIL_SUPPRESSION_SECRET``, so the compacted topic never holds an address, and
without the secret one cannot test guesses against it. Changing the secret orphans every entry
(the addresses cannot be re-keyed): rotate it only to start an empty list.

**Expiry** (:meth:`Suppression.active`): an entry stops suppressing at its ``expires_at``, or
``ttl`` after ``added_at``, whichever comes first; the record stays until removed (a tombstone).

Imports nothing else of ordermail's.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import threading
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from email_validator import EmailNotValidError, validate_email

__all__ = [
    "REASONS",
    "SOURCES",
    "InvalidAddress",
    "Reason",
    "Source",
    "Suppression",
    "SuppressionKeys",
    "SuppressionTable",
    "is_record_key",
    "normalise",
]

Reason = Literal["hard_bounce", "complaint", "soft_bounces", "operator"]
Source = Literal["dsn", "arf", "ses", "sendgrid", "operator"]
REASONS: frozenset[str] = frozenset(get_args(Reason))
SOURCES: frozenset[str] = frozenset(get_args(Source))
MIN_SECRET_BYTES = 16
_CONTEXT = b"ordermail suppression v1\x00"  # a key is never a MAC of the same bytes elsewhere


class InvalidAddress(ValueError):
    """Not an e-mail address an order could carry (the message never quotes it)."""


@functools.lru_cache(maxsize=4096)
def normalise(address: str) -> str:
    """The form every key is computed from (see the module's docstring). Remembered for the last
    few thousand addresses (in this process's memory only): an order's is normalised for its
    suppression key and again for its return path, ~80 µs each."""
    text = address.strip()
    if not text or len(text) > 320:  # as the order validation: before a slow parse of megabytes
        raise InvalidAddress("not an e-mail address")
    try:
        parsed = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidAddress("not an e-mail address") from None
    local = unicodedata.normalize("NFC", parsed.local_part).lower()
    return f"{local}@{parsed.ascii_domain.lower()}"


_RECORD_KEY = re.compile(r"[0-9a-f]{64}")


def is_record_key(key: str) -> bool:
    """Whether ``key`` is one :meth:`SuppressionKeys.key_for` writes: a record keyed otherwise was
    not written by ordermail and names no address it could hash (the service and the tool alike
    leave it out)."""
    return _RECORD_KEY.fullmatch(key) is not None


class SuppressionKeys:
    """Record keys from addresses, under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"suppression secret: at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "SuppressionKeys(<secret>)"

    def key_for(self, address: str) -> str:
        """64 lower-case hex digits; :class:`InvalidAddress` for what is not an address."""
        return hmac.new(self._secret, _CONTEXT + normalise(address).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Suppression:
    """One entry, as its record says. ``reason`` and ``source`` are kept as written: a value
    this version does not know (a newer writer's) still suppresses."""

    reason: str
    source: str | None
    added_at: datetime  # timezone-aware
    expires_at: datetime | None = None
    event_id: str | None = None

    def ends_at(self, ttl: timedelta | None) -> datetime | None:
        """When it stops suppressing: its own expiry or ``ttl`` after it was added (None: never)."""
        try:
            after_ttl = self.added_at + ttl if ttl else None
        except OverflowError:  # added near the end of time: the TTL never runs out
            after_ttl = None
        ends = [t for t in (self.expires_at, after_ttl) if t is not None]
        return min(ends, default=None)

    def active(self, now: datetime, ttl: timedelta | None) -> bool:
        ends = self.ends_at(ttl)
        return ends is None or now < ends


class SuppressionTable:
    """Key → entry, as the compacted topic says at the position read so far: a record replaces
    the key's entry, a tombstone (None) removes it. Written by one follower thread, read from the
    event loop; a lock keeps the count and the entries in step."""

    def __init__(self, ttl: timedelta | None = None) -> None:
        self._ttl = ttl
        self._entries: dict[str, Suppression] = {}
        self._lock = threading.Lock()

    def apply(self, key: str, entry: Suppression | None) -> None:
        with self._lock:
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry

    def get(self, key: str) -> Suppression | None:
        """The key's entry, expired or not."""
        with self._lock:
            return self._entries.get(key)

    def suppressing(self, key: str, now: datetime) -> Suppression | None:
        """The key's entry while it suppresses, else None."""
        entry = self.get(key)
        return entry if entry is not None and entry.active(now, self._ttl) else None

    def suppresses(self, keys: SuppressionKeys, address: str, now: datetime) -> bool:
        """Whether an order's (valid) address is suppressed: the pipeline's question."""
        return self.suppressing(keys.key_for(address), now) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def active_count(self, now: datetime) -> int:
        with self._lock:
            return sum(1 for entry in self._entries.values() if entry.active(now, self._ttl))
