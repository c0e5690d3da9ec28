"""The dashboard and the alert rules only use metrics the service really exports."""

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import consumer.observability.metrics  # noqa: F401 — registers the metrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy/observability"


def _exported() -> set[str]:
    """Series names as Prometheus will see them, labelled or not, observed yet or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.name.startswith("ordermail_")
        for suffix in suffixes.get(family.type, ("",))
    }


def _used(text: str) -> set[str]:
    return set(re.findall(r"\bordermail_[a-z_]+", text))


def test_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = _used(exprs)
    assert len(used) >= 10
    assert used <= _exported(), used - _exported()


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"OrdermailLagGrowing", "OrdermailDeadLetterRate", "OrdermailStalled"} <= set(alerts)
    used = _used(" ".join(rule["expr"] for rule in alerts.values()))
    assert used <= _exported(), used - _exported()
