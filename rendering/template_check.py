"""What ``ordermail templates check`` adds to the start-up check: the catalogs and the glyphs.

- **Catalogs.** ``messages.pot`` lists exactly the texts the code and the templates mark for
  translation (a fresh extraction, as ``make extract`` does); every shipped language translates
  each of them, none fuzzy, with the same placeholders (``%(order_id)s``) and the same markup as
  the English text, and file name prefixes stay file-name-safe.
- **Glyphs.** A receipt per script a customer may type (``schemas.samples.SCRIPT_SAMPLES``) in
  every set draws no character without a real glyph (:mod:`rendering.glyphs`).

Each function returns problems, one line each; empty means all is well.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from rendering.catalogs import DOMAIN, catalog_files
from rendering.glyphs import undrawn_characters
from rendering.messages import LABELS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from babel.messages.catalog import Catalog

    from rendering.renderer import Renderer

__all__ = ["catalog_problems", "extracted_texts", "glyph_problems"]

_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|%%")
_MARKUP = re.compile(r"</?[a-zA-Z][^>]*>")
_FILE_NAME_SAFE = re.compile(r"^[A-Za-z0-9-]+$")
_FILE_PREFIXES = frozenset({LABELS["file_prefix"], LABELS["returns_file_prefix"]})
_CODE_DIR = Path(__file__).resolve().parent


def extracted_texts(template_dir: Path) -> set[str]:
    """Every text marked for translation: ``N_()`` in the code, ``_()``/``{% trans %}`` in templates."""
    found = _extract(_CODE_DIR, [("**.py", "python")], {})
    jinja = {"trimmed": "true"}
    found |= _extract(template_dir, [("**.html", "jinja2"), ("**.txt", "jinja2")], {"**": jinja})
    return found


def catalog_problems(template_dir: Path) -> list[str]:
    problems: list[str] = []
    texts = extracted_texts(template_dir)
    pot = template_dir / "shared" / "locale" / f"{DOMAIN}.pot"
    listed = {str(message.id) for message in _read(pot) if message.id} if pot.is_file() else set()
    # Texts no template uses any more are stale only where the catalogs are this folder's own: a
    # deployment's folder that links shared/ from elsewhere (a brand's sets alone, say) uses a part.
    own_catalogs = pot.resolve().is_relative_to(template_dir.resolve())
    if texts - listed or (own_catalogs and listed - texts):
        problems.append(
            f"{pot}: out of date ({len(texts - listed)} new, {len(listed - texts)} gone): run `make extract`"
        )
    for language, catalogs in _catalogs_by_language(template_dir).items():
        translated = {}
        for catalog in catalogs:  # the set's own first, then shared: the first translation counts
            for message in catalog:
                if message.id and isinstance(message.id, str) and message.id not in translated:
                    translated[message.id] = (str(message.string or ""), message.fuzzy)
        for text in sorted(texts):
            translation, fuzzy = translated.get(text, ("", False))
            problem = _translation_problem(text, translation, fuzzy)
            if problem:
                problems.append(f"{language}: {problem}: {text[:60]!r}")
    return problems


def glyph_problems(renderer: Renderer, share: tuple[int, int] = (0, 1)) -> list[list[str]]:
    """Script samples rendered (unencrypted) with every set: for each rendering, its characters
    drawn as boxes, by font. ``share`` = (i, n): only every n-th rendering from the i-th (n
    processes split the work)."""
    from schemas.samples import SCRIPT_SAMPLES, script_sample

    index, of = share
    found = []
    for script, name in [(s, n) for s in SCRIPT_SAMPLES for n in renderer.set_names][index::of]:
        mail = renderer.render_mail(script_sample(script), encrypt=False, template_set=name)
        problems = []
        for attachment in mail.attachments:
            for font, characters in undrawn_characters(attachment.data).items():
                codes = " ".join(f"U+{ord(c):04X}" for c in sorted("".join(characters)))
                problems.append(f"{script} ({name}, {attachment.filename}): no glyph in {font}: {codes}")
        found.append(problems)
    return found


def _translation_problem(text: str, translation: str, fuzzy: bool) -> str | None:
    """The first rule ``translation`` breaks, or None."""
    placeholders = sorted(_PLACEHOLDER.findall(text))
    rules = (
        (not translation, "missing"),
        (fuzzy, "fuzzy"),
        (placeholders != sorted(_PLACEHOLDER.findall(translation)), "placeholders differ"),
        (bool(placeholders) and "%" in _PLACEHOLDER.sub("", translation), "a lone % (write %% for %)"),
        (sorted(_MARKUP.findall(text)) != sorted(_MARKUP.findall(translation)), "markup differs"),
        (
            text in _FILE_PREFIXES and not _FILE_NAME_SAFE.match(translation),
            "a file name prefix must be ASCII letters, digits and '-'",
        ),
    )
    return next((problem for broken, problem in rules if broken), None)


def _catalogs_by_language(template_dir: Path) -> dict[str, list[Catalog]]:
    folders = [*sorted(p for p in (template_dir / "sets").glob("*") if p.is_dir()), template_dir / "shared"]
    by_language: dict[str, list[Catalog]] = {}
    for folder in folders:
        for language, po in catalog_files(folder):
            by_language.setdefault(language, []).append(_read(po))
    return by_language


def _read(path: Path) -> Catalog:
    with path.open("rb") as file:
        return read_po(file)


def _extract(
    folder: Path, method_map: list[tuple[str, str]], options_map: dict[str, dict[str, str]]
) -> set[str]:
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    messages: Iterable[tuple[str, int, str | tuple[str, ...], list[str], str | None]] = extract_from_dir(
        str(folder), method_map, options_map, keywords=keywords
    )
    return {message if isinstance(message, str) else message[0] for _, _, message, _, _ in messages}
