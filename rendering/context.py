"""What the templates see: an order turned into display-ready, locale-formatted strings.

The receipt gets the whole order (the PDF is encrypted). The mail templates get only
:func:`mail_context`: the order number, the shop name, the file name and the password
explanation, so no template change can leak personal data into the e-mail body.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rendering.locales import Formatter
from rendering.messages import LABELS, label_for

if TYPE_CHECKING:
    from schemas.model import Address, OrderCompleted

__all__ = ["DEFAULT_SHOP_NAME", "attachment_filename", "mail_context", "receipt_context", "shop_name"]

DEFAULT_SHOP_NAME = "ordermail demo shop"
_POSTAL_CODE_AFTER_REGION = frozenset({"US", "CA", "AU"})
_POSTAL_CODE_OWN_LINE = frozenset({"GB", "IE"})
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9-]+")


def shop_name(order: OrderCompleted) -> str:
    brand = (order.get("brand") or "").strip()
    return brand or DEFAULT_SHOP_NAME


def attachment_filename(order_id: str, language: str) -> str:
    """``receipt-ORD-123.pdf`` / ``recibo-ORD-123.pdf``: letters, digits, ``-`` and ``_`` only."""
    safe = _UNSAFE_FILENAME_CHARS.sub("_", order_id).strip("_")[:64] or "order"
    return f"{LABELS[language]['file_prefix']}-{safe}.pdf"


def receipt_context(order: OrderCompleted, language: str) -> dict[str, Any]:
    fmt = Formatter(order["locale"], language)
    currency = order["currency"]

    def money(minor: int) -> str:
        return fmt.money(minor, currency)

    customer = order["customer"]
    totals = order["totals"]
    subtotal, shipping, tax = totals["subtotal_minor"], totals["shipping_minor"], totals["tax_minor"]
    discount = totals.get("discount_minor", 0)
    labels = LABELS[language]
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
        "language": language,
        "t": labels,
        "shop_name": shop_name(order),
        "show_logo": not (order.get("brand") or "").strip(),
        "order_id": order["order_id"],
        "date": fmt.date(order["occurred_at"]),
        "time": fmt.time(order["occurred_at"]),
        "payment_method": label_for(language, order.get("payment_method")),
        "shipping_method": label_for(language, order.get("shipping_method")),
        "billing": {
            "name": f"{customer['first_name']} {customer['last_name']}".strip(),
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
    order: OrderCompleted, *, filename: str, password_explanation: str, encrypted: bool
) -> dict[str, Any]:
    return {
        "shop_name": shop_name(order),
        "order_id": order["order_id"],
        "attachment_filename": filename,
        "password_explanation": password_explanation,
        "encrypted": encrypted,
    }


def _address_lines(address: Address, fmt: Formatter) -> list[str]:
    lines = [address["line1"]]
    if address.get("line2"):
        lines.append(str(address["line2"]))
    city, postal_code, region = address["city"], address["postal_code"], address.get("region")
    country = address["country"].upper()
    if country in _POSTAL_CODE_AFTER_REGION:
        lines.append(
            ", ".join(part for part in (city, " ".join(filter(None, (region, postal_code)))) if part)
        )
    elif country in _POSTAL_CODE_OWN_LINE:
        lines.extend(part for part in (city, region, postal_code) if part)
    else:
        lines.append(" ".join(part for part in (postal_code, city) if part))
        if region:
            lines.append(region)
    lines.append(fmt.country(country))
    return lines
