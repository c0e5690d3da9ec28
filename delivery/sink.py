"""The development SMTP server (``ordermail smtp-sink``): a real SMTP server that stores each
accepted message as an ``.eml`` file in an outbox folder instead of delivering it.

Offers STARTTLS when given a certificate, so the service's secure default works locally too.
Files are written under a temporary name and renamed, so a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

__all__ = ["OutboxHandler", "serve"]


class OutboxHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        outbox.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd hook name)
        content = envelope.original_content or b""
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        temporary = self.outbox / f".{name}.tmp"
        temporary.write_bytes(content)
        temporary.replace(self.outbox / name)
        return "250 Message accepted for delivery"


def serve(
    port: int, outbox: Path, *, host: str = "127.0.0.1", cert: Path | None = None, key: Path | None = None
) -> None:
    """Runs until SIGTERM or SIGINT."""
    tls_context = None
    if cert is not None:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(cert, key)
    controller = Controller(
        OutboxHandler(outbox),
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
