from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.chaos.harness import REPORTS, Chaos, Report

if TYPE_CHECKING:
    from tests.conftest import ServiceFactory, Sink, Topics


@pytest.fixture
def chaos(kafka_bootstrap: str, topics: Topics, smtp_sink: Sink, start_service: ServiceFactory) -> Chaos:
    return Chaos(kafka_bootstrap, topics, smtp_sink, start_service, seed=20261129)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.write_sep("-", "chaos: every event accounted for")
        terminalreporter.write_line(Report.HEADER)
        terminalreporter.write_line("|" + "---|" * 11)
        for report in REPORTS:
            terminalreporter.write_line(report.row())
