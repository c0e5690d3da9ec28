"""The texts the code knows by key, in English: the receipt's labels, the names of payment and
shipping codes, and the explanations of the PDF password.

English is the source language. Every other language's texts are gettext catalogs
(``templates/shared/locale/<language>/LC_MESSAGES/messages.po``, see ``catalogs.py``): each
English text below is a catalog's ``msgid``, marked with ``N_`` so that ``pybabel extract`` finds
it. Texts only one template needs are written in that template (``{{ _("...") }}``,
``{% trans %}``) instead.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CODES",
    "DEFAULT_PASSWORD_EXPLANATION",
    "GENERIC_PASSWORD_EXPLANATION",
    "LABELS",
    "N_",
    "label_for",
]


def N_(text: str) -> str:  # noqa: N802 - gettext's conventional name for "translated later"
    """Marks a text for extraction; it is translated where it is used, per order."""
    return text


LABELS: Mapping[str, str] = MappingProxyType(
    {
        "file_prefix": N_("receipt"),
        "returns_file_prefix": N_("returns-form"),
        "receipt": N_("Receipt"),
        "order_number": N_("Order number"),
        "order_date": N_("Order date"),
        "order_time": N_("Time"),
        "payment_method": N_("Payment method"),
        "shipping_method": N_("Shipping method"),
        "billing_address": N_("Billing address"),
        "shipping_address": N_("Shipping address"),
        "sku": N_("SKU"),
        "item": N_("Item"),
        "quantity": N_("Qty"),
        "unit_price": N_("Unit price"),
        "line_total": N_("Amount"),
        "subtotal": N_("Subtotal"),
        "shipping": N_("Shipping"),
        "free": N_("Free"),
        "discount": N_("Discount"),
        "tax": N_("Tax"),
        "tax_included": N_("Tax included"),
        "total": N_("Total"),
        "gift_message": N_("Gift message"),
        "thanks": N_("Thank you for your order!"),
        "footer": N_("This receipt was issued automatically. Please quote the order number in any enquiry."),
    }
)

# Names of the payment and shipping method codes the platform sends.
CODES: Mapping[str, str] = MappingProxyType(
    {
        "card": N_("Card"),
        "paypal": N_("PayPal"),
        "bank_transfer": N_("Bank transfer"),
        "cash": N_("Cash"),
        "standard": N_("Standard"),
        "express": N_("Express"),
        "pickup": N_("Collection in store"),
    }
)

# How the default password template forms the password. The example values are obviously fake:
# an example built from the order's own data would leak the postal code into the e-mail.
DEFAULT_PASSWORD_EXPLANATION = N_(
    "The password is the postal code of your billing address, followed by a hyphen and the "
    "last 4 characters of your order number, exactly as written (capital letters and any "
    "spaces included). For example, for postal code 12345 and an order number ending in "
    "6789, the password would be 12345-6789."
)

# Used when the operator configured another template but gave no hint.
GENERIC_PASSWORD_EXPLANATION = N_(
    "The password is formed from details of your order and your billing address."
)


def label_for(codes: Mapping[str, str], value: str | None) -> str | None:
    """A known code (``card``, ``express``) by its name in ``codes``; unknown codes as given, tidied."""
    if not value:
        return None
    known = codes.get(value)
    return known if known is not None else value.replace("_", " ")
