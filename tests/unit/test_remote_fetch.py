"""fetch_attachment against a real HTTPS server on 127.0.0.1 (test CA from trustme), plus the pure rules.

The server counts accepted TCP connections and HTTP requests, so "refused before any network
activity" is asserted on the server side, not inferred.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import logging
import pickle
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pikepdf
import pytest
import trustme

from consumer.processing.policy import Action, action_for
from delivery.remote import (
    FetchError,
    FetchPolicy,
    address_allowed,
    fetch_attachment,
    host_allowed,
)
from tests.support import free_port

SECRET = "tok3n-s3cret"  # stands for an access token or personal data in the URL's path/query
SLOW_S = 5.0  # how long the slow endpoints stall (released at teardown); the client gives up at 0.5 s
LIMIT = 64 * 1024  # max_bytes in the size tests


def _make_pdf() -> bytes:
    with pikepdf.new() as pdf:
        pdf.add_blank_page()
        out = io.BytesIO()
        pdf.save(out)
        return out.getvalue()


PDF = _make_pdf()


class _TlsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Threaded HTTPS server; the TLS handshake runs in the worker thread, after the TCP accept is counted."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread: nothing outlives the fixture

    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.tls = tls
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[str] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = self.socket.accept()
        with self.lock:
            self.connections += 1
        return request, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SLOW_S + 5)
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate (as it should in the wrong-CA tests)
        with tls:
            _Handler(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on purpose (size cap, timeout): broken pipes here are expected."""


_REPLIES: dict[str, tuple[Any, ...]] = {  # route: status, content type, body, extra headers
    "pdf": (200, "application/pdf", PDF),
    "pdf-params": (200, "Application/PDF; charset=binary", PDF),
    "big": (200, "application/pdf", b"%PDF-" + b"0" * (1024 * 1024)),
    "html": (200, "text/html; charset=utf-8", b"<html><body>hello</body></html>"),
    "fake-pdf": (200, "application/pdf", b"<html>not a pdf</html>"),
    "gzip": (200, "application/pdf", PDF, ("Content-Encoding", "gzip")),
    "redirect": (302, "text/plain", b"moved", ("Location", "/pdf")),
    "missing": (404, "text/plain", b"not found"),
    "busy": (429, "text/plain", b"slow down", ("Retry-After", "1")),
    "down": (503, "text/plain", b"unavailable"),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = cast("_TlsServer", self.server)
        with server.lock:
            server.requests.append(self.path.split("?", 1)[0])
        route = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if route in _REPLIES:
            status, content_type, body, *headers = _REPLIES[route]
            self._reply(status, content_type, body, *headers)
        elif route == "big-stream":  # HTTP/1.0 without Content-Length: the body ends when we close
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.end_headers()
            self.wfile.write(b"%PDF-")
            for _ in range(64):
                self.wfile.write(b"0" * 16 * 1024)
        elif route == "slow":
            server.release.wait(SLOW_S)
            self._reply(200, "application/pdf", PDF)
        elif route == "slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(PDF)))
            self.end_headers()
            self.wfile.write(PDF[:10])
            self.wfile.flush()
            server.release.wait(SLOW_S)
            self.wfile.write(PDF[10:])
        else:
            self._reply(404, "text/plain", b"no such route")

    def _reply(self, status: int, content_type: str, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Server:
    port: int
    ca_file: Path  # the CA that issued the server's certificate
    other_ca_file: Path  # a CA that did not
    http: _TlsServer

    @property
    def connections(self) -> int:
        with self.http.lock:
            return self.http.connections

    @property
    def requests(self) -> list[str]:
        with self.http.lock:
            return list(self.http.requests)

    def url(self, route: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/v1/{SECRET}/{route}?token={SECRET}"

    def policy(self, **overrides: Any) -> FetchPolicy:
        settings: dict[str, Any] = {
            "allowed_hosts": frozenset({"127.0.0.1", "localhost"}),
            "timeout_s": 0.5,
            "ca_file": self.ca_file,
            "allow_private_addresses": True,
            **overrides,
        }
        return FetchPolicy(**settings)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("remote-fetch")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca_file, other_ca_file = workdir / "ca.pem", workdir / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)
    port = free_port()
    httpd = _TlsServer(port, tls)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(port, ca_file, other_ca_file, httpd)
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def _fetch(url: str, policy: FetchPolicy) -> bytes:
    return asyncio.run(fetch_attachment(url, policy))


def _failure(url: str, policy: FetchPolicy) -> FetchError:
    with pytest.raises(FetchError) as caught:
        _fetch(url, policy)
    error = caught.value
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert error.__cause__ is None
    return error


# --- success ----------------------------------------------------------------------------------------


def test_success_returns_the_exact_bytes(server: Server) -> None:
    assert _fetch(server.url("pdf"), server.policy()) == PDF


def test_media_type_parameters_and_case_are_ignored(server: Server) -> None:
    assert _fetch(server.url("pdf-params"), server.policy()) == PDF


def test_host_name_is_resolved_once_and_tls_checks_that_name(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _count_lookups(monkeypatch)
    assert _fetch(server.url("pdf", host="localhost"), server.policy()) == PDF
    assert lookups == ["localhost"]  # the connector used the vetted answer: no second lookup to rebind


def test_a_body_of_exactly_max_bytes_passes(server: Server) -> None:
    assert _fetch(server.url("pdf"), server.policy(max_bytes=len(PDF))) == PDF


# --- content checks -----------------------------------------------------------------------------------


def test_one_byte_over_max_bytes_is_too_large(server: Server) -> None:
    error = _failure(server.url("pdf"), server.policy(max_bytes=len(PDF) - 1))
    assert error.reason == "attachment_too_large"


@pytest.mark.parametrize("route", ["big", "big-stream"])
def test_oversize_body_is_too_large(server: Server, route: str) -> None:
    error = _failure(server.url(route), server.policy(max_bytes=LIMIT))
    assert error.reason == "attachment_too_large"


@pytest.mark.parametrize("route", ["html", "fake-pdf", "gzip"])
def test_wrong_content_is_refused(server: Server, route: str) -> None:
    error = _failure(server.url(route), server.policy())
    assert error.reason == "attachment_type"


def test_other_allowed_types_skip_the_pdf_magic(server: Server) -> None:
    body = _fetch(server.url("html"), server.policy(allowed_types=frozenset({"text/html"})))
    assert body.startswith(b"<html>")


# --- HTTP status --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "reason", "transient"),
    [
        ("missing", "attachment_unavailable", False),
        ("busy", "attachment_unreachable", True),
        ("down", "attachment_unreachable", True),
        ("redirect", "attachment_forbidden", False),
    ],
)
def test_status_classification(server: Server, route: str, reason: str, transient: bool) -> None:
    before = len(server.requests)
    error = _failure(server.url(route), server.policy())
    assert error.reason == reason
    assert (action_for(reason) is Action.RETRY) is transient  # what the error policy makes of it
    assert len(server.requests) == before + 1  # in particular, the redirect was not followed


# --- time ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["slow", "slow-body"])
def test_total_timeout_covers_headers_and_body(server: Server, route: str) -> None:
    started = time.monotonic()
    error = _failure(server.url(route), server.policy(timeout_s=0.5))
    assert error.reason == "attachment_unreachable"
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_transient(server: Server) -> None:
    url = f"https://127.0.0.1:{free_port()}/v1/{SECRET}"
    error = _failure(url, server.policy())
    assert error.reason == "attachment_unreachable"


def test_dns_failure_is_transient(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {})
    error = _failure(
        f"https://files.example.com/{SECRET}", server.policy(allowed_hosts=frozenset({"*.example.com"}))
    )
    assert error.reason == "attachment_unreachable"


# --- refused before any connection --------------------------------------------------------------------


def _refused_without_connection(server: Server, url: str, policy: FetchPolicy) -> None:
    before = server.connections
    error = _failure(url, policy)
    assert error.reason == "attachment_forbidden"
    assert server.connections == before


def test_host_not_on_the_allow_list_is_refused_without_connecting(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _count_lookups(monkeypatch)
    policy = server.policy(allowed_hosts=frozenset({"files.example.com"}))
    _refused_without_connection(server, server.url("pdf"), policy)
    _refused_without_connection(server, server.url("pdf", host="localhost"), policy)
    assert lookups == []  # not even a DNS lookup


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/v1/pdf",
        "file:///etc/passwd",
        "ftp://127.0.0.1:{port}/pdf",
        "HTTP://localhost:{port}/pdf",
        "//127.0.0.1:{port}/pdf",
        "https:///pdf",
        "not a url",
    ],
)
def test_only_https_urls_are_fetched(server: Server, url: str) -> None:
    _refused_without_connection(server, url.format(port=server.port), server.policy())


@pytest.mark.parametrize(
    "authority",
    ["user@127.0.0.1:{port}", "user:pw@127.0.0.1:{port}", ":@127.0.0.1:{port}", "localhost@127.0.0.1:{port}"],
)
def test_credentials_in_the_url_are_refused(server: Server, authority: str) -> None:
    url = f"https://{authority.format(port=server.port)}/v1/pdf"
    _refused_without_connection(server, url, server.policy())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_addresses_are_refused_unless_allowed(
    server: Server, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _count_lookups(monkeypatch)
    _refused_without_connection(
        server, server.url("pdf", host=host), server.policy(allow_private_addresses=False)
    )
    assert lookups == ([] if host == "127.0.0.1" else ["localhost"])


def test_a_mixed_dns_answer_is_refused_whole(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """One public and one internal address (a rebinding set-up): nothing is used, nothing connected."""
    _fake_dns(monkeypatch, {"files.example.com": ["8.8.8.8", "127.0.0.1"]})
    policy = server.policy(allowed_hosts=frozenset({"files.example.com"}), allow_private_addresses=False)
    _refused_without_connection(server, f"https://files.example.com:{server.port}/{SECRET}", policy)


def test_numeric_ipv4_spellings_are_refused(server: Server) -> None:
    policy = server.policy(allowed_hosts=frozenset({"2130706433", "127.1"}))
    _refused_without_connection(server, f"https://2130706433:{server.port}/pdf", policy)
    _refused_without_connection(server, f"https://127.1:{server.port}/pdf", policy)


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["other", "system"])
def test_a_certificate_from_an_untrusted_ca_is_refused(server: Server, trust: str) -> None:
    before_connections, before_requests = server.connections, len(server.requests)
    ca_file = server.other_ca_file if trust == "other" else None
    error = _failure(server.url("pdf"), server.policy(ca_file=ca_file))
    assert error.reason == "attachment_forbidden"
    assert server.connections == before_connections + 1  # it got as far as the handshake
    assert len(server.requests) == before_requests  # and sent no request


def test_tls_verifies_the_url_host_not_the_pinned_address(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """files.example.com resolves to our server, whose certificate is for localhost: refused."""
    _fake_dns(monkeypatch, {"files.example.com": ["127.0.0.1"]})
    before_requests = len(server.requests)
    policy = server.policy(allowed_hosts=frozenset({"files.example.com"}))
    error = _failure(f"https://files.example.com:{server.port}/{SECRET}/pdf", policy)
    assert error.reason == "attachment_forbidden"
    assert len(server.requests) == before_requests


# --- personal data ------------------------------------------------------------------------------------


def test_logs_never_carry_the_path_or_query(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        _fetch(server.url("pdf"), server.policy())
        _failure(server.url("missing"), server.policy())
        _failure(server.url("slow"), server.policy())
        _failure(server.url("pdf"), server.policy(ca_file=server.other_ca_file))
    assert "127.0.0.1" in caplog.text
    assert SECRET not in caplog.text


def test_fetch_error_message_is_the_reason_and_pickles() -> None:
    error = FetchError("attachment_unreachable")
    assert str(error) == "attachment_unreachable"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert copy.reason == "attachment_unreachable"


# --- rules without network ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("files.example.com", True),
        ("a.b.example.com", True),
        ("example.com", False),  # the wildcard covers subdomains only
        ("badexample.com", False),
        ("example.com.evil.net", False),
        ("files.example.com.evil.net", False),
        ("files.example.org", False),
        ("reports.shop.test", True),  # exact entry
        ("x.reports.shop.test", False),  # exact entries have no subdomains
        ("shop.test", False),
        ("127.0.0.1", False),  # wildcards never match IP literals
        ("10.0.0.5", True),
        ("::1", True),  # "[::1]" in the list
        ("0:0:0:0:0:0:0:1", True),  # same address, other spelling
        ("", False),
    ],
)
def test_allow_list_matching(host: str, allowed: bool) -> None:
    entries = frozenset({"*.example.com", "reports.shop.test", "10.0.0.5", "[::1]"})
    assert host_allowed(host, entries) is allowed


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT, not global
        ("0.0.0.0", False),  # noqa: S104 - an address under test; nothing binds to it
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:169.254.169.254", False),
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("not-an-address", False),
    ],
)
def test_address_vetting(address: str, public: bool) -> None:
    assert address_allowed(address, allow_private=False) is public


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("::1", True),
        ("0.0.0.0", False),  # noqa: S104 - an address under test; nothing binds to it
        ("224.0.0.1", False),
    ],
)
def test_address_vetting_with_private_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address, allow_private=True) is allowed


@pytest.mark.parametrize(
    "overrides",
    [
        {"allowed_hosts": frozenset({"Files.Example.com"})},
        {"allowed_hosts": frozenset({"*"})},
        {"allowed_hosts": frozenset({"a.*.example.com"})},
        {"max_bytes": 0},
        {"timeout_s": 0},
        {"allowed_types": frozenset({"pdf"})},
    ],
)
def test_policy_rejects_bad_settings(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"allowed_hosts": frozenset({"files.example.com"}), **overrides}
    with pytest.raises(ValueError, match=r"must|invalid"):
        FetchPolicy(**settings)


def test_policy_rejects_a_string_as_host_set() -> None:
    with pytest.raises(TypeError):
        FetchPolicy(allowed_hosts=cast("frozenset[str]", "files.example.com"))


# --- helpers ------------------------------------------------------------------------------------------

_GetAddrInfo = Callable[..., list[tuple[Any, ...]]]


def _count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lookups: list[str] = []
    real: _GetAddrInfo = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return lookups


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    def fake(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
