"""Spans of one event, checked with an in-memory exporter: they join the producer's trace,
nest as consume → decode/render/encrypt/smtp send/produce, and the outcome carries the trace on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumer.kafka.publisher import OutcomePublisher
from consumer.processing.pipeline import Pipeline, PipelineConfig
from consumer.processing.ports import Fetched
from consumer.processing.records import Inbound
from delivery import SendError
from rendering import RenderedMail
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA, Codec, OrderCompleted
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakeRenderer, FakeSmtp

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
CODEC = Codec.from_directory()
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture(autouse=True)
def _clear() -> None:
    EXPORTER.clear()


@dataclass
class _Message:
    offset_value: int

    def offset(self) -> int:
        return self.offset_value


@dataclass
class FakeKafkaProducer:
    """Acknowledges every record at once, keeping what was produced."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.records.append({"topic": topic, **kwargs})
        kwargs["on_delivery"](None, _Message(len(self.records) - 1))

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _publisher(producer: FakeKafkaProducer) -> OutcomePublisher:
    return OutcomePublisher(
        producer,  # type: ignore[arg-type]  # OutcomePublisher takes confluent-kafka's Producer itself
        CODEC,
        outcome_topic="outcomes",
        dlq_topic="dlq",
        retry_topic="retry",
    )


def _run(
    smtp: FakeSmtp, renderer: FakeRenderer | None = None, seeds: tuple[int, ...] = (5,)
) -> FakeKafkaProducer:
    """Processes one event per seed, all at once, each continuing the producer's trace."""
    producer = FakeKafkaProducer()
    publisher = _publisher(producer)
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="ordermail"),
        CODEC,
        renderer or FakeRenderer(),
        smtp,
        publisher,
    )
    headers = [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01".encode())]
    orders = [sample_order(seed) for seed in seeds]
    inbounds = [
        Inbound(
            "orders.order-completed.v1",
            3,
            42 + i,
            order["order_id"].encode(),
            CODEC.encode(order, ORDER_SCHEMA),
            headers,
            0,
        )
        for i, order in enumerate(orders)
    ]

    async def process() -> None:
        await asyncio.gather(
            *(pipeline.process(inbound, lambda _inbound, _done: None) for inbound in inbounds)
        )

    asyncio.run(process())
    publisher.close(timeout_s=1)
    return producer


def _by_name() -> dict[str, ReadableSpan]:
    return {span.name: span for span in EXPORTER.get_finished_spans()}


def test_an_event_yields_one_connected_trace_with_the_expected_structure() -> None:
    producer = _run(FakeSmtp())
    spans = _by_name()
    assert set(spans) == {
        "process orders.order-completed.v1",
        "decode",
        "wait for render worker",
        "render",
        "encrypt",
        "smtp send",
        "send outcomes",
    }
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {TRACE_ID}

    consume = spans["process orders.order-completed.v1"]
    assert consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None
    assert format(consume.parent.span_id, "016x") == PARENT_SPAN  # joined the producer's trace
    for child in ("decode", "wait for render worker", "render", "smtp send", "send outcomes"):
        parent = spans[child].parent
        assert parent is not None
        assert parent.span_id == consume.context.span_id
    assert spans["encrypt"].parent is not None
    assert spans["encrypt"].parent.span_id == spans["render"].context.span_id
    assert spans["smtp send"].kind is SpanKind.CLIENT
    assert spans["send outcomes"].kind is SpanKind.PRODUCER
    assert spans["smtp send"].attributes is not None
    assert spans["smtp send"].attributes["ordermail.smtp.reply_code"] == 250
    assert spans["render"].attributes is not None
    assert spans["render"].attributes["ordermail.render.engine"] == "weasyprint"  # the fake's set

    assert dict(consume.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": "orders.order-completed.v1",
        "messaging.consumer.group.name": "ordermail",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 42,
        "messaging.kafka.message.key": sample_order(5)["order_id"],
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "ordermail.status": "SENT",
    }

    (outcome_record,) = [r for r in producer.records if r["topic"] == "outcomes"]
    traceparent = dict(outcome_record["headers"])["traceparent"].decode()
    assert traceparent.split("-")[1] == TRACE_ID
    assert traceparent.split("-")[2] == format(spans["send outcomes"].context.span_id, "016x")
    outcome = CODEC.decode(outcome_record["value"], OUTCOME_SCHEMA)
    assert outcome["trace_id"] == TRACE_ID


RENDER_S = 0.1


@dataclass
class OneWorker(FakeRenderer):
    """A pool of one worker: every event waits for it, and each render takes ``RENDER_S``."""

    free: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def render(self, order: OrderCompleted, fetched: Fetched = ()) -> RenderedMail:
        await asyncio.sleep(RENDER_S)
        return await super().render(order, fetched)

    @asynccontextmanager
    async def reserved(self) -> AsyncIterator[Callable[[OrderCompleted, Fetched], Awaitable[RenderedMail]]]:
        async with self.free:
            yield self.render


def test_the_wait_for_a_render_worker_is_not_part_of_the_render_span() -> None:
    _run(FakeSmtp(), OneWorker(), seeds=(5, 6))
    spans = EXPORTER.get_finished_spans()

    def seconds(name: str) -> list[float]:
        return sorted((s.end_time or 0) / 1e9 - (s.start_time or 0) / 1e9 for s in spans if s.name == name)

    first_wait, second_wait = seconds("wait for render worker")
    assert first_wait < RENDER_S / 2
    assert second_wait >= RENDER_S * 0.9  # the second event waited for the first one's render
    assert all(RENDER_S * 0.9 <= render < RENDER_S * 1.5 for render in seconds("render"))


def test_failures_are_recorded_by_type_without_personal_data() -> None:
    _run(FakeSmtp(failures=[SendError("smtp_permanent", code=550)]))
    spans = _by_name()
    send = spans["smtp send"]
    assert send.attributes is not None
    assert send.attributes["error.type"] == "smtp_permanent"
    assert send.status.status_code.name == "ERROR"
    assert not send.events  # no exception event: its text could quote an address
    order = sample_order(5)
    personal = [
        order["customer"]["email"],
        order["customer"]["last_name"],
        order["customer"]["billing_address"]["line1"],
    ]
    everything = repr([(s.name, dict(s.attributes or {}), s.events) for s in spans.values()])
    assert not [value for value in personal if value in everything]


def test_a_deferred_event_is_retried_in_the_same_trace() -> None:
    producer = _run(FakeSmtp(failures=[SendError("smtp_transient", code=451)] * 4))
    (retry_record,) = [r for r in producer.records if r["topic"] == "retry"]
    assert dict(retry_record["headers"])["traceparent"].decode().split("-")[1] == TRACE_ID
    EXPORTER.clear()

    # The retry record, consumed from the retry topic, continues the producer's trace.
    publisher = _publisher(FakeKafkaProducer())
    pipeline = Pipeline(
        PipelineConfig(mail_from="orders@shop.example", message_domain="shop.example", group_id="ordermail"),
        CODEC,
        FakeRenderer(),
        FakeSmtp(),
        publisher,
    )
    headers = [(k, v) for k, v in retry_record["headers"] if k != "ordermail.retry.due"] + [
        ("ordermail.retry.due", b"0")
    ]
    inbound = Inbound("retry", 0, 0, retry_record["key"], retry_record["value"], headers, 0, trusted=True)
    asyncio.run(pipeline.process(inbound, lambda _inbound, _done: None))
    publisher.close(timeout_s=1)
    spans = _by_name()
    assert "process retry" in spans
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {TRACE_ID}


@pytest.mark.parametrize("named", [False, True])
def test_spans_reach_a_provider_installed_after_the_first_span_or_named_in_the_environment(
    named: bool,
) -> None:
    """The process's one tracer follows the provider (a fresh process: this module installed one)."""
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from consumer.observability.telemetry import step\n"
        "with step('before') as span: print(span.is_recording())\n"
        "if trace.get_tracer_provider().__class__.__name__ == 'ProxyTracerProvider':\n"
        "    trace.set_tracer_provider(TracerProvider())\n"
        "with step('after') as span: print(span.is_recording())\n"
    )
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"} if named else None
    env = env or {k: v for k, v in os.environ.items() if k != "OTEL_PYTHON_TRACER_PROVIDER"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.split() == (["True", "True"] if named else ["False", "True"])
