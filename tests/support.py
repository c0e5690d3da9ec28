"""Small helpers shared by the test layers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout_s: float, host: str = "127.0.0.1") -> None:
    """Blocks until something accepts TCP connections on the port (bounded)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.05)


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on 127.0.0.1; (0, "") when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def http_post(port: int, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """Status and body of a POST to 127.0.0.1."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http://127.0.0.1 only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def drawn_operators(pdf: bytes) -> list[bytes]:
    """Each page's content stream, parsed and written back on one line: what is drawn, without
    the differences in spacing or compression that do not change it."""
    import io

    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as document:
        return [
            b"".join(pikepdf.unparse_content_stream(pikepdf.parse_content_stream(page)).splitlines())
            for page in document.pages
        ]


@contextmanager
def stock_weasyprint() -> Iterator[None]:
    """WeasyPrint without ordermail's overrides (``rendering/weasyprint_overrides.py``) inside
    the block; they are installed again after it."""
    from rendering import weasyprint_overrides

    weasyprint_overrides.uninstall()
    try:
        yield
    finally:
        assert weasyprint_overrides.install()
