"""The operator commands' parts that need no broker: times, selections, the personal-data flag,
the progress bar, argument errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from consumer.app.cli import main
from consumer.tools.dlq import DeadLetter, Selection, parse_time
from consumer.tools.scan import Progress, ToolError, check_personal_data_flag

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_times_are_iso_or_a_time_ago_in_utc() -> None:
    assert parse_time("2026-12-07T05:00:00Z") == int(datetime(2026, 12, 7, 5, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("2026-12-07T05:00:00") == parse_time("2026-12-07T05:00:00+00:00")
    assert parse_time("90m", NOW) == int(datetime(2026, 12, 7, 4, 30, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("7d", NOW) == int(datetime(2026, 11, 30, 6, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(ValueError, match="isoformat"):
        parse_time("yesterday")


def _letter(reason: str, timestamp_ms: int) -> DeadLetter:
    return DeadLetter("dlq", 0, 1, timestamp_ms, b"k", b"v", [], reason, "REJECTED", "in", 0, 1, "k", None)


def test_a_selection_filters_by_reason_and_time_and_names_itself() -> None:
    selection = Selection(reasons=frozenset({"template_error"}), since_ms=100, until_ms=200)
    assert selection.matches(_letter("template_error", 100))
    assert not selection.matches(_letter("template_error", 200))
    assert not selection.matches(_letter("invalid_email", 150))
    assert Selection().matches(_letter("anything", 0))
    assert (
        selection.digest()
        == Selection(reasons=frozenset({"template_error"}), since_ms=100, until_ms=200).digest()
    )
    assert selection.digest() != Selection(reasons=frozenset({"template_error"})).digest()
    # "--since 2h" is the same selection at every run (its progress resumes), whatever time it is
    assert (
        Selection(since_ms=1, typed=("2h", None)).digest()
        == Selection(since_ms=2, typed=("2h", None)).digest()
    )


def test_personal_data_is_refused_unless_standard_output_is_a_terminal() -> None:
    with pytest.raises(ToolError) as refused:
        check_personal_data_flag(True, io.StringIO())
    assert refused.value.code == 2
    check_personal_data_flag(True, Terminal())
    check_personal_data_flag(False, io.StringIO())


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress("reading dlq", 200, stream)
        progress.advance(100)
        progress.advance(100)
        progress.close()
    assert "reading dlq [###############               ] 100/200" in terminal.getvalue()
    assert terminal.getvalue().endswith("200/200\n")
    assert not pipe.getvalue()


def test_bad_arguments_are_refused_before_anything_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "redrive", "--rate", "0"])
    assert exited.value.code == 2
    assert main(["dlq", "list", "--since", "yesterday"]) == 2
    assert "--since/--until" in capsys.readouterr().err
    assert main(["history", "ORD-1\nBcc: x"]) == 2
    assert "not an order id" in capsys.readouterr().err
