"""Every use of WeasyPrint's private API, behind one version gate.

The rest of ``rendering`` uses only WeasyPrint's public API (``HTML``, ``CSS``,
``FontConfiguration``, the URL fetcher classes, ``__version__``). The speed-ups here use its
internals, which any release may change, so they are checked against one release,
:data:`CHECKED_VERSION` (the one ``pyproject.toml`` pins), and :func:`install` puts them in place
only on it. On any other version it changes nothing and logs one warning naming the version:
WeasyPrint then runs stock and draws the same documents, only slower. ``weasyprint_setup.py``
calls :func:`install` once per process, and ``renderer.py`` builds its documents with
:func:`document`.

- **Computed styles** (~4.5 % of a receipt's render): ``ComputedStyle.__missing__`` answers at
  once the lookups of properties no rule sets (the parent's value, or the initial one).
- **Font files copied once** (~0.6 ms): ``weasyprint.pdf.fonts`` copies each embedded font file
  out of HarfBuzz once per face and process instead of once per document.
- **Document hand-over** (~13 %): :func:`document` hands the tree of ``fast_parse`` to ``HTML``
  without its HTML5 parser, and gives it a user-agent stylesheet without the rules that match
  every element.

``tests/unit/test_computed_style.py`` and ``test_font_data.py`` render every template set with
and without the overrides and compare what is drawn (and the fonts embedded);
``test_weasyprint_overrides.py`` checks what :func:`install` replaces, and that an unchecked
version gets none of it. To upgrade WeasyPrint: read each override against the new release's
source, move :data:`CHECKED_VERSION` (and the pin), and run those tests.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import cssselect2  # type: ignore[import-untyped] # no type hints
import weasyprint
from weasyprint import CSS, HTML
from weasyprint.urls import URLFetcher

from rendering.fast_parse import parse_simple_html

__all__ = ["CHECKED_VERSION", "document", "harfbuzz_subset_in_use", "install", "installed", "uninstall"]

CHECKED_VERSION = "70."  # the WeasyPrint release (version prefix) the overrides were checked against

log = logging.getLogger("ordermail.rendering")
_Replacement = tuple[Any, str, Any]  # owner (module or class), attribute, value
_replaced: list[_Replacement] = []  # WeasyPrint's own values of what install() replaced


def install() -> bool:
    """Puts the overrides in place on the checked WeasyPrint release and returns True (again if
    they already are). On any other release it changes nothing, logs a warning naming the version
    (nothing else) and returns False: WeasyPrint runs stock."""
    if _replaced:
        return True
    version = weasyprint.__version__
    if not version.startswith(CHECKED_VERSION):
        log.warning(
            "WeasyPrint %s is not the release the rendering shortcuts were checked against (%sx): "
            "running it stock, which renders the same documents more slowly",
            version,
            CHECKED_VERSION,
        )
        return False
    # WeasyPrint's private modules are imported only past the gate.
    from weasyprint import css
    from weasyprint.pdf import fonts

    _ua_stylesheet()  # built once, at start-up
    for owner, name, replacement in (*_computed_style(css), *_font_data(fonts)):
        _replaced.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)
    return True


def uninstall() -> None:
    """Puts WeasyPrint's own functions back (the tests compare documents with and without)."""
    while _replaced:
        owner, name, stock = _replaced.pop()
        setattr(owner, name, stock)


def installed() -> bool:
    return bool(_replaced)


def document(string: str, base_url: str | None = None, url_fetcher: Any = None) -> HTML:
    """A :class:`weasyprint.HTML` for ``string``: with the overrides installed, parsed by the fast
    path where it can be and with the trimmed user-agent stylesheet; otherwise stock."""
    html_class = _DocumentHTML if _replaced else HTML
    return html_class(string=string, base_url=base_url, url_fetcher=url_fetcher)


def harfbuzz_subset_in_use() -> bool:
    """Whether WeasyPrint subsets fonts with HarfBuzz (its own test, read from its private ``ffi``
    module; read only, so not gated). False when a release without that test cannot tell."""
    try:
        from weasyprint.text import ffi

        return ffi.harfbuzz_subset is not None and bool(ffi.harfbuzz.hb_version_atleast(4, 1, 0))
    except (ImportError, AttributeError):
        return False


def _computed_style(css: Any) -> list[_Replacement]:
    """WeasyPrint computes each element's style properties lazily, in ``ComputedStyle.__missing__``:
    some 6,000 lookups per receipt, most for a property the element's rules do not set, so the
    answer is the parent's value (inherited properties) or the initial value. The stock method
    reaches it only after its general steps (logical properties, ``var()``, ``calc()``, special
    cases). This answers those two cases at once and leaves every other lookup to it, unchanged."""
    stock = css.ComputedStyle.__missing__
    special = frozenset({"float", "display", "position", "page"})  # special even when not set

    def missing(self: Any, key: str) -> Any:
        if key not in self.cascaded and key not in css.PHYSICAL_FUNCTIONS and key not in special:
            if key[:16] == "text_decoration_":
                pass  # propagated, not inherited: stock
            elif key in css.INHERITED or key[:2] == "__":
                parent = self.parent_style
                if parent is not None:
                    value = parent[key]
                    if not css.check_math(value):  # an unresolved calc() is re-solved here: stock
                        self[key] = value
                        return value
            elif key not in css.INITIAL_NOT_COMPUTED:
                value = self[key] = css.INITIAL_VALUES[key]
                return value
        return stock(self, key)

    return [(css.ComputedStyle, "__missing__", missing)]


def _font_data(fonts: Any) -> list[_Replacement]:
    """For every PDF, WeasyPrint copies each font it embeds, whole, out of HarfBuzz into a Python
    ``bytes`` (``weasyprint.pdf.fonts.Font``): 1.5 MB per receipt for the regular and bold faces,
    only to subset it and drop the copy. Here the copy of a font map's face is made once and
    shared (``bytes`` are immutable; WeasyPrint only reads or replaces it), which also saves the
    page faults of mapping a fresh 1.5 MB each time.

    A face is recognised by its address: the font map's faces are the ones handed out by
    ``get_pango_font_hb_face``, and a reference to each is held while installed, so no other face
    (such as the subset HarfBuzz makes per document) can get the same address. They are only as
    many as the faces used. The faces of one collection (Noto Sans CJK's JP, SC, TC and KR, each
    regular and bold) all answer with the whole ~20 MB file: one copy per file content is kept."""
    from weasyprint.text.ffi import ffi, harfbuzz

    stock_face, stock_data = fonts.get_pango_font_hb_face, fonts.get_hb_object_data
    faces: dict[int, Any] = {}  # address -> a reference to the font map's face, held
    data: dict[int, bytes | None] = {}  # address -> the face's whole font file
    copies: dict[tuple[int, bytes], bytes | None] = {}  # a file's (size, SHA-256) -> its copy

    def address(pointer: Any) -> int:
        return int(ffi.cast("uintptr_t", pointer))

    def font_map_face(pango_font: Any) -> Any:
        face = stock_face(pango_font)
        faces.setdefault(address(face), face)
        return face

    def mapped_file(face: Any) -> tuple[int, bytes]:
        """The face's file, identified by its content, read where HarfBuzz mapped it (no copy)."""
        blob = harfbuzz.hb_face_reference_blob(face)
        with ffi.new("unsigned int *") as length:
            pointer = harfbuzz.hb_blob_get_data(blob, length)
            size = int(length[0])
            digest = hashlib.sha256(ffi.buffer(pointer, size) if pointer != ffi.NULL else b"").digest()
            harfbuzz.hb_blob_destroy(blob)
            return size, digest

    def object_data(hb_object: Any, ot_color: str | None = None, glyph: int | None = None) -> Any:
        if ot_color is None:
            key = address(hb_object)
            if key in faces:
                if key not in data:
                    file = mapped_file(hb_object)
                    if file not in copies:
                        copies[file] = stock_data(hb_object)
                    data[key] = copies[file]
                return data[key]
        return stock_data(hb_object, ot_color, glyph)

    return [(fonts, "get_pango_font_hb_face", font_map_face), (fonts, "get_hb_object_data", object_data)]


@functools.cache
def _ua_stylesheet() -> CSS:
    """WeasyPrint's own HTML user-agent stylesheet (a file of its package) without its universal
    pseudo-element rules. ``::marker``, ``::footnote-call``, ``::footnote-marker``, ``::note-call``,
    ``::note-marker`` and ``::note-callback`` match every element, so WeasyPrint cascades and
    computes six extra styles per element (about 7 % of a one-page receipt's render time). The
    documents use no footnotes or notes; list markers keep their rule, narrowed to ``li``."""
    from weasyprint.css.counters import CounterStyle

    text = (files("weasyprint.css") / "html5_ua.css").read_text("utf-8")
    text = re.sub(r"(?m)^::marker\b", "li::marker", text)
    text = re.sub(r"(?m)^::[a-z-]+ \{[^}]*\}\n", "", text)
    return CSS(string=text, counter_style=CounterStyle())


class _DocumentHTML(HTML):  # type: ignore[misc] # WeasyPrint ships no type hints
    """:class:`weasyprint.HTML` with the trimmed user-agent stylesheet (through the private
    ``_ua_stylesheets`` hook; forms are never rendered) and, for the documents it can, the tree of
    the C XML parser instead of the pure-Python HTML5 one (about 3 ms, 6 % of a one-page receipt's
    render time), set up as ``HTML.__init__`` sets up its own (private attributes)."""

    def __init__(self, *, string: str, base_url: str | None = None, url_fetcher: Any = None) -> None:
        root = parse_simple_html(string)
        if root is None:
            super().__init__(string=string, base_url=base_url, url_fetcher=url_fetcher)
            return
        # What HTML.__init__ does after parsing (no <base> to look for: the fast path allows none).
        self.base_url = str(base_url) if isinstance(base_url, Path) else base_url
        self.url_fetcher = URLFetcher() if url_fetcher is None else url_fetcher
        self.media_type = "print"
        self.wrapper_element = cssselect2.ElementWrapper.from_html_root(root, content_language=None)
        self.etree_element = self.wrapper_element.etree_element

    def _ua_stylesheets(self, forms: bool = False) -> list[CSS]:
        return [_ua_stylesheet()]
