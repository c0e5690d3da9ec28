"""Only the producer's ``traceparent`` is read from a record: ``tracestate`` and ``baggage`` are
free text that would otherwise reach every span, the outcome's headers and the log."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from consumer.observability.telemetry import context_from, inject_into

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
PERSONAL = "lucia.garcia@example.com"


def test_a_valid_traceparent_is_joined_and_nothing_else_is_carried_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = [
        ("traceparent", PARENT),
        ("tracestate", f"pii={PERSONAL}".encode()),
        ("baggage", f"{PERSONAL}; not a list member".encode()),
    ]
    tracer = TracerProvider().get_tracer("test")
    with (
        caplog.at_level(logging.DEBUG),
        tracer.start_as_current_span("process", context=context_from(headers)) as span,
    ):
        assert format(span.get_span_context().trace_id, "032x") == TRACE_ID
        assert len(span.get_span_context().trace_state) == 0
        carried = inject_into([])
    assert [name for name, _ in carried] == ["traceparent"]
    assert carried[0][1].decode().split("-")[1] == TRACE_ID
    assert PERSONAL not in caplog.text


@pytest.mark.parametrize(
    "value",
    [
        b"",
        PERSONAL.encode(),
        b"ff-" + PARENT[3:],  # version ff is invalid
        PARENT + b"-extra",  # version 00 has exactly four fields
        f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(),  # all-zero trace id
        b"\xff\xfe" * 300,
    ],
)
def test_anything_else_starts_a_trace_of_our_own(value: bytes) -> None:
    context = context_from([("traceparent", value)])
    assert not trace.get_current_span(context).get_span_context().is_valid
