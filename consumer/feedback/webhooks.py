"""The HTTP side of ``ordermail feedback``: ESP event webhooks (``/webhooks/ses``,
``/webhooks/sendgrid``), each verified by its signature before anything in it is believed.

Answers: 200 once the events are settled (published or dropped), 400/403 for a body that is
malformed or not signed by the configured key (counted; the ESP does not retry a 4xx), 503 when
it should come again, 404 for an ESP that is not configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from consumer.feedback.handling import TryLater
from consumer.observability import metrics
from delivery.feedback.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, SendGridVerifier, parse_sendgrid
from delivery.feedback.ses import SnsVerifier, parse_ses
from delivery.feedback.webhook import WebhookError, WebhookResult

if TYPE_CHECKING:
    from consumer.feedback.handling import FeedbackHandler
    from consumer.feedback.settings import FeedbackSettings

__all__ = ["WebhookReceiver", "start_webhook_receiver", "webhook_parsers"]

log = logging.getLogger("ordermail.feedback")

Parse = Callable[[bytes, Mapping[str, str]], WebhookResult]


@dataclass
class WebhookReceiver:
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


def _route(
    handler: FeedbackHandler, source: str, parse: Parse, parsing: asyncio.Semaphore
) -> Callable[[web.Request], object]:
    async def receive(request: web.Request) -> web.Response:
        arrived_at = time.monotonic()
        body = await request.read()
        try:
            # Off the event loop (SES's JSON is parsed before its signature can be checked: up to
            # the body limit, from anyone), and two at a time, as the SMTP receiver reads reports.
            async with parsing:
                result = await asyncio.to_thread(parse, body, request.headers)
        except WebhookError as refused:
            metrics.FEEDBACK_DROPPED.labels(source, refused.reason).inc()
            status = 400 if refused.reason == "unparseable" else 403
            return web.Response(status=status, text=f"{refused.reason}\n")
        if result.subscription is not None:
            # Confirming means fetching a URL from the request: an operator's decision, not ours.
            log.warning(
                "SNS subscription message: confirm it by hand: %s", result.subscription.instructions()
            )
        if result.ignored:
            metrics.FEEDBACK_DROPPED.labels(source, "ignored_event").inc(result.ignored)
        if result.malformed:
            metrics.FEEDBACK_DROPPED.labels(source, "malformed_entry").inc(result.malformed)
        try:
            await handler.handle(result.reports, arrived_at)
        except TryLater:
            return web.Response(status=503, text="try again later\n", headers={"Retry-After": "30"})
        return web.Response(text="ok\n")

    return receive


def webhook_parsers(settings: FeedbackSettings) -> dict[str, tuple[str, Parse]]:
    """Path → (source, parser) for every ESP configured; built at start, so a bad key stops it."""
    parsers: dict[str, tuple[str, Parse]] = {}
    if settings.ses_cert_file is not None:
        topics = [arn.strip() for arn in settings.ses_topic_arns.split(",") if arn.strip()]
        sns = SnsVerifier.from_file(
            settings.ses_cert_file,
            topics,
            max_age=timedelta(seconds=settings.ses_max_age_s),
            min_signature_version=settings.ses_min_signature_version,
        )
        parsers["/webhooks/ses"] = (
            "ses",
            lambda body, headers: parse_ses(body, sns, message_type=headers.get("x-amz-sns-message-type")),
        )
    if settings.sendgrid_public_key:
        sendgrid = SendGridVerifier.from_setting(
            settings.sendgrid_public_key, max_age=timedelta(seconds=settings.sendgrid_max_age_s)
        )
        parsers["/webhooks/sendgrid"] = (
            "sendgrid",
            lambda body, headers: parse_sendgrid(
                body,
                sendgrid,
                signature=headers.get(SIGNATURE_HEADER),
                timestamp=headers.get(TIMESTAMP_HEADER),
            ),
        )
    return parsers


async def start_webhook_receiver(handler: FeedbackHandler, settings: FeedbackSettings) -> WebhookReceiver:
    app = web.Application(client_max_size=settings.feedback_max_webhook_bytes)
    parsing = asyncio.Semaphore(2)
    for path, (source, parse) in webhook_parsers(settings).items():
        app.router.add_post(path, _route(handler, source, parse, parsing))  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.feedback_http_host, settings.feedback_http_port)
    await site.start()
    return WebhookReceiver(runner, int(runner.addresses[0][1]))
