"""Which template sets ``make bench`` measures by default: one per engine, as set.toml names it."""

from pathlib import Path

from bench.run import default_sets, engine_of


def _set(sets: Path, name: str, engine: str | None) -> None:
    (sets / name).mkdir(parents=True)
    line = f'engine = "{engine}"\n' if engine else ""
    (sets / name / "set.toml").write_text(line + 'default_language = "en"\n')


def test_the_shipped_sets_give_the_default_set_for_weasyprint() -> None:
    assert default_sets()[0] == "default"
    assert engine_of("default") == "weasyprint"


def test_a_set_of_another_engine_is_measured_beside_the_default(tmp_path: Path) -> None:
    _set(tmp_path, "default", None)
    _set(tmp_path, "nordic", None)
    _set(tmp_path, "a-brand", "typst")
    _set(tmp_path, "default-typst", "typst")
    assert default_sets(tmp_path) == ["default", "default-typst"]
    (tmp_path / "default-typst" / "set.toml").unlink()
    assert default_sets(tmp_path) == ["default", "a-brand"]
