"""Writes grafana-dashboard.json beside this file (kept in the repository; re-run after
changing panels): `python deploy/observability/make_dashboard.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INPUT = 'topic="orders.order-completed.v1"'
# Delivery feedback relative to what was sent: the relay accepted it (SENT, `ordermail run`), then
# the recipient's side answered (`ordermail feedback`). One hour on both sides: bounces follow
# the send by seconds to hours; alerts.yaml uses the same ratios.
SENT_1H = 'sum(increase(ordermail_events_total{status="SENT"}[1h]))'


def per_sent(selector: str) -> str:
    return f"sum(increase(ordermail_feedback_total{{{selector}}}[1h])) / clamp_min({SENT_1H}, 1)"


def panel(
    title: str, exprs: dict[str, str], unit: str, *, at: tuple[int, int], w: int = 12
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": at[0], "y": at[1], "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
    }


def row(title: str, *, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def quantiles(metric: str) -> dict[str, str]:
    return {
        f"p{q}": f"histogram_quantile(0.{q}, sum by (le) (rate({metric}_bucket[5m])))" for q in ("50", "99")
    }


PANELS = [
    panel(
        "Events by status",
        {"{{status}} {{reason}}": "sum by (status, reason) (rate(ordermail_events_total[5m]))"},
        "ops",
        at=(0, 0),
    ),
    panel(
        "Consumer lag (input)",
        {"partition {{partition}}": f"sum by (partition) (ordermail_consumer_lag{{{INPUT}}})"},
        "short",
        at=(12, 0),
    ),
    panel("Render (HTML → PDF)", quantiles("ordermail_render_seconds"), "s", at=(0, 8), w=8),
    panel("Encrypt", quantiles("ordermail_encrypt_seconds"), "s", at=(8, 8), w=8),
    panel("SMTP send", quantiles("ordermail_smtp_send_seconds"), "s", at=(16, 8), w=8),
    panel(
        "Dead letters, deferrals, skipped redeliveries",
        {
            "dead letters": "sum(rate(ordermail_dead_letters_total[5m]))",
            "deferrals": "sum(rate(ordermail_deferrals_total[5m]))",
            "skipped": "sum(rate(ordermail_redeliveries_skipped_total[5m]))",
        },
        "ops",
        at=(0, 16),
    ),
    panel("In flight", {"{{topic}}": "sum by (topic) (ordermail_in_flight_events)"}, "short", at=(12, 16)),
    panel(
        "Render workers and SMTP connections",
        {
            "workers alive": "sum(ordermail_render_workers)",
            "workers replaced": "sum(ordermail_render_workers_replaced)",
            "idle SMTP connections": "sum(ordermail_smtp_connections_idle)",
        },
        "short",
        at=(0, 24),
    ),
    panel(
        "Health",
        {"brokers up": "min(ordermail_kafka_brokers_up)", "breaker open": "max(ordermail_dlq_breaker_open)"},
        "short",
        at=(12, 24),
    ),
    panel(
        "Records fetched vs events finished (fetched far above: pausing re-fetches)",
        {
            "fetched": "sum(rate(ordermail_kafka_fetched_messages_total[5m]))",
            "finished": "sum(rate(ordermail_events_total[5m]))",
        },
        "ops",
        at=(0, 32),
    ),
    row("Delivery feedback", y=40),
    panel(
        "Bounce and complaint rate (of SENT, last hour)",
        {
            "hard bounces": per_sent('kind="BOUNCED", bounce_type="hard"'),
            "soft bounces": per_sent('kind="BOUNCED", bounce_type="soft"'),
            "complaints": per_sent('kind="COMPLAINED"'),
        },
        "percentunit",
        at=(0, 41),
    ),
    panel(
        "Feedback by kind",
        {
            "{{kind}} {{bounce_type}} ({{source}})": (
                "sum by (kind, bounce_type, source) (rate(ordermail_feedback_total[5m]))"
            ),
            "SENT": 'sum(rate(ordermail_events_total{status="SENT"}[5m]))',
        },
        "ops",
        at=(12, 41),
    ),
    panel(
        "Reports dropped, by reason (unsigned / bad_signature: forged or stray reports)",
        {"{{source}} {{reason}}": "sum by (source, reason) (rate(ordermail_feedback_dropped_total[5m]))"},
        "ops",
        at=(0, 49),
        w=8,
    ),
    panel(
        "Answered 'try again later' (Kafka or the outcome index behind)",
        {"{{source}}": "sum by (source) (rate(ordermail_feedback_retry_later_total[5m]))"},
        "ops",
        at=(8, 49),
        w=8,
    ),
    panel(
        "Suppressions added",
        {
            "{{reason}}": "sum by (reason) (rate(ordermail_suppressions_added_total[5m]))",
            "not suppressible ({{source}})": (
                "sum by (source) (rate(ordermail_feedback_unsuppressible_total[5m]))"
            ),
        },
        "ops",
        at=(16, 49),
        w=8,
    ),
    panel(
        "Feedback receivers scraped and up",
        {"up": 'sum(up{job="ordermail-feedback"})', "targets": 'count(up{job="ordermail-feedback"})'},
        "short",
        at=(0, 57),
    ),
]

DASHBOARD = {
    "title": "ordermail",
    "uid": "ordermail",
    "schemaVersion": 39,
    "time": {"from": "now-6h", "to": "now"},
    "refresh": "30s",
    "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
    "panels": PANELS,
}

if __name__ == "__main__":
    target = Path(__file__).with_name("grafana-dashboard.json")
    target.write_text(json.dumps(DASHBOARD, indent=2) + "\n")
    print(f"wrote {target}")
