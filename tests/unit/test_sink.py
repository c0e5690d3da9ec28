"""The development SMTP sink (``ordermail smtp-sink``) on 127.0.0.1: what it stores is exactly what
was sent, it speaks ESMTP as relays do (STARTTLS, sequence errors, SMTPUTF8) and its fault rules
answer as configured."""

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from delivery import SendError, SmtpConfig, SmtpPool, TlsMode
from delivery.sink import FaultRules, start_sink
from tests.support import free_port

BODIES = [
    b"Subject: plain\r\n\r\nhello\r\n",
    b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nends with a dot.\r\n",
    b"Subject: dot at the end\r\n\r\nlast line\r\n.\r\n",
    "Subject: 8bit\r\n\r\nÑandú — ✓\r\n".encode(),
    b"Subject: long\r\n\r\n" + b"QUJD" * 19 + b"\r\n" * 2000,
]


@asynccontextmanager
async def running_sink(
    tmp_path: Path, *, tls: ssl.SSLContext | None = None, faults: Path | None = None
) -> AsyncIterator[tuple[int, Path]]:
    port, outbox = free_port(), tmp_path / "outbox"
    server = await start_sink(outbox, host="127.0.0.1", port=port, tls_context=tls, faults=FaultRules(faults))
    async with server:
        yield port, outbox


def stored(outbox: Path) -> list[bytes]:
    """The messages as received: without the Return-Path line the sink writes first."""
    return sorted(path.read_bytes().split(b"\r\n", 1)[1] for path in outbox.glob("*.eml"))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def test_messages_sent_over_starttls_are_stored_byte_for_byte(tmp_path: Path, ca: trustme.CA) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    messages = [body + f"X-Copy: {i}\r\n".encode() for i in range(6) for body in BODIES]

    async def scenario() -> list[bytes]:
        async with running_sink(tmp_path, tls=server_context(ca)) as (port, outbox):
            config = SmtpConfig(port=port, ca_file=str(ca_file), connections=3, max_messages_per_connection=4)
            pool = SmtpPool(config)
            results = await asyncio.gather(
                *(pool.send(m, sender="orders@shop.example", recipient="ana@example.com") for m in messages)
            )
            await pool.close()
            assert {r.code for r in results} == {250}
            return stored(outbox)

    assert asyncio.run(scenario()) == sorted(messages)


def test_international_addresses_are_accepted(tmp_path: Path) -> None:
    async def scenario() -> list[bytes]:
        async with running_sink(tmp_path) as (port, outbox):
            pool = SmtpPool(SmtpConfig(port=port, tls=TlsMode.NONE))
            await pool.send(BODIES[3], sender="tienda@ñandú.example", recipient="lucía@ejemplo.es")
            await pool.close()
            return stored(outbox)

    assert asyncio.run(scenario()) == [BODIES[3]]


async def conversation(port: int, lines: list[bytes]) -> list[str]:
    """Sends all lines in one write (pipelined) and returns the replies, one per line sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await _reply(reader)]  # the greeting
    writer.write(b"".join(lines))
    for _ in lines:
        replies.append(await _reply(reader))
    writer.close()
    return replies


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = [await reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    return b"".join(lines).decode()


def test_protocol_order_is_enforced_and_replies_follow_each_command(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], list[bytes]]:
        async with running_sink(tmp_path) as (port, outbox):
            replies = await conversation(
                port,
                [
                    b"MAIL FROM:<a@shop.example>\r\n",  # before EHLO
                    b"EHLO client.example\r\n",
                    b"RCPT TO:<b@example.com>\r\n",  # before MAIL
                    b"DATA\r\n",  # before RCPT
                    b"MAIL FROM:a@shop.example\r\n",  # no angle brackets
                    b"MAIL FROM:<a@shop.example> SIZE=100\r\n",
                    b"MAIL FROM:<again@shop.example>\r\n",
                    b"RCPT TO:<b@example.com>\r\n",
                    b"RSET\r\n",
                    b"DATA\r\n",  # RSET forgot the recipient
                    b"VRFY b@example.com\r\n",
                    b"NOOP\r\n",
                    b"STARTTLS\r\n",  # not offered without a certificate
                    b"QUIT\r\n",
                ],
            )
            return replies, stored(outbox)

    replies, files = asyncio.run(scenario())
    codes = [int(reply[:3]) for reply in replies]
    assert codes == [220, 503, 250, 503, 503, 501, 250, 503, 250, 250, 503, 500, 250, 502, 221]
    assert {"SIZE 33554432", "8BITMIME", "SMTPUTF8"} <= {line[4:].strip() for line in replies[2].splitlines()}
    assert "STARTTLS" not in replies[2]
    assert files == []


def test_an_empty_message_and_two_transactions_on_one_connection(tmp_path: Path) -> None:
    def transaction(body: bytes) -> list[bytes]:
        return [b"MAIL FROM:<a@shop.example>\r\n", b"RCPT TO:<b@x.example>\r\n", b"DATA\r\n", body + b".\r\n"]

    async def scenario() -> tuple[list[str], list[bytes]]:
        async with running_sink(tmp_path) as (port, outbox):
            replies = await conversation(
                port, [b"HELO client\r\n", *transaction(b""), *transaction(b"Subject: 2\r\n\r\n..x\r\n")]
            )
            return replies, stored(outbox)

    replies, files = asyncio.run(scenario())
    assert [int(reply[:3]) for reply in replies] == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250]
    assert files == [b"", b"Subject: 2\r\n\r\n.x\r\n"]


def test_fault_rules_refuse_or_delay_recipients(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps(
            [
                {"match": "bounce", "reply": "550 5.1.1 no such mailbox"},
                {"match": "later", "reply": "451 4.7.1 try later"},
                {"match": "slow", "delay_s": 0.3},
            ]
        )
    )

    async def scenario() -> tuple[list[str | None], float, list[bytes]]:
        async with running_sink(tmp_path, faults=faults) as (port, outbox):
            pool = SmtpPool(SmtpConfig(port=port, tls=TlsMode.NONE))
            reasons: list[str | None] = []
            for recipient in ("bounce@example.com", "later@example.com"):
                try:
                    await pool.send(BODIES[0], sender="a@shop.example", recipient=recipient)
                    reasons.append(None)
                except SendError as error:
                    reasons.append(error.reason)
            started = time.monotonic()
            await pool.send(BODIES[1], sender="a@shop.example", recipient="slow@example.com")
            waited = time.monotonic() - started
            await pool.close()
            return reasons, waited, stored(outbox)

    reasons, waited, files = asyncio.run(scenario())
    assert reasons == ["smtp_permanent", "smtp_transient"]
    assert waited >= 0.3
    assert files == [BODIES[1]]


def test_pipelining_is_offered_and_a_whole_transaction_in_one_write_is_stored(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], list[bytes]]:
        async with running_sink(tmp_path) as (port, outbox):
            group = [b"MAIL FROM:<a@shop.example>\r\n", b"RCPT TO:<b@x.example>\r\n", b"DATA\r\n"]
            # The body rides along too: the sink takes each command and the body from what it read.
            replies = await conversation(
                port, [b"EHLO client\r\n", *group, BODIES[0] + b".\r\n", b"QUIT\r\n"]
            )
            return replies, stored(outbox)

    replies, files = asyncio.run(scenario())
    assert "250-PIPELINING" in replies[1] or "250 PIPELINING" in replies[1]
    assert [int(reply[:3]) for reply in replies] == [220, 250, 250, 250, 354, 250, 221]
    assert files == [BODIES[0]]


def test_commands_sent_in_the_clear_after_starttls_are_dropped(tmp_path: Path, ca: trustme.CA) -> None:
    """A man in the middle may append commands to STARTTLS (CVE-2011-0411): they must not be
    answered, or acted on, as if they had come over TLS."""
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def scenario() -> list[str]:
        async with running_sink(tmp_path, tls=server_context(ca)) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            replies = [await _reply(reader)]
            writer.write(b"EHLO client\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
            replies += [await _reply(reader), await _reply(reader)]
            await writer.start_tls(client_context, server_hostname="127.0.0.1")
            writer.write(b"NOOP\r\n")
            replies.append(await _reply(reader))
            writer.write(b"EHLO client\r\nRCPT TO:<b@x.example>\r\nQUIT\r\n")
            replies += [await _reply(reader) for _ in range(3)]
            writer.close()
            return replies

    replies = asyncio.run(scenario())
    assert [int(reply[:3]) for reply in replies] == [220, 250, 220, 250, 250, 503, 221]
    assert "need MAIL" in replies[5]
