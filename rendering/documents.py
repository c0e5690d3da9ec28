"""What rendering produces, and where its templates live: importable without WeasyPrint.

The service's main process only receives these from the render workers (unpickled, so their
classes must be importable there) and never loads WeasyPrint itself: that keeps its start-up
and memory small.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SET",
    "ENGINES",
    "TEMPLATE_DIR",
    "RenderedAttachment",
    "RenderedMail",
    "safe_filename",
    "set_engines",
    "set_folders",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_SET = "default"
ENGINES = ("weasyprint", "typst")  # what a set's ``engine`` may name; the first is the default
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


def set_folders(template_dir: Path) -> list[Path]:
    """The template sets' folders: ``sets/<name>/`` holding a ``set.toml``."""
    return sorted(p for p in (template_dir / "sets").glob("*") if (p / "set.toml").is_file())


def set_engines(template_dir: Path) -> set[str]:
    """The engines the sets in ``template_dir`` name (without loading them: the fork server
    preloads WeasyPrint only when one does). A set.toml that cannot be read counts as none:
    loading the set says what is wrong with it."""
    found = set()
    for folder in set_folders(template_dir):
        try:
            config = tomllib.loads((folder / "set.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        found.add(str(config.get("engine", ENGINES[0])))
    return found
