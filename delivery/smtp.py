"""Sends messages through an SMTP relay over a small pool of persistent connections: aiosmtplib
sets each session up (TLS, EHLO, AUTH), ``transaction.py`` runs the transactions on it, pipelined
when the relay offers PIPELINING.

Every failure becomes a :class:`SendError` whose ``reason`` (one of :data:`SendReason`) the
caller's error policy acts on; reply texts are never kept (relays echo addresses in them).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import aiosmtplib

from delivery.transaction import Disconnected, Refused, ReplyTimeout, Transactions

__all__ = ["SendError", "SendReason", "SendResult", "SmtpConfig", "SmtpPool", "TlsMode"]

SendReason = Literal[
    "smtp_transient",  # 4xx
    "smtp_timeout",
    "smtp_unreachable",
    "smtp_disconnected",
    "smtp_connect_refused",
    "smtp_tls_failed",
    "smtp_auth_failed",
    "smtp_throttled",  # 421, or a 4xx that says so
    "smtp_permanent",  # 5xx
]


class TlsMode(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    tls: TlsMode = TlsMode.STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = 30.0
    connections: int = 4
    max_messages_per_connection: int = 100
    rate_limit_per_s: float = 0.0  # 0: unlimited
    throttle_pause_s: float = 5.0  # how long all sending pauses when the relay throttles us
    pipelining: bool = True  # when the relay offers it (RFC 2920)


@dataclass(frozen=True)
class SendResult:
    code: int
    send_ms: float


class SendError(Exception):
    """The relay did not take the message; whether to retry is the caller's policy's call."""

    def __init__(self, reason: SendReason, *, code: int | None = None) -> None:
        super().__init__(f"{reason} ({code})" if code else reason)
        self.reason: SendReason = reason
        self.code = code


@dataclass
class _Connection:
    session: Transactions
    sent: int = 0


class SmtpPool:
    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.connections)
        self._tls_context = _tls_context(config) if config.tls is not TlsMode.NONE else None
        self._next_slot = 0.0

    async def send(self, message: bytes, *, sender: str, recipient: str) -> SendResult:
        """Sends the finished message (see :func:`delivery.message.compose`)."""
        await self._pace()
        started = time.perf_counter()
        async with self._slots:
            connection = self._idle.pop() if self._idle else None
            if connection is not None and not connection.session.is_connected:
                connection.session.close()  # e.g. one reply out of step: its socket is still open
                connection = None
            reused = connection is not None
            if connection is None:
                connection = await self._connect()
            while True:
                try:
                    code = await _transaction(connection.session, message, sender, recipient)
                    break
                except Disconnected:
                    connection.session.close()
                    if not reused:
                        raise SendError("smtp_disconnected") from None
                    # The relay closed an idle connection: one more try on a fresh one.
                    connection, reused = await self._connect(), False
                except SendError as error:
                    try:
                        await self._recycle_after(error, connection)
                    except BaseException:  # cancelled during the RSET: the session is in doubt
                        connection.session.close()
                        raise
                    raise
                except BaseException:  # cancelled, or unforeseen: the transaction is in an unknown state
                    connection.session.close()
                    raise
            connection.sent += 1
            self._release(connection)
        return SendResult(code=code, send_ms=(time.perf_counter() - started) * 1000)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def cool_down(self) -> None:
        """The relay throttled us: every send waits a while (backpressure, not failure)."""
        self._next_slot = max(self._next_slot, time.monotonic() + self._config.throttle_pause_s)
        await self._pace()

    async def _pace(self) -> None:
        """Spaces messages evenly when the relay allows only so many per second, and holds them
        all back during a cool-down."""
        now = time.monotonic()
        if self._config.rate_limit_per_s <= 0:
            if self._next_slot > now:
                await asyncio.sleep(self._next_slot - now)
            return
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1 / self._config.rate_limit_per_s
        if slot > now:
            await asyncio.sleep(slot - now)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(c.session) for c in idle))

    async def _connect(self) -> _Connection:
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            timeout=config.timeout_s,
            use_tls=config.tls is TlsMode.TLS,
            start_tls=config.tls is TlsMode.STARTTLS,
            tls_context=self._tls_context,
            validate_certs=config.tls is not TlsMode.NONE,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()  # a half-open session (TLS or AUTH refused) must not leak its socket
            raise _connect_error(exc) from None
        except BaseException:  # cancelled while connecting
            client.close()
            raise
        try:
            await _greet(client)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise _greeting_error(exc) from None
        except BaseException:
            client.close()
            raise
        try:
            return _Connection(Transactions(client, timeout_s=config.timeout_s, pipelining=config.pipelining))
        except Disconnected:
            client.close()
            raise SendError("smtp_disconnected") from None

    def _release(self, connection: _Connection) -> None:
        if connection.sent >= self._config.max_messages_per_connection:
            asyncio.get_running_loop().create_task(_quit(connection.session))
        else:
            self._idle.append(connection)

    async def _recycle_after(self, error: SendError, connection: _Connection) -> None:
        if error.code is None or not connection.session.is_connected:
            connection.session.close()
            return
        try:  # a refused transaction leaves the session usable after RSET
            await connection.session.reset()
        except (Refused, Disconnected, ReplyTimeout, OSError):
            connection.session.close()
            return
        self._release(connection)


async def _transaction(session: Transactions, message: bytes, sender: str, recipient: str) -> int:
    mail_options: list[str] = []
    recipient_options: list[str] = []
    if session.supports("dsn"):
        # RFC 3461: a bounce returns the headers only, not the receipt (personal data, the
        # PDF), and names the address we gave (ORCPT) even after forwarding: ordermail
        # feedback checks the return path's token against it.
        mail_options.append("RET=HDRS")
        if recipient.isascii():
            recipient_options.append(f"ORCPT=rfc822;{_xtext(recipient)}")
    try:
        return await session.send(
            message,
            sender=sender,
            recipient=recipient,
            mail_options=mail_options,
            recipient_options=recipient_options,
        )
    except Disconnected:
        raise
    except Refused as refused:
        raise _reply_error(refused.code, refused.text) from None
    except ReplyTimeout:
        session.close()
        raise SendError("smtp_timeout") from None
    except OSError:
        session.close()
        raise SendError("smtp_unreachable") from None


def _xtext(text: str) -> str:
    """RFC 3461 xtext: "+", "=" and anything outside "!".."~" as +XX."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


async def _quit(session: Transactions) -> None:
    try:
        await session.quit()
    except (Refused, Disconnected, ReplyTimeout, OSError):
        session.close()


_THROTTLE_WORDS = ("rate", "throttl", "too many", "limit", "slow down")


def _reply_error(code: int, text: str) -> SendError:
    """Classifies a refusal by its code; the text is only searched for throttling hints, never kept."""
    if code == 421 or (400 <= code < 500 and any(word in text.lower() for word in _THROTTLE_WORDS)):
        return SendError("smtp_throttled", code=code)
    if 400 <= code < 500:
        return SendError("smtp_transient", code=code)
    return SendError("smtp_permanent", code=code)


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if refused) where aiosmtplib has not greeted yet: after STARTTLS it greets again
    only with the next command, and the transactions do not go through it."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()


def _greeting_error(exc: Exception) -> SendError:
    """Classified as the first transaction's failure, as when aiosmtplib greeted within MAIL."""
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return SendError("smtp_disconnected")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply_error(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return SendError("smtp_timeout")
    return SendError("smtp_unreachable")


def _connect_error(exc: Exception) -> SendError:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SendError("smtp_auth_failed", code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reason: SendReason = "smtp_throttled" if exc.code == 421 else "smtp_connect_refused"  # 421: too many
        return SendError(reason, code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return SendError("smtp_timeout")
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return SendError("smtp_tls_failed")
    return SendError("smtp_unreachable")


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
