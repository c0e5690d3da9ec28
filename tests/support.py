"""Small helpers shared by the test layers."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from delivery.return_path import ReturnPath


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (the local stack's ``stack.env``, ``relay.env``)."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


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


@dataclass(frozen=True)
class RelaySettings:
    """The local stack's Postfix relay (``deploy/local/stack up --relay``), as it wrote
    ``.local/relay.env``: where it listens, the certificate to verify it with, the test domains
    it delivers to Maildirs (one per domain), the local-part prefixes it refuses at RCPT, or
    accepts and then bounces or defers, and the return-path domain it routes to the feedback port."""

    host: str
    port: int
    ca_file: Path
    mail_from: str
    domains: tuple[str, ...]
    mail_dir: Path
    refuse_prefix: str
    bounce_prefix: str
    defer_prefix: str
    return_path_domain: str
    return_path_secret: str = field(repr=False)
    feedback_host: str
    feedback_port: int
    log_file: Path
    config_dir: Path

    @classmethod
    def from_env_file(cls, path: Path) -> RelaySettings:
        values = read_env_file(path)
        return cls(
            host=values["SMTP_HOST"],
            port=int(values["SMTP_PORT"]),
            ca_file=Path(values["SMTP_CA_FILE"]),
            mail_from=values["ORDERMAIL_MAIL_FROM"],
            domains=tuple(values["RELAY_DOMAINS"].split(",")),
            mail_dir=Path(values["RELAY_MAIL_DIR"]),
            refuse_prefix=values["RELAY_REFUSE_PREFIX"],
            bounce_prefix=values["RELAY_BOUNCE_PREFIX"],
            defer_prefix=values["RELAY_DEFER_PREFIX"],
            return_path_domain=values["ORDERMAIL_RETURN_PATH_DOMAIN"],
            return_path_secret=values["ORDERMAIL_RETURN_PATH_SECRET"],
            feedback_host=values["ORDERMAIL_FEEDBACK_SMTP_HOST"],
            feedback_port=int(values["ORDERMAIL_FEEDBACK_SMTP_PORT"]),
            log_file=Path(values["RELAY_LOG"]),
            config_dir=Path(values["RELAY_CONFIG_DIR"]),
        )

    def env(self) -> dict[str, str]:
        """What ``ordermail run`` and ``ordermail feedback`` need to use this relay."""
        return {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_TLS": "starttls",
            "SMTP_CA_FILE": str(self.ca_file),
            "ORDERMAIL_MAIL_FROM": self.mail_from,
            "ORDERMAIL_RETURN_PATH_DOMAIN": self.return_path_domain,
            "ORDERMAIL_RETURN_PATH_SECRET": self.return_path_secret,
            "ORDERMAIL_FEEDBACK_SMTP_HOST": self.feedback_host,
            "ORDERMAIL_FEEDBACK_SMTP_PORT": str(self.feedback_port),
        }

    def return_path(self) -> ReturnPath:
        """The VERP return path a service started with :meth:`env` uses."""
        from delivery.return_path import ReturnPath

        local = self.mail_from.rpartition("@")[0]
        return ReturnPath(local, self.return_path_domain, self.return_path_secret.encode())

    def tls_context(self) -> ssl.SSLContext:
        """Verifies the relay's certificate (and its IP address) against the stack's file only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def address(self, kind: str = "delivered", *, domain: str | None = None) -> str:
        """A fresh recipient the relay ``delivered`` (Maildir), ``refused`` (550 5.1.1 at RCPT),
        ``bounced`` (accepted, then a "failed" DSN to the envelope sender) or ``deferred``
        (accepted, retried, a "delayed" DSN within seconds; :meth:`drop` it afterwards), in the
        last test domain (``customer.example``) unless told."""
        prefixes = {
            "refused": self.refuse_prefix,
            "bounced": self.bounce_prefix,
            "deferred": self.defer_prefix,
        }
        prefix = prefixes.get(kind, "")
        return f"{prefix}test-{uuid.uuid4().hex[:12]}@{domain or self.domains[-1]}"

    def delivered(self, recipient: str) -> list[Message]:
        """Headers of the messages delivered to ``recipient`` (its domain's Maildir, told apart
        by the ``Delivered-To`` header Postfix adds)."""
        maildir = self.mail_dir / recipient.rpartition("@")[2]
        found = []
        for path in sorted([*maildir.glob("new/*"), *maildir.glob("cur/*")]):
            with path.open("rb") as file:
                headers = BytesHeaderParser().parse(file)
            if str(headers.get("Delivered-To", "")).lower() == recipient.lower():
                found.append(headers)
        return found

    def drop(self, queue_id: str) -> None:
        """Deletes a message from the relay's queue (``queued as <id>`` in its reply), e.g. one
        to a ``deferred`` address, which would otherwise bounce, with a DSN, ten minutes later."""
        import subprocess

        subprocess.run(
            ["postsuper", "-c", str(self.config_dir), "-d", queue_id],
            check=True,
            capture_output=True,
            timeout=30,
        )
