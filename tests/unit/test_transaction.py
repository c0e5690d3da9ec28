"""Mail transactions (``delivery/transaction.py``) through SmtpPool against a scripted SMTP server
on 127.0.0.1: pipelined when the server offers PIPELINING, one command at a time when it does not,
and every refusal classified as aiosmtplib's sequential path classified it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery import SendError, SmtpConfig, SmtpPool, TlsMode
from tests.support import free_port

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


@dataclass
class Script:
    """How the server answers; what it saw."""

    pipelining: bool = True
    extensions: tuple[str, ...] = ()
    mail: str = "250 OK"
    rcpt: str = "250 OK"
    data: str = "354 go ahead"
    final: str = "250 queued"
    groups: list[list[str]] = field(default_factory=list)  # commands answered together
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    alone: list[bool] = field(default_factory=list)  # nothing else had arrived when answering
    lines: list[str] = field(default_factory=list)
    late_s: float = 0.0  # DATA's reply comes this much after the others


HANG_UP = "(hang up)"


async def _serve(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    script.connections += 1
    writer.write(b"220 scripted ESMTP\r\n")
    held: list[str] = []  # replies a pipelining server holds until DATA (RFC 2920 allows it)
    group: list[str] = []
    try:
        while line := (await reader.readline()).decode().strip():
            verb = line.split(" ", 1)[0].upper()
            script.lines.append(line)
            group.append(verb)
            reply = {"MAIL": script.mail, "RCPT": script.rcpt, "DATA": script.data}.get(verb, "250 OK")
            if verb == "EHLO":
                lines = ["scripted", *script.extensions, *(["PIPELINING"] if script.pipelining else [])]
                reply = "\r\n".join(f"250-{x}" for x in lines[:-1]) + ("\r\n" if len(lines) > 1 else "")
                reply += f"250 {lines[-1]}"
            if verb == "QUIT":
                reply = "221 bye"
            script.alone.append(not reader._buffer)  # type: ignore[attr-defined]  # already sent?
            held.append(reply)
            if reply.startswith(("421", "221", HANG_UP)):  # what it has to say, then it hangs up
                writer.write("".join(r + "\r\n" for r in held if r != HANG_UP).encode())
                break
            if script.pipelining and verb in ("MAIL", "RCPT"):
                continue  # a client waiting for this reply now would wait forever
            if verb == "DATA" and script.late_s:
                writer.write("".join(r + "\r\n" for r in held[:-1]).encode())
                await asyncio.sleep(script.late_s)
                held = held[-1:]
            writer.write("".join(r + "\r\n" for r in held).encode())
            script.groups.append(group)
            held, group = [], []
            if verb == "DATA" and reply.startswith("354"):
                body = b""
                while (data := await reader.readline()) != b".\r\n":
                    body += data
                script.bodies.append(body)
                writer.write(script.final.encode() + b"\r\n")
                if script.final.startswith("421"):
                    break
            await writer.drain()
    finally:
        writer.close()


@asynccontextmanager
async def scripted(script: Script, timeout_s: float = 5) -> AsyncIterator[SmtpPool]:
    port = free_port()
    server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", port)
    async with server:
        pool = SmtpPool(SmtpConfig(port=port, tls=TlsMode.NONE, timeout_s=timeout_s, connections=1))
        try:
            yield pool
        finally:
            await pool.close()


async def _send(pool: SmtpPool, recipient: str = "ana@example.com") -> int | str:
    try:
        return (await pool.send(MESSAGE, sender="orders@shop.example", recipient=recipient)).code
    except SendError as error:
        return error.reason


def test_mail_rcpt_and_data_go_out_together_when_the_server_pipelines() -> None:
    """The server answers nothing before DATA has arrived: a client waiting for MAIL's reply
    first would time out."""
    script = Script()

    async def scenario() -> list[int | str]:
        async with scripted(script) as pool:
            return [await _send(pool), await _send(pool)]

    assert asyncio.run(scenario()) == [250, 250]
    assert script.groups[1:3] == [["MAIL", "RCPT", "DATA"], ["MAIL", "RCPT", "DATA"]]
    assert script.connections == 1
    assert script.bodies == [b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n"] * 2


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    script = Script(pipelining=False)

    async def scenario() -> int | str:
        async with scripted(script) as pool:
            return await _send(pool)

    assert asyncio.run(scenario()) == 250
    assert ["MAIL"] in script.groups
    assert ["RCPT"] in script.groups
    assert all(script.alone)


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ({"mail": "421 4.7.0 closing, too many"}, "smtp_throttled"),  # and the server hangs up
        ({"mail": "451 4.7.1 rate limit exceeded"}, "smtp_throttled"),
        ({"mail": "553 5.7.1 sender refused"}, "smtp_permanent"),
        ({"rcpt": "550 5.1.1 no such user"}, "smtp_permanent"),
        ({"rcpt": "452 4.2.2 mailbox full"}, "smtp_transient"),
        ({"rcpt": "251 will forward", "final": "250-queued\r\n250 as 12AB"}, 250),
        ({"data": "554 5.3.0 no"}, "smtp_permanent"),
        ({"final": "452 4.3.1 out of storage"}, "smtp_transient"),
        ({"final": "421 4.3.2 shutting down"}, "smtp_throttled"),
        # A broken server that takes DATA after refusing the recipient: the empty message is ended.
        ({"rcpt": "550 5.1.1 no such user", "data": "354 go ahead anyway"}, "smtp_permanent"),
    ],
)
def test_replies_are_classified_alike_with_and_without_pipelining(
    pipelining: bool, replies: dict[str, str], reason: int | str
) -> None:
    script = Script(pipelining=pipelining)
    script.__dict__.update(replies)

    async def scenario() -> int | str:
        async with scripted(script) as pool:
            first = await _send(pool)
            # The refused transaction left the session usable (RSET), or it was replaced.
            script.mail, script.rcpt, script.data, script.final = "250 OK", "250 OK", "354 go", "250 queued"
            assert await _send(pool) == 250
            return first

    assert asyncio.run(scenario()) == reason


def test_a_refusal_with_a_reply_still_missing_gives_the_session_up() -> None:
    """RCPT refused, DATA's reply late (and odd: 250): read as the answer to RSET, it would leave
    every later reply one step behind. The session is replaced instead, and the next message goes
    out on a new one."""
    script = Script(rcpt="550 5.1.1 no such user", data="250 late and odd", late_s=0.45)

    async def scenario() -> list[int | str]:
        async with scripted(script, timeout_s=0.3) as pool:
            first = await _send(pool)
            script.rcpt, script.data, script.late_s = "250 OK", "354 go ahead", 0.0
            return [first, await _send(pool)]

    assert asyncio.run(scenario()) == ["smtp_permanent", 250]
    assert "RSET" not in script.lines
    assert script.connections == 2


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_server_that_hangs_up_mid_transaction_is_a_disconnect(pipelining: bool) -> None:
    script = Script(pipelining=pipelining, data=HANG_UP)

    async def scenario() -> int | str:
        async with scripted(script) as pool:
            return await _send(pool)

    assert asyncio.run(scenario()) == "smtp_disconnected"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b".",
        b"Subject: x\r\n\r\nbody",
        b"Subject: x\r\n\r\n.leading\r\n..two\r\n.\r\n",
        b"bare LF\nand CR\rand both\r\n.dot after LF\n.dot after CR\r.\r\n",
        b"CR CR LF\r\r\n\n\r\r\n",
        b"\r\n.\r\n",
        b"..\r\n.\r\n...\r\n.",
        b"x\r\n.\n.\r.\r\n\r\n.",
    ],
)
def test_data_is_written_as_aiosmtplib_writes_it(message: bytes) -> None:
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    from delivery.transaction import _data

    assert _data(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


_ADDRESS_PART = st.text(
    st.sampled_from("az09.+-_=!#$%&'*/?^`{|}~üß日\x00\x7f \"<>()[],;:@\\"), min_size=1, max_size=12
)


@settings(max_examples=1000, deadline=None)
@given(_ADDRESS_PART, _ADDRESS_PART)
def test_addresses_are_quoted_as_aiosmtplib_quotes_them(local: str, domain: str) -> None:
    """Bare addresses skip aiosmtplib's parse: the result must be the same for every address."""
    from aiosmtplib.email import quote_address

    from delivery.transaction import _address

    address = f"{local}@{domain}"
    try:
        expected: bytes | None = quote_address(address).encode()
        if any(c < 0x20 or c == 0x7F for c in expected or b""):
            expected = None
    except ValueError:
        expected = None
    try:
        assert _address(address, "utf-8") == expected
    except ValueError:
        assert expected is None


def test_replies_split_anywhere_or_run_together_are_read_one_by_one() -> None:
    from delivery.transaction import Disconnected, _Replies

    async def scenario() -> list[tuple[int, str]]:
        replies = _Replies()
        stream = b"250 OK\r\n250-first\r\n250 second\r\n354 go ahead\r\n"
        for i in range(0, len(stream), 5):  # five bytes at a time: lines split mid-code and mid-CRLF
            replies.data_received(stream[i : i + 5])
        read = [await replies.next(1) for _ in range(3)]
        replies.data_received(b"hello\r\n")  # not a reply: the session is broken
        with pytest.raises(Disconnected):
            await replies.next(1)
        return read

    assert asyncio.run(scenario()) == [(250, "OK"), (250, "first\nsecond"), (354, "go ahead")]


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_relay_offering_dsn_gets_headers_only_bounces_naming_the_original_recipient(
    pipelining: bool,
) -> None:
    script = Script(pipelining=pipelining, extensions=("DSN", "SMTPUTF8"))

    async def scenario() -> list[int | str]:
        async with scripted(script) as pool:
            ascii_ = await _send(pool, "ana+orders=x@example.com")
            international = await _send(pool, "lucía@ejemplo.es")
            return [ascii_, international]

    assert asyncio.run(scenario()) == [250, 250]
    mails = [line for line in script.lines if line.startswith("MAIL")]
    rcpts = [line for line in script.lines if line.startswith("RCPT")]
    assert mails == [
        "MAIL FROM:<orders@shop.example> RET=HDRS",
        "MAIL FROM:<orders@shop.example> SMTPUTF8 RET=HDRS",  # as aiosmtplib wrote it
    ]
    assert rcpts == [
        "RCPT TO:<ana+orders=x@example.com> ORCPT=rfc822;ana+2Borders+3Dx@example.com",
        "RCPT TO:<lucía@ejemplo.es>",
    ]


def test_without_dsn_no_dsn_parameters_are_sent() -> None:
    script = Script()

    async def scenario() -> int | str:
        async with scripted(script) as pool:
            return await _send(pool)

    assert asyncio.run(scenario()) == 250
    assert [line for line in script.lines if line.startswith(("MAIL", "RCPT"))] == [
        "MAIL FROM:<orders@shop.example>",
        "RCPT TO:<ana@example.com>",
    ]
