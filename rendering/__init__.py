"""Renders an ``OrderCompleted`` event into an encrypted PDF receipt and a personal-data-free e-mail.

Public surface (what ``consumer`` uses)::

    renderer = Renderer(password_policy=PasswordPolicy(template), password_hint=None)
    mail = renderer.render_mail(order)        # RenderedMail: subject, bodies, attachments, timings
    renderer.render_pdf(order)                # the main document as unencrypted PDF bytes
    renderer.validate()                       # every set, language and sample renders (start-up)
    encrypt_pdf(pdf_bytes, user_password)     # AES-256 (R6), verified, fail closed

Templates come in sets (``templates/sets/<name>/``, see ``template_sets.py``); an order's
``brand`` picks its set, else the default one.

Every failure is a :class:`RenderError` with a machine-readable ``reason``. Imports ``schemas``
for types and sample orders only; never ``consumer`` or ``delivery``.

``Renderer`` is imported on first use: it loads the engines (WeasyPrint ~0.6 s and ~60 MB, only
when a set uses it; Typst), which only the render workers and the CLI's rendering commands need,
never the service's main process.
"""

from typing import TYPE_CHECKING, Any

from rendering.documents import DEFAULT_SET, TEMPLATE_DIR, RenderedAttachment, RenderedMail
from rendering.encrypt import encrypt_pdf
from rendering.errors import RenderError
from rendering.fonts import harfbuzz_subset_available, weasyprint_uses_harfbuzz_subset
from rendering.password import DEFAULT_PASSWORD_TEMPLATE, PasswordPolicy

if TYPE_CHECKING:
    from rendering.renderer import Renderer

__all__ = [
    "DEFAULT_PASSWORD_TEMPLATE",
    "DEFAULT_SET",
    "TEMPLATE_DIR",
    "PasswordPolicy",
    "RenderError",
    "RenderedAttachment",
    "RenderedMail",
    "Renderer",
    "encrypt_pdf",
    "harfbuzz_subset_available",
    "weasyprint_uses_harfbuzz_subset",
]


def __getattr__(name: str) -> Any:
    if name == "Renderer":
        from rendering.renderer import Renderer

        return Renderer
    raise AttributeError(f"module 'rendering' has no attribute {name!r}")
