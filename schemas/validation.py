"""Content checks a schema cannot express. Each failure names a machine-readable reason
(:data:`InvalidReason`)."""

from __future__ import annotations

import re
import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from email_validator import EmailNotValidError, validate_email

if TYPE_CHECKING:
    from collections.abc import Mapping

    from schemas.model import OrderCompleted

__all__ = [
    "MAX_LINES",
    "MAX_TEXT",
    "InvalidEvent",
    "InvalidReason",
    "is_order_id",
    "is_uuid",
    "validate_order",
]

InvalidReason = Literal[
    "invalid_event_id",
    "invalid_order_id",
    "invalid_locale",
    "invalid_currency",
    "invalid_country",
    "invalid_email",
    "no_lines",
    "too_many_lines",
    "invalid_quantity",
    "invalid_sku",
    "negative_amount",
    "text_too_long",
]
MAX_LINES = 500
# Free text that reaches the e-mail's subject or bodies, or the receipt's header: an order's
# worth, not a novel (characters).
MAX_TEXT = MappingProxyType(
    {"brand": 100, "channel": 50, "shipping_method": 100, "payment_method": 100, "gift_message": 1000}
)
_CURRENCY = re.compile(r"[A-Z]{3}")
_LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
_COUNTRY = re.compile(r"[A-Z]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # the order id reaches the subject and file names


class InvalidEvent(Exception):
    """A decodable event whose content cannot be processed."""

    def __init__(self, reason: InvalidReason) -> None:
        super().__init__(reason)
        self.reason: InvalidReason = reason


def validate_order(order: OrderCompleted) -> None:
    """Raise :class:`InvalidEvent` for the first problem found."""
    _check(is_uuid(order["event_id"]), "invalid_event_id")
    _check(is_order_id(order["order_id"]), "invalid_order_id")
    _check(_LOCALE.fullmatch(order["locale"]) is not None, "invalid_locale")
    _check(_CURRENCY.fullmatch(order["currency"]) is not None, "invalid_currency")
    _check(_COUNTRY.fullmatch(order["customer"]["billing_address"]["country"]) is not None, "invalid_country")
    _check(len(order["customer"]["email"]) <= 320, "invalid_email")  # before a slow parse of megabytes
    try:
        validate_email(order["customer"]["email"], check_deliverability=False)
    except EmailNotValidError:
        raise InvalidEvent("invalid_email") from None
    lines = order["lines"]
    _check(len(lines) > 0, "no_lines")
    _check(len(lines) <= MAX_LINES, "too_many_lines")
    for line in lines:
        _check(line["quantity"] > 0, "invalid_quantity")
        _check(line["unit_price_minor"] >= 0, "negative_amount")
        _check(bool(line["sku"].strip()), "invalid_sku")
    totals = order["totals"]
    amounts = (
        totals["subtotal_minor"],
        totals["shipping_minor"],
        totals["tax_minor"],
        totals["discount_minor"],
    )
    _check(all(amount >= 0 for amount in (*amounts, totals["total_minor"])), "negative_amount")
    texts: Mapping[str, object] = order
    _check(all(len(str(texts.get(name) or "")) <= limit for name, limit in MAX_TEXT.items()), "text_too_long")


def _check(condition: bool, reason: InvalidReason) -> None:
    if not condition:
        raise InvalidEvent(reason)


def is_order_id(value: str) -> bool:
    """Not blank, at most 64 characters, on one line: it reaches the subject and file names."""
    return bool(value.strip()) and len(value) <= 64 and _CONTROL.search(value) is None


def is_uuid(value: str) -> bool:
    """Any spelling :class:`uuid.UUID` reads (braces, ``urn:uuid:``, upper case)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
