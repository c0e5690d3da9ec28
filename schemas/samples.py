"""Realistic, varied sample orders for the demo, the tests and the benchmark.

Deterministic per seed: several locales and currencies, non-ASCII names, optional fields set
and unset, and now and then a long order that needs two pages. All personal data is invented.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.model import Address, OrderCompleted, OrderLine

__all__ = ["SCRIPT_SAMPLES", "sample_order", "sample_orders", "script_sample"]

_PEOPLE = {
    "es-ES": (
        ["Lucía", "José María", "Begoña", "Íñigo", "Nuria"],
        ["Fernández Ñúñez", "García", "Muñoz-Peña"],
    ),
    "es-MX": (["Ximena", "Andrés", "Guadalupe"], ["Hernández", "López Ávila"]),
    "en-GB": (["Siobhán", "Oliver", "Chloë"], ["O'Brien", "Smith-Jones", "Brontë"]),
    "en-US": (["Zoë", "Marcus", "Ava"], ["Johnson", "Nguyễn", "Kowalski"]),
    "de-DE": (["Jürgen", "Anneliese"], ["Müller", "Straßburger"]),
    "fr-FR": (["Élodie", "François"], ["Lefèvre", "Dubois"]),
    "ja-JP": (["Yūki", "Haruto"], ["Tanaka", "Satō"]),
}
_PLACES: dict[str, tuple[str, str, list[tuple[str, str, str, str | None]]]] = {
    "es-ES": (
        "EUR",
        "ES",
        [
            ("Calle de Alcalá 42", "Madrid", "28014", "Madrid"),
            ("Carrer de Mallorca 401", "Barcelona", "08013", "Cataluña"),
        ],
    ),
    "es-MX": ("MXN", "MX", [("Av. Insurgentes Sur 1602", "Ciudad de México", "03940", "CDMX")]),
    "en-GB": (
        "GBP",
        "GB",
        [
            ("221B Baker Street", "London", "NW1 6XE", None),
            ("12 Princes Street", "Edinburgh", "EH2 2AN", "Scotland"),
        ],
    ),
    "en-US": (
        "USD",
        "US",
        [
            ("1600 Amphitheatre Pkwy", "Mountain View", "94043", "CA"),
            ("350 5th Ave", "New York", "10118", "NY"),
        ],
    ),
    "de-DE": ("EUR", "DE", [("Unter den Linden 77", "Berlin", "10117", None)]),
    "fr-FR": ("EUR", "FR", [("8 Rue de Rivoli", "Paris", "75004", None)]),
    "ja-JP": ("JPY", "JP", [("1-1 Chiyoda", "Tokyo", "100-0001", "Tokyo")]),
}
_PRODUCTS = [
    ("TSH-ORG-001", "Camiseta de algodón orgánico", {"talla": "M", "color": "azul marino"}, 1999),
    ("SNK-RUN-042", "Running shoes “Aire”", {"size": "42", "colour": "grey"}, 8950),
    ("MUG-CER-007", "Taza de cerámica esmaltada", {}, 1250),
    ("BAG-LTH-300", "Leather weekend bag", {"colour": "cognac"}, 18900),
    ("SCK-WOL-003", "Merino socks (3-pack)", {"size": "39–42"}, 2400),
    ("HAT-WNT-010", "Gorro de lana — edición invierno", {"color": "mostaza"}, 2900),
    ("BTL-STL-750", "Insulated bottle 750 ml", {"finish": "matte"}, 3200),
    ("NTB-A5-DOT", "Cuaderno A5 punteado", {"páginas": "192"}, 990),
    ("UMB-CMP-001", "Compact umbrella", {}, 2750),
    ("GFT-CRD-050", "Gift card", {"value": "50"}, 5000),
]
_SHIPPING = ["standard", "express", "pickup"]
_PAYMENT = ["card", "paypal", "bank_transfer", None]
_GIFT = ["¡Feliz cumpleaños, mamá! 🎂", "Happy anniversary — love, J.", "Für dich ❤", None, None, None]
_EPOCH = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def sample_order(seed: int, *, lines: int | None = None) -> OrderCompleted:
    """One realistic order; ``lines`` forces the line count (a long order needs two pages)."""
    rng = random.Random(seed)
    locale = rng.choice(list(_PEOPLE))
    first_names, last_names = _PEOPLE[locale]
    currency, country, places = _PLACES[locale]
    first, last = rng.choice(first_names), rng.choice(last_names)
    line_count = (
        lines if lines is not None else (rng.randint(25, 40) if seed % 10 == 7 else rng.randint(1, 8))
    )
    order_lines: list[OrderLine] = []
    for _ in range(line_count):
        sku, name, options, price = rng.choice(_PRODUCTS)
        scale = 150 if currency == "JPY" else 1  # JPY has no minor unit: keep prices plausible
        order_lines.append(
            {
                "sku": sku,
                "name": name,
                "options": dict(options),
                "quantity": rng.randint(1, 3),
                "unit_price_minor": price * scale // (100 if currency == "JPY" else 1),
            }
        )
    subtotal = sum(line["quantity"] * line["unit_price_minor"] for line in order_lines)
    shipping = rng.choice([0, 495, 995]) if currency != "JPY" else rng.choice([0, 800])
    discount = subtotal // 10 if rng.random() < 0.2 else 0
    tax = (subtotal - discount) * 21 // 121
    address = _address(rng, places, country)
    email_local = f"{_ascii(first)}.{_ascii(last)}{seed}".lower()
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "occurred_at": _EPOCH + timedelta(seconds=seed * 37),
        "order_id": f"ORD-{2026_11_000 + seed:09d}-{rng.randrange(16**4):04X}",
        "locale": locale,
        "currency": currency,
        "customer": {
            "customer_id": f"CUST-{rng.randrange(10**8):08d}",
            "email": f"{email_local}@example.com",
            "first_name": first,
            "last_name": last,
            "phone": rng.choice([None, f"+34 6{rng.randrange(10**8):08d}"]),
            "billing_address": address,
        },
        "lines": order_lines,
        "totals": {
            "subtotal_minor": subtotal,
            "shipping_minor": shipping,
            "tax_minor": tax,
            "discount_minor": discount,
            "total_minor": subtotal + shipping - discount,
        },
        "shipping_address": rng.choice([None, address]),
        "shipping_method": rng.choice(_SHIPPING),
        "payment_method": rng.choice(_PAYMENT),
        "gift_message": rng.choice(_GIFT),
        "brand": None,
        "channel": rng.choice(["web", "app", "store"]),
        "attachments": None,
    }


# One customer per script a receipt must draw: (locale, currency, first name, last name, street,
# city, postal code, region, country, a product name). Invented, like everything here.
SCRIPT_SAMPLES: dict[str, tuple[str, str, str, str, str, str, str, str | None, str, str]] = {
    "latin-vietnamese": (
        "vi-VN",
        "VND",
        "Thị Hương",
        "Nguyễn",
        "12 Đường Lê Lợi",
        "Hà Nội",
        "100000",
        None,
        "VN",
        "Tai nghe không dây",
    ),
    "greek": (
        "el-GR",
        "EUR",
        "Γιώργος",
        "Παπαδόπουλος",
        "Οδός Ερμού 10",
        "Αθήνα",
        "105 63",
        None,
        "GR",
        "Ασύρματα ακουστικά",
    ),
    "cyrillic": (
        "ru-RU",
        "RUB",
        "Иван",
        "Петров",
        "ул. Тверская, д. 7",
        "Москва",
        "125009",
        None,
        "RU",
        "Беспроводные наушники",
    ),
    "arabic": (
        "ar-EG",
        "EGP",
        "محمد",
        "علي",
        "١٢ شارع التحرير",
        "القاهرة",
        "11511",
        None,
        "EG",
        "سماعات لاسلكية",
    ),
    "hebrew": (
        "he-IL",
        "ILS",
        "דוד",
        "כהן",
        "רחוב הרצל 5",
        "תל אביב",
        "6100000",
        None,
        "IL",
        "אוזניות אלחוטיות",
    ),
    "devanagari": (
        "hi-IN",
        "INR",
        "राहुल",
        "शर्मा",
        "12 मुख्य मार्ग",
        "नई दिल्ली",
        "110001",
        "दिल्ली",
        "IN",
        "वायरलेस ईयरफ़ोन",
    ),
    "thai": (
        "th-TH",
        "THB",
        "สมชาย",
        "ใจดี",
        "123 ถนนสุขุมวิท",
        "กรุงเทพมหานคร",
        "10110",
        None,
        "TH",
        "หูฟังไร้สาย",
    ),
    "chinese-simplified": (
        "zh-CN",
        "CNY",
        "小明",
        "王",
        "建国路88号",
        "朝阳区",
        "100022",
        "北京市",
        "CN",
        "无线耳机",
    ),
    "chinese-traditional": (
        "zh-TW",
        "TWD",
        "大文",
        "陳",
        "信義路五段7號",
        "信義區",
        "110",
        "臺北市",
        "TW",
        "無線耳機",
    ),
    "japanese": (
        "ja-JP",
        "JPY",
        "太郎",
        "山田",
        "千代田1-1",
        "千代田区",
        "100-0001",
        "東京都",
        "JP",
        "ワイヤレスイヤホン（黒）",
    ),
    "korean": (
        "ko-KR",
        "KRW",
        "민준",
        "김",
        "세종대로 110",
        "중구",
        "04524",
        "서울특별시",
        "KR",
        "무선 이어폰",
    ),
    "emoji": (
        "en-GB",
        "GBP",
        "Ava 🌸",
        "Smith",
        "221B Baker Street",
        "London",
        "NW1 6XE",
        None,
        "GB",
        "Birthday candles 🎂🎁",
    ),
}


def script_sample(script: str, *, seed: int = 11, lines: int = 3) -> OrderCompleted:
    """A sample order whose customer, address and first product are written in ``script``."""
    locale, currency, first, last, street, city, postal_code, region, country, product = SCRIPT_SAMPLES[
        script
    ]
    order = sample_order(seed, lines=lines)
    address: Address = {
        "line1": street, "line2": None, "city": city, "postal_code": postal_code, "region": region,
        "country": country,
    }  # fmt: skip
    order["locale"], order["currency"] = locale, currency
    customer = order["customer"]
    customer["first_name"], customer["last_name"], customer["billing_address"] = first, last, address
    order["shipping_address"] = address
    order["lines"][0]["name"] = product
    return order


def sample_orders(count: int, *, first_seed: int = 0) -> list[OrderCompleted]:
    return [sample_order(seed) for seed in range(first_seed, first_seed + count)]


def _address(rng: random.Random, places: list[tuple[str, str, str, str | None]], country: str) -> Address:
    line1, city, postal_code, region = rng.choice(places)
    return {
        "line1": line1,
        "line2": rng.choice([None, f"Piso {rng.randint(1, 9)}º", "Apt 4B"]),
        "city": city,
        "postal_code": postal_code,
        "region": region,
        "country": country,
    }


def _ascii(name: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())
