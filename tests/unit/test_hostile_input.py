"""Customer-written fields are hostile by default. Whatever they hold, the whole pipeline
(render → encrypt → compose) never crashes, never makes the renderer reach the network or read
a local file, shows payloads literally, and never lets them create an e-mail header."""

from __future__ import annotations

import copy
import email
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from io import BytesIO
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery import Attachment, compose, message_id_for
from rendering import Renderer, RenderError
from schemas.samples import sample_order

EXPECTED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "mime-version",
    "content-type",
}
FIELDS = (
    ("customer", "first_name"),
    ("customer", "last_name"),
    ("customer", "billing_address", "line1"),
    ("customer", "billing_address", "city"),
    ("gift_message",),
    ("lines", 0, "name"),
    ("lines", 0, "options", "colour"),
    ("shipping_method",),
)


@dataclass
class Trap:
    """A listening socket and a secret file: the renderer must touch neither."""

    port: int
    sentinel: Path
    secret: str
    connections: list[object]


@pytest.fixture(scope="module")
def trap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trap]:
    secret = f"SENTINEL-{uuid.uuid4().hex}"
    sentinel = tmp_path_factory.mktemp("trap") / "secret.txt"
    sentinel.write_text(secret)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    connections: list[object] = []
    running = True

    def accept() -> None:
        while running:
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connections.append(connection)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield Trap(server.getsockname()[1], sentinel, secret, connections)
    running = False
    thread.join(2)
    server.close()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _payloads(trap: Trap) -> list[str]:
    url = f"http://127.0.0.1:{trap.port}"
    return [
        "{{ 7*7 }}",
        "{% for x in range(3) %}LOOP{% endfor %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"<img src='{url}/img.png'>",
        f"<link rel=attachment href='file://{trap.sentinel}'>",
        f"<base href='{url}/'><img src='x.png'>",
        f"<style>@import url({url}/s.css); body {{ background: url(file://{trap.sentinel}) }}</style>",
        f"url(file://{trap.sentinel})",
        f"<iframe src='file://{trap.sentinel}'></iframe>",
        "Ana\r\nBcc: victim@example.org",
        "Name\nX-Injected: yes",
        "\u202eevil\u200b\u200d zero-width",
        "🎉💥" * 20,
        "A" * 3000,
        "<script>alert(1)</script>",
        "\x00\x07\x1b[31m",
    ]


def _set(order: dict[str, Any], path: tuple[Any, ...], value: str) -> None:
    target: Any = order
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _pdf_text(pdf: bytes, tmp: Path) -> str:
    path = tmp / f"{uuid.uuid4().hex}.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return re.sub(r"\s+", " ", text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_are_inert(
    data: st.DataObject, trap: Trap, renderer: Renderer, tmp_path: Path
) -> None:
    order: Any = copy.deepcopy(sample_order(data.draw(st.integers(0, 50))))
    order["lines"][0]["options"]["colour"] = "blue"
    chosen = {}
    for path in data.draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        value = data.draw(st.one_of(st.sampled_from(_payloads(trap)), st.text(max_size=200)))
        _set(order, path, value)
        chosen[path] = value

    try:
        mail = renderer.render_mail(order)
        plain = renderer.render_pdf(order)
    except RenderError as error:  # a classified refusal is fine; a crash is not
        refusal: str | None = error.reason
    else:
        refusal = None
    if refusal is not None:
        assert refusal in {"render_error", "template_error"}
        return

    # No network, no local file.
    assert trap.connections == []
    text = _pdf_text(plain, tmp_path)
    assert trap.secret not in text
    assert trap.secret.encode() not in plain
    with pikepdf.open(BytesIO(plain)) as document:
        assert len(document.attachments) == 0  # <link rel=attachment> had no effect
    # Template syntax is shown, never evaluated.
    # A bidi override in another value reorders the extracted text: then only check it is inert.
    reordered = any(re.search("[\u202a-\u202e\u2066-\u2069]", v) for v in chosen.values())
    for value in chosen.values():
        if value in {"{{ 7*7 }}", "<script>alert(1)</script>"} and not reordered:
            # A narrow column may wrap it anywhere: compare without whitespace; and an address
            # line may be in the post's capitals (a city, in most countries).
            assert re.sub(r"\s", "", value).casefold() in re.sub(r"\s", "", text).casefold()
    assert "LOOPLOOP" not in text

    # The e-mail: exactly our headers, whatever the values held.
    message = compose(
        sender="orders@shop.example",
        recipient="customer@example.com",
        subject=mail.subject,
        text=mail.text_body,
        html=mail.html_body,
        attachments=[Attachment(mail.attachment_filename, mail.pdf)],
        message_id=message_id_for(order["event_id"], "shop.example"),
        date=datetime.now(UTC),
    )
    parsed = email.message_from_bytes(message, policy=policy.default)
    assert {k.lower() for k in parsed} == EXPECTED_HEADERS
