"""A bad deploy must not dead-letter the whole topic: the breaker stops consuming instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_records
from schemas import Codec
from schemas.samples import sample_order
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def test_dead_letter_breaker_stops_a_bad_deploy_and_reports_not_ready(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    publish_orders(settings, Codec.from_directory(), [sample_order(s, lines=1) for s in range(800, 1000)])
    port = free_port()
    # The "bad deploy": an attachment limit no receipt fits in (a broken template would not even
    # start: templates are validated first, see test_template_sets.py).
    service = start_service(
        ORDERMAIL_MAX_ATTACHMENT_BYTES="1024",
        ORDERMAIL_DLQ_BREAKER_WINDOW="20",
        ORDERMAIL_DLQ_BREAKER_MIN_EVENTS="20",
        ORDERMAIL_MAX_IN_FLIGHT="8",
        ORDERMAIL_HEALTH_PORT=str(port),
    )

    wait_until(lambda: http_get(port, "/readyz")[0] == 503 and "breaker" in http_get(port, "/readyz")[1], 60)

    assert http_get(port, "/healthz") == (200, "ok\n")  # alive: no restart loop, an operator decides
    assert service.poll() is None
    dead = read_records(kafka_bootstrap, topics.dlq, expected=None, timeout_s=30)
    assert 20 <= len(dead) < 60  # stopped after the window, not after all 200
    assert not smtp_sink.messages()
