"""Order -> receipt HTML -> PDF -> encrypted PDF plus the e-mail's subject and bodies.

One :class:`Renderer` per process (or worker): building it warms the Jinja2 sandbox, the
templates, WeasyPrint's ``FontConfiguration`` and the pre-parsed receipt CSS, and lays out a
tiny document so fontconfig and Pango are loaded before the first order. It is not meant to be
shared between threads.

Templates are trusted files from ``template_dir``; event values only ever reach them as data, in
a :class:`~jinja2.sandbox.SandboxedEnvironment` with ``StrictUndefined``. HTML templates
autoescape; the plain-text ones (``*.txt``) do not. Resources are fetched only through
:class:`~rendering.fetcher.AssetFetcher` (``assets/`` inside ``template_dir`` and ``data:``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration

from rendering.context import attachment_filename, mail_context, receipt_context
from rendering.encrypt import encrypt_pdf
from rendering.errors import RenderError
from rendering.fetcher import AssetFetcher, install_log_redaction
from rendering.fonts import displayable
from rendering.locales import SUPPORTED_LANGUAGES, choose_language
from rendering.messages import DEFAULT_PASSWORD_EXPLANATION, GENERIC_PASSWORD_EXPLANATION
from rendering.password import PasswordPolicy

if TYPE_CHECKING:
    from schemas.model import OrderCompleted

__all__ = ["TEMPLATE_DIR", "RenderedMail", "Renderer"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_WARM_UP_HTML = "<p>Warm-up 0123456789 <b>€ $ £ ¥ áéíóúñ</b></p>"


@dataclass(frozen=True)
class RenderedMail:
    """Everything the e-mail needs. The bodies carry no personal data; the PDF does."""

    subject: str
    text_body: str = field(repr=False)
    html_body: str = field(repr=False)
    attachment_filename: str
    pdf: bytes = field(repr=False)
    pages: int
    render_ms: float
    encrypt_ms: float


class _MailTemplates(NamedTuple):
    subject: Template
    text: Template
    html: Template


class _Pdf(NamedTuple):
    data: bytes
    pages: int
    render_ms: float


class Renderer:
    """Renders orders; see the module docstring."""

    def __init__(
        self,
        template_dir: Path = TEMPLATE_DIR,
        password_policy: PasswordPolicy | None = None,
        password_hint: str | None = None,
    ) -> None:
        self.template_dir = Path(template_dir).resolve()
        self.password_policy = password_policy or PasswordPolicy()
        self.password_hint = password_hint.strip() if password_hint and password_hint.strip() else None
        install_log_redaction()
        self._fetcher = AssetFetcher(self.template_dir / "assets")
        self._base_url = self.template_dir.as_uri() + "/"
        environment = SandboxedEnvironment(
            loader=FileSystemLoader(self.template_dir),
            autoescape=select_autoescape(
                enabled_extensions=("html",),
                disabled_extensions=("txt",),
                default=True,
                default_for_string=True,
            ),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        try:
            self._receipt = environment.get_template("receipt.html")
            self._mail = {
                language: _MailTemplates(
                    environment.get_template(f"mail/{language}/subject.txt"),
                    environment.get_template(f"mail/{language}/body.txt"),
                    environment.get_template(f"mail/{language}/body.html"),
                )
                for language in SUPPORTED_LANGUAGES
            }
        except (TemplateError, OSError) as exc:
            raise RenderError("template_error", f"cannot load templates ({type(exc).__name__})") from exc
        self._fonts = FontConfiguration()
        try:
            self._css = CSS(
                filename=self.template_dir / "receipt.css", font_config=self._fonts, url_fetcher=self._fetcher
            )
        except OSError as exc:
            raise RenderError("template_error", "cannot load receipt.css") from exc
        self._warm_up()

    def _warm_up(self) -> None:
        displayable("")  # reads the font's character map once
        self._pdf(_WARM_UP_HTML)

    def render_html(self, order: OrderCompleted) -> str:
        """The receipt as HTML (with personal data: it goes only into the encrypted PDF)."""
        try:
            return self._receipt.render(receipt_context(order, choose_language(order["locale"])))
        except Exception as exc:
            raise RenderError("template_error", f"receipt template failed ({type(exc).__name__})") from exc

    def render_pdf(self, order: OrderCompleted) -> bytes:
        """The receipt as an unencrypted PDF."""
        return self._pdf(self.render_html(order)).data

    def render_mail(self, order: OrderCompleted, *, encrypt: bool = True) -> RenderedMail:
        """Receipt PDF (encrypted unless ``encrypt=False``), subject, text and HTML bodies."""
        password = self.password_policy.password_for(order) if encrypt else None  # fail before rendering
        language = choose_language(order["locale"])
        pdf = self._pdf(self.render_html(order))
        data, encrypt_ms = pdf.data, 0.0
        if password is not None:
            started = time.perf_counter()
            data = encrypt_pdf(pdf.data, password)
            encrypt_ms = (time.perf_counter() - started) * 1000
        filename = attachment_filename(order["order_id"], language)
        context = mail_context(
            order,
            filename=filename,
            password_explanation=self._password_explanation(language),
            encrypted=password is not None,
        )
        templates = self._mail[language]
        try:
            subject = " ".join(templates.subject.render(context).split())  # one line: no CR/LF
            text_body = templates.text.render(context).strip() + "\n"
            html_body = templates.html.render(context)
        except Exception as exc:
            raise RenderError("template_error", f"mail template failed ({type(exc).__name__})") from exc
        return RenderedMail(
            subject=subject,
            text_body=text_body,
            html_body=html_body,
            attachment_filename=filename,
            pdf=data,
            pages=pdf.pages,
            render_ms=pdf.render_ms,
            encrypt_ms=encrypt_ms,
        )

    def _password_explanation(self, language: str) -> str:
        if self.password_hint:
            return self.password_hint
        if self.password_policy.is_default:
            return DEFAULT_PASSWORD_EXPLANATION[language]
        return GENERIC_PASSWORD_EXPLANATION[language]

    def _pdf(self, html: str) -> _Pdf:
        started = time.perf_counter()
        try:
            document = HTML(string=html, base_url=self._base_url, url_fetcher=self._fetcher).render(
                font_config=self._fonts, stylesheets=[self._css]
            )
            data = document.write_pdf()
        except Exception as exc:
            raise RenderError("render_error", f"WeasyPrint failed ({type(exc).__name__})") from exc
        if not isinstance(data, bytes) or not data.startswith(b"%PDF-"):
            raise RenderError("render_error", "WeasyPrint returned no PDF")
        return _Pdf(data, len(document.pages), (time.perf_counter() - started) * 1000)
