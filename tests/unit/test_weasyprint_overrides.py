"""The one version gate over WeasyPrint's private API (``rendering/weasyprint_overrides.py``):
the checked release gets exactly the listed overrides, any other release runs stock WeasyPrint."""

from __future__ import annotations

import logging
import sys

import pytest
import weasyprint
from weasyprint import HTML

import rendering.weasyprint_setup  # noqa: F401 # installs the overrides on import, as the fork server does
from rendering import weasyprint_overrides
from tests.support import stock_weasyprint

# What install() replaces on the checked release: a new override has to be added here.
OVERRIDDEN = {
    "weasyprint.css.ComputedStyle.__missing__",
    "weasyprint.pdf.fonts.get_pango_font_hb_face",
    "weasyprint.pdf.fonts.get_hb_object_data",
}
_ABSENT = object()


def _weasyprint_attributes() -> dict[str, object]:
    """Every attribute of WeasyPrint's loaded modules and of the classes they define."""
    found: dict[str, object] = {}
    for name, module in list(sys.modules.items()):
        if name == "weasyprint" or name.startswith("weasyprint."):
            for attribute, value in vars(module).items():
                found[f"{name}.{attribute}"] = value
                if isinstance(value, type) and value.__module__ == name:
                    found.update({f"{name}.{attribute}.{key}": item for key, item in vars(value).items()})
    return found


def _changed(before: dict[str, object], after: dict[str, object]) -> set[str]:
    return {
        key for key in before.keys() | after.keys() if before.get(key, _ABSENT) is not after.get(key, _ABSENT)
    }


def test_an_unchecked_weasyprint_runs_stock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with stock_weasyprint():
        monkeypatch.setattr(weasyprint, "__version__", "71.0")
        stock = _weasyprint_attributes()
        with caplog.at_level(logging.WARNING, logger="ordermail.rendering"):
            assert weasyprint_overrides.install() is False
        assert _changed(stock, _weasyprint_attributes()) == set()  # every attribute is WeasyPrint's own
        assert not weasyprint_overrides.installed()
        assert type(weasyprint_overrides.document("<p>x</p>")) is HTML
        [warning] = [record for record in caplog.records if record.name == "ordermail.rendering"]
        assert warning.levelno == logging.WARNING
        assert "WeasyPrint 71.0 is not the release" in warning.getMessage()
        monkeypatch.undo()


def test_the_checked_weasyprint_gets_exactly_the_listed_overrides() -> None:
    assert weasyprint.__version__.startswith(weasyprint_overrides.CHECKED_VERSION)
    with stock_weasyprint():
        assert not weasyprint_overrides.installed()
        stock = _weasyprint_attributes()
        assert weasyprint_overrides.install()
        assert weasyprint_overrides.install()  # already installed: says so, replaces nothing more
        assert weasyprint_overrides.installed()
        assert _changed(stock, _weasyprint_attributes()) == OVERRIDDEN
        weasyprint_overrides.uninstall()
        assert _changed(stock, _weasyprint_attributes()) == set()


def test_the_document_hand_over_uses_the_fast_tree_and_the_trimmed_stylesheet() -> None:
    # It overrides a private WeasyPrint hook: a release that drops it must be noticed.
    assert callable(getattr(HTML, "_ua_stylesheets", None))
    html = "<!DOCTYPE html><html><head></head><body><p>x</p></body></html>"
    assert weasyprint_overrides.installed()
    fast = weasyprint_overrides.document(html)
    assert isinstance(fast, HTML)
    assert type(fast) is not HTML
    assert fast._ua_stylesheets() == [weasyprint_overrides._ua_stylesheet()]
    assert fast._ua_stylesheets() != HTML(string=html)._ua_stylesheets()
    with stock_weasyprint():
        assert type(weasyprint_overrides.document(html)) is HTML
