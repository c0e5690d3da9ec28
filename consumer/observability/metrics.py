"""Prometheus metrics, served at ``/metrics`` beside the health probes.

Labels carry statuses, reason codes, topics and partitions only: nothing about a customer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["KafkaStatistics"]

log = logging.getLogger("ordermail.metrics")
_SECONDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)

EVENTS = Counter("ordermail_events", "Outcomes published, by status and reason", ["status", "reason"])
DEAD_LETTERS = Counter("ordermail_dead_letters", "Records written to the dead-letter topic")
DEFERRALS = Counter("ordermail_deferrals", "Events deferred through the retry topic")
SKIPPED = Counter("ordermail_redeliveries_skipped", "Redelivered events recognised as already handled")
SUPPRESSED = Counter(
    "ordermail_suppressed",
    "Orders not e-mailed: the address is on the suppression list (REJECTED suppressed)",
)
SUPPRESSION_ENTRIES = Gauge("ordermail_suppression_entries", "Keys on the suppression list, expired ones too")
SUPPRESSION_RECORDS = Counter(
    "ordermail_suppression_records_read", "Records read from the suppression topic, tombstones too"
)
# By engine (the set's: weasyprint or typst), not by set: two series however many brands.
RENDER_SECONDS = Histogram(
    "ordermail_render_seconds", "Layout to PDF, per event's documents", ["engine"], buckets=_SECONDS
)
ENCRYPT_SECONDS = Histogram("ordermail_encrypt_seconds", "PDF encryption, per document", buckets=_SECONDS)
SEND_SECONDS = Histogram("ordermail_smtp_send_seconds", "One SMTP transaction (accepted)", buckets=_SECONDS)
IN_FLIGHT = Gauge("ordermail_in_flight_events", "Events being processed (or deferred, waiting)", ["topic"])
CONSUMER_LAG = Gauge(
    "ordermail_consumer_lag", "Records behind the log end, from librdkafka", ["topic", "partition"]
)
BROKERS_UP = Gauge("ordermail_kafka_brokers_up", "Brokers librdkafka holds a connection to")
KAFKA_FETCHED = Counter(
    "ordermail_kafka_fetched_messages",
    "Records fetched from the brokers (above the events consumed when paused partitions are re-fetched)",
)
BREAKER_OPEN = Gauge("ordermail_dlq_breaker_open", "1 when consuming stopped: too much dead-lettered")
RENDER_WORKERS = Gauge("ordermail_render_workers", "Render worker processes alive")
RENDER_WORKERS_REPLACED = Gauge(
    "ordermail_render_workers_replaced", "Workers replaced: recycled, crashed, stuck"
)
SMTP_CONNECTIONS = Gauge("ordermail_smtp_connections_idle", "Open SMTP connections waiting for a message")

# ``ordermail feedback`` (consumer/feedback): what became of e-mails after the relay.
FEEDBACK = Counter(
    "ordermail_feedback", "DeliveryFeedback records published", ["source", "kind", "bounce_type"]
)
FEEDBACK_DROPPED = Counter(
    "ordermail_feedback_dropped",
    "Reports received and dropped: auto_reply, not_a_report, unparseable, unsigned, bad_signature,"
    " uncorrelated (no sent outcome for its event), ...",
    ["source", "reason"],
)
FEEDBACK_RETRY_LATER = Counter(
    "ordermail_feedback_retry_later",
    "Reports answered 'try again later' (Kafka or the index behind)",
    ["source"],
)
FEEDBACK_INDEX_ENTRIES = Gauge("ordermail_feedback_index_entries", "Sent e-mails the outcome index holds")
FEEDBACK_INDEX_EVICTED = Counter(
    "ordermail_feedback_index_evicted",
    "Sent e-mails dropped from the outcome index for room, inside its window: raise the entry cap",
)
SUPPRESSIONS_ADDED = Counter(
    "ordermail_suppressions_added", "Addresses suppressed by feedback, by reason", ["reason"]
)
SUPPRESSION_REFUSED = Counter(
    "ordermail_feedback_unsuppressible",
    "Hard bounces and complaints whose recipient the return-path token was not made for: not suppressed",
    ["source"],
)


class KafkaStatistics:
    """Reads librdkafka's periodic statistics (``stats_cb``) into lag and broker gauges."""

    def __init__(self) -> None:
        self.brokers_up: int | None = None  # None until the first report
        self._fetched = 0

    def __call__(self, report: str) -> None:
        try:
            stats: dict[str, Any] = json.loads(report)
        except ValueError:
            return
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        self.brokers_up = sum(1 for b in brokers if b.get("state") == "UP")
        BROKERS_UP.set(self.brokers_up)
        fetched = int(stats.get("rxmsgs", 0))  # librdkafka's total since the client started
        KAFKA_FETCHED.inc(max(0, fetched - self._fetched))
        self._fetched = fetched
        for topic, details in stats.get("topics", {}).items():
            for partition, numbers in details.get("partitions", {}).items():
                lag = numbers.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    CONSUMER_LAG.labels(topic, partition).set(lag)
