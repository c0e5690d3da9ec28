"""Arabic and Hebrew receipts are mirrored, while phone numbers and SKUs keep left-to-right order."""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from rendering import Renderer
from schemas.samples import script_sample

if TYPE_CHECKING:
    from pathlib import Path

A4_WIDTH_PT = 595.3


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _words(pdf: bytes, tmp_path: Path) -> list[tuple[float, float, float, str]]:
    """(left edge, right edge, top, word) for each word on the first page, in points."""
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    html = subprocess.run(
        ["pdftotext", "-bbox", "-f", "1", "-l", "1", str(path), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pattern = r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>'
    return [(float(x0), float(x1), float(y), word) for x0, y, x1, word in re.findall(pattern, html)]


@pytest.mark.parametrize(("script", "language"), [("arabic", "ar"), ("hebrew", "he"), ("greek", "en")])
@pytest.mark.parametrize("template_set", ["default", "nordic"])
def test_the_page_is_mirrored_in_right_to_left_languages(
    renderer: Renderer, tmp_path: Path, script: str, language: str, template_set: str
) -> None:
    order = script_sample(script)
    order["customer"]["phone"] = "+34 600 123 456"
    html = renderer.render_html(order, template_set=template_set)
    rtl = language in {"ar", "he"}
    assert f'dir="{"rtl" if rtl else "ltr"}"' in html
    words = _words(renderer.render_pdf(order, template_set=template_set), tmp_path)
    # The order number (first fact) and the first SKU sit at the reading start of their rows.
    body = [w for w in words if 100 < w[2] < 700]  # below the masthead, above the page footer
    for value in (order["order_id"], order["lines"][0]["sku"]):
        found = [(x0, x1) for x0, x1, _, word in body if word == value]
        assert any((x0 > A4_WIDTH_PT / 2) if rtl else (x1 < A4_WIDTH_PT / 2) for x0, x1 in found), found
    # The phone number reads "+34 600 123 456" from left to right, whatever the page's direction.
    phone = [w for w in words if w[3] in {"+34", "600", "123", "456"}]
    assert [w[3] for w in sorted(phone)] == ["+34", "600", "123", "456"]
