"""A shortcut for WeasyPrint's most frequent computed-style lookup.

WeasyPrint computes each element's style properties lazily, in ``ComputedStyle.__missing__``:
some 6,000 lookups per receipt, most of them for a property the element's rules do not set, so
the answer is the parent's value (inherited properties) or the initial value. The stock method
reaches that answer only after its general steps (logical properties, ``var()``, ``calc()``,
special cases), about 3 % of a receipt's render time. The shortcut answers those two cases at
once and leaves every other lookup to the stock method, unchanged. It is installed only on the
WeasyPrint versions it was checked against; ``tests/unit/test_computed_style.py`` renders every
template set with and without it and compares the pages' drawing operators.
"""

from __future__ import annotations

from typing import Any

import weasyprint
from weasyprint import css

__all__ = ["install", "uninstall"]

CHECKED_VERSIONS = ("70.",)
_STOCK = css.ComputedStyle.__missing__
# Properties the stock method treats specially even when no rule sets them.
_SPECIAL = frozenset({"float", "display", "position", "page"})


def _missing(self: Any, key: str) -> Any:
    if key not in self.cascaded and key not in css.PHYSICAL_FUNCTIONS and key not in _SPECIAL:
        if key[:16] == "text_decoration_":
            pass  # propagated, not inherited: stock
        elif key in css.INHERITED or key[:2] == "__":
            parent = self.parent_style
            if parent is not None:
                value = parent[key]
                if not css.check_math(value):  # an unresolved calc() is re-solved here: stock
                    self[key] = value
                    return value
        elif key not in css.INITIAL_NOT_COMPUTED:
            value = self[key] = css.INITIAL_VALUES[key]
            return value
    return _STOCK(self, key)


def install() -> bool:
    """Installs the shortcut; False (stock behaviour kept) on an unchecked WeasyPrint."""
    if not weasyprint.__version__.startswith(CHECKED_VERSIONS):
        return False
    css.ComputedStyle.__missing__ = _missing
    return True


def uninstall() -> None:
    css.ComputedStyle.__missing__ = _STOCK
