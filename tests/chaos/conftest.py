from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.chaos.cluster import Cluster
from tests.chaos.harness import REPORTS, Chaos, Report
from tests.conftest import CLUSTER_ENV, create_topics, service_starter
from tests.support import read_env_file

if TYPE_CHECKING:
    from tests.conftest import ServiceFactory, Sink, Topics


@pytest.fixture
def chaos(kafka_bootstrap: str, topics: Topics, smtp_sink: Sink, start_service: ServiceFactory) -> Chaos:
    return Chaos(kafka_bootstrap, topics, smtp_sink, start_service, seed=20261129)


@pytest.fixture
def cluster(cluster_bootstrap: str) -> Cluster:
    """The local stack's cluster with all three brokers up (a failed test may have left one down)."""
    local = read_env_file(CLUSTER_ENV).get("KAFKA_BOOTSTRAP_SERVERS") if CLUSTER_ENV.exists() else None
    if local != cluster_bootstrap:
        pytest.skip("needs the local stack's cluster, whose brokers these tests kill and restart")
    cluster = Cluster(cluster_bootstrap)
    cluster.start_all()
    return cluster


@pytest.fixture
def cluster_chaos(cluster: Cluster, smtp_sink: Sink, tmp_path: Path) -> Iterator[Chaos]:
    """Chaos on fresh replicated topics (replication factor 3, min.insync.replicas 2)."""
    topics = create_topics(cluster.bootstrap, replicas=3)
    with service_starter(cluster.bootstrap, topics, smtp_sink, tmp_path) as start:
        yield Chaos(cluster.bootstrap, topics, smtp_sink, start, seed=20261207)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.write_sep("-", "chaos: every event accounted for")
        terminalreporter.write_line(Report.HEADER)
        terminalreporter.write_line("|" + "---|" * 11)
        for report in REPORTS:
            terminalreporter.write_line(report.row())
