"""The dashboard and the alert rules only use metrics the service really exports."""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import consumer.observability.metrics as metrics_module
from delivery.feedback.inbound import Dropped
from delivery.feedback.model import Kind, Source
from delivery.feedback.webhook import WebhookReason

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy/observability"
FEEDBACK_K8S = ROOT / "deploy/k8s/base/feedback"
# Series from elsewhere that rules may use: Prometheus' own and kube-state-metrics'.
EXTERNAL_SERIES = {"up", "kube_deployment_status_replicas_available", "kube_deployment_spec_replicas"}
FEEDBACK_SERIES = {
    "ordermail_feedback_total",
    "ordermail_feedback_dropped_total",
    "ordermail_feedback_retry_later_total",
    "ordermail_suppressions_added_total",
    "ordermail_feedback_unsuppressible_total",
}


def _exported() -> set[str]:
    """Series names as Prometheus will see them, labelled or not, observed yet or not."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.name.startswith("ordermail_")
        for suffix in suffixes.get(family.type, ("",))
    }


def _labels() -> dict[str, set[str]]:
    """Series name -> the label names the service gives it."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: dict[str, set[str]] = {}
    for metric in vars(metrics_module).values():
        if isinstance(metric, MetricWrapperBase):
            for suffix in suffixes[str(metric._type)]:
                extra = {"le"} if suffix == "_bucket" else set()
                names[f"{metric._name}{suffix}"] = set(metric._labelnames) | extra
    return names


# Values a label can take, where the code fixes them.
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("ordermail_feedback_total", "kind"): {kind.value for kind in Kind},
    ("ordermail_feedback_total", "bounce_type"): {"hard", "soft", ""},
    ("ordermail_feedback_total", "source"): {source.value for source in Source},
    ("ordermail_feedback_dropped_total", "reason"): {
        *get_args(Dropped),
        *get_args(WebhookReason),
        "uncorrelated",
    },
}


def _used(text: str) -> set[str]:
    return set(re.findall(r"\bordermail_[a-z_]+", text))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return loaded


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _alerts() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def test_dashboard_uses_exported_metrics() -> None:
    used = _used(" ".join(_dashboard_exprs()))
    assert len(used) >= 10
    assert used <= _exported(), used - _exported()


def test_dashboard_json_is_what_make_dashboard_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_dashboard", OBSERVABILITY / "make_dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert _dashboard() == module.DASHBOARD, "run python deploy/observability/make_dashboard.py"


def test_delivery_feedback_row_plots_rates_against_sent_and_every_feedback_metric() -> None:
    panels = _dashboard()["panels"]
    (row,) = [p for p in panels if p["type"] == "row" and p["title"] == "Delivery feedback"]
    below = [p for p in panels if p["type"] != "row" and p["gridPos"]["y"] > row["gridPos"]["y"]]
    exprs = " ".join(t["expr"] for p in below for t in p["targets"])
    assert _used(exprs) >= FEEDBACK_SERIES | {"ordermail_events_total"}
    rates = next(p for p in below if p["title"].startswith("Bounce and complaint rate"))
    assert rates["fieldConfig"]["defaults"]["unit"] == "percentunit"
    for target in rates["targets"]:
        assert 'ordermail_events_total{status="SENT"}' in target["expr"]  # relative to SENT
    legends = {t["legendFormat"] for t in rates["targets"]}
    assert legends == {"hard bounces", "soft bounces", "complaints"}


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    alerts = _alerts()
    assert {"OrdermailLagGrowing", "OrdermailDeadLetterRate", "OrdermailStalled"} <= set(alerts)
    used = _used(" ".join(rule["expr"] for rule in alerts.values()))
    assert used <= _exported(), used - _exported()


def test_feedback_alerts_exist_with_a_severity_a_delay_and_a_summary() -> None:
    alerts = _alerts()
    wanted = {
        "OrdermailHardBounceRate",
        "OrdermailComplaintRate",
        "OrdermailFeedbackDown",
        "OrdermailFeedbackNotReady",
        "OrdermailFeedbackForgedReports",
    }
    assert wanted <= set(alerts)
    for name in wanted:
        rule = alerts[name]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["annotations"]["summary"]
    hard = alerts["OrdermailHardBounceRate"]["expr"]
    assert 'bounce_type="hard"' in hard
    assert "> 0.05" in hard
    # A minimum volume: one bounce among three e-mails is no rate.
    assert re.search(r'ordermail_events_total\{status="SENT"\}\[1h\]\)\) >= \d{3,}', hard)
    assert "> 0.001" in alerts["OrdermailComplaintRate"]["expr"]
    forged = alerts["OrdermailFeedbackForgedReports"]["expr"]
    assert "unsigned" in forged
    assert "bad_signature" in forged


def test_rules_name_the_feedback_workload_as_deployed() -> None:
    """job = the scraped Service's name (Prometheus Operator), deployment = the Deployment's."""
    objects = [o for f in FEEDBACK_K8S.glob("*.yaml") for o in yaml.safe_load_all(f.read_text()) if o]
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    (port,) = {e["port"] for e in monitor["spec"]["endpoints"]}
    (scraped,) = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Service" and port in {p["name"] for p in o["spec"]["ports"]}
    ]
    (deployment,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    texts = [rule["expr"] for rule in _alerts().values()] + _dashboard_exprs()
    jobs = {job for text in texts for job in re.findall(r'\bjob="([^"]+)"', text)}
    deployments = {d for text in texts for d in re.findall(r'\bdeployment="([^"]+)"', text)}
    assert jobs == {scraped}
    assert deployments == {deployment}


def test_series_from_elsewhere_are_known_ones() -> None:
    texts = [rule["expr"] for rule in _alerts().values()] + _dashboard_exprs()
    selected = {name for text in texts for name in re.findall(r"\b([a-z_][a-z0-9_]*)\{", text)}
    assert {name for name in selected if not name.startswith("ordermail_")} <= EXTERNAL_SERIES


def test_label_matchers_name_real_labels_and_values() -> None:
    labels = _labels()
    outcome = json.loads((ROOT / "schemas/delivery_outcome.avsc").read_text())
    (status,) = [f for f in outcome["fields"] if f["name"] == "status"]
    statuses = set(status["type"]["symbols"])
    values = dict(LABEL_VALUES) | {("ordermail_events_total", "status"): statuses}
    texts = [rule["expr"] for rule in _alerts().values()] + _dashboard_exprs()
    checked = 0
    for text in texts:
        for series, matchers in re.findall(r"\b(ordermail_[a-z_]+)\{([^}]*)\}", text):
            for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
                assert label in labels[series], f"{series} has no label {label}"
                allowed = values.get((series, label))
                if allowed:
                    given = set(value.split("|")) if op in {"=~", "!~"} else {value}
                    assert given <= allowed, f"{series}{{{label}}}: {given - allowed} never happens"
                    checked += 1
    assert checked >= 8


def test_expressions_are_balanced() -> None:
    """A cheap syntax check where promtool is missing (the test below runs it where it is)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    for text in [rule["expr"] for rule in _alerts().values()] + _dashboard_exprs():
        stack: list[str] = []
        for char in re.sub(r'"[^"]*"', '""', text):
            if char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack, text
                assert stack.pop() == pairs[char], text
        assert not stack, text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize(
    "command",
    [["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]],
    ids=["syntax", "synthetic-series"],
)
def test_promtool_accepts_the_rules_and_their_unit_tests(command: list[str]) -> None:
    """alerts_test.yaml: each feedback alert fires on the series it is for, and stays silent
    on a low volume or a steady trickle."""
    result = subprocess.run(
        ["promtool", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=OBSERVABILITY,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_feedback_alert_has_a_promtool_unit_test() -> None:
    tested = yaml.safe_load((OBSERVABILITY / "alerts_test.yaml").read_text())
    names = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    (feedback,) = [group for group in rules["groups"] if group["name"] == "ordermail-feedback"]
    untested = {rule["alert"] for rule in feedback["rules"]} - names
    assert not untested
