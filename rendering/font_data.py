"""WeasyPrint's copy of each font file, made once per process instead of once per document.

For every PDF, WeasyPrint copies each font it embeds, whole, out of HarfBuzz into a Python
``bytes`` (``weasyprint.pdf.fonts.Font``): 1.5 MB per receipt for the regular and bold faces,
only to subset it with HarfBuzz and drop the copy. Here the copy of a font map's face is made
once and shared (``bytes`` are immutable; WeasyPrint only reads it or replaces it). That saves
~0.6 ms of a receipt's render time, and the page faults of mapping a fresh 1.5 MB each time.

A face is recognised by its address: the faces of the font map's fonts are the ones handed out
by ``get_pango_font_hb_face``; a reference to each is held for the life of the process, so no
other face (such as the subset HarfBuzz makes per document) can ever get the same address. Those
are only as many as the font files used. Installed only on the WeasyPrint versions it was checked
against; ``tests/unit/test_font_data.py`` compares the embedded fonts and the pages drawn.
"""

from __future__ import annotations

from typing import Any

import weasyprint
from weasyprint.pdf import fonts
from weasyprint.text.ffi import ffi

__all__ = ["install", "uninstall"]

CHECKED_VERSIONS = ("70.",)
_STOCK_FACE = fonts.get_pango_font_hb_face
_STOCK_DATA = fonts.get_hb_object_data
_faces: dict[int, Any] = {}  # address -> a reference to the font map's face, held
_data: dict[int, bytes | None] = {}  # address -> the face's whole font file


def _address(pointer: Any) -> int:
    return int(ffi.cast("uintptr_t", pointer))


def _font_map_face(pango_font: Any) -> Any:
    face = _STOCK_FACE(pango_font)
    _faces.setdefault(_address(face), face)
    return face


def _object_data(hb_object: Any, ot_color: str | None = None, glyph: int | None = None) -> Any:
    if ot_color is None:
        address = _address(hb_object)
        if address in _faces:
            if address not in _data:
                _data[address] = _STOCK_DATA(hb_object)
            return _data[address]
    return _STOCK_DATA(hb_object, ot_color, glyph)


def install() -> bool:
    """Installs the shared copies; False (stock behaviour kept) on an unchecked WeasyPrint."""
    if not weasyprint.__version__.startswith(CHECKED_VERSIONS):
        return False
    fonts.get_pango_font_hb_face = _font_map_face
    fonts.get_hb_object_data = _object_data
    return True


def uninstall() -> None:
    fonts.get_pango_font_hb_face = _STOCK_FACE
    fonts.get_hb_object_data = _STOCK_DATA
