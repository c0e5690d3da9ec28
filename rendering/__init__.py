"""Renders an ``OrderCompleted`` event into an encrypted PDF receipt and a personal-data-free e-mail.

Public surface (what ``consumer`` uses)::

    renderer = Renderer(password_policy=PasswordPolicy(template), password_hint=None)
    mail = renderer.render_mail(order)        # RenderedMail: subject, bodies, encrypted pdf, timings
    renderer.render_pdf(order)                # unencrypted PDF bytes
    encrypt_pdf(pdf_bytes, user_password)     # AES-256 (R6), verified, fail closed

Every failure is a :class:`RenderError` with a machine-readable ``reason``. Imports ``schemas``
for types only; never ``consumer`` or ``delivery``.
"""

from rendering.encrypt import encrypt_pdf
from rendering.errors import RenderError
from rendering.fonts import harfbuzz_subset_available, weasyprint_uses_harfbuzz_subset
from rendering.password import DEFAULT_PASSWORD_TEMPLATE, PasswordPolicy
from rendering.renderer import TEMPLATE_DIR, RenderedMail, Renderer

__all__ = [
    "DEFAULT_PASSWORD_TEMPLATE",
    "TEMPLATE_DIR",
    "PasswordPolicy",
    "RenderError",
    "RenderedMail",
    "Renderer",
    "encrypt_pdf",
    "harfbuzz_subset_available",
    "weasyprint_uses_harfbuzz_subset",
]
