"""Attachments fetched from another system's HTTPS server travel encrypted with the rendered ones;
a URL that is not allowed is the event's fault, an unreachable server a reason to retry."""

from __future__ import annotations

import asyncio
import email
from email import policy
from io import BytesIO
from typing import Any

import pikepdf
import pytest

from rendering import PasswordPolicy
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakePublisher, FakeRenderer, FakeSmtp, _inbound, _pipeline, _run
from tests.unit.test_remote_fetch import Server, server  # noqa: F401 - the HTTPS server fixture

PASSWORDS = PasswordPolicy()


def _order(*urls: str) -> Any:
    order: Any = sample_order(5)
    order["attachments"] = [{"url": url, "filename": f"warranty {n}.pdf"} for n, url in enumerate(urls)]
    return order


def _send(https: Server, order: Any, **config: Any) -> tuple[FakeSmtp, FakePublisher]:
    smtp, publisher = FakeSmtp(), FakePublisher()
    settings = {"fetch_policy": https.policy(timeout_s=2), "password_for": PASSWORDS.password_for, **config}
    asyncio.run(_run(_pipeline(FakeRenderer(), smtp, publisher, **settings), [_inbound(order, 0)]))
    return smtp, publisher


def test_a_fetched_pdf_is_attached_encrypted_with_the_customers_password(server: Server) -> None:  # noqa: F811
    order = _order(server.url("pdf"))
    smtp, publisher = _send(server, order)
    (outcome,) = publisher.outcomes
    assert outcome["status"] == "SENT"
    assert outcome["attachment_count"] == 2
    message = email.message_from_bytes(smtp.messages[0], policy=policy.default)
    parts = list(message.iter_attachments())
    assert [part.get_filename() for part in parts] == ["r.pdf", "warranty_0.pdf"]
    fetched = parts[1].get_content()
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(BytesIO(fetched))
    with pikepdf.open(BytesIO(fetched), password=PASSWORDS.password_for(order)) as document:
        assert document.encryption.R == 6
        assert len(document.pages) == 1


@pytest.mark.parametrize(
    ("route", "host", "status", "reason"),
    [
        ("pdf", "localhost.invalid", "REJECTED", "attachment_forbidden"),  # not on the allow-list
        ("html", "127.0.0.1", "REJECTED", "attachment_type"),
        ("missing", "127.0.0.1", "REJECTED", "attachment_unavailable"),
        ("down", "127.0.0.1", "DEFERRED", "attachment_unreachable"),  # 503: try again later
    ],
)
def test_fetch_failures_are_classified_and_nothing_is_sent(
    server: Server,  # noqa: F811
    route: str,
    host: str,
    status: str,
    reason: str,
) -> None:
    smtp, publisher = _send(server, _order(server.url(route, host=host)))
    (outcome,) = publisher.outcomes
    assert (outcome["status"], outcome["reason"]) == (status, reason)
    assert smtp.messages == []
    assert len(publisher.retries if status == "DEFERRED" else publisher.dead_letters) == 1


def test_without_allowed_hosts_no_event_may_carry_remote_attachments(server: Server) -> None:  # noqa: F811
    before = server.connections
    smtp, publisher = _send(server, _order(server.url("pdf")), fetch_policy=None)
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "attachment_forbidden")]
    assert server.connections == before  # nothing was even tried
    assert smtp.messages == []
