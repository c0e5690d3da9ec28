"""The receipt e-mail of one order, from its rendered documents: the one place that turns a
:class:`~rendering.RenderedMail` into the message's bytes (the pipeline and the template preview
both call it, so a preview shows exactly what a customer gets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from delivery import Attachment, compose, message_id_for

if TYPE_CHECKING:
    from rendering import RenderedMail
    from schemas import OrderCompleted

__all__ = ["receipt_message"]


def receipt_message(
    order: OrderCompleted,
    mail: RenderedMail,
    *,
    sender: str,
    message_domain: str,
    message_id: str | None = None,
    date: datetime | None = None,
) -> bytes:
    """Raises :class:`delivery.headers.ComposeError` when the message cannot be built safely.
    ``message_id``: when the caller already derived it (:func:`delivery.message_id_for`)."""
    return compose(
        sender=sender,
        recipient=order["customer"]["email"],
        subject=mail.subject,
        text=mail.text_body,
        html=mail.html_body,
        attachments=[Attachment(attachment.filename, attachment.data) for attachment in mail.attachments],
        message_id=message_id or message_id_for(order["event_id"], message_domain),
        date=date or datetime.now(UTC),
    )
