"""Writes grafana-dashboard.json beside this file (kept in the repository; re-run after
changing panels): `python deploy/observability/make_dashboard.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INPUT = 'topic="orders.order-completed.v1"'


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
