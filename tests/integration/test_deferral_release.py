"""A deferred record waiting for its due time when the service stops is let go, not committed
past: its pass runs later (here, by the next owner), and the order is not lost."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import committed_and_end
from schemas import Codec
from schemas.samples import sample_order
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def test_a_deferral_waiting_when_the_service_stops_is_not_committed_past(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    smtp_sink.faults.write_text(json.dumps([{"match": "*", "reply": "451 4.3.0 later"}]))
    publish_orders(settings, Codec.from_directory(), [sample_order(900, lines=1)])
    health = free_port()
    service = start_service(
        ORDERMAIL_SEND_ATTEMPTS="1", ORDERMAIL_RETRY_DELAYS_S="120", ORDERMAIL_HEALTH_PORT=str(health)
    )
    waiting = f'ordermail_in_flight_events{{topic="{topics.retry}"}} 1.0'
    wait_until(lambda: waiting in http_get(health, "/metrics")[1], 60)  # taken in, waiting to be due
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
    committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.retry)
    assert all(committed.get(p, -1) < end for p, end in ends.items() if end > 0), (
        "committed past the waiting deferral"
    )

    # The next run takes the deferred pass (no delay now) and sends it: the order is not lost.
    smtp_sink.faults.write_text("[]")
    start_service(ORDERMAIL_RETRY_DELAYS_S="0")
    wait_until(lambda: len(smtp_sink.messages()) == 1, 90)
