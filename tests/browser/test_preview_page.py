"""The preview page in a real headless Chromium: it shows the mail and decoded page images, and reloads by
itself with the change when a template file is edited.

Uses the Debian ``chromium`` package through Playwright (no browser download). Leaves a screenshot in
``.local/preview/screenshot.png``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rendering import TEMPLATE_DIR

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".local/preview/screenshot.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKER = "Zebrafinch"
WAIT_MS = 60_000
IMAGES_DECODED = """(atLeast) => {
    const images = [...document.querySelectorAll("img.page")];
    return images.length >= atLeast && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


@pytest.fixture
def preview_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``ordermail preview --serve`` on any free port, on a copy of the templates."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    command = [sys.executable, "-m", "consumer.app.cli", "preview", "--serve", "--port", "0"]
    command += ["--template-dir", str(templates), "--out", str(tmp_path / "out"), "--locale", "en"]
    with (
        (tmp_path / "server.log").open("w") as log,
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True) as server,
    ):
        try:
            assert server.stdout is not None
            line = server.stdout.readline()  # "preview on http://127.0.0.1:<port>/ ..." once listening
            assert "http://" in line, f"the preview did not start: {line!r}\n{log.name}"
            yield line.split()[2], templates
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_shows_the_mail_and_reloads_when_a_template_changes(preview_url: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, templates = preview_url
    # Chromium refuses to run as root with its sandbox (containers, CI): only then go without it.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, timeout=WAIT_MS)
            subject = page.locator("#subject")
            expect(subject).not_to_be_empty(timeout=WAIT_MS)
            assert MARKER not in subject.inner_text()
            page.wait_for_function(IMAGES_DECODED, arg=1, timeout=WAIT_MS)
            assert page.locator("img.page").count() >= 1

            # A template author edits the subject: the page notices, reloads and shows the change.
            subject_templates = sorted(templates.glob("**/subject.txt"))
            assert subject_templates, "no subject.txt under the copied templates"
            for path in subject_templates:
                path.write_text(path.read_text(encoding="utf-8").rstrip() + f" {MARKER}\n", encoding="utf-8")
            expect(page.locator("#subject")).to_contain_text(MARKER, timeout=WAIT_MS)
            page.wait_for_function(IMAGES_DECODED, arg=1, timeout=WAIT_MS)

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The pickers: the multi-page sample shows every page.
            page.select_option("select[name=sample]", "long")
            page.wait_for_url("**sample=long**", timeout=WAIT_MS)
            page.wait_for_function(IMAGES_DECODED, arg=2, timeout=WAIT_MS)
            expect(page.locator("#subject")).to_contain_text(MARKER, timeout=WAIT_MS)
            assert errors == []
        finally:
            browser.close()
