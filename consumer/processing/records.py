"""One consumed record, and what ordermail's own headers on it say.

Headers named ``ordermail.*`` are ordermail's: where an event was first published
(``ordermail.original.*``), how often it was deferred (``ordermail.retry.*``) and whether an
operator asked for it to be sent again (``ordermail.resend``, written by ``ordermail resend``). They are
trusted only on records of the retry topic, which only ordermail writes. On the input topic,
anyone who can produce can write them, so there they are dropped unread: a producer cannot
redirect an outcome, fake a deferral or feed our parsers. Even on the retry topic they are read
strictly (ASCII digits within bounds, a valid topic name, the record's own partition); a record
whose headers fail that is :attr:`Inbound.malformed`, and ends as a classified, dead-lettered
record instead of an exception. A record whose headers cannot be read at all (a header name that
is not UTF-8, which confluent-kafka cannot decode) is processed without them on the input topic.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schemas.validation import is_order_id, is_uuid

if TYPE_CHECKING:
    from confluent_kafka import Message

__all__ = [
    "OWN_PREFIX",
    "RESEND_HEADER",
    "Headers",
    "Inbound",
    "Origin",
    "RetryState",
    "message_headers",
    "plausible_id",
    "readable_headers",
]

Headers = list[tuple[str, bytes]]
OWN_PREFIX = "ordermail."
ORIGIN_PREFIX = "ordermail.original."
RETRY_PREFIX = "ordermail.retry."
RESEND_HEADER = "ordermail.resend"  # a resend's number (its request time in ms): a fresh Message-ID
_ORIGIN_FIELDS = ("topic", "partition", "offset", "timestamp")
_RETRY_FIELDS = ("deferrals", "attempts", "due", "first")
_TOPIC = re.compile(rb"[A-Za-z0-9._-]{1,249}")
_DIGITS = re.compile(rb"[0-9]{1,19}")  # ASCII only: str.isdigit() also takes "²", which int() refuses
_MAX_INT64 = 2**63 - 1
# What an order number has none of: bidi controls (they reorder a log line), "@" (an e-mail
# address) and white space (a name or a postal address).
_NOT_AN_ID = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069@\s]")
# What may be shown or carried as an event's id when the event itself is not validated: ids, not
# text (an invalid event_id may be anything, an e-mail address included).
_PLAUSIBLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_MAX_DEFERRALS = 1_000
_MAX_ATTEMPTS = 1_000_000  # the outcome's attempt is an Avro int


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class Origin:
    """Where an event was first published: a deferred event keeps it through the retry topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def headers(self) -> Headers:
        values = (self.topic, str(self.partition), str(self.offset), str(self.timestamp_ms))
        return [(f"{ORIGIN_PREFIX}{f}", v.encode()) for f, v in zip(_ORIGIN_FIELDS, values, strict=True)]


@dataclass(frozen=True)
class RetryState:
    deferrals: int  # how often the event was deferred so far
    attempts: int  # send attempts so far, over all passes
    due_ms: int
    first_ms: int  # when the event was first tried: its age counts from here

    def headers(self) -> Headers:
        values = (self.deferrals, self.attempts, self.due_ms, self.first_ms)
        return [(f"{RETRY_PREFIX}{f}", str(v).encode()) for f, v in zip(_RETRY_FIELDS, values, strict=True)]


@dataclass(frozen=True)
class Inbound:
    """One consumed record, detached from librdkafka's Message so it can cross threads.

    ``headers`` are all the record's headers; ``trusted`` says whether its ``ordermail.*`` ones
    were written by ordermail (the retry topic). Building one never raises.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int
    trusted: bool = False
    unreadable: bool = False  # its headers could not be read at all (a name that is not UTF-8)
    origin: Origin = field(init=False, compare=False)
    retry: RetryState | None = field(init=False, compare=False)
    malformed: bool = field(init=False, compare=False)
    resend: int | None = field(init=False, compare=False)  # an operator's resend (trusted records only)

    def __post_init__(self) -> None:
        own = Origin(self.topic, self.partition, self.offset, self.timestamp_ms)
        origin, retry, malformed, resend = own, None, False, None
        if self.trusted:  # an input record whose headers are unreadable is processed without them
            try:
                if self.unreadable:
                    raise _Malformed
                origin, retry = self._read_own_headers(own)
                resend = self._read_resend()
            except _Malformed:
                malformed = True
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "retry", retry)
        object.__setattr__(self, "malformed", malformed)
        object.__setattr__(self, "resend", resend)

    @classmethod
    def from_message(cls, message: Message, *, trusted: bool = False) -> Inbound:
        read = readable_headers(message)
        headers, unreadable = (read, False) if read is not None else ([], True)
        return cls(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=headers,
            timestamp_ms=message.timestamp()[1],
            trusted=trusted,
            unreadable=unreadable,
        )

    @property
    def order_key(self) -> str:
        """The record key as text, for outcomes, logs and spans of records whose event has no
        usable order id: as it is when it looks like one, else a digest (it may be anything: a
        producer keying by customer writes e-mail addresses or names, never shown)."""
        if not self.key:
            return ""
        text = self.key[:65].decode("utf-8", errors="replace")
        if "\ufffd" not in text and is_order_id(text) and _NOT_AN_ID.search(text) is None:
            return text
        return f"key-sha256:{hashlib.sha256(self.key).hexdigest()[:16]}"

    def surrogate_event_id(self) -> str:
        """For records we could not decode: stable across redeliveries of the same record."""
        origin = self.origin
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kafka:{origin.topic}/{origin.partition}/{origin.offset}"))

    def foreign_headers(self) -> Headers:
        """The producer's own headers, without any in ordermail's namespace."""
        return [(k, v) for k, v in self.headers if not k.startswith(OWN_PREFIX)]

    def resend_headers(self) -> Headers:
        """What keeps a deferred resend a resend on its next pass."""
        return [] if self.resend is None else [(RESEND_HEADER, str(self.resend).encode())]

    def _read_resend(self) -> int | None:
        raw = {k: v for k, v in self.headers if k == RESEND_HEADER}.get(RESEND_HEADER)
        return None if raw is None else _number(raw, _MAX_INT64)

    def _read_own_headers(self, own: Origin) -> tuple[Origin, RetryState]:
        """A record on the retry topic carries both sets, as :meth:`Origin.headers` and
        :meth:`RetryState.headers` wrote them."""
        values = {k: v for k, v in self.headers if k.startswith(OWN_PREFIX)}  # the last of each wins
        topic = values.get(f"{ORIGIN_PREFIX}topic", b"")
        if _TOPIC.fullmatch(topic) is None:
            raise _Malformed
        partition, offset = (
            _number(values.get(f"{ORIGIN_PREFIX}{f}"), _MAX_INT64) for f in _ORIGIN_FIELDS[1:3]
        )
        raw_timestamp = values.get(f"{ORIGIN_PREFIX}timestamp")
        timestamp = -1 if raw_timestamp == b"-1" else _number(raw_timestamp, _MAX_INT64)  # -1: none given
        if partition != own.partition:  # a deferred event is kept in its input partition's number
            raise _Malformed
        origin = Origin(topic.decode("ascii"), partition, offset, timestamp)
        limits = (_MAX_DEFERRALS, _MAX_ATTEMPTS, _MAX_INT64, _MAX_INT64)
        deferrals, attempts, due, first = (
            _number(values.get(f"{RETRY_PREFIX}{f}"), limit)
            for f, limit in zip(_RETRY_FIELDS, limits, strict=True)
        )
        return origin, RetryState(deferrals, attempts, due, first)


def _number(raw: bytes | None, maximum: int) -> int:
    if raw is None or _DIGITS.fullmatch(raw) is None or int(raw) > maximum:
        raise _Malformed
    return int(raw)


def message_headers(message: Message) -> Headers:
    """Header values as bytes (librdkafka gives None for a header without a value)."""
    raw: Any = message.headers() or []
    return [(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in raw]


def readable_headers(message: Message) -> Headers | None:
    """:func:`message_headers`, or None when they cannot be read: confluent-kafka decodes header
    names as UTF-8 and raises on any that is not (and must not be asked twice: it then returns
    NULLs). Any record a producer wrote may have one."""
    try:
        return message_headers(message)
    except (SystemError, UnicodeDecodeError):
        return None


def plausible_id(value: object) -> str | None:
    """``value`` when it looks like an id (a UUID in any spelling, or letters, digits and
    ``._:-``), else None: an unvalidated event's id may be anything, an e-mail address too."""
    if isinstance(value, str) and (_PLAUSIBLE_ID.fullmatch(value) or is_uuid(value)):
        return value
    return None
