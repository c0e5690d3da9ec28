"""The Typst engine on real parts: with ``ORDERMAIL_TEMPLATE_SET=default-typst`` the service lays out
brand-less orders with Typst in its render workers, and the e-mails carry the same encrypted
receipts (AES-256, the customer's password, order number, SKUs and total) as with WeasyPrint."""

from __future__ import annotations

import email
import subprocess
from email import policy
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_outcomes
from rendering import PasswordPolicy
from schemas import Codec
from schemas.samples import sample_order
from tests.integration.test_end_to_end import _check_pdf, _pdf_of, _settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration


def test_orders_laid_out_by_the_typst_set_are_mailed_encrypted(
    kafka_bootstrap: str,
    topics: Topics,
    smtp_sink: Sink,
    start_service: ServiceFactory,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    orders = [sample_order(seed) for seed in range(700, 712)]  # no brand: the configured set
    assert not any(order.get("brand") for order in orders)
    by_order_id = {order["order_id"]: order for order in orders}
    start_service(ORDERMAIL_TEMPLATE_SET="default-typst")
    publish_orders(_settings(kafka_bootstrap, topics), Codec.from_directory(), orders)

    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=len(orders), timeout_s=180)
    assert {o["status"] for _, o in outcomes} == {"SENT"}
    wait_until(lambda: len(smtp_sink.messages()) >= len(orders), 30)
    passwords = PasswordPolicy()
    for path in smtp_sink.messages():
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, email.message.EmailMessage)
        order = next(o for i, o in by_order_id.items() if i in str(message["Subject"]))
        pdf, password = _pdf_of(message), passwords.password_for(order)
        _check_pdf(pdf, order, password, tmp_path)
        (tmp_path / "typst.pdf").write_bytes(pdf)
        info = subprocess.run(
            ["pdfinfo", "-upw", password, str(tmp_path / "typst.pdf")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "Typst" in info  # laid out by the Typst set, not WeasyPrint
