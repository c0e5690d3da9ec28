"""Translations as gettext catalogs, the format translators and their platforms read.

::

    templates/shared/locale/messages.pot                      every text, extracted (make extract)
    templates/shared/locale/<language>/LC_MESSAGES/messages.po  one language's translations
    templates/sets/<name>/locale/...                          optional: a set's own, looked up first

English is the source language (the ``msgid`` s), so it has no catalog. The ``.po`` files are
compiled to ``.mo`` by Babel at build time (``make catalogs``, the image's build); a missing or
stale ``.mo`` stops the start-up, as a broken template does, instead of mailing English to
customers without saying so.
"""

from __future__ import annotations

import gettext
from pathlib import Path
from typing import TYPE_CHECKING

from rendering.errors import RenderError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "DOMAIN",
    "SOURCE_LANGUAGE",
    "catalog_files",
    "language_tag",
    "load_translations",
    "shipped_languages",
]

DOMAIN = "messages"
SOURCE_LANGUAGE = "en"
_UNPACKING_MARGIN_S = 2.0


def language_tag(folder_name: str) -> str:
    """A catalog folder's name as the language tags events are matched with: ``pt_BR`` -> ``pt-br``."""
    return folder_name.replace("_", "-").lower()


def catalog_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(language, ``.po`` path) for each catalog under ``folder/locale``, in name order."""
    locale_dir = folder / "locale"
    if not locale_dir.is_dir():
        return
    for language_dir in sorted(p for p in locale_dir.iterdir() if p.is_dir()):
        po = language_dir / "LC_MESSAGES" / f"{DOMAIN}.po"
        if po.is_file():
            yield language_tag(language_dir.name), po


def shipped_languages(template_dir: Path) -> tuple[str, ...]:
    """The source language and every language with a shared catalog, sorted."""
    return tuple(
        sorted({SOURCE_LANGUAGE, *(language for language, _ in catalog_files(template_dir / "shared"))})
    )


def load_translations(folders: Iterable[Path]) -> dict[str, gettext.NullTranslations]:
    """Language -> its translations, the first folder's catalog first and the others as fallbacks;
    the source language translates to itself."""
    found: dict[str, gettext.NullTranslations] = {SOURCE_LANGUAGE: gettext.NullTranslations()}
    for folder in folders:
        for language, po in catalog_files(folder):
            catalog = _compiled(po)
            if language in found and language != SOURCE_LANGUAGE:
                found[language].add_fallback(catalog)
            else:
                found[language] = catalog
    return found


def _compiled(po: Path) -> gettext.GNUTranslations:
    mo = po.with_suffix(".mo")
    # Newer by a margin: unpacking a wheel or an image layer writes both at about the same time.
    if not mo.is_file() or mo.stat().st_mtime + _UNPACKING_MARGIN_S < po.stat().st_mtime:
        raise RenderError("template_error", f"{mo} is missing or older than its .po: run `make catalogs`")
    with mo.open("rb") as file:
        return gettext.GNUTranslations(file)
