"""Which language the texts use, and locale-aware formatting of money, dates and numbers.

The event's BCP 47 ``locale`` picks the texts' language among a template set's catalogs by
truncation (``es-MX`` -> ``es``), else the set's default. Money, dates and numbers are
formatted with Babel for the event's *own* locale (``de-AT`` gets ``1.234,56 €`` in German
texts), always in Latin digits (Babel's default numbering system, chosen on purpose: ``ar-EG``
writes ``1,234.56 ج.م.``), because the order number, the SKUs and the password the customer
types are in Latin digits too. When the result holds characters the receipt's fonts cannot draw
(the taka sign of ``bn-BD``), the text language's locale formats it instead, so the PDF never
shows empty boxes.

Money is integer minor units of the currency; it becomes a :class:`~decimal.Decimal` scaled by
the currency's precision (JPY 0, EUR 2, BHD 3), never a float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal, get_currency_precision

from rendering.fonts import displayable

if TYPE_CHECKING:
    from collections.abc import Callable, Container
    from datetime import datetime

__all__ = ["DEFAULT_LANGUAGE", "Formatter", "choose_language", "minor_to_decimal"]

DEFAULT_LANGUAGE = "en"


def choose_language(tag: str, languages: Container[str], default: str = DEFAULT_LANGUAGE) -> str:
    """One of ``languages`` for a BCP 47 tag by truncation: ``es-MX`` -> ``es``; else ``default``."""
    parts = tag.replace("_", "-").lower().split("-")
    while parts:
        candidate = "-".join(parts)
        if candidate in languages:
            return candidate
        parts.pop()
    return default


def parse_locale(tag: str, fallback: str = DEFAULT_LANGUAGE) -> Locale:
    """Babel's locale for a BCP 47 tag, else for its language alone, else ``fallback``."""
    normalised = tag.replace("_", "-")
    for candidate in (normalised, normalised.split("-")[0]):
        try:
            return Locale.parse(candidate, sep="-")
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return Locale.parse(fallback)


def minor_to_decimal(minor: int, currency: str) -> Decimal:
    """Integer minor units to an exact decimal amount of ``currency``."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("money amounts must be integer minor units")
    return Decimal(minor).scaleb(-get_currency_precision(currency))


class Formatter:
    """Formats values for one order: its own locale first, the text language's when undrawable."""

    def __init__(self, tag: str, language: str) -> None:
        self.language = language
        self.locale = parse_locale(tag, fallback=language)
        self.text_locale = Locale.parse(language)

    def _pick(self, render: Callable[[Locale], str]) -> str:
        text = render(self.locale)
        return text if displayable(text) else render(self.text_locale)

    def money(self, minor: int, currency: str) -> str:
        amount = minor_to_decimal(minor, currency)
        return self._pick(lambda locale: format_currency(amount, currency, locale=locale))

    def number(self, value: int) -> str:
        return self._pick(lambda locale: format_decimal(value, locale=locale))

    def date(self, moment: datetime) -> str:
        return self._pick(lambda locale: format_date(moment, "long", locale=locale))

    def time(self, moment: datetime) -> str:
        """Time of day in the event's own zone, with that zone as a UTC offset (``19:05 UTC``)."""
        return (
            f"{self._pick(lambda locale: format_time(moment, 'short', locale=locale))} {_utc_offset(moment)}"
        )

    def country(self, code: str) -> str:
        """A country's name in the text language; the code itself when unknown."""
        name = self.text_locale.territories.get(code.upper())
        return name if isinstance(name, str) else code


def _utc_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    if offset is None:
        return "UTC"
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
