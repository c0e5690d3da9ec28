"""The local stack's three-broker cluster as the chaos tests see it: which broker leads what or
coordinates a group (asked of the cluster itself), and killing, stopping and starting brokers
through `deploy/local/stack node`."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[2]
STACK = str(ROOT / "deploy/local/stack")
BROKERS = (1, 2, 3)  # node ids; the stack names them broker-1..3


class Cluster:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap})

    def kill(self, broker: int) -> None:
        """SIGKILL: no controlled shutdown, leadership moves once the controller fences it."""
        self._node("kill", broker)

    def stop(self, broker: int) -> None:
        """SIGTERM: a controlled shutdown hands its leaderships over first, as an upgrade does."""
        self._node("stop", broker)

    def start(self, *brokers: int) -> None:
        """Starts them side by side; returns once each has rejoined (registered and unfenced)."""
        self._node("start", *brokers)

    def start_all(self) -> None:
        self.start(*BROKERS)

    def _node(self, action: str, *brokers: int) -> None:
        names = [f"broker-{broker}" for broker in brokers]
        subprocess.run([STACK, "node", action, *names], check=True, timeout=120, stdout=subprocess.DEVNULL)

    def leaders(self, topic: str) -> dict[int, int]:
        """Partition → the broker leading it (-1 while it has none)."""
        metadata = self._admin.list_topics(topic, timeout=10)
        return {p: meta.leader for p, meta in metadata.topics[topic].partitions.items()}

    def busiest_leader(self, topic: str) -> int:
        """The broker leading the partitions that hold the most records of ``topic``."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "chaos-probe"})
        try:
            load: Counter[int] = Counter()
            for partition, leader in self.leaders(topic).items():
                _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                load[leader] += end
        finally:
            consumer.close()
        return load.most_common(1)[0][0]

    def coordinator(self, group: str) -> int:
        futures = self._admin.describe_consumer_groups([group], request_timeout=10)
        node: int = futures[group].result(timeout=15).coordinator.id
        return node

    def fully_replicated(self, topics: list[str]) -> bool:
        """Every partition of these topics (and the group offsets) has all three replicas in sync."""
        metadata = self._admin.list_topics(timeout=10)
        if len(metadata.brokers) < len(BROKERS):
            return False
        names = [*topics, "__consumer_offsets"]
        return all(
            name in metadata.topics
            and all(len(p.isrs) == len(BROKERS) for p in metadata.topics[name].partitions.values())
            for name in names
        )

    def wait_fully_replicated(self, topics: list[str], timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.fully_replicated(topics):
            if time.monotonic() > deadline:
                raise AssertionError(f"replicas not back in sync within {timeout_s:.0f} s")
            time.sleep(0.5)
