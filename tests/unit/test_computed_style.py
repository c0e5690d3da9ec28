"""The computed-style shortcut changes nothing that is drawn: every template set, in each of its
languages, one-page and multi-page, draws the same operators with and without it."""

import pytest

from rendering import Renderer, computed_style
from schemas.samples import sample_order
from tests.support import drawn_operators


@pytest.mark.parametrize(
    ("brand", "locale"), [(None, "en-GB"), (None, "es-MX"), ("Nordic", "en-US"), ("Nordic", "es-ES")]
)
def test_documents_are_drawn_the_same_with_and_without_the_shortcut(brand: str | None, locale: str) -> None:
    renderer = Renderer()
    orders = []
    for seed, lines in ((1, 1), (2, 6), (3, 40)):
        order = sample_order(seed, lines=lines)
        order["locale"] = locale
        if brand:
            order["brand"] = brand
        orders.append(order)
    with_shortcut = [
        [drawn_operators(a.data) for a in renderer.render_mail(o, encrypt=False).attachments] for o in orders
    ]
    computed_style.uninstall()
    try:
        stock = [
            [drawn_operators(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
            for o in orders
        ]
    finally:
        assert computed_style.install()
    assert with_shortcut == stock
    assert max(len(pages) for mail in stock for pages in mail) > 1  # a multi-page document was compared


def test_an_unchecked_weasyprint_keeps_the_stock_method(monkeypatch: pytest.MonkeyPatch) -> None:
    computed_style.uninstall()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(computed_style, "CHECKED_VERSIONS", ("999.",))
            assert computed_style.install() is False
            assert computed_style.css.ComputedStyle.__missing__ is computed_style._STOCK
    finally:
        assert computed_style.install()
