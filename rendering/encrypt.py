"""AES-256 encryption of a finished PDF, checked before it may leave (fail closed).

PDF security handler revision 6 (AES-256, the PDF 2.0 handler). The user password opens the
document; the owner password is random per document and never stored, so nobody can lift the
permissions: printing (high resolution) is allowed, and so are text extraction and extraction
for accessibility (the reader is the person the receipt is about: copying the order number or
an amount must work); modifying, annotating, filling forms and assembling are not. Permissions
are advisory for anyone who holds the user password; the encryption is what protects the data.

After saving, the result is opened again: it must be encrypted with R6/AES-256, open with the
user password (and not as owner), have the same page count, and refuse to open without a
password. Any failure raises ``RenderError("encryption_failed")``: an unchecked PDF is never
returned.
"""

from __future__ import annotations

import secrets
from io import BytesIO

import pikepdf
from pikepdf.models import EncryptionMethod

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
            pages = len(document.pages)
            output = BytesIO()
            document.save(
                output,
                encryption=pikepdf.Encryption(
                    owner=secrets.token_urlsafe(32),
                    user=user_password,
                    R=6,
                    aes=True,
                    metadata=True,
                    allow=PERMISSIONS,
                ),
            )
        encrypted = output.getvalue()
        problem = _check(encrypted, user_password, pages)
    except Exception as exc:  # noqa: BLE001 - pikepdf/qpdf raise many types; all mean "not sendable"
        raise RenderError("encryption_failed", f"pikepdf failed ({type(exc).__name__})") from None
    if problem:
        raise RenderError("encryption_failed", problem)
    return encrypted


def _check(encrypted: bytes, user_password: str, pages: int) -> str | None:
    """Why ``encrypted`` must not be sent, or None when it is as intended."""
    try:
        with pikepdf.open(BytesIO(encrypted)):
            return "the PDF opens without a password"
    except pikepdf.PasswordError:
        pass
    with pikepdf.open(BytesIO(encrypted), password=user_password) as document:
        info, allowed = document.encryption, document.allow
        aes256 = EncryptionMethod.aesv3
        problems = (
            (not document.is_encrypted or info.R != 6 or info.bits != 256, "not revision 6, 256 bits"),
            (info.stream_method != aes256 or info.string_method != aes256, "streams or strings not AES-256"),
            (not document.user_password_matched or document.owner_password_matched, "passwords misbehave"),
            (len(document.pages) != pages, "the encrypted PDF lost pages"),
            (
                allowed.modify_other or allowed.modify_assembly or not allowed.print_highres,
                "wrong permissions",
            ),
        )
    return next((problem for failed, problem in problems if failed), None)
