"""The public surface of each package and module, pinned: a name added to or dropped from an
``__all__`` is a decision, seen in review here. Also the dependency rules the layout stands on."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORTED: dict[str, list[str]] = {
    "consumer.app": ["assembly", "cli", "settings", "startup"],
    "consumer.app.assembly": ["Parts", "assemble", "codec_for", "start_render_pool"],
    "consumer.app.cli": ["main"],
    "consumer.app.settings": ["Settings", "kafka_passthrough"],
    "consumer.app.startup": ["check_environment"],
    "consumer.feedback": ["handling", "index", "service", "settings", "smtp_receiver", "webhooks"],
    "consumer.feedback.handling": [
        "FeedbackHandler",
        "SoftBounces",
        "Suppressor",
        "TryLater",
        "credible",
        "feedback_id",
    ],
    "consumer.feedback.index": ["IndexLagging", "OutcomeIndex", "Sent", "canonical_event_id"],
    "consumer.feedback.service": ["FeedbackService"],
    "consumer.feedback.settings": ["FeedbackSettings"],
    "consumer.feedback.smtp_receiver": [
        "MAX_LINES",
        "MAX_RECEIVING",
        "MAX_RECIPIENTS",
        "MAX_SESSIONS",
        "ReportReceiver",
        "start_smtp_receiver",
    ],
    "consumer.feedback.webhooks": ["WebhookReceiver", "start_webhook_receiver", "webhook_parsers"],
    "consumer.kafka": [
        "breaker",
        "bridge",
        "clients",
        "handover",
        "ledger",
        "offsets",
        "partitioning",
        "publisher",
        "service",
        "suppressions",
    ],
    "consumer.kafka.breaker": ["DeadLetterBreaker"],
    "consumer.kafka.bridge": ["Bridge", "Crashed"],
    "consumer.kafka.clients": [
        "DELIVERY_TIMEOUT_S",
        "answered",
        "check_topics",
        "close_with_timeout",
        "consumer_config",
        "error_name",
        "producer_config",
    ],
    "consumer.kafka.handover": ["Handover"],
    "consumer.kafka.ledger": ["Ledger", "settle"],
    "consumer.kafka.offsets": ["OffsetTracker", "TopicPartitionKey", "format_metadata", "parse_metadata"],
    "consumer.kafka.partitioning": ["murmur2", "partition_for"],
    "consumer.kafka.publisher": [
        "AcknowledgedProducer",
        "AcknowledgementWatch",
        "OutcomePublisher",
        "PublishError",
    ],
    "consumer.kafka.service": ["Service"],
    "consumer.kafka.suppressions": [
        "LOAD_TIMEOUT_S",
        "SuppressionError",
        "SuppressionFollower",
        "SuppressionWriter",
        "check_compacted",
        "entry_in",
        "entry_of",
        "follower_config",
        "record_of",
    ],
    "consumer.observability": ["health", "logs", "metrics", "telemetry"],
    "consumer.observability.health": ["HealthServer"],
    "consumer.observability.logs": ["configure_logging"],
    "consumer.observability.metrics": ["KafkaStatistics"],
    "consumer.observability.telemetry": [
        "annotate_outcome",
        "configure_tracing",
        "consumer_span_attributes",
        "context_from",
        "inject_into",
        "producer_span_attributes",
        "shutdown_tracing",
        "span_from_duration",
        "step",
        "tracer",
    ],
    "consumer.processing": [
        "fork_server",
        "mail",
        "outcomes",
        "pipeline",
        "policy",
        "ports",
        "records",
        "render_pool",
        "retry",
    ],
    "consumer.processing.fork_server": [
        "SHIPPED_TEMPLATES",
        "preloaded_modules",
        "set_engine",
        "set_engines",
        "start_fork_server",
        "stop_fork_server",
        "worker_context",
    ],
    "consumer.processing.mail": ["receipt_message"],
    "consumer.processing.outcomes": ["OUTCOME_SCHEMA", "dead_letter_headers", "outcome_for"],
    "consumer.processing.pipeline": ["Done", "LET_GO", "LetGo", "Pipeline", "PipelineConfig"],
    "consumer.processing.policy": [
        "Action",
        "DEPLOY_SUSPECT",
        "NEVER_REDRIVE",
        "POLICY",
        "PipelineReason",
        "REASONS",
        "Reason",
        "action_for",
        "redrivable",
    ],
    "consumer.processing.ports": ["Fetched", "Known", "PublishError", "Publisher", "Renderer", "Sender"],
    "consumer.processing.records": [
        "Headers",
        "Inbound",
        "OWN_PREFIX",
        "Origin",
        "RESEND_HEADER",
        "RetryState",
        "message_headers",
        "plausible_id",
        "readable_headers",
    ],
    "consumer.processing.render_pool": [
        "PoolStats",
        "RenderConfig",
        "RenderPool",
        "remove_stale_worker_folders",
        "settle_after_warm_up",
    ],
    "consumer.processing.retry": ["RetrySchedule", "RetryState", "epoch_ms"],
    "consumer.tools": [
        "dlq",
        "operations",
        "orders",
        "preview",
        "producing",
        "redrive",
        "scan",
        "suppression",
        "topic_reader",
    ],
    "consumer.tools.dlq": ["DeadLetter", "Selection", "list_dead_letters", "parse_time", "read_dead_letters"],
    "consumer.tools.operations": ["add_commands", "printable", "run_command"],
    "consumer.tools.orders": ["history", "resend"],
    "consumer.tools.preview": ["command", "render", "server", "state"],
    "consumer.tools.preview.command": ["preview_command"],
    "consumer.tools.preview.render": [
        "Preview",
        "PreviewError",
        "describe",
        "load_event",
        "render_preview",
        "sample",
    ],
    "consumer.tools.preview.server": ["LOCALES", "PreviewServer", "SAMPLES"],
    "consumer.tools.preview.state": ["Choice", "PreviewState", "fingerprint", "twin_set"],
    "consumer.tools.producing": ["publish_orders", "publish_raw"],
    "consumer.tools.redrive": ["RedriveReport", "redrive", "redrive_group", "transactional_config"],
    "consumer.tools.scan": [
        "Progress",
        "Reader",
        "ToolError",
        "check_personal_data_flag",
        "decoded",
        "tool_producer_config",
    ],
    "consumer.tools.suppression": [
        "KEY_PREFIX",
        "add_suppression",
        "address_key",
        "list_suppressions",
        "remove_suppression",
    ],
    "consumer.tools.topic_reader": ["Record", "committed_and_end", "read_outcomes", "read_records"],
    "schemas": [
        "Codec",
        "DecodeError",
        "DeliveryOutcome",
        "DeliveryStatus",
        "FEEDBACK_SCHEMA",
        "InvalidEvent",
        "ORDER_SCHEMA",
        "OUTCOME_SCHEMA",
        "OrderCompleted",
        "SCHEMA_DIR",
        "SUPPRESSION_SCHEMA",
        "SchemaRegistryUnavailable",
        "validate_order",
    ],
    "rendering": [
        "DEFAULT_PASSWORD_TEMPLATE",
        "DEFAULT_SET",
        "PasswordPolicy",
        "RenderError",
        "RenderedAttachment",
        "RenderedMail",
        "Renderer",
        "TEMPLATE_DIR",
        "encrypt_pdf",
        "harfbuzz_subset_available",
        "weasyprint_uses_harfbuzz_subset",
    ],
    "delivery.feedback.arf": ["is_arf", "parse_arf"],
    "delivery.feedback.dsn": ["is_dsn", "parse_dsn"],
    "delivery.feedback.inbound": ["Dropped", "Inbound", "is_auto_reply", "read_inbound"],
    "delivery.feedback.parts": [
        "address_field",
        "date_field",
        "domain_of",
        "field",
        "find_part",
        "oversized_content_field",
        "returned_headers",
        "xtext_decoded",
    ],
    "delivery.feedback.model": [
        "BounceType",
        "Kind",
        "Report",
        "Source",
        "bounce_type_of",
        "enhanced_code",
        "event_id_from_message_id",
    ],
    "delivery.feedback.sendgrid": [
        "CUSTOM_ARG_EVENT_ID",
        "DEFAULT_MAX_AGE",
        "SIGNATURE_HEADER",
        "SendGridVerifier",
        "TIMESTAMP_HEADER",
        "parse_sendgrid",
    ],
    "delivery.feedback.ses": ["DEFAULT_MAX_AGE", "DEFAULT_MIN_SIGNATURE_VERSION", "SnsVerifier", "parse_ses"],
    "delivery.feedback.webhook": [
        "MAX_FUTURE",
        "SubscriptionNotice",
        "WebhookConfigError",
        "WebhookError",
        "WebhookReason",
        "WebhookResult",
        "check_age",
        "diagnostic_code",
        "load_json",
        "occurred_at_iso",
        "occurred_at_unix",
        "our_message_id",
        "recipient_parts",
        "signature_bytes",
    ],
    "delivery.suppression": [
        "InvalidAddress",
        "REASONS",
        "Reason",
        "SOURCES",
        "Source",
        "Suppression",
        "SuppressionKeys",
        "SuppressionTable",
        "is_record_key",
        "normalise",
    ],
    "delivery": [
        "Attachment",
        "DkimError",
        "DkimSigner",
        "SendError",
        "SendResult",
        "SmtpConfig",
        "SmtpPool",
        "TlsMode",
        "compose",
        "message_id_for",
    ],
}


@pytest.mark.parametrize(("name", "exported"), EXPORTED.items())
def test_each_module_exports_exactly_its_pinned_names(name: str, exported: list[str]) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == exported
    for public in exported:
        assert hasattr(module, public) or importlib.import_module(f"{name}.{public}")


def test_every_module_of_consumer_belongs_to_a_pinned_package() -> None:
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "consumer").glob("*/**/*.py")
        if path.name != "__init__.py"
    }
    packages = {
        ".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "consumer").glob("*/*/__init__.py")
    }
    pinned = {name for name in EXPORTED if name.startswith("consumer.") and name.count(".") >= 2}
    assert modules | packages == pinned
    assert not [p.name for p in (ROOT / "consumer").glob("*.py") if p.name != "__init__.py"]


def _runtime_imports(path: Path) -> set[str]:
    """Modules of ours a file imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


RULES = [
    # (files, modules they must not import at run time)
    ("schemas", ("consumer", "rendering", "delivery")),
    ("rendering", ("consumer", "delivery")),
    ("delivery", ("consumer", "rendering", "schemas")),
    ("consumer/processing", ("consumer.kafka", "consumer.tools")),
    ("consumer/observability", ("consumer.app", "consumer.kafka", "consumer.processing", "consumer.tools")),
    ("consumer/kafka", ("consumer.tools", "consumer.app.assembly", "consumer.app.cli")),
]


@pytest.mark.parametrize(("folder", "forbidden"), RULES)
def test_dependencies_point_one_way(folder: str, forbidden: tuple[str, ...]) -> None:
    broken = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / folder).rglob("*.py")
        for module in _runtime_imports(path)
        if module.split(".")[0] in {"consumer", "rendering", "delivery", "schemas"}
        and any(module == f or module.startswith(f"{f}.") for f in forbidden)
    }
    assert not broken
