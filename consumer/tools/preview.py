"""``ordermail preview``: see what a customer receives, from realistic data, without Kafka or SMTP.

For template authors. One order (a built-in sample or an event file) is rendered with a template
set and a locale exactly as the service would, and everything the customer gets is written to a
folder (default ``.local/preview/``)::

    message.eml                   the whole e-mail (attachments encrypted, as sent)
    subject.txt body.txt body.html
    <attachment>.pdf              each attachment unencrypted ...
    <stem>.encrypted.pdf          ... and as sent (when the set encrypts it)
    page-<stem>-<n>.png           every page of every PDF (pdftoppm, 80 dpi)

``--serve`` instead runs a small local web page showing the subject, both bodies and the PDF
pages side by side, with pickers for sample, locale and set. It renders again, and the page
reloads itself, whenever a file under the template folder (or the event file) changes; a
rendering error is shown on the page, classified by its reason. Only this process's own
renderings are served (from memory), never arbitrary files.

Sample data only: the PDF password is shown (it is made up, like the customer), nothing else is
printed. Renderings of the live service never come through here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment

from consumer.processing.mail import receipt_message
from rendering import Renderer, RenderError
from schemas import InvalidEvent, OrderCompleted, validate_order
from schemas.samples import sample_order

__all__ = [
    "LOCALES",
    "SAMPLES",
    "Preview",
    "PreviewError",
    "PreviewServer",
    "fingerprint",
    "load_event",
    "preview_command",
    "render_preview",
    "sample",
]

SAMPLES = {"0": "one page", "long": "several pages", "event": "the event file"}  # any seed number works too
LOCALES = ("en", "es", "es-MX", "en-GB", "de-DE")  # offered by the page, besides the sets' languages
SENDER = "preview@ordermail.invalid"
_DOMAIN = "ordermail.invalid"
_MANIFEST = ".preview-files"  # what the last run wrote, so the next one removes only its own files
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_SET = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MAX_CACHED = 24


class PreviewError(Exception):
    """A preview failed for a reason the page and the command can name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Preview:
    subject: str
    text_body: str
    html_body: str
    password: str | None  # None when no attachment is encrypted
    template_set: str
    language: str
    files: Mapping[str, bytes]  # file name -> content
    pages: tuple[str, ...]  # the page images, in order

    def write(self, folder: Path) -> None:
        """Writes the files, after removing those of the previous preview in that folder."""
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / _MANIFEST
        if manifest.is_file():
            for name in manifest.read_text(encoding="utf-8").splitlines():
                if name and Path(name).name == name:
                    (folder / name).unlink(missing_ok=True)
        for name, content in self.files.items():
            (folder / name).write_bytes(content)
        manifest.write_text("".join(f"{name}\n" for name in self.files), encoding="utf-8")


def sample(name: str) -> OrderCompleted:
    """``long``: sample 0 with 40 lines (several pages); a number: that sample seed."""
    if name == "long":
        return sample_order(0, lines=40)
    if name.isdecimal():
        return sample_order(int(name))
    raise ValueError(f"no sample {name!r}: use a number or 'long'")


def load_event(path: Path) -> OrderCompleted:
    """An ``OrderCompleted`` event from JSON (``occurred_at`` in epoch milliseconds or ISO 8601)."""
    try:
        order: OrderCompleted = json.loads(path.read_text(encoding="utf-8"), object_hook=_parse_timestamps)
    except (OSError, ValueError) as exc:
        raise PreviewError("invalid_event_file", f"{path.name}: {type(exc).__name__}: {exc}") from None
    return order


def _parse_timestamps(obj: dict[str, Any]) -> dict[str, Any]:
    """``occurred_at`` may be epoch milliseconds (as on the wire) or ISO 8601 text."""
    value = obj.get("occurred_at")
    if isinstance(value, int):
        obj["occurred_at"] = datetime.fromtimestamp(value / 1000).astimezone()
    elif isinstance(value, str):
        obj["occurred_at"] = datetime.fromisoformat(value)
    return obj


def render_preview(
    renderer: Renderer, order: OrderCompleted, *, template_set: str | None = None, locale: str | None = None
) -> Preview:
    """Renders the mail as the service would (``locale`` replaces the event's, ``template_set`` the
    brand's choice) and adds the unencrypted PDFs, the page images and the composed message."""
    order = copy.copy(order)
    if locale:
        order["locale"] = locale
    if template_set is not None and template_set not in renderer.set_names:
        raise PreviewError(
            "unknown_set", f"no template set {template_set!r} (there are: {renderer.set_names})"
        )
    try:
        validate_order(order)
    except KeyError as exc:
        raise PreviewError("invalid_event", f"missing field {exc}") from None
    mail = renderer.render_mail(order, template_set=template_set, keep_plain=True)
    files = {
        "subject.txt": f"{mail.subject}\n".encode(),
        "body.txt": mail.text_body.encode(),
        "body.html": mail.html_body.encode(),
    }
    pages: list[str] = []
    for attachment in mail.attachments:
        stem = attachment.filename.removesuffix(".pdf")
        plain = attachment.plain if attachment.plain is not None else attachment.data
        if attachment.encrypted and attachment.plain is None:
            raise PreviewError("internal_error", "the renderer returned no unencrypted PDF")
        files[attachment.filename] = plain
        if attachment.encrypted:
            files[f"{stem}.encrypted.pdf"] = attachment.data
        for number, image in enumerate(page_images(plain), start=1):
            files[f"page-{stem}-{number}.png"] = image
            pages.append(f"page-{stem}-{number}.png")
    files["message.eml"] = receipt_message(order, mail, sender=SENDER, message_domain=_DOMAIN)
    encrypted = any(attachment.encrypted for attachment in mail.attachments)
    return Preview(
        subject=mail.subject,
        text_body=mail.text_body,
        html_body=mail.html_body,
        password=renderer.password_policy.password_for(order) if encrypted else None,
        template_set=mail.template_set,
        language=mail.language,
        files=files,
        pages=tuple(pages),
    )


def page_images(pdf: bytes) -> list[bytes]:
    """One PNG per page (``pdftoppm -png -r 80``, from poppler-utils)."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        raise PreviewError(
            "pdftoppm_missing", "pdftoppm not found: install poppler-utils (deploy/local/system-deps)"
        )
    with tempfile.TemporaryDirectory(prefix="ordermail-preview-") as folder:
        source = Path(folder) / "document.pdf"
        source.write_bytes(pdf)
        try:
            subprocess.run(  # noqa: S603 — fixed arguments, our own temporary files
                [pdftoppm, "-png", "-r", "80", str(source), str(Path(folder) / "page")],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise PreviewError("page_images_failed", f"pdftoppm failed ({type(exc).__name__})") from None
        images = sorted(Path(folder).glob("page-*.png"), key=lambda path: int(path.stem.rsplit("-", 1)[1]))
        return [image.read_bytes() for image in images]


def fingerprint(*paths: Path) -> str:
    """Changes when any file under these folders (or these files) is added, removed or modified."""
    digest = hashlib.sha256()
    for root in paths:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


def describe(error: Exception) -> str:
    """A classified one-line message (reasons as the service reports them; never event values)."""
    if isinstance(error, RenderError | PreviewError):
        return str(error)
    if isinstance(error, InvalidEvent):
        return f"invalid_event: {error.reason} (the service would reject this event)"
    return f"internal_error: {type(error).__name__}"


# --- the command ---------------------------------------------------------------------------------


def preview_command(
    *,
    build_renderer: Callable[[Path], Renderer],
    template_dir: Path,
    sample_name: str,
    event: Path | None,
    template_set: str | None,
    locale: str | None,
    out: Path,
    serve: bool,
    host: str,
    port: int,
) -> int:
    """``ordermail preview``; ``build_renderer(template_dir)`` builds a renderer as the service would."""
    sources: dict[str, Callable[[], OrderCompleted]] = {name: _sampler(name) for name in ("0", "long")}
    if event is not None:
        sources = {"event": lambda: load_event(event), **sources}
    elif sample_name not in sources:
        sources = {sample_name: _sampler(sample_name), **sources}
    choice = Choice("event" if event is not None else sample_name, locale or "", template_set or "")
    if serve:
        state = PreviewState(template_dir, out, build_renderer, sources, choice, watch=event)
        server = PreviewServer((host, port), state)
        return _serve_until_stopped(server, out)
    try:
        renderer = build_renderer(template_dir)
        preview = render_preview(
            renderer, sources[choice.source](), template_set=template_set, locale=locale or None
        )
        preview.write(out)
    except (RenderError, PreviewError, InvalidEvent) as error:
        print(f"ordermail preview: {describe(error)}", file=sys.stderr)
        return 2
    pdfs = sum(1 for name in preview.files if name.endswith(".pdf") and not name.endswith(".encrypted.pdf"))
    print(
        f"preview written to {out}/ (set {preview.template_set}, language {preview.language}, "
        f"{pdfs} PDF(s), {len(preview.pages)} page(s))"
    )
    print(f"PDF password: {preview.password or '(not encrypted)'}")
    return 0


def _sampler(name: str) -> Callable[[], OrderCompleted]:
    return lambda: sample(name)


def _serve_until_stopped(server: PreviewServer, out: Path) -> int:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(
        f"preview on http://{host!s}:{port}/ (the last rendering is also in {out}/); Ctrl-C stops", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    return 0


# --- the web page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    source: str  # a key of the sources: a sample name, or "event"
    locale: str  # "" = the event's own
    template_set: str  # "" = chosen by the event's brand


class PreviewState:
    """Renders on request, once per choice and template version; thread-safe (one lock)."""

    def __init__(
        self,
        template_dir: Path,
        out: Path,
        build_renderer: Callable[[Path], Renderer],
        sources: Mapping[str, Callable[[], OrderCompleted]],
        default: Choice,
        *,
        watch: Path | None = None,
    ) -> None:
        self.template_dir, self.out, self.sources, self.default = template_dir, out, sources, default
        self._watched = (template_dir, watch) if watch is not None else (template_dir,)
        self._build = build_renderer
        self._lock = threading.Lock()
        self._version = ""
        self._renderer: Renderer | Exception | None = None
        self._cache: dict[Choice, Preview | Exception] = {}

    def version(self) -> str:
        return fingerprint(*self._watched)

    def choice(self, query: Mapping[str, str]) -> Choice:
        """The page's choice; ValueError for values the pickers never send."""
        chosen = Choice(
            query.get("sample", self.default.source),
            query.get("locale", self.default.locale),
            query.get("set", self.default.template_set),
        )
        if chosen.source not in self.sources:
            raise ValueError("unknown sample")
        if chosen.locale and not _LOCALE.fullmatch(chosen.locale):
            raise ValueError("bad locale")
        if chosen.template_set and not _SET.fullmatch(chosen.template_set):
            raise ValueError("bad set name")
        return chosen

    def render(self, chosen: Choice) -> tuple[str, Renderer | None, Preview | Exception]:
        """(template version, the renderer if it could be built, the preview or why it failed)."""
        with self._lock:
            version = self.version()  # before reading any template: a later edit changes it again
            if version != self._version:
                self._version, self._renderer, self._cache = version, None, {}
            if self._renderer is None:
                try:
                    self._renderer = self._build(self.template_dir)
                except Exception as exc:  # noqa: BLE001 — shown on the page, the server keeps going
                    self._renderer = exc
            renderer = self._renderer if isinstance(self._renderer, Renderer) else None
            if chosen not in self._cache:
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
                self._cache[chosen] = self._render(renderer, chosen)
            return version, renderer, self._cache[chosen]

    def _render(self, renderer: Renderer | None, chosen: Choice) -> Preview | Exception:
        if renderer is None:
            assert isinstance(self._renderer, Exception)  # noqa: S101 — set just before
            return self._renderer
        try:
            preview = render_preview(
                renderer,
                self.sources[chosen.source](),
                template_set=chosen.template_set or None,
                locale=chosen.locale or None,
            )
            preview.write(self.out)
        except Exception as exc:  # noqa: BLE001 — shown on the page, the server keeps going
            return exc
        return preview


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: PreviewState) -> None:
        super().__init__(address, _Handler)
        self.state = state


_TYPES = {
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".eml": "message/rfc822",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/plain; charset=utf-8",  # the mail's source; the page shows it rendered
}


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        state = self.server.state
        if url.path == "/version":
            self._reply(200, "text/plain; charset=utf-8", state.version().encode())
            return
        if url.path not in {"/", "/file"}:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")
            return
        try:
            chosen = state.choice(query)
        except ValueError as error:
            self._reply(400, "text/plain; charset=utf-8", f"{error}\n".encode())
            return
        version, renderer, result = state.render(chosen)
        if url.path == "/":
            nonce = secrets.token_urlsafe(16)
            page = _page(state, chosen=chosen, version=version, renderer=renderer, result=result, nonce=nonce)
            self._reply(200, "text/html; charset=utf-8", page.encode(), nonce=nonce)
            return
        name = query.get("name", "")
        if not isinstance(result, Preview) or name not in result.files:
            self._reply(404, "text/plain; charset=utf-8", b"no such file in this preview\n")
            return
        self._reply(200, _TYPES.get(Path(name).suffix, "application/octet-stream"), result.files[name])

    def _reply(self, status: int, content_type: str, body: bytes, *, nonce: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if nonce is not None:  # the page: its own script only; the mail's HTML runs none (sandbox)
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                f"script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'",
            )
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not str(code).startswith(("2", "3")):
            super().log_request(code, size)


def _page(
    state: PreviewState,
    *,
    chosen: Choice,
    version: str,
    renderer: Renderer | None,
    result: Preview | Exception,
    nonce: str,
) -> str:
    set_names = renderer.set_names if renderer is not None else ()
    languages = sorted({tag for name in set_names for tag in renderer.languages(name)} if renderer else ())
    samples = [(name, f"{name}: {SAMPLES.get(name, name)}") for name in state.sources]
    locales = [("", "the event's own"), *((tag, tag) for tag in dict.fromkeys([*LOCALES, *languages]))]
    sets = [("", "by the event's brand"), *((name, name) for name in set_names)]
    for options, value in ((locales, chosen.locale), (sets, chosen.template_set)):
        if value not in dict(options):
            options.append((value, value))
    selected = {"sample": chosen.source, "locale": chosen.locale, "set": chosen.template_set}
    return _PAGE.render(
        selected=selected,
        version=version,
        nonce=nonce,
        pickers=[("sample", "Sample", samples), ("locale", "Locale", locales), ("set", "Template set", sets)],
        preview=result if isinstance(result, Preview) else None,
        error=None if isinstance(result, Preview) else describe(result),
        link=lambda name: "/file?" + urlencode({**selected, "name": name, "v": version}),
    )


_PAGE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ordermail preview{% if preview %}: {{ preview.subject }}{% endif %}</title>
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #1f2937; background: #eef1f5; }
  header { padding: 8px 16px; background: #1e3a5f; color: #fff; display: flex; gap: 16px;
           align-items: center; flex-wrap: wrap; }
  header form { display: flex; gap: 12px; flex-wrap: wrap; }
  header label { display: flex; gap: 4px; align-items: center; }
  header a { color: #cfe0f5; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.2fr) minmax(0, 1.2fr);
         gap: 12px; padding: 12px; }
  section { background: #fff; border-radius: 4px; padding: 8px 12px; min-width: 0; }
  h2 { font-size: 12px; text-transform: uppercase; color: #6b7280; margin: 8px 0 4px; }
  #subject { font-weight: bold; font-size: 16px; margin: 0 0 8px; }
  pre { white-space: pre-wrap; font-size: 12px; margin: 0; }
  iframe { width: 100%; height: 80vh; border: 1px solid #d1d5db; }
  figure { margin: 0 0 12px; }
  img.page { max-width: 100%; border: 1px solid #d1d5db; box-shadow: 0 1px 3px #0002; }
  figcaption { font-size: 11px; color: #6b7280; }
  #error { margin: 12px; padding: 12px 16px; background: #fee2e2; border-left: 4px solid #b91c1c;
           font-family: monospace; white-space: pre-wrap; }
</style>
</head>
<body data-version="{{ version }}">
<header>
  <strong>ordermail preview</strong>
  <form method="get" action="/">
    {% for field, label, options in pickers %}
    <label>{{ label }}
      <select name="{{ field }}">
        {% for value, text in options %}
        <option value="{{ value }}"{% if value == selected[field] %} selected{% endif %}>{{ text }}</option>
        {% endfor %}
      </select>
    </label>
    {% endfor %}
    <noscript><button>Show</button></noscript>
  </form>
  {% if preview %}
  <span>set <b>{{ preview.template_set }}</b>, language <b>{{ preview.language }}</b>,
    PDF password <code id="password">{{ preview.password or "(not encrypted)" }}</code></span>
  <span><a href="{{ link('message.eml') }}" download="message.eml">message.eml</a>
  {% for name in preview.files if name.endswith(".pdf") %}
    · <a href="{{ link(name) }}">{{ name }}</a>{% endfor %}</span>
  {% endif %}
</header>
{% if error %}
<div id="error">{{ error }}</div>
{% else %}
<main>
  <section>
    <h2>Subject</h2>
    <p id="subject">{{ preview.subject }}</p>
    <h2>Text body</h2>
    <pre id="text-body">{{ preview.text_body }}</pre>
  </section>
  <section>
    <h2>HTML body</h2>
    <iframe id="html-body" sandbox="" title="HTML body" srcdoc="{{ preview.html_body }}"></iframe>
  </section>
  <section id="pages">
    <h2>PDF pages</h2>
    {% for name in preview.pages %}
    <figure>
      <img class="page" src="{{ link(name) }}" alt="{{ name }}">
      <figcaption>{{ name }}</figcaption>
    </figure>
    {% endfor %}
  </section>
</main>
{% endif %}
<script nonce="{{ nonce }}">
  for (const select of document.querySelectorAll("select")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // Reload when the templates change (the server renders again on the next request).
  const version = document.body.dataset.version;
  async function poll() {
    try {
      const response = await fetch("/version", { cache: "no-store" });
      if (response.ok && (await response.text()) !== version) {
        location.reload();
        return;
      }
    } catch (error) {
      // the server restarts or is stopped: keep asking
    }
    setTimeout(poll, 500);
  }
  setTimeout(poll, 500);
</script>
</body>
</html>
"""
)
