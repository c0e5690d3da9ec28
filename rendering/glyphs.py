"""Finds "tofu": characters a PDF draws without a real glyph.

A PDF's text layer keeps the right characters even when no font had a glyph for them, so text
extraction cannot see boxes. This reads what the reader would draw instead: every embedded
font's program, its encoding and its ``ToUnicode`` map (WeasyPrint writes ``CIDToGIDMap
/Identity``: a character's CID is its glyph id), and reports each character whose glyph is missing, is
``.notdef`` (glyph 0), or has no outline although the character is not blank. WeasyPrint sends
the characters it found no font for to glyph 0 through an encoding CMap of its own
(``WP-Encod``), which is followed. A colour emoji face's glyphs are bitmaps WeasyPrint draws as
images beside an empty outline (``fonts.COLOR_BITMAP_FACES``): there, a glyph that exists counts.
Typst embeds CJK faces as bare CFF programs (``/CIDFontType0C``), read with fontTools' CFF parser,
and draws a character no font has as glyph 0 of its first font, kept out of the text layer: the
pages' text operators are read for it (reported as ``NO_FONT``).
Used by ``ordermail templates check`` and the tests.
"""

from __future__ import annotations

import io
import re
import unicodedata
from typing import TYPE_CHECKING, Any

import pikepdf
from fontTools.cffLib import CFFFontSet  # type: ignore[import-untyped]
from fontTools.pens.boundsPen import BoundsPen  # type: ignore[import-untyped]
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

from rendering.fonts import COLOR_BITMAP_FACES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["NO_FONT", "undrawn_characters"]

NO_FONT = "\ufffd"  # reported for a box whose character the PDF does not record
_SHOW = frozenset({"Tj", "TJ", "'", '"'})

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
        for name in _fonts_showing_notdef(document):
            found.setdefault(name, set()).add(NO_FONT)
    return found


def _fonts_showing_notdef(document: pikepdf.Pdf) -> set[str]:
    """Fonts the pages show glyph 0 of, by character code 0 (``Identity-H``). Typst draws a
    character no font has so, and leaves it out of the text layer: only the drawing tells."""
    shown: set[str] = set()
    for page in document.pages:
        resources = page.obj.get("/Resources")
        fonts: Any = (resources.get("/Font") if resources is not None else None) or {}
        current: Any = None
        for instruction in pikepdf.parse_content_stream(page):
            if not isinstance(instruction, pikepdf.ContentStreamInstruction):
                continue  # an inline image
            operands, operator = instruction.operands, instruction.operator
            if str(operator) == "Tf" and operands:
                current = fonts.get(str(operands[0]))
            elif str(operator) in _SHOW and current is not None and _identity(current):
                strings = operands[0] if str(operator) == "TJ" else operands[-1:]
                if any(_zero_code(bytes(item)) for item in strings if isinstance(item, pikepdf.String)):
                    shown.add(str(current.get("/BaseFont", "?")))
    return shown


def _identity(font: Any) -> bool:
    return str(font.get("/Subtype")) == "/Type0" and str(font.get("/Encoding")) == "/Identity-H"


def _zero_code(data: bytes) -> bool:
    return any(data[i : i + 2] == b"\0\0" for i in range(0, len(data) - 1, 2))


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
    if str(stream.get("/Subtype")) == "/CIDFontType0C":  # bare CFF (Typst's CJK faces)
        return _undrawn_in_cff(stream.read_bytes(), to_unicode, glyph_of)
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


def _undrawn_in_cff(data: bytes, to_unicode: dict[int, str], glyph_of: Callable[[int], int]) -> set[str]:
    """The same for a bare CFF program: a CID-keyed one names its glyphs ``cidNNNNN`` (the CID the
    content stream shows), a name-keyed one is read by glyph index."""
    fonts = CFFFontSet()
    fonts.decompile(io.BytesIO(data), None)
    top = fonts[fonts.fontNames[0]]
    charset, glyphs = list(top.charset), top.CharStrings
    undrawn = set()
    for code, text in to_unicode.items():
        if _blank(text):
            continue
        cid = glyph_of(code)
        name = f"cid{cid:05d}" if hasattr(top, "ROS") else (charset[cid] if cid < len(charset) else "")
        if cid == 0 or name not in glyphs or not _has_outline(glyphs, name):
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
