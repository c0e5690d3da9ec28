"""Font facts the renderer and the service's start-up checks rely on.

The receipt uses DejaVu Sans 2.37, shipped in ``templates/shared/assets/fonts`` (with its licence), so the
output does not depend on the fonts a machine has; fontconfig's "DejaVu Sans" is the fallback.
WeasyPrint subsets embedded fonts with HarfBuzz when ``libharfbuzz-subset`` (>= 4.1) can be
loaded; otherwise it silently falls back to fontTools, which makes every render ~5x slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "FONT_FAMILY",
    "displayable",
    "harfbuzz_subset_available",
    "weasyprint_uses_harfbuzz_subset",
]

FONT_FAMILY = "DejaVu Sans"
_SONAMES = ("libharfbuzz-subset.so.0", "libharfbuzz-subset.0.dylib", "libharfbuzz-subset-0.dll")
_FALLBACK_FONT_FILES = (
    Path(__file__).resolve().parent
    / "templates/shared/assets/fonts/DejaVuSans.ttf",  # shipped with the templates
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)


def harfbuzz_subset_available() -> bool:
    """Whether the HarfBuzz subset library can be loaded by this process."""
    names = [*_SONAMES]
    found = ctypes.util.find_library("harfbuzz-subset")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def weasyprint_uses_harfbuzz_subset() -> bool:
    """Whether WeasyPrint itself will subset fonts with HarfBuzz (its own test, not ours)."""
    from rendering.weasyprint_overrides import harfbuzz_subset_in_use  # loads WeasyPrint

    return harfbuzz_subset_in_use()


@functools.cache
def _codepoints() -> frozenset[int] | None:
    """Code points the receipt font has glyphs for; None when the font file cannot be read."""
    path = _font_file()
    if path is None:
        return None
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    try:
        with TTFont(path, lazy=True) as font:
            return frozenset(font["cmap"].getBestCmap())
    except Exception:  # noqa: BLE001 - an unreadable font only disables the coverage check
        return None


def _font_file() -> Path | None:
    if _FALLBACK_FONT_FILES[0].is_file():
        return _FALLBACK_FONT_FILES[0]
    fc_match = shutil.which("fc-match")
    if fc_match:
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [fc_match, "-f", "%{file}", FONT_FAMILY], capture_output=True, text=True, check=False, timeout=10
        )
        if result.returncode == 0 and result.stdout and Path(result.stdout).is_file():
            return Path(result.stdout)
    return next((path for path in _FALLBACK_FONT_FILES if path.is_file()), None)


def displayable(text: str) -> bool:
    """Whether every character of ``text`` has a glyph in the receipt font (True if unknown)."""
    points = _codepoints()
    return points is None or all(ord(char) in points or char.isspace() for char in text)
