"""DKIM signing (RFC 6376) of the finished message, when the operator configured a key.

Signs the headers a forger would want to change (From, To, Subject, Date, Message-ID and the
MIME structure) and the body; relaxed/simple canonicalisation, rsa-sha256.
The private key stays in memory; it is never logged or repr'd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dkim

__all__ = ["DkimSigner"]

SIGNED_HEADERS = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type")


class DkimError(Exception):
    """The message could not be signed (a broken key): never send it unsigned by surprise."""


@dataclass(frozen=True)
class DkimSigner:
    selector: str
    domain: str
    private_key: bytes = field(repr=False)

    @classmethod
    def from_file(cls, path: Path, *, selector: str, domain: str) -> DkimSigner:
        return cls(selector, domain, path.read_bytes())

    def sign(self, message: bytes) -> bytes:
        """The message with its ``DKIM-Signature`` header in front."""
        try:
            signature = dkim.sign(
                message,
                self.selector.encode(),
                self.domain.encode(),
                self.private_key,
                include_headers=list(SIGNED_HEADERS),
            )
        except (dkim.DKIMException, ValueError) as error:  # a malformed key fails in base64 decoding
            raise DkimError(type(error).__name__) from None
        return bytes(signature) + message
