"""The error policy as data: every failure reason maps to one action.

Reasons come from the stage that failed, each typed where it is raised: ``schemas.DecodeReason``
and ``InvalidReason``, ``rendering.RenderErrorReason``, ``delivery.ComposeReason``,
``FetchReason`` and ``SendReason``, and the pipeline's own :data:`PipelineReason`. The pipeline
looks the action up here instead of deciding in scattered ``except`` blocks, and nothing else
decides whether a failure is worth retrying (``tests/unit/test_policy.py`` checks that every
reason has exactly one entry).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from delivery.headers import ComposeReason
from delivery.remote import FetchReason
from delivery.smtp import SendReason
from rendering.errors import RenderErrorReason
from schemas.codec import DecodeReason
from schemas.validation import InvalidReason

__all__ = [
    "DEPLOY_SUSPECT",
    "NEVER_REDRIVE",
    "POLICY",
    "REASONS",
    "Action",
    "PipelineReason",
    "Reason",
    "action_for",
    "redrivable",
]

# Raised by the pipeline itself, about a record rather than a stage.
PipelineReason = Literal[
    "malformed_headers",  # ordermail's own headers on a retry-topic record could not be read
    "attachment_too_large",  # rendered and fetched documents together exceed the message budget
    "dkim_failed",
    "internal_error",  # a bug: dead-lettered rather than crashing the service
    "publish_refused",  # the broker refused the record itself (its size, say), not for now
    "suppressed",  # the address is on the suppression list: neither rendered nor sent
]

Reason = (
    DecodeReason
    | InvalidReason
    | RenderErrorReason
    | ComposeReason
    | FetchReason
    | SendReason
    | PipelineReason
)
# Every reason any module can raise (each stage's Literal, read at run time).
REASONS = frozenset(
    reason
    for kind in (
        DecodeReason,
        InvalidReason,
        RenderErrorReason,
        ComposeReason,
        FetchReason,
        SendReason,
        PipelineReason,
    )
    for reason in get_args(kind)
)


class Action(StrEnum):
    REJECT = "reject"  # the event itself is bad: REJECTED outcome + dead letter, no retry
    RETRY = "retry"  # may work later: quick retries, then DEFERRED via the retry topic, at last FAILED
    THROTTLE = "throttle"  # the relay asks us to slow down: pause sending, then as RETRY
    FAIL = "fail"  # the relay refused for good: FAILED outcome, no retry
    SUPPRESS = "suppress"  # not to be e-mailed: REJECTED outcome, no dead letter (nothing to redrive)


POLICY: dict[Reason, Action] = {
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
    "text_too_long": Action.REJECT,
    "malformed_headers": Action.REJECT,
    # rendering and encryption (fail closed: never send what could not be encrypted)
    "template_error": Action.REJECT,
    "render_error": Action.REJECT,
    "render_crashed": Action.REJECT,
    "render_timeout": Action.REJECT,  # the worker was killed: the same order would hang it again
    "weak_password": Action.REJECT,
    "encryption_failed": Action.REJECT,
    "attachment_too_large": Action.REJECT,
    # attachments fetched from another system (delivery/remote.py): a bad URL or document is the
    # event's fault (dead-lettered, replayable); an unreachable server may come back
    "attachment_forbidden": Action.REJECT,
    "attachment_type": Action.REJECT,
    "attachment_unavailable": Action.REJECT,
    "attachment_unreachable": Action.RETRY,  # also: all of an event's fetches passed its deadline
    "too_many_attachments": Action.REJECT,
    # composing (a recipient that is not a bare address, a header block not as we meant it)
    "unsafe_recipient": Action.REJECT,
    "unsafe_filename": Action.REJECT,
    "header_check_failed": Action.REJECT,
    "dkim_failed": Action.REJECT,
    "internal_error": Action.REJECT,
    "publish_refused": Action.REJECT,
    "suppressed": Action.SUPPRESS,
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


# Dead letters that point at ordermail's side (templates, password template, keys, limits, a bug)
# rather than at the record: only these count towards the dead-letter breaker, so garbage from a
# producer (undecodable, invalid, malformed headers) is dead-lettered without stopping the service.
DEPLOY_SUSPECT: frozenset[Reason] = frozenset(
    {
        "template_error",
        "render_error",
        "render_crashed",
        "weak_password",
        "encryption_failed",
        "attachment_too_large",
        "header_check_failed",
        "dkim_failed",
        "internal_error",
    }
)


# Dead letters whose record is bad in itself: redriving one (``ordermail dlq redrive``) gives the
# same REJECTED outcome again, so the command refuses them unless ``--force``. Every other dead
# letter may go through once the cause is fixed: ordermail's side (templates, keys, limits, a bug,
# a writer schema it did not know yet), another system (linked attachments), or the relay (events
# dead-lettered after their deferrals ran out).
NEVER_REDRIVE: frozenset[Reason] = frozenset(
    {
        "undecodable",
        "schema_mismatch",
        "malformed_headers",
        *get_args(InvalidReason),  # the event's own content
        "unsafe_recipient",
        "unsafe_filename",
    }
)


def redrivable(reason: str) -> bool:
    """Whether a dead letter with this reason may be redriven without ``--force`` (a reason this
    version does not know is not: it cannot say what would happen)."""
    return reason in REASONS and reason not in NEVER_REDRIVE


def action_for(reason: str) -> Action:
    """Unknown reasons are rejected (dead-lettered, so nothing is lost) rather than retried forever."""
    known: dict[str, Action] = POLICY  # type: ignore[assignment]  # looked up by any string
    return known.get(reason, Action.REJECT)
