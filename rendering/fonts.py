"""Font facts the renderer and the service's start-up checks rely on.

The receipt uses DejaVu Sans 2.37, shipped in ``templates/shared/assets/fonts`` (with its licence),
for Latin, Greek and Cyrillic; the scripts it lacks fall back to the Noto families below, which
fontconfig finds (Debian packages, in the image too). ``rendering.glyphs`` proves no box is drawn.
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
    "COLOR_BITMAP_FACES",
    "FALLBACK_FAMILIES",
    "FONT_FAMILY",
    "displayable",
    "family_files",
    "fc_match",
    "harfbuzz_subset_available",
    "missing_families",
    "weasyprint_uses_harfbuzz_subset",
]

FONT_FAMILY = "DejaVu Sans"
# The scripts DejaVu Sans lacks, in the order base.css falls back to them (Debian's fonts-noto-core,
# fonts-noto-cjk and fonts-noto-color-emoji; the image installs them), and the emoji face that
# fontconfig falls back to by itself (base.css must not name it: it would draw every digit).
# fontconfig loads a face only when a document needs it.
FALLBACK_FAMILIES = (
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Noto Color Emoji",
)
# Faces whose glyphs are colour bitmaps (CBDT): WeasyPrint draws each as an image, and the font
# it embeds for the text layer has empty outlines (as embedded, the name has no spaces).
COLOR_BITMAP_FACES = ("Noto-Color-Emoji",)
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
    """Code points the receipt's fonts have glyphs for (DejaVu Sans and every fallback family
    installed); None when no font file can be read."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    points: set[int] = set()
    readable = False
    for path, index in _font_files():
        try:
            with TTFont(path, fontNumber=index, lazy=True) as font:
                points.update(font["cmap"].getBestCmap())
                readable = True
        except Exception:  # noqa: BLE001, S112 - an unreadable font only narrows the coverage check
            continue
    return frozenset(points) if readable else None


def _font_files() -> list[tuple[Path, int]]:
    files = [(path, 0) for path in _FALLBACK_FONT_FILES[:1] if path.is_file()]
    for family in FALLBACK_FAMILIES if files else (FONT_FAMILY, *FALLBACK_FAMILIES):
        match = fc_match(family)
        # The CJK faces of one collection cover the same characters: one is read.
        if match is not None and match[0] == family and all(match[1] != path for path, _ in files):
            files.append(match[1:])
    if not files:
        files = [(path, 0) for path in _FALLBACK_FONT_FILES if path.is_file()][:1]
    return files


@functools.cache
def fc_match(family: str) -> tuple[str, Path, int] | None:
    """fontconfig's choice for ``family``: (its family, file, index in a collection)."""
    program = shutil.which("fc-match")
    if not program:
        return None
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [program, "-f", "%{family[0]}|%{file}|%{index}", family],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    found, _, rest = result.stdout.partition("|")
    file, _, index = rest.partition("|")
    if result.returncode != 0 or not Path(file).is_file():
        return None
    return found, Path(file), int(index or 0)


def family_files(family: str) -> list[Path]:
    """The files of ``family``'s regular and bold faces as fontconfig finds them; none when it would
    substitute another family (the Typst engine is given these files, never the system's fonts)."""
    files: list[Path] = []
    for pattern in (family, f"{family}:bold"):
        match = fc_match(pattern)
        if match is not None and match[0] == family and match[1] not in files:
            files.append(match[1])
    return files


def missing_families() -> list[str]:
    """Fallback families fontconfig cannot find: receipts in their scripts would show boxes."""
    return [family for family in FALLBACK_FAMILIES if (fc_match(family) or ("",))[0] != family]


def displayable(text: str) -> bool:
    """Whether every character of ``text`` has a glyph in the receipt's fonts (True if unknown)."""
    points = _codepoints()
    return points is None or all(ord(char) in points or char.isspace() for char in text)
