"""The XML fast path builds exactly the tree WeasyPrint's HTML5 parser (tinyhtml5) builds, or
declines; the shipped templates always take it."""

from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import pytest
import tinyhtml5
from weasyprint import HTML

from rendering import Renderer, weasyprint_overrides
from rendering.fast_parse import parse_simple_html
from schemas.samples import sample_order

if TYPE_CHECKING:
    from schemas.model import OrderCompleted


def shape(element: ElementTree.Element) -> tuple[Any, ...]:
    return (
        element.tag,
        sorted(element.attrib.items()),
        element.text,
        element.tail,
        [shape(c) for c in element],
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def documents(renderer: Renderer, order: OrderCompleted) -> list[str]:
    """The HTML of every attachment of every HTML set in every language, for this order."""
    found = []
    for chosen in renderer._sets.values():
        if chosen.engine != "weasyprint":  # a Typst set has no HTML
            continue
        for language in chosen.languages:
            for spec in chosen.attachments:
                found.append(renderer._html(copy.deepcopy(order), chosen, spec, language))
    return found


def assert_same_tree_or_declined(html: str) -> bool:
    fast = parse_simple_html(html)
    if fast is None:
        return False
    assert shape(fast) == shape(tinyhtml5.parse(html, namespace_html_elements=False))
    return True


@pytest.mark.parametrize("lines", [1, 4, 15])
def test_every_shipped_template_takes_the_fast_path_and_builds_the_same_tree(
    renderer: Renderer, lines: int
) -> None:
    for seed in range(6):
        for html in documents(renderer, sample_order(seed, lines=lines)):
            assert assert_same_tree_or_declined(html), "a shipped template fell back to the slow parser"


_JUNK = [*"aZ09 <>&\"'=/;#!?-[]{}%\t\n\r\x0b\x0c\x01\x1f\x7f\x80\x9f\u00a0\u2028\u3000\ufeff·é€"]
_JUNK += ["&amp;", "&#39;", "&#x41;", "]]>", "<!--", "<p>", "</td>", "&nbsp;", "\r\n", "{{", "<![CDATA["]


def test_hostile_event_values_never_change_the_tree(renderer: Renderer) -> None:
    rnd = random.Random(7)

    def junk() -> str:
        return "".join(rnd.choice(_JUNK) for _ in range(rnd.randint(0, 12)))

    fast = declined = 0
    for i in range(60):
        order = sample_order(i, lines=1 + i % 3)
        order["customer"]["first_name"] = junk()
        order["customer"]["billing_address"]["line1"] = junk()
        order["lines"][0]["name"] = junk()
        if i % 3 == 0:
            order["brand"] = junk()
        if i % 2:
            order["gift_message"] = junk()
        for html in documents(renderer, order):
            if assert_same_tree_or_declined(html):
                fast += 1
            else:
                declined += 1
    assert fast > 50  # both paths were exercised
    assert declined > 50


@pytest.mark.parametrize(
    "html",
    [
        "<!DOCTYPE html><html><head></head><body><!-- note --><p>x</p></body></html>",
        "<!DOCTYPE html><html><head></head><body><p>a<br>b</p></body></html>",  # unclosed void element
        "<!DOCTYPE html><html><head></head><body><p><div>x</div></p></body></html>",  # HTML5 closes the p
        "<!DOCTYPE html><html><head></head><body><table><tr><td>x</td></tr></table></body></html>",
        "<!DOCTYPE html><html><head></head><body><P>x</P></body></html>",
        "<!DOCTYPE html><html><head></head><body><p>&#128;</p></body></html>",  # HTML5 remaps it
        '<!DOCTYPE html [<!ENTITY a "aaaa">]><html><head></head><body><p>&a;</p></body></html>',
        "<!DOCTYPE html><html><head></head><body><pre>x</pre></body></html>",  # not on the list
    ],
)
def test_what_the_parsers_would_read_differently_is_declined(html: str) -> None:
    assert parse_simple_html(html) is None


def test_the_fast_path_sets_up_the_document_as_weasyprint_does(renderer: Renderer) -> None:
    html = documents(renderer, sample_order(3))[0]
    assert parse_simple_html(html) is not None
    base = "file:///templates/"
    assert weasyprint_overrides.installed()
    fast, slow = weasyprint_overrides.document(html, base), HTML(string=html, base_url=base)
    assert type(fast) is not HTML  # the overrides' document, given the fast path's tree
    assert set(vars(fast)) == set(vars(slow))
    assert (fast.base_url, fast.media_type) == (slow.base_url, slow.media_type)
    assert shape(fast.etree_element) == shape(slow.etree_element)
