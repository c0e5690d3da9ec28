"""`ordermail preview` writes what a customer would get (bodies, message, PDFs plain and locked, one image
per page) and its local page serves only its own renderings, showing errors instead of dying."""

from __future__ import annotations

import email
import email.policy
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest

from consumer.app.cli import main
from consumer.tools.preview.render import render_preview, sample
from consumer.tools.preview.server import PreviewServer
from consumer.tools.preview.state import Choice, PreviewState
from rendering import TEMPLATE_DIR, Renderer
from rendering.catalogs import shipped_languages

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _plain_pdfs(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("*.pdf") if not path.name.endswith(".encrypted.pdf"))


@pytest.mark.parametrize("locale", ["en", "es"])
@pytest.mark.parametrize("sample_name", ["0", "long"])
def test_preview_writes_the_mail_the_pdfs_and_every_page(
    renderer: Renderer, tmp_path: Path, sample_name: str, locale: str
) -> None:
    preview = render_preview(renderer, sample(sample_name), locale=locale)
    preview.write(tmp_path)

    assert preview.language == locale
    assert preview.password
    assert {"message.eml", "subject.txt", "body.txt", "body.html"} <= {p.name for p in tmp_path.iterdir()}
    pdfs = _plain_pdfs(tmp_path)
    assert pdfs
    for pdf in pdfs:
        with pikepdf.open(pdf) as document:
            assert not document.is_encrypted
            pages = len(document.pages)
        locked = tmp_path / f"{pdf.stem}.encrypted.pdf"
        with pytest.raises(pikepdf.PasswordError):
            pikepdf.open(locked)
        with pikepdf.open(locked, password=preview.password) as document:
            assert document.is_encrypted
            assert len(document.pages) == pages
        images = sorted(tmp_path.glob(f"page-{pdf.stem}-*.png"))
        assert len(images) == pages
        assert all(image.read_bytes().startswith(PNG) for image in images)
    if sample_name == "long":
        with pikepdf.open(pdfs[0]) as document:
            assert len(document.pages) >= 2

    message = email.message_from_bytes((tmp_path / "message.eml").read_bytes(), policy=email.policy.default)
    assert message["Subject"] == (tmp_path / "subject.txt").read_text(encoding="utf-8").strip()
    assert message["From"] == "preview@ordermail.invalid"
    attached = {str(part.get_filename()): part.get_content() for part in message.iter_attachments()}
    assert set(attached) == {pdf.name for pdf in pdfs}
    for name, content in attached.items():  # as sent: encrypted
        assert content == (tmp_path / f"{Path(name).stem}.encrypted.pdf").read_bytes()
    bodies = [part.get_content() for part in message.walk() if part.get_content_type() == "text/plain"]
    assert (
        bodies[0].replace("\r\n", "\n").strip() == (tmp_path / "body.txt").read_text(encoding="utf-8").strip()
    )


def test_a_set_with_two_attachments_previews_both(renderer: Renderer, tmp_path: Path) -> None:
    if "nordic" not in renderer.set_names:
        pytest.skip("the nordic example set is gone")
    render_preview(renderer, sample("0"), template_set="nordic", locale="es").write(tmp_path)
    pdfs = _plain_pdfs(tmp_path)
    assert len(pdfs) == 2
    for pdf in pdfs:
        assert (tmp_path / f"{pdf.stem}.encrypted.pdf").is_file()
        assert list(tmp_path.glob(f"page-{pdf.stem}-*.png"))


def test_a_new_preview_replaces_only_the_files_of_the_last_one(renderer: Renderer, tmp_path: Path) -> None:
    (tmp_path / "screenshot.png").write_bytes(b"mine")
    render_preview(renderer, sample("long"), locale="en").write(tmp_path)
    render_preview(renderer, sample("0"), locale="en").write(tmp_path)
    assert len(list(tmp_path.glob("page-*.png"))) == 1  # the long sample's pages are gone
    assert len(_plain_pdfs(tmp_path)) == 1
    assert (tmp_path / "screenshot.png").read_bytes() == b"mine"


def test_the_command_prints_the_folder_and_the_password_and_nothing_personal(
    renderer: Renderer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("ORDERMAIL_PDF_PASSWORD_TEMPLATE", "ORDERMAIL_TEMPLATE_DIR", "ORDERMAIL_TEMPLATE_SET"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["preview", "--sample", "long", "--locale", "es", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    order = sample("long")
    customer = order["customer"]
    assert str(tmp_path) in printed
    assert f"PDF password: {renderer.password_policy.password_for(order)}" in printed
    for personal in (customer["email"], customer["first_name"], customer["last_name"]):
        assert personal not in printed
    assert (tmp_path / "message.eml").is_file()


def test_the_command_names_why_a_preview_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--set", "no-such-set", "--out", str(tmp_path)]) == 2
    assert "unknown_set" in capsys.readouterr().err


# --- the page, without a browser ---------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    state = PreviewState(
        templates,
        tmp_path / "out",
        lambda folder: Renderer(template_dir=folder),
        {"0": lambda: sample("0"), "long": lambda: sample("long"), "japanese": lambda: sample("japanese")},
        Choice("0", "", ""),
    )
    preview_server = PreviewServer(("127.0.0.1", 0), state)
    thread = threading.Thread(target=preview_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{preview_server.server_address[1]}", templates
    finally:
        preview_server.shutdown()
        preview_server.server_close()
        thread.join(timeout=10)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 — our own http:// server
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def test_the_locale_picker_offers_every_shipped_language_and_renders_it(server: tuple[str, Path]) -> None:
    base, templates = server
    status, _, body = _get(f"{base}/?sample=japanese&locale=ja-JP")
    page = body.decode()
    assert status == 200
    for language in shipped_languages(templates):
        assert f'<option value="{language}"' in page, language
    assert "日本語" in page  # each language named in its own
    assert "japanese: a customer writing japanese" in page
    assert "【ordermail demo shop】" in page  # the subject, in Japanese
    assert "山田" not in page  # personal data stays inside the PDF (shown only as page images)


def test_the_page_shows_the_mail_and_its_pages_and_serves_only_its_own_files(
    server: tuple[str, Path],
) -> None:
    base, _templates = server
    status, content_type, body = _get(f"{base}/?sample=long&locale=es")
    page = body.decode()
    assert status == 200
    assert content_type.startswith("text/html")
    assert 'id="subject"' in page
    assert 'sandbox=""' in page
    image = page.split('<img class="page" src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    status, content_type, png = _get(base + image)
    assert (status, content_type) == (200, "image/png")
    assert png.startswith(PNG)
    for path in ("/file?sample=long&locale=es&name=../../../etc/passwd", "/../etc/passwd", "/etc/passwd"):
        assert _get(base + path)[0] == 404
    assert _get(f"{base}/?sample=../x")[0] == 400
    assert _get(f"{base}/?locale=<script>")[0] == 400


def test_a_template_edit_changes_the_version_and_a_broken_template_is_shown_not_fatal(
    server: tuple[str, Path],
) -> None:
    base, templates = server
    version = _get(f"{base}/version")[2]
    assert _get(f"{base}/")[0] == 200
    subjects = sorted(templates.glob("**/subject.txt"))
    for subject in subjects:
        subject.write_text(subject.read_text(encoding="utf-8") + "{% if %}", encoding="utf-8")
    assert _get(f"{base}/version")[2] != version
    status, _, body = _get(f"{base}/?locale=en")
    assert status == 200
    assert 'id="error"' in body.decode()
    assert "template_error" in body.decode()
    for subject in subjects:
        subject.write_text(
            subject.read_text(encoding="utf-8").replace("{% if %}", " MARKER"), encoding="utf-8"
        )
    status, _, body = _get(f"{base}/?locale=en")
    assert status == 200
    assert "MARKER" in body.decode()


def test_the_page_shows_the_default_set_and_its_typst_twin_side_by_side(server: tuple[str, Path]) -> None:
    base, _templates = server
    status, _, body = _get(f"{base}/?sample=0&locale=de")
    page = body.decode()
    assert status == 200
    assert "PDF pages: default (weasyprint)" in page
    assert "PDF pages: default-typst (typst)" in page
    twin = page.split('id="twin-pages"', 1)[1]
    image = twin.split('<img class="page" src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "set=default-typst" in image
    status, content_type, png = _get(base + image)
    assert (status, content_type) == (200, "image/png")
    assert png.startswith(PNG)
    # And from the twin's side: the HTML set is its twin.
    page = _get(f"{base}/?sample=0&locale=de&set=default-typst")[2].decode()
    assert "PDF pages: default-typst (typst)" in page
    assert "PDF pages: default (weasyprint)" in page
    assert 'id="twin-pages"' not in _get(f"{base}/?sample=0&set=nordic")[2].decode()  # nordic has no twin
