"""Chaos on a replicated cluster (three brokers, replication factor 3, min.insync.replicas 2):
brokers are killed, starved below the in-sync minimum and restarted one by one while one
service runs. No service process dies here, so every event must end with exactly one e-mail.

The relay is rate-limited so the run outlasts the broker faults. `make chaos` runs 600 events a
scenario and holds the two-brokers outage 30 s longer; `make test` 48 events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.chaos.harness import FULL, OUTAGE_S, Chaos, Report
from tests.support import free_port, http_get

if TYPE_CHECKING:
    import subprocess

    from tests.chaos.cluster import Cluster

pytestmark = pytest.mark.chaos
EVENTS = 600 if FULL else 48
MAX_IN_FLIGHT = 32
# Messages a second the relay takes: slow enough that the faults land mid-run.
RELAY_RATE = 20 if FULL else 8


def _start(chaos: Chaos, **env: str) -> subprocess.Popen[bytes]:
    return chaos.start(
        SMTP_RATE_LIMIT_PER_S=str(RELAY_RATE), ORDERMAIL_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT), **env
    )


def _all_delivered_once(chaos: Chaos, report: Report, service: subprocess.Popen[bytes]) -> None:
    assert report.lost == 0
    assert report.duplicates == 0
    assert report.distinct == EVENTS
    assert report.outcomes["SENT"] == EVENTS
    assert service.poll() is None, "the service stopped"


def test_leader_of_the_busiest_partitions_killed(cluster_chaos: Chaos, cluster: Cluster) -> None:
    chaos = cluster_chaos
    chaos.publish(EVENTS)
    service = _start(chaos)
    chaos.wait_for_outcomes(int(EVENTS * 0.25))
    victim = cluster.busiest_leader(chaos.topics.input)
    cluster.kill(victim)
    chaos.wait_for_outcomes(int(EVENTS * 0.6))  # leadership moved: the run goes on without it
    assert victim not in cluster.leaders(chaos.topics.input).values()
    cluster.start(victim)
    report = chaos.finish("cluster: leader of the busiest input partitions SIGKILLed, restarted")
    _all_delivered_once(chaos, report, service)


def test_group_coordinator_killed(cluster_chaos: Chaos, cluster: Cluster) -> None:
    chaos = cluster_chaos
    chaos.publish(EVENTS, first_seed=40_000)
    service = _start(chaos)
    chaos.wait_for_outcomes(int(EVENTS * 0.25))
    coordinator = cluster.coordinator(chaos.topics.group)
    cluster.kill(coordinator)
    chaos.wait_for_outcomes(int(EVENTS * 0.6))
    assert cluster.coordinator(chaos.topics.group) != coordinator
    cluster.start(coordinator)
    report = chaos.finish("cluster: group coordinator's broker SIGKILLed, restarted")
    _all_delivered_once(chaos, report, service)


def test_two_of_three_brokers_down(cluster_chaos: Chaos, cluster: Cluster) -> None:
    chaos = cluster_chaos
    chaos.publish(EVENTS, first_seed=50_000)
    health = free_port()
    service = _start(chaos, ORDERMAIL_HEALTH_PORT=str(health))
    chaos.wait_for(lambda: http_get(health, "/readyz")[0] == 200, 60)
    chaos.wait_for_outcomes(int(EVENTS * 0.25))
    survivor = cluster.busiest_leader(chaos.topics.input)
    down = [b for b in (1, 2, 3) if b != survivor]
    for broker in down:
        cluster.kill(broker)
    # One in-sync replica left: every write is refused (NOT_ENOUGH_REPLICAS) and retried.
    chaos.wait_for(lambda: http_get(health, "/readyz")[0] == 503, 60)
    reason = http_get(health, "/readyz")[1]
    assert "acknowledged none of" in reason
    assert "min.insync.replicas" in reason
    if FULL:
        # In-flight work waits: by now the window is full of e-mails whose outcomes wait, so
        # nothing more is taken in and nobody else is e-mailed while writes are refused.
        emailed = len(chaos.sink.messages())
        time.sleep(OUTAGE_S)  # the outage itself: nothing to wait for but time
        assert len(chaos.sink.messages()) == emailed
    assert service.poll() is None
    cluster.start(*down)
    chaos.wait_for(lambda: http_get(health, "/readyz")[0] == 200, 90)
    report = chaos.finish("cluster: 2 of 3 brokers down (writes refused), then back")
    _all_delivered_once(chaos, report, service)


def test_rolling_restart_of_all_brokers(cluster_chaos: Chaos, cluster: Cluster) -> None:
    chaos = cluster_chaos
    batch = EVENTS // 4
    service = _start(chaos)
    replicated = [chaos.topics.input, chaos.topics.outcome, chaos.topics.retry]
    for broker in (1, 2, 3):
        # Fresh orders before each restart, so it always meets work in flight (and producers).
        chaos.publish(batch, first_seed=60_000 + broker * 1000)
        chaos.wait_for(lambda: len(chaos.sink.messages()) > len(chaos.expected) - batch, 60)
        # As an upgrade does: the next broker only once every replica is back in sync.
        cluster.stop(broker)
        cluster.start(broker)
        cluster.wait_fully_replicated(replicated)
    chaos.publish(EVENTS - 3 * batch, first_seed=64_000)
    report = chaos.finish("cluster: rolling restart of all 3 brokers")
    _all_delivered_once(chaos, report, service)
