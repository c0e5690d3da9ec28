"""What the chaos scenarios share: publishing a known set of orders, starting and killing
service processes, waiting for the outcome of every event, and accounting for each one."""

from __future__ import annotations

import email
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders, publish_raw
from consumer.tools.topic_reader import committed_and_end, read_outcomes, read_records
from schemas import Codec
from schemas.samples import sample_order

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas import OrderCompleted
    from tests.conftest import ServiceFactory, Sink, Topics

FULL = os.environ.get("ORDERMAIL_CHAOS_SIZE") == "full"
EVENTS = 600 if FULL else 150
OUTAGE_S = 30.0 if FULL else 8.0
TERMINAL = {"SENT", "FAILED", "REJECTED"}
SERVICE_ENV = {
    # A killed member is noticed after 6 s instead of 45 s, so each run stays short.
    "KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000",
    "ORDERMAIL_SEND_ATTEMPTS": "2",
    "ORDERMAIL_RETRY_BACKOFF_S": "0.2",
    "ORDERMAIL_RETRY_DELAYS_S": "2,4,8,8,8,8,8,8",
    "ORDERMAIL_COMMIT_INTERVAL_S": "0.5",
    "SMTP_TIMEOUT_S": "5",
    "SMTP_THROTTLE_PAUSE_S": "0.5",
}
_MESSAGE_ID = re.compile(r"<([0-9a-f-]{36})\.ordermail@")


@dataclass
class Report:
    scenario: str
    events: int
    emails: int
    distinct: int
    lost: int
    outcomes: Counter[str]
    dead_letters: int
    duplicates: int = field(init=False)

    def __post_init__(self) -> None:
        self.duplicates = self.emails - self.distinct

    HEADER = (
        "| scenario | events | e-mails | orders e-mailed | duplicates | lost "
        "| SENT | DEFERRED | FAILED | REJECTED | DLQ |"
    )

    def row(self) -> str:
        o = self.outcomes
        return (
            f"| {self.scenario} | {self.events} | {self.emails} | {self.distinct} | {self.duplicates} "
            f"| {self.lost} | {o['SENT']} | {o['DEFERRED']} | {o['FAILED']} | {o['REJECTED']} "
            f"| {self.dead_letters} |"
        )


REPORTS: list[Report] = []


class Chaos:
    def __init__(
        self, bootstrap: str, topics: Topics, sink: Sink, start_service: ServiceFactory, seed: int
    ) -> None:
        self.bootstrap, self.topics, self.sink = bootstrap, topics, sink
        self._start_service = start_service
        self.random = random.Random(seed)
        self.settings = Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
        self.codec = Codec.from_directory()
        self.expected: dict[str, str] = {}  # order_id -> "mail" | "bounce" | "poison"
        self._event_orders: dict[str, str] = {}  # event_id -> order_id

    def publish(
        self, count: int, *, first_seed: int = 0, poison_share: float = 0.0, bounce_share: float = 0.0
    ) -> None:
        orders: list[OrderCompleted] = []
        poison: list[tuple[bytes, bytes]] = []
        for i in range(count):
            roll = self.random.random()
            if roll < poison_share:
                key = f"POISON-{first_seed + i}"
                poison.append((key.encode(), b"\xc3\x01not-an-event" if i % 2 else b"\x7fgarbage"))
                self.expected[key] = "poison"
                continue
            order: Any = sample_order(first_seed + i, lines=1 + i % 4)
            if roll < poison_share + bounce_share:
                order["customer"]["email"] = f"bounce.{i}@example.com"
            self.expected[order["order_id"]] = "bounce" if "bounce" in order["customer"]["email"] else "mail"
            self._event_orders[order["event_id"]] = order["order_id"]
            orders.append(order)
        publish_orders(self.settings, self.codec, orders)
        if poison:
            publish_raw(self.settings, poison)

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        return self._start_service(**{**SERVICE_ENV, **env})

    @staticmethod
    def kill(service: subprocess.Popen[bytes]) -> None:
        service.send_signal(signal.SIGKILL)
        service.wait(30)

    def outcomes(self) -> list[dict[str, Any]]:
        records = read_outcomes(self.bootstrap, self.topics.outcome, expected=None, timeout_s=30)
        return [outcome for _, outcome in records]

    def terminal_orders(self) -> set[str]:
        return {o["order_id"] for o in self.outcomes() if o["status"] in TERMINAL}

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not _holds(condition):
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached within {timeout_s:.0f} s")
            time.sleep(0.5)

    def wait_for_outcomes(self, count: int, timeout_s: float = 180) -> None:
        self.wait_for(lambda: len(self.terminal_orders()) >= count, timeout_s)

    def finish(self, scenario: str, timeout_s: float = 240) -> Report:
        """Waits until every event has a final outcome and all offsets are committed, then counts."""
        self.wait_for(lambda: self.terminal_orders() >= set(self.expected), timeout_s)
        self.wait_for(self._all_committed, 60)
        outcomes = self.outcomes()
        mailed = Counter(self._mailed_orders())
        sent = {o["order_id"] for o in outcomes if o["status"] == "SENT"}
        terminal = {o["order_id"] for o in outcomes if o["status"] in TERMINAL}
        lost = sum(
            1
            for order_id in self.expected
            if order_id not in terminal or (order_id in sent and not mailed[order_id])
        )
        dead = read_records(self.bootstrap, self.topics.dlq, expected=None, timeout_s=30)
        report = Report(
            scenario=scenario,
            events=len(self.expected),
            emails=sum(mailed.values()),
            distinct=len(mailed),
            lost=lost,
            outcomes=Counter(o["status"] for o in outcomes),
            dead_letters=len(dead),
        )
        REPORTS.append(report)
        return report

    def _mailed_orders(self) -> list[str]:
        orders = []
        for path in self.sink.messages():
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            match = _MESSAGE_ID.search(str(message["Message-ID"]))
            if match:
                orders.append(self._event_orders.get(match.group(1), "?"))
        return orders

    def _all_committed(self) -> bool:
        for topic in (self.topics.input, self.topics.retry):
            committed, ends = committed_and_end(self.bootstrap, self.topics.group, topic)
            if any(end > 0 and committed.get(p, -1) != end for p, end in ends.items()):
                return False
        return True

    def dead_letters(self) -> list[Any]:
        return read_records(self.bootstrap, self.topics.dlq, expected=None, timeout_s=30)


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except KafkaException:  # our reading client lost a broker mid-failover: ask again
        return False
