"""What the operator-runbook tests share: running ``ordermail`` commands as an operator would,
and reading what users see (e-mails in the outbox, outcomes, records on a topic)."""

from __future__ import annotations

import email
import json
import os
import subprocess
from collections import Counter
from email import policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from consumer.tools.topic_reader import read_outcomes, read_records
from tests.conftest import ORDERMAIL

if TYPE_CHECKING:
    from tests.conftest import Sink, Topics

__all__ = ["json_of", "mails_by_order", "ordermail", "outcomes_by_order", "redriven_sources"]


def ordermail(
    bootstrap: str, topics: Topics, *args: str, timeout_s: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """One operator command, its settings from the environment as ``ordermail run`` reads them."""
    full_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **topics.env(), **env}
    return subprocess.run(
        [ORDERMAIL, *args], env=full_env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mails_by_order(sink: Sink, order_ids: list[str]) -> dict[str, list[EmailMessage]]:
    """E-mails in the outbox, by the order number their subject names (as the customer sees it)."""
    found: dict[str, list[EmailMessage]] = {order_id: [] for order_id in order_ids}
    for path in sink.messages():
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        (order_id,) = (o for o in order_ids if o in str(message["Subject"]))
        found[order_id].append(message)
    return found


def outcomes_by_order(bootstrap: str, topics: Topics, **kwargs: Any) -> dict[str, Counter[str]]:
    """Each order's outcome statuses, counted."""
    counted: dict[str, Counter[str]] = {}
    for _, outcome in read_outcomes(bootstrap, topics.outcome, expected=None, timeout_s=30, **kwargs):
        counted.setdefault(outcome["order_id"], Counter())[outcome["status"]] += 1
    return counted


def redriven_sources(bootstrap: str, topics: Topics) -> list[str]:
    """The dead letters the input topic's records were redriven from, as a service reads them."""
    records = read_records(bootstrap, topics.input, expected=None, timeout_s=30)
    return [
        r.headers["ordermail.redrive.source"].decode()
        for r in records
        if "ordermail.redrive.source" in r.headers
    ]
