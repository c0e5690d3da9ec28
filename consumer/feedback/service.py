"""``ordermail feedback``: a second process turning bounces, complaints and ESP events into
``DeliveryFeedback`` records (and suppressions).

Parts: the outcome index (which order an e-mail was for), the idempotent producer, the SMTP
receiver for the return-path domain, the webhook receiver, and probes/metrics on their own port.
Stateless like ``ordermail run``: any number of replicas, each reading the whole outcome topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, Producer

from consumer.app.assembly import codec_for
from consumer.app.settings import kafka_passthrough
from consumer.feedback.handling import FeedbackHandler, SoftBounces, Suppressor
from consumer.feedback.index import OutcomeIndex
from consumer.feedback.smtp_receiver import start_smtp_receiver
from consumer.feedback.webhooks import start_webhook_receiver
from consumer.kafka.clients import producer_config
from consumer.kafka.publisher import OutcomePublisher
from consumer.kafka.suppressions import SuppressionWriter
from consumer.observability.health import HealthServer

if TYPE_CHECKING:
    from consumer.feedback.settings import FeedbackSettings

__all__ = ["FeedbackService"]

log = logging.getLogger("ordermail.feedback")
_DAY_S = 86_400.0


@dataclass
class FeedbackService:
    settings: FeedbackSettings
    suppressor: Suppressor | None = None
    smtp_port: int | None = None  # bound ports, once started (the settings may say 0: any)
    http_port: int | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None  # set by run(): signals arrive on another frame

    def stop(self, *_: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def run(self, started: asyncio.Event | None = None) -> int:
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        return_path = settings.return_path()
        if return_path is None:  # FeedbackSettings refuses to load without one
            raise SystemExit("ordermail feedback needs a return path")
        codec = codec_for(settings)
        index = OutcomeIndex(
            Consumer(_index_config(settings)),
            codec,
            settings.outcome_topic,
            window_s=settings.feedback_window_days * _DAY_S,
            max_entries=settings.feedback_index_max_entries,
        )
        publisher_producer = Producer(producer_config(settings, **{"client.id": "ordermail-feedback"}))
        publisher = OutcomePublisher(
            publisher_producer,
            codec,
            outcome_topic=settings.outcome_topic,
            dlq_topic=settings.dlq_topic,
            retry_topic=settings.retry_topic,
        )
        suppressor = self.suppressor
        writer = None
        if suppressor is None and settings.suppression_keys() is not None:
            writer = SuppressionWriter.from_settings(settings, codec, **{"client.id": "ordermail-feedback"})
            suppressor = writer
            _check_topic(publisher_producer, settings.suppression_topic)
        elif suppressor is None:
            log.warning("ORDERMAIL_SUPPRESSION_SECRET unset: hard bounces and complaints suppress nothing")
        handler = FeedbackHandler(
            index,
            publisher,
            codec,
            settings.feedback_topic,
            suppressor,
            SoftBounces(settings.soft_bounce_limit, settings.soft_bounce_window_days * _DAY_S),
        )
        _check_topic(publisher_producer, settings.feedback_topic)
        index.start()
        health = HealthServer(settings.feedback_health_port, lambda: _not_ready(index))
        smtp = await start_smtp_receiver(
            handler,
            return_path,
            host=settings.feedback_smtp_host,
            port=settings.feedback_smtp_port,
            max_message_bytes=settings.feedback_max_message_bytes,
            complaints_local_part=settings.feedback_complaints_local_part,
        )
        http = await start_webhook_receiver(handler, settings)
        self.smtp_port = smtp.sockets[0].getsockname()[1]
        self.http_port = http.port
        log.info(
            "feedback receivers listening",
            extra={"smtp_port": self.smtp_port, "http_port": self.http_port, "health_port": health.port},
        )
        if started is not None:
            started.set()
        try:
            while not self._stopping.is_set():
                health.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
        finally:
            # Stop taking reports, let those being settled finish, then flush what they published.
            smtp.close()
            await http.close()
            await smtp.wait_closed()
            unacknowledged = publisher.close(timeout_s=settings.drain_timeout_s)
            if writer is not None:
                unacknowledged += writer.close(timeout_s=settings.drain_timeout_s)
            index.close()
            health.close()
        return 1 if unacknowledged else 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


def _index_config(settings: FeedbackSettings) -> dict[str, object]:
    passthrough = kafka_passthrough()
    return {
        **{k: v for k, v in passthrough.items() if not k.startswith(("group.", "enable.auto."))},
        "bootstrap.servers": settings.bootstrap_servers,
        # librdkafka wants a group id; nothing is committed (every replica reads everything).
        "group.id": f"{settings.group_id}-feedback-index",
        "enable.auto.commit": False,
        "enable.partition.eof": True,  # how the index knows it stands at the end
        "isolation.level": "read_committed",
        "client.id": "ordermail-feedback-index",
    }


def _check_topic(producer: Producer, topic: str) -> None:
    """At start, not at the first bounce: a missing topic would make every report 'try later'."""
    metadata = producer.list_topics(topic, timeout=30).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise SystemExit(f"topic {topic} does not exist")


def _not_ready(index: OutcomeIndex) -> str | None:
    if index.failure is not None:
        return f"outcome index stopped: {index.failure}"
    if not index.loaded:
        return "loading the outcome index"
    return None
