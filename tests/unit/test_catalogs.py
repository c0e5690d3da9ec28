"""Translations as gettext catalogs: what ships, and what ``ordermail templates check`` refuses."""

from __future__ import annotations

import os
import re
import shutil
from typing import TYPE_CHECKING

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from consumer.app.cli import main
from rendering import TEMPLATE_DIR, Renderer, RenderError
from rendering.catalogs import shipped_languages
from rendering.template_check import catalog_problems, extracted_texts
from schemas.samples import sample_order

if TYPE_CHECKING:
    from pathlib import Path

SHIPPED = ("ar", "de", "en", "es", "fr", "he", "it", "ja", "ko", "nl", "pt", "zh")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, copy)  # .mo files keep their times: still up to date
    return copy


def _edit(templates: Path, language: str, text: str, translation: str, *, fuzzy: bool = False) -> None:
    path = templates / f"shared/locale/{language}/LC_MESSAGES/messages.po"
    with path.open("rb") as file:
        catalog = read_po(file)
    message = catalog[text]
    message.string = translation
    if fuzzy:
        message.flags.add("fuzzy")
    with path.open("wb") as file:
        write_po(file, catalog)
    with path.with_suffix(".mo").open("wb") as file:  # compiled, as `make catalogs` would
        write_mo(file, catalog)


def test_the_shipped_languages_are_complete() -> None:
    assert shipped_languages(TEMPLATE_DIR) == SHIPPED
    assert catalog_problems(TEMPLATE_DIR) == []


def test_extraction_finds_texts_in_code_and_templates() -> None:
    texts = extracted_texts(TEMPLATE_DIR)
    assert "Unit price" in texts  # N_() in rendering/messages.py
    assert "Returns form" in texts  # _() in the nordic set's returns.html
    assert "Kind regards," in texts  # {% trans %} in the default set's e-mail


@pytest.mark.parametrize(
    ("text", "translation", "fuzzy", "problem"),
    [
        ("Receipt", "", False, "de: missing: 'Receipt'"),
        ("Receipt", "Quittung", True, "de: fuzzy: 'Receipt'"),
        (
            "Your receipt for order %(order_id)s",
            "Ihre Quittung für Bestellung %(order)s",
            False,
            "de: placeholders differ",
        ),
        (
            "Your receipt for order %(order_id)s",
            "100 % Ihre Quittung für Bestellung %(order_id)s",
            False,
            "de: a lone %",
        ),
        (
            "Thanks for your order <strong>%(order_id)s</strong>. Attached you'll find:",
            "Danke für Ihre Bestellung %(order_id)s. Anbei:",
            False,
            "de: markup differs",
        ),
        ("receipt", "Quittung/../x", False, "de: a file name prefix must be ASCII"),
    ],
)
def test_a_broken_translation_is_named(
    templates: Path, text: str, translation: str, fuzzy: bool, problem: str
) -> None:
    _edit(templates, "de", text, translation, fuzzy=fuzzy)
    problems = catalog_problems(templates)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_a_new_text_needs_extracting_and_translating(templates: Path) -> None:
    receipt = templates / "sets/default/receipt.html"
    receipt.write_text(
        receipt.read_text().replace("{% endblock %}", '{{ _("Keep this receipt") }}{% endblock %}', 1)
    )
    problems = catalog_problems(templates)
    assert any("messages.pot: out of date (1 new, 0 gone)" in line for line in problems)
    untranslated = {line.split(":")[0] for line in problems if "missing: 'Keep this receipt'" in line}
    assert untranslated == set(SHIPPED) - {"en"}


def test_a_folder_of_some_sets_linking_shared_from_elsewhere_uses_part_of_its_catalogs(
    templates: Path, tmp_path: Path
) -> None:
    deployment = tmp_path / "deployment"
    (deployment / "sets").mkdir(parents=True)
    (deployment / "shared").symlink_to(templates / "shared")
    (deployment / "sets/default-typst").symlink_to(templates / "sets/default-typst")
    assert catalog_problems(deployment) == []
    for other in ("default", "nordic"):  # the owner of the catalogs with the same sets: stale
        shutil.rmtree(templates / "sets" / other)
    stale = re.compile(r"out of date \(0 new, [1-9]\d* gone\)")
    assert any(stale.search(line) for line in catalog_problems(templates))


def test_a_catalog_newer_than_its_compiled_form_stops_the_start(templates: Path) -> None:
    po = templates / "shared/locale/ja/LC_MESSAGES/messages.po"
    mo = po.with_suffix(".mo")
    os.utime(po, (mo.stat().st_mtime + 10, mo.stat().st_mtime + 10))
    with pytest.raises(RenderError, match=r"ja/LC_MESSAGES/messages.mo is missing or older than its .po"):
        Renderer(templates)


def test_templates_check_fails_on_a_broken_catalog(
    templates: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(templates, "ja", "Receipt", "")
    assert main(["templates", "check", "--template-dir", str(templates)]) == 1
    err = capsys.readouterr().err
    assert "templates: ja: missing: 'Receipt'" in err
    assert "templates: broken: 1 problems" in err


def test_a_japanese_order_gets_japanese_texts_everywhere() -> None:
    order = sample_order(3)
    order["locale"] = "ja-JP"
    mail = Renderer().render_mail(order)
    assert mail.language == "ja"
    assert "注文" in mail.subject
    assert "パスワード" in mail.text_body
    assert mail.attachment_filename.startswith("ryoshusho-")
