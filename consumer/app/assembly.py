"""Builds the service's parts from the settings: codec, render pool, SMTP pool, outcome
publisher, redelivery ledger, suppression list (with ``ORDERMAIL_SUPPRESSION_SECRET``) and the
pipeline that joins them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from confluent_kafka import Producer

from consumer.kafka.clients import consumer_config, producer_config
from consumer.kafka.ledger import Ledger
from consumer.kafka.publisher import OutcomePublisher
from consumer.kafka.suppressions import SuppressionFollower, follower_config
from consumer.processing.pipeline import Pipeline, PipelineConfig
from consumer.processing.ports import Known
from consumer.processing.records import Inbound
from consumer.processing.render_pool import RenderConfig, RenderPool, remove_stale_worker_folders
from consumer.processing.retry import epoch_ms
from delivery import SmtpPool
from delivery.suppression import SuppressionTable
from rendering import RenderError
from schemas import OUTCOME_SCHEMA, SCHEMA_DIR, Codec, SchemaRegistryUnavailable
from schemas.codec import Schema

if TYPE_CHECKING:
    from consumer.app.settings import Settings
    from schemas import DeliveryOutcome

log = logging.getLogger("ordermail.assembly")

__all__ = ["Parts", "assemble", "codec_for", "start_render_pool"]


@dataclass(frozen=True)
class Parts:
    codec: Codec
    render_pool: RenderPool
    smtp: SmtpPool
    publisher: OutcomePublisher
    ledger: Ledger
    pipeline: Pipeline
    suppressions: SuppressionFollower | None = None  # None: suppression is off (no secret)


REGISTRY_TIMEOUT_S = 5


def codec_for(settings: Settings) -> Codec:
    registry = None
    if settings.schema_registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        # new_client understands mock:// URLs (an in-memory registry) as well as real ones. Its
        # HTTP client waits forever by default: a registry that hangs must fail like one that is
        # away (SchemaRegistryUnavailable), within seconds, asked once (the pipeline asks again).
        registry = SchemaRegistryClient.new_client(
            {"url": settings.schema_registry_url, "timeout": REGISTRY_TIMEOUT_S, "max.retries": 0}
        )
    directories = [SCHEMA_DIR, *([settings.writer_schema_dir] if settings.writer_schema_dir else [])]
    writers = [
        Schema.from_json(path.read_text(encoding="utf-8"))
        for directory in directories
        for path in sorted(directory.rglob("*.avsc"))
    ]
    return Codec(writers, registry)


def assemble(settings: Settings) -> Parts:
    codec = codec_for(settings)
    try:  # before any e-mail: its outcome must be writable once the relay has it
        codec.prepare(OUTCOME_SCHEMA, subject=f"{settings.outcome_topic}-value")
    except SchemaRegistryUnavailable as error:  # away, or refusing it (HTTP 409, 401...): named
        raise SystemExit(
            f"schema registry unavailable: the outcome schema cannot be registered ({error})"
        ) from None
    render_config = RenderConfig.from_settings(settings)
    render_pool = start_render_pool(render_config, settings)
    publisher = OutcomePublisher(
        Producer(producer_config(settings)),
        codec,
        outcome_topic=settings.outcome_topic,
        dlq_topic=settings.dlq_topic,
        retry_topic=settings.retry_topic,
    )
    smtp = SmtpPool(settings.smtp_config())
    ledger = Ledger(
        consumer_config(settings, **{"group.id": f"{settings.group_id}.ledger"}),
        settings.outcome_topic,
        codec,
    )
    suppressions, suppressed = _suppression_list(settings, codec)
    pipeline = Pipeline(
        PipelineConfig(
            mail_from=settings.mail_from,
            message_domain=settings.message_domain(),
            group_id=settings.group_id,
            send_attempts=settings.send_attempts,
            retry_backoff_s=settings.retry_backoff_s,
            max_attachment_bytes=settings.max_attachment_bytes,
            retry=settings.retry_schedule(),
            dkim=settings.dkim_signer(),
            return_path=settings.return_path(),
            fetch_policy=settings.fetch_policy(),
        ),
        codec,
        render_pool,
        smtp,
        publisher,
        handled_as=_handled_by(ledger, settings.input_topic),
        remember=_noted_by(ledger, settings.input_topic),
        suppressed=suppressed,
    )
    return Parts(codec, render_pool, smtp, publisher, ledger, pipeline, suppressions)


def _suppression_list(
    settings: Settings, codec: Codec
) -> tuple[SuppressionFollower | None, Callable[[str], bool]]:
    """The follower (loaded when the service starts) and the pipeline's question to its table;
    without a secret, none, and no address is suppressed."""
    keys = settings.suppression_keys()
    if keys is None:
        return None, lambda _address: False
    table = SuppressionTable(settings.suppression_ttl())
    follower = SuppressionFollower(follower_config(settings), settings.suppression_topic, codec, table)

    return follower, lambda address: table.suppresses(keys, address, datetime.now(UTC))


def _handled_by(ledger: Ledger, input_topic: str) -> Callable[[Inbound, str], Known | None]:
    """Records of the input topic and their deferred passes (the retry topic) are checked: the
    ledger knows the input partitions' outcomes."""

    def handled(inbound: Inbound, event_id: str) -> Known | None:
        origin = inbound.origin  # a retry-topic record's origin is its input record
        return ledger.status(origin.partition, event_id) if origin.topic == input_topic else None

    return handled


def _noted_by(ledger: Ledger, input_topic: str) -> Callable[[Inbound, DeliveryOutcome, int], None]:
    """Every outcome of an input record's event, whatever its status, under the input partition:
    also those of its deferred passes on the retry topic (a ``FAILED`` there ends the deferral)."""

    def note(inbound: Inbound, outcome: DeliveryOutcome, outcome_offset: int) -> None:
        origin = inbound.origin
        if origin.topic == input_topic:
            occurred_ms = epoch_ms(outcome["occurred_at"])
            known = Known(
                outcome["status"], origin.offset, outcome_offset, occurred_ms, outcome.get("message_id")
            )
            ledger.note(origin.partition, outcome["event_id"], known)

    return note


def start_render_pool(config: RenderConfig, settings: Settings) -> RenderPool:
    """The render workers, warm, having rendered every template set in every language between
    them before anything is consumed: a broken template stops the deploy (the pod never gets
    ready) instead of dead-lettering live events."""
    if removed := remove_stale_worker_folders():
        log.info("removed render workers' folders left by ended processes", extra={"folders": removed})
    try:
        pool = RenderPool(
            config,
            workers=settings.render_workers,
            max_documents_per_worker=settings.worker_max_documents,
            max_rss_mb=settings.worker_max_rss_mb,
            timeout_s=settings.render_timeout_s,
            check_templates=True,
        )
    except RenderError as error:
        raise SystemExit(f"templates are broken: {error}") from None
    except RuntimeError as error:  # e.g. no file descriptor or disk left
        raise SystemExit(str(error)) from None
    log.info("templates valid", extra={"renderings": len(pool.template_report)})
    return pool
