"""DKIM signatures made by ordermail verify with dkimpy's verifier, and break when tampered."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery import DkimError, DkimSigner
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakePublisher, FakeRenderer, FakeSmtp, _inbound, _pipeline, _run

if TYPE_CHECKING:
    from collections.abc import Callable

SELECTOR, DOMAIN = "ordermail", "shop.example"


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, Callable[..., bytes]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:  # the DNS TXT record at selector._domainkey.domain
        assert name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode()
        return record

    return private, dns


def test_messages_sent_by_the_pipeline_carry_a_valid_signature(
    key_pair: tuple[bytes, Callable[..., bytes]],
) -> None:
    private, dns = key_pair
    smtp = FakeSmtp()
    pipeline = _pipeline(FakeRenderer(), smtp, FakePublisher(), dkim=DkimSigner(SELECTOR, DOMAIN, private))
    asyncio.run(_run(pipeline, [_inbound(sample_order(3), 0)]))
    (sent,) = smtp.messages
    assert sent.startswith(b"DKIM-Signature:")
    assert dkim.verify(sent, dnsfunc=dns)
    # Tampering with a signed header or the body breaks the signature.
    assert not dkim.verify(sent.replace(b"Subject: ", b"Subject: FWD ", 1), dnsfunc=dns)
    assert not dkim.verify(sent[:-40] + b"x" * 40, dnsfunc=dns)


def test_a_broken_key_is_an_error_not_an_unsigned_message() -> None:
    signer = DkimSigner(SELECTOR, DOMAIN, b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimError):
        signer.sign(b"From: a@shop.example\r\n\r\nbody\r\n")
    assert "broken" not in repr(signer)  # the key never shows in logs
