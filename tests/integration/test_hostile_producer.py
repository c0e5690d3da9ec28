"""A careless or hostile producer against the real service, broker and SMTP sink.

Hypothesis draws batches of records: field values with RFC 2047 encoded words (both encodings),
CR, LF, NEL, U+2028/2029, NUL and overlong text; record headers forging ordermail's own
(``ordermail.original.*``, ``ordermail.retry.*``) with addresses, superscript digits, huge numbers
and invalid UTF-8; on the input topic and on the retry topic. One service runs through all
batches, and then a second one after a restart. Properties:

* the service never exits on its own (and stops with 0 when asked);
* every record gets exactly one outcome, and every decodable one carries its own ``event_id``;
* every e-mail's header names are exactly the ones ordermail writes;
* no e-mail is sent twice, across the restart too;
* no personal data (the sentinels below) in logs, spans, ``/readyz``, outcomes or e-mail bodies.
"""

from __future__ import annotations

import base64
import email
import json
import re
import signal
import uuid
from collections import Counter
from email import policy
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from consumer.tools.topic_reader import read_outcomes
from schemas import ORDER_SCHEMA, Codec
from schemas.samples import sample_order
from tests.support import free_port, http_get

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.conftest import ServiceFactory, Sink, Topics

pytestmark = pytest.mark.integration

CODEC = Codec.from_directory()
HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
]
PERSONAL = "Sentinelpii"  # in every personal field, and in forged header values
_B64 = base64.b64encode(b"ORD\r\nBcc: victim@example.org\r\n\r\nPay here: https://evil.example").decode()
_B64_SHORT = base64.b64encode(b"\r\nBcc: v@e.example").decode()  # fits a local part: all atext
ATTACKS = [
    "=?utf-8?q?ORD=0D=0ABcc:_victim@example.org?=",
    f"=?utf-8?b?{_B64}?=",
    "=?iso-8859-1?q?=0AReply-To:_a@evil.example?=",
    "=?utf-8?q?=C2=85X-Injected:_1?=",
    "\r\nBcc: victim@example.org",
    "\n\nbody",
    "\r",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "ñandú 注文",
]
text = st.lists(st.one_of(st.sampled_from(ATTACKS), st.text(max_size=12)), max_size=6).map("".join)
free_text = st.one_of(st.none(), text)
FREE_TEXT = ("brand", "channel", "shipping_method", "payment_method", "gift_message")
emails = st.sampled_from(
    [
        f"{PERSONAL}.{{n}}@example.com",
        f"=?utf-8?q?{PERSONAL}=0D=0A?=.{{n}}@example.com",  # valid syntax: every character is atext
        f"=?utf-8?b?{_B64_SHORT}?=.{PERSONAL}{{n}}@example.com",
        f"{PERSONAL}@example.com\r\nBcc: victim@example.org",
        f"{PERSONAL} <{PERSONAL}@example.com>",
    ]
)
order_ids = st.one_of(st.just("ORD-{n}"), text.map(lambda t: f"ORD-{{n}}{t}"[:64]))
OWN_HEADERS = (
    [f"ordermail.{name}" for name in ("original.topic", "original.partition", "original.offset")]
    + [f"ordermail.retry.{name}" for name in ("deferrals", "attempts", "due", "first")]
    + ["ordermail.resend"]
)
header_values = st.one_of(
    st.sampled_from(
        [
            f"{PERSONAL}@example.com".encode(),
            "²".encode(),
            b"\xff\xfe\x00",
            b"-1",
            b"99999999999999999999999",
            b"0",
            b"3",
            b"",
            b"\r\nBcc: x@example.org",
        ]
    ),
    st.binary(max_size=40),
)
headers = st.lists(
    st.tuples(
        st.sampled_from([*OWN_HEADERS, "ordermail.error.class", "traceparent", "x-trace"]), header_values
    ),
    max_size=8,
)
records = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["order", "order", "order", "junk", "retry"]),
        "email": emails,
        "order_id": order_ids,
        "name": text,
        "brand": free_text,
        "channel": free_text,
        "shipping_method": free_text,
        "payment_method": free_text,
        "gift_message": free_text,
        "overlong": st.one_of(st.none(), st.none(), st.none(), st.sampled_from(FREE_TEXT)),
        "headers": headers,
        "partition": st.integers(0, 2),
    }
)
# The four problems of issue 16, every run: headers forged by encoded words, ordermail.* headers
# that crashed the service after sending, remote attachments, and invalid events.
KNOWN: list[dict[str, Any]] = [
    {
        "kind": "order",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}=?utf-8?q?=0D=0ABcc:_victim@example.org?=",
        "name": "=?utf-8?q?=0D=0A=0D=0APhishing?=",
        "brand": f"=?utf-8?b?{_B64}?=",
        "headers": [],
    },
    {
        "kind": "order",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}",
        "headers": [("ordermail.original.partition", f"{PERSONAL}@example.com".encode())],
    },
    {
        "kind": "order",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}",
        "headers": [
            ("ordermail.original.partition", "²".encode()),
            ("ordermail.retry.attempts", "²".encode()),
        ],
    },
    {
        "kind": "retry",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}",
        "headers": [("ordermail.original.partition", f"{PERSONAL}@example.com".encode())],
    },
    {
        "kind": "order",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}",
        "attachments": [{"url": "https://127.0.0.1/a.pdf", "filename": None}] * 50,
        "headers": [],
    },
    {"kind": "order", "email": "not an address {n}", "order_id": "ORD-{n}", "headers": []},
    {
        "kind": "order",
        "email": f"{PERSONAL}.{{n}}@example.com",
        "order_id": "ORD-{n}",
        "gift_message": "g" * 5000,
    },
    {"kind": "junk", "email": "", "order_id": "ORD-{n}", "headers": [("ordermail.original.offset", b"\xff")]},
]
SERVICE_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    "ORDERMAIL_ATTACHMENT_HOSTS": "127.0.0.1",
    "ORDERMAIL_MAX_REMOTE_ATTACHMENTS": "3",
    "ORDERMAIL_RETRY_DELAYS_S": "1,2",  # a forged due time is waited for at most this long
    "ORDERMAIL_COMMIT_INTERVAL_S": "0.5",
    "ORDERMAIL_DLQ_BREAKER_MIN_EVENTS": "1000000",  # most of these records are bad on purpose
}


class Run:
    """One service across all batches; what each record was and what came of it."""

    def __init__(self, bootstrap: str, topics: Topics, sink: Sink, start: ServiceFactory) -> None:
        self.bootstrap, self.topics, self.sink, self._start = bootstrap, topics, sink, start
        self.port = free_port()
        self.service = start(ORDERMAIL_HEALTH_PORT=str(self.port), **SERVICE_ENV)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        self.count = 0
        self.by_position: dict[tuple[int, int], dict[str, Any]] = {}  # input records
        self.by_event: dict[str, dict[str, Any]] = {}  # retry-topic records (decodable)
        self.readyz: list[str] = []

    def publish(self, batch: list[dict[str, Any]]) -> None:
        acknowledged: list[tuple[dict[str, Any], int, int]] = []
        for spec in batch:
            self.count += 1
            record = _record(spec, self.count)
            topic = self.topics.retry if spec["kind"] == "retry" else self.topics.input

            def delivered(error: Any, message: Any, record: dict[str, Any] = record) -> None:
                assert error is None, error
                acknowledged.append((record, message.partition(), message.offset()))

            self.producer.produce(
                topic,
                key=record["key"],
                value=record["value"],
                headers=record["headers"],
                partition=spec.get("partition", 0),
                on_delivery=delivered,
            )
            if spec["kind"] == "retry":
                self.by_event[record["event_id"]] = record
        assert self.producer.flush(30) == 0
        for record, partition, offset in acknowledged:
            if record["topic"] == "input":
                self.by_position[(partition, offset)] = record

    def outcomes(self) -> list[dict[str, Any]]:
        expected = len(self.by_position) + len(self.by_event)
        found = read_outcomes(self.bootstrap, self.topics.outcome, expected=expected, timeout_s=120)
        return [outcome for _, outcome in found]

    def check(self, wait_until: Callable[[Callable[[], bool], float], None]) -> list[dict[str, Any]]:
        outcomes = self.outcomes()
        assert self.service.poll() is None, "the service exited"
        self.readyz.append(http_get(self.port, "/readyz")[1])
        retried = Counter(o["event_id"] for o in outcomes if o["event_id"] in self.by_event)
        assert set(retried) == set(self.by_event)
        assert max(retried.values(), default=1) == 1
        inputs = [o for o in outcomes if o["event_id"] not in self.by_event]
        positions = Counter((o["source_partition"], o["source_offset"]) for o in inputs)
        assert set(positions) == set(self.by_position)  # every input record, nothing else
        assert max(positions.values()) == 1  # exactly one outcome each
        for outcome in inputs:
            record = self.by_position[(outcome["source_partition"], outcome["source_offset"])]
            if record["decodable"]:
                assert outcome["event_id"] == record["event_id"], outcome["reason"]
        assert {o["status"] for o in outcomes} <= {"SENT", "REJECTED"}
        return outcomes


def _record(spec: dict[str, Any], n: int) -> dict[str, Any]:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile/{n}"))
    order: Any = sample_order(10_000 + n, lines=2)
    order["event_id"] = event_id
    order["order_id"] = spec["order_id"].replace("{n}", str(n))[:64] or f"ORD-{n}"
    order["customer"]["email"] = spec["email"].replace("{n}", str(n))
    order["customer"]["first_name"] = f"{spec.get('name', '')}{PERSONAL}"
    order["customer"]["last_name"] = f"{PERSONAL}last"
    order["customer"]["billing_address"]["line1"] = f"{PERSONAL} street {spec.get('name', '')}"
    for field in FREE_TEXT:
        order[field] = spec.get(field)
    if spec.get("overlong"):
        order[spec["overlong"]] = "x" * 5_000
    if order["gift_message"] is not None:
        order["gift_message"] += PERSONAL
    if spec.get("attachments"):
        order["attachments"] = spec["attachments"]
    junk = spec["kind"] == "junk"
    value = b"\xc3\x01" + bytes(8) + b"junk" if junk else CODEC.encode(order, ORDER_SCHEMA)
    return {
        "topic": "retry" if spec["kind"] == "retry" else "input",
        "event_id": event_id,
        "decodable": not junk,
        "key": order["order_id"].encode(),
        "value": value,
        "headers": list(spec.get("headers", [])),
        "order": order,
    }


@pytest.fixture
def run(kafka_bootstrap: str, topics: Topics, smtp_sink: Sink, start_service: ServiceFactory) -> Run:
    return Run(kafka_bootstrap, topics, smtp_sink, start_service)


def test_a_hostile_producer_cannot_forge_mail_wedge_the_service_or_mail_twice(
    run: Run,
    kafka_bootstrap: str,
    wait_until: Callable[[Callable[[], bool], float], None],
    tmp_path: Path,
) -> None:
    wait_until(lambda: http_get(run.port, "/readyz")[0] == 200, 60)

    @settings(
        max_examples=5,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each example costs a real round trip
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(records, min_size=16, max_size=16))
    @example(KNOWN)
    def batch(records: list[dict[str, Any]]) -> None:
        run.publish(records)
        run.check(wait_until)

    batch()

    # The restart: a second service takes over the group and must e-mail nobody again.
    run.service.send_signal(signal.SIGTERM)
    assert run.service.wait(60) == 0
    second = run._start(ORDERMAIL_HEALTH_PORT=str(run.port), **SERVICE_ENV)
    run.service = second
    wait_until(lambda: http_get(run.port, "/readyz")[0] == 200, 60)
    run.publish([{**KNOWN[1], "headers": []}])  # a last plain order: once it is done, all are
    outcomes = run.check(wait_until)
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0

    messages = [path.read_bytes() for path in run.sink.messages()]
    ids = Counter(
        str(BytesHeaderParser(policy=policy.compat32).parsebytes(m)["Message-ID"]) for m in messages
    )
    assert ids, "nothing was sent"
    assert max(ids.values()) == 1, "an e-mail was sent twice"
    assert len(messages) == sum(1 for o in outcomes if o["status"] == "SENT")
    for raw in messages:
        head = raw.split(b"\r\n\r\n", 1)[0]
        names = [
            line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")
        ]
        assert names == ["Return-Path", *HEADER_NAMES]  # the first written by the sink, as an MTA does
        message = email.message_from_bytes(raw, policy=policy.default)
        bodies = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
        assert not [body for body in bodies if PERSONAL in body]

    logs = "".join(path.read_text(errors="replace") for path in sorted(tmp_path.glob("service-*.log")))
    spans = re.findall(r"^\{\n.*?^\}$", logs, re.MULTILINE | re.DOTALL)
    assert spans, "no spans were exported"
    for seen in (logs, json.dumps(run.readyz), repr(outcomes)):
        assert PERSONAL not in seen
