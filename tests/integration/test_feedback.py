"""``ordermail feedback`` on real parts (issue 19): the service e-mails orders with a VERP return
path through the sink; bounces for them are delivered over SMTP to the feedback process, which
publishes ``DeliveryFeedback`` records for exactly the events they name."""

from __future__ import annotations

import asyncio
import email
import json
import os
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from consumer.app.settings import Settings
from consumer.feedback.smtp_receiver import MAX_RECEIVING, MAX_SESSIONS
from consumer.kafka.suppressions import entry_of
from consumer.tools.producing import publish_orders
from consumer.tools.topic_reader import read_outcomes, read_records
from delivery.feedback.sendgrid import TIMESTAMP_HEADER
from schemas import FEEDBACK_SCHEMA, OUTCOME_SCHEMA, Codec
from schemas.samples import sample_order
from tests.conftest import ORDERMAIL, PARTITIONS, _terminate
from tests.integration.operations import json_of, ordermail
from tests.support import free_port, http_get, http_post, wait_for_port
from tests.unit.test_webhooks import (
    TOPIC,
    _certificate,
    _pem,
    _setting,
    body,
    bounce_event,
    notification,
    sign_sendgrid,
    sign_sns,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from email.message import Message
    from pathlib import Path

    from tests.conftest import ServiceFactory, Sink, Topics
    from tests.support import RelaySettings

pytestmark = pytest.mark.integration

RETURN_PATH = {
    "ORDERMAIL_MAIL_FROM": "orders@shop.example",
    "ORDERMAIL_RETURN_PATH_DOMAIN": "bounces.shop.example",
    "ORDERMAIL_RETURN_PATH_SECRET": "integration-test-secret-0123456789",
}


class Feedback:
    def __init__(self, bootstrap: str, topics: Topics, workdir: Path, **extra_env: str) -> None:
        self.topic = f"{topics.input}.feedback"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])[self.topic].result(timeout=30)
        self.smtp_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        if "ORDERMAIL_FEEDBACK_SMTP_PORT" in extra_env:  # where a relay sends its reports
            self.smtp_port = int(extra_env["ORDERMAIL_FEEDBACK_SMTP_PORT"])
        env = {
            **os.environ,
            **RETURN_PATH,
            **topics.env(),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ORDERMAIL_FEEDBACK_TOPIC": self.topic,
            "OTEL_TRACES_EXPORTER": "console",  # spans on standard output, read by the tests
            **extra_env,
            "ORDERMAIL_FEEDBACK_SMTP_PORT": str(self.smtp_port),
            "ORDERMAIL_FEEDBACK_HTTP_PORT": str(self.http_port),
            "ORDERMAIL_FEEDBACK_HEALTH_PORT": str(self.health_port),
        }
        self.log = workdir / "feedback.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [ORDERMAIL, "feedback"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.smtp_port, timeout_s=60)

    def deliver(self, message: bytes, recipients: list[str]) -> tuple[int, str]:
        """As a relay would: null sender, the report's recipients. Returns the DATA reply."""

        async def send() -> tuple[int, str]:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port, start_tls=False) as smtp:
                await smtp.mail("")
                for recipient in recipients:
                    await smtp.rcpt(recipient)
                reply = await smtp.data(message)
                return reply.code, reply.message

        return asyncio.run(send())

    def metric(self, line_start: str) -> float:
        _, text = http_get(self.health_port, "/metrics")
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
        return sum(values)


@pytest.fixture
def feedback(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[Feedback]:
    service = Feedback(kafka_bootstrap, topics, tmp_path)
    try:
        yield service
    finally:
        _terminate(service.process)


def _sent(
    kafka_bootstrap: str, topics: Topics, start_service: ServiceFactory, smtp_sink: Sink, count: int
) -> list[dict[str, Any]]:
    """Sends ``count`` orders; returns each with its outcome's partition and e-mail's envelope."""
    start_service(**RETURN_PATH, OTEL_TRACES_EXPORTER="console")
    orders = [sample_order(seed) for seed in range(count)]
    publish_orders(
        Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input),
        Codec.from_directory(),
        orders,
    )
    outcomes = read_outcomes(kafka_bootstrap, topics.outcome, expected=count, timeout_s=90)
    assert sorted(o["status"] for _, o in outcomes) == ["SENT"] * count
    by_order = {o["order_id"]: (record.partition, o["trace_id"]) for record, o in outcomes}
    mails = {}
    for path in smtp_sink.messages():
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        mails[str(message["To"])] = (str(message["Return-Path"]).strip("<>"), str(message["Message-ID"]))
    return [
        {
            **order,
            "partition": by_order[order["order_id"]][0],
            "trace_id": by_order[order["order_id"]][1],
            "return_path": mails[order["customer"]["email"]][0],
            "message_id": mails[order["customer"]["email"]][1],
        }
        for order in orders
    ]


def dsn(recipient: str, *, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A bounce as Postfix writes it (headers returned)."""
    return (
        "From: MAILER-DAEMON@relay.example (Mail Delivery System)\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\nArrival-Date: Mon, 7 Dec 2026 08:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--B--\r\n"
    ).encode()


def _feedback_records(kafka_bootstrap: str, topic: str, expected: int) -> list[tuple[Any, dict[str, Any]]]:
    codec = Codec.from_directory()
    records = read_records(kafka_bootstrap, topic, expected=expected, timeout_s=30)
    return [(r, codec.decode(r.value or b"", FEEDBACK_SCHEMA)) for r in records]


def test_a_bounce_becomes_feedback_for_exactly_its_event(
    kafka_bootstrap: str,
    topics: Topics,
    start_service: ServiceFactory,
    smtp_sink: Sink,
    feedback: Feedback,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    bounced, delivered = _sent(kafka_bootstrap, topics, start_service, smtp_sink, 2)
    code, _ = feedback.deliver(dsn(bounced["customer"]["email"]), [bounced["return_path"]])
    assert code == 250
    code, _ = feedback.deliver(
        dsn(delivered["customer"]["email"], status="2.0.0", action="delivered"), [delivered["return_path"]]
    )
    assert code == 250
    records = _feedback_records(kafka_bootstrap, feedback.topic, expected=2)
    by_event = {value["event_id"]: (record, value) for record, value in records}
    record, value = by_event[bounced["event_id"]]
    assert record.key == bounced["order_id"].encode()
    assert record.partition == bounced["partition"]  # co-partitioned with the event and its outcome
    assert (value["kind"], value["bounce_type"], value["status_code"], value["source"]) == (
        "BOUNCED",
        "hard",
        "5.1.1",
        "dsn",
    )
    assert value["order_id"] == bounced["order_id"]
    assert value["attempt"] == 1
    assert value["recipient_domain"] == bounced["customer"]["email"].rpartition("@")[2].lower()
    assert value["trace_id"] == bounced["trace_id"]  # the original event's trace, as its outcome says
    assert bounced["trace_id"] is not None
    assert by_event[delivered["event_id"]][1]["kind"] == "DELIVERED"
    # Nothing personal in any record: no address, no diagnostic text.
    for raw, _ in records:
        assert bounced["customer"]["email"].encode() not in (raw.value or b"")
        assert b"user unknown" not in (raw.value or b"")
    # A consumer holding DeliveryOutcome's schema reads the outcome topic, which feedback leaves alone.
    assert all(
        o["status"] == "SENT"
        for _, o in read_outcomes(kafka_bootstrap, topics.outcome, expected=2, timeout_s=10)
    )
    assert feedback.metric('ordermail_feedback_total{bounce_type="hard",kind="BOUNCED",source="dsn"}') == 1
    # The feedback span links to the e-mail's trace; the log names no customer.
    _terminate(feedback.process)  # flushes the console exporter
    log = feedback.log.read_text()
    assert '"name": "feedback dsn"' in log
    assert f'"trace_id": "0x{bounced["trace_id"]}"' in log
    assert bounced["customer"]["email"] not in log
    assert bounced["customer"]["last_name"] not in log


def test_forged_and_stray_mail_is_dropped_and_counted(
    kafka_bootstrap: str,
    topics: Topics,
    start_service: ServiceFactory,
    smtp_sink: Sink,
    feedback: Feedback,
) -> None:
    [order] = _sent(kafka_bootstrap, topics, start_service, smtp_sink, 1)
    local, domain = order["return_path"].split("@")
    forged = f"{local[:37]}{'a' if local[37] != 'a' else 'b'}{local[38:]}@{domain}"
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as unsigned:  # no token: not even read
        feedback.deliver(dsn(order["customer"]["email"]), [forged])
    assert unsigned.value.code == 550
    # Through the complaints mailbox a message is read, but a bounce there has no token to name
    # its event by: dropped.
    assert feedback.deliver(dsn(order["customer"]["email"]), ["fbl@bounces.shop.example"])[0] == 250
    out_of_office = b"From: x@customer.example\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n"
    assert feedback.deliver(out_of_office, [order["return_path"]])[0] == 250
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:  # it relays nothing
        feedback.deliver(dsn("a@b.example"), ["someone@elsewhere.example"])
    assert refused.value.code == 550
    assert feedback.metric('ordermail_feedback_dropped_total{reason="unsigned",source="smtp"}') == 2
    assert feedback.metric('ordermail_feedback_dropped_total{reason="auto_reply",source="smtp"}') == 1
    # The genuine report still counts after the forged one: a record for its event, and only that.
    assert feedback.deliver(dsn(order["customer"]["email"]), [order["return_path"]])[0] == 250
    [(_, value)] = _feedback_records(kafka_bootstrap, feedback.topic, expected=1)
    assert value["event_id"] == order["event_id"]
    assert OUTCOME_SCHEMA.name != FEEDBACK_SCHEMA.name


def test_sessions_are_bounded(feedback: Feedback) -> None:
    """Each session may hold a report of up to the size limit: past MAX_SESSIONS, 421."""
    held = []
    try:
        for _ in range(MAX_SESSIONS):
            connection = socket.create_connection(("127.0.0.1", feedback.smtp_port), timeout=10)
            held.append(connection)
            assert connection.recv(512).startswith(b"220")
        with socket.create_connection(("127.0.0.1", feedback.smtp_port), timeout=10) as refused:
            assert refused.recv(512).startswith(b"421")
    finally:
        for connection in held:
            connection.close()
    # Closed sessions are given back.
    with socket.create_connection(("127.0.0.1", feedback.smtp_port), timeout=10) as again:
        assert again.recv(512).startswith(b"220")


def test_messages_are_read_a_few_at_a_time_whatever_the_sessions(feedback: Feedback) -> None:
    """Past MAX_RECEIVING messages being read, DATA waits for a place (aiosmtpd keeps every line
    read: memory is bounded by the messages, not by the sessions)."""

    def at_data(connection: socket.socket) -> socket.socket:
        replies = connection.makefile("rb")
        assert replies.readline().startswith(b"220")
        for command in (b"HELO probe", b"MAIL FROM:<a@b.example>", b"RCPT TO:<fbl@bounces.shop.example>"):
            connection.sendall(command + b"\r\n")
            assert replies.readline()[:1] == b"2"
        connection.sendall(b"DATA\r\n")
        return connection

    held = [
        at_data(socket.create_connection(("127.0.0.1", feedback.smtp_port), timeout=10))
        for _ in range(MAX_RECEIVING + 1)
    ]
    try:
        for connection in held[:MAX_RECEIVING]:
            assert connection.recv(512).startswith(b"354")
        waiting = held[MAX_RECEIVING]
        waiting.settimeout(1.0)
        with pytest.raises(TimeoutError):
            waiting.recv(512)  # no place yet
        held[0].sendall(b"Subject: x\r\n\r\nnot a report\r\n.\r\n")  # a place is given back
        waiting.settimeout(10)
        assert waiting.recv(512).startswith(b"354")
    finally:
        for connection in held:
            connection.close()


def test_signed_esp_webhooks_become_feedback_and_forged_ones_are_refused(
    kafka_bootstrap: str, topics: Topics, start_service: ServiceFactory, smtp_sink: Sink, tmp_path: Path
) -> None:
    """SES (through SNS) and SendGrid, with keys made here: a signed bounce and a signed spam
    report become records for their events; the same bodies signed by someone else are 403."""
    bounced, complained = _sent(kafka_bootstrap, topics, start_service, smtp_sink, 2)
    now = datetime.now(UTC)
    sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert_file = tmp_path / "sns.pem"
    cert_file.write_bytes(
        _pem(_certificate(sns_key, not_before=now - timedelta(days=1), not_after=now + timedelta(days=30)))
    )
    sendgrid_key = ec.generate_private_key(ec.SECP256R1())
    feedback = Feedback(
        kafka_bootstrap,
        topics,
        tmp_path,
        ORDERMAIL_FEEDBACK_SES_CERT_FILE=str(cert_file),
        ORDERMAIL_FEEDBACK_SES_TOPIC_ARNS=TOPIC,
        ORDERMAIL_FEEDBACK_SENDGRID_PUBLIC_KEY=_setting(sendgrid_key),
    )
    try:
        wait_for_port(feedback.http_port, timeout_s=30)
        event = bounce_event(emailAddress=bounced["customer"]["email"])
        event["mail"]["commonHeaders"]["messageId"] = bounced["message_id"]
        event["mail"]["headers"] = []
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        ses_body = body(sign_sns(notification(event, Timestamp=stamp), sns_key))
        forged_ses = body(sign_sns(notification(event, Timestamp=stamp), forger))
        headers = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
        assert http_post(feedback.http_port, "/webhooks/ses", forged_ses, headers)[0] == 403
        assert http_post(feedback.http_port, "/webhooks/ses", ses_body, headers)[0] == 200
        report = [
            {
                "email": complained["customer"]["email"],
                "timestamp": int(now.timestamp()),
                "smtp-id": complained["message_id"],
                "event": "spamreport",
                "sg_event_id": "sg-1",
            }
        ]
        raw = json.dumps(report).encode()
        signed = sign_sendgrid(raw, sendgrid_key, timestamp=str(int(now.timestamp())))
        forged = {**signed, TIMESTAMP_HEADER: str(int(now.timestamp()) - 1)}  # a signature over other bytes
        assert http_post(feedback.http_port, "/webhooks/sendgrid", raw, forged)[0] == 403
        assert http_post(feedback.http_port, "/webhooks/sendgrid", raw, signed)[0] == 200
        records = {
            v["event_id"]: (r, v) for r, v in _feedback_records(kafka_bootstrap, feedback.topic, expected=2)
        }
        assert len(records) == 2
        ses_record, ses_value = records[bounced["event_id"]]
        assert (ses_value["source"], ses_value["kind"], ses_value["bounce_type"]) == (
            "ses",
            "BOUNCED",
            "hard",
        )
        assert ses_record.key == bounced["order_id"].encode()
        sg_record, sg_value = records[complained["event_id"]]
        assert (sg_value["source"], sg_value["kind"]) == ("sendgrid", "COMPLAINED")
        assert sg_record.partition == complained["partition"]
        assert feedback.metric('ordermail_feedback_dropped_total{reason="bad_signature",source="ses"}') == 1
        assert (
            feedback.metric('ordermail_feedback_dropped_total{reason="bad_signature",source="sendgrid"}') == 1
        )
    finally:
        _terminate(feedback.process)


def test_through_postfix_sent_then_bounced_then_rejected_suppressed_and_a_complaint_suppresses(
    kafka_bootstrap: str,
    topics: Topics,
    start_service: ServiceFactory,
    relay: RelaySettings,
    tmp_path: Path,
    wait_until: Callable[[Callable[[], bool], float], None],
) -> None:
    """The whole loop on real parts: ordermail run → Postfix (STARTTLS, DSN) → an address it
    accepts and then cannot deliver → Postfix's own DSN to the VERP sender → ordermail feedback
    → BOUNCED for exactly that event, and the address suppressed → the customer's next order is
    REJECTED suppressed, not e-mailed. A complaint (ARF) about the delivered one suppresses too."""
    suppressions = f"{topics.input}.suppressions"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(suppressions, 3, 1, config={"cleanup.policy": "compact"})])[
        suppressions
    ].result(30)
    env = {
        **relay.env(),
        "ORDERMAIL_SUPPRESSION_TOPIC": suppressions,
        "ORDERMAIL_SUPPRESSION_SECRET": "s" * 32,
    }
    feedback = Feedback(kafka_bootstrap, topics, tmp_path, **env)
    health = free_port()
    try:
        start_service(**env, ORDERMAIL_HEALTH_PORT=str(health))
        bounced, delivered = sample_order(41), sample_order(42)
        bounced["customer"]["email"] = relay.address("bounced")
        delivered["customer"]["email"] = relay.address("delivered")
        settings = Settings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, ORDERMAIL_INPUT_TOPIC=topics.input)
        publish_orders(settings, Codec.from_directory(), [bounced, delivered])
        outcomes = {
            o["order_id"]: (r, o)
            for r, o in read_outcomes(kafka_bootstrap, topics.outcome, expected=2, timeout_s=90)
        }
        assert {o["status"] for _, o in outcomes.values()} == {"SENT"}
        read_at = time.monotonic()
        [(record, value)] = _feedback_records(kafka_bootstrap, feedback.topic, expected=1)
        print(f"\nBOUNCED on the feedback topic {time.monotonic() - read_at:.2f}s after SENT was read")
        assert record.key == bounced["order_id"].encode()
        assert record.partition == outcomes[bounced["order_id"]][0].partition
        assert (
            value["event_id"],
            value["kind"],
            value["bounce_type"],
            value["status_code"],
            value["source"],
        ) == (
            bounced["event_id"],
            "BOUNCED",
            "hard",
            "5.1.1",
            "dsn",
        )
        assert value["message_id"] == outcomes[bounced["order_id"]][1]["message_id"]
        [delivered_mail] = relay.delivered(delivered["customer"]["email"])
        # The bounce suppressed the address (the DSN named the recipient its token was made for):
        # once the service has read that, the customer's next order is not e-mailed.
        wait_until(lambda: _metric(health, "ordermail_suppression_entries") == 1, 30)
        again = {**bounced, "event_id": str(uuid.uuid4()), "order_id": f"{bounced['order_id']}-2"}
        publish_orders(settings, Codec.from_directory(), [again])  # type: ignore[list-item]
        final = {
            o["order_id"]: o
            for _, o in read_outcomes(kafka_bootstrap, topics.outcome, expected=3, timeout_s=90)
        }
        assert (final[again["order_id"]]["status"], final[again["order_id"]]["reason"]) == (
            "REJECTED",
            "suppressed",
        )
        assert read_records(kafka_bootstrap, topics.dlq, expected=None, timeout_s=2) == []
        for order_id in (bounced["order_id"], again["order_id"]):
            print(
                order_id,
                {
                    k: final[order_id][k]
                    for k in ("event_id", "status", "reason", "attempt", "recipient_domain")
                },
            )
        print(
            "feedback",
            {
                k: value[k]
                for k in (
                    "event_id",
                    "order_id",
                    "kind",
                    "bounce_type",
                    "status_code",
                    "source",
                    "attempt",
                    "recipient_domain",
                    "feedback_id",
                )
            },
        )
        # A feedback-loop complaint about the delivered e-mail, as a mailbox provider sends it.
        complaint = arf_for(delivered_mail)
        assert feedback.deliver(complaint, [f"fbl@{relay.return_path_domain}"])[0] == 250
        records = _feedback_records(kafka_bootstrap, feedback.topic, expected=2)
        [(_, complained)] = [(r, v) for r, v in records if v["kind"] == "COMPLAINED"]
        assert (complained["event_id"], complained["source"]) == (delivered["event_id"], "arf")
        entries = read_records(kafka_bootstrap, suppressions, expected=2, timeout_s=30)
        reasons = sorted(entry_of(Codec.from_directory(), e.value or b"").reason for e in entries)
        assert reasons == ["complaint", "hard_bounce"]
        # Customer service sees the journey in one place.
        history = json_of(
            ordermail(
                kafka_bootstrap,
                topics,
                "history",
                bounced["order_id"],
                "--json",
                ORDERMAIL_FEEDBACK_TOPIC=feedback.topic,
            )
        )
        assert [o["status"] for o in history["outcomes"]] == ["SENT"]
        assert [(f["kind"], f["bounce_type"], f["status_code"]) for f in history["feedback"]] == [
            ("BOUNCED", "hard", "5.1.1")
        ]
        shown = ordermail(
            kafka_bootstrap, topics, "history", bounced["order_id"], ORDERMAIL_FEEDBACK_TOPIC=feedback.topic
        ).stdout
        print(shown)
        assert "BOUNCED hard" in shown
        for entry in entries:  # keyed by a keyed hash: no address in clear anywhere in the record
            for order in (bounced, delivered):
                assert order["customer"]["email"].encode() not in (entry.key or b"") + (entry.value or b"")
    finally:
        _terminate(feedback.process)


def _metric(port: int, name: str) -> float | None:
    status, text = http_get(port, "/metrics")
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    return values[0] if status == 200 and values else None


def arf_for(delivered: Message) -> bytes:
    """An ARF report (RFC 5965) about a delivered e-mail: its headers returned, as many
    providers do, with the envelope sender the mailbox saw as Return-Path."""
    return (
        "From: <abuse@mailbox.example>\r\nTo: <fbl@bounces.shop.example>\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="p"\r\n\r\n'
        "--p\r\nContent-Type: text/plain\r\n\r\nA user marked this message as spam.\r\n"
        "--p\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: test-fbl/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: {delivered['Return-Path']}\r\n"
        f"Original-Rcpt-To: {delivered['Delivered-To']}\r\n\r\n"
        "--p\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: {delivered['Return-Path']}\r\nMessage-ID: {delivered['Message-ID']}\r\n"
        "--p--\r\n"
    ).encode()
