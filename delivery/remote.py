"""Fetches a "calculated attachment" (a PDF another system built) from the HTTPS URL in an event.

The URL comes from event data, so it is treated as hostile input. The rules, and why:

* **https only, no userinfo, host on an allow-list** — checked on the parsed URL before any DNS
  lookup or connection, so an event cannot make us talk to ``file://``, internal plain-HTTP
  services or arbitrary hosts (server-side request forgery, SSRF).
* **every resolved address must be public** (not private, loopback, link-local, multicast,
  reserved or unspecified; IPv4 embedded in IPv6 is vetted as IPv4) — an allow-listed name can
  still point at ``127.0.0.1`` or a cloud metadata address. IP-literal hosts get the same check.
* **resolve once, connect only to the vetted addresses** — a custom aiohttp resolver hands the
  connector exactly the addresses we checked, so a second lookup cannot return a different,
  internal address (DNS rebinding). TLS still verifies the certificate against the URL's host name.
* **TLS always verified**, optionally with an extra CA file; never disabled.
* **no redirects, cookies, auth, proxies from the environment or compression** — a redirect
  would leave the vetted host; environment proxies and ``.netrc`` would change where and how we
  connect; compressed bodies could expand beyond the size cap.
* **size cap, total timeout, content type and ``%PDF-`` magic** — a slow, huge or wrong body
  must not stall a worker, exhaust memory or end up in a customer's mailbox.
* **bounded per event** (:func:`fetch_all`) — at most ``max_attachments`` URLs, fetched one after
  another, each capped by what is left of the event's byte budget (so the running total is
  checked as the bytes arrive, not after the last one), all within one ``event_deadline_s``.
* **the URL's path and query are never logged or put into errors** — they may carry access
  tokens or personal data; only the host name is logged (debug level).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "FORBIDDEN",
    "TOO_LARGE",
    "TOO_MANY",
    "TYPE",
    "UNAVAILABLE",
    "UNREACHABLE",
    "FetchError",
    "FetchPolicy",
    "FetchReason",
    "address_allowed",
    "fetch_all",
    "fetch_attachment",
    "host_allowed",
]

log = logging.getLogger(__name__)

FetchReason = Literal[
    "attachment_forbidden",
    "attachment_too_large",
    "attachment_type",
    "attachment_unavailable",
    "attachment_unreachable",
    "too_many_attachments",
]
FORBIDDEN: FetchReason = "attachment_forbidden"
TOO_LARGE: FetchReason = "attachment_too_large"
TYPE: FetchReason = "attachment_type"
UNAVAILABLE: FetchReason = "attachment_unavailable"
UNREACHABLE: FetchReason = "attachment_unreachable"  # also: the event's deadline passed
TOO_MANY: FetchReason = "too_many_attachments"

_CHUNK = 64 * 1024
_PDF_MAGIC = b"%PDF-"
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Before CPython 3.12.8 a TLS transport closed while its peer stalls keeps its socket open; aiohttp then
# aborts such transports itself when asked (and warns when asked on versions that do not need it).
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13) <= sys.version_info < (3, 13, 1)


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: frozenset[str]  # lower-case; "*.example.com" allows subdomains, not example.com itself
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0  # total for one fetch: DNS, connect, TLS, headers and body
    max_attachments: int = 3  # URLs one event may list
    event_deadline_s: float = 20.0  # for all of one event's fetches together
    allowed_types: frozenset[str] = frozenset({"application/pdf"})
    ca_file: Path | None = None  # extra trust anchor (tests, private PKI), added to the system store
    allow_private_addresses: bool = False  # loopback/private/link-local only when True (tests, on-prem)

    def __post_init__(self) -> None:
        if isinstance(self.allowed_hosts, str):
            raise TypeError("allowed_hosts must be a set of host names, not a string")
        for entry in self.allowed_hosts:
            name = entry.removeprefix("*.")
            if not name or entry != entry.strip().lower() or "*" in name or "/" in entry:
                raise ValueError(f"invalid allowed host entry: {entry!r}")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if not self.timeout_s > 0 or not self.event_deadline_s > 0:
            raise ValueError("timeout_s and event_deadline_s must be positive")
        if self.max_attachments < 0:
            raise ValueError("max_attachments must not be negative")
        if any(t != t.strip().lower() or "/" not in t for t in self.allowed_types):
            raise ValueError("allowed_types must be lower-case type/subtype values")


class FetchError(Exception):
    """``reason`` is one of :data:`FetchReason`; what to do about it is the caller's error policy.

    The message is the reason only: never the URL, whose path and query may hold secrets.
    """

    def __init__(self, reason: FetchReason) -> None:
        super().__init__(reason)
        self.reason: FetchReason = reason


def host_allowed(host: str, allowed_hosts: frozenset[str]) -> bool:
    """Exact match of a lower-case host (IDNs in their ``xn--`` form), or ``*.suffix`` for subdomains.

    IP literals match only an equal IP entry (``::1`` and ``[::1]`` are the same); wildcards never
    match IP literals.
    """
    literal = _ip_literal(host)
    for entry in allowed_hosts:
        if literal is not None:
            if _ip_literal(entry.strip("[]")) == literal:
                return True
        elif entry.startswith("*."):
            suffix = entry[1:]  # ".example.com"
            if host.endswith(suffix) and len(host) > len(suffix) and not host.startswith("."):
                return True
        elif host == entry:
            return True
    return False


def address_allowed(address: str | _IPAddress, *, allow_private: bool) -> bool:
    """Whether we may connect to this address. Multicast, unspecified and scoped addresses never;
    the rest of the non-public ones (private, loopback, link-local, reserved, shared) only with
    ``allow_private``. IPv4 embedded in IPv6 (mapped, NAT64, 6to4) is judged as that IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the socket talks IPv4 to this address
            return address_allowed(ip.ipv4_mapped, allow_private=allow_private)
        embedded = ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.scope_id or (
            embedded is not None and not address_allowed(embedded, allow_private=allow_private)
        ):
            return False
    if ip.is_multicast or ip.is_unspecified:
        return False
    non_public = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or not ip.is_global
    return allow_private or not non_public


async def fetch_attachment(url: str, policy: FetchPolicy) -> bytes:
    """The body at ``url``, vetted by ``policy``; raises :class:`FetchError` for every failure."""
    target = _checked_url(url, policy)
    host = target.raw_host or ""
    log.debug("fetching attachment from host %s", host)
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(target, policy)
    except TimeoutError:
        log.debug("attachment fetch from host %s timed out", host)
        raise FetchError(UNREACHABLE) from None
    except FetchError as error:
        log.debug("attachment fetch from host %s failed: %s", host, error.reason)
        raise


async def fetch_all(urls: Sequence[str], policy: FetchPolicy, *, max_total_bytes: int) -> list[bytes]:
    """Every URL's body, in order, within the event's bounds: at most ``policy.max_attachments``
    URLs, at most ``max_total_bytes`` together (each fetch capped by what is left, so an oversized
    body is cut off as it arrives), all within ``policy.event_deadline_s``."""
    if len(urls) > policy.max_attachments:
        raise FetchError(TOO_MANY)
    bodies: list[bytes] = []
    left = max_total_bytes
    try:
        async with asyncio.timeout(policy.event_deadline_s):
            for url in urls:
                if left < 1:
                    raise FetchError(TOO_LARGE)
                body = await fetch_attachment(
                    url, dataclasses.replace(policy, max_bytes=min(policy.max_bytes, left))
                )
                left -= len(body)
                bodies.append(body)
    except TimeoutError:
        raise FetchError(UNREACHABLE) from None
    return bodies


def _checked_url(url: str, policy: FetchPolicy) -> URL:
    """Every check that needs no network: scheme, userinfo, allow-list, IP-literal addresses."""
    try:
        target = URL(url)
    except (ValueError, TypeError):
        raise FetchError(FORBIDDEN) from None
    host = target.raw_host
    if target.scheme != "https" or not host:
        raise FetchError(FORBIDDEN)
    if target.raw_user is not None or target.raw_password is not None or "@" in (target.raw_authority or ""):
        raise FetchError(FORBIDDEN)
    if not host_allowed(host, policy.allowed_hosts):
        raise FetchError(FORBIDDEN)
    literal = _ip_literal(host)
    if literal is None and _legacy_ipv4(host):  # 2130706433 or 127.1: an address dressed as a name
        raise FetchError(FORBIDDEN)
    if literal is not None and not address_allowed(literal, allow_private=policy.allow_private_addresses):
        raise FetchError(FORBIDDEN)
    return target


async def _fetch(target: URL, policy: FetchPolicy) -> bytes:
    host, port = target.raw_host or "", target.port or 443
    resolver = _PinnedResolver(host, await _vetted_addresses(host, port, policy))
    connector = aiohttp.TCPConnector(
        ssl=_tls_context(policy.ca_file),
        resolver=resolver,
        use_dns_cache=False,
        force_close=True,
        limit=1,
        enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
    )
    headers = {"Accept": ", ".join(sorted(policy.allowed_types)), "Accept-Encoding": "identity"}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=policy.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
            ) as session,
            session.get(target, allow_redirects=False, headers=headers) as response,
        ):
            _check_response(response, policy)
            body = await _read_capped(response, policy.max_bytes)
            if _media_type(response) == "application/pdf" and not body.startswith(_PDF_MAGIC):
                raise FetchError(TYPE)
    except FetchError:
        raise
    except (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError):
        raise FetchError(FORBIDDEN) from None  # wrong CA or name: misconfiguration or attack
    except aiohttp.InvalidURL:
        raise FetchError(FORBIDDEN) from None
    except (aiohttp.ClientError, OSError):
        raise FetchError(UNREACHABLE) from None  # refused, reset, TLS handshake, bad framing
    return body


async def _vetted_addresses(host: str, port: int, policy: FetchPolicy) -> list[ResolveResult]:
    """One DNS lookup; every address must pass, or none is used (a mixed answer is an attack sign)."""
    literal = _ip_literal(host)
    if literal is not None:  # already vetted; aiohttp connects to literals without asking the resolver
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [_result(host, str(literal), port, family, socket.IPPROTO_TCP)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_ADDRCONFIG
        )
    except (OSError, UnicodeError):
        raise FetchError(UNREACHABLE) from None
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        scoped = family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3]
        if scoped or not address_allowed(address, allow_private=policy.allow_private_addresses):
            raise FetchError(FORBIDDEN)
        results.append(_result(host, address, port, family, proto))
    if not results:
        raise FetchError(UNREACHABLE)
    return results


class _PinnedResolver(AbstractResolver):
    """Answers only for the vetted host, only with the vetted addresses: no second lookup."""

    def __init__(self, host: str, addresses: list[ResolveResult]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError("refusing to resolve a host that was not vetted")
        wanted = [a for a in self._addresses if family in (socket.AF_UNSPEC, a["family"])]
        return [_result(a["hostname"], a["host"], port, a["family"], a["proto"]) for a in wanted]

    async def close(self) -> None:
        return None


def _result(hostname: str, address: str, port: int, family: int, proto: int) -> ResolveResult:
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    return ResolveResult(hostname=hostname, host=address, port=port, family=family, proto=proto, flags=flags)


def _check_response(response: aiohttp.ClientResponse, policy: FetchPolicy) -> None:
    status = response.status
    if 300 <= status < 400:
        raise FetchError(FORBIDDEN)  # a redirect would leave the vetted host
    if status >= 500 or status in _TRANSIENT_STATUS:
        raise FetchError(UNREACHABLE)
    if status != 200:
        raise FetchError(UNAVAILABLE)
    if _media_type(response) not in policy.allowed_types:
        raise FetchError(TYPE)
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise FetchError(TYPE)  # we asked for identity; a compressed body is not a PDF
    if response.content_length is not None and response.content_length > policy.max_bytes:
        raise FetchError(TOO_LARGE)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Streams the body; stops as soon as it passes ``max_bytes`` (holds at most one chunk more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _ip_literal(host: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying context (system store, plus ``ca_file``); cached, as loading the store is not free."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context
