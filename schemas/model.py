"""Typed views of the Avro records.

Events stay plain dicts at run time (what fastavro yields, cheap to pickle to render workers,
natural in Jinja2); these TypedDicts give the rest of the code and mypy their shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NotRequired, TypedDict

__all__ = [
    "Address",
    "Customer",
    "DeliveryOutcome",
    "DeliveryStatus",
    "OrderCompleted",
    "OrderLine",
    "Totals",
]


class Address(TypedDict):
    line1: str
    line2: str | None
    city: str
    postal_code: str
    region: str | None
    country: str


class Customer(TypedDict):
    customer_id: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    billing_address: Address


class OrderLine(TypedDict):
    sku: str
    name: str
    options: dict[str, str]
    quantity: int
    unit_price_minor: int


class Totals(TypedDict):
    subtotal_minor: int
    shipping_minor: int
    tax_minor: int
    discount_minor: int
    total_minor: int


class RemoteAttachment(TypedDict):
    url: str
    filename: NotRequired[str | None]


class OrderCompleted(TypedDict):
    event_id: str
    occurred_at: datetime
    order_id: str
    locale: str
    currency: str
    customer: Customer
    lines: list[OrderLine]
    totals: Totals
    shipping_address: NotRequired[Address | None]
    shipping_method: NotRequired[str | None]
    payment_method: NotRequired[str | None]
    gift_message: NotRequired[str | None]
    brand: NotRequired[str | None]
    attachments: NotRequired[list[RemoteAttachment] | None]
    channel: NotRequired[str | None]


DeliveryStatus = Literal["SENT", "DEFERRED", "FAILED", "REJECTED"]


class DeliveryOutcome(TypedDict):
    event_id: str
    order_id: str
    status: DeliveryStatus
    reason: str | None
    attempt: int
    occurred_at: datetime
    message_id: NotRequired[str | None]
    smtp_code: NotRequired[int | None]
    recipient_domain: NotRequired[str | None]
    attachment_sha256: NotRequired[str | None]
    attachment_bytes: NotRequired[int | None]
    attachment_count: NotRequired[int | None]
    render_ms: NotRequired[int | None]
    send_ms: NotRequired[int | None]
    trace_id: NotRequired[str | None]
    source_partition: NotRequired[int | None]
    source_offset: NotRequired[int | None]
