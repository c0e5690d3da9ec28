"""librdkafka's statistics reports become the broker, lag and fetched-records metrics."""

import json

from prometheus_client import REGISTRY

from consumer.observability.metrics import KafkaStatistics


def _report(rxmsgs: int, lag: int, state: str = "UP") -> str:
    return json.dumps(
        {
            "rxmsgs": rxmsgs,
            "brokers": {
                "127.0.0.1:9092/1": {"nodeid": 1, "state": state},
                "GroupCoordinator": {"nodeid": -1, "state": "UP"},  # logical: not counted
            },
            "topics": {
                "stats.input": {"partitions": {"0": {"consumer_lag": lag}, "-1": {"consumer_lag": 99}}}
            },
        }
    )


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def test_reports_set_brokers_lag_and_count_fetched_records_once() -> None:
    statistics = KafkaStatistics()
    fetched_before = _value("ordermail_kafka_fetched_messages_total")

    statistics(_report(rxmsgs=120, lag=7))
    statistics(_report(rxmsgs=300, lag=2, state="DOWN"))
    statistics("not json")  # ignored

    assert _value("ordermail_kafka_fetched_messages_total") - fetched_before == 300  # totals, not summed
    assert statistics.brokers_up == 0
    assert _value("ordermail_kafka_brokers_up") == 0
    assert _value("ordermail_consumer_lag", {"topic": "stats.input", "partition": "0"}) == 2
    unassigned = {"topic": "stats.input", "partition": "-1"}
    assert REGISTRY.get_sample_value("ordermail_consumer_lag", unassigned) is None
