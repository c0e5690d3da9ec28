"""Chaos on real parts, 127.0.0.1 only, bounded in count and time: the service is killed,
crowded, starved of its relay and its broker, and fed poison; every event must end with an
outcome, nothing may be lost, and duplicate e-mails stay within one per kill.

`make chaos` runs the full size (600 events, a 30 s relay outage); `make test` a reduced one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.chaos.harness import EVENTS, OUTAGE_S, Chaos
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from tests.conftest import Topics

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[2]


def test_consumer_killed_three_times(chaos: Chaos) -> None:
    chaos.publish(EVENTS)
    service = chaos.start()
    for fraction in sorted(chaos.random.uniform(0.1, 0.8) for _ in range(3)):
        chaos.wait_for_outcomes(int(EVENTS * fraction))
        chaos.kill(service)
        service = chaos.start()
    report = chaos.finish("SIGKILL ×3, restarted")
    assert report.lost == 0
    assert report.duplicates <= 3
    assert report.distinct == EVENTS


def test_one_of_two_consumers_killed_and_another_added(chaos: Chaos) -> None:
    chaos.publish(EVENTS)
    first, _second = chaos.start(), chaos.start()
    chaos.wait_for_outcomes(int(EVENTS * 0.3))
    chaos.kill(first)
    chaos.wait_for_outcomes(int(EVENTS * 0.5))
    chaos.start()
    report = chaos.finish("2 consumers, 1 killed, 1 added")
    assert report.lost == 0
    assert report.duplicates <= 1
    assert report.distinct == EVENTS


def test_relay_down_for_a_while(chaos: Chaos) -> None:
    chaos.publish(EVENTS)
    chaos.start()
    chaos.wait_for_outcomes(int(EVENTS * 0.2))
    chaos.sink.stop()
    time.sleep(OUTAGE_S)  # the outage itself: nothing to wait for but time
    chaos.sink.start()
    report = chaos.finish(f"relay down {OUTAGE_S:.0f} s")
    assert report.lost == 0
    assert report.outcomes["DEFERRED"] > 0
    assert report.outcomes["FAILED"] == 0
    assert report.distinct == EVENTS


def test_relay_bouncing_some_and_refusing_others_at_random(chaos: Chaos) -> None:
    chaos.sink.faults.write_text(
        json.dumps(
            [
                {"match": "bounce.", "reply": "550 5.1.1 mailbox unknown"},
                {"match": "*", "reply": "451 4.3.0 try again", "probability": 0.3},
            ]
        )
    )
    chaos.publish(EVENTS, first_seed=10_000, bounce_share=0.1)
    chaos.start()
    report = chaos.finish("relay 550 for 10 %, 451 for 30 % of tries")
    bounced = {order for order, kind in chaos.expected.items() if kind == "bounce"}
    failed = {o["order_id"] for o in chaos.outcomes() if o["status"] == "FAILED"}
    assert failed == bounced
    assert report.lost == 0
    assert report.distinct == EVENTS - len(bounced)


def test_consumer_killed_while_the_relay_defers_many(chaos: Chaos) -> None:
    """Deferred passes run from the retry topic when the consumer dies: the next one recognises
    those sent since the retry topic's last commit, and lets none of the waiting ones go."""
    chaos.sink.faults.write_text(
        json.dumps([{"match": "*", "reply": "451 4.3.0 try again", "probability": 0.6}])
    )
    chaos.publish(EVENTS, first_seed=40_000)
    service = chaos.start()
    for fraction in (0.4, 0.7):
        chaos.wait_for_outcomes(int(EVENTS * fraction))
        chaos.kill(service)
        service = chaos.start()
    report = chaos.finish("relay 451 for 60 % of tries, SIGKILL ×2")
    assert report.lost == 0
    assert report.outcomes["DEFERRED"] > 0
    assert report.duplicates <= 2
    assert report.distinct == EVENTS


def test_broker_restarted_mid_run(chaos: Chaos, kafka_bootstrap: str) -> None:
    pid_file = ROOT / ".local/kafka/broker.pid"
    stack_env = ROOT / ".local/stack.env"
    if not pid_file.exists() or f"KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}" not in stack_env.read_text():
        pytest.skip("needs the local stack's broker, which this test restarts")
    chaos.publish(EVENTS, first_seed=20_000)
    health = free_port()
    chaos.start(ORDERMAIL_HEALTH_PORT=str(health))
    chaos.wait_for_outcomes(int(EVENTS * 0.3))
    broker = int(pid_file.read_text())
    subprocess.run(["kill", "-TERM", str(broker)], check=True)
    chaos.wait_for(lambda: not Path(f"/proc/{broker}").exists(), 60)
    chaos.wait_for(lambda: http_get(health, "/readyz")[0] == 503, 30)  # readiness follows the broker
    assert "Kafka" in http_get(health, "/readyz")[1]
    subprocess.run([str(ROOT / "deploy/local/stack"), "up"], check=True, capture_output=True, timeout=300)
    chaos.wait_for(lambda: http_get(health, "/readyz")[0] == 200, 60)
    report = chaos.finish("broker restarted")
    assert report.lost == 0
    assert report.duplicates <= 1
    assert report.distinct == EVENTS


def test_ten_percent_poison(chaos: Chaos, topics: Topics) -> None:
    chaos.publish(EVENTS, first_seed=30_000, poison_share=0.1)
    service = chaos.start()
    report = chaos.finish("10 % poison")
    poison = [order for order, kind in chaos.expected.items() if kind == "poison"]
    assert report.lost == 0
    assert report.outcomes["REJECTED"] == len(poison) == report.dead_letters
    for record in chaos.dead_letters():
        assert record.headers["ordermail.original.topic"] == topics.input.encode()
        assert record.headers["ordermail.error.class"] in {b"undecodable", b"unknown_schema"}
    assert service.poll() is None  # still running: the breaker stayed closed
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
