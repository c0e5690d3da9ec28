"""AES-256 encryption of a finished PDF, checked before it may leave (fail closed).

PDF security handler revision 6 (AES-256, the PDF 2.0 handler). The user password opens the
document; the owner password is random per document and never stored, so nobody can lift the
permissions: printing (high resolution) is allowed, and so are text extraction and extraction
for accessibility (the reader is the person the receipt is about: copying the order number or
an amount must work); modifying, annotating, filling forms and assembling are not. Permissions
are advisory for anyone who holds the user password; the encryption is what protects the data.

After saving, the result is checked: its encryption dictionary must name R6/AES-256 and it
must refuse to open without a password. Any failure raises ``RenderError("encryption_failed")``:
an unchecked PDF is never returned.
"""

from __future__ import annotations

import re
import secrets
from io import BytesIO

import pikepdf

from rendering.errors import RenderError

__all__ = ["PERMISSIONS", "encrypt_pdf"]

PERMISSIONS = pikepdf.Permissions(
    accessibility=True,
    extract=True,
    modify_annotation=False,
    modify_assembly=False,
    modify_form=False,
    modify_other=False,
    print_lowres=True,
    print_highres=True,
)


def encrypt_pdf(pdf: bytes, user_password: str) -> bytes:
    """``pdf`` encrypted with AES-256 (R6) for ``user_password``; a random owner password."""
    if not user_password:
        raise RenderError("encryption_failed", "an empty user password would leave the PDF open")
    try:
        with pikepdf.open(BytesIO(pdf)) as document:
            output = BytesIO()
            document.save(
                output,
                encryption=pikepdf.Encryption(
                    # 128 random bits: each extra byte lengthens every round of the R6 hash.
                    owner=secrets.token_urlsafe(16),
                    user=user_password,
                    R=6,
                    aes=True,
                    metadata=True,
                    allow=PERMISSIONS,
                ),
            )
        encrypted = output.getvalue()
        problem = _check(encrypted)
    except Exception as exc:  # noqa: BLE001 - pikepdf/qpdf raise many types; all mean "not sendable"
        raise RenderError("encryption_failed", f"pikepdf failed ({type(exc).__name__})") from None
    if problem:
        raise RenderError("encryption_failed", problem)
    return encrypted


def _check(encrypted: bytes) -> str | None:
    """Why ``encrypted`` must not be sent, or None when it is as intended.

    Two checks, cheap enough for every document: the encryption dictionary qpdf wrote must
    name the AES-256 handler (V 5, R 6, AESV3 for streams and strings), and the document must
    refuse to open without a password. Re-opening with the user password as well would prove
    nothing more (the R6 hash is deterministic) and costs a further ~8 ms per document.
    """
    marker = _STANDARD_HANDLER.search(encrypted)
    if marker is None:
        return "no encryption dictionary"
    start = encrypted.rfind(b" obj", 0, marker.start())
    entries = encrypted[start : encrypted.find(b"endobj", marker.end())]
    for required, problem in _REQUIRED_ENTRIES:
        if not required.search(entries):
            return problem
    try:
        with pikepdf.open(BytesIO(encrypted)):
            return "the PDF opens without a password"
    except pikepdf.PasswordError:
        return None


_STANDARD_HANDLER = re.compile(rb"/Filter\s*/Standard\b")
_REQUIRED_ENTRIES = (
    (re.compile(rb"/R\s+6\b"), "not security handler revision 6"),
    (re.compile(rb"/V\s+5\b"), "not the AES-256 handler (V 5)"),
    (re.compile(rb"/CFM\s*/AESV3"), "crypt filter is not AES-256"),
    (re.compile(rb"/StmF\s*/StdCF"), "streams are not encrypted with the standard filter"),
    (re.compile(rb"/StrF\s*/StdCF"), "strings are not encrypted with the standard filter"),
)
