"""Attachments fetched from another system's HTTPS server travel encrypted with the rendered ones;
a URL that is not allowed is the event's fault, an unreachable server a reason to retry. The work
per event is bounded: few URLs, a byte budget checked as bytes arrive, one deadline for all, and
the fetched bytes are opened and encrypted in a render worker (a real one here), never in the
service's process."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import Iterator
from email import policy
from io import BytesIO
from typing import Any

import pikepdf
import pytest

from consumer.processing.render_pool import RenderConfig, RenderPool
from rendering import PasswordPolicy
from schemas.samples import sample_order
from tests.unit.test_pipeline import FakePublisher, FakeRenderer, FakeSmtp, _inbound, _pipeline, _run
from tests.unit.test_remote_fetch import Server, server  # noqa: F401 - the HTTPS server fixture

PASSWORDS = PasswordPolicy()


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    workers = RenderPool(RenderConfig(), workers=1, timeout_s=20)
    yield workers
    workers.close()


def _order(*urls: str) -> Any:
    order: Any = sample_order(5)
    order["attachments"] = [{"url": url, "filename": f"warranty {n}.pdf"} for n, url in enumerate(urls)]
    return order


def _send(
    https: Server, order: Any, renderer: Any = None, *, fetch: dict[str, Any] | None = None, **config: Any
) -> tuple[FakeSmtp, FakePublisher]:
    smtp, publisher = FakeSmtp(), FakePublisher()
    settings = {"fetch_policy": https.policy(**{"timeout_s": 2, **(fetch or {})}), **config}
    pipeline = _pipeline(renderer or FakeRenderer(), smtp, publisher, **settings)
    asyncio.run(_run(pipeline, [_inbound(order, 0)]))
    return smtp, publisher


def test_a_fetched_pdf_is_attached_encrypted_with_the_customers_password(
    server: Server,  # noqa: F811
    pool: RenderPool,
) -> None:
    order = _order(server.url("pdf"))
    smtp, publisher = _send(server, order, pool)
    (outcome,) = publisher.outcomes
    assert outcome["status"] == "SENT"
    assert outcome["attachment_count"] == 2
    message = email.message_from_bytes(smtp.messages[0], policy=policy.default)
    parts = list(message.iter_attachments())
    assert [part.get_filename() for part in parts] == [parts[0].get_filename(), "warranty_0.pdf"]
    filename = parts[0].get_filename()
    assert filename is not None
    assert filename.endswith(".pdf")
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


def test_bytes_that_only_look_like_a_pdf_are_rejected_in_the_worker(
    server: Server,  # noqa: F811
    pool: RenderPool,
) -> None:
    smtp, publisher = _send(server, _order(server.url("big")), pool)  # "%PDF-" and a megabyte of zeros
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "attachment_type")]
    assert smtp.messages == []
    assert pool.stats.documents == 1  # it was the worker that opened it


def test_more_urls_than_allowed_are_rejected_before_any_fetch(server: Server) -> None:  # noqa: F811
    before = server.connections
    smtp, publisher = _send(server, _order(*[server.url("pdf")] * 4), fetch={"max_attachments": 3})
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "too_many_attachments")]
    assert server.connections == before
    assert smtp.messages == []


def test_the_byte_budget_is_checked_as_the_bytes_arrive(server: Server) -> None:  # noqa: F811
    """Each of three 1 MB documents fits alone; the third is cut off once the budget is spent."""
    order = _order(*[server.url("big")] * 3)
    smtp, publisher = _send(server, order, max_attachment_bytes=int(2.5 * 1024 * 1024))
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [("REJECTED", "attachment_too_large")]
    assert smtp.messages == []


def test_one_deadline_covers_all_of_an_events_fetches(server: Server) -> None:  # noqa: F811
    """Each slow fetch would stay under its own timeout; together they pass the event's deadline."""
    started = time.monotonic()
    order = _order(server.url("slow"), server.url("slow"))
    smtp, publisher = _send(server, order, fetch={"timeout_s": 10, "event_deadline_s": 0.5})
    assert [(o["status"], o["reason"]) for o in publisher.outcomes] == [
        ("DEFERRED", "attachment_unreachable")
    ]
    assert time.monotonic() - started < 9  # well before the 10 s a fetch alone may take
    assert smtp.messages == []
