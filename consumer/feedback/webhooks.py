"""The HTTP side of ``ordermail feedback``: ESP event webhooks (``/webhooks/ses``,
``/webhooks/sendgrid``), each verified by its signature before anything in it is believed.

Answers: 200 once the events are settled (published or dropped), 400/403 for a body that is
malformed or not signed by the configured key (counted; the ESP does not retry a 4xx), 503 when
it should come again, 404 for an ESP that is not configured.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from consumer.feedback.handling import TryLater
from consumer.observability import metrics

if TYPE_CHECKING:
    from consumer.feedback.handling import FeedbackHandler
    from consumer.feedback.settings import FeedbackSettings
    from delivery.feedback.model import Report

__all__ = ["WebhookReceiver", "WebhookRefused", "start_webhook_receiver"]

log = logging.getLogger("ordermail.feedback")

Parse = Callable[[bytes, Mapping[str, str]], list["Report"]]


class WebhookRefused(Exception):
    """A webhook body that is not believed: ``reason`` is counted, ``status`` answered."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class WebhookReceiver:
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


def _route(handler: FeedbackHandler, source: str, parse: Parse) -> Callable[[web.Request], object]:
    async def receive(request: web.Request) -> web.Response:
        arrived_at = time.monotonic()
        body = await request.read()
        try:
            reports = parse(body, request.headers)
        except WebhookRefused as refused:
            metrics.FEEDBACK_DROPPED.labels(source, refused.reason).inc()
            return web.Response(status=refused.status, text=f"{refused.reason}\n")
        try:
            await handler.handle(reports, hashlib.sha256(body).digest(), arrived_at)
        except TryLater:
            return web.Response(status=503, text="try again later\n", headers={"Retry-After": "30"})
        return web.Response(text="ok\n")

    return receive


def webhook_parsers(settings: FeedbackSettings) -> dict[str, tuple[str, Parse]]:
    """Path → (source, parser) for every ESP configured; none until one is."""
    return {}


async def start_webhook_receiver(handler: FeedbackHandler, settings: FeedbackSettings) -> WebhookReceiver:
    app = web.Application(client_max_size=settings.feedback_max_webhook_bytes)
    for path, (source, parse) in webhook_parsers(settings).items():
        app.router.add_post(path, _route(handler, source, parse))  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.feedback_http_host, settings.feedback_http_port)
    await site.start()
    return WebhookReceiver(runner, int(runner.addresses[0][1]))
