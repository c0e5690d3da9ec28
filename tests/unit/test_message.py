import email
import email.header
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import TypedDict, Unpack

import pytest

from delivery import Attachment, compose, message_id_for
from delivery.headers import MAX_SUBJECT, ComposeError, single_line


class Fields(TypedDict):
    """compose()'s arguments."""

    sender: str
    recipient: str
    subject: str
    text: str
    html: str
    attachments: Sequence[Attachment]
    message_id: str
    date: datetime


class Overrides(TypedDict, total=False):
    """Some of compose()'s arguments, replacing those of FIELDS."""

    sender: str
    recipient: str
    subject: str
    text: str
    html: str
    attachments: Sequence[Attachment]
    message_id: str
    date: datetime


PDF = b"%PDF-1.7 encrypted bytes"
FIELDS: Fields = {
    "sender": "orders@shop.example",
    "recipient": "lucia.garcia@example.com",
    "subject": "Your order ORD-1",
    "text": "Your receipt for order ORD-1 is attached.",
    "html": "<p>Your receipt for order <b>ORD-1</b> is attached.</p>",
    "attachments": [Attachment("recibo-ORD-1.pdf", PDF)],
    "message_id": message_id_for("0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example"),
    "date": datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
}


def _compose(**overrides: Unpack[Overrides]) -> bytes:
    fields: Fields = {**FIELDS, **overrides}
    return compose(**fields)


def _parse(message: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _parts(message: MIMEPart) -> list[MIMEPart]:
    """A multipart message's parts (``get_payload()`` is typed for any kind of message)."""
    return list(message.iter_parts())


def _with_the_standard_library(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    attachments: Sequence[Attachment],
    message_id: str,
    date: datetime,
    boundary: str,
) -> bytes:
    """The same message built the plain way: what compose must write, byte for byte, but for the
    Subject line (ours, see delivery/headers.py; compared by its decoded text instead)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "-"
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, subtype = attachment.mime_type.split("/", 1)
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
        )
    message.set_boundary(f"{boundary}_mixed")
    for part in message.iter_parts():
        if part.is_multipart():
            part.set_boundary(f"{boundary}_alternative")
    international = not (sender.isascii() and recipient.isascii())
    return message.as_bytes(policy=policy.SMTPUTF8 if international else policy.SMTP)


def _without_subject(message: bytes) -> bytes:
    head, blank, body = message.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((b" ", b"\t")))
    return b"\r\n".join(lines[:start] + lines[end:]) + blank + body


def test_structure_is_alternative_text_and_html_plus_pdf() -> None:
    parsed = _parse(_compose())
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = _parts(parsed)
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in _parts(alternative)] == ["text/plain", "text/html"]
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "recibo-ORD-1.pdf"
    assert attachment.get_content() == PDF
    assert parsed["Auto-Submitted"] == "auto-generated"


def test_message_id_is_deterministic_per_event() -> None:
    first = message_id_for("0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example")
    assert first == message_id_for("0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example")
    assert first != message_id_for("1b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example")
    assert _parse(_compose())["Message-ID"] == first


def test_non_ascii_filename_is_encoded_per_rfc_2231() -> None:
    raw = _compose(attachments=[Attachment("квитанция-Ñandú-ORD-1.pdf", PDF)])
    assert b"filename*" in raw
    assert b"utf-8''" in raw  # RFC 2231 charset prefix (long names continue as filename*1*)
    parts = _parts(_parse(_compose(attachments=[Attachment("квитанция-Ñandú-ORD-1.pdf", PDF)])))
    assert parts[1].get_filename() == "квитанция-Ñandú-ORD-1.pdf"


@pytest.mark.parametrize(
    "subject",
    [
        "Order ORD-1\r\nBcc: victim@example.org",
        "Order\nX-Injected: 1",
        "Order\x00\x1b[31m ORD-1\u2028Bcc: a@b.c",
    ],
)
def test_control_characters_never_create_headers(subject: str) -> None:
    parsed = _parse(_compose(subject=subject))
    assert parsed["Bcc"] is None
    assert parsed["X-Injected"] is None
    assert "\n" not in parsed["Subject"]
    assert "\r" not in parsed["Subject"]


def test_subject_is_length_limited() -> None:
    assert len(_parse(_compose(subject="x" * 5000))["Subject"]) <= 200


@pytest.mark.parametrize(
    "subject",
    [
        "ordermail demo shop: Ihre Quittung für die Bestellung ORD-202621000-359A",
        "【ordermail demo shop】ご注文 ORD-202621003-9531 の領収書" * 3,
        "Ваш заказ ORD-1: квитанция во вложении, спасибо за покупку " * 2,
        "ü" + "a" * 199,
        "😀 = ? _ " * 25,
        "שלום ORD-1 " * 18,
    ],
)
def test_encoded_subjects_read_back_exactly_in_full_lines_of_76(subject: str) -> None:
    from delivery.headers import subject_line

    line = subject_line(subject).decode("ascii")
    lines = line.removesuffix("\r\n").split("\r\n ")
    assert all(len(text) <= 76 for text in lines)
    assert (
        str(email.header.make_header(email.header.decode_header(line[len("Subject: ") :])))
        == single_line(subject)[:200]
    )
    # Full lines: a line ends only where its next character (at most 12 encoded) would not fit.
    assert all(len(text) > 76 - 12 for text in lines[:-1])


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "a\r\nb.pdf",
        "",
        "x" * 97 + ".pdf",
        'a".pdf',
        "=?utf-8?q?a?=.pdf",
        " a.pdf",
        "a/b.pdf",
    ],
)
def test_an_attachment_name_a_header_may_not_carry_is_refused_not_rewritten(name: str) -> None:
    with pytest.raises(ComposeError) as refused:
        _compose(attachments=[Attachment(name, PDF)])
    assert refused.value.reason == "unsafe_filename"


def test_names_are_the_callers_one_rule_rendering_s() -> None:
    """The documents' names come from rendering's rule (and fetched ones too, in the pipeline):
    whatever it makes, an attachment may carry."""
    from delivery.headers import check_filename
    from rendering.documents import safe_filename

    for name in [
        "../../etc/passwd",
        "a\r\nb.pdf",
        "",
        "x" * 300 + ".pdf",
        'a".pdf',
        "=?utf-8?q?a?=",
        "квитанция",
    ]:
        assert check_filename(safe_filename(name)) == safe_filename(name)


CYRILLIC = "Ваш заказ оформлен, квитанция во вложении, спасибо за покупку в нашем магазине. " * 3
WIRE_CASES: list[Overrides] = [
    {},
    {"subject": "Tu pedido ORD-1 — recibo ✓", "text": "Línea 1\nLínea 2\r\n\n.\nfin", "html": "<p>ñ</p>\n"},
    {"recipient": "lucía@ejemplo.es", "attachments": [Attachment("квитанция-ORD-1.pdf", PDF * 900)]},
    {"attachments": [Attachment("a.pdf", PDF), Attachment("b.pdf", bytes(range(256)) * 40)]},
    {"sender": "Tienda Ñandú <orders@shop.example>", "recipient": "l@example.com"},
    {"subject": "Order ORD-1\r\nBcc: victim@example.org \x1b[31m" + "x" * 300, "text": "", "html": "\r"},
    {"text": "a" * 79 + "\n" + "b" * 500 + " \n\t\n", "html": "<p>" + "é" * 100 + "=</p>\n" * 12},
    {"text": CYRILLIC + "\n" + CYRILLIC, "html": "\n".join([CYRILLIC] * 12)},  # base64 wins
    {"attachments": [Attachment("R" * 96 + ".pdf", b""), Attachment("Kvittering ÆØÅ " * 5 + "1.pdf", PDF)]},
    {"attachments": [Attachment("notes.txt", b"plain", "text/plain"), Attachment("ORD-1.pdf", PDF * 3)]},
    # ASCII names around the 78-character line where email starts folding
    {"attachments": [Attachment(f"{'x' * n}.pdf", PDF) for n in (30, 31, 32)] + [Attachment("K 1.pdf", PDF)]},
    {"recipient": "ana@example.com", "attachments": [Attachment("Receipt for ORD-1_2 of 3.pdf", PDF)]},
    {"recipient": "lucía@ejemplo.es", "attachments": [Attachment(f"Receipt for ORD-1 {'z' * 60}.pdf", PDF)]},
]


@pytest.mark.parametrize("overrides", WIRE_CASES)
def test_the_wire_form_is_byte_for_byte_what_the_standard_library_writes(
    overrides: Overrides, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda _n: "5eed" * 6)
    fields: Fields = {**FIELDS, **overrides}
    written = compose(**fields)
    reference = _with_the_standard_library(**fields, boundary="=_ordermail_" + "5eed" * 6)
    assert _without_subject(written) == _without_subject(reference)
    assert _parse(written)["Subject"] == single_line(str(fields["subject"]))[:MAX_SUBJECT]
    assert b"\n" not in written.replace(b"\r\n", b"")


def test_real_receipts_are_written_as_the_standard_library_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every set and language's real bodies: long HTML lines take the quoted-printable branch."""
    from rendering import Renderer
    from schemas.samples import sample_order

    monkeypatch.setattr(secrets, "token_hex", lambda _n: "0123456789ab" * 2)
    renderer = Renderer()
    encodings = set()
    for brand, locale in [(None, "en-GB"), (None, "es-MX"), ("Nordic", "en-US"), ("Nordic", "es-ES")]:
        order = sample_order(3, lines=5)
        order["locale"] = locale
        if brand:
            order["brand"] = brand
        mail = renderer.render_mail(order, encrypt=False)
        fields: Fields = {
            **FIELDS,
            "subject": mail.subject,
            "text": mail.text_body,
            "html": mail.html_body,
            "attachments": [Attachment(a.filename, a.data) for a in mail.attachments],
        }
        written = compose(**fields)
        reference = _with_the_standard_library(**fields, boundary="=_ordermail_" + "0123456789ab" * 2)
        assert _without_subject(written) == _without_subject(reference)
        assert _parse(written)["Subject"] == mail.subject
        encodings |= {part["Content-Transfer-Encoding"] for part in _parse(written).walk()}
    assert "quoted-printable" in encodings


def test_line_ends_are_split_like_the_standard_generator_does() -> None:
    import email.generator

    from delivery.message import _LINE_END

    assert _LINE_END.pattern == email.generator.NLCRE.pattern  # type: ignore[attr-defined]


HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"]
ENCODED_WORDS = [
    # CVE-2024-6923: email decodes these and, before 3.11.10 / 3.12.5, writes the CR/LF out
    "=?utf-8?q?ORD-1=0D=0ABcc:_victim@example.org?=",
    "=?utf-8?b?T1JELTENCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=",
    "Order =?utf-8?q?x=0D=0A=0D=0APhishing_body?= ORD-1",
    "=?iso-8859-1?q?=0AReply-To:_a@evil.example?= Ñandú",
    "=?utf-8?q?=C2=85X-Injected:_1?=",  # NEL, U+0085
]


@pytest.mark.parametrize("subject", ENCODED_WORDS)
def test_encoded_words_in_event_text_stay_literal(subject: str) -> None:
    written = _compose(subject=subject)
    parsed = _parse(written)
    assert list(parsed.keys()) == HEADERS
    assert parsed["Subject"] == subject  # decoded once by the reader: the text as the event had it
    assert _parts(_parts(parsed)[0])[0].get_content().strip() == FIELDS["text"]


@pytest.mark.parametrize(
    "recipient",
    [
        "=?utf-8?q?Luc=C3=ADa?= <l@example.com>",
        "a@example.com, b@example.org",
        "a@example.com\r\nBcc: b@example.org",
        '"a b"@example.com',
        "group: a@example.com;",
    ],
)
def test_a_recipient_is_a_bare_address_or_nothing_is_composed(recipient: str) -> None:
    with pytest.raises(ComposeError) as refused:
        _compose(recipient=recipient)
    assert refused.value.reason == "unsafe_recipient"


def test_the_header_block_is_checked_before_it_leaves() -> None:
    from delivery.headers import check_header_block

    good = compose(**FIELDS)
    check_header_block(good)
    injected = good.replace(b"\r\nDate:", b"\r\nBcc: victim@example.org\r\nDate:", 1)
    duplicated = good.replace(b"\r\nDate:", b"\r\nSubject: again\r\nDate:", 1)
    bare_lf = good.replace(b"Subject: Your", b"Subject: \nYour", 1)
    ended_early = good.replace(b"\r\nDate:", b"\r\n\r\nDate:", 1)
    for bad in (injected, duplicated, bare_lf, ended_early):
        with pytest.raises(ComposeError):
            check_header_block(bad)


def test_message_ids_keep_only_safe_characters() -> None:
    assert message_id_for("0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example") == (
        "<0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11.ordermail@shop.example>"
    )
    assert message_id_for("urn:uuid:{AB}\r\n>x", "shop.example") == "<urnuuidABx.ordermail@shop.example>"
    with pytest.raises(ComposeError):
        _compose(message_id="<a@b>\r\nBcc: x@y.z")
