"""The Typst engine: the default set's twin prints what the HTML receipt prints; event values are
data, never markup; a document reads only its set and shared/, imports no package, and draws with
the project's fonts only."""

from __future__ import annotations

import copy
import io
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pikepdf
import pytest
import typst

from bench.run import deployed_alone
from consumer.app.settings import Settings
from consumer.processing.fork_server import SHIPPED_TEMPLATES, preloaded_modules
from consumer.processing.render_pool import RenderConfig
from rendering import TEMPLATE_DIR, PasswordPolicy, Renderer, RenderError, cjk_faces
from rendering.context import document_context
from rendering.glyphs import NO_FONT, undrawn_characters
from schemas.model import OrderCompleted
from schemas.samples import SCRIPT_SAMPLES, sample_order, script_sample
from tests.unit.test_hostile_input import FIELDS, Trap, _payloads, _set, trap  # noqa: F401 - the fixture

TWIN = "default-typst"
ROOT = Path(__file__).resolve().parents[2]
# The face Typst draws each script with (as embedded: subset prefix and style stripped).
TYPST_FACE = {
    "latin-vietnamese": "DejaVuSans",
    "greek": "DejaVuSans",
    "cyrillic": "DejaVuSans",
    "arabic": "NotoSansArabic",
    "hebrew": "NotoSansHebrew",
    "devanagari": "NotoSansDevanagari",
    "thai": "NotoSansThai",
    # One face of the collection, cut (rendering/cjk_faces.py): see the test of regional forms.
    "chinese-simplified": "ReceiptCJK",
    "chinese-traditional": "ReceiptCJK",
    "japanese": "ReceiptCJK",
    "korean": "ReceiptCJK",
    "emoji": "/Type3",  # colour glyphs, drawn as images
}
# What HTML sets' hostile-input tests use, plus every character Typst markup gives a meaning to.
HOSTILE = [
    "#emph[x] $x^2$ *bold* _under_ <label> @ref \\ [brackets] `raw` ~ -- ...",
    '#read("/etc/hostname")',
    '#import "@preview/cetz:0.3.0"',
    "#{ panic() }",
    "{{ 7*7 }}",
    "<script>alert(1)</script>",
    "= Heading\n- list\n+ item",
    "\\u{1F600} // comment /* block */",
    "Ana\r\nBcc: victim@example.org",
]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _text(pdf: bytes, password: str = "") -> str:
    if password:
        with pikepdf.open(io.BytesIO(pdf), password=password) as document:
            out = io.BytesIO()
            document.save(out)
            pdf = out.getvalue()
    result = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True)
    return result.stdout.decode()


def _squeezed(text: str) -> str:
    """Without white space, nor the zero-width spaces the twin lets a 30-letter run break at."""
    return re.sub(r"[\s\u200b]+", "", text)


def _embedded(pdf: bytes) -> set[str]:
    with pikepdf.open(io.BytesIO(pdf)) as document:
        return {
            str(font.get("/BaseFont", font.get("/Subtype"))).split("+", 1)[-1]
            for page in document.pages
            for font in page.Resources.Font.values()
        }


def _what_a_receipt_must_say(renderer: Renderer, order: OrderCompleted) -> list[str]:
    """Order number, every SKU, quantity and amount, the totals, the name and address lines."""
    chosen = renderer._sets["default"]
    language = chosen.language_for(order["locale"])
    context = document_context(order, language, chosen.texts[language], shop="shop", logo=False)
    expected = [
        context["order_id"],
        context["total"],
        context["billing"]["name"],
        *context["billing"]["lines"],
    ]
    for line in context["lines"]:
        expected += [line["sku"], line["quantity"], line["unit_price"], line["total"]]
    expected += [amount for _, amount in context["totals"]]
    return expected


@pytest.mark.parametrize(
    "order",
    [
        sample_order(0),
        sample_order(5),
        sample_order(8, lines=30),
        script_sample("greek"),
        script_sample("korean"),
    ],
    ids=["ja", "seed-5", "several-pages", "greek", "korean"],
)
def test_the_twin_prints_what_the_html_receipt_prints(renderer: Renderer, order: OrderCompleted) -> None:
    html, twin = (renderer.render_mail(order, template_set=name) for name in ("default", TWIN))
    password = PasswordPolicy().password_for(order)
    html_text, twin_text = (_squeezed(_text(m.pdf, password)) for m in (html, twin))
    for value in _what_a_receipt_must_say(renderer, order):
        assert _squeezed(value) in html_text, value
        assert _squeezed(value) in twin_text, value
    assert (twin.engine, html.engine) == ("typst", "weasyprint")
    assert twin.attachment_filename == html.attachment_filename  # the same name, same language
    assert (twin.subject, twin.text_body) == (html.subject, html.text_body)
    assert twin.attachments[0].encrypted
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(twin.pdf))
    if len(order["lines"]) > 20:
        assert twin.pages > 1


@pytest.mark.parametrize("value", HOSTILE)
def test_markup_in_event_values_prints_as_typed(renderer: Renderer, value: str) -> None:
    order: Any = copy.deepcopy(sample_order(4))
    order["locale"] = "en-GB"
    order["customer"]["first_name"] = value
    order["lines"][0]["name"] = value
    order["gift_message"] = value
    text = _squeezed(_text(renderer.render_pdf(order, template_set=TWIN)))
    # A name or address line keeps no line break (as in the HTML sets); the rest is as typed.
    assert text.count(_squeezed(value)) >= 2, value


def test_the_html_sets_hostile_values_are_inert_in_typst(renderer: Renderer, trap: Trap) -> None:  # noqa: F811
    """The payloads of test_hostile_input.py, in every field it fills: no file read, no connection,
    printed as typed (where the text layer can show it: no control or bidi characters; a long
    value wrapped beside other columns is extracted interleaved with them: see the next test)."""
    refusals: list[str] = []
    for payload in _payloads(trap):
        order: Any = copy.deepcopy(sample_order(9))
        for path in FIELDS:
            _set(order, path, payload)
        try:
            pdf = renderer.render_pdf(order, template_set=TWIN)
        except RenderError as error:  # a classified refusal is fine; a crash is not
            refusals.append(error.reason)
            continue
        text = _text(pdf)
        assert trap.secret not in text
        assert trap.secret.encode() not in pdf
        legible = payload.isprintable() and not re.search(
            "[\u202a-\u202e\u2066-\u2069\u200b-\u200f]", payload
        )
        if legible and len(payload) < 200:
            assert _squeezed(payload).casefold() in _squeezed(text).casefold(), payload
    assert trap.connections == []
    assert set(refusals) <= {"render_error", "template_error"}


@pytest.mark.parametrize("field", FIELDS, ids=lambda path: ".".join(map(str, path)))
def test_a_long_unbroken_value_is_printed_whole(renderer: Renderer, field: tuple[Any, ...]) -> None:
    """3,000 letters without a space wrap (onto more pages) instead of running off the page. (The
    text layer interleaves them with the columns beside them: the letters are counted.)"""
    order: Any = copy.deepcopy(sample_order(9))
    _set(order, field, "")
    before = _text(renderer.render_pdf(order, template_set=TWIN)).count("A")
    _set(order, field, "A" * 3000)
    assert _text(renderer.render_pdf(order, template_set=TWIN)).count("A") - before >= 3000


def _set_with(templates: Path, name: str, receipt: str, files: dict[str, str] | None = None) -> Path:
    folder = templates / "sets" / name
    shutil.copytree(TEMPLATE_DIR / "sets" / TWIN, folder)
    (folder / "receipt.typ").write_text(receipt)
    for path, content in (files or {}).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return folder


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped templates; Typst's link folders for it go under the test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, folder, ignore=shutil.ignore_patterns("*.po", "*.pot"))
    return folder


READ = '#let d = json("/order.json")\n#read("{}")\n'


@pytest.mark.parametrize("path", ["notes.txt", "assets/notes.txt", "/shared/base.css", "/notes.txt"])
def test_a_document_reads_its_own_set_and_shared(templates: Path, path: str) -> None:
    _set_with(templates, "probe", READ.format(path), {"notes.txt": "own", "assets/notes.txt": "own"})
    renderer = Renderer(templates)
    assert renderer.render_pdf(sample_order(1), template_set="probe").startswith(b"%PDF-")


@pytest.mark.parametrize(
    "path",
    ["../nordic/set.toml", "/sets/nordic/set.toml", "/../../etc/hostname", "/etc/hostname", "{secret}"],
)
def test_a_document_reads_nothing_else(templates: Path, tmp_path: Path, path: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    _set_with(templates, "probe", READ.format(path.format(secret=secret)))
    with pytest.raises(RenderError) as refused:
        Renderer(templates)  # the warm-up compiles each Typst set once
    assert refused.value.reason == "render_error"
    assert "SECRET" not in str(refused.value)


@pytest.fixture
def proxy_trap(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """An HTTPS proxy that only counts connections: Typst's downloader goes through it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    connections: list[object] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connections.append(connection)
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    yield connections
    server.close()


PACKAGE_IMPORTS = [
    '#import "@preview/cetz:0.3.0": canvas',
    '#import ("@pre" + "view/cetz:0.3.0")',
    '#let spec = "@preview/cetz:0.3.0"\n#import spec',
    '#{\n  import "@preview/cetz:0.3.0"\n}',
    '#include "@local/parts:0.1.0"',
]


@pytest.mark.parametrize("source", PACKAGE_IMPORTS)
def test_package_imports_are_refused_and_nothing_is_fetched(
    templates: Path, proxy_trap: list[object], source: str
) -> None:
    _set_with(templates, "probe", source)
    with pytest.raises(RenderError) as refused:
        Renderer(templates)
    assert refused.value.reason == "template_error"
    assert "import" in str(refused.value)
    assert proxy_trap == []


def test_the_trap_sees_a_download_the_check_did_not_stop(proxy_trap: list[object], tmp_path: Path) -> None:
    """Typst itself would fetch the package through the proxy: the test above can fail."""
    compiler = typst.Compiler(root=str(tmp_path), package_cache_path=str(tmp_path / "cache"))
    with pytest.raises(typst.TypstError):
        compiler.compile(input=b'#import "@preview/cetz:0.3.0"')
    assert proxy_trap != []


def test_a_shared_file_can_be_imported_by_a_literal_path(templates: Path) -> None:
    (templates / "shared" / "typst").mkdir()
    (templates / "shared" / "typst" / "parts.typ").write_text('#let greeting = "Hello from shared"\n')
    _set_with(templates, "probe", '#import "/shared/typst/parts.typ": greeting\n#greeting\n')
    text = _text(Renderer(templates).render_pdf(sample_order(1), template_set="probe"))
    assert "Hellofromshared" in _squeezed(text)


def test_only_the_projects_fonts_are_used(templates: Path) -> None:
    """Typst's own fonts and the system's are not there: a family asked for by name falls back."""
    source = '#set text(font: ("Libertinus Serif", "New Computer Modern", "Liberation Serif"))\nPlain text\n'
    _set_with(templates, "probe", source)
    renderer = Renderer(templates)
    embedded = _embedded(renderer.render_pdf(sample_order(1), template_set="probe"))
    assert embedded
    assert all(name.startswith(("DejaVu", "Noto", "/Type3")) for name in embedded), embedded  # Type 3: emoji
    families = set(renderer._sets["probe"].attachments[0].typst.workspace.fonts().families())  # type: ignore[union-attr]
    assert {"DejaVu Sans", "Noto Sans Arabic", "Noto Sans CJK JP", cjk_faces.FAMILY} <= families
    assert all(family.startswith(("DejaVu", "Noto", cjk_faces.FAMILY)) for family in families), families


@pytest.mark.parametrize("template_set", ["default-typst", "default"])
def test_the_warm_up_order_needs_the_latin_faces_only(renderer: Renderer, template_set: str) -> None:
    """Typst keeps each face it has read whole: workers warmed up with a Japanese order holding
    an emoji held ~60 MB of faces (CJK, colour emoji) that a shop's orders may never need."""
    pdf = renderer.render_mail(renderer.warm_up_order(), encrypt=False, template_set=template_set).pdf
    embedded = _embedded(pdf)
    assert len(embedded) == 2  # regular and bold
    assert all(name.startswith(("DejaVuSans", "Receipt-Sans")) for name in embedded), embedded


@pytest.mark.parametrize("script", sorted(SCRIPT_SAMPLES))
def test_every_script_is_drawn_with_a_real_glyph(renderer: Renderer, script: str) -> None:
    pdf = renderer.render_pdf(script_sample(script), template_set=TWIN)
    assert undrawn_characters(pdf) == {}
    assert any(name.startswith(TYPST_FACE[script]) for name in _embedded(pdf)), _embedded(pdf)


@pytest.mark.parametrize(
    ("lang", "region", "face"), [("zh", "TW", "TC"), ("zh", "CN", "SC"), ("ko", "KR", "KR")]
)
def test_one_cjk_face_draws_the_regional_forms_of_the_documents_language(
    renderer: Renderer, lang: str, region: str, face: str
) -> None:
    """The twin names one face of the Noto CJK collection; the document's language and region
    select the Han forms inside it (OpenType locl): pixel for pixel what the region's face draws."""
    compiler = renderer._sets[TWIN].attachments[0].typst.compiler  # type: ignore[union-attr]

    def image(font: str, lang: str, region: str) -> bytes:
        page = "#set page(width: 6cm, height: 2cm)\n"
        text = f'#set text(font: "{font}", lang: "{lang}", region: "{region}", size: 30pt)\n直骨海角'
        png = compiler.compile(input=(page + text).encode(), format="png", ppi=72)
        assert isinstance(png, bytes)
        return png

    carrier = image("Noto Sans CJK JP", lang, region)
    assert carrier == image(f"Noto Sans CJK {face}", lang, region)
    assert carrier != image("Noto Sans CJK JP", "ja", "JP")  # the forms do differ: the test can fail
    assert image(cjk_faces.FAMILY, lang, region) == carrier  # the cut kept the regional forms


def test_the_cut_cjk_face_draws_everyday_text_and_the_collection_the_rest(renderer: Renderer) -> None:
    """Typst reads a face whole: the cut face (~6.5 MB) draws the characters of the national
    standards, the whole collection (~20 MB a weight) only a rarer one."""
    assert [path.stat().st_size < 8_000_000 for path in cjk_faces.faces()] == [True, True]  # make setup
    order: Any = script_sample("japanese")
    everyday = _embedded(renderer.render_pdf(order, template_set=TWIN))
    assert not any(name.startswith("NotoSansCJK") for name in everyday), everyday
    order["customer"]["last_name"] = "𠮷野"  # outside JIS X 0208: the collection draws it
    rare = renderer.render_pdf(order, template_set=TWIN)
    assert undrawn_characters(rare) == {}
    assert any(name.startswith("NotoSansCJK") for name in _embedded(rare))
    assert "𠮷野" in _text(rare)


def test_a_character_no_font_has_is_found_in_typst_output(renderer: Renderer) -> None:
    order: Any = script_sample("japanese")
    order["customer"]["first_name"] = "太郎\ue000ༀ"  # private use, Tibetan: no font of ours draws them
    undrawn = undrawn_characters(renderer.render_pdf(order, template_set=TWIN))
    assert set().union(*undrawn.values()) == {NO_FONT}


@pytest.mark.parametrize("entry", ["order.json", "main", "shared"])
def test_a_set_cannot_shadow_what_each_compilation_adds(templates: Path, entry: str) -> None:
    _set_with(templates, "probe", "Hello", {entry: "{}"})
    with pytest.raises(RenderError, match=f"entry named '{entry}'"):
        Renderer(templates)


def test_a_document_that_reads_sys_inputs_is_told_where_the_order_is(templates: Path) -> None:
    _set_with(templates, "probe", '#let d = json(bytes(sys.inputs.at("data")))\n#d.order_id\n')
    advice = r'receipt.typ, line 1: sys.inputs is empty; read the order with json\("/order.json"\)'
    with pytest.raises(RenderError, match=advice):
        Renderer(templates)


def test_each_document_reads_its_own_order(renderer: Renderer) -> None:
    """The order file is replaced for every compilation: a warm compiler never prints the last one."""
    orders = [sample_order(seed) for seed in (1, 2, 1)]
    for order in orders:
        order["locale"] = "en-GB"
    texts = [_text(renderer.render_pdf(order, template_set=TWIN)) for order in orders]
    assert orders[0]["order_id"] != orders[1]["order_id"]
    for order, text in zip(orders, texts, strict=True):
        assert order["order_id"] in text
    assert orders[1]["order_id"] not in texts[2]


def test_set_toml_names_a_known_engine_and_typst_documents(templates: Path) -> None:
    folder = _set_with(templates, "probe", "Hello")
    toml = (folder / "set.toml").read_text()
    (folder / "set.toml").write_text(toml.replace('engine = "typst"', 'engine = "latex"'))
    with pytest.raises(RenderError, match="engine 'latex'"):
        Renderer(templates)
    (folder / "set.toml").write_text(toml.replace('template = "receipt.typ"', 'template = "receipt.html"'))
    with pytest.raises(RenderError, match=r"\.typ file"):
        Renderer(templates)


def test_a_brand_or_the_configured_default_chooses_a_typst_set(templates: Path) -> None:
    shutil.copytree(templates / "sets" / TWIN, templates / "sets" / "acme-outdoor")
    renderer = Renderer(templates)
    order: Any = sample_order(2)
    order["brand"] = "Acme Outdoor"
    mail = renderer.render_mail(order)
    assert (mail.template_set, mail.engine) == ("acme-outdoor", "typst")
    settings = Settings(ORDERMAIL_TEMPLATE_DIR=templates, ORDERMAIL_TEMPLATE_SET=TWIN)
    by_default = RenderConfig.from_settings(settings).build()
    assert by_default.render_mail(sample_order(2)).engine == "typst"
    assert by_default.engine(by_default.set_for(sample_order(2))) == "typst"


def test_a_set_root_holds_only_the_set_and_shared_and_is_shared_by_processes(templates: Path) -> None:
    first, second = Renderer(templates), Renderer(templates)
    roots = {
        Path(str(r._sets[TWIN].attachments[0].typst.workspace.path))  # type: ignore[union-attr]
        for r in (first, second)
    }
    assert len(roots) == 1  # the same folder: a killed worker leaves nothing new behind
    (root,) = (p for p in next(iter(roots)).glob(f"root-{TWIN}-*") if p.is_dir())
    expected = {p.name for p in (templates / "sets" / TWIN).iterdir()} | {"shared"}
    assert {p.name for p in root.iterdir()} == expected
    assert (root / "shared").resolve() == (templates / "shared").resolve()


def test_a_workspace_folder_others_can_write_to_is_refused(tmp_path: Path) -> None:
    from rendering.typst_engine import _private_folder

    shared = tmp_path / "open"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(RenderError, match="not a private folder"):
        _private_folder(shared)
    assert _private_folder(tmp_path / "mine").stat().st_mode & 0o777 == 0o700


def test_render_workers_lay_out_a_typst_set() -> None:
    import asyncio

    from consumer.processing.render_pool import RenderPool

    pool = RenderPool(RenderConfig(template_set=TWIN), workers=1, check_templates=True)
    try:
        mail = asyncio.run(pool.render(sample_order(6)))
    finally:
        pool.close()
    assert (mail.template_set, mail.engine) == (TWIN, "typst")
    assert any(line.startswith(f"{TWIN} ") for line in pool.template_report)
    order = sample_order(6)
    assert order["order_id"] in _text(mail.pdf, PasswordPolicy().password_for(order))


def test_a_set_may_ask_for_a_tagged_pdf(templates: Path) -> None:
    folder = templates / "sets" / TWIN
    untagged = Renderer(templates).render_pdf(sample_order(1), template_set=TWIN)
    toml = (folder / "set.toml").read_text()
    (folder / "set.toml").write_text(toml.replace("tagged = false", "tagged = true"))
    tagged = Renderer(templates).render_pdf(sample_order(1), template_set=TWIN)
    for pdf, structure in ((untagged, False), (tagged, True)):
        with pikepdf.open(io.BytesIO(pdf)) as document:
            assert ("/StructTreeRoot" in document.Root) is structure


def test_a_typst_error_names_the_mistake_but_no_order_value(templates: Path) -> None:
    _set_with(templates, "probe", '#let d = json("/order.json")\n#panic(d.billing.name)\n')
    with pytest.raises(RenderError) as failed:
        Renderer(templates)  # the warm-up lays out sample order 0
    customer = sample_order(0)["customer"]
    assert failed.value.reason == "render_error"
    assert "panicked" in str(failed.value)
    assert customer["last_name"] not in str(failed.value)
    assert customer["first_name"] not in str(failed.value)


def test_a_folder_of_typst_sets_renders_without_weasyprint() -> None:
    """A Typst deployment's workers never import WeasyPrint (~35 MB each), nor does its fork server."""
    probe = (
        "import sys; from pathlib import Path; from rendering import Renderer;"
        "from schemas.samples import sample_order;"
        "renderer = Renderer(Path(sys.argv[1]), default_set=sys.argv[2]);"
        "mail = renderer.render_mail(sample_order(3));"
        "assert mail.engine == 'typst' and mail.attachments[0].encrypted;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'weasyprint', 'pydyf', 'tinycss2'}))"
    )
    with deployed_alone(TWIN) as folder:
        command = [sys.executable, "-c", probe, str(folder), TWIN]
        run = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip() == "[]"


def test_the_fork_server_preloads_weasyprint_only_for_its_sets() -> None:
    with deployed_alone(TWIN) as folder:
        typst_only = preloaded_modules(folder)
    assert SHIPPED_TEMPLATES == TEMPLATE_DIR
    assert "rendering.weasyprint_setup" in preloaded_modules(TEMPLATE_DIR)
    assert "rendering.weasyprint_setup" not in typst_only
    assert "rendering.renderer" in typst_only


def test_the_fork_server_starts_before_the_rendering_package_loads() -> None:
    probe = (
        "import sys; from consumer.processing.fork_server import preloaded_modules; preloaded_modules();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rendering', 'pikepdf', 'typst')))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip() == "[]"


def test_a_weasyprint_set_is_set_up_before_it_renders() -> None:
    """The renderer's first WeasyPrint set installs the shortcuts and the loggers' redaction."""
    probe = (
        "import logging; from rendering import Renderer; from rendering import weasyprint_overrides;"
        "from schemas.samples import sample_order;"
        "Renderer().render_pdf(sample_order(1), template_set='default');"
        "print(weasyprint_overrides.installed(),"
        " sorted(type(f).__name__ for f in logging.getLogger('weasyprint').filters))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert run.stdout.strip() == "True ['_RedactURLs']"
