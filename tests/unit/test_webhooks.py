"""ESP webhooks (issue 19): SES events through SNS and SendGrid's Event Webhook, signed with keys
made here, become :class:`Report` values; anything unsigned, forged, replayed or malformed is
refused with a reason and never crashes the parser."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.feedback.model import Kind, Report, Source
from delivery.feedback.sendgrid import (
    CUSTOM_ARG_EVENT_ID,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridVerifier,
    parse_sendgrid,
)
from delivery.feedback.ses import SnsVerifier, parse_ses
from delivery.feedback.webhook import WebhookConfigError, WebhookError, WebhookResult, recipient_parts

NOW = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)
EVENT_ID = "3f2b8c9a-1d4e-4f6a-9b7c-2e5d8a1f0c3b"
OUR_MESSAGE_ID = f"<{EVENT_ID}.ordermail@shop.example>"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ordermail-ses-events"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:123456789012:someone-elses-topic"
CERT_URL = (
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
ADDRESS = "jane.doe@Example.COM"
DIAGNOSTIC = "smtp; 550 5.1.1 <jane.doe@example.com>... User unknown"


def clock() -> datetime:
    return NOW


# --- keys and certificates made for the test -----------------------------------------------------


def _certificate(
    key: rsa.RSAPrivateKey, *, not_before: datetime, not_after: datetime, name: str = "sns.amazonaws.com"
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def forger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sns_cert(sns_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return _certificate(sns_key, not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=60))


@pytest.fixture
def verifier(sns_cert: x509.Certificate) -> SnsVerifier:
    return SnsVerifier([sns_cert], [TOPIC], clock=clock)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


# --- SNS messages as SNS signs them (the documented canonical string, written out here) ----------


def _string_to_sign(message: dict[str, Any]) -> bytes:
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names if name in message).encode()


def sign_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303  (SNS version 1)
    signed = dict(message, SignatureVersion=version, SigningCertURL=CERT_URL)
    signature = key.sign(_string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def notification(event: dict[str, Any] | str, **fields: Any) -> dict[str, Any]:
    message = {
        "Type": "Notification",
        "MessageId": "f3b7c3a1-5d2e-5b8f-9a0c-1e2d3f4a5b6c",
        "TopicArn": TOPIC,
        "Message": event if isinstance(event, str) else json.dumps(event),
        "Timestamp": "2026-12-07T07:59:58.123Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    }
    message.update(fields)
    return message


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def ses_mail(message_id: str | None = OUR_MESSAGE_ID) -> dict[str, Any]:
    """``mail`` as SES documents it (the original message's headers included)."""
    headers = [
        {"name": "From", "value": "receipts@shop.example"},
        {"name": "To", "value": ADDRESS},
        {"name": "Subject", "value": "Your receipt"},
    ]
    common: dict[str, Any] = {"from": ["receipts@shop.example"], "to": [ADDRESS], "subject": "Your receipt"}
    if message_id is not None:
        headers.append({"name": "Message-ID", "value": message_id})
        common["messageId"] = message_id
    return {
        "timestamp": "2026-12-07T07:59:00.000Z",
        "source": "receipts@shop.example",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/shop.example",
        "sendingAccountId": "123456789012",
        "messageId": "0102018f1c2d3e4f-5a6b7c8d-0000-0000-0000-000000000000-000000",
        "destination": [ADDRESS],
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": common,
    }


def bounce_event(bounce_type: str = "Permanent", **entry: Any) -> dict[str, Any]:
    recipient = {"emailAddress": ADDRESS, "action": "failed", "status": "5.1.1", "diagnosticCode": DIAGNOSTIC}
    recipient.update(entry)
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [recipient],
            "timestamp": "2026-12-07T07:59:30.500Z",
            "feedbackId": "0102018f-feedback-000000",
            "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": ses_mail(),
    }


def ses(event: dict[str, Any] | str, verifier: SnsVerifier, key: rsa.RSAPrivateKey) -> WebhookResult:
    return parse_ses(body(sign_sns(notification(event), key)), verifier)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(WebhookError) as caught:
        call()
    assert caught.value.__cause__ is None or not hasattr(caught.value.__cause__, "doc")  # no body kept
    assert "jane" not in str(caught.value).lower()  # never an address or diagnostic in the text
    assert "user unknown" not in str(caught.value).lower()
    return caught.value.reason


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """SigningCertURL is never fetched (nor anything else)."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a webhook parser opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- SES: the mapping ---------------------------------------------------------------------------


def test_a_permanent_bounce_is_a_hard_bounce_of_exactly_that_event(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    result = ses(bounce_event(), verifier, sns_key)
    assert result == WebhookResult(
        reports=(
            Report(
                source=Source.SES,
                kind=Kind.BOUNCED,
                occurred_at=datetime(2026, 12, 7, 7, 59, 30, 500000, tzinfo=UTC),
                status_code="5.1.1",
                bounce_type="hard",
                event_id=EVENT_ID,
                message_id=OUR_MESSAGE_ID,
                recipient=ADDRESS,
                recipient_domain="example.com",
            ),
        )
    )
    assert "jane" not in repr(result)  # the recipient is not in a report's repr (logs)
    assert "User unknown" not in repr(result)


@pytest.mark.parametrize(
    ("bounce_type", "expected"), [("Permanent", "hard"), ("Transient", "soft"), ("Undetermined", "soft")]
)
def test_bounce_types(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, bounce_type: str, expected: str
) -> None:
    (report,) = ses(bounce_event(bounce_type, status="4.4.7"), verifier, sns_key).reports
    assert (report.kind, report.bounce_type, report.status_code) == (Kind.BOUNCED, expected, "4.4.7")


@pytest.mark.parametrize("bounce_type", [None, 5, ["Permanent"], {"a": 1}, "permanent", ""])
def test_an_odd_bounce_type_is_soft_never_a_crash(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, bounce_type: object
) -> None:
    event = bounce_event()
    event["bounce"]["bounceType"] = bounce_type
    (report,) = ses(event, verifier, sns_key).reports
    assert report.bounce_type == "soft"


def test_each_bounced_recipient_is_a_report_and_a_bad_entry_is_skipped(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    event = bounce_event()
    event["bounce"]["bouncedRecipients"] = [
        {"emailAddress": "a@one.example", "status": "5.1.1"},
        {"emailAddress": "b@Two.Example", "diagnosticCode": "smtp; 550 5.7.1 rejected by policy"},
        {"emailAddress": "c@three.example"},
        {"emailAddress": "d@four.example", "status": 511, "diagnosticCode": ["5.1.1"]},
        "e@five.example",
        {"emailAddress": ["f@six.example"]},
        {"emailAddress": "no-at-sign"},
        None,
    ]
    result = ses(event, verifier, sns_key)
    assert [(r.recipient, r.recipient_domain, r.status_code) for r in result.reports] == [
        ("a@one.example", "one.example", "5.1.1"),
        ("b@Two.Example", "two.example", "5.7.1"),  # from the diagnostic: only the code is kept
        ("c@three.example", "three.example", None),
        ("d@four.example", "four.example", None),
    ]
    assert result.malformed == 4
    assert all(r.event_id == EVENT_ID and r.bounce_type == "hard" for r in result.reports)


def test_a_complaint_is_complained_per_recipient(verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey) -> None:
    event: dict[str, Any] = {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": ADDRESS}, {"emailAddress": "x@other.example"}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2026-12-07T07:58:00.000Z",
            "timestamp": "2026-12-07T07:59:01.000Z",
            "feedbackId": "0102018f-complaint-000000",
        },
        "mail": ses_mail(),
    }
    result = ses(event, verifier, sns_key)
    assert [(r.kind, r.bounce_type, r.status_code, r.recipient_domain) for r in result.reports] == [
        (Kind.COMPLAINED, None, None, "example.com"),
        (Kind.COMPLAINED, None, None, "other.example"),
    ]
    assert result.reports[0].occurred_at == datetime(2026, 12, 7, 7, 59, 1, tzinfo=UTC)
    assert result.reports[0].event_id == EVENT_ID
    event["complaint"]["complaintFeedbackType"] = "not-spam"
    assert ses(event, verifier, sns_key) == WebhookResult(ignored=1)


def test_a_delivery_in_event_publishing_form_is_delivered_per_recipient(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    event = {
        "eventType": "Delivery",
        "mail": ses_mail(),
        "delivery": {
            "timestamp": "2026-12-07T07:59:02.000+00:00",
            "processingTimeMillis": 546,
            "recipients": [ADDRESS, "ünïcødé@bücher.DE"],
            "smtpResponse": "250 ok: Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    }
    result = ses(event, verifier, sns_key)
    assert [(r.kind, r.recipient, r.recipient_domain, r.status_code) for r in result.reports] == [
        (Kind.DELIVERED, ADDRESS, "example.com", None),
        (Kind.DELIVERED, "ünïcødé@bücher.DE", "bücher.de", None),
    ]
    assert result.reports[1].occurred_at == datetime(2026, 12, 7, 7, 59, 2, tzinfo=UTC)


def test_a_delivery_delay_is_delayed_with_its_status(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    event = {
        "eventType": "DeliveryDelay",
        "mail": ses_mail(),
        "deliveryDelay": {
            "timestamp": "2026-12-07T07:59:40.000Z",
            "delayType": "TransientCommunicationFailure",
            "expirationTime": "2026-12-08T07:59:00.000Z",
            "delayedRecipients": [
                {
                    "emailAddress": ADDRESS,
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect",
                }
            ],
        },
    }
    (report,) = ses(event, verifier, sns_key).reports
    assert (report.kind, report.status_code, report.bounce_type, report.event_id) == (
        Kind.DELAYED,
        "4.4.1",
        None,
        EVENT_ID,
    )


@pytest.mark.parametrize(
    "event",
    [
        {"eventType": "Send", "mail": {}, "send": {}},
        {"eventType": "Open", "mail": {}, "open": {"ipAddress": "192.0.2.1"}},
        {"eventType": "Click", "mail": {}},
        {"eventType": "Reject", "mail": {}, "reject": {"reason": "Bad content"}},
        {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed"},
    ],
)
def test_other_ses_events_are_ignored(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, event: dict[str, Any]
) -> None:
    assert ses(event, verifier, sns_key) == WebhookResult(ignored=1)


def test_the_event_is_found_through_the_original_message_id(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    # SES put its own id in commonHeaders: the original header still names ours
    event = bounce_event()
    event["mail"]["commonHeaders"]["messageId"] = "<0102018f1c2d3e4f@eu-west-1.amazonses.com>"
    event["mail"]["headers"][-1]["name"] = "message-id"
    (report,) = ses(event, verifier, sns_key).reports
    assert (report.event_id, report.message_id) == (EVENT_ID, OUR_MESSAGE_ID)
    # not one of ours: reported, uncorrelated
    foreign = bounce_event()
    foreign["mail"] = ses_mail("<CAF=abc@mail.gmail.com>")
    (report,) = ses(foreign, verifier, sns_key).reports
    assert (report.event_id, report.message_id, report.kind) == (None, None, Kind.BOUNCED)
    # no headers kept at all, or headers of the wrong types
    for mail in ({"messageId": "x"}, {"headers": "Message-ID: x", "commonHeaders": ["x"]}):
        event = bounce_event()
        event["mail"] = mail
        (report,) = ses(event, verifier, sns_key).reports
        assert report.event_id is None
    event = bounce_event()
    event["mail"]["headers"] = [
        None,
        1,
        {"name": 5},
        {"name": "Message-ID", "value": 7},
        *event["mail"]["headers"],
    ]
    del event["mail"]["commonHeaders"]
    assert ses(event, verifier, sns_key).reports[0].event_id == EVENT_ID


def test_a_timestamp_the_event_lacks_is_the_mails_or_none(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    event = bounce_event()
    del event["bounce"]["timestamp"]
    assert ses(event, verifier, sns_key).reports[0].occurred_at == datetime(2026, 12, 7, 7, 59, tzinfo=UTC)
    for nonsense in (
        "yesterday",
        "2026-12-07T07:59:00",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",
        "2026-12-07T07:59:00+25:00",
        1765094340,
        None,
        "9" * 500,
    ):
        event["mail"]["timestamp"] = nonsense
        assert ses(event, verifier, sns_key).reports[0].occurred_at is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.pop("bounce"),
        lambda e: e.update(bounce="Permanent"),
        lambda e: e.pop("mail"),
        lambda e: e.update(mail=[]),
        lambda e: e["bounce"].pop("bouncedRecipients"),
        lambda e: e["bounce"].update(bouncedRecipients=[]),
        lambda e: e["bounce"].update(bouncedRecipients={"emailAddress": ADDRESS}),
        lambda e: e.update(notificationType=["Bounce"]),
        lambda e: e.pop("notificationType"),
    ],
)
def test_a_signed_ses_event_of_the_wrong_shape_is_unparseable(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, mutate: Callable[[dict[str, Any]], object]
) -> None:
    event = bounce_event()
    mutate(event)
    assert refused(lambda: ses(event, verifier, sns_key)) == "unparseable"


@pytest.mark.parametrize(
    "message", ["Hello world!", "[1, 2]", "null", '"Bounce"', "{", "[" * 50000 + "]" * 50000]
)
def test_a_signed_message_that_is_no_ses_event_is_unparseable(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, message: str
) -> None:
    assert refused(lambda: ses(message, verifier, sns_key)) == "unparseable"


def test_many_recipients(verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey) -> None:
    event = bounce_event()
    event["bounce"]["bouncedRecipients"] = [
        {"emailAddress": f"r{i}@example.com", "status": "5.1.1"} for i in range(5000)
    ]
    result = ses(event, verifier, sns_key)
    assert len(result.reports) == 5000
    assert result.reports[-1].recipient == "r4999@example.com"


# --- SNS: the signature and everything around it --------------------------------------------------


def test_version_1_is_refused_unless_allowed_and_then_verified_with_sha1(
    sns_cert: x509.Certificate, verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    signed = body(sign_sns(notification(bounce_event()), sns_key, version="1"))
    assert refused(lambda: parse_ses(signed, verifier)) == "signature_version"
    lenient = SnsVerifier([sns_cert], [TOPIC], min_signature_version=1, clock=clock)
    assert parse_ses(signed, lenient).reports[0].kind is Kind.BOUNCED
    # a SHA-256 signature presented as version 1 (or the reverse) does not verify
    message = sign_sns(notification(bounce_event()), sns_key, version="2")
    message["SignatureVersion"] = "1"
    assert refused(lambda: parse_ses(body(message), lenient)) == "bad_signature"
    message = sign_sns(notification(bounce_event()), sns_key, version="1")
    message["SignatureVersion"] = "2"
    assert refused(lambda: parse_ses(body(message), lenient)) == "bad_signature"


@pytest.mark.parametrize("version", [None, 2, "3", "0", "", ["2"], "2 "])
def test_an_unknown_signature_version_is_refused(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, version: object
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    if version is None:
        del message["SignatureVersion"]
    else:
        message["SignatureVersion"] = version
    assert refused(lambda: parse_ses(body(message), verifier)) == "signature_version"


@pytest.mark.parametrize(
    "field",
    ["Message", "MessageId", "Timestamp", "TopicArn"],
)
def test_a_signature_over_other_values_does_not_verify(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, field: str
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    replacement = {
        "Message": json.dumps(bounce_event("Permanent", emailAddress="ceo@shop.example")),
        "MessageId": "00000000-0000-0000-0000-000000000000",
        "Timestamp": "2026-12-07T07:59:59.123Z",
        "TopicArn": OTHER_TOPIC,
    }
    message[field] = replacement[field]
    assert refused(lambda: parse_ses(body(message), verifier)) == "bad_signature"


def test_a_valid_signature_from_another_message_does_not_verify(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    genuine = sign_sns(notification(bounce_event("Transient")), sns_key)
    forged = sign_sns(notification(bounce_event("Permanent")), sns_key)
    forged["Signature"] = genuine["Signature"]
    assert refused(lambda: parse_ses(body(forged), verifier)) == "bad_signature"


def test_the_subject_is_signed_when_present(verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey) -> None:
    message = sign_sns(notification(bounce_event(), Subject="Amazon SES Email Event Notification"), sns_key)
    assert parse_ses(body(message), verifier).reports
    message["Subject"] = "Something else"
    assert refused(lambda: parse_ses(body(message), verifier)) == "bad_signature"
    del message["Subject"]
    assert refused(lambda: parse_ses(body(message), verifier)) == "bad_signature"


@pytest.mark.parametrize("signature", [None, "", "not base64!", "QUJD", 12, ["QUJD"], "A" * 5000])
def test_a_missing_or_garbled_signature_is_refused(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, signature: object
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    if signature is None:
        del message["Signature"]
    else:
        message["Signature"] = signature
    assert refused(lambda: parse_ses(body(message), verifier)) in {"missing_signature", "bad_signature"}


def test_a_message_signed_by_another_key_is_refused_whatever_its_certificate_url(
    verifier: SnsVerifier, forger_key: rsa.RSAPrivateKey
) -> None:
    message = sign_sns(notification(bounce_event()), forger_key)
    assert refused(lambda: parse_ses(body(message), verifier)) == "bad_signature"


@pytest.mark.parametrize(
    "url",
    [
        None,
        5,
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://attacker.example/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com.attacker.example/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com@attacker.example/SimpleNotificationService-abc.pem",
        "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.txt",
        "https://[::1/x.pem",
        "file:///etc/ssl/cert.pem",
    ],
)
def test_a_certificate_url_that_is_not_snss_is_untrusted(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, url: object
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    message["SigningCertURL"] = url
    assert refused(lambda: parse_ses(body(message), verifier)) == "untrusted_certificate"


def test_a_china_region_certificate_url_is_an_sns_one(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    message["SigningCertURL"] = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"
    assert parse_ses(body(message), verifier).reports


def test_a_genuine_message_from_another_topic_is_refused(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    message = sign_sns(notification(bounce_event(), TopicArn=OTHER_TOPIC), sns_key)
    assert refused(lambda: parse_ses(body(message), verifier)) == "untrusted_topic"


@pytest.mark.parametrize(
    ("published", "reason"),
    [
        ("2026-12-07T06:54:00.000Z", "stale"),  # 1 h 6 min old: outside the default window
        ("2026-12-07T06:56:00.000Z", None),  # 1 h 4 min: an SNS retry, still accepted
        ("2026-12-07T08:04:00.000Z", None),  # 4 min ahead: clock skew
        ("2026-12-07T08:06:00.000Z", "stale"),  # 6 min ahead
        ("2020-01-01T00:00:00.000Z", "stale"),
        ("2026-12-07T07:59:58", "unparseable"),  # no zone
        ("last tuesday", "unparseable"),
    ],
)
def test_a_replayed_or_future_message_is_refused(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, published: str, reason: str | None
) -> None:
    signed = body(sign_sns(notification(bounce_event(), Timestamp=published), sns_key))
    if reason is None:
        assert parse_ses(signed, verifier).reports
    else:
        assert refused(lambda: parse_ses(signed, verifier)) == reason


def test_the_window_is_configurable(sns_cert: x509.Certificate, sns_key: rsa.RSAPrivateKey) -> None:
    strict = SnsVerifier([sns_cert], [TOPIC], max_age=timedelta(minutes=1), clock=clock)
    old = body(sign_sns(notification(bounce_event(), Timestamp="2026-12-07T07:58:30Z"), sns_key))
    assert refused(lambda: parse_ses(old, strict)) == "stale"


def test_an_expired_configured_certificate_is_not_trusted(
    sns_cert: x509.Certificate, sns_key: rsa.RSAPrivateKey
) -> None:
    later = NOW + timedelta(days=61)
    moving = [NOW]
    verifier = SnsVerifier([sns_cert], [TOPIC], clock=lambda: moving[0])
    moving[0] = later
    message = sign_sns(notification(bounce_event(), Timestamp="2027-02-06T07:59:58.000Z"), sns_key)
    assert refused(lambda: parse_ses(body(message), verifier)) == "untrusted_certificate"
    with pytest.raises(WebhookConfigError, match="valid now"):
        SnsVerifier([sns_cert], [TOPIC], clock=lambda: later)


def test_a_rotation_trusts_both_configured_certificates(
    sns_cert: x509.Certificate, sns_key: rsa.RSAPrivateKey, forger_key: rsa.RSAPrivateKey, tmp_path: Any
) -> None:
    new_cert = _certificate(
        forger_key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=400)
    )
    path = tmp_path / "sns.pem"
    path.write_bytes(_pem(sns_cert, new_cert))
    verifier = SnsVerifier.from_file(path, [TOPIC], clock=clock)
    for key in (sns_key, forger_key):
        assert parse_ses(body(sign_sns(notification(bounce_event()), key)), verifier).reports


def test_a_subscription_confirmation_is_handed_to_an_operator(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey
) -> None:
    token = "2336412f37fb687f5d51e6e2425f004aed6f9f7ac9a1bd0f1234567890abcdef"
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}",
        "Timestamp": "2026-12-07T07:59:00.000Z",
    }
    signed = sign_sns(message, sns_key)
    result = parse_ses(body(signed), verifier, message_type="SubscriptionConfirmation")
    assert result.reports == ()
    assert result.subscription is not None
    assert (result.subscription.type, result.subscription.topic_arn, result.subscription.token) == (
        "SubscriptionConfirmation",
        TOPIC,
        token,
    )
    assert result.subscription.subscribe_url == message["SubscribeURL"]
    assert f"--topic-arn {TOPIC} --token {token}" in result.subscription.instructions()
    # the URL and token are signed: a forger cannot make an operator confirm his own subscription
    for field in ("SubscribeURL", "Token"):
        forged = dict(
            signed, **{field: "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&x=1"}
        )
        with pytest.raises(WebhookError, match="bad_signature"):
            parse_ses(body(forged), verifier)
    # an unsubscription is reported too, and from a foreign topic neither is accepted
    unsubscribed = sign_sns(dict(message, Type="UnsubscribeConfirmation"), sns_key)
    notice = parse_ses(body(unsubscribed), verifier).subscription
    assert notice is not None
    assert notice.type == "UnsubscribeConfirmation"
    assert "unsubscribed" in notice.instructions()
    foreign = sign_sns(dict(message, TopicArn=OTHER_TOPIC), sns_key)
    assert refused(lambda: parse_ses(body(foreign), verifier)) == "untrusted_topic"


def test_the_message_type_header_must_agree(verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey) -> None:
    signed = body(sign_sns(notification(bounce_event()), sns_key))
    assert parse_ses(signed, verifier, message_type="Notification").reports
    assert (
        refused(lambda: parse_ses(signed, verifier, message_type="SubscriptionConfirmation")) == "unparseable"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
        b"[]",
        b"null",
        b'"Notification"',
        b'{"Type": "Notification"}',
        b'{"Type": ["Notification"]}',
        b'{"Type": {"a": 1}}',
        b'{"Type": "Bounce"}',
        b'{"Type": NaN}',
        b'{"Type": 1' + b"0" * 5000 + b"}",
        b"[" * 100000 + b"]" * 100000,
        b'{"a":' * 100000 + b"1" + b"}" * 100000,
        json.dumps(bounce_event()).encode(),  # raw message delivery: SES JSON without SNS around it
    ],
)
def test_an_unreadable_sns_body_is_unparseable(verifier: SnsVerifier, raw: bytes) -> None:
    assert refused(lambda: parse_ses(raw, verifier)) == "unparseable"


@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn"])
@pytest.mark.parametrize("value", [None, 1, ["x"], {"x": 1}, True])
def test_a_signed_field_of_the_wrong_type_is_unparseable(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, field: str, value: object
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    message[field] = value
    assert refused(lambda: parse_ses(body(message), verifier)) == "unparseable"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
SES_KEYS = st.sampled_from(
    [
        "notificationType",
        "eventType",
        "bounce",
        "complaint",
        "delivery",
        "deliveryDelay",
        "mail",
        "bounceType",
        "bouncedRecipients",
        "complainedRecipients",
        "recipients",
        "delayedRecipients",
        "emailAddress",
        "status",
        "diagnosticCode",
        "timestamp",
        "commonHeaders",
        "headers",
        "messageId",
        "name",
        "value",
        "complaintFeedbackType",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.lists(SES_KEYS | st.integers(0, 2), min_size=1, max_size=4),
    value=JSON | st.sampled_from(["Bounce", "Complaint", "Delivery", "DeliveryDelay", "Permanent"]),
)
def test_any_signed_ses_event_gives_reports_or_a_reason(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, path: list[str | int], value: object
) -> None:
    """Whatever value lands wherever in a real event: a result or a WebhookError, nothing else."""
    event: Any = copy.deepcopy(bounce_event())
    target = event
    for step in path[:-1]:
        if isinstance(target, dict) and isinstance(step, str):
            target = target.setdefault(step, {})
        elif isinstance(target, list) and isinstance(step, int) and step < len(target):
            target = target[step]
    if isinstance(target, dict) and isinstance(path[-1], str):
        target[path[-1]] = value
    reason: str | None
    try:
        result = ses(event, verifier, sns_key)
    except WebhookError as error:
        reason = error.reason
    else:
        reason = None
        assert all(isinstance(r, Report) and r.source is Source.SES for r in result.reports)
    assert reason in {None, "unparseable"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "Type",
                "Message",
                "MessageId",
                "Timestamp",
                "TopicArn",
                "Subject",
                "Signature",
                "SignatureVersion",
                "SigningCertURL",
                "SubscribeURL",
                "Token",
            ]
        ),
        JSON,
        max_size=5,
    )
)
def test_any_sns_envelope_is_refused_with_a_reason(
    verifier: SnsVerifier, sns_key: rsa.RSAPrivateKey, fields: dict[str, Any]
) -> None:
    message = sign_sns(notification(bounce_event()), sns_key)
    message.update(fields)
    with contextlib.suppress(WebhookError):  # anything else fails the test
        parse_ses(body(message), verifier)


# --- SNS: configuration ---------------------------------------------------------------------------


def test_configuration_that_cannot_work_is_refused_at_start(
    sns_cert: x509.Certificate, sns_key: rsa.RSAPrivateKey, tmp_path: Any
) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505  (refused)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(ec_key, hashes.SHA256())
    )
    small_cert = _certificate(small, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1))
    attempts: list[Callable[[], object]] = [
        lambda: SnsVerifier([], [TOPIC], clock=clock),
        lambda: SnsVerifier([ec_cert], [TOPIC], clock=clock),
        lambda: SnsVerifier([small_cert], [TOPIC], clock=clock),
        lambda: SnsVerifier([sns_cert], [], clock=clock),
        lambda: SnsVerifier([sns_cert], TOPIC, clock=clock),  # a string, not a list of ARNs
        lambda: SnsVerifier([sns_cert], ["ordermail-ses-events"], clock=clock),
        lambda: SnsVerifier([sns_cert], [TOPIC, "arn:aws:sqs:eu-west-1:123456789012:q"], clock=clock),
        lambda: SnsVerifier([sns_cert], [TOPIC], min_signature_version=3, clock=clock),
        lambda: SnsVerifier([sns_cert], [TOPIC], max_age=timedelta(0), clock=clock),
        lambda: SnsVerifier.from_pem(
            b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", [TOPIC]
        ),
        lambda: SnsVerifier.from_pem(b"", [TOPIC]),
        lambda: SnsVerifier.from_file(tmp_path / "missing.pem", [TOPIC]),
    ]
    for attempt in attempts:
        with pytest.raises(WebhookConfigError):
            attempt()
    assert isinstance(SnsVerifier.from_pem(_pem(sns_cert), [TOPIC], clock=clock), SnsVerifier)


# --- SendGrid ------------------------------------------------------------------------------------

SENT_AT = int(NOW.timestamp()) - 30


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _setting(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid's settings page shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def sendgrid(sendgrid_key: ec.EllipticCurvePrivateKey) -> SendGridVerifier:
    return SendGridVerifier.from_setting(_setting(sendgrid_key), clock=clock)


def sign_sendgrid(
    raw: bytes, key: ec.EllipticCurvePrivateKey, timestamp: str | None = None
) -> dict[str, str]:
    timestamp = timestamp or str(int(NOW.timestamp()) - 5)
    signature = key.sign(timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: timestamp}


def post(events: Any, verifier: SendGridVerifier, key: ec.EllipticCurvePrivateKey) -> WebhookResult:
    raw = json.dumps(events).encode()
    headers = sign_sendgrid(raw, key)
    return parse_sendgrid(
        raw, verifier, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
    )


def sg_event(event: str, **fields: Any) -> dict[str, Any]:
    base = {
        "email": ADDRESS,
        "timestamp": SENT_AT,
        "smtp-id": OUR_MESSAGE_ID,
        "event": event,
        "category": ["receipt"],
        "sg_event_id": "sg_event_id_" + event,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    base.update(fields)
    return base


def test_every_sendgrid_event_maps_or_is_ignored(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    events = [
        sg_event("processed"),
        sg_event("delivered", response="250 2.0.0 OK 1765094370 a1si1234"),
        sg_event("deferred", response="421 4.7.0 Try again later, closing connection.", attempt="5"),
        sg_event(
            "bounce", type="bounce", status="5.1.1", reason="550 5.1.1 The email account does not exist."
        ),
        sg_event("bounce", type="blocked", status="5.7.1", reason="550 5.7.1 blocked by reputation"),
        sg_event("dropped", reason="Bounced Address", status="5.0.0"),
        sg_event("dropped", reason="Spam Reporting Address"),
        sg_event("dropped", reason="Unsubscribed Address"),
        sg_event("spamreport"),
        sg_event("open", useragent="Mozilla/5.0", ip="192.0.2.1"),
        sg_event("click", url="https://shop.example/"),
        sg_event("unsubscribe"),
        sg_event("group_unsubscribe", asm_group_id=10),
        sg_event("group_resubscribe", asm_group_id=10),
    ]
    result = post(events, sendgrid, sendgrid_key)
    assert [(r.kind, r.bounce_type, r.status_code) for r in result.reports] == [
        (Kind.DELIVERED, None, None),
        (Kind.DELAYED, None, "4.7.0"),
        (Kind.BOUNCED, "hard", "5.1.1"),
        (Kind.BOUNCED, "soft", "5.7.1"),  # blocked: soft whatever the code
        (Kind.BOUNCED, "hard", None),  # dropped, SendGrid already suppresses it
        (Kind.BOUNCED, "hard", None),
        (Kind.COMPLAINED, None, None),
    ]
    assert (result.ignored, result.malformed) == (7, 0)
    for report in result.reports:
        assert report.source is Source.SENDGRID
        assert (report.event_id, report.message_id) == (EVENT_ID, OUR_MESSAGE_ID)
        assert (report.recipient, report.recipient_domain) == (ADDRESS, "example.com")
        assert report.occurred_at == datetime.fromtimestamp(SENT_AT, UTC)
    assert "jane" not in repr(result)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "bounce", "status": "5.1.1"}, ("hard", "5.1.1")),
        ({"type": "bounce", "status": "4.2.2"}, ("soft", "4.2.2")),
        ({"type": "bounce", "status": "5.2.2"}, ("soft", "5.2.2")),  # mailbox full
        ({"type": "bounce"}, ("hard", None)),
        ({"type": "bounce", "status": "", "reason": "452 4.2.2 Mailbox full"}, ("soft", "4.2.2")),
        ({"status": "5.0.0"}, ("hard", "5.0.0")),
        ({"type": "blocked", "status": "4.0.0"}, ("soft", "4.0.0")),
        ({"type": "blocked"}, ("soft", None)),
        ({"type": ["bounce"], "status": 511}, ("hard", None)),
    ],
)
def test_sendgrid_bounces_are_hard_unless_transient_or_blocked(
    sendgrid: SendGridVerifier,
    sendgrid_key: ec.EllipticCurvePrivateKey,
    fields: dict[str, Any],
    expected: tuple[str, str | None],
) -> None:
    (report,) = post([sg_event("bounce", **fields)], sendgrid, sendgrid_key).reports
    assert (report.bounce_type, report.status_code) == expected


def test_sendgrid_events_are_correlated_through_smtp_id_or_the_custom_argument(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    other = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    events = [
        sg_event("delivered"),
        sg_event(
            "delivered",
            **{"smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>", CUSTOM_ARG_EVENT_ID: other.upper()},
        ),
        sg_event("spamreport", **{CUSTOM_ARG_EVENT_ID: other}),  # spam reports carry no smtp-id
        sg_event("delivered", **{"smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>"}),
        sg_event("delivered", **{"smtp-id": 5, CUSTOM_ARG_EVENT_ID: "not-a-uuid"}),
        sg_event("delivered", **{"smtp-id": "<" + "a" * 5000 + ">", CUSTOM_ARG_EVENT_ID: ["x"]}),
    ]
    events[2].pop("smtp-id")
    result = post(events, sendgrid, sendgrid_key)
    assert [(r.event_id, r.message_id) for r in result.reports] == [
        (EVENT_ID, OUR_MESSAGE_ID),
        (other, None),
        (other, None),
        (None, None),
        (None, None),
        (None, None),
    ]


def test_sendgrid_entries_that_cannot_be_read_are_skipped_and_counted(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    events = [
        None,
        1,
        "delivered",
        [sg_event("delivered")],
        {"event": ["delivered"], "email": ADDRESS},
        {"email": ADDRESS},
        sg_event("delivered", email=None),
        sg_event("delivered", email=["x@example.com"]),
        sg_event("delivered", email="not an address"),
        sg_event("delivered", email="x@example.com\r\nBcc: y@example.com"),
        sg_event("delivered", email="ÉLODIE@Bücher.DE", timestamp="1765094370"),
        sg_event("delivered", timestamp=True),
        sg_event("delivered", timestamp=10**30),
        sg_event("delivered", timestamp=-5),
        sg_event("delivered", timestamp=1765094370.5),
        sg_event("delivered", timestamp=float("inf")),
    ]
    raw = json.dumps(events).encode()  # json.dumps writes Infinity: refused by the parser
    headers = sign_sendgrid(raw, sendgrid_key)
    assert (
        refused(
            lambda: parse_sendgrid(
                raw, sendgrid, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
            )
        )
        == "unparseable"
    )
    result = post(events[:-1], sendgrid, sendgrid_key)
    assert result.malformed == 10
    assert [(r.recipient, r.recipient_domain, r.occurred_at) for r in result.reports] == [
        ("ÉLODIE@Bücher.DE", "bücher.de", None),
        (ADDRESS, "example.com", None),
        (ADDRESS, "example.com", None),
        (ADDRESS, "example.com", None),
        (ADDRESS, "example.com", datetime(2025, 12, 7, 7, 59, 30, 500000, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    "raw", [b"", b"{}", b'{"event": "bounce"}', b"null", b"not json", b"\xff", b"[" * 100000 + b"]" * 100000]
)
def test_a_signed_sendgrid_body_that_is_no_event_array_is_unparseable(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey, raw: bytes
) -> None:
    headers = sign_sendgrid(raw, sendgrid_key)
    reason = refused(
        lambda: parse_sendgrid(
            raw, sendgrid, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
        )
    )
    assert reason == "unparseable"


def test_an_empty_sendgrid_batch_is_accepted(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    assert post([], sendgrid, sendgrid_key) == WebhookResult()


def test_the_sendgrid_signature_covers_the_timestamp_and_the_raw_body(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    raw = json.dumps([sg_event("bounce", type="bounce", status="5.1.1")]).encode()
    headers = sign_sendgrid(raw, sendgrid_key)
    signature, timestamp = headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]
    assert parse_sendgrid(raw, sendgrid, signature=signature, timestamp=timestamp).reports
    other_body = raw.replace(b"jane.doe", b"ceo")
    assert (
        refused(lambda: parse_sendgrid(other_body, sendgrid, signature=signature, timestamp=timestamp))
        == "bad_signature"
    )
    reformatted = json.dumps(json.loads(raw), indent=1).encode()  # same JSON, other bytes
    assert (
        refused(lambda: parse_sendgrid(reformatted, sendgrid, signature=signature, timestamp=timestamp))
        == "bad_signature"
    )
    later = str(int(timestamp) + 1)
    assert (
        refused(lambda: parse_sendgrid(raw, sendgrid, signature=signature, timestamp=later))
        == "bad_signature"
    )
    # a valid signature over another body (another request) does not verify this one
    other = sign_sendgrid(b"[]", sendgrid_key, timestamp=timestamp)[SIGNATURE_HEADER]
    assert (
        refused(lambda: parse_sendgrid(raw, sendgrid, signature=other, timestamp=timestamp))
        == "bad_signature"
    )


@pytest.mark.parametrize(
    ("signature", "timestamp", "reason"),
    [
        (None, "1765094395", "missing_signature"),
        ("", "1765094395", "missing_signature"),
        ("MEUCIQ==", None, "missing_signature"),
        ("MEUCIQ==", "", "missing_signature"),
        ("not base64!", "1765094395", "bad_signature"),
        ("QUJD", "1765094395", "bad_signature"),
        ("A" * 1000, "1765094395", "bad_signature"),
        ("MEUCIQ==", "1765094395.0", "bad_signature"),
        ("MEUCIQ==", "-1765094395", "bad_signature"),
        ("MEUCIQ==", "١٧٦٥٠٩٤٣٩٥", "bad_signature"),  # Arabic-Indic digits: int() would take them
        ("MEUCIQ==", "9" * 40, "bad_signature"),
    ],
)
def test_missing_or_garbled_sendgrid_headers_are_refused(
    sendgrid: SendGridVerifier, signature: str | None, timestamp: str | None, reason: str
) -> None:
    assert (
        refused(lambda: parse_sendgrid(b"[]", sendgrid, signature=signature, timestamp=timestamp)) == reason
    )


def test_a_request_signed_by_another_key_is_refused(sendgrid: SendGridVerifier) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert refused(lambda: post([sg_event("delivered")], sendgrid, other)) == "bad_signature"


@pytest.mark.parametrize(
    ("age", "reason"),
    [
        (timedelta(hours=25), "stale"),
        (timedelta(hours=23), None),
        (timedelta(minutes=-4), None),
        (timedelta(minutes=-6), "stale"),
        (timedelta(days=-(10**5)), "stale"),
    ],
)
def test_a_replayed_sendgrid_request_is_refused(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey, age: timedelta, reason: str | None
) -> None:
    raw = b"[]"
    headers = sign_sendgrid(raw, sendgrid_key, timestamp=str(int((NOW - age).timestamp())))

    def call() -> WebhookResult:
        return parse_sendgrid(
            raw, sendgrid, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
        )

    if reason is None:
        assert call() == WebhookResult()
    else:
        assert refused(call) == reason
    strict = SendGridVerifier.from_setting(_setting(sendgrid_key), max_age=timedelta(minutes=5), clock=clock)
    if age > timedelta(minutes=5):
        assert (
            refused(
                lambda: parse_sendgrid(
                    raw, strict, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
                )
            )
            == "stale"
        )


def test_the_sendgrid_key_is_read_as_shown_or_as_pem(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    shown = _setting(sendgrid_key)
    pem = (
        sendgrid_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    wrapped = "\n".join(shown[i : i + 40] for i in range(0, len(shown), 40))
    for text in (shown, f"  {shown}\n", wrapped, pem):
        verifier = SendGridVerifier.from_setting(text, clock=clock)
        assert post([sg_event("delivered")], verifier, sendgrid_key).reports


def test_a_sendgrid_key_that_cannot_work_is_refused_at_start() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for key in (p384, rsa_key):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(WebhookConfigError):
            SendGridVerifier.from_setting(base64.b64encode(der).decode())
    for text in (
        "",
        "not base64!",
        "QUJD",
        "-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----",
        "clé",
    ):
        with pytest.raises(WebhookConfigError):
            SendGridVerifier.from_setting(text)
    with pytest.raises(WebhookConfigError):
        SendGridVerifier(p384.public_key())
    with pytest.raises(WebhookConfigError):
        SendGridVerifier(ec.generate_private_key(ec.SECP256R1()).public_key(), max_age=timedelta(seconds=-1))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "email",
                    "timestamp",
                    "smtp-id",
                    "type",
                    "status",
                    "reason",
                    "response",
                    CUSTOM_ARG_EVENT_ID,
                ]
            ),
            JSON
            | st.sampled_from(
                [
                    "bounce",
                    "dropped",
                    "deferred",
                    "delivered",
                    "spamreport",
                    "Bounced Address",
                    ADDRESS,
                    OUR_MESSAGE_ID,
                    EVENT_ID,
                ]
            ),
        )
        | JSON,
        max_size=6,
    )
)
def test_any_signed_sendgrid_batch_gives_reports(
    sendgrid: SendGridVerifier, sendgrid_key: ec.EllipticCurvePrivateKey, events: list[Any]
) -> None:
    result = post(events, sendgrid, sendgrid_key)
    assert len(result.reports) + result.ignored + result.malformed == len(events)
    for report in result.reports:
        assert report.recipient is not None
        assert (report.kind is Kind.BOUNCED) == (report.bounce_type is not None)


# --- shared helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.example", ("a@b.example", "b.example")),
        (" A@B.Example ", ("A@B.Example", "b.example")),
        ('"odd@local"@x.example', ('"odd@local"@x.example', "x.example")),
        ("Jane <jane@example.com>", (None, None)),
        ("@example.com", (None, None)),
        ("jane@", (None, None)),
        ("jane", (None, None)),
        ("ja ne@example.com", (None, None)),
        ("jane@exa\x00mple.com", (None, None)),
        ("jane@example.com\u2028", ("jane@example.com", "example.com")),  # strip() removes U+2028
        ("x" * 400 + "@example.com", (None, None)),
        ("x@" + "d" * 256, (None, None)),
        (None, (None, None)),
        (5, (None, None)),
    ],
)
def test_recipient_parts(value: object, expected: tuple[str | None, str | None]) -> None:
    assert recipient_parts(value) == expected


def test_lone_surrogates_and_non_ascii_message_ids_are_refused_or_uncorrelated(
    verifier: SnsVerifier,
    sns_key: rsa.RSAPrivateKey,
    sendgrid: SendGridVerifier,
    sendgrid_key: ec.EllipticCurvePrivateKey,
) -> None:
    # "\ud800" is valid JSON but no Unicode: SNS cannot have signed it
    raw = body(sign_sns(notification(bounce_event()), sns_key)).replace(
        b'"Type": "Notification"', b'"Type": "Notification", "Subject": "\\ud800"'
    )
    assert refused(lambda: parse_ses(raw, verifier)) == "unparseable"
    event = bounce_event()
    event["mail"] = ses_mail(f"<{EVENT_ID}.ordermail@sh\u00f6p.example>")
    (report,) = ses(event, verifier, sns_key).reports
    assert (report.event_id, report.message_id) == (None, None)
    events = [
        sg_event("delivered", **{"smtp-id": f"<{EVENT_ID}.ordermail@\ud800>"}),
        sg_event("delivered", email="\ud800@example.com"),
    ]
    raw = json.dumps(events).encode()  # ensure_ascii: the surrogates travel as \ud800 escapes
    headers = sign_sendgrid(raw, sendgrid_key)
    result = parse_sendgrid(
        raw, sendgrid, signature=headers[SIGNATURE_HEADER], timestamp=headers[TIMESTAMP_HEADER]
    )
    assert [(r.event_id, r.message_id) for r in result.reports] == [(None, None)]
    assert result.malformed == 1
