"""A smaller CJK face for the Typst engine: Noto Sans CJK JP cut to the characters of the
national standards in everyday use (JIS X 0208, GB 2312, Big5's frequent characters, KS X 1001)
and kana, CJK punctuation and full-width forms: ~15,000 characters.

Why: Typst reads a font file whole and keeps it for the life of the process. The Noto CJK
collection's regular and bold files are ~20 MB each, so one CJK character put ~40 MB into a
render worker. Cut, a face is ~6.5 MB. Every layout feature is kept, so the document's language
still selects the regional forms (``locl``) of Chinese, Japanese and Korean. A character outside
the cut falls back to the whole collection, which the templates name after this face: nothing
is lost, and only the worker that met such a character pays for it. WeasyPrint maps font files
(only the pages it reads are resident) and does not use this face.

Built by ``make setup`` and in the image (``python -m rendering.cjk_faces``, ~40 s a face) into
``rendering/generated/`` (not in git); rebuilt when the installed collection or the character
list changes. Where it was not built, the Typst engine uses the whole collection.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["FAMILY", "build", "faces"]

FAMILY = "Receipt CJK"
FOLDER = Path(__file__).resolve().parent / "generated"
SOURCE_FAMILY = "Noto Sans CJK JP"
_WEIGHTS = {"Regular": "", "Bold": ":bold"}  # style -> fontconfig pattern suffix
# Two-byte code ranges of the legacy encodings whose characters the face keeps.
_STANDARDS = (
    ("euc_jp", range(0xA1, 0xFF), range(0xA1, 0xFF)),  # JIS X 0208: kanji levels 1 and 2, kana
    ("gb2312", range(0xA1, 0xF8), range(0xA1, 0xFF)),  # simplified Chinese
    ("big5", range(0xA1, 0xC7), (*range(0x40, 0x7F), *range(0xA1, 0xFF))),  # traditional, frequent
    ("euc_kr", range(0xA1, 0xFF), range(0xA1, 0xFF)),  # KS X 1001: Hangul syllables, hanja
)
_BLOCKS = (
    range(0x0020, 0x0250),  # Latin: names and numbers inside CJK text keep one face's metrics
    range(0x2000, 0x2070),  # general punctuation
    range(0x3000, 0x3100),  # CJK punctuation, hiragana, katakana
    range(0x3130, 0x3190),  # Hangul compatibility jamo
    range(0xFF00, 0xFFF0),  # full-width and half-width forms
)


def faces() -> list[Path]:
    """The built faces (regular, bold), or none: the Typst engine then reads the whole collection."""
    built = [FOLDER / f"ReceiptCJK-{style}.otf" for style in _WEIGHTS]
    return built if all(path.is_file() for path in built) else []


def characters() -> list[int]:
    """The code points the face keeps, sorted."""
    kept = {point for block in _BLOCKS for point in block}
    for codec, leads, trails in _STANDARDS:
        for lead in leads:
            for trail in trails:
                try:
                    kept.update(map(ord, bytes((lead, trail)).decode(codec)))
                except UnicodeDecodeError:
                    continue
    return sorted(kept)


def build(folder: Path = FOLDER) -> list[Path]:
    """Builds the faces that are missing or out of date; returns the paths of both."""
    from rendering.fonts import fc_match

    folder.mkdir(parents=True, exist_ok=True)
    built = []
    for style, pattern in _WEIGHTS.items():
        match = fc_match(SOURCE_FAMILY + pattern)
        if match is None or match[0] != SOURCE_FAMILY:
            raise SystemExit(f"{SOURCE_FAMILY}{pattern} is not installed (Debian: fonts-noto-cjk)")
        _, source, index = match
        target = folder / f"ReceiptCJK-{style}.otf"
        stamp = target.with_suffix(".source")
        wanted = _fingerprint(source, index)
        if not (target.is_file() and stamp.is_file() and stamp.read_text() == wanted):
            _cut(source, index, style, target)
            stamp.write_text(wanted)
        built.append(target)
    return built


def _fingerprint(source: Path, index: int) -> str:
    """What the face is made of: the source file as installed, and this module's character list."""
    info = source.stat()
    listing = hashlib.sha256(str(characters()).encode()).hexdigest()[:16]
    return f"{source}|{index}|{info.st_size}|{int(info.st_mtime)}|{listing}\n"


def _cut(source: Path, index: int, style: str, target: Path) -> None:
    from fontTools import subset  # type: ignore[import-untyped]
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    options = subset.Options()
    options.layout_features = ["*"]  # locl (regional forms), vertical forms, kerning: all kept
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    font = TTFont(source, fontNumber=index, lazy=False)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=characters())
    subsetter.subset(font)
    _rename(font, style)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".otf", delete=False) as partial:
        font.save(partial)
    Path(partial.name).chmod(0o644)  # the image's service user reads what root built
    Path(partial.name).replace(target)  # never a half-written face where the engine looks


def _rename(font: Any, style: str) -> None:
    """A family of its own: the whole collection stays ``Noto Sans CJK JP`` beside it."""
    postscript = f"ReceiptCJK-{style}"
    names = {1: FAMILY, 2: style, 3: f"{postscript};ordermail", 4: f"{FAMILY} {style}", 6: postscript}
    table = font["name"]
    table.names = [record for record in table.names if record.nameID not in (*names, 16, 17, 21, 22)]
    for name_id, text in names.items():
        table.setName(text, name_id, 3, 1, 0x409)
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [postscript]
        cff.topDictIndex[0].FamilyName = FAMILY
        cff.topDictIndex[0].FullName = f"{FAMILY} {style}"


if __name__ == "__main__":
    for path in build(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
