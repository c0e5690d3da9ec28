"""The renderer's observable output: HTML, PDF bytes (read back with qpdf and poppler, not
pikepdf), mail texts, formatted money and dates, and the URL fetcher's refusals."""

from __future__ import annotations

import copy
import logging
import re
import socket
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from babel.numbers import format_currency
from weasyprint import HTML

from rendering import (
    DEFAULT_PASSWORD_TEMPLATE,
    TEMPLATE_DIR,
    PasswordPolicy,
    RenderedMail,
    Renderer,
    RenderError,
    encrypt_pdf,
    harfbuzz_subset_available,
    weasyprint_uses_harfbuzz_subset,
)
from rendering.catalogs import shipped_languages
from rendering.context import safe_order_id
from rendering.fetcher import AssetFetcher, FetchRefusedError, install_log_redaction
from rendering.fonts import displayable
from rendering.locales import Formatter, choose_language, minor_to_decimal
from schemas.samples import sample_order

if TYPE_CHECKING:
    from pathlib import Path

    from schemas.model import OrderCompleted

LANGUAGES = shipped_languages(TEMPLATE_DIR)

# ---- helpers


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def make_order(seed: int = 1, **changes: Any) -> OrderCompleted:
    order = copy.deepcopy(sample_order(seed))
    order.update(changes)  # type: ignore[typeddict-item]
    return order


def normalise(text: str) -> str:
    """pdftotext and Babel disagree on no-break spaces; compare with plain single spaces."""
    return " ".join(text.replace("\xa0", " ").replace("\u202f", " ").split())


def formatted_total(order: OrderCompleted) -> str:
    formatter = Formatter(order["locale"], choose_language(order["locale"], LANGUAGES))
    return normalise(formatter.money(order["totals"]["total_minor"], order["currency"]))


def pdf_text(path: Path, *, page: int | None = None, layout: bool = False) -> str:
    options = [*(["-f", str(page), "-l", str(page)] if page else []), *(["-layout"] if layout else [])]
    result = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", *options, str(path), "-"], capture_output=True, text=True, check=True
    )
    return result.stdout if layout else normalise(result.stdout)


def qpdf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qpdf", *args], capture_output=True, text=True, check=False)


def decrypt(mail: RenderedMail, password: str, tmp_path: Path) -> Path:
    encrypted, plain = tmp_path / "encrypted.pdf", tmp_path / "plain.pdf"
    encrypted.write_bytes(mail.pdf)
    result = qpdf("--decrypt", f"--password={password}", str(encrypted), str(plain))
    assert result.returncode == 0, result.stderr
    return plain


# ---- locales and formatting


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("es-ES", "es"),
        ("es-MX", "es"),
        ("es", "es"),
        ("ES_mx", "es"),
        ("es-419", "es"),
        ("en-GB", "en"),
        ("en-US", "en"),
        ("fr-FR", "fr"),
        ("de-AT", "de"),
        ("ja-JP", "ja"),
        ("zh-Hant-TW", "zh"),
        ("pt-BR", "pt"),
        ("sv-SE", "en"),
        ("xx-YY", "en"),
        ("", "en"),
    ],
)
def test_language_falls_back_by_truncation_then_to_english(tag: str, language: str) -> None:
    assert choose_language(tag, LANGUAGES) == language


@pytest.mark.parametrize(
    ("minor", "currency", "tag", "expected"),
    [
        (123456, "EUR", "es-ES", "1.234,56\xa0€"),
        (123456, "EUR", "en-GB", "€1,234.56"),
        (123456, "EUR", "de-DE", "1.234,56\xa0€"),
        (123456, "EUR", "fr-FR", "1\u202f234,56\xa0€"),
        (5, "EUR", "en-US", "€0.05"),
        (123456, "MXN", "es-MX", "$1,234.56"),
        (1234, "JPY", "en-US", "¥1,234"),
        (1234, "JPY", "de-DE", "1.234\xa0¥"),
        (123456, "BHD", "en-US", "BHD\xa0123.456"),
        (123456, "BHD", "es-ES", "123,456\xa0BHD"),
        (-99, "EUR", "de-DE", "-0,99\xa0€"),
    ],
)
def test_money_uses_the_events_locale_and_the_currencys_minor_units(
    minor: int, currency: str, tag: str, expected: str
) -> None:
    formatted = Formatter(tag, choose_language(tag, LANGUAGES)).money(minor, currency)
    # Babel may or may not put a no-break space after an ISO code; compare that one loosely.
    assert formatted.replace("BHD123", "BHD\xa0123") == expected


def test_money_falls_back_to_the_text_locale_when_the_font_cannot_draw_it() -> None:
    # bn-BD writes the taka sign, which none of the receipt's fonts has: it would show a box.
    assert not displayable(format_currency(Decimal("1234.56"), "BDT", locale="bn_BD"))
    assert Formatter("bn-BD", "en").money(123456, "BDT") == "BDT1,234.56"
    # ja-JP's full-width yen sign is drawn by Noto Sans CJK: the event's own locale is kept.
    assert Formatter("ja-JP", "ja").money(1234, "JPY") == "￥1,234"


@pytest.mark.parametrize(
    ("tag", "language", "currency", "money", "date"),
    [
        ("ar-EG", "ar", "EGP", "\u200f1,234.56\xa0ج.م.\u200f", "27 نوفمبر 2026"),
        ("hi-IN", "en", "INR", "₹1,234.56", "27 नवंबर 2026"),
        ("ja-JP", "ja", "JPY", "￥123,456", "2026年11月27日"),
        ("zh-TW", "zh", "TWD", "$1,234.56", "2026年11月27日"),
        ("ko-KR", "ko", "KRW", "₩123,456", "2026년 11월 27일"),
        ("th-TH", "en", "THB", "฿1,234.56", "27 พฤศจิกายน ค.ศ. 2026"),
    ],
)
def test_money_and_dates_in_scripts_keep_latin_digits(
    tag: str, language: str, currency: str, money: str, date: str
) -> None:
    """Babel's default numbering (Latin digits) for every locale, ar-EG included: the order
    number, the SKUs and the password the customer types are in Latin digits too."""
    formatter = Formatter(tag, language)
    moment = datetime(2026, 11, 27, 9, 5, tzinfo=UTC)
    assert (formatter.money(123456, currency), formatter.date(moment)) == (money, date)
    assert displayable(money + date)


def test_minor_units_become_exact_decimals_never_floats() -> None:
    assert minor_to_decimal(123456789012345678, "EUR") == Decimal("1234567890123456.78")
    assert minor_to_decimal(1234, "JPY") == Decimal(1234)
    assert minor_to_decimal(1234, "BHD") == Decimal("1.234")
    with pytest.raises(TypeError):
        minor_to_decimal(12.5, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("es-ES", "27 de noviembre de 2026"),
        ("en-US", "November 27, 2026"),
        ("en-GB", "27 November 2026"),
        ("de-DE", "27. November 2026"),
        ("fr-FR", "27 novembre 2026"),
    ],
)
def test_dates_use_the_events_locale(tag: str, expected: str) -> None:
    moment = datetime(2026, 11, 27, 19, 5, tzinfo=UTC)
    formatter = Formatter(tag, choose_language(tag, LANGUAGES))
    assert formatter.date(moment) == expected
    assert formatter.time(moment).endswith(" UTC")


# ---- receipt HTML


def test_spanish_receipt_for_es_mx(renderer: Renderer) -> None:
    html = renderer.render_html(make_order(locale="es-MX", currency="MXN"))
    assert 'lang="es-MX"' in html  # the order's own tag: its language's texts
    assert "Dirección de facturación" in html
    assert "Billing address" not in html


def test_unknown_locale_gets_english_text_but_its_own_number_format(renderer: Renderer) -> None:
    order = make_order(locale="sv-SE", currency="EUR")  # no Swedish catalog
    order["totals"]["total_minor"] = 123456
    order["customer"]["billing_address"]["country"] = "SE"
    html = renderer.render_html(order)
    assert "Billing address" in html
    assert "1\xa0234,56\xa0€" in html
    assert "Sweden" in html  # country names follow the text language


def test_brand_replaces_the_shop_name(renderer: Renderer) -> None:
    html = renderer.render_html(make_order(brand="Acme Outdoor"))
    assert "Acme Outdoor" in html
    assert "ordermail demo shop" not in html


HOSTILE = "<script>alert('x')</script>{{ 7*7 }}"


def test_event_values_are_escaped_data_never_markup_or_template_code(renderer: Renderer) -> None:
    order = make_order(gift_message=HOSTILE)
    order["customer"]["first_name"] = "<b>Eve</b>"
    order["lines"][0]["name"] = HOSTILE
    order["lines"][0]["options"] = {"<i>size</i>": '"><img src=x onerror=alert(1)>'}
    html = renderer.render_html(order)
    assert "<script>" not in html
    assert "<b>Eve</b>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;{{ 7*7 }}" in html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html
    assert "{{ 7*7 }}49" not in html


# ---- PDF and encryption, read back with qpdf and poppler


def test_encrypted_pdf_is_aes256_r6_and_needs_the_password(renderer: Renderer, tmp_path: Path) -> None:
    order = make_order(3)
    password = PasswordPolicy().password_for(order)
    mail = renderer.render_mail(order)
    path = tmp_path / "receipt.pdf"
    path.write_bytes(mail.pdf)

    shown = qpdf("--show-encryption", f"--password={password}", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "R = 6" in shown.stdout
    assert "stream encryption method: AESv3" in shown.stdout
    assert "string encryption method: AESv3" in shown.stdout
    assert "Supplied password is user password" in shown.stdout
    assert "modify other: not allowed" in shown.stdout
    assert "print high resolution: allowed" in shown.stdout

    assert qpdf("--is-encrypted", str(path)).returncode == 0
    assert qpdf("--check", str(path)).returncode != 0
    assert qpdf("--check", "--password=wrong-password", str(path)).returncode != 0
    assert qpdf("--check", f"--password={password}", str(path)).returncode == 0


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_decrypted_text_has_order_id_every_sku_and_the_total(
    renderer: Renderer, tmp_path: Path, seed: int
) -> None:
    order = make_order(seed)
    mail = renderer.render_mail(order)
    text = pdf_text(decrypt(mail, PasswordPolicy().password_for(order), tmp_path))
    assert order["order_id"] in text
    for line in order["lines"]:
        assert line["sku"] in text
    assert formatted_total(order) in text
    assert mail.pages == 1
    assert mail.render_ms > 0
    assert mail.encrypt_ms > 0


def test_hostile_values_appear_literally_in_the_pdf(renderer: Renderer, tmp_path: Path) -> None:
    path = tmp_path / "plain.pdf"
    path.write_bytes(renderer.render_pdf(make_order(gift_message=HOSTILE)))
    text = pdf_text(path)
    assert "<script>alert('x')</script>{{ 7*7 }}" in text


def test_sixty_lines_flow_onto_more_pages_with_the_header_repeated(
    renderer: Renderer, tmp_path: Path
) -> None:
    order = make_order(2, locale="en-GB", currency="GBP")
    template = order["lines"][0]
    order["lines"] = [
        {**template, "sku": f"LONG-SKU-{index:03d}", "name": f"Item number {index}"} for index in range(60)
    ]
    mail = renderer.render_mail(order)
    assert mail.pages >= 2
    plain = decrypt(mail, PasswordPolicy().password_for(order), tmp_path)
    text = pdf_text(plain)
    for index in range(60):
        assert f"LONG-SKU-{index:03d}" in text
    assert formatted_total(order) in text
    pages_with_lines = [page for page in range(2, mail.pages + 1) if "LONG-SKU" in pdf_text(plain, page=page)]
    assert pages_with_lines
    for page in pages_with_lines:
        text = pdf_text(plain, page=page, layout=True)
        assert re.search(r"SKU\s+Item\s+Qty\s+Unit price\s+Amount", text), f"no table header on page {page}"


def test_render_pdf_is_unencrypted_and_encrypt_false_skips_encryption(
    renderer: Renderer, tmp_path: Path
) -> None:
    order = make_order(4)
    plain = tmp_path / "plain.pdf"
    plain.write_bytes(renderer.render_pdf(order))
    assert qpdf("--check", str(plain)).returncode == 0
    assert order["order_id"] in pdf_text(plain)
    mail = renderer.render_mail(order, encrypt=False)
    assert mail.encrypt_ms == 0.0
    unencrypted = tmp_path / "mail.pdf"
    unencrypted.write_bytes(mail.pdf)
    assert qpdf("--is-encrypted", str(unencrypted)).returncode == 2  # 2: not encrypted
    assert "password" not in mail.text_body.lower()


def test_encrypt_pdf_fails_closed(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as empty:
        encrypt_pdf(renderer.render_pdf(make_order()), "")
    assert empty.value.reason == "encryption_failed"
    with pytest.raises(RenderError) as garbage:
        encrypt_pdf(b"%PDF-1.7 this is not a pdf", "12345-6789")
    assert garbage.value.reason == "encryption_failed"


def test_render_uses_harfbuzz_subsetting(renderer: Renderer, caplog: pytest.LogCaptureFixture) -> None:
    assert harfbuzz_subset_available()
    assert weasyprint_uses_harfbuzz_subset()
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        renderer.render_pdf(make_order(6))
    assert not [record for record in caplog.records if "fontTools" in record.getMessage()]


# ---- the e-mail


@pytest.mark.parametrize("seed", range(12))
def test_mail_texts_name_the_order_and_carry_no_personal_data(renderer: Renderer, seed: int) -> None:
    order = make_order(seed)
    mail = renderer.render_mail(order)
    customer, address = order["customer"], order["customer"]["billing_address"]
    personal = [
        customer["first_name"],
        customer["last_name"],
        customer["email"],
        customer["email"].split("@")[0],
        customer["phone"],
        address["line1"],
        address["line2"],
        address["postal_code"],
        PasswordPolicy().password_for(order),
    ]
    for text in (mail.subject, mail.text_body, mail.html_body):
        assert order["order_id"] in text
        for value in filter(None, personal):
            assert not re.search(rf"(?<!\w){re.escape(str(value))}(?!\w)", text), "personal data leaked"
    assert "12345-6789" in mail.text_body
    assert "12345-6789" in mail.html_body
    assert mail.attachment_filename in mail.text_body


def test_spanish_mail(renderer: Renderer) -> None:
    order = make_order(locale="es-ES", currency="EUR")
    mail = renderer.render_mail(order)
    assert mail.subject == f"ordermail demo shop: tu recibo del pedido {order['order_id']}"
    assert mail.attachment_filename == f"recibo-{order['order_id']}.pdf"
    assert "código postal de tu dirección de facturación" in mail.text_body
    assert '<html lang="es" dir="ltr">' in mail.html_body


def test_english_mail_for_unknown_locale(renderer: Renderer) -> None:
    order = make_order(locale="sv-SE", currency="EUR")
    mail = renderer.render_mail(order)
    assert mail.subject == f"ordermail demo shop: your receipt for order {order['order_id']}"
    assert mail.attachment_filename == f"receipt-{order['order_id']}.pdf"
    assert "postal code of your billing address" in mail.text_body


def test_password_hint_replaces_the_default_explanation() -> None:
    hinted = Renderer(password_hint="Use the <b>code</b> from your SMS.")
    mail = hinted.render_mail(make_order(locale="en-US", currency="USD"))
    assert "Use the <b>code</b> from your SMS." in mail.text_body
    assert "Use the &lt;b&gt;code&lt;/b&gt; from your SMS." in mail.html_body
    assert "postal code" not in mail.text_body


def test_custom_template_without_hint_gets_a_generic_explanation() -> None:
    custom = Renderer(password_policy=PasswordPolicy("{{ customer.customer_id }}"))
    mail = custom.render_mail(make_order(locale="en-US", currency="USD"))
    assert "12345-6789" not in mail.text_body
    assert "formed from details of your order" in mail.text_body


def test_subject_is_one_line_and_filename_is_safe(renderer: Renderer) -> None:
    order = make_order(locale="en-US", currency="USD", order_id="ORD-1\r\nBcc: evil@example.com")
    mail = renderer.render_mail(order, encrypt=False)
    assert "\r" not in mail.subject
    assert "\n" not in mail.subject
    assert mail.attachment_filename == "receipt-ORD-1_Bcc_evil_example_com.pdf"
    assert safe_order_id("../../etc/passwd") == "etc_passwd"
    assert safe_order_id("ÓRDEN 7") == "RDEN_7"


def test_rendered_mail_repr_hides_the_pdf_and_bodies(renderer: Renderer) -> None:
    mail = renderer.render_mail(make_order(), encrypt=False)
    assert "%PDF" not in repr(mail)
    assert "text_body" not in repr(mail)


def test_broken_order_is_a_template_error(renderer: Renderer) -> None:
    order = make_order()
    del order["totals"]  # type: ignore[misc]
    with pytest.raises(RenderError) as caught:
        renderer.render_html(order)
    assert caught.value.reason == "template_error"


def test_weak_password_stops_render_mail(renderer: Renderer) -> None:
    order = make_order()
    order["customer"]["billing_address"]["postal_code"] = ""
    order["order_id"] = "A1"
    with pytest.raises(RenderError) as caught:
        renderer.render_mail(order)
    assert caught.value.reason == "weak_password"


def test_default_password_template_is_the_documented_one() -> None:
    assert DEFAULT_PASSWORD_TEMPLATE == "{{ customer.billing_address.postal_code }}-{{ order_id[-4:] }}"


# ---- URL fetcher lockdown


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    folder = tmp_path / "templates" / "assets"
    folder.mkdir(parents=True)
    (folder / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "templates" / "secret.txt").write_text("secret")
    return folder


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://127.0.0.1:1/x",
        "https://example.com/logo.png",
        "ftp://example.com/x",
        "gopher://127.0.0.1/",
        "FILE:///etc/hostname",
    ],
)
def test_fetcher_refuses_everything_outside_the_assets(assets: Path, url: str) -> None:
    with pytest.raises(FetchRefusedError) as caught:
        AssetFetcher([assets]).fetch(url)
    assert "etc" not in str(caught.value)
    assert "127.0.0.1" not in str(caught.value)


def test_fetcher_refuses_path_traversal_and_remote_hosts(assets: Path) -> None:
    fetcher = AssetFetcher([assets])
    with pytest.raises(FetchRefusedError):
        fetcher.fetch(f"{assets.as_uri()}/../secret.txt")
    with pytest.raises(FetchRefusedError):
        fetcher.fetch(f"{assets.as_uri()}/%2e%2e/secret.txt")
    with pytest.raises(FetchRefusedError):
        fetcher.fetch(f"file://evil.example.com{assets}/logo.svg")
    (assets / "link.txt").symlink_to(assets.parent / "secret.txt")
    with pytest.raises(FetchRefusedError):
        fetcher.fetch(f"{assets.as_uri()}/link.txt")


def test_fetcher_serves_assets_and_data_urls(assets: Path) -> None:
    fetcher = AssetFetcher([assets])
    asset = fetcher.fetch(f"{assets.as_uri()}/logo.svg")
    assert asset.read().startswith(b"<svg")
    assert asset.content_type == "image/svg+xml"
    data = fetcher.fetch("data:text/plain;base64,aGVsbG8=")
    assert data.read() == b"hello"
    assert data.content_type == "text/plain"


def test_weasyprint_never_connects_and_logs_no_urls(assets: Path, caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.3)
        port = server.getsockname()[1]
        html = (
            f'<img src="http://127.0.0.1:{port}/track?email=eve%40example.com">'
            '<img src="file:///etc/passwd">'
            f'<link rel="stylesheet" href="http://127.0.0.1:{port}/style.css">'
            '<img src="data:image/svg+xml;base64,PHN2ZyB4bWxucz0naHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmcnLz4=">'
        )
        with caplog.at_level(logging.DEBUG, logger="weasyprint"):
            pdf = HTML(
                string=html, base_url=assets.parent.as_uri() + "/", url_fetcher=AssetFetcher([assets])
            ).write_pdf()
        with pytest.raises(TimeoutError):
            server.accept()
    assert pdf.startswith(b"%PDF-")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Failed to load" in logged  # the refusals were noticed...
    assert "example.com" not in logged  # ...without the URLs
    assert "/etc/passwd" not in logged
    assert f"127.0.0.1:{port}" not in logged


def test_template_dir_is_packaged_with_its_assets() -> None:
    for name in (
        "shared/base.css",
        "shared/layouts/document.html",
        "shared/assets/fonts/DejaVuSans.ttf",
        "sets/default/set.toml",
        "sets/default/receipt.html",
        "sets/default/assets/logo.svg",
        "shared/subject.txt",
        "shared/body.txt",
        "shared/body.html",
        "sets/nordic/subject.txt",
        "shared/locale/messages.pot",
        "shared/locale/ja/LC_MESSAGES/messages.po",
        "shared/locale/ja/LC_MESSAGES/messages.mo",
        "sets/nordic/returns.html",
    ):
        assert (TEMPLATE_DIR / name).is_file(), name
