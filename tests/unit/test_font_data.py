"""Sharing each font file's copy (``rendering/weasyprint_overrides.py``) changes nothing in the
PDFs: the same font programs are embedded and the same operators drawn as with stock
WeasyPrint, and the copy is made once per face."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pikepdf
import pytest
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from weasyprint.pdf import fonts
from weasyprint.text.ffi import ffi

from rendering import Renderer, weasyprint_overrides
from schemas.samples import sample_order
from tests.support import drawn_operators, stock_weasyprint

if TYPE_CHECKING:
    from schemas.model import OrderCompleted


def _fonts_and_drawing(pdf: bytes) -> tuple[list[bytes], list[bytes]]:
    with pikepdf.open(io.BytesIO(pdf)) as document:
        programs = sorted(
            _without_timestamp(bytes(descriptor.FontFile2.read_bytes()))
            for page in document.pages
            for font in page.Resources.Font.values()
            for descendant in font.get("/DescendantFonts", [font])
            if (descriptor := descendant.get("/FontDescriptor")) is not None and "/FontFile2" in descriptor
        )
    return programs, drawn_operators(pdf)


def _without_timestamp(program: bytes) -> bytes:
    """The font program with its ``head`` table's modification time (and so the whole-file
    checksum that covers it) zeroed: HarfBuzz stamps the subset of a colour-bitmap face (the
    emoji of a gift message) with the time it was made."""
    with TTFont(io.BytesIO(program)) as font:
        tables = {tag: font.reader[tag] for tag in sorted(font.reader.keys())}
    head = bytearray(tables["head"])
    head[8:12], head[28:36] = bytes(4), bytes(8)  # checkSumAdjustment, modified
    tables["head"] = bytes(head)
    return b"".join(tag.encode() + data for tag, data in tables.items())


def _orders() -> list[OrderCompleted]:
    orders = []
    for seed, lines, brand in ((1, 1, None), (2, 6, "Nordic"), (3, 40, None)):
        order = sample_order(seed, lines=lines)
        if brand:
            order["brand"] = brand
        orders.append(order)
    return orders


def test_documents_embed_the_same_fonts_and_draw_the_same_with_and_without_shared_copies() -> None:
    renderer = Renderer()
    assert weasyprint_overrides.installed()
    shared = [
        [_fonts_and_drawing(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
        for o in _orders()
    ]
    with stock_weasyprint():
        stock = [
            [_fonts_and_drawing(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
            for o in _orders()
        ]
    assert shared == stock
    assert all(programs for mail in stock for programs, _ in mail)  # fonts were embedded and compared
    assert max(len(drawn) for mail in stock for _, drawn in mail) > 1  # a multi-page document too


def test_each_face_is_copied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer()
    faces: set[int] = set()  # the font map's faces, as handed out by WeasyPrint
    copied: list[int] = []  # each whole-face copy WeasyPrint makes
    with stock_weasyprint():
        stock_face, stock_data = fonts.get_pango_font_hb_face, fonts.get_hb_object_data

        def recording(pango_font: object) -> object:
            face = stock_face(pango_font)
            faces.add(int(ffi.cast("uintptr_t", face)))
            return face

        def counting(hb_object: object, *args: object) -> object:
            if not any(args):  # a whole face (not a colour glyph)
                copied.append(int(ffi.cast("uintptr_t", hb_object)))
            return stock_data(hb_object, *args)

        # Installed over these, the overrides count and record through them.
        monkeypatch.setattr(fonts, "get_pango_font_hb_face", recording)
        monkeypatch.setattr(fonts, "get_hb_object_data", counting)
        assert weasyprint_overrides.install()
        try:
            for order in _orders() * 2:
                renderer.render_mail(order, encrypt=False)
        finally:
            weasyprint_overrides.uninstall()
            monkeypatch.undo()
    whole = [address for address in copied if address in faces]
    assert whole, "no font file was copied at all"
    assert len(whole) == len(set(whole)) <= 5  # regular and bold (fallback fonts: emoji, at most)
    assert len(copied) > len(whole)  # the per-document subsets still come from HarfBuzz each time
