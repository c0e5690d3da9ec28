"""What the templates see: an order turned into display-ready, locale-formatted strings.

An encrypted attachment gets the whole order (:func:`document_context`). An unencrypted one gets
only :func:`public_context`, and the mail templates only :func:`mail_context`: texts, the shop
name, the order number, the file names and the password explanation, so no template change can
leak personal data into an unencrypted file or the e-mail body.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rendering.addresses import address_lines
from rendering.locales import Formatter
from rendering.messages import label_for

if TYPE_CHECKING:
    from rendering.template_sets import Texts
    from schemas.model import Address, OrderCompleted

__all__ = [
    "document_context",
    "document_language",
    "filename_context",
    "full_name",
    "mail_context",
    "public_context",
    "safe_order_id",
    "text_direction",
]

_RIGHT_TO_LEFT = frozenset({"ar", "he", "fa", "ur"})
_FAMILY_NAME_FIRST = {"zh": "", "ko": "", "ja": " ", "hu": " ", "vi": " "}  # language -> separator
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9-]+")


def safe_order_id(order_id: str) -> str:
    """The order id as file names may carry it: letters, digits, ``-`` and ``_`` only."""
    return _UNSAFE_FILENAME_CHARS.sub("_", order_id).strip("_")[:64] or "order"


def document_language(tag: str, language: str) -> str:
    """The document's ``lang``: the order's own tag when it is in the text language (``zh-TW``
    for Chinese texts picks traditional Han glyphs), else the text language."""
    normalised = tag.replace("_", "-")
    return normalised if normalised.split("-")[0].lower() == language.split("-", maxsplit=1)[0] else language


def full_name(first: str, last: str, tag: str) -> str:
    """The name as the customer's language writes it: family name first in Chinese, Japanese,
    Korean, Hungarian and Vietnamese (no space between them in Chinese and Korean)."""
    language = tag.replace("_", "-").split("-")[0].lower()
    if language in _FAMILY_NAME_FIRST:
        return _FAMILY_NAME_FIRST[language].join(part for part in (last, first) if part).strip()
    return f"{first} {last}".strip()


def text_direction(language: str) -> str:
    return "rtl" if language.split("-", maxsplit=1)[0] in _RIGHT_TO_LEFT else "ltr"


def public_context(
    order: OrderCompleted, language: str, texts: Texts, *, shop: str, logo: bool
) -> dict[str, Any]:
    """No personal data: texts, the shop and the order number."""
    return {
        **texts.template_functions(),
        "language": language,
        "lang": document_language(order["locale"], language),
        "dir": text_direction(language),
        "t": texts.labels,
        "shop_name": shop,
        "show_logo": logo,
        "order_id": order["order_id"],
    }


def filename_context(order: OrderCompleted, language: str, texts: Texts) -> dict[str, Any]:
    return {
        **texts.template_functions(),
        "language": language,
        "t": texts.labels,
        "order_id": safe_order_id(order["order_id"]),
    }


def document_context(
    order: OrderCompleted, language: str, texts: Texts, *, shop: str, logo: bool
) -> dict[str, Any]:
    """The whole order, formatted for its locale: only for encrypted attachments."""
    fmt = Formatter(order["locale"], language)
    currency = order["currency"]

    def money(minor: int) -> str:
        return fmt.money(minor, currency)

    customer = order["customer"]
    totals = order["totals"]
    subtotal, shipping, tax = totals["subtotal_minor"], totals["shipping_minor"], totals["tax_minor"]
    discount = totals.get("discount_minor", 0)
    labels = texts.labels
    rows: list[tuple[str, str]] = [
        (labels["subtotal"], money(subtotal)),
        (labels["shipping"], money(shipping) if shipping else labels["free"]),
    ]
    if discount:
        rows.append((labels["discount"], money(-discount)))
    # Tax already inside the prices (VAT) when the total adds up without it.
    tax_included = subtotal + shipping - discount == totals["total_minor"]
    if tax or not tax_included:
        rows.append((labels["tax_included" if tax_included else "tax"], money(tax)))
    shipping_address = order.get("shipping_address")
    return {
        **public_context(order, language, texts, shop=shop, logo=logo),
        "date": fmt.date(order["occurred_at"]),
        "time": fmt.time(order["occurred_at"]),
        "payment_method": label_for(texts.codes, order.get("payment_method")),
        "shipping_method": label_for(texts.codes, order.get("shipping_method")),
        "billing": {
            "name": full_name(customer["first_name"], customer["last_name"], order["locale"]),
            "lines": _address_lines(customer["billing_address"], fmt),
            "email": customer["email"],
            "phone": customer.get("phone"),
        },
        "shipping": _address_lines(shipping_address, fmt) if shipping_address else None,
        "lines": [
            {
                "sku": line["sku"],
                "name": line["name"],
                "options": " · ".join(
                    f"{key}: {value}" for key, value in (line.get("options") or {}).items()
                ),
                "quantity": fmt.number(line["quantity"]),
                "unit_price": money(line["unit_price_minor"]),
                "total": money(line["unit_price_minor"] * line["quantity"]),
            }
            for line in order["lines"]
        ],
        "totals": rows,
        "total": money(totals["total_minor"]),
        "gift_message": (order.get("gift_message") or "").strip() or None,
    }


def mail_context(
    order: OrderCompleted,
    texts: Texts,
    *,
    shop: str,
    filenames: list[str],
    password_explanation: str,
    encrypted: bool,
) -> dict[str, Any]:
    """``attachment_filename`` is the first attachment's (the main document); ``attachments`` all."""
    language = texts.language
    return {
        **texts.template_functions(),
        "language": language,
        "dir": text_direction(language),
        "shop_name": shop,
        "order_id": order["order_id"],
        "attachment_filename": filenames[0],
        "attachments": filenames,
        "password_explanation": password_explanation,
        "encrypted": encrypted,
    }


def _address_lines(address: Address, fmt: Formatter) -> list[str]:
    """The country's own layout; its latin-script one when the address is written in Latin letters
    (a Japanese address typed as ``1-1 Chiyoda``, ``Tokyo``)."""
    return address_lines(address, fmt.country(address["country"]), latin=_written_in_latin(address))


def _written_in_latin(address: Address) -> bool:
    text = "".join(str(value or "") for value in address.values())
    return all(_is_latin(ord(char)) for char in text if char.isalpha())


def _is_latin(point: int) -> bool:
    """Basic Latin to Latin Extended-B (with º, ª), and Latin Extended Additional (Vietnamese)."""
    return point < 0x0250 or 0x1E00 <= point <= 0x1EFF
