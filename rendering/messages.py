"""Built-in texts, per shipped language: the receipt's labels, the names of payment and shipping
codes, and the explanations of the PDF password.

A template set's ``<language>/labels.toml`` overrides or adds to them (see ``template_sets.py``);
the mail subject and bodies are the set's own templates.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CODES", "DEFAULT_PASSWORD_EXPLANATION", "GENERIC_PASSWORD_EXPLANATION", "LABELS", "label_for"]

_EN = {
    "file_prefix": "receipt",
    "receipt": "Receipt",
    "order_number": "Order number",
    "order_date": "Order date",
    "order_time": "Time",
    "payment_method": "Payment method",
    "shipping_method": "Shipping method",
    "billing_address": "Billing address",
    "shipping_address": "Shipping address",
    "sku": "SKU",
    "item": "Item",
    "quantity": "Qty",
    "unit_price": "Unit price",
    "line_total": "Amount",
    "subtotal": "Subtotal",
    "shipping": "Shipping",
    "free": "Free",
    "discount": "Discount",
    "tax": "Tax",
    "tax_included": "Tax included",
    "total": "Total",
    "gift_message": "Gift message",
    "thanks": "Thank you for your order!",
    "footer": "This receipt was issued automatically. Please quote the order number in any enquiry.",
}

_EN_CODES = {
    "card": "Card",
    "paypal": "PayPal",
    "bank_transfer": "Bank transfer",
    "cash": "Cash",
    "standard": "Standard",
    "express": "Express",
    "pickup": "Collection in store",
}

_ES = {
    "file_prefix": "recibo",
    "receipt": "Recibo",
    "order_number": "Número de pedido",
    "order_date": "Fecha del pedido",
    "order_time": "Hora",
    "payment_method": "Forma de pago",
    "shipping_method": "Envío",
    "billing_address": "Dirección de facturación",
    "shipping_address": "Dirección de envío",
    "sku": "Referencia",
    "item": "Artículo",
    "quantity": "Cant.",
    "unit_price": "Precio unitario",
    "line_total": "Importe",
    "subtotal": "Subtotal",
    "shipping": "Envío",
    "free": "Gratis",
    "discount": "Descuento",
    "tax": "Impuestos",
    "tax_included": "Impuestos incluidos",
    "total": "Total",
    "gift_message": "Mensaje de regalo",
    "thanks": "¡Gracias por tu pedido!",
    "footer": "Este recibo se ha emitido automáticamente. Indica el número de pedido en cualquier consulta.",
}

_ES_CODES = {
    "card": "Tarjeta",
    "paypal": "PayPal",
    "bank_transfer": "Transferencia bancaria",
    "cash": "Efectivo",
    "standard": "Estándar",
    "express": "Urgente",
    "pickup": "Recogida en tienda",
}

LABELS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(_EN), "es": MappingProxyType(_ES)}
)
# Names of the payment and shipping method codes the platform sends.
CODES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(_EN_CODES), "es": MappingProxyType(_ES_CODES)}
)

# How the default password template forms the password. The example values are obviously fake:
# an example built from the order's own data would leak the postal code into the e-mail.
DEFAULT_PASSWORD_EXPLANATION: Mapping[str, str] = MappingProxyType(
    {
        "en": (
            "The password is the postal code of your billing address, followed by a hyphen and the "
            "last 4 characters of your order number, exactly as written (capital letters and any "
            "spaces included). For example, for postal code 12345 and an order number ending in "
            "6789, the password would be 12345-6789."
        ),
        "es": (
            "La contraseña es el código postal de tu dirección de facturación, seguido de un guion "
            "y los 4 últimos caracteres de tu número de pedido, tal como están escritos (con sus "
            "mayúsculas y espacios, si los hay). Por ejemplo, con el código postal 12345 y un número "
            "de pedido que termina en 6789, la contraseña sería 12345-6789."
        ),
    }
)

# Used when the operator configured another template but gave no hint.
GENERIC_PASSWORD_EXPLANATION: Mapping[str, str] = MappingProxyType(
    {
        "en": "The password is formed from details of your order and your billing address.",
        "es": "La contraseña se forma con datos de tu pedido y de tu dirección de facturación.",
    }
)


def label_for(codes: Mapping[str, str], value: str | None) -> str | None:
    """A known code (``card``, ``express``) by its name in ``codes``; unknown codes as given, tidied."""
    if not value:
        return None
    known = codes.get(value)
    return known if known is not None else value.replace("_", " ")
