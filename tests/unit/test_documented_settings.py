"""Every setting the processes read is in the README's configuration table: the platform team
configures from there."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from consumer.feedback.settings import FeedbackSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_environment_variable_is_documented() -> None:
    names = {
        choice
        for field in FeedbackSettings.model_fields.values()  # a subclass of ordermail run's Settings
        if isinstance(field.validation_alias, AliasChoices)
        for choice in field.validation_alias.choices
        if isinstance(choice, str)
    }
    assert len(names) > 50
    assert sorted(name for name in names if f"`{name}`" not in README) == []
