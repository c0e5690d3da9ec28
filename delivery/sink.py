"""The development SMTP server (``ordermail smtp-sink``): a real SMTP server that stores each
accepted message as an ``.eml`` file in an outbox folder instead of delivering it.

- ESMTP with STARTTLS (when given a certificate, so the service's secure default works locally),
  SIZE, 8BITMIME, SMTPUTF8 and PIPELINING (RFC 2920); one transaction after another on a
  connection, as a relay allows.
- Input is read in large chunks and commands taken from them; replies wait until the next
  command is not already there, so a pipelined MAIL, RCPT and DATA get their three replies in
  one write. A message body is taken up to its terminating ``CRLF.CRLF`` in a few searches, not
  line by line: the sink runs beside the service in ``make bench``, and must cost it little CPU.
- Files are written under a temporary name and renamed: a reader never sees half a message.
- ``--faults FILE`` makes it misbehave like real relays, for tests and chaos runs: a JSON list
  of rules ``{"match": "slow", "delay_s": 5}``, ``{"match": "bounce", "reply": "550 5.1.1 no"}``,
  ``{"match": "*", "reply": "451 4.7.1 later", "probability": 0.3}``. ``match`` is a substring
  of the recipient (``*`` = any); the first matching rule applies. The file is re-read when it
  changes, so a test can change behaviour mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FaultRules", "serve", "start_sink"]

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
IDLE_TIMEOUT_S = 300.0
_MAX_COMMAND_LINE = 2048
_READ_BYTES = 256 * 1024
_PATH = re.compile(r"\s*<([^<>]*)>(?:\s+(.*))?$")  # "<address> PARAMS" after "MAIL FROM:" / "RCPT TO:"


@dataclass(frozen=True)
class _Rule:
    match: str
    reply: str | None = None
    delay_s: float = 0.0
    probability: float = 1.0

    def applies(self, recipient: str) -> bool:
        return (self.match == "*" or self.match in recipient) and random.random() < self.probability


class FaultRules:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime = -1.0
        self._rules: list[_Rule] = []

    def for_recipient(self, recipient: str) -> _Rule | None:
        self._reload()
        return next((rule for rule in self._rules if rule.applies(recipient)), None)

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            self._rules, self._mtime = [], -1.0
            return
        if mtime != self._mtime:
            self._rules = [_Rule(**rule) for rule in json.loads(self._path.read_text() or "[]")]
            self._mtime = mtime


class _Closed(Exception):
    """The client went away, idled too long, or broke the protocol beyond repair."""


@dataclass
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tls: bool = False
    greeted: bool = False
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)  # read, not yet taken
    replies: bytearray = field(default_factory=bytearray)  # queued, not yet sent

    def reset(self) -> None:
        self.sender, self.recipients = None, []

    async def reply(self, line: str) -> None:
        """Queued: sent before the sink waits for more input (RFC 2920's reply groups)."""
        self.replies += line.encode("utf-8", "surrogateescape") + b"\r\n"

    async def flush(self) -> None:
        if self.replies:
            self.writer.write(bytes(self.replies))
            self.replies.clear()
            await self.writer.drain()

    async def read_until(self, separator: bytes) -> bytes:
        """The input up to and including ``separator``; reads more only when it is not there yet,
        and sends the queued replies first (the client may be waiting for them)."""
        searched = 0
        while (end := self.received.find(separator, searched)) < 0:
            if len(self.received) > MAX_MESSAGE_BYTES + 1024:
                raise _Closed
            searched = max(0, len(self.received) - len(separator) + 1)
            try:
                await self.flush()
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    chunk = await self.reader.read(_READ_BYTES)
            except (TimeoutError, OSError):
                raise _Closed from None
            if not chunk:
                raise _Closed
            self.received += chunk
        end += len(separator)
        taken = bytes(self.received[:end])
        del self.received[:end]
        return taken


class _Sink:
    def __init__(self, outbox: Path, faults: FaultRules, tls_context: ssl.SSLContext | None) -> None:
        self.outbox, self.faults, self.tls_context = outbox, faults, tls_context
        outbox.mkdir(parents=True, exist_ok=True)
        self.hostname = socket.getfqdn()
        self._handlers = {
            "EHLO": self._ehlo,
            "HELO": self._helo,
            "STARTTLS": self._starttls,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "RSET": self._rset,
            "NOOP": self._noop,
        }

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(reader, writer)
        try:
            await session.reply(f"220 {self.hostname} ordermail smtp-sink ESMTP")
            while await self._command(session):
                pass
        except (_Closed, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await session.flush()  # QUIT's reply, or why the sink hangs up
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _command(self, session: _Session) -> bool:
        """Handles one command; False when the session ends."""
        line = await session.read_until(b"\n")
        if len(line) > _MAX_COMMAND_LINE:
            await session.reply("500 5.5.2 line too long")
            return True
        verb, _, argument = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape").partition(" ")
        verb = verb.upper()
        if verb == "QUIT":
            await session.reply("221 Bye")
            return False
        handler = self._handlers.get(verb)
        if handler is None:
            await session.reply(f'500 5.5.1 command "{verb[:20]}" not recognised')
        else:
            await handler(session, argument)
        return True

    async def _ehlo(self, session: _Session, _argument: str) -> None:
        session.greeted = True
        session.reset()
        extensions = [f"SIZE {MAX_MESSAGE_BYTES}", "8BITMIME", "SMTPUTF8", "PIPELINING"]
        if self.tls_context is not None and not session.tls:
            extensions.append("STARTTLS")
        lines = [self.hostname, *extensions, "HELP"]
        await session.reply("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}")

    async def _helo(self, session: _Session, _argument: str) -> None:
        session.greeted = True
        session.reset()
        await session.reply(f"250 {self.hostname}")

    async def _starttls(self, session: _Session, _argument: str) -> None:
        if self.tls_context is None or session.tls:
            await session.reply("502 5.5.1 TLS not available")
            return
        await session.reply("220 2.0.0 ready to start TLS")
        # Commands that came in the clear in the same reads as STARTTLS are dropped, never read as
        # if they came over TLS (the command injection of CVE-2011-0411). Bytes the stream has
        # buffered but not yet handed over are not checked: enough for a test and bench sink.
        session.received.clear()
        try:
            await session.flush()
            await session.writer.start_tls(self.tls_context)
        except (ssl.SSLError, OSError):
            raise _Closed from None
        session.tls, session.greeted = True, False  # RFC 3207: forget everything, expect EHLO
        session.reset()

    async def _rset(self, session: _Session, _argument: str) -> None:
        session.reset()
        await session.reply("250 OK")

    async def _noop(self, session: _Session, _argument: str) -> None:
        await session.reply("250 OK")

    async def _mail(self, session: _Session, argument: str) -> None:
        path = _path_after(argument, "FROM:")
        if not session.greeted:
            await session.reply("503 5.5.1 send EHLO first")
        elif session.sender is not None:
            await session.reply("503 5.5.1 sender already given")
        elif path is None:
            await session.reply("501 5.5.4 syntax: MAIL FROM:<address>")
        else:
            session.sender = path
            await session.reply("250 OK")

    async def _rcpt(self, session: _Session, argument: str) -> None:
        path = _path_after(argument, "TO:")
        if session.sender is None:
            await session.reply("503 5.5.1 need MAIL before RCPT")
        elif not path:
            await session.reply("501 5.5.4 syntax: RCPT TO:<address>")
        else:
            rule = self.faults.for_recipient(path)
            if rule is not None and rule.reply:
                await session.reply(rule.reply)
            else:
                session.recipients.append(path)
                await session.reply("250 OK")

    async def _data(self, session: _Session, _argument: str) -> None:
        if not session.recipients:
            await session.reply("503 5.5.1 need RCPT before DATA")
            return
        await session.reply("354 End data with <CR><LF>.<CR><LF>")
        content = await _read_content(session)
        if content is None:
            session.reset()
            await session.reply("552 5.3.4 message too big")
            raise _Closed  # the rest of the oversized message is still on its way: hang up
        delays = [rule.delay_s for r in session.recipients if (rule := self.faults.for_recipient(r))]
        if delays:
            await asyncio.sleep(max(delays))
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        temporary = self.outbox / f".{name}.tmp"
        # As a delivering MTA does (RFC 5321 4.4): the envelope sender, where bounces would go.
        temporary.write_bytes(b"Return-Path: <" + (session.sender or "").encode() + b">\r\n" + content)
        temporary.replace(self.outbox / name)
        session.reset()
        await session.reply("250 Message accepted for delivery")


async def _read_content(session: _Session) -> bytes | None:
    """The message up to ``CRLF.CRLF``, dot-unstuffed; None when it passes the size limit. Reads
    up to each ``.CRLF``: few per message (base64 lines never end in a dot)."""
    data = bytearray()
    while True:
        data += await session.read_until(b".\r\n")
        if len(data) > MAX_MESSAGE_BYTES:
            return None
        if len(data) == 3 or data[-5:-3] == b"\r\n":  # a lone "." line: at the start or after a line
            break
    content = bytes(data[:-3]).replace(b"\r\n..", b"\r\n.")
    return content[1:] if content.startswith(b"..") else content


def _path_after(argument: str, keyword: str) -> str | None:
    """The address in ``FROM:<address> [parameters]``, None when malformed."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    match = _PATH.match(argument[len(keyword) :])
    return match.group(1) if match else None


def serve(
    port: int,
    outbox: Path,
    *,
    host: str = "127.0.0.1",
    cert: Path | None = None,
    key: Path | None = None,
    faults: Path | None = None,
) -> None:
    """Runs until SIGTERM or SIGINT."""
    tls_context = None
    if cert is not None:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(cert, key)

    async def run() -> None:
        server = await start_sink(
            outbox, host=host, port=port, tls_context=tls_context, faults=FaultRules(faults)
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"smtp-sink listening on {host}:{port}, outbox {outbox}, pid {os.getpid()}", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(run())


async def start_sink(
    outbox: Path,
    *,
    host: str,
    port: int,
    tls_context: ssl.SSLContext | None = None,
    faults: FaultRules | None = None,
) -> asyncio.Server:
    """The sink listening on the running event loop."""
    sink = _Sink(outbox, faults or FaultRules(None), tls_context)
    return await asyncio.start_server(sink.serve_client, host, port)
