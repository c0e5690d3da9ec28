"""VERP (issue 19, step 1): the envelope sender names the event and its attempt, unforgeably."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from consumer.app.settings import Settings
from delivery import SmtpConfig, SmtpPool, TlsMode
from delivery.return_path import MAX_LOCAL_LENGTH, ReturnPath
from delivery.sink import start_sink
from tests.support import free_port

if TYPE_CHECKING:
    from pathlib import Path

SECRET = b"0123456789abcdef-not-a-real-secret"
EVENT = "2f1c8f0e-9a4b-4c1e-8e3a-0a1b2c3d4e5f"
RECIPIENT = "Kim.Lee@customer.example"


@pytest.fixture
def return_path() -> ReturnPath:
    return ReturnPath(local="orders", domain="bounces.shop.example", secret=SECRET)


def test_the_address_names_the_event_and_attempt_and_nothing_else(return_path: ReturnPath) -> None:
    address = return_path.address(EVENT, 3, RECIPIENT)
    assert address is not None
    local, domain = address.split("@")
    assert domain == "bounces.shop.example"
    assert local.startswith("orders+")
    assert len(local) <= 64  # RFC 5321
    assert local.isascii()
    assert local == local.lower()
    token = return_path.parse(address)
    assert token is not None
    assert (token.event_id, token.attempt) == (EVENT, 3)
    assert return_path.parse(f"<{address.upper()}>") == token  # case folded by an MTA
    assert return_path.address(EVENT, 4, RECIPIENT) != address  # each attempt its own


def test_a_forged_or_altered_token_names_nothing(return_path: ReturnPath) -> None:
    address = return_path.address(EVENT, 1, RECIPIENT)
    assert address is not None
    local, domain = address.split("@")
    token = local.split("+", 1)[1]
    # Characters 28-40 hold the event's MAC; the last 8 the recipient's (checked on its own).
    flipped = token[:30] + ("a" if token[30] != "a" else "b") + token[31:]
    other = ReturnPath(local="orders", domain="bounces.shop.example", secret=b"another-secret-of-16+")
    forged = other.address(str(uuid.uuid4()), 1, RECIPIENT)
    assert forged is not None
    for candidate in (
        f"orders+{flipped}@{domain}",  # one character changed
        forged,  # made with another secret
        f"orders+{token}@elsewhere.example",  # another domain
        f"billing+{token}@{domain}",  # another local part
        f"orders+{token[:-2]}@{domain}",  # cut short
        f"orders+{'!' * len(token)}@{domain}",  # not base32
        f"orders@{domain}",
        "",
    ):
        assert return_path.parse(candidate) is None, candidate


def test_the_token_is_bound_to_its_recipient(return_path: ReturnPath) -> None:
    """A customer holding the token of their own e-mail cannot make a report about another
    address count: the feedback service suppresses only the recipient the token was made for."""
    token = return_path.parse(return_path.address(EVENT, 1, RECIPIENT) or "")
    assert token is not None
    assert return_path.names_recipient(token, RECIPIENT)
    assert return_path.names_recipient(token, "<kim.lee@CUSTOMER.example>")  # folded by an MTA
    assert not return_path.names_recipient(token, "someone.else@customer.example")
    assert not return_path.names_recipient(token, "")
    assert RECIPIENT not in repr(token)
    assert return_path.parse(return_path.address(EVENT, 999, RECIPIENT) or "").attempt == 255  # type: ignore[union-attr]


def test_ids_that_are_not_uuids_get_no_token(return_path: ReturnPath) -> None:
    assert return_path.address("not-a-uuid", 1, RECIPIENT) is None


@pytest.mark.parametrize(
    ("local", "domain", "secret"),
    [
        ("o" * (MAX_LOCAL_LENGTH + 1), "bounces.shop.example", SECRET),
        ("orders", "not a domain", SECRET),
        ("orders", "bounces.shop.example", b"short"),
        ("or<ders", "bounces.shop.example", SECRET),
    ],
)
def test_a_bad_configuration_is_refused(local: str, domain: str, secret: bytes) -> None:
    with pytest.raises(ValueError, match="return-path"):
        ReturnPath(local=local, domain=domain, secret=secret)


def test_settings_need_the_secret_with_the_domain() -> None:
    assert Settings().return_path() is None  # unset: today's envelope sender
    with pytest.raises(ValidationError, match="ORDERMAIL_RETURN_PATH_SECRET"):
        Settings(ORDERMAIL_RETURN_PATH_DOMAIN="bounces.shop.example")
    configured = Settings(
        ORDERMAIL_RETURN_PATH_DOMAIN="bounces.shop.example",
        ORDERMAIL_RETURN_PATH_SECRET=SECRET.decode(),
        ORDERMAIL_MAIL_FROM="orders@shop.example",
    ).return_path()
    assert configured is not None
    assert configured.local == "orders"
    assert "secret" not in repr(configured)


def test_the_relay_sees_the_token_as_the_envelope_sender(tmp_path: Path, return_path: ReturnPath) -> None:
    """Through a real SMTP session: the sink writes the envelope sender as Return-Path, as a
    delivering MTA does, and the token read back from it names the event."""
    address = return_path.address(EVENT, 2, RECIPIENT)
    assert address is not None

    async def send() -> None:
        port = free_port()
        (tmp_path / "outbox").mkdir()
        async with await start_sink(tmp_path / "outbox", host="127.0.0.1", port=port):
            pool = SmtpPool(SmtpConfig(host="127.0.0.1", port=port, tls=TlsMode.NONE))
            message = b"From: orders@shop.example\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
            await pool.send(message, sender=address, recipient="a@example.com")
            await pool.close()

    asyncio.run(send())
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    first_line = eml.read_bytes().split(b"\r\n", 1)[0].decode()
    assert first_line == f"Return-Path: <{address}>"
    token = return_path.parse(first_line.split(": ", 1)[1])
    assert token is not None
    assert (token.event_id, token.attempt) == (EVENT, 2)
