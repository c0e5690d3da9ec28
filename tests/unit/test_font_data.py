"""Sharing each font file's copy changes nothing in the PDFs: the same font programs are embedded
and the same operators drawn, with and without it, and the copy is made once per face."""

import io

import pikepdf
import pytest

from rendering import Renderer, font_data
from schemas.samples import sample_order
from tests.support import drawn_operators


def _fonts_and_drawing(pdf: bytes) -> tuple[list[bytes], list[bytes]]:
    with pikepdf.open(io.BytesIO(pdf)) as document:
        programs = sorted(
            bytes(descriptor.FontFile2.read_bytes())
            for page in document.pages
            for font in page.Resources.Font.values()
            for descendant in font.get("/DescendantFonts", [font])
            if (descriptor := descendant.get("/FontDescriptor")) is not None and "/FontFile2" in descriptor
        )
    return programs, drawn_operators(pdf)


def _orders() -> list[dict[str, object]]:
    orders = []
    for seed, lines, brand in ((1, 1, None), (2, 6, "Nordic"), (3, 40, None)):
        order = sample_order(seed, lines=lines)
        if brand:
            order["brand"] = brand
        orders.append(order)
    return orders


def test_documents_embed_the_same_fonts_and_draw_the_same_with_and_without_shared_copies() -> None:
    renderer = Renderer()
    shared = [
        [_fonts_and_drawing(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
        for o in _orders()
    ]
    font_data.uninstall()
    try:
        stock = [
            [_fonts_and_drawing(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
            for o in _orders()
        ]
    finally:
        assert font_data.install()
    assert shared == stock
    assert all(programs for mail in stock for programs, _ in mail)  # fonts were embedded and compared
    assert max(len(drawn) for mail in stock for _, drawn in mail) > 1  # a multi-page document too


def test_each_face_is_copied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer()
    copied: list[int] = []
    stock = font_data._STOCK_DATA

    def counting(hb_object: object, *args: object) -> object:
        if not any(args):  # a whole face (not a colour glyph)
            copied.append(font_data._address(hb_object))
        return stock(hb_object, *args)

    monkeypatch.setattr(font_data, "_STOCK_DATA", counting)
    monkeypatch.setattr(font_data, "_data", {})
    for order in _orders() * 2:
        renderer.render_mail(order, encrypt=False)
    whole = [address for address in copied if address in font_data._faces]
    assert whole, "no font file was copied at all"
    assert len(whole) == len(set(whole)) <= 4  # regular and bold (a fallback font at most)
    assert len(copied) > len(whole)  # the per-document subsets still come from HarfBuzz each time


def test_an_unchecked_weasyprint_keeps_the_stock_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    font_data.uninstall()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(font_data, "CHECKED_VERSIONS", ("999.",))
            assert font_data.install() is False
            assert font_data.fonts.get_hb_object_data is font_data._STOCK_DATA
            assert font_data.fonts.get_pango_font_hb_face is font_data._STOCK_FACE
    finally:
        assert font_data.install()
