"""A return path that names the event (VERP), so a bounce can be traced to exactly one e-mail.

With a return-path domain configured, each message's envelope sender (SMTP ``MAIL FROM``; the
receiving MTA writes it as ``Return-Path``) is ``<local>+<token>@<domain>``. Bounces (DSNs) go
to that address, and whoever receives them (``ordermail feedback``, issue 19) reads the token
back with :meth:`ReturnPath.parse`.

The token is base32 (lower case, no padding: it survives MTAs that fold the local part's case)
of 28 bytes: the event id (a UUID, 16 bytes), the attempt (2 bytes) and the first 10 bytes of an
HMAC-SHA-256 of both under the configured secret. So it carries no personal data, only ids the
outcome topic publishes anyway, and a forged or altered bounce cannot name an arbitrary event:
80 bits of MAC, compared in constant time. 45 characters; with ``+`` the local part stays within
RFC 5321's 64 when ``local`` has at most 18.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field

__all__ = ["MAX_LOCAL_LENGTH", "ReturnPath"]

_CONTEXT = b"ordermail return path v1"
_MAC_BYTES = 10
_TOKEN_LENGTH = 45  # base32 of 16 + 2 + 10 bytes, unpadded
MAX_LOCAL_LENGTH = 64 - 1 - _TOKEN_LENGTH
_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


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

    def address(self, event_id: str, attempt: int) -> str | None:
        """The envelope sender naming this event's attempt; None for an id that is not a UUID."""
        try:
            event = uuid.UUID(event_id).bytes
        except ValueError:
            return None
        payload = event + min(max(attempt, 0), 0xFFFF).to_bytes(2, "big")
        token = base64.b32encode(payload + self._mac(payload)).decode().rstrip("=").lower()
        return f"{self.local}+{token}@{self.domain}"

    def parse(self, address: str) -> tuple[str, int] | None:
        """(event id, attempt) from an address this return path made; None for anything else:
        another domain or local part, a malformed token, or a MAC that does not match."""
        local_part, _, domain = address.strip().strip("<>").rpartition("@")
        base, plus, token = local_part.rpartition("+")
        if not plus or base.lower() != self.local.lower() or domain.lower() != self.domain.lower():
            return None
        if len(token) != _TOKEN_LENGTH:
            return None
        try:
            raw = base64.b32decode(token.upper() + "===")
        except (binascii.Error, ValueError):
            return None
        payload, mac = raw[:18], raw[18:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return str(uuid.UUID(bytes=payload[:16])), int.from_bytes(payload[16:], "big")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, _CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]
