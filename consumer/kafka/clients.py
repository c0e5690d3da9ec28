"""librdkafka configuration for the consumer and the outcome producer, and the few things done
with a consumer besides polling it: checking the topics at start-up, naming an error, closing."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from consumer.app.settings import kafka_passthrough

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

    from consumer.app.settings import Settings

__all__ = [
    "DELIVERY_TIMEOUT_S",
    "answered",
    "check_topics",
    "close_with_timeout",
    "consumer_config",
    "error_name",
    "producer_config",
]

log = logging.getLogger("ordermail.service")
DELIVERY_TIMEOUT_S = 300  # how long an outcome may wait for the broker's acknowledgement


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group_id,
        "enable.auto.commit": False,  # we commit only what is done, see offsets.py
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": 45_000,
        # The longest an empty fetch waits on the broker. Requests on a connection are answered
        # in order, so a partition just assigned or resumed (and an offset lookup) can wait
        # behind one: 100 ms instead of the default 500 takes ~0.8 s off start-up, and the
        # extra empty fetches while idle cost the broker next to nothing.
        "fetch.wait.max.ms": 100,
        # Pre-fetch about an in-flight window, not librdkafka's up to 64 MB: pausing a partition
        # (backpressure) throws its pre-fetched messages away, and resuming fetches them again.
        # With the defaults, `make bench` fetched its 2,000 waiting events 58,000 times.
        "queued.min.messages": max(4, settings.max_in_flight // 4),  # per partition
        "max.partition.fetch.bytes": 16_384,  # a larger record batch still comes whole
        "queued.max.messages.kbytes": 1024,
        "fetch.queue.backoff.ms": 20,  # refill soon once below those (librdkafka waits 1 s)
        # A broker that vanishes without closing its connections (a node lost, not a process) is
        # noticed by TCP instead of only by a request's timeout.
        "socket.keepalive.enable": True,
        "client.id": "ordermail",
    }
    config.update(kafka_passthrough())
    config.update(overrides)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        # Every in-sync replica (at least min.insync.replicas) holds an outcome before it counts;
        # idempotence keeps librdkafka's retries from writing one twice or out of order.
        "acks": "all",
        "enable.idempotence": True,
        # Retried until acknowledged for up to 5 minutes (librdkafka's default, explicit here): a
        # cluster refusing writes for less (a leader election, replicas below the minimum) only
        # delays outcomes, and their e-mails are never repeated. Longer, the publish fails and
        # the service stops (exit 1) without committing past it.
        "message.timeout.ms": DELIVERY_TIMEOUT_S * 1000,
        # One produce request answers within 10 s (default 30): a request stuck on a broker that
        # died is retried on the new leader well inside the 25 s drain on SIGTERM.
        "request.timeout.ms": 10_000,
        "socket.keepalive.enable": True,
        # Short: until its outcome is on the broker, a sent e-mail is the one a crash would repeat.
        "linger.ms": 5,
        "compression.type": "lz4",
        # Where a key-hashed record must land where a Java producer would put it.
        "partitioner": "murmur2_random",
        "client.id": "ordermail",
    }
    config.update({k: v for k, v in kafka_passthrough().items() if not k.startswith(_CONSUMER_ONLY)})
    config.update(overrides)
    return config


_CONSUMER_ONLY = (
    "group.",
    "enable.auto.",
    "auto.offset.",
    "partition.assignment",
    "isolation.",
    "max.poll",
    "session.",
)


def check_topics(consumer: Consumer, settings: Settings) -> int:
    """Outcomes and deferred events go to the input's partition number: those topics need as
    many partitions as the input (or the first deferral would fail, long after start-up). The
    suppression topic must exist when suppression is on (``suppressions.check_compacted``).
    Returns the input's partition count."""
    metadata = consumer.list_topics(timeout=30)
    counts = {}
    suppression = [settings.suppression_topic] if settings.suppression_secret is not None else []
    for name in (
        settings.input_topic,
        settings.outcome_topic,
        settings.dlq_topic,
        settings.retry_topic,
        *suppression,
    ):
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            raise SystemExit(f"topic {name} does not exist")
        counts[name] = len(topic.partitions)
    for co_partitioned in (settings.outcome_topic, settings.retry_topic):
        if counts[co_partitioned] < counts[settings.input_topic]:
            raise SystemExit(f"{co_partitioned} needs as many partitions as the input topic: {counts}")
    return counts[settings.input_topic]


def answered(partitions: list[TopicPartition]) -> list[TopicPartition]:
    """A per-partition answer (offsets, committed positions), or ``KafkaException`` when any
    partition carries an error: librdkafka reports a partition it could not ask about (its
    leader away mid-failover) that way, with an invalid offset that would read as "nothing there"."""
    for tp in partitions:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return partitions


def error_name(exc: KafkaException) -> str:
    """librdkafka's error code name: the only part of its text we log."""
    error = exc.args[0] if exc.args else None
    return error.name() if isinstance(error, KafkaError) else type(exc).__name__


def close_with_timeout(consumer: Consumer, *, timeout_s: float) -> None:
    """``Consumer.close()`` has been seen to hang: never let it block shutdown forever."""
    closer = threading.Thread(target=consumer.close, name="consumer-close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
        log.warning("consumer close timed out after %.0fs", timeout_s)
