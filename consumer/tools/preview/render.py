"""Building one preview: an order rendered with a template set and a locale exactly as the service
would, plus what the customer cannot see directly (each PDF unencrypted, an image of every page) and
the composed message (``consumer.processing.mail.receipt_message``). No web page, no command line.

Sample data only: the PDF password is part of the preview (it is made up, like the customer).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.processing.mail import receipt_message
from rendering import Renderer, RenderError
from schemas import InvalidEvent, OrderCompleted, validate_order
from schemas.samples import SCRIPT_SAMPLES, sample_order, script_sample

__all__ = ["Preview", "PreviewError", "describe", "load_event", "render_preview", "sample"]

SENDER = "preview@ordermail.invalid"
_DOMAIN = "ordermail.invalid"
_MANIFEST = ".preview-files"  # what the last run wrote, so the next one removes only its own files


class PreviewError(Exception):
    """A preview failed for a reason the page and the command can name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Preview:
    subject: str
    text_body: str
    html_body: str
    password: str | None  # None when no attachment is encrypted
    template_set: str
    language: str
    files: Mapping[str, bytes]  # file name -> content
    pages: tuple[str, ...]  # the page images, in order

    def write(self, folder: Path) -> None:
        """Writes the files, after removing those of the previous preview in that folder."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / _MANIFEST
        if manifest.is_file():
            for name in manifest.read_text(encoding="utf-8").splitlines():
                if name and Path(name).name == name:
                    (folder / name).unlink(missing_ok=True)
        for name, content in self.files.items():
            (folder / name).write_bytes(content)
        manifest.write_text("".join(f"{name}\n" for name in self.files), encoding="utf-8")


def sample(name: str) -> OrderCompleted:
    """``long``: sample 0 with 40 lines (several pages); a number: that sample seed; a script
    (``japanese``, ``arabic``, ...): a customer writing in it."""
    if name == "long":
        return sample_order(0, lines=40)
    if name.isdecimal():
        return sample_order(int(name))
    if name in SCRIPT_SAMPLES:
        return script_sample(name)
    raise ValueError(f"no sample {name!r}: use a number, 'long' or one of {', '.join(SCRIPT_SAMPLES)}")


def load_event(path: Path) -> OrderCompleted:
    """An ``OrderCompleted`` event from JSON (``occurred_at`` in epoch milliseconds or ISO 8601)."""
    try:
        order: OrderCompleted = json.loads(path.read_text(encoding="utf-8"), object_hook=_parse_timestamps)
    except (OSError, ValueError) as exc:
        raise PreviewError("invalid_event_file", f"{path.name}: {type(exc).__name__}: {exc}") from None
    return order


def _parse_timestamps(obj: dict[str, Any]) -> dict[str, Any]:
    """``occurred_at`` may be epoch milliseconds (as on the wire) or ISO 8601 text."""
    value = obj.get("occurred_at")
    if isinstance(value, int):
        obj["occurred_at"] = datetime.fromtimestamp(value / 1000).astimezone()
    elif isinstance(value, str):
        obj["occurred_at"] = datetime.fromisoformat(value)
    return obj


def render_preview(
    renderer: Renderer, order: OrderCompleted, *, template_set: str | None = None, locale: str | None = None
) -> Preview:
    """Renders the mail as the service would (``locale`` replaces the event's, ``template_set`` the
    brand's choice) and adds the unencrypted PDFs, the page images and the composed message."""
    order = copy.copy(order)
    if locale:
        order["locale"] = locale
    if template_set is not None and template_set not in renderer.set_names:
        raise PreviewError(
            "unknown_set", f"no template set {template_set!r} (there are: {renderer.set_names})"
        )
    try:
        validate_order(order)
    except KeyError as exc:
        raise PreviewError("invalid_event", f"missing field {exc}") from None
    mail = renderer.render_mail(order, template_set=template_set, keep_plain=True)
    files = {
        "subject.txt": f"{mail.subject}\n".encode(),
        "body.txt": mail.text_body.encode(),
        "body.html": mail.html_body.encode(),
    }
    pages: list[str] = []
    for attachment in mail.attachments:
        stem = attachment.filename.removesuffix(".pdf")
        plain = attachment.plain if attachment.plain is not None else attachment.data
        if attachment.encrypted and attachment.plain is None:
            raise PreviewError("internal_error", "the renderer returned no unencrypted PDF")
        files[attachment.filename] = plain
        if attachment.encrypted:
            files[f"{stem}.encrypted.pdf"] = attachment.data
        for number, image in enumerate(page_images(plain), start=1):
            files[f"page-{stem}-{number}.png"] = image
            pages.append(f"page-{stem}-{number}.png")
    files["message.eml"] = receipt_message(order, mail, sender=SENDER, message_domain=_DOMAIN)
    encrypted = any(attachment.encrypted for attachment in mail.attachments)
    return Preview(
        subject=mail.subject,
        text_body=mail.text_body,
        html_body=mail.html_body,
        password=renderer.password_policy.password_for(order) if encrypted else None,
        template_set=mail.template_set,
        language=mail.language,
        files=files,
        pages=tuple(pages),
    )


def page_images(pdf: bytes) -> list[bytes]:
    """One PNG per page (``pdftoppm -png -r 80``, from poppler-utils)."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        raise PreviewError(
            "pdftoppm_missing", "pdftoppm not found: install poppler-utils (deploy/local/system-deps)"
        )
    with tempfile.TemporaryDirectory(prefix="ordermail-preview-") as folder:
        source = Path(folder) / "document.pdf"
        source.write_bytes(pdf)
        try:
            subprocess.run(  # noqa: S603 — fixed arguments, our own temporary files
                [pdftoppm, "-png", "-r", "80", str(source), str(Path(folder) / "page")],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise PreviewError("page_images_failed", f"pdftoppm failed ({type(exc).__name__})") from None
        images = sorted(Path(folder).glob("page-*.png"), key=lambda path: int(path.stem.rsplit("-", 1)[1]))
        return [image.read_bytes() for image in images]


def describe(error: Exception) -> str:
    """A classified one-line message (reasons as the service reports them; never event values)."""
    if isinstance(error, RenderError | PreviewError):
        return str(error)
    if isinstance(error, InvalidEvent):
        return f"invalid_event: {error.reason} (the service would reject this event)"
    return f"internal_error: {type(error).__name__}"
