"""A fast path for parsing the documents' HTML: the C XML parser (expat) instead of WeasyPrint's
pure-Python HTML5 parser (tinyhtml5), ~0.2 ms instead of ~3 ms for a receipt (6 % of its render).

Only for documents where both parsers provably build the same tree: well-formed (void elements
closed with ``/>``), lower-case, a small set of elements nested as HTML5 allows, tables with
explicit row groups, no comments, CDATA, processing instructions or DTD (so no entity
expansion either). Anything else returns ``None`` and WeasyPrint parses it itself: a template
that does not follow these rules renders the same, only slower. ``tests/unit/test_fast_parse.py``
compares the trees with tinyhtml5's for every shipped template and for hostile event values.

This module uses no WeasyPrint API. Handing its tree to WeasyPrint does (``HTML`` has no public
way to take a parsed tree): that lives in ``weasyprint_overrides.py``, behind its version gate.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

__all__ = ["parse_simple_html"]

# Markup an HTML5 parser reads differently from an XML parser even in a well-formed document:
# comments, CDATA and processing instructions, any doctype but the plain one (so no DTD either),
# numeric character references (HTML5 remaps some) and tags spanning lines (XML turns a newline
# in an attribute value into a space). Event values are escaped (&amp; &lt; &gt; &#34; &#39;),
# so only templates write these; when they do, WeasyPrint's own parser reads the document.
_NOT_XML = re.compile(r"<!(?!DOCTYPE html>)|<\?|<[^>]*[\t\n\r\f][^>]*>|&#(?!3[49];)")
# The elements both parsers build alike, as long as they nest as below.
_BLOCKS = frozenset(("div", "p", "section", "header", "footer", "table", "h1", "h2", "h3", "h4", "h5", "h6"))
_INLINES = frozenset(("span", "strong", "em", "b", "i", "small", "img"))
_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
_TABLE_PARTS = {  # where HTML5 leaves each (anywhere else it moves it, or adds a row group)
    "colgroup": ("table",),
    "thead": ("table",),
    "tbody": ("table",),
    "tfoot": ("table",),
    "col": ("colgroup",),
    "tr": ("thead", "tbody", "tfoot"),
    "th": ("tr",),
    "td": ("tr",),
}
_ONLY_PARTS = frozenset(("table", "colgroup", "thead", "tbody", "tfoot", "tr"))  # no text either
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9-]*\Z")  # HTML5 lower-cases names; XML reads xmlns, xml:lang


def _blank(text: str | None) -> bool:
    return not text or not text.strip(" \t\n\r\f")  # HTML5's white space, not str.isspace()


def parse_simple_html(html: str) -> ElementTree.Element | None:
    """The tree WeasyPrint's HTML5 parser (tinyhtml5) builds for ``html``, built by the C XML
    parser (0.2 ms instead of 3 ms for a receipt), or ``None`` unless the document is of the
    simple kind where both provably agree: well-formed (void elements closed with ``/>``),
    lower-case, only the elements above, nested as HTML5 allows, tables with explicit row groups.
    Otherwise WeasyPrint parses it itself, so a template that does not follow these rules only
    renders slower. Event values, escaped, can at most make the XML parser fail (control
    characters) or the checks decline (a line break in an attribute), never change a tree."""
    if _NOT_XML.search(html):
        return None
    try:
        root = ElementTree.fromstring(html)  # noqa: S314 # no DTD, so no entity expansion (_NOT_XML)
    except (ElementTree.ParseError, ValueError):
        return None
    if not _parsed_alike(root):
        return None
    # HTML5 drops the white space between <html> and <head>, and adds what follows </body> to
    # the body's content.
    body = root[1]
    root.text = None
    if body.tail:
        if len(body):
            body[-1].tail = (body[-1].tail or "") + body.tail
        else:
            body.text = (body.text or "") + body.tail
        body.tail = None
    return root


def _parsed_alike(root: ElementTree.Element) -> bool:
    if root.tag != "html" or [child.tag for child in root] != ["head", "body"]:
        return False
    head, body = root
    return (
        _blank(root.text)
        and _blank(head.text)
        and _blank(head.tail)
        and _blank(body.tail)
        and all(_ATTRIBUTE.match(name) for element in root.iter() for name in element.attrib)
        and all(
            child.tag in ("meta", "title")
            and not len(child)
            and _blank(child.tail)
            and (child.tag == "title" or _blank(child.text))
            for child in head
        )
        and all(_element_alike(element) for element in body.iter())
    )


def _element_alike(element: ElementTree.Element) -> bool:
    tag = element.tag
    if tag in _ONLY_PARTS and not (_blank(element.text) and all(_blank(child.tail) for child in element)):
        return False  # HTML5 moves text out of tables
    if tag in ("img", "col") and (len(element) or element.text):
        return False  # void elements
    closers = _BLOCKS if tag == "p" else _HEADINGS if tag in _HEADINGS else ()
    if any(inner.tag in closers for inner in element.iter() if inner is not element):
        return False  # HTML5 closes the <p> (or heading) there
    for child in element:
        places = _TABLE_PARTS.get(child.tag)
        if places is not None:
            if tag not in places:
                return False
        elif tag in _ONLY_PARTS or (child.tag not in _BLOCKS and child.tag not in _INLINES):
            return False
    return True
