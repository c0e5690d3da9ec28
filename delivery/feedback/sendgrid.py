"""SendGrid's Event Webhook, as it posts to ``/webhooks/sendgrid``.

Trusted only when signed ("Signed Event Webhook Requests"): header
``X-Twilio-Email-Event-Webhook-Signature`` is a base64 ECDSA (P-256, SHA-256, DER) signature
over the ``X-Twilio-Email-Event-Webhook-Timestamp`` header's text followed by the raw body, made
with the key pair whose public half SendGrid shows (``ORDERMAIL_FEEDBACK_SENDGRID_PUBLIC_KEY``:
the base64 DER as shown, or PEM). The timestamp (Unix seconds) must be at most ``max_age`` old.

The body is a JSON array of events; each maps to at most one report:

* ``delivered`` → DELIVERED; ``deferred`` → DELAYED (the enhanced code in ``response``, if any);
* ``bounce`` → BOUNCED: ``type`` ``bounce`` is hard unless its ``status`` is transient (4.x.x, or
  5.2.2 mailbox full: :func:`~delivery.feedback.model.bounce_type_of`); ``type`` ``blocked``
  (the receiving server refused for now, e.g. a reputation block) is soft;
* ``dropped`` with reason ``Bounced Address`` or ``Spam Reporting Address`` → BOUNCED hard:
  SendGrid did not send it because the address is on its own suppression list, so it will
  never arrive, and our list should hold it too. It is not a COMPLAINED: the recipient did not
  complain about *this* e-mail, and complaint rates stay true. Other drop reasons (unsubscribed,
  spam content, invalid API use...) are no verdict on the address: ignored;
* ``spamreport`` → COMPLAINED;
* everything else (``processed``, ``open``, ``click``, ``unsubscribe``, ``group_unsubscribe``...)
  is ignored; an entry that cannot be read is skipped and counted as malformed.

The e-mail is found through ``smtp-id`` (its ``Message-ID``: ours names the event), else the
custom argument ``ordermail_event_id`` (a UUID) when the message was sent with one; neither:
``event_id`` None (uncorrelated). ``timestamp`` → ``occurred_at``, ``email`` → the recipient.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from delivery.feedback.model import (
    BounceType,
    Kind,
    Report,
    Source,
    bounce_type_of,
)
from delivery.feedback.webhook import (
    WebhookConfigError,
    WebhookError,
    WebhookResult,
    check_age,
    diagnostic_code,
    load_json,
    occurred_at_unix,
    our_message_id,
    recipient_parts,
    signature_bytes,
)

__all__ = [
    "CUSTOM_ARG_EVENT_ID",
    "DEFAULT_MAX_AGE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SendGridVerifier",
    "parse_sendgrid",
]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
CUSTOM_ARG_EVENT_ID = "ordermail_event_id"
# SendGrid retries a POST that failed for up to 24 hours and does not document whether a retry is
# signed anew; a replay inside the window only repeats a genuine report (same feedback_id).
DEFAULT_MAX_AGE = timedelta(hours=24)

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAX_SIGNATURE_TEXT = 256  # base64 of a DER P-256 signature: at most 96 characters
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PLAIN = {"delivered": Kind.DELIVERED, "spamreport": Kind.COMPLAINED}
_SUPPRESSED_DROPS = frozenset({"bounced address", "spam reporting address"})


def _now() -> datetime:
    return datetime.now(UTC)


class SendGridVerifier:
    """Checks the Signed Event Webhook's signature with the configured public key (P-256).

    Build it with :meth:`from_setting` from ``ORDERMAIL_FEEDBACK_SENDGRID_PUBLIC_KEY``; raises
    :class:`WebhookConfigError` for a key that is not a P-256 public key."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise WebhookConfigError("SendGrid verification key: an ECDSA P-256 public key")
        if max_age <= timedelta(0):
            raise WebhookConfigError("SendGrid maximum request age: positive")
        self._key = public_key
        self._max_age = max_age
        self._clock = clock

    @classmethod
    def from_setting(cls, text: str, **options: Any) -> SendGridVerifier:
        """The key as SendGrid's settings page shows it (base64 of the DER SubjectPublicKeyInfo,
        whitespace ignored) or as PEM (``-----BEGIN PUBLIC KEY-----``)."""
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode("ascii"))
            else:
                der = base64.b64decode("".join(text.split()), validate=True)
                key = serialization.load_der_public_key(der)
        except (ValueError, UnicodeEncodeError, binascii.Error, UnsupportedAlgorithm) as exc:
            raise WebhookConfigError("SendGrid verification key: base64 DER or PEM public key") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise WebhookConfigError("SendGrid verification key: an ECDSA P-256 public key")
        return cls(key, **options)

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        """Raises :class:`WebhookError` unless ``signature`` (the header's text) is SendGrid's over
        ``timestamp`` (the other header's text) + ``body`` (raw bytes), and the timestamp recent."""
        if not signature or not timestamp:
            raise WebhookError("missing_signature", "SendGrid signature or timestamp header missing")
        timestamp = timestamp.strip()
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookError("bad_signature", "SendGrid timestamp is not Unix seconds")
        der = signature_bytes(signature, limit=_MAX_SIGNATURE_TEXT, who="SendGrid")
        try:
            self._key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise WebhookError("bad_signature", "SendGrid signature does not verify") from exc
        signed_at = occurred_at_unix(int(timestamp))
        if signed_at is None:
            raise WebhookError("stale", "signed timestamp outside the accepted window")
        check_age(signed_at, self._clock(), self._max_age)


def parse_sendgrid(
    body: bytes, verifier: SendGridVerifier, *, signature: str | None, timestamp: str | None
) -> WebhookResult:
    """The reports in one POST to ``/webhooks/sendgrid`` (``body`` as received, unmodified; the
    headers :data:`SIGNATURE_HEADER` and :data:`TIMESTAMP_HEADER`), or :class:`WebhookError`."""
    verifier.verify(body, signature, timestamp)
    events = load_json(body)
    if not isinstance(events, list):
        raise WebhookError("unparseable", "SendGrid body is not a JSON array")
    reports = []
    ignored = malformed = 0
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            malformed += 1
            continue
        mapped = _mapping(event)
        if mapped is None:
            ignored += 1
            continue
        address, domain = recipient_parts(event.get("email"))
        if address is None:
            malformed += 1
            continue
        kind, bounce_type, status = mapped
        message_id, event_id = _correlate(event)
        reports.append(
            Report(
                source=Source.SENDGRID,
                kind=kind,
                occurred_at=occurred_at_unix(event.get("timestamp")),
                status_code=status,
                bounce_type=bounce_type,
                event_id=event_id,
                message_id=message_id,
                recipient=address,
                recipient_domain=domain,
            )
        )
    return WebhookResult(reports=tuple(reports), ignored=ignored, malformed=malformed)


def _mapping(event: dict[str, Any]) -> tuple[Kind, BounceType | None, str | None] | None:
    """(kind, bounce type, enhanced code) of an event we map; None for one we ignore."""
    name = event["event"]
    if name in _PLAIN:
        return _PLAIN[name], None, None
    if name == "deferred":
        return Kind.DELAYED, None, diagnostic_code(event.get("response"))
    if name == "bounce":
        status = diagnostic_code(event.get("status")) or diagnostic_code(event.get("reason"))
        hard_unless_transient = bounce_type_of(status) if status else "hard"
        return Kind.BOUNCED, "soft" if event.get("type") == "blocked" else hard_unless_transient, status
    reason = event.get("reason")
    if name == "dropped" and isinstance(reason, str) and reason.strip().lower() in _SUPPRESSED_DROPS:
        return Kind.BOUNCED, "hard", None
    return None


def _correlate(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(our Message-ID, the event id) from ``smtp-id``, else (None, the custom argument's id)."""
    if ours := our_message_id(event.get("smtp-id")):
        return ours
    custom = event.get(CUSTOM_ARG_EVENT_ID)
    if isinstance(custom, str) and _UUID.fullmatch(custom.strip()):
        return None, custom.strip().lower()
    return None, None
