"""No tofu: every script a customer may type is drawn with real glyphs, by the right face.

The text layer of a PDF keeps the right characters even when they are drawn as boxes, so these
tests read the embedded fonts themselves (``rendering.glyphs``), in the encrypted PDFs customers get.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import pikepdf
import pytest

from rendering import PasswordPolicy, Renderer
from rendering.glyphs import undrawn_characters
from schemas.samples import SCRIPT_SAMPLES, script_sample

if TYPE_CHECKING:
    from schemas.model import OrderCompleted

# The face each script must be drawn with (Latin, Greek, Cyrillic: the shipped DejaVu Sans).
EXPECTED_FACE = {
    "latin-vietnamese": "Receipt-Sans",
    "greek": "Receipt-Sans",
    "cyrillic": "Receipt-Sans",
    "arabic": "Noto-Sans-Arabic",
    "hebrew": "Noto-Sans-Hebrew",
    "devanagari": "Noto-Sans-Devanagari",
    "thai": "Noto-Sans-Thai",
    "chinese-simplified": "Noto-Sans-CJK-SC",
    "chinese-traditional": "Noto-Sans-CJK-TC",
    "japanese": "Noto-Sans-CJK-JP",
    "korean": "Noto-Sans-CJK-KR",
    "emoji": "Noto-Color-Emoji",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _embedded_fonts(pdf: bytes, password: str) -> set[str]:
    with pikepdf.open(io.BytesIO(pdf), password=password) as document:
        return {str(font.BaseFont) for page in document.pages for font in page.Resources.Font.values()}


def test_every_script_has_an_expected_face() -> None:
    assert set(EXPECTED_FACE) == set(SCRIPT_SAMPLES)


@pytest.mark.parametrize("script", sorted(SCRIPT_SAMPLES))
@pytest.mark.parametrize("template_set", ["default", "nordic"])
def test_every_character_has_a_real_glyph(renderer: Renderer, script: str, template_set: str) -> None:
    order = script_sample(script)
    password = PasswordPolicy().password_for(order)
    mail = renderer.render_mail(order, template_set=template_set)
    for attachment in mail.attachments:
        assert attachment.encrypted
        assert undrawn_characters(attachment.data, password) == {}, attachment.filename
    receipt = _embedded_fonts(mail.attachments[0].data, password)
    assert any(EXPECTED_FACE[script] in name for name in receipt), receipt


def test_a_character_no_font_has_is_reported_with_its_font(renderer: Renderer) -> None:
    order: OrderCompleted = script_sample("japanese")
    order["customer"]["first_name"] = "太郎\ue000"  # private use: no font draws it
    pdf = renderer.render_mail(order, encrypt=False).attachments[0].data
    undrawn = undrawn_characters(pdf)
    assert set().union(*undrawn.values()) == {"\ue000"}


def test_a_cjk_receipt_embeds_only_the_faces_it_draws_with(renderer: Renderer) -> None:
    latin = renderer.render_mail(script_sample("greek"), encrypt=False).attachments[0].data
    assert not any("Noto-Sans" in name for name in _embedded_fonts(latin, ""))  # no script face
    japanese = renderer.render_mail(script_sample("japanese"), encrypt=False).attachments[0].data
    assert not any("CJK-KR" in name or "Arabic" in name for name in _embedded_fonts(japanese, ""))


@pytest.mark.parametrize("script", sorted(SCRIPT_SAMPLES))
def test_digits_are_drawn_with_the_documents_text_face(renderer: Renderer, script: str) -> None:
    """Digits are emoji characters too (keycaps): an emoji face named in the font chain drew every
    number of every receipt. They must come from the document's own text face."""
    order = script_sample(script)
    pdf = renderer.render_mail(order, encrypt=False).attachments[0].data
    with pikepdf.open(io.BytesIO(pdf)) as document:
        drawing = {
            str(font.BaseFont).split("+", 1)[-1]
            for page in document.pages
            for font in page.Resources.Font.values()
            if any(character in _characters(font) for character in "0123456789")
        }
    # Arabic and Hebrew documents name their script's face first; it may have its own digits.
    allowed = ("Receipt-Sans", {"arabic": "Noto-Sans-Arabic", "hebrew": "Noto-Sans-Hebrew"}.get(script, "-"))
    assert drawing
    assert all(name.startswith(allowed) for name in drawing), drawing


def _characters(font: Any) -> str:  # a pikepdf font dictionary
    from rendering.glyphs import _to_unicode  # the test reads what the check reads

    return "".join(_to_unicode(font).values())
