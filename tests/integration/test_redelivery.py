"""Redelivery after a crash: events whose outcome is already on the broker are not e-mailed
again, although the crashed consumer never committed them."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import committed_and_end, read_outcomes
from schemas import Codec
from schemas.samples import sample_order

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def _all_committed(bootstrap: str, topics: Topics, topic: str | None = None) -> bool:
    """Every partition of the topic (the input topic by default) that holds records committed to its end."""
    committed, ends = committed_and_end(bootstrap, topics.group, topic or topics.input)
    return all(committed[p] == end for p, end in ends.items() if end > 0)


def test_events_handled_before_a_crash_are_not_mailed_again(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    codec = Codec.from_directory()
    first, second = (
        [sample_order(s, lines=1) for s in range(700, 710)],
        [sample_order(s, lines=1) for s in range(710, 730)],
    )

    # Run 1 ends cleanly: its commit records where its outcomes end.
    publish_orders(settings, codec, first)
    service = start_service()
    read_outcomes(kafka_bootstrap, topics.outcome, expected=10, timeout_s=60)
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0

    # Run 2 handles 20 more but is killed before it commits any of them.
    publish_orders(settings, codec, second)
    # A short session lets the group notice the killed member quickly (production keeps 45 s).
    service = start_service(ORDERMAIL_COMMIT_INTERVAL_S="3600", KAFKA_CONFIG_SESSION_TIMEOUT_MS="6000")
    assert len(read_outcomes(kafka_bootstrap, topics.outcome, expected=30, timeout_s=60)) == 30
    service.send_signal(signal.SIGKILL)
    service.wait(30)
    committed, _ = committed_and_end(kafka_bootstrap, topics.group, topics.input)
    assert sum(max(c, 0) for c in committed.values()) == 10  # the 20 are uncommitted: they will come again

    # Run 3 receives the 20 again and recognises every one of them.
    start_service()
    wait_until(lambda: _all_committed(kafka_bootstrap, topics), 60)
    assert len(smtp_sink.messages()) == 30  # one e-mail per order, none twice
    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=31, timeout_s=5)
    assert len(outcomes) == 30
    assert (tmp_path / "service-2.log").read_text().count("already handled: skipped") == 20


def test_a_new_group_killed_before_its_first_commit_mails_nobody_twice(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    publish_orders(settings, Codec.from_directory(), [sample_order(s, lines=1) for s in range(740, 760)])

    # The group's first member handles all 20 but never commits them (no periodic commit).
    service = start_service(ORDERMAIL_COMMIT_INTERVAL_S="3600", KAFKA_CONFIG_SESSION_TIMEOUT_MS="6000")
    assert len(read_outcomes(kafka_bootstrap, topics.outcome, expected=20, timeout_s=60)) == 20
    service.send_signal(signal.SIGKILL)
    service.wait(30)
    committed, _ = committed_and_end(kafka_bootstrap, topics.group, topics.input)
    assert set(committed.values()) == {0}  # only the anchors: every partition taken on at its start

    # The next member reads the outcomes from the anchors and recognises every event.
    start_service()
    wait_until(lambda: _all_committed(kafka_bootstrap, topics), 60)
    assert len(smtp_sink.messages()) == 20
    assert (tmp_path / "service-1.log").read_text().count("already handled: skipped") == 20


def test_deferred_passes_sent_before_a_crash_are_not_mailed_again(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    """The retry topic is taken over like the input topic: its records whose pass was sent are
    recognised after a crash, although their offsets were never committed."""
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
    orders = [sample_order(s, lines=1) for s in range(760, 766)]

    def with_status(status: str) -> set[str]:
        outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=None, timeout_s=10)
        return {o["order_id"] for _, o in outcomes if o["status"] == status}

    # Run 1: the relay refuses every order for a while (each is deferred), then takes them (their
    # deferred passes are sent); the process is killed without committing anything but its anchors.
    smtp_sink.faults.write_text(json.dumps([{"match": "*", "reply": "451 4.3.0 try again later"}]))
    publish_orders(settings, Codec.from_directory(), orders)
    service = start_service(
        ORDERMAIL_COMMIT_INTERVAL_S="3600",
        KAFKA_CONFIG_SESSION_TIMEOUT_MS="6000",
        ORDERMAIL_SEND_ATTEMPTS="1",
        ORDERMAIL_RETRY_DELAYS_S=",".join(["1"] * 20),
    )
    wait_until(lambda: len(with_status("DEFERRED")) == len(orders), 60)
    smtp_sink.faults.write_text("[]")
    wait_until(lambda: len(with_status("SENT")) == len(orders), 60)
    service.send_signal(signal.SIGKILL)
    service.wait(30)
    assert len(smtp_sink.messages()) == len(orders)
    committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.retry)
    assert sum(ends.values()) >= len(orders)
    assert set(committed.values()) <= {0, -1001}  # at most the anchors: every pass comes again

    # Run 2 reads the retry topic again from the anchors and recognises every sent pass.
    start_service()
    wait_until(
        lambda: (
            _all_committed(kafka_bootstrap, topics) and _all_committed(kafka_bootstrap, topics, topics.retry)
        ),
        60,
    )
    assert len(smtp_sink.messages()) == len(orders)  # one e-mail per order, none twice
    assert (tmp_path / "service-1.log").read_text().count("already handled: skipped") >= 2 * len(orders)
