"""A return path that names the event (VERP), so a bounce can be traced to exactly one e-mail.

With a return-path domain configured, each message's envelope sender (SMTP ``MAIL FROM``; the
receiving MTA writes it as ``Return-Path``) is ``<local>+<token>@<domain>``. Bounces (DSNs) go
to that address, and whoever receives them (``ordermail feedback``, issue 19) reads the token
back with :meth:`ReturnPath.parse`.

The token is base32 (lower case, no padding: it survives MTAs that fold the local part's case)
of 30 bytes: the event id (a UUID, 16 bytes), the attempt (1 byte, capped at 255), 8 bytes of an
HMAC-SHA-256 of both under the configured secret, and 5 bytes of another HMAC binding the
recipient's address. So it carries no personal data, only ids the outcome topic publishes
anyway; a forged or altered bounce cannot name an arbitrary event (64 bits of MAC, compared in
constant time), and a report holding a genuine token (a customer's own e-mail) cannot claim
another recipient: the feedback service suppresses an address only when
:meth:`ReturnPath.names_recipient` says the token was made for it. 48 characters; with ``+``
the local part stays within RFC 5321's 64 when ``local`` has at most 15.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field

from delivery.suppression import InvalidAddress, normalise

__all__ = ["MAX_LOCAL_LENGTH", "ReturnPath", "Token"]

_CONTEXT = b"ordermail return path v2"
_RECIPIENT_CONTEXT = b"ordermail return path recipient v2"
_PAYLOAD_BYTES = 17  # event id 16, attempt 1
_MAC_BYTES = 8
_RECIPIENT_MAC_BYTES = 5
_TOKEN_LENGTH = 48  # base32 of 17 + 8 + 5 bytes, unpadded
MAX_LOCAL_LENGTH = 64 - 1 - _TOKEN_LENGTH
_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


@dataclass(frozen=True)
class Token:
    """What a genuine return-path address says: the event, its attempt, and (opaque) which
    recipient it was made for."""

    event_id: str
    attempt: int
    recipient_mac: bytes = field(repr=False)


@dataclass(frozen=True)
class ReturnPath:
    local: str
    domain: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not (_LOCAL.fullmatch(self.local) and len(self.local) <= MAX_LOCAL_LENGTH):
            raise ValueError(
                "return-path local part (ORDERMAIL_MAIL_FROM's): letters, digits, '.', '_', '-', "
                f"at most {MAX_LOCAL_LENGTH}"
            )
        if not _DOMAIN.fullmatch(self.domain):
            raise ValueError("return-path domain: a DNS name")
        if len(self.secret) < 16:
            raise ValueError("return-path secret: at least 16 bytes")

    def address(self, event_id: str, attempt: int, recipient: str) -> str | None:
        """The envelope sender naming this event's attempt to ``recipient``; None for an id that
        is not a UUID."""
        try:
            event = uuid.UUID(event_id).bytes
        except ValueError:
            return None
        payload = event + min(max(attempt, 0), 0xFF).to_bytes(1, "big")
        raw = payload + self._mac(payload) + self._recipient_mac(payload, recipient)
        token = base64.b32encode(raw).decode().rstrip("=").lower()
        return f"{self.local}+{token}@{self.domain}"

    def parse(self, address: str) -> Token | None:
        """The token of an address this return path made; None for anything else: another
        domain or local part, a malformed token, or a MAC that does not match."""
        local_part, _, domain = address.strip().strip("<>").rpartition("@")
        base, plus, token = local_part.rpartition("+")
        if not plus or base.lower() != self.local.lower() or domain.lower() != self.domain.lower():
            return None
        if len(token) != _TOKEN_LENGTH:
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        payload, mac = raw[:_PAYLOAD_BYTES], raw[_PAYLOAD_BYTES : _PAYLOAD_BYTES + _MAC_BYTES]
        if len(raw) != _PAYLOAD_BYTES + _MAC_BYTES + _RECIPIENT_MAC_BYTES:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return Token(str(uuid.UUID(bytes=payload[:16])), payload[16], raw[_PAYLOAD_BYTES + _MAC_BYTES :])

    def names_recipient(self, token: Token, recipient: str) -> bool:
        """Whether ``token`` was made for ``recipient`` (compared without case: MTAs fold it)."""
        payload = uuid.UUID(token.event_id).bytes + token.attempt.to_bytes(1, "big")
        return hmac.compare_digest(token.recipient_mac, self._recipient_mac(payload, recipient))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, _CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def _recipient_mac(self, payload: bytes, recipient: str) -> bytes:
        # The suppression list's own form of the address: a bounce naming it in capitals, or its
        # domain as an A-label (xn--), is about the same address the order gave.
        bare = recipient.strip().strip("<>")
        try:
            folded = normalise(bare).encode()
        except InvalidAddress:
            folded = bare.lower().encode("utf-8", "surrogatepass")
        digest = hmac.new(self.secret, _RECIPIENT_CONTEXT + payload + b"\0" + folded, hashlib.sha256).digest()
        return digest[:_RECIPIENT_MAC_BYTES]
