"""What rendering produces, and where its templates live: importable without WeasyPrint.

The service's main process only receives these from the render workers (unpickled, so their
classes must be importable there) and never loads WeasyPrint itself: that keeps its start-up
and memory small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_SET", "TEMPLATE_DIR", "RenderedAttachment", "RenderedMail", "safe_filename"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_SET = "default"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RenderedAttachment:
    filename: str
    data: bytes = field(repr=False)  # encrypted when ``encrypted``
    pages: int
    encrypted: bool
    plain: bytes | None = field(default=None, repr=False)  # the unencrypted PDF, only when asked for


@dataclass(frozen=True)
class RenderedMail:
    """Everything the e-mail needs. The bodies carry no personal data; the attachments do."""

    subject: str
    text_body: str = field(repr=False)
    html_body: str = field(repr=False)
    attachments: tuple[RenderedAttachment, ...]
    render_ms: float
    encrypt_ms: float
    template_set: str
    language: str
    engine: str = "weasyprint"  # what laid out the documents: the set's engine

    # The first attachment is the main document (the receipt).
    @property
    def pdf(self) -> bytes:
        return self.attachments[0].data

    @property
    def attachment_filename(self) -> str:
        return self.attachments[0].filename

    @property
    def pages(self) -> int:
        return sum(attachment.pages for attachment in self.attachments)


def safe_filename(name: str) -> str:
    """Letters, digits, ``.``, ``-`` and ``_`` only, ending in ``.pdf``."""
    stem = _UNSAFE_FILENAME.sub("_", name.removesuffix(".pdf")).strip("._")[:80] or "document"
    return f"{stem}.pdf"
