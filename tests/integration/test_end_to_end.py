"""The product's spine on real parts: broker, SMTP sink and service in separate processes.

Events in → e-mails in the outbox whose PDFs open only with the expected password (checked
with qpdf and pdftotext, independently of pikepdf) → SENT outcomes on the outcome topic →
the group's committed offsets cover every event.
"""

from __future__ import annotations

import email
import re
import subprocess
from email import policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from consumer.app.settings import Settings
from consumer.tools.producing import publish_orders, publish_raw
from consumer.tools.topic_reader import committed_and_end, read_outcomes, read_records
from rendering import TEMPLATE_DIR, PasswordPolicy
from rendering.catalogs import shipped_languages
from rendering.locales import Formatter, choose_language
from schemas import Codec
from schemas.samples import sample_order

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas import OrderCompleted
    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration

LANGUAGES = shipped_languages(TEMPLATE_DIR)


def _settings(bootstrap: str, topics: Topics) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)


def _varied_orders(count: int) -> list[OrderCompleted]:
    orders = [sample_order(seed) for seed in range(count)]
    for index in (5, 23, 41):  # long orders that need a second page
        orders[index] = sample_order(1000 + index, lines=60)
    return orders


def _pdf_of(message: email.message.EmailMessage) -> bytes:
    (attachment,) = [
        part for part in message.iter_attachments() if part.get_content_type() == "application/pdf"
    ]
    content = attachment.get_content()
    assert isinstance(content, bytes)
    return content


def _check_pdf(pdf: bytes, order: OrderCompleted, password: str, workdir: Path) -> None:
    path, plain = workdir / f"{order['order_id']}.pdf", workdir / f"{order['order_id']}.plain.pdf"
    path.write_bytes(pdf)
    # Without the password (or with a wrong one) qpdf cannot open it.
    assert subprocess.run(["qpdf", "--check", str(path)], capture_output=True).returncode != 0
    assert (
        subprocess.run(
            ["qpdf", "--check", "--password=wrong-0000", str(path)], capture_output=True
        ).returncode
        != 0
    )
    encryption = subprocess.run(
        ["qpdf", "--show-encryption", f"--password={password}", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "R = 6" in encryption
    assert "AESv3" in encryption  # AES-256
    subprocess.run(["qpdf", "--decrypt", f"--password={password}", str(path), str(plain)], check=True)
    text = _normalise(
        subprocess.run(["pdftotext", str(plain), "-"], capture_output=True, text=True, check=True).stdout
    )
    assert order["order_id"] in text
    for line in order["lines"]:
        assert line["sku"] in text
    total = Formatter(order["locale"], choose_language(order["locale"], LANGUAGES)).money(
        order["totals"]["total_minor"], order["currency"]
    )
    assert _normalise(total) in text


def _normalise(text: str) -> str:
    return re.sub(r"[\s\u00a0\u202f]+", " ", text)


def test_fifty_varied_orders_are_mailed_encrypted_and_reported(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    orders = _varied_orders(50)
    by_order_id = {order["order_id"]: order for order in orders}
    assert len(by_order_id) == 50
    start_service()
    publish_orders(_settings(kafka_bootstrap, topics), Codec.from_directory(), orders)

    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=50, timeout_s=180)
    wait_until(lambda: len(smtp_sink.messages()) >= 50, 30)

    # Outcomes: one SENT per event, decodable, co-partitioned, without personal data.
    assert len(outcomes) == 50
    assert {o["status"] for _, o in outcomes} == {"SENT"}
    assert {o["order_id"] for _, o in outcomes} == set(by_order_id)
    assert {o["event_id"] for _, o in outcomes} == {order["event_id"] for order in orders}
    for record, outcome in outcomes:
        assert record.key == outcome["order_id"].encode()
        assert record.partition == outcome["source_partition"]
        assert outcome["smtp_code"] == 250
        assert outcome["recipient_domain"] == "example.com"
        assert outcome["attachment_bytes"] > 1000
        customer = by_order_id[outcome["order_id"]]["customer"]
        flat = repr(outcome)
        for personal in (customer["email"], customer["last_name"], customer["billing_address"]["line1"]):
            assert personal not in flat

    # E-mails: exactly one per order, each PDF locked with that customer's password.
    messages = [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in smtp_sink.messages()]
    assert len(messages) == 50
    passwords = PasswordPolicy()
    pages: list[int] = []
    seen: set[str] = set()
    for message in messages:
        assert isinstance(message, email.message.EmailMessage)
        order_id = next(o for o in by_order_id if o in str(message["Subject"]))
        seen.add(order_id)
        order = by_order_id[order_id]
        assert message["To"] == order["customer"]["email"]
        _check_pdf(_pdf_of(message), order, passwords.password_for(order), tmp_path)
        pages.append(_page_count(_pdf_of(message), passwords.password_for(order), tmp_path))
        body = message.get_body(("plain",))
        assert body is not None
        assert order["customer"]["last_name"] not in body.get_content()
    assert seen == set(by_order_id)
    assert max(pages) >= 2

    # Offsets: the group committed past every event.
    def all_committed() -> bool:
        committed, ends = committed_and_end(kafka_bootstrap, topics.group, topics.input)
        return all(committed.get(p, -1) == end for p, end in ends.items())

    wait_until(all_committed, 30)


def _page_count(pdf: bytes, password: str, workdir: Path) -> int:
    path = workdir / "count.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(
        ["pdfinfo", "-upw", password, str(path)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_bad_events_are_rejected_and_dead_lettered_while_good_ones_are_sent(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    settings = _settings(kafka_bootstrap, topics)
    codec = Codec.from_directory()
    good = [sample_order(seed) for seed in range(200, 210)]
    bad_email: Any = sample_order(300)
    bad_email["customer"]["email"] = "not-an-address"
    no_lines: Any = sample_order(301)
    no_lines["lines"] = []
    garbage = [
        (b"ORD-GARBAGE-1", b"\x00\x01\x02 not avro"),
        (b"ORD-GARBAGE-2", b'{"order_id": "json?"}'),
        (None, b""),
    ]
    start_service()
    publish_orders(settings, codec, [*good[:5], bad_email, no_lines, *good[5:]])
    publish_raw(settings, garbage)

    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=15, timeout_s=120)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for _, outcome in outcomes:
        by_status.setdefault(outcome["status"], []).append(outcome)
    assert {o["order_id"] for o in by_status["SENT"]} == {o["order_id"] for o in good}
    rejected = {o["order_id"]: o["reason"] for o in by_status["REJECTED"]}
    assert rejected == {
        bad_email["order_id"]: "invalid_email",
        no_lines["order_id"]: "no_lines",
        "ORD-GARBAGE-1": "unknown_schema",  # starts with 0x00: Confluent framing, but no registry
        "ORD-GARBAGE-2": "undecodable",
        "": "undecodable",
    }
    assert len(outcomes) == 15

    dead = read_records(kafka_bootstrap, topics.dlq, expected=5, timeout_s=30)
    assert len(dead) == 5
    originals = {(b"" if r.key is None else r.key): r for r in dead}
    assert originals[b"ORD-GARBAGE-1"].value == b"\x00\x01\x02 not avro"
    for record in dead:
        assert record.headers["ordermail.original.topic"] == topics.input.encode()
        assert record.headers["ordermail.consumer.group"] == topics.group.encode()
        assert record.headers["ordermail.error.class"] in {
            b"invalid_email",
            b"no_lines",
            b"undecodable",
            b"unknown_schema",
        }
        assert int(record.headers["ordermail.original.offset"]) >= 0

    wait_until(lambda: len(smtp_sink.messages()) >= 10, 30)
    assert len(smtp_sink.messages()) == 10
