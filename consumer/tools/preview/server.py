"""The local web page of ``ordermail preview --serve``: the subject, both bodies and the PDF pages
side by side, with pickers for sample, locale and set. The page (``page.html``, a Jinja2 template
shipped as package data) reloads itself when ``/version`` changes, that is when a file under the
template folder (or the event file) changes; a rendering error is shown on the page, classified by
its reason. Only this process's own renderings are served (from memory), never arbitrary files.
"""

from __future__ import annotations

import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from babel import Locale, UnknownLocaleError
from jinja2 import Environment

from consumer.tools.preview.render import Preview, describe
from consumer.tools.preview.state import Choice, PreviewState
from rendering import Renderer
from schemas.samples import SCRIPT_SAMPLES

__all__ = ["LOCALES", "SAMPLES", "PreviewServer"]

# Any seed number works too; each script sample's customer, address and first product are in that script.
SAMPLES = {
    "0": "one page",
    "long": "several pages",
    "event": "the event file",
    **{script: f"a customer writing {script.replace('-', ' ')}" for script in SCRIPT_SAMPLES},
}
# Offered by the page besides the sets' languages: regional variants that format or draw differently.
LOCALES = ("es-MX", "en-GB", "en-US", "de-CH", "fr-CA", "pt-BR", "zh-TW", "ar-EG", "he-IL", "hi-IN", "th-TH")

_TYPES = {
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".eml": "message/rfc822",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/plain; charset=utf-8",  # the mail's source; the page shows it rendered
}
_PAGE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    resources.files("consumer.tools.preview").joinpath("page.html").read_text(encoding="utf-8")
)


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: PreviewState) -> None:
        super().__init__(address, _Handler)
        self.state = state


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


def _language_name(tag: str) -> str:
    """The locale's name in its own language (``ja`` -> ``日本語``), for the picker."""
    try:
        return str(Locale.parse(tag, sep="-").display_name or tag)
    except (ValueError, UnknownLocaleError):
        return tag


def _page(
    state: PreviewState,
    *,
    chosen: Choice,
    version: str,
    renderer: Renderer | None,
    result: Preview | Exception,
    nonce: str,
) -> str:
    twin = state.twin(chosen, result) if isinstance(result, Preview) else None
    set_names = renderer.set_names if renderer is not None else ()
    languages = sorted({tag for name in set_names for tag in renderer.languages(name)} if renderer else ())
    samples = [(name, f"{name}: {SAMPLES.get(name, name)}") for name in state.sources]
    tags = sorted(dict.fromkeys([*languages, *LOCALES]))
    locales = [("", "the event's own"), *((tag, f"{tag}: {_language_name(tag)}") for tag in tags)]
    sets = [("", "by the event's brand"), *((name, name) for name in set_names)]
    for options, value in ((locales, chosen.locale), (sets, chosen.template_set)):
        if value not in dict(options):
            options.append((value, value))
    selected = {"sample": chosen.source, "locale": chosen.locale, "set": chosen.template_set}
    twin_name, twin_result = twin or ("", None)
    engines = {name: renderer.engine(name) for name in set_names} if renderer is not None else {}
    return _PAGE.render(
        engines=engines,
        twin=twin_result if isinstance(twin_result, Preview) else None,
        twin_name=twin_name,
        twin_error=describe(twin_result) if isinstance(twin_result, Exception) else None,
        twin_link=lambda name: (
            "/file?" + urlencode({**selected, "set": twin_name, "name": name, "v": version})
        ),
        selected=selected,
        version=version,
        nonce=nonce,
        pickers=[("sample", "Sample", samples), ("locale", "Locale", locales), ("set", "Template set", sets)],
        preview=result if isinstance(result, Preview) else None,
        error=None if isinstance(result, Preview) else describe(result),
        link=lambda name: "/file?" + urlencode({**selected, "name": name, "v": version}),
    )
