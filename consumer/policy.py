"""The error policy as data: every failure reason maps to one action.

Reasons come from the stage that failed (``schemas.DecodeError``, ``schemas.InvalidEvent``,
``rendering.RenderError``, ``delivery.SendError``); the pipeline looks the action up here
instead of deciding in scattered ``except`` blocks.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Action", "action_for"]


class Action(StrEnum):
    REJECT = "reject"  # the event itself is bad: REJECTED outcome + dead letter, no retry
    RETRY = "retry"  # may work later: quick retries, then DEFERRED via the retry topic, at last FAILED
    THROTTLE = "throttle"  # the relay asks us to slow down: pause sending, then as RETRY
    FAIL = "fail"  # the relay refused for good: FAILED outcome, no retry


POLICY: dict[str, Action] = {
    # decoding and content
    "undecodable": Action.REJECT,
    "unknown_schema": Action.REJECT,
    "schema_mismatch": Action.REJECT,
    "invalid_event_id": Action.REJECT,
    "invalid_order_id": Action.REJECT,
    "invalid_locale": Action.REJECT,
    "invalid_currency": Action.REJECT,
    "invalid_country": Action.REJECT,
    "invalid_email": Action.REJECT,
    "no_lines": Action.REJECT,
    "too_many_lines": Action.REJECT,
    "invalid_quantity": Action.REJECT,
    "invalid_sku": Action.REJECT,
    "negative_amount": Action.REJECT,
    # rendering and encryption (fail closed: never send what could not be encrypted)
    "template_error": Action.REJECT,
    "render_error": Action.REJECT,
    "render_crashed": Action.REJECT,
    "weak_password": Action.REJECT,
    "encryption_failed": Action.REJECT,
    "attachment_too_large": Action.REJECT,
    # attachments fetched from another system (delivery/remote.py): a bad URL or document is the
    # event's fault (dead-lettered, replayable); an unreachable server may come back
    "attachment_forbidden": Action.REJECT,
    "attachment_type": Action.REJECT,
    "attachment_unavailable": Action.REJECT,
    "attachment_unreachable": Action.RETRY,
    "internal_error": Action.REJECT,
    "dkim_failed": Action.REJECT,
    # sending
    "smtp_transient": Action.RETRY,
    "smtp_timeout": Action.RETRY,
    "smtp_unreachable": Action.RETRY,
    "smtp_disconnected": Action.RETRY,
    "smtp_connect_refused": Action.RETRY,
    "smtp_tls_failed": Action.RETRY,
    "smtp_auth_failed": Action.RETRY,  # a credentials rotation is an operator fix, not the event's fault
    "smtp_throttled": Action.THROTTLE,
    "smtp_permanent": Action.FAIL,
}


def action_for(reason: str) -> Action:
    """Unknown reasons are rejected (dead-lettered, so nothing is lost) rather than retried forever."""
    return POLICY.get(reason, Action.REJECT)
