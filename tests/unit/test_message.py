import email
from datetime import UTC, datetime
from email import policy

import pytest

from delivery import Attachment, compose, message_id_for
from delivery.message import safe_filename, to_bytes

PDF = b"%PDF-1.7 encrypted bytes"


def _compose(**overrides: object) -> email.message.EmailMessage:
    fields: dict[str, object] = {
        "sender": "orders@shop.example",
        "recipient": "lucia.garcia@example.com",
        "subject": "Your order ORD-1",
        "text": "Your receipt for order ORD-1 is attached.",
        "html": "<p>Your receipt for order <b>ORD-1</b> is attached.</p>",
        "attachments": [Attachment("recibo-ORD-1.pdf", PDF)],
        "message_id": message_id_for("0b7f9a52-8f7e-4b8e-9d59-2f0a1c8f0e11", "shop.example"),
        "date": datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return compose(**fields)  # type: ignore[arg-type]


def _parse(message: email.message.EmailMessage) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(policy=policy.SMTP), policy=policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_structure_is_alternative_text_and_html_plus_pdf() -> None:
    parsed = _parse(_compose())
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.get_payload()  # type: ignore[misc]
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.get_payload()] == ["text/plain", "text/html"]
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
    raw = _compose(attachments=[Attachment("квитанция-Ñandú-ORD-1.pdf", PDF)]).as_bytes(policy=policy.SMTP)
    assert b"filename*" in raw
    assert b"utf-8''" in raw  # RFC 2231 charset prefix (long names continue as filename*1*)
    assert _parse(_compose(attachments=[Attachment("квитанция-Ñandú-ORD-1.pdf", PDF)])).get_payload()[
        1
    ].get_filename() == (  # type: ignore[index]
        "квитанция-Ñandú-ORD-1.pdf"
    )


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
    ("name", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("a\r\nb.pdf", "a b.pdf"),
        ("", "attachment"),
        ("x" * 300 + ".pdf", "x" * 96 + ".pdf"),
    ],
)
def test_filenames_are_made_safe(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "subject": "Tu pedido ORD-1 — recibo ✓",
            "text": "Línea 1\nLínea 2\r\n\n.\nfin",
            "html": "<p>ñ</p>\n",
        },
        {"recipient": "lucía@ejemplo.es", "attachments": [Attachment("квитанция-ORD-1.pdf", PDF * 900)]},
        {"attachments": [Attachment("a.pdf", PDF), Attachment("b.pdf", bytes(range(256)) * 40)]},
    ],
)
def test_the_wire_form_is_byte_for_byte_what_the_standard_library_writes(
    overrides: dict[str, object],
) -> None:
    """to_bytes replaces two standard-library internals for speed (cached header classes, one
    write per part); the bytes must not change."""
    message = _compose(**overrides)
    international = not str(message["To"]).isascii()
    expected = message.as_bytes(policy=policy.SMTPUTF8 if international else policy.SMTP)
    assert to_bytes(message) == expected
    assert b"\r\n" in expected
    assert b"\n" not in expected.replace(b"\r\n", b"")


def test_line_ends_are_split_like_the_standard_generator_does() -> None:
    import email.generator

    from delivery.message import _LINE_END

    assert _LINE_END.pattern == email.generator.NLCRE.pattern  # type: ignore[attr-defined]
