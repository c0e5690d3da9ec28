"""Template sets: one folder per brand (or event type), all sharing one folder of common parts.

::

    templates/
      shared/              layouts/, partials/, base.css, assets/fonts/, locale/ (the catalogs),
                           subject.txt, body.txt, body.html (the e-mail, its texts marked for translation)
      sets/<name>/
        set.toml           default language, shop name, the attachments (template, file name, encrypted)
        receipt.html ...   attachment templates, style.css, assets/
        subject.txt ...    (optional) the set's own e-mail templates, instead of shared/'s
        locale/            (optional) the set's own catalogs, looked up before shared/'s
        <language>/        (optional) a template written for one language only

Every file (template, stylesheet, asset) is looked up in the set first, then in ``shared/``: a
set overrides what it needs and inherits the rest. A template may also be given per language
(``ja/receipt.html`` before ``receipt.html``). The set's languages are the catalogs' (see
``catalogs.py``) plus English, the source; an event's locale picks one by truncation
(``es-MX`` -> ``es``), else the set's default language. Templates translate with ``_()`` and
``{% trans %}``; the labels the code knows by key (``messages.py``) are ``t.<key>``.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, pass_context, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from rendering.catalogs import load_translations
from rendering.errors import RenderError
from rendering.locales import choose_language
from rendering.messages import CODES, DEFAULT_PASSWORD_EXPLANATION, GENERIC_PASSWORD_EXPLANATION, LABELS
from rendering.typst_engine import TypstDocument, TypstWorkspace

if TYPE_CHECKING:
    import gettext
    from collections.abc import Callable, Mapping

    from jinja2.runtime import Context
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    from rendering.fetcher import AssetFetcher

__all__ = ["ENGINES", "AttachmentTemplate", "MailTemplates", "TemplateSet", "Texts", "load_sets"]

# What lays out a set's documents (``engine`` in set.toml): HTML and CSS, or Typst (typst_engine.py).
ENGINES = ("weasyprint", "typst")


@dataclass(frozen=True)
class Texts:
    """One language's texts: the labels and codes by key, and the catalog for templates' own."""

    language: str
    labels: Mapping[str, str]
    codes: Mapping[str, str]  # payment and shipping method codes -> names
    password_default: str  # how the default password template forms the password
    password_generic: str  # said when the operator's own template has no hint
    gettext: Callable[[str], str]
    ngettext: Callable[[str, str, int], str]

    def template_functions(self) -> dict[str, object]:
        """What ``_()`` and ``{% trans %}`` call in a template rendered in this language."""
        return {"gettext": self.gettext, "ngettext": self.ngettext}


@dataclass(frozen=True)
class MailTemplates:
    subject: Template
    text: Template
    html: Template


@dataclass(frozen=True)
class AttachmentTemplate:
    template: Mapping[str, Template]  # language -> HTML template (none in a Typst set)
    filename: Template
    encrypted: bool
    stylesheets: tuple[CSS, ...]
    typst: TypstDocument | None = None  # a Typst set's document


@dataclass(frozen=True)
class TemplateSet:
    name: str
    engine: str  # one of ENGINES
    default_language: str
    shop_name: str
    has_logo: bool
    texts: Mapping[str, Texts]
    mail: Mapping[str, MailTemplates]
    attachments: tuple[AttachmentTemplate, ...]
    fetcher: AssetFetcher | None  # a WeasyPrint set's (Typst reads files through its own root)
    base_url: str

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.mail))

    def language_for(self, tag: str) -> str:
        """``es-MX`` -> ``es`` when the set has Spanish; its default language otherwise."""
        return choose_language(tag, self.mail, self.default_language)


def load_sets(template_dir: Path, fonts: Callable[[], FontConfiguration]) -> dict[str, TemplateSet]:
    """Every set of ``template_dir``. ``fonts`` is called for the first WeasyPrint set only: a
    folder of Typst sets never imports WeasyPrint (~35 MB and ~0.5 s of CPU less per process)."""
    shared = template_dir / "shared"
    folders = sorted(p for p in (template_dir / "sets").glob("*") if (p / "set.toml").is_file())
    if not folders:
        raise RenderError("template_error", f"no template sets in {template_dir / 'sets'}")
    workspace = functools.cache(lambda: TypstWorkspace(template_dir))  # made for the first Typst set
    return {folder.name: _load_set(folder, shared, fonts, workspace) for folder in folders}


def _load_set(
    folder: Path,
    shared: Path,
    fonts: Callable[[], FontConfiguration],
    workspace: Callable[[], TypstWorkspace],
) -> TemplateSet:
    where = f"template set {folder.name!r}"
    try:
        config = tomllib.loads((folder / "set.toml").read_text(encoding="utf-8"))
        engine = str(config.get("engine", ENGINES[0]))
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is none of {', '.join(ENGINES)}")
        environment = _environment([folder, shared])
        translations = load_translations([folder, shared])
        languages = sorted(translations)
        mail = {
            language: MailTemplates(
                *(
                    environment.select_template([f"{language}/{name}", name])
                    for name in ("subject.txt", "body.txt", "body.html")
                )
            )
            for language in languages
        }
        texts = {language: _texts(language, translations[language]) for language in languages}
        fetcher = None
        names = environment.overlay(autoescape=False)  # file names are not HTML
        if engine == "typst":
            compiler = workspace().compiler(folder, shared)  # one per set: warm across orders
            attachments = tuple(
                AttachmentTemplate(
                    template={},
                    filename=names.from_string(spec["filename"]),
                    encrypted=bool(spec.get("encrypted", True)),
                    stylesheets=(),
                    typst=workspace().document(
                        folder, spec["template"], languages, compiler, tagged=bool(spec.get("tagged", False))
                    ),
                )
                for spec in config["attachments"]
            )
        else:
            from weasyprint import CSS

            from rendering.fetcher import AssetFetcher

            fetcher = AssetFetcher([folder, shared])
            attachments = tuple(
                AttachmentTemplate(
                    template={
                        language: environment.select_template(
                            [f"{language}/{spec['template']}", spec["template"]]
                        )
                        for language in languages
                    },
                    filename=names.from_string(spec["filename"]),
                    encrypted=bool(spec.get("encrypted", True)),
                    stylesheets=tuple(
                        CSS(filename=_find(name, folder, shared), font_config=fonts(), url_fetcher=fetcher)
                        for name in spec.get("stylesheets", ["base.css", "style.css"])
                    ),
                )
                for spec in config["attachments"]
            )
        default_language = str(config.get("default_language", "en"))
    except RenderError as error:
        raise RenderError(error.reason, f"{where}: {error}") from error
    except (OSError, KeyError, TypeError, ValueError, TemplateError, tomllib.TOMLDecodeError) as exc:
        raise RenderError("template_error", f"{where}: {type(exc).__name__}: {exc}") from exc
    if default_language not in mail:
        raise RenderError(
            "template_error", f"{where}: no folder for its default language {default_language!r}"
        )
    if not attachments:
        raise RenderError("template_error", f"{where}: no attachments")
    return TemplateSet(
        name=folder.name,
        engine=engine,
        default_language=default_language,
        shop_name=str(config.get("shop_name", folder.name)),
        has_logo=(folder / "assets/logo.svg").is_file() or (shared / "assets/logo.svg").is_file(),
        texts=MappingProxyType(texts),
        mail=MappingProxyType(mail),
        attachments=attachments,
        fetcher=fetcher,
        base_url=folder.resolve().as_uri() + "/",
    )


def _environment(search_path: list[Path]) -> SandboxedEnvironment:
    environment = SandboxedEnvironment(
        loader=FileSystemLoader(search_path),
        extensions=["jinja2.ext.i18n"],  # _() and {% trans %}; gettext comes with each render's context
        autoescape=select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("txt",), default=True, default_for_string=True
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # Whitespace inside {% trans %} collapses, as `make extract` (babel.cfg) wrote the msgids.
    environment.policies["ext.i18n.trimmed"] = True
    environment.filters["ltr"] = _left_to_right
    return environment


@pass_context
def _left_to_right(context: Context, value: object) -> str:
    """In a right-to-left document, ``value`` isolated as left-to-right text (Unicode LRI ... PDI):
    a phone number ``+34 600`` or an SKU keeps its order instead of being reordered around the
    Arabic or Hebrew text next to it. Elsewhere, the value as it is."""
    text = str(value)
    return f"\u2066{text}\u2069" if context.get("dir") == "rtl" else text


def _find(name: str, *folders: Path) -> Path:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"stylesheet {name!r} is neither in the set nor in shared/")


def _texts(language: str, catalog: gettext.NullTranslations) -> Texts:
    translate = catalog.gettext
    return Texts(
        language=language,
        labels=MappingProxyType({key: translate(text) for key, text in LABELS.items()}),
        codes=MappingProxyType({key: translate(text) for key, text in CODES.items()}),
        password_default=translate(DEFAULT_PASSWORD_EXPLANATION),
        password_generic=translate(GENERIC_PASSWORD_EXPLANATION),
        gettext=translate,
        ngettext=catalog.ngettext,
    )
