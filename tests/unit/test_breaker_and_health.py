from consumer.kafka.breaker import DeadLetterBreaker
from consumer.observability.health import HealthServer
from tests.support import http_get


def test_breaker_opens_only_past_the_share_after_enough_events() -> None:
    breaker = DeadLetterBreaker(max_share=0.5, window=10, min_events=4)
    for dead in (True, True, True):
        breaker.record(dead)
    assert not breaker.open  # three events are too few to judge
    breaker.record(False)  # 3 of 4 dead-lettered
    assert breaker.open


def test_breaker_needs_more_than_the_share() -> None:
    breaker = DeadLetterBreaker(max_share=0.5, window=4, min_events=4)
    for dead in (True, False, True, False, True, False):
        breaker.record(dead)
    assert not breaker.open  # exactly half is not more than half


def test_breaker_stays_closed_for_a_few_bad_events_among_many() -> None:
    breaker = DeadLetterBreaker(max_share=0.5, window=100, min_events=20)
    for i in range(200):
        breaker.record(i % 10 == 0)  # 10 % poison
    assert not breaker.open


def test_probes_answer_liveness_and_readiness() -> None:
    problems: list[str | None] = [None]
    server = HealthServer(0, lambda: problems[0], host="127.0.0.1")
    try:
        assert http_get(server.port, "/healthz") == (200, "ok\n")
        assert http_get(server.port, "/readyz") == (200, "ready\n")
        problems[0] = "dead-letter breaker open"
        assert http_get(server.port, "/readyz") == (503, "dead-letter breaker open\n")
        server.last_poll -= 60  # the poll loop has not turned for a minute
        assert http_get(server.port, "/healthz")[0] == 503
        assert http_get(server.port, "/other")[0] == 404
    finally:
        server.close()
