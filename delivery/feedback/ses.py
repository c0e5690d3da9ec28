"""Amazon SES events, as Amazon SNS posts them to ``/webhooks/ses``.

The request body is an SNS message (JSON): ``Type`` ``Notification`` (an SES event in
``Message``), ``SubscriptionConfirmation`` or ``UnsubscribeConfirmation``. It is trusted only
after :class:`SnsVerifier` has checked, in this order:

1. ``SignatureVersion`` is ``1`` (SHA1withRSA) or ``2`` (SHA256withRSA) and not below the
   configured minimum (default 2: a message cannot be downgraded to SHA-1; set the topic's
   ``SignatureVersion`` attribute to 2);
2. ``SigningCertURL`` names an SNS host (``https://sns.<region>.amazonaws.com[.cn]/...``). It is
   never fetched: the signature is verified with the *configured* certificate(s) (a PEM file,
   several certificates allowed for a rotation); a configured certificate outside its validity
   is not used;
3. the signature over SNS's canonical string ("key\\nvalue\\n" for ``Message``, ``MessageId``,
   ``Subject`` when present, ``Timestamp``, ``TopicArn``, ``Type``; for the confirmations
   ``Message``, ``MessageId``, ``SubscribeURL``, ``Timestamp``, ``Token``, ``TopicArn``,
   ``Type``);
4. ``TopicArn`` is in the configured allow-list;
5. ``Timestamp`` (when SNS published it; a redelivery keeps it) is at most ``max_age`` old.

Confirmations give a :class:`~delivery.feedback.webhook.SubscriptionNotice`: ordermail never
fetches ``SubscribeURL``; an operator confirms (see the notice).

The SES event in ``Message`` may come in either of SES's two forms, "notifications"
(``notificationType``) and "event publishing" (``eventType``):

* ``Bounce`` → BOUNCED per ``bouncedRecipients`` entry; ``bounceType`` ``Permanent`` → hard,
  ``Transient`` / ``Undetermined`` → soft; ``status`` (else the enhanced code found in
  ``diagnosticCode``) → ``status_code``; nothing else of the diagnostic is kept;
* ``Complaint`` → COMPLAINED per ``complainedRecipients`` entry (a ``not-spam`` feedback type is
  no complaint: ignored);
* ``Delivery`` → DELIVERED per ``recipients`` entry;
* ``DeliveryDelay`` → DELAYED per ``delayedRecipients`` entry (with its ``status``);
* anything else (``Send``, ``Reject``, ``Open``, ``Click``, ``AmazonSnsSubscriptionSucceeded``...)
  is ignored.

The e-mail is found through its original ``Message-ID`` (``mail.commonHeaders.messageId``, then
the ``Message-ID`` entries of ``mail.headers``): ours names the event
(:func:`~delivery.feedback.model.event_id_from_message_id`); any other gives reports with
``event_id`` None (the service counts them as uncorrelated).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from delivery.feedback.model import (
    BounceType,
    Kind,
    Report,
    Source,
)
from delivery.feedback.webhook import (
    SubscriptionNotice,
    WebhookConfigError,
    WebhookError,
    WebhookResult,
    check_age,
    diagnostic_code,
    load_json,
    occurred_at_iso,
    our_message_id,
    recipient_parts,
    signature_bytes,
)

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MIN_SIGNATURE_VERSION", "SnsVerifier", "parse_ses"]

# SNS signs a message once, when it is published, and a redelivery keeps its Timestamp; the
# longest HTTP delivery policy SNS allows retries for an hour. Plus five minutes of clock skew.
DEFAULT_MAX_AGE = timedelta(hours=1, minutes=5)
DEFAULT_MIN_SIGNATURE_VERSION = 2

SnsType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_TYPES: dict[str, SnsType] = {
    "Notification": "Notification",
    "SubscriptionConfirmation": "SubscriptionConfirmation",
    "UnsubscribeConfirmation": "UnsubscribeConfirmation",
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,40}\.amazonaws\.com(?:\.cn)?")
_TOPIC_ARN = re.compile(r"arn:aws[a-z-]{0,20}:sns:[a-z0-9-]{1,40}:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?")
_MAX_SIGNATURE_TEXT = 2048  # base64 of a 8192-bit RSA signature is 1368 characters
_MIN_RSA_BITS = 2048


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Envelope:
    type: SnsType
    message: str
    topic_arn: str
    fields: dict[str, str]
    raw: dict[str, Any]


class SnsVerifier:
    """Checks SNS messages against the configured signing certificate(s) and topics.

    ``certificates``: SNS's signing certificate(s), as configured (PEM file
    ``ORDERMAIL_FEEDBACK_SES_CERT_FILE``: download the one named by your messages'
    ``SigningCertURL`` once, check it, and configure it; a file may hold the old and the new one
    during a rotation). ``topic_arns``: the SNS topics SES publishes to
    (``ORDERMAIL_FEEDBACK_SES_TOPIC_ARNS``). Raises :class:`WebhookConfigError` when either is
    unusable.
    """

    def __init__(
        self,
        certificates: Sequence[x509.Certificate],
        topic_arns: Collection[str],
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        min_signature_version: int = DEFAULT_MIN_SIGNATURE_VERSION,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if not certificates:
            raise WebhookConfigError("SNS signing certificate: none configured")
        for certificate in certificates:
            key = certificate.public_key()
            if not isinstance(key, rsa.RSAPublicKey) or key.key_size < _MIN_RSA_BITS:
                raise WebhookConfigError(f"SNS signing certificate: an RSA key of {_MIN_RSA_BITS}+ bits")
        if not topic_arns or isinstance(topic_arns, str):
            raise WebhookConfigError("SNS topic ARNs: at least one (the topics SES publishes to)")
        for arn in topic_arns:
            if not _TOPIC_ARN.fullmatch(arn):
                raise WebhookConfigError("SNS topic ARNs: each like arn:aws:sns:REGION:ACCOUNT:NAME")
        if min_signature_version not in (1, 2):
            raise WebhookConfigError("SNS minimum signature version: 1 or 2")
        if max_age <= timedelta(0):
            raise WebhookConfigError("SNS maximum message age: positive")
        self._certificates = tuple((c, c.public_key()) for c in certificates)
        self._topics = frozenset(topic_arns)
        self._versions = frozenset(v for v in _HASHES if int(v) >= min_signature_version)
        self._max_age = max_age
        self._clock = clock
        if not self._valid_keys(clock()):
            raise WebhookConfigError("SNS signing certificate: none is valid now (expired?)")

    @classmethod
    def from_pem(cls, pem: bytes, topic_arns: Collection[str], **options: Any) -> SnsVerifier:
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise WebhookConfigError("SNS signing certificate: not a PEM certificate") from exc
        return cls(certificates, topic_arns, **options)

    @classmethod
    def from_file(cls, path: str | Path, topic_arns: Collection[str], **options: Any) -> SnsVerifier:
        """The verifier for ``ORDERMAIL_FEEDBACK_SES_CERT_FILE`` and
        ``ORDERMAIL_FEEDBACK_SES_TOPIC_ARNS`` (split on commas by the caller)."""
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise WebhookConfigError("SNS signing certificate: the file cannot be read") from exc
        return cls.from_pem(pem, topic_arns, **options)

    def _valid_keys(self, now: datetime) -> list[rsa.RSAPublicKey]:
        return [
            key
            for certificate, key in self._certificates
            if isinstance(key, rsa.RSAPublicKey)  # checked in __init__
            and certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
        ]

    def verify(self, message: object) -> None:
        """Raises :class:`WebhookError` unless ``message`` (an SNS message, parsed JSON) is signed
        by SNS, from an allowed topic, and recent."""
        message = _envelope(message, None).raw
        version = message.get("SignatureVersion")
        if not isinstance(version, str) or version not in self._versions:
            raise WebhookError("signature_version", "SNS SignatureVersion not accepted")
        if not _is_sns_certificate_url(message.get("SigningCertURL")):
            raise WebhookError("untrusted_certificate", "SigningCertURL is not an SNS URL")
        now = self._clock()
        keys = self._valid_keys(now)
        if not keys:
            raise WebhookError("untrusted_certificate", "no configured certificate is valid now")
        signature = signature_bytes(message.get("Signature"), limit=_MAX_SIGNATURE_TEXT, who="SNS")
        signed = _string_to_sign(message)
        algorithm = _HASHES[version]
        for key in keys:
            try:
                key.verify(signature, signed, padding.PKCS1v15(), algorithm())
                break
            except InvalidSignature:
                continue
        else:
            raise WebhookError("bad_signature", "SNS signature does not verify")
        if message["TopicArn"] not in self._topics:
            raise WebhookError("untrusted_topic", "TopicArn not in the allow-list")
        published = occurred_at_iso(message["Timestamp"])
        if published is None:
            raise WebhookError("unparseable", "SNS Timestamp")
        check_age(published, now, self._max_age)


def _is_sns_certificate_url(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 1024:
        return False
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        return False
    return (
        url.scheme == "https"
        and port is None
        and url.username is None
        and url.password is None
        and _SNS_HOST.fullmatch(url.hostname or "") is not None
        and url.path.endswith(".pem")
    )


def _string_to_sign(message: dict[str, Any]) -> bytes:
    parts = []
    for name in _SIGNED_FIELDS[message["Type"]]:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        parts.append(f"{name}\n{value}\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\\ud800" in the JSON): SNS signs UTF-8
        raise WebhookError("unparseable", "SNS field is not valid Unicode") from exc


def _envelope(message: object, message_type: str | None) -> _Envelope:
    if not isinstance(message, dict):
        raise WebhookError("unparseable", "SNS message is not a JSON object")
    kind = _TYPES.get(message["Type"]) if isinstance(message.get("Type"), str) else None
    if kind is None:
        raise WebhookError("unparseable", "SNS Type unknown (raw message delivery must be off)")
    if message_type is not None and message_type != kind:
        raise WebhookError("unparseable", "x-amz-sns-message-type differs from Type")
    for name in _SIGNED_FIELDS[kind]:
        value = message.get(name)
        if name == "Subject" and value is None:
            continue
        if not isinstance(value, str):
            raise WebhookError("unparseable", "SNS signed field missing or not a string")
    fields = {name: message[name] for name in _SIGNED_FIELDS[kind] if isinstance(message.get(name), str)}
    return _Envelope(
        type=kind, message=message["Message"], topic_arn=message["TopicArn"], fields=fields, raw=message
    )


def parse_ses(body: bytes, verifier: SnsVerifier, *, message_type: str | None = None) -> WebhookResult:
    """The reports in one SNS POST to ``/webhooks/ses`` (``body`` as received, unmodified), or
    :class:`WebhookError`. ``message_type``: the ``x-amz-sns-message-type`` header, when the
    server has it (it must then agree with the body's ``Type``)."""
    message = load_json(body)
    envelope = _envelope(message, message_type)
    verifier.verify(message)
    if envelope.type != "Notification":
        notice = SubscriptionNotice(
            type=envelope.type,
            topic_arn=envelope.topic_arn,
            token=envelope.fields["Token"],
            subscribe_url=envelope.fields["SubscribeURL"],
        )
        return WebhookResult(subscription=notice)
    return _ses_event(envelope.message)


# --- the SES event inside a verified notification -----------------------------------------------


@dataclass(frozen=True)
class _Section:
    kind: Kind
    section: str  # the object holding the event's details
    recipients: str  # its list of recipients
    addresses_only: bool = False  # the list holds addresses, not objects


_SECTIONS = {
    "Bounce": _Section(Kind.BOUNCED, "bounce", "bouncedRecipients"),
    "Complaint": _Section(Kind.COMPLAINED, "complaint", "complainedRecipients"),
    "Delivery": _Section(Kind.DELIVERED, "delivery", "recipients", addresses_only=True),
    "DeliveryDelay": _Section(Kind.DELAYED, "deliveryDelay", "delayedRecipients"),
}
_BOUNCE_TYPES: dict[str, BounceType] = {"Permanent": "hard", "Transient": "soft", "Undetermined": "soft"}


def _ses_event(message: str) -> WebhookResult:
    event = load_json(message)
    if not isinstance(event, dict):
        raise WebhookError("unparseable", "SES event is not a JSON object")
    name = event.get("eventType", event.get("notificationType"))
    if not isinstance(name, str):
        raise WebhookError("unparseable", "SES event without eventType or notificationType")
    spec = _SECTIONS.get(name)
    if spec is None:
        return WebhookResult(ignored=1)
    section = event.get(spec.section)
    mail = event.get("mail")
    if not isinstance(section, dict) or not isinstance(mail, dict):
        raise WebhookError("unparseable", "SES event without its details or mail")
    entries = section.get(spec.recipients)
    if not isinstance(entries, list) or not entries:
        raise WebhookError("unparseable", "SES event without recipients")
    if spec.kind is Kind.COMPLAINED and section.get("complaintFeedbackType") == "not-spam":
        return WebhookResult(ignored=1)
    message_id, event_id = _correlate(mail)
    occurred_at = occurred_at_iso(section.get("timestamp")) or occurred_at_iso(mail.get("timestamp"))
    bounce_type = _bounce_type(section.get("bounceType")) if spec.kind is Kind.BOUNCED else None
    reports = []
    malformed = 0
    for entry in entries:
        status: str | None = None
        if spec.addresses_only:
            address, domain = recipient_parts(entry)
        elif isinstance(entry, dict):
            address, domain = recipient_parts(entry.get("emailAddress"))
            status = _status(entry)
        else:
            address = domain = None
        if address is None:
            malformed += 1
            continue
        reports.append(
            Report(
                source=Source.SES,
                kind=spec.kind,
                occurred_at=occurred_at,
                status_code=status if spec.kind in (Kind.BOUNCED, Kind.DELAYED) else None,
                bounce_type=bounce_type,
                event_id=event_id,
                message_id=message_id,
                recipient=address,
                recipient_domain=domain,
            )
        )
    return WebhookResult(reports=tuple(reports), malformed=malformed)


def _bounce_type(value: object) -> BounceType:
    """Permanent → hard; Transient, Undetermined and anything unexpected → soft (an address is
    suppressed only when SES says the failure is permanent)."""
    return _BOUNCE_TYPES.get(value, "soft") if isinstance(value, str) else "soft"


def _status(entry: dict[str, Any]) -> str | None:
    for name in ("status", "diagnosticCode"):
        if code := diagnostic_code(entry.get(name)):
            return code
    return None


def _correlate(mail: dict[str, Any]) -> tuple[str | None, str | None]:
    """(our Message-ID, its event id) from the original message's headers; (None, None) when
    the e-mail is not one of ours (or SES did not keep its headers)."""
    for candidate in _message_ids(mail):
        if ours := our_message_id(candidate):
            return ours
    return None, None


def _message_ids(mail: dict[str, Any]) -> Iterable[str]:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        yield common["messageId"]
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if (
                isinstance(header, dict)
                and isinstance(header.get("name"), str)
                and header["name"].lower() == "message-id"
                and isinstance(header.get("value"), str)
            ):
                yield header["value"]
