"""Publishing OrderCompleted events, as the commerce platform does (used by ``produce-sample``,
the demo, the tests and the benchmark)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, Message, Producer

from consumer.kafka.clients import producer_config
from schemas import ORDER_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterable

    from consumer.app.settings import Settings
    from schemas import Codec, OrderCompleted

__all__ = ["publish_orders", "publish_raw"]


def publish_orders(settings: Settings, codec: Codec, orders: Iterable[OrderCompleted]) -> int:
    records = (
        (
            order["order_id"].encode(),
            codec.encode(order, ORDER_SCHEMA, subject=f"{settings.input_topic}-value"),
        )
        for order in orders
    )
    return publish_raw(settings, records)


def publish_raw(
    settings: Settings, records: Iterable[tuple[bytes | None, bytes]], topic: str | None = None
) -> int:
    """Publishes (key, value) pairs and waits until the broker acknowledged all of them."""
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.name())

    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic or settings.input_topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        producer.poll(0)
    if producer.flush(30) or failures:
        raise RuntimeError(f"publishing failed: {failures[:3]}")
    return count
