"""Order -> documents (HTML -> PDF -> encrypted PDF) plus the e-mail's subject and bodies.

One :class:`Renderer` per process (or worker): building it loads and compiles every template
set (see ``template_sets.py``) and lays out a tiny document per engine, so that fonts and
libraries are loaded before the first order. WeasyPrint (its ``FontConfiguration``, the pre-parsed
stylesheets) is imported only when a set uses it: a folder of Typst sets runs without it. A
renderer is not meant to be shared between threads.

Templates are trusted files; event values only ever reach them as data, in a
:class:`~jinja2.sandbox.SandboxedEnvironment` with ``StrictUndefined``. HTML templates
autoescape; the plain-text ones (``*.txt``) do not. Resources are fetched only through
:class:`~rendering.fetcher.AssetFetcher` (the set's and ``shared/`` files, and ``data:``).

Only WeasyPrint's public API is used here. Its private API (the rendering shortcuts) is used by
:mod:`rendering.weasyprint_overrides` alone, installed (``weasyprint_setup``) with the first
WeasyPrint set, on the checked WeasyPrint release only; on any other release WeasyPrint runs stock,
after one warning naming its version.
"""

from __future__ import annotations

import re
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from rendering.context import document_context, filename_context, mail_context, public_context
from rendering.documents import DEFAULT_SET, TEMPLATE_DIR, RenderedAttachment, RenderedMail, safe_filename
from rendering.encrypt import encrypt_pdf
from rendering.errors import RenderError
from rendering.fonts import displayable
from rendering.password import PasswordPolicy
from rendering.template_sets import TemplateSet, load_sets
from rendering.typst_engine import as_data

if TYPE_CHECKING:
    from collections.abc import Sequence

    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from rendering.template_sets import AttachmentTemplate, Texts
    from schemas.model import OrderCompleted

__all__ = ["DEFAULT_SET", "TEMPLATE_DIR", "RenderedAttachment", "RenderedMail", "Renderer"]

_WARM_UP_HTML = "<p>Warm-up 0123456789 <b>€ $ £ ¥ áéíóúñ</b></p>"
_SLUG = re.compile(r"[^a-z0-9]+")


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
        default_set: str = DEFAULT_SET,
    ) -> None:
        self.template_dir = Path(template_dir).resolve()
        self.password_policy = password_policy or PasswordPolicy()
        self.password_hint = password_hint.strip() if password_hint and password_hint.strip() else None
        # Images by URL (only the sets' own files and data: URLs can be fetched): the logo is
        # read and parsed once per process instead of once per document. Bounded by the files of
        # the sets, and workers are replaced after ORDERMAIL_WORKER_MAX_DOCUMENTS anyway.
        self._image_cache: dict[str, Any] = {}
        self._font_config: FontConfiguration | None = None  # WeasyPrint's, made for its first set
        self._sets = load_sets(self.template_dir, self._weasyprint_fonts)
        if default_set not in self._sets:
            raise RenderError("template_error", f"no template set named {default_set!r}")
        self.default_set = default_set
        self._warm_up()

    @property
    def set_names(self) -> tuple[str, ...]:
        return tuple(self._sets)

    def languages(self, set_name: str) -> tuple[str, ...]:
        return self._sets[set_name].languages

    def set_for(self, order: OrderCompleted) -> str:
        """The set named like the order's brand (``Nordic Living`` -> ``nordic-living``), else the default."""
        slug = _SLUG.sub("-", (order.get("brand") or "").lower()).strip("-")
        return slug if slug in self._sets else self.default_set

    def _warm_up(self) -> None:
        displayable("")  # reads the font's character map once
        for chosen in self._sets.values():
            if chosen.engine == "weasyprint":  # fontconfig and Pango, loaded once
                self._pdf(_WARM_UP_HTML, chosen, ())
                break
        # Each Typst set's compiler, warm: its document parsed, the Latin faces loaded (~50 ms).
        order = self.warm_up_order()
        for chosen in self._sets.values():
            if chosen.engine == "typst":
                try:
                    self._document(order, chosen, chosen.attachments[0], chosen.default_language)
                except RenderError as error:
                    raise RenderError(error.reason, f"set {chosen.name!r}, warm-up: {error}") from error

    @staticmethod
    def warm_up_order() -> OrderCompleted:
        """An order to warm a renderer up with: Latin text only. Typst reads a face whole when a
        character first needs it, and keeps it: a CJK order would put ~50 MB of faces, an emoji
        ~11 MB, into every worker before any order asked for them."""
        from schemas.samples import sample_order

        order = sample_order(7, lines=2)  # en-GB, no gift message
        order["locale"] = "en-GB"
        return order

    def render_html(self, order: OrderCompleted, *, template_set: str | None = None) -> str:
        """The main document's (the receipt's) HTML (a WeasyPrint set's)."""
        chosen = self._sets[template_set or self.set_for(order)]
        if chosen.engine != "weasyprint":
            raise ValueError(f"set {chosen.name!r} is laid out by {chosen.engine}, not from HTML")
        language = chosen.language_for(order["locale"])
        return self._html(order, chosen, chosen.attachments[0], language)

    def render_pdf(self, order: OrderCompleted, *, template_set: str | None = None) -> bytes:
        """The main document (the receipt) as an unencrypted PDF."""
        chosen = self._sets[template_set or self.set_for(order)]
        language = chosen.language_for(order["locale"])
        return self._document(order, chosen, chosen.attachments[0], language).data

    def engine(self, set_name: str) -> str:
        """What lays out the set's documents: ``weasyprint`` or ``typst``."""
        return self._sets[set_name].engine

    def render_mail(
        self,
        order: OrderCompleted,
        *,
        encrypt: bool = True,
        template_set: str | None = None,
        keep_plain: bool = False,
    ) -> RenderedMail:
        """Every attachment of the set (encrypted where the set says so, unless ``encrypt=False``),
        the subject and both bodies. ``keep_plain`` also returns the unencrypted PDFs (previews)."""
        password = self.password_policy.password_for(order) if encrypt else None  # fail before rendering
        chosen = self._sets[template_set or self.set_for(order)]
        language = chosen.language_for(order["locale"])
        texts = chosen.texts[language]
        attachments: list[RenderedAttachment] = []
        render_ms = encrypt_ms = 0.0
        for spec in chosen.attachments:
            pdf = self._document(order, chosen, spec, language)
            render_ms += pdf.render_ms
            data, encrypted = pdf.data, password is not None and spec.encrypted
            if encrypted:
                started = time.perf_counter()
                data = encrypt_pdf(pdf.data, password or "")
                encrypt_ms += (time.perf_counter() - started) * 1000
            filename = self._filename(order, spec, language, texts)
            plain = pdf.data if keep_plain or not encrypted else None
            attachments.append(RenderedAttachment(filename, data, pdf.pages, encrypted, plain))
        subject, text_body, html_body = self._mail_texts(
            order, chosen, texts, attachments, encrypted=any(a.encrypted for a in attachments)
        )
        return RenderedMail(
            subject=subject,
            text_body=text_body,
            html_body=html_body,
            attachments=tuple(attachments),
            render_ms=render_ms,
            encrypt_ms=encrypt_ms,
            template_set=chosen.name,
            language=language,
            engine=chosen.engine,
        )

    def validate(self, share: tuple[int, int] = (0, 1), *, every_language: bool = False) -> list[str]:
        """Renders every set with built-in sample orders (one page and several), so a broken
        template stops a deploy instead of dead-lettering live events: as PDFs in the set's
        default language (in every language with ``every_language``), and the documents' HTML,
        file names and e-mail in each other language (a translation cannot change the layout's
        code paths, and ~1 ms instead of ~100 keeps the start-up short). Returns one line per
        rendering; raises :class:`RenderError` naming the set, language and sample.
        ``share`` = (i, n): only every n-th rendering from the i-th (n workers split the work)."""
        from schemas.samples import sample_order

        index, of = share
        # Sample by sample, so that every n-th rendering gives each worker a fair share of the
        # several-page ones (about twice the work): the check ends when its slowest worker does.
        plan = [
            (name, language, sample, lines, every_language or language == chosen.default_language)
            for sample, lines in (("one page", 2), ("several pages", 15))
            for name, chosen in self._sets.items()
            for language in chosen.languages
        ]
        report = []
        for name, language, sample, lines, as_pdf in plan[index::of]:
            order = sample_order(7, lines=lines)
            order["locale"] = language
            try:
                if as_pdf:
                    mail = self.render_mail(order, template_set=name)
                    done = ", ".join(f"{a.filename} {a.pages} p." for a in mail.attachments)
                else:
                    done = self._check_texts(order, self._sets[name], language)
            except RenderError as error:
                where = f"set {name!r}, {language}, {sample}"
                raise RenderError(error.reason, f"{where}: {error}") from error
            report.append(f"{name} {language} {sample}: {done}")
        return report

    def _check_texts(self, order: OrderCompleted, chosen: TemplateSet, language: str) -> str:
        texts = chosen.texts[language]
        names = []
        for spec in chosen.attachments:
            if spec.typst is not None:  # its data; laid out in the default language only: each
                # script's faces would stay in the worker's memory (a CJK face ~20 MB)
                spec.typst.data_file(as_data(self._context(order, chosen, spec, language)))
            else:
                self._html(order, chosen, spec, language)
            names.append(self._filename(order, spec, language, texts))
        placeholders = tuple(RenderedAttachment(name, b"", 0, spec.encrypted) for name in names)
        self._mail_texts(order, chosen, texts, placeholders, encrypted=True)
        return ", ".join(names) + " (HTML and e-mail)"

    def _mail_texts(
        self,
        order: OrderCompleted,
        chosen: TemplateSet,
        texts: Texts,
        attachments: Sequence[RenderedAttachment],
        *,
        encrypted: bool,
    ) -> tuple[str, str, str]:
        """The subject (one line: no CR/LF), the text body and the HTML body."""
        context = mail_context(
            order,
            texts,
            shop=self._shop(order, chosen),
            filenames=[attachment.filename for attachment in attachments],
            password_explanation=self._password_explanation(texts.password_default, texts.password_generic),
            encrypted=encrypted,
        )
        templates = chosen.mail[texts.language]
        try:
            subject = " ".join(templates.subject.render(context).split())
            return subject, templates.text.render(context).strip() + "\n", templates.html.render(context)
        except Exception as exc:
            raise RenderError("template_error", f"mail template failed ({type(exc).__name__})") from exc

    def _document(
        self, order: OrderCompleted, chosen: TemplateSet, spec: AttachmentTemplate, language: str
    ) -> _Pdf:
        """One attachment as an unencrypted PDF, by the set's engine."""
        if spec.typst is None:
            return self._pdf(self._html(order, chosen, spec, language), chosen, spec.stylesheets)
        started = time.perf_counter()
        data, pages = spec.typst.render(language, as_data(self._context(order, chosen, spec, language)))
        return _Pdf(data, pages, (time.perf_counter() - started) * 1000)

    def _context(
        self, order: OrderCompleted, chosen: TemplateSet, spec: AttachmentTemplate, language: str
    ) -> dict[str, Any]:
        """What the document sees: the whole order when it is encrypted, else no personal data."""
        build = document_context if spec.encrypted else public_context
        try:
            return build(
                order,
                language,
                chosen.texts[language],
                shop=self._shop(order, chosen),
                logo=self._logo(order, chosen),
            )
        except Exception as exc:
            raise RenderError("template_error", f"document context failed ({type(exc).__name__})") from exc

    def _html(
        self, order: OrderCompleted, chosen: TemplateSet, spec: AttachmentTemplate, language: str
    ) -> str:
        context = self._context(order, chosen, spec, language)
        try:
            return spec.template[language].render(context)
        except Exception as exc:
            raise RenderError("template_error", f"document template failed ({type(exc).__name__})") from exc

    @staticmethod
    def _filename(order: OrderCompleted, spec: AttachmentTemplate, language: str, texts: Any) -> str:
        try:
            return safe_filename(spec.filename.render(filename_context(order, language, texts)))
        except Exception as exc:
            raise RenderError("template_error", f"file name pattern failed ({type(exc).__name__})") from exc

    def _shop(self, order: OrderCompleted, chosen: TemplateSet) -> str:
        return (order.get("brand") or "").strip() or chosen.shop_name

    def _logo(self, order: OrderCompleted, chosen: TemplateSet) -> bool:
        """The set's logo, unless the event names a brand the set does not stand for."""
        brand = (order.get("brand") or "").strip()
        return chosen.has_logo and (not brand or self.set_for(order) == chosen.name != self.default_set)

    def _password_explanation(self, default: str, generic: str) -> str:
        if self.password_hint:
            return self.password_hint
        return default if self.password_policy.is_default else generic

    def _weasyprint_fonts(self) -> FontConfiguration:
        """The ``FontConfiguration`` every WeasyPrint set of this renderer shares."""
        if self._font_config is None:
            from weasyprint.text.fonts import FontConfiguration

            import rendering.weasyprint_setup  # noqa: F401 - sets WeasyPrint up once per process

            self._font_config = FontConfiguration()
            # Its __del__ removes its temporary copies of the @font-face fonts, but the objects
            # left at a process's exit are not collected: a finaliser runs it at exit too.
            weakref.finalize(self, FontConfiguration.__del__, self._font_config)
        return self._font_config

    def _pdf(self, html: str, chosen: TemplateSet, stylesheets: tuple[CSS, ...]) -> _Pdf:
        from rendering import weasyprint_overrides  # imported with the first WeasyPrint set

        fonts = self._weasyprint_fonts()
        started = time.perf_counter()
        try:
            document = weasyprint_overrides.document(html, chosen.base_url, chosen.fetcher).render(
                font_config=fonts, stylesheets=list(stylesheets), cache=self._image_cache
            )
            data = document.write_pdf()
        except Exception as exc:
            raise RenderError("render_error", f"WeasyPrint failed ({type(exc).__name__})") from exc
        if not isinstance(data, bytes) or not data.startswith(b"%PDF-"):
            raise RenderError("render_error", "WeasyPrint returned no PDF")
        return _Pdf(data, len(document.pages), (time.perf_counter() - started) * 1000)
