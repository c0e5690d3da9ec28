"""Runbook 4: customer service resends a receipt. Exactly one new e-mail, to the original address,
with a Message-ID of its own; the order's history shows both deliveries; nothing personal is
printed; an order past the topic's retention fails clearly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_outcomes
from schemas import Codec
from schemas.samples import sample_order
from tests.integration.operations import json_of, mails_by_order, ordermail

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def test_resend_sends_exactly_one_new_mail_to_the_original_address_and_history_shows_it(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    orders = [sample_order(seed, lines=1) for seed in range(3300, 3304)]
    order_ids = [o["order_id"] for o in orders]
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    publish_orders(settings, Codec.from_directory(), orders)
    start_service()
    assert len(read_outcomes(kafka_bootstrap, topics.outcome, expected=4, timeout_s=90)) == 4
    wait_until(lambda: len(smtp_sink.messages()) == 4, 30)
    target = orders[2]

    result = ordermail(kafka_bootstrap, topics, "resend", target["order_id"], "--json")
    resent = json_of(result)
    assert resent["event_id"] == target["event_id"]
    assert resent["outcome"]["status"] == "SENT"
    assert resent["outcome"]["reason"] == "resend"
    assert target["customer"]["email"] not in result.stdout  # the domain only, without the flag

    wait_until(lambda: len(smtp_sink.messages()) == 5, 30)
    mails = mails_by_order(smtp_sink, order_ids)
    assert [len(mails[o]) for o in order_ids] == [1, 1, 2, 1]  # exactly one new e-mail, for that order
    first, again = mails[target["order_id"]]
    assert again["To"] == first["To"] == target["customer"]["email"]
    assert again["Message-ID"] != first["Message-ID"]
    assert resent["outcome"]["message_id"] in {first["Message-ID"], again["Message-ID"]}
    assert "resend" in resent["outcome"]["message_id"]

    history = json_of(ordermail(kafka_bootstrap, topics, "history", target["order_id"], "--json"))
    assert [(o["status"], o["reason"]) for o in history["outcomes"]] == [("SENT", None), ("SENT", "resend")]
    assert [o["message_id"] for o in history["outcomes"]] == sorted(
        [first["Message-ID"], again["Message-ID"]], key=lambda m: "resend" in m
    )
    assert all(o["attachment_sha256"] and o["smtp_code"] == 250 for o in history["outcomes"])
    assert history["outcomes"][0]["time"] < history["outcomes"][1]["time"]
    table = ordermail(kafka_bootstrap, topics, "history", target["order_id"])
    assert table.returncode == 0
    assert "2 outcomes" in table.stdout
    assert target["customer"]["email"] not in table.stdout

    unknown = ordermail(kafka_bootstrap, topics, "resend", "ORD-NEVER-SEEN", "--wait", "0")
    assert unknown.returncode == 3
    assert "past the topic's retention, or was never published" in unknown.stderr
    assert len(smtp_sink.messages()) == 5
    piped = ordermail(kafka_bootstrap, topics, "resend", target["order_id"], "--show-personal-data")
    assert piped.returncode == 2
    assert len(smtp_sink.messages()) == 5  # refused before anything was queued
