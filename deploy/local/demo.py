"""`make demo`: runs the service against the local stack, publishes sample orders (and one
undecodable record), waits for their outcomes and prints a summary and where the e-mails are.

Safe to run twice: every run publishes new orders and reports only those.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.tools.topic_reader import read_outcomes

ROOT = Path(__file__).resolve().parents[2]
COUNT = 8


def _final_outcomes(settings: Any, codec: Any, wanted: set[str], timeout_s: float) -> dict[str, Any]:
    """The last outcome of each wanted order, once each has a final one (DEFERRED is not final)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = read_outcomes(
            settings.bootstrap_servers,
            settings.outcome_topic,
            expected=None,
            timeout_s=30,
            codec=codec,
            order_ids=wanted,
        )
        outcomes = {outcome["order_id"]: outcome for _, outcome in found}
        final = {order_id for order_id, outcome in outcomes.items() if outcome["status"] != "DEFERRED"}
        if final >= wanted or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.5)  # the service is still working: look again shortly


def main() -> int:
    os.environ.update(_stack_env())
    from consumer.app.assembly import codec_for
    from consumer.app.settings import Settings
    from consumer.tools.producing import publish_orders, publish_raw
    from rendering import PasswordPolicy
    from schemas.samples import sample_orders

    settings = Settings()
    codec = codec_for(settings)
    first_seed = int(time.time()) % 1_000_000 * 10  # new orders on every run
    orders = sample_orders(COUNT, first_seed=first_seed)
    orders[1]["brand"] = "Nordic"  # the second brand's template set: receipt and returns form
    log_path = ROOT / ".local/demo-service.log"
    print(f"starting `ordermail run` (log: {log_path})")
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        service = subprocess.Popen([sys.executable, "-m", "consumer.app.cli", "run"], stdout=log, stderr=log)
    try:
        publish_orders(settings, codec, orders)
        publish_raw(settings, [(b"ORD-DEMO-POISON", b"this is not an Avro event")])
        print(f"published {COUNT} sample orders and 1 undecodable record to {settings.input_topic}")
        wanted = {order["order_id"] for order in orders} | {"ORD-DEMO-POISON"}
        outcomes = _final_outcomes(settings, codec, wanted, timeout_s=120)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
    header = ("order", "locale", "status", "reason", "pdfs", "pdf bytes", "render ms", "send ms")
    print("\n{:<24} {:<6} {:<9} {:<14} {:>4} {:>9} {:>9} {:>7}".format(*header))
    locales = {order["order_id"]: order["locale"] for order in orders}
    for order_id in sorted(wanted):
        o = outcomes.get(order_id)
        if o is None:
            print(f"{order_id:<24} {'':<6} (no outcome yet)")
            continue
        columns = (o.get("attachment_count"), o.get("attachment_bytes"), o.get("render_ms"), o.get("send_ms"))
        count, size, render_ms, send_ms = (value or "" for value in columns)
        print(
            f"{order_id:<24} {locales.get(order_id, ''):<6} {o['status']:<9} {o['reason'] or '':<14} "
            f"{count:>4} {size:>9} {render_ms:>9} {send_ms:>7}"
        )
    outbox = os.environ["OUTBOX_DIR"]
    example = orders[0]
    print(f"\ne-mails: {outbox} (one .eml per message, newest last)")
    password = PasswordPolicy().password_for(example)
    print(f"example: order {example['order_id']}, PDF password (demo data): {password}")
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        print_trace(log_path, log_start, outcomes[example["order_id"]].get("trace_id"))
    print("service stopped; the stack keeps running (deploy/local/stack down stops it)")
    return 0 if len(outcomes) == len(wanted) else 1


def print_trace(log_path: Path, start: int, trace_id: str | None) -> None:
    """The spans of one order's trace, as a tree, from the console exporter's output."""
    with log_path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", errors="replace")
    spans = [json.loads(b) for b in re.findall(r"^\{\n.*?^\}$", text, re.MULTILINE | re.DOTALL)]
    mine = [s for s in spans if s["context"]["trace_id"].removeprefix("0x") == trace_id]
    traces = {s["context"]["trace_id"] for s in spans}
    print(f"\ntraces exported: {len(traces)} (one per event); trace {trace_id} of the example order:")
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {s["context"]["span_id"] for s in mine}
    for span in mine:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)

    def show(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_time"]):
            started = datetime.fromisoformat(span["start_time"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(span["end_time"].replace("Z", "+00:00"))
            kind = span["kind"].removeprefix("SpanKind.")
            ms = (ended - started).total_seconds() * 1000
            print(f"  {'  ' * depth}{span['name']} [{kind}] {ms:.1f} ms")
            show(span["context"]["span_id"], depth + 1)

    show(None, 0)


def _stack_env() -> dict[str, str]:
    lines = (ROOT / ".local/stack.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


if __name__ == "__main__":
    sys.exit(main())
