"""Finds "tofu": characters a PDF draws without a real glyph.

A PDF's text layer keeps the right characters even when no font had a glyph for them, so text
extraction cannot see boxes. This reads what the reader would draw instead: every embedded
font's program, its encoding and its ``ToUnicode`` map (WeasyPrint writes ``CIDToGIDMap
/Identity``: a character's CID is its glyph id), and reports each character whose glyph is missing, is
``.notdef`` (glyph 0), or has no outline although the character is not blank. WeasyPrint sends
the characters it found no font for to glyph 0 through an encoding CMap of its own
(``WP-Encod``), which is followed. A colour emoji face's glyphs are bitmaps WeasyPrint draws as
images beside an empty outline (``fonts.COLOR_BITMAP_FACES``): there, a glyph that exists counts.
Used by ``ordermail templates check`` and the tests.
"""

from __future__ import annotations

import io
import re
import unicodedata
from typing import TYPE_CHECKING, Any

import pikepdf
from fontTools.pens.boundsPen import BoundsPen  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

from rendering.fonts import COLOR_BITMAP_FACES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["undrawn_characters"]

_BFCHAR = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")
_CIDCHAR = re.compile(rb"<([0-9A-Fa-f]+)>\s*(\d+)")
_BFRANGE = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")
# Characters that legitimately draw nothing: spaces, joiners, marks of direction.
_BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def undrawn_characters(pdf: bytes, password: str = "") -> dict[str, set[str]]:
    """Each font's name -> the characters it draws as tofu (empty when every glyph is real)."""
    found: dict[str, set[str]] = {}
    with pikepdf.open(io.BytesIO(pdf), password=password) as document:
        seen: set[tuple[int, int]] = set()
        for font in _type0_fonts(document):
            if font.objgen in seen:
                continue
            seen.add(font.objgen)
            name = str(font.get("/BaseFont", "?"))
            bad = _undrawn_in_font(font, bitmaps=any(face in name for face in COLOR_BITMAP_FACES))
            if bad:
                found.setdefault(name, set()).update(bad)
    return found


def _type0_fonts(document: pikepdf.Pdf) -> Iterator[Any]:
    for page in document.pages:
        resources = page.obj.get("/Resources")
        fonts = resources.get("/Font") if resources is not None else None
        yield from (fonts or {}).values()
        # Fonts used inside form XObjects (e.g. an SVG logo's text) count too.
        xobjects = resources.get("/XObject") if resources is not None else None
        for xobject in (xobjects or {}).values():
            inner = xobject.get("/Resources")
            inner_fonts = inner.get("/Font") if inner is not None else None
            yield from (inner_fonts or {}).values()


def _undrawn_in_font(font: pikepdf.Dictionary, *, bitmaps: bool) -> set[str]:
    to_unicode = _to_unicode(font)
    if str(font.get("/Subtype")) != "/Type0":
        return set()  # simple (Type 3 bitmap) fonts draw what they contain
    glyph_of = _encoding(font.get("/Encoding"))
    descendant = font.DescendantFonts[0]
    descriptor = descendant.FontDescriptor
    stream = descriptor.get("/FontFile2") or descriptor.get("/FontFile3")
    if stream is None:
        return {text for text in to_unicode.values() if not _blank(text)}
    with TTFont(io.BytesIO(stream.read_bytes()), lazy=True) as program:
        order = program.getGlyphOrder()
        glyphs = program.getGlyphSet()
        undrawn = set()
        for code, text in to_unicode.items():
            if _blank(text):
                continue
            gid = glyph_of(code)
            if gid == 0 or gid >= len(order) or not (bitmaps or _has_outline(glyphs, order[gid])):
                undrawn.add(text)
        return undrawn


def _encoding(encoding: object) -> Callable[[int], int]:
    """Character code -> glyph id: ``Identity-H``, or WeasyPrint's CMap sending missing ones to 0."""
    if not isinstance(encoding, pikepdf.Stream):
        return lambda code: code
    cids = {
        int(code, 16): int(cid)
        for block in re.findall(rb"begincidchar(.*?)endcidchar", encoding.read_bytes(), re.S)
        for code, cid in _CIDCHAR.findall(block)
    }
    return lambda code: cids.get(code, 0)


def _has_outline(glyphs: object, name: str) -> bool:
    pen = BoundsPen(glyphs)
    glyphs[name].draw(pen)  # type: ignore[index]
    return pen.bounds is not None


def _blank(text: str) -> bool:
    return all(unicodedata.category(ch) in _BLANK_CATEGORIES for ch in text)


def _to_unicode(font: pikepdf.Dictionary) -> dict[int, str]:
    stream = font.get("/ToUnicode")
    if stream is None:
        return {}
    data = stream.read_bytes()
    mapping: dict[int, str] = {}
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", data, re.S):
        for start, end, first in _BFRANGE.findall(block):
            base = int(first, 16)
            for offset, code in enumerate(range(int(start, 16), int(end, 16) + 1)):
                mapping[code] = chr(base + offset)
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", data, re.S):
        for code, text in _BFCHAR.findall(block):
            mapping[int(code, 16)] = bytes.fromhex(text.decode()).decode("utf-16-be", "replace")
    return mapping
