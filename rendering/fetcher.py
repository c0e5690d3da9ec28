"""The only way the documents' HTML and CSS reach resources: the template files, or ``data:``.

WeasyPrint's default fetcher follows http, https, ftp and file URLs, redirects included: a value
that ever reached a URL could read local files or probe internal services. This fetcher serves

- ``file:`` URLs that resolve (symlinks and ``..`` followed) to a file inside one of its
  folders: a template set's folder, then ``shared/`` (a file missing from the set is looked up
  at the same place in ``shared/``, so a set inherits shared assets);
- ``data:`` URLs;

and refuses everything else by raising :class:`FetchRefusedError`, which WeasyPrint logs and skips.
Its message names the reason, never the URL. WeasyPrint's own log lines do print the URL, so
:func:`install_log_redaction` puts a filter on WeasyPrint's loggers that masks URL-like
arguments and drops tracebacks (a URL or a file name could carry personal data).
"""

from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import DataHandler, Request, url2pathname

from weasyprint.urls import URLFetcher, URLFetcherResponse

__all__ = ["AssetFetcher", "FetchRefusedError", "install_log_redaction"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9.+-]*):")
_MAX_ASSET_BYTES = 5 * 1024 * 1024


class FetchRefusedError(ValueError):
    """A resource outside what the receipt may load was requested."""


class AssetFetcher(URLFetcher):  # type: ignore[misc] # WeasyPrint ships no type hints
    """Serves ``file:`` URLs inside ``folders`` (first match wins) and ``data:`` URLs; refuses the rest."""

    def __init__(self, folders: list[Path]) -> None:
        # Belt and braces: even the parent's opener would only speak data:, without redirects.
        super().__init__(allowed_protocols=("data",), allow_redirects=False, timeout=1)
        self.folders = [folder.resolve() for folder in folders]

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        match = _SCHEME.match(url)
        scheme = match[1].lower() if match else ""
        if scheme == "data":
            return self._fetch_data(url)
        if scheme == "file":
            return self._fetch_file(url)
        raise FetchRefusedError(f"scheme {scheme or '(none)'!r} is not allowed")

    def _fetch_data(self, url: str) -> URLFetcherResponse:
        response = DataHandler().data_open(Request(url))  # noqa: S310 - only data: URLs reach here
        body = response.read()
        return URLFetcherResponse(url, body, {"Content-Type": response.headers.get("Content-Type", "")})

    def _fetch_file(self, url: str) -> URLFetcherResponse:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchRefusedError("remote file URLs are not allowed")
        path = self._locate(Path(url2pathname(unquote(parts.path))).resolve())
        if path.stat().st_size > _MAX_ASSET_BYTES:
            raise FetchRefusedError("asset too large")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(path.as_uri(), path.read_bytes(), {"Content-Type": content_type})

    def _locate(self, path: Path) -> Path:
        inside = next((folder for folder in self.folders if path.is_relative_to(folder)), None)
        if inside is None:
            raise FetchRefusedError("only files of the template set and shared/ are served")
        relative = path.relative_to(inside)
        for folder in self.folders:
            candidate = (folder / relative).resolve()
            if candidate.is_relative_to(folder) and candidate.is_file():
                return candidate
        raise FetchRefusedError("no such template file")


class _RedactURLs(logging.Filter):
    """Masks URL-like and path-like arguments in WeasyPrint's logs and drops their tracebacks.

    Tracebacks go because exception texts of fetch errors may quote the URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact(value) for key, value in record.args.items()}
        return True


def _redact(value: object) -> object:
    if isinstance(value, BaseException):
        return type(value).__name__
    if isinstance(value, bytes):
        return "<bytes>"
    if isinstance(value, str) and (_SCHEME.match(value) or "/" in value or "\\" in value):
        return "<url>"
    return value


_FILTER = _RedactURLs()


def install_log_redaction() -> None:
    """Idempotently adds the URL-masking filter to WeasyPrint's loggers.

    A filter on a logger only sees records logged on that very logger, hence both of them.
    """
    for name in ("weasyprint", "weasyprint.progress"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
