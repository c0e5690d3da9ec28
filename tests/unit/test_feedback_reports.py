"""Bounces and complaints read back (issue 19): DSNs (RFC 3464), ARF complaints (RFC 5965),
auto-replies (RFC 3834), and whatever else arrives at the return-path domain."""

from __future__ import annotations

import base64
import email
import quopri
from datetime import UTC, datetime

import pytest

from delivery.feedback.inbound import is_auto_reply, read_inbound
from delivery.feedback.model import Kind, Source, bounce_type_of, enhanced_code, event_id_from_message_id
from delivery.return_path import ReturnPath

SECRET = b"0123456789abcdef-not-a-real-secret"
EVENT = "2f1c8f0e-9a4b-4c1e-8e3a-0a1b2c3d4e5f"
RETURN_PATH = ReturnPath(local="orders", domain="bounces.shop.example", secret=SECRET)
VERP = RETURN_PATH.address(EVENT, 2, "bounce-1@customer.example") or ""
MESSAGE_ID = f"<{EVENT}.ordermail@shop.example>"


def postfix_dsn(
    *,
    action: str = "failed",
    status: str = "5.1.1",
    recipient: str = "bounce-1@customer.example",
    blocks: int = 1,
) -> bytes:
    """A DSN as Postfix 3.7 writes it (headers returned: RET=HDRS)."""
    block = (
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        'Diagnostic-Code: X-Postfix; unknown user: "bounce-1"\r\n'
        "Last-Attempt-Date: Mon,  7 Dec 2026 08:00:05 +0000 (UTC)\r\n"
    )
    recipients = "\r\n".join([block] * blocks)
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@relay.example (Mail Delivery System)\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: {VERP}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="B1"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n--B1\r\n"
        "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n--B1\r\n"
        "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n"
        "X-Postfix-Queue-ID: 4ABC\r\n"
        f"X-Postfix-Sender: rfc822; {VERP}\r\n"
        "Arrival-Date: Mon,  7 Dec 2026 08:00:00 +0000 (UTC)\r\n"
        "\r\n"
        f"{recipients}"
        "\r\n--B1\r\n"
        "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: orders@shop.example\r\nTo: {recipient}\r\nSubject: Your order\r\nMessage-ID: {MESSAGE_ID}\r\n"
        "\r\n--B1--\r\n"
    ).encode()


def arf(*, feedback_type: str = "abuse", mail_from: str = VERP) -> bytes:
    """A complaint as RFC 5965's example shapes it, original redacted down to its headers."""
    return (
        "From: <abusedesk@mailbox.example>\r\n"
        "To: <fbl@bounces.shop.example>\r\n"
        "Subject: FW: Your order\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="part1"\r\n'
        "\r\n--part1\r\nContent-Type: text/plain; charset=US-ASCII\r\n\r\n"
        "This is an email abuse report for an email message received from IP 192.0.2.1.\r\n"
        "\r\n--part1\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\n"
        "User-Agent: SomeGenerator/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{mail_from}>\r\n"
        "Original-Rcpt-To: <someone@mailbox.example>\r\n"
        "Arrival-Date: Mon, 7 Dec 2026 09:10:00 +0000\r\n"
        "Source-IP: 192.0.2.1\r\n"
        "\r\n--part1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{mail_from}>\r\nFrom: orders@shop.example\r\nMessage-ID: {MESSAGE_ID}\r\n"
        "\r\n--part1--\r\n"
    ).encode()


def test_a_postfix_bounce_names_exactly_its_event_and_attempt() -> None:
    inbound = read_inbound(postfix_dsn(), [VERP], RETURN_PATH)
    assert inbound.dropped is None
    [report] = inbound.reports
    assert (report.source, report.kind, report.bounce_type, report.status_code) == (
        Source.DSN,
        Kind.BOUNCED,
        "hard",
        "5.1.1",
    )
    assert (report.event_id, report.attempt) == (EVENT, 2)
    assert report.recipient == "bounce-1@customer.example"
    assert report.recipient_domain == "customer.example"
    assert report.message_id == MESSAGE_ID
    assert report.occurred_at == datetime(2026, 12, 7, 8, 0, 5, tzinfo=UTC)
    assert report.recipient_confirmed  # the token was made for this address: it may be suppressed
    assert "bounce-1" not in repr(report)  # the address never reaches a log line through repr


@pytest.mark.parametrize(
    ("action", "status", "kind", "bounce_type"),
    [
        ("delayed", "4.4.1", Kind.DELAYED, None),
        ("delivered", "2.0.0", Kind.DELIVERED, None),
        ("relayed", "2.0.0", Kind.DELIVERED, None),
        ("failed", "4.4.7", Kind.BOUNCED, "soft"),  # gave up on a transient failure
        ("failed", "5.2.2", Kind.BOUNCED, "soft"),  # mailbox full
        ("failed", "5.7.1", Kind.BOUNCED, "hard"),
    ],
)
def test_each_action_and_status_has_its_kind(
    action: str, status: str, kind: Kind, bounce_type: str | None
) -> None:
    [report] = read_inbound(postfix_dsn(action=action, status=status), [VERP], RETURN_PATH).reports
    assert (report.kind, report.bounce_type, report.status_code) == (kind, bounce_type, status)


def test_a_bounce_without_a_valid_token_is_dropped_as_unsigned() -> None:
    local, domain = VERP.split("@")
    tampered = f"{local[:37]}{'a' if local[37] != 'a' else 'b'}{local[38:]}@{domain}"  # the event's MAC
    other_event = RETURN_PATH.address("7d9f3c1e-0000-4000-8000-000000000000", 1, "x@customer.example") or ""
    forged = (
        ReturnPath(local="orders", domain="bounces.shop.example", secret=b"x" * 32).address(
            EVENT, 1, "bounce-1@customer.example"
        )
        or ""
    )
    for recipients in ([], ["fbl@bounces.shop.example"], [tampered], [forged]):
        assert read_inbound(postfix_dsn(), recipients, RETURN_PATH).dropped == "unsigned"
    # The token decides, not the returned headers (which anyone can write).
    [report] = read_inbound(postfix_dsn(), [other_event], RETURN_PATH).reports
    assert report.event_id == "7d9f3c1e-0000-4000-8000-000000000000"
    # A genuine token used in a report about somebody else: believed for its event, but the
    # address it names is not the one the token was made for, so it must not be suppressed.
    assert not report.recipient_confirmed


def test_a_complaint_is_believed_through_the_original_mail_from() -> None:
    inbound = read_inbound(arf(), ["fbl@bounces.shop.example"], RETURN_PATH)
    [report] = inbound.reports
    assert (report.source, report.kind, report.event_id, report.attempt) == (
        Source.ARF,
        Kind.COMPLAINED,
        EVENT,
        2,
    )
    assert report.recipient == "someone@mailbox.example"
    assert not report.recipient_confirmed  # the token was made for bounce-1@customer.example
    assert report.occurred_at == datetime(2026, 12, 7, 9, 10, tzinfo=UTC)
    assert read_inbound(arf(feedback_type="not-spam"), [], RETURN_PATH).dropped == "not_a_complaint"
    assert read_inbound(arf(mail_from="orders@shop.example"), [], RETURN_PATH).dropped == "unsigned"


def test_auto_replies_and_other_mail_are_noise() -> None:
    out_of_office = (
        f"From: someone@customer.example\r\nTo: {VERP}\r\nSubject: Out of office\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n"
    ).encode()
    old_style = f"From: a@b.example\r\nTo: {VERP}\r\nX-Autoreply: yes\r\n\r\nAway.\r\n".encode()
    personal = f"From: a@b.example\r\nTo: {VERP}\r\nSubject: where is my parcel\r\n\r\n?\r\n".encode()
    assert read_inbound(out_of_office, [VERP], RETURN_PATH).dropped == "auto_reply"
    assert read_inbound(old_style, [VERP], RETURN_PATH).dropped == "auto_reply"
    assert read_inbound(personal, [VERP], RETURN_PATH).dropped == "not_a_report"


def test_hostile_reports_are_classified_not_raised() -> None:
    nested = (
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        + b"--x\r\nContent-Type: message/rfc822\r\n\r\n" * 5000
    )
    empty_status = postfix_dsn().replace(b"Action: failed", b"Action: exploded")
    garbage = bytes(range(256)) * 100
    for data in (nested, garbage, b"", b"\r\n\r\n", empty_status):
        inbound = read_inbound(data, [VERP], RETURN_PATH)
        assert inbound.reports == ()
        assert inbound.dropped is not None
    # A report may list many recipients; ours name one. The cap keeps a flood from multiplying.
    many = read_inbound(postfix_dsn(blocks=5000), [VERP], RETURN_PATH)
    assert len(many.reports) == 50


@pytest.mark.parametrize(
    "field",
    [
        # gh-136063: parameters full of quoted ";" took minutes to parse, folded into short lines
        'Content-Type: multipart/report; report-type=feedback-report; boundary="part1"; x="'
        + ";\r\n\t" * 2100
        + '"',
        "Content-Type: text/plain;" + " a=b;" * 70,  # short, but more parameters than any real one
        "Content-Disposition: attachment; filename=" + "x" * 5000,
    ],
)
def test_a_content_field_too_long_for_the_parser_is_dropped_before_it_is_parsed(field: str) -> None:
    """At any depth: measured on the bytes, not after ``email`` has spent its time on them."""
    top = arf().replace(
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="part1"', field.encode()
    )
    nested = arf().replace(b"Content-Type: message/feedback-report", field.encode())
    # email also ends a line at a bare CR: a field starting there is one too
    after_cr = arf().replace(b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r" + field.encode() + b"\r\n")
    for data in (top, nested, after_cr):
        assert read_inbound(data, [VERP], RETURN_PATH).dropped == "oversized_header"
    assert read_inbound(arf(), [VERP], RETURN_PATH).dropped is None  # real ones pass


def test_returned_headers_sent_encoded_are_measured_once_decoded() -> None:
    """A base64 text/rfc822-headers part hides its fields from the check on the bytes as sent."""
    from delivery.feedback.parts import returned_headers

    hostile = 'Content-Type: multipart/mixed; boundary="b"; x="' + ";" * 100 + '"\r\n\r\n'
    plain = f"Return-Path: <{VERP}>\r\nMessage-ID: {MESSAGE_ID}\r\n\r\n"
    for headers, kept in ((hostile, False), (plain, True)):
        data = arf().replace(
            b"Content-Type: text/rfc822-headers\r\n\r\n" + f"Return-Path: <{VERP}>".encode(),
            b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(headers.encode()).replace(b"\n", b"\r\n")
            + b"X-Rest: <",
        )
        assert (returned_headers(email.message_from_bytes(data)) is not None) is kept


def test_codes_and_our_message_ids() -> None:
    assert enhanced_code("smtp; 550 5.1.1 <x@y>: Recipient address rejected") == "5.1.1"
    assert enhanced_code("smtp; 550 no such user") is None
    assert bounce_type_of("5.1.1") == "hard"
    assert bounce_type_of(None) == "soft"
    assert event_id_from_message_id(MESSAGE_ID) == EVENT
    assert event_id_from_message_id(f"<{EVENT}.resend-1733561234567.ordermail@shop.example>") == EVENT
    assert event_id_from_message_id(f"<{EVENT}@elsewhere.example>") is None
    assert event_id_from_message_id("<nonsense>") is None
    assert not is_auto_reply(email.message_from_bytes(b"Auto-Submitted: no\r\n\r\n"))


def _one_block_dsn(block: str, *, report_type: str = "delivery-status") -> bytes:
    status_type = (
        "message/global-delivery-status" if report_type.startswith("global") else "message/delivery-status"
    )
    return (
        "From: MAILER-DAEMON@relay.example\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nnot delivered\r\n"
        f"--B\r\nContent-Type: {status_type}\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n\r\n"
        f"{block}Action: failed\r\nStatus: 5.1.1\r\n"
        "--B--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "shape",
    ["the type named in the text first", "base64", "quoted-printable"],
)
def test_a_global_dsn_is_read_from_its_own_part_however_it_is_encoded(shape: str) -> None:
    """RFC 6533 allows the part in base64 or quoted-printable over 7-bit transport; a text part
    may mention the type before the part itself."""
    ordered = "jürgen@bücher.example"
    block = f"Reporting-MTA: dns; relay.example\r\n\r\nFinal-Recipient: utf-8; {ordered}\r\n"
    block += "Action: failed\r\nStatus: 5.1.1\r\n"
    encoded, encoding = block.encode(), ""
    if shape == "base64":
        encoded, encoding = base64.encodebytes(block.encode()), "Content-Transfer-Encoding: base64\r\n"
    elif shape == "quoted-printable":
        encoded = quopri.encodestring(block.encode())
        encoding = "Content-Transfer-Encoding: quoted-printable\r\n"
    text = "see the message/global-delivery-status part" if shape.startswith("the type") else "not delivered"
    message = (
        (
            "From: MAILER-DAEMON@relay.example\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=global-delivery-status; boundary="B"\r\n\r\n'
            f"--B\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
            f"--B\r\nContent-Type: message/global-delivery-status\r\n{encoding}\r\n"
        ).encode()
        + encoded
        + b"\r\n--B--\r\n"
    )
    verp = RETURN_PATH.address(EVENT, 1, ordered) or ""
    [report] = read_inbound(message, [verp], RETURN_PATH).reports
    assert report.recipient_confirmed
    assert report.status_code == "5.1.1"


@pytest.mark.parametrize(
    ("ordered", "block", "report_type"),
    [
        # Forwarded: Final-Recipient is the forward's, Original-Recipient (ORCPT) the order's.
        (
            "kim@customer.example",
            "Final-Recipient: rfc822; kim@forward.example\r\n"
            "Original-Recipient: rfc822;kim@customer.example\r\n",
            "delivery-status",
        ),
        # ORCPT as we sent it, in xtext.
        (
            "kim+shop=1@customer.example",
            "Final-Recipient: rfc822; kim@forward.example\r\n"
            "Original-Recipient: rfc822;kim+2Bshop+3D1@customer.example\r\n",
            "delivery-status",
        ),
        # An international domain, written by the MTA as its A-label.
        ("kim@bücher.example", "Final-Recipient: rfc822; KIM@xn--bcher-kva.example\r\n", "delivery-status"),
        # RFC 6533: a DSN about an international address.
        (
            "jürgen@bücher.example",
            "Final-Recipient: utf-8; jürgen@bücher.example\r\n",
            "global-delivery-status",
        ),
    ],
)
def test_the_recipient_is_confirmed_in_whatever_spelling_the_relay_reports(
    ordered: str, block: str, report_type: str
) -> None:
    verp = RETURN_PATH.address(EVENT, 1, ordered) or ""
    [report] = read_inbound(_one_block_dsn(block, report_type=report_type), [verp], RETURN_PATH).reports
    assert report.recipient_confirmed
    assert report.kind is Kind.BOUNCED
