"""One source of truth for the error policy: every reason a module can raise has exactly one
action, and the README's error-policy table names each of them."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.processing.policy import POLICY, REASONS, Action, action_for

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_reason_any_module_can_raise_has_a_policy_entry_and_no_entry_is_stale() -> None:
    assert set(POLICY) == REASONS


def test_unknown_reasons_are_dead_lettered_not_retried() -> None:
    assert action_for("no_such_reason") is Action.REJECT


def test_the_readme_error_policy_table_names_every_reason() -> None:
    section = README.read_text().split("### Error policy", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert set(re.findall(r"`([a-z_]+)`", table)) >= REASONS


def test_only_reasons_that_point_at_our_side_count_towards_the_breaker() -> None:
    from consumer.processing.policy import DEPLOY_SUSPECT

    assert DEPLOY_SUSPECT <= REASONS
    producer_garbage = {
        "undecodable",
        "unknown_schema",
        "schema_mismatch",
        "malformed_headers",
        "text_too_long",
    }
    assert not (DEPLOY_SUSPECT & producer_garbage)
    assert not {reason for reason in DEPLOY_SUSPECT if reason.startswith("invalid_")}
    assert {"template_error", "internal_error"} <= DEPLOY_SUSPECT


def test_redrive_refuses_only_records_that_are_bad_in_themselves() -> None:
    from consumer.processing.policy import DEPLOY_SUSPECT, NEVER_REDRIVE, redrivable

    assert NEVER_REDRIVE <= REASONS
    assert all(action_for(reason) is Action.REJECT for reason in NEVER_REDRIVE)
    assert not (NEVER_REDRIVE & DEPLOY_SUSPECT)  # a fixed deploy is what a redrive is for
    assert redrivable("template_error")
    assert redrivable("unknown_schema")  # a writer schema deployed since
    assert redrivable("smtp_unreachable")  # dead-lettered when its deferrals ran out
    assert not redrivable("invalid_email")
    assert not redrivable("no_such_reason")
