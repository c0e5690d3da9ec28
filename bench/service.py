"""The service phases: end to end (events published first, then the service started as its own
process, with its own SMTP sink) and latency at a given rate, on topics of their own."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.measure import RssSampler, cpu_seconds, progress
from bench.render import one_page_order
from consumer.app.assembly import codec_for
from consumer.app.settings import Settings
from consumer.kafka.clients import producer_config
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_outcomes
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA, Codec
from tests.support import free_port, read_env_file, wait_for_port

__all__ = ["Stack", "bench_service"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stack:
    """The running local stack: this checkout's ``.local``, or another's (``ORDERMAIL_STACK_DIR``),
    so a second checkout can measure against the stack the first one started."""

    folder: Path

    @classmethod
    def find(cls) -> Stack:
        return cls(Path(os.environ.get("ORDERMAIL_STACK_DIR") or ROOT / ".local"))

    @property
    def env(self) -> dict[str, str]:
        return read_env_file(self.folder / "stack.env")

    @property
    def broker_pid(self) -> int:
        return int((self.folder / "kafka/broker.pid").read_text())


def bench_service(
    stack: Stack,
    template_set: str,
    *,
    events: int,
    workers: int,
    latency_seconds: float,
    label: str,
    template_dir: Path | None = None,
) -> dict[str, Any]:
    """Publishes first, then starts the service and its own SMTP sink; measures, stops both."""
    env = stack.env
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    run = uuid.uuid4().hex[:8]
    topics = {
        "ORDERMAIL_INPUT_TOPIC": f"bench{run}.order-completed",
        "ORDERMAIL_OUTCOME_TOPIC": f"bench{run}.delivery-outcome",
        "ORDERMAIL_DLQ_TOPIC": f"bench{run}.dlq",
        "ORDERMAIL_RETRY_TOPIC": f"bench{run}.retry",
    }
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 6, 1) for t in topics.values()]).values():
        future.result(30)
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ORDERMAIL_INPUT_TOPIC=topics["ORDERMAIL_INPUT_TOPIC"],
        SCHEMA_REGISTRY_URL=env.get("SCHEMA_REGISTRY_URL") or None,  # set by `stack up --registry`
    )
    codec = codec_for(settings)  # the service's wire format, with or without a registry
    publish_orders(settings, codec, [one_page_order(10_000 + i) for i in range(events)])

    sink_port, outbox = free_port(), Path(tempfile.mkdtemp(prefix="ordermail-bench-outbox-"))
    tls = stack.folder / "smtp"
    sink = subprocess.Popen(
        [
            *(sys.executable, "-m", "consumer.app.cli", "smtp-sink", "--port", str(sink_port)),
            *("--outbox", str(outbox)),
            *("--tls-cert", str(tls / "cert.pem"), "--tls-key", str(tls / "key.pem")),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:  # the sink is stopped whatever fails after it started
        wait_for_port(sink_port, timeout_s=30)
        service_env = {
            **os.environ,
            **env,
            **topics,
            "SMTP_PORT": str(sink_port),
            "ORDERMAIL_GROUP_ID": f"bench-{run}",
            "ORDERMAIL_RENDER_WORKERS": str(workers),
            "ORDERMAIL_TEMPLATE_SET": template_set,
            **({"ORDERMAIL_TEMPLATE_DIR": str(template_dir)} if template_dir else {}),
        }
        broker = stack.broker_pid
        broker_cpu = cpu_seconds(broker)
        started_wall = time.time()
        (ROOT / ".local").mkdir(exist_ok=True)
        with (ROOT / f".local/bench-service-{template_set}.log").open("wb") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "consumer.app.cli", "run"], env=service_env, stdout=log, stderr=log
            )
        sampler = RssSampler(service.pid)
        try:
            sampler.start()
            found = await_outcomes(bootstrap, topics["ORDERMAIL_OUTCOME_TOPIC"], events, codec, label=label)
            # Outcome timestamps are stamped by our producer at send time, on this machine's clock.
            last, first = max(s for s, _ in found), min(s for s, _ in found)
            e2e_s = last / 1000 - started_wall
            steady_s = (last - first) / 1000
            e2e_rate = events / e2e_s
            # Where the machine's CPU went during the run: rendering vs everything around it.
            total = cpu_seconds(service.pid, with_children=True)
            own = cpu_seconds(service.pid)
            cpu = {
                "render_workers": total - own,
                "service_main": own,
                "smtp_sink": cpu_seconds(sink.pid),
                "broker": cpu_seconds(broker) - broker_cpu,
            }
            figures = (
                latency(settings, codec, bootstrap, topics, rate=e2e_rate / 2, seconds=latency_seconds)
                if latency_seconds > 0
                else {}
            )
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(60)
            sampler.running = False
    finally:
        sink.terminate()
        sink.wait(30)
        shutil.rmtree(outbox, ignore_errors=True)
    return {
        **figures,
        "e2e_orders_per_s": round(e2e_rate, 2),
        "steady_orders_per_s": round((events - 1) / steady_s, 2),
        "startup_s": round(e2e_s - steady_s, 2),
        "cpu_ms_per_order": {k: round(v / events * 1000, 2) for k, v in cpu.items()},
        "statuses": sorted({o["status"] for _, o in found}),
        "worker_rss_mb_max": round(sampler.max_mb, 1),
        "worker_private_mb_max": round(sampler.max_private_mb, 1),
    }


def await_outcomes(
    bootstrap: str, topic: str, count: int, codec: Codec, *, timeout_s: float = 600, label: str = "e2e"
) -> list[tuple[int, Any]]:
    """Each outcome with its record's timestamp (ms), in one pass over the outcome topic as they
    arrive (re-reading it would steal CPU)."""
    # Fetches held until 1 MB or 0.5 s: a reader woken by every outcome costs the broker CPU that
    # the bench counts against the service (timestamps come from the records, not from here).
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "fetch.min.bytes": 1_000_000,
            "fetch.wait.max.ms": 500,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    found: list[tuple[int, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(found)} of {count} outcomes after {timeout_s:.0f} s")
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is None:
                    outcome = codec.decode(message.value() or b"", OUTCOME_SCHEMA)
                    found.append((message.timestamp()[1], outcome))
            progress(label, len(found), count)
    finally:
        consumer.close()
    return found


def latency(
    settings: Settings, codec: Codec, bootstrap: str, topics: dict[str, str], *, rate: float, seconds: float
) -> dict[str, float]:
    """Events paced at ``rate``: event published → SMTP accepted (the outcome's ``occurred_at``
    is stamped right after the relay's 2xx)."""
    count = max(10, int(rate * seconds))
    orders = [one_page_order(50_000 + i) for i in range(count)]
    published: dict[str, float] = {}
    producer = Producer(producer_config(settings))
    started = time.monotonic()
    for i, order in enumerate(orders):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))  # pacing, not synchronisation
        published[order["order_id"]] = time.time()
        producer.produce(
            settings.input_topic, key=order["order_id"].encode(), value=codec.encode(order, ORDER_SCHEMA)
        )
        producer.poll(0)
        progress("latency", i + 1, count)
    producer.flush(30)
    found = read_outcomes(
        bootstrap,
        topics["ORDERMAIL_OUTCOME_TOPIC"],
        expected=count,
        timeout_s=120,
        codec=codec,
        order_ids=set(published),
    )
    latencies = sorted(
        o["occurred_at"].timestamp() * 1000 - published[o["order_id"]] * 1000 for _, o in found
    )
    return {
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
        "latency_events": len(latencies),
        "latency_rate_per_s": round(rate, 2),
    }
