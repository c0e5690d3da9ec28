"""Template sets: selection by brand, locale fallback, shared parts, several attachments,
unencrypted attachments without personal data, and start-up validation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pikepdf
import pytest

from consumer.app.assembly import start_render_pool
from consumer.app.cli import main
from consumer.app.settings import Settings
from consumer.processing.render_pool import RenderConfig
from rendering import TEMPLATE_DIR, Renderer, RenderError
from schemas.samples import sample_order

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, copy)
    return copy


def _text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def _order(locale: str, brand: str | None = None, lines: int = 2) -> Any:
    order: Any = sample_order(11, lines=lines)
    order["locale"], order["brand"] = locale, brand
    return order


def test_both_sets_render_multi_page_orders_in_both_languages(renderer: Renderer, tmp_path: Path) -> None:
    for brand, documents in ((None, 1), ("Nordic", 2)):
        for locale, word in (("en-GB", "Total"), ("es-MX", "Importe")):
            order = _order(locale, brand, lines=40)
            mail = renderer.render_mail(order, keep_plain=True)
            assert len(mail.attachments) == documents
            for attachment in mail.attachments:
                assert attachment.pages >= 2
                assert attachment.encrypted
                with pytest.raises(pikepdf.PasswordError):
                    pikepdf.open(BytesIO(attachment.data))
                assert attachment.plain is not None
                text = _text(attachment.plain, tmp_path)
                assert mail.attachments[0].filename.split("-")[0] in {"receipt", "recibo"}
                assert order["order_id"] in text
            squashed = "".join(_text(mail.attachments[0].plain or b"", tmp_path).split()).lower()
            assert word.lower() in squashed  # letter-spaced headings come out of pdftotext spaced


def test_the_brand_picks_the_set_and_unknown_brands_get_the_default(renderer: Renderer) -> None:
    assert renderer.set_for(_order("en", "Nordic")) == "nordic"
    assert renderer.set_for(_order("en", "  NORDIC ")) == "nordic"
    assert renderer.set_for(_order("en", "Acme Outdoor")) == "default"
    assert renderer.set_for(_order("en")) == "default"
    mail = renderer.render_mail(_order("es-ES", "Nordic"))
    assert (mail.template_set, mail.language) == ("nordic", "es")
    assert [a.filename.split("-")[0] for a in mail.attachments] == ["recibo", "devolucion"]
    assert "recibo-" in mail.text_body
    assert "devolucion-" in mail.text_body


def test_locale_falls_back_to_the_language_then_the_sets_default(renderer: Renderer) -> None:
    assert renderer.render_mail(_order("es-MX")).language == "es"
    assert renderer.render_mail(_order("sv-SE")).language == "en"  # no Swedish catalog
    assert renderer.render_mail(_order("ES")).language == "es"


def test_a_new_language_needs_only_a_catalog(templates: Path) -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po, write_po

    source = templates / "shared/locale/es/LC_MESSAGES/messages.po"
    with source.open("rb") as file:
        catalog = read_po(file, locale="ca")
    catalog["Receipt"].string = "Rebut"
    catalog["receipt"].string = "rebut"
    subject = "%(shop_name)s: your receipt for order %(order_id)s"
    catalog[subject].string = "%(shop_name)s: el teu rebut de la comanda %(order_id)s"
    catalan = templates / "shared/locale/ca/LC_MESSAGES"
    catalan.mkdir(parents=True)
    with (catalan / "messages.po").open("wb") as file:
        write_po(file, catalog)
    renderer_without_mo = pytest.raises(RenderError, match="make catalogs")
    with renderer_without_mo:  # a .po without its compiled .mo stops the start
        Renderer(templates)
    with (catalan / "messages.mo").open("wb") as file:
        write_mo(file, catalog)
    renderer = Renderer(templates)
    order = _order("ca-ES")
    mail = renderer.render_mail(order)
    assert mail.language == "ca"
    assert mail.subject.endswith(f"el teu rebut de la comanda {order['order_id']}")
    assert mail.attachment_filename.startswith("rebut-")
    assert any(line.startswith("default ca ") for line in renderer.validate())


def test_a_set_file_overrides_the_shared_one(templates: Path, tmp_path: Path) -> None:
    layout = templates / "sets/default/layouts/document.html"
    layout.parent.mkdir()
    shared = (templates / "shared/layouts/document.html").read_text()
    layout.write_text(shared.replace("{% block content %}", "OVERRIDDEN-LAYOUT {% block content %}"))
    text = _text(Renderer(templates).render_pdf(_order("en")), tmp_path)
    assert "OVERRIDDEN-LAYOUT" in text
    assert "OVERRIDDEN-LAYOUT" not in _text(Renderer(templates).render_pdf(_order("en", "Nordic")), tmp_path)


def test_an_unencrypted_attachment_never_sees_personal_data(templates: Path, tmp_path: Path) -> None:
    folder = templates / "sets/default"
    (folder / "leaflet.html").write_text(
        '{% extends "layouts/document.html" %}{% block content %}<p>Care guide for {{ order_id }}</p>'
        "{% endblock %}"
    )
    with (folder / "set.toml").open("a") as config:
        config.write('\n[[attachments]]\ntemplate = "leaflet.html"\nfilename = "care-{{ order_id }}.pdf"\n')
        config.write("encrypted = false\n")
    order = _order("en")
    mail = Renderer(templates).render_mail(order)
    leaflet = mail.attachments[1]
    assert (leaflet.filename, leaflet.encrypted) == (f"care-{order['order_id']}.pdf", False)
    text = _text(leaflet.data, tmp_path)  # opens without a password
    assert f"Care guide for {order['order_id']}" in text
    assert order["customer"]["last_name"] not in text

    (folder / "leaflet.html").write_text("<p>{{ billing.name }}</p>")  # tries to reach personal data
    with pytest.raises(RenderError) as caught:
        Renderer(templates).render_mail(order)
    assert caught.value.reason == "template_error"


def test_a_broken_template_stops_the_start_not_a_live_event(templates: Path) -> None:
    subject = templates / "sets/nordic/es/subject.txt"  # a template for one language only
    subject.parent.mkdir()
    subject.write_text("{{ order_id }} {{ no_such_variable }}\n")
    with pytest.raises(RenderError) as caught:
        Renderer(templates).validate()
    assert "'nordic', es" in str(caught.value)
    settings = Settings(ORDERMAIL_TEMPLATE_DIR=templates, ORDERMAIL_RENDER_WORKERS=2)
    with pytest.raises(SystemExit) as stopped:  # the workers check the templates between them
        start_render_pool(RenderConfig.from_settings(settings), settings)
    assert "templates are broken" in str(stopped.value)
    assert "'nordic', es" in str(stopped.value)
    subject.write_text("{% if %}\n")  # does not even compile
    with pytest.raises(RenderError):
        Renderer(templates)


def test_templates_check_names_what_is_broken(templates: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "check", "--template-dir", str(templates)]) == 0
    assert "templates: ok (72 renderings; catalogs complete; no missing glyphs)" in capsys.readouterr().out
    (templates / "sets/default/receipt.html").write_text("{{ lines | no_such_filter }}")
    assert main(["templates", "check", "--template-dir", str(templates)]) == 1
    assert "templates: broken" in capsys.readouterr().err


def test_the_trimmed_user_agent_stylesheet_is_in_use(renderer: Renderer, tmp_path: Path) -> None:
    # The speed-up overrides a private WeasyPrint hook: an upgrade that drops it must be noticed.
    from weasyprint import HTML

    from rendering.weasyprint_overrides import _DocumentHTML, _ua_stylesheet

    assert callable(getattr(HTML, "_ua_stylesheets", None))
    assert _DocumentHTML(string="<p>x</p>")._ua_stylesheets() == [_ua_stylesheet()]
    text = _text(renderer.render_pdf(_order("en")), tmp_path)  # still a whole receipt
    assert "Total" in text


def test_the_workers_split_the_template_check_without_gaps_or_overlap() -> None:
    renderer = Renderer()
    everything = renderer.validate()
    halves = renderer.validate((0, 2)) + renderer.validate((1, 2))
    assert sorted(halves) == sorted(everything)
    assert len(everything) == 72  # 3 sets x 12 languages x 2 samples
    assert sum(line.endswith("p.") for line in everything) == 6  # as PDFs: each set's default language


def test_the_glyph_check_is_split_without_gaps_or_overlap() -> None:
    """``templates check`` runs a share of the script samples in each process."""
    from types import SimpleNamespace

    from rendering.template_check import glyph_problems

    rendered: list[tuple[str, str]] = []

    def render_mail(order: dict[str, object], *, encrypt: bool, template_set: str) -> SimpleNamespace:
        rendered.append((str(order["locale"]), template_set))
        return SimpleNamespace(attachments=())

    renderer: Any = SimpleNamespace(set_names=["a", "b", "c"], render_mail=render_mail)
    glyph_problems(renderer)
    everything, rendered[:] = list(rendered), []
    for index in range(3):
        glyph_problems(renderer, (index, 3))
    assert sorted(rendered) == sorted(everything)
    assert len(set(everything)) == len(everything) > 3


def test_the_service_main_process_never_loads_weasyprint() -> None:
    """Only the render workers (and the CLI's rendering commands) need it: ~0.6 s and ~60 MB."""
    probe = (
        "import sys, consumer.app.cli, consumer.kafka.service, consumer.app.assembly,"
        " consumer.processing.pipeline;"
        "print('weasyprint' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"
