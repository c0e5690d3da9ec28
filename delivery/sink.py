"""The development SMTP server (``ordermail smtp-sink``): a real SMTP server that stores each
accepted message as an ``.eml`` file in an outbox folder instead of delivering it.

- Offers STARTTLS when given a certificate, so the service's secure default works locally.
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
import signal
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

__all__ = ["FaultRules", "OutboxHandler", "serve"]


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


class OutboxHandler:
    def __init__(self, outbox: Path, faults: FaultRules | None = None) -> None:
        self.outbox = outbox
        self.faults = faults or FaultRules(None)
        outbox.mkdir(parents=True, exist_ok=True)

    async def handle_RCPT(  # noqa: N802 (aiosmtpd hook name)
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rule = self.faults.for_recipient(address)
        if rule is not None and rule.reply:
            return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802
        delays = [rule.delay_s for r in envelope.rcpt_tos if (rule := self.faults.for_recipient(r))]
        if delays:
            await asyncio.sleep(max(delays))
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        temporary = self.outbox / f".{name}.tmp"
        temporary.write_bytes(envelope.original_content or b"")
        temporary.replace(self.outbox / name)
        return "250 Message accepted for delivery"


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
    controller = Controller(
        OutboxHandler(outbox, FaultRules(faults)),
        hostname=host,
        port=port,
        tls_context=tls_context,
        enable_SMTPUTF8=True,
        data_size_limit=32 * 1024 * 1024,
    )
    controller.start()
    print(f"smtp-sink listening on {host}:{port}, outbox {outbox}, pid {os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        with contextlib.suppress(Exception):
            controller.stop()
        loop.close()
