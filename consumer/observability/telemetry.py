"""OpenTelemetry tracing, configured only through the standard ``OTEL_*`` variables.

``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP/HTTP; ``OTEL_EXPORTER_OTLP_*`` say where), ``console``
(spans as JSON on stdout, for local use) or unset/``none`` (off: the API's no-op tracer).
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the service.

Spans follow the messaging semantic conventions. The W3C ``traceparent`` is read from each
record's headers, so our spans join the producer's trace, and written into the outcome record's
headers, so analytics can follow it on. Only ``traceparent``, parsed here: ``tracestate`` and
``baggage`` are free text a producer writes (OpenTelemetry's own propagators copy tracestate into
every span and the outcome's headers, and log malformed values verbatim). Attributes carry
identifiers and timings only, never personal data.
"""

from __future__ import annotations

import functools
import os
import re
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Iterator

    from consumer.processing.records import Headers, Inbound
    from schemas import DeliveryOutcome

__all__ = [
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
]

MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
CONSUMER_GROUP = "messaging.consumer.group.name"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"
MESSAGE_KEY = "messaging.kafka.message.key"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
ERROR_TYPE = "error.type"


def configure_tracing() -> bool:
    """Installs the exporter named by ``OTEL_TRACES_EXPORTER``; False when tracing stays off."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in {"", "none"}:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise SystemExit(f"OTEL_TRACES_EXPORTER={exporter_name!r}: use otlp, console or none")
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "ordermail")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def shutdown_tracing() -> None:
    """Exports what is still buffered."""
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        shutdown()


@functools.cache
def tracer() -> trace.Tracer:
    """One tracer for the process instead of a new one for every span (~15 us each): a proxy
    that becomes the provider's own tracer once one is installed (a process installs one at
    most). Asking for the provider first installs one named by ``OTEL_PYTHON_TRACER_PROVIDER``,
    as ``trace.get_tracer`` would."""
    trace.get_tracer_provider()
    return trace.ProxyTracer("ordermail")


# W3C trace context: version 00 exactly; a later version may append fields (``ff`` is invalid).
_TRACEPARENT = re.compile(
    rb"(?!ff)([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)


def context_from(headers: Headers) -> Context:
    """The producer's trace (its ``traceparent``), or none; nothing else of the record is read."""
    value = next((v for k, v in reversed(headers) if k.lower() == "traceparent"), b"")
    match = _TRACEPARENT.fullmatch(value[:512].strip())
    if match is None or (match[1] == b"00" and match[5]):
        return Context()
    trace_id, span_id = int(match[2], 16), int(match[3], 16)
    if not trace_id or not span_id:
        return Context()
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[4], 16) & 1))
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def inject_into(headers: Headers) -> Headers:
    """The current trace as a ``traceparent`` record header (no ``tracestate``, no ``baggage``)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return list(headers)
    value = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 1:02x}"
    return [*headers, ("traceparent", value.encode())]


SMTP_CODE = "ordermail.smtp.reply_code"


@contextmanager
def step(name: str, kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A child span of the current one. A failure is recorded by its reason code (or type),
    never by its text, which may quote event data."""
    with tracer().start_as_current_span(name, kind=kind, record_exception=False) as span:
        try:
            yield span
        except Exception as error:
            span.set_attribute(ERROR_TYPE, str(getattr(error, "reason", type(error).__name__)))
            code = getattr(error, "code", None)
            if isinstance(code, int):
                span.set_attribute(SMTP_CODE, code)
            span.set_status(StatusCode.ERROR)
            raise


def span_from_duration(name: str, duration_ms: float) -> None:
    """A child span for work measured elsewhere (another process), ending now."""
    end = time.time_ns()
    span = tracer().start_span(name, start_time=end - int(duration_ms * 1_000_000))
    span.end(end_time=end)


def annotate_outcome(span: Span, outcome: DeliveryOutcome | None) -> None:
    if outcome is None:
        span.set_attribute("ordermail.skipped", True)
        return
    span.set_attribute("ordermail.status", outcome["status"])
    if outcome["reason"]:
        span.set_attribute(ERROR_TYPE, outcome["reason"])
        if outcome["status"] != "DEFERRED":
            span.set_status(StatusCode.ERROR)


def producer_span_attributes(topic: str, partition: int) -> dict[str, str | int]:
    return {
        MESSAGING_SYSTEM: "kafka",
        DESTINATION: topic,
        PARTITION: str(partition),
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
    }


def consumer_span_attributes(inbound: Inbound, group_id: str) -> dict[str, str | int]:
    return {
        MESSAGING_SYSTEM: "kafka",
        DESTINATION: inbound.topic,
        CONSUMER_GROUP: group_id,
        PARTITION: str(inbound.partition),
        OFFSET: inbound.offset,
        MESSAGE_KEY: inbound.order_key,  # the order number: an identifier, not personal data
        OPERATION_TYPE: "process",
        OPERATION_NAME: "process",
    }
