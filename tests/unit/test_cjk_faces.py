"""The cut CJK faces of the Typst engine: what they keep, and that a build happens only when due."""

from __future__ import annotations

from pathlib import Path

import pytest
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

from rendering import cjk_faces


def test_the_cut_keeps_the_national_standards_and_leaves_the_rarer_characters() -> None:
    kept = set(map(chr, cjk_faces.characters()))
    assert len(kept) > 14_000
    assert set("あア漢字简体繁體한국어、。！０Ａ") <= kept  # kana, both Han forms, Hangul, punctuation
    assert not set("𠮷丂") & kept  # outside JIS X 0208, GB 2312, Big5's frequent set, KS X 1001


def test_the_built_faces_are_a_family_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cjk_faces, "characters", lambda: [0x3042, 0x6F22])  # あ漢: a quick build
    built = cjk_faces.build(tmp_path)
    assert [path.name for path in built] == ["ReceiptCJK-Regular.otf", "ReceiptCJK-Bold.otf"]
    for path, style in zip(built, ["Regular", "Bold"], strict=True):
        font = TTFont(path)
        assert font["name"].getDebugName(1) == cjk_faces.FAMILY
        assert font["name"].getDebugName(6) == f"ReceiptCJK-{style}"
        assert {0x3042, 0x6F22} <= set(font.getBestCmap())
        assert 0x3044 not in font.getBestCmap()  # い: not asked for
        assert path.stat().st_mode & 0o444 == 0o444  # the image's service user reads what root built
    made = [path.stat().st_mtime_ns for path in built]
    assert cjk_faces.build(tmp_path) == built
    assert [path.stat().st_mtime_ns for path in built] == made  # up to date: not built again
    monkeypatch.setattr(cjk_faces, "characters", lambda: [0x3042, 0x3044])
    cjk_faces.build(tmp_path)
    assert 0x3044 in TTFont(built[0]).getBestCmap()  # another list: built again
