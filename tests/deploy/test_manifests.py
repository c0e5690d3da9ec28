"""The Kubernetes manifests and the Dockerfile, checked offline.

``deploy/k8s/validate`` renders every kustomization, validates each object against the Kubernetes
(and custom resource) schemas and runs the policy scan; these tests run it once and then assert,
on the rendered YAML, the properties a rolling deploy and the service's contract depend on.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
VALIDATE = K8S / "validate"
_CHECKOV_VERSION = re.search(r"^CHECKOV_VERSION=(\S+)$", VALIDATE.read_text(), re.MULTILINE)
CHECKOV = ROOT / f".local/tools/checkov-{_CHECKOV_VERSION[1] if _CHECKOV_VERSION else '?'}/bin/checkov"
OVERLAYS = ("overlays-dev", "overlays-prod")
TEST_ONLY_DEBIAN_PACKAGES = {"qpdf", "poppler-utils", "openssl"}  # PDF checks and test certificates

# The first use may install kustomize, kubernetes-validate and checkov (a few minutes at most).
pytestmark = pytest.mark.timeout(900)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("k8s")
    result = subprocess.run(
        [str(VALIDATE), "--out", str(out)], capture_output=True, text=True, timeout=880, check=False
    )
    return result, out


@pytest.fixture(scope="module")
def rendered(validated: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, list[Obj]]:
    _, out = validated
    return {path.stem: [o for o in yaml.safe_load_all(path.read_text()) if o] for path in out.glob("*.yaml")}


def component(obj: Obj) -> str | None:
    """``consumer`` (ordermail run), ``feedback`` (ordermail feedback), None: shared."""
    label: str | None = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
    return label


def one(objects: list[Obj], kind: str, of: str = "consumer") -> Obj:
    """The one ``kind`` of the ``of`` workload (objects with no component label are shared)."""
    matches = [o for o in objects if o["kind"] == kind and component(o) in {of, None}]
    if len(matches) > 1:  # shared and own: the workload's own (e.g. its ServiceAccount)
        matches = [o for o in matches if component(o) == of]
    assert len(matches) == 1, f"expected one {kind} of {of}, found {len(matches)}"
    return matches[0]


def settings(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


def pod_spec(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    named: list[Obj] = [c for c in pod_spec(objects)["containers"] if c["name"] == "ordermail"]
    (main,) = named
    return main


def env(objects: list[Obj]) -> dict[str, Obj]:
    return {item["name"]: item for item in container(objects)["env"]}


def mebibytes(quantity: str) -> float:
    units = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / 2**20


def cores(quantity: str) -> float:
    return float(quantity.removesuffix("m")) / 1000 if quantity.endswith("m") else float(quantity)


# --- the validate script --------------------------------------------------------------------------


def test_validate_renders_validates_and_scans_every_kustomization(
    validated: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = validated
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "k8s-validate: all passed" in result.stdout
    for step in ("render overlays/dev", "render overlays/prod", "schemas", "policy scan: manifests"):
        assert f"PASS {step}" in result.stdout
    assert {p.stem for p in out.glob("*.yaml")} >= {
        *OVERLAYS,
        "examples-strimzi-topics",
        "examples-hpa",
        "examples-feedback-ingress",
    }


def test_schema_check_rejects_unknown_fields_and_mistyped_custom_resources(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objects = rendered["overlays-prod"]
    broken = [json.loads(json.dumps(o)) for o in objects]
    pod = next(o for o in broken if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    pod["terminationGracePeriodSecond"] = pod.pop("terminationGracePeriodSeconds")  # a typo
    trigger = next(o for o in broken if o["kind"] == "ScaledObject")["spec"]["triggers"][0]
    trigger["metadata"]["lagThreshold"] = 220  # KEDA wants strings
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken))
    result = subprocess.run(
        [sys.executable, str(K8S / "check_manifests.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "'terminationGracePeriodSecond' was unexpected" in result.stdout
    assert "lagThreshold: 220 is not of type 'string'" in result.stdout


def test_every_policy_exception_is_still_needed_and_justified(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """Without the checkov.io/skip annotations exactly the skipped checks fail, each on the object
    that skips it: none is stale."""
    objects = [json.loads(json.dumps(o)) for o in rendered["overlays-prod"]]
    skipped: dict[tuple[str, str], str] = {}
    for obj in objects:
        annotations = obj["metadata"].get("annotations", {})
        for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
            check_id, _, reason = annotations.pop(key).partition("=")
            assert len(reason) > 20, f"{check_id} needs a reason"
            skipped[(f"{obj['kind']}.{obj['metadata']['namespace']}.{obj['metadata']['name']}", check_id)] = (
                reason
            )
    assert skipped
    path = tmp_path / "unskipped.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    result = subprocess.run(
        [str(CHECKOV), "--framework", "kubernetes", "--skip-download", "-o", "json", "-f", path.name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    failed = {(check["resource"], check["check_id"]) for check in report["results"]["failed_checks"]}
    assert failed == set(skipped)


# --- pod security and lifecycle ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_on_a_read_only_root_with_a_writable_tmp(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    pod, main = pod_spec(objects), container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's mount path
    dockerfile_user = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user == [str(pod["securityContext"]["runAsUser"])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_drain_deadline(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    drain_s = float(settings(objects)["ORDERMAIL_DRAIN_TIMEOUT_S"])
    # Drain, then publishing the last outcomes, the commit and the guarded close.
    assert pod_spec(objects)["terminationGracePeriodSeconds"] >= drain_s + 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_metrics_use_the_health_port(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    main = container(objects)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    health_port = int(settings(objects)["ORDERMAIL_HEALTH_PORT"])
    probes = {kind: main[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert {ports[probe["port"]] for probe in probes.values()} == {health_port}
    service = one(objects, "Service")
    (service_port,) = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == health_port
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint == endpoint | {"port": service_port["name"], "path": "/metrics"}
    assert one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_static_membership_uses_the_stable_pod_name(rendered: dict[str, list[Obj]], overlay: str) -> None:
    from consumer.app.settings import kafka_passthrough

    objects = rendered[overlay]
    variables = env(objects)
    instance_id = variables["KAFKA_CONFIG_GROUP_INSTANCE_ID"]
    assert instance_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert kafka_passthrough({"KAFKA_CONFIG_GROUP_INSTANCE_ID": "ordermail-0"}) == {
        "group.instance.id": "ordermail-0"
    }
    # Stable names need a StatefulSet (a Deployment renames its pods on every rollout).
    assert not [o for o in objects if o["kind"] == "Deployment" and component(o) == "consumer"]
    session_ms = int(variables["KAFKA_CONFIG_SESSION_TIMEOUT_MS"]["value"])
    assert 30_000 <= session_ms <= 1_800_000  # covers a restart; within the broker's default maximum


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_one_the_service_reads(rendered: dict[str, list[Obj]], overlay: str) -> None:
    from consumer.app.settings import Settings

    known = {
        choice
        for field in Settings.model_fields.values()
        for choice in getattr(field.validation_alias, "choices", [])
    }
    objects = rendered[overlay]
    names = set(settings(objects)) | set(env(objects))
    unknown = {
        name
        for name in names - known
        if not name.startswith(("KAFKA_CONFIG_", "OTEL_")) and name not in {"POD_NAME", "POD_NAMESPACE"}
    }
    assert not unknown, f"variables the service does not read: {sorted(unknown)}"
    assert settings(objects)["SMTP_TLS"] in {"starttls", "tls"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_accepts_the_rendered_environment(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the kubelet would hand the container, read by the service's own settings model."""
    from consumer.app.settings import Settings, kafka_passthrough

    objects = rendered[overlay]
    resolved = dict(settings(objects))
    pod = {"POD_NAME": "ordermail-0", "POD_NAMESPACE": "ordermail"}
    for name, item in env(objects).items():
        source = item.get("valueFrom", {})
        if "value" in item:
            resolved[name] = re.sub(
                r"\$\((\w+)\)", lambda m: pod.get(m[1], resolved.get(m[1], "")), item["value"]
            )
        elif "fieldRef" in source:
            resolved[name] = pod[
                {"metadata.name": "POD_NAME", "metadata.namespace": "POD_NAMESPACE"}[
                    source["fieldRef"]["fieldPath"]
                ]
            ]
        elif "resourceFieldRef" in source:
            resolved[name] = str(math.ceil(cores(container(objects)["resources"]["requests"]["cpu"])))
        elif "secretKeyRef" in source:
            resolved[name] = "from-a-kubernetes-secret"  # as long as a real key
    for name in [n for n in os.environ if n.startswith(("ORDERMAIL_", "KAFKA_", "SMTP_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in resolved.items():
        monkeypatch.setenv(name, value)
    # As long as a real key: the return path's needs 16 bytes (the ConfigMap sets its domain).
    monkeypatch.setenv("ORDERMAIL_RETURN_PATH_SECRET", "from-a-kubernetes-secret")
    loaded = Settings()
    assert loaded.drain_timeout_s == float(resolved["ORDERMAIL_DRAIN_TIMEOUT_S"])
    assert loaded.health_port == 8080
    assert loaded.render_workers == int(resolved["ORDERMAIL_RENDER_WORKERS"])
    assert str(loaded.dkim_key_file).startswith(
        next(m["mountPath"] for m in container(objects)["volumeMounts"] if m["name"] == "dkim")
    )
    librdkafka = kafka_passthrough()
    assert librdkafka["group.instance.id"] == "ordermail-0"
    assert librdkafka["security.protocol"] == "SASL_SSL"
    assert librdkafka["sasl.password"] == "from-a-kubernetes-secret"
    assert loaded.suppression_keys() is not None  # the Secret ordermail-suppression switches it on
    assert loaded.suppression_topic in {
        o["metadata"]["name"] for o in rendered["examples-strimzi-topics"] if o["kind"] == "KafkaTopic"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_fits_every_render_worker_at_its_recycling_threshold(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    from consumer.app.settings import Settings

    objects = rendered[overlay]
    workers_ref = env(objects)["ORDERMAIL_RENDER_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert workers_ref["resource"] == "requests.cpu"
    assert workers_ref["divisor"] in {"1", 1}
    resources = container(objects)["resources"]
    workers = math.ceil(cores(resources["requests"]["cpu"]))
    recycle_mb = Settings.model_fields["worker_max_rss_mb"].default
    main_process_mb = 256
    assert mebibytes(resources["limits"]["memory"]) >= main_process_mb + workers * recycle_mb
    assert mebibytes(resources["requests"]["memory"]) >= main_process_mb + workers * 100  # ~100 MB measured


# --- scaling and topics ------------------------------------------------------------------------------


def test_dev_runs_one_consumer_without_an_autoscaler(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["overlays-dev"]
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 1
    assert not [o for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]


@pytest.mark.parametrize(
    ("kustomization", "kind"),
    [("overlays-prod", "ScaledObject"), ("examples-hpa", "HorizontalPodAutoscaler")],
)
def test_autoscaled_workloads_leave_the_replica_count_to_the_autoscaler(
    rendered: dict[str, list[Obj]], kustomization: str, kind: str
) -> None:
    objects = rendered[kustomization]
    statefulset = one(objects, "StatefulSet")
    target = one(objects, kind)["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    assert "replicas" not in statefulset["spec"]  # `kubectl apply` would reset it on every deploy


def test_autoscalers_never_exceed_the_input_partitions(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["examples-strimzi-topics"]
    config = settings(objects)
    partitions = {
        o["spec"].get("topicName", o["metadata"]["name"]): o["spec"]["partitions"]
        for o in objects
        if o["kind"] == "KafkaTopic" and component(o) != "feedback"  # test_feedback_topic_*
    }
    topics = {config[f"ORDERMAIL_{t}_TOPIC"] for t in ("INPUT", "OUTCOME", "DLQ", "RETRY", "SUPPRESSION")}
    assert set(partitions) == topics
    input_partitions = partitions[config["ORDERMAIL_INPUT_TOPIC"]]
    # Outcomes and deferrals go to the input record's partition number.
    assert partitions[config["ORDERMAIL_OUTCOME_TOPIC"]] >= input_partitions
    assert partitions[config["ORDERMAIL_RETRY_TOPIC"]] >= input_partitions
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["minReplicaCount"] >= 3
    assert scaled["maxReplicaCount"] <= input_partitions
    hpa = one(rendered["examples-hpa"], "HorizontalPodAutoscaler")["spec"]
    assert hpa["maxReplicas"] <= input_partitions
    for topic in (o for o in objects if o["kind"] == "KafkaTopic"):
        assert topic["metadata"]["namespace"] != one(objects, "StatefulSet")["metadata"]["namespace"]


def test_lag_trigger_watches_the_service_group_with_its_credentials(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["overlays-prod"]
    config = settings(objects)
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["consumerGroup"] == config["ORDERMAIL_GROUP_ID"]
    assert metadata["topic"] == config["ORDERMAIL_INPUT_TOPIC"]
    protocol = config["KAFKA_CONFIG_SECURITY_PROTOCOL"]
    assert (metadata.get("tls") == "enable") == (protocol in {"SSL", "SASL_SSL"})
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    expected = keda_sasl[config["KAFKA_CONFIG_SASL_MECHANISM"]] if "SASL" in protocol else "none"
    assert metadata.get("sasl", "none") == expected
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    kafka_user = env(objects)["KAFKA_CONFIG_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {kafka_user["name"]}


# --- network and secrets -----------------------------------------------------------------------------


def _port(address: str, default: int) -> int:
    return urlsplit(address if "//" in address else f"//{address}").port or default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_scrapes_and_the_needed_egress(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    policy = one(objects, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels(objects).items()
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [int(settings(objects)["ORDERMAIL_HEALTH_PORT"])]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress = {(p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {
        (53, "UDP"), (53, "TCP"),  # DNS
        (9092, "TCP"), (9093, "TCP"),  # Kafka
        (25, "TCP"), (465, "TCP"), (587, "TCP"),  # SMTP relay
        (4317, "TCP"), (4318, "TCP"),  # OTLP
    }  # fmt: skip
    config = settings(objects)
    for broker in config["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert (_port(broker, 9092), "TCP") in egress
    assert (int(config["SMTP_PORT"]), "TCP") in egress
    assert (_port(config["OTEL_EXPORTER_OTLP_ENDPOINT"], 4318), "TCP") in egress


def pod_labels(objects: list[Obj]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_every_referenced_secret_key_is_in_the_example(rendered: dict[str, list[Obj]]) -> None:
    example = [o for o in yaml.safe_load_all((K8S / "examples/secret.example.yaml").read_text()) if o]
    available = {(s["metadata"]["name"], key) for s in example for key in s["stringData"]}
    for secret in example:
        assert all("EXAMPLE" in value for value in secret["stringData"].values()), "example values only"
    objects = rendered["overlays-prod"]
    pods = [pod_spec(objects), feedback_pod(objects)]
    referenced = {
        (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        for pod in pods
        for item in pod["containers"][0]["env"]
        if "secretKeyRef" in (ref := item.get("valueFrom", {}))
    }
    referenced |= {
        (volume["secret"]["secretName"], item["key"])
        for pod in pods
        for volume in pod["volumes"]
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    referenced |= {
        (r["name"], r["key"]) for r in one(objects, "TriggerAuthentication")["spec"]["secretTargetRef"]
    }
    assert referenced
    assert referenced <= available
    assert not [o for o in objects if o["kind"] == "Secret"], "no Secret is part of a kustomization"
    assert example[0]["kind"] == "Secret"


# --- the image ------------------------------------------------------------------------------------------


def dockerfile_apt_packages() -> set[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    packages: set[str] = set()
    for command in re.findall(r"apt-get install ([^&\n]*)", text):
        packages |= {word for word in command.split() if not word.startswith("-")}
    return packages


def system_deps_packages() -> set[str]:
    text = (ROOT / "deploy/local/system-deps").read_text()
    match = re.search(r"^packages=\(([^)]*)\)", text, re.MULTILINE)
    assert match, "deploy/local/system-deps no longer has a packages=(...) line"
    return set(match.group(1).split())


def debian_package_of(soname: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-S", soname], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.split(":", 1)[0] if result.returncode == 0 else None


def test_image_installs_every_runtime_package_the_service_checks_for() -> None:
    from rendering import fonts

    installed = dockerfile_apt_packages()
    runtime = system_deps_packages() - TEST_ONLY_DEBIAN_PACKAGES
    assert {"libharfbuzz-subset0", "libpango-1.0-0", "libpangoft2-1.0-0", "fonts-dejavu-core"} <= runtime
    assert runtime <= installed, f"missing from the Dockerfile: {sorted(runtime - installed)}"
    assert not installed & TEST_ONLY_DEBIAN_PACKAGES, "test-only packages do not belong in the image"
    # The library the start-up check loads (rendering/fonts.py), by the package that ships it here.
    linux_sonames = [name for name in fonts._SONAMES if re.search(r"\.so(\.\d+)*$", name)]
    assert linux_sonames
    for soname in linux_sonames:
        package = debian_package_of(soname) or "libharfbuzz-subset0"
        assert package in installed, f"{soname} comes from {package}, which the Dockerfile does not install"


def test_image_runs_the_console_script_as_pid_1_with_sigterm() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "ordermail" in pyproject["project"]["scripts"]
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases == ["python:3.11.14-slim-bookworm"] * 2  # builder and runtime: same Python (CVE-2024-6923)
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains("3.11")
    assert re.search(r'^ENTRYPOINT \["ordermail"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["run"\]$', text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "--no-install-recommends" in text


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").rstrip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            ignored = not negate
    return ignored


def test_build_context_holds_the_sources_and_nothing_local() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [
        source
        for copy in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for source in copy.split()[:-1]
    ]
    assert "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not docker_ignored(source, patterns), f"{source} is copied but excluded from the context"
        assert not docker_ignored(f"{source}/__init__.py", patterns) or not (ROOT / source).is_dir()
    for local in (
        ".venv/bin/python",
        ".local/stack.env",
        ".git/HEAD",
        "bench/results/latest.json",
        "tests/unit/test_codec.py",
        ".pytest_cache/v/x",
        "consumer/__pycache__/cli.cpython-311.pyc",
    ):
        assert docker_ignored(local, patterns), f"{local} would be sent to the Docker daemon"


# --- ordermail feedback ------------------------------------------------------------------------------
# The second workload: `ordermail feedback` (SMTP reports, ESP webhooks, DeliveryFeedback records).

SMTP_PORT, WEBHOOK_PORT, FEEDBACK_HEALTH_PORT = 2527, 8041, 8042
INDEX_BYTES_PER_ENTRY = 700  # measured (tracemalloc): event id key, Sent with message id and trace context
FEEDBACK_PROCESS_MB = 256  # Python and its libraries ~80 MB, librdkafka's fetch queue, reports being parsed


# Read by the settings model only once issue-19-suppression has landed; tolerated until then.
def feedback_pod(objects: list[Obj]) -> Obj:
    deployment = one(objects, "Deployment", "feedback")
    assert deployment["metadata"]["name"] == "ordermail-feedback"
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


def feedback_container(objects: list[Obj]) -> Obj:
    (main,) = feedback_pod(objects)["containers"]
    return main  # type: ignore[no-any-return]


def feedback_settings(objects: list[Obj]) -> dict[str, str]:
    """What envFrom gives the container: the ConfigMaps in order, a later key winning."""
    maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    merged: dict[str, str] = {}
    for source in feedback_container(objects)["envFrom"]:
        merged |= maps[source["configMapRef"]["name"]]
    return merged


def feedback_environment(objects: list[Obj]) -> dict[str, str]:
    """The variables the kubelet would hand the feedback container (secrets as placeholders)."""
    resolved = feedback_settings(objects)
    pod = {"POD_NAME": "ordermail-feedback-5d9c-x7k2p", "POD_NAMESPACE": "ordermail"}
    for item in feedback_container(objects)["env"]:
        source = item.get("valueFrom", {})
        if "value" in item:
            resolved[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: pod.get(m[1], ""), item["value"])
        elif "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            resolved[item["name"]] = pod[
                {"metadata.name": "POD_NAME", "metadata.namespace": "POD_NAMESPACE"}[field]
            ]
        elif "secretKeyRef" in source:
            resolved[item["name"]] = "from-a-kubernetes-secret"
    return resolved


def container_ports(main: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in main["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_runs_the_same_image_as_the_consumer_with_its_command(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    main = feedback_container(objects)
    assert main["args"] == ["feedback"]
    assert main["image"] == container(objects)["image"]
    assert main["imagePullPolicy"] == container(objects)["imagePullPolicy"]
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    assert names == ["ordermail-feedback"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_pods_are_locked_down_like_the_consumer(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    pod, main = feedback_pod(objects), feedback_container(objects)
    assert pod["securityContext"] == pod_spec(objects)["securityContext"]
    assert main["securityContext"] == container(objects)["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    account = next(
        o
        for o in objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == pod["serviceAccountName"]
    )
    assert account["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # noqa: S108 - the pod's mount path
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")  # noqa: S108


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_listens_on_every_interface_and_probes_its_health_port(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    config = feedback_settings(objects)
    assert config["ORDERMAIL_FEEDBACK_SMTP_HOST"] == config["ORDERMAIL_FEEDBACK_HTTP_HOST"] == "0.0.0.0"  # noqa: S104
    main = feedback_container(objects)
    ports = container_ports(main)
    assert ports == {
        "smtp": int(config["ORDERMAIL_FEEDBACK_SMTP_PORT"]),
        "webhooks": int(config["ORDERMAIL_FEEDBACK_HTTP_PORT"]),
        "health": int(config["ORDERMAIL_FEEDBACK_HEALTH_PORT"]),
    }
    assert sorted(ports.values()) == [SMTP_PORT, WEBHOOK_PORT, FEEDBACK_HEALTH_PORT]
    probes = {kind: main[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"  # the outcome index has been read to the end
    assert {ports[probe["port"]] for probe in probes.values()} == {FEEDBACK_HEALTH_PORT}
    # SIGTERM: the preStop pause, then closing the receivers and flushing the producer.
    pause = int(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain_s = float(config["ORDERMAIL_DRAIN_TIMEOUT_S"])
    assert feedback_pod(objects)["terminationGracePeriodSeconds"] >= pause + drain_s + 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_settings_model_accepts_the_rendered_environment(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumer.feedback.settings import FeedbackSettings

    objects = rendered[overlay]
    resolved = feedback_environment(objects)
    known = {
        choice
        for field in FeedbackSettings.model_fields.values()
        for choice in getattr(field.validation_alias, "choices", [])
    }
    unknown = {
        name
        for name in set(resolved) - known
        if not name.startswith(("KAFKA_CONFIG_", "OTEL_")) and name not in {"POD_NAME", "POD_NAMESPACE"}
    }
    assert not unknown, f"variables ordermail feedback does not read: {sorted(unknown)}"
    for name in [n for n in os.environ if n.startswith(("ORDERMAIL_", "KAFKA_", "SMTP_", "OTEL_"))]:
        monkeypatch.delenv(name)
    for name, value in resolved.items():
        monkeypatch.setenv(name, value)
    loaded = FeedbackSettings()
    assert (loaded.feedback_smtp_port, loaded.feedback_http_port, loaded.feedback_health_port) == (
        SMTP_PORT,
        WEBHOOK_PORT,
        FEEDBACK_HEALTH_PORT,
    )
    assert loaded.return_path() is not None  # the domain from the ConfigMap, the key from a Secret
    assert loaded.return_path_domain == settings(objects)["ORDERMAIL_RETURN_PATH_DOMAIN"]
    assert loaded.bootstrap_servers == settings(objects)["KAFKA_BOOTSTRAP_SERVERS"]
    assert resolved["OTEL_SERVICE_NAME"] == "ordermail-feedback"
    # Not in a consumer group: nothing may give it a static member id.
    assert "KAFKA_CONFIG_GROUP_INSTANCE_ID" not in resolved


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_reach_both_workloads_only_by_reference(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    secret_like = re.compile(r"SECRET|PASSWORD|PRIVATE|TOKEN", re.IGNORECASE)
    for config_map in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not [k for k in config_map["data"] if secret_like.search(k)], config_map["metadata"]["name"]
    for main in (container(objects), feedback_container(objects)):
        for item in main["env"]:
            if secret_like.search(item["name"]):
                assert "secretKeyRef" in item.get("valueFrom", {}), f"{item['name']} must come from a Secret"

    # One return-path key: the consumer signs the tokens, feedback verifies them.
    def ref(main: Obj, name: str) -> Obj:
        (item,) = [i for i in main["env"] if i["name"] == name]
        secret: Obj = item["valueFrom"]["secretKeyRef"]
        return secret

    consumer_key = ref(container(objects), "ORDERMAIL_RETURN_PATH_SECRET")
    assert ref(feedback_container(objects), "ORDERMAIL_RETURN_PATH_SECRET") == consumer_key
    assert not consumer_key.get("optional")  # the domain is configured: the key is required
    # Least privilege: feedback has its own Kafka user and no SMTP credentials.
    feedback_env = {i["name"]: i for i in feedback_container(objects)["env"]}
    assert not {"SMTP_USERNAME", "SMTP_PASSWORD"} & set(feedback_env)
    kafka_user = feedback_env["KAFKA_CONFIG_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]
    assert kafka_user != env(objects)["KAFKA_CONFIG_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_services_and_scrapes_target_the_feedback_pods(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    labels = one(objects, "Deployment", "feedback")["spec"]["template"]["metadata"]["labels"]
    consumer_labels = pod_labels(objects)
    ports = container_ports(feedback_container(objects))
    services = {
        o["metadata"]["name"]: o for o in objects if o["kind"] == "Service" and component(o) == "feedback"
    }
    assert set(services) == {"ordermail-feedback", "ordermail-feedback-smtp", "ordermail-feedback-webhooks"}
    exposed = {}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        assert selector.items() <= labels.items()
        assert not selector.items() <= consumer_labels.items()
        (port,) = service["spec"]["ports"]
        exposed[name] = ports[port["targetPort"]]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"  # exposed through the relay/ingress
    assert exposed == {
        "ordermail-feedback": FEEDBACK_HEALTH_PORT,
        "ordermail-feedback-smtp": SMTP_PORT,
        "ordermail-feedback-webhooks": WEBHOOK_PORT,
    }
    metrics = services["ordermail-feedback"]
    assert metrics["spec"]["clusterIP"] == "None"
    assert metrics["spec"]["publishNotReadyAddresses"] is True
    monitor = one(objects, "ServiceMonitor", "feedback")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == endpoint | {"port": metrics["spec"]["ports"][0]["name"], "path": "/metrics"}
    # Only the metrics Service has the scraped port name.
    named = [s for s in services.values() if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert named == [metrics]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_network_policy_admits_reports_webhooks_and_scrapes_only(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    policy = one(objects, "NetworkPolicy", "feedback")["spec"]
    labels = one(objects, "Deployment", "feedback")["spec"]["template"]["metadata"]["labels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert not policy["podSelector"]["matchLabels"].items() <= pod_labels(objects).items()
    admitted = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "every ingress rule names its sources"
        for port in rule["ports"]:
            admitted[port["port"]] = rule["from"]
    assert set(admitted) == {SMTP_PORT, WEBHOOK_PORT, FEEDBACK_HEALTH_PORT}
    assert admitted[FEEDBACK_HEALTH_PORT] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress = {(p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {
        (53, "UDP"), (53, "TCP"),  # DNS
        (9092, "TCP"), (9093, "TCP"),  # Kafka
        (4317, "TCP"), (4318, "TCP"),  # OTLP: feedback spans
    }  # fmt: skip
    # No SMTP out, no HTTPS out: it never fetches a certificate or a URL a report names.
    assert not egress & {(25, "TCP"), (465, "TCP"), (587, "TCP"), (443, "TCP"), (80, "TCP")}
    for broker in settings(objects)["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert (_port(broker, 9092), "TCP") in egress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_survives_drains_and_rollouts(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment", "feedback")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = one(objects, "PodDisruptionBudget", "feedback")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    # The old pods keep receiving until the new one has loaded its index.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = feedback_pod(objects)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)
    assert deployment["spec"]["replicas"] == (1 if overlay == "overlays-dev" else 2)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_feedback_memory_fits_its_outcome_index(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    entries = int(feedback_settings(objects)["ORDERMAIL_FEEDBACK_INDEX_MAX_ENTRIES"])
    resources = feedback_container(objects)["resources"]
    needed_mb = FEEDBACK_PROCESS_MB + entries * INDEX_BYTES_PER_ENTRY / 2**20
    assert mebibytes(resources["limits"]["memory"]) >= needed_mb
    assert mebibytes(resources["requests"]["memory"]) >= needed_mb * 0.9
    assert mebibytes(resources["requests"]["memory"]) <= mebibytes(resources["limits"]["memory"])


def test_feedback_topic_is_co_partitioned_with_the_input(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["examples-strimzi-topics"]
    topics = {
        o["spec"].get("topicName", o["metadata"]["name"]): o for o in objects if o["kind"] == "KafkaTopic"
    }
    feedback_topic = topics[feedback_settings(objects)["ORDERMAIL_FEEDBACK_TOPIC"]]
    assert component(feedback_topic) == "feedback"
    config = settings(objects)
    # Records go to the partition number of the order's outcome.
    assert (
        feedback_topic["spec"]["partitions"] == topics[config["ORDERMAIL_INPUT_TOPIC"]]["spec"]["partitions"]
    )
    assert (
        feedback_topic["spec"]["partitions"]
        >= topics[config["ORDERMAIL_OUTCOME_TOPIC"]]["spec"]["partitions"]
    )
    assert (
        feedback_topic["metadata"]["namespace"]
        == topics[config["ORDERMAIL_INPUT_TOPIC"]]["metadata"]["namespace"]
    )
    assert feedback_topic["spec"]["config"]["min.insync.replicas"] == "2"


def test_webhook_ingress_example_exposes_the_two_webhook_paths_only(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["examples-feedback-ingress"]
    ingress = one(objects, "Ingress", "feedback")["spec"]
    assert ingress["tls"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    paths = {}
    for rule in ingress["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            (port,) = services[backend["name"]]["spec"]["ports"]
            assert backend["port"] in ({"name": port["name"]}, {"number": port["port"]})
            paths[path["path"]] = (backend["name"], port["port"])
    assert paths == {
        "/webhooks/ses": ("ordermail-feedback-webhooks", WEBHOOK_PORT),
        "/webhooks/sendgrid": ("ordermail-feedback-webhooks", WEBHOOK_PORT),
    }
