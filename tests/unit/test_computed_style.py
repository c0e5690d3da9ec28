"""The WeasyPrint overrides (computed-style shortcut, shared font files, document hand-over)
change nothing that is drawn: every template set, in each of its languages, one-page and
multi-page, draws the same operators with them and with stock WeasyPrint."""

import pytest

from rendering import Renderer, weasyprint_overrides
from schemas.samples import sample_order
from tests.support import drawn_operators, stock_weasyprint


@pytest.mark.parametrize(
    ("brand", "locale"), [(None, "en-GB"), (None, "es-MX"), ("Nordic", "en-US"), ("Nordic", "es-ES")]
)
def test_documents_are_drawn_the_same_with_and_without_the_overrides(brand: str | None, locale: str) -> None:
    renderer = Renderer()
    orders = []
    for seed, lines in ((1, 1), (2, 6), (3, 40)):
        order = sample_order(seed, lines=lines)
        order["locale"] = locale
        if brand:
            order["brand"] = brand
        orders.append(order)
    assert weasyprint_overrides.installed()
    with_overrides = [
        [drawn_operators(a.data) for a in renderer.render_mail(o, encrypt=False).attachments] for o in orders
    ]
    with stock_weasyprint():
        stock = [
            [drawn_operators(a.data) for a in renderer.render_mail(o, encrypt=False).attachments]
            for o in orders
        ]
    assert with_overrides == stock
    assert max(len(pages) for mail in stock for pages in mail) > 1  # a multi-page document was compared
