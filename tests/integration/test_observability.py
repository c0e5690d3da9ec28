"""What operators see, from a real run: metrics that move, traces and logs without personal data."""

from __future__ import annotations

import json
import re
import signal
from typing import TYPE_CHECKING, Any

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_outcomes
from schemas import Codec
from schemas.samples import sample_order
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_and_no_personal_data_reaches_logs_traces_or_outcomes(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    orders: list[Any] = [sample_order(seed) for seed in range(900, 920)]
    orders[3]["customer"]["email"] = "not an address"  # rejected: its data must not leak either
    port = free_port()
    service = start_service(ORDERMAIL_HEALTH_PORT=str(port), OTEL_TRACES_EXPORTER="console")
    wait_until(lambda: http_get(port, "/readyz")[0] == 200, 60)
    before = http_get(port, "/metrics")[1]
    assert _metric(before, "ordermail_events_total", status="SENT") == 0

    publish_orders(
        Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input),
        Codec.from_directory(),
        orders,
    )
    outcomes = [o for _, o in read_outcomes(kafka_bootstrap, topics.outcome, expected=20, timeout_s=120)]
    wait_until(
        lambda: _metric(http_get(port, "/metrics")[1], "ordermail_events_total", status="SENT") == 19, 30
    )

    after = http_get(port, "/metrics")[1]
    assert _metric(after, "ordermail_events_total", status="REJECTED", reason="invalid_email") == 1
    assert _metric(after, "ordermail_dead_letters_total") == 1
    assert _metric(after, "ordermail_render_seconds_count") == 19
    assert _metric(after, "ordermail_smtp_send_seconds_count") == 19
    assert _metric(after, "ordermail_render_workers") == 2
    wait_until(
        lambda: "ordermail_consumer_lag{" in http_get(port, "/metrics")[1], 30
    )  # librdkafka statistics

    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
    log = (tmp_path / "service-0.log").read_text()
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", log, re.MULTILINE | re.DOTALL)]
    trace_ids = {span["context"]["trace_id"] for span in spans}
    assert len(trace_ids) == 20  # one trace per event
    assert {o["trace_id"] for o in outcomes} == {t.removeprefix("0x") for t in trace_ids}

    seen = log + repr(outcomes)
    for order in orders:
        customer = customer_data(order)
        leaked = [value for value in customer if value in seen]
        assert not leaked, f"personal data in logs, spans or outcomes: {leaked}"


def customer_data(order: Any) -> list[str]:
    customer, address = order["customer"], order["customer"]["billing_address"]
    values = [
        customer["email"],
        f"{customer['first_name']} {customer['last_name']}",
        customer["last_name"],
        address["line1"],
        customer["email"].split("@")[0],
    ]
    if customer["phone"]:
        values.append(customer["phone"])
    return values
