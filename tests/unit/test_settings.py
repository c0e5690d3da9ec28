import logging
import os
from pathlib import Path

import pytest

from consumer.app.settings import Settings, kafka_passthrough
from consumer.app.startup import check_environment
from delivery import TlsMode
from rendering import cjk_faces


def test_contract_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "ORDERMAIL_INPUT_TOPIC", "ORDERMAIL_OUTCOME_TOPIC", "SMTP_TLS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("ORDERMAIL_DLQ_TOPIC", "ORDERMAIL_RETRY_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.input_topic == "orders.order-completed.v1"
    assert settings.outcome_topic == "orders.delivery-outcome.v1"
    assert settings.dlq_topic == "orders.order-completed.v1.dlq"
    assert settings.retry_topic == "orders.order-completed.v1.retry"
    assert settings.smtp_tls is TlsMode.STARTTLS  # secure unless someone says otherwise


def test_librdkafka_properties_pass_through() -> None:
    assert kafka_passthrough(
        {
            "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
            "OTHER": "x",
        }
    ) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-secret")
    settings = Settings()
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(settings.smtp_config())
    assert settings.smtp_config().password == "hunter2-secret"


def test_plaintext_smtp_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SMTP_TLS", "none")
    with caplog.at_level(logging.WARNING):
        check_environment(Settings())
    assert "SMTP_TLS=none" in caplog.text


def test_typst_sets_without_the_cut_cjk_faces_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        check_environment(Settings())  # the shipped sets include a Typst one; make setup built the faces
    assert "CJK faces" not in caplog.text
    monkeypatch.setattr(cjk_faces, "faces", list)
    with caplog.at_level(logging.WARNING):
        check_environment(Settings())
    assert "the cut CJK faces are not built" in caplog.text


def test_pipelining_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().smtp_config().pipelining is True
    monkeypatch.setenv("SMTP_PIPELINING", "false")
    assert Settings().smtp_config().pipelining is False


def test_a_healthy_environment_is_not_warned_about_libcrypto(caplog: pytest.LogCaptureFixture) -> None:
    """Here (and in the image) OpenSSL's libcrypto is found: the PDF password hash's fast path."""
    with caplog.at_level(logging.WARNING):
        check_environment(Settings())
    assert "libcrypto" not in caplog.text


def test_retry_schedule_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERMAIL_RETRY_DELAYS_S", "1, 2.5,10")
    assert Settings().retry_schedule().delays_s == (1.0, 2.5, 10.0)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", "affinity"),
        ("150000 100000\n", 2),  # 1.5 CPUs -> 2 workers
        ("50000 100000\n", 1),
        ("100000000 100000\n", "affinity"),  # a limit above what the process may use anyway
        ("garbage", "affinity"),
        (None, "affinity"),  # no cgroup v2 file
    ],
)
def test_default_workers_follow_a_cgroup_cpu_limit(
    tmp_path: Path, cpu_max: str | None, expected: object
) -> None:
    from consumer.app.settings import usable_cpus

    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(path) == (affinity if expected == "affinity" else min(affinity, int(str(expected))))
